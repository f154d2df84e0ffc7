//! The guest agent inside a domain: the host writes requests into the mailbox in guest RAM with
//! the codec of `vsgx_guest::agent`, the guest agent answers in place. Load, call, list, stats and
//! destroy of the example enclaves; every malformed request gets its error and the next request
//! still works; random mailbox bytes never take the guest down.

use std::cell::RefCell;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use vsgx_guest::agent::{
    Agent, CallResult, CodecError, EnclaveInfo, EpcStats, Failure, HEADER_LEN, HEADER_SIZE, Header, Kind, ListedState,
    LoadedEnclave, MAGIC, MAILBOX_SIZE, MAX_CALL_OUTPUT, MAX_IMAGE_BYTES, PAYLOAD_CAPACITY, Reply, Request, Response,
    STATE_REQUEST, STATE_RESPONSE, Status, decode_response, encode_request, encode_request_payload, load_requests,
};
use vsgx_guest::driver::Driver;
use vsgx_guest::kernel::{BootInfo, Kernel};
use vsgx_hv::domain::{Domain, DomainSpec};
use vsgx_hv::epc::{DomainId, EpcManager};
use vsgx_hv::policy::{LaunchControl, SgxFeatures, VepcSection};
use vsgx_hv::vcpu::Vcpu;
use vsgx_hw::config;
use vsgx_hw::exec::image::{ImageParams, build_image};
use vsgx_hw::platform::Platform;
use vsgx_isa::ArchStruct;
use vsgx_isa::sgxs::LoadPlan;
use vsgx_isa::signing::SigningKey;

const KEY: &str = include_str!("../../vsgx-isa/tests/data/test-key.pem");
const FORTANIX_SGXS: &[u8] = include_bytes!("../../../testdata/fortanix-test-enclave.sgxs");
const FORTANIX_SIG: &[u8] = include_bytes!("../../../testdata/fortanix-test-enclave.sig");
const RAM: u64 = 256 << 20;
const EPC_GPA: u64 = 0x1_0000_0000;
/// The mailbox: the start of a 2 MiB hole in the RAM the guest kernel manages (the toolstack
/// reports it reserved), so the agent maps it itself.
const MAILBOX: u64 = 0x0F00_0000;
const MAILBOX_HOLE: u64 = 2 << 20;

struct Image {
    sgxs: Vec<u8>,
    sig: Vec<u8>,
    mrenclave: [u8; 32],
    mrsigner: [u8; 32],
    pages: u64,
}

fn example(name: &str, heap_bytes: Option<u64>) -> Image {
    let path = format!("{}/../../examples/enclaves/{name}.wat", env!("CARGO_MANIFEST_DIR"));
    let module = wat::parse_file(path).unwrap();
    let mut params = ImageParams::default();
    if let Some(heap) = heap_bytes {
        params.heap_bytes = heap;
    }
    let img = build_image(&module, &params).unwrap();
    let key = SigningKey::from_pem(KEY).unwrap();
    let mut body = img.body;
    body.date = 0x2026_0101;
    let sig = key.sign(&body, img.mrenclave).unwrap();
    let pages = LoadPlan::from_sgxs(&img.sgxs).unwrap().pages.len() as u64;
    Image {
        mrenclave: img.mrenclave,
        mrsigner: vsgx_isa::measure::mrsigner(&sig.modulus),
        sig: sig.bytes().to_vec(),
        sgxs: img.sgxs,
        pages,
    }
}

fn manager(seed: u64) -> Arc<EpcManager> {
    let mut cfg = config::embedded_default();
    cfg.seed = Some(seed);
    Arc::new(EpcManager::new(Platform::new(cfg)))
}

/// A domain with a booted guest kernel, its driver and agent, and the host's view of the mailbox.
struct Guest {
    domain: Domain,
    driver: Driver<Vcpu>,
    agent: Agent<Vcpu>,
    sequence: u64,
}

impl Guest {
    fn new(epc: &Arc<EpcManager>, id: u32, epc_mib: u64) -> Self {
        let spec = DomainSpec {
            name: format!("agent{id}"),
            uuid: [0; 16],
            vcpus: 1,
            ram: vec![(0, RAM)],
            epc: vec![VepcSection { gpa: EPC_GPA, size: epc_mib << 20, node: 0 }],
            features: SgxFeatures::default(),
            launch: LaunchControl::default(),
            provision: false,
        };
        let domain = Domain::create(DomainId(id), spec, Arc::clone(epc)).unwrap();
        let above = MAILBOX + MAILBOX_HOLE;
        let info = BootInfo {
            ram: vec![(0, MAILBOX), (above, RAM - above)],
            reserved: vec![(MAILBOX, MAILBOX_HOLE), (EPC_GPA, epc_mib << 20)],
        };
        let driver = Driver::new(Kernel::boot(domain.vcpu(0).unwrap(), &info).unwrap());
        Self { domain, driver, agent: Agent::new(), sequence: 0 }
    }

    /// Host side: writes mailbox bytes, the payload first and the header page last.
    fn post(&self, bytes: &[u8]) {
        let ram = &self.domain.shared().ram;
        if bytes.len() > HEADER_SIZE {
            ram.write(MAILBOX + HEADER_SIZE as u64, &bytes[HEADER_SIZE..]).unwrap();
        }
        ram.write(MAILBOX, &bytes[..bytes.len().min(HEADER_SIZE)]).unwrap();
    }

    /// Host side: reads the header page, then the payload it announces, and decodes them.
    fn response(&self) -> Result<Reply, CodecError> {
        let ram = &self.domain.shared().ram;
        let mut mailbox = vec![0u8; HEADER_SIZE];
        ram.read(MAILBOX, &mut mailbox).unwrap();
        let header = Header::decode(&mailbox)?;
        mailbox.resize(HEADER_SIZE + (header.payload_len as usize).min(PAYLOAD_CAPACITY), 0);
        ram.read(MAILBOX + HEADER_SIZE as u64, &mut mailbox[HEADER_SIZE..]).unwrap();
        decode_response(&mailbox)
    }

    fn header(&self) -> Header {
        let mut raw = [0u8; HEADER_LEN];
        self.domain.shared().ram.read(MAILBOX, &mut raw).unwrap();
        Header::decode(&raw).unwrap()
    }

    /// The guest's turn: the agent serves whatever is pending.
    fn serve(&mut self) -> bool {
        self.agent.serve(&mut self.driver, MAILBOX).unwrap()
    }

    /// Posts raw mailbox bytes, lets the agent answer, and decodes the answer.
    fn send_raw(&mut self, bytes: &[u8]) -> Reply {
        self.post(bytes);
        let sent = Header::decode(bytes).unwrap();
        assert!(self.serve(), "a request was pending");
        let reply = self.response().unwrap();
        assert_eq!((reply.sequence, reply.kind), (sent.sequence, sent.kind), "the response echoes the request");
        reply
    }

    fn send(&mut self, request: &Request<'_>) -> Result<Response, Failure> {
        self.sequence += 1;
        let bytes = encode_request(self.sequence, request).unwrap();
        self.send_raw(&bytes).outcome
    }

    fn load(&mut self, image: &Image) -> Result<LoadedEnclave, Failure> {
        for request in load_requests(&image.sgxs, &image.sig) {
            match self.send(&request)? {
                Response::Uploaded { .. } => {}
                Response::Loaded(loaded) => return Ok(loaded),
                other => panic!("unexpected {other:?}"),
            }
        }
        unreachable!("load_requests ends with a LOAD or LOAD_STAGED")
    }

    fn call(&mut self, enclave: u32, ecall: &str, input: &[u8], cap: u32) -> Result<CallResult, Failure> {
        match self.send(&Request::Call { enclave, ecall, input, output_capacity: cap })? {
            Response::Called(c) => Ok(c),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn list(&mut self) -> Vec<EnclaveInfo> {
        match self.send(&Request::List).unwrap() {
            Response::Listed(list) => list,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn stats(&mut self) -> EpcStats {
        match self.send(&Request::Stats).unwrap() {
            Response::Stats(s) => s,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn destroy(&mut self, enclave: u32) -> Result<(u64, u64), Failure> {
        match self.send(&Request::Destroy { enclave })? {
            Response::Destroyed { released_pages, free_pages } => Ok((released_pages, free_pages)),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[track_caller]
fn assert_failure(outcome: Result<Response, Failure>, status: Status, needle: &str) {
    match outcome {
        Err(f) => {
            assert_eq!(f.status, status, "{f}");
            assert!(f.message.contains(needle), "{f:?} should mention {needle:?}");
        }
        Ok(r) => panic!("expected {status}, got {r:?}"),
    }
}

#[test]
fn hello_is_loaded_called_listed_and_destroyed_through_the_mailbox() {
    let epc = manager(11);
    let mut g = Guest::new(&epc, 1, 16);
    assert!(!g.serve(), "an all-zero mailbox is idle");

    let total = 16 << 20 >> 12;
    assert_eq!(g.stats(), EpcStats { total_pages: total, free_pages: total, enclaves: 0, lost_enclaves: 0 });
    assert!(!g.serve(), "a mailbox holding a response has nothing pending");

    let hello = example("hello", None);
    let requests = load_requests(&hello.sgxs, &hello.sig);
    assert!(requests.len() > 2, "the default 1 MiB heap makes an image that goes through UPLOAD");
    let loaded = g.load(&hello).unwrap();
    assert_eq!(
        loaded,
        LoadedEnclave {
            enclave: 1,
            mrenclave: hello.mrenclave,
            mrsigner: hello.mrsigner,
            ecalls: vec!["hello".to_string()]
        }
    );
    assert_eq!(g.agent.staged_len(), 0, "LOAD_STAGED consumed the staged image");

    let out = g.call(1, "hello", b"world", 64).unwrap();
    assert_eq!((out.result, out.output.as_slice()), (12, &b"Hello, WORLD"[..]));
    // The enclave's own error code comes back as a result, not as a failure.
    assert_eq!(g.call(1, "hello", b"world", 4).unwrap().result, -2);

    let list = g.list();
    assert_eq!(list.len(), 1);
    let info = &list[0];
    assert_eq!((info.enclave, info.state, info.mrenclave), (1, ListedState::Ready, hello.mrenclave));
    assert_eq!((info.mrsigner, info.ecalls.clone()), (hello.mrsigner, vec!["hello".to_string()]));
    assert_eq!(info.epc_pages, hello.pages + 1, "every page and the SECS are resident");

    let stats = g.stats();
    assert_eq!((stats.total_pages, stats.enclaves, stats.lost_enclaves), (total, 1, 0));
    assert!(total - stats.free_pages >= info.epc_pages);

    let (released, free) = g.destroy(1).unwrap();
    assert_eq!((released, free), (total - stats.free_pages, total), "destroy gives every EPC page back");
    assert!(g.list().is_empty());
    assert_eq!(g.stats().free_pages, total);
    assert_failure(
        g.send(&Request::Call { enclave: 1, ecall: "hello", input: b"", output_capacity: 8 }),
        Status::NO_SUCH_ENCLAVE,
        "no enclave 1",
    );

    // The host picks sequence numbers; any value is echoed.
    let reply = g.send_raw(&encode_request(u64::MAX, &Request::Stats).unwrap());
    assert_eq!(reply.sequence, u64::MAX);
    assert_eq!(g.header().state, STATE_RESPONSE);
}

#[test]
fn every_example_enclave_runs_through_the_agent() {
    let epc = manager(12);
    let mut g = Guest::new(&epc, 2, 32);

    // A small heap makes an image that fits one LOAD.
    let hello = example("hello", Some(64 << 10));
    assert_eq!(load_requests(&hello.sgxs, &hello.sig).len(), 1);
    let h = g.load(&hello).unwrap().enclave;
    assert_eq!(g.call(h, "hello", b"guest agent", 64).unwrap().output, b"Hello, GUEST AGENT");

    let counter = example("counter", None);
    let c = g.load(&counter).unwrap();
    assert_eq!(c.ecalls, ["get", "increment"], "ECALLs are numbered in name order");
    for n in 1u64..=3 {
        assert_eq!(g.call(c.enclave, "increment", b"", 8).unwrap().output, n.to_le_bytes());
    }
    assert_eq!(g.call(c.enclave, "get", b"", 8).unwrap().output, 3u64.to_le_bytes());

    let sealer = example("sealer", None);
    let s = g.load(&sealer).unwrap().enclave;
    let blob = g.call(s, "seal", b"agent secret", 256).unwrap().output;
    assert_eq!(g.call(s, "unseal", &blob, 256).unwrap().output, b"agent secret");

    let attest = example("attest", None);
    let a = g.load(&attest).unwrap().enclave;
    let mut input = vec![0u8; 512];
    input.extend_from_slice(b"report data");
    let report = g.call(a, "report", &input, 432).unwrap();
    assert_eq!((report.result, report.output.len()), (432, 432));

    let list = g.list();
    assert_eq!(list.iter().map(|e| e.enclave).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert!(list.iter().all(|e| e.state == ListedState::Ready));
    let images = [&hello, &counter, &sealer, &attest];
    for (info, image) in list.iter().zip(images) {
        assert_eq!((info.mrenclave, info.epc_pages), (image.mrenclave, image.pages + 1));
    }
    assert_eq!(g.stats().enclaves, 4);
    for id in [2, 4, 1, 3] {
        g.destroy(id).unwrap();
    }
    let stats = g.stats();
    assert_eq!((stats.free_pages, stats.enclaves), (stats.total_pages, 0));
}

/// Request bytes with a hand-made header and payload (what a buggy or hostile host could write).
fn raw(kind: u16, payload: &[u8]) -> Vec<u8> {
    let mut header = Header::request(Kind::Stats, 99, payload.len() as u32);
    header.kind = kind;
    with_header(header, payload)
}

fn with_header(header: Header, payload: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0u8; HEADER_SIZE];
    bytes[..HEADER_LEN].copy_from_slice(&header.encode());
    bytes.extend_from_slice(payload);
    bytes
}

fn call_payload(enclave: u32, cap: u32, name: &[u8], input: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&enclave.to_le_bytes());
    p.extend_from_slice(&cap.to_le_bytes());
    p.extend_from_slice(&(name.len() as u16).to_le_bytes());
    p.extend_from_slice(name);
    p.extend_from_slice(&(input.len() as u32).to_le_bytes());
    p.extend_from_slice(input);
    p
}

#[test]
fn malformed_requests_get_an_error_and_the_next_request_works() {
    let epc = manager(13);
    let mut g = Guest::new(&epc, 3, 16);
    let hello = example("hello", Some(64 << 10));
    assert_eq!(g.load(&hello).unwrap().enclave, 1);
    let baseline = g.stats();

    let stats = encode_request(5, &Request::Stats).unwrap();
    let mut bad_magic = stats.clone();
    bad_magic[0] = b'X';
    let mut bad_version = stats.clone();
    bad_version[8] = 2;
    let mut too_long = Header::request(Kind::Stats, 6, PAYLOAD_CAPACITY as u32 + 1);
    let beyond = with_header(too_long, &[]);
    too_long.payload_len = u32::MAX;
    let far_beyond = with_header(too_long, &[]);

    let call = call_payload(1, 64, b"hello", b"world");
    let mut load_short = Vec::new();
    load_short.extend_from_slice(&1000u32.to_le_bytes());
    load_short.extend_from_slice(&1808u32.to_le_bytes());
    load_short.extend_from_slice(&[0; 10]);
    let mut upload_beyond = Vec::new();
    upload_beyond.extend_from_slice(&(MAX_IMAGE_BYTES - 10).to_le_bytes());
    upload_beyond.extend_from_slice(&100u32.to_le_bytes());
    upload_beyond.extend_from_slice(&[0; 100]);
    let counter = example("counter", Some(64 << 10));
    let garbage_load = encode_request_payload(&Request::Load { sgxs: &[0xAB; 3000], sigstruct: &hello.sig }).unwrap();
    let short_sig = encode_request_payload(&Request::Load { sgxs: &hello.sgxs, sigstruct: &hello.sig[..100] }).unwrap();
    let not_wasm = encode_request_payload(&Request::Load { sgxs: FORTANIX_SGXS, sigstruct: &hello.sig }).unwrap();
    // A SIGSTRUCT for another enclave: EINIT refuses it.
    let wrong_sig = encode_request_payload(&Request::Load { sgxs: &counter.sgxs, sigstruct: &hello.sig }).unwrap();
    let mut upload_gap = Vec::new();
    upload_gap.extend_from_slice(&5u64.to_le_bytes());
    upload_gap.extend_from_slice(&3u32.to_le_bytes());
    upload_gap.extend_from_slice(b"abc");
    let mut staged_sig = Vec::new();
    staged_sig.extend_from_slice(&1808u32.to_le_bytes());
    staged_sig.extend_from_slice(&hello.sig);

    let cases: Vec<(&str, Vec<u8>, Status, &str)> = vec![
        ("bad magic", bad_magic, Status::BAD_MAGIC, "magic"),
        ("bad version", bad_version, Status::BAD_VERSION, "version 2"),
        ("kind 0", raw(0, &[]), Status::BAD_KIND, "unknown request kind 0"),
        ("kind 99", raw(99, &[]), Status::BAD_KIND, "unknown request kind 99"),
        ("payload beyond the mailbox", beyond, Status::BAD_LENGTH, "payload length 1048577"),
        ("payload length u32::MAX", far_beyond, Status::BAD_LENGTH, "4294967295"),
        ("CALL cut inside the name", raw(2, &call[..12]), Status::TRUNCATED, "ECALL name"),
        ("CALL cut inside the input", raw(2, &call[..call.len() - 1]), Status::TRUNCATED, "input"),
        ("DESTROY with half an id", raw(4, &[1, 0]), Status::TRUNCATED, "enclave id"),
        ("LOAD claiming more SGXS than sent", raw(1, &load_short), Status::TRUNCATED, "SGXS"),
        ("LIST with a payload", raw(3, b"xyz"), Status::MALFORMED, "3 trailing bytes"),
        ("DESTROY with trailing bytes", raw(4, &[1, 0, 0, 0, 0]), Status::MALFORMED, "1 trailing bytes"),
        (
            "CALL of an unknown enclave",
            raw(2, &call_payload(77, 64, b"hello", b"")),
            Status::NO_SUCH_ENCLAVE,
            "no enclave 77",
        ),
        ("DESTROY of an unknown enclave", raw(4, &77u32.to_le_bytes()), Status::NO_SUCH_ENCLAVE, "no enclave 77"),
        ("non-UTF-8 ECALL name", raw(2, &call_payload(1, 64, &[0xFF, 0xFE], b"")), Status::BAD_UTF8, "not UTF-8"),
        (
            "ECALL name too long",
            raw(2, &call_payload(1, 64, &[b'a'; 300], b"")),
            Status::TOO_LARGE,
            "ECALL name is 300 bytes",
        ),
        (
            "output capacity too large",
            raw(2, &call_payload(1, MAX_CALL_OUTPUT + 1, b"hello", b"")),
            Status::TOO_LARGE,
            "output capacity",
        ),
        ("upload beyond the image limit", raw(6, &upload_beyond), Status::TOO_LARGE, "staged image"),
        (
            "unknown ECALL",
            raw(2, &call_payload(1, 64, b"nope", b"")),
            Status::NO_SUCH_ECALL,
            "no ECALL \"nope\" (it has: hello)",
        ),
        ("garbage SGXS", raw(1, &garbage_load), Status::BAD_IMAGE, "cannot load"),
        ("short SIGSTRUCT", raw(1, &short_sig), Status::BAD_IMAGE, "SIGSTRUCT"),
        ("an x86 enclave with another's SIGSTRUCT", raw(1, &not_wasm), Status::EINIT_REFUSED, "EINIT"),
        ("SIGSTRUCT of another enclave", raw(1, &wrong_sig), Status::EINIT_REFUSED, "EINIT"),
        ("UPLOAD leaving a gap", raw(6, &upload_gap), Status::MALFORMED, "offset 5, but 0 bytes are staged"),
        ("LOAD_STAGED with nothing staged", raw(7, &staged_sig), Status::MALFORMED, "no image is staged"),
    ];
    for (what, bytes, status, needle) in cases {
        let reply = g.send_raw(&bytes);
        match reply.outcome {
            Err(f) => {
                assert_eq!(f.status, status, "{what}: {f}");
                assert!(f.message.contains(needle), "{what}: {f:?} should mention {needle:?}");
            }
            Ok(r) => panic!("{what}: expected {status}, got {r:?}"),
        }
        // The guest stays up, nothing changed and nothing leaked.
        assert_eq!(g.stats(), baseline, "after {what}");
    }

    // A state that is neither "request" nor anything the agent knows: nothing pending, untouched.
    let mut idle = Header::request(Kind::Stats, 1, 0);
    idle.state = 7;
    g.post(&with_header(idle, &[]));
    assert!(!g.serve());
    assert_eq!(g.header(), idle);

    // The next request still works.
    assert_eq!(g.call(1, "hello", b"still up", 64).unwrap().output, b"Hello, STILL UP");
    assert_eq!(g.list().len(), 1);
}

#[test]
fn a_lost_enclave_is_reported_and_can_be_replaced() {
    let epc = manager(14);
    let mut g = Guest::new(&epc, 4, 16);
    let sealer = example("sealer", None);
    let first = g.load(&sealer).unwrap().enclave;
    let blob = g.call(first, "seal", b"keep me", 256).unwrap().output;

    // A guest S3 (or a host simulating EPC loss): every vEPC page is EREMOVEd.
    g.domain.reset_epc().unwrap();
    assert_failure(
        g.send(&Request::Call { enclave: first, ecall: "unseal", input: &blob, output_capacity: 256 }),
        Status::ENCLAVE_LOST,
        "destroy it and load it again",
    );
    assert_eq!(g.list()[0].state, ListedState::Lost);
    assert_eq!(g.stats().lost_enclaves, 1);

    g.destroy(first).unwrap();
    let stats = g.stats();
    assert_eq!((stats.free_pages, stats.enclaves), (stats.total_pages, 0));
    let second = g.load(&sealer).unwrap().enclave;
    assert_ne!(second, first, "agent ids are not reused");
    // Same platform, same fuses: the blob sealed before the loss unseals in the new instance.
    assert_eq!(g.call(second, "unseal", &blob, 256).unwrap().output, b"keep me");
}

#[test]
fn an_unusable_mailbox_is_an_error_and_the_real_one_still_works() {
    let epc = manager(15);
    let mut g = Guest::new(&epc, 5, 8);
    assert!(g.agent.serve(&mut g.driver, EPC_GPA).is_err(), "a mailbox in the EPC");
    assert!(g.agent.serve(&mut g.driver, u64::MAX - 4096).is_err(), "a mailbox past the address space");
    let top = u64::MAX - MAILBOX_SIZE as u64 - 10;
    assert!(g.agent.serve(&mut g.driver, top).is_err(), "a mailbox at the top of the address space");
    // Unbacked guest-physical memory reads as all ones: never a pending request.
    assert_eq!(g.agent.serve(&mut g.driver, 0x8_0000_0000), Ok(false), "a mailbox outside RAM");
    assert!(!g.serve());
    assert_eq!(g.stats().enclaves, 0);
}

/// Mailbox bytes a test case writes: the 32 header bytes and the payload (the rest of the header
/// page is zero).
#[derive(Clone, Debug)]
struct Bytes(Vec<u8>);

fn valid_request() -> impl Strategy<Value = Vec<u8>> {
    let call = (0u32..4, "[a-z]{0,9}", prop::collection::vec(any::<u8>(), 0..64), 0u32..300).prop_map(
        |(enclave, name, input, cap)| {
            encode_request(1, &Request::Call { enclave, ecall: &name, input: &input, output_capacity: cap }).unwrap()
        },
    );
    let upload = (0u64..3, prop::collection::vec(any::<u8>(), 0..64))
        .prop_map(|(offset, bytes)| encode_request(2, &Request::Upload { offset, bytes: &bytes }).unwrap());
    let load = (prop::collection::vec(any::<u8>(), 0..300), prop::collection::vec(any::<u8>(), 0..2000))
        .prop_map(|(sgxs, sig)| encode_request(3, &Request::Load { sgxs: &sgxs, sigstruct: &sig }).unwrap());
    let staged = prop::collection::vec(any::<u8>(), 0..2000)
        .prop_map(|sig| encode_request(4, &Request::LoadStaged { sigstruct: &sig }).unwrap());
    let simple = prop_oneof![
        Just(Request::List),
        Just(Request::Stats),
        (2u32..5).prop_map(|enclave| Request::Destroy { enclave }),
    ]
    .prop_map(|r| encode_request(5, &r).unwrap());
    prop_oneof![call, upload, load, staged, simple]
}

fn mailbox_bytes() -> impl Strategy<Value = Bytes> {
    // Valid requests with a few bytes of the header fields or payload changed, and cut short.
    let mutated = (
        valid_request(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        any::<Option<prop::sample::Index>>(),
    )
        .prop_map(|(bytes, edits, cut)| {
            let mut fields: Vec<u8> = bytes[..HEADER_LEN].iter().chain(&bytes[HEADER_SIZE..]).copied().collect();
            for (at, value) in edits {
                let i = at.index(fields.len());
                fields[i] = value;
            }
            if let Some(cut) = cut {
                let keep = HEADER_LEN + cut.index(fields.len() - HEADER_LEN + 1);
                fields.truncate(keep);
            }
            Bytes(fields)
        });
    // Arbitrary bytes, half of them with a request-state word so the agent has to look at them.
    let garbage = (any::<[u8; 32]>(), any::<bool>(), any::<bool>(), prop::collection::vec(any::<u8>(), 0..600))
        .prop_map(|(mut header, pending, magic, payload)| {
            if pending {
                header[12..16].copy_from_slice(&STATE_REQUEST.to_le_bytes());
            }
            if magic {
                header[..8].copy_from_slice(&MAGIC);
                header[8..10].copy_from_slice(&1u16.to_le_bytes());
            }
            Bytes(header.iter().chain(&payload).copied().collect())
        });
    prop_oneof![mutated, garbage]
}

#[test]
fn random_mailbox_bytes_never_panic_the_agent() {
    let epc = manager(16);
    let g = RefCell::new(Guest::new(&epc, 6, 16));
    let hello = example("hello", Some(64 << 10));
    assert_eq!(g.borrow_mut().load(&hello).unwrap().enclave, 1);
    // Status codes the agent answered with: the strategy must reach execution, not only the header checks.
    let seen = RefCell::new(std::collections::BTreeMap::<u32, u32>::new());
    let mut runner = TestRunner::new(Config { cases: 400, failure_persistence: None, ..Config::default() });
    runner
        .run(&mailbox_bytes(), |Bytes(fields)| {
            let mut g = g.borrow_mut();
            let header = Header::decode(&fields).unwrap();
            let mut bytes = vec![0u8; HEADER_SIZE];
            bytes[..HEADER_LEN].copy_from_slice(&fields[..HEADER_LEN]);
            bytes.extend_from_slice(&fields[HEADER_LEN..]);
            g.post(&bytes);
            let g = &mut *g;
            let served = g.agent.serve(&mut g.driver, MAILBOX);
            prop_assert_eq!(served, Ok(header.state == STATE_REQUEST));
            if header.state == STATE_REQUEST {
                let reply = g.response();
                prop_assert!(reply.is_ok(), "{:?}", reply);
                let reply = reply.unwrap();
                prop_assert_eq!((reply.sequence, reply.kind), (header.sequence, header.kind));
                let status = reply.outcome.as_ref().map_or_else(|f| f.status, |_| Status::OK);
                *seen.borrow_mut().entry(status.0).or_default() += 1;
            } else {
                prop_assert_eq!(g.header(), header, "nothing pending: the mailbox is untouched");
            }
            // The guest stays up and the next request works; EPC is accounted for.
            let stats = g.stats();
            prop_assert!(stats.free_pages <= stats.total_pages);
            let listed = g.list();
            prop_assert_eq!(listed.len() as u32, stats.enclaves);
            if listed.is_empty() {
                prop_assert_eq!(stats.free_pages, stats.total_pages);
            }
            Ok(())
        })
        .unwrap();
    let seen = seen.into_inner();
    eprintln!("statuses answered: {seen:?}");
    for status in [Status::OK, Status::BAD_MAGIC, Status::TRUNCATED, Status::NO_SUCH_ENCLAVE, Status::BAD_IMAGE] {
        assert!(seen.contains_key(&status.0), "no {status} among {seen:?}");
    }
    // Unless a random DESTROY hit it, hello still answers.
    let mut g = g.borrow_mut();
    if g.list().iter().any(|e| e.enclave == 1) {
        assert_eq!(g.call(1, "hello", b"fuzz", 64).unwrap().output, b"Hello, FUZZ");
    }
}

/// The host side reads what a guest wrote, and the guest may be hostile: any response header and
/// payload decode to a reply or a `CodecError`, never a panic, and a reply never claims more
/// payload than the mailbox holds.
#[test]
fn hostile_responses_never_panic_the_host_decoder() {
    let strategy = (
        0u16..10,
        prop_oneof![Just(STATE_RESPONSE), any::<u32>()],
        0u32..20,
        prop::collection::vec(any::<u8>(), 0..600),
        prop_oneof![Just(None), any::<u32>().prop_map(Some)],
    );
    let mut runner = TestRunner::new(Config { cases: 3000, failure_persistence: None, ..Config::default() });
    runner
        .run(&strategy, |(kind, state, status, payload, claimed_len)| {
            let header = Header {
                magic: MAGIC,
                version: 1,
                kind,
                state,
                sequence: 7,
                payload_len: claimed_len.unwrap_or(payload.len() as u32),
                status,
            };
            let mut mailbox = vec![0u8; HEADER_SIZE];
            mailbox[..HEADER_LEN].copy_from_slice(&header.encode());
            mailbox.extend_from_slice(&payload);
            if let Ok(reply) = decode_response(&mailbox) {
                prop_assert_eq!((reply.sequence, reply.kind), (7, kind));
                if let Ok(Response::Called(c)) = &reply.outcome {
                    prop_assert!(c.output.len() <= payload.len());
                }
                if let Ok(Response::Listed(list)) = &reply.outcome {
                    prop_assert!(list.len() <= payload.len());
                }
            }
            Ok(())
        })
        .unwrap();
}

/// Any valid SGXS + SIGSTRUCT pair loads (DESIGN §8): the Fortanix test enclave (x86 code, made by
/// another toolchain) initializes in the guest, is listed, cannot be called, and is destroyed.
#[test]
fn an_enclave_that_is_not_webassembly_loads_but_cannot_be_called() {
    let epc = manager(21);
    let mut g = Guest::new(&epc, 8, 16);
    let loaded = g
        .load(&Image {
            sgxs: FORTANIX_SGXS.to_vec(),
            sig: FORTANIX_SIG.to_vec(),
            mrenclave: [0; 32],
            mrsigner: [0; 32],
            pages: 0,
        })
        .unwrap();
    assert!(loaded.ecalls.is_empty());
    let sig = vsgx_isa::Sigstruct::from_bytes(FORTANIX_SIG).unwrap();
    assert_eq!(loaded.mrenclave, sig.enclavehash);
    assert_failure(
        g.send(&Request::Call { enclave: loaded.enclave, ecall: "main", input: b"", output_capacity: 16 }),
        Status::NO_SUCH_ECALL,
        "not WebAssembly",
    );
    let listed = g.list();
    assert_eq!((listed.len(), listed[0].state), (1, ListedState::Ready));
    assert!(g.destroy(loaded.enclave).unwrap().0 > 0);
    let stats = g.stats();
    assert_eq!(stats.free_pages, stats.total_pages);
}

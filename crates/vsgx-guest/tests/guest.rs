//! The guest SGX stack on a bare-metal processor and inside a domain: boot, load, call,
//! EPC loss and recovery.

use std::sync::Arc;

use vsgx_guest::GuestError;
use vsgx_guest::driver::Driver;
use vsgx_guest::kernel::{BootInfo, Kernel};
use vsgx_guest::sdk::{ManagedEnclave, Reprovision};
use vsgx_hv::domain::{Domain, DomainSpec};
use vsgx_hv::epc::{DomainId, EpcManager};
use vsgx_hv::policy::{LaunchControl, SgxFeatures, VepcSection};
use vsgx_hv::vcpu::Vcpu;
use vsgx_hw::config;
use vsgx_hw::cpu::BareMetalCpu;
use vsgx_hw::exec::image::{ImageParams, build_image};
use vsgx_hw::platform::Platform;
use vsgx_isa::signing::SigningKey;
use vsgx_isa::{ArchStruct, Sigstruct};

const KEY: &str = include_str!("../../vsgx-isa/tests/data/test-key.pem");
const FORTANIX_SGXS: &[u8] = include_bytes!("../../../testdata/fortanix-test-enclave.sgxs");
const FORTANIX_SIG: &[u8] = include_bytes!("../../../testdata/fortanix-test-enclave.sig");
const RAM: u64 = 256 << 20;
const EPC_GPA: u64 = 0x1_0000_0000;

fn example(name: &str) -> (Vec<u8>, Vec<u8>) {
    let path = format!("{}/../../examples/enclaves/{name}.wat", env!("CARGO_MANIFEST_DIR"));
    let module = wat::parse_file(path).unwrap();
    let img = build_image(&module, &ImageParams::default()).unwrap();
    let key = SigningKey::from_pem(KEY).unwrap();
    let mut body = img.body;
    body.date = 0x2026_0101;
    (img.sgxs, key.sign(&body, img.mrenclave).unwrap().bytes().to_vec())
}

fn bare_metal(seed: u64) -> Driver<BareMetalCpu> {
    let mut cfg = config::embedded_default();
    cfg.seed = Some(seed);
    let platform = Platform::new(cfg);
    let reserved = platform.epc().sections().iter().map(|s| (s.base, s.size)).collect();
    let info = BootInfo { ram: vec![(0, platform.ram().size())], reserved };
    Driver::new(Kernel::boot(BareMetalCpu::new(platform), &info).unwrap())
}

struct Guest {
    domain: Domain,
    driver: Driver<Vcpu>,
}

fn in_domain(epc: &Arc<EpcManager>, id: u32, epc_mib: u64) -> Guest {
    let spec = DomainSpec {
        name: format!("g{id}"),
        uuid: [0; 16],
        vcpus: 1,
        ram: vec![(0, RAM)],
        epc: vec![VepcSection { gpa: EPC_GPA, size: epc_mib << 20, node: 0 }],
        features: SgxFeatures::default(),
        launch: LaunchControl::default(),
        provision: false,
    };
    let domain = Domain::create(DomainId(id), spec, Arc::clone(epc)).unwrap();
    let info = BootInfo { ram: vec![(0, RAM)], reserved: vec![(EPC_GPA, epc_mib << 20)] };
    let driver = Driver::new(Kernel::boot(domain.vcpu(0).unwrap(), &info).unwrap());
    Guest { domain, driver }
}

fn manager(seed: u64) -> Arc<EpcManager> {
    let mut cfg = config::embedded_default();
    cfg.seed = Some(seed);
    Arc::new(EpcManager::new(Platform::new(cfg)))
}

#[test]
fn the_fortanix_enclave_initializes_on_bare_metal_and_in_a_guest() {
    let sig = Sigstruct::from_bytes(FORTANIX_SIG).unwrap();
    let mut bm = bare_metal(1);
    let id = bm.load(FORTANIX_SGXS, &sig).unwrap();
    assert_eq!(
        hex::encode(bm.enclave(id).unwrap().mrenclave),
        "784acfd7d5096a8f0fbd3265760bff21b120f62407a9a9e5ba31aa3c8ed198fc"
    );
    let epc = manager(2);
    let mut g = in_domain(&epc, 1, 8);
    let id = g.driver.load(FORTANIX_SGXS, &sig).unwrap();
    g.driver.destroy(id).unwrap();
    let before = g.driver.kernel().free_epc_pages();
    assert_eq!(before, g.driver.kernel().total_epc_pages(), "teardown returns every page to the guest allocator");
}

#[test]
fn every_example_enclave_runs_in_a_guest() {
    let epc = manager(3);
    let mut g = in_domain(&epc, 2, 16);
    let (sgxs, sig) = example("hello");
    let mut hello = ManagedEnclave::load(&mut g.driver, &sgxs, &sig, None).unwrap();
    assert_eq!(hello.call(&mut g.driver, "hello", b"guest", 64).unwrap().output, b"Hello, GUEST");
    let (sgxs, sig) = example("counter");
    let mut counter = ManagedEnclave::load(&mut g.driver, &sgxs, &sig, None).unwrap();
    for n in 1u64..=3 {
        assert_eq!(counter.call(&mut g.driver, "increment", b"", 8).unwrap().output, n.to_le_bytes());
    }
    let (sgxs, sig) = example("sealer");
    let mut sealer = ManagedEnclave::load(&mut g.driver, &sgxs, &sig, None).unwrap();
    let blob = sealer.call(&mut g.driver, "seal", b"guest secret", 256).unwrap().output;
    assert_eq!(sealer.call(&mut g.driver, "unseal", &blob, 256).unwrap().output, b"guest secret");
    let (sgxs, sig) = example("attest");
    let mut attest = ManagedEnclave::load(&mut g.driver, &sgxs, &sig, None).unwrap();
    let mut input = vec![0u8; 512];
    input.extend_from_slice(b"data");
    assert_eq!(attest.call(&mut g.driver, "report", &input, 432).unwrap().result, 432);
    assert_eq!(g.driver.enclaves().count(), 4);
    assert!(g.domain.shared().exits.get(vsgx_isa::leaf::Encls::Einit) >= 4);
}

#[test]
fn epc_loss_is_detected_and_recovery_rebuilds_and_reprovisions() {
    let epc = manager(4);
    let mut g = in_domain(&epc, 3, 16);
    let (sgxs, sig) = example("sealer");
    let mut plain = ManagedEnclave::load(&mut g.driver, &sgxs, &sig, None).unwrap();
    let blob = plain.call(&mut g.driver, "seal", b"keep me", 256).unwrap().output;

    // A guest S3 (or a host simulating EPC loss): every vEPC page is EREMOVEd.
    g.domain.reset_epc().unwrap();
    let err = plain.call(&mut g.driver, "unseal", &blob, 256).unwrap_err();
    assert!(matches!(err, GuestError::EnclaveLost(_)), "{err}");
    assert!(matches!(plain.call(&mut g.driver, "unseal", &blob, 256), Err(GuestError::EnclaveLost(_))));

    // With a recovery policy the SDK rebuilds, re-provisions (here: a counter it bumps), retries.
    let reprovisioned = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let seen = Arc::clone(&reprovisioned);
    let hook: Reprovision<Vcpu> = Box::new(move |_, _| {
        seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    });
    g.driver.destroy(plain.id()).unwrap();
    let mut managed = ManagedEnclave::load(&mut g.driver, &sgxs, &sig, Some(hook)).unwrap();
    g.domain.reset_epc().unwrap();
    // Same platform, same fuses: the data sealed before the loss unseals after the rebuild.
    assert_eq!(managed.call(&mut g.driver, "unseal", &blob, 256).unwrap().output, b"keep me");
    assert_eq!((managed.rebuilds(), reprovisioned.load(std::sync::atomic::Ordering::SeqCst)), (1, 1));

    // After a move to another platform (restore elsewhere) the same blob no longer unseals.
    let other = manager(5);
    let mut moved = in_domain(&other, 4, 16);
    let mut there = ManagedEnclave::load(&mut moved.driver, &sgxs, &sig, None).unwrap();
    assert_eq!(there.call(&mut moved.driver, "unseal", &blob, 256).unwrap().result, -3);
}

#[test]
fn boot_checks_the_memory_map_and_sgx_enumeration() {
    let epc = manager(6);
    let g = in_domain(&epc, 5, 4);
    let info = BootInfo { ram: vec![(0, RAM)], reserved: vec![] };
    let err = Kernel::boot(g.domain.vcpu(0).unwrap(), &info).unwrap_err();
    assert!(matches!(err, GuestError::MemoryMap { base: EPC_GPA, .. }), "{err}");
}

#[test]
fn an_image_with_a_bad_header_or_stream_is_refused_cleanly() {
    let mut bm = bare_metal(7);
    let (mut sgxs, sig) = example("hello");
    let free = bm.kernel().free_epc_pages();
    sgxs.truncate(100);
    assert!(matches!(ManagedEnclave::load(&mut bm, &sgxs, &sig, None), Err(GuestError::Image(_))));
    // A vsgx header with an unknown ABI version is refused before anything is built.
    let (mut future, _) = example("hello");
    let magic = future.windows(8).position(|w| w == b"VSGXWASM").expect("the header page is in the stream");
    future[magic + 8] = 9;
    assert!(matches!(
        ManagedEnclave::load(&mut bm, &future, &sig, None),
        Err(GuestError::Header(vsgx_isa::wasm_abi::HeaderError::Version(_)))
    ));
    assert_eq!(bm.kernel().free_epc_pages(), free, "nothing leaked");
    // An enclave whose code is not WebAssembly (the Fortanix test enclave, x86) loads and
    // initializes, has no ECALLs here, and tears down completely.
    let mut x86 = ManagedEnclave::load(&mut bm, FORTANIX_SGXS, FORTANIX_SIG, None).unwrap();
    assert!(!x86.runs_here() && x86.ecalls().is_empty());
    assert!(matches!(x86.call(&mut bm, "main", b"", 0), Err(GuestError::NoSuchEcall)));
    bm.destroy(x86.id()).unwrap();
    assert_eq!(bm.kernel().free_epc_pages(), free, "nothing leaked");
    let _ = Arc::new(0);
}

#[test]
fn large_inputs_and_outputs_work_call_after_call() {
    let epc = manager(8);
    let mut g = in_domain(&epc, 6, 16);
    let (sgxs, sig) = example("hello");
    let mut hello = ManagedEnclave::load(&mut g.driver, &sgxs, &sig, None).unwrap();
    let input = vec![b'a'; 20_000];
    for _ in 0..4 {
        let out = hello.call(&mut g.driver, "hello", &input, 32_768).unwrap().output;
        assert_eq!(out.len(), 20_007);
        assert!(out.starts_with(b"Hello, AAAA"));
    }
}

//! Save/restore without EPC contents (DESIGN §5.2, §5.5): a guest with a launched enclave is saved
//! and restored on the same and on another platform; the restored domain has the same layout,
//! vCPU state and RAM, and an empty vEPC that the guest observes as EPC loss and recovers from.
//! Corrupted, truncated and foreign streams are rejected with specific errors and never panic.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use proptest::prelude::*;
use sha2::{Digest, Sha256};
use vsgx_hv::domain::{Domain, DomainError, DomainSpec};
use vsgx_hv::epc::{DomainId, EpcManager};
use vsgx_hv::policy::{LaunchControl, SgxFeatures, VepcSection};
use vsgx_hv::snapshot::{self, SnapshotError};
use vsgx_hv::vcpu::{Vcpu, VcpuState};
use vsgx_hw::config;
use vsgx_hw::os::{SimpleOs, default_base};
use vsgx_hw::platform::Platform;
use vsgx_isa::cpu::{Cpl, Cpu, LeafStatus};
use vsgx_isa::cpuid::EpcSectionLeaf;
use vsgx_isa::leaf::Encls;
use vsgx_isa::sgxs::LoadPlan;
use vsgx_isa::status::SgxError;
use vsgx_isa::{ArchStruct, Sigstruct};

const SGXS: &[u8] = include_bytes!("../../../testdata/fortanix-test-enclave.sgxs");
const SIG: &[u8] = include_bytes!("../../../testdata/fortanix-test-enclave.sig");
const RAM: u64 = 256 << 20;
const EPC_GPA: u64 = 0x1_0000_0000;
/// Where the guest keeps its recognizable data: identity-mapped RAM, clear of SimpleOs's page
/// tables and scratch memory, crossing page boundaries.
const DATA_LA: u64 = 0x0900_0F00;

fn manager_seeded(seed: u64) -> Arc<EpcManager> {
    let mut cfg = config::embedded_default();
    cfg.seed = Some(seed);
    Arc::new(EpcManager::new(Platform::new(cfg)))
}

fn manager() -> Arc<EpcManager> {
    manager_seeded(11)
}

fn spec(name: &str, epc_mib: u64, node: u32) -> DomainSpec {
    DomainSpec {
        name: name.into(),
        uuid: *b"vsgx-snapshot-01",
        vcpus: 2,
        ram: vec![(0, RAM)],
        epc: vec![
            VepcSection { gpa: EPC_GPA, size: epc_mib << 20, node },
            VepcSection { gpa: EPC_GPA + (64 << 20), size: 2 << 20, node: 1 - node },
        ],
        features: SgxFeatures { kss: Some(false), xfrm_mask: Some(3), ..SgxFeatures::default() },
        launch: LaunchControl::default(),
        provision: false,
    }
}

fn fortanix() -> (LoadPlan, Sigstruct) {
    (LoadPlan::from_sgxs(SGXS).unwrap(), Sigstruct::from_bytes(SIG).unwrap())
}

fn data() -> Vec<u8> {
    let mut d = b"vsgx snapshot: this text must survive save and restore. ".to_vec();
    d.extend((0..10_000u32).map(|i| (i.wrapping_mul(7) ^ (i >> 5)) as u8));
    d
}

fn cpuid_sections(cpu: &mut Vcpu) -> Vec<(u64, u64)> {
    let mut sections = Vec::new();
    for sub in 2.. {
        match EpcSectionLeaf::decode(sub, cpu.cpuid(0x12, sub)).unwrap() {
            Some(s) => sections.push((s.base, s.size)),
            None => break,
        }
    }
    sections
}

/// What the test remembers of a saved guest.
struct Saved {
    stream: Vec<u8>,
    spec: DomainSpec,
    states: Vec<VcpuState>,
    cpuid: Vec<(u64, u64)>,
    secs: u64,
    pages: Vec<u64>,
    dirty: Vec<u64>,
}

/// A domain whose guest booted SimpleOs on vCPU 0, launched the Fortanix enclave and wrote
/// recognizable data; vCPU 1 runs the same address space at ring 3. Returns it with its stream.
fn saved_guest(epc: &Arc<EpcManager>, id: DomainId) -> (Domain, Saved) {
    let spec = spec("saved", 16, 0);
    let d = Domain::create(id, spec.clone(), Arc::clone(epc)).unwrap();
    let mut os = SimpleOs::boot(d.vcpu(0).unwrap(), RAM).expect("guest boots");
    let (plan, sig) = fortanix();
    let built = os.build(&plan, &sig, default_base(plan.size, true)).unwrap();
    assert_eq!(os.einit(built.secs, &sig).unwrap(), LeafStatus::Success);
    os.cpu().write(DATA_LA, &data()).unwrap();
    let mut v1 = d.vcpu(1).unwrap();
    v1.set_cr3(os.cpu().cr3());
    v1.set_paging(true);
    v1.set_cpl(Cpl::Ring3);
    let v0: &Vcpu = os.cpu();
    let states = vec![v0.state(), v1.state()];
    assert_ne!(states[0].lehash, [0; 4]);
    let stream = snapshot::save(&d, &[&v1, v0]);
    let cpuid = cpuid_sections(os.cpu());
    let saved = Saved {
        stream,
        spec,
        states,
        cpuid,
        secs: built.secs,
        pages: built.pages,
        dirty: d.shared().ram.dirty_pages(),
    };
    (d, saved)
}

/// Everything a restored domain must satisfy; ends with the guest rebuilding its enclave.
fn check_restored(epc: &Arc<EpcManager>, restored: &Domain, mut vcpus: Vec<Vcpu>, saved: &Saved) {
    assert_eq!(restored.spec(), &saved.spec, "same spec and layout");
    assert_eq!(vcpus.len(), 2);
    for (i, v) in vcpus.iter_mut().enumerate() {
        assert_eq!(v.index() as usize, i);
        assert_eq!(v.state(), saved.states[i], "vCPU {i} state (CR3, paging, CPL, MSRs)");
        assert_eq!(cpuid_sections(v), saved.cpuid, "vCPU {i} CPUID 0x12 decodes to the same vEPC");
    }
    assert_eq!(restored.shared().ram.dirty_pages(), saved.dirty, "the same RAM pages are in use");
    // The data reads back through the restored vCPU: its page tables came along in RAM.
    let mut back = vec![0u8; data().len()];
    vcpus[0].read(DATA_LA, &mut back).unwrap();
    assert_eq!(back, data());
    // The vEPC is empty: every old enclave page is invalid to the guest (SGX.md §10.2).
    assert_eq!(epc.platform().census().unwrap().valid, 0, "no EPC contents were carried");
    let v0 = &mut vcpus[0];
    for &page in saved.pages.iter().chain([&saved.secs]) {
        assert_eq!(v0.encls_leaf(Encls::Eblock, 0, page, 0).unwrap().status(), LeafStatus::Error(SgxError::PgInvld));
    }
    assert_eq!(v0.encls_leaf(Encls::Eremove, 0, saved.secs, 0).unwrap().status(), LeafStatus::Success);
    // The guest recovers: it rebuilds and launches the enclave in the same vEPC.
    let mut os = SimpleOs::boot(vcpus.remove(0), RAM).expect("guest reboots");
    let (plan, sig) = fortanix();
    let again = os.build(&plan, &sig, default_base(plan.size, true)).unwrap();
    assert!(again.secs >= EPC_GPA && again.secs < EPC_GPA + (16 << 20));
    assert_eq!(os.einit(again.secs, &sig).unwrap(), LeafStatus::Success);
    assert_eq!(restored.shared().exits.get(Encls::Ecreate), 1);
    epc.check_conservation().unwrap();
}

#[test]
fn restore_on_the_same_platform_after_destroying_the_original() {
    let epc = manager();
    let (d, saved) = saved_guest(&epc, DomainId(1));
    d.destroy().unwrap();
    assert_eq!(epc.stats().free, epc.stats().total);
    let (restored, vcpus) = snapshot::restore(&saved.stream, DomainId(2), Arc::clone(&epc)).unwrap();
    assert_eq!(restored.shared().id, DomainId(2));
    assert_eq!(restored.epc_pages().len() as u64, (16 + 2) << 8, "static vEPC of the same size");
    check_restored(&epc, &restored, vcpus, &saved);
    // Saving the restored domain again round-trips the spec.
    let again = snapshot::save(&restored, &[]);
    restored.destroy().unwrap();
    let (third, _) = snapshot::restore(&again, DomainId(3), Arc::clone(&epc)).unwrap();
    assert_eq!(third.spec(), &saved.spec);
    third.destroy().unwrap();
    assert_eq!(epc.stats().free, epc.stats().total);
}

#[test]
fn restore_on_another_platform() {
    let source = manager();
    let (_original, saved) = saved_guest(&source, DomainId(1));
    let dest = manager_seeded(4242);
    let (restored, vcpus) = snapshot::restore(&saved.stream, DomainId(7), Arc::clone(&dest)).unwrap();
    check_restored(&dest, &restored, vcpus, &saved);
    restored.destroy().unwrap();
    assert_eq!(dest.stats().free, dest.stats().total);
}

#[test]
fn vcpus_not_given_to_save_are_restored_in_their_reset_state() {
    let epc = manager();
    let d = Domain::create(DomainId(1), spec("reset", 4, 0), Arc::clone(&epc)).unwrap();
    let mut v1 = d.vcpu(1).unwrap();
    v1.set_cr3(0x5000);
    let stream = snapshot::save(&d, &[&v1]);
    let (restored, vcpus) = snapshot::restore(&stream, DomainId(2), Arc::clone(&epc)).unwrap();
    assert_eq!(vcpus[0].state(), d.vcpu(0).unwrap().state());
    assert_eq!(vcpus[1].state(), v1.state());
    assert!(restored.shared().ram.dirty_pages().is_empty());
}

#[test]
fn a_shortage_on_restore_leaks_nothing() {
    let epc = manager();
    let mut s = spec("big", 4, 0);
    s.epc[0].size = 160 << 20;
    let d = Domain::create(DomainId(1), s, Arc::clone(&epc)).unwrap();
    let stream = snapshot::save(&d, &[]);
    let before = epc.stats();
    match snapshot::restore(&stream, DomainId(2), Arc::clone(&epc)) {
        Err(SnapshotError::Domain(DomainError::Epc { section: 0, .. })) => {}
        other => panic!("expected an EPC shortage, got {other:?}"),
    }
    assert_eq!(epc.stats(), before, "nothing leaked");
    // A vEPC larger than all of this platform's EPC is refused before anything is allocated.
    let sections = sections_of(&stream);
    let mut big = stream.clone();
    let (_, spec_at, _) = sections[0];
    let vepc_size_at = spec_at + 4 + 3 + 16 + 4 + 4 + 16 + 4 + 8;
    big[vepc_size_at..vepc_size_at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    reseal(&mut big);
    let err = snapshot::restore(&big, DomainId(3), Arc::clone(&epc)).unwrap_err();
    assert!(matches!(err, SnapshotError::Incompatible(_)), "{err}");
    assert!(err.to_string().contains("this platform's EPC only 65536"), "{err}");
    assert_eq!(epc.stats(), before);
}

// ---------------------------------------------------------------------------------------------
// Rejections

/// `(tag, content offset, content length)` of each section, END included.
fn sections_of(stream: &[u8]) -> Vec<([u8; 4], usize, usize)> {
    let mut out = Vec::new();
    let mut at = 12;
    loop {
        let tag: [u8; 4] = stream[at..at + 4].try_into().unwrap();
        let len = u64::from_le_bytes(stream[at + 4..at + 12].try_into().unwrap()) as usize;
        out.push((tag, at + 12, len));
        at += 12 + len;
        if &tag == b"END\0" {
            return out;
        }
    }
}

fn section(stream: &[u8], tag: &[u8; 4]) -> (usize, usize) {
    sections_of(stream).into_iter().find(|(t, ..)| t == tag).map(|(_, at, len)| (at, len)).unwrap()
}

/// Recomputes the trailing checksum after a deliberate edit.
fn reseal(stream: &mut [u8]) {
    let n = stream.len() - 32;
    let digest = Sha256::digest(&stream[..n]);
    stream[n..].copy_from_slice(&digest);
}

/// A small valid stream (a few RAM pages, 1 MiB vEPC) for the rejection and property tests.
fn small_stream() -> &'static [u8] {
    static STREAM: OnceLock<Vec<u8>> = OnceLock::new();
    STREAM.get_or_init(|| {
        let epc = manager();
        let s = DomainSpec {
            name: "small".into(),
            uuid: [7; 16],
            vcpus: 2,
            ram: vec![(0, 2 << 20), (0x10_0000_0000, 1 << 20)],
            epc: vec![VepcSection { gpa: 0x8000_0000, size: 1 << 20, node: 1 }],
            features: SgxFeatures { sgx2: Some(true), ..SgxFeatures::default() },
            launch: LaunchControl { lehash: [0xA5; 32], writable: false },
            provision: true,
        };
        let d = Domain::create(DomainId(99), s, epc).unwrap();
        d.shared().ram.write(0x1000, b"page table?").unwrap();
        d.shared().ram.write(0x1F_0FF0, &[0x5A; 32]).unwrap();
        d.shared().ram.write(0x10_0000_0000, b"high RAM").unwrap();
        let mut v0 = d.vcpu(0).unwrap();
        v0.set_cr3(0x1000);
        v0.set_paging(true);
        snapshot::save(&d, &[&v0])
    })
}

/// The manager restores in property tests use (each test its own domain id).
fn shared_manager() -> Arc<EpcManager> {
    static EPC: OnceLock<Arc<EpcManager>> = OnceLock::new();
    Arc::clone(EPC.get_or_init(|| manager_seeded(5)))
}

/// Restores on the shared manager, each time as a new domain id (tests run concurrently).
fn restore(bytes: &[u8]) -> Result<(Domain, Vec<Vcpu>), SnapshotError> {
    static NEXT: AtomicU32 = AtomicU32::new(1000);
    snapshot::restore(bytes, DomainId(NEXT.fetch_add(1, Ordering::Relaxed)), shared_manager())
}

#[test]
fn the_small_stream_follows_the_documented_layout() {
    let stream = small_stream();
    assert_eq!(&stream[..8], b"VSGXDOM\0");
    assert_eq!(u32::from_le_bytes(stream[8..12].try_into().unwrap()), 1);
    let tags: Vec<[u8; 4]> = sections_of(stream).iter().map(|s| s.0).collect();
    assert_eq!(tags, [*b"SPEC", *b"VCPU", *b"RAM\0", *b"END\0"]);
    let (ram_at, ram_len) = section(stream, b"RAM\0");
    assert_eq!(
        u64::from_le_bytes(stream[ram_at..ram_at + 8].try_into().unwrap()),
        4,
        "pages 0x1000, 0x1f0000, 0x1f1000, 0x10_0000_0000"
    );
    assert_eq!(ram_len, 8 + 4 * (8 + 4096));
    let (vcpu_at, vcpu_len) = section(stream, b"VCPU");
    assert_eq!(vcpu_len, 4 + 2 * 54);
    assert_eq!(u64::from_le_bytes(stream[vcpu_at + 8..vcpu_at + 16].try_into().unwrap()), 0x1000, "vCPU 0 CR3");
    let (end_at, _) = section(stream, b"END\0");
    assert_eq!(end_at + 32, stream.len());
    assert_eq!(&stream[end_at..], Sha256::digest(&stream[..end_at]).as_slice());
    let (d, vcpus) = restore(stream).unwrap();
    assert_eq!(d.spec().name, "small");
    assert!(d.spec().provision);
    assert_eq!(vcpus[0].state().cr3, 0x1000);
    let mut b = [0u8; 8];
    d.shared().ram.read(0x10_0000_0000, &mut b).unwrap();
    assert_eq!(&b, b"high RAM");
}

#[test]
fn bad_magic() {
    let mut s = small_stream().to_vec();
    s[0] = b'X';
    let err = restore(&s).unwrap_err();
    assert!(matches!(err, SnapshotError::BadMagic { .. }), "{err}");
    assert!(err.to_string().contains("bad magic"), "{err}");
    assert!(matches!(restore(b"ELF\x7f").unwrap_err(), SnapshotError::BadMagic { .. }));
    // A prefix of the magic is a truncated stream.
    let err = restore(b"VSGX").unwrap_err();
    assert!(matches!(err, SnapshotError::Truncated { offset: 0, ref field, .. } if field == "magic"), "{err}");
}

#[test]
fn version_2_is_refused() {
    let mut s = small_stream().to_vec();
    s[8..12].copy_from_slice(&2u32.to_le_bytes());
    reseal(&mut s);
    let err = restore(&s).unwrap_err();
    assert!(matches!(err, SnapshotError::UnsupportedVersion { found: 2 }), "{err}");
    assert!(err.to_string().contains("unsupported version 2"), "{err}");
}

#[test]
fn truncated_streams_name_the_offset_and_field() {
    let full = small_stream();
    let err = restore(&full[..10]).unwrap_err();
    assert!(
        matches!(err, SnapshotError::Truncated { offset: 8, ref field, needed: 4, available: 2 } if field == "format version"),
        "{err}"
    );
    let err = restore(&full[..full.len() - 1]).unwrap_err();
    let checksum_at = full.len() - 32;
    assert!(
        matches!(err, SnapshotError::Truncated { offset, ref field, .. } if offset == checksum_at && field.contains("checksum")),
        "{err}"
    );
    let (ram_at, ram_len) = section(full, b"RAM\0");
    let err = restore(&full[..ram_at + 100]).unwrap_err();
    assert!(
        matches!(err, SnapshotError::Truncated { offset, ref field, needed, available: 100 }
            if offset == ram_at && field.contains("section RAM content") && needed == ram_len as u64),
        "{err}"
    );
    assert!(err.to_string().contains(&format!("truncated at byte {ram_at}")), "{err}");
    // Inside a section (its length shrunk, the stream resealed): the field in the section.
    let mut s = full.to_vec();
    let (vcpu_at, vcpu_len) = section(&s, b"VCPU");
    s.drain(vcpu_at + vcpu_len - 8..vcpu_at + vcpu_len);
    s[vcpu_at - 8..vcpu_at].copy_from_slice(&((vcpu_len - 8) as u64).to_le_bytes());
    reseal(&mut s);
    let err = restore(&s).unwrap_err();
    assert!(matches!(err, SnapshotError::Truncated { ref field, .. } if field.contains("VCPU 2 records")), "{err}");
}

#[test]
fn corruption_is_caught_by_the_checksum() {
    let full = small_stream();
    let (ram_at, _) = section(full, b"RAM\0");
    let uuid_at = section(full, b"SPEC").0 + 4 + "small".len();
    for at in [ram_at + 8 + 8 + 100, full.len() - 1, uuid_at + 3] {
        let mut s = full.to_vec();
        s[at] ^= 0x40;
        let err = restore(&s).unwrap_err();
        assert!(matches!(err, SnapshotError::ChecksumMismatch { .. }), "byte {at}: {err}");
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
    }
    let mut s = full.to_vec();
    s.push(0);
    assert!(matches!(restore(&s).unwrap_err(), SnapshotError::Invalid { ref field, .. } if field == "end of stream"));
}

#[test]
fn unknown_duplicate_and_missing_sections() {
    let full = small_stream();
    let mut s = full.to_vec();
    s[12..16].copy_from_slice(b"SPEX");
    let err = restore(&s).unwrap_err();
    assert!(matches!(err, SnapshotError::UnknownSection { offset: 12, tag } if &tag == b"SPEX"), "{err}");
    assert!(err.to_string().contains("unknown section tag \"SPEX\" at byte 12"), "{err}");
    // VCPU twice: splice a copy of the VCPU section in front of END.
    let (vcpu_at, vcpu_len) = section(full, b"VCPU");
    let (end_at, _) = section(full, b"END\0");
    let mut s = full[..end_at - 12].to_vec();
    s.extend_from_slice(&full[vcpu_at - 12..vcpu_at + vcpu_len]);
    s.extend_from_slice(&full[end_at - 12..]);
    reseal(&mut s);
    let err = restore(&s).unwrap_err();
    assert!(matches!(err, SnapshotError::Invalid { ref reason, .. } if reason.contains("appears twice")), "{err}");
    // RAM removed.
    let (ram_at, ram_len) = section(full, b"RAM\0");
    let mut s = full[..ram_at - 12].to_vec();
    s.extend_from_slice(&full[ram_at + ram_len..]);
    reseal(&mut s);
    let err = restore(&s).unwrap_err();
    assert!(matches!(err, SnapshotError::MissingSection { tag } if &tag == b"RAM\0"), "{err}");
    assert!(err.to_string().contains("section \"RAM\" is missing"), "{err}");
}

#[test]
fn invalid_values_name_what_and_where() {
    let full = small_stream();
    let (spec_at, _) = section(full, b"SPEC");
    let name_len = u32::from_le_bytes(full[spec_at..spec_at + 4].try_into().unwrap()) as usize;
    // Name not UTF-8.
    let mut s = full.to_vec();
    s[spec_at + 4] = 0xFF;
    reseal(&mut s);
    let err = restore(&s).unwrap_err();
    assert!(
        matches!(err, SnapshotError::Invalid { offset, ref field, ref reason }
            if offset == spec_at + 4 && field == "SPEC name" && reason.contains("UTF-8")),
        "{err}"
    );
    // vCPU count mismatch: the spec says 3, the VCPU section has 2 records.
    let vcpus_at = spec_at + 4 + name_len + 16;
    let mut s = full.to_vec();
    s[vcpus_at..vcpus_at + 4].copy_from_slice(&3u32.to_le_bytes());
    reseal(&mut s);
    let (vcpu_at, _) = section(&s, b"VCPU");
    let err = restore(&s).unwrap_err();
    assert!(
        matches!(err, SnapshotError::Invalid { offset, ref field, ref reason }
            if offset == vcpu_at && field == "VCPU count" && reason.contains("3 vCPUs")),
        "{err}"
    );
    // Zero vCPUs.
    let mut s = full.to_vec();
    s[vcpus_at..vcpus_at + 4].copy_from_slice(&0u32.to_le_bytes());
    reseal(&mut s);
    assert!(matches!(restore(&s).unwrap_err(), SnapshotError::Invalid { offset, .. } if offset == vcpus_at));
    // A RAM page outside RAM (between the two regions).
    let (ram_at, _) = section(full, b"RAM\0");
    let mut s = full.to_vec();
    let last_page_at = ram_at + 8 + 3 * (8 + 4096);
    s[last_page_at..last_page_at + 8].copy_from_slice(&0x4000_0000u64.to_le_bytes());
    reseal(&mut s);
    let err = restore(&s).unwrap_err();
    assert!(
        matches!(err, SnapshotError::Invalid { offset, ref field, ref reason }
            if offset == last_page_at && field == "RAM page 3 GPA" && reason.contains("0x40000000 is outside RAM")),
        "{err}"
    );
    // CPL 4.
    let (vcpu_at, _) = section(full, b"VCPU");
    let mut s = full.to_vec();
    s[vcpu_at + 4 + 13] = 4;
    reseal(&mut s);
    let err = restore(&s).unwrap_err();
    assert!(matches!(err, SnapshotError::Invalid { ref field, .. } if field == "vCPU 0 CPL"), "{err}");
    // FEATURE_CONTROL is locked by firmware: a value this platform would not give is refused.
    let mut s = full.to_vec();
    s[vcpu_at + 4 + 14..vcpu_at + 4 + 22].copy_from_slice(&1u64.to_le_bytes());
    reseal(&mut s);
    let err = restore(&s).unwrap_err();
    assert!(
        matches!(err, SnapshotError::Incompatible(ref m) if m.contains("vCPU 0 IA32_FEATURE_CONTROL") && m.contains("was 0x1")),
        "{err}"
    );
    // A boolean that is neither 0 nor 1 (provision is the spec's last byte).
    let (spec_at, spec_len) = section(full, b"SPEC");
    let mut s = full.to_vec();
    s[spec_at + spec_len - 1] = 7;
    reseal(&mut s);
    let err = restore(&s).unwrap_err();
    assert!(matches!(err, SnapshotError::Invalid { ref field, .. } if field == "SPEC provision"), "{err}");
    // Overlapping RAM regions.
    let regions_at = vcpus_at + 4 + 4;
    let mut s = full.to_vec();
    s[regions_at + 16..regions_at + 24].copy_from_slice(&0x10_0000u64.to_le_bytes());
    reseal(&mut s);
    let err = restore(&s).unwrap_err();
    assert!(
        matches!(err, SnapshotError::Invalid { ref reason, .. } if reason.contains("overlaps RAM region 0")),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Property tests: nothing panics, and without a matching checksum nothing is accepted.

fn mutations() -> impl Strategy<Value = Vec<(prop::sample::Index, u8)>> {
    prop::collection::vec((any::<prop::sample::Index>(), 1..=255u8), 1..6)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_are_rejected(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        prop_assert!(restore(&bytes).is_err());
        // The same behind a valid header, to reach the section framing.
        let mut s = small_stream()[..12].to_vec();
        s.extend_from_slice(&bytes);
        prop_assert!(restore(&s).is_err());
    }

    #[test]
    fn arbitrary_sealed_sections_never_panic(
        spec in prop::collection::vec(any::<u8>(), 0..300),
        vcpu in prop::collection::vec(any::<u8>(), 0..200),
        ram in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        // Random contents behind valid framing and checksum: the section decoders see them.
        let mut s = b"VSGXDOM\0\x01\0\0\0".to_vec();
        for (tag, content) in [(b"SPEC", &spec), (b"VCPU", &vcpu), (b"RAM\0", &ram)] {
            s.extend_from_slice(tag);
            s.extend_from_slice(&(content.len() as u64).to_le_bytes());
            s.extend_from_slice(content);
        }
        s.extend_from_slice(b"END\0");
        s.extend_from_slice(&0u64.to_le_bytes());
        s.extend_from_slice(&[0; 32]);
        reseal(&mut s);
        let _ = restore(&s);
    }

    #[test]
    fn mutated_streams_are_rejected(m in mutations()) {
        let mut s = small_stream().to_vec();
        for (at, x) in &m {
            let i = at.index(s.len());
            s[i] ^= x;
        }
        prop_assume!(s != small_stream());
        prop_assert!(restore(&s).is_err());
        // Resealed, the decoders see the mutation: no panic, whatever the verdict.
        reseal(&mut s);
        let _ = restore(&s);
    }

    #[test]
    fn truncated_streams_are_rejected(at in any::<prop::sample::Index>()) {
        let full = small_stream();
        let cut = at.index(full.len());
        let err = restore(&full[..cut]).unwrap_err();
        let is_truncated = matches!(err, SnapshotError::Truncated { .. });
        prop_assert!(is_truncated, "{}", err);
    }

    #[test]
    fn streams_with_bytes_inserted_or_removed_are_rejected(at in any::<prop::sample::Index>(), len in 1..64usize, insert in any::<bool>()) {
        let mut s = small_stream().to_vec();
        let at = at.index(s.len());
        if insert {
            s.splice(at..at, std::iter::repeat_n(0xA5, len));
        } else {
            s.drain(at..(at + len).min(s.len()));
        }
        prop_assert!(restore(&s).is_err());
    }
}

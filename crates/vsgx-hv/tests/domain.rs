//! Domains end to end: an OS booted on a vCPU builds and launches enclaves in its vEPC; CPUID,
//! launch control, PROVISIONKEY policing, static backing, reset and isolation.

use std::sync::Arc;

use vsgx_hv::domain::{Domain, DomainError, DomainSpec};
use vsgx_hv::epc::{DomainId, EpcManager};
use vsgx_hv::policy::{LaunchControl, SgxFeatures, VepcSection};
use vsgx_hv::vcpu::Vcpu;
use vsgx_hw::config;
use vsgx_hw::os::{SimpleOs, default_base};
use vsgx_hw::platform::Platform;
use vsgx_isa::cpu::{Cpu, Exception, LeafStatus};
use vsgx_isa::cpuid::EpcSectionLeaf;
use vsgx_isa::leaf::Encls;
use vsgx_isa::msr::INTEL_LE_PUBKEY_HASH;
use vsgx_isa::sgxs::LoadPlan;
use vsgx_isa::status::SgxError;
use vsgx_isa::{ArchStruct, AttributesFlags, Sigstruct};

const SGXS: &[u8] = include_bytes!("../../../testdata/fortanix-test-enclave.sgxs");
const SIG: &[u8] = include_bytes!("../../../testdata/fortanix-test-enclave.sig");
const RAM: u64 = 256 << 20;
const EPC_GPA: u64 = 0x1_0000_0000;

fn manager() -> Arc<EpcManager> {
    let mut cfg = config::embedded_default();
    cfg.seed = Some(11);
    Arc::new(EpcManager::new(Platform::new(cfg)))
}

fn spec(name: &str, epc_mib: u64, node: u32) -> DomainSpec {
    DomainSpec {
        name: name.into(),
        uuid: [0; 16],
        vcpus: 2,
        ram: vec![(0, RAM)],
        epc: vec![VepcSection { gpa: EPC_GPA, size: epc_mib << 20, node }],
        features: SgxFeatures::default(),
        launch: LaunchControl::default(),
        provision: false,
    }
}

fn guest_os(d: &Domain) -> SimpleOs<Vcpu> {
    SimpleOs::boot(d.vcpu(0).unwrap(), RAM).expect("guest boots")
}

fn fortanix() -> (LoadPlan, Sigstruct) {
    (LoadPlan::from_sgxs(SGXS).unwrap(), Sigstruct::from_bytes(SIG).unwrap())
}

#[test]
fn the_fortanix_enclave_launches_inside_a_domain() {
    let epc = manager();
    let d = Domain::create(DomainId(1), spec("guest", 16, 0), Arc::clone(&epc)).unwrap();
    let mut os = guest_os(&d);
    let (plan, sig) = fortanix();
    let built = os.build(&plan, &sig, default_base(plan.size, true)).unwrap();
    assert!(built.secs >= EPC_GPA && built.secs < EPC_GPA + (16 << 20), "the guest uses its own vEPC GPAs");
    assert_eq!(os.einit(built.secs, &sig).unwrap(), LeafStatus::Success);
    let exits = &d.shared().exits;
    assert_eq!(exits.get(Encls::Ecreate), 1, "ECREATE trapped (PROVISIONKEY is policed)");
    assert_eq!(exits.get(Encls::Einit), 1, "EINIT trapped (the host has FLC)");
    assert_eq!(exits.get(Encls::Eadd), 0, "EADD runs natively");
    epc.check_conservation().unwrap();
    let report = d.destroy().unwrap();
    assert!(report.quarantined.is_empty());
    assert_eq!(epc.stats().free, epc.stats().total, "destroy returns every page");
    assert_eq!(epc.platform().census().unwrap().valid, 0);
}

#[test]
fn guest_cpuid_0x12_decodes_to_exactly_its_vepc() {
    let epc = manager();
    let mut s = spec("cpuid", 8, 1);
    s.epc.push(VepcSection { gpa: EPC_GPA + (64 << 20), size: 4 << 20, node: 0 });
    let d = Domain::create(DomainId(2), s.clone(), epc).unwrap();
    let mut cpu = d.vcpu(1).unwrap();
    let mut sections = Vec::new();
    for sub in 2.. {
        match EpcSectionLeaf::decode(sub, cpu.cpuid(0x12, sub)).unwrap() {
            Some(sec) => sections.push((sec.base, sec.size)),
            None => break,
        }
    }
    assert_eq!(sections, s.epc.iter().map(|v| (v.gpa, v.size)).collect::<Vec<_>>());
    // The oversubscription extensions are the hypervisor's, never the guest's.
    let leaf0 = vsgx_isa::cpuid::SgxLeaf0::decode(cpu.cpuid(0x12, 0)).unwrap();
    assert!(!leaf0.leaves.contains(vsgx_isa::cpuid::SgxLeafSupport::ENCLV));
    assert!(leaf0.leaves.contains(vsgx_isa::cpuid::SgxLeafSupport::SGX2));
}

#[test]
fn numa_placement_is_honoured() {
    let epc = manager();
    let platform = Arc::clone(epc.platform());
    let node1 = platform.epc().sections().iter().find(|s| s.node == 1).map(|s| (s.base, s.size)).unwrap();
    let d = Domain::create(DomainId(3), spec("numa", 8, 1), epc).unwrap();
    assert!(d.epc_pages().iter().all(|&hpa| hpa >= node1.0 && hpa < node1.0 + node1.1));
}

#[test]
fn creation_fails_cleanly_when_epc_is_short() {
    let epc = manager();
    let before = epc.stats();
    let mut s = spec("big", 16, 0);
    s.epc.push(VepcSection { gpa: EPC_GPA + (1 << 30), size: 512 << 20, node: 1 });
    match Domain::create(DomainId(4), s, Arc::clone(&epc)) {
        Err(DomainError::Epc { section, source, .. }) => {
            assert_eq!(section, 1);
            assert!(source.to_string().contains("short by"), "{source}");
        }
        other => panic!("expected a shortage, got {other:?}"),
    }
    assert_eq!(epc.stats(), before, "nothing leaked");
}

#[test]
fn provisionkey_is_refused_unless_allowed() {
    let epc = manager();
    let (plan, mut sig) = fortanix();
    sig.attributes.flags |= AttributesFlags::PROVISIONKEY.bits();
    let refused = Domain::create(DomainId(5), spec("noprov", 4, 0), Arc::clone(&epc)).unwrap();
    let mut os = guest_os(&refused);
    let err = os.build(&plan, &sig, default_base(plan.size, true)).unwrap_err();
    assert!(err.to_string().contains("ECREATE") && err.to_string().contains("#GP(0)"), "{err}");
    let mut allowed_spec = spec("prov", 4, 0);
    allowed_spec.provision = true;
    let allowed = Domain::create(DomainId(6), allowed_spec, epc).unwrap();
    let mut os = guest_os(&allowed);
    os.build(&plan, &sig, default_base(plan.size, true)).expect("PROVISIONKEY allowed");
}

#[test]
fn launch_control_follows_each_domains_policy() {
    let epc = manager();
    let (plan, sig) = fortanix();
    let mrsigner = vsgx_isa::measure::mrsigner(&sig.modulus);
    let locked = |name: &str, lehash: [u8; 32]| {
        let mut s = spec(name, 4, 0);
        s.launch = LaunchControl { lehash, writable: false };
        s
    };
    // lewr = 0: the configured hash decides; the guest's MSR writes fault.
    let admits = Domain::create(DomainId(7), locked("admits", mrsigner), Arc::clone(&epc)).unwrap();
    let mut os = guest_os(&admits);
    let built = os.build(&plan, &sig, default_base(plan.size, true)).unwrap();
    assert_eq!(os.cpu().wrmsr(vsgx_isa::msr::IA32_SGXLEPUBKEYHASH0, 0), Err(Exception::GP0));
    assert_eq!(os.einit(built.secs, &sig).unwrap(), LeafStatus::Success);
    let refuses = Domain::create(DomainId(8), locked("refuses", INTEL_LE_PUBKEY_HASH), Arc::clone(&epc)).unwrap();
    let mut os = guest_os(&refuses);
    let built = os.build(&plan, &sig, default_base(plan.size, true)).unwrap();
    assert_eq!(os.einit(built.secs, &sig).unwrap(), LeafStatus::Error(SgxError::InvalidEinittoken));
    // lewr = 1: the guest's own writes decide (SimpleOs writes the signer's hash, as Linux does).
    let writable = Domain::create(DomainId(9), spec("lewr", 4, 0), epc).unwrap();
    let mut os = guest_os(&writable);
    let built = os.build(&plan, &sig, default_base(plan.size, true)).unwrap();
    assert_eq!(os.einit(built.secs, &sig).unwrap(), LeafStatus::Success);
}

#[test]
fn s3_reset_invalidates_every_enclave_page_for_the_guest() {
    let epc = manager();
    let d = Domain::create(DomainId(10), spec("s3", 4, 0), Arc::clone(&epc)).unwrap();
    let mut os = guest_os(&d);
    let (plan, sig) = fortanix();
    let built = os.build(&plan, &sig, default_base(plan.size, true)).unwrap();
    assert_eq!(os.einit(built.secs, &sig).unwrap(), LeafStatus::Success);
    let report = d.reset_epc().unwrap();
    assert!(report.failed.is_empty());
    for &page in &built.pages {
        assert_eq!(os.encls(Encls::Eblock, 0, page, 0), Ok(LeafStatus::Error(SgxError::PgInvld)));
    }
    assert_eq!(os.encls(Encls::Eremove, 0, built.secs, 0), Ok(LeafStatus::Success));
    // The mapping stays: the guest rebuilds in the same vEPC.
    let again = os.build(&plan, &sig, default_base(plan.size, true) + plan.size).unwrap();
    assert_eq!(os.einit(again.secs, &sig).unwrap(), LeafStatus::Success);
    epc.check_conservation().unwrap();
}

#[test]
fn a_guest_cannot_name_epc_outside_its_vepc() {
    let epc = manager();
    let a = Domain::create(DomainId(11), spec("a", 4, 0), Arc::clone(&epc)).unwrap();
    let b = Domain::create(DomainId(12), spec("b", 4, 0), Arc::clone(&epc)).unwrap();
    let mut os_a = guest_os(&a);
    let (plan, sig) = fortanix();
    let built = os_a.build(&plan, &sig, default_base(plan.size, true)).unwrap();
    let a_secs_hpa = a.shared().epc_of(built.secs).unwrap();
    // Guest B names A's host EPC address as if it were its own: it is not in B's vEPC, so the
    // identity map sends it to (nonexistent) guest RAM, and the leaf sees no EPC page there.
    let mut os_b = guest_os(&b);
    let r = os_b.encls(Encls::Eremove, 0, a_secs_hpa, 0);
    assert!(matches!(r, Err(Exception::PageFault { .. } | Exception::GeneralProtection(_))), "{r:?}");
    // A's enclave is untouched.
    assert_eq!(os_a.einit(built.secs, &sig).unwrap(), LeafStatus::Success);
}

#[test]
fn dropping_a_domain_returns_its_epc() {
    let epc = manager();
    {
        let d = Domain::create(DomainId(13), spec("dropped", 8, 0), Arc::clone(&epc)).unwrap();
        let mut os = guest_os(&d);
        let (plan, sig) = fortanix();
        os.build(&plan, &sig, default_base(plan.size, true)).unwrap();
    }
    assert_eq!(epc.stats().free, epc.stats().total);
    assert_eq!(epc.platform().census().unwrap().valid, 0);
}

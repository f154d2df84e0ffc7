//! Scenario: a real enclave (the Fortanix test enclave) is built and launched on a bare-metal
//! processor of the embedded platform, the way an OS does it.

use std::sync::Arc;

use vsgx_hw::cpu::BareMetalCpu;
use vsgx_hw::os::{SimpleOs, default_base};
use vsgx_hw::platform::Platform;
use vsgx_isa::cpu::LeafStatus;
use vsgx_isa::sgxs::LoadPlan;
use vsgx_isa::status::SgxError;
use vsgx_isa::{ArchStruct, Einittoken, Sigstruct};

const SGXS: &[u8] = include_bytes!("../../../testdata/fortanix-test-enclave.sgxs");
const SIG: &[u8] = include_bytes!("../../../testdata/fortanix-test-enclave.sig");

fn os() -> SimpleOs<BareMetalCpu> {
    let platform = Platform::embedded();
    let ram = platform.ram().size();
    SimpleOs::boot(BareMetalCpu::new(Arc::clone(&platform)), ram).unwrap()
}

fn launch(sgxs: &[u8], sig: &Sigstruct) -> LeafStatus {
    let mut os = os();
    let plan = LoadPlan::from_sgxs(sgxs).unwrap();
    let built = os.build(&plan, sig, default_base(plan.size, true)).unwrap();
    os.einit(built.secs, sig).unwrap()
}

#[test]
fn fortanix_enclave_launches_with_its_real_signature() {
    let sig = Sigstruct::from_bytes(SIG).unwrap();
    assert_eq!(launch(SGXS, &sig), LeafStatus::Success);
}

#[test]
fn one_flipped_measured_byte_is_invalid_measurement() {
    let sig = Sigstruct::from_bytes(SIG).unwrap();
    let mut sgxs = SGXS.to_vec();
    // A data byte of the first EEXTEND (record 2 starts at 128; its data at 192).
    sgxs[200] ^= 1;
    assert_eq!(launch(&sgxs, &sig), LeafStatus::Error(SgxError::InvalidMeasurement));
}

#[test]
fn corrupted_signature_is_invalid_signature() {
    let mut bytes = SIG.to_vec();
    bytes[600] ^= 1;
    let sig = Sigstruct::from_bytes(&bytes).unwrap();
    assert_eq!(launch(SGXS, &sig), LeafStatus::Error(SgxError::InvalidSignature));
}

#[test]
fn intel_hash_without_token_is_invalid_einittoken() {
    let sig = Sigstruct::from_bytes(SIG).unwrap();
    let mut os = os();
    let plan = LoadPlan::from_sgxs(SGXS).unwrap();
    let built = os.build(&plan, &sig, default_base(plan.size, true)).unwrap();
    // The hash MSRs still hold Intel's launch-enclave hash.
    let status = os.einit_with_token(built.secs, &sig, &Einittoken::zeroed()).unwrap();
    assert_eq!(status, LeafStatus::Error(SgxError::InvalidEinittoken));
}

#[test]
fn a_64_gib_section_costs_host_memory_only_for_pages_in_use() {
    let cfg = vsgx_hw::config::from_toml("memory_mib = 256\n[[epc]]\nsize_mib = 65536\nnode = 0\n").unwrap();
    let platform = Platform::new(cfg);
    assert_eq!(platform.epc().total_pages(), 16 << 20);
    let mut os = SimpleOs::boot(BareMetalCpu::new(Arc::clone(&platform)), platform.ram().size()).unwrap();
    let plan = LoadPlan::from_sgxs(SGXS).unwrap();
    let sig = Sigstruct::from_bytes(SIG).unwrap();
    let built = os.build(&plan, &sig, default_base(plan.size, true)).unwrap();
    assert_eq!(os.einit(built.secs, &sig).unwrap(), LeafStatus::Success);
    // 16 Mi pages of EPC; the slot table exists only for the group in use, content for 10 pages.
    let host = platform.epc().host_bytes();
    assert!(host < 1 << 20, "{host} host bytes for a 64 GiB section with 10 pages in use");
}

//! SGX2 page operations driven by the guest driver and accepted by enclave code.

use std::sync::Arc;

use vsgx_guest::GuestError;
use vsgx_guest::driver::Driver;
use vsgx_guest::kernel::{BootInfo, Kernel};
use vsgx_guest::sdk::ManagedEnclave;
use vsgx_hv::domain::{Domain, DomainSpec};
use vsgx_hv::epc::{DomainId, EpcManager};
use vsgx_hv::policy::{LaunchControl, SgxFeatures, VepcSection};
use vsgx_hv::vcpu::Vcpu;
use vsgx_hw::config;
use vsgx_hw::exec::image::{ImageParams, build_image};
use vsgx_hw::platform::Platform;
use vsgx_isa::ArchStruct;
use vsgx_isa::signing::SigningKey;

const KEY: &str = include_str!("../../vsgx-isa/tests/data/test-key.pem");

/// ECALL `accept`: input = ptr (u64 LE, heap-relative) ‖ SECINFO.FLAGS (u64 LE); EACCEPTs the page
/// at ptr with that SECINFO and returns RAX.
const ACCEPTOR: &str = r#"(module
  (import "vsgx" "copy_in" (func $copy_in (param i32 i64 i32)))
  (import "vsgx" "eaccept" (func $eaccept (param i32 i32) (result i64)))
  (import "env" "memory" (memory 1))
  (func (export "ecall_accept") (param $in i64) (param $len i64) (param i64 i64) (result i64)
    (call $copy_in (i32.const 256) (local.get $in) (i32.const 16))
    (i64.store (i32.const 0) (i64.load (i32.const 264)))
    (call $eaccept (i32.const 0) (i32.wrap_i64 (i64.load (i32.const 256))))))"#;

struct Guest {
    _domain: Domain,
    driver: Driver<Vcpu>,
}

fn guest() -> Guest {
    let mut cfg = config::embedded_default();
    cfg.seed = Some(21);
    let epc = Arc::new(EpcManager::new(Platform::new(cfg)));
    let spec = DomainSpec {
        name: "sgx2".into(),
        uuid: [0; 16],
        vcpus: 1,
        ram: vec![(0, 256 << 20)],
        epc: vec![VepcSection { gpa: 0x1_0000_0000, size: 8 << 20, node: 0 }],
        features: SgxFeatures::default(),
        launch: LaunchControl::default(),
        provision: false,
    };
    let domain = Domain::create(DomainId(1), spec, epc).unwrap();
    let info = BootInfo { ram: vec![(0, 256 << 20)], reserved: vec![(0x1_0000_0000, 8 << 20)] };
    let driver = Driver::new(Kernel::boot(domain.vcpu(0).unwrap(), &info).unwrap());
    Guest { _domain: domain, driver }
}

fn acceptor(d: &mut Driver<Vcpu>) -> (ManagedEnclave<Vcpu>, u64, u64, u64) {
    let img =
        build_image(&wat::parse_str(ACCEPTOR).unwrap(), &ImageParams { heap_bytes: 65536, ..ImageParams::default() })
            .unwrap();
    let key = SigningKey::from_pem(KEY).unwrap();
    let sig = key.sign(&img.body, img.mrenclave).unwrap();
    let e = ManagedEnclave::load(d, &img.sgxs, sig.bytes(), None).unwrap();
    (e, img.header.heap_offset, img.header.heap_len, img.size)
}

fn accept(d: &mut Driver<Vcpu>, e: &mut ManagedEnclave<Vcpu>, ptr: u64, flags: u64) -> i64 {
    let mut input = ptr.to_le_bytes().to_vec();
    input.extend_from_slice(&flags.to_le_bytes());
    e.call(d, "accept", &input, 8).unwrap().result
}

#[test]
fn eaug_then_eaccept_adds_a_page() {
    let mut g = guest();
    let (mut e, heap_offset, heap_len, size) = acceptor(&mut g.driver);
    let offset = size - 4096;
    assert!(offset >= heap_offset + heap_len, "a free page in ELRANGE past the heap");
    let free = g.driver.kernel().free_epc_pages();
    g.driver.augment(e.id(), offset).unwrap();
    // SECINFO = R | W | PENDING, PT_REG.
    assert_eq!(accept(&mut g.driver, &mut e, offset - heap_offset, 0x20B), 0);
    assert!(g.driver.kernel().free_epc_pages() < free);
    // Accepting again: the page is no longer pending → SGX_PAGE_ATTRIBUTES_MISMATCH (19).
    assert_eq!(accept(&mut g.driver, &mut e, offset - heap_offset, 0x20B), 19);
    assert!(matches!(g.driver.augment(e.id(), offset), Err(GuestError::BadOffset(_))), "already in use");
}

#[test]
fn emodpr_and_emodt_are_tracked_then_accepted_and_trimmed_pages_freed() {
    let mut g = guest();
    let (mut e, heap_offset, _, _) = acceptor(&mut g.driver);
    let page = heap_offset + 4096; // the heap's second page
    g.driver.restrict(e.id(), page, 0b001).unwrap();
    // SECINFO = R | PR, PT_REG.
    assert_eq!(accept(&mut g.driver, &mut e, 4096, 0x221), 0);
    let trim = heap_offset + 8192;
    g.driver.trim(e.id(), trim).unwrap();
    // SECINFO = MODIFIED, PT_TRIM.
    assert_eq!(accept(&mut g.driver, &mut e, 8192, 0x410), 0);
    let free = g.driver.kernel().free_epc_pages();
    g.driver.remove_trimmed(e.id(), trim).unwrap();
    assert_eq!(g.driver.kernel().free_epc_pages(), free + 1, "the trimmed page's EPC is back");
    assert!(matches!(g.driver.trim(e.id(), 12345), Err(GuestError::BadOffset(12345))));
}

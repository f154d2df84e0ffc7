//! The example enclaves of `examples/enclaves/` run on the real executor: hello transforms its
//! input, counter keeps state in its heap across calls, sealer's keys follow the platform and the
//! MRENCLAVE/MRSIGNER policy, attest's REPORT verifies with the target's report key only.

mod common;

use common::wasm::*;
use common::*;
use vsgx_hw::exec::image::ImageParams;
use vsgx_isa::{ArchStruct, AttributesFlags, Report, Targetinfo};

const HELLO: &str = include_str!("../../../examples/enclaves/hello.wat");
const COUNTER: &str = include_str!("../../../examples/enclaves/counter.wat");
const SEALER: &str = include_str!("../../../examples/enclaves/sealer.wat");
const ATTEST: &str = include_str!("../../../examples/enclaves/attest.wat");

#[test]
fn hello_transforms_its_input() {
    let mut m = Machine::new();
    let w = launch(&mut m, &wat(HELLO), &ImageParams::default(), 0);
    assert_eq!(call(&mut m, &w, "hello", b"world"), (12, b"Hello, WORLD".to_vec()));
}

#[test]
fn counter_keeps_state_in_its_heap_across_calls() {
    let mut m = Machine::new();
    let w = launch(&mut m, &wat(COUNTER), &ImageParams::default(), 0);
    for expected in 1u64..=3 {
        assert_eq!(call(&mut m, &w, "increment", b""), (8, expected.to_le_bytes().to_vec()));
    }
    assert_eq!(call(&mut m, &w, "get", b""), (8, 3u64.to_le_bytes().to_vec()));
}

fn sealer(isvsvn: u16, variant: bool) -> Vec<u8> {
    let _ = isvsvn;
    // A "newer version": different code (so a different MRENCLAVE), same signer.
    let text = if variant { with_extra_function(SEALER) } else { SEALER.to_string() };
    wat(&text)
}

/// The same module text plus one unused function: different code, a different MRENCLAVE.
fn with_extra_function(text: &str) -> String {
    let end = text.rfind(')').expect("a module");
    format!("{} (func $extra (result i32) (i32.const 2)))", &text[..end])
}

fn params(isvsvn: u16) -> ImageParams {
    ImageParams { isvsvn, ..ImageParams::default() }
}

#[test]
fn sealed_data_unseals_on_the_same_platform_only() {
    let secret = b"the launch codes";
    let blob = {
        let mut m = Machine::seeded(1);
        let w = launch(&mut m, &sealer(1, false), &params(1), 0);
        let (r, blob) = call(&mut m, &w, "seal", secret);
        assert!(r > secret.len() as i64, "sealed: {r}");
        blob
    };
    // Same platform (same fuses), a fresh enclave instance: unseals.
    let mut same = Machine::seeded(1);
    let w = launch(&mut same, &sealer(1, false), &params(1), 0);
    assert_eq!(call(&mut same, &w, "unseal", &blob), (secret.len() as i64, secret.to_vec()));
    // Another platform: different seal fuses, so the key differs and the tag check fails.
    let mut other = Machine::seeded(2);
    let w = launch(&mut other, &sealer(1, false), &params(1), 0);
    assert_eq!(call(&mut other, &w, "unseal", &blob).0, -3);
}

#[test]
fn mrsigner_sealed_data_unseals_in_a_newer_version_and_mrenclave_sealed_does_not() {
    let secret = b"provisioned secret";
    let mut m = Machine::seeded(3);
    let v1 = launch(&mut m, &sealer(1, false), &params(1), 0);
    let (_, by_signer) = call(&mut m, &v1, "seal_signer", secret);
    let (_, by_enclave) = call(&mut m, &v1, "seal", secret);
    let v2 = launch(&mut m, &sealer(2, true), &params(2), 1);
    assert_ne!(v1.mrenclave, v2.mrenclave);
    assert_eq!(call(&mut m, &v2, "unseal", &by_signer), (secret.len() as i64, secret.to_vec()));
    assert_eq!(call(&mut m, &v2, "unseal", &by_enclave).0, -3, "MRENCLAVE policy binds the old code");
    // And an older version cannot unseal what the newer one sealed (ISVSVN 2 > 1).
    let (_, newer) = call(&mut m, &v2, "seal_signer", secret);
    assert_eq!(call(&mut m, &v1, "unseal", &newer).0, -3);
}

fn targetinfo_of(w: &Wasm, m: &mut Machine) -> Targetinfo {
    let _ = m;
    let mut t = Targetinfo::zeroed();
    t.measurement = w.mrenclave;
    t.attributes.flags = (AttributesFlags::MODE64BIT | AttributesFlags::INIT).bits();
    t.attributes.xfrm = 3;
    t
}

#[test]
fn an_ereport_verifies_with_the_targets_key_and_not_another() {
    let mut m = Machine::seeded(4);
    let a = launch(&mut m, &wat(ATTEST), &ImageParams::default(), 0);
    let b = launch(&mut m, &wat(ATTEST), &ImageParams { isvprodid: 7, ..ImageParams::default() }, 1);
    // C runs different code, so its report key (bound to its MRENCLAVE) differs from B's.
    let c = launch(&mut m, &wat(&with_extra_function(ATTEST)), &ImageParams::default(), 2);
    let mut input = targetinfo_of(&b, &mut m).bytes().to_vec();
    input.extend_from_slice(b"nonce: 1234");
    let (r, report) = call(&mut m, &a, "report", &input);
    assert_eq!(r, 432);
    let report = Report::from_bytes(&report).unwrap();
    assert_eq!(&report.reportdata[..11], b"nonce: 1234");
    assert_eq!(report.mrenclave, a.mrenclave);
    let key_b = call(&mut m, &b, "verify_report", report.bytes()).1;
    let key_c = call(&mut m, &c, "verify_report", report.bytes()).1;
    let mac = |key: &[u8]| vsgx_hw::crypto::aes_cmac(key.try_into().unwrap(), &report.bytes()[Report::MACED]);
    assert_eq!(mac(&key_b), report.mac, "the target's report key verifies the MAC");
    assert_ne!(mac(&key_c), report.mac, "another enclave's key does not");
}

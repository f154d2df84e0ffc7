//! The test harness itself works: a test enclave launches, enclave-mode leaves run, debug
//! read/write reach enclave memory.

mod common;

use common::*;
use vsgx_isa::leaf::Enclu;
use vsgx_isa::{ArchStruct, Keyname, Keyrequest};

#[test]
fn harness_builds_a_test_enclave_and_gets_a_key() {
    let mut m = Machine::new();
    let e = m.enclave(&EnclaveSpec::default());
    let mut req = Keyrequest::zeroed();
    req.keyname = Keyname::Seal as u16;
    req.keypolicy = 1;
    m.debug_write(e.la(layout::OPERANDS), req.bytes());
    let r = m.enclu(&e, Enclu::Egetkey, e.la(layout::OPERANDS), e.la(layout::DATA), 0).unwrap();
    assert_eq!(r.status(), vsgx_isa::cpu::LeafStatus::Success);
    let key = m.debug_read(e.la(layout::DATA), 16);
    assert_ne!(key, vec![0u8; 16]);
}

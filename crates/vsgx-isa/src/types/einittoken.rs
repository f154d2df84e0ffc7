//! EINITTOKEN (SGX.md §1.10).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::{Attributes, layout};

/// Launch token produced by a launch enclave (304 bytes, 512-byte aligned).
#[repr(C)]
#[derive(Clone, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Einittoken {
    /// Bit 0: token is valid; bits 31:1 must be zero.
    pub valid: u32,
    /// Reserved.
    pub reserved0: [u8; 44],
    /// ATTRIBUTES of the enclave being launched.
    pub attributes: Attributes,
    /// MRENCLAVE of the enclave being launched.
    pub mrenclave: [u8; 32],
    /// Reserved.
    pub reserved1: [u8; 32],
    /// MRSIGNER of the enclave being launched.
    pub mrsigner: [u8; 32],
    /// Reserved.
    pub reserved2: [u8; 32],
    /// CPUSVN of the launch enclave.
    pub cpusvnle: [u8; 16],
    /// ISVPRODID of the launch enclave.
    pub isvprodidle: u16,
    /// ISVSVN of the launch enclave.
    pub isvsvnle: u16,
    /// Reserved (CET masked attributes on CET parts).
    pub reserved3: [u8; 24],
    /// Launch enclave's masked MISCSELECT.
    pub maskedmiscselectle: u32,
    /// Launch enclave's masked ATTRIBUTES.
    pub maskedattributesle: Attributes,
    /// Key wear-out protection value.
    pub keyid: [u8; 32],
    /// AES-128-CMAC over bytes 0..192 with the EINITTOKEN key.
    pub mac: [u8; 16],
}
layout!(Einittoken, "EINITTOKEN", size = 304, align = 512, {
    valid @ 0, reserved0 @ 4, attributes @ 48, mrenclave @ 64, reserved1 @ 96, mrsigner @ 128,
    reserved2 @ 160, cpusvnle @ 192, isvprodidle @ 208, isvsvnle @ 210, reserved3 @ 212,
    maskedmiscselectle @ 236, maskedattributesle @ 240, keyid @ 256, mac @ 288,
});

impl Einittoken {
    /// Bytes the MAC covers.
    pub const MACED: core::ops::Range<usize> = 0..192;
    /// Byte ranges EINIT requires to be zero in a valid token.
    pub const RESERVED_RANGES: [core::ops::Range<usize>; 4] = [4..48, 96..128, 160..192, 212..236];
}

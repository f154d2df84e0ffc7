//! SIGSTRUCT, the enclave signature structure (SGX.md §1.9).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::{Attributes, layout};

/// Enclave signature structure (1808 bytes; EINIT wants it 4 KiB aligned).
///
/// Big numbers (MODULUS, SIGNATURE, Q1, Q2) are little-endian. The signed message is
/// `bytes[0..128] ‖ bytes[900..1028]` ([`Sigstruct::signed_message`]).
#[repr(C)]
#[derive(Clone, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Sigstruct {
    /// Must equal [`Sigstruct::HEADER`].
    pub header: [u8; 16],
    /// 0 or [`Sigstruct::VENDOR_INTEL`].
    pub vendor: u32,
    /// Build date, yyyymmdd as hex digits (0x20161214).
    pub date: u32,
    /// Must equal [`Sigstruct::HEADER2`].
    pub header2: [u8; 16],
    /// Free for software use.
    pub swdefined: u32,
    /// Reserved, zero.
    pub reserved0: [u8; 84],
    /// RSA modulus n, little-endian.
    pub modulus: [u8; 384],
    /// RSA public exponent, must be 3.
    pub exponent: u32,
    /// RSA signature s, little-endian.
    pub signature: [u8; 384],
    /// MISCSELECT the enclave expects.
    pub miscselect: u32,
    /// Which MISCSELECT bits EINIT enforces.
    pub miscmask: u32,
    /// CET attributes (not modelled: reserved, zero).
    pub cet_attributes: u8,
    /// CET attributes mask (not modelled: reserved, zero).
    pub cet_attributes_mask: u8,
    /// Reserved, zero.
    pub reserved1: [u8; 2],
    /// ISVFAMILYID (KSS).
    pub isvfamilyid: [u8; 16],
    /// ATTRIBUTES the enclave expects.
    pub attributes: Attributes,
    /// Which ATTRIBUTES bits EINIT enforces.
    pub attributemask: Attributes,
    /// Expected MRENCLAVE.
    pub enclavehash: [u8; 32],
    /// Reserved, zero.
    pub reserved2: [u8; 16],
    /// ISVEXTPRODID (KSS).
    pub isvextprodid: [u8; 16],
    /// Product ID.
    pub isvprodid: u16,
    /// Security version number.
    pub isvsvn: u16,
    /// Reserved, zero.
    pub reserved3: [u8; 12],
    /// ⌊s² / n⌋, little-endian.
    pub q1: [u8; 384],
    /// ⌊(s³ − q1·s·n) / n⌋, little-endian.
    pub q2: [u8; 384],
}
layout!(Sigstruct, "SIGSTRUCT", size = 1808, align = 4096, {
    header @ 0, vendor @ 16, date @ 20, header2 @ 24, swdefined @ 40, reserved0 @ 44,
    modulus @ 128, exponent @ 512, signature @ 516, miscselect @ 900, miscmask @ 904,
    cet_attributes @ 908, cet_attributes_mask @ 909, reserved1 @ 910, isvfamilyid @ 912,
    attributes @ 928, attributemask @ 944, enclavehash @ 960, reserved2 @ 992,
    isvextprodid @ 1008, isvprodid @ 1024, isvsvn @ 1026, reserved3 @ 1028, q1 @ 1040, q2 @ 1424,
});

impl Sigstruct {
    /// The constant HEADER.
    pub const HEADER: [u8; 16] = [6, 0, 0, 0, 0xE1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0];
    /// The constant HEADER2.
    pub const HEADER2: [u8; 16] = [1, 1, 0, 0, 0x60, 0, 0, 0, 0x60, 0, 0, 0, 1, 0, 0, 0];
    /// VENDOR value of Intel-signed enclaves.
    pub const VENDOR_INTEL: u32 = 0x8086;
    /// The only public exponent EINIT accepts.
    pub const EXPONENT: u32 = 3;
    /// Byte ranges EINIT requires to be zero (CET bytes included: CET is not modelled).
    pub const RESERVED_RANGES: [core::ops::Range<usize>; 4] = [44..128, 908..912, 992..1008, 1028..1040];
    /// The first signed range.
    pub const SIGNED_HEAD: core::ops::Range<usize> = 0..128;
    /// The second signed range.
    pub const SIGNED_BODY: core::ops::Range<usize> = 900..1028;

    /// The 256-byte message the RSA signature covers: `bytes[0..128] ‖ bytes[900..1028]`.
    pub fn signed_message(&self) -> [u8; 256] {
        let bytes = self.as_bytes();
        let mut msg = [0u8; 256];
        msg[..128].copy_from_slice(&bytes[Self::SIGNED_HEAD]);
        msg[128..].copy_from_slice(&bytes[Self::SIGNED_BODY]);
        msg
    }
}

//! RDINFO, the ERDINFO output (SGX.md §1.13).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::layout;

/// ERDINFO output (32 bytes, 32-byte aligned).
///
/// SGX.md notes that the exact offsets and the BLOCKED bit position were recalled from the SDM and
/// not cross-checked; this type follows SGX.md.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Rdinfo {
    /// Bit 0 CHILDPRESENT, bit 1 VIRTCHILDPRESENT.
    pub status: u64,
    /// SECINFO.FLAGS layout, plus BLOCKED in bit 63.
    pub flags: u64,
    /// ENCLAVECONTEXT.
    pub enclavecontext: u64,
    /// Reserved.
    pub reserved: u64,
}
layout!(Rdinfo, "RDINFO", size = 32, align = 32, {
    status @ 0, flags @ 8, enclavecontext @ 16, reserved @ 24,
});

impl Rdinfo {
    /// STATUS: the SECS has children.
    pub const CHILDPRESENT: u64 = 1 << 0;
    /// STATUS: the SECS has a non-zero VIRTCHILDCNT.
    pub const VIRTCHILDPRESENT: u64 = 1 << 1;
    /// FLAGS: the page is blocked.
    pub const BLOCKED: u64 = 1 << 63;
}

//! TCS, the Thread Control Structure (SGX.md §1.4).

use bitflags::bitflags;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::layout;

/// Thread Control Structure (4096 bytes, 4 KiB aligned).
#[repr(C)]
#[derive(Clone, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Tcs {
    /// 0 = inactive, 1 = a logical processor is inside on this TCS. EADD forces 0.
    pub state: u64,
    /// [`TcsFlags`].
    pub flags: u64,
    /// Offset of SSA frame 0 from BASEADDR (4 KiB aligned).
    pub ossa: u64,
    /// Current SSA frame index. EADD forces 0.
    pub cssa: u32,
    /// Number of SSA frames.
    pub nssa: u32,
    /// Entry point offset from BASEADDR.
    pub oentry: u64,
    /// Asynchronous exit pointer, written by EENTER/ERESUME (offset 40 — not reserved!).
    pub aep: u64,
    /// FS base offset from BASEADDR (4 KiB aligned).
    pub ofsbasgx: u64,
    /// GS base offset from BASEADDR (4 KiB aligned).
    pub ogsbasgx: u64,
    /// FS limit (32-bit enclaves).
    pub fslimit: u32,
    /// GS limit (32-bit enclaves).
    pub gslimit: u32,
    /// Reserved, must be zero.
    pub reserved: [u8; 4024],
}
layout!(Tcs, "TCS", size = 4096, align = 4096, {
    state @ 0, flags @ 8, ossa @ 16, cssa @ 24, nssa @ 28, oentry @ 32, aep @ 40,
    ofsbasgx @ 48, ogsbasgx @ 56, fslimit @ 64, gslimit @ 68, reserved @ 72,
});

impl Tcs {
    /// Number of bytes holding architectural fields; the rest is reserved.
    pub const ARCH_FIELDS_END: usize = 72;
}

bitflags! {
    /// TCS.FLAGS bits.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct TcsFlags: u64 {
        /// Debug opt-in: allow single-stepping and breakpoints inside the enclave.
        const DBGOPTIN = 1 << 0;
        /// AEX-Notify for this thread (only when supported).
        const AEXNOTIFY = 1 << 1;
    }
}

/// TCS.STATE values.
pub mod tcs_state {
    /// No logical processor is inside on this TCS.
    pub const INACTIVE: u64 = 0;
    /// A logical processor is executing on this TCS.
    pub const ACTIVE: u64 = 1;
}

//! PCMD and version-array pages (SGX.md §1.8).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::{Secinfo, layout};

/// Paging crypto metadata written by EWB and checked by ELD* (128 bytes, 128-byte aligned).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Pcmd {
    /// Page type, permissions and SGX2 state of the evicted page.
    pub secinfo: Secinfo,
    /// Parent SECS EID for REG/TCS/TRIM, the SECS's own EID for a SECS, 0 for VA.
    pub enclaveid: u64,
    /// Reserved: EWB writes 0; ELD* feeds it into the MAC header.
    pub reserved: [u8; 40],
    /// AES-GCM tag over the page.
    pub mac: [u8; 16],
}
layout!(Pcmd, "PCMD", size = 128, align = 128, {
    secinfo @ 0, enclaveid @ 64, reserved @ 72, mac @ 112,
});

/// Number of 8-byte version slots in one VA page.
pub const VA_SLOTS_PER_PAGE: usize = 512;
/// Size of one VA slot (and its required alignment).
pub const VA_SLOT_SIZE: usize = 8;

/// A version-array page: 512 slots, each 0 (empty) or the version of one evicted page.
#[repr(C)]
#[derive(Clone, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct VaPage {
    /// The slots; slot `i` is at byte offset `8·i`.
    pub slots: [u64; VA_SLOTS_PER_PAGE],
}
layout!(VaPage, "VA page", size = 4096, align = 4096, { slots @ 0 });

impl VaPage {
    /// Byte offset of slot `index` inside the page.
    pub const fn slot_offset(index: usize) -> usize {
        index * VA_SLOT_SIZE
    }
}

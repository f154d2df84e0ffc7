//! Reading and writing SECS fields, visible and hidden, in the EPC copy of a SECS page.
//!
//! Hidden state lives at the offsets of `vsgx_isa::SecsHidden` (SGX.md §1.3, MODEL CHOICE), plus
//! one more the model needs: the child count at [`CHILD_COUNT`].

use vsgx_isa::measure::Measurement;
use vsgx_isa::{AttributesFlags, SecsHidden};

use crate::keys::EnclaveIdentity;

/// Number of valid REG/TCS/TRIM pages of this enclave (u64). MODEL CHOICE: kept after TRK_PREV.
pub const CHILD_COUNT: usize = 0x3B8;

/// Offset of ATTRIBUTES.FLAGS.
const ATTRIBUTES: usize = 48;

pub fn u64_at(page: &[u8; 4096], off: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&page[off..off + 8]);
    u64::from_le_bytes(b)
}

pub fn u32_at(page: &[u8; 4096], off: usize) -> u32 {
    u32::from_le_bytes(bytes(page, off))
}

pub fn set_u64(page: &mut [u8; 4096], off: usize, v: u64) {
    page[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

pub fn bytes<const N: usize>(page: &[u8; 4096], off: usize) -> [u8; N] {
    let mut b = [0u8; N];
    b.copy_from_slice(&page[off..off + N]);
    b
}

pub fn size(page: &[u8; 4096]) -> u64 {
    u64_at(page, 0)
}

pub fn baseaddr(page: &[u8; 4096]) -> u64 {
    u64_at(page, 8)
}

pub fn miscselect(page: &[u8; 4096]) -> u32 {
    u32::from_le_bytes(bytes(page, 20))
}

pub fn attributes(page: &[u8; 4096]) -> vsgx_isa::Attributes {
    vsgx_isa::Attributes { flags: u64_at(page, ATTRIBUTES), xfrm: u64_at(page, ATTRIBUTES + 8) }
}

pub fn flags(page: &[u8; 4096]) -> AttributesFlags {
    AttributesFlags::from_bits_retain(u64_at(page, ATTRIBUTES))
}

pub fn initialized(page: &[u8; 4096]) -> bool {
    flags(page).contains(AttributesFlags::INIT)
}

/// Whether `linear` lies in ELRANGE.
pub fn in_elrange(page: &[u8; 4096], linear: u64) -> bool {
    linear >= baseaddr(page) && linear - baseaddr(page) < size(page)
}

pub fn eid(page: &[u8; 4096]) -> u64 {
    u64_at(page, SecsHidden::EID)
}

pub fn children(page: &[u8; 4096]) -> u64 {
    u64_at(page, CHILD_COUNT)
}

pub fn add_children(page: &mut [u8; 4096], delta: i64) {
    let n = children(page).saturating_add_signed(delta);
    set_u64(page, CHILD_COUNT, n);
}

pub fn trk_epoch(page: &[u8; 4096]) -> u64 {
    u64_at(page, SecsHidden::TRK_EPOCH)
}

pub fn trk_cur(page: &[u8; 4096]) -> u64 {
    u64_at(page, SecsHidden::TRK_CUR)
}

pub fn trk_prev(page: &[u8; 4096]) -> u64 {
    u64_at(page, SecsHidden::TRK_PREV)
}

/// Logical processors inside the enclave (EREMOVE's SGX_ENCLAVE_ACT test).
pub fn active(page: &[u8; 4096]) -> bool {
    trk_cur(page) + trk_prev(page) > 0
}

/// `tracked(b)` of SGX.md §7.
pub fn tracked(page: &[u8; 4096], epoch: Option<u64>) -> bool {
    let Some(b) = epoch else { return true };
    let e = trk_epoch(page);
    e >= b.saturating_add(2) || (e == b.saturating_add(1) && trk_prev(page) == 0)
}

/// ETRACK/ETRACKC: `prev = cur; cur = 0; E += 1` (the caller checked `prev == 0`).
pub fn advance_epoch(page: &mut [u8; 4096]) {
    let cur = trk_cur(page);
    set_u64(page, SecsHidden::TRK_PREV, cur);
    set_u64(page, SecsHidden::TRK_CUR, 0);
    set_u64(page, SecsHidden::TRK_EPOCH, trk_epoch(page) + 1);
}

pub fn measurement(page: &[u8; 4096]) -> Measurement {
    Measurement::from_state_bytes(&bytes(page, 64), u64_at(page, SecsHidden::MEASUREMENT_BLOCKS))
}

pub fn store_measurement(page: &mut [u8; 4096], m: &Measurement) {
    page[64..96].copy_from_slice(&m.state_bytes());
    set_u64(page, SecsHidden::MEASUREMENT_BLOCKS, m.blocks());
}

/// The identity key derivation and EREPORT use.
pub fn identity(page: &[u8; 4096]) -> EnclaveIdentity {
    let secs = <vsgx_isa::Secs as vsgx_isa::ArchStruct>::from_bytes(page)
        .unwrap_or_else(|_| <vsgx_isa::Secs as vsgx_isa::ArchStruct>::zeroed());
    EnclaveIdentity::from_secs(
        &secs,
        bytes(page, SecsHidden::ISVFAMILYID),
        bytes(page, SecsHidden::ISVEXTPRODID),
        bytes(page, SecsHidden::PADDING),
    )
}

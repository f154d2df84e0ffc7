//! PAGEINFO (SGX.md §1.7).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::layout;

/// Operand of ECREATE/EADD/EAUG/EWB/ELD* (32 bytes, 32-byte aligned). All fields are linear
/// addresses in the caller's address space.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Pageinfo {
    /// Enclave linear address of the page (EWB writes it back).
    pub linaddr: u64,
    /// Normal-memory page: source for EADD/ELD*, destination for EWB.
    pub srcpge: u64,
    /// SECINFO (ECREATE/EADD/EAUG) or PCMD (EWB/ELD*) address.
    pub secinfo_or_pcmd: u64,
    /// Linear address of the SECS EPC page.
    pub secs: u64,
}
layout!(Pageinfo, "PAGEINFO", size = 32, align = 32, {
    linaddr @ 0, srcpge @ 8, secinfo_or_pcmd @ 16, secs @ 24,
});

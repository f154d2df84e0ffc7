//! ATTRIBUTES, MISCSELECT and XFRM (SGX.md §1.2).

use bitflags::bitflags;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::layout;

/// Enclave attributes: FLAGS followed by XFRM (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Attributes {
    /// [`AttributesFlags`] bits.
    pub flags: u64,
    /// Extended feature request mask (XCR0 layout).
    pub xfrm: u64,
}
layout!(Attributes, "ATTRIBUTES", size = 16, align = 16, { flags @ 0, xfrm @ 8 });

impl Attributes {
    /// Builds attributes from typed flags and an XFRM.
    pub const fn new(flags: AttributesFlags, xfrm: u64) -> Self {
        Self { flags: flags.bits(), xfrm }
    }

    /// The FLAGS word as typed flags (unknown bits retained).
    pub const fn flags(&self) -> AttributesFlags {
        AttributesFlags::from_bits_retain(self.flags)
    }

    /// The 128-bit value as a single integer (FLAGS in the low half), for mask arithmetic.
    pub const fn as_u128(&self) -> u128 {
        (self.xfrm as u128) << 64 | self.flags as u128
    }

    /// Bitwise AND of both halves.
    pub const fn and(&self, mask: &Attributes) -> Attributes {
        Attributes { flags: self.flags & mask.flags, xfrm: self.xfrm & mask.xfrm }
    }
}

bitflags! {
    /// ATTRIBUTES.FLAGS bits.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct AttributesFlags: u64 {
        /// Set by EINIT; must be 0 in the ECREATE input.
        const INIT = 1 << 0;
        /// Debug enclave: EDBGRD/EDBGWR allowed; always mixed into derived keys.
        const DEBUG = 1 << 1;
        /// 64-bit enclave.
        const MODE64BIT = 1 << 2;
        /// Grants the PROVISION and PROVISION_SEAL keys.
        const PROVISIONKEY = 1 << 4;
        /// Grants the EINITTOKEN key (launch enclaves).
        const EINITTOKEN_KEY = 1 << 5;
        /// CET (not modelled; reserved in vsgx).
        const CET = 1 << 6;
        /// Key Separation and Sharing.
        const KSS = 1 << 7;
        /// AEX-Notify.
        const AEXNOTIFY = 1 << 10;
    }
}

bitflags! {
    /// MISCSELECT bits.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Miscselect: u32 {
        /// Report #PF/#GP details in the SSA's EXINFO region.
        const EXINFO = 1 << 0;
    }
}

/// Size of the MISC region for a MISCSELECT (bytes below GPRSGX in each SSA frame).
pub const fn misc_region_size(miscselect: u32) -> u32 {
    if miscselect & Miscselect::EXINFO.bits() != 0 { 16 } else { 0 }
}

/// XFRM bits of the x87 and SSE state, which every enclave must request.
pub const XFRM_LEGACY: u64 = 0x3;

/// Standard (uncompacted) XSAVE component offsets and sizes from CPUID.(0DH, i), i = 2..=18.
const XSAVE_COMPONENTS: [(u32, u32, u32); 9] = [
    // (bit, offset, size)
    (2, 576, 256),    // AVX
    (3, 960, 64),     // MPX BNDREGS
    (4, 1024, 64),    // MPX BNDCSR
    (5, 1088, 64),    // AVX-512 opmask
    (6, 1152, 512),   // AVX-512 ZMM_Hi256
    (7, 1664, 1024),  // AVX-512 Hi16_ZMM
    (9, 2688, 8),     // PKRU
    (17, 2752, 64),   // AMX XTILECFG
    (18, 2816, 8192), // AMX XTILEDATA
];

/// XSAVE area size used for SSA sizing: `max(576, max over set bits i ≥ 2 of offset_i + size_i)`.
///
/// Bits without a known standard component are ignored here; [`xfrm_is_legal`] rejects them
/// separately when they are not supported.
pub const fn xsave_size(xfrm: u64) -> u32 {
    let mut size = 576;
    let mut i = 0;
    while i < XSAVE_COMPONENTS.len() {
        let (bit, off, len) = XSAVE_COMPONENTS[i];
        if xfrm & (1 << bit) != 0 && off + len > size {
            size = off + len;
        }
        i += 1;
    }
    size
}

/// Whether XSETBV would accept `xfrm` as XCR0 (the architectural consistency rules ECREATE checks):
/// x87 and SSE set; AVX needs SSE; the two MPX bits equal; the three AVX-512 bits all set or all
/// clear and, when set, AVX set; the two AMX bits equal; bit 63 clear.
pub const fn xfrm_is_legal(xfrm: u64) -> bool {
    const fn bit(xfrm: u64, n: u32) -> u64 {
        xfrm >> n & 1
    }
    xfrm & XFRM_LEGACY == XFRM_LEGACY
        && bit(xfrm, 3) == bit(xfrm, 4)
        && (xfrm & 0xE0 == 0 || (xfrm & 0xE0 == 0xE0 && bit(xfrm, 2) == 1))
        && bit(xfrm, 17) == bit(xfrm, 18)
        && bit(xfrm, 63) == 0
}

/// Minimum SSA frame size in pages for an enclave with this XFRM and MISCSELECT
/// (`4096·SSAFRAMESIZE ≥ XS(XFRM) + 184 + MISC`).
pub const fn min_ssa_frame_pages(xfrm: u64, miscselect: u32) -> u32 {
    let bytes = xsave_size(xfrm) + super::GPRSGX_SIZE as u32 + misc_region_size(miscselect);
    bytes.div_ceil(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xsave_sizes_match_sgx_md_examples() {
        assert_eq!(xsave_size(0x3), 576);
        assert_eq!(xsave_size(0x7), 832);
        assert_eq!(xsave_size(0xE7), 2688);
        assert_eq!(xsave_size(0x6_0000 | 0xE7), 2816 + 8192);
    }

    #[test]
    fn xfrm_legality_rules() {
        assert!(xfrm_is_legal(0x3));
        assert!(xfrm_is_legal(0x7));
        assert!(xfrm_is_legal(0xE7));
        assert!(!xfrm_is_legal(0x1), "SSE missing");
        assert!(!xfrm_is_legal(0xB), "MPX bits differ");
        assert!(!xfrm_is_legal(0x23 | 0x4), "partial AVX-512");
        assert!(!xfrm_is_legal(0xE3), "AVX-512 without AVX");
        assert!(!xfrm_is_legal(0x2_0003), "AMX bits differ");
        assert!(!xfrm_is_legal(1 << 63 | 3));
    }

    #[test]
    fn min_ssa_frame() {
        assert_eq!(min_ssa_frame_pages(0x3, 0), 1);
        assert_eq!(min_ssa_frame_pages(0x6_00E7, 1), 3);
    }
}

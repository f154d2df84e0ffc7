//! SECINFO and page types (SGX.md §1.6).

use bitflags::bitflags;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::layout;

/// EPC page types (SECINFO.FLAGS[15:8], EPCM.PT).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum PageType {
    /// Enclave control structure.
    Secs = 0,
    /// Thread control structure.
    Tcs = 1,
    /// Regular enclave page.
    Reg = 2,
    /// Version array page.
    Va = 3,
    /// Page being trimmed (SGX2).
    Trim = 4,
}

impl PageType {
    /// Decodes a PAGE_TYPE value; shadow-stack types (5, 6) are not modelled.
    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::Secs,
            1 => Self::Tcs,
            2 => Self::Reg,
            3 => Self::Va,
            4 => Self::Trim,
            _ => return None,
        })
    }

    /// Architectural name (`PT_REG`, …).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Secs => "PT_SECS",
            Self::Tcs => "PT_TCS",
            Self::Reg => "PT_REG",
            Self::Va => "PT_VA",
            Self::Trim => "PT_TRIM",
        }
    }
}

bitflags! {
    /// SECINFO.FLAGS permission and state bits (the PAGE_TYPE field is handled by [`Secinfo`]).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct SecinfoFlags: u64 {
        /// Readable.
        const R = 1 << 0;
        /// Writable.
        const W = 1 << 1;
        /// Executable.
        const X = 1 << 2;
        /// EAUGed, not yet EACCEPTed (SGX2).
        const PENDING = 1 << 3;
        /// Type changed, not yet EACCEPTed (SGX2).
        const MODIFIED = 1 << 4;
        /// Permission restriction in progress (SGX2).
        const PR = 1 << 5;
    }
}

impl SecinfoFlags {
    /// Mask of the PAGE_TYPE field.
    pub const PAGE_TYPE_MASK: u64 = 0xFF00;
    /// Reserved FLAGS bits: 7:6 and 63:16.
    pub const RESERVED_MASK: u64 = 0xC0 | !0xFFFF;
    /// R | W | X.
    pub const RWX: Self = Self::R.union(Self::W).union(Self::X);
}

/// Builds a raw SECINFO.FLAGS value from a page type and permission/state bits.
pub const fn secinfo_flags(page_type: PageType, flags: SecinfoFlags) -> u64 {
    (page_type as u64) << 8 | flags.bits()
}

/// Security information of an EPC page (64 bytes, 64-byte aligned).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Secinfo {
    /// FLAGS: R/W/X/PENDING/MODIFIED/PR in bits 5:0, PAGE_TYPE in bits 15:8.
    pub flags: u64,
    /// Reserved, must be zero.
    pub reserved: [u8; 56],
}
layout!(Secinfo, "SECINFO", size = 64, align = 64, { flags @ 0, reserved @ 8 });

impl Secinfo {
    /// A SECINFO with the given page type and flags, reserved bytes zero.
    pub const fn new(page_type: PageType, flags: SecinfoFlags) -> Self {
        Self::from_raw_flags(secinfo_flags(page_type, flags))
    }

    /// A SECINFO with a raw FLAGS value, reserved bytes zero.
    pub const fn from_raw_flags(flags: u64) -> Self {
        Self { flags, reserved: [0; 56] }
    }

    /// The PAGE_TYPE field, `None` if it names no modelled type.
    pub const fn page_type(&self) -> Option<PageType> {
        PageType::from_u8((self.flags >> 8) as u8)
    }

    /// The permission/state bits (bits 5:0).
    pub const fn perms(&self) -> SecinfoFlags {
        SecinfoFlags::from_bits_truncate(self.flags)
    }

    /// Whether every reserved bit (FLAGS 7:6 and 63:16, bytes 8–63) is zero.
    pub fn reserved_is_zero(&self) -> bool {
        self.flags & SecinfoFlags::RESERVED_MASK == 0 && self.reserved.iter().all(|&b| b == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_encoding() {
        assert_eq!(secinfo_flags(PageType::Reg, SecinfoFlags::R | SecinfoFlags::X), 0x205);
        assert_eq!(secinfo_flags(PageType::Tcs, SecinfoFlags::empty()), 0x100);
        let s = Secinfo::from_raw_flags(0x203);
        assert_eq!(s.page_type(), Some(PageType::Reg));
        assert_eq!(s.perms(), SecinfoFlags::R | SecinfoFlags::W);
        assert!(s.reserved_is_zero());
        assert!(!Secinfo::from_raw_flags(0x1_0203).reserved_is_zero());
        assert!(!Secinfo::from_raw_flags(0x243).reserved_is_zero());
        assert_eq!(Secinfo::from_raw_flags(0x500).page_type(), None);
    }
}

//! KEYREQUEST (SGX.md §1.12).

use bitflags::bitflags;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::{Attributes, layout};

/// EGETKEY input (512 bytes, 512-byte aligned).
#[repr(C)]
#[derive(Clone, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Keyrequest {
    /// [`Keyname`] value.
    pub keyname: u16,
    /// [`Keypolicy`] bits.
    pub keypolicy: u16,
    /// ISVSVN the key is derived for.
    pub isvsvn: u16,
    /// Reserved.
    pub reserved0: u16,
    /// CPUSVN the key is derived for.
    pub cpusvn: [u8; 16],
    /// Which ATTRIBUTES bits the key depends on (INIT and DEBUG always).
    pub attributemask: Attributes,
    /// Key wear-out protection value.
    pub keyid: [u8; 32],
    /// Which MISCSELECT bits the key depends on.
    pub miscmask: u32,
    /// CONFIGSVN (KSS).
    pub configsvn: u16,
    /// Reserved.
    pub reserved1: [u8; 434],
}
layout!(Keyrequest, "KEYREQUEST", size = 512, align = 512, {
    keyname @ 0, keypolicy @ 2, isvsvn @ 4, reserved0 @ 6, cpusvn @ 8, attributemask @ 24,
    keyid @ 40, miscmask @ 72, configsvn @ 76, reserved1 @ 78,
});

/// KEYREQUEST.KEYNAME values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Keyname {
    /// Launch-token MAC key.
    Einittoken = 0,
    /// Provisioning key.
    Provision = 1,
    /// Provisioning seal key.
    ProvisionSeal = 2,
    /// Report MAC key.
    Report = 3,
    /// Seal key.
    Seal = 4,
}

impl Keyname {
    /// Decodes a KEYNAME; `None` for values EGETKEY answers with SGX_INVALID_KEYNAME.
    pub const fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            0 => Self::Einittoken,
            1 => Self::Provision,
            2 => Self::ProvisionSeal,
            3 => Self::Report,
            4 => Self::Seal,
            _ => return None,
        })
    }
}

bitflags! {
    /// KEYREQUEST.KEYPOLICY bits.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Keypolicy: u16 {
        /// Derive from MRENCLAVE.
        const MRENCLAVE = 1 << 0;
        /// Derive from MRSIGNER.
        const MRSIGNER = 1 << 1;
        /// Do not derive from ISVPRODID (KSS).
        const NOISVPRODID = 1 << 2;
        /// Derive from CONFIGID (KSS).
        const CONFIGID = 1 << 3;
        /// Derive from ISVFAMILYID (KSS).
        const ISVFAMILYID = 1 << 4;
        /// Derive from ISVEXTPRODID (KSS).
        const ISVEXTPRODID = 1 << 5;
    }
}

impl Keypolicy {
    /// Bits that need KSS.
    pub const KSS_BITS: u16 = 0x3C;
    /// Reserved bits 15:6.
    pub const RESERVED_MASK: u16 = 0xFFC0;
}

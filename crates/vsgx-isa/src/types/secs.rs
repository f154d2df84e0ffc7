//! SECS, the SGX Enclave Control Structure (SGX.md §1.3).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::{Attributes, layout};

/// SGX Enclave Control Structure (4096 bytes, 4 KiB aligned).
///
/// The KSS fields (CONFIGID, CONFIGSVN) overlay what older SDM editions call reserved; the offsets
/// are the same. Bytes 262.. are reserved in the ECREATE source and, in the EPC copy, hold the
/// hidden state the platform model keeps (see [`SecsHidden`]).
#[repr(C)]
#[derive(Clone, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Secs {
    /// Enclave size in bytes: a power of two, at least 8192.
    pub size: u64,
    /// Enclave base linear address, naturally aligned to `size`.
    pub baseaddr: u64,
    /// Size of one SSA frame in pages.
    pub ssaframesize: u32,
    /// MISCSELECT.
    pub miscselect: u32,
    /// Reserved.
    pub reserved0: [u8; 24],
    /// ATTRIBUTES.
    pub attributes: Attributes,
    /// MRENCLAVE (the running SHA-256 state until EINIT).
    pub mrenclave: [u8; 32],
    /// Reserved.
    pub reserved1: [u8; 32],
    /// MRSIGNER, set by EINIT.
    pub mrsigner: [u8; 32],
    /// Reserved.
    pub reserved2: [u8; 32],
    /// CONFIGID (KSS).
    pub configid: [u8; 64],
    /// ISVPRODID, set by EINIT.
    pub isvprodid: u16,
    /// ISVSVN, set by EINIT.
    pub isvsvn: u16,
    /// CONFIGSVN (KSS).
    pub configsvn: u16,
    /// Reserved in the ECREATE source; hidden state in EPC.
    pub reserved3: [u8; 3834],
}
layout!(Secs, "SECS", size = 4096, align = 4096, {
    size @ 0, baseaddr @ 8, ssaframesize @ 16, miscselect @ 20, reserved0 @ 24, attributes @ 48,
    mrenclave @ 64, reserved1 @ 96, mrsigner @ 128, reserved2 @ 160, configid @ 192,
    isvprodid @ 256, isvsvn @ 258, configsvn @ 260, reserved3 @ 262,
});

impl Secs {
    /// Byte ranges of the SECS that are architecturally reserved (must be zero in ECREATE's source).
    pub const RESERVED_RANGES: [core::ops::Range<usize>; 4] = [24..48, 96..128, 160..192, 262..4096];

    /// Whether every reserved byte is zero.
    pub fn reserved_is_zero(&self) -> bool {
        let bytes = self.as_bytes();
        Self::RESERVED_RANGES.iter().all(|r| bytes[r.clone()].iter().all(|&b| b == 0))
    }

    /// The enclave's linear range `[BASEADDR, BASEADDR + SIZE)` (saturating at the top of the space).
    pub fn elrange(&self) -> core::ops::Range<u64> {
        self.baseaddr..self.baseaddr.saturating_add(self.size)
    }
}

/// Offsets of the hidden SECS state the platform model keeps inside the EPC copy of a SECS
/// (MODEL CHOICE, SGX.md §1.3). Software can never observe these bytes.
#[derive(Debug, Clone, Copy)]
pub struct SecsHidden;

impl SecsHidden {
    /// Enclave ID (u64).
    pub const EID: usize = 0x200;
    /// Number of 64-byte blocks hashed into MRENCLAVE so far (u64).
    pub const MEASUREMENT_BLOCKS: usize = 0x208;
    /// VIRTCHILDCNT (u64).
    pub const VIRTCHILDCNT: usize = 0x210;
    /// ENCLAVECONTEXT (u64).
    pub const ENCLAVECONTEXT: usize = 0x218;
    /// ISVFAMILYID (16 bytes).
    pub const ISVFAMILYID: usize = 0x220;
    /// ISVEXTPRODID (16 bytes).
    pub const ISVEXTPRODID: usize = 0x230;
    /// PADDING: the top 352 bytes of the PKCS#1 encoded message (352 bytes).
    pub const PADDING: usize = 0x240;
    /// TRK_EPOCH (u64).
    pub const TRK_EPOCH: usize = 0x3A0;
    /// TRK_CUR (u64).
    pub const TRK_CUR: usize = 0x3A8;
    /// TRK_PREV (u64).
    pub const TRK_PREV: usize = 0x3B0;
}

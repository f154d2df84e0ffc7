//! REPORT and TARGETINFO (SGX.md §1.11).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::{Attributes, layout};

/// EREPORT output (432 bytes, 512-byte aligned).
#[repr(C)]
#[derive(Clone, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Report {
    /// CPUSVN of the platform.
    pub cpusvn: [u8; 16],
    /// MISCSELECT of the reporting enclave.
    pub miscselect: u32,
    /// Reserved (byte 20 = CET_ATTRIBUTES on CET parts).
    pub reserved0: [u8; 12],
    /// ISVEXTPRODID (KSS).
    pub isvextprodid: [u8; 16],
    /// ATTRIBUTES of the reporting enclave.
    pub attributes: Attributes,
    /// MRENCLAVE of the reporting enclave.
    pub mrenclave: [u8; 32],
    /// Reserved.
    pub reserved1: [u8; 32],
    /// MRSIGNER of the reporting enclave.
    pub mrsigner: [u8; 32],
    /// Reserved.
    pub reserved2: [u8; 32],
    /// CONFIGID (KSS).
    pub configid: [u8; 64],
    /// ISVPRODID.
    pub isvprodid: u16,
    /// ISVSVN.
    pub isvsvn: u16,
    /// CONFIGSVN (KSS).
    pub configsvn: u16,
    /// Reserved.
    pub reserved3: [u8; 42],
    /// ISVFAMILYID (KSS).
    pub isvfamilyid: [u8; 16],
    /// Data supplied by the enclave.
    pub reportdata: [u8; 64],
    /// Key wear-out protection value (CR_REPORT_KEYID).
    pub keyid: [u8; 32],
    /// AES-128-CMAC over bytes 0..384 with the target's report key.
    pub mac: [u8; 16],
}
layout!(Report, "REPORT", size = 432, align = 512, {
    cpusvn @ 0, miscselect @ 16, reserved0 @ 20, isvextprodid @ 32, attributes @ 48,
    mrenclave @ 64, reserved1 @ 96, mrsigner @ 128, reserved2 @ 160, configid @ 192,
    isvprodid @ 256, isvsvn @ 258, configsvn @ 260, reserved3 @ 262, isvfamilyid @ 304,
    reportdata @ 320, keyid @ 384, mac @ 416,
});

impl Report {
    /// Bytes the MAC covers (REPORTDATA included, KEYID and MAC not).
    pub const MACED: core::ops::Range<usize> = 0..384;
}

/// Identifies the enclave a REPORT is for (512 bytes, 512-byte aligned).
#[repr(C)]
#[derive(Clone, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Targetinfo {
    /// Target MRENCLAVE.
    pub measurement: [u8; 32],
    /// Target ATTRIBUTES (with INIT = 1 for an initialized target).
    pub attributes: Attributes,
    /// Reserved.
    pub reserved0: [u8; 2],
    /// Target CONFIGSVN (KSS).
    pub configsvn: u16,
    /// Target MISCSELECT.
    pub miscselect: u32,
    /// Reserved.
    pub reserved1: [u8; 8],
    /// Target CONFIGID (KSS).
    pub configid: [u8; 64],
    /// Reserved.
    pub reserved2: [u8; 384],
}
layout!(Targetinfo, "TARGETINFO", size = 512, align = 512, {
    measurement @ 0, attributes @ 32, reserved0 @ 48, configsvn @ 50, miscselect @ 52,
    reserved1 @ 56, configid @ 64, reserved2 @ 128,
});

impl Targetinfo {
    /// Byte ranges EREPORT requires to be zero.
    pub const RESERVED_RANGES: [core::ops::Range<usize>; 3] = [48..50, 56..64, 128..512];

    /// The TARGETINFO naming the enclave that produced `report` (for local attestation back to it).
    pub fn from_report(report: &Report) -> Self {
        Self {
            measurement: report.mrenclave,
            attributes: report.attributes,
            reserved0: [0; 2],
            configsvn: report.configsvn,
            miscselect: report.miscselect,
            reserved1: [0; 8],
            configid: report.configid,
            reserved2: [0; 384],
        }
    }
}

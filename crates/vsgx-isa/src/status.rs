//! SGX return codes in RAX (SGX.md §11).

/// A non-zero SGX return code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u64)]
pub enum SgxError {
    /// EINIT: SIGSTRUCT malformed.
    InvalidSigStruct = 1,
    /// EINIT, EGETKEY: attributes not allowed.
    InvalidAttribute = 2,
    /// EBLOCK (CF): already blocked.
    Blkstate = 3,
    /// EINIT: measurement mismatch.
    InvalidMeasurement = 4,
    /// EBLOCK (CF): page type cannot be blocked.
    Notblockable = 5,
    /// EBLOCK, ETRACKC, ERDINFO: page not valid.
    PgInvld = 6,
    /// Concurrent access conflict (old name SGX_LOCKFAIL).
    EpcPageConflict = 7,
    /// EINIT: signature does not verify.
    InvalidSignature = 8,
    /// ELD*: MAC check failed.
    MacCompareFail = 9,
    /// EWB: page not blocked.
    PageNotBlocked = 10,
    /// EWB, EACCEPT: tracking incomplete.
    NotTracked = 11,
    /// EWB (CF): VA slot already in use; the eviction still completes.
    VaSlotOccupied = 12,
    /// EWB, EREMOVE: SECS still has children.
    ChildPresent = 13,
    /// EREMOVE: a logical processor is inside the enclave.
    EnclaveAct = 14,
    /// EBLOCK: entry epoch locked (documented, never produced by the model).
    EntryepochLocked = 15,
    /// EINIT: launch token invalid (old name SGX_INVALID_LICENSE).
    InvalidEinittoken = 16,
    /// ETRACK, ETRACKC: previous tracking cycle incomplete.
    PrevTrkIncmpl = 17,
    /// EBLOCK (CF): page is a SECS.
    PgIsSecs = 18,
    /// EACCEPT, EACCEPTCOPY: page attributes do not match the request.
    PageAttributesMismatch = 19,
    /// EMODPR, EMODT: page cannot be modified.
    PageNotModifiable = 20,
    /// EDBGRD, EDBGWR: page cannot be debugged.
    PageNotDebuggable = 21,
    /// ENCLV: counter underflow or overflow.
    InvalidCounter = 25,
    /// ERDINFO (CF): address is not EPC.
    PgNonepc = 26,
    /// ETRACKC (CF): tracking not required for this page.
    TrackNotRequired = 27,
    /// EVERIFYREPORT2 (not modelled).
    InvalidReportmacstruct = 28,
    /// EUPDATESVN (not modelled).
    InsufficientEntropy = 29,
    /// EUPDATESVN (not modelled).
    EpcNotReady = 30,
    /// EUPDATESVN (not modelled).
    NoUpdate = 31,
    /// EINIT, EGETKEY: CPUSVN beyond the platform's.
    InvalidCpusvn = 32,
    /// EGETKEY: ISVSVN beyond the enclave's.
    InvalidIsvsvn = 64,
    /// EINIT: an unmasked event is pending; retry.
    UnmaskedEvent = 128,
    /// EGETKEY: KEYNAME unknown.
    InvalidKeyname = 256,
}

impl SgxError {
    /// Every defined code, in numeric order.
    pub const ALL: [Self; 32] = [
        Self::InvalidSigStruct,
        Self::InvalidAttribute,
        Self::Blkstate,
        Self::InvalidMeasurement,
        Self::Notblockable,
        Self::PgInvld,
        Self::EpcPageConflict,
        Self::InvalidSignature,
        Self::MacCompareFail,
        Self::PageNotBlocked,
        Self::NotTracked,
        Self::VaSlotOccupied,
        Self::ChildPresent,
        Self::EnclaveAct,
        Self::EntryepochLocked,
        Self::InvalidEinittoken,
        Self::PrevTrkIncmpl,
        Self::PgIsSecs,
        Self::PageAttributesMismatch,
        Self::PageNotModifiable,
        Self::PageNotDebuggable,
        Self::InvalidCounter,
        Self::PgNonepc,
        Self::TrackNotRequired,
        Self::InvalidReportmacstruct,
        Self::InsufficientEntropy,
        Self::EpcNotReady,
        Self::NoUpdate,
        Self::InvalidCpusvn,
        Self::InvalidIsvsvn,
        Self::UnmaskedEvent,
        Self::InvalidKeyname,
    ];

    /// The numeric code.
    pub const fn code(self) -> u64 {
        self as u64
    }

    /// Decodes a RAX value; `None` for 0 (success) and unassigned values.
    pub const fn from_code(code: u64) -> Option<Self> {
        let mut i = 0;
        while i < Self::ALL.len() {
            if Self::ALL[i] as u64 == code {
                return Some(Self::ALL[i]);
            }
            i += 1;
        }
        None
    }

    /// The SDM name (`SGX_INVALID_SIGNATURE`, …).
    pub const fn name(self) -> &'static str {
        match self {
            Self::InvalidSigStruct => "SGX_INVALID_SIG_STRUCT",
            Self::InvalidAttribute => "SGX_INVALID_ATTRIBUTE",
            Self::Blkstate => "SGX_BLKSTATE",
            Self::InvalidMeasurement => "SGX_INVALID_MEASUREMENT",
            Self::Notblockable => "SGX_NOTBLOCKABLE",
            Self::PgInvld => "SGX_PG_INVLD",
            Self::EpcPageConflict => "SGX_EPC_PAGE_CONFLICT",
            Self::InvalidSignature => "SGX_INVALID_SIGNATURE",
            Self::MacCompareFail => "SGX_MAC_COMPARE_FAIL",
            Self::PageNotBlocked => "SGX_PAGE_NOT_BLOCKED",
            Self::NotTracked => "SGX_NOT_TRACKED",
            Self::VaSlotOccupied => "SGX_VA_SLOT_OCCUPIED",
            Self::ChildPresent => "SGX_CHILD_PRESENT",
            Self::EnclaveAct => "SGX_ENCLAVE_ACT",
            Self::EntryepochLocked => "SGX_ENTRYEPOCH_LOCKED",
            Self::InvalidEinittoken => "SGX_INVALID_EINITTOKEN",
            Self::PrevTrkIncmpl => "SGX_PREV_TRK_INCMPL",
            Self::PgIsSecs => "SGX_PG_IS_SECS",
            Self::PageAttributesMismatch => "SGX_PAGE_ATTRIBUTES_MISMATCH",
            Self::PageNotModifiable => "SGX_PAGE_NOT_MODIFIABLE",
            Self::PageNotDebuggable => "SGX_PAGE_NOT_DEBUGGABLE",
            Self::InvalidCounter => "SGX_INVALID_COUNTER",
            Self::PgNonepc => "SGX_PG_NONEPC",
            Self::TrackNotRequired => "SGX_TRACK_NOT_REQUIRED",
            Self::InvalidReportmacstruct => "SGX_INVALID_REPORTMACSTRUCT",
            Self::InsufficientEntropy => "SGX_INSUFFICIENT_ENTROPY",
            Self::EpcNotReady => "SGX_EPC_NOT_READY",
            Self::NoUpdate => "SGX_NO_UPDATE",
            Self::InvalidCpusvn => "SGX_INVALID_CPUSVN",
            Self::InvalidIsvsvn => "SGX_INVALID_ISVSVN",
            Self::UnmaskedEvent => "SGX_UNMASKED_EVENT",
            Self::InvalidKeyname => "SGX_INVALID_KEYNAME",
        }
    }
}

impl core::fmt::Display for SgxError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}

impl core::error::Error for SgxError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_round_trips_and_is_sorted() {
        for w in SgxError::ALL.windows(2) {
            assert!(w[0].code() < w[1].code());
        }
        for e in SgxError::ALL {
            assert_eq!(SgxError::from_code(e.code()), Some(e));
            assert!(e.name().starts_with("SGX_"));
        }
        assert_eq!(SgxError::from_code(0), None);
        assert_eq!(SgxError::from_code(22), None);
        assert_eq!(SgxError::InvalidKeyname.code(), 256);
        assert_eq!(SgxError::EpcPageConflict.name(), "SGX_EPC_PAGE_CONFLICT");
    }
}

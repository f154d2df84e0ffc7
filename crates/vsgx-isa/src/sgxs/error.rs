//! SGXS stream errors: where (record index, byte offset) and what.

/// A stream that cannot be loaded, with the record and byte offset where the problem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("record {index} at byte offset {position:#x}: {kind}")]
pub struct SgxsError {
    /// Index of the offending record (0-based).
    pub index: usize,
    /// Byte offset of the offending record in the stream.
    pub position: usize,
    /// What is wrong.
    pub kind: SgxsErrorKind,
}

/// What is wrong with an SGXS stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SgxsErrorKind {
    /// The stream has no records at all.
    #[error("the stream is empty (an SGXS stream starts with an ECREATE record)")]
    Empty,
    /// The stream ends inside a record.
    #[error("truncated {record} record: needs {needed} bytes, only {available} left")]
    Truncated {
        /// Record kind ("record header" when the tag itself is cut).
        record: &'static str,
        /// Bytes the record needs.
        needed: usize,
        /// Bytes left in the stream.
        available: usize,
    },
    /// The first eight bytes name no known record.
    #[error("unknown record tag {tag:#018x}")]
    UnknownTag {
        /// The tag as a little-endian u64.
        tag: u64,
    },
    /// Bytes the hardware would fill with zeros are not zero, so the stream cannot match what a
    /// processor measures.
    #[error("{record} record: reserved byte {byte} is not zero")]
    ReservedNotZero {
        /// Record kind.
        record: &'static str,
        /// Offset of the first non-zero byte within the record.
        byte: usize,
    },
    /// The first record is not ECREATE.
    #[error("the first record must be ECREATE, found {found}")]
    FirstNotEcreate {
        /// Record kind found.
        found: &'static str,
    },
    /// UNSIZED: SIZE was never filled in.
    #[error("UNSIZED record: the enclave size was never filled in; loaders cannot use this stream")]
    Unsized,
    /// A second ECREATE.
    #[error("second ECREATE record (ECREATE must come exactly once, first)")]
    DuplicateEcreate,
    /// ECREATE parameters no processor accepts.
    #[error("ECREATE: {reason} (SIZE {size:#x}, SSAFRAMESIZE {ssaframesize})")]
    InvalidEcreate {
        /// Enclave size.
        size: u64,
        /// SSA frame size in pages.
        ssaframesize: u32,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// EADD offset not page aligned.
    #[error("EADD offset {offset:#x} is not 4 KiB aligned")]
    EaddNotAligned {
        /// Page offset.
        offset: u64,
    },
    /// EADD offsets must strictly increase.
    #[error(
        "EADD offset {offset:#x} does not follow the previous EADD at {previous:#x} (offsets must strictly increase)"
    )]
    EaddNotIncreasing {
        /// Page offset.
        offset: u64,
        /// Previous page offset.
        previous: u64,
    },
    /// A page beyond SIZE.
    #[error("offset {offset:#x} is outside the enclave (SIZE {size:#x})")]
    OutsideEnclave {
        /// Offending offset.
        offset: u64,
        /// Enclave size.
        size: u64,
    },
    /// SECINFO flags EADD would refuse or measure differently.
    #[error("EADD SECINFO.FLAGS {flags:#x}: {reason}")]
    InvalidSecinfo {
        /// The FLAGS value.
        flags: u64,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// A chunk offset not 256-byte aligned.
    #[error("{record} offset {offset:#x} is not 256-byte aligned")]
    ChunkNotAligned {
        /// Record kind.
        record: &'static str,
        /// Chunk offset.
        offset: u64,
    },
    /// A chunk before any EADD.
    #[error("{record} at offset {offset:#x} before any EADD")]
    ChunkWithoutPage {
        /// Record kind.
        record: &'static str,
        /// Chunk offset.
        offset: u64,
    },
    /// A chunk outside the page of the preceding EADD.
    #[error("{record} offset {offset:#x} is outside the page added by the preceding EADD ({page:#x})")]
    ChunkOutsidePage {
        /// Record kind.
        record: &'static str,
        /// Chunk offset.
        offset: u64,
        /// Page offset of the preceding EADD.
        page: u64,
    },
    /// The same chunk twice in one page.
    #[error("{record} names chunk {offset:#x} a second time")]
    ChunkTwice {
        /// Record kind.
        record: &'static str,
        /// Chunk offset.
        offset: u64,
    },
}

//! Splitting an SGXS byte stream into records.

use super::{BLOCK_SIZE, CHUNK_SIZE, SgxsError, SgxsErrorKind, TAG_UNMEASURED, TAG_UNSIZED};
use crate::measure::{TAG_EADD, TAG_ECREATE, TAG_EEXTEND};

/// One SGXS record, borrowing its data from the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// ECREATE: SSA frame size (pages) and enclave size.
    Ecreate {
        /// SECS.SSAFRAMESIZE.
        ssaframesize: u32,
        /// SECS.SIZE.
        size: u64,
    },
    /// UNSIZED: like ECREATE with SIZE still to be filled in.
    Unsized {
        /// SECS.SSAFRAMESIZE.
        ssaframesize: u32,
        /// Placeholder SIZE.
        size: u64,
    },
    /// EADD of the page at `offset` with SECINFO.FLAGS `secinfo_flags`.
    Eadd {
        /// Page offset from BASEADDR.
        offset: u64,
        /// SECINFO.FLAGS as measured.
        secinfo_flags: u64,
    },
    /// EEXTEND: 256 measured bytes at `offset`.
    Eextend {
        /// Chunk offset from BASEADDR.
        offset: u64,
        /// Chunk data.
        data: &'a [u8; CHUNK_SIZE],
    },
    /// UNMEASRD: 256 loaded but unmeasured bytes at `offset`.
    Unmeasured {
        /// Chunk offset from BASEADDR.
        offset: u64,
        /// Chunk data.
        data: &'a [u8; CHUNK_SIZE],
    },
}

impl Record<'_> {
    /// The record's tag name as written in SGXS files.
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Ecreate { .. } => "ECREATE",
            Self::Unsized { .. } => "UNSIZED",
            Self::Eadd { .. } => "EADD",
            Self::Eextend { .. } => "EEXTEND",
            Self::Unmeasured { .. } => "UNMEASRD",
        }
    }

    /// Whether the record's bytes are part of MRENCLAVE.
    pub const fn is_measured(&self) -> bool {
        matches!(self, Self::Ecreate { .. } | Self::Eadd { .. } | Self::Eextend { .. })
    }

    /// Size of the record in the stream.
    pub const fn encoded_len(&self) -> usize {
        match self {
            Self::Eextend { .. } | Self::Unmeasured { .. } => BLOCK_SIZE + CHUNK_SIZE,
            _ => BLOCK_SIZE,
        }
    }
}

/// A record with its place in the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordAt<'a> {
    /// Record index (0-based).
    pub index: usize,
    /// Byte offset of the record in the stream.
    pub position: usize,
    /// The record.
    pub record: Record<'a>,
}

impl RecordAt<'_> {
    /// An error located at this record.
    pub const fn error(&self, kind: SgxsErrorKind) -> SgxsError {
        SgxsError { index: self.index, position: self.position, kind }
    }
}

/// Iterates over the records of an SGXS byte stream. Stops after the first error.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
    index: usize,
    failed: bool,
}

impl<'a> Reader<'a> {
    /// A reader over a whole stream.
    pub const fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, position: 0, index: 0, failed: false }
    }

    fn parse(&self) -> Result<Record<'a>, SgxsErrorKind> {
        let rest = &self.bytes[self.position..];
        let Some((header, after)) = rest.split_first_chunk::<BLOCK_SIZE>() else {
            return Err(SgxsErrorKind::Truncated {
                record: "record header",
                needed: BLOCK_SIZE,
                available: rest.len(),
            });
        };
        let u64_at = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().unwrap_or([0; 8]));
        let u32_at = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().unwrap_or([0; 4]));
        let tag = u64_at(0);
        let zero_from = |record: &'static str, from: usize| {
            // OR-fold first (vectorizes); locate the byte only on the error path.
            if header[from..].iter().fold(0, |acc, &b| acc | b) == 0 {
                return Ok(());
            }
            let byte = from + header[from..].iter().position(|&b| b != 0).unwrap_or(0);
            Err(SgxsErrorKind::ReservedNotZero { record, byte })
        };
        let chunk = |record: &'static str| {
            after.first_chunk::<CHUNK_SIZE>().ok_or(SgxsErrorKind::Truncated {
                record,
                needed: BLOCK_SIZE + CHUNK_SIZE,
                available: rest.len(),
            })
        };
        Ok(match tag {
            TAG_ECREATE => {
                zero_from("ECREATE", 20)?;
                Record::Ecreate { ssaframesize: u32_at(8), size: u64_at(12) }
            }
            TAG_UNSIZED => {
                zero_from("UNSIZED", 20)?;
                Record::Unsized { ssaframesize: u32_at(8), size: u64_at(12) }
            }
            TAG_EADD => {
                zero_from("EADD", 24)?;
                Record::Eadd { offset: u64_at(8), secinfo_flags: u64_at(16) }
            }
            TAG_EEXTEND => {
                zero_from("EEXTEND", 16)?;
                Record::Eextend { offset: u64_at(8), data: chunk("EEXTEND")? }
            }
            TAG_UNMEASURED => {
                zero_from("UNMEASRD", 16)?;
                Record::Unmeasured { offset: u64_at(8), data: chunk("UNMEASRD")? }
            }
            tag => return Err(SgxsErrorKind::UnknownTag { tag }),
        })
    }
}

impl<'a> Iterator for Reader<'a> {
    type Item = Result<RecordAt<'a>, SgxsError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.position >= self.bytes.len() {
            return None;
        }
        let (index, position) = (self.index, self.position);
        match self.parse() {
            Ok(record) => {
                self.position += record.encoded_len();
                self.index += 1;
                Some(Ok(RecordAt { index, position, record }))
            }
            Err(kind) => {
                self.failed = true;
                Some(Err(SgxsError { index, position, kind }))
            }
        }
    }
}

impl core::iter::FusedIterator for Reader<'_> {}

//! Producing SGXS streams.

use alloc::vec::Vec;

use super::{
    BLOCK_SIZE, CHUNK_SIZE, CHUNKS_PER_PAGE, LoadPlan, Record, RecordAt, SgxsError, TAG_UNMEASURED, TAG_UNSIZED,
    Validator,
};
use crate::measure::{TAG_EADD, TAG_ECREATE, TAG_EEXTEND};
use crate::types::PAGE_SIZE;

/// Appends the encoding of one record to `out` (no validation: tests use it to build bad streams).
pub fn encode_record(record: &Record<'_>, out: &mut Vec<u8>) {
    let mut header = [0u8; BLOCK_SIZE];
    let mut put = |at: usize, bytes: &[u8]| header[at..at + bytes.len()].copy_from_slice(bytes);
    let data = match record {
        Record::Ecreate { ssaframesize, size } | Record::Unsized { ssaframesize, size } => {
            let tag = if matches!(record, Record::Ecreate { .. }) { TAG_ECREATE } else { TAG_UNSIZED };
            put(0, &tag.to_le_bytes());
            put(8, &ssaframesize.to_le_bytes());
            put(12, &size.to_le_bytes());
            None
        }
        Record::Eadd { offset, secinfo_flags } => {
            put(0, &TAG_EADD.to_le_bytes());
            put(8, &offset.to_le_bytes());
            put(16, &secinfo_flags.to_le_bytes());
            None
        }
        Record::Eextend { offset, data } | Record::Unmeasured { offset, data } => {
            let tag = if matches!(record, Record::Eextend { .. }) { TAG_EEXTEND } else { TAG_UNMEASURED };
            put(0, &tag.to_le_bytes());
            put(8, &offset.to_le_bytes());
            Some(*data)
        }
    };
    out.extend_from_slice(&header);
    if let Some(data) = data {
        out.extend_from_slice(data);
    }
}

/// Which chunks of a page to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkMeasurement {
    /// All 16 chunks (EEXTEND each).
    All,
    /// None: the content is loaded with UNMEASRD records (all-zero chunks are omitted).
    None,
    /// Bit `i` set measures chunk `i`; the other non-zero chunks are UNMEASRD.
    Mask(u16),
}

/// Builds a canonical SGXS stream; every record is validated as it is written.
#[derive(Clone, Debug)]
pub struct SgxsWriter {
    out: Vec<u8>,
    validator: Validator,
    index: usize,
}

impl SgxsWriter {
    /// Starts a stream with its ECREATE record.
    pub fn new(ssaframesize: u32, size: u64) -> Result<Self, SgxsError> {
        let mut w = Self { out: Vec::new(), validator: Validator::new(), index: 0 };
        w.push(&Record::Ecreate { ssaframesize, size })?;
        Ok(w)
    }

    fn push(&mut self, record: &Record<'_>) -> Result<(), SgxsError> {
        let at = RecordAt { index: self.index, position: self.out.len(), record: *record };
        self.validator.check(&at)?;
        encode_record(record, &mut self.out);
        self.index += 1;
        Ok(())
    }

    /// Adds one page: EADD, then its chunks in ascending order.
    pub fn add_page(
        &mut self,
        offset: u64,
        secinfo_flags: u64,
        content: &[u8; PAGE_SIZE],
        measure: ChunkMeasurement,
    ) -> Result<(), SgxsError> {
        self.push(&Record::Eadd { offset, secinfo_flags })?;
        let mask = match measure {
            ChunkMeasurement::All => u16::MAX,
            ChunkMeasurement::None => 0,
            ChunkMeasurement::Mask(m) => m,
        };
        for (i, data) in content.as_chunks::<CHUNK_SIZE>().0.iter().enumerate().take(CHUNKS_PER_PAGE) {
            let chunk_offset = offset + (i * CHUNK_SIZE) as u64;
            if mask & (1 << i) != 0 {
                self.push(&Record::Eextend { offset: chunk_offset, data })?;
            } else if data.iter().any(|&b| b != 0) {
                self.push(&Record::Unmeasured { offset: chunk_offset, data })?;
            }
        }
        Ok(())
    }

    /// The finished stream.
    pub fn finish(self) -> Vec<u8> {
        self.out
    }
}

impl LoadPlan {
    /// Serializes the plan back into a canonical SGXS stream, chunk records in the plan's order
    /// (so a plan parsed from a stream gives back exactly that stream). Non-canonical plans built
    /// by hand are refused with the error the stream would have had.
    pub fn to_sgxs(&self) -> Result<Vec<u8>, SgxsError> {
        let mut w = SgxsWriter::new(self.ssaframesize, self.size)?;
        for page in &self.pages {
            w.push(&Record::Eadd { offset: page.offset, secinfo_flags: page.secinfo_flags })?;
            for planned in &page.chunks {
                let offset = page.offset.wrapping_add(planned.chunk.offset() as u64);
                let data = page.chunk_data(planned.chunk);
                let record = if planned.measured {
                    Record::Eextend { offset, data }
                } else {
                    Record::Unmeasured { offset, data }
                };
                w.push(&record)?;
            }
        }
        Ok(w.finish())
    }
}

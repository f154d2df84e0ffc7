//! SGXS measurement streams (SGX.md §3.3–3.5).
//!
//! An SGXS file is the MRENCLAVE measurement stream itself: 64-byte blocks tagged ECREATE, EADD and
//! EEXTEND (each EEXTEND followed by its 256 data bytes), plus two Fortanix tags: UNSIZED (an
//! ECREATE whose SIZE a tool fills in later; loaders reject it) and UNMEASRD (chunk data that is
//! loaded but not measured).
//!
//! - [`Reader`] splits a byte slice into [`Record`]s without copying;
//! - [`Validator`] enforces the canonical-stream rules every loader here relies on;
//! - [`measure`] computes MRENCLAVE and counts without building pages (fast path);
//! - [`LoadPlan`] turns a stream into the ECREATE/EADD/EEXTEND sequence a loader feeds to hardware;
//! - [`SgxsWriter`] produces canonical streams.

mod error;
mod plan;
mod reader;
mod validate;
mod writer;

pub use error::{SgxsError, SgxsErrorKind};
pub use plan::{LoadPlan, PlannedPage};
pub use reader::{Reader, Record, RecordAt};
pub use validate::Validator;
pub use writer::{ChunkMeasurement, SgxsWriter, encode_record};

use crate::measure::Measurement;

/// Tag of an UNSIZED record (`"UNSIZED\0"`).
pub const TAG_UNSIZED: u64 = 0x0044_455A_4953_4E55;
/// Tag of an UNMEASRD record (`"UNMEASRD"`).
pub const TAG_UNMEASURED: u64 = 0x4452_5341_454D_4E55;
/// Size of a record header block.
pub const BLOCK_SIZE: usize = 64;
/// Size of the data following an EEXTEND or UNMEASRD header.
pub const CHUNK_SIZE: usize = 256;
/// Chunks per page.
pub const CHUNKS_PER_PAGE: usize = 4096 / CHUNK_SIZE;

/// What [`measure`] learns about a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SgxsSummary {
    /// The enclave's MRENCLAVE.
    pub mrenclave: [u8; 32],
    /// SECS.SIZE from the ECREATE record.
    pub size: u64,
    /// SECS.SSAFRAMESIZE from the ECREATE record.
    pub ssaframesize: u32,
    /// Number of EADD records.
    pub pages: u64,
    /// Number of EEXTEND records.
    pub measured_chunks: u64,
    /// Number of UNMEASRD records.
    pub unmeasured_chunks: u64,
}

/// Validates a whole stream and computes its MRENCLAVE without materializing pages.
///
/// Measured records are contiguous in the stream, so runs of them are hashed straight from the
/// input, 64 KiB per call: this costs little more than SHA-256 of the measured bytes.
pub fn measure(bytes: &[u8]) -> Result<SgxsSummary, SgxsError> {
    let mut validator = Validator::new();
    let mut measurement = Measurement::new();
    let mut run_start: Option<usize> = None;
    for item in Reader::new(bytes) {
        let at = item?;
        validator.check(&at)?;
        match (at.record.is_measured(), run_start) {
            (true, None) => run_start = Some(at.position),
            // Hash long runs while their bytes are still in cache from validation.
            (true, Some(start)) if at.position - start >= HASH_RUN_BYTES => {
                hash_run(&mut measurement, &bytes[start..at.position]);
                run_start = Some(at.position);
            }
            (false, Some(start)) => {
                hash_run(&mut measurement, &bytes[start..at.position]);
                run_start = None;
            }
            _ => {}
        }
    }
    if let Some(start) = run_start {
        hash_run(&mut measurement, &bytes[start..]);
    }
    let header = validator.finish(bytes.len())?;
    Ok(SgxsSummary {
        mrenclave: measurement.finalize(),
        size: header.size,
        ssaframesize: header.ssaframesize,
        pages: validator.pages(),
        measured_chunks: validator.measured_chunks(),
        unmeasured_chunks: validator.unmeasured_chunks(),
    })
}

/// Measured bytes hashed per call: small enough to stay in L2 between validation and hashing.
const HASH_RUN_BYTES: usize = 64 * 1024;

fn hash_run(measurement: &mut Measurement, run: &[u8]) {
    // Every record is a whole number of 64-byte blocks, so a run of records is too.
    let complete = measurement.update_bytes(run);
    debug_assert!(complete.is_some(), "records are whole blocks");
}

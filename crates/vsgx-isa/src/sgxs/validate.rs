//! The canonical-stream rules (SGX.md §3.3).

use super::{CHUNK_SIZE, Record, RecordAt, SgxsError, SgxsErrorKind};
use crate::types::{PageType, Secinfo, SecinfoFlags};

/// SECS parameters from the ECREATE record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EcreateParams {
    /// SECS.SIZE.
    pub size: u64,
    /// SECS.SSAFRAMESIZE.
    pub ssaframesize: u32,
}

/// Checks records one by one against the canonical-stream rules:
///
/// - exactly one ECREATE, first (UNSIZED is rejected), with a SIZE and SSAFRAMESIZE ECREATE accepts;
/// - EADD offsets page aligned, strictly increasing and inside SIZE; SECINFO flags EADD accepts
///   (no reserved bits, PT_REG or PT_TCS, no W without R, TCS with R = W = X = 0 because EADD
///   measures TCS pages with their permissions cleared);
/// - EEXTEND/UNMEASRD offsets 256-aligned, inside the page of the preceding EADD, each chunk at
///   most once per page.
#[derive(Clone, Debug, Default)]
pub struct Validator {
    ecreate: Option<EcreateParams>,
    page: Option<u64>,
    chunks_seen: u16,
    pages: u64,
    measured_chunks: u64,
    unmeasured_chunks: u64,
}

impl Validator {
    /// A validator expecting the first record.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks the next record.
    pub fn check(&mut self, at: &RecordAt<'_>) -> Result<(), SgxsError> {
        let fail = |kind| Err(at.error(kind));
        match (&at.record, self.ecreate) {
            (Record::Unsized { .. }, _) => fail(SgxsErrorKind::Unsized),
            (Record::Ecreate { .. }, Some(_)) => fail(SgxsErrorKind::DuplicateEcreate),
            (Record::Ecreate { ssaframesize, size }, None) => {
                let reason = if *size < 8192 || !size.is_power_of_two() {
                    Some("SIZE must be a power of two of at least 8192")
                } else if *ssaframesize == 0 {
                    Some("SSAFRAMESIZE must be at least one page")
                } else {
                    None
                };
                if let Some(reason) = reason {
                    return fail(SgxsErrorKind::InvalidEcreate { size: *size, ssaframesize: *ssaframesize, reason });
                }
                self.ecreate = Some(EcreateParams { size: *size, ssaframesize: *ssaframesize });
                Ok(())
            }
            (other, None) => fail(SgxsErrorKind::FirstNotEcreate { found: other.name() }),
            (Record::Eadd { offset, secinfo_flags }, Some(ecreate)) => {
                let offset = *offset;
                if offset % 4096 != 0 {
                    return fail(SgxsErrorKind::EaddNotAligned { offset });
                }
                if let Some(previous) = self.page.filter(|&p| offset <= p) {
                    return fail(SgxsErrorKind::EaddNotIncreasing { offset, previous });
                }
                if offset >= ecreate.size {
                    return fail(SgxsErrorKind::OutsideEnclave { offset, size: ecreate.size });
                }
                if let Some(reason) = secinfo_problem(*secinfo_flags) {
                    return fail(SgxsErrorKind::InvalidSecinfo { flags: *secinfo_flags, reason });
                }
                self.page = Some(offset);
                self.chunks_seen = 0;
                self.pages += 1;
                Ok(())
            }
            (Record::Eextend { offset, .. } | Record::Unmeasured { offset, .. }, Some(_)) => {
                let (record, offset) = (at.record.name(), *offset);
                if offset % CHUNK_SIZE as u64 != 0 {
                    return fail(SgxsErrorKind::ChunkNotAligned { record, offset });
                }
                let Some(page) = self.page else {
                    return fail(SgxsErrorKind::ChunkWithoutPage { record, offset });
                };
                if offset.wrapping_sub(page) >= 4096 {
                    return fail(SgxsErrorKind::ChunkOutsidePage { record, offset, page });
                }
                let bit = 1u16 << ((offset - page) / CHUNK_SIZE as u64);
                if self.chunks_seen & bit != 0 {
                    return fail(SgxsErrorKind::ChunkTwice { record, offset });
                }
                self.chunks_seen |= bit;
                if at.record.is_measured() {
                    self.measured_chunks += 1;
                } else {
                    self.unmeasured_chunks += 1;
                }
                Ok(())
            }
        }
    }

    /// Ends the stream of `len` bytes: it must have had an ECREATE.
    pub fn finish(&self, len: usize) -> Result<EcreateParams, SgxsError> {
        self.ecreate.ok_or(SgxsError { index: 0, position: len, kind: SgxsErrorKind::Empty })
    }

    /// EADD records seen.
    pub const fn pages(&self) -> u64 {
        self.pages
    }

    /// EEXTEND records seen.
    pub const fn measured_chunks(&self) -> u64 {
        self.measured_chunks
    }

    /// UNMEASRD records seen.
    pub const fn unmeasured_chunks(&self) -> u64 {
        self.unmeasured_chunks
    }
}

/// Why EADD would refuse (or measure differently) a page with these SECINFO flags, if it would.
fn secinfo_problem(flags: u64) -> Option<&'static str> {
    let secinfo = Secinfo::from_raw_flags(flags);
    if !secinfo.reserved_is_zero() {
        return Some("reserved bits are set");
    }
    match secinfo.page_type() {
        Some(PageType::Reg) => {
            let perms = secinfo.perms();
            (perms.contains(SecinfoFlags::W) && !perms.contains(SecinfoFlags::R))
                .then_some("a writable page must also be readable")
        }
        Some(PageType::Tcs) => secinfo
            .perms()
            .intersects(SecinfoFlags::RWX)
            .then_some("TCS pages must be added with R = W = X = 0 (EADD measures them that way)"),
        _ => Some("EADD only adds PT_REG and PT_TCS pages"),
    }
}

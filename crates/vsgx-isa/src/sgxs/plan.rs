//! Load plans: what a loader feeds to the hardware (SGX.md §3.4).

use alloc::boxed::Box;
use alloc::vec::Vec;

use super::{CHUNK_SIZE, Reader, Record, SgxsError, Validator};
use crate::measure::Measurement;
use crate::types::{PAGE_SIZE, PageType, Secinfo, SecinfoFlags};

/// One page to EADD, with the chunks to EEXTEND after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedPage {
    /// Offset from BASEADDR (LINADDR = BASEADDR + offset).
    pub offset: u64,
    /// SECINFO.FLAGS for EADD.
    pub secinfo_flags: u64,
    /// Page content (unnamed chunks are zero).
    pub content: Box<[u8; PAGE_SIZE]>,
    /// In-page offsets of the chunks to EEXTEND, in stream order (the hash depends on it).
    pub measured_chunks: Vec<u16>,
}

impl PlannedPage {
    /// The SECINFO to pass to EADD.
    pub const fn secinfo(&self) -> Secinfo {
        Secinfo::from_raw_flags(self.secinfo_flags)
    }

    /// The page type.
    pub const fn page_type(&self) -> Option<PageType> {
        self.secinfo().page_type()
    }
}

/// A validated enclave image: ECREATE parameters and the EADD/EEXTEND sequence that rebuilds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadPlan {
    /// SECS.SIZE.
    pub size: u64,
    /// SECS.SSAFRAMESIZE.
    pub ssaframesize: u32,
    /// Pages in EADD order (increasing offsets).
    pub pages: Vec<PlannedPage>,
}

impl LoadPlan {
    /// Builds a plan from an SGXS stream, enforcing the canonical rules of [`Validator`].
    pub fn from_sgxs(bytes: &[u8]) -> Result<Self, SgxsError> {
        let mut validator = Validator::new();
        let mut pages: Vec<PlannedPage> = Vec::new();
        for item in Reader::new(bytes) {
            let at = item?;
            validator.check(&at)?;
            match at.record {
                Record::Eadd { offset, secinfo_flags } => pages.push(PlannedPage {
                    offset,
                    secinfo_flags,
                    content: Box::new([0; PAGE_SIZE]),
                    measured_chunks: Vec::new(),
                }),
                Record::Eextend { offset, data } | Record::Unmeasured { offset, data } => {
                    // The validator guarantees a preceding EADD whose page holds this chunk.
                    if let Some(page) = pages.last_mut() {
                        let within = (offset - page.offset) as usize;
                        page.content[within..within + CHUNK_SIZE].copy_from_slice(data);
                        if at.record.is_measured() {
                            page.measured_chunks.push(within as u16);
                        }
                    }
                }
                Record::Ecreate { .. } | Record::Unsized { .. } => {}
            }
        }
        let ecreate = validator.finish(bytes.len())?;
        Ok(Self { size: ecreate.size, ssaframesize: ecreate.ssaframesize, pages })
    }

    /// MRENCLAVE as a processor computes it while executing this plan: ECREATE, then per page
    /// EADD with the effective SECINFO and one EEXTEND per measured chunk.
    pub fn mrenclave(&self) -> [u8; 32] {
        let mut m = Measurement::new();
        m.ecreate(self.ssaframesize, self.size);
        for page in &self.pages {
            let mut flags = page.secinfo_flags;
            if page.page_type() == Some(PageType::Tcs) {
                flags &= !SecinfoFlags::RWX.bits();
            }
            m.eadd(page.offset, flags);
            for &chunk in &page.measured_chunks {
                let at = chunk as usize;
                let data: &[u8; CHUNK_SIZE] =
                    page.content[at..at + CHUNK_SIZE].try_into().unwrap_or(&[0; CHUNK_SIZE]);
                m.eextend(page.offset + chunk as u64, data);
            }
        }
        m.finalize()
    }

    /// Number of measured chunks over all pages.
    pub fn measured_chunks(&self) -> usize {
        self.pages.iter().map(|p| p.measured_chunks.len()).sum()
    }
}

//! Load plans: what a loader feeds to the hardware (SGX.md §3.4).

use alloc::boxed::Box;
use alloc::vec::Vec;

use super::{CHUNK_SIZE, CHUNKS_PER_PAGE, Reader, Record, SgxsError, Validator};
use crate::measure::Measurement;
use crate::types::{PAGE_SIZE, PageType, Secinfo, SecinfoFlags};

/// One of the 16 256-byte chunks of a page. The index is checked on construction, so a chunk can
/// never name bytes outside its page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkIndex(u8);

impl ChunkIndex {
    /// Chunk `index` (0..16) of a page.
    pub const fn new(index: usize) -> Option<Self> {
        if index < CHUNKS_PER_PAGE { Some(Self(index as u8)) } else { None }
    }

    /// The chunk starting at in-page byte offset `offset` (a multiple of 256 below 4096).
    pub const fn at_offset(offset: usize) -> Option<Self> {
        if offset.is_multiple_of(CHUNK_SIZE) { Self::new(offset / CHUNK_SIZE) } else { None }
    }

    /// Index within the page.
    pub const fn index(self) -> usize {
        self.0 as usize
    }

    /// Byte offset within the page.
    pub const fn offset(self) -> usize {
        self.0 as usize * CHUNK_SIZE
    }
}

/// A chunk record of a page, in stream order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PlannedChunk {
    /// Which chunk.
    pub chunk: ChunkIndex,
    /// EEXTEND (measured) or UNMEASRD (loaded only).
    pub measured: bool,
}

/// One page to EADD, with the chunks to EEXTEND after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedPage {
    /// Offset from BASEADDR (LINADDR = BASEADDR + offset).
    pub offset: u64,
    /// SECINFO.FLAGS for EADD.
    pub secinfo_flags: u64,
    /// Page content (chunks the stream does not name are zero).
    pub content: Box<[u8; PAGE_SIZE]>,
    /// The page's chunk records in stream order (the hash depends on the order of measured ones).
    pub chunks: Vec<PlannedChunk>,
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

    /// The chunks to EEXTEND after EADD, in order.
    pub fn measured_chunks(&self) -> impl Iterator<Item = ChunkIndex> + '_ {
        self.chunks.iter().filter(|c| c.measured).map(|c| c.chunk)
    }

    /// The bytes of one chunk.
    pub fn chunk_data(&self, chunk: ChunkIndex) -> &[u8; CHUNK_SIZE] {
        let (chunks, _) = self.content.as_chunks::<CHUNK_SIZE>();
        &chunks[chunk.index()]
    }

    /// The SECINFO.FLAGS EADD measures: a TCS is measured with R = W = X = 0.
    pub const fn effective_secinfo_flags(&self) -> u64 {
        if matches!(self.page_type(), Some(PageType::Tcs)) {
            self.secinfo_flags & !SecinfoFlags::RWX.bits()
        } else {
            self.secinfo_flags
        }
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
                    chunks: Vec::new(),
                }),
                Record::Eextend { offset, data } | Record::Unmeasured { offset, data } => {
                    // The validator guarantees a preceding EADD whose page holds this chunk.
                    let page = pages.last_mut();
                    let chunk =
                        page.as_ref().and_then(|p| ChunkIndex::at_offset(offset.wrapping_sub(p.offset) as usize));
                    if let (Some(page), Some(chunk)) = (page, chunk) {
                        page.content[chunk.offset()..chunk.offset() + CHUNK_SIZE].copy_from_slice(data);
                        page.chunks.push(PlannedChunk { chunk, measured: at.record.is_measured() });
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
            m.eadd(page.offset, page.effective_secinfo_flags());
            for chunk in page.measured_chunks() {
                m.eextend(page.offset + chunk.offset() as u64, page.chunk_data(chunk));
            }
        }
        m.finalize()
    }

    /// Number of measured chunks over all pages.
    pub fn measured_chunks(&self) -> usize {
        self.pages.iter().map(|p| p.measured_chunks().count()).sum()
    }
}

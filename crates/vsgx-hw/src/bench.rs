//! Benchmark fixtures shared by `cargo bench` (vsgx-hw, vsgx-hv) and `vsgx bench`.
//!
//! Operands are prepared in RAM once, so that only the ENCLS leaves are timed; the yardsticks
//! (raw SHA-256 over the bytes an enclave build measures, ring AES-GCM seal + open of a page) run
//! on the same work in the same process; [`fastest`] keeps the best of several rounds, the least
//! disturbed by the rest of the machine. Everything is generic over [`Cpu`], so one fixture times
//! a bare-metal logical processor and a guest vCPU alike.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use vsgx_isa::cpu::{Cpu, Exception, LeafStatus};
use vsgx_isa::leaf::Encls;
use vsgx_isa::{ArchStruct, Attributes, AttributesFlags, PageType, Pageinfo, Secinfo, SecinfoFlags, Secs};

use crate::cpu::BareMetalCpu;
use crate::crypto::{MacHeader, MacMismatch, PagingKey};
use crate::os::{OsError, SimpleOs};
use crate::platform::Platform;

/// Pages of the enclave a build benchmark builds.
pub const BUILD_PAGES: u64 = 64;

/// Bytes a build measures per 4 KiB page: 16 EEXTENDs, each hashing a 64-byte header and 256 bytes.
pub const MEASURED_BYTES_PER_PAGE: u64 = 5120;

/// RAM window (per bare-metal OS instance) of [`bare_metal_os`].
const RAM_WINDOW: u64 = 64 << 20;

/// EPC window (per bare-metal OS instance) of [`bare_metal_os`].
const EPC_WINDOW: u64 = 16 << 20;

/// Why a benchmark could not run (the model refused work it must accept).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The OS could not boot or prepare operands.
    #[error(transparent)]
    Os(#[from] OsError),
    /// A leaf faulted.
    #[error("{leaf} faulted: {fault}")]
    Fault {
        /// The leaf.
        leaf: Encls,
        /// The exception.
        fault: Exception,
    },
    /// A leaf returned an error code.
    #[error("{leaf} returned {status:?}")]
    Status {
        /// The leaf.
        leaf: Encls,
        /// Its status.
        status: LeafStatus,
    },
    /// The OS ran out of EPC pages for the fixture.
    #[error("no free EPC page for the benchmark fixture")]
    NoEpc,
    /// ring refused to open what it sealed.
    #[error(transparent)]
    Mac(#[from] MacMismatch),
}

/// Runs `f` `rounds` times and returns the shortest time (zero for no rounds).
pub fn fastest(rounds: usize, mut f: impl FnMut() -> Duration) -> Duration {
    (0..rounds).map(|_| f()).min().unwrap_or_default()
}

/// Like [`fastest`] for work that can fail: the first error stops the rounds.
pub fn try_fastest<E>(rounds: usize, mut f: impl FnMut() -> Result<Duration, E>) -> Result<Duration, E> {
    let mut best: Option<Duration> = None;
    for _ in 0..rounds {
        let t = f()?;
        best = Some(best.map_or(t, |b| b.min(t)));
    }
    Ok(best.unwrap_or_default())
}

/// One bare-metal logical processor of `platform` with an OS confined to RAM window `n` (64 MiB
/// each) and EPC window `n` (16 MiB each of the first section), so that OS instances `0, 1, …`
/// can run side by side on their own threads.
pub fn bare_metal_os(platform: &Arc<Platform>, n: u64) -> Result<SimpleOs<BareMetalCpu>, BenchError> {
    let ram = platform.ram().size();
    let mut os = SimpleOs::boot_in(BareMetalCpu::new(Arc::clone(platform)), ram, n * RAM_WINDOW..(n + 1) * RAM_WINDOW)?;
    let base = platform.epc().sections().first().ok_or(OsError::NoEpc)?.base;
    os.limit_epc(base + n * EPC_WINDOW, EPC_WINDOW);
    Ok(os)
}

/// Runs an ENCLS leaf. ECREATE, EADD, EEXTEND and EPA report failure only by faulting; every
/// other leaf must also return SGX_SUCCESS.
pub fn leaf<C: Cpu>(os: &mut SimpleOs<C>, leaf: Encls, rbx: u64, rcx: u64, rdx: u64) -> Result<(), BenchError> {
    let regs = os.cpu().encls_leaf(leaf, rbx, rcx, rdx).map_err(|fault| BenchError::Fault { leaf, fault })?;
    if !matches!(leaf, Encls::Ecreate | Encls::Eadd | Encls::Eextend | Encls::Epa) {
        let status = regs.status();
        if status != LeafStatus::Success {
            return Err(BenchError::Status { leaf, status });
        }
    }
    Ok(())
}

/// An enclave of [`BUILD_PAGES`] pages under construction whose operands are prepared once: the
/// SECS source, and per page a source page, SECINFO and PAGEINFO already in RAM.
#[derive(Debug)]
pub struct BuildFixture {
    secs_epc: u64,
    ecreate_pageinfo: u64,
    pages: Vec<(u64, u64)>, // (PAGEINFO, EPC page)
}

impl BuildFixture {
    /// Prepares the operands of an enclave at linear address `base` and takes its EPC pages from
    /// the OS's allocator.
    pub fn prepare<C: Cpu>(os: &mut SimpleOs<C>, base: u64) -> Result<Self, BenchError> {
        let mut secs = Secs::zeroed();
        secs.size = 1 << 20;
        secs.baseaddr = base;
        secs.ssaframesize = 1;
        secs.attributes = Attributes::new(AttributesFlags::MODE64BIT, 3);
        let secs_epc = os.alloc_epc().ok_or(BenchError::NoEpc)?;
        let src = os.scratch(secs.bytes(), 4096)?;
        let secinfo = os.scratch(Secinfo::new(PageType::Secs, SecinfoFlags::empty()).bytes(), 64)?;
        let ecreate_pageinfo =
            os.scratch(Pageinfo { linaddr: 0, srcpge: src, secinfo_or_pcmd: secinfo, secs: 0 }.bytes(), 32)?;
        let reg = os.scratch(Secinfo::new(PageType::Reg, SecinfoFlags::R | SecinfoFlags::W).bytes(), 64)?;
        let pages = (0..BUILD_PAGES)
            .map(|i| {
                let content: Vec<u8> = (0..4096u64).map(|b| (b * 7 + i) as u8).collect();
                let src = os.scratch(&content, 4096)?;
                let pi = Pageinfo { linaddr: base + i * 4096, srcpge: src, secinfo_or_pcmd: reg, secs: secs_epc };
                Ok((os.scratch(pi.bytes(), 32)?, os.alloc_epc().ok_or(BenchError::NoEpc)?))
            })
            .collect::<Result<_, BenchError>>()?;
        Ok(Self { secs_epc, ecreate_pageinfo, pages })
    }

    /// Pages built per [`Self::build_once`].
    pub fn pages(&self) -> u64 {
        self.pages.len() as u64
    }

    /// Bytes of enclave pages built per [`Self::build_once`].
    pub fn page_bytes(&self) -> u64 {
        self.pages() * 4096
    }

    /// ECREATE (untimed), then EADD + 16×EEXTEND per page (timed), then EREMOVE of every page
    /// (untimed). Returns the timed part.
    pub fn build_once<C: Cpu>(&self, os: &mut SimpleOs<C>) -> Result<Duration, BenchError> {
        leaf(os, Encls::Ecreate, self.ecreate_pageinfo, self.secs_epc, 0)?;
        let t = Instant::now();
        for &(pi, epc) in &self.pages {
            leaf(os, Encls::Eadd, pi, epc, 0)?;
            for c in 0..16 {
                leaf(os, Encls::Eextend, self.secs_epc, epc + c * 256, 0)?;
            }
        }
        let elapsed = t.elapsed();
        for &(_, epc) in &self.pages {
            leaf(os, Encls::Eremove, 0, epc, 0)?;
        }
        leaf(os, Encls::Eremove, 0, self.secs_epc, 0)?;
        Ok(elapsed)
    }
}

/// The bytes a build of `pages` pages measures (the SHA-256 yardstick's input).
pub fn measured_bytes(pages: u64) -> Vec<u8> {
    (0..pages * MEASURED_BYTES_PER_PAGE).map(|i| i as u8).collect()
}

/// Time of one raw SHA-256 over `bytes`.
pub fn sha256_once(bytes: &[u8]) -> Duration {
    let t = Instant::now();
    black_box(Sha256::digest(black_box(bytes)));
    t.elapsed()
}

/// One page of a built enclave, a VA page and the EWB/ELDU operands, so that a round trip of the
/// page out of the EPC and back can be timed.
#[derive(Debug)]
pub struct PagingFixture {
    secs_epc: u64,
    epc: u64,
    va: u64,
    ewb_pageinfo: u64,
    ewb_info: Pageinfo,
    eldu_pageinfo: u64,
}

impl PagingFixture {
    /// Builds a one-page enclave at linear address `base` (ECREATE + EADD), makes a VA page and
    /// prepares the operands.
    pub fn prepare<C: Cpu>(os: &mut SimpleOs<C>, base: u64) -> Result<Self, BenchError> {
        let build = BuildFixture::prepare(os, base)?;
        leaf(os, Encls::Ecreate, build.ecreate_pageinfo, build.secs_epc, 0)?;
        let &(pi0, epc) = build.pages.first().ok_or(BenchError::NoEpc)?;
        leaf(os, Encls::Eadd, pi0, epc, 0)?;
        let va = os.alloc_epc().ok_or(BenchError::NoEpc)?;
        leaf(os, Encls::Epa, PageType::Va as u64, va, 0)?;
        let blob = os.scratch(&[0; 4096], 4096)?;
        let pcmd = os.scratch(&[0; 128], 128)?;
        let ewb_pageinfo = os.scratch(&[0; 32], 32)?;
        let eldu_pageinfo = os.scratch(
            Pageinfo { linaddr: base, srcpge: blob, secinfo_or_pcmd: pcmd, secs: build.secs_epc }.bytes(),
            32,
        )?;
        let ewb_info = Pageinfo { linaddr: 0, srcpge: blob, secinfo_or_pcmd: pcmd, secs: 0 };
        Ok(Self { secs_epc: build.secs_epc, epc, va, ewb_pageinfo, ewb_info, eldu_pageinfo })
    }

    /// EBLOCK + ETRACK (untimed), then EWB + ELDU of the page (timed). Returns the timed part.
    pub fn round_trip<C: Cpu>(&self, os: &mut SimpleOs<C>) -> Result<Duration, BenchError> {
        leaf(os, Encls::Eblock, 0, self.epc, 0)?;
        leaf(os, Encls::Etrack, 0, self.secs_epc, 0)?;
        os.cpu()
            .write(self.ewb_pageinfo, self.ewb_info.bytes())
            .map_err(|fault| BenchError::Fault { leaf: Encls::Ewb, fault })?;
        let t = Instant::now();
        leaf(os, Encls::Ewb, self.ewb_pageinfo, self.epc, self.va)?;
        leaf(os, Encls::Eldu, self.eldu_pageinfo, self.epc, self.va)?;
        Ok(t.elapsed())
    }
}

/// The paging yardstick: ring AES-128-GCM seal + open of a 4 KiB page with a 128-byte AAD,
/// through [`PagingKey`] (what EWB and ELDU use).
#[derive(Debug)]
pub struct SealOpen {
    key: PagingKey,
    header: [u8; MacHeader::SIZE],
    page: [u8; 4096],
}

impl Default for SealOpen {
    fn default() -> Self {
        Self::new()
    }
}

impl SealOpen {
    /// A fixed key, header and page.
    pub fn new() -> Self {
        Self { key: PagingKey::new(&[7; 16]), header: [3; MacHeader::SIZE], page: [5; 4096] }
    }

    /// Time of one seal + open.
    pub fn once(&mut self) -> Result<Duration, BenchError> {
        let t = Instant::now();
        let tag = self.key.seal(1, &self.header, black_box(&mut self.page));
        self.key.open(1, &self.header, black_box(&mut self.page), &tag)?;
        Ok(t.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform() -> Arc<Platform> {
        let mut cfg = crate::config::embedded_default();
        cfg.seed = Some(1);
        Platform::new(cfg)
    }

    #[test]
    fn fixtures_run_repeatedly() {
        let platform = platform();
        let mut os = bare_metal_os(&platform, 0).unwrap();
        let build = BuildFixture::prepare(&mut os, 0x1000_0000_0000).unwrap();
        assert_eq!(build.page_bytes(), BUILD_PAGES * 4096);
        for _ in 0..3 {
            build.build_once(&mut os).unwrap();
        }
        let mut os1 = bare_metal_os(&platform, 1).unwrap();
        let paging = PagingFixture::prepare(&mut os1, 0x2000_0000_0000).unwrap();
        for _ in 0..3 {
            paging.round_trip(&mut os1).unwrap();
        }
        let mut seal_open = SealOpen::new();
        try_fastest(3, || seal_open.once()).unwrap();
        assert_eq!(measured_bytes(2).len(), 2 * 5120);
    }

    #[test]
    fn fastest_keeps_the_minimum() {
        let mut times = [3u64, 1, 2].into_iter().map(Duration::from_millis);
        assert_eq!(fastest(3, || times.next().unwrap_or_default()), Duration::from_millis(1));
        assert_eq!(try_fastest::<()>(0, || Ok(Duration::from_secs(1))), Ok(Duration::ZERO));
        assert_eq!(try_fastest(2, || Err::<Duration, _>("no")), Err("no"));
    }
}

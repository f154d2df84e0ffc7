//! The SGX driver (the shape of Linux's /dev/sgx_enclave): create, add pages, init, teardown
//! (DESIGN §6). Enclaves are loaded from SGXS + SIGSTRUCT and their ELRANGE is mapped onto their
//! EPC pages in the kernel's page tables. EPC pages come from the reclaiming allocator, which evicts
//! enclave pages when the vEPC is full (see [`crate::reclaim`]), so an enclave larger than the free
//! EPC loads: its own pages are evicted after their EEXTENDs.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use vsgx_isa::cpu::{Cpu, Exception, LeafStatus};
use vsgx_isa::leaf::Encls;
use vsgx_isa::sgxs::LoadPlan;
use vsgx_isa::status::SgxError;
use vsgx_isa::{
    ArchStruct, AttributesFlags, Einittoken, PageType, Pageinfo, Secinfo, SecinfoFlags, Secs, Sigstruct, Tcs, msr,
};

use crate::GuestError;
use crate::kernel::{Kernel, fault};
use crate::reclaim::{Paging, Reclaimer, SecsState, VA_SLOTS};

/// A driver-assigned enclave id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EnclaveId(pub u32);

/// Lifecycle of an enclave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnclaveState {
    /// Initialized and usable.
    Ready,
    /// Its EPC is gone (power transition or migration): only teardown remains.
    Lost,
}

/// An enclave the driver built.
#[derive(Clone, Debug)]
pub struct Enclave {
    /// SECS EPC page (linear = physical) while the SECS is resident (the last one otherwise; see
    /// [`Enclave::secs_resident`]).
    pub secs: u64,
    /// BASEADDR.
    pub base: u64,
    /// SIZE.
    pub size: u64,
    /// EPC page backing each **resident** page offset (evicted pages are in guest RAM).
    pub pages: BTreeMap<u64, u64>,
    /// Offsets of the TCS pages.
    pub tcs: Vec<u64>,
    /// MRENCLAVE.
    pub mrenclave: [u8; 32],
    /// MRSIGNER.
    pub mrsigner: [u8; 32],
    /// State.
    pub state: EnclaveState,
    /// Reclaim state: evicted pages, VA pages, pinned entry pages, counters.
    pub(crate) paging: Paging,
}

impl Enclave {
    /// Whether the SECS is in EPC (it is evicted only after all its children).
    pub fn secs_resident(&self) -> bool {
        self.paging.secs == SecsState::Resident
    }

    /// Page offsets currently evicted to guest RAM (children; the SECS is not included).
    pub fn evicted_offsets(&self) -> impl Iterator<Item = u64> + '_ {
        self.paging.evicted.keys().copied()
    }

    /// Every page offset the enclave has (resident or evicted).
    pub fn page_offsets(&self) -> impl Iterator<Item = u64> + '_ {
        self.paging.mapped.iter().copied()
    }
}

/// Enclave linear addresses handed out by the driver start here (above any RAM or EPC GPA).
const ELRANGE_START: u64 = 0x1000_0000_0000;

/// The driver: a kernel and its enclaves.
#[derive(Debug)]
pub struct Driver<C: Cpu> {
    pub(crate) kernel: Kernel<C>,
    pub(crate) enclaves: BTreeMap<EnclaveId, Enclave>,
    next_id: u32,
    next_base: u64,
    pub(crate) reclaim: Reclaimer,
}

impl<C: Cpu> Driver<C> {
    /// A driver over a booted kernel.
    pub fn new(kernel: Kernel<C>) -> Self {
        Self { kernel, enclaves: BTreeMap::new(), next_id: 1, next_base: ELRANGE_START, reclaim: Reclaimer::default() }
    }

    /// The kernel.
    pub fn kernel(&mut self) -> &mut Kernel<C> {
        &mut self.kernel
    }

    /// An enclave.
    pub fn enclave(&self, id: EnclaveId) -> Option<&Enclave> {
        self.enclaves.get(&id)
    }

    /// Every enclave.
    pub fn enclaves(&self) -> impl Iterator<Item = (EnclaveId, &Enclave)> {
        self.enclaves.iter().map(|(id, e)| (*id, e))
    }

    /// Marks an enclave lost (its EPC is gone): its EPC pages (EREMOVE answers success on lost
    /// pages), VA pages and backing store are given back at once; only teardown remains.
    pub fn mark_lost(&mut self, id: EnclaveId) {
        self.lose(id);
    }

    pub(crate) fn encls(&mut self, leaf: Encls, rbx: u64, rcx: u64, rdx: u64) -> Result<LeafStatus, Exception> {
        Ok(self.kernel.cpu().encls_leaf(leaf, rbx, rcx, rdx)?.status())
    }

    /// A naturally aligned BASEADDR for an enclave of `size` bytes (64-bit enclaves).
    fn place(&mut self, size: u64) -> u64 {
        let base = self.next_base.checked_next_multiple_of(size.max(4096)).unwrap_or(self.next_base);
        self.next_base = base.saturating_add(size);
        base
    }

    /// Builds and initializes an enclave from an SGXS stream and its SIGSTRUCT. Pages are
    /// allocated one at a time, evicting (other enclaves' pages, or this enclave's already
    /// measured pages) when the EPC is full; [`GuestError::EpcShort`] only when even that cannot
    /// make room (the SECS, the VA pages and the pages an entry needs must fit at once).
    pub fn load(&mut self, sgxs: &[u8], sig: &Sigstruct) -> Result<EnclaveId, GuestError> {
        let plan = LoadPlan::from_sgxs(sgxs).map_err(GuestError::Image)?;
        let mrenclave = vsgx_isa::sgxs::measure(sgxs).map_err(GuestError::Image)?.mrenclave;
        let pinned = entry_pages(&plan);
        let va_pages = (plan.pages.len() as u64 + 1).div_ceil(VA_SLOTS);
        // SECS + VA pages + the entry set + two pages a single access may span.
        let needed = 1 + va_pages + pinned.len() as u64 + 2;
        let held: u64 = self.enclaves.values().map(|e| e.paging.va_pages.len() as u64).sum();
        let available = self.kernel.total_epc_pages().saturating_sub(held);
        if needed > available {
            return Err(GuestError::EpcShort { needed, free: available });
        }
        let base = self.place(plan.size);
        let mut secs = Secs::zeroed();
        secs.size = plan.size;
        secs.baseaddr = base;
        secs.ssaframesize = plan.ssaframesize;
        secs.miscselect = sig.miscselect;
        secs.attributes = sig.attributes;
        secs.attributes.flags &= !AttributesFlags::INIT.bits();
        let id = EnclaveId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let paging = Paging { pinned, ..Paging::default() };
        let mrsigner = vsgx_isa::measure::mrsigner(&sig.modulus);
        let enclave = Enclave {
            secs: 0,
            base,
            size: plan.size,
            pages: BTreeMap::new(),
            tcs: Vec::new(),
            mrenclave,
            mrsigner,
            state: EnclaveState::Ready,
            paging,
        };
        self.enclaves.insert(id, enclave);
        self.reclaim.building = Some(id);
        let result = self.build(id, &plan, &secs).and_then(|secs_epc| self.init(secs_epc, sig));
        self.reclaim.building = None;
        if let Err(e) = result {
            let _ = self.destroy(id);
            return Err(e);
        }
        Ok(id)
    }

    /// The enclave `id`, which must exist and not be lost (it may be lost by a reclaim pass that
    /// found the EPC gone).
    pub(crate) fn live(&mut self, id: EnclaveId) -> Result<&mut Enclave, GuestError> {
        match self.enclaves.get_mut(&id) {
            Some(e) if e.state == EnclaveState::Ready => Ok(e),
            Some(_) => Err(GuestError::EnclaveLost(id.0)),
            None => Err(GuestError::NoSuchEnclave(id.0)),
        }
    }

    /// ECREATE + EADD + EEXTEND; every EPC page is recorded in the enclave before the leaf that
    /// uses it, so [`Driver::destroy`] gives everything back on failure. Returns the SECS page.
    fn build(&mut self, id: EnclaveId, plan: &LoadPlan, secs: &Secs) -> Result<u64, GuestError> {
        let scratch = self.kernel.alloc_ram_page()?;
        let operands = match self.kernel.alloc_ram_page() {
            Ok(p) => p,
            Err(e) => {
                self.kernel.free_ram_page(scratch);
                return Err(e);
            }
        };
        let result = self.build_pages(id, plan, secs, scratch, operands);
        self.kernel.free_ram_page(scratch);
        self.kernel.free_ram_page(operands);
        result
    }

    fn build_pages(
        &mut self,
        id: EnclaveId,
        plan: &LoadPlan,
        secs: &Secs,
        scratch: u64,
        operands: u64,
    ) -> Result<u64, GuestError> {
        self.add_va_page(id)?;
        let secs_epc = self.alloc_epc()?;
        {
            let e = self.live(id)?;
            e.secs = secs_epc;
            e.paging.secs = SecsState::Resident;
        }
        let cpu = self.kernel.cpu();
        cpu.write(scratch, secs.bytes()).map_err(fault)?;
        cpu.write(operands + 64, Secinfo::new(PageType::Secs, SecinfoFlags::empty()).bytes()).map_err(fault)?;
        let pi = Pageinfo { linaddr: 0, srcpge: scratch, secinfo_or_pcmd: operands + 64, secs: 0 };
        cpu.write(operands, pi.bytes()).map_err(fault)?;
        self.encls(Encls::Ecreate, operands, secs_epc, 0).map_err(|e| GuestError::Leaf("ECREATE", e))?;
        for (i, page) in plan.pages.iter().enumerate() {
            // One VA slot for every page and the SECS, allocated as the enclave grows (Linux's
            // sgx_encl_grow), so eviction never has to find EPC for a VA page.
            while self.live(id)?.paging.va_slots() < i as u64 + 2 {
                self.add_va_page(id)?;
            }
            let epc = self.alloc_epc()?;
            let la = secs.baseaddr + page.offset;
            match self.live(id) {
                Ok(e) => {
                    e.pages.insert(page.offset, epc);
                    e.paging.mapped.insert(page.offset);
                }
                Err(err) => {
                    self.kernel.free_epc_page(epc);
                    return Err(err);
                }
            }
            let cpu = self.kernel.cpu();
            cpu.write(scratch, &page.content[..]).map_err(fault)?;
            cpu.write(operands + 64, page.secinfo().bytes()).map_err(fault)?;
            let pi = Pageinfo { linaddr: la, srcpge: scratch, secinfo_or_pcmd: operands + 64, secs: secs_epc };
            cpu.write(operands, pi.bytes()).map_err(fault)?;
            self.encls(Encls::Eadd, operands, epc, 0).map_err(|e| GuestError::Leaf("EADD", e))?;
            for chunk in page.measured_chunks() {
                self.encls(Encls::Eextend, secs_epc, epc + chunk.offset() as u64, 0)
                    .map_err(|e| GuestError::Leaf("EEXTEND", e))?;
            }
            self.kernel.map_page(la, Some(epc))?;
            if page.page_type() == Some(PageType::Tcs) {
                self.live(id)?.tcs.push(page.offset);
            }
            // Measured: from now on the page may be evicted like any other.
            self.reclaim.fifo.push_back((id, page.offset));
        }
        Ok(secs_epc)
    }

    /// EPA on a fresh EPC page for enclave `id` (recorded before EPA so teardown returns it).
    pub(crate) fn add_va_page(&mut self, id: EnclaveId) -> Result<(), GuestError> {
        let va = self.alloc_epc()?;
        match self.live(id) {
            Ok(e) => e.paging.va_pages.push(va),
            Err(err) => {
                self.kernel.free_epc_page(va);
                return Err(err);
            }
        }
        self.encls(Encls::Epa, PageType::Va as u64, va, 0).map_err(|e| GuestError::Leaf("EPA", e))?;
        self.live(id)?.paging.add_slots(va);
        Ok(())
    }

    /// EINIT as Linux does it under flexible launch control: the hash MSRs are set to the signer's
    /// MRSIGNER right before EINIT (when writable) with an all-zero token; SGX_UNMASKED_EVENT is
    /// retried.
    fn init(&mut self, secs_epc: u64, sig: &Sigstruct) -> Result<(), GuestError> {
        let sig_page = self.kernel.alloc_ram_page()?;
        let token_page = self.kernel.alloc_ram_page()?;
        let result = self.init_with(secs_epc, sig, sig_page, token_page);
        self.kernel.free_ram_page(sig_page);
        self.kernel.free_ram_page(token_page);
        result
    }

    fn init_with(&mut self, secs_epc: u64, sig: &Sigstruct, sig_page: u64, token_page: u64) -> Result<(), GuestError> {
        let cpu = self.kernel.cpu();
        cpu.write(sig_page, sig.bytes()).map_err(fault)?;
        cpu.write(token_page, Einittoken::zeroed().bytes()).map_err(fault)?;
        if self.kernel.sgx().lc_writable {
            let hash = msr::lehash_to_msrs(&vsgx_isa::measure::mrsigner(&sig.modulus));
            for (i, value) in hash.into_iter().enumerate() {
                self.kernel.cpu().wrmsr(msr::IA32_SGXLEPUBKEYHASH[i], value).map_err(fault)?;
            }
        }
        let mut status = LeafStatus::Success;
        for _ in 0..50 {
            status =
                self.encls(Encls::Einit, sig_page, secs_epc, token_page).map_err(|e| GuestError::Leaf("EINIT", e))?;
            if status != LeafStatus::Error(SgxError::UnmaskedEvent) {
                break;
            }
        }
        match status {
            LeafStatus::Success => Ok(()),
            LeafStatus::Error(e) | LeafStatus::Info(e) => Err(GuestError::Einit(e)),
            LeafStatus::Unknown(code) => {
                Err(GuestError::Einit(SgxError::from_code(code).unwrap_or(SgxError::InvalidSigStruct)))
            }
        }
    }

    /// EREMOVEs pages (two passes: SECS pages answering SGX_CHILD_PRESENT go in the second) and
    /// returns them to the allocator. Pages of a lost enclave answer success (SGX.md §10.2).
    pub(crate) fn release(&mut self, pages: &[u64]) {
        let mut retry = Vec::new();
        for &p in pages {
            match self.encls(Encls::Eremove, 0, p, 0) {
                Ok(LeafStatus::Error(SgxError::ChildPresent)) => retry.push(p),
                _ => self.kernel.free_epc_page(p),
            }
        }
        for p in retry {
            let _ = self.encls(Encls::Eremove, 0, p, 0);
            self.kernel.free_epc_page(p);
        }
    }

    /// Tears an enclave down: EREMOVEs its resident pages, its SECS (if resident) and its VA
    /// pages, frees the backing store of its evicted pages, and unmaps its ELRANGE.
    pub fn destroy(&mut self, id: EnclaveId) -> Result<(), GuestError> {
        let e = self.enclaves.remove(&id).ok_or(GuestError::NoSuchEnclave(id.0))?;
        self.reclaim.fifo.retain(|&(owner, _)| owner != id);
        let mut pages: Vec<u64> = e.pages.values().copied().collect();
        if e.paging.secs == SecsState::Resident {
            pages.push(e.secs);
        }
        pages.extend(e.paging.va_pages.iter().copied());
        self.release(&pages);
        for b in e.paging.backings() {
            self.free_backing(b);
        }
        for offset in &e.paging.mapped {
            self.kernel.map_page(e.base + offset, None)?;
        }
        Ok(())
    }
}

/// The pages an entry needs resident (pinned while the enclave runs): every TCS, its SSA frames,
/// the page at its OENTRY, and every executable page (the executor fetches the header and the
/// code at each EENTER). Only offsets the image actually adds are kept; nothing here trusts the
/// image's TCS fields beyond that.
fn entry_pages(plan: &LoadPlan) -> BTreeSet<u64> {
    let present: BTreeSet<u64> = plan.pages.iter().map(|p| p.offset).collect();
    let mut pinned = BTreeSet::new();
    for page in &plan.pages {
        let flags = page.secinfo_flags;
        if flags & SecinfoFlags::X.bits() != 0 {
            pinned.insert(page.offset);
        }
        if page.page_type() != Some(PageType::Tcs) {
            continue;
        }
        pinned.insert(page.offset);
        let Ok(tcs) = Tcs::from_bytes(&page.content[..]) else { continue };
        pinned.insert(tcs.oentry & !0xFFF);
        let ssa_pages = u64::from(tcs.nssa).saturating_mul(u64::from(plan.ssaframesize.max(1)));
        let ssa_pages = ssa_pages.min(plan.pages.len() as u64);
        for k in 0..ssa_pages {
            if let Some(off) = k.checked_mul(4096).and_then(|d| tcs.ossa.checked_add(d)) {
                pinned.insert(off);
            }
        }
    }
    pinned.retain(|o| present.contains(o));
    pinned
}

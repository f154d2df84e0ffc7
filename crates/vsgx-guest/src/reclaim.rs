//! In-guest EPC reclaim, the way Linux's ksgxd does it (DESIGN §6; SGX.md §6.7–6.11 and §7).
//!
//! **Victims.** Every resident child page (REG or TCS) enters one driver-wide FIFO queue when it
//! becomes resident: after its EADD + EEXTENDs, or after an ELDU. When an EPC page is needed and
//! none is free, a pass takes up to [`BATCH`] victims from the front of the queue (FIFO: the model
//! exposes no accessed bits to age pages by), skipping — and requeueing — the pages the enclave
//! being entered needs (its pinned pages: TCS, SSA frames, the OENTRY page and the code). A SECS
//! is never a victim by itself: it is written back right after its last child (SECS last), never
//! while its enclave is being built or run, and is reloaded before any child (ELDU of a child
//! needs its parent resident).
//!
//! **Eviction** of a batch, per enclave: EBLOCK each page (SGX_BLKSTATE = already blocked, fine),
//! one ETRACK, then EWB each page into guest RAM: a blob page, a 128-byte PCMD (32 per RAM page)
//! and a VA slot. ETRACK answering SGX_PREV_TRK_INCMPL means a thread that was inside at the
//! previous ETRACK has not left yet; the driver goes on to EWB (the pages may be tracked
//! already), and an EWB answering SGX_NOT_TRACKED is retried after another ETRACK (Linux IPIs the
//! other CPUs at that point; this driver runs enclaves on its own processor only, so no thread is
//! ever inside while it reclaims). A page whose write-back is still refused stays blocked and
//! queued; the next pass, or a fault on it, finishes the eviction before reloading it. The PTE is
//! left alone: the enclave's next access fails the EPCM check and raises #PF with PFEC.SGX.
//!
//! **VA pages** live in EPC and are never evicted. Each enclave gets one VA page per 512 of its
//! pages (SECS included) as it grows, like Linux's `sgx_encl_grow`, so an eviction always finds a
//! free slot without allocating EPC. ELDU frees the slot (the hardware zeroes it); teardown
//! EREMOVEs the VA pages with the enclave.
//!
//! **Faults.** An SGX #PF on a page this driver evicted is fixed by ELDU (SECS first) and the
//! enclave is resumed; on a page it did not evict it means the EPC is gone. A reload failing
//! (SGX_MAC_COMPARE_FAIL, an EPCM fault on the VA page or the SECS) also means the EPC is gone: the
//! enclave is marked lost and its EPC and backing store are given back at once.

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec::Vec;

use vsgx_isa::cpu::{Cpu, Exception, LeafStatus};
use vsgx_isa::leaf::Encls;
use vsgx_isa::status::SgxError;
use vsgx_isa::{ArchStruct, Pageinfo, VA_SLOT_SIZE, VA_SLOTS_PER_PAGE};

use crate::GuestError;
use crate::driver::{Driver, EnclaveId, EnclaveState};

/// Pages a reclaim pass tries to evict (Linux's SGX_NR_TO_SCAN).
pub const BATCH: usize = 16;
/// EWB attempts on a page answering SGX_NOT_TRACKED, each after a fresh ETRACK.
const EWB_ATTEMPTS: usize = 3;
/// VA slots per VA page.
pub(crate) const VA_SLOTS: u64 = VA_SLOTS_PER_PAGE as u64;
/// PCMDs per 4 KiB RAM page.
const PCMDS_PER_PAGE: u64 = 4096 / 128;

/// Where an evicted page lives: its encrypted contents and PCMD in guest RAM, its version in a
/// VA slot in EPC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Backing {
    /// The 4 KiB guest RAM page EWB wrote the ciphertext to.
    pub(crate) blob: u64,
    /// The 128-byte PCMD in guest RAM.
    pub(crate) pcmd: u64,
    /// The VA slot (EPC linear address) holding the page's version.
    pub(crate) slot: u64,
}

/// Where an enclave's SECS is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum SecsState {
    /// Not created yet, or given back (lost enclave).
    #[default]
    Absent,
    /// In EPC at `Enclave::secs`.
    Resident,
    /// Written back (all its children were evicted first).
    Evicted(Backing),
}

/// An enclave's reclaim state.
#[derive(Clone, Debug, Default)]
pub(crate) struct Paging {
    /// Evicted child pages by offset.
    pub(crate) evicted: BTreeMap<u64, Backing>,
    /// Resident pages that are blocked but not yet written back.
    pub(crate) blocked: BTreeSet<u64>,
    /// The SECS.
    pub(crate) secs: SecsState,
    /// VA pages (EPC).
    pub(crate) va_pages: Vec<u64>,
    /// Free VA slots (EPC linear addresses).
    pub(crate) free_slots: Vec<u64>,
    /// Pages an entry needs: kept resident while the enclave runs.
    pub(crate) pinned: BTreeSet<u64>,
    /// Every offset mapped in the ELRANGE (for teardown).
    pub(crate) mapped: BTreeSet<u64>,
    /// EWBs of this enclave's pages (SECS included).
    pub(crate) evictions: u64,
    /// ELDUs of this enclave's pages (SECS included).
    pub(crate) reloads: u64,
}

impl Paging {
    /// VA slots the enclave owns.
    pub(crate) fn va_slots(&self) -> u64 {
        self.va_pages.len() as u64 * VA_SLOTS
    }

    /// Makes the 512 slots of a fresh VA page available (lowest first).
    pub(crate) fn add_slots(&mut self, va: u64) {
        self.free_slots.extend((0..VA_SLOTS).rev().map(|i| va + i * VA_SLOT_SIZE as u64));
    }

    /// The backing store of every evicted page (SECS included).
    pub(crate) fn backings(&self) -> impl Iterator<Item = Backing> + '_ {
        let secs = match self.secs {
            SecsState::Evicted(b) => Some(b),
            _ => None,
        };
        self.evicted.values().copied().chain(secs)
    }
}

/// Driver-wide reclaim state.
#[derive(Debug, Default)]
pub(crate) struct Reclaimer {
    /// Resident child pages in the order they became resident.
    pub(crate) fifo: VecDeque<(EnclaveId, u64)>,
    /// The enclave an ECALL is running (its SECS and entry pages stay resident).
    pub(crate) running: Option<EnclaveId>,
    /// The enclave being built (its SECS stays resident).
    pub(crate) building: Option<EnclaveId>,
    /// Free PCMD slots in guest RAM.
    pcmd_free: Vec<u64>,
    /// A RAM page for PAGEINFO operands.
    ops: Option<u64>,
    evictions: u64,
    reloads: u64,
    tracks: u64,
    prev_trk_incmpl: u64,
    not_tracked: u64,
}

/// The guest's EPC use, in pages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EpcStats {
    /// vEPC pages.
    pub total: u64,
    /// Free pages in the guest allocator.
    pub free: u64,
    /// Enclave pages (SECS included) in EPC.
    pub resident: u64,
    /// VA pages in EPC.
    pub va_pages: u64,
    /// Enclave pages (SECS included) currently in guest RAM.
    pub evicted: u64,
    /// EWBs since boot.
    pub evictions: u64,
    /// ELDUs since boot.
    pub reloads: u64,
    /// ETRACKs since boot.
    pub tracks: u64,
    /// ETRACKs answered SGX_PREV_TRK_INCMPL since boot.
    pub prev_trk_incmpl: u64,
    /// EWBs answered SGX_NOT_TRACKED since boot.
    pub not_tracked: u64,
    /// Per enclave.
    pub per_enclave: BTreeMap<EnclaveId, EnclaveEpc>,
}

impl EpcStats {
    /// `free + resident + va_pages`: equals `total` unless a page leaked.
    pub fn accounted(&self) -> u64 {
        self.free + self.resident + self.va_pages
    }
}

/// One enclave's EPC use, in pages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EnclaveEpc {
    /// Pages in EPC (SECS included, VA pages not).
    pub resident: u64,
    /// Pages in guest RAM (SECS included).
    pub evicted: u64,
    /// Resident pages blocked but not yet written back.
    pub blocked: u64,
    /// VA pages.
    pub va_pages: u64,
    /// Whether the SECS is resident.
    pub secs_resident: bool,
    /// EWBs of its pages.
    pub evictions: u64,
    /// ELDUs of its pages.
    pub reloads: u64,
}

impl<C: Cpu> Driver<C> {
    /// The guest's EPC use: free pages, resident/evicted/VA pages overall and per enclave, and
    /// the eviction and reload counters.
    pub fn epc_stats(&self) -> EpcStats {
        let mut s = EpcStats {
            total: self.kernel.total_epc_pages(),
            free: self.kernel.free_epc_pages(),
            evictions: self.reclaim.evictions,
            reloads: self.reclaim.reloads,
            tracks: self.reclaim.tracks,
            prev_trk_incmpl: self.reclaim.prev_trk_incmpl,
            not_tracked: self.reclaim.not_tracked,
            ..EpcStats::default()
        };
        for (&id, e) in &self.enclaves {
            let secs_resident = e.paging.secs == SecsState::Resident;
            let secs_evicted = matches!(e.paging.secs, SecsState::Evicted(_));
            let one = EnclaveEpc {
                resident: e.pages.len() as u64 + u64::from(secs_resident),
                evicted: e.paging.evicted.len() as u64 + u64::from(secs_evicted),
                blocked: e.paging.blocked.len() as u64,
                va_pages: e.paging.va_pages.len() as u64,
                secs_resident,
                evictions: e.paging.evictions,
                reloads: e.paging.reloads,
            };
            s.resident += one.resident;
            s.evicted += one.evicted;
            s.va_pages += one.va_pages;
            s.per_enclave.insert(id, one);
        }
        s
    }

    /// An EPC page: a free one, or one freed by evicting enclave pages.
    pub(crate) fn alloc_epc(&mut self) -> Result<u64, GuestError> {
        // Victims tried since the last pass that freed something; refused victims go to the back
        // of the queue, so once every queued page was tried without success, nothing will be.
        let mut fruitless = 0usize;
        loop {
            if let Ok(page) = self.kernel.alloc_epc_page() {
                return Ok(page);
            }
            let before = self.kernel.free_epc_pages();
            let tried = self.reclaim_pass()?;
            if self.kernel.free_epc_pages() > before {
                fruitless = 0;
                continue;
            }
            fruitless += tried;
            if tried == 0 || fruitless > self.reclaim.fifo.len() {
                return Err(GuestError::OutOfEpc);
            }
        }
    }

    /// One reclaim pass: up to [`BATCH`] victims from the FIFO, evicted per enclave (EBLOCK all,
    /// ETRACK once, EWB all), then the SECS of every enclave left without resident children.
    /// Returns how many victims it tried.
    fn reclaim_pass(&mut self) -> Result<usize, GuestError> {
        let victims = self.select_victims(BATCH);
        let found = victims.len();
        let mut groups: BTreeMap<EnclaveId, Vec<u64>> = BTreeMap::new();
        for (id, offset) in victims {
            groups.entry(id).or_default().push(offset);
        }
        for (id, offsets) in groups {
            self.evict_group(id, &offsets)?;
            self.evict_secs(id)?;
        }
        if found < BATCH {
            let idle: Vec<EnclaveId> = self
                .enclaves
                .iter()
                .filter(|(_, e)| e.pages.is_empty() && e.paging.secs == SecsState::Resident)
                .map(|(id, _)| *id)
                .collect();
            for id in idle {
                self.evict_secs(id)?;
            }
        }
        Ok(found)
    }

    /// Pops up to `n` evictable pages from the FIFO; stale entries are dropped, pinned pages of
    /// the running enclave go to the back.
    fn select_victims(&mut self, n: usize) -> Vec<(EnclaveId, u64)> {
        let mut out = Vec::new();
        let mut budget = self.reclaim.fifo.len();
        while out.len() < n && budget > 0 {
            budget -= 1;
            let Some((id, offset)) = self.reclaim.fifo.pop_front() else { break };
            let Some(e) = self.enclaves.get(&id) else { continue };
            if e.state != EnclaveState::Ready || !e.pages.contains_key(&offset) {
                continue;
            }
            if self.reclaim.running == Some(id) && e.paging.pinned.contains(&offset) {
                self.reclaim.fifo.push_back((id, offset));
                continue;
            }
            out.push((id, offset));
        }
        out
    }

    /// EBLOCK every page, ETRACK, EWB every page. An EPCM fault or SGX_PG_INVLD on the way means
    /// the enclave's EPC is gone: it is marked lost (which frees its EPC).
    fn evict_group(&mut self, id: EnclaveId, offsets: &[u64]) -> Result<(), GuestError> {
        let secs = match self.enclaves.get(&id) {
            Some(e) if e.state == EnclaveState::Ready && e.paging.secs == SecsState::Resident => e.secs,
            _ => return Ok(()),
        };
        let mut blocked = Vec::new();
        for &offset in offsets {
            let Some(epc) = self.enclaves.get(&id).and_then(|e| e.pages.get(&offset).copied()) else { continue };
            match self.encls(Encls::Eblock, 0, epc, 0) {
                Ok(LeafStatus::Success | LeafStatus::Info(SgxError::Blkstate)) => {
                    if let Some(e) = self.enclaves.get_mut(&id) {
                        e.paging.blocked.insert(offset);
                    }
                    blocked.push((offset, epc));
                }
                Ok(LeafStatus::Error(SgxError::PgInvld)) => {
                    self.lose(id);
                    return Ok(());
                }
                Err(f) if f.is_epcm_fault() => {
                    self.lose(id);
                    return Ok(());
                }
                // SGX_EPC_PAGE_CONFLICT or anything unexpected: try again in a later pass.
                _ => self.reclaim.fifo.push_back((id, offset)),
            }
        }
        if blocked.is_empty() || !self.track(id, secs) {
            return Ok(());
        }
        for (offset, epc) in blocked {
            if !self.write_back(id, offset, epc, secs)? {
                break;
            }
        }
        Ok(())
    }

    /// ETRACK on the SECS; false when the SECS is gone (the enclave is then marked lost).
    /// SGX_PREV_TRK_INCMPL is not an error here: EWB tells whether the pages are tracked.
    fn track(&mut self, id: EnclaveId, secs: u64) -> bool {
        self.reclaim.tracks += 1;
        match self.encls(Encls::Etrack, 0, secs, 0) {
            Err(f) if f.is_epcm_fault() => {
                self.lose(id);
                false
            }
            Ok(LeafStatus::Error(SgxError::PrevTrkIncmpl)) => {
                self.reclaim.prev_trk_incmpl += 1;
                true
            }
            _ => true,
        }
    }

    /// A blob page and a PCMD for an eviction into `slot`.
    fn new_backing(&mut self, slot: u64) -> Result<Backing, GuestError> {
        let blob = self.kernel.alloc_ram_page_for_overwrite()?;
        if self.reclaim.pcmd_free.is_empty() {
            let page = match self.kernel.alloc_ram_page() {
                Ok(p) => p,
                Err(e) => {
                    self.kernel.free_ram_page(blob);
                    return Err(e);
                }
            };
            self.reclaim.pcmd_free.extend((0..PCMDS_PER_PAGE).rev().map(|i| page + i * 128));
        }
        let pcmd = self.reclaim.pcmd_free.pop().ok_or(GuestError::OutOfRam)?;
        Ok(Backing { blob, pcmd, slot })
    }

    /// Gives a backing's RAM back (the VA slot belongs to the enclave).
    pub(crate) fn free_backing(&mut self, b: Backing) {
        self.kernel.free_ram_page(b.blob);
        self.reclaim.pcmd_free.push(b.pcmd);
    }

    /// Writes `pageinfo` to the operand page and runs an EWB/ELDU-shaped leaf. The outer error
    /// is the driver's own (RAM); the inner result is the leaf's.
    fn paging_leaf(
        &mut self,
        leaf: Encls,
        pageinfo: Pageinfo,
        epc: u64,
        slot: u64,
    ) -> Result<Result<LeafStatus, Exception>, GuestError> {
        let ops = match self.reclaim.ops {
            Some(p) => p,
            None => {
                let p = self.kernel.alloc_ram_page()?;
                self.reclaim.ops = Some(p);
                p
            }
        };
        self.kernel.cpu().write(ops, pageinfo.bytes()).map_err(GuestError::Fault)?;
        Ok(self.encls(leaf, ops, epc, slot))
    }

    /// EWB of a blocked child page. `Ok(false)`: the enclave turned out lost.
    fn write_back(&mut self, id: EnclaveId, offset: u64, epc: u64, secs: u64) -> Result<bool, GuestError> {
        let Some(slot) = self.enclaves.get_mut(&id).and_then(|e| e.paging.free_slots.pop()) else {
            // Not reachable (a slot per page is reserved as the enclave grows): leave the page
            // blocked and queued.
            self.reclaim.fifo.push_back((id, offset));
            return Ok(true);
        };
        let backing = match self.new_backing(slot) {
            Ok(b) => b,
            Err(e) => {
                if let Some(en) = self.enclaves.get_mut(&id) {
                    en.paging.free_slots.push(slot);
                }
                self.reclaim.fifo.push_back((id, offset));
                return Err(e);
            }
        };
        let info = Pageinfo { linaddr: 0, srcpge: backing.blob, secinfo_or_pcmd: backing.pcmd, secs: 0 };
        for attempt in 0..EWB_ATTEMPTS {
            let result = match self.paging_leaf(Encls::Ewb, info, epc, slot) {
                Ok(r) => r,
                Err(e) => {
                    self.undo_backing(id, backing);
                    self.reclaim.fifo.push_back((id, offset));
                    return Err(e);
                }
            };
            match result {
                Ok(LeafStatus::Success | LeafStatus::Info(SgxError::VaSlotOccupied)) => {
                    if let Some(e) = self.enclaves.get_mut(&id) {
                        e.pages.remove(&offset);
                        e.paging.blocked.remove(&offset);
                        e.paging.evicted.insert(offset, backing);
                        e.paging.evictions += 1;
                    }
                    self.reclaim.evictions += 1;
                    self.kernel.free_epc_page(epc);
                    return Ok(true);
                }
                Ok(LeafStatus::Error(SgxError::NotTracked)) => {
                    self.reclaim.not_tracked += 1;
                    // Linux IPIs every CPU that may be inside here. Enclaves of this driver only
                    // run on its own processor, which is not inside now: a new ETRACK completes.
                    if attempt + 1 < EWB_ATTEMPTS && !self.track(id, secs) {
                        self.free_backing(backing);
                        return Ok(false);
                    }
                }
                Err(f) if f.is_epcm_fault() => {
                    self.free_backing(backing);
                    self.lose(id);
                    return Ok(false);
                }
                _ => break,
            }
        }
        // Refused: the page stays blocked (and resident); a later pass or a fault finishes it.
        self.undo_backing(id, backing);
        self.reclaim.fifo.push_back((id, offset));
        Ok(true)
    }

    fn undo_backing(&mut self, id: EnclaveId, backing: Backing) {
        if let Some(e) = self.enclaves.get_mut(&id) {
            e.paging.free_slots.push(backing.slot);
        }
        self.free_backing(backing);
    }

    /// EWB of the SECS of an enclave with no resident child that is neither running nor being
    /// built (SECS last).
    fn evict_secs(&mut self, id: EnclaveId) -> Result<(), GuestError> {
        let busy = self.reclaim.running == Some(id) || self.reclaim.building == Some(id);
        let secs = match self.enclaves.get(&id) {
            Some(e)
                if !busy
                    && e.state == EnclaveState::Ready
                    && e.paging.secs == SecsState::Resident
                    && e.pages.is_empty() =>
            {
                e.secs
            }
            _ => return Ok(()),
        };
        let Some(slot) = self.enclaves.get_mut(&id).and_then(|e| e.paging.free_slots.pop()) else { return Ok(()) };
        let backing = match self.new_backing(slot) {
            Ok(b) => b,
            Err(e) => {
                if let Some(en) = self.enclaves.get_mut(&id) {
                    en.paging.free_slots.push(slot);
                }
                return Err(e);
            }
        };
        let info = Pageinfo { linaddr: 0, srcpge: backing.blob, secinfo_or_pcmd: backing.pcmd, secs: 0 };
        let result = match self.paging_leaf(Encls::Ewb, info, secs, slot) {
            Ok(r) => r,
            Err(e) => {
                self.undo_backing(id, backing);
                return Err(e);
            }
        };
        match result {
            Ok(LeafStatus::Success | LeafStatus::Info(SgxError::VaSlotOccupied)) => {
                if let Some(e) = self.enclaves.get_mut(&id) {
                    e.paging.secs = SecsState::Evicted(backing);
                    e.paging.evictions += 1;
                }
                self.reclaim.evictions += 1;
                self.kernel.free_epc_page(secs);
            }
            Err(f) if f.is_epcm_fault() => {
                self.free_backing(backing);
                self.lose(id);
            }
            // SGX_CHILD_PRESENT (not reachable: no child is resident) or anything unexpected.
            _ => self.undo_backing(id, backing),
        }
        Ok(())
    }

    /// Makes page `offset` of enclave `id` resident (SECS first): finishes a half-done eviction
    /// of a blocked page, then ELDU. A failed ELDU means the EPC is gone: the enclave is marked
    /// lost and [`GuestError::EnclaveLost`] returned.
    pub(crate) fn ensure_resident(&mut self, id: EnclaveId, offset: u64) -> Result<(), GuestError> {
        if matches!(self.live(id)?.paging.secs, SecsState::Evicted(_)) {
            self.reload_secs(id)?;
        }
        if self.live(id)?.paging.blocked.contains(&offset) {
            self.reclaim.fifo.retain(|&entry| entry != (id, offset));
            self.evict_group(id, &[offset])?;
            let e = self.live(id)?;
            if e.paging.blocked.contains(&offset) {
                return Err(GuestError::PageStuck(e.base + offset));
            }
        }
        if self.live(id)?.paging.evicted.contains_key(&offset) {
            self.reload(id, offset)?;
        }
        Ok(())
    }

    /// Makes the pages an entry needs resident (SECS, TCS, SSA frames, entry and code pages).
    /// The caller has set `reclaim.running`, so none of them is evicted again before the ECALL
    /// ends.
    pub(crate) fn prepare_entry(&mut self, id: EnclaveId) -> Result<(), GuestError> {
        let pinned: Vec<u64> = self.live(id)?.paging.pinned.iter().copied().collect();
        if matches!(self.live(id)?.paging.secs, SecsState::Evicted(_)) {
            self.reload_secs(id)?;
        }
        for offset in pinned {
            self.ensure_resident(id, offset)?;
        }
        Ok(())
    }

    /// Whether `linear` is a page of enclave `id` that the driver evicted (or is evicting).
    pub(crate) fn evicted_by_us(&self, id: EnclaveId, linear: u64) -> Option<u64> {
        let e = self.enclaves.get(&id)?;
        let offset = linear.checked_sub(e.base).filter(|&o| o < e.size)? & !0xFFF;
        (e.paging.evicted.contains_key(&offset) || e.paging.blocked.contains(&offset)).then_some(offset)
    }

    /// ELDU of a child page into a fresh EPC page; the PTE is pointed at it.
    fn reload(&mut self, id: EnclaveId, offset: u64) -> Result<(), GuestError> {
        let epc = self.alloc_epc()?;
        let found = match self.live(id) {
            Ok(e) if e.paging.secs == SecsState::Resident => e
                .paging
                .evicted
                .get(&offset)
                .map(|b| (e.base + offset, e.secs, *b))
                .ok_or(GuestError::EnclaveLost(id.0)),
            Ok(_) => Err(GuestError::EnclaveLost(id.0)),
            Err(err) => Err(err),
        };
        let (la, secs, backing) = match found {
            Ok(v) => v,
            Err(err) => {
                self.kernel.free_epc_page(epc);
                return Err(err);
            }
        };
        let info = Pageinfo { linaddr: la, srcpge: backing.blob, secinfo_or_pcmd: backing.pcmd, secs };
        self.load_page(id, Encls::Eldu, info, epc, backing.slot)?;
        if let Some(e) = self.enclaves.get_mut(&id) {
            e.paging.evicted.remove(&offset);
            e.pages.insert(offset, epc);
            e.paging.free_slots.push(backing.slot);
            e.paging.reloads += 1;
        }
        self.reclaim.reloads += 1;
        self.free_backing(backing);
        self.reclaim.fifo.push_back((id, offset));
        self.kernel.map_page(la, Some(epc))
    }

    /// ELDU of the SECS into a fresh EPC page.
    fn reload_secs(&mut self, id: EnclaveId) -> Result<(), GuestError> {
        let epc = self.alloc_epc()?;
        let backing = match self.live(id).map(|e| e.paging.secs) {
            Ok(SecsState::Evicted(b)) => b,
            Ok(_) => {
                self.kernel.free_epc_page(epc);
                return Ok(());
            }
            Err(err) => {
                self.kernel.free_epc_page(epc);
                return Err(err);
            }
        };
        let info = Pageinfo { linaddr: 0, srcpge: backing.blob, secinfo_or_pcmd: backing.pcmd, secs: 0 };
        self.load_page(id, Encls::Eldu, info, epc, backing.slot)?;
        if let Some(e) = self.enclaves.get_mut(&id) {
            e.secs = epc;
            e.paging.secs = SecsState::Resident;
            e.paging.free_slots.push(backing.slot);
            e.paging.reloads += 1;
        }
        self.reclaim.reloads += 1;
        self.free_backing(backing);
        Ok(())
    }

    /// Runs ELDU; on any failure gives `epc` back, and unless the failure was the driver's own
    /// RAM access, marks the enclave lost.
    fn load_page(&mut self, id: EnclaveId, leaf: Encls, info: Pageinfo, epc: u64, slot: u64) -> Result<(), GuestError> {
        match self.paging_leaf(leaf, info, epc, slot) {
            Ok(Ok(LeafStatus::Success)) => Ok(()),
            Ok(_) => {
                // SGX_MAC_COMPARE_FAIL, or an EPCM fault on the VA page or the SECS: the EPC was
                // lost since the eviction (SGX.md §10.2). The page is unrecoverable.
                self.kernel.free_epc_page(epc);
                self.lose(id);
                Err(GuestError::EnclaveLost(id.0))
            }
            Err(err) => {
                self.kernel.free_epc_page(epc);
                Err(err)
            }
        }
    }

    /// Marks an enclave lost and gives back everything it holds: its resident pages, SECS and VA
    /// pages (EREMOVE of a lost page answers success) and the backing store of its evicted pages.
    pub(crate) fn lose(&mut self, id: EnclaveId) {
        let Some(e) = self.enclaves.get_mut(&id) else { return };
        e.state = EnclaveState::Lost;
        let mut pages: Vec<u64> = core::mem::take(&mut e.pages).into_values().collect();
        if e.paging.secs == SecsState::Resident {
            pages.push(e.secs);
        }
        pages.append(&mut e.paging.va_pages);
        let backings: Vec<Backing> = e.paging.backings().collect();
        e.paging.evicted.clear();
        e.paging.blocked.clear();
        e.paging.free_slots.clear();
        e.paging.secs = SecsState::Absent;
        self.reclaim.fifo.retain(|&(owner, _)| owner != id);
        self.release(&pages);
        for b in backings {
            self.free_backing(b);
        }
    }
}

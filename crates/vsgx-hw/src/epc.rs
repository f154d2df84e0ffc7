//! Physical EPC and its EPCM (SGX.md §2).
//!
//! Storage is sparse at two levels: a section is split into groups of 512 pages whose slots are
//! allocated on first use, and a page's 4 KiB of content is allocated only when something is
//! written to it. A 64 GiB section therefore costs a few hundred KiB until it is used.
//!
//! Every page slot sits behind its own lock. A leaf *try*-locks the pages it works on; failing to
//! get one is an architectural conflict (#GP(0) or SGX_EPC_PAGE_CONFLICT, per leaf), exactly what
//! hardware answers when two logical processors touch the same EPC page at once. Leaves on
//! unrelated pages never contend.

use std::sync::OnceLock;

use parking_lot::{Mutex, MutexGuard};
use vsgx_isa::PageType;

/// Pages per lazily allocated group.
const GROUP_PAGES: usize = 512;

/// Index of an EPC page across all sections (dense, section by section).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PageId(pub u32);

/// One EPCM entry, packed into 32 bytes (the goal is ≤ 40).
///
/// `block_epoch`/`mod_epoch` use `u64::MAX` for "none" (SGX.md §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Epcm {
    flags: u16,
    secs: u32,
    enclave_page: u64,
    block_epoch: u64,
    mod_epoch: u64,
}

const VALID: u16 = 1 << 0;
const R: u16 = 1 << 1;
const W: u16 = 1 << 2;
const X: u16 = 1 << 3;
const PENDING: u16 = 1 << 4;
const MODIFIED: u16 = 1 << 5;
const PR: u16 = 1 << 6;
const BLOCKED: u16 = 1 << 7;
const PT_SHIFT: u16 = 8;
const PT_MASK: u16 = 0x7 << PT_SHIFT;
const NO_EPOCH: u64 = u64::MAX;

const _: () = assert!(std::mem::size_of::<Epcm>() == 32);

impl Default for Epcm {
    fn default() -> Self {
        Self::INVALID
    }
}

macro_rules! flag_accessors {
    ($($get:ident, $set:ident, $bit:ident;)*) => {$(
        #[doc = concat!("The ", stringify!($bit), " bit.")]
        pub const fn $get(&self) -> bool { self.flags & $bit != 0 }
        #[doc = concat!("Sets the ", stringify!($bit), " bit.")]
        pub fn $set(&mut self, on: bool) {
            if on { self.flags |= $bit } else { self.flags &= !$bit }
        }
    )*};
}

impl Epcm {
    /// An invalid (free) entry.
    pub const INVALID: Self = Self { flags: 0, secs: 0, enclave_page: 0, block_epoch: NO_EPOCH, mod_epoch: NO_EPOCH };

    /// A fresh valid entry of `page_type` with permissions from SECINFO-style R/W/X bits (bits 0..3).
    pub fn new(page_type: PageType, rwx: u64, secs: Option<PageId>, enclave_address: u64) -> Self {
        let mut e = Self {
            flags: VALID | ((page_type as u16) << PT_SHIFT),
            secs: secs.map_or(0, |p| p.0),
            enclave_page: enclave_address,
            block_epoch: NO_EPOCH,
            mod_epoch: NO_EPOCH,
        };
        e.set_rwx(rwx);
        e
    }

    flag_accessors! {
        valid, set_valid, VALID;
        r, set_r, R;
        w, set_w, W;
        x, set_x, X;
        pending, set_pending, PENDING;
        modified, set_modified, MODIFIED;
        pr, set_pr, PR;
        blocked, set_blocked, BLOCKED;
    }

    /// The page type (meaningful only when valid).
    pub const fn page_type(&self) -> PageType {
        match (self.flags & PT_MASK) >> PT_SHIFT {
            0 => PageType::Secs,
            1 => PageType::Tcs,
            2 => PageType::Reg,
            3 => PageType::Va,
            _ => PageType::Trim,
        }
    }

    /// Changes the page type.
    pub fn set_page_type(&mut self, pt: PageType) {
        self.flags = (self.flags & !PT_MASK) | ((pt as u16) << PT_SHIFT);
    }

    /// Valid and of type `pt`.
    pub fn is(&self, pt: PageType) -> bool {
        self.valid() && self.page_type() == pt
    }

    /// Whether the page is a child of a SECS (REG, TCS or TRIM).
    pub fn is_child(&self) -> bool {
        self.valid() && matches!(self.page_type(), PageType::Reg | PageType::Tcs | PageType::Trim)
    }

    /// R/W/X as SECINFO bits 0..3.
    pub const fn rwx(&self) -> u64 {
        (self.flags as u64 >> 1) & 0x7
    }

    /// Sets R/W/X from SECINFO bits 0..3.
    pub fn set_rwx(&mut self, rwx: u64) {
        self.flags = (self.flags & !(R | W | X)) | (((rwx & 7) as u16) << 1);
    }

    /// The SECINFO.FLAGS encoding of this entry: R, W, X, PENDING, MODIFIED, PR and PAGE_TYPE.
    pub const fn secinfo_flags(&self) -> u64 {
        let mut f = self.rwx();
        if self.flags & PENDING != 0 {
            f |= 1 << 3;
        }
        if self.flags & MODIFIED != 0 {
            f |= 1 << 4;
        }
        if self.flags & PR != 0 {
            f |= 1 << 5;
        }
        f | ((self.flags & PT_MASK) as u64)
    }

    /// Owning SECS of a child page.
    pub const fn secs(&self) -> PageId {
        PageId(self.secs)
    }

    /// ENCLAVEADDRESS.
    pub const fn enclave_address(&self) -> u64 {
        self.enclave_page
    }

    /// Sets ENCLAVEADDRESS.
    pub fn set_enclave_address(&mut self, address: u64) {
        self.enclave_page = address;
    }

    /// TRK_EPOCH when the page was blocked.
    pub const fn block_epoch(&self) -> Option<u64> {
        if self.block_epoch == NO_EPOCH { None } else { Some(self.block_epoch) }
    }

    /// Records (or clears) the blocking epoch.
    pub fn set_block_epoch(&mut self, epoch: Option<u64>) {
        self.block_epoch = epoch.unwrap_or(NO_EPOCH);
    }

    /// TRK_EPOCH of the last EMODPR/EMODT.
    pub const fn mod_epoch(&self) -> Option<u64> {
        if self.mod_epoch == NO_EPOCH { None } else { Some(self.mod_epoch) }
    }

    /// Records (or clears) the modification epoch.
    pub fn set_mod_epoch(&mut self, epoch: Option<u64>) {
        self.mod_epoch = epoch.unwrap_or(NO_EPOCH);
    }
}

/// One EPC page: its EPCM entry and its (lazily allocated) content.
#[derive(Debug, Default)]
pub struct PageSlot {
    /// The EPCM entry.
    pub epcm: Epcm,
    data: Option<Box<[u8; 4096]>>,
}

static ZERO_PAGE: [u8; 4096] = [0; 4096];

impl PageSlot {
    /// The page content (zeros if never written).
    pub fn data(&self) -> &[u8; 4096] {
        self.data.as_deref().unwrap_or(&ZERO_PAGE)
    }

    /// Mutable page content, allocating it on first use.
    pub fn data_mut(&mut self) -> &mut [u8; 4096] {
        self.data.get_or_insert_with(|| Box::new([0; 4096]))
    }

    /// Releases the content (the page reads as zeros afterwards). Used on EPC loss, so lost EPC
    /// costs no host memory. Pages freed by EREMOVE/EWB keep their buffer for reuse (every leaf
    /// that makes a page valid writes all of it), which bounds host memory by the most EPC ever in
    /// use at once rather than by section size.
    pub fn release(&mut self) {
        self.data = None;
    }

    /// Replaces the whole content.
    pub fn set_data(&mut self, content: &[u8; 4096]) {
        match &mut self.data {
            Some(d) => d.copy_from_slice(content),
            None => self.data = Some(Box::new(*content)),
        }
    }

    /// Zeroes the whole content (without allocating for a never-written page).
    pub fn zero(&mut self) {
        if let Some(d) = &mut self.data {
            d.fill(0);
        }
    }

    /// Whether content is allocated.
    pub fn has_data(&self) -> bool {
        self.data.is_some()
    }
}

struct Group {
    slots: Box<[Mutex<PageSlot>]>,
}

/// One physically contiguous EPC section.
pub struct Section {
    /// Host physical base address.
    pub base: u64,
    /// Size in bytes.
    pub size: u64,
    /// NUMA node.
    pub node: u32,
    first: u32,
    groups: Box<[OnceLock<Group>]>,
}

impl std::fmt::Debug for Section {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Section").field("base", &self.base).field("size", &self.size).field("node", &self.node).finish()
    }
}

impl Section {
    fn pages(&self) -> u32 {
        (self.size / 4096) as u32
    }
}

/// All EPC of a platform.
#[derive(Debug)]
pub struct Epc {
    sections: Vec<Section>,
    total: u32,
}

/// A locked EPC page.
pub type PageGuard<'a> = MutexGuard<'a, PageSlot>;

impl Epc {
    /// EPC with the given sections (`(base, size, node)`, 4 KiB aligned, non-overlapping).
    pub fn new(sections: &[(u64, u64, u32)]) -> Self {
        let mut first = 0u32;
        let sections = sections
            .iter()
            .map(|&(base, size, node)| {
                let pages = (size / 4096) as u32;
                let groups = (pages as usize).div_ceil(GROUP_PAGES);
                let s = Section { base, size, node, first, groups: (0..groups).map(|_| OnceLock::new()).collect() };
                first += pages;
                s
            })
            .collect();
        Self { sections, total: first }
    }

    /// The sections.
    pub fn sections(&self) -> &[Section] {
        &self.sections
    }

    /// Total number of EPC pages.
    pub fn total_pages(&self) -> u32 {
        self.total
    }

    /// The page containing host physical address `hpa`, if it is EPC.
    pub fn page_of(&self, hpa: u64) -> Option<PageId> {
        self.sections
            .iter()
            .find(|s| hpa >= s.base && hpa - s.base < s.size)
            .map(|s| PageId(s.first + ((hpa - s.base) / 4096) as u32))
    }

    /// Whether `hpa` lies in EPC.
    pub fn contains(&self, hpa: u64) -> bool {
        self.page_of(hpa).is_some()
    }

    /// Host physical address of a page.
    pub fn address_of(&self, page: PageId) -> u64 {
        self.section_of(page).map_or(0, |s| s.base + (page.0 - s.first) as u64 * 4096)
    }

    fn section_of(&self, page: PageId) -> Option<&Section> {
        self.sections.iter().find(|s| page.0 >= s.first && page.0 - s.first < s.pages())
    }

    fn slot(&self, page: PageId) -> Option<&Mutex<PageSlot>> {
        let s = self.section_of(page)?;
        let index = (page.0 - s.first) as usize;
        let group = s.groups.get(index / GROUP_PAGES)?.get_or_init(|| {
            let n = GROUP_PAGES.min(s.pages() as usize - (index / GROUP_PAGES) * GROUP_PAGES);
            Group { slots: (0..n).map(|_| Mutex::new(PageSlot::default())).collect() }
        });
        group.slots.get(index % GROUP_PAGES)
    }

    /// Whether the page's slot exists (a page whose slot group was never created is invalid and
    /// was never used; EREMOVE of it needs no storage).
    pub fn materialized(&self, page: PageId) -> bool {
        let Some(s) = self.section_of(page) else { return false };
        let index = (page.0 - s.first) as usize;
        s.groups.get(index / GROUP_PAGES).is_some_and(|g| g.get().is_some())
    }

    /// Try-locks a page: `None` if another leaf holds it (an architectural conflict) or the page
    /// does not exist.
    pub fn try_lock(&self, page: PageId) -> Option<PageGuard<'_>> {
        self.slot(page)?.try_lock()
    }

    /// Locks a page, waiting for a concurrent holder (for the platform's own bookkeeping, never
    /// for an architectural access).
    pub fn lock(&self, page: PageId) -> Option<PageGuard<'_>> {
        Some(self.slot(page)?.lock())
    }

    /// Visits every page whose group was ever allocated (unallocated groups are all invalid).
    pub fn for_each_allocated(&self, mut f: impl FnMut(PageId, &mut PageSlot)) {
        for s in &self.sections {
            for (g, group) in s.groups.iter().enumerate() {
                if let Some(group) = group.get() {
                    for (i, slot) in group.slots.iter().enumerate() {
                        f(PageId(s.first + (g * GROUP_PAGES + i) as u32), &mut slot.lock());
                    }
                }
            }
        }
    }

    /// Host bytes spent on EPCM slots and page content (for the sparse-storage promise).
    pub fn host_bytes(&self) -> usize {
        let mut bytes = 0;
        for s in &self.sections {
            bytes += s.groups.len() * std::mem::size_of::<OnceLock<Group>>();
            for group in s.groups.iter().filter_map(|g| g.get()) {
                bytes += group.slots.len() * std::mem::size_of::<Mutex<PageSlot>>();
                bytes += group.slots.iter().filter(|s| s.lock().has_data()).count() * 4096;
            }
        }
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epcm_packs_and_encodes() {
        let mut e = Epcm::new(PageType::Reg, 0b101, Some(PageId(7)), 0x7000_0000);
        assert!(e.valid() && e.r() && !e.w() && e.x());
        assert_eq!(e.secinfo_flags(), 0x205);
        e.set_pending(true);
        e.set_pr(true);
        assert_eq!(e.secinfo_flags(), 0x205 | 0x8 | 0x20);
        assert_eq!(e.secs(), PageId(7));
        assert_eq!(e.block_epoch(), None);
        e.set_block_epoch(Some(3));
        assert_eq!(e.block_epoch(), Some(3));
        e.set_page_type(PageType::Trim);
        assert_eq!(e.page_type(), PageType::Trim);
        assert!(e.is_child());
        assert!(!Epcm::INVALID.valid());
        assert!(std::mem::size_of::<Mutex<PageSlot>>() <= 48);
    }

    #[test]
    fn sparse_sections_map_addresses() {
        let epc = Epc::new(&[(0x40_0000_0000, 64 << 30, 0), (0x50_0000_0000, 1 << 20, 1)]);
        assert_eq!(epc.total_pages(), (16 << 20) + 256);
        assert!(epc.host_bytes() < 1 << 20, "a 64 GiB section costs almost nothing unused");
        let p = epc.page_of(0x50_0000_1234).unwrap();
        assert_eq!(epc.address_of(p), 0x50_0000_1000);
        assert_eq!(epc.page_of(0x50_0010_0000), None);
        let last = epc.page_of(0x40_0000_0000 + (64 << 30) - 1).unwrap();
        {
            let mut g = epc.try_lock(last).unwrap();
            g.data_mut()[0] = 1;
            assert!(epc.try_lock(last).is_none(), "held lock is a conflict");
        }
        assert_eq!(epc.lock(last).unwrap().data()[0], 1);
        assert!(epc.host_bytes() < 1 << 20);
    }
}

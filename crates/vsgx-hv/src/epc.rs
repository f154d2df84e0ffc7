//! The host EPC manager (DESIGN §5.1): the hypervisor owns every physical EPC page of the platform
//! and hands pages to owners — domains, or the hypervisor itself (VA pages later).
//!
//! # Allocation
//!
//! Each EPC section keeps a *bump index* (pages at or above it were never handed out) and a stack
//! of recycled page indices. Taking a page is O(1): pop the stack, else bump. Nothing is done up
//! front in proportion to a section's size: a 64 GiB section costs a few words until it is used,
//! and the per-page owner tags are allocated in 4 KiB chunks as the bump index advances. When every
//! page a section ever handed out is back on its stack, the section forgets them all (bump index 0,
//! stack and tags dropped), so host memory follows the EPC actually in use.
//!
//! Recycled pages are taken before never-used ones, so that the platform model's lazily
//! materialized EPCM slots are reused rather than new ones created.
//!
//! **Fallback order.** [`Placement::node`] names a preferred NUMA node: its sections are used
//! first, in section (CPUID enumeration) order; then every other section, again in section order.
//! Without a node, sections are used in section order. A node with no EPC is a preference that
//! cannot be met, not an error: the request falls back to all sections. Allocation is
//! all-or-nothing: when the sections in the fallback order do not have enough free pages together,
//! nothing is allocated and [`EpcError::Short`] says by how much, per node.
//!
//! # Release: the two-pass EREMOVE protocol
//!
//! [`EpcManager::release`] runs EREMOVE on every page through the platform's ENCLS implementation
//! ([`vsgx_hw::leaves::execute_encls`]) in the hypervisor's own context ([`HostAccess`]: linear =
//! host physical address, ring 0). First pass: every page in the order given. Second pass: the
//! pages that failed in the first pass, those that failed for any reason other than
//! SGX_CHILD_PRESENT first (a transient conflict gets one more chance, and a child must go before
//! its SECS), then the SECS pages that answered SGX_CHILD_PRESENT, whose children are gone by then.
//! Every page still not removed after the second pass is **quarantined**: it is never handed out
//! again, it is counted, and it is listed by [`EpcManager::quarantined_pages`] with the reason. This
//! includes a SECS still answering SGX_CHILD_PRESENT (its children live outside the pages released:
//! it stays valid and could not be given to anyone); callers that release part of a domain's EPC
//! therefore pass whole enclaves, or children before their SECS.
//!
//! [`EpcManager::sanitize`] runs the same passes but keeps ownership (guest reboot and S3,
//! DESIGN §5.5); pages it cannot remove are reported and stay with their owner.
//!
//! No manager lock is held while EREMOVE runs: the pages are marked busy (so a second release or
//! sanitize of the same page is refused) and the locks are dropped.
//!
//! # Accounting
//!
//! Every page is in exactly one of: free, resident (held by a domain), hypervisor, quarantined. The
//! invariant checked by [`EpcManager::check_conservation`] is
//!
//! ```text
//! free + Σ domain.resident + hypervisor + quarantined == total
//! ```
//!
//! A domain's `evicted` and `ballooned` counters count vEPC pages that are **not** backed by EPC
//! (evicted by the host, or given back by a balloon driver): they hold no EPC page and are not part
//! of the sum. They change through [`EpcManager::release_to`] (resident → evicted/ballooned: the
//! page is freed), [`EpcManager::alloc_from`] (evicted/ballooned → resident: a page is taken) and
//! [`EpcManager::move_pages`] (evicted ↔ ballooned).
//!
//! # Locking
//!
//! One mutex per section and one for the accounts. Lock order: sections by index, then the
//! accounts. Operations that change both (allocation, the end of a release) hold both, so
//! [`EpcManager::stats`] — which takes all of them — always sees a consistent snapshot.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use vsgx_hw::epc::Epc;
use vsgx_hw::leaves::{Access, OperandAccess, Target, execute_encls};
use vsgx_hw::platform::Platform;
use vsgx_isa::cpu::{Cpl, Exception, Gprs, LeafStatus, pfec};
use vsgx_isa::leaf::Encls;
use vsgx_isa::status::SgxError;

/// Size of an EPC page.
pub const PAGE_SIZE: u64 = 4096;

/// Owner tags per lazily allocated chunk (4 KiB of tags).
const TAG_CHUNK: usize = 512;

/// Page tags: who holds a page. Pages at or above a section's bump index have no stored tag and are
/// free. `TAG_BUSY` is set on an owned page while a release or sanitize works on it.
const TAG_FREE: u64 = 0;
const TAG_QUARANTINED: u64 = 1;
const TAG_HYPERVISOR: u64 = 2;
const TAG_DOMAIN_BASE: u64 = 3;
const TAG_BUSY: u64 = 1 << 63;

/// A domain (guest) identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomainId(pub u32);

impl fmt::Display for DomainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "domain {}", self.0)
    }
}

/// Who holds an EPC page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    /// A domain: the page backs part of its vEPC.
    Domain(DomainId),
    /// The hypervisor itself (VA pages for eviction).
    Hypervisor,
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Domain(d) => d.fmt(f),
            Self::Hypervisor => f.write_str("the hypervisor"),
        }
    }
}

impl Owner {
    const fn tag(self) -> u64 {
        match self {
            Self::Hypervisor => TAG_HYPERVISOR,
            Self::Domain(DomainId(d)) => TAG_DOMAIN_BASE + d as u64,
        }
    }

    fn from_tag(tag: u64) -> Option<Self> {
        match tag & !TAG_BUSY {
            TAG_FREE | TAG_QUARANTINED => None,
            TAG_HYPERVISOR => Some(Self::Hypervisor),
            t => u32::try_from(t - TAG_DOMAIN_BASE).ok().map(|d| Self::Domain(DomainId(d))),
        }
    }
}

/// Where an allocation should come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Placement {
    /// Preferred NUMA node; `None` = any (sections in order). See the
    /// [module documentation](self) for the fallback order.
    pub node: Option<u32>,
}

impl Placement {
    /// No preference: sections in enumeration order.
    pub const ANY: Self = Self { node: None };

    /// Prefer the sections of `node`, then fall back to the others in section order.
    pub const fn node(node: u32) -> Self {
        Self { node: Some(node) }
    }
}

/// Accounting categories of a domain's vEPC pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Category {
    /// Backed by an EPC page the domain holds.
    Resident,
    /// Evicted by the host (EWB); holds no EPC page.
    Evicted,
    /// Given back by the guest's balloon driver; holds no EPC page.
    Ballooned,
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Resident => "resident",
            Self::Evicted => "evicted",
            Self::Ballooned => "ballooned",
        })
    }
}

/// What the manager knows about one EPC page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageState {
    /// Free: can be allocated.
    Free,
    /// Quarantined: EREMOVE failed; never allocated again.
    Quarantined,
    /// Held by an owner.
    Owned(Owner),
    /// Held by an owner and being released or sanitized right now.
    Busy(Owner),
}

impl fmt::Display for PageState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Free => f.write_str("free"),
            Self::Quarantined => f.write_str("quarantined"),
            Self::Owned(o) => write!(f, "owned by {o}"),
            Self::Busy(o) => write!(f, "owned by {o} and being released or sanitized"),
        }
    }
}

impl PageState {
    fn from_tag(tag: u64) -> Self {
        match (tag & TAG_BUSY != 0, Owner::from_tag(tag)) {
            (_, None) if tag == TAG_QUARANTINED => Self::Quarantined,
            (_, None) => Self::Free,
            (false, Some(o)) => Self::Owned(o),
            (true, Some(o)) => Self::Busy(o),
        }
    }
}

/// Why EREMOVE did not remove a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RemoveFailure {
    /// EREMOVE returned an error code (ZF = 1), e.g. SGX_CHILD_PRESENT or SGX_ENCLAVE_ACT.
    Error(SgxError),
    /// EREMOVE faulted (#GP(0) for a page another processor holds, #PF, …).
    Fault(Exception),
    /// EREMOVE returned a status it never produces (kept so nothing panics on it).
    Unexpected(LeafStatus),
}

impl fmt::Display for RemoveFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Error(e) => write!(f, "EREMOVE answered {e}"),
            Self::Fault(e) => write!(f, "EREMOVE faulted with {e}"),
            Self::Unexpected(s) => write!(f, "EREMOVE returned an unexpected status {s:?}"),
        }
    }
}

/// A page EREMOVE could not remove in either pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FailedPage {
    /// Host physical address of the page.
    pub hpa: u64,
    /// The second pass's answer.
    pub failure: RemoveFailure,
}

/// A quarantined page, as [`EpcManager::quarantined_pages`] lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QuarantinedPage {
    /// Host physical address of the page.
    pub hpa: u64,
    /// Who held it when it was quarantined.
    pub owner: Owner,
    /// Why EREMOVE did not remove it.
    pub failure: RemoveFailure,
}

/// What [`EpcManager::release`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReleaseReport {
    /// Pages EREMOVE removed (in either pass); they are free now.
    pub removed: u64,
    /// Pages that answered SGX_CHILD_PRESENT in the first pass.
    pub child_present: u64,
    /// Pages removed in the second pass (included in `removed`).
    pub second_pass: u64,
    /// Pages removed in neither pass: quarantined, with the second pass's answer.
    pub quarantined: Vec<FailedPage>,
}

/// What [`EpcManager::sanitize`] did. Every page stays with its owner.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SanitizeReport {
    /// Pages that are invalid now (EREMOVE succeeded in either pass; removing an invalid page
    /// succeeds too).
    pub removed: u64,
    /// Pages that answered SGX_CHILD_PRESENT in the first pass.
    pub child_present: u64,
    /// Pages removed in the second pass (included in `removed`).
    pub second_pass: u64,
    /// Pages removed in neither pass; they stay valid and owned, and the caller decides.
    pub failed: Vec<FailedPage>,
}

/// A domain's EPC accounting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DomainEpc {
    /// EPC pages the domain holds.
    pub resident: u64,
    /// vEPC pages evicted by the host (no EPC page held).
    pub evicted: u64,
    /// vEPC pages ballooned out (no EPC page held).
    pub ballooned: u64,
}

impl DomainEpc {
    /// The counter of a category.
    pub const fn get(&self, category: Category) -> u64 {
        match category {
            Category::Resident => self.resident,
            Category::Evicted => self.evicted,
            Category::Ballooned => self.ballooned,
        }
    }

    fn get_mut(&mut self, category: Category) -> &mut u64 {
        match category {
            Category::Resident => &mut self.resident,
            Category::Evicted => &mut self.evicted,
            Category::Ballooned => &mut self.ballooned,
        }
    }

    fn is_empty(&self) -> bool {
        self.resident == 0 && self.evicted == 0 && self.ballooned == 0
    }
}

/// One section's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SectionStats {
    /// Host physical base address.
    pub base: u64,
    /// Size in bytes.
    pub size: u64,
    /// NUMA node.
    pub node: u32,
    /// Free pages.
    pub free: u64,
}

/// A consistent snapshot of the EPC accounting (all in pages).
///
/// `free + resident() + hypervisor + quarantined == total`; the domains' `evicted` and
/// `ballooned` pages hold no EPC and are outside that sum.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EpcStats {
    /// All EPC pages of the platform.
    pub total: u64,
    /// Free pages.
    pub free: u64,
    /// Pages the hypervisor holds.
    pub hypervisor: u64,
    /// Quarantined pages.
    pub quarantined: u64,
    /// Domains with any non-zero counter.
    pub per_domain: BTreeMap<DomainId, DomainEpc>,
    /// Sections, in enumeration order.
    pub per_section: Vec<SectionStats>,
}

impl EpcStats {
    /// Σ resident pages over all domains.
    pub fn resident(&self) -> u64 {
        self.per_domain.values().map(|d| d.resident).sum()
    }

    /// Σ over the categories that hold EPC pages (must equal `total`).
    pub fn accounted(&self) -> u64 {
        self.free + self.resident() + self.hypervisor + self.quarantined
    }
}

/// Which request could not be met.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShortageScope {
    /// [`Placement::ANY`].
    AnyNode,
    /// A preferred node (every section was tried).
    Node(u32),
    /// One named section ([`EpcManager::alloc_on_section`]).
    Section {
        /// Section index.
        index: usize,
        /// Its node.
        node: u32,
    },
}

/// Not enough free EPC for an allocation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Shortage {
    /// Pages requested.
    pub requested: u64,
    /// Free pages in the scope.
    pub free: u64,
    /// The request.
    pub scope: ShortageScope,
    /// Free pages per node, in fallback order (empty for a named section).
    pub free_by_node: Vec<(u32, u64)>,
}

impl Shortage {
    /// How many pages are missing.
    pub fn short_by(&self) -> u64 {
        self.requested.saturating_sub(self.free)
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "page" } else { "pages" }
}

impl fmt::Display for Shortage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = self.short_by();
        write!(f, "EPC short by {short} {}: {} requested ", plural(short), self.requested)?;
        match self.scope {
            ShortageScope::AnyNode => f.write_str("on any node")?,
            ShortageScope::Node(n) => write!(f, "on node {n}")?,
            ShortageScope::Section { index, node } => write!(f, "on section {index} (node {node})")?,
        }
        write!(f, ", {} free", self.free)?;
        if !self.free_by_node.is_empty() {
            f.write_str(" (")?;
            for (i, (node, free)) in self.free_by_node.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "node {node}: {free}")?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// What the EPC manager refuses. A refused call changes nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EpcError {
    /// Not enough free EPC; nothing was allocated.
    #[error("{0}")]
    Short(Shortage),
    /// [`EpcManager::alloc_on_section`] named a section that does not exist.
    #[error("no EPC section {index}: the platform has {count}")]
    NoSuchSection {
        /// The index named.
        index: usize,
        /// Sections the platform has.
        count: usize,
    },
    /// An address outside every EPC section.
    #[error("{hpa:#x} is not an EPC address")]
    NotEpc {
        /// The address.
        hpa: u64,
    },
    /// An EPC address that is not the start of a page.
    #[error("{hpa:#x} is not the address of an EPC page (not 4 KiB aligned)")]
    Unaligned {
        /// The address.
        hpa: u64,
    },
    /// A page the caller does not hold.
    #[error("EPC page {hpa:#x} is not owned by {owner}: it is {state}")]
    NotOwned {
        /// The page.
        hpa: u64,
        /// The caller.
        owner: Owner,
        /// What the page is.
        state: PageState,
    },
    /// The same page twice in one request.
    #[error("EPC page {hpa:#x} is named twice")]
    Duplicate {
        /// The page.
        hpa: u64,
    },
    /// A page another release or sanitize is working on.
    #[error("EPC page {hpa:#x} of {owner} is being released or sanitized by another caller")]
    Busy {
        /// The page.
        hpa: u64,
        /// Its owner.
        owner: Owner,
    },
    /// A counter too small for the request.
    #[error("{owner} has {have} {category} {}, {requested} requested", plural(*have))]
    NotEnough {
        /// The owner.
        owner: Owner,
        /// The counter.
        category: Category,
        /// Its value.
        have: u64,
        /// Pages requested.
        requested: u64,
    },
    /// [`EpcManager::move_pages`] naming resident pages, or [`EpcManager::alloc_from`] /
    /// [`EpcManager::release_to`] naming resident as the other side.
    #[error(
        "resident pages of {owner} hold EPC: they change only by allocating and releasing pages \
         (alloc_from/release_to move them from/to evicted or ballooned), not by moving counters"
    )]
    ResidentCounter {
        /// The owner.
        owner: Owner,
    },
    /// Evicted or ballooned counters asked of the hypervisor.
    #[error("the hypervisor has no {category} pages: only domains have evicted or ballooned pages")]
    HypervisorCategory {
        /// The category.
        category: Category,
    },
    /// [`EpcManager::retire`] named a page that is not free.
    #[error("EPC page {hpa:#x} cannot be taken out of service: it is {state}")]
    NotFree {
        /// The page.
        hpa: u64,
        /// What it is.
        state: PageState,
    },
    /// An accounting invariant does not hold (a bug; reported, never panicked on).
    #[error("EPC accounting broken: {0}")]
    Accounting(String),
}

/// The hypervisor's own operand context for ENCLS: linear address = host physical address, ring 0.
/// EPC addresses resolve to [`Target::Epc`]; anything else is a #PF (the manager issues EREMOVE,
/// whose only operand is an EPC page).
#[derive(Debug)]
pub struct HostAccess<'a> {
    epc: &'a Epc,
}

impl<'a> HostAccess<'a> {
    /// The context for `platform`.
    pub fn new(platform: &'a Platform) -> Self {
        Self { epc: platform.epc() }
    }
}

fn not_mapped(linear: u64, access: Access) -> Exception {
    let error_code = if access == Access::Write { pfec::W } else { 0 };
    Exception::PageFault { linear, error_code }
}

impl OperandAccess for HostAccess<'_> {
    fn translate(&mut self, linear: u64, access: Access) -> Result<Target, Exception> {
        if self.epc.contains(linear) { Ok(Target::Epc(linear)) } else { Err(not_mapped(linear, access)) }
    }

    fn read_memory(&mut self, addr: u64, _buf: &mut [u8]) -> Result<(), Exception> {
        Err(not_mapped(addr, Access::Read))
    }

    fn write_memory(&mut self, addr: u64, _data: &[u8]) -> Result<(), Exception> {
        Err(not_mapped(addr, Access::Write))
    }

    fn cpl(&self) -> Cpl {
        Cpl::Ring0
    }

    /// Intel's hash: the hypervisor runs no EINIT in its own context.
    fn lehash(&self) -> [u8; 32] {
        vsgx_isa::msr::INTEL_LE_PUBKEY_HASH
    }
}

/// One section's allocator state (behind the section's mutex).
#[derive(Default)]
struct SectionState {
    /// Pages `[next, pages)` were never handed out (since the last reset).
    next: u32,
    /// Free pages below `next`, taken last-in first-out.
    recycled: Vec<u32>,
    /// Owner tags of pages below `next`, in chunks of [`TAG_CHUNK`].
    tags: Vec<Box<[u64]>>,
}

impl SectionState {
    fn free(&self, pages: u32) -> u64 {
        u64::from(pages.saturating_sub(self.next)) + self.recycled.len() as u64
    }

    fn tag(&self, index: u32) -> u64 {
        let i = index as usize;
        self.tags.get(i / TAG_CHUNK).and_then(|c| c.get(i % TAG_CHUNK)).copied().unwrap_or(TAG_FREE)
    }

    fn set_tag(&mut self, index: u32, tag: u64) {
        let i = index as usize;
        if let Some(slot) = self.tags.get_mut(i / TAG_CHUNK).and_then(|c| c.get_mut(i % TAG_CHUNK)) {
            *slot = tag;
        }
    }

    /// Takes `n` pages (the caller checked `n <= free`), tags them and appends their addresses.
    fn take(&mut self, n: u64, pages: u32, base: u64, tag: u64, out: &mut Vec<u64>) {
        let from_stack = (n as usize).min(self.recycled.len());
        let keep = self.recycled.len() - from_stack;
        for k in (keep..self.recycled.len()).rev() {
            let index = self.recycled[k];
            self.set_tag(index, tag);
            out.push(base + u64::from(index) * PAGE_SIZE);
        }
        self.recycled.truncate(keep);
        for _ in from_stack as u64..n {
            if self.next >= pages {
                break;
            }
            let index = self.next;
            while self.tags.len() * TAG_CHUNK <= index as usize {
                self.tags.push(vec![TAG_FREE; TAG_CHUNK].into_boxed_slice());
            }
            self.set_tag(index, tag);
            self.next += 1;
            out.push(base + u64::from(index) * PAGE_SIZE);
        }
    }

    /// Takes free page `index` out of service (tagged quarantined, never handed out); `false`
    /// when it is not free.
    fn retire(&mut self, index: u32, pages: u32) -> bool {
        if index >= pages || self.tag(index) != TAG_FREE {
            return false;
        }
        if index >= self.next {
            // Pages below it that were never handed out become recycled free pages.
            while self.tags.len() * TAG_CHUNK <= index as usize {
                self.tags.push(vec![TAG_FREE; TAG_CHUNK].into_boxed_slice());
            }
            self.recycled.extend(self.next..index);
            self.next = index + 1;
        } else {
            let Some(at) = self.recycled.iter().position(|&i| i == index) else { return false };
            self.recycled.swap_remove(at);
        }
        self.set_tag(index, TAG_QUARANTINED);
        true
    }

    fn give_back(&mut self, index: u32) {
        self.set_tag(index, TAG_FREE);
        self.recycled.push(index);
    }

    /// Forgets every page once all of them are back: the section costs nothing again.
    fn compact(&mut self) {
        if self.recycled.len() == self.next as usize {
            *self = Self::default();
        }
    }
}

struct SectionAlloc {
    base: u64,
    pages: u32,
    node: u32,
    state: Mutex<SectionState>,
}

#[derive(Default)]
struct Accounts {
    domains: BTreeMap<DomainId, DomainEpc>,
    hypervisor: u64,
    quarantined: u64,
    log: Vec<QuarantinedPage>,
}

impl Accounts {
    fn count(&self, owner: Owner, category: Category) -> u64 {
        match owner {
            Owner::Hypervisor if category == Category::Resident => self.hypervisor,
            Owner::Hypervisor => 0,
            Owner::Domain(d) => self.domains.get(&d).map_or(0, |e| e.get(category)),
        }
    }

    fn add(&mut self, owner: Owner, category: Category, n: u64) {
        if n == 0 {
            return;
        }
        match owner {
            Owner::Hypervisor => self.hypervisor += n,
            Owner::Domain(d) => *self.domains.entry(d).or_default().get_mut(category) += n,
        }
    }

    fn sub(&mut self, owner: Owner, category: Category, n: u64) {
        match owner {
            Owner::Hypervisor => self.hypervisor = self.hypervisor.saturating_sub(n),
            Owner::Domain(d) => {
                if let Some(e) = self.domains.get_mut(&d) {
                    let c = e.get_mut(category);
                    *c = c.saturating_sub(n);
                    if e.is_empty() {
                        self.domains.remove(&d);
                    }
                }
            }
        }
    }
}

/// Section locks taken in index order.
struct Locked<'a> {
    guards: Vec<Option<MutexGuard<'a, SectionState>>>,
}

impl Locked<'_> {
    fn get(&mut self, section: usize) -> Option<&mut SectionState> {
        self.guards.get_mut(section).and_then(|g| g.as_deref_mut())
    }
}

/// The outcome of the two EREMOVE passes.
struct Passes {
    removed: u64,
    child_present: u64,
    second_pass: u64,
    failed: Vec<FailedPage>,
}

/// The host EPC manager: owns the platform's EPC for the hypervisor (see the
/// [module documentation](self)). Every method takes `&self`; share it between threads.
pub struct EpcManager {
    platform: Arc<Platform>,
    sections: Box<[SectionAlloc]>,
    total: u64,
    accounts: Mutex<Accounts>,
}

impl fmt::Debug for EpcManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sections: Vec<_> = self.sections.iter().map(|s| (s.base, s.pages, s.node)).collect();
        f.debug_struct("EpcManager").field("total", &self.total).field("sections", &sections).finish_non_exhaustive()
    }
}

impl EpcManager {
    /// Takes charge of `platform`'s EPC. Every page starts free; nothing is done per page.
    pub fn new(platform: Arc<Platform>) -> Self {
        let sections: Box<[SectionAlloc]> = platform
            .epc()
            .sections()
            .iter()
            .map(|s| SectionAlloc {
                base: s.base,
                pages: u32::try_from(s.size / PAGE_SIZE).unwrap_or(u32::MAX),
                node: s.node,
                state: Mutex::new(SectionState::default()),
            })
            .collect();
        let total = sections.iter().map(|s| u64::from(s.pages)).sum();
        Self { platform, sections, total, accounts: Mutex::new(Accounts::default()) }
    }

    /// The platform.
    pub fn platform(&self) -> &Arc<Platform> {
        &self.platform
    }

    /// All EPC pages.
    pub fn total_pages(&self) -> u64 {
        self.total
    }

    /// Free pages right now.
    pub fn free_pages(&self) -> u64 {
        self.sections.iter().map(|s| s.state.lock().free(s.pages)).sum()
    }

    /// Section indices in the order an allocation with `placement` uses them (see the
    /// [module documentation](self)).
    pub fn fallback_order(&self, placement: Placement) -> Vec<usize> {
        let all = 0..self.sections.len();
        match placement.node {
            None => all.collect(),
            Some(node) => {
                let (mut order, rest): (Vec<usize>, Vec<usize>) = all.partition(|&i| self.sections[i].node == node);
                order.extend(rest);
                order
            }
        }
    }

    /// Allocates `pages` EPC pages to `owner`, from the sections of `placement`'s node first and
    /// the others after (see the [module documentation](self)). All or nothing.
    pub fn alloc(&self, owner: Owner, pages: u64, placement: Placement) -> Result<Vec<u64>, EpcError> {
        let order = self.fallback_order(placement);
        let scope = placement.node.map_or(ShortageScope::AnyNode, ShortageScope::Node);
        self.alloc_in(owner, pages, &order, scope, None)
    }

    /// Allocates `pages` EPC pages to `owner` from section `section` only. All or nothing.
    pub fn alloc_on_section(&self, owner: Owner, section: usize, pages: u64) -> Result<Vec<u64>, EpcError> {
        let Some(s) = self.sections.get(section) else {
            return Err(EpcError::NoSuchSection { index: section, count: self.sections.len() });
        };
        let scope = ShortageScope::Section { index: section, node: s.node };
        self.alloc_in(owner, pages, &[section], scope, None)
    }

    /// Like [`Self::alloc`], for vEPC pages coming back into EPC: the domain's `from` counter
    /// (evicted or ballooned) goes down by `pages` as its resident count goes up. Refused when the
    /// counter is smaller than `pages`.
    pub fn alloc_from(
        &self,
        owner: Owner,
        from: Category,
        pages: u64,
        placement: Placement,
    ) -> Result<Vec<u64>, EpcError> {
        check_non_resident(owner, from)?;
        let order = self.fallback_order(placement);
        let scope = placement.node.map_or(ShortageScope::AnyNode, ShortageScope::Node);
        self.alloc_in(owner, pages, &order, scope, Some(from))
    }

    fn alloc_in(
        &self,
        owner: Owner,
        pages: u64,
        order: &[usize],
        scope: ShortageScope,
        from: Option<Category>,
    ) -> Result<Vec<u64>, EpcError> {
        let mut wanted = vec![false; self.sections.len()];
        for &i in order {
            if let Some(w) = wanted.get_mut(i) {
                *w = true;
            }
        }
        let mut locked = self.lock_sections(&wanted);
        let mut free = Vec::with_capacity(order.len());
        for &i in order {
            let (Some(s), Some(st)) = (self.sections.get(i), locked.get(i)) else { continue };
            free.push((i, st.free(s.pages)));
        }
        let available: u64 = free.iter().map(|&(_, f)| f).sum();
        if pages > available {
            let mut free_by_node: Vec<(u32, u64)> = Vec::new();
            if !matches!(scope, ShortageScope::Section { .. }) {
                for &(i, f) in &free {
                    let node = self.sections[i].node;
                    match free_by_node.iter_mut().find(|(n, _)| *n == node) {
                        Some((_, total)) => *total += f,
                        None => free_by_node.push((node, f)),
                    }
                }
            }
            return Err(EpcError::Short(Shortage { requested: pages, free: available, scope, free_by_node }));
        }
        let mut accounts = self.accounts.lock();
        if let Some(category) = from {
            let have = accounts.count(owner, category);
            if have < pages {
                return Err(EpcError::NotEnough { owner, category, have, requested: pages });
            }
        }
        // `pages <= available <= total`, which fits in memory as a page count.
        let mut out = Vec::with_capacity(usize::try_from(pages).unwrap_or(0));
        let tag = owner.tag();
        let mut remaining = pages;
        for &(i, f) in &free {
            if remaining == 0 {
                break;
            }
            let n = remaining.min(f);
            let s = &self.sections[i];
            if let Some(st) = locked.get(i) {
                st.take(n, s.pages, s.base, tag, &mut out);
            }
            remaining -= n;
        }
        if out.len() as u64 != pages {
            // Unreachable while the free counts are right; give back what was taken.
            let taken = out.len();
            for &hpa in &out {
                if let Some((s, i)) = self.find(hpa)
                    && let Some(st) = locked.get(s)
                {
                    st.give_back(i);
                }
            }
            return Err(EpcError::Accounting(format!(
                "{pages} pages requested by {owner} with {available} free, only {taken} found"
            )));
        }
        accounts.add(owner, Category::Resident, pages);
        if let Some(category) = from {
            accounts.sub(owner, category, pages);
        }
        Ok(out)
    }

    /// Releases `owner`'s pages with the two-pass EREMOVE protocol: removed pages become free,
    /// pages removed in neither pass are quarantined (see the [module documentation](self)).
    /// Refused — nothing changes — if any address is not an EPC page `owner` holds, if a page is
    /// named twice, or if another release or sanitize is working on one of them.
    pub fn release(&self, owner: Owner, pages: &[u64]) -> Result<ReleaseReport, EpcError> {
        self.release_in(owner, pages, None)
    }

    /// Like [`Self::release`], for resident vEPC pages leaving EPC without leaving the domain
    /// (evicted by the host after EWB, or ballooned out by the guest): each page removed is freed
    /// and counted under `to` (evicted or ballooned). Quarantined pages are not counted there.
    pub fn release_to(&self, owner: Owner, pages: &[u64], to: Category) -> Result<ReleaseReport, EpcError> {
        check_non_resident(owner, to)?;
        self.release_in(owner, pages, Some(to))
    }

    fn release_in(&self, owner: Owner, pages: &[u64], to: Option<Category>) -> Result<ReleaseReport, EpcError> {
        let wanted = self.claim(owner, pages)?;
        let passes = self.remove_passes(pages);
        let failed: HashSet<u64> = passes.failed.iter().map(|f| f.hpa).collect();
        {
            let mut locked = self.lock_sections(&wanted);
            let mut accounts = self.accounts.lock();
            for &hpa in pages {
                let Some((s, i)) = self.find(hpa) else { continue };
                let Some(st) = locked.get(s) else { continue };
                if !failed.is_empty() && failed.contains(&hpa) {
                    st.set_tag(i, TAG_QUARANTINED);
                } else {
                    st.give_back(i);
                }
            }
            for st in locked.guards.iter_mut().flatten() {
                st.compact();
            }
            accounts.sub(owner, Category::Resident, pages.len() as u64);
            accounts.quarantined += passes.failed.len() as u64;
            accounts.log.extend(passes.failed.iter().map(|f| QuarantinedPage {
                hpa: f.hpa,
                owner,
                failure: f.failure,
            }));
            if let Some(to) = to {
                accounts.add(owner, to, passes.removed);
            }
        }
        Ok(ReleaseReport {
            removed: passes.removed,
            child_present: passes.child_present,
            second_pass: passes.second_pass,
            quarantined: passes.failed,
        })
    }

    /// EREMOVEs `owner`'s pages with the same two passes as [`Self::release`] but keeps them with
    /// `owner` (guest reboot and S3, DESIGN §5.5). Pages removed in neither pass are reported and
    /// stay valid and owned. Refused like [`Self::release`].
    pub fn sanitize(&self, owner: Owner, pages: &[u64]) -> Result<SanitizeReport, EpcError> {
        let wanted = self.claim(owner, pages)?;
        let passes = self.remove_passes(pages);
        self.unclaim(&wanted, pages);
        Ok(SanitizeReport {
            removed: passes.removed,
            child_present: passes.child_present,
            second_pass: passes.second_pass,
            failed: passes.failed,
        })
    }

    /// Moves `n` pages of a domain between its `evicted` and `ballooned` counters. Resident pages
    /// hold EPC and change only with pages ([`Self::alloc_from`], [`Self::release_to`]); the
    /// hypervisor has neither counter. Refused if `from` holds fewer than `n`.
    pub fn move_pages(&self, owner: Owner, from: Category, to: Category, n: u64) -> Result<(), EpcError> {
        check_non_resident(owner, from)?;
        check_non_resident(owner, to)?;
        let mut accounts = self.accounts.lock();
        let have = accounts.count(owner, from);
        if have < n {
            return Err(EpcError::NotEnough { owner, category: from, have, requested: n });
        }
        if from != to {
            accounts.sub(owner, from, n);
            accounts.add(owner, to, n);
        }
        Ok(())
    }

    /// A consistent snapshot of the accounting.
    pub fn stats(&self) -> EpcStats {
        let mut locked = self.lock_sections(&vec![true; self.sections.len()]);
        let accounts = self.accounts.lock();
        let per_section: Vec<SectionStats> = self
            .sections
            .iter()
            .enumerate()
            .map(|(i, s)| SectionStats {
                base: s.base,
                size: u64::from(s.pages) * PAGE_SIZE,
                node: s.node,
                free: locked.get(i).map_or(0, |st| st.free(s.pages)),
            })
            .collect();
        EpcStats {
            total: self.total,
            free: per_section.iter().map(|s| s.free).sum(),
            hypervisor: accounts.hypervisor,
            quarantined: accounts.quarantined,
            per_domain: accounts.domains.clone(),
            per_section,
        }
    }

    /// Checks `free + Σ resident + hypervisor + quarantined == total` on a consistent snapshot
    /// (evicted and ballooned pages hold no EPC and are not in the sum). O(sections + domains).
    pub fn check_conservation(&self) -> Result<(), EpcError> {
        let s = self.stats();
        if s.accounted() != s.total {
            return Err(EpcError::Accounting(format!(
                "free {} + resident {} + hypervisor {} + quarantined {} = {}, total is {}",
                s.free,
                s.resident(),
                s.hypervisor,
                s.quarantined,
                s.accounted(),
                s.total
            )));
        }
        Ok(())
    }

    /// A full audit: walks every page tag ever written and checks that the counters match the
    /// tags, that recycled pages are free and distinct, and [`Self::check_conservation`]'s sum.
    /// O(pages in use); for tests and debugging.
    pub fn audit(&self) -> Result<(), EpcError> {
        let mut locked = self.lock_sections(&vec![true; self.sections.len()]);
        let accounts = self.accounts.lock();
        let mut owned: BTreeMap<Owner, u64> = BTreeMap::new();
        let (mut quarantined, mut free) = (0u64, 0u64);
        for (si, s) in self.sections.iter().enumerate() {
            let Some(st) = locked.get(si) else { continue };
            let mut seen = vec![false; st.next as usize];
            for &i in &st.recycled {
                match seen.get_mut(i as usize) {
                    Some(b) if !*b => *b = true,
                    Some(_) => return Err(audit_error(format!("section {si}: page {i} recycled twice"))),
                    None => return Err(audit_error(format!("section {si}: recycled page {i} ≥ bump {}", st.next))),
                }
                if st.tag(i) != TAG_FREE {
                    return Err(audit_error(format!("section {si}: recycled page {i} has tag {:#x}", st.tag(i))));
                }
            }
            for i in 0..st.next {
                let tag = st.tag(i);
                match PageState::from_tag(tag) {
                    PageState::Free if seen.get(i as usize) == Some(&true) => {}
                    PageState::Free => {
                        return Err(audit_error(format!("section {si}: page {i} is free but not recycled (leaked)")));
                    }
                    PageState::Quarantined => quarantined += 1,
                    PageState::Owned(o) | PageState::Busy(o) => *owned.entry(o).or_default() += 1,
                }
            }
            free += st.free(s.pages);
        }
        let hypervisor = owned.remove(&Owner::Hypervisor).unwrap_or(0);
        if hypervisor != accounts.hypervisor {
            return Err(audit_error(format!("hypervisor holds {hypervisor} pages, counted {}", accounts.hypervisor)));
        }
        if quarantined != accounts.quarantined || accounts.log.len() as u64 != quarantined {
            return Err(audit_error(format!(
                "{quarantined} pages tagged quarantined, counted {}, logged {}",
                accounts.quarantined,
                accounts.log.len()
            )));
        }
        for (d, e) in &accounts.domains {
            let tagged = owned.remove(&Owner::Domain(*d)).unwrap_or(0);
            if tagged != e.resident {
                return Err(audit_error(format!("{d} holds {tagged} pages, counted resident {}", e.resident)));
            }
            if e.is_empty() {
                return Err(audit_error(format!("{d} is listed with all counters zero")));
            }
        }
        if let Some((o, n)) = owned.iter().next() {
            return Err(audit_error(format!("{o} holds {n} pages but has no account")));
        }
        let resident: u64 = accounts.domains.values().map(|e| e.resident).sum();
        if free + resident + accounts.hypervisor + accounts.quarantined != self.total {
            return Err(audit_error(format!(
                "free {free} + resident {resident} + hypervisor {} + quarantined {} ≠ total {}",
                accounts.hypervisor, accounts.quarantined, self.total
            )));
        }
        Ok(())
    }

    /// What the manager knows about the page at `hpa`.
    pub fn page_state(&self, hpa: u64) -> Result<PageState, EpcError> {
        let (s, i) = self.locate(hpa)?;
        let st = self.sections[s].state.lock();
        Ok(PageState::from_tag(st.tag(i)))
    }

    /// Takes a free page out of service, as [`EpcManager::release`] does with a page EREMOVE could
    /// not remove: a host daemon that restarts on the same machine puts the pages it had
    /// quarantined back in quarantine, with the record it kept. Fails, changing nothing, when the
    /// page is not an EPC page or not free.
    ///
    /// Cost: retiring a page above every page handed out so far makes the pages below it
    /// recycled free pages (about 12 bytes of bookkeeping each), the price of keeping allocation
    /// O(1) without a skip list; quarantine is rare and happens at start.
    pub fn retire(&self, page: QuarantinedPage) -> Result<(), EpcError> {
        let (s, index) = self.locate(page.hpa)?;
        let section = &self.sections[s];
        // Lock order: section, then accounts (as everywhere else).
        let mut state = section.state.lock();
        if !state.retire(index, section.pages) {
            return Err(EpcError::NotFree { hpa: page.hpa, state: PageState::from_tag(state.tag(index)) });
        }
        let mut accounts = self.accounts.lock();
        accounts.quarantined += 1;
        accounts.log.push(page);
        Ok(())
    }

    /// Every quarantined page, oldest first, with its last owner and why EREMOVE failed.
    pub fn quarantined_pages(&self) -> Vec<QuarantinedPage> {
        self.accounts.lock().log.clone()
    }

    /// Section and page index of an EPC page address.
    fn locate(&self, hpa: u64) -> Result<(usize, u32), EpcError> {
        let (s, sec) = self
            .sections
            .iter()
            .enumerate()
            .find(|(_, s)| hpa >= s.base && hpa - s.base < u64::from(s.pages) * PAGE_SIZE)
            .ok_or(EpcError::NotEpc { hpa })?;
        if !hpa.is_multiple_of(PAGE_SIZE) {
            return Err(EpcError::Unaligned { hpa });
        }
        // Below `pages`, which is a u32.
        let index = u32::try_from((hpa - sec.base) / PAGE_SIZE).map_err(|_| EpcError::NotEpc { hpa })?;
        Ok((s, index))
    }

    fn find(&self, hpa: u64) -> Option<(usize, u32)> {
        self.locate(hpa).ok()
    }

    fn lock_sections(&self, wanted: &[bool]) -> Locked<'_> {
        let guards = self
            .sections
            .iter()
            .zip(wanted.iter().copied().chain(std::iter::repeat(false)))
            .map(|(s, w)| w.then(|| s.state.lock()))
            .collect();
        Locked { guards }
    }

    /// Checks that `owner` holds every page (each once) and marks them busy. Returns the sections
    /// touched. On refusal nothing stays marked.
    fn claim(&self, owner: Owner, pages: &[u64]) -> Result<Vec<bool>, EpcError> {
        let mut wanted = vec![false; self.sections.len()];
        for &hpa in pages {
            let (s, _) = self.locate(hpa)?;
            wanted[s] = true;
        }
        let mut locked = self.lock_sections(&wanted);
        let want = owner.tag();
        for (k, &hpa) in pages.iter().enumerate() {
            let refusal = match self.find(hpa) {
                None => Some(EpcError::NotEpc { hpa }),
                Some((s, i)) => match locked.get(s) {
                    None => Some(EpcError::Accounting(format!("section {s} of {hpa:#x} not locked"))),
                    Some(st) => {
                        let tag = st.tag(i);
                        if tag == want {
                            st.set_tag(i, tag | TAG_BUSY);
                            None
                        } else if tag & TAG_BUSY != 0 && pages[..k].contains(&hpa) {
                            Some(EpcError::Duplicate { hpa })
                        } else {
                            Some(match PageState::from_tag(tag) {
                                PageState::Busy(o) if o == owner => EpcError::Busy { hpa, owner },
                                state => EpcError::NotOwned { hpa, owner, state },
                            })
                        }
                    }
                },
            };
            if let Some(e) = refusal {
                clear_busy(&mut locked, self, &pages[..k]);
                return Err(e);
            }
        }
        Ok(wanted)
    }

    fn unclaim(&self, wanted: &[bool], pages: &[u64]) {
        let mut locked = self.lock_sections(wanted);
        clear_busy(&mut locked, self, pages);
    }

    /// EREMOVE in the hypervisor's context.
    fn eremove(&self, hpa: u64) -> Result<(), RemoveFailure> {
        let mut access = HostAccess::new(&self.platform);
        let mut regs = Gprs::leaf(Encls::Eremove as u32, 0, hpa, 0);
        execute_encls(&self.platform, &mut access, Encls::Eremove, &mut regs).map_err(RemoveFailure::Fault)?;
        match regs.status() {
            LeafStatus::Success => Ok(()),
            LeafStatus::Error(e) => Err(RemoveFailure::Error(e)),
            other => Err(RemoveFailure::Unexpected(other)),
        }
    }

    /// The two passes (no manager lock held).
    fn remove_passes(&self, pages: &[u64]) -> Passes {
        let mut removed = 0u64;
        let mut child_present = Vec::new();
        let mut retry = Vec::new();
        for &hpa in pages {
            match self.eremove(hpa) {
                Ok(()) => removed += 1,
                Err(RemoveFailure::Error(SgxError::ChildPresent)) => child_present.push(hpa),
                Err(_) => retry.push(hpa),
            }
        }
        let child_present_count = child_present.len() as u64;
        let mut second_pass = 0u64;
        let mut failed = Vec::new();
        for hpa in retry.into_iter().chain(child_present) {
            match self.eremove(hpa) {
                Ok(()) => {
                    removed += 1;
                    second_pass += 1;
                }
                Err(failure) => failed.push(FailedPage { hpa, failure }),
            }
        }
        Passes { removed, child_present: child_present_count, second_pass, failed }
    }
}

fn clear_busy(locked: &mut Locked<'_>, manager: &EpcManager, pages: &[u64]) {
    for &hpa in pages {
        if let Some((s, i)) = manager.find(hpa)
            && let Some(st) = locked.get(s)
        {
            let tag = st.tag(i);
            st.set_tag(i, tag & !TAG_BUSY);
        }
    }
}

fn audit_error(detail: String) -> EpcError {
    EpcError::Accounting(detail)
}

/// Evicted/ballooned counters exist for domains only; resident is never a counter move.
fn check_non_resident(owner: Owner, category: Category) -> Result<(), EpcError> {
    if category == Category::Resident {
        return Err(EpcError::ResidentCounter { owner });
    }
    if owner == Owner::Hypervisor {
        return Err(EpcError::HypervisorCategory { category });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform(toml: &str) -> Arc<Platform> {
        let mut cfg = vsgx_hw::config::from_toml(toml).expect("valid config");
        cfg.seed = Some(1);
        Platform::new(cfg)
    }

    /// Three sections: 256 pages on node 0, 512 on node 1, 256 on node 0.
    fn three() -> EpcManager {
        EpcManager::new(platform(
            "memory_mib = 64\n[[epc]]\nsize_mib = 1\nnode = 0\n[[epc]]\nsize_mib = 2\nnode = 1\n\
             [[epc]]\nsize_mib = 1\nnode = 0\n",
        ))
    }

    const D1: Owner = Owner::Domain(DomainId(1));
    const D2: Owner = Owner::Domain(DomainId(2));

    #[test]
    fn tags_round_trip() {
        for o in [Owner::Hypervisor, D1, Owner::Domain(DomainId(0)), Owner::Domain(DomainId(u32::MAX))] {
            assert_eq!(Owner::from_tag(o.tag()), Some(o));
            assert_eq!(PageState::from_tag(o.tag()), PageState::Owned(o));
            assert_eq!(PageState::from_tag(o.tag() | TAG_BUSY), PageState::Busy(o));
        }
        assert_eq!(PageState::from_tag(TAG_FREE), PageState::Free);
        assert_eq!(PageState::from_tag(TAG_QUARANTINED), PageState::Quarantined);
    }

    #[test]
    fn fallback_order_prefers_node_then_section_order() {
        let m = three();
        assert_eq!(m.fallback_order(Placement::ANY), vec![0, 1, 2]);
        assert_eq!(m.fallback_order(Placement::node(0)), vec![0, 2, 1]);
        assert_eq!(m.fallback_order(Placement::node(1)), vec![1, 0, 2]);
        assert_eq!(m.fallback_order(Placement::node(7)), vec![0, 1, 2], "unknown node: plain section order");
    }

    #[test]
    fn allocation_follows_fallback_order_and_recycles_lifo() {
        let m = three();
        let base = |s: usize| m.sections[s].base;
        let a = m.alloc(D1, 300, Placement::node(0)).expect("fits");
        assert!(a[..256].iter().all(|&p| p >= base(0) && p < base(0) + (1 << 20)));
        assert!(a[256..].iter().all(|&p| p >= base(2) && p < base(2) + (1 << 20)), "then node 0's other section");
        assert_eq!(a[0], base(0));
        assert_eq!(a[1], base(0) + PAGE_SIZE);
        let b = m.alloc(D2, 1, Placement::node(0)).expect("fits");
        assert_eq!(b, vec![base(2) + 44 * PAGE_SIZE]);
        m.release(D1, &a[10..12]).expect("release");
        let c = m.alloc(D2, 2, Placement::node(0)).expect("fits");
        assert_eq!(c, vec![a[11], a[10]], "recycled pages first, last in first out");
        m.audit().expect("audit");
    }

    #[test]
    fn shortage_is_all_or_nothing_and_named() {
        let m = three();
        let _hold = m.alloc(D2, 100, Placement::node(1)).expect("fits");
        let before = m.stats();
        let e = m.alloc(D1, 1000, Placement::node(1)).expect_err("924 free");
        assert_eq!(
            e.to_string(),
            "EPC short by 76 pages: 1000 requested on node 1, 924 free (node 1: 412, node 0: 512)"
        );
        assert!(matches!(&e, EpcError::Short(s) if s.short_by() == 76 && s.scope == ShortageScope::Node(1)));
        let e = m.alloc(D1, 925, Placement::ANY).expect_err("short");
        assert_eq!(
            e.to_string(),
            "EPC short by 1 page: 925 requested on any node, 924 free (node 0: 512, node 1: 412)"
        );
        let e = m.alloc_on_section(D1, 1, 413).expect_err("short");
        assert_eq!(e.to_string(), "EPC short by 1 page: 413 requested on section 1 (node 1), 412 free");
        assert_eq!(m.alloc_on_section(D1, 3, 1), Err(EpcError::NoSuchSection { index: 3, count: 3 }));
        let e = m.alloc(D1, u64::MAX, Placement::ANY).expect_err("absurd");
        assert!(matches!(e, EpcError::Short(_)));
        assert_eq!(m.stats(), before, "nothing allocated");
        assert_eq!(m.alloc(D1, 0, Placement::ANY), Ok(vec![]));
        assert_eq!(m.stats(), before);
        assert_eq!(m.alloc(D1, 924, Placement::node(1)).map(|v| v.len()), Ok(924), "exactly all");
        assert_eq!(m.free_pages(), 0);
        m.audit().expect("audit");
    }

    #[test]
    fn refused_releases_change_nothing() {
        let m = three();
        let a = m.alloc(D1, 4, Placement::ANY).expect("fits");
        let b = m.alloc(D2, 1, Placement::ANY).expect("fits");
        let free = m.sections[1].base;
        let before = m.stats();
        let check = |r: Result<ReleaseReport, EpcError>, want: EpcError| {
            assert_eq!(r, Err(want));
            assert_eq!(m.stats(), before);
            for &p in &a {
                assert_eq!(m.page_state(p), Ok(PageState::Owned(D1)), "no page left busy");
            }
        };
        check(m.release(D1, &[a[0], b[0]]), EpcError::NotOwned { hpa: b[0], owner: D1, state: PageState::Owned(D2) });
        check(m.release(D1, &[a[0], free]), EpcError::NotOwned { hpa: free, owner: D1, state: PageState::Free });
        check(m.release(D1, &[a[0], a[1], a[0]]), EpcError::Duplicate { hpa: a[0] });
        check(m.release(D1, &[a[0], 0x1000]), EpcError::NotEpc { hpa: 0x1000 });
        check(m.release(D1, &[a[0], a[1] + 8]), EpcError::Unaligned { hpa: a[1] + 8 });
        check(
            m.release(Owner::Hypervisor, &[a[2]]),
            EpcError::NotOwned { hpa: a[2], owner: Owner::Hypervisor, state: PageState::Owned(D1) },
        );
        let msg = m.release(D2, &a[..1]).expect_err("not D2's").to_string();
        assert_eq!(msg, format!("EPC page {:#x} is not owned by domain 2: it is owned by domain 1", a[0]));
        assert!(matches!(m.sanitize(D2, &a), Err(EpcError::NotOwned { .. })));
        m.audit().expect("audit");
        assert_eq!(m.release(D1, &[]), Ok(ReleaseReport::default()));
    }

    #[test]
    fn busy_pages_are_refused() {
        let m = three();
        let a = m.alloc(D1, 2, Placement::ANY).expect("fits");
        m.claim(D1, &a[..1]).expect("claim");
        assert_eq!(m.page_state(a[0]), Ok(PageState::Busy(D1)));
        assert_eq!(m.release(D1, &[a[1], a[0]]), Err(EpcError::Busy { hpa: a[0], owner: D1 }));
        assert_eq!(m.page_state(a[1]), Ok(PageState::Owned(D1)), "rolled back");
        assert_eq!(
            m.release(D2, &[a[0]]),
            Err(EpcError::NotOwned { hpa: a[0], owner: D2, state: PageState::Busy(D1) })
        );
        m.check_conservation().expect("busy pages are still resident");
        m.audit().expect("audit");
        m.unclaim(&[true; 3], &a[..1]);
        assert_eq!(m.release(D1, &a).map(|r| r.removed), Ok(2));
    }

    #[test]
    fn counters_move_with_checks() {
        let m = three();
        let hv = Owner::Hypervisor;
        assert_eq!(
            m.move_pages(D1, Category::Resident, Category::Evicted, 1),
            Err(EpcError::ResidentCounter { owner: D1 })
        );
        assert_eq!(
            m.move_pages(hv, Category::Evicted, Category::Ballooned, 0),
            Err(EpcError::HypervisorCategory { category: Category::Evicted })
        );
        assert_eq!(
            m.move_pages(D1, Category::Evicted, Category::Ballooned, 1),
            Err(EpcError::NotEnough { owner: D1, category: Category::Evicted, have: 0, requested: 1 })
        );
        let a = m.alloc(D1, 10, Placement::ANY).expect("fits");
        let r = m.release_to(D1, &a[..6], Category::Evicted).expect("evict");
        assert_eq!(r.removed, 6);
        let d = m.stats().per_domain[&DomainId(1)];
        assert_eq!(d, DomainEpc { resident: 4, evicted: 6, ballooned: 0 });
        m.move_pages(D1, Category::Evicted, Category::Ballooned, 2).expect("move");
        let e = m.move_pages(D1, Category::Ballooned, Category::Evicted, 3).expect_err("only 2");
        assert_eq!(e.to_string(), "domain 1 has 2 ballooned pages, 3 requested");
        assert_eq!(
            m.alloc_from(D1, Category::Ballooned, 3, Placement::ANY),
            Err(EpcError::NotEnough { owner: D1, category: Category::Ballooned, have: 2, requested: 3 })
        );
        let back = m.alloc_from(D1, Category::Evicted, 4, Placement::ANY).expect("reload");
        assert_eq!(back.len(), 4);
        assert_eq!(m.stats().per_domain[&DomainId(1)], DomainEpc { resident: 8, evicted: 0, ballooned: 2 });
        assert_eq!(
            m.alloc_from(hv, Category::Evicted, 1, Placement::ANY),
            Err(EpcError::HypervisorCategory { category: Category::Evicted })
        );
        assert_eq!(m.release_to(D1, &back, Category::Resident), Err(EpcError::ResidentCounter { owner: D1 }));
        m.check_conservation().expect("evicted/ballooned hold no EPC");
        m.audit().expect("audit");
        m.release(D1, &a[6..]).expect("release");
        m.release(D1, &back).expect("release");
        m.move_pages(D1, Category::Ballooned, Category::Evicted, 2).expect("move");
        assert_eq!(m.stats().per_domain[&DomainId(1)], DomainEpc { resident: 0, evicted: 2, ballooned: 0 });
        m.move_pages(D1, Category::Evicted, Category::Evicted, 2).expect("no-op");
        m.alloc_from(D1, Category::Evicted, 2, Placement::ANY).and_then(|p| m.release(D1, &p)).expect("round trip");
        assert!(m.stats().per_domain.is_empty(), "a domain with nothing left is not listed");
        m.audit().expect("audit");
    }

    #[test]
    fn sections_forget_pages_when_all_are_back() {
        let m = three();
        let a = m.alloc_on_section(Owner::Hypervisor, 1, 512).expect("whole section");
        assert_eq!(m.stats().hypervisor, 512);
        assert_eq!(m.sections[1].state.lock().tags.len(), 1);
        m.release(Owner::Hypervisor, &a[..511]).expect("release");
        assert_eq!(m.sections[1].state.lock().next, 512);
        m.release(Owner::Hypervisor, &a[511..]).expect("release");
        let st = m.sections[1].state.lock();
        assert_eq!((st.next, st.recycled.capacity(), st.tags.len()), (0, 0, 0));
    }

    #[test]
    fn host_access_maps_only_epc() {
        let m = three();
        let mut h = HostAccess::new(&m.platform);
        let epc = m.sections[2].base + 0x1234;
        assert_eq!(h.translate(epc, Access::Read), Ok(Target::Epc(epc)));
        assert_eq!(
            h.translate(0x1000, Access::Write),
            Err(Exception::PageFault { linear: 0x1000, error_code: pfec::W })
        );
        assert!(h.read_memory(0, &mut [0; 8]).is_err());
        assert!(h.write_memory(0, &[0; 8]).is_err());
        assert_eq!(h.cpl(), Cpl::Ring0);
        assert_eq!(
            m.eremove(0x1000),
            Err(RemoveFailure::Fault(Exception::PageFault { linear: 0x1000, error_code: 0 }))
        );
        assert_eq!(m.eremove(m.sections[0].base), Ok(()), "an invalid page: no-op");
    }

    #[test]
    fn manager_is_shareable() {
        fn shareable<T: Send + Sync>() {}
        shareable::<EpcManager>();
    }
}

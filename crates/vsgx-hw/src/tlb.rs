//! A small software TLB for processors that walk x86-64 page tables (bare-metal CPUs and vCPUs).

/// Entries of each translation cache (direct-mapped by linear page number).
const TLB_ENTRIES: usize = 64;

/// A cached translation: the result of a successful walk, with the combined permissions.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TlbEntry {
    /// Linear page number (4 KiB or 2 MiB) + 1; 0 = empty.
    tag: u64,
    phys_page: u64,
    writable: bool,
    user: bool,
}

/// What a page walk found (4-level x86-64 paging, 4 KiB and 2 MiB pages).
#[derive(Clone, Copy, Debug)]
pub struct Walk {
    /// Physical address of the linear address walked.
    pub phys: u64,
    /// Mapped by a 2 MiB page.
    pub large: bool,
    /// Writable at every level.
    pub writable: bool,
    /// User-accessible at every level.
    pub user: bool,
}

/// A small TLB with separate 4 KiB and 2 MiB arrays. Like hardware's it is flushed by `mov cr3`
/// and paging changes; unlike hardware it is also flushed by every write this processor makes to
/// memory, because the `Cpu` trait has no INVLPG and page tables live in ordinary RAM.
#[derive(Clone, Debug)]
pub struct Tlb {
    small: [TlbEntry; TLB_ENTRIES],
    large: [TlbEntry; TLB_ENTRIES],
}

impl Tlb {
    /// An empty TLB.
    pub const EMPTY: Self = Self {
        small: [TlbEntry { tag: 0, phys_page: 0, writable: false, user: false }; TLB_ENTRIES],
        large: [TlbEntry { tag: 0, phys_page: 0, writable: false, user: false }; TLB_ENTRIES],
    };

    /// The cached translation of `linear`, if any.
    pub fn lookup(&self, linear: u64) -> Option<Walk> {
        let large = linear >> 21;
        let e = &self.large[large as usize % TLB_ENTRIES];
        if e.tag == large + 1 {
            return Some(Walk {
                phys: e.phys_page | (linear & 0x1F_FFFF),
                large: true,
                writable: e.writable,
                user: e.user,
            });
        }
        let small = linear >> 12;
        let e = &self.small[small as usize % TLB_ENTRIES];
        (e.tag == small + 1).then_some(Walk {
            phys: e.phys_page | (linear & 0xFFF),
            large: false,
            writable: e.writable,
            user: e.user,
        })
    }

    /// Caches a walk's result for `linear`.
    pub fn insert(&mut self, linear: u64, w: Walk) {
        if w.large {
            let page = linear >> 21;
            self.large[page as usize % TLB_ENTRIES] =
                TlbEntry { tag: page + 1, phys_page: w.phys & !0x1F_FFFF, writable: w.writable, user: w.user };
        } else {
            let page = linear >> 12;
            self.small[page as usize % TLB_ENTRIES] =
                TlbEntry { tag: page + 1, phys_page: w.phys & !0xFFF, writable: w.writable, user: w.user };
        }
    }

    /// Forgets everything.
    pub fn flush(&mut self) {
        *self = Self::EMPTY;
    }
}

//! Guest RAM: sparse anonymous memory (vm-memory), with a dirty bitmap that tells which pages were
//! ever written — what a save must carry, and later what live migration re-sends.

use vm_memory::bitmap::{AtomicBitmap, Bitmap};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// Most guest RAM one domain may have: 1 TiB. Pages cost nothing until touched, but the dirty log
/// is a bitmap of one bit per page that vm-memory allocates and zeroes up front: 32 MiB of host
/// memory at the limit. Far beyond it the allocation could fail, which aborts the process.
pub const MAX_GUEST_RAM: u64 = 1 << 40;

/// Guest RAM regions of one domain.
#[derive(Debug)]
pub struct GuestRam {
    memory: GuestMemoryMmap<AtomicBitmap>,
    regions: Vec<(u64, u64)>,
}

/// A guest-physical access outside RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("guest-physical access [{gpa:#x}, +{len:#x}) is not RAM")]
pub struct NotRam {
    /// Start of the access.
    pub gpa: u64,
    /// Length.
    pub len: usize,
}

/// Why guest RAM could not be created.
#[derive(Debug, thiserror::Error)]
#[error("cannot create guest RAM: {0}")]
pub struct RamError(String);

impl GuestRam {
    /// RAM over `regions` (`(gpa, size)`, page aligned, non-overlapping). Host memory is only
    /// committed for pages the guest touches.
    pub fn new(regions: &[(u64, u64)]) -> Result<Self, RamError> {
        let total = regions.iter().try_fold(0u64, |sum, &(_, size)| sum.checked_add(size));
        if total.is_none_or(|total| total > MAX_GUEST_RAM) {
            return Err(RamError(format!(
                "{} bytes of RAM asked, a guest may have at most {MAX_GUEST_RAM} (1 TiB)",
                total.map_or_else(|| "more than 2^64".to_owned(), |t| t.to_string())
            )));
        }
        let ranges: Vec<(GuestAddress, usize)> = regions.iter().map(|&(b, s)| (GuestAddress(b), s as usize)).collect();
        let memory = GuestMemoryMmap::<AtomicBitmap>::from_ranges(&ranges).map_err(|e| RamError(e.to_string()))?;
        Ok(Self { memory, regions: regions.to_vec() })
    }

    /// The RAM regions.
    pub fn regions(&self) -> &[(u64, u64)] {
        &self.regions
    }

    /// Whether `[gpa, gpa + len)` is RAM.
    pub fn contains(&self, gpa: u64, len: usize) -> bool {
        self.regions.iter().any(|&(b, s)| gpa >= b && gpa.checked_add(len as u64).is_some_and(|end| end <= b + s))
    }

    /// Reads guest RAM.
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), NotRam> {
        self.memory.read_slice(buf, GuestAddress(gpa)).map_err(|_| NotRam { gpa, len: buf.len() })
    }

    /// Writes guest RAM (marks the pages dirty).
    pub fn write(&self, gpa: u64, data: &[u8]) -> Result<(), NotRam> {
        self.memory.write_slice(data, GuestAddress(gpa)).map_err(|_| NotRam { gpa, len: data.len() })
    }

    /// Guest-physical page addresses written since creation (or since the last `clear_dirty`).
    pub fn dirty_pages(&self) -> Vec<u64> {
        let mut pages = Vec::new();
        for region in self.memory.iter() {
            let base = region.start_addr().0;
            let len = region.len();
            let bitmap = region.bitmap();
            let mut off = 0u64;
            while off < len {
                if bitmap.dirty_at(off as usize) {
                    pages.push(base + off);
                }
                off += 4096;
            }
        }
        pages
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_than_16_tib_is_refused_before_anything_is_allocated() {
        let err = GuestRam::new(&[(0, MAX_GUEST_RAM), (MAX_GUEST_RAM, 4096)]).unwrap_err();
        assert!(err.to_string().contains("at most 1099511627776 (1 TiB)"), "{err}");
        let err = GuestRam::new(&[(0, u64::MAX), (0, u64::MAX)]).unwrap_err();
        assert!(err.to_string().contains("more than 2^64"), "{err}");
    }
}

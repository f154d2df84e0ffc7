//! Bare-metal main memory: sparse RAM at physical address 0.
//!
//! Two-level and direct-indexed like the EPC (`crate::epc`): groups of 512 page slots are created
//! on first touch, a page's 4 KiB on first write; unwritten memory reads as zeros. Every page has
//! its own lock, so logical processors on different threads rarely contend.

use std::sync::OnceLock;

use parking_lot::RwLock;

const GROUP_PAGES: usize = 512;

/// One page of RAM, allocated on first write.
type PageCell = RwLock<Option<Box<[u8; 4096]>>>;

/// Sparse physical RAM `[0, size)`.
#[derive(Debug)]
pub struct Ram {
    size: u64,
    groups: Box<[OnceLock<Box<[PageCell]>>]>,
}

/// An access outside RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("physical access [{addr:#x}, +{len:#x}) is outside RAM (size {size:#x})")]
pub struct OutOfRange {
    /// Start address.
    pub addr: u64,
    /// Length.
    pub len: usize,
    /// RAM size.
    pub size: u64,
}

impl Ram {
    /// RAM of `size` bytes (rounded down to whole pages).
    pub fn new(size: u64) -> Self {
        let size = size & !0xFFF;
        let groups = ((size / 4096) as usize).div_ceil(GROUP_PAGES);
        Self { size, groups: (0..groups).map(|_| OnceLock::new()).collect() }
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn cell(&self, page: u64) -> &PageCell {
        let page = page as usize;
        let group =
            self.groups[page / GROUP_PAGES].get_or_init(|| (0..GROUP_PAGES).map(|_| RwLock::new(None)).collect());
        &group[page % GROUP_PAGES]
    }

    fn check(&self, addr: u64, len: usize) -> Result<(), OutOfRange> {
        match addr.checked_add(len as u64) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(OutOfRange { addr, len, size: self.size }),
        }
    }

    /// Reads `buf.len()` bytes at `addr`.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), OutOfRange> {
        self.check(addr, buf.len())?;
        let mut done = 0;
        while done < buf.len() {
            let a = addr + done as u64;
            let (page, off) = (a >> 12, (a & 0xFFF) as usize);
            let n = (4096 - off).min(buf.len() - done);
            // Reads never allocate: an untouched group or page reads as zeros.
            let group = self.groups[page as usize / GROUP_PAGES].get();
            match group.and_then(|g| {
                g[page as usize % GROUP_PAGES]
                    .read()
                    .as_deref()
                    .map(|p| buf[done..done + n].copy_from_slice(&p[off..off + n]))
            }) {
                Some(()) => {}
                None => buf[done..done + n].fill(0),
            }
            done += n;
        }
        Ok(())
    }

    /// Writes `data` at `addr`.
    pub fn write(&self, addr: u64, data: &[u8]) -> Result<(), OutOfRange> {
        self.check(addr, data.len())?;
        let mut done = 0;
        while done < data.len() {
            let a = addr + done as u64;
            let (page, off) = (a >> 12, (a & 0xFFF) as usize);
            let n = (4096 - off).min(data.len() - done);
            let mut cell = self.cell(page).write();
            let p = cell.get_or_insert_with(|| Box::new([0; 4096]));
            p[off..off + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
        Ok(())
    }

    /// Reads a little-endian u64.
    pub fn read_u64(&self, addr: u64) -> Result<u64, OutOfRange> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Writes a little-endian u64.
    pub fn write_u64(&self, addr: u64, value: u64) -> Result<(), OutOfRange> {
        self.write(addr, &value.to_le_bytes())
    }

    /// Host bytes spent on allocated pages and slot groups.
    pub fn host_bytes(&self) -> usize {
        self.groups
            .iter()
            .filter_map(|g| g.get())
            .map(|g| g.len() * std::mem::size_of::<PageCell>() + g.iter().filter(|c| c.read().is_some()).count() * 4096)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_reads_and_writes_across_pages() {
        let ram = Ram::new(1 << 30);
        let mut buf = [1u8; 16];
        ram.read(0x1234, &mut buf).unwrap();
        assert_eq!(buf, [0; 16]);
        ram.write(0xFFC, &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        assert_eq!(ram.read_u64(0xFFC).unwrap(), 0x0807_0605_0403_0201);
        assert!(ram.host_bytes() <= 8192 + GROUP_PAGES * 16);
        assert!(ram.read(u64::MAX - 2, &mut buf).is_err());
        assert!(ram.write((1 << 30) - 4, &buf).is_err());
        let big = Ram::new(64 << 30);
        assert_eq!(big.host_bytes(), 0, "untouched RAM costs nothing but the group table");
    }
}

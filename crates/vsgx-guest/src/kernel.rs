//! The guest kernel's view of the machine: SGX enumeration, page tables, RAM and EPC page
//! allocators (DESIGN §6). Everything goes through `vsgx_isa::cpu::Cpu`.

use alloc::vec::Vec;

use vsgx_isa::cpu::{Cpl, Cpu, Exception};
use vsgx_isa::cpuid::{EpcSectionLeaf, Leaf7Sgx, SgxLeaf0, SgxLeaf1};
use vsgx_isa::msr::{self, FeatureControl};

use crate::GuestError;

const PTE_P: u64 = 1;
const PTE_RW: u64 = 2;
const PTE_US: u64 = 4;
const PTE_PS: u64 = 1 << 7;
const PTE_ADDR: u64 = 0x000F_FFFF_FFFF_F000;
const FLAGS: u64 = PTE_P | PTE_RW | PTE_US;
/// Most EPC sections a kernel enumerates (Linux's limit).
pub const MAX_EPC_SECTIONS: u32 = 8;

/// What the platform firmware tells the kernel about memory (E820-style).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BootInfo {
    /// RAM ranges `(base, size)`.
    pub ram: Vec<(u64, u64)>,
    /// Ranges reported as reserved (vEPC sections among them).
    pub reserved: Vec<(u64, u64)>,
}

/// SGX as the kernel found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SgxInfo {
    /// CPUID.(12H,0).
    pub leaf0: SgxLeaf0,
    /// CPUID.(12H,1).
    pub leaf1: SgxLeaf1,
    /// Flexible launch control with writable hash MSRs.
    pub lc_writable: bool,
    /// EPC sections `(base, size)`.
    pub sections: Vec<(u64, u64)>,
}

/// A booted kernel on one processor.
#[derive(Debug)]
pub struct Kernel<C: Cpu> {
    cpu: C,
    sgx: SgxInfo,
    pml4: u64,
    /// Free 4 KiB RAM pages (after the kernel's own).
    free_ram: Vec<u64>,
    next_ram: (usize, u64),
    /// Contiguous runs of RAM pages given back by [`Kernel::free_run`]: `(base, pages)`.
    runs: Vec<(u64, usize)>,
    ram: Vec<(u64, u64)>,
    free_epc: Vec<u64>,
    next_epc: (usize, u64),
}

impl<C: Cpu> Kernel<C> {
    /// Boots: checks SGX is enumerated and enabled (CPUID 7/0x12, FEATURE_CONTROL), enumerates the
    /// EPC sections and checks each is reported reserved in the memory map, then builds page tables
    /// that identity-map RAM and EPC with 2 MiB pages and turns paging on at ring 0.
    pub fn boot(mut cpu: C, info: &BootInfo) -> Result<Self, GuestError> {
        cpu.set_paging(false);
        cpu.set_cpl(Cpl::Ring0);
        if !Leaf7Sgx::decode(cpu.cpuid(7, 0)).sgx {
            return Err(GuestError::NoSgx("CPUID.7.0:EBX[2] (SGX) is clear"));
        }
        let fc = FeatureControl::from_bits_retain(cpu.rdmsr(msr::IA32_FEATURE_CONTROL).map_err(GuestError::Fault)?);
        if !fc.sgx_usable() {
            return Err(GuestError::NoSgx("IA32_FEATURE_CONTROL does not enable SGX"));
        }
        let lc_writable = Leaf7Sgx::decode(cpu.cpuid(7, 0)).sgx_lc && fc.contains(FeatureControl::SGX_LC);
        let leaf0 = SgxLeaf0::decode(cpu.cpuid(0x12, 0)).map_err(GuestError::Cpuid)?;
        let leaf1 = SgxLeaf1::decode(cpu.cpuid(0x12, 1));
        let mut sections = Vec::new();
        for sub in 2..2 + MAX_EPC_SECTIONS {
            match EpcSectionLeaf::decode(sub, cpu.cpuid(0x12, sub)).map_err(GuestError::Cpuid)? {
                Some(s) => sections.push((s.base, s.size)),
                None => break,
            }
        }
        if sections.is_empty() {
            return Err(GuestError::NoSgx("CPUID.(12H,2) enumerates no EPC"));
        }
        for &(base, size) in &sections {
            let covered = info.reserved.iter().any(|&(b, s)| base >= b && base + size <= b + s);
            if !covered {
                return Err(GuestError::MemoryMap { base, size });
            }
        }
        let mut k = Self {
            cpu,
            sgx: SgxInfo { leaf0, leaf1, lc_writable, sections: sections.clone() },
            pml4: 0,
            free_ram: Vec::new(),
            next_ram: (0, 0x1000),
            runs: Vec::new(),
            ram: info.ram.clone(),
            free_epc: Vec::new(),
            next_epc: (0, 0),
        };
        k.pml4 = k.alloc_ram_page()?;
        let mut regions: Vec<(u64, u64)> = info.ram.clone();
        regions.extend(sections.iter().copied());
        for (base, size) in regions {
            let mut la = base & !0x1F_FFFF;
            while la < base + size {
                k.map_2m(la)?;
                la += 1 << 21;
            }
        }
        k.cpu.set_cr3(k.pml4);
        k.cpu.set_paging(true);
        Ok(k)
    }

    /// The processor.
    pub fn cpu(&mut self) -> &mut C {
        &mut self.cpu
    }

    /// SGX enumeration.
    pub fn sgx(&self) -> &SgxInfo {
        &self.sgx
    }

    /// A zeroed 4 KiB RAM page (physical = linear under the identity map).
    pub fn alloc_ram_page(&mut self) -> Result<u64, GuestError> {
        let page = self.alloc_ram_page_for_overwrite()?;
        self.cpu.write(page, &[0; 4096]).map_err(GuestError::Fault)?;
        Ok(page)
    }

    /// A 4 KiB RAM page that still holds whatever it held before, for a buffer the caller
    /// overwrites whole (EWB's destination page): skips the zeroing.
    pub fn alloc_ram_page_for_overwrite(&mut self) -> Result<u64, GuestError> {
        let page = match self.free_ram.pop() {
            Some(p) => p,
            None => {
                let (region, offset) = &mut self.next_ram;
                loop {
                    let Some(&(base, size)) = self.ram.get(*region) else { return Err(GuestError::OutOfRam) };
                    if *offset + 4096 <= size {
                        let p = base + *offset;
                        *offset += 4096;
                        break p;
                    }
                    *region += 1;
                    *offset = 0;
                }
            }
        };
        Ok(page)
    }

    /// Returns a RAM page.
    pub fn free_ram_page(&mut self, page: u64) {
        self.free_ram.push(page);
    }

    /// A free EPC page.
    pub fn alloc_epc_page(&mut self) -> Result<u64, GuestError> {
        if let Some(p) = self.free_epc.pop() {
            return Ok(p);
        }
        let (section, offset) = &mut self.next_epc;
        while let Some(&(base, size)) = self.sgx.sections.get(*section) {
            if *offset < size {
                let p = base + *offset;
                *offset += 4096;
                return Ok(p);
            }
            *section += 1;
            *offset = 0;
        }
        Err(GuestError::OutOfEpc)
    }

    /// Returns an EPC page (after EREMOVE or EWB).
    pub fn free_epc_page(&mut self, page: u64) {
        self.free_epc.push(page);
    }

    /// EPC pages never handed out or returned.
    pub fn free_epc_pages(&self) -> u64 {
        let unused: u64 = self
            .sgx
            .sections
            .iter()
            .enumerate()
            .map(|(i, &(_, size))| match i.cmp(&self.next_epc.0) {
                core::cmp::Ordering::Less => 0,
                core::cmp::Ordering::Equal => (size - self.next_epc.1.min(size)) / 4096,
                core::cmp::Ordering::Greater => size / 4096,
            })
            .sum();
        unused + self.free_epc.len() as u64
    }

    /// Total EPC pages.
    pub fn total_epc_pages(&self) -> u64 {
        self.sgx.sections.iter().map(|&(_, s)| s / 4096).sum()
    }

    fn read_u64(&mut self, addr: u64) -> Result<u64, GuestError> {
        let mut b = [0u8; 8];
        self.cpu.read(addr, &mut b).map_err(GuestError::Fault)?;
        Ok(u64::from_le_bytes(b))
    }

    fn table(&mut self, table: u64, index: u64) -> Result<u64, GuestError> {
        let e = self.read_u64(table + index * 8)?;
        if e & PTE_P != 0 {
            return Ok(e & PTE_ADDR);
        }
        let next = self.alloc_ram_page()?;
        self.cpu.write(table + index * 8, &(next | FLAGS).to_le_bytes()).map_err(GuestError::Fault)?;
        Ok(next)
    }

    fn map_2m(&mut self, la: u64) -> Result<(), GuestError> {
        let pdpt = self.table(self.pml4, (la >> 39) & 0x1FF)?;
        let pd = self.table(pdpt, (la >> 30) & 0x1FF)?;
        self.cpu.write(pd + ((la >> 21) & 0x1FF) * 8, &(la | FLAGS | PTE_PS).to_le_bytes()).map_err(GuestError::Fault)
    }

    /// Maps the 4 KiB page at `la` to physical `pa` (or unmaps it with `None`).
    pub fn map_page(&mut self, la: u64, pa: Option<u64>) -> Result<(), GuestError> {
        let pdpt = self.table(self.pml4, (la >> 39) & 0x1FF)?;
        let pd = self.table(pdpt, (la >> 30) & 0x1FF)?;
        let pt = self.table(pd, (la >> 21) & 0x1FF)?;
        let pte = pa.map_or(0, |pa| (pa & !0xFFF) | FLAGS);
        self.cpu.write(pt + ((la >> 12) & 0x1FF) * 8, &pte.to_le_bytes()).map_err(GuestError::Fault)
    }

    /// Runs `f` at ring 3 (ENCLU), then returns to ring 0.
    pub fn as_user<R>(&mut self, f: impl FnOnce(&mut C) -> R) -> R {
        self.cpu.set_cpl(Cpl::Ring3);
        let r = f(&mut self.cpu);
        self.cpu.set_cpl(Cpl::Ring0);
        r
    }

    /// `pages` physically contiguous RAM pages: a run given back earlier if one is big enough,
    /// else fresh pages from the never-used part of RAM.
    fn alloc_run(&mut self, pages: usize) -> Result<u64, GuestError> {
        if let Some(i) = self.runs.iter().position(|&(_, n)| n >= pages) {
            let (base, n) = self.runs.swap_remove(i);
            if n > pages {
                self.runs.push((base + pages as u64 * 4096, n - pages));
            }
            return Ok(base);
        }
        let bytes = pages as u64 * 4096;
        let (region, offset) = &mut self.next_ram;
        loop {
            let Some(&(base, size)) = self.ram.get(*region) else { return Err(GuestError::OutOfRam) };
            if *offset + bytes <= size {
                let run = base + *offset;
                *offset += bytes;
                return Ok(run);
            }
            *region += 1;
            *offset = 0;
        }
    }

    /// Copies bytes into physically contiguous RAM pages (zero-filling the last page) and returns
    /// the pages; give them back with [`Kernel::free_run`].
    pub fn stage(&mut self, bytes: &[u8]) -> Result<Vec<u64>, GuestError> {
        let pages = bytes.len().div_ceil(4096).max(1);
        let base = self.alloc_run(pages)?;
        let mut padded = [0u8; 4096];
        for i in 0..pages {
            let chunk = &bytes[(i * 4096).min(bytes.len())..((i + 1) * 4096).min(bytes.len())];
            padded[..chunk.len()].copy_from_slice(chunk);
            padded[chunk.len()..].fill(0);
            self.cpu.write(base + i as u64 * 4096, &padded).map_err(GuestError::Fault)?;
        }
        Ok((0..pages as u64).map(|i| base + i * 4096).collect())
    }

    /// Gives back pages from [`Kernel::stage`] as one run.
    pub fn free_run(&mut self, pages: &[u64]) {
        if let Some(&base) = pages.first() {
            self.runs.push((base, pages.len()));
        }
    }
}

/// Turns an instruction fault into the driver's error.
pub(crate) fn fault(e: Exception) -> GuestError {
    GuestError::Fault(e)
}

//! A minimal bare-metal OS, driven only through the `Cpu` trait: identity-mapped page tables over
//! RAM and EPC, scratch memory for operands, an EPC page allocator that learns EPC from CPUID 0x12,
//! and the SGXS loader of SGX.md §3.4.
//!
//! Used by `vsgx enclave verify-launch`, by tests and by benchmarks. The real guest kernel, with
//! reclaim and recovery, is `vsgx-guest`; this is the smallest OS that can build enclaves.

use vsgx_isa::cpu::{Cpl, Cpu, Exception, LeafStatus};
use vsgx_isa::cpuid::EpcSectionLeaf;
use vsgx_isa::leaf::Encls;
use vsgx_isa::msr;
use vsgx_isa::sgxs::LoadPlan;
use vsgx_isa::{ArchStruct, AttributesFlags, Einittoken, PageType, Pageinfo, Secinfo, SecinfoFlags, Secs, Sigstruct};

const PTE_P: u64 = 1;
const PTE_RW: u64 = 2;
const PTE_US: u64 = 4;
const PTE_PS: u64 = 1 << 7;
const FLAGS: u64 = PTE_P | PTE_RW | PTE_US;

/// Why the OS could not boot or load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OsError {
    /// The processor reports no SGX or no EPC.
    #[error("the processor enumerates no EPC (CPUID.(12H, 2) is empty)")]
    NoEpc,
    /// CPUID.(12H, n) is malformed.
    #[error("malformed EPC enumeration: {0}")]
    Cpuid(#[from] vsgx_isa::cpuid::CpuidError),
    /// Out of RAM for page tables or operands.
    #[error("out of RAM: {needed:#x} bytes needed, RAM is {ram:#x} bytes")]
    OutOfRam {
        /// Bytes needed.
        needed: u64,
        /// RAM size.
        ram: u64,
    },
    /// Out of EPC.
    #[error("out of EPC: the enclave needs {needed} pages, {free} are free")]
    OutOfEpc {
        /// Pages needed.
        needed: u64,
        /// Pages free.
        free: u64,
    },
    /// An instruction faulted.
    #[error("{leaf} faulted: {fault}")]
    Fault {
        /// The instruction.
        leaf: &'static str,
        /// The exception.
        fault: Exception,
    },
}

fn fault(leaf: &'static str) -> impl Fn(Exception) -> OsError {
    move |fault| OsError::Fault { leaf, fault }
}

/// A booted bare-metal OS on one logical processor.
#[derive(Debug)]
pub struct SimpleOs<C: Cpu> {
    cpu: C,
    ram_bytes: u64,
    window: std::ops::Range<u64>,
    pml4: u64,
    next_table: u64,
    next_ram: u64,
    epc: Vec<(u64, u64)>,
    free_epc: Vec<u64>,
    next_epc: (usize, u64),
}

/// An enclave built by [`SimpleOs::build`], not yet initialized. Its pages are mapped at
/// `base + offset` in the current address space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltEnclave {
    /// Linear (= physical) address of the SECS EPC page.
    pub secs: u64,
    /// BASEADDR.
    pub base: u64,
    /// Linear addresses of the EPC pages, in plan order.
    pub pages: Vec<u64>,
}

/// Bytes at the start of the RAM window reserved for page tables (scratch memory follows).
const TABLES: u64 = 0x40_0000;

impl<C: Cpu> SimpleOs<C> {
    /// Boots: identity-maps RAM and every EPC section with 2 MiB pages (user, writable), enables
    /// paging, runs at ring 0. Page tables and scratch memory use all of RAM.
    pub fn boot(cpu: C, ram_bytes: u64) -> Result<Self, OsError> {
        Self::boot_in(cpu, ram_bytes, 0..ram_bytes)
    }

    /// Boots like [`Self::boot`], keeping page tables and scratch memory inside `window` (several
    /// OS instances on one platform's RAM, one per logical processor, must not share them).
    /// The first 4 MiB of the window hold page tables.
    pub fn boot_in(mut cpu: C, ram_bytes: u64, window: std::ops::Range<u64>) -> Result<Self, OsError> {
        let mut epc = Vec::new();
        for sub in 2.. {
            let r = cpu.cpuid(0x12, sub);
            match EpcSectionLeaf::decode(sub, r)? {
                Some(s) => epc.push((s.base, s.size)),
                None => break,
            }
        }
        if epc.is_empty() {
            return Err(OsError::NoEpc);
        }
        cpu.set_paging(false);
        cpu.set_cpl(Cpl::Ring0);
        let start = window.start.next_multiple_of(4096).max(0x1000);
        let mut os = Self {
            cpu,
            ram_bytes,
            pml4: 0,
            next_table: start,
            next_ram: start + TABLES,
            window: start..window.end.min(ram_bytes),
            epc,
            free_epc: Vec::new(),
            next_epc: (0, 0),
        };
        let pml4 = os.alloc_table()?;
        os.pml4 = pml4;
        let mut regions = vec![(0, ram_bytes.next_multiple_of(1 << 21))];
        regions.extend(os.epc.iter().map(|&(b, s)| (b & !0x1F_FFFF, (b + s).next_multiple_of(1 << 21))));
        for (start, end) in regions {
            let mut la = start;
            while la < end {
                os.map_2m(pml4, la)?;
                la += 1 << 21;
            }
        }
        os.cpu.set_cr3(pml4);
        os.cpu.set_paging(true);
        Ok(os)
    }

    fn alloc_table(&mut self) -> Result<u64, OsError> {
        let t = self.next_table;
        if t + 4096 > (self.window.start + TABLES).min(self.window.end) {
            return Err(OsError::OutOfRam { needed: t + 4096, ram: self.ram_bytes });
        }
        self.next_table += 4096;
        self.cpu.write(t, &[0; 4096]).map_err(fault("page-table write"))?;
        Ok(t)
    }

    fn entry(&mut self, table: u64, index: u64) -> Result<u64, OsError> {
        let mut b = [0u8; 8];
        self.cpu.read(table + index * 8, &mut b).map_err(fault("page-table read"))?;
        let e = u64::from_le_bytes(b);
        if e & PTE_P != 0 {
            return Ok(e & 0x000F_FFFF_FFFF_F000);
        }
        let next = self.alloc_table()?;
        self.cpu.write(table + index * 8, &(next | FLAGS).to_le_bytes()).map_err(fault("page-table write"))?;
        Ok(next)
    }

    fn map_2m(&mut self, pml4: u64, la: u64) -> Result<(), OsError> {
        let pdpt = self.entry(pml4, (la >> 39) & 0x1FF)?;
        let pd = self.entry(pdpt, (la >> 30) & 0x1FF)?;
        let pde = la | FLAGS | PTE_PS;
        self.cpu.write(pd + ((la >> 21) & 0x1FF) * 8, &pde.to_le_bytes()).map_err(fault("page-table write"))
    }

    /// Maps the 4 KiB page at linear `la` to physical `pa` (user, writable), as an OS maps an
    /// enclave's ELRANGE onto its EPC pages.
    pub fn map_page(&mut self, la: u64, pa: u64) -> Result<(), OsError> {
        let pdpt = self.entry(self.pml4, (la >> 39) & 0x1FF)?;
        let pd = self.entry(pdpt, (la >> 30) & 0x1FF)?;
        let pt = self.entry(pd, (la >> 21) & 0x1FF)?;
        let pte = (pa & !0xFFF) | FLAGS;
        self.cpu.write(pt + ((la >> 12) & 0x1FF) * 8, &pte.to_le_bytes()).map_err(fault("page-table write"))
    }

    /// The processor.
    pub fn cpu(&mut self) -> &mut C {
        &mut self.cpu
    }

    /// Copies `bytes` into fresh scratch RAM aligned to `align` and returns its linear address.
    pub fn scratch(&mut self, bytes: &[u8], align: u64) -> Result<u64, OsError> {
        let at = self.next_ram.next_multiple_of(align.max(1));
        let end = at + bytes.len() as u64;
        if end > self.window.end {
            return Err(OsError::OutOfRam { needed: end, ram: self.ram_bytes });
        }
        self.cpu.write(at, bytes).map_err(fault("memory write"))?;
        self.next_ram = end;
        Ok(at)
    }

    /// Restricts the EPC allocator to `[base, base + size)` (several OS instances on one platform,
    /// each on its own logical processor, then never hand out the same page).
    pub fn limit_epc(&mut self, base: u64, size: u64) {
        self.epc = vec![(base, size)];
        self.free_epc.clear();
        self.next_epc = (0, 0);
    }

    /// Releases all scratch memory (operands are consumed by the time a leaf returns).
    pub fn reset_scratch(&mut self) {
        self.next_ram = self.window.start + TABLES;
    }

    /// Total EPC pages enumerated.
    pub fn epc_pages(&self) -> u64 {
        self.epc.iter().map(|&(_, s)| s / 4096).sum()
    }

    /// A free EPC page (linear = physical address), from pages returned by [`Self::free_epc`]
    /// first, then never-used ones.
    pub fn alloc_epc(&mut self) -> Option<u64> {
        if let Some(p) = self.free_epc.pop() {
            return Some(p);
        }
        let (section, offset) = &mut self.next_epc;
        while let Some(&(base, size)) = self.epc.get(*section) {
            if *offset < size {
                let p = base + *offset;
                *offset += 4096;
                return Some(p);
            }
            *section += 1;
            *offset = 0;
        }
        None
    }

    /// Returns an EPC page to the allocator (after EREMOVE).
    pub fn free_epc(&mut self, page: u64) {
        self.free_epc.push(page);
    }

    /// Runs an ENCLS leaf and decodes its status.
    pub fn encls(&mut self, leaf: Encls, rbx: u64, rcx: u64, rdx: u64) -> Result<LeafStatus, Exception> {
        Ok(self.cpu.encls_leaf(leaf, rbx, rcx, rdx)?.status())
    }

    /// ECREATE + EADD + EEXTEND for a load plan (SGX.md §3.4), with SECS attributes and MISCSELECT
    /// from the SIGSTRUCT (INIT cleared) and BASEADDR `base`.
    pub fn build(&mut self, plan: &LoadPlan, sig: &Sigstruct, base: u64) -> Result<BuiltEnclave, OsError> {
        let needed = plan.pages.len() as u64 + 1;
        let free = self.epc_pages() - self.epc_pages().min(self.used_epc());
        if needed > free {
            return Err(OsError::OutOfEpc { needed, free });
        }
        let mut secs = Secs::zeroed();
        secs.size = plan.size;
        secs.baseaddr = base;
        secs.ssaframesize = plan.ssaframesize;
        secs.miscselect = sig.miscselect;
        secs.attributes = sig.attributes;
        secs.attributes.flags &= !AttributesFlags::INIT.bits();
        let secs_epc = self.alloc_epc().ok_or(OsError::OutOfEpc { needed, free: 0 })?;
        let src = self.scratch(secs.bytes(), 4096)?;
        let secinfo = self.scratch(Secinfo::new(PageType::Secs, SecinfoFlags::empty()).bytes(), 64)?;
        let pageinfo =
            self.scratch(Pageinfo { linaddr: 0, srcpge: src, secinfo_or_pcmd: secinfo, secs: 0 }.bytes(), 32)?;
        self.encls(Encls::Ecreate, pageinfo, secs_epc, 0).map_err(fault("ECREATE"))?;
        self.reset_scratch();
        let mut pages = Vec::with_capacity(plan.pages.len());
        for page in &plan.pages {
            let epc = self.alloc_epc().ok_or(OsError::OutOfEpc { needed, free: 0 })?;
            let src = self.scratch(&page.content[..], 4096)?;
            let secinfo = self.scratch(page.secinfo().bytes(), 64)?;
            let pi = Pageinfo { linaddr: base + page.offset, srcpge: src, secinfo_or_pcmd: secinfo, secs: secs_epc };
            let pageinfo = self.scratch(pi.bytes(), 32)?;
            self.encls(Encls::Eadd, pageinfo, epc, 0).map_err(fault("EADD"))?;
            for chunk in page.measured_chunks() {
                self.encls(Encls::Eextend, secs_epc, epc + chunk.offset() as u64, 0).map_err(fault("EEXTEND"))?;
            }
            self.reset_scratch();
            self.map_page(base + page.offset, epc)?;
            pages.push(epc);
        }
        Ok(BuiltEnclave { secs: secs_epc, base, pages })
    }

    fn used_epc(&self) -> u64 {
        let consumed: u64 =
            self.epc.iter().take(self.next_epc.0).map(|&(_, s)| s / 4096).sum::<u64>() + self.next_epc.1 / 4096;
        consumed - self.free_epc.len() as u64
    }

    /// EINIT the way Linux does under flexible launch control: the hash MSRs are set to the
    /// signer's MRSIGNER (when writable) and the token is all zeros. Retries SGX_UNMASKED_EVENT.
    pub fn einit(&mut self, secs: u64, sig: &Sigstruct) -> Result<LeafStatus, OsError> {
        let mrsigner = vsgx_isa::measure::mrsigner(&sig.modulus);
        for (i, value) in msr::lehash_to_msrs(&mrsigner).into_iter().enumerate() {
            // Locked launch control: the write faults and EINIT judges the firmware's hash.
            let _ = self.cpu.wrmsr(msr::IA32_SGXLEPUBKEYHASH[i], value);
        }
        self.einit_with_token(secs, sig, &Einittoken::zeroed())
    }

    /// EINIT with an explicit token and whatever the hash MSRs hold; retries SGX_UNMASKED_EVENT
    /// up to 20 times as drivers do.
    pub fn einit_with_token(&mut self, secs: u64, sig: &Sigstruct, token: &Einittoken) -> Result<LeafStatus, OsError> {
        let sig_la = self.scratch(sig.bytes(), 4096)?;
        let token_la = self.scratch(token.bytes(), 512)?;
        let mut status = LeafStatus::Success;
        for _ in 0..20 {
            status = self.encls(Encls::Einit, sig_la, secs, token_la).map_err(fault("EINIT"))?;
            if status != LeafStatus::Error(vsgx_isa::status::SgxError::UnmaskedEvent) {
                break;
            }
        }
        self.reset_scratch();
        Ok(status)
    }
}

/// A BASEADDR for an enclave of `size` bytes: naturally aligned and clear of the identity-mapped
/// RAM and EPC; in the canonical lower half for 64-bit enclaves, below 4 GiB otherwise.
pub fn default_base(size: u64, mode64: bool) -> u64 {
    let size = size.max(4096);
    if mode64 { 0x1000_0000_0000u64.next_multiple_of(size) } else { 0x8000_0000u64.next_multiple_of(size) }
}

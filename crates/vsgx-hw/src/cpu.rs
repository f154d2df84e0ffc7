//! Bare-metal logical processors: software running directly on the platform (DESIGN §3).
//!
//! A [`BareMetalCpu`] implements `vsgx_isa::cpu::Cpu`: CPUID from the platform, per-processor
//! IA32_FEATURE_CONTROL and launch-enclave hash MSRs, CR3/CR0.PG/CPL as an OS sets them, a 4-level
//! page walk (4 KiB and 2 MiB pages) of page tables kept in the platform's RAM for every linear
//! address, abort-page semantics for non-enclave accesses to EPC, and ENCLS/ENCLV dispatch.
//!
//! ENCLU[EENTER]/[ERESUME] run the enclave's WebAssembly through `crate::exec`; enclave-mode
//! leaves issued by enclave code go through [`crate::leaves::EnclaveMode`].

use std::sync::Arc;

use vsgx_isa::cpu::{Cpl, Cpu, EnclaveExit, Exception, Gprs, InterruptLine, pfec};
use vsgx_isa::cpuid::CpuidResult;
use vsgx_isa::leaf::Enclu;
use vsgx_isa::msr::{self, FeatureControl, INTEL_LE_PUBKEY_HASH};

use crate::leaves::{self, Access, OperandAccess, Target};
use crate::platform::Platform;
use crate::tlb::{Tlb, Walk};

const PTE_P: u64 = 1 << 0;
const PTE_RW: u64 = 1 << 1;
const PTE_US: u64 = 1 << 2;
const PTE_PS: u64 = 1 << 7;
const PTE_ADDR: u64 = 0x000F_FFFF_FFFF_F000;

/// One logical processor of a [`Platform`], running software directly (no hypervisor).
#[derive(Debug)]
pub struct BareMetalCpu {
    platform: Arc<Platform>,
    mmu: Mmu,
    vmx_root: bool,
    feature_control: u64,
    interrupt: Arc<InterruptLine>,
    reset_epoch: u64,
    enclave_budget: Option<u64>,
}

/// The processor state the leaves see through [`OperandAccess`]: paging, privilege, TLB and the
/// launch-enclave hash. Kept apart from the rest so a leaf can borrow it while the platform is
/// borrowed from the processor (no reference-count traffic on the hot path).
#[derive(Debug, Clone)]
struct Mmu {
    platform: Arc<Platform>,
    cr3: u64,
    paging: bool,
    cpl: Cpl,
    tlb: Tlb,
    lehash: [u64; 4],
}

impl BareMetalCpu {
    /// A logical processor in its reset state: ring 0, paging off, firmware FEATURE_CONTROL,
    /// Intel's launch-enclave hash.
    pub fn new(platform: Arc<Platform>) -> Self {
        let reset_epoch = platform.reset_epoch();
        let mmu = Mmu {
            platform: Arc::clone(&platform),
            cr3: 0,
            paging: false,
            cpl: Cpl::Ring0,
            tlb: Tlb::EMPTY,
            lehash: [0; 4],
        };
        let mut cpu = Self {
            platform,
            mmu,
            vmx_root: false,
            feature_control: 0,
            interrupt: InterruptLine::new(),
            reset_epoch,
            enclave_budget: None,
        };
        cpu.reset_msrs();
        cpu
    }

    /// The platform this processor belongs to.
    pub fn platform(&self) -> &Arc<Platform> {
        &self.platform
    }

    /// Models a timer interrupt: each enclave entry may run for `fuel` units of WebAssembly work
    /// before an AEX (`None`: until it exits or another thread raises the interrupt line).
    pub fn set_enclave_budget(&mut self, fuel: Option<u64>) {
        self.enclave_budget = fuel;
    }

    /// VMXON/VMXOFF: ENCLV is only legal in VMX root operation (a hypervisor's processor).
    pub fn set_vmx_root(&mut self, on: bool) {
        self.vmx_root = on;
    }

    fn reset_msrs(&mut self) {
        self.feature_control = self.platform.config().feature_control_reset_value();
        self.mmu.lehash = msr::lehash_to_msrs(&INTEL_LE_PUBKEY_HASH);
    }

    /// Applies a power cycle that happened since this processor last ran.
    fn sync_power(&mut self) {
        let epoch = self.platform.reset_epoch();
        if epoch != self.reset_epoch {
            self.reset_epoch = epoch;
            self.reset_msrs();
        }
    }

    fn fc(&self) -> FeatureControl {
        FeatureControl::from_bits_retain(self.feature_control)
    }

    /// Walks the page tables at CR3 for `linear` (see `Mmu::walk`).
    pub fn walk(&self, linear: u64, access: Access) -> Result<u64, Exception> {
        self.mmu.walk(linear, access)
    }
}

impl Mmu {
    fn read_phys_u64(&self, addr: u64) -> u64 {
        let mut b = [0u8; 8];
        self.read_phys(addr, &mut b);
        u64::from_le_bytes(b)
    }

    /// Physical read: RAM, else all ones (EPC abort page, or nothing there).
    fn read_phys(&self, addr: u64, buf: &mut [u8]) {
        if self.platform.ram().read(addr, buf).is_err() {
            buf.fill(0xFF);
        }
    }

    /// Physical write: RAM, else dropped. Flushes the TLB (the write may change a page table).
    fn write_phys(&mut self, addr: u64, data: &[u8]) {
        self.tlb.flush();
        let _ = self.platform.ram().write(addr, data);
    }

    /// Walks the 4-level page tables at CR3 for `linear` (4 KiB and 2 MiB pages) and checks the
    /// access against the combined permissions; returns the physical address.
    pub fn walk(&self, linear: u64, access: Access) -> Result<u64, Exception> {
        if !self.paging {
            return Ok(linear);
        }
        let top = linear >> 47;
        if top != 0 && top != (1 << 17) - 1 {
            return Err(Exception::GP0);
        }
        let w = self.walk_tables(linear).map_err(|present| self.page_fault(linear, access, present))?;
        self.check(linear, access, w)
    }

    fn page_fault(&self, linear: u64, access: Access, present: bool) -> Exception {
        let mut code = if present { pfec::P } else { 0 };
        if access == Access::Write {
            code |= pfec::W;
        }
        if self.cpl == Cpl::Ring3 {
            code |= pfec::US;
        }
        Exception::PageFault { linear, error_code: code }
    }

    fn check(&self, linear: u64, access: Access, w: Walk) -> Result<u64, Exception> {
        if (access == Access::Write && !w.writable) || (self.cpl == Cpl::Ring3 && !w.user) {
            return Err(self.page_fault(linear, access, true));
        }
        Ok(w.phys)
    }

    /// The raw walk; `Err(false)` for a not-present entry. Non-canonical addresses are reported
    /// as not present here and turned into #GP by the caller.
    fn walk_tables(&self, linear: u64) -> Result<Walk, bool> {
        let mut table = self.cr3 & PTE_ADDR;
        let (mut writable, mut user) = (true, true);
        for level in (0..4).rev() {
            let index = (linear >> (12 + 9 * level)) & 0x1FF;
            let entry = self.read_phys_u64(table + index * 8);
            if entry & PTE_P == 0 {
                return Err(false);
            }
            writable &= entry & PTE_RW != 0;
            user &= entry & PTE_US != 0;
            if level == 1 && entry & PTE_PS != 0 {
                let phys = (entry & PTE_ADDR & !0x1F_FFFF) | (linear & 0x1F_FFFF);
                return Ok(Walk { phys, large: true, writable, user });
            }
            table = entry & PTE_ADDR;
        }
        Ok(Walk { phys: table | (linear & 0xFFF), large: false, writable, user })
    }

    /// Translates through the TLB, walking the page tables on a miss.
    fn translate_cached(&mut self, linear: u64, access: Access) -> Result<u64, Exception> {
        if !self.paging {
            return Ok(linear);
        }
        let top = linear >> 47;
        if top != 0 && top != (1 << 17) - 1 {
            return Err(Exception::GP0);
        }
        let w = match self.tlb.lookup(linear) {
            Some(w) => w,
            None => {
                let w = self.walk_tables(linear).map_err(|present| self.page_fault(linear, access, present))?;
                self.tlb.insert(linear, w);
                w
            }
        };
        self.check(linear, access, w)
    }

    fn target(&self, phys: u64) -> Target {
        if self.platform.epc().contains(phys) { Target::Epc(phys) } else { Target::Memory(phys) }
    }
}

impl OperandAccess for Mmu {
    fn translate(&mut self, linear: u64, access: Access) -> Result<Target, Exception> {
        let phys = self.translate_cached(linear, access)?;
        Ok(self.target(phys))
    }

    fn read_memory(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), Exception> {
        self.read_phys(addr, buf);
        Ok(())
    }

    fn write_memory(&mut self, addr: u64, data: &[u8]) -> Result<(), Exception> {
        self.write_phys(addr, data);
        Ok(())
    }

    fn cpl(&self) -> Cpl {
        self.cpl
    }

    fn lehash(&self) -> [u8; 32] {
        msr::msrs_to_lehash(&self.lehash)
    }
}

impl crate::exec::AddressSpace for Mmu {
    fn boxed_clone(&self) -> Box<dyn crate::exec::AddressSpace> {
        Box::new(self.clone())
    }
}

impl OperandAccess for BareMetalCpu {
    fn translate(&mut self, linear: u64, access: Access) -> Result<Target, Exception> {
        self.mmu.translate(linear, access)
    }

    fn read_memory(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), Exception> {
        self.mmu.read_memory(addr, buf)
    }

    fn write_memory(&mut self, addr: u64, data: &[u8]) -> Result<(), Exception> {
        self.mmu.write_memory(addr, data)
    }

    fn cpl(&self) -> Cpl {
        self.mmu.cpl
    }

    fn lehash(&self) -> [u8; 32] {
        self.mmu.lehash()
    }
}

impl Cpu for BareMetalCpu {
    fn cpuid(&mut self, leaf: u32, subleaf: u32) -> CpuidResult {
        self.platform.cpuid(leaf, subleaf)
    }

    fn rdmsr(&mut self, msr: u32) -> Result<u64, Exception> {
        self.sync_power();
        match msr {
            msr::IA32_FEATURE_CONTROL => Ok(self.feature_control),
            msr::IA32_SGXLEPUBKEYHASH0..=msr::IA32_SGXLEPUBKEYHASH3 if self.platform.capabilities().flc => {
                Ok(self.mmu.lehash[(msr - msr::IA32_SGXLEPUBKEYHASH0) as usize])
            }
            _ => Err(Exception::GP0),
        }
    }

    fn wrmsr(&mut self, msr: u32, value: u64) -> Result<(), Exception> {
        self.sync_power();
        match msr {
            msr::IA32_FEATURE_CONTROL => {
                let mut writable = FeatureControl::LOCK | FeatureControl::SGX_ENABLE;
                if self.platform.capabilities().flc {
                    writable |= FeatureControl::SGX_LC;
                }
                if self.fc().contains(FeatureControl::LOCK) || value & !writable.bits() != 0 {
                    return Err(Exception::GP0);
                }
                self.feature_control = value;
                Ok(())
            }
            msr::IA32_SGXLEPUBKEYHASH0..=msr::IA32_SGXLEPUBKEYHASH3 => {
                let fc = self.fc();
                if !self.platform.capabilities().flc || !fc.contains(FeatureControl::LOCK | FeatureControl::SGX_LC) {
                    return Err(Exception::GP0);
                }
                self.mmu.lehash[(msr - msr::IA32_SGXLEPUBKEYHASH0) as usize] = value;
                Ok(())
            }
            _ => Err(Exception::GP0),
        }
    }

    fn encls(&mut self, regs: &mut Gprs) -> Result<(), Exception> {
        self.sync_power();
        if self.mmu.cpl != Cpl::Ring0 {
            return Err(Exception::InvalidOpcode);
        }
        let leaf = leaves::encls_leaf(&self.platform, regs.rax, self.fc().sgx_usable(), self.mmu.paging)?;
        leaves::execute_encls(&self.platform, &mut self.mmu, leaf, regs)
    }

    fn enclu(&mut self, regs: &mut Gprs) -> Result<EnclaveExit, Exception> {
        self.sync_power();
        if self.mmu.cpl != Cpl::Ring3 {
            return Err(Exception::InvalidOpcode);
        }
        if !self.fc().sgx_usable() || !self.mmu.paging {
            return Err(Exception::GP0);
        }
        let entry = crate::exec::Entry {
            platform: &self.platform,
            mem: Box::new(self.mmu.clone()),
            interrupt: &self.interrupt,
            budget: self.enclave_budget,
        };
        match Enclu::from_u32(regs.rax as u32) {
            Some(Enclu::Eenter) => self.platform.executor().eenter(entry, regs),
            Some(Enclu::Eresume) => self.platform.executor().eresume(entry, regs),
            // Not in enclave mode: every enclave-mode leaf is #GP(0).
            _ => Err(Exception::GP0),
        }
    }

    fn enclv(&mut self, regs: &mut Gprs) -> Result<(), Exception> {
        self.sync_power();
        if !self.platform.capabilities().enclv || !self.vmx_root || self.mmu.cpl != Cpl::Ring0 {
            return Err(Exception::InvalidOpcode);
        }
        if !self.fc().sgx_usable() || !self.mmu.paging {
            return Err(Exception::GP0);
        }
        leaves::execute_enclv(&self.platform, &mut self.mmu, regs)
    }

    fn read(&mut self, linear: u64, buf: &mut [u8]) -> Result<(), Exception> {
        let mut done = 0;
        while done < buf.len() {
            let la = linear.wrapping_add(done as u64);
            let n = (4096 - (la & 0xFFF) as usize).min(buf.len() - done);
            match self.mmu.translate(la, Access::Read)? {
                Target::Epc(_) => buf[done..done + n].fill(0xFF),
                Target::Memory(pa) => self.mmu.read_phys(pa, &mut buf[done..done + n]),
            }
            done += n;
        }
        Ok(())
    }

    fn write(&mut self, linear: u64, data: &[u8]) -> Result<(), Exception> {
        // Translate every page first so a fault leaves memory untouched.
        let mut targets = Vec::new();
        let mut done = 0;
        while done < data.len() {
            let la = linear.wrapping_add(done as u64);
            let n = (4096 - (la & 0xFFF) as usize).min(data.len() - done);
            targets.push((self.mmu.translate(la, Access::Write)?, done, n));
            done += n;
        }
        for (target, at, n) in targets {
            if let Target::Memory(pa) = target {
                self.mmu.write_phys(pa, &data[at..at + n]);
            }
        }
        Ok(())
    }

    fn set_cr3(&mut self, cr3: u64) {
        self.mmu.cr3 = cr3;
        self.mmu.tlb.flush();
    }

    fn cr3(&self) -> u64 {
        self.mmu.cr3
    }

    fn set_paging(&mut self, enabled: bool) {
        self.mmu.paging = enabled;
        self.mmu.tlb.flush();
    }

    fn paging(&self) -> bool {
        self.mmu.paging
    }

    fn set_cpl(&mut self, cpl: Cpl) {
        // TLB entries carry the U/S permission, so a ring switch needs no flush.
        self.mmu.cpl = cpl;
    }

    fn cpl(&self) -> Cpl {
        self.mmu.cpl
    }

    fn interrupt_line(&self) -> Arc<InterruptLine> {
        Arc::clone(&self.interrupt)
    }
}

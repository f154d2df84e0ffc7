//! vCPUs: the `Cpu` trait for a domain (DESIGN §3, §5.3). CPUID and MSRs come from the domain's
//! policy; linear addresses go through the guest's page tables (in guest RAM) and then, for vEPC
//! guest-physical addresses, through the p2m to host EPC pages. ECREATE is trapped and checked
//! against the guest's CPUID when it differs from the host's; EINIT runs with the vCPU's virtual
//! hash MSRs; other leaves run natively with translated operands.

use std::sync::Arc;

use vsgx_hw::exec::{AddressSpace, Entry};
use vsgx_hw::leaves::{self, Access, OperandAccess, Target};
use vsgx_hw::tlb::{Tlb, Walk};
use vsgx_isa::cpu::{Cpl, Cpu, EnclaveExit, Exception, Gprs, InterruptLine, pfec};
use vsgx_isa::cpuid::CpuidResult;
use vsgx_isa::leaf::{Encls, Enclu};
use vsgx_isa::msr::{self, FeatureControl};
use vsgx_isa::{ArchStruct, AttributesFlags, Pageinfo, Secinfo, Secs, xfrm_is_legal};

use crate::domain::DomainShared;

const PTE_P: u64 = 1;
const PTE_RW: u64 = 2;
const PTE_US: u64 = 4;
const PTE_PS: u64 = 1 << 7;
const PTE_ADDR: u64 = 0x000F_FFFF_FFFF_F000;

/// Hypervisor-private operand memory (copies of trapped operands) is addressed with this bit, which
/// no guest-physical address has.
const HV_MEMORY: u64 = 1 << 62;
/// Linear addresses the hypervisor uses for its copies while it executes a trapped leaf.
const HV_LINEAR: u64 = 0xFFFF_F000_0000_0000;

/// A vCPU's address space: paging state, privilege, virtual hash MSRs and a TLB of guest walks
/// (linear → guest-physical; the p2m is looked up on every EPC access).
#[derive(Debug, Clone)]
pub struct GuestMmu {
    domain: Arc<DomainShared>,
    cr3: u64,
    paging: bool,
    cpl: Cpl,
    lehash: [u64; 4],
    tlb: Tlb,
}

impl GuestMmu {
    fn fault(&self, linear: u64, access: Access, present: bool) -> Exception {
        let mut code = if present { pfec::P } else { 0 };
        if access == Access::Write {
            code |= pfec::W;
        }
        if self.cpl == Cpl::Ring3 {
            code |= pfec::US;
        }
        Exception::PageFault { linear, error_code: code }
    }

    fn pte(&self, gpa: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.domain.ram.read(gpa, &mut b).ok()?;
        Some(u64::from_le_bytes(b))
    }

    /// Guest linear → guest physical, through the guest's 4-level page tables (uncached).
    pub fn guest_physical(&self, linear: u64, access: Access) -> Result<u64, Exception> {
        if !self.paging {
            return Ok(linear);
        }
        canonical(linear)?;
        let w = self.walk(linear).map_err(|present| self.fault(linear, access, present))?;
        self.check(linear, access, w)
    }

    fn check(&self, linear: u64, access: Access, w: Walk) -> Result<u64, Exception> {
        if (access == Access::Write && !w.writable) || (self.cpl == Cpl::Ring3 && !w.user) {
            return Err(self.fault(linear, access, true));
        }
        Ok(w.phys)
    }

    /// The raw walk; `Err(false)` for a not-present entry.
    fn walk(&self, linear: u64) -> Result<Walk, bool> {
        let mut table = self.cr3 & PTE_ADDR;
        let (mut writable, mut user) = (true, true);
        for level in (0..4).rev() {
            let index = (linear >> (12 + 9 * level)) & 0x1FF;
            let entry = self.pte(table + index * 8).unwrap_or(0);
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

    /// Guest linear → guest physical through the TLB.
    fn guest_physical_cached(&mut self, linear: u64, access: Access) -> Result<u64, Exception> {
        if !self.paging {
            return Ok(linear);
        }
        canonical(linear)?;
        let w = match self.tlb.lookup(linear) {
            Some(w) => w,
            None => {
                let w = self.walk(linear).map_err(|present| self.fault(linear, access, present))?;
                self.tlb.insert(linear, w);
                w
            }
        };
        self.check(linear, access, w)
    }
}

fn canonical(linear: u64) -> Result<(), Exception> {
    let top = linear >> 47;
    if top != 0 && top != (1 << 17) - 1 { Err(Exception::GP0) } else { Ok(()) }
}

impl OperandAccess for GuestMmu {
    fn translate(&mut self, linear: u64, access: Access) -> Result<Target, Exception> {
        let gpa = self.guest_physical_cached(linear, access)?;
        if self.domain.in_vepc(gpa) {
            // EPT: a vEPC GPA maps only to this domain's own EPC pages.
            return match self.domain.epc_of(gpa) {
                Some(hpa) => Ok(Target::Epc(hpa)),
                None => Err(Exception::PageFault { linear, error_code: pfec::P | pfec::SGX }),
            };
        }
        Ok(Target::Memory(gpa))
    }

    fn read_memory(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), Exception> {
        if self.domain.ram.read(gpa, buf).is_err() {
            buf.fill(0xFF);
        }
        Ok(())
    }

    fn write_memory(&mut self, gpa: u64, data: &[u8]) -> Result<(), Exception> {
        // The write may change a page table: no INVLPG in the Cpu trait, so flush.
        self.tlb.flush();
        let _ = self.domain.ram.write(gpa, data);
        Ok(())
    }

    fn cpl(&self) -> Cpl {
        self.cpl
    }

    fn lehash(&self) -> [u8; 32] {
        msr::msrs_to_lehash(&self.lehash)
    }
}

impl AddressSpace for GuestMmu {
    fn boxed_clone(&self) -> Box<dyn AddressSpace> {
        Box::new(self.clone())
    }
}

/// The guest's view while the hypervisor executes a trapped ECREATE: operands at [`HV_LINEAR`]
/// are the hypervisor's copies, everything else is the guest's.
struct TrappedOperands<'a> {
    guest: &'a mut GuestMmu,
    copies: Vec<u8>,
}

impl OperandAccess for TrappedOperands<'_> {
    fn translate(&mut self, linear: u64, access: Access) -> Result<Target, Exception> {
        if linear >= HV_LINEAR && linear - HV_LINEAR < self.copies.len() as u64 {
            return Ok(Target::Memory(HV_MEMORY | (linear - HV_LINEAR)));
        }
        self.guest.translate(linear, access)
    }

    fn read_memory(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), Exception> {
        if addr & HV_MEMORY != 0 {
            let at = (addr & !HV_MEMORY) as usize;
            let src = self.copies.get(at..at + buf.len()).ok_or(Exception::GP0)?;
            buf.copy_from_slice(src);
            return Ok(());
        }
        self.guest.read_memory(addr, buf)
    }

    fn write_memory(&mut self, addr: u64, data: &[u8]) -> Result<(), Exception> {
        if addr & HV_MEMORY != 0 {
            return Err(Exception::GP0);
        }
        self.guest.write_memory(addr, data)
    }

    fn cpl(&self) -> Cpl {
        self.guest.cpl
    }

    fn lehash(&self) -> [u8; 32] {
        self.guest.lehash()
    }
}

/// The architectural state of a vCPU that save/restore carries (everything but EPC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuState {
    /// CR3.
    pub cr3: u64,
    /// CR0.PG.
    pub paging: bool,
    /// Current privilege level (0..=3).
    pub cpl: u8,
    /// IA32_FEATURE_CONTROL.
    pub feature_control: u64,
    /// IA32_SGXLEPUBKEYHASH0-3.
    pub lehash: [u64; 4],
}

/// One virtual processor of a domain.
#[derive(Debug)]
pub struct Vcpu {
    mmu: GuestMmu,
    index: u32,
    feature_control: u64,
    interrupt: Arc<InterruptLine>,
    budget: Option<u64>,
}

impl Vcpu {
    /// A vCPU in its reset state.
    pub fn new(domain: Arc<DomainShared>, index: u32) -> Self {
        let lehash = msr::lehash_to_msrs(&domain.launch.lehash);
        let feature_control = domain.cpuid.feature_control(&domain.launch);
        Self {
            mmu: GuestMmu { domain, cr3: 0, paging: false, cpl: Cpl::Ring0, lehash, tlb: Tlb::EMPTY },
            index,
            feature_control,
            interrupt: InterruptLine::new(),
            budget: None,
        }
    }

    /// The vCPU's index in its domain.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The domain.
    pub fn domain(&self) -> &Arc<DomainShared> {
        &self.mmu.domain
    }

    /// Models a timer interrupt inside enclaves (see `BareMetalCpu::set_enclave_budget`).
    pub fn set_enclave_budget(&mut self, fuel: Option<u64>) {
        self.budget = fuel;
    }

    /// The state save/restore carries.
    pub fn state(&self) -> VcpuState {
        VcpuState {
            cr3: self.mmu.cr3,
            paging: self.mmu.paging,
            cpl: self.mmu.cpl as u8,
            feature_control: self.feature_control,
            lehash: self.mmu.lehash,
        }
    }

    /// Loads saved state (a restored domain's vCPU continues where the saved one stopped).
    pub fn load_state(&mut self, state: &VcpuState) {
        self.mmu.cr3 = state.cr3;
        self.mmu.paging = state.paging;
        self.mmu.tlb.flush();
        self.mmu.cpl = match state.cpl {
            0 => Cpl::Ring0,
            1 => Cpl::Ring1,
            2 => Cpl::Ring2,
            _ => Cpl::Ring3,
        };
        self.feature_control = state.feature_control;
        self.mmu.lehash = state.lehash;
    }

    /// Guest linear → guest physical (for tests and the toolstack's introspection).
    pub fn guest_physical(&self, linear: u64) -> Result<u64, Exception> {
        self.mmu.guest_physical(linear, Access::Read)
    }

    fn sgx_usable(&self) -> bool {
        FeatureControl::from_bits_retain(self.feature_control).sgx_usable()
    }

    /// ECREATE exit: copy PAGEINFO, SECINFO and the SECS out of guest memory once, check them
    /// against the guest's CPUID and policy (#GP on violation), then run ECREATE on the copies.
    fn trapped_ecreate(&mut self, regs: &mut Gprs) -> Result<(), Exception> {
        let d = Arc::clone(&self.mmu.domain);
        d.exits.count(Encls::Ecreate);
        let read = |mmu: &mut GuestMmu, la: u64, buf: &mut [u8]| -> Result<(), Exception> {
            match mmu.translate(la, Access::Read)? {
                Target::Memory(gpa) => mmu.read_memory(gpa, buf),
                Target::Epc(_) => Err(Exception::GP0),
            }
        };
        if !regs.rbx.is_multiple_of(32) || !regs.rcx.is_multiple_of(4096) {
            return Err(Exception::GP0);
        }
        let mut pageinfo = Pageinfo::zeroed();
        read(&mut self.mmu, regs.rbx, pageinfo.bytes_mut())?;
        if pageinfo.srcpge % 4096 != 0 || pageinfo.secinfo_or_pcmd % 64 != 0 {
            return Err(Exception::GP0);
        }
        let mut secinfo = Secinfo::zeroed();
        read(&mut self.mmu, pageinfo.secinfo_or_pcmd, secinfo.bytes_mut())?;
        let mut secs = Secs::zeroed();
        read(&mut self.mmu, pageinfo.srcpge, secs.bytes_mut())?;
        // KVM's checks (SGX.md §12): attributes, XFRM, MISCSELECT against the guest's CPUID, size.
        let allowed = d.cpuid.leaf1.allowed;
        let flags = AttributesFlags::from_bits_retain(secs.attributes.flags);
        let max = if flags.contains(AttributesFlags::MODE64BIT) {
            d.cpuid.leaf0.max_enclave_size_64
        } else {
            d.cpuid.leaf0.max_enclave_size_32
        } as u32;
        let violation = secs.attributes.flags & !allowed.flags != 0
            || secs.attributes.xfrm & !allowed.xfrm != 0
            || !xfrm_is_legal(secs.attributes.xfrm)
            || secs.miscselect & !d.cpuid.leaf0.miscselect != 0
            || (flags.contains(AttributesFlags::PROVISIONKEY) && !d.provision)
            || (max < 64 && secs.size >= 1u64 << max);
        if violation {
            return Err(Exception::GP0);
        }
        let mut copies = vec![0u8; 8192];
        copies[..4096].copy_from_slice(secs.bytes());
        copies[4096..4160].copy_from_slice(secinfo.bytes());
        let copy = Pageinfo {
            linaddr: pageinfo.linaddr,
            srcpge: HV_LINEAR,
            secinfo_or_pcmd: HV_LINEAR + 4096,
            secs: pageinfo.secs,
        };
        copies[4160..4192].copy_from_slice(copy.bytes());
        let mut access = TrappedOperands { guest: &mut self.mmu, copies };
        let mut hv_regs = *regs;
        hv_regs.rbx = HV_LINEAR + 4160;
        leaves::execute_encls(&d.platform, &mut access, Encls::Ecreate, &mut hv_regs)?;
        // ECREATE changes no registers; the guest's RBX stays its own.
        Ok(())
    }
}

impl Cpu for Vcpu {
    fn cpuid(&mut self, leaf: u32, subleaf: u32) -> CpuidResult {
        let d = &self.mmu.domain;
        d.cpuid.cpuid(leaf, subleaf, d.platform.cpuid(leaf, subleaf))
    }

    fn rdmsr(&mut self, msr: u32) -> Result<u64, Exception> {
        match msr {
            msr::IA32_FEATURE_CONTROL => Ok(self.feature_control),
            msr::IA32_SGXLEPUBKEYHASH0..=msr::IA32_SGXLEPUBKEYHASH3 if self.mmu.domain.cpuid.sgx_lc => {
                Ok(self.mmu.lehash[(msr - msr::IA32_SGXLEPUBKEYHASH0) as usize])
            }
            _ => Err(Exception::GP0),
        }
    }

    fn wrmsr(&mut self, msr: u32, value: u64) -> Result<(), Exception> {
        match msr {
            msr::IA32_SGXLEPUBKEYHASH0..=msr::IA32_SGXLEPUBKEYHASH3 => {
                let fc = FeatureControl::from_bits_retain(self.feature_control);
                if !self.mmu.domain.cpuid.sgx_lc || !fc.contains(FeatureControl::LOCK | FeatureControl::SGX_LC) {
                    return Err(Exception::GP0);
                }
                self.mmu.lehash[(msr - msr::IA32_SGXLEPUBKEYHASH0) as usize] = value;
                Ok(())
            }
            // FEATURE_CONTROL is locked by the guest's firmware; everything else is not modelled.
            _ => Err(Exception::GP0),
        }
    }

    fn encls(&mut self, regs: &mut Gprs) -> Result<(), Exception> {
        if self.mmu.cpl != Cpl::Ring0 {
            return Err(Exception::InvalidOpcode);
        }
        let d = Arc::clone(&self.mmu.domain);
        // The guest's enumeration decides which leaves exist for it.
        let leaf = leaves::encls_leaf(&d.platform, regs.rax, self.sgx_usable(), self.mmu.paging)?;
        let guest_has = match leaf {
            Encls::Eaug | Encls::Emodpr | Encls::Emodt => {
                d.cpuid.leaf0.leaves.contains(vsgx_isa::cpuid::SgxLeafSupport::SGX2)
            }
            Encls::Erdinfo | Encls::Etrackc | Encls::Eldbc | Encls::Elduc => false,
            _ => true,
        };
        if !guest_has {
            return Err(Exception::GP0);
        }
        match leaf {
            Encls::Ecreate if d.trap_ecreate => self.trapped_ecreate(regs),
            Encls::Einit if d.trap_einit => {
                // EINIT exit: run it with the guest's virtual hash MSRs (they are the MMU's lehash).
                d.exits.count(Encls::Einit);
                leaves::execute_encls(&d.platform, &mut self.mmu, leaf, regs)
            }
            _ => leaves::execute_encls(&d.platform, &mut self.mmu, leaf, regs),
        }
    }

    fn enclu(&mut self, regs: &mut Gprs) -> Result<EnclaveExit, Exception> {
        if self.mmu.cpl != Cpl::Ring3 {
            return Err(Exception::InvalidOpcode);
        }
        if !self.sgx_usable() || !self.mmu.paging {
            return Err(Exception::GP0);
        }
        let platform = Arc::clone(&self.mmu.domain.platform);
        let entry = Entry {
            platform: &platform,
            mem: Box::new(self.mmu.clone()),
            interrupt: &self.interrupt,
            budget: self.budget,
        };
        match Enclu::from_u32(regs.rax as u32) {
            Some(Enclu::Eenter) => platform.executor().eenter(entry, regs),
            Some(Enclu::Eresume) => platform.executor().eresume(entry, regs),
            _ => Err(Exception::GP0),
        }
    }

    fn enclv(&mut self, _regs: &mut Gprs) -> Result<(), Exception> {
        // Guests never see the oversubscription extensions.
        Err(Exception::InvalidOpcode)
    }

    fn read(&mut self, linear: u64, buf: &mut [u8]) -> Result<(), Exception> {
        let mut done = 0;
        while done < buf.len() {
            let la = linear.wrapping_add(done as u64);
            let n = (4096 - (la & 0xFFF) as usize).min(buf.len() - done);
            match self.mmu.translate(la, Access::Read)? {
                Target::Epc(_) => buf[done..done + n].fill(0xFF),
                Target::Memory(gpa) => self.mmu.read_memory(gpa, &mut buf[done..done + n])?,
            }
            done += n;
        }
        Ok(())
    }

    fn write(&mut self, linear: u64, data: &[u8]) -> Result<(), Exception> {
        let mut targets = Vec::new();
        let mut done = 0;
        while done < data.len() {
            let la = linear.wrapping_add(done as u64);
            let n = (4096 - (la & 0xFFF) as usize).min(data.len() - done);
            targets.push((self.mmu.translate(la, Access::Write)?, done, n));
            done += n;
        }
        for (target, at, n) in targets {
            if let Target::Memory(gpa) = target {
                self.mmu.write_memory(gpa, &data[at..at + n])?;
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
        self.mmu.cpl = cpl;
    }

    fn cpl(&self) -> Cpl {
        self.mmu.cpl
    }

    fn interrupt_line(&self) -> Arc<InterruptLine> {
        Arc::clone(&self.interrupt)
    }
}

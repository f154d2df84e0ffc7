//! The SGX driver (the shape of Linux's /dev/sgx_enclave): create, add pages, init, teardown
//! (DESIGN §6). Enclaves are loaded from SGXS + SIGSTRUCT and their ELRANGE is mapped onto their
//! EPC pages in the kernel's page tables.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use vsgx_isa::cpu::{Cpu, Exception, LeafStatus};
use vsgx_isa::leaf::Encls;
use vsgx_isa::sgxs::LoadPlan;
use vsgx_isa::status::SgxError;
use vsgx_isa::{
    ArchStruct, AttributesFlags, Einittoken, PageType, Pageinfo, Secinfo, SecinfoFlags, Secs, Sigstruct, msr,
};

use crate::GuestError;
use crate::kernel::{Kernel, fault};

/// A driver-assigned enclave id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EnclaveId(pub u32);

/// Lifecycle of an enclave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnclaveState {
    /// Initialized and usable.
    Ready,
    /// Its EPC is gone (power transition or migration): only teardown remains.
    Lost,
}

/// An enclave the driver built.
#[derive(Clone, Debug)]
pub struct Enclave {
    /// SECS EPC page (linear = physical).
    pub secs: u64,
    /// BASEADDR.
    pub base: u64,
    /// SIZE.
    pub size: u64,
    /// EPC page backing each page offset.
    pub pages: BTreeMap<u64, u64>,
    /// Offsets of the TCS pages.
    pub tcs: Vec<u64>,
    /// MRENCLAVE.
    pub mrenclave: [u8; 32],
    /// MRSIGNER.
    pub mrsigner: [u8; 32],
    /// State.
    pub state: EnclaveState,
}

/// Enclave linear addresses handed out by the driver start here (above any RAM or EPC GPA).
const ELRANGE_START: u64 = 0x1000_0000_0000;

/// The driver: a kernel and its enclaves.
#[derive(Debug)]
pub struct Driver<C: Cpu> {
    kernel: Kernel<C>,
    enclaves: BTreeMap<EnclaveId, Enclave>,
    next_id: u32,
    next_base: u64,
}

impl<C: Cpu> Driver<C> {
    /// A driver over a booted kernel.
    pub fn new(kernel: Kernel<C>) -> Self {
        Self { kernel, enclaves: BTreeMap::new(), next_id: 1, next_base: ELRANGE_START }
    }

    /// The kernel.
    pub fn kernel(&mut self) -> &mut Kernel<C> {
        &mut self.kernel
    }

    /// An enclave.
    pub fn enclave(&self, id: EnclaveId) -> Option<&Enclave> {
        self.enclaves.get(&id)
    }

    /// Every enclave.
    pub fn enclaves(&self) -> impl Iterator<Item = (EnclaveId, &Enclave)> {
        self.enclaves.iter().map(|(id, e)| (*id, e))
    }

    /// Marks an enclave lost (its EPC is gone).
    pub fn mark_lost(&mut self, id: EnclaveId) {
        if let Some(e) = self.enclaves.get_mut(&id) {
            e.state = EnclaveState::Lost;
        }
    }

    fn encls(&mut self, leaf: Encls, rbx: u64, rcx: u64, rdx: u64) -> Result<LeafStatus, Exception> {
        Ok(self.kernel.cpu().encls_leaf(leaf, rbx, rcx, rdx)?.status())
    }

    /// A naturally aligned BASEADDR for an enclave of `size` bytes (64-bit enclaves).
    fn place(&mut self, size: u64) -> u64 {
        let base = self.next_base.next_multiple_of(size.max(4096));
        self.next_base = base + size;
        base
    }

    /// Builds and initializes an enclave from an SGXS stream and its SIGSTRUCT.
    pub fn load(&mut self, sgxs: &[u8], sig: &Sigstruct) -> Result<EnclaveId, GuestError> {
        let plan = LoadPlan::from_sgxs(sgxs).map_err(GuestError::Image)?;
        let mrenclave = vsgx_isa::sgxs::measure(sgxs).map_err(GuestError::Image)?.mrenclave;
        let needed = plan.pages.len() as u64 + 1;
        if needed > self.kernel.free_epc_pages() {
            return Err(GuestError::EpcShort { needed, free: self.kernel.free_epc_pages() });
        }
        let base = self.place(plan.size);
        let mut secs = Secs::zeroed();
        secs.size = plan.size;
        secs.baseaddr = base;
        secs.ssaframesize = plan.ssaframesize;
        secs.miscselect = sig.miscselect;
        secs.attributes = sig.attributes;
        secs.attributes.flags &= !AttributesFlags::INIT.bits();
        let mut used = Vec::new();
        let result = self.build(&plan, &secs, &mut used);
        let (secs_epc, pages, tcs) = match result {
            Ok(v) => v,
            Err(e) => {
                self.release(&used);
                return Err(e);
            }
        };
        if let Err(e) = self.init(secs_epc, sig) {
            used.push(secs_epc);
            self.release(&used);
            return Err(e);
        }
        let id = EnclaveId(self.next_id);
        self.next_id += 1;
        let mrsigner = vsgx_isa::measure::mrsigner(&sig.modulus);
        self.enclaves.insert(
            id,
            Enclave {
                secs: secs_epc,
                base,
                size: plan.size,
                pages,
                tcs,
                mrenclave,
                mrsigner,
                state: EnclaveState::Ready,
            },
        );
        Ok(id)
    }

    /// ECREATE + EADD + EEXTEND; `used` collects EPC pages to give back on failure.
    #[allow(clippy::type_complexity)]
    fn build(
        &mut self,
        plan: &LoadPlan,
        secs: &Secs,
        used: &mut Vec<u64>,
    ) -> Result<(u64, BTreeMap<u64, u64>, Vec<u64>), GuestError> {
        let scratch = self.kernel.alloc_ram_page()?;
        let operands = self.kernel.alloc_ram_page()?;
        let secs_epc = self.kernel.alloc_epc_page()?;
        used.push(secs_epc);
        let cpu = self.kernel.cpu();
        cpu.write(scratch, secs.bytes()).map_err(fault)?;
        cpu.write(operands + 64, Secinfo::new(PageType::Secs, SecinfoFlags::empty()).bytes()).map_err(fault)?;
        let pi = Pageinfo { linaddr: 0, srcpge: scratch, secinfo_or_pcmd: operands + 64, secs: 0 };
        cpu.write(operands, pi.bytes()).map_err(fault)?;
        self.encls(Encls::Ecreate, operands, secs_epc, 0).map_err(|e| GuestError::Leaf("ECREATE", e))?;
        let mut pages = BTreeMap::new();
        let mut tcs = Vec::new();
        for page in &plan.pages {
            let epc = self.kernel.alloc_epc_page()?;
            used.push(epc);
            let la = secs.baseaddr + page.offset;
            let cpu = self.kernel.cpu();
            cpu.write(scratch, &page.content[..]).map_err(fault)?;
            cpu.write(operands + 64, page.secinfo().bytes()).map_err(fault)?;
            let pi = Pageinfo { linaddr: la, srcpge: scratch, secinfo_or_pcmd: operands + 64, secs: secs_epc };
            cpu.write(operands, pi.bytes()).map_err(fault)?;
            self.encls(Encls::Eadd, operands, epc, 0).map_err(|e| GuestError::Leaf("EADD", e))?;
            for chunk in page.measured_chunks() {
                self.encls(Encls::Eextend, secs_epc, epc + chunk.offset() as u64, 0)
                    .map_err(|e| GuestError::Leaf("EEXTEND", e))?;
            }
            self.kernel.map_page(la, Some(epc))?;
            if page.page_type() == Some(PageType::Tcs) {
                tcs.push(page.offset);
            }
            pages.insert(page.offset, epc);
        }
        self.kernel.free_ram_page(scratch);
        self.kernel.free_ram_page(operands);
        Ok((secs_epc, pages, tcs))
    }

    /// EINIT as Linux does it under flexible launch control: the hash MSRs are set to the signer's
    /// MRSIGNER right before EINIT (when writable) with an all-zero token; SGX_UNMASKED_EVENT is
    /// retried.
    fn init(&mut self, secs_epc: u64, sig: &Sigstruct) -> Result<(), GuestError> {
        let sig_page = self.kernel.alloc_ram_page()?;
        let token_page = self.kernel.alloc_ram_page()?;
        let cpu = self.kernel.cpu();
        cpu.write(sig_page, sig.bytes()).map_err(fault)?;
        cpu.write(token_page, Einittoken::zeroed().bytes()).map_err(fault)?;
        if self.kernel.sgx().lc_writable {
            let hash = msr::lehash_to_msrs(&vsgx_isa::measure::mrsigner(&sig.modulus));
            for (i, value) in hash.into_iter().enumerate() {
                self.kernel.cpu().wrmsr(msr::IA32_SGXLEPUBKEYHASH[i], value).map_err(fault)?;
            }
        }
        let mut status = LeafStatus::Success;
        for _ in 0..50 {
            status =
                self.encls(Encls::Einit, sig_page, secs_epc, token_page).map_err(|e| GuestError::Leaf("EINIT", e))?;
            if status != LeafStatus::Error(SgxError::UnmaskedEvent) {
                break;
            }
        }
        self.kernel.free_ram_page(sig_page);
        self.kernel.free_ram_page(token_page);
        match status {
            LeafStatus::Success => Ok(()),
            LeafStatus::Error(e) | LeafStatus::Info(e) => Err(GuestError::Einit(e)),
            LeafStatus::Unknown(code) => {
                Err(GuestError::Einit(SgxError::from_code(code).unwrap_or(SgxError::InvalidSigStruct)))
            }
        }
    }

    /// EREMOVEs pages (two passes: SECS pages answering SGX_CHILD_PRESENT go in the second) and
    /// returns them to the allocator. Pages of a lost enclave answer success (SGX.md §10.2).
    fn release(&mut self, pages: &[u64]) {
        let mut retry = Vec::new();
        for &p in pages {
            match self.encls(Encls::Eremove, 0, p, 0) {
                Ok(LeafStatus::Error(SgxError::ChildPresent)) => retry.push(p),
                _ => self.kernel.free_epc_page(p),
            }
        }
        for p in retry {
            let _ = self.encls(Encls::Eremove, 0, p, 0);
            self.kernel.free_epc_page(p);
        }
    }

    /// Tears an enclave down, returning its EPC and unmapping its ELRANGE.
    pub fn destroy(&mut self, id: EnclaveId) -> Result<(), GuestError> {
        let e = self.enclaves.remove(&id).ok_or(GuestError::NoSuchEnclave(id.0))?;
        let mut pages: Vec<u64> = e.pages.values().copied().collect();
        pages.push(e.secs);
        self.release(&pages);
        for offset in e.pages.keys() {
            self.kernel.map_page(e.base + offset, None)?;
        }
        Ok(())
    }
}

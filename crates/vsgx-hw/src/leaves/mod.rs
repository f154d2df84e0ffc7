//! The SGX leaves (SGX.md §5–§7), checked in the order the SDM pseudocode checks them.
//!
//! Leaves are written against [`OperandAccess`]: the caller's view of memory. The bare-metal
//! processor walks its own page tables; a hypervisor's vCPU walks the guest's page tables and then
//! its p2m. Either way a linear operand resolves to a [`Target`]: an EPC page (host physical
//! address) or ordinary memory that only the accessor knows how to reach.
//!
//! Locking (see `crate::epc`): a leaf try-locks the EPC pages it operates on and answers a failed
//! try-lock with the leaf's architectural conflict outcome. A SECS reached *through* a child page
//! (child counts, tracking state, attributes) is locked with a blocking lock; the rule that keeps
//! this deadlock-free is that nothing holding a SECS ever blocks on another page.

mod build;
mod enclave;
mod enclv;
mod paging;
mod remove;
pub(crate) mod secs;
mod sgx2;

use vsgx_isa::cpu::{Cpl, Exception, Gprs, pfec, rflags};
use vsgx_isa::leaf::{Encls, Enclv};
use vsgx_isa::status::SgxError;
use vsgx_isa::{ArchStruct, PageType};

pub(crate) use build::canonical;
pub use enclave::{EnclaveMode, EnclaveOpError};

use crate::epc::{PageGuard, PageId};
use crate::platform::Platform;

/// Kind of memory access, for page-table permission checks and #PF error codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read.
    Read,
    /// Write.
    Write,
}

/// Where a linear address lands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// An EPC page: host physical address.
    Epc(u64),
    /// Ordinary memory at an accessor-defined physical address.
    Memory(u64),
}

/// The caller's address space, as the leaves need it.
pub trait OperandAccess {
    /// Translates a linear address through the caller's paging (and, for a guest, the p2m).
    /// Paging failures are ordinary #PFs.
    fn translate(&mut self, linear: u64, access: Access) -> Result<Target, Exception>;
    /// Reads ordinary memory at a [`Target::Memory`] address.
    fn read_memory(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), Exception>;
    /// Writes ordinary memory at a [`Target::Memory`] address.
    fn write_memory(&mut self, addr: u64, data: &[u8]) -> Result<(), Exception>;
    /// Privilege level of the caller (for #PF error codes).
    fn cpl(&self) -> Cpl;
    /// The executing logical processor's IA32_SGXLEPUBKEYHASH0-3 as a 32-byte hash (EINIT).
    fn lehash(&self) -> [u8; 32];
}

/// An architectural outcome a leaf ends with early.
pub(crate) enum Stop {
    /// A fault: registers untouched.
    Fault(Exception),
    /// A code in RAX with ZF = 1.
    Error(SgxError),
    /// A code in RAX with CF = 1 (ZF = 0).
    Info(SgxError),
}

impl From<Exception> for Stop {
    fn from(e: Exception) -> Self {
        Self::Fault(e)
    }
}

pub(crate) type LeafResult<T = ()> = Result<T, Stop>;

/// A leaf's view of the machine while it runs.
pub(crate) struct Ctx<'a> {
    pub p: &'a Platform,
    pub mem: &'a mut dyn OperandAccess,
}

pub(crate) const GP: Stop = Stop::Fault(Exception::GP0);

/// `align(x, n)`: #GP(0) unless `x` is `n`-aligned.
pub(crate) fn align(x: u64, n: u64) -> LeafResult {
    if x.is_multiple_of(n) { Ok(()) } else { Err(GP) }
}

impl<'a> Ctx<'a> {
    /// The fault an EPCM check raises: #PF with PFEC.SGX on SGX2 parts, #GP(0) on SGX1-only parts.
    pub fn epcm_fault(&self, linear: u64) -> Stop {
        if self.p.capabilities().sgx2 {
            let us = if self.mem.cpl() == Cpl::Ring3 { pfec::US } else { 0 };
            Stop::Fault(Exception::PageFault { linear, error_code: pfec::P | pfec::W | us | pfec::SGX })
        } else {
            GP
        }
    }

    /// The #PF for an operand that is mapped but not EPC (MODEL CHOICE: carries PFEC.SGX).
    fn not_epc_fault(&self, linear: u64) -> Stop {
        let us = if self.mem.cpl() == Cpl::Ring3 { pfec::US } else { 0 };
        Stop::Fault(Exception::PageFault { linear, error_code: pfec::P | us | pfec::SGX })
    }

    /// `epc(x)`: the EPC page `x` resolves to, and the offset inside it.
    pub fn epc(&mut self, linear: u64) -> LeafResult<(PageId, usize)> {
        match self.mem.translate(linear, Access::Read)? {
            Target::Epc(hpa) => match self.p.epc().page_of(hpa) {
                Some(page) => Ok((page, (hpa & 0xFFF) as usize)),
                None => Err(self.not_epc_fault(linear)),
            },
            Target::Memory(_) => Err(self.not_epc_fault(linear)),
        }
    }

    /// Resolves an ordinary-memory operand. An operand in EPC is refused with #GP(0) (MODEL
    /// CHOICE: leaves never read their normal-memory operands out of EPC).
    pub fn memory(&mut self, linear: u64, access: Access) -> LeafResult<u64> {
        match self.mem.translate(linear, access)? {
            Target::Memory(addr) => Ok(addr),
            Target::Epc(_) => Err(GP),
        }
    }

    /// Reads `len` bytes of ordinary memory at a linear address (within one page: every SGX
    /// operand is aligned so that it never crosses one).
    pub fn read_bytes(&mut self, linear: u64, buf: &mut [u8]) -> LeafResult {
        let addr = self.memory(linear, Access::Read)?;
        self.mem.read_memory(addr, buf)?;
        Ok(())
    }

    /// Reads an architectural structure from ordinary memory.
    pub fn read<T: ArchStruct>(&mut self, linear: u64) -> LeafResult<T> {
        let mut value = T::zeroed();
        self.read_bytes(linear, value.as_mut_bytes())?;
        Ok(value)
    }

    /// Reads a u64 from ordinary memory.
    pub fn read_u64(&mut self, linear: u64) -> LeafResult<u64> {
        let mut b = [0u8; 8];
        self.read_bytes(linear, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Resolves an output operand for writing (done before any state changes, so a fault leaves
    /// the machine untouched).
    pub fn writable(&mut self, linear: u64) -> LeafResult<u64> {
        self.memory(linear, Access::Write)
    }

    /// Writes to an address returned by [`Self::writable`].
    pub fn write_at(&mut self, addr: u64, data: &[u8]) -> LeafResult {
        self.mem.write_memory(addr, data)?;
        Ok(())
    }

    /// Try-locks a page for an architectural operation; `conflict` is the answer when busy.
    pub fn try_lock(&self, page: PageId, conflict: Stop) -> LeafResult<PageGuard<'a>> {
        self.p.epc().try_lock(page).ok_or(conflict)
    }

    /// Locks the SECS of a child page (blocking; see the module docs).
    pub fn lock_secs(&self, secs: PageId) -> LeafResult<PageGuard<'a>> {
        self.lock(secs)
    }

    /// Locks a page with a blocking lock, for accesses that are not architectural page
    /// operations (enclave data accesses). Never called while holding a SECS.
    pub fn lock(&self, page: PageId) -> LeafResult<PageGuard<'a>> {
        self.p.epc().lock(page).ok_or(GP)
    }
}

/// Checks shared by every ENCLS after the VM-exit point (SGX.md §5.1): FEATURE_CONTROL, leaf
/// enumerated, paging on. The caller has done the #UD and CPL checks.
pub fn encls_leaf(p: &Platform, rax: u64, sgx_enabled: bool, paging: bool) -> Result<Encls, Exception> {
    if !sgx_enabled {
        return Err(Exception::GP0);
    }
    let leaf = Encls::from_u32(rax as u32).ok_or(Exception::GP0)?;
    let caps = p.capabilities();
    let enumerated = match leaf {
        Encls::Eaug | Encls::Emodpr | Encls::Emodt => caps.sgx2,
        Encls::Erdinfo | Encls::Etrackc | Encls::Eldbc | Encls::Elduc => caps.encls_c,
        _ => true,
    };
    if !enumerated || !paging {
        return Err(Exception::GP0);
    }
    Ok(leaf)
}

/// Executes one ENCLS leaf, updating `regs` as the architecture does.
pub fn execute_encls(p: &Platform, mem: &mut dyn OperandAccess, leaf: Encls, regs: &mut Gprs) -> Result<(), Exception> {
    let mut cx = Ctx { p, mem };
    let (rbx, rcx, rdx) = (regs.rbx, regs.rcx, regs.rdx);
    let outcome: LeafResult<Option<u64>> = match leaf {
        Encls::Ecreate => build::ecreate(&mut cx, rbx, rcx).map(|_| None),
        Encls::Eadd => build::eadd(&mut cx, rbx, rcx).map(|_| None),
        Encls::Eextend => build::eextend(&mut cx, rbx, rcx).map(|_| None),
        Encls::Einit => build::einit(&mut cx, rbx, rcx, rdx).map(|_| Some(0)),
        Encls::Eremove => remove::eremove(&mut cx, rcx).map(|_| Some(0)),
        Encls::Edbgrd => remove::edbgrd(&mut cx, rcx).map(|v| {
            regs.rbx = v;
            Some(0)
        }),
        Encls::Edbgwr => remove::edbgwr(&mut cx, rbx, rcx).map(|_| Some(0)),
        Encls::Epa => paging::epa(&mut cx, rbx, rcx).map(|_| None),
        Encls::Eblock => paging::eblock(&mut cx, rcx).map(|_| Some(0)),
        Encls::Etrack => paging::etrack(&mut cx, rcx).map(|_| Some(0)),
        Encls::Ewb => paging::ewb(&mut cx, rbx, rcx, rdx).map(Some),
        Encls::Eldb => paging::eld(&mut cx, rbx, rcx, rdx, paging::Load::Blocked, false).map(|_| Some(0)),
        Encls::Eldu => paging::eld(&mut cx, rbx, rcx, rdx, paging::Load::Unblocked, false).map(|_| Some(0)),
        Encls::Eldbc => paging::eld(&mut cx, rbx, rcx, rdx, paging::Load::Blocked, true).map(|_| Some(0)),
        Encls::Elduc => paging::eld(&mut cx, rbx, rcx, rdx, paging::Load::Unblocked, true).map(|_| Some(0)),
        Encls::Erdinfo => paging::erdinfo(&mut cx, rbx, rcx).map(|_| Some(0)),
        Encls::Etrackc => paging::etrackc(&mut cx, rcx).map(|_| Some(0)),
        Encls::Eaug => sgx2::eaug(&mut cx, rbx, rcx).map(|_| None),
        Encls::Emodpr => sgx2::emodpr(&mut cx, rbx, rcx).map(|_| Some(0)),
        Encls::Emodt => sgx2::emodt(&mut cx, rbx, rcx).map(|_| Some(0)),
    };
    finish(regs, outcome)
}

/// Executes one ENCLV leaf (the caller has checked VMX operation and CPL).
pub fn execute_enclv(p: &Platform, mem: &mut dyn OperandAccess, regs: &mut Gprs) -> Result<(), Exception> {
    if !p.capabilities().enclv {
        return Err(Exception::InvalidOpcode);
    }
    let leaf = Enclv::from_u32(regs.rax as u32).ok_or(Exception::GP0)?;
    let mut cx = Ctx { p, mem };
    let (rbx, rcx, rdx) = (regs.rbx, regs.rcx, regs.rdx);
    let outcome = match leaf {
        Enclv::Edecvirtchild => enclv::virtchild(&mut cx, rbx, rcx, false),
        Enclv::Eincvirtchild => enclv::virtchild(&mut cx, rbx, rcx, true),
        Enclv::Esetcontext => enclv::esetcontext(&mut cx, rcx, rdx),
    };
    finish(regs, outcome.map(|_| Some(0)))
}

/// Applies a leaf's outcome to the registers: `Ok(Some(code))` = success code in RAX (flags
/// cleared, CF for informational codes), `Ok(None)` = RAX and RFLAGS untouched.
fn finish(regs: &mut Gprs, outcome: LeafResult<Option<u64>>) -> Result<(), Exception> {
    let set = |regs: &mut Gprs, rax: u64, flag: u64| {
        regs.rax = rax;
        regs.rflags = (regs.rflags & !rflags::STATUS_MASK) | flag;
    };
    match outcome {
        Ok(None) => Ok(()),
        Ok(Some(0)) => {
            set(regs, 0, 0);
            Ok(())
        }
        Ok(Some(code)) => {
            set(regs, code, rflags::CF);
            Ok(())
        }
        Err(Stop::Error(e)) => {
            set(regs, e.code(), rflags::ZF);
            Ok(())
        }
        Err(Stop::Info(e)) => {
            set(regs, e.code(), rflags::CF);
            Ok(())
        }
        Err(Stop::Fault(e)) => Err(e),
    }
}

/// The child count a SECS page stores (for [`Platform::census`]).
pub(crate) fn secs_child_count(page: &[u8; 4096]) -> u64 {
    secs::children(page)
}

/// Whether a page type is a child of a SECS.
pub(crate) fn is_child_type(pt: PageType) -> bool {
    matches!(pt, PageType::Reg | PageType::Tcs | PageType::Trim)
}

//! The hardware boundary: the [`Cpu`] trait (DESIGN §3).
//!
//! Everything software can ask of a logical processor, and nothing more. The bare-metal processor of
//! `vsgx-hw`, the vCPUs of `vsgx-hv` and (later) a paravirtual CPU inside a KVM guest implement it;
//! the guest kernel (`vsgx-guest`) is written against it alone.
//!
//! Instructions take and return architectural register state ([`Gprs`]): ENCLS/ENCLV read RAX
//! (leaf), RBX, RCX, RDX and write RAX/RBX/RFLAGS exactly as the SDM says; operands are linear
//! addresses of structures laid out byte-exactly in the caller's memory. Faults are values
//! ([`Exception`]), never panics.

use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::cpuid::CpuidResult;
use crate::leaf::{Encls, Enclu, Enclv};
use crate::status::SgxError;

/// Page-fault error code bits (the #PF error code pushed by the processor).
pub mod pfec {
    /// The page was present (protection violation rather than not-present).
    pub const P: u32 = 1 << 0;
    /// The access was a write.
    pub const W: u32 = 1 << 1;
    /// The access was made at CPL 3.
    pub const US: u32 = 1 << 2;
    /// A reserved bit was set in a paging structure.
    pub const RSVD: u32 = 1 << 3;
    /// The access was an instruction fetch.
    pub const ID: u32 = 1 << 4;
    /// The fault was caused by an EPCM check (SGX).
    pub const SGX: u32 = 1 << 15;
}

/// RFLAGS bits the SGX leaves report through.
pub mod rflags {
    /// Carry flag: informational outcomes.
    pub const CF: u64 = 1 << 0;
    /// Parity flag.
    pub const PF: u64 = 1 << 2;
    /// Auxiliary carry flag.
    pub const AF: u64 = 1 << 4;
    /// Zero flag: error outcomes.
    pub const ZF: u64 = 1 << 6;
    /// Sign flag.
    pub const SF: u64 = 1 << 7;
    /// Overflow flag.
    pub const OF: u64 = 1 << 11;
    /// The flags every code-returning leaf clears before setting ZF or CF.
    pub const STATUS_MASK: u64 = CF | PF | AF | ZF | SF | OF;
}

/// An exception raised by an instruction or a memory access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Exception {
    /// #GP(error code).
    GeneralProtection(u32),
    /// #PF: `linear` is CR2, `error_code` uses [`pfec`] bits.
    PageFault {
        /// Faulting linear address (CR2).
        linear: u64,
        /// Error code ([`pfec`]).
        error_code: u32,
    },
    /// #UD.
    InvalidOpcode,
    /// #NM.
    DeviceNotAvailable,
}

impl Exception {
    /// #GP(0), the usual SGX fault.
    pub const GP0: Self = Self::GeneralProtection(0);

    /// The exception vector number.
    pub const fn vector(&self) -> u8 {
        match self {
            Self::InvalidOpcode => 6,
            Self::DeviceNotAvailable => 7,
            Self::GeneralProtection(_) => 13,
            Self::PageFault { .. } => 14,
        }
    }

    /// Whether this is a #PF caused by an EPCM check (PFEC.SGX set).
    pub const fn is_epcm_fault(&self) -> bool {
        matches!(self, Self::PageFault { error_code, .. } if *error_code & pfec::SGX != 0)
    }
}

impl core::fmt::Display for Exception {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::GeneralProtection(code) => write!(f, "#GP({code})"),
            Self::PageFault { linear, error_code } => {
                write!(f, "#PF at {linear:#x} (error code {error_code:#x}")?;
                if error_code & pfec::SGX != 0 {
                    f.write_str(", SGX")?;
                }
                f.write_str(")")
            }
            Self::InvalidOpcode => f.write_str("#UD"),
            Self::DeviceNotAvailable => f.write_str("#NM"),
        }
    }
}

impl core::error::Error for Exception {}

/// General-purpose register state, RFLAGS and RIP: what the SGX instructions read and write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Gprs {
    /// RAX: leaf number in, return code out.
    pub rax: u64,
    /// RBX.
    pub rbx: u64,
    /// RCX.
    pub rcx: u64,
    /// RDX.
    pub rdx: u64,
    /// RSI.
    pub rsi: u64,
    /// RDI.
    pub rdi: u64,
    /// RSP.
    pub rsp: u64,
    /// RBP.
    pub rbp: u64,
    /// R8 … R15.
    pub r8_r15: [u64; 8],
    /// RFLAGS.
    pub rflags: u64,
    /// RIP.
    pub rip: u64,
}

impl Gprs {
    /// Registers for a leaf taking RBX, RCX and RDX (everything else zero).
    pub const fn leaf(rax: u32, rbx: u64, rcx: u64, rdx: u64) -> Self {
        Self { rax: rax as u64, rbx, rcx, rdx, rsi: 0, rdi: 0, rsp: 0, rbp: 0, r8_r15: [0; 8], rflags: 0, rip: 0 }
    }

    /// Interprets RAX/ZF/CF after a code-returning leaf (SGX.md §0).
    pub const fn status(&self) -> LeafStatus {
        if self.rflags & rflags::ZF != 0 {
            match SgxError::from_code(self.rax) {
                Some(e) => LeafStatus::Error(e),
                None => LeafStatus::Unknown(self.rax),
            }
        } else if self.rflags & rflags::CF != 0 {
            match SgxError::from_code(self.rax) {
                Some(e) => LeafStatus::Info(e),
                None => LeafStatus::Unknown(self.rax),
            }
        } else if self.rax == 0 {
            LeafStatus::Success
        } else {
            LeafStatus::Unknown(self.rax)
        }
    }
}

/// The outcome a code-returning leaf reports through RAX, ZF and CF.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LeafStatus {
    /// ZF = 0, CF = 0, RAX = 0.
    Success,
    /// ZF = 1: an error code.
    Error(SgxError),
    /// CF = 1, ZF = 0: an informational code (e.g. SGX_BLKSTATE, SGX_VA_SLOT_OCCUPIED).
    Info(SgxError),
    /// A combination no leaf produces (or RAX unassigned).
    Unknown(u64),
}

/// Privilege level of the code issuing an instruction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cpl {
    /// Ring 0: kernel (ENCLS, ENCLV).
    #[default]
    Ring0,
    /// Ring 1.
    Ring1,
    /// Ring 2.
    Ring2,
    /// Ring 3: user (ENCLU).
    Ring3,
}

/// Why an enclave entry returned control to the caller without EEXIT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AexCause {
    /// An exception inside the enclave; it is delivered to the caller after the AEX.
    Exception(Exception),
    /// An interrupt (IPI, budget expiry) preempted the enclave.
    Interrupt,
}

/// What ENCLU[EENTER]/ENCLU[ERESUME] ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EnclaveExit {
    /// The enclave executed EEXIT; registers are as the enclave left them, RIP = target, RCX = AEP.
    Eexit,
    /// Asynchronous exit; registers hold the synthetic AEX state (RAX = 3, RBX = TCS, RIP = AEP).
    Aex(AexCause),
}

/// An interrupt line into one logical processor, shareable across threads.
///
/// Another thread [`raise`](Self::raise)s it (an IPI); a processor running inside an enclave takes
/// an AEX at its next preemption point and [`take`](Self::take)s the interrupt. This is how
/// ETRACK's "IPI every CPU inside the enclave" step is done by a guest kernel and a hypervisor alike.
#[derive(Debug, Default)]
pub struct InterruptLine {
    pending: AtomicBool,
}

impl InterruptLine {
    /// A new line with no interrupt pending.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Sends an interrupt.
    pub fn raise(&self) {
        self.pending.store(true, Ordering::Release);
    }

    /// Whether an interrupt is pending (without acknowledging it).
    pub fn is_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// Acknowledges a pending interrupt; returns whether there was one.
    pub fn take(&self) -> bool {
        self.pending.swap(false, Ordering::AcqRel)
    }
}

/// A logical processor, as software sees it.
pub trait Cpu {
    /// CPUID with EAX = `leaf`, ECX = `subleaf`.
    fn cpuid(&mut self, leaf: u32, subleaf: u32) -> CpuidResult;

    /// RDMSR; #GP for unknown or disallowed MSRs.
    fn rdmsr(&mut self, msr: u32) -> Result<u64, Exception>;

    /// WRMSR; #GP for unknown, read-only or locked MSRs and disallowed values.
    fn wrmsr(&mut self, msr: u32, value: u64) -> Result<(), Exception>;

    /// ENCLS with `regs.rax` as the leaf. On return the registers are updated exactly as the
    /// architecture updates them (RAX/RFLAGS for code-returning leaves, RBX for EDBGRD, untouched
    /// for ECREATE/EADD/EEXTEND/EPA). `Err` is a fault; registers are then unchanged.
    fn encls(&mut self, regs: &mut Gprs) -> Result<(), Exception>;

    /// ENCLU with `regs.rax` as the leaf. From outside an enclave only EENTER and ERESUME are
    /// legal; they run the enclave until it exits. `Err` is a fault of the instruction itself
    /// (registers unchanged); an exception *inside* the enclave is an `Ok(EnclaveExit::Aex(..))`.
    fn enclu(&mut self, regs: &mut Gprs) -> Result<EnclaveExit, Exception>;

    /// ENCLV with `regs.rax` as the leaf (VMX root only).
    fn enclv(&mut self, regs: &mut Gprs) -> Result<(), Exception>;

    /// Reads memory at a linear address through the current page tables (non-enclave access:
    /// EPC reads as all ones).
    fn read(&mut self, linear: u64, buf: &mut [u8]) -> Result<(), Exception>;

    /// Writes memory at a linear address through the current page tables (non-enclave access:
    /// writes to EPC are dropped).
    fn write(&mut self, linear: u64, data: &[u8]) -> Result<(), Exception>;

    /// `mov cr3`: the root of the 4-level page tables, a physical address in this CPU's RAM.
    fn set_cr3(&mut self, cr3: u64);

    /// Current CR3.
    fn cr3(&self) -> u64;

    /// CR0.PG: with paging off, linear addresses are physical (SGX leaves then raise #GP(0)).
    fn set_paging(&mut self, enabled: bool);

    /// Current CR0.PG.
    fn paging(&self) -> bool;

    /// A ring switch.
    fn set_cpl(&mut self, cpl: Cpl);

    /// Current privilege level.
    fn cpl(&self) -> Cpl;

    /// The line other threads use to interrupt this processor.
    fn interrupt_line(&self) -> Arc<InterruptLine>;

    /// Convenience: runs ENCLS leaf `leaf` with RBX, RCX, RDX and returns the resulting registers.
    fn encls_leaf(&mut self, leaf: Encls, rbx: u64, rcx: u64, rdx: u64) -> Result<Gprs, Exception> {
        let mut regs = Gprs::leaf(leaf as u32, rbx, rcx, rdx);
        self.encls(&mut regs)?;
        Ok(regs)
    }

    /// Convenience: runs ENCLV leaf `leaf` with RBX, RCX, RDX and returns the resulting registers.
    fn enclv_leaf(&mut self, leaf: Enclv, rbx: u64, rcx: u64, rdx: u64) -> Result<Gprs, Exception> {
        let mut regs = Gprs::leaf(leaf as u32, rbx, rcx, rdx);
        self.enclv(&mut regs)?;
        Ok(regs)
    }

    /// Convenience: EENTER (`leaf` = [`Enclu::Eenter`]) or ERESUME on the TCS at `regs.rbx`.
    fn enclu_leaf(&mut self, leaf: Enclu, regs: &mut Gprs) -> Result<EnclaveExit, Exception> {
        regs.rax = leaf as u64;
        self.enclu(regs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_decoding() {
        let mut r = Gprs::default();
        assert_eq!(r.status(), LeafStatus::Success);
        r.rflags = rflags::ZF;
        r.rax = 13;
        assert_eq!(r.status(), LeafStatus::Error(SgxError::ChildPresent));
        r.rflags = rflags::CF;
        r.rax = 12;
        assert_eq!(r.status(), LeafStatus::Info(SgxError::VaSlotOccupied));
        r.rflags = 0;
        r.rax = 99;
        assert_eq!(r.status(), LeafStatus::Unknown(99));
    }

    #[test]
    fn exceptions() {
        let pf = Exception::PageFault { linear: 0x1000, error_code: pfec::P | pfec::W | pfec::SGX };
        assert!(pf.is_epcm_fault());
        assert_eq!(pf.vector(), 14);
        assert!(!Exception::GP0.is_epcm_fault());
        assert_eq!(alloc::format!("{pf}"), "#PF at 0x1000 (error code 0x8003, SGX)");
    }

    #[test]
    fn interrupt_line() {
        let line = InterruptLine::new();
        assert!(!line.take());
        line.raise();
        assert!(line.is_pending());
        assert!(line.take());
        assert!(!line.is_pending());
    }
}

//! A `Cpu` that the host can stop: how a runtime pulls a vCPU out of guest code.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use vsgx_isa::cpu::{Cpl, Cpu, EnclaveExit, Exception, Gprs, InterruptLine};
use vsgx_isa::cpuid::CpuidResult;

/// Wraps a vCPU. Once [`StoppableCpu::stop_flag`] is set, every ENCLS, ENCLU and ENCLV answers
/// `#UD`, so guest code inside an ECALL loop (AEX → ERESUME → …) or a driver retry loop unwinds to
/// the agent loop, which then exits.
///
/// Model choice: the guest never observes anything after the flag is set — its domain is being
/// destroyed — so what those instructions answer only has to end guest loops; `#UD` is what a
/// processor answers for an instruction that cannot run, and every guest path treats it as fatal.
/// Memory accesses keep working, so the guest can still write its last answer to the mailbox.
#[derive(Debug)]
pub struct StoppableCpu<C> {
    inner: C,
    stop: Arc<AtomicBool>,
}

impl<C: Cpu> StoppableCpu<C> {
    /// Wraps `inner`; it runs until the returned flag is set.
    pub fn new(inner: C) -> Self {
        Self { inner, stop: Arc::new(AtomicBool::new(false)) }
    }

    /// The flag that stops this vCPU (set it, then raise its interrupt line so a running enclave
    /// exits).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    fn running(&self) -> Result<(), Exception> {
        if self.stop.load(Ordering::Acquire) { Err(Exception::InvalidOpcode) } else { Ok(()) }
    }
}

impl<C: Cpu> Cpu for StoppableCpu<C> {
    fn cpuid(&mut self, leaf: u32, subleaf: u32) -> CpuidResult {
        self.inner.cpuid(leaf, subleaf)
    }

    fn rdmsr(&mut self, msr: u32) -> Result<u64, Exception> {
        self.inner.rdmsr(msr)
    }

    fn wrmsr(&mut self, msr: u32, value: u64) -> Result<(), Exception> {
        self.inner.wrmsr(msr, value)
    }

    fn encls(&mut self, regs: &mut Gprs) -> Result<(), Exception> {
        self.running()?;
        self.inner.encls(regs)
    }

    fn enclu(&mut self, regs: &mut Gprs) -> Result<EnclaveExit, Exception> {
        self.running()?;
        self.inner.enclu(regs)
    }

    fn enclv(&mut self, regs: &mut Gprs) -> Result<(), Exception> {
        self.running()?;
        self.inner.enclv(regs)
    }

    fn read(&mut self, linear: u64, buf: &mut [u8]) -> Result<(), Exception> {
        self.inner.read(linear, buf)
    }

    fn write(&mut self, linear: u64, data: &[u8]) -> Result<(), Exception> {
        self.inner.write(linear, data)
    }

    fn set_cr3(&mut self, cr3: u64) {
        self.inner.set_cr3(cr3);
    }

    fn cr3(&self) -> u64 {
        self.inner.cr3()
    }

    fn set_paging(&mut self, enabled: bool) {
        self.inner.set_paging(enabled);
    }

    fn paging(&self) -> bool {
        self.inner.paging()
    }

    fn set_cpl(&mut self, cpl: Cpl) {
        self.inner.set_cpl(cpl);
    }

    fn cpl(&self) -> Cpl {
        self.inner.cpl()
    }

    fn interrupt_line(&self) -> Arc<InterruptLine> {
        self.inner.interrupt_line()
    }
}

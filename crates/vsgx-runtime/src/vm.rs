//! A running guest: the guest kernel, SGX driver and agent on a thread that is vCPU 0.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use vsgx_guest::agent::{Agent, MAILBOX_SIZE};
use vsgx_guest::driver::Driver;
use vsgx_guest::kernel::{BootInfo, Kernel};
use vsgx_hv::domain::Domain;
use vsgx_hv::vcpu::Vcpu;
use vsgx_isa::cpu::{Cpu, InterruptLine};

use crate::cpu::StoppableCpu;
use crate::link::AgentLink;

/// Called on the vCPU thread after each answer (see [`GuestVm::boot_with_hook`]).
pub type AnswerHook = Arc<dyn Fn() + Send + Sync>;

/// Why a guest could not be started.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The domain has no vCPU 0.
    #[error("the domain has no vCPU")]
    NoVcpu,
    /// The mailbox is not inside the domain's memory.
    #[error("the agent mailbox [{base:#x}, +{size:#x}) is not backed by the domain's memory")]
    Mailbox {
        /// Its base.
        base: u64,
        /// The agent's mailbox size.
        size: usize,
    },
    /// The guest kernel refused to boot.
    #[error("the guest kernel did not boot: {0}")]
    Boot(String),
    /// The vCPU thread could not be started.
    #[error("cannot start the vCPU thread: {0}")]
    Thread(std::io::Error),
}

/// A guest running on vCPU 0 of a domain. Stop it ([`GuestVm::shutdown`], or drop it) before the
/// domain is destroyed: its vCPU must have left the domain's enclaves first.
#[derive(Debug)]
pub struct GuestVm {
    link: Arc<Mutex<AgentLink>>,
    doorbell: Sender<()>,
    stop: Arc<AtomicBool>,
    interrupt: Arc<InterruptLine>,
    thread: Option<JoinHandle<()>>,
}

impl GuestVm {
    /// Boots the guest kernel on vCPU 0 of `domain` with the memory map `boot` (which must report
    /// the mailbox and the vEPC as reserved), then serves agent requests through the mailbox at
    /// `mailbox` until shut down. Returns once the kernel has booted, or with the reason it did not.
    pub fn boot(domain: &Domain, boot: BootInfo, mailbox: u64) -> Result<Self, RuntimeError> {
        Self::boot_with_hook(domain, boot, mailbox, None)
    }

    /// [`GuestVm::boot`], and `on_answer` runs on the vCPU thread after every answer (and once
    /// when the vCPU stops): how an async host learns that [`AgentLink::poll`] has something.
    pub fn boot_with_hook(
        domain: &Domain,
        boot: BootInfo,
        mailbox: u64,
        on_answer: Option<AnswerHook>,
    ) -> Result<Self, RuntimeError> {
        if !domain.shared().ram.contains(mailbox, MAILBOX_SIZE) {
            return Err(RuntimeError::Mailbox { base: mailbox, size: MAILBOX_SIZE });
        }
        let vcpu = StoppableCpu::new(domain.vcpu(0).ok_or(RuntimeError::NoVcpu)?);
        let stop = vcpu.stop_flag();
        let interrupt = vcpu.interrupt_line();
        let (doorbell, rung) = mpsc::channel();
        let (answer, answered) = mpsc::channel();
        let (booted_tx, booted) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("dom{}-vcpu0", domain.shared().id.0))
            .spawn(move || {
                vcpu_main(vcpu, &boot, mailbox, &rung, &answer, &booted_tx, on_answer.as_deref());
                // Whoever waits for an answer learns that none is coming.
                drop(answer);
                if let Some(hook) = on_answer {
                    hook();
                }
            })
            .map_err(RuntimeError::Thread)?;
        match booted.recv() {
            Ok(Ok(())) => {}
            Ok(Err(why)) => {
                let _ = thread.join();
                return Err(RuntimeError::Boot(why));
            }
            Err(_) => {
                let _ = thread.join();
                return Err(RuntimeError::Boot("the vCPU thread ended during boot".into()));
            }
        }
        let link = AgentLink::new(Arc::clone(domain.shared()), mailbox, doorbell.clone(), answered, Arc::clone(&stop));
        Ok(Self { link: Arc::new(Mutex::new(link)), doorbell, stop, interrupt, thread: Some(thread) })
    }

    /// The host side of the agent mailbox (one request at a time: lock it for each request).
    pub fn agent(&self) -> Arc<Mutex<AgentLink>> {
        Arc::clone(&self.link)
    }

    /// Whether vCPU 0 still runs the guest (`false` once its thread ended, e.g. by a panic in
    /// the model).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the vCPU: a request in flight ends with an error, the thread exits and is joined.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Out of a running enclave (AEX), then out of the idle wait.
        self.interrupt.raise();
        let _ = self.doorbell.send(());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for GuestVm {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// vCPU 0: boot, then serve one request per doorbell until stopped.
fn vcpu_main(
    cpu: StoppableCpu<Vcpu>,
    boot: &BootInfo,
    mailbox: u64,
    rung: &Receiver<()>,
    answer: &Sender<Result<(), String>>,
    booted: &Sender<Result<(), String>>,
    on_answer: Option<&(dyn Fn() + Send + Sync)>,
) {
    let stop = cpu.stop_flag();
    let kernel = match Kernel::boot(cpu, boot) {
        Ok(kernel) => kernel,
        Err(e) => {
            let _ = booted.send(Err(e.to_string()));
            return;
        }
    };
    let _ = booted.send(Ok(()));
    let mut driver = Driver::new(kernel);
    let mut agent = Agent::new();
    while crate::recv_spinning(rung).is_ok() && !stop.load(Ordering::Acquire) {
        let served = match agent.serve(&mut driver, mailbox) {
            Ok(true) => Ok(()),
            Ok(false) => Err("the agent found no request in the mailbox".to_string()),
            Err(e) => Err(format!("the guest faulted serving the request: {e}")),
        };
        if answer.send(served).is_err() {
            break;
        }
        if let Some(hook) = on_answer {
            hook();
        }
    }
}

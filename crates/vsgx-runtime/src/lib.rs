//! `vsgx-runtime`: runs a domain's guest.
//!
//! The software-model runtime boots the `vsgx-guest` kernel, its SGX driver and its agent on a
//! thread that plays vCPU 0 of a `vsgx-hv` domain ([`GuestVm`]), and talks to the agent through
//! the mailbox in the domain's memory ([`AgentLink`]), with the codec `vsgx-guest` defines for
//! both sides. A KVM runtime (DESIGN §10) will offer the same two types with a real virtual machine
//! behind them.
//!
//! Walls: this crate knows domains (`vsgx-hv`) and guest code (`vsgx-guest`) but no config syntax,
//! layout rule or socket; the toolstack decides where the mailbox is and the daemon decides who may
//! ask what.

mod cpu;
mod link;
mod vm;

pub use cpu::StoppableCpu;
pub use link::{AgentError, AgentLink, Pending, called, destroyed, listed, load_step};
pub use vm::{AnswerHook, GuestVm, RuntimeError};
pub use vsgx_guest::agent::{
    CallResult, EnclaveInfo, EpcStats, Failure, ListedState, LoadedEnclave, MAX_CALL_OUTPUT, MAX_IMAGE_BYTES,
    MAX_NAME_BYTES, Request, Response, Status, load_requests,
};
pub use vsgx_guest::kernel::BootInfo;

/// How long a side of the mailbox polls for the other's signal before it sleeps.
const SPIN: std::time::Duration = std::time::Duration::from_micros(50);

/// Receives from `rx`, polling for up to [`SPIN`] before blocking: a request and its answer are
/// usually tens of microseconds apart, less than it takes to put a thread to sleep and wake it.
fn recv_spinning<T>(rx: &std::sync::mpsc::Receiver<T>) -> Result<T, std::sync::mpsc::RecvError> {
    let start = std::time::Instant::now();
    loop {
        match rx.try_recv() {
            Ok(v) => return Ok(v),
            Err(std::sync::mpsc::TryRecvError::Disconnected) => return Err(std::sync::mpsc::RecvError),
            Err(std::sync::mpsc::TryRecvError::Empty) if start.elapsed() < SPIN => std::hint::spin_loop(),
            Err(std::sync::mpsc::TryRecvError::Empty) => return rx.recv(),
        }
    }
}

//! The host side of the guest agent's mailbox.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvError, Sender};

use vsgx_guest::agent::{
    CallResult, EnclaveInfo, EpcStats, Failure, HEADER_SIZE, Header, LoadedEnclave, PAYLOAD_CAPACITY, Request,
    Response, decode_response, encode_request, load_requests,
};
use vsgx_hv::domain::DomainShared;

/// Why an agent request did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The guest executed the request and refused it (bad image, EINIT refused, no such enclave…).
    #[error("the guest refused: {0}")]
    Refused(Failure),
    /// The guest is not running (its domain is being destroyed) or its vCPU died.
    #[error("the guest is not running: {0}")]
    Down(String),
    /// The guest's answer broke the mailbox protocol (a guest bug or a hostile guest).
    #[error("the guest agent broke the mailbox protocol: {0}")]
    Protocol(String),
}

/// One guest's mailbox, from the host: writes a request, rings the vCPU, reads the answer. One
/// request at a time (callers share it behind a mutex).
#[derive(Debug)]
pub struct AgentLink {
    domain: Arc<DomainShared>,
    mailbox: u64,
    doorbell: Sender<()>,
    answered: Receiver<Result<(), String>>,
    stopped: Arc<AtomicBool>,
    sequence: u64,
}

impl AgentLink {
    pub(crate) fn new(
        domain: Arc<DomainShared>,
        mailbox: u64,
        doorbell: Sender<()>,
        answered: Receiver<Result<(), String>>,
        stopped: Arc<AtomicBool>,
    ) -> Self {
        Self { domain, mailbox, doorbell, answered, stopped, sequence: 0 }
    }

    /// The mailbox's guest-physical address.
    pub fn mailbox(&self) -> u64 {
        self.mailbox
    }

    /// Writes `request` into the mailbox and rings vCPU 0; the answer is collected with
    /// [`AgentLink::poll`] or [`AgentLink::wait`]. Send the next request only after this one's
    /// answer was collected.
    pub fn send(&mut self, request: &Request<'_>) -> Result<Pending, AgentError> {
        self.sequence += 1;
        let sequence = self.sequence;
        let bytes = encode_request(sequence, request).map_err(|e| AgentError::Refused(e.into()))?;
        let ram = &self.domain.ram;
        let mailbox = self.mailbox;
        let fault = |e| AgentError::Protocol(format!("the mailbox at {mailbox:#x} is not guest memory: {e}"));
        // The payload first, the header (whose state word makes the request visible) last.
        if bytes.len() > HEADER_SIZE {
            ram.write(mailbox + HEADER_SIZE as u64, &bytes[HEADER_SIZE..]).map_err(fault)?;
        }
        ram.write(mailbox, &bytes[..bytes.len().min(HEADER_SIZE)]).map_err(fault)?;
        if self.stopped.load(Ordering::Acquire) {
            return Err(Self::down());
        }
        self.doorbell.send(()).map_err(|_| Self::down())?;
        Ok(Pending { sequence, kind: request.kind() as u16 })
    }

    /// The answer to `pending` if the guest has given it (`None`: not yet; never blocks).
    pub fn poll(&mut self, pending: &Pending) -> Option<Result<Response, AgentError>> {
        match self.answered.try_recv() {
            Err(std::sync::mpsc::TryRecvError::Empty) => None,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => Some(self.collect(pending, Err(RecvError))),
            Ok(answer) => Some(self.collect(pending, Ok(answer))),
        }
    }

    /// Waits for the answer to `pending` (polling briefly, then sleeping).
    pub fn wait(&mut self, pending: &Pending) -> Result<Response, AgentError> {
        let answered = crate::recv_spinning(&self.answered);
        self.collect(pending, answered)
    }

    fn down() -> AgentError {
        AgentError::Down("its vCPU has stopped".into())
    }

    /// Reads the answer the vCPU signalled.
    fn collect(
        &self,
        pending: &Pending,
        answered: Result<Result<(), String>, RecvError>,
    ) -> Result<Response, AgentError> {
        // Whatever the guest answered while being stopped (its ENCLS/ENCLU fail) is not an answer.
        if self.stopped.load(Ordering::Acquire) {
            return Err(AgentError::Down("it was stopped during the request".into()));
        }
        match answered {
            Ok(Ok(())) => {}
            Ok(Err(why)) => return Err(AgentError::Protocol(why)),
            Err(_) => return Err(Self::down()),
        }
        let ram = &self.domain.ram;
        let fault = |e| AgentError::Protocol(format!("the mailbox at {:#x} is not guest memory: {e}", self.mailbox));
        let mut mailbox = vec![0u8; HEADER_SIZE];
        ram.read(self.mailbox, &mut mailbox).map_err(fault)?;
        let header = Header::decode(&mailbox).map_err(|e| AgentError::Protocol(e.to_string()))?;
        let payload = usize::try_from(header.payload_len).unwrap_or(usize::MAX).min(PAYLOAD_CAPACITY);
        mailbox.resize(HEADER_SIZE + payload, 0);
        ram.read(self.mailbox + HEADER_SIZE as u64, &mut mailbox[HEADER_SIZE..]).map_err(fault)?;
        let reply = decode_response(&mailbox).map_err(|e| AgentError::Protocol(e.to_string()))?;
        if (reply.sequence, reply.kind) != (pending.sequence, pending.kind) {
            return Err(AgentError::Protocol(format!(
                "answer to request {} (kind {}) arrived for request {} (kind {})",
                reply.sequence, reply.kind, pending.sequence, pending.kind
            )));
        }
        reply.outcome.map_err(AgentError::Refused)
    }

    fn exchange(&mut self, request: &Request<'_>) -> Result<Response, AgentError> {
        let pending = self.send(request)?;
        self.wait(&pending)
    }

    /// Loads and initializes an enclave (uploading the image in chunks when it is large).
    pub fn load(&mut self, sgxs: &[u8], sigstruct: &[u8]) -> Result<LoadedEnclave, AgentError> {
        for request in load_requests(sgxs, sigstruct) {
            if let Some(loaded) = load_step(&request, self.exchange(&request)?)? {
                return Ok(loaded);
            }
        }
        Err(AgentError::Protocol("the load requests ended without a LOAD".into()))
    }

    /// Runs ECALL `ecall` of enclave `enclave` with `input`, taking up to `output_capacity` bytes of output.
    pub fn call(
        &mut self,
        enclave: u32,
        ecall: &str,
        input: &[u8],
        output_capacity: u32,
    ) -> Result<CallResult, AgentError> {
        called(self.exchange(&Request::Call { enclave, ecall, input, output_capacity })?)
    }

    /// The guest's enclaves.
    pub fn list(&mut self) -> Result<Vec<EnclaveInfo>, AgentError> {
        listed(self.exchange(&Request::List)?)
    }

    /// Destroys an enclave; returns (pages released, free EPC pages of the guest afterwards).
    pub fn destroy(&mut self, enclave: u32) -> Result<(u64, u64), AgentError> {
        destroyed(self.exchange(&Request::Destroy { enclave })?)
    }

    /// The guest's EPC statistics.
    pub fn stats(&mut self) -> Result<EpcStats, AgentError> {
        match self.exchange(&Request::Stats)? {
            Response::Stats(stats) => Ok(stats),
            other => Err(unexpected("a stats request", &other)),
        }
    }
}

/// A request sent and not yet answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    sequence: u64,
    kind: u16,
}

fn unexpected(what: &str, response: &Response) -> AgentError {
    AgentError::Protocol(format!("{what} was answered with {response:?}"))
}

/// One step of a load (the requests of [`load_requests`], in order): `Some` once the enclave is
/// loaded, `None` after an accepted UPLOAD.
pub fn load_step(request: &Request<'_>, response: Response) -> Result<Option<LoadedEnclave>, AgentError> {
    match response {
        Response::Uploaded { .. } if matches!(request, Request::Upload { .. }) => Ok(None),
        Response::Loaded(loaded) if !matches!(request, Request::Upload { .. }) => Ok(Some(loaded)),
        other => Err(unexpected("a load", &other)),
    }
}

/// A CALL's answer.
pub fn called(response: Response) -> Result<CallResult, AgentError> {
    match response {
        Response::Called(result) => Ok(result),
        other => Err(unexpected("a call", &other)),
    }
}

/// A LIST's answer.
pub fn listed(response: Response) -> Result<Vec<EnclaveInfo>, AgentError> {
    match response {
        Response::Listed(list) => Ok(list),
        other => Err(unexpected("a list", &other)),
    }
}

/// A DESTROY's answer: (pages released, free EPC pages of the guest afterwards).
pub fn destroyed(response: Response) -> Result<(u64, u64), AgentError> {
    match response {
        Response::Destroyed { released_pages, free_pages } => Ok((released_pages, free_pages)),
        other => Err(unexpected("a destroy", &other)),
    }
}

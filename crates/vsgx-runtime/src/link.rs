//! The host side of the guest agent's mailbox.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};

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

    fn exchange(&mut self, request: &Request<'_>) -> Result<Response, AgentError> {
        self.sequence += 1;
        let sequence = self.sequence;
        let bytes = encode_request(sequence, request).map_err(|e| AgentError::Refused(e.into()))?;
        let ram = &self.domain.ram;
        let fault = |e| AgentError::Protocol(format!("the mailbox at {:#x} is not guest memory: {e}", self.mailbox));
        // The payload first, the header (whose state word makes the request visible) last.
        if bytes.len() > HEADER_SIZE {
            ram.write(self.mailbox + HEADER_SIZE as u64, &bytes[HEADER_SIZE..]).map_err(fault)?;
        }
        ram.write(self.mailbox, &bytes[..bytes.len().min(HEADER_SIZE)]).map_err(fault)?;
        let down = || AgentError::Down("its vCPU has stopped".into());
        if self.stopped.load(Ordering::Acquire) {
            return Err(down());
        }
        self.doorbell.send(()).map_err(|_| down())?;
        let answered = crate::recv_spinning(&self.answered);
        // Whatever the guest answered while being stopped (its ENCLS/ENCLU fail) is not an answer.
        if self.stopped.load(Ordering::Acquire) {
            return Err(AgentError::Down("it was stopped during the request".into()));
        }
        match answered {
            Ok(Ok(())) => {}
            Ok(Err(why)) => return Err(AgentError::Protocol(why)),
            Err(_) => return Err(down()),
        }
        let mut mailbox = vec![0u8; HEADER_SIZE];
        ram.read(self.mailbox, &mut mailbox).map_err(fault)?;
        let header = Header::decode(&mailbox).map_err(|e| AgentError::Protocol(e.to_string()))?;
        let payload = usize::try_from(header.payload_len).unwrap_or(usize::MAX).min(PAYLOAD_CAPACITY);
        mailbox.resize(HEADER_SIZE + payload, 0);
        ram.read(self.mailbox + HEADER_SIZE as u64, &mut mailbox[HEADER_SIZE..]).map_err(fault)?;
        let reply = decode_response(&mailbox).map_err(|e| AgentError::Protocol(e.to_string()))?;
        if (reply.sequence, reply.kind) != (sequence, request.kind() as u16) {
            return Err(AgentError::Protocol(format!(
                "answer to request {} (kind {}) arrived for request {sequence} (kind {})",
                reply.sequence,
                reply.kind,
                request.kind() as u16
            )));
        }
        reply.outcome.map_err(AgentError::Refused)
    }

    fn unexpected(what: &str, response: &Response) -> AgentError {
        AgentError::Protocol(format!("{what} was answered with {response:?}"))
    }

    /// Loads and initializes an enclave (uploading the image in chunks when it is large).
    pub fn load(&mut self, sgxs: &[u8], sigstruct: &[u8]) -> Result<LoadedEnclave, AgentError> {
        for request in load_requests(sgxs, sigstruct) {
            match self.exchange(&request)? {
                Response::Uploaded { .. } if matches!(request, Request::Upload { .. }) => {}
                Response::Loaded(loaded) if !matches!(request, Request::Upload { .. }) => return Ok(loaded),
                other => return Err(Self::unexpected("a load", &other)),
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
        match self.exchange(&Request::Call { enclave, ecall, input, output_capacity })? {
            Response::Called(result) => Ok(result),
            other => Err(Self::unexpected("a call", &other)),
        }
    }

    /// The guest's enclaves.
    pub fn list(&mut self) -> Result<Vec<EnclaveInfo>, AgentError> {
        match self.exchange(&Request::List)? {
            Response::Listed(list) => Ok(list),
            other => Err(Self::unexpected("a list", &other)),
        }
    }

    /// Destroys an enclave; returns (pages released, free EPC pages of the guest afterwards).
    pub fn destroy(&mut self, enclave: u32) -> Result<(u64, u64), AgentError> {
        match self.exchange(&Request::Destroy { enclave })? {
            Response::Destroyed { released_pages, free_pages } => Ok((released_pages, free_pages)),
            other => Err(Self::unexpected("a destroy", &other)),
        }
    }

    /// The guest's EPC statistics.
    pub fn stats(&mut self) -> Result<EpcStats, AgentError> {
        match self.exchange(&Request::Stats)? {
            Response::Stats(stats) => Ok(stats),
            other => Err(Self::unexpected("a stats request", &other)),
        }
    }
}

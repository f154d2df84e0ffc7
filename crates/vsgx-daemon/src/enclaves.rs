//! Enclaves inside a guest: the API handlers that drive the guest's agent through its mailbox.
//!
//! The host lock is held only to find the guest. A request then waits (asynchronously) for the
//! guest's gate — one request at a time per guest — and runs as a task of its own on the runtime:
//! it writes the mailbox, rings vCPU 0 and sleeps until the vCPU's answer hook wakes it. No thread
//! is held while a guest works, so a long load or ECALL in one guest leaves the API and the other
//! guests responsive, and a client that goes away cannot cut a request in half.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore};
use vsgx_runtime::{
    AgentError, AgentLink, CallResult, EnclaveInfo, ListedState, LoadedEnclave, Request, Status, load_requests,
};

use crate::api::{ApiError, ApiResult, UrlPath, json};
use crate::{MAX_QUEUED, Shared, lock};

/// Largest output an ECALL may return through the API (the agent's limit).
const MAX_OUTPUT: u32 = vsgx_runtime::MAX_CALL_OUTPUT;
/// Longest ECALL name the agent takes.
const MAX_NAME_BYTES: usize = vsgx_runtime::MAX_NAME_BYTES;

/// A guest's agent as a request reaches it.
struct GuestAgent {
    name: String,
    link: Arc<Mutex<AgentLink>>,
    answered: Arc<Notify>,
    gate: Arc<Semaphore>,
    queued: Arc<AtomicUsize>,
}

/// Counts a request in a guest's queue while it lives (also when its client goes away).
struct InQueue(Arc<AtomicUsize>);

impl Drop for InQueue {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The guest named or numbered `dom` and the host side of its agent.
fn agent_of(state: &Shared, dom: &str) -> Result<GuestAgent, ApiError> {
    let daemon = lock(state);
    let guest = daemon.host.find(dom)?;
    let name = &guest.config.name;
    let running = daemon.vms.get(&guest.id.0).ok_or_else(|| {
        if guest.layout.epc_sections.is_empty() {
            ApiError(
                StatusCode::CONFLICT,
                format!("domain {name:?} has no vEPC: enclaves need `epc = MiB` in its config"),
            )
        } else {
            not_running(name)
        }
    })?;
    Ok(GuestAgent {
        name: name.clone(),
        link: running.vm.agent(),
        answered: Arc::clone(&running.answered),
        gate: Arc::clone(&running.gate),
        queued: Arc::clone(&running.queued),
    })
}

fn not_running(name: &str) -> ApiError {
    ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("domain {name:?}: its guest is not running"))
}

/// What an API request asks of a guest's agent (owned, so it can run as a task of its own).
enum Operation {
    Load { sgxs: Vec<u8>, sigstruct: Vec<u8> },
    Call { enclave: u32, ecall: String, input: Vec<u8>, output_capacity: u32 },
    List,
    Destroy { enclave: u32 },
}

/// What the agent answered.
enum Outcome {
    Loaded(LoadedEnclave),
    Called(CallResult),
    Listed(Vec<EnclaveInfo>),
    Destroyed(u64, u64),
}

fn link_of(link: &Mutex<AgentLink>) -> std::sync::MutexGuard<'_, AgentLink> {
    link.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One request and its answer, sleeping (not blocking) until the vCPU signals it.
async fn exchange(
    link: &Mutex<AgentLink>,
    answered: &Notify,
    request: &Request<'_>,
) -> Result<vsgx_runtime::Response, AgentError> {
    let pending = link_of(link).send(request)?;
    // No polling here: this is the runtime's only thread. (Polling 30–100 µs before sleeping was
    // tried: on two cores it made P9 bimodal, 62 or 118 µs, not better on the whole.)
    loop {
        if let Some(answer) = link_of(link).poll(&pending) {
            return answer;
        }
        answered.notified().await;
    }
}

async fn run(link: &Mutex<AgentLink>, answered: &Notify, operation: Operation) -> Result<Outcome, AgentError> {
    match operation {
        Operation::Load { sgxs, sigstruct } => {
            for request in load_requests(&sgxs, &sigstruct) {
                let response = exchange(link, answered, &request).await?;
                if let Some(loaded) = vsgx_runtime::load_step(&request, response)? {
                    return Ok(Outcome::Loaded(loaded));
                }
            }
            Err(AgentError::Protocol("the load requests ended without a LOAD".into()))
        }
        Operation::Call { enclave, ecall, input, output_capacity } => {
            let request = Request::Call { enclave, ecall: &ecall, input: &input, output_capacity };
            Ok(Outcome::Called(vsgx_runtime::called(exchange(link, answered, &request).await?)?))
        }
        Operation::List => Ok(Outcome::Listed(vsgx_runtime::listed(exchange(link, answered, &Request::List).await?)?)),
        Operation::Destroy { enclave } => {
            let (released, free) =
                vsgx_runtime::destroyed(exchange(link, answered, &Request::Destroy { enclave }).await?)?;
            Ok(Outcome::Destroyed(released, free))
        }
    }
}

/// Runs one operation: waits for the guest's gate (at most [`MAX_QUEUED`] may wait), then runs it
/// as a task of its own that keeps the gate until the guest has answered.
async fn with_agent(agent: GuestAgent, operation: Operation) -> Result<Outcome, ApiError> {
    let GuestAgent { name, link, answered, gate, queued } = agent;
    if queued.fetch_add(1, Ordering::AcqRel) >= MAX_QUEUED {
        queued.fetch_sub(1, Ordering::AcqRel);
        return Err(ApiError(
            StatusCode::TOO_MANY_REQUESTS,
            format!("domain {name:?}: {MAX_QUEUED} requests are already waiting for its agent; try again later"),
        ));
    }
    let in_queue = InQueue(queued);
    let permit = gate.acquire_owned().await.map_err(|_| not_running(&name))?;
    let task = tokio::spawn(async move {
        let _held = (permit, in_queue);
        run(&link, &answered, operation).await
    });
    let outcome = task.await.map_err(|e| {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("domain {name:?}: the agent request failed: {e}"))
    })?;
    outcome.map_err(|e| agent_error(&name, e))
}

async fn list_of(agent: GuestAgent) -> Result<Vec<EnclaveInfo>, ApiError> {
    match with_agent(agent, Operation::List).await? {
        Outcome::Listed(list) => Ok(list),
        _ => Err(mismatch()),
    }
}

/// An operation came back with another operation's outcome: a bug in this file.
fn mismatch() -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal error: the agent's outcome does not match the request".into())
}

/// The HTTP status of a guest's answer.
fn agent_error(name: &str, e: AgentError) -> ApiError {
    let status = match &e {
        AgentError::Refused(f) => match f.status {
            Status::NO_SUCH_ENCLAVE | Status::NO_SUCH_ECALL => StatusCode::NOT_FOUND,
            Status::TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
            Status::BAD_IMAGE | Status::EINIT_REFUSED | Status::ENCLAVE_FAULT => StatusCode::UNPROCESSABLE_ENTITY,
            Status::NO_EPC | Status::NO_MEMORY => StatusCode::INSUFFICIENT_STORAGE,
            Status::ENCLAVE_LOST => StatusCode::GONE,
            Status::INTERNAL => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        },
        AgentError::Down(_) => StatusCode::SERVICE_UNAVAILABLE,
        AgentError::Protocol(_) => StatusCode::BAD_GATEWAY,
    };
    let message = match e {
        AgentError::Refused(f) => format!("domain {name:?}: {}", f.message),
        other => format!("domain {name:?}: {other}"),
    };
    ApiError(status, message)
}

/// The request body as JSON of type `T`, or a 4xx naming what is wrong.
fn body<T: for<'de> Deserialize<'de>>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body.map_err(|e| ApiError(e.status(), format!("request body: {}", e.body_text())))?;
    serde_json::from_slice(&body).map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("request body: {e}")))
}

fn base64_field(field: &str, text: &str) -> Result<Vec<u8>, ApiError> {
    BASE64
        .decode(text)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("request body: {field}: not base64: {e}")))
}

fn enclave_id(text: &str) -> Result<u32, ApiError> {
    text.parse().map_err(|_| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("enclave id {text:?} is not a number (`vsgx enclave list DOM` shows them)"),
        )
    })
}

/// The `Enclave` object of the API.
#[derive(Serialize)]
struct EnclaveView {
    enclave_id: u32,
    mrenclave: String,
    mrsigner: String,
    ecalls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    epc_pages: Option<u64>,
}

impl From<LoadedEnclave> for EnclaveView {
    fn from(e: LoadedEnclave) -> Self {
        Self {
            enclave_id: e.enclave,
            mrenclave: hex::encode(e.mrenclave),
            mrsigner: hex::encode(e.mrsigner),
            ecalls: e.ecalls,
            state: None,
            epc_pages: None,
        }
    }
}

impl From<EnclaveInfo> for EnclaveView {
    fn from(e: EnclaveInfo) -> Self {
        let state = match e.state {
            ListedState::Ready => "ready",
            ListedState::Lost => "lost",
            ListedState::Gone => "gone",
        };
        Self {
            enclave_id: e.enclave,
            mrenclave: hex::encode(e.mrenclave),
            mrsigner: hex::encode(e.mrsigner),
            ecalls: e.ecalls,
            state: Some(state),
            epc_pages: Some(e.epc_pages),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoadRequest {
    sgxs: String,
    sigstruct: String,
}

/// `POST /v1/domains/{dom}/enclaves`: load and initialize an enclave in the guest.
pub(crate) async fn load(
    State(state): State<Shared>,
    UrlPath(dom): UrlPath<String>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let request: LoadRequest = body(raw)?;
    // Malformed bodies are refused before waiting for the guest; the text is dropped once decoded.
    let sgxs = base64_field("sgxs", &request.sgxs)?;
    let sigstruct = base64_field("sigstruct", &request.sigstruct)?;
    drop(request);
    match with_agent(agent_of(&state, &dom)?, Operation::Load { sgxs, sigstruct }).await? {
        Outcome::Loaded(loaded) => json(StatusCode::CREATED, &EnclaveView::from(loaded)),
        _ => Err(mismatch()),
    }
}

/// `GET /v1/domains/{dom}/enclaves`.
pub(crate) async fn list(State(state): State<Shared>, UrlPath(dom): UrlPath<String>) -> ApiResult {
    let listed = list_of(agent_of(&state, &dom)?).await?;
    json(StatusCode::OK, &listed.into_iter().map(EnclaveView::from).collect::<Vec<_>>())
}

/// `GET /v1/domains/{dom}/enclaves/{enclave}`.
pub(crate) async fn info(State(state): State<Shared>, UrlPath((dom, enclave)): UrlPath<(String, String)>) -> ApiResult {
    let id = enclave_id(&enclave)?;
    let agent = agent_of(&state, &dom)?;
    let name = agent.name.clone();
    let listed = list_of(agent).await?;
    let found = listed.into_iter().find(|e| e.enclave == id).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("domain {name:?}: no enclave {id} (`vsgx enclave list {name}` shows them)"),
        )
    })?;
    json(StatusCode::OK, &EnclaveView::from(found))
}

#[derive(Serialize)]
struct DestroyedView {
    enclave_id: u32,
    released_pages: u64,
    guest_free_pages: u64,
}

/// `DELETE /v1/domains/{dom}/enclaves/{enclave}`.
pub(crate) async fn destroy(
    State(state): State<Shared>,
    UrlPath((dom, enclave)): UrlPath<(String, String)>,
) -> ApiResult {
    let id = enclave_id(&enclave)?;
    match with_agent(agent_of(&state, &dom)?, Operation::Destroy { enclave: id }).await? {
        Outcome::Destroyed(released_pages, guest_free_pages) => {
            json(StatusCode::OK, &DestroyedView { enclave_id: id, released_pages, guest_free_pages })
        }
        _ => Err(mismatch()),
    }
}

fn default_capacity() -> u32 {
    4096
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallRequest {
    ecall: String,
    #[serde(default)]
    input: String,
    #[serde(default = "default_capacity")]
    output_capacity: u32,
}

#[derive(Serialize)]
struct CallView {
    result: i64,
    output: String,
    aexs: u32,
}

/// `POST /v1/domains/{dom}/enclaves/{enclave}/call`: run an ECALL.
pub(crate) async fn call(
    State(state): State<Shared>,
    UrlPath((dom, enclave)): UrlPath<(String, String)>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let id = enclave_id(&enclave)?;
    let request: CallRequest = body(raw)?;
    let input = base64_field("input", &request.input)?;
    if request.ecall.len() > MAX_NAME_BYTES {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "request body: ecall is {} bytes long, ECALL names have at most {MAX_NAME_BYTES}",
                request.ecall.len()
            ),
        ));
    }
    if request.output_capacity > MAX_OUTPUT {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("request body: output_capacity {} is above the largest, {MAX_OUTPUT}", request.output_capacity),
        ));
    }
    let operation =
        Operation::Call { enclave: id, ecall: request.ecall, input, output_capacity: request.output_capacity };
    let Outcome::Called(called) = with_agent(agent_of(&state, &dom)?, operation).await? else {
        return Err(mismatch());
    };
    let view = CallView { result: called.result, output: BASE64.encode(&called.output), aexs: called.aexs };
    Ok((StatusCode::OK, axum::Json(view)).into_response())
}

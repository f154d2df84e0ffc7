//! The HTTP/JSON API: routes, the host and domain handlers, JSON errors.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use vsgx_hv::domain::DomainError;
use vsgx_toolstack::lifecycle::{Guest, HostError};
use vsgx_toolstack::report::{RegionInfo, SectionInfo};

use crate::store::StoredDomain;
use crate::{Shared, boot_guest, enclaves, lock, metrics};

/// An API error: status + `{"error": "..."}`.
pub(crate) struct ApiError(pub(crate) StatusCode, pub(crate) String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<HostError> for ApiError {
    fn from(e: HostError) -> Self {
        let status = match &e {
            HostError::Config(_) => StatusCode::BAD_REQUEST,
            HostError::NameInUse(_) | HostError::IdInUse(_) => StatusCode::CONFLICT,
            HostError::NoSuchDomain(_) => StatusCode::NOT_FOUND,
            HostError::Create { source: DomainError::Epc { .. }, .. } | HostError::RamBudget { .. } => {
                StatusCode::INSUFFICIENT_STORAGE
            }
            HostError::Create { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            HostError::Destroy { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self(status, e.to_string())
    }
}

pub(crate) type ApiResult = Result<Response, ApiError>;

/// axum's `Path` with its rejections (bad percent-encoding, not UTF-8) answered as JSON errors
/// like every other error of the API.
pub(crate) struct UrlPath<T>(pub(crate) T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for UrlPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(e) => Err(ApiError(StatusCode::BAD_REQUEST, format!("path: {}", e.body_text()))),
        }
    }
}

pub(crate) fn json<T: Serialize>(status: StatusCode, value: &T) -> ApiResult {
    Ok((status, axum::Json(value)).into_response())
}

/// The `Domain` object of the API.
#[derive(Serialize)]
struct DomainView {
    name: String,
    domid: u32,
    uuid: String,
    memory_mib: u64,
    vcpus: u32,
    epc_bytes: u64,
    memory_map: Vec<RegionInfo>,
    epc_sections: Vec<SectionInfo>,
    agent_mailbox: MailboxView,
    /// `running`, `stopped` (its vCPU thread ended) or `none` (no vEPC: no SGX guest).
    guest: &'static str,
    warnings: Vec<String>,
}

/// Where the guest agent's mailbox is (inside the MMIO hole).
#[derive(Serialize)]
struct MailboxView {
    base: u64,
    size: u64,
}

impl DomainView {
    fn of(g: &Guest, daemon: &crate::Daemon) -> Self {
        let guest = match daemon.vms.get(&g.id.0) {
            Some(running) if running.vm.is_running() => "running",
            Some(_) => "stopped",
            None if g.layout.epc_sections.is_empty() => "none",
            None => "stopped",
        };
        Self {
            name: g.config.name.clone(),
            domid: g.id.0,
            uuid: g.config.uuid.to_string(),
            memory_mib: g.config.memory_mib,
            vcpus: g.config.vcpus,
            epc_bytes: g.layout.epc_sections.iter().map(|s| s.size).sum(),
            memory_map: g.layout.memory_map.iter().map(RegionInfo::from).collect(),
            epc_sections: g.layout.epc_sections.iter().map(SectionInfo::from).collect(),
            agent_mailbox: MailboxView { base: g.layout.agent_mailbox.0, size: g.layout.agent_mailbox.1 },
            guest,
            warnings: g.warnings.iter().map(ToString::to_string).collect(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    config: String,
    #[serde(default)]
    file_name: Option<String>,
}

async fn host_info(State(state): State<Shared>) -> ApiResult {
    let daemon = lock(&state);
    let mut info = serde_json::to_value(daemon.host.sgxinfo())
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("sgxinfo: {e}")))?;
    info["unrestored_domains"] = serde_json::to_value(daemon.unrestored.values().collect::<Vec<_>>())
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("sgxinfo: {e}")))?;
    json(StatusCode::OK, &info)
}

/// `dom` is not a running domain: say so, and whether it is a stored one that did not come back.
fn no_such_domain(daemon: &crate::Daemon, dom: &str, e: HostError) -> ApiError {
    match dom.parse::<u32>().ok().and_then(|id| daemon.unrestored.get(&id)) {
        Some(u) => ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "domain id {} ({}) is stored but could not be restored at start: {}; DELETE it (`vsgx destroy {}`) to \
                 drop its record",
                u.domid, u.file, u.reason, u.domid
            ),
        ),
        None => e.into(),
    }
}

async fn list(State(state): State<Shared>) -> ApiResult {
    let daemon = lock(&state);
    json(StatusCode::OK, &daemon.host.guests().map(|g| DomainView::of(g, &daemon)).collect::<Vec<_>>())
}

async fn create(
    State(state): State<Shared>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult {
    let body = body.map_err(|e| ApiError(e.status(), format!("request body: {}", e.body_text())))?;
    let request: CreateRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("request body: {e}")))?;
    let file = request.file_name.unwrap_or_else(|| "config".into());
    let mut daemon = lock(&state);
    let daemon = &mut *daemon;
    let guest = daemon.host.create(&file, &request.config)?;
    let id = guest.id.0;
    // All or nothing: a domain whose guest does not boot, or that would not come back after a
    // restart, is not created.
    let undo = |daemon: &mut crate::Daemon, status, message: String| {
        let _ = daemon.host.destroy(&id.to_string());
        let _ = daemon.persist_quarantine();
        ApiError(status, message)
    };
    let running = match boot_guest(guest) {
        Ok(running) => running,
        Err(e) => return Err(undo(daemon, StatusCode::INTERNAL_SERVER_ERROR, format!("domain {id}: {e}"))),
    };
    if let Err(e) = daemon.store.put(id, &StoredDomain { file, config: request.config }) {
        if let Some(running) = running {
            running.stop();
        }
        return Err(undo(daemon, StatusCode::INTERNAL_SERVER_ERROR, format!("state store: {e:#}")));
    }
    daemon.vms.extend(running.map(|g| (id, g)));
    json(StatusCode::CREATED, &DomainView::of(daemon.host.find(&id.to_string())?, daemon))
}

async fn info(State(state): State<Shared>, UrlPath(dom): UrlPath<String>) -> ApiResult {
    let daemon = lock(&state);
    let guest = daemon.host.find(&dom).map_err(|e| no_such_domain(&daemon, &dom, e))?;
    json(StatusCode::OK, &DomainView::of(guest, &daemon))
}

async fn destroy(State(state): State<Shared>, UrlPath(dom): UrlPath<String>) -> ApiResult {
    let mut daemon = lock(&state);
    let id = match daemon.host.find(&dom) {
        Ok(guest) => guest.id.0,
        // A stored domain that did not come back at start: dropping it removes its record.
        Err(e) => {
            let Some(id) = dom.parse::<u32>().ok().filter(|id| daemon.unrestored.contains_key(id)) else {
                return Err(e.into());
            };
            daemon
                .store
                .remove(id)
                .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("state store: {e:#}")))?;
            daemon.unrestored.remove(&id);
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
    };
    daemon.store.remove(id).map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("state store: {e:#}")))?;
    // The guest's vCPU leaves its enclaves before the domain's EPC goes. Stopping is prompt (the
    // vCPU unwinds at its next ENCLU/ENCLS or fuel slice), so it is done under the host lock.
    if let Some(running) = daemon.vms.remove(&id) {
        running.stop();
    }
    let destroyed = daemon.host.destroy(&id.to_string());
    // Pages EREMOVE could not remove stay out of service across restarts too.
    if let Err(e) = daemon.persist_quarantine() {
        return Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("state store: {e:#}")));
    }
    destroyed?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn sgxlist(State(state): State<Shared>) -> ApiResult {
    json(StatusCode::OK, &lock(&state).host.sgxlist(None)?)
}

async fn sgxlist_one(State(state): State<Shared>, UrlPath(dom): UrlPath<String>) -> ApiResult {
    json(StatusCode::OK, &lock(&state).host.sgxlist(Some(&dom))?)
}

async fn not_found() -> ApiError {
    ApiError(StatusCode::NOT_FOUND, "no such endpoint (see docs/api/vsgxd.openapi.json)".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError(
        StatusCode::METHOD_NOT_ALLOWED,
        "this endpoint does not take that method (see docs/api/vsgxd.openapi.json)".into(),
    )
}

/// Largest request body: the largest enclave image the guest agent takes
/// ([`vsgx_runtime::MAX_IMAGE_BYTES`], 64 MiB), in base64 (4/3), with 1 MiB for the SIGSTRUCT and
/// the JSON around it: 86 MiB.
pub(crate) const MAX_BODY: usize = (vsgx_runtime::MAX_IMAGE_BYTES as usize).div_ceil(3) * 4 + (1 << 20);

/// Answers 413 from the headers when the declared body is over [`MAX_BODY`], before reading it.
async fn refuse_oversized(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(len) if len > MAX_BODY as u64 => ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body: {len} bytes declared, the limit is {MAX_BODY}"),
        )
        .into_response(),
        _ => next.run(request).await,
    }
}

pub(crate) fn router(state: Shared) -> Router {
    Router::new()
        .route("/v1/host", get(host_info))
        .route("/v1/domains", get(list).post(create))
        .route("/v1/domains/{dom}", get(info).delete(destroy))
        .route("/v1/domains/{dom}/enclaves", get(enclaves::list).post(enclaves::load))
        .route("/v1/domains/{dom}/enclaves/{enclave}", get(enclaves::info).delete(enclaves::destroy))
        .route("/v1/domains/{dom}/enclaves/{enclave}/call", post(enclaves::call))
        .route("/v1/sgx/domains", get(sgxlist))
        .route("/v1/sgx/domains/{dom}", get(sgxlist_one))
        .route("/metrics", get(metrics::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(refuse_oversized))
        .with_state(state)
}

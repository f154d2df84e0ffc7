//! `vsgxd`: the host daemon. It owns one host (platform, EPC manager, domains) and serves the
//! HTTP/JSON API of `docs/api/vsgxd.openapi.json` on a Unix socket created with mode 0600.
//!
//! State lives in `STATE_DIR/vsgxd.redb` (redb, transactional): the host identity (the seed its
//! platform's fused secrets derive from, so data sealed before a restart unseals after it) and the
//! config of every domain. After a restart (SIGTERM or kill -9) each domain comes back with its
//! name, id and layout and an empty vEPC, as after a host reboot.
//!
//! Not yet here (issue 7): guests running their agent (enclave load/call) and API-schema tests.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clap::Parser;
use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use vsgx_hv::domain::DomainError;
use vsgx_hw::config::{EpcSection, PlatformConfig};
use vsgx_hw::platform::Platform;
use vsgx_toolstack::lifecycle::{Guest, Host, HostError};
use vsgx_toolstack::report::{RegionInfo, SectionInfo};

/// vsgxd: the vsgx host daemon (one SGX platform, its hypervisor and domains).
#[derive(Debug, Parser)]
#[command(name = "vsgxd", version, about)]
struct Args {
    /// The API socket [default: $VSGX_SOCKET, else $XDG_RUNTIME_DIR/vsgxd.sock, else /run/vsgxd.sock].
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// The host's EPC: sections as SIZE_MIB[@NODE], comma separated (e.g. `128@0,128@1`), on the
    /// embedded platform otherwise.
    #[arg(long, value_name = "SECTIONS", conflicts_with = "platform")]
    epc: Option<String>,
    /// A platform TOML file instead of the embedded platform.
    #[arg(long, value_name = "FILE.toml")]
    platform: Option<PathBuf>,
    /// Where the daemon keeps its state [default: $VSGX_STATE_DIR, else /var/lib/vsgx].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

/// Table of domains: id → the config they were created from (JSON `{"file", "config"}`).
const DOMAINS: redb::TableDefinition<u32, &str> = redb::TableDefinition::new("domains");
/// Table of host facts: `"seed"` → the platform seed.
const HOST: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("host");

/// A domain as stored: enough to create it again.
#[derive(Serialize, Deserialize)]
struct StoredDomain {
    file: String,
    config: String,
}

/// The daemon's transactional store.
struct Store {
    db: redb::Database,
}

impl Store {
    fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create the state directory", dir.display()))?;
        let path = dir.join("vsgxd.redb");
        let db = redb::Database::create(&path)
            .with_context(|| format!("{}: cannot open the state store", path.display()))?;
        let store = Self { db };
        let tx = store.db.begin_write()?;
        tx.open_table(DOMAINS)?;
        tx.open_table(HOST)?;
        tx.commit()?;
        Ok(store)
    }

    /// The host's seed: the stored one, or a fresh random one stored now.
    fn seed(&self) -> anyhow::Result<u64> {
        let tx = self.db.begin_write()?;
        let seed = {
            let mut table = tx.open_table(HOST)?;
            let stored = table.get("seed")?.map(|v| v.value());
            match stored {
                Some(seed) => seed,
                None => {
                    let mut bytes = [0u8; 8];
                    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness for the host seed: {e}"))?;
                    let seed = u64::from_le_bytes(bytes);
                    table.insert("seed", seed)?;
                    seed
                }
            }
        };
        tx.commit()?;
        Ok(seed)
    }

    fn domains(&self) -> anyhow::Result<Vec<(u32, StoredDomain)>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(DOMAINS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (id, value) = row?;
            let stored = serde_json::from_str(value.value())
                .with_context(|| format!("state store: domain {} is unreadable", id.value()))?;
            out.push((id.value(), stored));
        }
        Ok(out)
    }

    fn put(&self, id: u32, domain: &StoredDomain) -> anyhow::Result<()> {
        let tx = self.db.begin_write()?;
        tx.open_table(DOMAINS)?.insert(id, serde_json::to_string(domain)?.as_str())?;
        tx.commit()?;
        Ok(())
    }

    fn remove(&self, id: u32) -> anyhow::Result<()> {
        let tx = self.db.begin_write()?;
        tx.open_table(DOMAINS)?.remove(id)?;
        tx.commit()?;
        Ok(())
    }
}

/// Everything the API serves.
struct Daemon {
    host: Host,
    store: Store,
}

/// `128@0,128@1` → EPC sections.
fn parse_epc(spec: &str) -> anyhow::Result<Vec<EpcSection>> {
    spec.split(',')
        .enumerate()
        .map(|(i, item)| {
            let (size, node) = item.split_once('@').unwrap_or((item, "0"));
            let size_mib = size.trim().parse::<u64>().ok().filter(|&s| s > 0);
            let node = node.trim().parse::<u32>().ok();
            match (size_mib, node) {
                (Some(size_mib), Some(node)) => Ok(EpcSection { size_mib, node }),
                _ => bail!("--epc item {} {item:?}: expected SIZE_MIB[@NODE], e.g. 128@0", i + 1),
            }
        })
        .collect()
}

fn platform_config(args: &Args) -> anyhow::Result<PlatformConfig> {
    let config = if let Some(path) = &args.platform {
        let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
        vsgx_hw::config::from_toml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
    } else {
        let mut config = vsgx_hw::config::embedded_default();
        if let Some(epc) = &args.epc {
            config.epc = parse_epc(epc)?;
        }
        config
    };
    config.validate().map_err(|e| anyhow::anyhow!("platform: {e}"))?;
    Ok(config)
}

type Shared = Arc<Mutex<Daemon>>;

/// An API error: status + `{"error": "..."}`.
struct ApiError(StatusCode, String);

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
            HostError::Create { source: DomainError::Epc { .. }, .. } => StatusCode::INSUFFICIENT_STORAGE,
            HostError::Create { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            HostError::Destroy { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self(status, e.to_string())
    }
}

type ApiResult = Result<Response, ApiError>;

fn json<T: Serialize>(status: StatusCode, value: &T) -> ApiResult {
    Ok((status, axum::Json(value)).into_response())
}

fn lock(state: &Shared) -> std::sync::MutexGuard<'_, Daemon> {
    // A panic while holding the lock cannot leave the host half-changed (every change is one
    // call), so a poisoned lock is still usable.
    state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
    warnings: Vec<String>,
}

impl DomainView {
    fn of(g: &Guest) -> Self {
        Self {
            name: g.config.name.clone(),
            domid: g.id.0,
            uuid: g.config.uuid.to_string(),
            memory_mib: g.config.memory_mib,
            vcpus: g.config.vcpus,
            epc_bytes: g.layout.epc_sections.iter().map(|s| s.size).sum(),
            memory_map: g.layout.memory_map.iter().map(RegionInfo::from).collect(),
            epc_sections: g.layout.epc_sections.iter().map(SectionInfo::from).collect(),
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
    json(StatusCode::OK, &lock(&state).host.sgxinfo())
}

async fn list(State(state): State<Shared>) -> ApiResult {
    let daemon = lock(&state);
    json(StatusCode::OK, &daemon.host.guests().map(DomainView::of).collect::<Vec<_>>())
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
    let id = daemon.host.create(&file, &request.config)?.id;
    let stored = StoredDomain { file, config: request.config };
    if let Err(e) = daemon.store.put(id.0, &stored) {
        // All or nothing: a domain that would not come back after a restart is not created.
        let _ = daemon.host.destroy(&id.0.to_string());
        return Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("state store: {e:#}")));
    }
    json(StatusCode::CREATED, &DomainView::of(daemon.host.find(&id.0.to_string())?))
}

async fn info(State(state): State<Shared>, UrlPath(dom): UrlPath<String>) -> ApiResult {
    let daemon = lock(&state);
    json(StatusCode::OK, &DomainView::of(daemon.host.find(&dom)?))
}

async fn destroy(State(state): State<Shared>, UrlPath(dom): UrlPath<String>) -> ApiResult {
    let mut daemon = lock(&state);
    let id = daemon.host.find(&dom)?.id.0;
    daemon.store.remove(id).map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("state store: {e:#}")))?;
    daemon.host.destroy(&id.to_string())?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn sgxlist(State(state): State<Shared>) -> ApiResult {
    json(StatusCode::OK, &lock(&state).host.sgxlist(None)?)
}

async fn sgxlist_one(State(state): State<Shared>, UrlPath(dom): UrlPath<String>) -> ApiResult {
    json(StatusCode::OK, &lock(&state).host.sgxlist(Some(&dom))?)
}

/// Prometheus text: EPC per section and per domain.
async fn metrics(State(state): State<Shared>) -> Response {
    use std::fmt::Write;
    let daemon = lock(&state);
    let host = &daemon.host;
    let stats = host.epc().stats();
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, rows: Vec<(String, u64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, v) in rows {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    let section = |i: usize, node: u32| format!("{{section=\"{i}\",node=\"{node}\"}}");
    let sections = &stats.per_section;
    gauge(
        "vsgx_epc_section_bytes",
        "Size of each physical EPC section.",
        sections.iter().enumerate().map(|(i, s)| (section(i, s.node), s.size)).collect(),
    );
    gauge(
        "vsgx_epc_section_free_pages",
        "Free pages of each physical EPC section.",
        sections.iter().enumerate().map(|(i, s)| (section(i, s.node), s.free)).collect(),
    );
    let info = host.sgxinfo();
    gauge("vsgx_epc_free_bytes", "EPC given to no one.", vec![(String::new(), info.epc_free_bytes)]);
    gauge(
        "vsgx_epc_used_bytes",
        "EPC backing vEPC or held by the hypervisor.",
        vec![(String::new(), info.epc_used_bytes)],
    );
    gauge("vsgx_epc_quarantined_bytes", "EPC taken out of service.", vec![(String::new(), info.epc_quarantined_bytes)]);
    let entries = host.sgxlist(None).unwrap_or_default();
    let domain = |e: &vsgx_toolstack::report::SgxListEntry| format!("{{domain=\"{}\",domid=\"{}\"}}", e.name, e.domid);
    for (name, help, field) in [
        ("vsgx_domain_epc_resident_pages", "vEPC pages backed by EPC.", 0),
        ("vsgx_domain_epc_evicted_pages", "vEPC pages the host evicted.", 1),
        ("vsgx_domain_epc_ballooned_pages", "vEPC pages ballooned out.", 2),
    ] {
        let rows = entries
            .iter()
            .map(|e| (domain(e), [e.resident_pages, e.evicted_pages, e.ballooned_pages][field]))
            .collect();
        gauge(name, help, rows);
    }
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
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

/// Largest request body (a config, or later an enclave image in base64): 64 MiB.
const MAX_BODY: usize = 64 << 20;

fn router(state: Shared) -> Router {
    Router::new()
        .route("/v1/host", get(host_info))
        .route("/v1/domains", get(list).post(create))
        .route("/v1/domains/{dom}", get(info).delete(destroy))
        .route("/v1/sgx/domains", get(sgxlist))
        .route("/v1/sgx/domains/{dom}", get(sgxlist_one))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Binds the socket: refuses when another daemon answers on it, replaces a stale one, mode 0600.
fn bind(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        bail!("{}: another vsgxd is serving on this socket", path.display());
    }
    if path.exists() {
        std::fs::remove_file(path).with_context(|| format!("{}: cannot remove the stale socket", path.display()))?;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create the directory", dir.display()))?;
    }
    let listener =
        tokio::net::UnixListener::bind(path).with_context(|| format!("{}: cannot bind the socket", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("{}: cannot make the socket 0600", path.display()))?;
    Ok(listener)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let socket = args.socket.clone().unwrap_or_else(vsgx_toolstack::report::default_socket);
    let state_dir = args.state_dir.clone().unwrap_or_else(|| {
        std::env::var_os("VSGX_STATE_DIR").map_or_else(|| PathBuf::from("/var/lib/vsgx"), PathBuf::from)
    });
    // Before touching the store: a running daemon holds it open.
    if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        bail!("{}: another vsgxd is serving on this socket", socket.display());
    }
    let store = Store::open(&state_dir)?;
    let mut config = platform_config(args)?;
    if config.seed.is_none() {
        config.seed = Some(store.seed()?);
    }
    let mut host = Host::new(Platform::new(config));
    for (id, stored) in store.domains()? {
        // Keep ids of domains that cannot come back reserved: their record stays in the store.
        host.reserve_ids_below(id.saturating_add(1));
        match host.create_as(vsgx_hv::epc::DomainId(id), &stored.file, &stored.config) {
            Ok(g) => eprintln!("vsgxd: restored domain {} (id {id}) with an empty vEPC", g.config.name),
            Err(e) => eprintln!("vsgxd: domain id {id} could not be restored: {e}"),
        }
    }
    let epc_mib = host.sgxinfo().epc_total_bytes >> 20;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let listener = bind(&socket)?;
        eprintln!("vsgxd: serving on {} ({epc_mib} MiB of EPC)", socket.display());
        let served = axum::serve(listener, router(Arc::new(Mutex::new(Daemon { host, store }))))
            .with_graceful_shutdown(shutdown_signal())
            .await;
        let _ = std::fs::remove_file(&socket);
        served.context("serving the API")?;
        eprintln!("vsgxd: stopped");
        Ok(())
    })
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vsgxd: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

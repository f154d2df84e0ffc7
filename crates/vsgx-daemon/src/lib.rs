//! `vsgxd` as a library: the host daemon. It owns one host (platform, EPC manager, domains and
//! their running guests) and serves the HTTP/JSON API of `docs/api/vsgxd.openapi.json` on a Unix
//! socket created with mode 0600. The `vsgxd` binary and `vsgx demo` (a private daemon on a
//! thread) both run it through [`run`].
//!
//! State lives in `STATE_DIR/vsgxd.redb` ([`store`]): the host identity (the seed its platform's
//! fused secrets derive from, so data sealed before a restart unseals after it), the config of
//! every domain and the quarantined EPC pages (kept out of service after a restart). After a
//! restart (SIGTERM or kill -9) each domain comes back with its name, id and layout, an empty vEPC
//! and a freshly booted guest, as after a host reboot.
//!
//! Each domain's guest (kernel, SGX driver, agent) runs on its own vCPU thread (`vsgx-runtime`).
//! The API holds the host lock only to look things up or change the set of domains; an enclave
//! request waits for its guest's gate and runs as a task that sleeps until vCPU 0's answer hook
//! wakes it, so a long ECALL in one guest holds no thread and does not stall the API.

mod api;
mod enclaves;
mod metrics;
mod store;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use vsgx_hv::epc::QuarantinedPage;
use vsgx_hw::config::PlatformConfig;
use vsgx_hw::platform::Platform;
use vsgx_runtime::{BootInfo, GuestVm, RuntimeError};
use vsgx_toolstack::layout::MemoryType;
use vsgx_toolstack::lifecycle::{Guest, Host};

use crate::store::Store;

/// What a daemon serves and where it keeps its state.
#[derive(Debug, Clone)]
pub struct Options {
    /// The API socket.
    pub socket: PathBuf,
    /// The state directory (`vsgxd.redb` inside).
    pub state_dir: PathBuf,
    /// The platform (its seed is replaced by the stored host seed when it has none).
    pub platform: PlatformConfig,
    /// Print progress (`vsgxd: …` lines) on stderr.
    pub verbose: bool,
}

/// The host, its store and the running guests: what the API serves.
pub(crate) struct Daemon {
    pub(crate) host: Host,
    pub(crate) store: Store,
    /// Running guests by domain id.
    pub(crate) vms: BTreeMap<u32, RunningGuest>,
    /// Stored domains that could not be restored at start (id → why). Their records stay in the
    /// store (a later start on a bigger host brings them back) until `DELETE /v1/domains/{id}`.
    pub(crate) unrestored: BTreeMap<u32, Unrestored>,
    /// Stored quarantine records this run could not apply (the page is not EPC of this platform,
    /// or not free): kept in the store, never dropped by a later write.
    pub(crate) unapplied_quarantine: Vec<QuarantinedPage>,
}

impl Daemon {
    /// Writes the EPC manager's quarantine to the store: pages EREMOVE could not remove stay out
    /// of service across restarts. Called after everything that releases EPC.
    pub(crate) fn persist_quarantine(&self) -> anyhow::Result<()> {
        let mut pages = self.host.epc().quarantined_pages();
        let kept: Vec<QuarantinedPage> =
            self.unapplied_quarantine.iter().filter(|u| pages.iter().all(|p| p.hpa != u.hpa)).copied().collect();
        pages.extend(kept);
        self.store.set_quarantine(&pages)
    }
}

/// A stored domain this start could not bring back.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Unrestored {
    pub(crate) domid: u32,
    /// The config file name it was created from.
    pub(crate) file: String,
    pub(crate) reason: String,
}

/// A domain's running guest and the gate that lets one API request at a time reach its agent
/// (requests wait for it asynchronously, holding no thread).
pub(crate) struct RunningGuest {
    pub(crate) vm: GuestVm,
    /// Woken by vCPU 0 after each agent answer.
    pub(crate) answered: Arc<tokio::sync::Notify>,
    pub(crate) gate: Arc<tokio::sync::Semaphore>,
    /// Requests waiting for or holding the gate (at most [`MAX_QUEUED`]).
    pub(crate) queued: Arc<std::sync::atomic::AtomicUsize>,
}

/// Most requests that may wait for one guest's agent; more are refused (429), so a stuck guest
/// cannot make the daemon hold unbounded request bodies.
pub(crate) const MAX_QUEUED: usize = 16;

impl RunningGuest {
    fn new(vm: GuestVm, answered: Arc<tokio::sync::Notify>) -> Self {
        Self { vm, answered, gate: Arc::new(tokio::sync::Semaphore::new(1)), queued: Arc::default() }
    }

    /// Stops the guest: requests waiting for the gate get 503 at once, the one in flight ends.
    pub(crate) fn stop(self) {
        self.gate.close();
        self.vm.shutdown();
    }
}

pub(crate) type Shared = Arc<Mutex<Daemon>>;

pub(crate) fn lock(state: &Shared) -> std::sync::MutexGuard<'_, Daemon> {
    // Every change to the host is one call that either happens whole or not at all, so a panic
    // while holding the lock cannot leave it half-changed: a poisoned lock is still usable.
    state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Boots `guest`'s kernel, driver and agent on its vCPU 0. The memory map the guest boots with is
/// the layout's: RAM is RAM; the MMIO hole (with the agent mailbox) and the vEPC are reserved.
/// A domain without vEPC runs no SGX guest (`None`): its guest would find no SGX to drive.
pub(crate) fn boot_guest(guest: &Guest) -> Result<Option<RunningGuest>, RuntimeError> {
    if guest.layout.epc_sections.is_empty() {
        return Ok(None);
    }
    let map = &guest.layout.memory_map;
    let boot = BootInfo {
        ram: map.iter().filter(|r| r.kind == MemoryType::Ram).map(|r| (r.base, r.size)).collect(),
        reserved: map.iter().filter(|r| r.kind != MemoryType::Ram).map(|r| (r.base, r.size)).collect(),
    };
    let answered = Arc::new(tokio::sync::Notify::new());
    let hook = Arc::clone(&answered);
    let on_answer: vsgx_runtime::AnswerHook = Arc::new(move || hook.notify_one());
    GuestVm::boot_with_hook(guest.domain(), boot, guest.layout.agent_mailbox.0, Some(on_answer))
        .map(|vm| Some(RunningGuest::new(vm, answered)))
}

/// Binds the socket: refuses when another daemon answers on it, replaces a stale one. The socket
/// is bound inside a fresh 0700 directory next to it, made 0600 there and renamed into place, so
/// it is never reachable with looser permissions. Returns the listener and the socket's identity
/// (device, inode), so that only this socket is removed at exit.
fn bind(path: &Path) -> anyhow::Result<(tokio::net::UnixListener, (u64, u64))> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        bail!("{}: another vsgxd is serving on this socket", path.display());
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create the directory", dir.display()))?;
    // tempfile makes the directory 0700 with a unique name (short: socket paths are limited).
    let private = tempfile::Builder::new()
        .prefix(".vsgxd")
        .rand_bytes(4)
        .tempdir_in(dir)
        .with_context(|| format!("{}: cannot create a private directory to bind in", dir.display()))?;
    let staged = private.path().join("s");
    let listener = tokio::net::UnixListener::bind(&staged)
        .with_context(|| format!("{}: cannot bind the socket", path.display()))?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("{}: cannot make the socket 0600", path.display()))?;
    if path.exists() {
        std::fs::remove_file(path).with_context(|| format!("{}: cannot remove the stale socket", path.display()))?;
    }
    std::fs::rename(&staged, path).with_context(|| format!("{}: cannot move the socket into place", path.display()))?;
    let meta = std::fs::metadata(path).with_context(|| format!("{}: the socket vanished", path.display()))?;
    Ok((listener, (meta.dev(), meta.ino())))
}

/// Removes the socket at `path` if it is still the one this daemon bound.
fn remove_socket(path: &Path, identity: (u64, u64)) {
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == identity) {
        let _ = std::fs::remove_file(path);
    }
}

/// Opens the store, brings the host and its stored domains up, and serves until `shutdown`
/// completes; then stops every guest and removes the socket. `ready` is called once the socket
/// accepts connections. With [`Options::verbose`], progress goes to stderr, prefixed `vsgxd:`.
pub fn run(
    options: Options,
    ready: impl FnOnce(),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let verbose = options.verbose;
    let log = |line: std::fmt::Arguments<'_>| {
        if verbose {
            eprintln!("vsgxd: {line}");
        }
    };
    let socket = &options.socket;
    // Before touching the store: a running daemon holds it open.
    if std::os::unix::net::UnixStream::connect(socket).is_ok() {
        bail!("{}: another vsgxd is serving on this socket", socket.display());
    }
    let store = Store::open(&options.state_dir)?;
    let mut config = options.platform;
    config.validate().map_err(|e| anyhow::anyhow!("platform: {e}"))?;
    if config.seed.is_none() {
        config.seed = Some(store.seed()?);
    }
    let mut host = Host::new(Platform::new(config));
    // Pages quarantined before the restart stay out of service (same machine, same EPC).
    let mut unapplied_quarantine = Vec::new();
    for page in store.quarantine()? {
        match host.epc().retire(page) {
            Ok(()) => log(format_args!(
                "EPC page {:#x} stays quarantined ({}, last held by {})",
                page.hpa, page.failure, page.owner
            )),
            Err(e) => {
                log(format_args!(
                    "EPC page {:#x} was quarantined but cannot be now: {e}; the record is kept",
                    page.hpa
                ));
                unapplied_quarantine.push(page);
            }
        }
    }
    let mut vms = BTreeMap::new();
    let mut unrestored = BTreeMap::new();
    for (id, stored) in store.domains()? {
        // Keep ids of domains that cannot come back reserved: their record stays in the store.
        host.reserve_ids_below(id.saturating_add(1));
        let guest = match host.create_as(vsgx_hv::epc::DomainId(id), &stored.file, &stored.config) {
            Ok(guest) => guest,
            Err(e) => {
                log(format_args!("domain id {id} could not be restored: {e}"));
                unrestored.insert(id, Unrestored { domid: id, file: stored.file, reason: e.to_string() });
                continue;
            }
        };
        match boot_guest(guest) {
            Ok(running) => {
                log(format_args!("restored domain {} (id {id}) with an empty vEPC", guest.config.name));
                vms.extend(running.map(|g| (id, g)));
            }
            Err(e) => {
                log(format_args!("domain id {id}: {e}; it is not running"));
                let _ = host.destroy(&id.to_string());
                unrestored.insert(id, Unrestored { domid: id, file: stored.file, reason: e.to_string() });
            }
        }
    }
    let epc_mib = host.sgxinfo().epc_total_bytes >> 20;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let state: Shared = Arc::new(Mutex::new(Daemon { host, store, vms, unrestored, unapplied_quarantine }));
    lock(&state).persist_quarantine()?;
    // Once asked to stop, stop the guests first: a request stuck in an endless ECALL then ends
    // (503) instead of keeping the graceful drain waiting forever.
    let stopping = Arc::clone(&state);
    let shutdown = async move {
        shutdown.await;
        // Under the host lock: no request may destroy a domain whose vCPU is still stopping.
        let _ = tokio::task::spawn_blocking(move || {
            let mut daemon = lock(&stopping);
            std::mem::take(&mut daemon.vms).into_values().for_each(RunningGuest::stop);
        })
        .await;
    };
    let served = runtime.block_on(async {
        let (listener, identity) = bind(socket)?;
        log(format_args!("serving on {} ({epc_mib} MiB of EPC)", socket.display()));
        ready();
        let served = axum::serve(listener, api::router(Arc::clone(&state))).with_graceful_shutdown(shutdown).await;
        // Only the socket this daemon bound is removed (a daemon started meanwhile keeps its own).
        remove_socket(socket, identity);
        served.context("serving the API")
    });
    // Guests stop before their domains go; the domains' EPC is released (they stay in the store
    // and come back at the next start), and what could not be removed stays quarantined.
    let mut daemon = lock(&state);
    std::mem::take(&mut daemon.vms).into_values().for_each(RunningGuest::stop);
    let ids: Vec<u32> = daemon.host.guests().map(|g| g.id.0).collect();
    for id in ids {
        if let Err(e) = daemon.host.destroy(&id.to_string()) {
            log(format_args!("domain id {id}: {e}"));
        }
    }
    let persisted = daemon.persist_quarantine();
    drop(daemon);
    served?;
    persisted?;
    log(format_args!("stopped"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    use vsgx_hv::epc::{DomainId, Owner, QuarantinedPage, RemoveFailure};
    use vsgx_isa::status::SgxError;

    use super::*;

    fn get(socket: &Path, path: &str) -> serde_json::Value {
        let mut s = UnixStream::connect(socket).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        serde_json::from_str(out.split("\r\n\r\n").nth(1).unwrap()).unwrap()
    }

    #[test]
    fn pages_quarantined_before_a_restart_stay_quarantined() {
        let dir = std::env::temp_dir().join(format!("vsgx-daemon-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let platform = vsgx_hw::config::embedded_default();
        let victim = vsgx_hw::platform::Platform::new(platform.clone()).epc().sections()[1].base + 5 * 4096;
        let page = QuarantinedPage {
            hpa: victim,
            owner: Owner::Domain(DomainId(4)),
            failure: RemoveFailure::Error(SgxError::ChildPresent),
        };
        // A record this platform cannot apply (not one of its EPC pages) is kept, not dropped.
        let foreign = QuarantinedPage { hpa: 0x1000, ..page };
        Store::open(&dir.join("state")).unwrap().set_quarantine(&[page, foreign]).unwrap();

        let options = Options { socket: dir.join("s.sock"), state_dir: dir.join("state"), platform, verbose: false };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let daemon = std::thread::spawn(move || {
            run(
                options,
                move || {
                    let _ = ready_tx.send(());
                },
                async move {
                    let _ = stopped.await;
                },
            )
        });
        ready.recv().unwrap();
        let host = get(&dir.join("s.sock"), "/v1/host");
        assert_eq!(host["epc_quarantined_bytes"], 4096);
        assert_eq!(host["epc_free_bytes"].as_u64().unwrap(), host["epc_total_bytes"].as_u64().unwrap() - 4096);
        stop.send(()).unwrap();
        daemon.join().unwrap().unwrap();
        // Both still recorded for the next run (by address).
        assert_eq!(Store::open(&dir.join("state")).unwrap().quarantine().unwrap(), vec![foreign, page]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

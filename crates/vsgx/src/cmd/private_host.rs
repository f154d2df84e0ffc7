//! A private `vsgxd` on a thread of this process (socket and state in a directory the caller
//! owns): what `vsgx demo` and `vsgx bench` run against.

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use anyhow::{Context, anyhow, bail};

/// A private vsgxd on a thread; stopped (guests first) when dropped.
pub struct PrivateHost {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl PrivateHost {
    /// Starts a daemon on the embedded platform with its socket and state in `dir`; returns once
    /// it accepts connections, with the socket's path.
    pub fn start(dir: &Path) -> anyhow::Result<(Self, PathBuf)> {
        let socket = dir.join("vsgxd.sock");
        let options = vsgx_daemon::Options {
            socket: socket.clone(),
            state_dir: dir.join("state"),
            platform: vsgx_hw::config::embedded_default(),
            verbose: false,
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("vsgxd".into())
            .spawn(move || {
                vsgx_daemon::run(
                    options,
                    move || {
                        let _ = ready_tx.send(());
                    },
                    async move {
                        let _ = stopped.await;
                    },
                )
            })
            .context("starting the private vsgxd")?;
        let mut host = Self { stop: Some(stop), thread: Some(thread) };
        if ready.recv().is_err() {
            // The daemon ended before it was ready: its error says why.
            let outcome = host.thread.take().map(|t| t.join());
            return Err(match outcome {
                Some(Ok(Err(e))) => e.context("the private vsgxd did not start"),
                _ => anyhow!("the private vsgxd did not start"),
            });
        }
        Ok((host, socket))
    }

    /// Stops the daemon (guests first) and waits for it.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(outcome)) => outcome,
            Some(Err(_)) => bail!("the private vsgxd panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for PrivateHost {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

//! Shared by the end-to-end tests: a `vsgxd` per test in a temp dir, and request helpers.
#![allow(dead_code)] // each test binary uses its own part

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as StdCommand};
use std::time::Duration;

use assert_cmd::Command;
use assert_cmd::cargo::cargo_bin;
use serde_json::Value;

/// A vsgxd in a temp dir, killed on drop.
pub struct Daemon {
    pub child: Child,
    pub socket: PathBuf,
    pub dir: PathBuf,
    _owned: Option<tempfile::TempDir>,
}

impl Daemon {
    pub fn start(epc: &str) -> Self {
        let owned = tempfile::tempdir().unwrap();
        let mut d = Self::start_in(owned.path(), epc);
        d._owned = Some(owned);
        d
    }

    /// A daemon whose socket and state directory are in `dir`.
    pub fn start_in(dir: &Path, epc: &str) -> Self {
        let socket = dir.join("vsgxd.sock");
        let state = dir.join("state");
        let child = StdCommand::new(cargo_bin("vsgxd"))
            .args(["--socket", socket.to_str().unwrap(), "--epc", epc, "--state-dir", state.to_str().unwrap()])
            .spawn()
            .unwrap();
        let mut daemon = Self { child, socket, dir: dir.to_path_buf(), _owned: None };
        // Readiness, not timing: wait until the socket accepts (or the daemon died).
        for _ in 0..1000 {
            if UnixStream::connect(&daemon.socket).is_ok() {
                return daemon;
            }
            assert!(daemon.child.try_wait().unwrap().is_none(), "vsgxd exited early");
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("vsgxd did not start listening");
    }

    pub fn vsgx(&self) -> Command {
        let mut c = Command::cargo_bin("vsgx").unwrap();
        c.args(["--socket", self.socket.to_str().unwrap()]);
        c
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let out = self.vsgx().args(args).arg("--json").assert().success();
        serde_json::from_slice(&out.get_output().stdout).unwrap()
    }

    /// One raw HTTP request; the status and body.
    pub fn raw(&self, request: &str) -> (u16, String) {
        let mut s = UnixStream::connect(&self.socket).unwrap();
        // The server may answer (413) and close before reading a whole oversized body: a failed
        // write is not the test's business, the answer is.
        let _ = s.write_all(request.as_bytes());
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let out = String::from_utf8_lossy(&out).into_owned();
        let status = out.split(' ').nth(1).unwrap().parse().unwrap();
        let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
        (status, body)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn example(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/guests").join(name).to_str().unwrap().to_owned()
}

pub fn post(path: &str, body: &str) -> String {
    format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
}

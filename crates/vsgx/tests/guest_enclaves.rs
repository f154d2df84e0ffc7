//! Enclaves inside guests that run under `vsgxd`, end to end through the CLI: load, call, list,
//! destroy; refusals with their messages; sealed data across a daemon restart (same host identity)
//! and not across hosts.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use common::{Daemon, example};
use predicates::prelude::PredicateBooleanExt;
use predicates::str::contains;
use serde_json::Value;

const KEY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../vsgx-isa/tests/data/test-key.pem");

/// Builds `examples/enclaves/NAME.wat` into `dir`: (NAME.sgxs, NAME.sig).
fn build(dir: &Path, name: &str, extra: &[&str]) -> (String, String) {
    let wat = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../../examples/enclaves/{name}.wat"));
    let out = dir.join(name);
    Command::cargo_bin("vsgx")
        .unwrap()
        .args(["enclave", "build", wat.to_str().unwrap(), "--key", KEY, "-o", out.to_str().unwrap()])
        .args(extra)
        .assert()
        .success();
    let path = |ext: &str| format!("{}.{ext}", out.display());
    (path("sgxs"), path("sig"))
}

fn load(d: &Daemon, dom: &str, image: &(String, String)) -> Value {
    d.json(&["enclave", "load", dom, &image.0, "--sig", &image.1])
}

fn call(d: &Daemon, dom: &str, enclave: &Value, args: &[&str]) -> Vec<u8> {
    let id = enclave["enclave_id"].to_string();
    let out = d.vsgx().args(["enclave", "call", dom, &id]).args(args).assert().success();
    out.get_output().stdout.clone()
}

#[test]
fn enclaves_load_and_run_inside_a_guest() {
    let d = Daemon::start("64@0,64@1");
    let hello = build(&d.dir, "hello", &[]);
    let counter = build(&d.dir, "counter", &[]);
    d.vsgx().args(["create", &example("web.cfg")]).assert().success();
    let empty_guest = d.json(&["sgxlist", "web"]);

    let h = load(&d, "web", &hello);
    assert_eq!(h["enclave_id"], 1);
    assert_eq!(h["ecalls"], serde_json::json!(["hello"]));
    let measured = d.vsgx().args(["enclave", "measure", &hello.0, "--json"]).assert().success();
    let measured: Value = serde_json::from_slice(&measured.get_output().stdout).unwrap();
    assert_eq!(h["mrenclave"], measured["mrenclave"], "the guest measured what `enclave measure` computes");
    // Exactly the enclave's output bytes, as `vsgx enclave run` prints them.
    assert_eq!(call(&d, "web", &h, &["--input", "guest"]), b"Hello, GUEST");
    assert_eq!(call(&d, "1", &h, &["--call", "hello", "--input", ""]), b"Hello, ");

    // An image larger than the mailbox's 1 MiB payload area goes up in chunks (UPLOAD + LOAD_STAGED).
    let big_dir = d.dir.join("big");
    std::fs::create_dir(&big_dir).unwrap();
    let big = build(&big_dir, "hello", &["--heap", "3M"]);
    assert!(std::fs::metadata(&big.0).unwrap().len() > 3 << 20);
    let b = load(&d, "web", &big);
    assert_eq!(call(&d, "web", &b, &["--input", "big"]), b"Hello, BIG");
    d.vsgx().args(["enclave", "destroy", "web", &b["enclave_id"].to_string()]).assert().success();

    // State lives as long as the enclave does: two increments in one guest enclave count to 2.
    let c = load(&d, "web", &counter);
    assert_eq!(c["enclave_id"], 3);
    call(&d, "web", &c, &["--call", "increment"]);
    assert_eq!(call(&d, "web", &c, &["--call", "increment"]), 2u64.to_le_bytes());
    let json_call = d.vsgx().args(["enclave", "call", "web", "3", "--call", "get", "--json"]).assert().success();
    let json_call: Value = serde_json::from_slice(&json_call.get_output().stdout).unwrap();
    assert_eq!((json_call["result"].as_i64(), json_call["output_hex"].as_str()), (Some(8), Some("0200000000000000")));

    let listed = d.json(&["enclave", "list", "web"]);
    let listed: Vec<(u64, &str, u64)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["enclave_id"].as_u64().unwrap(), e["state"].as_str().unwrap(), e["epc_pages"].as_u64().unwrap()))
        .collect();
    assert_eq!(listed.iter().map(|e| (e.0, e.1)).collect::<Vec<_>>(), [(1, "ready"), (3, "ready")]);
    assert!(listed.iter().all(|e| e.2 > 0));
    d.vsgx().args(["enclave", "list", "web"]).assert().success().stdout(contains("hello").and(contains("increment")));
    // Metrics: the guest runs, and the hypervisor trapped one ECREATE and one EINIT per load (the
    // embedded host has FLC, so EINIT exits; ECREATE exits because PROVISIONKEY is policed).
    let (status, metrics) = d.raw("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 200);
    assert!(metrics.contains("vsgx_domain_guest_running{domain=\"web\",domid=\"1\"} 1"), "{metrics}");
    for leaf in ["ECREATE", "EINIT"] {
        let line = format!("vsgx_domain_encls_exits_total{{domain=\"web\",domid=\"1\",leaf=\"{leaf}\"}} ");
        let count: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .unwrap_or_else(|| panic!("{line} in {metrics}"))
            .parse()
            .unwrap();
        assert!(count >= 3, "{leaf}: {count} exits for three loads");
    }

    // The host's view does not change: a static vEPC is backed whole from creation.
    assert_eq!(d.json(&["sgxlist", "web"]), empty_guest);

    // Any valid SGXS + SIGSTRUCT pair loads, WebAssembly or not: the Fortanix test enclave (x86
    // code) initializes in the guest with the MRENCLAVE its SIGSTRUCT names, but cannot be called.
    let testdata = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata");
    let fortanix = (
        testdata.join("fortanix-test-enclave.sgxs").to_str().unwrap().to_owned(),
        testdata.join("fortanix-test-enclave.sig").to_str().unwrap().to_owned(),
    );
    let f = load(&d, "web", &fortanix);
    assert_eq!(f["ecalls"], serde_json::json!([]));
    let shown = d.vsgx().args(["sigstruct", "show", &fortanix.1, "--json"]).assert().success();
    let shown: Value = serde_json::from_slice(&shown.get_output().stdout).unwrap();
    assert_eq!(f["mrenclave"], shown["enclavehash"], "{shown}");
    let fid = f["enclave_id"].to_string();
    d.vsgx()
        .args(["enclave", "call", "web", &fid, "--call", "main"])
        .assert()
        .failure()
        .stderr(contains("not WebAssembly"));
    d.vsgx().args(["enclave", "destroy", "web", &fid]).assert().success();

    // Refusals, each one line naming what is wrong.
    d.vsgx()
        .args(["enclave", "load", "web", &hello.0, "--sig", &counter.1])
        .assert()
        .failure()
        .stderr(contains("EINIT").or(contains("measurement")));
    d.vsgx()
        .args(["enclave", "load", "web", &hello.1, "--sig", &hello.1])
        .assert()
        .failure()
        .stderr(contains("bad enclave image: record 0"));
    d.vsgx().args(["enclave", "call", "web", "9"]).assert().failure().stderr(contains("no enclave 9"));
    d.vsgx().args(["enclave", "call", "web", "1", "--call", "nope"]).assert().failure().stderr(contains("no ECALL"));
    d.vsgx().args(["enclave", "call", "web", "3"]).assert().failure().stderr(contains("several ECALLs"));
    d.vsgx().args(["enclave", "list", "db"]).assert().failure().stderr(contains("no domain \"db\""));
    let plain = d.dir.join("plain.cfg");
    std::fs::write(&plain, "name = 'plain'\nmemory = 64\n").unwrap();
    d.vsgx().args(["create", plain.to_str().unwrap()]).assert().success();
    let guests: Vec<(String, String)> = d
        .json(&["list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["name"].as_str().unwrap().to_owned(), g["guest"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(guests, [("web".to_owned(), "running".to_owned()), ("plain".to_owned(), "none".to_owned())]);
    d.vsgx().arg("list").assert().success().stdout(contains("running").and(contains("none")));
    d.vsgx()
        .args(["enclave", "load", "plain", &hello.0, "--sig", &hello.1])
        .assert()
        .failure()
        .stderr(contains("has no vEPC"));
    // A failing ECALL result is the exit status, its output still exactly the enclave's.
    d.vsgx()
        .args(["enclave", "call", "web", "1", "--input", "x", "--output-size", "2"])
        .assert()
        .failure()
        .stdout("")
        .stderr(contains("error -2"));

    d.vsgx().args(["enclave", "destroy", "web", "1"]).assert().success().stdout(contains("EPC pages back"));
    d.vsgx().args(["enclave", "destroy", "web", "1"]).assert().failure().stderr(contains("no enclave 1"));
    assert_eq!(d.json(&["enclave", "list", "web"]).as_array().unwrap().len(), 1);
    // Destroying the guest with an enclave still loaded returns every page to the host.
    d.vsgx().args(["destroy", "web"]).assert().success();
    d.vsgx().args(["destroy", "plain"]).assert().success();
    let info = d.json(&["sgxinfo"]);
    assert_eq!(info["epc_free_bytes"], info["epc_total_bytes"]);
}

#[test]
fn sealed_data_unseals_after_a_daemon_restart_and_not_on_another_host() {
    let dir = tempfile::tempdir().unwrap();
    let sealer = build(dir.path(), "sealer", &[]);
    let first = Daemon::start_in(dir.path(), "64");
    first.vsgx().args(["create", &example("web.cfg")]).assert().success();
    let s = load(&first, "web", &sealer);
    let blob = call(&first, "web", &s, &["--call", "seal", "--input", "the secret"]);
    assert!(blob.len() > 10);
    let blob_file = dir.path().join("blob.bin");
    std::fs::write(&blob_file, &blob).unwrap();
    drop(first); // kill -9

    // Same state directory, same host identity: the guest comes back with an empty vEPC, the
    // enclave is rebuilt from its image and unseals what it sealed before.
    let second = Daemon::start_in(dir.path(), "64");
    assert_eq!(second.json(&["enclave", "list", "web"]), serde_json::json!([]));
    let s = load(&second, "web", &sealer);
    let unseal = ["--call", "unseal", "--input-file", blob_file.to_str().unwrap()];
    assert_eq!(call(&second, "web", &s, &unseal), b"the secret");
    // The same through standard input (`--input-file -`).
    second
        .vsgx()
        .args(["enclave", "call", "web", &s["enclave_id"].to_string(), "--call", "unseal", "--input-file", "-"])
        .write_stdin(blob.clone())
        .assert()
        .success()
        .stdout("the secret");
    drop(second);

    // Another host (another state directory): other fused secrets, so the blob does not open.
    let elsewhere = Daemon::start("64");
    elsewhere.vsgx().args(["create", &example("web.cfg")]).assert().success();
    let s = load(&elsewhere, "web", &sealer);
    elsewhere
        .vsgx()
        .args(["enclave", "call", "web", &s["enclave_id"].to_string()])
        .args(unseal)
        .assert()
        .failure()
        .stderr(contains("error -3"));
}

/// An enclave that never returns.
const SPIN: &str = r#"(module
  (import "env" "memory" (memory 1))
  (func (export "ecall_spin") (param i64 i64 i64 i64) (result i64)
    (loop $forever (br $forever))
    (i64.const 0)))"#;

/// Builds [`SPIN`] into `dir`.
fn spin_image(dir: &Path) -> (String, String) {
    let wat = dir.join("spin.wat");
    std::fs::write(&wat, SPIN).unwrap();
    let out = dir.join("spin");
    Command::cargo_bin("vsgx")
        .unwrap()
        .args(["enclave", "build", wat.to_str().unwrap(), "--key", KEY, "-o", out.to_str().unwrap()])
        .assert()
        .success();
    (format!("{}.sgxs", out.display()), format!("{}.sig", out.display()))
}

#[test]
fn sigterm_stops_the_daemon_even_during_an_endless_ecall() {
    let mut d = Daemon::start("64");
    let spin = spin_image(&d.dir);
    d.vsgx().args(["create", &example("web.cfg")]).assert().success();
    load(&d, "web", &spin);
    let mut stuck = d.vsgx();
    stuck.args(["enclave", "call", "web", "1"]).timeout(std::time::Duration::from_secs(120));
    let stuck = std::thread::spawn(move || stuck.output().unwrap());
    std::thread::sleep(std::time::Duration::from_millis(300));
    let term = std::process::Command::new("kill").args(["-TERM", &d.child.id().to_string()]).status().unwrap();
    assert!(term.success());
    // Bounded wait, so a hang fails the test instead of stalling it.
    let mut status = None;
    for _ in 0..6000 {
        status = d.child.try_wait().unwrap();
        if status.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let status = status.expect("vsgxd stops within a minute of SIGTERM despite the endless ECALL");
    assert!(status.success(), "{status}");
    let out = stuck.join().unwrap();
    assert!(!out.status.success(), "the endless call cannot succeed");
}

#[test]
fn an_endless_ecall_neither_stalls_the_daemon_nor_outlives_its_guest() {
    let d = Daemon::start("64@0,64@1");
    let spin = spin_image(&d.dir);
    let hello = build(&d.dir, "hello", &[]);
    d.vsgx().args(["create", &example("web.cfg")]).assert().success();
    let other = d.dir.join("other.cfg");
    std::fs::write(&other, "name = 'other'\nmemory = 64\nepc = 8\n").unwrap();
    d.vsgx().args(["create", other.to_str().unwrap()]).assert().success();
    load(&d, "web", &spin);
    let h = load(&d, "other", &hello);

    let mut stuck = d.vsgx();
    stuck.args(["enclave", "call", "web", "1"]).timeout(std::time::Duration::from_secs(120));
    let stuck = std::thread::spawn(move || stuck.output().unwrap());
    // Give the call time to get into the enclave (the assertions hold either way).
    std::thread::sleep(std::time::Duration::from_millis(300));
    // The daemon and the other guest keep answering.
    d.json(&["sgxinfo"]);
    assert_eq!(call(&d, "other", &h, &["--input", "still here"]), b"Hello, STILL HERE");
    // Requests for the stuck guest queue behind it, up to 16 at a time (the stuck call counts):
    // of 21 more, at least 5 are refused at once with 429, the others wait.
    let waiting: Vec<_> = (0..21)
        .map(|_| {
            let socket = d.socket.clone();
            std::thread::spawn(move || {
                let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
                s.write_all(b"GET /v1/domains/web/enclaves HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
                let mut out = String::new();
                s.read_to_string(&mut out).unwrap();
                out.split(' ').nth(1).unwrap().parse::<u16>().unwrap()
            })
        })
        .collect();
    // Five answers mean five 429s: the queue is full, so the other requests are all waiting.
    for _ in 0..6000 {
        if waiting.iter().filter(|t| t.is_finished()).count() >= 5 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // Destroying the guest pulls its vCPU out of the enclave; the call fails with a reason, and
    // every request still waiting for the guest gets 503.
    d.vsgx().args(["destroy", "web"]).assert().success();
    let statuses: Vec<u16> = waiting.into_iter().map(|t| t.join().unwrap()).collect();
    // 6 refused when the stuck call holds a place (it normally does by now), 5 if it was late.
    let refused = statuses.iter().filter(|&&s| s == 429).count();
    assert!((5..=6).contains(&refused), "{statuses:?}");
    assert_eq!(statuses.iter().filter(|&&s| s == 503).count(), 21 - refused, "{statuses:?}");
    let out = stuck.join().unwrap();
    assert!(!out.status.success(), "the endless call cannot succeed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("stopped") || stderr.contains("no domain"), "{stderr}");
    let info = d.json(&["sgxinfo"]);
    assert_eq!(info["epc_free_bytes"].as_u64().unwrap(), info["epc_total_bytes"].as_u64().unwrap() - (8 << 20));
}

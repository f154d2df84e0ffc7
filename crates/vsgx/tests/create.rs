//! `vsgx create CFG --dry-run [--json]`: the layout a config gets, checked field by field, and the
//! errors for configs that cannot be used.

use std::path::PathBuf;

use assert_cmd::Command;
use predicates::str::contains;
use serde_json::Value;

const MIB: u64 = 1 << 20;

fn vsgx() -> Command {
    Command::cargo_bin("vsgx").unwrap()
}

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/guests").join(name)
}

fn dry_run_json(args: &[&str]) -> Value {
    let out = vsgx().args(["create"]).args(args).args(["--dry-run", "--json"]).assert().success();
    serde_json::from_slice(&out.get_output().stdout).expect("stdout is JSON")
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// CPUID 0x12 sub-leaf `sub` as `[eax, ebx, ecx, edx]`.
fn cpuid(v: &Value, sub: u64) -> [u64; 4] {
    let e = v["cpuid"].as_array().unwrap().iter().find(|e| e["leaf"] == 0x12 && e["subleaf"] == sub).unwrap();
    ["eax", "ebx", "ecx", "edx"].map(|r| e[r].as_u64().unwrap())
}

#[test]
fn the_web_example_is_laid_out_at_4_gib_and_announced_consistently() {
    let v = dry_run_json(&[example("web.cfg").to_str().unwrap()]);
    assert_eq!(v["name"], "web");
    let map: Vec<(u64, u64, &str)> = v["memory_map"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["base"].as_u64().unwrap(), r["size"].as_u64().unwrap(), r["type"].as_str().unwrap()))
        .collect();
    assert_eq!(map, [(0, 512 * MIB, "ram"), (0xF000_0000, 256 * MIB, "mmio"), (0x1_0000_0000, 64 * MIB, "reserved")]);
    assert_eq!(v["epc_sections"], serde_json::json!([{ "base": 0x1_0000_0000u64, "size": 64 * MIB, "node": 0 }]));
    // Sub-leaf 2 = section 0: type 1, base and size split into 4 KiB-granular low/high halves.
    assert_eq!(cpuid(&v, 2), [0x0000_0001, 0x1, 0x0400_0001, 0]);
    // The list ends with an all-zero (invalid) sub-leaf.
    assert_eq!(cpuid(&v, 3), [0, 0, 0, 0]);
    assert_eq!(v["warnings"], serde_json::json!([]));
}

#[test]
fn a_big_guest_gets_its_epc_after_the_ram_above_4_gib() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(&dir, "big.cfg", "name = \"big\"\nmemory = 8192\nepc = 32\n");
    let v = dry_run_json(&[&cfg]);
    // 3840 MiB below the 256 MiB hole, the other 4352 MiB from 4 GiB: RAM ends at 0x2_1000_0000.
    assert_eq!(v["epc_sections"][0]["base"], 0x2_1000_0000u64);
    assert_eq!(v["epc_sections"][0]["size"], 32 * MIB);
}

#[test]
fn xl_keys_vsgx_does_not_use_are_warnings_with_their_location() {
    let cfg = example("xen-hvm.cfg");
    let v = dry_run_json(&[cfg.to_str().unwrap()]);
    let warnings = v["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 10, "{warnings:?}");
    assert!(warnings[0].as_str().unwrap().contains("xen-hvm.cfg:6:1: warning: `builder`"), "{warnings:?}");
    // Human output puts them on stderr, one line each, and still succeeds.
    vsgx()
        .args(["create", cfg.to_str().unwrap(), "--dry-run"])
        .assert()
        .success()
        .stderr(contains("`usbdevice` is not used by vsgx"))
        .stdout(contains("INT0E0C"))
        .stdout(contains("config is valid"));
}

#[test]
fn config_errors_name_file_line_and_column_and_fail() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("syntax.cfg", "name = \"a\"\nmemory = \n", "syntax.cfg:2:"),
        ("policy.cfg", "name = \"a\"\nepc = 16\nepc_policy = \"balloon\"\n", "static"),
        ("toomuch.cfg", "name = \"a\"\nepc = 4096\n", "toomuch.cfg:2:"),
        ("lehash.cfg", "name = \"a\"\nsgx = \"epc=16,lehash=abcd\"\n", "lehash"),
    ];
    for (name, text, expected) in cases {
        let cfg = write(&dir, name, text);
        let out = vsgx().args(["create", &cfg, "--dry-run"]).assert().failure();
        let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
        assert!(stderr.contains(expected), "{name}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{name}: one line: {stderr}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
    }
    vsgx()
        .args(["create", dir.path().join("absent.cfg").to_str().unwrap(), "--dry-run"])
        .assert()
        .failure()
        .stderr(contains("absent.cfg"));
}

#[test]
fn the_host_can_come_from_a_platform_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut platform = vsgx_hw::config::embedded_default();
    platform.epc.truncate(1);
    let toml = write(&dir, "one-node.toml", &platform.to_toml().unwrap());
    let on_node_1 = write(&dir, "n1.cfg", "name = \"a\"\nepc_sections = [ \"size=16,node=1\" ]\n");
    // The embedded host has node 1; the one-section platform does not.
    dry_run_json(&[&on_node_1]);
    vsgx()
        .args(["create", &on_node_1, "--dry-run", "--platform", &toml])
        .assert()
        .failure()
        .stderr(contains("n1.cfg:2:"));
    vsgx()
        .args(["create", &on_node_1, "--dry-run", "--platform", dir.path().join("nope.toml").to_str().unwrap()])
        .assert()
        .failure()
        .stderr(contains("nope.toml"));
}

#[test]
fn creating_for_real_without_a_daemon_says_how_to_start_one() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("none.sock");
    vsgx()
        .args(["--socket", socket.to_str().unwrap(), "create", example("web.cfg").to_str().unwrap()])
        .assert()
        .failure()
        .stderr(contains("no vsgxd answers"))
        .stderr(contains("vsgxd --socket"));
}

//! `vsgx demo`, the README's first command: exits 0 and shows every step of the scenario with the
//! figures it checked.

use assert_cmd::Command;

#[test]
fn the_demo_walks_through_guests_and_enclaves_and_exits_0() {
    let out = Command::cargo_bin("vsgx").unwrap().arg("demo").assert().success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    for expected in [
        "EPC free         256 MiB (65536 pages)",
        "created domain web (id 1) with 64 MiB (16384 pages) of vEPC",
        "created domain numa (id 2) with 192 MiB (49152 pages) of vEPC",
        "Hello, WORLD",
        "\"output_hex\":\"0200000000000000\"",
        "the secret",
        "EPC short by 16384 pages",
        "destroyed domain numa",
    ] {
        assert!(stdout.contains(expected), "the demo should show {expected:?}:\n{stdout}");
    }
    // The host is whole again at the end, and the private daemon left nothing behind on stderr.
    assert!(stdout.rsplit("$ vsgx sgxinfo").next().unwrap().contains("EPC free         256 MiB"), "{stdout}");
    assert!(out.get_output().stderr.is_empty(), "{}", String::from_utf8_lossy(&out.get_output().stderr));
}

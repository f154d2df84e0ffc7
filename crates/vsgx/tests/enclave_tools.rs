//! End-to-end tests of the offline enclave tools through the `vsgx` binary.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;
use vsgx_isa::sgxs::{Record, encode_record};

const MRENCLAVE: &str = "784acfd7d5096a8f0fbd3265760bff21b120f62407a9a9e5ba31aa3c8ed198fc";
const MRSIGNER: &str = "fb4bab3d6036ac1d730fa83d7366df1dd2dfeac194ef335d6854d8a6c6475542";

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(name)
}

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

fn vsgx() -> Command {
    let mut cmd = Command::cargo_bin("vsgx").unwrap();
    cmd.env_remove("SOURCE_DATE_EPOCH");
    cmd
}

fn json_of(cmd: &mut Command, expect_code: i32) -> Value {
    let out = cmd.assert().code(expect_code).get_output().stdout.clone();
    serde_json::from_slice(&out).expect("stdout is JSON")
}

/// The signing arguments that reproduce the Fortanix SIGSTRUCT's body.
const FORTANIX_BODY: [&str; 20] = [
    "--isvprodid",
    "65535",
    "--isvsvn",
    "0",
    "--attributes",
    "0x4",
    "--attributes-mask",
    "0xfffffffffffffffd",
    "--xfrm",
    "0x3",
    "--xfrm-mask",
    "0xffffffffffffff1b",
    "--miscselect",
    "0",
    "--misc-mask",
    "0xffffffff",
    "--date",
    "20161214",
    "--vendor",
    "none",
];

#[test]
fn measure_prints_mrenclave() {
    vsgx()
        .args(["enclave", "measure"])
        .arg(testdata("fortanix-test-enclave.sgxs"))
        .assert()
        .success()
        .stdout(format!("{MRENCLAVE}\n"));
}

#[test]
fn measure_json() {
    let v = json_of(vsgx().args(["enclave", "measure", "--json"]).arg(testdata("fortanix-test-enclave.sgxs")), 0);
    assert_eq!(v["mrenclave"], MRENCLAVE);
    assert_eq!(v["size"], 0x40000);
    assert_eq!(v["ssaframesize"], 1);
    assert_eq!(v["pages"], 9);
    assert_eq!(v["measured_chunks"], 144);
    assert_eq!(v["unmeasured_chunks"], 0);
}

#[test]
fn show_valid_fortanix_sigstruct() {
    let v = json_of(vsgx().args(["sigstruct", "show", "--json"]).arg(testdata("fortanix-test-enclave.sig")), 0);
    assert_eq!(v["valid"], true);
    assert_eq!(v["invalid_reason"], Value::Null);
    assert_eq!(v["mrsigner"], MRSIGNER);
    assert_eq!(v["enclavehash"], MRENCLAVE);
    assert_eq!(v["vendor"], "none");
    assert_eq!(v["date"], "20161214");
    assert_eq!(v["isvprodid"], 0xFFFF);
    assert_eq!(v["isvsvn"], 0);
    assert_eq!(v["attributes"], 4);
    assert_eq!(v["attributes_mask"].as_u64(), Some(0xFFFF_FFFF_FFFF_FFFD));
    assert_eq!(v["xfrm"], 3);
    assert_eq!(v["xfrm_mask"].as_u64(), Some(0xFFFF_FFFF_FFFF_FF1B));
    assert_eq!(v["miscselect"], 0);
    assert_eq!(v["misc_mask"].as_u64(), Some(0xFFFF_FFFF));
    assert_eq!(v["exponent"], 3);

    vsgx()
        .args(["sigstruct", "show"])
        .arg(testdata("fortanix-test-enclave.sig"))
        .assert()
        .success()
        .stdout(predicate::str::contains("valid            yes").and(predicate::str::contains(MRSIGNER)));
}

fn mutated_sig(dir: &Path, edit: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(testdata("fortanix-test-enclave.sig")).unwrap();
    edit(&mut bytes);
    let path = dir.join("mutated.sig");
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn show_invalid_sigstructs_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let flipped = mutated_sig(dir.path(), |b| b[1026] ^= 1);
    let v = json_of(vsgx().args(["sigstruct", "show", "--json"]).arg(&flipped), 1);
    assert_eq!(v["valid"], false);
    assert_eq!(v["isvsvn"], 1);
    assert!(v["invalid_reason"].as_str().unwrap().contains("signature"));

    let header = mutated_sig(dir.path(), |b| b[3] = 0x80);
    let v = json_of(vsgx().args(["sigstruct", "show", "--json"]).arg(&header), 1);
    assert!(v["invalid_reason"].as_str().unwrap().contains("HEADER"), "{v}");

    let exponent = mutated_sig(dir.path(), |b| b[512] = 17);
    let v = json_of(vsgx().args(["sigstruct", "show", "--json"]).arg(&exponent), 1);
    assert!(v["invalid_reason"].as_str().unwrap().contains("EXPONENT"), "{v}");
    assert_eq!(v["exponent"], 17);

    let q1 = mutated_sig(dir.path(), |b| b[1100] ^= 0x40);
    let v = json_of(vsgx().args(["sigstruct", "show", "--json"]).arg(&q1), 1);
    assert!(v["invalid_reason"].as_str().unwrap().contains("Q1"), "{v}");
}

#[test]
fn show_unreadable_exits_2_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let short = mutated_sig(dir.path(), |b| b.truncate(1807));
    vsgx()
        .args(["sigstruct", "show"])
        .arg(&short)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("mutated.sig").and(predicate::str::contains("1808")));
    vsgx()
        .args(["sigstruct", "show", "--json"])
        .arg(dir.path().join("missing.sig"))
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains("missing.sig"));
}

#[test]
fn signing_the_fortanix_body_reproduces_its_signed_fields() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ours.sig");
    vsgx()
        .args(["enclave", "sign", "--key"])
        .arg(data("rsa3072-e3.pem"))
        .arg(testdata("fortanix-test-enclave.sgxs"))
        .arg("-o")
        .arg(&out)
        .args(FORTANIX_BODY)
        .assert()
        .success();
    let ours = std::fs::read(&out).unwrap();
    let theirs = std::fs::read(testdata("fortanix-test-enclave.sig")).unwrap();
    assert_eq!(ours.len(), 1808);
    assert_eq!(ours[..128], theirs[..128], "header range of the signed message");
    assert_eq!(ours[900..1028], theirs[900..1028], "body range of the signed message");
    assert_ne!(ours[128..512], theirs[128..512], "a different key");

    let v = json_of(vsgx().args(["sigstruct", "show", "--json"]).arg(&out), 0);
    assert_eq!(v["valid"], true);
    assert_eq!(v["enclavehash"], MRENCLAVE);
    assert_ne!(v["mrsigner"], MRSIGNER);
}

#[test]
fn signing_is_reproducible_and_defaults_are_a_production_64_bit_enclave() {
    let dir = tempfile::tempdir().unwrap();
    let sign = |name: &str, epoch: &str| {
        let out = dir.path().join(name);
        vsgx()
            .env("SOURCE_DATE_EPOCH", epoch)
            .args(["enclave", "sign", "--key"])
            .arg(data("rsa3072-e3-pkcs8.pem"))
            .arg(testdata("fortanix-test-enclave.sgxs"))
            .arg("-o")
            .arg(&out)
            .assert()
            .success();
        std::fs::read(out).unwrap()
    };
    let a = sign("a.sig", "1481673600");
    let b = sign("b.sig", "1481673600");
    assert_eq!(a, b, "same inputs give the same bytes");
    let c = sign("c.sig", "1700000000");
    assert_ne!(a, c, "the date is an input");

    let v = json_of(vsgx().args(["sigstruct", "show", "--json"]).arg(dir.path().join("a.sig")), 0);
    assert_eq!(v["date"], "20161214", "SOURCE_DATE_EPOCH 1481673600 is 2016-12-14");
    assert_eq!(v["attributes"], 4, "MODE64BIT, no DEBUG");
    assert_eq!(v["attributes_mask"].as_u64(), Some(u64::MAX), "DEBUG is enforced");
    assert_eq!(v["xfrm"], 3);
    assert_eq!(v["vendor"], "none");
    assert_eq!((v["isvprodid"].as_u64(), v["isvsvn"].as_u64()), (Some(0), Some(0)));

    vsgx().args(["enclave", "sign", "--help"]).assert().success().stdout(
        predicate::str::contains("[default: 0x4]")
            .and(predicate::str::contains("[default: 0xffffffffffffff1b]"))
            .and(predicate::str::contains("[default: none]")),
    );
}

#[test]
fn keygen_then_sign() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    let out = vsgx().args(["enclave", "keygen", "-o"]).arg(&key).assert().success().get_output().stdout.clone();
    let mrsigner = String::from_utf8(out).unwrap().trim().to_string();
    assert_eq!(mrsigner.len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    }
    assert!(std::fs::read_to_string(&key).unwrap().starts_with("-----BEGIN RSA PRIVATE KEY-----"));

    vsgx()
        .args(["enclave", "keygen", "-o"])
        .arg(&key)
        .assert()
        .failure()
        .stderr(predicate::str::contains("already exists"));

    let sig = dir.path().join("e.sig");
    vsgx()
        .args(["enclave", "sign", "--date", "20260101", "--isvsvn", "7", "--key"])
        .arg(&key)
        .arg(testdata("fortanix-test-enclave.sgxs"))
        .arg("-o")
        .arg(&sig)
        .assert()
        .success();
    let v = json_of(vsgx().args(["sigstruct", "show", "--json"]).arg(&sig), 0);
    assert_eq!(v["mrsigner"], mrsigner.as_str());
    assert_eq!(v["isvsvn"], 7);
}

#[test]
fn keys_that_cannot_sign_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("rsa2048-e3.pem", "2048 bits"),
        ("rsa3072-e65537-pkcs8.pem", "exponent is 0x010001"),
        ("ec-p256.pem", "not an RSA private key"),
    ];
    for (key, message) in cases {
        vsgx()
            .args(["enclave", "sign", "--date", "20260101", "--key"])
            .arg(data(key))
            .arg(testdata("fortanix-test-enclave.sgxs"))
            .arg("-o")
            .arg(dir.path().join("x.sig"))
            .assert()
            .failure()
            .stderr(predicate::str::contains(key).and(predicate::str::contains(message)));
    }
    assert!(!dir.path().join("x.sig").exists(), "nothing written on failure");
}

#[test]
fn attribute_arguments_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let sign = |extra: &[&str]| {
        let mut cmd = vsgx();
        cmd.env("SOURCE_DATE_EPOCH", "1700000000")
            .args(["enclave", "sign", "--key"])
            .arg(data("rsa3072-e3.pem"))
            .arg(testdata("fortanix-test-enclave.sgxs"))
            .arg("-o")
            .arg(dir.path().join("x.sig"))
            .args(extra);
        cmd.assert()
    };
    sign(&["--attributes", "0x5"]).failure().stderr(predicate::str::contains("INIT"));
    sign(&["--xfrm", "0x1"]).failure().stderr(predicate::str::contains("--xfrm"));
    sign(&["--isvsvn", "70000"]).failure().stderr(predicate::str::contains("16 bits"));
    sign(&["--date", "20261301"]).failure().stderr(predicate::str::contains("month"));
    sign(&["--attributes", "zz"]).failure().stderr(predicate::str::contains("hexadecimal"));
}

/// Writes a stream built from `records` and returns its path.
fn stream(dir: &Path, name: &str, records: &[Record<'_>]) -> PathBuf {
    let mut bytes = Vec::new();
    for r in records {
        encode_record(r, &mut bytes);
    }
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn bad_sgxs_streams_are_named_and_located() {
    let dir = tempfile::tempdir().unwrap();
    let chunk = [0u8; 256];
    let ecreate = Record::Ecreate { ssaframesize: 1, size: 0x4000 };
    let eadd = |offset| Record::Eadd { offset, secinfo_flags: 0x201 };
    let cases: Vec<(PathBuf, &str)> = vec![
        (
            stream(dir.path(), "eadd-first.sgxs", &[eadd(0)]),
            "record 0 at byte offset 0x0: the first record must be ECREATE, found EADD",
        ),
        (
            stream(dir.path(), "orphan-eextend.sgxs", &[ecreate, Record::Eextend { offset: 0, data: &chunk }]),
            "record 1 at byte offset 0x40: EEXTEND at offset 0x0 before any EADD",
        ),
        (
            stream(
                dir.path(),
                "outside-page.sgxs",
                &[ecreate, eadd(0), Record::Eextend { offset: 0x1000, data: &chunk }],
            ),
            "record 2 at byte offset 0x80: EEXTEND offset 0x1000 is outside the page added by the preceding EADD (0x0)",
        ),
        (
            stream(dir.path(), "beyond-size.sgxs", &[ecreate, eadd(0), eadd(0x4000)]),
            "record 2 at byte offset 0x80: offset 0x4000 is outside the enclave (SIZE 0x4000)",
        ),
        (stream(dir.path(), "unsized.sgxs", &[Record::Unsized { ssaframesize: 1, size: 0 }]), "UNSIZED record"),
        (stream(dir.path(), "empty.sgxs", &[]), "the stream is empty"),
    ];
    for (path, message) in &cases {
        vsgx().args(["enclave", "measure"]).arg(path).assert().failure().stdout("").stderr(
            predicate::str::contains(path.file_name().unwrap().to_str().unwrap())
                .and(predicate::str::contains(*message)),
        );
    }

    let mut truncated = std::fs::read(testdata("fortanix-test-enclave.sgxs")).unwrap();
    truncated.truncate(64 + 64 + 100);
    let path = dir.path().join("truncated.sgxs");
    std::fs::write(&path, &truncated).unwrap();
    vsgx().args(["enclave", "measure"]).arg(&path).assert().failure().stderr(predicate::str::contains(
        "record 2 at byte offset 0x80: truncated EEXTEND record: needs 320 bytes, only 100 left",
    ));

    let mut unknown = std::fs::read(testdata("fortanix-test-enclave.sgxs")).unwrap();
    unknown[64..72].copy_from_slice(b"GARBAGE!");
    let path = dir.path().join("unknown.sgxs");
    std::fs::write(&path, &unknown).unwrap();
    vsgx()
        .args(["enclave", "measure"])
        .arg(&path)
        .assert()
        .failure()
        .stderr(predicate::str::contains("record 1 at byte offset 0x40: unknown record tag"));

    vsgx()
        .args(["enclave", "sign", "--date", "20260101", "--key"])
        .arg(data("rsa3072-e3.pem"))
        .arg(&path)
        .arg("-o")
        .arg(dir.path().join("x.sig"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("unknown.sgxs is not a loadable SGXS stream"));
}

#[test]
fn verify_launch_runs_einit_on_a_fresh_platform() {
    let v = json_of(
        vsgx()
            .args(["enclave", "verify-launch", "--json"])
            .arg(testdata("fortanix-test-enclave.sgxs"))
            .arg(testdata("fortanix-test-enclave.sig")),
        0,
    );
    assert_eq!(v["einit"], "SGX_SUCCESS");
    assert_eq!(v["code"], 0);
    assert_eq!(v["mrenclave"], MRENCLAVE);
    assert_eq!(v["mrsigner"], MRSIGNER);
    assert_eq!(v["isvprodid"], 0xFFFF);
    assert_eq!(v["isvsvn"], 0);

    let dir = tempfile::tempdir().unwrap();
    // One flipped measured byte (data of the first EEXTEND) → SGX_INVALID_MEASUREMENT.
    let mut stream = std::fs::read(testdata("fortanix-test-enclave.sgxs")).unwrap();
    stream[200] ^= 1;
    let flipped = dir.path().join("flipped.sgxs");
    std::fs::write(&flipped, &stream).unwrap();
    let v = json_of(
        vsgx().args(["enclave", "verify-launch", "--json"]).arg(&flipped).arg(testdata("fortanix-test-enclave.sig")),
        1,
    );
    assert_eq!(v["einit"], "SGX_INVALID_MEASUREMENT");
    assert_eq!(v["code"], 4);

    // A corrupted signature → SGX_INVALID_SIGNATURE.
    let bad_sig = mutated_sig(dir.path(), |b| b[600] ^= 1);
    let v = json_of(
        vsgx().args(["enclave", "verify-launch", "--json"]).arg(testdata("fortanix-test-enclave.sgxs")).arg(&bad_sig),
        1,
    );
    assert_eq!(v["einit"], "SGX_INVALID_SIGNATURE");
    assert_eq!(v["code"], 8);

    // Our own signature launches too: under FLC the loader points the hash MSRs at its signer.
    let ours = dir.path().join("ours.sig");
    vsgx()
        .args(["enclave", "sign", "--date", "20260101", "--key"])
        .arg(data("rsa3072-e3.pem"))
        .arg(testdata("fortanix-test-enclave.sgxs"))
        .arg("-o")
        .arg(&ours)
        .assert()
        .success();
    vsgx()
        .args(["enclave", "verify-launch"])
        .arg(testdata("fortanix-test-enclave.sgxs"))
        .arg(&ours)
        .assert()
        .success()
        .stdout(predicate::str::contains("EINIT      SGX_SUCCESS (0)"));

    // Unreadable inputs → 2.
    vsgx()
        .args(["enclave", "verify-launch"])
        .arg(dir.path().join("missing.sgxs"))
        .arg(testdata("fortanix-test-enclave.sig"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("missing.sgxs"));
    let short = mutated_sig(dir.path(), |b| b.truncate(100));
    vsgx()
        .args(["enclave", "verify-launch"])
        .arg(testdata("fortanix-test-enclave.sgxs"))
        .arg(&short)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("1808"));
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/enclaves").join(name)
}

#[test]
fn build_and_run_a_webassembly_enclave() {
    let dir = tempfile::tempdir().unwrap();
    let build = |out: &str| {
        vsgx()
            .args(["enclave", "build"])
            .arg(example("hello.wat"))
            .arg("--key")
            .arg(data("rsa3072-e3.pem"))
            .arg("-o")
            .arg(dir.path().join(out))
            .assert()
            .success();
        (
            std::fs::read(dir.path().join(format!("{out}.sgxs"))).unwrap(),
            std::fs::read(dir.path().join(format!("{out}.sig"))).unwrap(),
        )
    };
    let a = build("a");
    let b = build("b");
    assert_eq!(a, b, "builds are reproducible byte for byte");

    // Exactly the enclave's output bytes on stdout.
    vsgx()
        .args(["enclave", "run"])
        .arg(dir.path().join("a.sgxs"))
        .arg("--sig")
        .arg(dir.path().join("a.sig"))
        .args(["--input", "world"])
        .assert()
        .success()
        .stdout("Hello, WORLD");
    // `--input-file -` reads standard input.
    vsgx()
        .args(["enclave", "run"])
        .arg(dir.path().join("a.sgxs"))
        .arg("--sig")
        .arg(dir.path().join("a.sig"))
        .args(["--input-file", "-"])
        .write_stdin("piped")
        .assert()
        .success()
        .stdout("Hello, PIPED");
    let v = json_of(
        vsgx()
            .args(["enclave", "run", "--json", "--call", "hello", "--input", "json"])
            .arg(dir.path().join("a.sgxs"))
            .arg("--sig")
            .arg(dir.path().join("a.sig")),
        0,
    );
    assert_eq!(v["result"], 11);
    assert_eq!(v["output"], "Hello, JSON");
    assert_eq!(v["ecall"], "hello");

    // Its MRENCLAVE is what `measure` says, and the SIGSTRUCT verifies.
    let measured = vsgx()
        .args(["enclave", "measure"])
        .arg(dir.path().join("a.sgxs"))
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let shown = json_of(vsgx().args(["sigstruct", "show", "--json"]).arg(dir.path().join("a.sig")), 0);
    assert_eq!(shown["enclavehash"], String::from_utf8(measured).unwrap().trim());

    vsgx()
        .args(["enclave", "run", "--call", "nope"])
        .arg(dir.path().join("a.sgxs"))
        .arg("--sig")
        .arg(dir.path().join("a.sig"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("no ECALL 'nope'").and(predicate::str::contains("hello")));
}

#[test]
fn sealing_across_runs_needs_the_same_platform_seed() {
    let dir = tempfile::tempdir().unwrap();
    vsgx()
        .args(["enclave", "build"])
        .arg(example("sealer.wat"))
        .arg("--key")
        .arg(data("rsa3072-e3.pem"))
        .arg("-o")
        .arg(dir.path().join("sealer"))
        .assert()
        .success();
    let run = |call: &str, seed: &str, input: &Path| {
        let mut cmd = vsgx();
        cmd.args(["enclave", "run", "--call", call, "--seed", seed, "--input-file"])
            .arg(input)
            .arg(dir.path().join("sealer.sgxs"))
            .arg("--sig")
            .arg(dir.path().join("sealer.sig"));
        cmd.assert()
    };
    let secret = dir.path().join("secret.txt");
    std::fs::write(&secret, "attack at dawn").unwrap();
    let blob = run("seal", "42", &secret).success().get_output().stdout.clone();
    let blob_path = dir.path().join("blob.bin");
    std::fs::write(&blob_path, &blob).unwrap();
    run("unseal", "42", &blob_path).success().stdout("attack at dawn");
    run("unseal", "43", &blob_path).failure().stderr(predicate::str::contains("error -3"));
}

#[test]
fn build_rejects_modules_outside_the_abi_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("bad.wat");
    std::fs::write(&module, r#"(module (import "wasi" "fd_write" (func (param i32 i32 i32 i32) (result i32))) (import "env" "memory" (memory 1)))"#).unwrap();
    vsgx()
        .args(["enclave", "build"])
        .arg(&module)
        .arg("--key")
        .arg(data("rsa3072-e3.pem"))
        .arg("-o")
        .arg(dir.path().join("bad"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("bad.wat").and(predicate::str::contains("fd_write")));
    std::fs::write(&module, "(module (func").unwrap();
    vsgx()
        .args(["enclave", "build"])
        .arg(&module)
        .arg("--key")
        .arg(data("rsa3072-e3.pem"))
        .arg("-o")
        .arg(dir.path().join("bad"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("bad.wat"));
}

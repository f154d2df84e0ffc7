//! `vsgxd` and the CLI verbs that talk to it, end to end: a daemon per test on a private socket.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;

use assert_cmd::cargo::cargo_bin;
use base64::Engine;
use common::{Daemon, example, post};
use predicates::prelude::PredicateBooleanExt;
use predicates::str::contains;
use serde_json::{Value, json};

const MIB: u64 = 1 << 20;

#[test]
fn guests_take_epc_until_it_runs_out_and_destroy_returns_every_page() {
    let d = Daemon::start("64@0,64@1");
    assert_eq!(std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777, 0o600);
    let empty = d.json(&["sgxinfo"]);
    assert_eq!(empty["epc_total_bytes"], 128 * MIB);
    assert_eq!((empty["epc_free_bytes"].as_u64(), empty["epc_used_bytes"].as_u64()), (Some(128 * MIB), Some(0)));
    assert_eq!(empty["sections"].as_array().unwrap().len(), 2);
    assert_eq!((empty["sgx1"].as_bool(), empty["oversub"].as_bool()), (Some(true), Some(false)));

    d.vsgx().args(["create", &example("web.cfg")]).assert().success().stdout(contains("created domain web (id 1)"));
    // More than the host has at all: the config check refuses it.
    d.vsgx().args(["create", &example("numa.cfg")]).assert().failure().stderr(contains("this host has 128 MiB"));
    // Less than the host has but more than is free: the hypervisor refuses it, nothing is taken.
    let big = d.dir.join("big.cfg");
    std::fs::write(&big, "name = 'big'\nepc = 96\n").unwrap();
    d.vsgx().args(["create", big.to_str().unwrap()]).assert().failure().stderr(contains("EPC short"));
    let used = d.json(&["sgxinfo"]);
    assert_eq!((used["epc_free_bytes"].as_u64(), used["epc_used_bytes"].as_u64()), (Some(64 * MIB), Some(64 * MIB)));

    let list = d.json(&["sgxlist"]);
    assert_eq!(
        list,
        json!([{
            "name": "web", "domid": 1, "epc_bytes": 64 * MIB, "policy": "static",
            "sections": [{ "base": 0x1_0000_0000u64, "size": 64 * MIB, "node": 0 }],
            "resident_pages": 16384, "evicted_pages": 0, "ballooned_pages": 0
        }])
    );
    assert_eq!(d.json(&["sgxlist", "1"]), list);
    d.vsgx().args(["sgxlist", "db"]).assert().failure().stderr(contains("no domain \"db\""));
    let domains = d.json(&["list"]);
    assert_eq!((domains[0]["name"].as_str(), domains[0]["memory_mib"].as_u64()), (Some("web"), Some(512)));
    d.vsgx().args(["create", &example("web.cfg")]).assert().failure().stderr(contains("exists already"));
    assert_eq!(d.json(&["list", "--sgx"]), list);
    let info = d.json(&["info", "web", "--sgx"]);
    assert_eq!((info["domid"].as_u64(), info["vcpus"].as_u64()), (Some(1), Some(2)));
    assert_eq!(info["memory_map"][2], json!({ "base": 0x1_0000_0000u64, "size": 64 * MIB, "type": "reserved" }));
    assert_eq!(info["sgx"], list[0]);
    d.vsgx()
        .args(["info", "1"])
        .assert()
        .success()
        .stdout(contains("domain web (id 1").and(contains("guest running; agent mailbox at 0xf0000000 (2 MiB")));
    d.vsgx().args(["info", "nope"]).assert().failure().stderr(contains("no domain"));

    d.vsgx().args(["destroy", "web"]).assert().success();
    assert_eq!(d.json(&["sgxinfo"]), empty);
    assert_eq!(d.json(&["sgxlist"]), json!([]));
    d.vsgx().args(["destroy", "web"]).assert().failure().stderr(contains("no domain"));
}

#[test]
fn malformed_requests_get_4xx_with_a_message_and_the_daemon_keeps_serving() {
    let d = Daemon::start("32");
    let cases = [
        (post("/v1/domains", "{not json"), 400, "request body"),
        (post("/v1/domains", r#"{"config": 5}"#), 400, "expected a string"),
        (post("/v1/domains", r#"{"config": "name = 'a'", "x": 1}"#), 400, "unknown field"),
        (post("/v1/domains", r#"{"config": "name = 'a'\nepc = [", "file_name": "a.cfg"}"#), 400, "a.cfg:2:"),
        (post("/v1/domains", r#"{"config": "name = 'a'\nepc = 64"}"#), 400, "32 MiB"),
        ("GET /v1/domains/nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_owned(), 404, "no domain"),
        ("DELETE /v1/domains/7 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_owned(), 404, "no domain"),
        ("GET /v2/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_owned(), 404, "no such endpoint"),
        (
            "PUT /v1/host HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned(),
            405,
            "method",
        ),
        // Over the body limit (86 MiB: a 64 MiB image in base64, and room): refused from the header.
        (
            "POST /v1/domains/a/enclaves HTTP/1.1\r\nHost: x\r\nContent-Length: 200000000\r\nConnection: close\r\n\r\n"
                .to_owned(),
            413,
            "request body",
        ),
    ];
    for (request, status, message) in cases {
        let (got, body) = d.raw(&request);
        assert_eq!(got, status, "{request}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{request}: JSON error body: {e}"));
        assert!(body["error"].as_str().unwrap().contains(message), "{request}: {body}");
    }
    let (status, body) = d.raw(&post("/v1/domains", r#"{"config": "name = 'a'\nepc = 16"}"#));
    assert_eq!(status, 201, "{body}");
    let (status, metrics) = d.raw("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 200);
    assert!(metrics.contains("vsgx_domain_epc_resident_pages{domain=\"a\",domid=\"1\"} 4096"), "{metrics}");
    assert!(metrics.contains("vsgx_epc_used_bytes 16777216"), "{metrics}");
}

#[test]
fn one_daemon_per_socket_and_sigterm_stops_it_cleanly() {
    let mut d = Daemon::start("16");
    // Same socket and same state directory: refused before the store is touched.
    let state = d.dir.join("state");
    let second = StdCommand::new(cargo_bin("vsgxd"))
        .args(["--socket", d.socket.to_str().unwrap(), "--state-dir", state.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("another vsgxd"));
    d.json(&["sgxinfo"]);

    let term = StdCommand::new("kill").args(["-TERM", &d.child.id().to_string()]).status().unwrap();
    assert!(term.success());
    let status = d.child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!Path::new(&d.socket).exists(), "socket removed on shutdown");
    d.vsgx().arg("sgxinfo").assert().failure().stderr(contains("no vsgxd answers"));
}

#[test]
fn bad_daemon_arguments_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("s");
    for (epc, message) in [("0", "--epc item 1"), ("64@x", "--epc item 1"), ("64,abc", "--epc item 2")] {
        let out = StdCommand::new(cargo_bin("vsgxd"))
            .args(["--socket", socket.to_str().unwrap(), "--epc", epc])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message) && stderr.trim_end().lines().count() == 1, "{epc}: {stderr}");
    }
}

#[test]
fn domains_come_back_after_a_restart_with_their_names_ids_and_layout() {
    let dir = tempfile::tempdir().unwrap();
    let first = Daemon::start_in(dir.path(), "64@0,64@1");
    first.vsgx().args(["create", &example("web.cfg")]).assert().success();
    let small = dir.path().join("small.cfg");
    std::fs::write(&small, "name = 'small'\nmemory = 256\nepc = 8\n").unwrap();
    first.vsgx().args(["create", small.to_str().unwrap()]).assert().success();
    first.vsgx().args(["destroy", "web"]).assert().success();
    first.vsgx().args(["create", &example("web.cfg")]).assert().success().stdout(contains("(id 3)"));
    let before = (first.json(&["sgxlist"]), first.json(&["list"]), first.json(&["sgxinfo"]));
    drop(first); // kill -9

    let second = Daemon::start_in(dir.path(), "64@0,64@1");
    let after = (second.json(&["sgxlist"]), second.json(&["list"]), second.json(&["sgxinfo"]));
    assert_eq!(after, before);
    assert_eq!(
        before
            .0
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap(), e["domid"].as_u64().unwrap()))
            .collect::<Vec<_>>(),
        [("small", 2), ("web", 3)]
    );
    // New ids continue after the restored ones; destroyed domains stay destroyed.
    let other = dir.path().join("other.cfg");
    std::fs::write(&other, "name = 'other'\n").unwrap();
    second.vsgx().args(["create", other.to_str().unwrap()]).assert().success().stdout(contains("(id 4)"));
    second.vsgx().args(["destroy", "small"]).assert().success();
    drop(second);
    let third = Daemon::start_in(dir.path(), "64@0,64@1");
    let names: Vec<String> =
        third.json(&["list"]).as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap().to_owned()).collect();
    assert_eq!(names, ["web", "other"]);
}

#[test]
fn a_domain_that_no_longer_fits_after_a_restart_is_reported_and_can_be_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let first = Daemon::start_in(dir.path(), "64@0,64@1");
    first.vsgx().args(["create", &example("web.cfg")]).assert().success();
    drop(first);
    // The host comes back with 32 MiB of EPC: web (64 MiB of vEPC) cannot.
    let second = Daemon::start_in(dir.path(), "32");
    let host = second.json(&["sgxinfo"]);
    let unrestored = &host["unrestored_domains"];
    assert_eq!(unrestored.as_array().unwrap().len(), 1, "{host}");
    assert_eq!(unrestored[0]["domid"], 1);
    assert!(unrestored[0]["reason"].as_str().unwrap().contains("32 MiB"), "{host}");
    second
        .vsgx()
        .arg("list")
        .assert()
        .success()
        .stderr(contains("stored domain id 1").and(contains("`vsgx destroy 1` drops its record")));
    second.vsgx().args(["info", "1"]).assert().failure().stderr(contains("could not be restored at start"));
    // Its id stays taken while the record exists; dropping it is a destroy.
    let other = dir.path().join("other.cfg");
    std::fs::write(&other, "name = 'other'\n").unwrap();
    second.vsgx().args(["create", other.to_str().unwrap()]).assert().success().stdout(contains("(id 2)"));
    second.vsgx().args(["destroy", "1"]).assert().success();
    assert_eq!(second.json(&["sgxinfo"])["unrestored_domains"], json!([]));
    second.vsgx().args(["destroy", "1"]).assert().failure().stderr(contains("no domain"));
    drop(second);
    // On a host big enough again, only `other` comes back: web's record is gone.
    let third = Daemon::start_in(dir.path(), "64@0,64@1");
    let names: Vec<String> =
        third.json(&["list"]).as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap().to_owned()).collect();
    assert_eq!(names, ["other"]);
}

/// The hello example enclave, built and signed with the test key into `dir`: (SGXS, SIGSTRUCT).
fn hello_image(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = dir.join("hello");
    assert_cmd::Command::cargo_bin("vsgx")
        .unwrap()
        .args(["enclave", "build", root.join("examples/enclaves/hello.wat").to_str().unwrap()])
        .args(["--key", root.join("crates/vsgx-isa/tests/data/test-key.pem").to_str().unwrap()])
        .args(["-o", out.to_str().unwrap()])
        .assert()
        .success();
    (std::fs::read(out.with_extension("sgxs")).unwrap(), std::fs::read(out.with_extension("sig")).unwrap())
}

/// The OpenAPI document, checked against what the server really answers.
fn openapi() -> Value {
    serde_json::from_str(include_str!("../../../docs/api/vsgxd.openapi.json")).expect("the OpenAPI document is JSON")
}

/// Checks `v` against `schema`, for the JSON Schema subset the document uses ($ref, type,
/// required, properties, items, enum). Objects may not carry properties the schema does not name.
fn conforms(doc: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let target = r.trim_start_matches("#/").split('/').fold(doc, |node, key| &node[key]);
        assert!(!target.is_null(), "dangling $ref {r}");
        return conforms(doc, target, v, at);
    }
    let ty = schema.get("type").and_then(Value::as_str).unwrap_or("any");
    let ok = match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "integer" => v.is_u64() || v.is_i64(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        _ => true,
    };
    if !ok {
        return Err(format!("{at}: expected {ty}, found {v}"));
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        return Err(format!("{at}: {v} is not one of {allowed:?}"));
    }
    for key in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
        let key = key.as_str().unwrap();
        if v.get(key).is_none() {
            return Err(format!("{at}: missing required `{key}`"));
        }
    }
    if let (Some(props), Some(obj)) = (schema.get("properties").and_then(Value::as_object), v.as_object()) {
        for (key, value) in obj {
            let Some(s) = props.get(key) else { return Err(format!("{at}: `{key}` is not in the document")) };
            conforms(doc, s, value, &format!("{at}.{key}"))?;
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), v.as_array()) {
        for (i, item) in array.iter().enumerate() {
            conforms(doc, items, item, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

#[test]
fn every_answer_matches_the_openapi_document() {
    let doc = openapi();
    let d = Daemon::start("32@0,32@1");
    let web = r#"{"config": "name = 'web'\nvcpus = 2\nepc_sections = [ 'size=8,node=0', 'size=4,node=1' ]\nvif = [ '' ]", "file_name": "web.cfg"}"#;
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let delete = |path: &str| format!("DELETE {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let (sgxs, sig) = hello_image(&d.dir);
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let load = json!({ "sgxs": b64(&sgxs), "sigstruct": b64(&sig) }).to_string();
    let bad_sig = json!({ "sgxs": b64(&sgxs), "sigstruct": b64(&sig[..1000]) }).to_string();
    // A SIGSTRUCT of zeros: ECREATE refuses the SECS it describes (#GP: XFRM without x87/SSE).
    let zero_sig = json!({ "sgxs": b64(&sgxs), "sigstruct": b64(&[0; 1808]) }).to_string();
    let long_name = json!({ "ecall": "x".repeat(300) }).to_string();
    const ENCLAVES: &str = "/v1/domains/{dom}/enclaves";
    const ENCLAVE: &str = "/v1/domains/{dom}/enclaves/{enclave}";
    const CALL: &str = "/v1/domains/{dom}/enclaves/{enclave}/call";
    // (template in the document, method, request, expected status)
    let cases = [
        ("/v1/host", "get", get("/v1/host"), 200),
        ("/v1/domains", "post", post("/v1/domains", web), 201),
        ("/v1/domains", "post", post("/v1/domains", web), 409),
        ("/v1/domains", "post", post("/v1/domains", "[1]"), 400),
        ("/v1/domains", "post", post("/v1/domains", r#"{"config": "name = 'big'\nepc = 60"}"#), 507),
        ("/v1/domains", "get", get("/v1/domains"), 200),
        ("/v1/domains/{dom}", "get", get("/v1/domains/web"), 200),
        ("/v1/domains/{dom}", "get", get("/v1/domains/nope"), 404),
        ("/v1/sgx/domains", "get", get("/v1/sgx/domains"), 200),
        ("/v1/sgx/domains/{dom}", "get", get("/v1/sgx/domains/1"), 200),
        ("/v1/sgx/domains/{dom}", "get", get("/v1/sgx/domains/9"), 404),
        ("/metrics", "get", get("/metrics"), 200),
        ("/v1/domains", "post", post("/v1/domains", r#"{"config": "name = 'plain'"}"#), 201),
        (ENCLAVES, "post", post("/v1/domains/web/enclaves", &load), 201),
        (ENCLAVES, "post", post("/v1/domains/web/enclaves", r#"{"sgxs": "!", "sigstruct": ""}"#), 400),
        (ENCLAVES, "post", post("/v1/domains/web/enclaves", &bad_sig), 422),
        (ENCLAVES, "post", post("/v1/domains/web/enclaves", &zero_sig), 422),
        (ENCLAVES, "post", post("/v1/domains/plain/enclaves", &load), 409),
        (ENCLAVES, "post", post("/v1/domains/nope/enclaves", &load), 404),
        (ENCLAVES, "get", get("/v1/domains/web/enclaves"), 200),
        (ENCLAVE, "get", get("/v1/domains/web/enclaves/1"), 200),
        (ENCLAVE, "get", get("/v1/domains/web/enclaves/x"), 400),
        (ENCLAVE, "get", get("/v1/domains/web/enclaves/9"), 404),
        (CALL, "post", post("/v1/domains/web/enclaves/1/call", r#"{"ecall": "hello", "input": "d29ybGQ="}"#), 200),
        (CALL, "post", post("/v1/domains/web/enclaves/1/call", r#"{"ecall": "nope"}"#), 404),
        (CALL, "post", post("/v1/domains/web/enclaves/1/call", r#"{"ecall": "hello", "output_capacity": -1}"#), 400),
        (
            CALL,
            "post",
            post("/v1/domains/web/enclaves/1/call", r#"{"ecall": "hello", "output_capacity": 2000000}"#),
            400,
        ),
        (CALL, "post", post("/v1/domains/web/enclaves/2/call", r#"{"ecall": "hello"}"#), 404),
        (CALL, "post", post("/v1/domains/web/enclaves/1/call", &long_name), 400),
        ("/v1/domains/{dom}", "get", get("/v1/domains/%FF"), 400),
        (ENCLAVE, "delete", delete("/v1/domains/web/enclaves/1"), 200),
        (ENCLAVE, "delete", delete("/v1/domains/web/enclaves/1"), 404),
        ("/v1/domains/{dom}", "delete", delete("/v1/domains/web"), 204),
        ("/v1/domains/{dom}", "delete", delete("/v1/domains/web"), 404),
    ];
    for (template, method, request, expected) in cases {
        let (status, body) = d.raw(&request);
        assert_eq!(status, expected, "{method} {template}: {body}");
        let declared = &doc["paths"][template][method]["responses"][status.to_string()];
        assert!(!declared.is_null(), "{method} {template} answers {status}, which the document does not declare");
        let declared = match declared.get("$ref").and_then(Value::as_str) {
            Some(r) => r.trim_start_matches("#/").split('/').fold(&doc, |node, key| &node[key]),
            None => declared,
        };
        match (declared["content"].get("application/json"), declared["content"].get("text/plain")) {
            (Some(json_content), _) => {
                let value: Value =
                    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{method} {template}: {e}: {body}"));
                conforms(&doc, &json_content["schema"], &value, &format!("{method} {template} {status}"))
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            (None, Some(_)) => assert!(body.contains("# TYPE"), "{body}"),
            (None, None) => {
                assert!(body.is_empty(), "{method} {template} {status} has no body in the document: {body}")
            }
        }
    }
}

//! Random requests against a running vsgxd: every answer is a JSON body with a status the daemon
//! means (no 500, no 502/503: no request can break the daemon or its guests), the daemon keeps
//! serving, EPC stays conserved, and the enclave loaded before the storm still answers.

mod common;

use base64::Engine;
use common::{Daemon, post};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};

/// Path segments a client might send: real names and ids, unknown ones, odd encodings.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just("web".to_owned()),
        4 => Just("1".to_owned()),
        1 => Just("2".to_owned()),
        1 => Just("nope".to_owned()),
        1 => Just("%FF".to_owned()),
        1 => Just("%2F".to_owned()),
        1 => Just("99999999999999999999".to_owned()),
        1 => Just("-1".to_owned()),
        1 => "[a-z0-9]{0,12}",
    ]
}

/// A route and, most of the time, a method it takes (else any method).
fn method_and_path() -> impl Strategy<Value = (&'static str, String)> {
    (0usize..9, segment(), segment(), 0usize..10, 0usize..4).prop_map(|(shape, a, b, pick, any)| {
        let (methods, path): (&[&'static str], String) = match shape {
            0 => (&["GET"], "/v1/host".to_owned()),
            1 => (&["GET", "POST"], "/v1/domains".to_owned()),
            2 => (&["GET", "DELETE"], format!("/v1/domains/{a}")),
            3 => (&["GET"], format!("/v1/sgx/domains/{a}")),
            4 => (&["GET", "POST"], format!("/v1/domains/{a}/enclaves")),
            5 => (&["GET", "DELETE"], format!("/v1/domains/{a}/enclaves/{b}")),
            6 => (&["POST"], format!("/v1/domains/{a}/enclaves/{b}/call")),
            7 => (&["GET"], "/metrics".to_owned()),
            _ => (&["GET"], format!("/v1/{a}/{b}")),
        };
        let method = if pick < 8 { methods[pick % methods.len()] } else { ["GET", "POST", "DELETE", "PUT"][any] };
        (method, path)
    })
}

/// JSON values of every type, small.
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        "[ -~]{0,24}".prop_map(Value::from),
        Just(Value::from("aGVsbG8=")),
        Just(Value::from("name = 'fz'\nepc = 4\n")),
        Just(Value::from("hello")),
        Just(Value::from("name = 'fz2'\nmemory = 64\n")),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| prop::collection::vec(inner, 0..4).prop_map(Value::from))
}

/// Bodies: objects with the API's field names (valid or not in type), other JSON, or bytes.
fn body() -> impl Strategy<Value = String> {
    let keys = prop::sample::select(vec![
        "config",
        "file_name",
        "sgxs",
        "sigstruct",
        "ecall",
        "input",
        "output_capacity",
        "extra",
    ]);
    let object = prop::collection::btree_map(keys, value(), 0..4)
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()).to_string());
    prop_oneof![
        object,
        value().prop_map(|v| v.to_string()),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

#[test]
fn random_requests_get_meaningful_answers_and_change_nothing_they_should_not() {
    let d = Daemon::start("32");
    let (status, _) = d.raw(&post("/v1/domains", r#"{"config": "name = 'web'\nepc = 8"}"#));
    assert_eq!(status, 201);
    let hello = wat::parse_file(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/enclaves/hello.wat")).unwrap();
    let image = vsgx_hw::exec::image::build_image(&hello, &Default::default()).unwrap();
    let key = vsgx_isa::signing::SigningKey::from_pem(include_str!("../../vsgx-isa/tests/data/test-key.pem")).unwrap();
    let sig = key.sign(&image.body, image.mrenclave).unwrap();
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let load = json!({ "sgxs": b64(&image.sgxs), "sigstruct": b64(vsgx_isa::ArchStruct::bytes(&sig)) });
    let (status, answer) = d.raw(&post("/v1/domains/web/enclaves", &load.to_string()));
    assert_eq!(status, 201, "{answer}");

    // Half the time a body that fits the route, so requests get past decoding into the handlers.
    let request = (method_and_path(), body(), 0usize..10).prop_map(|((method, path), random, pick)| {
        let fitting: &[&str] = if path == "/v1/domains" {
            &[
                r#"{"config": "name = 'web'\nepc = 2"}"#,
                r#"{"config": "name = 'fz3'\nmemory = 64\nepc = 2"}"#,
                r#"{"config": "name = 'big'\nepc = 30"}"#,
            ]
        } else if path.ends_with("/call") {
            &[r#"{"ecall": "hello", "input": "aGVsbG8="}"#, r#"{"ecall": "hello", "output_capacity": 3}"#]
        } else if path.ends_with("/enclaves") {
            &[r#"{"sgxs": "aGVsbG8=", "sigstruct": "aGVsbG8="}"#]
        } else {
            &[]
        };
        let body = if pick < 5 && !fitting.is_empty() { fitting[pick % fitting.len()].to_owned() } else { random };
        ((method, path), body)
    });
    let seen = std::cell::RefCell::new(std::collections::BTreeMap::<u16, u32>::new());
    let mut runner = TestRunner::new(Config { cases: 1000, failure_persistence: None, ..Config::default() });
    runner
        .run(&request, |((method, path), body)| {
            // The web guest and its enclave stay: the storm may not delete them.
            let protected =
                ["/v1/domains/web", "/v1/domains/1", "/v1/domains/web/enclaves/1", "/v1/domains/1/enclaves/1"];
            if method == "DELETE" && protected.contains(&path.as_str()) {
                return Ok(());
            }
            let raw = format!(
                "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let (status, answer) = d.raw(&raw);
            *seen.borrow_mut().entry(status).or_default() += 1;
            prop_assert!(status < 500 || status == 507, "{method} {path} {body:?} → {status} {answer}");
            if path == "/metrics" && status == 200 {
                prop_assert!(answer.contains("# TYPE"));
            } else if status != 204 {
                let v: Result<Value, _> = serde_json::from_str(&answer);
                prop_assert!(v.is_ok(), "{method} {path} → {status}: not JSON: {answer}");
                if status >= 400 {
                    let v = v.unwrap();
                    prop_assert!(v["error"].as_str().is_some_and(|m| !m.is_empty()), "{answer}");
                }
            }
            Ok(())
        })
        .unwrap();
    // The storm reached past the routing layer: handlers answered successes and refusals alike.
    let seen = seen.into_inner();
    eprintln!("statuses answered: {seen:?}");
    for status in [200, 400, 404, 405, 409, 422] {
        assert!(seen.contains_key(&status), "no {status} among {seen:?}");
    }

    let host = d.json(&["sgxinfo"]);
    let n = |k: &str| host[k].as_u64().unwrap();
    assert_eq!(n("epc_free_bytes") + n("epc_used_bytes") + n("epc_quarantined_bytes"), n("epc_total_bytes"));
    let (status, answer) =
        d.raw(&post("/v1/domains/web/enclaves/1/call", r#"{"ecall": "hello", "input": "c3Rvcm0="}"#));
    assert_eq!(status, 200, "{answer}");
    let v: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(v["output"], b64(b"Hello, STORM"));
}

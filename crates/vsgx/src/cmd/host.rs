//! Verbs that talk to `vsgxd` over its Unix socket: `sgxinfo`, `sgxlist`, `list`, `destroy`, and
//! `create` without `--dry-run`. HTTP/1.1 with `Connection: close`, one request per connection.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use serde_json::Value;

/// The socket: `--socket`, else the daemon's own default
/// ([`vsgx_toolstack::report::default_socket`]).
pub fn socket_path(arg: Option<&Path>) -> PathBuf {
    arg.map_or_else(vsgx_toolstack::report::default_socket, Path::to_path_buf)
}

/// A vsgxd on a socket.
pub struct Client {
    socket: PathBuf,
}

impl Client {
    /// A client for the daemon at `socket`.
    pub fn new(socket: PathBuf) -> Self {
        Self { socket }
    }

    /// Sends one request; returns the status and the JSON body (`null` when empty). Error
    /// statuses become errors carrying the daemon's message.
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<(u16, Value)> {
        let mut stream = UnixStream::connect(&self.socket).map_err(|e| {
            anyhow!(
                "no vsgxd answers at {} ({e}); start one with `vsgxd --socket {}` or point --socket / VSGX_SOCKET at a running one",
                self.socket.display(),
                self.socket.display()
            )
        })?;
        let payload = body.map(Value::to_string).unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: vsgxd\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            payload.len()
        );
        stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(payload.as_bytes()))
            .context("sending to vsgxd")?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).context("reading vsgxd's answer")?;
        let (status, body) = parse_response(&response)?;
        let value: Value = if body.is_empty() {
            Value::Null
        } else if body.first() == Some(&b'{') || body.first() == Some(&b'[') {
            serde_json::from_slice(&body).context("vsgxd answered with malformed JSON")?
        } else {
            Value::String(String::from_utf8_lossy(&body).into_owned())
        };
        if status >= 400 {
            let message = value.get("error").and_then(Value::as_str).map_or_else(|| value.to_string(), str::to_owned);
            bail!("{message}");
        }
        Ok((status, value))
    }
}

/// Status and body of an HTTP/1.1 response (Content-Length, chunked, or read to the end).
fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
    let split =
        raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| anyhow!("vsgxd's answer has no HTTP header"))?;
    let head = std::str::from_utf8(&raw[..split]).context("vsgxd's HTTP header is not UTF-8")?;
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| anyhow!("vsgxd's answer has no HTTP status"))?;
    let chunked = lines.any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.contains("chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    Ok((status, body))
}

fn dechunk(mut data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n").ok_or_else(|| anyhow!("truncated chunked body"))?;
        let size_text = std::str::from_utf8(&data[..eol]).unwrap_or("");
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| anyhow!("bad chunk size {size_text:?}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = data.get(..size).ok_or_else(|| anyhow!("truncated chunk"))?;
        out.extend_from_slice(chunk);
        data = data.get(size + 2..).unwrap_or_default();
    }
}

const MIB: u64 = 1 << 20;

fn u(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

fn mib_pages(bytes: u64) -> String {
    format!("{} MiB ({} pages)", bytes / MIB, bytes / 4096)
}

fn yes(v: &Value, key: &str) -> &'static str {
    if v[key].as_bool().unwrap_or(false) { "yes" } else { "no" }
}

/// `vsgx sgxinfo`.
pub fn sgxinfo(client: &Client, json: bool) -> anyhow::Result<ExitCode> {
    let (_, v) = client.request("GET", "/v1/host", None)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "SGX1 {}  SGX2 {}  FLC {}  KSS {}  OVERSUB {}",
        yes(&v, "sgx1"),
        yes(&v, "sgx2"),
        yes(&v, "flc"),
        yes(&v, "kss"),
        yes(&v, "oversub")
    );
    println!();
    println!("{:<8}  {:<18}  {:>8}  {:>8}  node", "section", "base", "size", "pages");
    for (i, s) in v["sections"].as_array().into_iter().flatten().enumerate() {
        println!(
            "{i:<8}  {:#018x}  {:>4} MiB  {:>8}  {}",
            u(s, "base"),
            u(s, "size") / MIB,
            u(s, "size") / 4096,
            u(s, "node")
        );
    }
    println!();
    for (label, key) in [
        ("total", "epc_total_bytes"),
        ("free", "epc_free_bytes"),
        ("used", "epc_used_bytes"),
        ("quarantined", "epc_quarantined_bytes"),
    ] {
        println!("EPC {label:<12} {}", mib_pages(u(&v, key)));
    }
    warn_unrestored(&v);
    Ok(ExitCode::SUCCESS)
}

/// Stored domains the daemon could not bring back at its start, one line each on stderr.
fn warn_unrestored(host: &Value) {
    for d in host["unrestored_domains"].as_array().into_iter().flatten() {
        eprintln!(
            "warning: stored domain id {} ({}) was not restored: {}; `vsgx destroy {}` drops its record",
            u(d, "domid"),
            d["file"].as_str().unwrap_or("?"),
            d["reason"].as_str().unwrap_or("?"),
            u(d, "domid")
        );
    }
}

/// `vsgx sgxlist [DOM]`.
pub fn sgxlist(client: &Client, dom: Option<&str>, json: bool) -> anyhow::Result<ExitCode> {
    let path = dom.map_or_else(|| "/v1/sgx/domains".to_owned(), |d| format!("/v1/sgx/domains/{}", url_segment(d)));
    let (_, v) = client.request("GET", &path, None)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<16}  {:>5}  {:>8}  {:>8}  {:<7}  {:>9}  {:>8}  {:>9}  sections (gpa size node)",
        "name", "id", "vEPC", "pages", "policy", "resident", "evicted", "ballooned"
    );
    for e in v.as_array().into_iter().flatten() {
        let sections: Vec<String> = e["sections"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| format!("{:#x} {} MiB n{}", u(s, "base"), u(s, "size") / MIB, u(s, "node")))
            .collect();
        println!(
            "{:<16}  {:>5}  {:>4} MiB  {:>8}  {:<7}  {:>9}  {:>8}  {:>9}  {}",
            e["name"].as_str().unwrap_or("?"),
            u(e, "domid"),
            u(e, "epc_bytes") / MIB,
            u(e, "epc_bytes") / 4096,
            e["policy"].as_str().unwrap_or("?"),
            u(e, "resident_pages"),
            u(e, "evicted_pages"),
            u(e, "ballooned_pages"),
            sections.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `vsgx list`.
pub fn list(client: &Client, json: bool) -> anyhow::Result<ExitCode> {
    let (_, v) = client.request("GET", "/v1/domains", None)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    if let Ok((_, host)) = client.request("GET", "/v1/host", None) {
        warn_unrestored(&host);
    }
    println!("{:<16}  {:>5}  {:>9}  {:>5}  {:>8}  guest", "name", "id", "memory", "vcpus", "vEPC");
    for d in v.as_array().into_iter().flatten() {
        println!(
            "{:<16}  {:>5}  {:>5} MiB  {:>5}  {:>4} MiB  {}",
            d["name"].as_str().unwrap_or("?"),
            u(d, "domid"),
            u(d, "memory_mib"),
            u(d, "vcpus"),
            u(d, "epc_bytes") / MIB,
            d["guest"].as_str().unwrap_or("?")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `vsgx info DOM [--sgx]`: the domain, its memory map and vEPC sections (with `--sgx`, its EPC
/// page counts too).
pub fn info(client: &Client, dom: &str, sgx: bool, json: bool) -> anyhow::Result<ExitCode> {
    let (_, mut v) = client.request("GET", &format!("/v1/domains/{}", url_segment(dom)), None)?;
    if sgx {
        let (_, list) = client.request("GET", &format!("/v1/sgx/domains/{}", url_segment(dom)), None)?;
        v["sgx"] = list.get(0).cloned().unwrap_or(Value::Null);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "domain {} (id {}, uuid {}): {} MiB RAM, {} vCPUs, {} of vEPC",
        v["name"].as_str().unwrap_or("?"),
        u(&v, "domid"),
        v["uuid"].as_str().unwrap_or("?"),
        u(&v, "memory_mib"),
        u(&v, "vcpus"),
        mib_pages(u(&v, "epc_bytes"))
    );
    println!("{:<18}  {:<18}  {:>10}  type", "base", "end", "size");
    for r in v["memory_map"].as_array().into_iter().flatten() {
        let (base, size) = (u(r, "base"), u(r, "size"));
        println!("{base:#018x}  {:#018x}  {:>6} MiB  {}", base + size, size / MIB, r["type"].as_str().unwrap_or("?"));
    }
    let mailbox = &v["agent_mailbox"];
    println!(
        "guest {}; agent mailbox at {:#x} ({} MiB, in the MMIO hole)",
        v["guest"].as_str().unwrap_or("?"),
        u(mailbox, "base"),
        u(mailbox, "size") / MIB
    );
    if sgx {
        let e = &v["sgx"];
        println!(
            "EPC policy {}: {} resident, {} evicted, {} ballooned pages",
            e["policy"].as_str().unwrap_or("?"),
            u(e, "resident_pages"),
            u(e, "evicted_pages"),
            u(e, "ballooned_pages")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `vsgx create CFG` (not a dry run): the daemon parses and creates.
pub fn create(client: &Client, config: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("{}: cannot read the config file", config.display()))?;
    create_from_text(client, &config.display().to_string(), &text, json)
}

/// `vsgx create` of config `text`, named `file_name` in messages.
pub fn create_from_text(client: &Client, file_name: &str, text: &str, json: bool) -> anyhow::Result<ExitCode> {
    let body = serde_json::json!({ "config": text, "file_name": file_name });
    let (_, v) = client.request("POST", "/v1/domains", Some(&body))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    for w in v["warnings"].as_array().into_iter().flatten() {
        eprintln!("{}", w.as_str().unwrap_or_default());
    }
    println!(
        "created domain {} (id {}) with {} of vEPC",
        v["name"].as_str().unwrap_or("?"),
        u(&v, "domid"),
        mib_pages(u(&v, "epc_bytes"))
    );
    Ok(ExitCode::SUCCESS)
}

/// `vsgx destroy DOM`.
pub fn destroy(client: &Client, dom: &str) -> anyhow::Result<ExitCode> {
    client.request("DELETE", &format!("/v1/domains/{}", url_segment(dom)), None)?;
    println!("destroyed domain {dom}");
    Ok(ExitCode::SUCCESS)
}

/// Percent-encodes a path segment (names are restricted, but DOM comes from the user).
pub fn url_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_with_length_chunks_and_errors_parse() {
        let (s, b) = parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!((s, b.as_slice()), (200, &b"{}"[..]));
        let (s, b) = parse_response(
            b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((s, b.as_slice()), (404, &b"abcde"[..]));
        assert!(parse_response(b"garbage").is_err());
        assert!(parse_response(b"HTTP/1.1 2xx\r\n\r\n").is_err());
        assert!(dechunk(b"zz\r\n").is_err());
        assert!(dechunk(b"5\r\nab").is_err());
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(url_segment("web-1.a_b"), "web-1.a_b");
        assert_eq!(url_segment("a/b c"), "a%2Fb%20c");
    }
}

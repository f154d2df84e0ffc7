//! `vsgx enclave load|call|list|destroy`: enclaves inside a guest, driven through vsgxd and the
//! guest's agent.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::Args;
use serde_json::{Value, json};

use super::host::{Client, url_segment};
use super::read_file;
use crate::numarg;

/// Arguments of `vsgx enclave load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The guest (name or id).
    pub dom: String,
    /// The enclave's SGXS stream.
    pub image: PathBuf,
    /// Its SIGSTRUCT.
    #[arg(long, value_name = "SIG")]
    pub sig: PathBuf,
    /// Print JSON: enclave_id, mrenclave, mrsigner, ecalls.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `vsgx enclave call`.
#[derive(Debug, Args)]
pub struct CallArgs {
    /// The guest (name or id).
    pub dom: String,
    /// The enclave's id in the guest (`vsgx enclave load` prints it, `vsgx enclave list` shows them).
    pub enclave: u32,
    /// The ECALL to call [default: the enclave's only ECALL].
    #[arg(long, value_name = "FN")]
    pub call: Option<String>,
    /// Input bytes, as text.
    #[arg(long, conflicts_with = "input_file")]
    pub input: Option<String>,
    /// Input bytes, from a file (`-`: standard input).
    #[arg(long, value_name = "F")]
    pub input_file: Option<PathBuf>,
    /// Output buffer size (at most 1 MiB − 16 bytes, the guest agent's limit).
    #[arg(long, default_value = "64K", value_parser = numarg::size)]
    pub output_size: u64,
    /// Print JSON (ecall, result, output as text and hex, AEX count) instead of the raw output bytes.
    #[arg(long)]
    pub json: bool,
}

fn enclaves_path(dom: &str) -> String {
    format!("/v1/domains/{}/enclaves", url_segment(dom))
}

/// `vsgx enclave load DOM IMAGE --sig SIG`.
pub fn load(client: &Client, args: &LoadArgs) -> anyhow::Result<ExitCode> {
    let v = load_enclave(client, args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_loaded(&args.dom, &v);
    }
    Ok(ExitCode::SUCCESS)
}

/// The human form of a load's answer.
pub fn print_loaded(dom: &str, v: &Value) {
    println!("loaded enclave {} in {dom}", v["enclave_id"]);
    println!("  MRENCLAVE  {}", v["mrenclave"].as_str().unwrap_or("?"));
    println!("  MRSIGNER   {}", v["mrsigner"].as_str().unwrap_or("?"));
    println!("  ECALLs     {}", names(&v["ecalls"]));
}

/// Loads the enclave; the API's `Enclave` object.
pub fn load_enclave(client: &Client, args: &LoadArgs) -> anyhow::Result<Value> {
    let sgxs = read_file(&args.image)?;
    let sig = read_file(&args.sig)?;
    let body = json!({ "sgxs": BASE64.encode(&sgxs), "sigstruct": BASE64.encode(&sig) });
    Ok(client.request("POST", &enclaves_path(&args.dom), Some(&body))?.1)
}

fn names(v: &Value) -> String {
    v.as_array().map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")).unwrap_or_default()
}

/// `vsgx enclave call DOM ENCLAVE`: prints exactly the enclave's output bytes.
pub fn call(client: &Client, args: &CallArgs) -> anyhow::Result<ExitCode> {
    let called = call_enclave(client, args)?;
    let (result, output) = (called.result, &called.output);
    if args.json {
        let v = json!({
            "ecall": called.ecall,
            "result": result,
            "output": String::from_utf8_lossy(output),
            "output_hex": hex::encode(output),
            "aex_count": called.aexs,
        });
        println!("{v}");
    } else {
        std::io::stdout().write_all(output)?;
        if result < 0 {
            eprintln!("the enclave returned error {result}");
        }
    }
    Ok(if result < 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// What an ECALL in a guest returned.
#[derive(Debug)]
pub struct Called {
    /// The ECALL's name.
    pub ecall: String,
    /// Its result (≥ 0 output length, < 0 the enclave's error code).
    pub result: i64,
    /// The output bytes.
    pub output: Vec<u8>,
    /// AEXs during the call.
    pub aexs: u64,
}

/// Runs the ECALL.
pub fn call_enclave(client: &Client, args: &CallArgs) -> anyhow::Result<Called> {
    let path = format!("{}/{}", enclaves_path(&args.dom), args.enclave);
    let ecall = match &args.call {
        Some(name) => name.clone(),
        None => {
            let (_, v) = client.request("GET", &path, None)?;
            match v["ecalls"].as_array().map(Vec::as_slice) {
                Some([only]) => only.as_str().unwrap_or_default().to_owned(),
                _ => bail!(
                    "enclave {} has several ECALLs ({}); choose one with --call",
                    args.enclave,
                    names(&v["ecalls"])
                ),
            }
        }
    };
    let input = super::ecall_input(args.input.as_deref(), args.input_file.as_deref())?;
    let body = json!({ "ecall": ecall, "input": BASE64.encode(&input), "output_capacity": args.output_size });
    let (_, v) = client.request("POST", &format!("{path}/call"), Some(&body))?;
    let result = v["result"].as_i64().ok_or_else(|| anyhow!("vsgxd's answer has no result: {v}"))?;
    let output = BASE64
        .decode(v["output"].as_str().unwrap_or_default())
        .map_err(|e| anyhow!("vsgxd's answer has malformed output: {e}"))?;
    Ok(Called { ecall, result, output, aexs: v["aexs"].as_u64().unwrap_or(0) })
}

/// `vsgx enclave list DOM`.
pub fn list(client: &Client, dom: &str, json: bool) -> anyhow::Result<ExitCode> {
    let (_, v) = client.request("GET", &enclaves_path(dom), None)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let list = v.as_array().map(Vec::as_slice).unwrap_or_default();
    if list.is_empty() {
        println!("no enclaves in {dom}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:>4}  {:<6}  {:>9}  {:<16}  ECALLS", "ID", "STATE", "EPC PAGES", "MRENCLAVE");
    for e in list {
        let mr = e["mrenclave"].as_str().unwrap_or_default();
        println!(
            "{:>4}  {:<6}  {:>9}  {:<16}  {}",
            e["enclave_id"].as_u64().unwrap_or(0),
            e["state"].as_str().unwrap_or("?"),
            e["epc_pages"].as_u64().unwrap_or(0),
            format!("{}…", mr.get(..12).unwrap_or(mr)),
            names(&e["ecalls"])
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `vsgx enclave destroy DOM ENCLAVE`.
pub fn destroy(client: &Client, dom: &str, enclave: u32) -> anyhow::Result<ExitCode> {
    let (_, v) = client.request("DELETE", &format!("{}/{enclave}", enclaves_path(dom)), None)?;
    println!(
        "destroyed enclave {enclave} in {dom}: {} EPC pages back to the guest ({} free)",
        v["released_pages"], v["guest_free_pages"]
    );
    Ok(ExitCode::SUCCESS)
}

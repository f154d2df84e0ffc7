//! `vsgx demo`: a private host on the embedded platform and a narrated end-to-end scenario with
//! real output — the same requests and the same printing as the CLI verbs, against a `vsgxd` that
//! runs on a thread of this process with its socket and state in a temporary directory.
//!
//! Every step checks what it shows (a wrong answer ends the demo with an error), so the demo is
//! also a smoke test of the whole stack.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail, ensure};
use vsgx_hw::exec::image::{ImageParams, build_image};
use vsgx_isa::ArchStruct;
use vsgx_isa::signing::SigningKey;

use super::guest;
use super::guest::{CallArgs, LoadArgs};
use super::host::{self, Client};
use super::private_host::PrivateHost;

/// The example guests, as shipped in `examples/guests/`.
const GUESTS: [(&str, &str); 3] = [
    ("web.cfg", include_str!("../../../../examples/guests/web.cfg")),
    ("numa.cfg", include_str!("../../../../examples/guests/numa.cfg")),
    ("xen-hvm.cfg", include_str!("../../../../examples/guests/xen-hvm.cfg")),
];

/// The example enclaves, as shipped in `examples/enclaves/`.
const ENCLAVES: [(&str, &str); 3] = [
    ("hello", include_str!("../../../../examples/enclaves/hello.wat")),
    ("counter", include_str!("../../../../examples/enclaves/counter.wat")),
    ("sealer", include_str!("../../../../examples/enclaves/sealer.wat")),
];

/// The repository's test signing key (a demo needs no secret key).
const DEMO_KEY: &str = include_str!("../../../vsgx-isa/tests/data/test-key.pem");

fn say(text: &str) {
    println!("\n== {text}");
}

fn shell(command: &str) {
    println!("$ {command}");
}

/// Prints a command's output that ends without a newline (enclave output) on its own line.
fn bytes_line(bytes: &[u8]) {
    println!("{}", String::from_utf8_lossy(bytes));
}

/// Builds and signs an example enclave into `dir`: (NAME.sgxs, NAME.sig, MRENCLAVE).
fn build(dir: &Path, name: &str, wat: &str) -> anyhow::Result<(PathBuf, PathBuf, [u8; 32])> {
    let module = wat::parse_str(wat).with_context(|| format!("examples/enclaves/{name}.wat"))?;
    let image = build_image(&module, &ImageParams::default())?;
    let key = SigningKey::from_pem(DEMO_KEY)?;
    let sig = key.sign(&image.body, image.mrenclave)?;
    let (sgxs_path, sig_path) = (dir.join(format!("{name}.sgxs")), dir.join(format!("{name}.sig")));
    std::fs::write(&sgxs_path, &image.sgxs)?;
    std::fs::write(&sig_path, sig.bytes())?;
    Ok((sgxs_path, sig_path, image.mrenclave))
}

fn call_args(dom: &str, enclave: u32, ecall: &str, input: &[u8], dir: &Path) -> anyhow::Result<CallArgs> {
    let input_file = dir.join("input.bin");
    std::fs::write(&input_file, input)?;
    Ok(CallArgs {
        dom: dom.into(),
        enclave,
        call: Some(ecall.into()),
        input: None,
        input_file: Some(input_file),
        output_size: 64 << 10,
        json: false,
    })
}

fn epc_free(client: &Client) -> anyhow::Result<(u64, u64)> {
    let (_, v) = client.request("GET", "/v1/host", None)?;
    Ok((v["epc_free_bytes"].as_u64().unwrap_or(0), v["epc_total_bytes"].as_u64().unwrap_or(0)))
}

/// `vsgx demo`.
pub fn demo() -> anyhow::Result<ExitCode> {
    let dir = tempfile::Builder::new().prefix("vsgx-demo-").tempdir().context("creating a temporary directory")?;
    println!("vsgx demo: a private host on the embedded SGX platform model, driven through its API.");
    println!("Everything below is real output of the commands shown (state and socket in {}).", dir.path().display());

    say("Start a private vsgxd (256 MiB of EPC in two NUMA sections, fresh fused secrets)");
    shell(&format!("vsgxd --socket {0}/vsgxd.sock --state-dir {0}/state &", dir.path().display()));
    let (mut daemon, socket) = PrivateHost::start(dir.path())?;
    let client = Client::new(socket);
    let outcome = scenario(&client, dir.path());
    say("Stop vsgxd (guests stop first; the socket is removed)");
    daemon.stop()?;
    outcome?;
    println!("\nDone. Next: README.md's operator guide (vsgxd, configs, every verb, the API).");
    Ok(ExitCode::SUCCESS)
}

fn scenario(client: &Client, dir: &Path) -> anyhow::Result<()> {
    say("The physical SGX platform and its EPC");
    shell("vsgx sgxinfo");
    host::sgxinfo(client, false)?;
    let (free, total) = epc_free(client)?;
    ensure!(free == total && total == 256 << 20, "a fresh host should have all 256 MiB of EPC free");

    say("Two guests from examples/guests/: web (64 MiB vEPC) and numa (96 MiB on node 0 + 96 MiB on node 1)");
    for (file, text) in &GUESTS[..2] {
        shell(&format!("vsgx create examples/guests/{file}"));
        host::create_from_text(client, &format!("examples/guests/{file}"), text, false)?;
    }
    shell("vsgx sgxlist");
    host::sgxlist(client, None, false)?;
    say("What web sees: an E820-style map with its vEPC reserved at 4 GiB (CPUID 0x12 and ACPI INT0E0C agree)");
    shell("vsgx info web");
    host::info(client, "web", false, false)?;
    let (free, _) = epc_free(client)?;
    ensure!(free == 0, "web and numa together take every EPC page, {free} bytes are still free");

    say("Build and sign the example enclaves (WebAssembly; signed with the repository's test key)");
    let mut images = Vec::new();
    for (name, wat) in ENCLAVES {
        let (sgxs, sig, mrenclave) = build(dir, name, wat)?;
        shell(&format!("vsgx enclave build examples/enclaves/{name}.wat --key test-key.pem -o {name}"));
        println!("MRENCLAVE {}", hex::encode(mrenclave));
        images.push((sgxs, sig));
    }

    say("Load hello into web: the guest's driver runs ECREATE, EADD/EEXTEND and EINIT through its vCPU");
    let load = |dom: &str, index: usize, name: &str| -> anyhow::Result<u32> {
        shell(&format!("vsgx enclave load {dom} {name}.sgxs --sig {name}.sig"));
        let args =
            LoadArgs { dom: dom.into(), image: images[index].0.clone(), sig: images[index].1.clone(), json: false };
        let v = guest::load_enclave(client, &args)?;
        guest::print_loaded(dom, &v);
        let id = v["enclave_id"].as_u64().ok_or_else(|| anyhow!("the load answer has no enclave_id: {v}"))?;
        Ok(u32::try_from(id)?)
    };
    let hello = load("web", 0, "hello")?;
    shell(&format!("vsgx enclave call web {hello} --input \"world\""));
    let out = guest::call_enclave(client, &call_args("web", hello, "hello", b"world", dir)?)?;
    bytes_line(&out.output);
    ensure!(out.output == b"Hello, WORLD", "hello answered {:?}", String::from_utf8_lossy(&out.output));

    say("State lives as long as the enclave: counter in web, called twice");
    let counter = load("web", 1, "counter")?;
    for _ in 0..2 {
        shell(&format!("vsgx enclave call web {counter} --call increment --json"));
        let out = guest::call_enclave(client, &call_args("web", counter, "increment", b"", dir)?)?;
        println!(
            "{{\"ecall\":\"increment\",\"result\":{},\"output_hex\":\"{}\"}}",
            out.result,
            hex::encode(&out.output)
        );
    }
    let out = guest::call_enclave(client, &call_args("web", counter, "get", b"", dir)?)?;
    ensure!(out.output == 2u64.to_le_bytes(), "counter counted {:?}", out.output);

    say("Sealing in numa: EGETKEY's seal key comes from the host's fused secrets and the enclave's identity");
    let sealer = load("numa", 2, "sealer")?;
    shell(&format!("vsgx enclave call numa {sealer} --call seal --input \"the secret\" > blob.bin"));
    let sealed = guest::call_enclave(client, &call_args("numa", sealer, "seal", b"the secret", dir)?)?;
    println!("({} bytes sealed: {}…)", sealed.output.len(), hex::encode(sealed.output.get(..12).unwrap_or_default()));
    shell(&format!("vsgx enclave call numa {sealer} --call unseal --input-file blob.bin"));
    let opened = guest::call_enclave(client, &call_args("numa", sealer, "unseal", &sealed.output, dir)?)?;
    bytes_line(&opened.output);
    ensure!(opened.output == b"the secret", "unseal gave {:?}", String::from_utf8_lossy(&opened.output));

    shell("vsgx enclave list web");
    guest::list(client, "web", false)?;

    say("A third guest (examples/guests/xen-hvm.cfg, a real xl config asking for 64 MiB) finds no free EPC");
    let (file, text) = GUESTS[2];
    shell(&format!("vsgx create examples/guests/{file}"));
    match host::create_from_text(client, &format!("examples/guests/{file}"), text, false) {
        Ok(_) => bail!("the host had no free EPC, yet {file} was created"),
        Err(e) => println!("error: {e:#}"),
    }
    shell("vsgx list");
    host::list(client, false)?;

    say("Destroy both guests: every EPC page returns to the host, enclaves and all");
    for dom in ["web", "numa"] {
        shell(&format!("vsgx destroy {dom}"));
        host::destroy(client, dom)?;
    }
    shell("vsgx sgxinfo");
    host::sgxinfo(client, false)?;
    let (free, total) = epc_free(client)?;
    ensure!(free == total, "{} bytes of EPC did not come back", total - free);
    Ok(())
}

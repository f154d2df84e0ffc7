//! `vsgx bench`'s P8: an ECALL made through a guest's agent, as `vsgx enclave call` reaches it
//! (minus HTTP): the host writes the request into the mailbox, rings vCPU 0, the guest's agent runs
//! the ECALL with its SDK (EENTER through the vCPU), the answer comes back through the mailbox. The
//! yardstick is the same ECALL of the same enclave entered directly on a bare-metal processor: the
//! ratio is what running enclaves inside daemon-managed guests costs per call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use vsgx_hv::domain::Domain;
use vsgx_hv::epc::{DomainId, EpcManager};
use vsgx_hw::bench::try_fastest;
use vsgx_hw::config;
use vsgx_hw::exec::image::{ImageParams, build_image};
use vsgx_isa::ArchStruct;
use vsgx_isa::sgxs::LoadPlan;
use vsgx_isa::signing::SigningKey;
use vsgx_runtime::{BootInfo, GuestVm};

use super::wasm::BareMetalEnclave;

const HELLO: &str = include_str!("../../../../examples/enclaves/hello.wat");
const KEY: &str = include_str!("../../../vsgx-isa/tests/data/test-key.pem");
const INPUT: &[u8] = b"benchmark";
const OUTPUT: u32 = 4096;
const MAILBOX: u64 = 0xF000_0000;
const MAILBOX_SIZE: u64 = 2 << 20;
const EPC_BYTES: u64 = 8 << 20;

/// The hello example, built and signed with the test key.
fn hello() -> anyhow::Result<(vsgx_hw::exec::image::Image, vsgx_isa::Sigstruct)> {
    let module = wat::parse_str(HELLO).context("examples/enclaves/hello.wat")?;
    let image = build_image(&module, &ImageParams::default())?;
    let sig = SigningKey::from_pem(KEY)?.sign(&image.body, image.mrenclave)?;
    Ok((image, sig))
}

/// (µs per ECALL through the agent, µs per ECALL entered directly), each the best of `trials`
/// runs of `calls` calls.
pub fn agent_ecalls(
    platform: config::PlatformConfig,
    spec: vsgx_hv::domain::DomainSpec,
    trials: usize,
    calls: u32,
) -> anyhow::Result<(f64, f64)> {
    let (image, sig) = hello()?;
    let plan = LoadPlan::from_sgxs(&image.sgxs)?;
    let expected = b"Hello, BENCHMARK";

    let mut bare = BareMetalEnclave::launch(platform.clone(), &plan, &sig, INPUT, u64::from(OUTPUT))?;
    let direct = try_fastest(trials, || -> anyhow::Result<Duration> {
        let start = Instant::now();
        for _ in 0..calls {
            let (result, _) = bare.ecall(0, INPUT.len() as u64)?;
            anyhow::ensure!(result == expected.len() as i64, "the bare-metal ECALL returned {result}");
        }
        Ok(start.elapsed())
    })?;

    let epc = Arc::new(EpcManager::new(vsgx_hw::platform::Platform::new(platform)));
    let mut spec = spec;
    spec.epc[0].size = EPC_BYTES;
    spec.ram.push((MAILBOX, MAILBOX_SIZE));
    let ram = spec.ram[0];
    let gpa = spec.epc[0].gpa;
    let domain = Domain::create(DomainId(8), spec, epc)?;
    let boot = BootInfo { ram: vec![ram], reserved: vec![(MAILBOX, MAILBOX_SIZE), (gpa, EPC_BYTES)] };
    let vm = GuestVm::boot(&domain, boot, MAILBOX)?;
    let link = vm.agent();
    let via_agent = {
        let mut agent = link.lock().map_err(|_| anyhow::anyhow!("the agent link is poisoned"))?;
        let id = agent.load(&image.sgxs, sig.bytes())?.enclave;
        try_fastest(trials, || -> anyhow::Result<Duration> {
            let start = Instant::now();
            for _ in 0..calls {
                let called = agent.call(id, "hello", INPUT, OUTPUT)?;
                anyhow::ensure!(called.output == expected, "the guest's ECALL answered {:?}", called.output);
            }
            Ok(start.elapsed())
        })?
    };
    vm.shutdown();
    domain.destroy()?;
    let per_call = |d: Duration| d.as_secs_f64() * 1e6 / f64::from(calls);
    Ok((per_call(via_agent), per_call(direct)))
}

/// µs per ECALL through a private vsgxd's HTTP API, as `vsgx enclave call` makes it (a new
/// connection per request, JSON and base64 both ways), best of `trials` runs of `calls` calls.
pub fn api_ecalls(trials: usize, calls: u32) -> anyhow::Result<f64> {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as BASE64;

    let (image, sig) = hello()?;
    let dir = tempfile::Builder::new().prefix("vsgx-bench-").tempdir()?;
    let (mut daemon, socket) = super::private_host::PrivateHost::start(dir.path())?;
    let client = super::host::Client::new(socket);
    let config = serde_json::json!({ "config": "name = 'bench'\nmemory = 64\nepc = 8\n" });
    client.request("POST", "/v1/domains", Some(&config))?;
    let load = serde_json::json!({ "sgxs": BASE64.encode(&image.sgxs), "sigstruct": BASE64.encode(sig.bytes()) });
    let (_, loaded) = client.request("POST", "/v1/domains/bench/enclaves", Some(&load))?;
    let path = format!("/v1/domains/bench/enclaves/{}/call", loaded["enclave_id"]);
    let call = serde_json::json!({ "ecall": "hello", "input": BASE64.encode(INPUT), "output_capacity": OUTPUT });
    let expected = BASE64.encode(b"Hello, BENCHMARK");
    let best = try_fastest(trials, || -> anyhow::Result<Duration> {
        let start = Instant::now();
        for _ in 0..calls {
            let (_, answer) = client.request("POST", &path, Some(&call))?;
            anyhow::ensure!(answer["output"] == expected.as_str(), "the ECALL through the API answered {answer}");
        }
        Ok(start.elapsed())
    })?;
    daemon.stop()?;
    Ok(best.as_secs_f64() * 1e6 / f64::from(calls))
}

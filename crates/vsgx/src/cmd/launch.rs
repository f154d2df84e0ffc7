//! `vsgx enclave verify-launch`: build and EINIT an image on a fresh embedded platform.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use serde::Serialize;
use vsgx_hw::cpu::BareMetalCpu;
use vsgx_hw::os::{SimpleOs, default_base};
use vsgx_hw::platform::Platform;
use vsgx_isa::cpu::LeafStatus;
use vsgx_isa::sgxs::{self, LoadPlan};
use vsgx_isa::{ArchStruct, AttributesFlags, Sigstruct};

use super::read_file;

/// Exit status when the inputs cannot be read.
const UNREADABLE: u8 = 2;

#[derive(Serialize)]
struct Outcome {
    einit: Option<String>,
    code: Option<u64>,
    fault: Option<String>,
    mrenclave: String,
    mrsigner: String,
    isvprodid: u16,
    isvsvn: u16,
}

fn inputs(image: &Path, sig: &Path) -> anyhow::Result<(Vec<u8>, Sigstruct)> {
    let stream = read_file(image)?;
    let sig_bytes = read_file(sig)?;
    let sig =
        Sigstruct::from_bytes(&sig_bytes).map_err(|e| anyhow::anyhow!("{} is not a SIGSTRUCT: {e}", sig.display()))?;
    Ok((stream, sig))
}

/// `vsgx enclave verify-launch IMAGE SIG`: exit 0 when EINIT succeeds, 1 when it returns an error
/// (or the build faults), 2 when the inputs cannot be read.
pub fn verify_launch(image: &Path, sig_path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let (stream, sig) = match inputs(image, sig_path) {
        Ok(v) => v,
        Err(err) => {
            eprintln!("error: {err:#}");
            return Ok(ExitCode::from(UNREADABLE));
        }
    };
    let plan = match LoadPlan::from_sgxs(&stream) {
        Ok(plan) => plan,
        Err(err) => {
            eprintln!("error: {} is not a loadable SGXS stream: {err}", image.display());
            return Ok(ExitCode::from(UNREADABLE));
        }
    };
    let summary = sgxs::measure(&stream)?;
    let mut outcome = Outcome {
        einit: None,
        code: None,
        fault: None,
        mrenclave: hex::encode(summary.mrenclave),
        mrsigner: hex::encode(vsgx_isa::measure::mrsigner(&sig.modulus)),
        isvprodid: sig.isvprodid,
        isvsvn: sig.isvsvn,
    };
    let platform = Platform::embedded();
    let ram = platform.ram().size();
    let mut os = SimpleOs::boot(BareMetalCpu::new(Arc::clone(&platform)), ram)?;
    let mode64 = sig.attributes.flags & AttributesFlags::MODE64BIT.bits() != 0;
    let launched = os.build(&plan, &sig, default_base(plan.size, mode64)).and_then(|built| os.einit(built.secs, &sig));
    match launched {
        Ok(status) => {
            let (name, code) = match status {
                LeafStatus::Success => ("SGX_SUCCESS".to_string(), 0),
                LeafStatus::Error(e) | LeafStatus::Info(e) => (e.name().to_string(), e.code()),
                LeafStatus::Unknown(code) => (format!("unknown code {code}"), code),
            };
            outcome.einit = Some(name);
            outcome.code = Some(code);
        }
        Err(err) => outcome.fault = Some(err.to_string()),
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        match (&outcome.einit, &outcome.code, &outcome.fault) {
            (Some(name), Some(code), _) => println!("EINIT      {name} ({code})"),
            (_, _, Some(fault)) => println!("build      failed: {fault}"),
            _ => {}
        }
        println!("MRENCLAVE  {}", outcome.mrenclave);
        println!("MRSIGNER   {}", outcome.mrsigner);
        println!("ISVPRODID  {}", outcome.isvprodid);
        println!("ISVSVN     {}", outcome.isvsvn);
    }
    Ok(if outcome.code == Some(0) { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

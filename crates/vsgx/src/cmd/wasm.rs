//! `vsgx enclave build` and `vsgx enclave run`: WebAssembly enclaves from source to result.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use clap::Args;
use vsgx_hw::cpu::BareMetalCpu;
use vsgx_hw::exec::image::{self, ImageParams};
use vsgx_hw::os::{SimpleOs, default_base};
use vsgx_hw::platform::Platform;
use vsgx_isa::cpu::{AexCause, Cpl, Cpu, EnclaveExit, Gprs, LeafStatus};
use vsgx_isa::leaf::Enclu;
use vsgx_isa::sgxs::LoadPlan;
use vsgx_isa::signing::SigningKey;
use vsgx_isa::{ArchStruct, Sigstruct};

use super::read_file;
use crate::{date, numarg};

/// Arguments of `vsgx enclave build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The enclave module: WebAssembly text (.wat) or binary (.wasm).
    module: PathBuf,
    /// Signing key (RSA-3072, e = 3, PEM).
    #[arg(long, value_name = "KEY.pem")]
    key: PathBuf,
    /// Output name: writes NAME.sgxs and NAME.sig.
    #[arg(short, long, value_name = "NAME")]
    output: PathBuf,
    /// Heap (linear memory) size, e.g. 1M, 256K, 4MiB; rounded up to 64 KiB.
    #[arg(long, default_value = "1M", value_parser = numarg::size)]
    heap: u64,
    /// Number of TCSs (threads that can be inside at once).
    #[arg(long, default_value = "1")]
    tcs: u32,
    /// SSA frames per TCS (NSSA): nested AEXs a thread can take.
    #[arg(long, default_value = "2")]
    ssa_frames: u32,
    /// Build a debug enclave (ATTRIBUTES.DEBUG): EDBGRD/EDBGWR work, keys differ.
    #[arg(long)]
    debug: bool,
    /// ISVPRODID (decimal or 0x hex).
    #[arg(long, default_value = "0", value_parser = numarg::u16_any)]
    isvprodid: u16,
    /// ISVSVN (decimal or 0x hex).
    #[arg(long, default_value = "0", value_parser = numarg::u16_any)]
    isvsvn: u16,
    /// SIGSTRUCT DATE as YYYYMMDD [default: from SOURCE_DATE_EPOCH, else 19700101, so that builds
    /// are reproducible byte for byte].
    #[arg(long, value_parser = date::parse)]
    date: Option<u32>,
}

fn with_extension(base: &Path, ext: &str) -> PathBuf {
    let mut name = base.as_os_str().to_owned();
    name.push(".");
    name.push(ext);
    PathBuf::from(name)
}

/// Reads a module as WebAssembly binary, or text when it does not start with the binary magic.
pub fn read_module(path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = read_file(path)?;
    if bytes.starts_with(b"\0asm") {
        return Ok(bytes);
    }
    wat::parse_bytes(&bytes).map(|b| b.into_owned()).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// `vsgx enclave build`.
pub fn build(args: &BuildArgs) -> anyhow::Result<ExitCode> {
    let module = read_module(&args.module)?;
    let params = ImageParams {
        heap_bytes: args.heap,
        tcs: args.tcs,
        ssa_frames: args.ssa_frames,
        debug: args.debug,
        isvprodid: args.isvprodid,
        isvsvn: args.isvsvn,
    };
    let img = image::build_image(&module, &params)
        .with_context(|| format!("{} cannot be an enclave", args.module.display()))?;
    let pem = read_file(&args.key)?;
    let pem = std::str::from_utf8(&pem).map_err(|_| anyhow!("{}: not a PEM text file", args.key.display()))?;
    let key = SigningKey::from_pem(pem).with_context(|| format!("{} cannot sign enclaves", args.key.display()))?;
    let mut body = img.body;
    body.date = match (args.date, std::env::var_os("SOURCE_DATE_EPOCH")) {
        (Some(d), _) => d,
        (None, Some(_)) => date::default_date().map_err(anyhow::Error::msg)?,
        (None, None) => 0x1970_0101,
    };
    let sig = key.sign(&body, img.mrenclave)?;
    let sgxs_path = with_extension(&args.output, "sgxs");
    let sig_path = with_extension(&args.output, "sig");
    std::fs::write(&sgxs_path, &img.sgxs).with_context(|| format!("cannot write {}", sgxs_path.display()))?;
    std::fs::write(&sig_path, sig.bytes()).with_context(|| format!("cannot write {}", sig_path.display()))?;
    eprintln!(
        "built {} and {}: MRENCLAVE {}, ECALLs: {}",
        sgxs_path.display(),
        sig_path.display(),
        hex::encode(img.mrenclave),
        img.header.ecalls.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `vsgx enclave run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The enclave image.
    image: PathBuf,
    /// Its SIGSTRUCT.
    #[arg(long, value_name = "NAME.sig")]
    sig: PathBuf,
    /// The ECALL to call [default: the enclave's only ECALL].
    #[arg(long, value_name = "FN")]
    call: Option<String>,
    /// Input bytes, as text.
    #[arg(long, conflicts_with = "input_file")]
    input: Option<String>,
    /// Input bytes, from a file (`-`: standard input).
    #[arg(long, value_name = "F")]
    input_file: Option<PathBuf>,
    /// Output buffer size.
    #[arg(long, default_value = "64K", value_parser = numarg::size)]
    output_size: u64,
    /// Fuse the platform's secrets from this seed, so sealed data and reports made in one run are
    /// usable in another run with the same seed [default: fresh random secrets every run].
    #[arg(long)]
    seed: Option<u64>,
    /// Print JSON (ecall, result, output as text and hex, AEX count, MRENCLAVE) instead of the raw
    /// output bytes.
    #[arg(long)]
    json: bool,
}

/// Where the caller's return address and AEP point (any canonical address outside the enclave).
const RETURN_RIP: u64 = 0x40_1000;
const AEP: u64 = 0x40_2000;

/// `vsgx enclave run`: build on an embedded bare-metal platform, EINIT, EENTER; AEXs from the
/// scheduler budget are answered with ERESUME. Prints exactly the output bytes on stdout.
pub fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let stream = read_file(&args.image)?;
    let sig_bytes = read_file(&args.sig)?;
    let sig =
        Sigstruct::from_bytes(&sig_bytes).map_err(|e| anyhow!("{} is not a SIGSTRUCT: {e}", args.sig.display()))?;
    let plan = LoadPlan::from_sgxs(&stream)
        .with_context(|| format!("{} is not a loadable SGXS stream", args.image.display()))?;
    let header = image::read_header(&plan)
        .with_context(|| format!("{} is not a vsgx WebAssembly enclave", args.image.display()))?;
    let ecall = match &args.call {
        Some(name) => header
            .ecall(name)
            .ok_or_else(|| anyhow!("the enclave has no ECALL '{name}' (it has: {})", header.ecalls.join(", ")))?,
        None if header.ecalls.len() == 1 => 0,
        None => bail!("the enclave has several ECALLs ({}); choose one with --call", header.ecalls.join(", ")),
    };
    let input = super::ecall_input(args.input.as_deref(), args.input_file.as_deref())?;

    let mut config = vsgx_hw::config::embedded_default();
    config.seed = args.seed;
    let mut enclave = BareMetalEnclave::launch(config, &plan, &sig, &input, args.output_size)?;
    let (result, aexs) = enclave.ecall(ecall as u64, input.len() as u64)?;
    let output = enclave.output(result)?;
    if args.json {
        let v = serde_json::json!({
            "ecall": header.ecalls[ecall],
            "result": result,
            "output": String::from_utf8_lossy(&output),
            "output_hex": hex::encode(&output),
            "aex_count": aexs,
            "mrenclave": hex::encode(sig.enclavehash),
        });
        println!("{v}");
    } else {
        std::io::stdout().write_all(&output)?;
        if result < 0 {
            eprintln!("the enclave returned error {result}");
        }
    }
    Ok(if result < 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// An initialized enclave on a fresh bare-metal platform with input and output buffers: what
/// `vsgx enclave run` calls, and the yardstick of `vsgx bench`'s P8.
pub struct BareMetalEnclave {
    platform: Arc<Platform>,
    os: SimpleOs<BareMetalCpu>,
    tcs: u64,
    in_la: u64,
    out_la: u64,
    output_size: u64,
}

impl BareMetalEnclave {
    /// Builds and initializes `plan` on a fresh platform of `config`, with `input` in a buffer and
    /// an output buffer of `output_size` bytes.
    pub fn launch(
        config: vsgx_hw::config::PlatformConfig,
        plan: &LoadPlan,
        sig: &Sigstruct,
        input: &[u8],
        output_size: u64,
    ) -> anyhow::Result<Self> {
        let platform = Platform::new(config);
        let ram = platform.ram().size();
        let mut os = SimpleOs::boot(BareMetalCpu::new(Arc::clone(&platform)), ram)?;
        let base = default_base(plan.size, true);
        let built = os.build(plan, sig, base)?;
        match os.einit(built.secs, sig)? {
            LeafStatus::Success => {}
            other => bail!("EINIT refused the enclave: {other:?}"),
        }
        let in_la = os.scratch(input, 4096)?;
        let out_la = os.scratch(&vec![0u8; usize::try_from(output_size)?], 4096)?;
        os.cpu().set_cpl(Cpl::Ring3);
        Ok(Self { platform, os, tcs: base + 0x1000, in_la, out_la, output_size })
    }

    /// EENTER ECALL number `ecall` with the first `input_len` bytes of the input buffer, ERESUME
    /// after interrupts; (the ECALL's result, AEXs taken).
    pub fn ecall(&mut self, ecall: u64, input_len: u64) -> anyhow::Result<(i64, u64)> {
        let tcs = self.tcs;
        let cpu = self.os.cpu();
        let mut regs = Gprs {
            rbx: tcs,
            rcx: AEP,
            rdi: ecall,
            rsi: self.in_la,
            rdx: input_len,
            rip: RETURN_RIP,
            ..Gprs::default()
        };
        regs.r8_r15[0] = self.out_la;
        regs.r8_r15[1] = self.output_size;
        let mut aexs = 0u64;
        let mut exit = cpu.enclu_leaf(Enclu::Eenter, &mut regs);
        loop {
            match exit {
                Ok(EnclaveExit::Eexit) => return Ok((regs.rdi as i64, aexs)),
                Ok(EnclaveExit::Aex(AexCause::Interrupt)) => {
                    aexs += 1;
                    regs.rbx = tcs;
                    regs.rcx = AEP;
                    exit = cpu.enclu_leaf(Enclu::Eresume, &mut regs);
                }
                Ok(EnclaveExit::Aex(AexCause::Exception(e))) => {
                    let page = self.platform.epc().page_of(cpu.walk(tcs, vsgx_hw::leaves::Access::Read).unwrap_or(0));
                    let detail = page.and_then(|p| self.platform.executor().last_trap(p)).unwrap_or_default();
                    bail!(
                        "the enclave stopped with {e} after {aexs} interrupts{}{detail}",
                        if detail.is_empty() { "" } else { ": " }
                    );
                }
                Err(e) => bail!("ENCLU faulted: {e}"),
            }
        }
    }

    /// The output bytes of an ECALL that returned `result`.
    pub fn output(&mut self, result: i64) -> anyhow::Result<Vec<u8>> {
        if result <= 0 {
            return Ok(Vec::new());
        }
        let n = usize::try_from((result as u64).min(self.output_size))?;
        let mut out = vec![0u8; n];
        self.os.cpu().read(self.out_la, &mut out).map_err(|e| anyhow!("reading the output buffer: {e}"))?;
        Ok(out)
    }
}

//! `vsgx`: the vsgx command-line tool.
//!
//! The host verbs of DESIGN §7.4 talk to `vsgxd` over its socket (`create`, `destroy`, `list`,
//! `info`, `sgxinfo`, `sgxlist`, `enclave load|call|list|destroy`); the offline enclave tools
//! (`enclave build|sign|measure|keygen|run|verify-launch`, `sigstruct show`) and `bench` need none.

mod cmd;
mod date;
mod numarg;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// vsgx: Intel SGX virtualization — per-guest EPC, enclaves in guests, on a faithful SGX model.
#[derive(Debug, Parser)]
#[command(name = "vsgx", version, about, propagate_version = true)]
struct Cli {
    /// vsgxd's API socket [default: $VSGX_SOCKET, else $XDG_RUNTIME_DIR/vsgxd.sock, else /run/vsgxd.sock].
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a private host (temporary socket and state) on the embedded platform and walk through
    /// guests, vEPC and enclaves end to end, with real output. Exits 0 when every step checked out.
    Demo,
    /// Enclaves: load, call, list and destroy them inside a guest (through vsgxd); build, sign,
    /// measure and run them offline.
    #[command(subcommand)]
    Enclave(EnclaveCommand),
    /// Inspect SIGSTRUCT files.
    #[command(subcommand)]
    Sigstruct(SigstructCommand),
    /// Create a guest from an xl-style config (through vsgxd), or with `--dry-run` check it and
    /// show the layout it gets: memory map, vEPC sections, CPUID 0x12, ACPI EPC device.
    Create(cmd::create::CreateArgs),
    /// Destroy a guest (DOM = name or id); all its EPC returns to the host.
    Destroy {
        /// The domain's name or id.
        dom: String,
    },
    /// List the guests (with `--sgx`: their vEPC, as `sgxlist`).
    List {
        /// Show the guests' vEPC (same as `vsgx sgxlist`).
        #[arg(long)]
        sgx: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One guest: RAM, vCPUs, memory map, vEPC (with `--sgx`: its EPC page counts).
    Info {
        /// The domain's name or id.
        dom: String,
        /// Add the guest's EPC page counts (resident / evicted / ballooned) and policy.
        #[arg(long)]
        sgx: bool,
        /// Print JSON (the API's Domain object, plus `sgx` with `--sgx`).
        #[arg(long)]
        json: bool,
    },
    /// Physical SGX: features, EPC sections, total / free / used / quarantined EPC.
    Sgxinfo {
        /// Print JSON: sgx1, sgx2, flc, kss, oversub, sections, epc_{total,free,used,quarantined}_bytes.
        #[arg(long)]
        json: bool,
    },
    /// vEPC per guest: size, sections, policy, resident / evicted / ballooned pages.
    Sgxlist {
        /// Only this domain (name or id).
        dom: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the project's benchmarks on this machine: one row per performance goal (P1, P2, P4, P6,
    /// P7) with its value, the yardstick measured alongside it and their ratio.
    Bench {
        /// Fewer rounds and a 1 GiB (not 64 GiB) domain for P4: finishes in seconds, a smoke test.
        #[arg(long)]
        quick: bool,
        /// Print a JSON array of rows: id, what, value, unit, yardstick, yardstick_value, ratio,
        /// goal (and epcm_bytes_per_page on P4).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum EnclaveCommand {
    /// Load and initialize an enclave inside a guest (its driver runs ECREATE, EADD/EEXTEND,
    /// EINIT); prints the enclave's id in the guest.
    Load(cmd::guest::LoadArgs),
    /// Call an ECALL of an enclave inside a guest; prints exactly the enclave's output bytes.
    Call(cmd::guest::CallArgs),
    /// List the enclaves inside a guest.
    List {
        /// The guest (name or id).
        dom: String,
        /// Print JSON: enclave_id, mrenclave, mrsigner, ecalls, state, epc_pages.
        #[arg(long)]
        json: bool,
    },
    /// Destroy an enclave inside a guest; its EPC pages return to the guest.
    Destroy {
        /// The guest (name or id).
        dom: String,
        /// The enclave's id in the guest.
        enclave: u32,
    },
    /// Compute MRENCLAVE of an SGXS stream (validating it as a loader would).
    Measure {
        /// The enclave's SGXS measurement stream.
        file: PathBuf,
        /// Print JSON: mrenclave, size, ssaframesize, pages, measured_chunks, unmeasured_chunks.
        #[arg(long)]
        json: bool,
    },
    /// Generate a new enclave signing key (RSA-3072, public exponent 3, PKCS#1 PEM, mode 0600).
    /// Prints the MRSIGNER of enclaves it will sign.
    Keygen {
        /// Where to write the private key.
        #[arg(short, long, value_name = "KEY.pem")]
        output: PathBuf,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Sign an enclave: write its SIGSTRUCT (1808 bytes). Same inputs always give the same bytes.
    Sign(cmd::enclave::SignArgs),
    /// Build a WebAssembly enclave: NAME.sgxs + NAME.sig, reproducible byte for byte.
    Build(cmd::wasm::BuildArgs),
    /// Run an ECALL of a WebAssembly enclave on an embedded bare-metal platform; prints exactly the
    /// enclave's output bytes (diagnostics on stderr).
    Run(cmd::wasm::RunArgs),
    /// Build an enclave on a fresh embedded bare-metal platform (ECREATE/EADD/EEXTEND, as an OS
    /// would), set the launch hash MSRs to its signer as Linux does, and run EINIT.
    /// Exit status: 0 EINIT succeeded, 1 EINIT returned an error (or the build faulted),
    /// 2 the inputs cannot be read.
    VerifyLaunch {
        /// The enclave's SGXS stream.
        image: PathBuf,
        /// Its SIGSTRUCT.
        sig: PathBuf,
        /// Print JSON: einit, code, mrenclave, mrsigner, isvprodid, isvsvn (and fault).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum SigstructCommand {
    /// Show every field of a SIGSTRUCT and whether it is valid (signature and Q1/Q2 checked).
    /// Exit status: 0 valid, 1 invalid, 2 not readable as a SIGSTRUCT.
    Show {
        /// The SIGSTRUCT file.
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let socket = cli.socket.clone();
    let client = || cmd::host::Client::new(cmd::host::socket_path(socket.as_deref()));
    let result = match cli.command {
        Command::Enclave(EnclaveCommand::Load(args)) => cmd::guest::load(&client(), &args),
        Command::Enclave(EnclaveCommand::Call(args)) => cmd::guest::call(&client(), &args),
        Command::Enclave(EnclaveCommand::List { dom, json }) => cmd::guest::list(&client(), &dom, json),
        Command::Enclave(EnclaveCommand::Destroy { dom, enclave }) => cmd::guest::destroy(&client(), &dom, enclave),
        Command::Enclave(EnclaveCommand::Measure { file, json }) => cmd::enclave::measure(&file, json),
        Command::Enclave(EnclaveCommand::Keygen { output, force }) => cmd::enclave::keygen(&output, force),
        Command::Enclave(EnclaveCommand::Sign(args)) => cmd::enclave::sign(&args),
        Command::Enclave(EnclaveCommand::Build(args)) => cmd::wasm::build(&args),
        Command::Enclave(EnclaveCommand::Run(args)) => cmd::wasm::run(&args),
        Command::Enclave(EnclaveCommand::VerifyLaunch { image, sig, json }) => {
            cmd::launch::verify_launch(&image, &sig, json)
        }
        Command::Sigstruct(SigstructCommand::Show { file, json }) => cmd::sigstruct::show(&file, json),
        Command::Create(args) => cmd::create::create(&args, &client()),
        Command::Destroy { dom } => cmd::host::destroy(&client(), &dom),
        Command::List { sgx: false, json } => cmd::host::list(&client(), json),
        Command::List { sgx: true, json } => cmd::host::sgxlist(&client(), None, json),
        Command::Info { dom, sgx, json } => cmd::host::info(&client(), &dom, sgx, json),
        Command::Sgxinfo { json } => cmd::host::sgxinfo(&client(), json),
        Command::Sgxlist { dom, json } => cmd::host::sgxlist(&client(), dom.as_deref(), json),
        Command::Bench { quick, json } => cmd::bench::bench(quick, json),
        Command::Demo => cmd::demo::demo(),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

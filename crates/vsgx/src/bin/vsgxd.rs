//! `vsgxd`: the host daemon (see `vsgx_daemon` for what it serves and keeps).

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use vsgx_hw::config::{EpcSection, PlatformConfig};

/// vsgxd: the vsgx host daemon (one SGX platform, its hypervisor and domains).
#[derive(Debug, Parser)]
#[command(name = "vsgxd", version, about)]
struct Args {
    /// The API socket [default: $VSGX_SOCKET, else $XDG_RUNTIME_DIR/vsgxd.sock, else /run/vsgxd.sock].
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// The host's EPC: sections as SIZE_MIB[@NODE], comma separated (e.g. `128@0,128@1`), on the
    /// embedded platform otherwise.
    #[arg(long, value_name = "SECTIONS", conflicts_with = "platform")]
    epc: Option<String>,
    /// A platform TOML file instead of the embedded platform.
    #[arg(long, value_name = "FILE.toml")]
    platform: Option<PathBuf>,
    /// Where the daemon keeps its state [default: $VSGX_STATE_DIR, else /var/lib/vsgx].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

/// `128@0,128@1` → EPC sections.
fn parse_epc(spec: &str) -> anyhow::Result<Vec<EpcSection>> {
    spec.split(',')
        .enumerate()
        .map(|(i, item)| {
            let (size, node) = item.split_once('@').unwrap_or((item, "0"));
            let size_mib = size.trim().parse::<u64>().ok().filter(|&s| s > 0);
            let node = node.trim().parse::<u32>().ok();
            match (size_mib, node) {
                (Some(size_mib), Some(node)) => Ok(EpcSection { size_mib, node }),
                _ => bail!("--epc item {} {item:?}: expected SIZE_MIB[@NODE], e.g. 128@0", i + 1),
            }
        })
        .collect()
}

fn platform_config(args: &Args) -> anyhow::Result<PlatformConfig> {
    let config = if let Some(path) = &args.platform {
        let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
        vsgx_hw::config::from_toml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
    } else {
        let mut config = vsgx_hw::config::embedded_default();
        if let Some(epc) = &args.epc {
            config.epc = parse_epc(epc)?;
        }
        config
    };
    Ok(config)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let options = vsgx_daemon::Options {
        socket: args.socket.clone().unwrap_or_else(vsgx_toolstack::report::default_socket),
        state_dir: args.state_dir.clone().unwrap_or_else(|| {
            std::env::var_os("VSGX_STATE_DIR").map_or_else(|| PathBuf::from("/var/lib/vsgx"), PathBuf::from)
        }),
        platform: platform_config(args)?,
        verbose: true,
    };
    vsgx_daemon::run(options, || {}, shutdown_signal())
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vsgxd: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

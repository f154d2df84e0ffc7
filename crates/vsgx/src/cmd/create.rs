//! `vsgx create CFG --dry-run [--json] [--platform FILE.toml]`: parse and validate an xl-style
//! guest config and print the layout the guest would get (memory map, vEPC sections, CPUID 0x12,
//! ACPI EPC device), without a daemon.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde::Serialize;
use vsgx_toolstack::config::{GuestConfig, Parsed};
use vsgx_toolstack::host::HostInfo;
use vsgx_toolstack::report::{RegionInfo, SectionInfo};

/// Arguments of `vsgx create`.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The guest's xl-style config file.
    #[arg(value_name = "CFG")]
    config: PathBuf,
    /// Check the config and print the layout without creating anything (works without a daemon).
    #[arg(long)]
    dry_run: bool,
    /// Print JSON (dry run: name, memory_map, epc_sections, cpuid, warnings; else the created domain).
    #[arg(long)]
    json: bool,
    /// Lay out for the host a platform TOML describes instead of the embedded platform.
    #[arg(long, value_name = "FILE.toml")]
    platform: Option<PathBuf>,
}

const MIB: u64 = 1 << 20;

#[derive(Serialize)]
struct Cpuid {
    leaf: u32,
    subleaf: u32,
    eax: u32,
    ebx: u32,
    ecx: u32,
    edx: u32,
}

#[derive(Serialize)]
struct DryRun {
    name: String,
    memory_map: Vec<RegionInfo>,
    epc_sections: Vec<SectionInfo>,
    cpuid: Vec<Cpuid>,
    warnings: Vec<String>,
}

/// The host the layout is computed for.
fn host(platform: Option<&Path>) -> anyhow::Result<HostInfo> {
    let Some(path) = platform else { return Ok(HostInfo::embedded()) };
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let config = vsgx_hw::config::from_toml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(HostInfo::from_platform_config(&config))
}

/// `vsgx create`: through the daemon, or `--dry-run` locally.
pub fn create(args: &CreateArgs, client: &super::host::Client) -> anyhow::Result<ExitCode> {
    if !args.dry_run {
        if args.platform.is_some() {
            bail!("--platform applies to --dry-run only: a daemon lays guests out for its own host");
        }
        return super::host::create(client, &args.config, args.json);
    }
    let host = host(args.platform.as_deref())?;
    let Parsed { config, layout, warnings } = GuestConfig::load(&args.config, &host)?;
    // The layout function promises agreement; a disagreement is a bug worth refusing loudly.
    layout.check_agreement().map_err(|e| anyhow::anyhow!("internal error: the layout disagrees with itself: {e}"))?;
    let report = DryRun {
        name: config.name.clone(),
        memory_map: layout.memory_map.iter().map(RegionInfo::from).collect(),
        epc_sections: layout.epc_sections.iter().map(SectionInfo::from).collect(),
        cpuid: layout
            .cpuid
            .iter()
            .map(|c| Cpuid {
                leaf: c.leaf,
                subleaf: c.subleaf,
                eax: c.regs.eax,
                ebx: c.regs.ebx,
                ecx: c.regs.ecx,
                edx: c.regs.edx,
            })
            .collect(),
        warnings: warnings.iter().map(ToString::to_string).collect(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    for w in &report.warnings {
        eprintln!("{w}");
    }
    print_human(&config, &report, &layout.acpi_epc.to_asl());
    Ok(ExitCode::SUCCESS)
}

/// `512 MiB`, or the byte count when it is not a whole MiB.
fn size(bytes: u64) -> String {
    if bytes.is_multiple_of(MIB) { format!("{} MiB", bytes / MIB) } else { format!("{bytes} B") }
}

fn print_human(config: &GuestConfig, report: &DryRun, asl: &str) {
    let epc: u64 = report.epc_sections.iter().map(|s| s.size).sum();
    println!(
        "guest {} (uuid {}, {}, {} MiB RAM, {} vCPU{}), {} of vEPC, policy {}: config is valid (dry run, nothing created)",
        config.name,
        config.uuid,
        config.guest_type.as_str(),
        config.memory_mib,
        config.vcpus,
        if config.vcpus == 1 { "" } else { "s" },
        size(epc),
        config.epc_policy.as_str(),
    );
    println!();
    println!("memory map:");
    println!("  {:<18}  {:<18}  {:>12}  type", "base", "end", "size");
    for r in &report.memory_map {
        println!("  {:#018x}  {:#018x}  {:>12}  {}", r.base, r.base + r.size, size(r.size), r.kind);
    }
    println!();
    if report.epc_sections.is_empty() {
        println!("no vEPC sections");
    } else {
        println!("vEPC sections:");
        println!("  {:<18}  {:>12}  {:>8}  node", "base", "size", "pages");
        for s in &report.epc_sections {
            println!("  {:#018x}  {:>12}  {:>8}  {}", s.base, size(s.size), s.size / 4096, s.node);
        }
    }
    println!();
    println!("CPUID:");
    println!("  {:<10}  {:<7}  {:<10}  {:<10}  {:<10}  edx", "leaf", "subleaf", "eax", "ebx", "ecx");
    for c in &report.cpuid {
        println!(
            "  {:#010x}  {:<7}  {:#010x}  {:#010x}  {:#010x}  {:#010x}",
            c.leaf, c.subleaf, c.eax, c.ebx, c.ecx, c.edx
        );
    }
    println!();
    println!("ACPI EPC device:");
    for line in asl.lines() {
        println!("  {line}");
    }
}

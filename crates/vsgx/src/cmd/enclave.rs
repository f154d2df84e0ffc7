//! `vsgx enclave measure|keygen|sign`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use vsgx_isa::signing::{SigningKey, SigstructBody};
use vsgx_isa::{ArchStruct, Attributes, AttributesFlags, Sigstruct, sgxs, xfrm_is_legal};

use super::read_file;
use crate::{date, numarg};

/// `vsgx enclave measure`.
pub fn measure(file: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let bytes = read_file(file)?;
    let summary = sgxs::measure(&bytes).with_context(|| format!("{} is not a loadable SGXS stream", file.display()))?;
    if json {
        let out = serde_json::json!({
            "mrenclave": hex::encode(summary.mrenclave),
            "size": summary.size,
            "ssaframesize": summary.ssaframesize,
            "pages": summary.pages,
            "measured_chunks": summary.measured_chunks,
            "unmeasured_chunks": summary.unmeasured_chunks,
        });
        println!("{out}");
    } else {
        println!("{}", hex::encode(summary.mrenclave));
    }
    Ok(ExitCode::SUCCESS)
}

/// `vsgx enclave keygen`.
pub fn keygen(output: &Path, force: bool) -> anyhow::Result<ExitCode> {
    let key = SigningKey::generate(&mut getrandom::SysRng).context("key generation failed")?;
    let pem = key.to_pem()?;
    write_private(output, pem.as_bytes(), force)?;
    println!("{}", hex::encode(key.mrsigner()));
    eprintln!("wrote {} (RSA-3072, e = 3); the line above is the MRSIGNER of enclaves it signs", output.display());
    Ok(ExitCode::SUCCESS)
}

/// Writes a private key readable only by its owner, refusing to clobber unless asked.
fn write_private(path: &Path, data: &[u8], force: bool) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).with_context(|| {
        if path.exists() && !force {
            format!("{} already exists (use --force to overwrite it)", path.display())
        } else {
            format!("cannot create {}", path.display())
        }
    })?;
    file.write_all(data).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// SIGSTRUCT VENDOR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Vendor {
    /// VENDOR = 0.
    None,
    /// VENDOR = 0x8086.
    Intel,
}

/// Arguments of `vsgx enclave sign`. Defaults describe a 64-bit production (non-debug) enclave.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// Signing key: RSA-3072 with public exponent 3, PEM (PKCS#1 or PKCS#8).
    #[arg(long, value_name = "KEY.pem")]
    key: PathBuf,
    /// The enclave's SGXS stream.
    file: PathBuf,
    /// Where to write the SIGSTRUCT.
    #[arg(short, long, value_name = "FILE.sig")]
    output: PathBuf,
    /// ISVPRODID (decimal or 0x hex).
    #[arg(long, default_value = "0", value_parser = numarg::u16_any)]
    isvprodid: u16,
    /// ISVSVN (decimal or 0x hex).
    #[arg(long, default_value = "0", value_parser = numarg::u16_any)]
    isvsvn: u16,
    /// ATTRIBUTES.FLAGS (hex): 0x4 = MODE64BIT; add 0x2 for a debug enclave.
    #[arg(long, default_value = "0x4", value_parser = numarg::hex_u64)]
    attributes: u64,
    /// ATTRIBUTEMASK.FLAGS (hex): which FLAGS bits EINIT enforces (all, so DEBUG is bound).
    #[arg(long, default_value = "0xffffffffffffffff", value_parser = numarg::hex_u64)]
    attributes_mask: u64,
    /// ATTRIBUTES.XFRM (hex): 0x3 = x87 + SSE.
    #[arg(long, default_value = "0x3", value_parser = numarg::hex_u64)]
    xfrm: u64,
    /// ATTRIBUTEMASK.XFRM (hex): enforced XFRM bits (all but AVX and AVX-512).
    #[arg(long, default_value = "0xffffffffffffff1b", value_parser = numarg::hex_u64)]
    xfrm_mask: u64,
    /// MISCSELECT (hex).
    #[arg(long, default_value = "0x0", value_parser = numarg::hex_u32)]
    miscselect: u32,
    /// MISCMASK (hex): enforced MISCSELECT bits.
    #[arg(long, default_value = "0xffffffff", value_parser = numarg::hex_u32)]
    misc_mask: u32,
    /// DATE as YYYYMMDD [default: from SOURCE_DATE_EPOCH if set, else today (UTC)].
    #[arg(long, value_parser = date::parse)]
    date: Option<u32>,
    /// VENDOR.
    #[arg(long, value_enum, default_value = "none")]
    vendor: Vendor,
}

impl SignArgs {
    fn body(&self) -> anyhow::Result<SigstructBody> {
        let attributes = Attributes { flags: self.attributes, xfrm: self.xfrm };
        let attributemask = Attributes { flags: self.attributes_mask, xfrm: self.xfrm_mask };
        if attributes.and(&attributemask).flags & AttributesFlags::INIT.bits() != 0 {
            bail!(
                "--attributes sets INIT (bit 0) under the mask; no enclave has INIT at EINIT, so it could never launch"
            );
        }
        if !xfrm_is_legal(self.xfrm) {
            bail!(
                "--xfrm {:#x} is not a valid XCR0 value (x87 and SSE, bits 0 and 1, are required; see SGX.md §1.2)",
                self.xfrm
            );
        }
        let date = match self.date {
            Some(d) => d,
            None => date::default_date().map_err(anyhow::Error::msg)?,
        };
        Ok(SigstructBody {
            vendor: match self.vendor {
                Vendor::None => 0,
                Vendor::Intel => Sigstruct::VENDOR_INTEL,
            },
            date,
            miscselect: self.miscselect,
            miscmask: self.misc_mask,
            attributes,
            attributemask,
            isvprodid: self.isvprodid,
            isvsvn: self.isvsvn,
            ..SigstructBody::default()
        })
    }
}

/// `vsgx enclave sign`.
pub fn sign(args: &SignArgs) -> anyhow::Result<ExitCode> {
    let body = args.body()?;
    let pem = read_file(&args.key)?;
    let pem = std::str::from_utf8(&pem).map_err(|_| anyhow::anyhow!("{}: not a PEM text file", args.key.display()))?;
    let key = SigningKey::from_pem(pem).with_context(|| format!("{} cannot sign enclaves", args.key.display()))?;
    let stream = read_file(&args.file)?;
    let summary =
        sgxs::measure(&stream).with_context(|| format!("{} is not a loadable SGXS stream", args.file.display()))?;
    let sigstruct = key.sign(&body, summary.mrenclave)?;
    std::fs::write(&args.output, sigstruct.bytes())
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    eprintln!(
        "signed {}: MRENCLAVE {} MRSIGNER {}",
        args.file.display(),
        hex::encode(summary.mrenclave),
        hex::encode(key.mrsigner())
    );
    Ok(ExitCode::SUCCESS)
}

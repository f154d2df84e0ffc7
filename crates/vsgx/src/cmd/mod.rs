//! One module per command group.

pub mod bench;
pub mod bench_agent;
pub mod create;
pub mod demo;
pub mod enclave;
pub mod guest;
pub mod host;
pub mod launch;
pub mod private_host;
pub mod sigstruct;
pub mod wasm;

use std::path::Path;

use anyhow::Context;

/// Reads a whole input file, naming it in the error.
pub fn read_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// An ECALL's input: `--input` text, `--input-file F` (`-` reads standard input), or nothing.
pub fn ecall_input(text: Option<&str>, file: Option<&Path>) -> anyhow::Result<Vec<u8>> {
    match (text, file) {
        (Some(text), _) => Ok(text.as_bytes().to_vec()),
        (None, Some(path)) if path.as_os_str() == "-" => {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes).context("reading the input from stdin")?;
            Ok(bytes)
        }
        (None, Some(path)) => read_file(path),
        (None, None) => Ok(Vec::new()),
    }
}

//! One module per command group.

pub mod bench;
pub mod bench_agent;
pub mod create;
pub mod demo;
pub mod enclave;
pub mod guest;
pub mod host;
pub mod launch;
pub mod sigstruct;
pub mod wasm;

use std::path::Path;

use anyhow::Context;

/// Reads a whole input file, naming it in the error.
pub fn read_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

//! The enclave executor: WebAssembly enclaves entered with EENTER, left with EEXIT or AEX, resumed
//! with ERESUME (DESIGN §9, `docs/enclave-abi.md`).
//!
//! - `abi`: the imports an enclave module may use;
//! - `image`: builds enclave images (SGXS) from modules;
//! - `instrument`: rewrites a module so every linear-memory access is checked first;
//! - `run`: EENTER/ERESUME/EEXIT/AEX.

pub mod abi;
pub mod image;
pub mod instrument;
pub mod run;

pub use run::{AddressSpace, Entry, Executor};

//! Intel SGX architecture, byte for byte.
//!
//! `vsgx-isa` is the bottom layer of vsgx (see `ARCHITECTURE.md`): everything every other layer must
//! agree on and nothing that needs a machine.
//!
//! - [`types`]: the architectural structures (SECS, TCS, SSA/GPRSGX, SECINFO, PAGEINFO, PCMD,
//!   SIGSTRUCT, EINITTOKEN, REPORT, TARGETINFO, KEYREQUEST, RDINFO, VA pages) with layouts checked at
//!   compile time;
//! - [`leaf`], [`status`], [`msr`], [`cpuid`]: instruction leaves, return codes, MSRs, CPUID codecs;
//! - [`cpu`]: the [`Cpu`](cpu::Cpu) trait, the hardware boundary every layer above is written against;
//! - [`measure`]: MRENCLAVE and MRSIGNER;
//! - [`sgxs`]: SGXS measurement streams, canonical checks and load plans;
//! - [`signing`]: building, signing and verifying SIGSTRUCTs; signing keys.
//!
//! Layouts and semantics follow `shared/docs/SGX.md` (the model's reading of the Intel SDM). The crate
//! is `no_std` + `alloc` so the guest kernel (`vsgx-guest`) can use it unchanged.

#![no_std]
#![warn(missing_docs)]

extern crate alloc;

// The architectural structures are declared with native integer fields and converted with plain
// byte copies, which is exact only on a little-endian host (as every SGX machine is).
#[cfg(not(target_endian = "little"))]
compile_error!("vsgx-isa assumes a little-endian host, like the SGX architecture itself");

pub mod cpu;
pub mod cpuid;
pub mod leaf;
pub mod measure;
pub mod msr;
pub mod sgxs;
pub mod signing;
pub mod status;
pub mod types;
pub mod wasm_abi;

pub use types::*;

//! The guest kernel's SGX support: driver, page tables, EPC-loss recovery and SDK (DESIGN §6).
//!
//! Reaches the machine only through `vsgx_isa::cpu::Cpu`, so the same code can later run inside a
//! real KVM guest. `no_std` + `alloc`.
//!
//! - [`kernel`]: boot (SGX enumeration cross-checked with the memory map), page tables, RAM and
//!   EPC page allocators;
//! - [`driver`]: load (ECREATE/EADD/EEXTEND from SGXS), EINIT as Linux does it under FLC,
//!   teardown with two-pass EREMOVE;
//! - [`sdk`]: ECALLs with the untrusted-runtime loop, EPC-loss detection, rebuild + re-provision.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

pub mod agent;
pub mod driver;
pub mod kernel;
pub mod reclaim;
pub mod sdk;
pub mod sgx2;

use vsgx_isa::cpu::Exception;
use vsgx_isa::cpuid::CpuidError;
use vsgx_isa::sgxs::{LoadPlan, SgxsError};
use vsgx_isa::status::SgxError;
use vsgx_isa::wasm_abi::{self, Header};

/// Everything the guest's SGX stack can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuestError {
    /// SGX is not available to this guest.
    #[error("SGX is not available: {0}")]
    NoSgx(&'static str),
    /// CPUID leaf 0x12 is malformed.
    #[error("malformed SGX enumeration: {0}")]
    Cpuid(CpuidError),
    /// An EPC section is not reported reserved in the memory map.
    #[error("EPC section {base:#x}+{size:#x} is not reserved in the memory map")]
    MemoryMap {
        /// Section base.
        base: u64,
        /// Section size.
        size: u64,
    },
    /// An instruction or memory access faulted.
    #[error("fault: {0}")]
    Fault(Exception),
    /// An ENCLS leaf faulted.
    #[error("{0} faulted: {1}")]
    Leaf(&'static str, Exception),
    /// EINIT refused the enclave.
    #[error("EINIT refused the enclave: {0}")]
    Einit(SgxError),
    /// Out of guest RAM.
    #[error("out of guest RAM")]
    OutOfRam,
    /// Out of EPC.
    #[error("out of EPC")]
    OutOfEpc,
    /// Not enough free EPC for an enclave.
    #[error("the enclave needs {needed} EPC pages, {free} are free")]
    EpcShort {
        /// Pages needed.
        needed: u64,
        /// Pages free.
        free: u64,
    },
    /// The image is not a loadable SGXS stream.
    #[error("bad enclave image: {0}")]
    Image(SgxsError),
    /// The image is not a vsgx WebAssembly enclave.
    #[error("not a vsgx WebAssembly enclave: {0}")]
    Header(wasm_abi::HeaderError),
    /// The SIGSTRUCT bytes are not 1808 bytes.
    #[error("the SIGSTRUCT is not 1808 bytes")]
    BadSigstruct,
    /// No such enclave.
    #[error("no enclave {0}")]
    NoSuchEnclave(u32),
    /// The enclave has no TCS.
    #[error("enclave {0} has no TCS")]
    NoTcs(u32),
    /// No ECALL with that name.
    #[error("no such ECALL")]
    NoSuchEcall,
    /// The enclave's EPC is gone (power transition or migration): rebuild it.
    #[error("enclave {0} was lost (its EPC is gone); rebuild it")]
    EnclaveLost(u32),
    /// The enclave stopped with an exception (e.g. #UD for a WebAssembly trap).
    #[error("the enclave stopped with {0}")]
    EnclaveFault(Exception),
    /// An enclave page stays blocked: its write-back keeps answering SGX_NOT_TRACKED, so it can
    /// neither be used nor reloaded.
    #[error("the enclave page at {0:#x} is stuck blocked (its tracking cycle never completes)")]
    PageStuck(u64),
    /// A page offset outside the enclave, misaligned, or in the wrong state for the operation.
    #[error("page offset {0:#x} is not valid for this operation")]
    BadOffset(u64),
    /// An SGX2 leaf answered with an error code.
    #[error("{0} failed: {1}")]
    Sgx2(&'static str, SgxError),
}

/// [`image_header`]'s complaint when the image has no page at offset 0.
pub const NO_HEADER_PAGE: &str = "no header page at offset 0";

/// The ABI header of a vsgx WebAssembly enclave image (the page at offset 0).
pub fn image_header(sgxs: &[u8]) -> Result<Header, GuestError> {
    let plan = LoadPlan::from_sgxs(sgxs).map_err(GuestError::Image)?;
    let page = plan
        .pages
        .iter()
        .find(|p| p.offset == 0)
        .ok_or(GuestError::Header(wasm_abi::HeaderError::Layout(NO_HEADER_PAGE)))?;
    Header::decode(&page.content).map_err(GuestError::Header)
}

//! The imports a vsgx WebAssembly enclave may use (module [`vsgx_isa::wasm_abi::IMPORT_MODULE`])
//! and their signatures. See `docs/enclave-abi.md`.
//!
//! Addresses typed `i32` are offsets in the module's linear memory (= the heap, at
//! `BASEADDR + heap_offset` in ELRANGE); addresses typed `i64` are linear addresses outside the
//! enclave. ENCLU operands keep the architectural alignment rules (the heap is page aligned, so
//! wasm alignment equals linear alignment).

/// A WebAssembly value type in an import signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    /// i32.
    I32,
    /// i64.
    I64,
}

/// One import: name, parameter types, result types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Import {
    /// Field name in module `vsgx`.
    pub name: &'static str,
    /// Parameters.
    pub params: &'static [Ty],
    /// Results.
    pub results: &'static [Ty],
}

use Ty::{I32, I64};

/// EEXIT with a result in RDI; never returns.
pub const EEXIT: Import = Import { name: "eexit", params: &[I64], results: &[] };
/// Copy `len` bytes from outside linear address `src` into linear memory at `dst`.
pub const COPY_IN: Import = Import { name: "copy_in", params: &[I32, I64, I32], results: &[] };
/// Copy `len` bytes from linear memory at `src` to outside linear address `dst`.
pub const COPY_OUT: Import = Import { name: "copy_out", params: &[I64, I32, I32], results: &[] };
/// EGETKEY(KEYREQUEST at `req`, 16-byte key to `out`) → RAX.
pub const EGETKEY: Import = Import { name: "egetkey", params: &[I32, I32], results: &[I64] };
/// EREPORT(TARGETINFO, REPORTDATA, REPORT output).
pub const EREPORT: Import = Import { name: "ereport", params: &[I32, I32, I32], results: &[] };
/// EACCEPT(SECINFO, page) → RAX.
pub const EACCEPT: Import = Import { name: "eaccept", params: &[I32, I32], results: &[I64] };
/// EMODPE(SECINFO, page).
pub const EMODPE: Import = Import { name: "emodpe", params: &[I32, I32], results: &[] };
/// EACCEPTCOPY(SECINFO, destination page, source page) → RAX.
pub const EACCEPTCOPY: Import = Import { name: "eacceptcopy", params: &[I32, I32, I32], results: &[I64] };

/// Every import an enclave module may declare.
pub const IMPORTS: [Import; 8] = [EEXIT, COPY_IN, COPY_OUT, EGETKEY, EREPORT, EACCEPT, EMODPE, EACCEPTCOPY];

/// The memory-access hook the executor's instrumentation inserts before every linear-memory
/// access: `touch(address, static offset, length | write << 31)`. Modules must not import it.
pub const TOUCH: Import = Import { name: "__vsgx_touch", params: &[I32, I32, I32], results: &[] };

/// Module and field of the linear memory every enclave imports.
pub const MEMORY: (&str, &str) = ("env", "memory");

/// Signature of an ECALL export: `(in_la, in_len, out_la, out_cap) -> result`.
pub const ECALL_PARAMS: [Ty; 4] = [I64, I64, I64, I64];
/// ECALL result type.
pub const ECALL_RESULTS: [Ty; 1] = [I64];

/// Exports whose name starts with this are ECALLs (the prefix is not part of the ECALL name).
pub const ECALL_PREFIX: &str = "ecall_";

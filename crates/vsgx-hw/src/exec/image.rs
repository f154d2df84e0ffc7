//! The enclave image builder: turns a WebAssembly module into a measured SGXS image laid out as
//! [`vsgx_isa::wasm_abi`] documents (`docs/enclave-abi.md`).
//!
//! [`build_image`] checks the module against the enclave ABI ([`super::abi`]), folds its active
//! data segments into the initial heap and writes the pages in ELRANGE order:
//!
//! | offset | pages | SECINFO | content |
//! |---|---|---|---|
//! | 0 | 1 | PT_REG R | [`Header`] |
//! | 0x1000 + i·(1 + NSSA·SSAFRAMESIZE)·4096 | 1 | PT_TCS | TCS *i* (OSSA = the next page, OENTRY = 0) |
//! | after each TCS | NSSA·SSAFRAMESIZE | PT_REG R+W | its SSA frames (zero) |
//! | `code_offset` | ⌈len / 4096⌉ | PT_REG R+X | the module bytes, last page zero-padded |
//! | `heap_offset` | heap / 4096 | PT_REG R+W | the initial linear memory |
//!
//! SIZE is the next power of two ≥ the end of the heap (at least 8 KiB). Every chunk of every page
//! is measured (EEXTEND), zero pages included, so the image is reproducible byte for byte and a
//! loader cannot inject content. [`read_header`] decodes the header page of a load plan.

use vsgx_isa::sgxs::{ChunkMeasurement, LoadPlan, SgxsError, SgxsWriter, measure};
use vsgx_isa::signing::SigstructBody;
use vsgx_isa::types::{
    ArchStruct, AttributesFlags, PAGE_SIZE, PageType, SecinfoFlags, Tcs, min_ssa_frame_pages, secinfo_flags,
};
use vsgx_isa::wasm_abi::{ECALL_NAME_SLOT, Header, HeaderError, MAX_ECALLS, WASM_PAGE};
use wasmparser::{
    CompositeInnerType, DataKind, ExternalKind, FuncType, FuncValidatorAllocations, Operator, Parser, Payload, TypeRef,
    ValType, ValidPayload, Validator, WasmFeatures,
};

use wasmparser::types::TypesRef;

use super::abi::{self, Ty};

/// Default heap size: 1 MiB.
pub const DEFAULT_HEAP_BYTES: u64 = 1 << 20;
/// Largest heap: the whole 32-bit linear memory (4 GiB).
pub const MAX_HEAP_BYTES: u64 = 1 << 32;
/// Smallest enclave SIZE the builder produces.
pub const MIN_SIZE: u64 = 8192;
/// XFRM the image is built for (x87 | SSE, as [`SigstructBody::default`] requests).
pub const XFRM: u64 = 0x3;
/// MISCSELECT the image is built for.
pub const MISCSELECT: u32 = 0;
/// SSA frame size in pages for [`XFRM`] and [`MISCSELECT`].
pub const SSA_FRAME_PAGES: u32 = min_ssa_frame_pages(XFRM, MISCSELECT);

/// SECINFO.FLAGS of the header page: PT_REG, R.
pub const HEADER_FLAGS: u64 = secinfo_flags(PageType::Reg, SecinfoFlags::R);
/// SECINFO.FLAGS of a TCS page: PT_TCS, no permissions.
pub const TCS_FLAGS: u64 = secinfo_flags(PageType::Tcs, SecinfoFlags::empty());
/// SECINFO.FLAGS of an SSA page: PT_REG, R+W.
pub const SSA_FLAGS: u64 = secinfo_flags(PageType::Reg, SecinfoFlags::R.union(SecinfoFlags::W));
/// SECINFO.FLAGS of a code page: PT_REG, R+X.
pub const CODE_FLAGS: u64 = secinfo_flags(PageType::Reg, SecinfoFlags::R.union(SecinfoFlags::X));
/// SECINFO.FLAGS of a heap page: PT_REG, R+W.
pub const HEAP_FLAGS: u64 = secinfo_flags(PageType::Reg, SecinfoFlags::R.union(SecinfoFlags::W));

const PAGE: u64 = PAGE_SIZE as u64;

/// The WebAssembly features an enclave module may use. The same set as the executor's
/// instrumentation pass accepts (`instrument.rs`), so every image this builds can also run.
pub fn wasm_features() -> WasmFeatures {
    WasmFeatures::MUTABLE_GLOBAL
        | WasmFeatures::SATURATING_FLOAT_TO_INT
        | WasmFeatures::SIGN_EXTENSION
        | WasmFeatures::MULTI_VALUE
        | WasmFeatures::BULK_MEMORY
        | WasmFeatures::REFERENCE_TYPES
        | WasmFeatures::GC_TYPES
        | WasmFeatures::FLOATS
}

/// What to build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageParams {
    /// Heap (linear memory) size in bytes, rounded up to a multiple of 64 KiB.
    pub heap_bytes: u64,
    /// Number of TCS (threads), at least 1.
    pub tcs: u32,
    /// SSA frames per TCS (NSSA), at least 1.
    pub ssa_frames: u32,
    /// Sign as a debug enclave (ATTRIBUTES.DEBUG).
    pub debug: bool,
    /// ISVPRODID to sign with.
    pub isvprodid: u16,
    /// ISVSVN to sign with.
    pub isvsvn: u16,
}

impl Default for ImageParams {
    /// 1 MiB heap, one TCS with two SSA frames, production enclave, ISVPRODID = ISVSVN = 0.
    fn default() -> Self {
        Self { heap_bytes: DEFAULT_HEAP_BYTES, tcs: 1, ssa_frames: 2, debug: false, isvprodid: 0, isvsvn: 0 }
    }
}

/// A built enclave image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// The SGXS stream (every chunk measured).
    pub sgxs: Vec<u8>,
    /// The header page's content.
    pub header: Header,
    /// MRENCLAVE of [`Self::sgxs`].
    pub mrenclave: [u8; 32],
    /// SECS.SIZE.
    pub size: u64,
    /// SECS.SSAFRAMESIZE (pages).
    pub ssaframesize: u32,
    /// The SIGSTRUCT fields to sign with (DATE left 0 for the caller).
    pub body: SigstructBody,
}

/// Why a module cannot become an enclave image.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// The module is not valid WebAssembly.
    #[error("invalid WebAssembly module (byte offset {offset}): {message}")]
    Invalid {
        /// Byte offset where wasmparser found the problem.
        offset: usize,
        /// wasmparser's description.
        message: String,
    },
    /// The module is valid WebAssembly but uses a proposal enclaves do not support.
    #[error("module uses a WebAssembly feature vsgx enclaves do not support (byte offset {offset}): {message}")]
    Unsupported {
        /// Byte offset where wasmparser found the problem.
        offset: usize,
        /// wasmparser's description (names the feature).
        message: String,
    },
    /// An import outside the enclave ABI.
    #[error(
        "import {module}.{name} ({kind}) is not part of the vsgx enclave ABI: a module may import only the \
         functions vsgx.{{{allowed}}} and the memory env.memory"
    )]
    UnknownImport {
        /// Import module name.
        module: String,
        /// Import field name.
        name: String,
        /// Kind of the import ("function", "table", ...).
        kind: &'static str,
        /// The allowed function names, comma separated.
        allowed: String,
    },
    /// The executor's private memory hook is imported.
    #[error("import vsgx.{name} is reserved for the executor's instrumentation; modules must not import it")]
    ReservedImport {
        /// The import's name.
        name: String,
    },
    /// An ABI name imported as the wrong kind of entity.
    #[error("import {module}.{name} is a {found}, the enclave ABI defines it as a {expected}")]
    ImportKind {
        /// Import module name.
        module: String,
        /// Import field name.
        name: String,
        /// Kind found.
        found: &'static str,
        /// Kind the ABI defines.
        expected: &'static str,
    },
    /// An ABI function imported with the wrong signature.
    #[error("import vsgx.{name} has type {found}, the enclave ABI requires {expected}")]
    ImportSignature {
        /// The import's name.
        name: String,
        /// Signature found.
        found: String,
        /// Signature required.
        expected: String,
    },
    /// Not exactly one memory, imported as `env.memory`.
    #[error(
        "enclave modules have exactly one linear memory, imported as env.memory (this module imports {imported} \
         and defines {defined})"
    )]
    MemoryCount {
        /// Imported memories.
        imported: u32,
        /// Memories defined by the module.
        defined: u32,
    },
    /// The imported memory has a type enclaves do not support.
    #[error("env.memory is {0}; the enclave heap is a 32-bit unshared memory with 64 KiB pages")]
    MemoryType(&'static str),
    /// The declared maximum is below the heap size.
    #[error(
        "env.memory declares a maximum of {maximum} 64 KiB pages, below the {heap}-byte heap \
         (omit the maximum or make it at least the heap size)"
    )]
    MemoryMaximum {
        /// The declared maximum, in 64 KiB pages.
        maximum: u64,
        /// The heap size.
        heap: u64,
    },
    /// The module needs more initial memory than the heap has.
    #[error(
        "env.memory needs {pages} initial 64 KiB pages ({needed} bytes), more than the {heap}-byte heap \
         (raise the heap size)"
    )]
    MemoryTooSmall {
        /// The memory's minimum, in 64 KiB pages.
        pages: u64,
        /// The same in bytes.
        needed: u64,
        /// The heap size.
        heap: u64,
    },
    /// The module has a start function.
    #[error("the module has a start function (function {0}); enclave code runs only inside ECALLs")]
    StartFunction(u32),
    /// An `ecall_*` export that is not a function.
    #[error("export {export} is a {kind}; exports named ecall_<name> must be functions")]
    EcallKind {
        /// Export name.
        export: String,
        /// Kind of the export.
        kind: &'static str,
    },
    /// An ECALL with the wrong signature.
    #[error("export {export} has type {found}; an ECALL must have type (i64, i64, i64, i64) -> i64")]
    EcallSignature {
        /// Export name.
        export: String,
        /// Signature found.
        found: String,
    },
    /// An ECALL name that does not fit the header.
    #[error("export {export}: ECALL names (after ecall_) must be 1 to 31 bytes without NUL")]
    EcallName {
        /// Export name.
        export: String,
    },
    /// No ECALL exported.
    #[error("the module exports no ECALL (a function named ecall_<name> of type (i64, i64, i64, i64) -> i64)")]
    NoEcalls,
    /// More ECALLs than the header page holds.
    #[error("the module exports {0} ECALLs; at most {MAX_ECALLS} fit in the header page")]
    TooManyEcalls(usize),
    /// An active data segment whose offset is not an `i32.const`.
    #[error("data segment {index}: the offset is not a constant i32 expression ({reason})")]
    DataOffset {
        /// Index of the segment in the data section.
        index: u32,
        /// What was found instead.
        reason: String,
    },
    /// An active data segment that does not fit in the heap.
    #[error("data segment {index}: bytes {start:#x}..{end:#x} lie outside the {heap:#x}-byte heap")]
    DataOutOfBounds {
        /// Index of the segment in the data section.
        index: u32,
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
        /// Heap size.
        heap: u64,
    },
    /// A build parameter is out of range.
    #[error("{0}")]
    Params(String),
    /// The layout does not fit a 64-bit ELRANGE.
    #[error("the enclave layout does not fit in a 64-bit address space ({0})")]
    TooLarge(&'static str),
    /// The header cannot be encoded or decoded.
    #[error("enclave header: {0}")]
    Header(#[from] HeaderError),
    /// The SGXS writer refused a record (a layout bug: cannot happen for checked parameters).
    #[error("SGXS: {0}")]
    Sgxs(#[from] SgxsError),
    /// The load plan has no page at offset 0.
    #[error("the enclave image has no page at offset 0, where a vsgx WebAssembly enclave keeps its header")]
    NoHeaderPage,
    /// The header describes regions beyond SIZE.
    #[error("the header places the heap at {heap_offset:#x}..{end:#x}, beyond the enclave SIZE {size:#x}")]
    HeaderOutsideEnclave {
        /// Heap offset.
        heap_offset: u64,
        /// End of the heap.
        end: u64,
        /// SECS.SIZE.
        size: u64,
    },
}

impl From<wasmparser::BinaryReaderError> for ImageError {
    fn from(e: wasmparser::BinaryReaderError) -> Self {
        Self::Invalid { offset: e.offset(), message: e.message().to_string() }
    }
}

/// What the ABI checks learn about a module.
#[derive(Debug)]
struct Checked<'a> {
    /// ECALL names (without the prefix), sorted.
    ecalls: Vec<String>,
    /// Active data segments: heap offset and bytes, in section order.
    segments: Vec<(u64, &'a [u8])>,
}

fn ty_name(ty: Ty) -> &'static str {
    match ty {
        Ty::I32 => "i32",
        Ty::I64 => "i64",
    }
}

fn to_val(ty: Ty) -> ValType {
    match ty {
        Ty::I32 => ValType::I32,
        Ty::I64 => ValType::I64,
    }
}

fn signature(params: &[String], results: &[String]) -> String {
    let results = match results {
        [] => String::from("()"),
        [one] => one.clone(),
        many => format!("({})", many.join(", ")),
    };
    format!("({}) -> {results}", params.join(", "))
}

fn func_signature(f: &FuncType) -> String {
    let names = |tys: &[ValType]| tys.iter().map(ToString::to_string).collect::<Vec<_>>();
    signature(&names(f.params()), &names(f.results()))
}

fn abi_signature(params: &[Ty], results: &[Ty]) -> String {
    let names = |tys: &[Ty]| tys.iter().map(|&t| String::from(ty_name(t))).collect::<Vec<_>>();
    signature(&names(params), &names(results))
}

fn matches_abi(f: &FuncType, params: &[Ty], results: &[Ty]) -> bool {
    f.params().iter().copied().eq(params.iter().map(|&t| to_val(t)))
        && f.results().iter().copied().eq(results.iter().map(|&t| to_val(t)))
}

fn type_ref_kind(ty: &TypeRef) -> &'static str {
    match ty {
        TypeRef::Func(_) => "function",
        TypeRef::Table(_) => "table",
        TypeRef::Memory(_) => "memory",
        TypeRef::Global(_) => "global",
        TypeRef::Tag(_) => "tag",
    }
}

fn export_kind(kind: ExternalKind) -> &'static str {
    match kind {
        ExternalKind::Func => "function",
        ExternalKind::Table => "table",
        ExternalKind::Memory => "memory",
        ExternalKind::Global => "global",
        ExternalKind::Tag => "tag",
    }
}

/// The function type with type index `index` (validated module).
fn func_type_at<'t>(types: &'t TypesRef<'_>, index: u32) -> Option<&'t FuncType> {
    if index >= types.core_type_count_in_module() {
        return None;
    }
    match &types[types.core_type_at_in_module(index)].composite_type.inner {
        CompositeInnerType::Func(f) => Some(f),
        _ => None,
    }
}

/// The type of function `index` (validated module).
fn func_type_of<'t>(types: &'t TypesRef<'_>, index: u32) -> Option<&'t FuncType> {
    if index >= types.function_count() {
        return None;
    }
    match &types[types.core_function_at(index)].composite_type.inner {
        CompositeInnerType::Func(f) => Some(f),
        _ => None,
    }
}

/// Evaluates a data segment offset: exactly `i32.const N`.
fn const_offset(expr: &wasmparser::ConstExpr<'_>) -> Result<u32, String> {
    let mut reader = expr.get_operators_reader();
    let first = reader.read().map_err(|e| e.message().to_string())?;
    let value = match first {
        Operator::I32Const { value } => value,
        Operator::GlobalGet { global_index } => return Err(format!("global.get {global_index}")),
        other => return Err(format!("{other:?}")),
    };
    match reader.read().map_err(|e| e.message().to_string())? {
        Operator::End if reader.eof() => Ok(value as u32),
        other => Err(format!("i32.const followed by {other:?}")),
    }
}

/// Validates `module` and checks it against the enclave ABI for a heap of `heap_len` bytes.
fn check_module(module: &[u8], heap_len: u64) -> Result<Checked<'_>, ImageError> {
    let mut validator = Validator::new_with_features(wasm_features());
    let mut allocations = FuncValidatorAllocations::default();
    let mut imports = Vec::new();
    let mut exports = Vec::new();
    let mut data = Vec::new();
    let mut defined_memories = 0u32;
    let mut start = None;
    let mut types = None;
    let validated = (|| -> Result<(), wasmparser::BinaryReaderError> {
        for payload in Parser::new(0).parse_all(module) {
            let payload = payload?;
            match validator.payload(&payload)? {
                ValidPayload::Func(func, body) => {
                    let mut v = func.into_validator(std::mem::take(&mut allocations));
                    v.validate(&body)?;
                    allocations = v.into_allocations();
                }
                ValidPayload::End(t) => types = Some(t),
                ValidPayload::Ok | ValidPayload::Parser(_) => {}
            }
            match payload {
                Payload::ImportSection(reader) => {
                    for import in reader {
                        imports.push(import?);
                    }
                }
                Payload::MemorySection(reader) => defined_memories = defined_memories.saturating_add(reader.count()),
                Payload::StartSection { func, .. } => start = Some(func),
                Payload::ExportSection(reader) => {
                    for export in reader {
                        exports.push(export?);
                    }
                }
                Payload::DataSection(reader) => {
                    for segment in reader {
                        data.push(segment?);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    })();
    if let Err(e) = validated {
        // Tell "uses an unsupported proposal" apart from "not WebAssembly at all".
        let (offset, message) = (e.offset(), e.message().to_string());
        return Err(if Validator::new_with_features(WasmFeatures::all()).validate_all(module).is_ok() {
            ImageError::Unsupported { offset, message }
        } else {
            ImageError::Invalid { offset, message }
        });
    }
    let types = types.ok_or_else(|| ImageError::Invalid {
        offset: module.len(),
        message: String::from("unexpected end of module"),
    })?;
    let types = types.as_ref();

    // Imports: the ABI functions with their exact signatures, and env.memory.
    let mut memories = Vec::new();
    for import in &imports {
        let abi_func = (import.module == vsgx_isa::wasm_abi::IMPORT_MODULE)
            .then(|| abi::IMPORTS.iter().find(|i| i.name == import.name))
            .flatten();
        let is_memory = (import.module, import.name) == abi::MEMORY;
        match (import.ty, abi_func) {
            (TypeRef::Func(index), Some(expected)) => {
                let found = func_type_at(&types, index);
                if !found.is_some_and(|f| matches_abi(f, expected.params, expected.results)) {
                    return Err(ImageError::ImportSignature {
                        name: import.name.to_string(),
                        found: found.map_or_else(|| String::from("(not a function type)"), func_signature),
                        expected: abi_signature(expected.params, expected.results),
                    });
                }
            }
            (TypeRef::Memory(ty), _) if is_memory => memories.push(ty),
            (ty, Some(_)) => {
                return Err(ImageError::ImportKind {
                    module: import.module.to_string(),
                    name: import.name.to_string(),
                    found: type_ref_kind(&ty),
                    expected: "function",
                });
            }
            (ty, None) if is_memory => {
                return Err(ImageError::ImportKind {
                    module: import.module.to_string(),
                    name: import.name.to_string(),
                    found: type_ref_kind(&ty),
                    expected: "memory",
                });
            }
            (_, None) if import.module == vsgx_isa::wasm_abi::IMPORT_MODULE && import.name == abi::TOUCH.name => {
                return Err(ImageError::ReservedImport { name: import.name.to_string() });
            }
            (ty, None) => {
                return Err(ImageError::UnknownImport {
                    module: import.module.to_string(),
                    name: import.name.to_string(),
                    kind: type_ref_kind(&ty),
                    allowed: abi::IMPORTS.iter().map(|i| i.name).collect::<Vec<_>>().join(", "),
                });
            }
        }
    }
    let imported =
        u32::try_from(imports.iter().filter(|i| matches!(i.ty, TypeRef::Memory(_))).count()).unwrap_or(u32::MAX);
    let memory = match memories.as_slice() {
        [memory] if imported == 1 && defined_memories == 0 => *memory,
        _ => return Err(ImageError::MemoryCount { imported, defined: defined_memories }),
    };
    if memory.memory64 {
        return Err(ImageError::MemoryType("a 64-bit memory"));
    }
    if memory.shared {
        return Err(ImageError::MemoryType("a shared memory"));
    }
    if memory.page_size_log2.is_some() {
        return Err(ImageError::MemoryType("declared with a custom page size"));
    }
    let needed = memory.initial.saturating_mul(WASM_PAGE);
    if needed > heap_len {
        return Err(ImageError::MemoryTooSmall { pages: memory.initial, needed, heap: heap_len });
    }
    // The heap is instantiated at its full size: a smaller declared maximum could never link.
    if let Some(maximum) = memory.maximum.filter(|&max| max.saturating_mul(WASM_PAGE) < heap_len) {
        return Err(ImageError::MemoryMaximum { maximum, heap: heap_len });
    }

    if let Some(func) = start {
        return Err(ImageError::StartFunction(func));
    }

    // ECALLs: exported functions named ecall_<name> with the ECALL signature.
    let mut ecalls = Vec::new();
    for export in &exports {
        let Some(name) = export.name.strip_prefix(abi::ECALL_PREFIX) else {
            continue;
        };
        if export.kind != ExternalKind::Func {
            return Err(ImageError::EcallKind { export: export.name.to_string(), kind: export_kind(export.kind) });
        }
        let found = func_type_of(&types, export.index);
        if !found.is_some_and(|f| matches_abi(f, &abi::ECALL_PARAMS, &abi::ECALL_RESULTS)) {
            return Err(ImageError::EcallSignature {
                export: export.name.to_string(),
                found: found.map_or_else(|| String::from("(unknown)"), func_signature),
            });
        }
        if name.is_empty() || name.len() >= ECALL_NAME_SLOT || name.as_bytes().contains(&0) {
            return Err(ImageError::EcallName { export: export.name.to_string() });
        }
        ecalls.push(String::from(name));
    }
    if ecalls.is_empty() {
        return Err(ImageError::NoEcalls);
    }
    if ecalls.len() > MAX_ECALLS {
        return Err(ImageError::TooManyEcalls(ecalls.len()));
    }
    ecalls.sort_unstable();

    // Active data segments: constant offsets, inside the heap.
    let mut segments = Vec::new();
    for (index, segment) in (0u32..).zip(&data) {
        let DataKind::Active { offset_expr, .. } = &segment.kind else {
            continue;
        };
        let start = u64::from(const_offset(offset_expr).map_err(|reason| ImageError::DataOffset { index, reason })?);
        let end = start.saturating_add(segment.data.len() as u64);
        if end > heap_len {
            return Err(ImageError::DataOutOfBounds { index, start, end, heap: heap_len });
        }
        segments.push((start, segment.data));
    }
    Ok(Checked { ecalls, segments })
}

/// Offsets of the regions inside ELRANGE.
struct Layout {
    /// Pages per TCS: the TCS and its SSA frames.
    tcs_stride: u64,
    code_offset: u64,
    heap_offset: u64,
    size: u64,
}

fn layout(params: &ImageParams, code_len: u64, heap_len: u64) -> Result<Layout, ImageError> {
    let too_large = ImageError::TooLarge;
    let ssa_pages = u64::from(params.ssa_frames) * u64::from(SSA_FRAME_PAGES);
    let tcs_stride = (1 + ssa_pages).checked_mul(PAGE).ok_or(too_large("TCS and SSA frames"))?;
    let code_offset = tcs_stride
        .checked_mul(u64::from(params.tcs))
        .and_then(|tcs| tcs.checked_add(PAGE))
        .ok_or(too_large("TCS and SSA frames"))?;
    let heap_offset = code_offset.checked_add(code_len.div_ceil(PAGE) * PAGE).ok_or(too_large("code region"))?;
    let end = heap_offset.checked_add(heap_len).ok_or(too_large("heap"))?;
    let size = end.checked_next_power_of_two().ok_or(too_large("SIZE"))?.max(MIN_SIZE);
    Ok(Layout { tcs_stride, code_offset, heap_offset, size })
}

/// Builds the enclave image of `module`.
///
/// Never panics, whatever the input; every rejection names what is wrong.
pub fn build_image(module: &[u8], params: &ImageParams) -> Result<Image, ImageError> {
    if params.tcs == 0 {
        return Err(ImageError::Params(String::from("an enclave needs at least one TCS")));
    }
    if params.ssa_frames == 0 {
        return Err(ImageError::Params(String::from("a TCS needs at least one SSA frame (NSSA ≥ 1)")));
    }
    let heap_len = params.heap_bytes.checked_next_multiple_of(WASM_PAGE).unwrap_or(u64::MAX);
    if heap_len == 0 || heap_len > MAX_HEAP_BYTES {
        return Err(ImageError::Params(format!(
            "heap size {} bytes: the heap must hold 1 to 65536 WebAssembly pages of 64 KiB (at most 4 GiB)",
            params.heap_bytes
        )));
    }
    let heap_bytes = usize::try_from(heap_len).map_err(|_| ImageError::TooLarge("heap"))?;
    let checked = check_module(module, heap_len)?;

    let code_len = module.len() as u64;
    let l = layout(params, code_len, heap_len)?;
    let header =
        Header { code_offset: l.code_offset, code_len, heap_offset: l.heap_offset, heap_len, ecalls: checked.ecalls };
    let header_page = header.encode()?;

    let mut heap = vec![0u8; heap_bytes];
    for &(start, bytes) in &checked.segments {
        // check_module bounded start + len by heap_len, which fits in usize.
        let start = start as usize;
        if let Some(dst) = heap.get_mut(start..start + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
    }

    let mut w = SgxsWriter::new(SSA_FRAME_PAGES, l.size)?;
    w.add_page(0, HEADER_FLAGS, &header_page, ChunkMeasurement::All)?;
    let zero = [0u8; PAGE_SIZE];
    for i in 0..u64::from(params.tcs) {
        let offset = PAGE + i * l.tcs_stride;
        let mut tcs = Tcs::zeroed();
        tcs.ossa = offset + PAGE;
        tcs.nssa = params.ssa_frames;
        tcs.fslimit = 0xFFF;
        tcs.gslimit = 0xFFF;
        let mut page = [0u8; PAGE_SIZE];
        page.copy_from_slice(tcs.bytes());
        w.add_page(offset, TCS_FLAGS, &page, ChunkMeasurement::All)?;
        let mut ssa = offset + PAGE;
        while ssa < offset + l.tcs_stride {
            w.add_page(ssa, SSA_FLAGS, &zero, ChunkMeasurement::All)?;
            ssa += PAGE;
        }
    }
    for (offset, chunk) in (l.code_offset..).step_by(PAGE_SIZE).zip(module.chunks(PAGE_SIZE)) {
        let mut page = [0u8; PAGE_SIZE];
        page[..chunk.len()].copy_from_slice(chunk);
        w.add_page(offset, CODE_FLAGS, &page, ChunkMeasurement::All)?;
    }
    for (offset, chunk) in (l.heap_offset..).step_by(PAGE_SIZE).zip(heap.chunks_exact(PAGE_SIZE)) {
        let mut page = [0u8; PAGE_SIZE];
        page.copy_from_slice(chunk);
        w.add_page(offset, HEAP_FLAGS, &page, ChunkMeasurement::All)?;
    }
    let sgxs = w.finish();
    let mrenclave = measure(&sgxs)?.mrenclave;

    let mut body = SigstructBody::default();
    if params.debug {
        body.attributes.flags |= AttributesFlags::DEBUG.bits();
    }
    body.isvprodid = params.isvprodid;
    body.isvsvn = params.isvsvn;
    Ok(Image { sgxs, header, mrenclave, size: l.size, ssaframesize: SSA_FRAME_PAGES, body })
}

/// Decodes the header page (the page at offset 0) of a vsgx WebAssembly enclave and checks that
/// the regions it describes lie inside the enclave.
pub fn read_header(plan: &LoadPlan) -> Result<Header, ImageError> {
    let page = plan.pages.iter().find(|p| p.offset == 0).ok_or(ImageError::NoHeaderPage)?;
    let header = Header::decode(&page.content)?;
    // Header::decode rejects overflowing regions and a code region past the heap.
    let end = header.heap_offset.saturating_add(header.heap_len);
    if end > plan.size {
        return Err(ImageError::HeaderOutsideEnclave { heap_offset: header.heap_offset, end, size: plan.size });
    }
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vsgx_isa::sgxs::PlannedChunk;
    use vsgx_isa::wasm_abi::status;

    const HELLO: &str = include_str!("../../../../examples/enclaves/hello.wat");
    const COUNTER: &str = include_str!("../../../../examples/enclaves/counter.wat");
    const SEALER: &str = include_str!("../../../../examples/enclaves/sealer.wat");
    const ATTEST: &str = include_str!("../../../../examples/enclaves/attest.wat");

    const ECALL: &str = "(param i64 i64 i64 i64) (result i64) i64.const 0";

    const SMALL: &str = r#"(module
        (import "vsgx" "copy_out" (func (param i64 i32 i32)))
        (import "env" "memory" (memory 1))
        (func (export "ecall_b") (param i64 i64 i64 i64) (result i64) i64.const 0)
        (func (export "ecall_a") (param i64 i64 i64 i64) (result i64) i64.const 1)
        (func (export "helper") (result i32) i32.const 7)
        (data (i32.const 16) "xyz"))"#;

    fn wasm(src: &str) -> Vec<u8> {
        wat::parse_str(src).unwrap()
    }

    fn build(src: &str) -> Result<Image, ImageError> {
        build_image(&wasm(src), &ImageParams::default())
    }

    /// A module with the given extra imports/fields around one ECALL and the heap import.
    fn with(fields: &str) -> String {
        format!(r#"(module (import "env" "memory" (memory 1)) {fields} (func (export "ecall_x") {ECALL}))"#)
    }

    #[test]
    fn small_module_builds() {
        let module = wasm(SMALL);
        let image = build_image(&module, &ImageParams::default()).unwrap();
        assert_eq!(image.header.ecalls, ["a", "b"], "ECALLs sorted by name");
        assert_eq!(image.header.code_offset, 0x1000 + 3 * 0x1000, "one TCS with two SSA frames");
        assert_eq!(image.header.code_len, module.len() as u64);
        assert_eq!(image.header.heap_offset, image.header.code_offset + 0x1000);
        assert_eq!(image.header.heap_len, DEFAULT_HEAP_BYTES);
        assert_eq!(image.size, (image.header.heap_offset + DEFAULT_HEAP_BYTES).next_power_of_two());
        assert_eq!(image.ssaframesize, 1);
        assert_eq!(image.body, SigstructBody::default());
    }

    #[test]
    fn build_is_reproducible_and_measured() {
        let module = wasm(SMALL);
        let a = build_image(&module, &ImageParams::default()).unwrap();
        let b = build_image(&module, &ImageParams::default()).unwrap();
        assert_eq!(a.sgxs, b.sgxs);
        assert_eq!(a, b);
        let summary = measure(&a.sgxs).unwrap();
        assert_eq!(summary.mrenclave, a.mrenclave);
        assert_eq!((summary.size, summary.ssaframesize), (a.size, a.ssaframesize));
        assert_eq!(summary.unmeasured_chunks, 0);
        assert_eq!(summary.measured_chunks, summary.pages * 16, "every chunk of every page is measured");
        assert_eq!(LoadPlan::from_sgxs(&a.sgxs).unwrap().mrenclave(), a.mrenclave);
    }

    #[test]
    fn load_plan_follows_the_documented_layout() {
        let module = wasm(SMALL);
        let params = ImageParams { heap_bytes: 100_000, tcs: 2, ssa_frames: 3, ..ImageParams::default() };
        let image = build_image(&module, &params).unwrap();
        assert_eq!(image.header.heap_len, 0x20000, "heap rounded up to 64 KiB");
        let plan = LoadPlan::from_sgxs(&image.sgxs).unwrap();
        let mut expected = vec![(0, HEADER_FLAGS)];
        for tcs in [0x1000, 0x5000] {
            expected.push((tcs, TCS_FLAGS));
            for frame in 1..=3 {
                expected.push((tcs + frame * 0x1000, SSA_FLAGS));
            }
        }
        assert_eq!(image.header.code_offset, 0x9000);
        let code_pages = module.len().div_ceil(4096) as u64;
        for page in 0..code_pages {
            expected.push((0x9000 + page * 0x1000, CODE_FLAGS));
        }
        assert_eq!(image.header.heap_offset, 0x9000 + code_pages * 0x1000);
        for page in 0..0x20 {
            expected.push((image.header.heap_offset + page * 0x1000, HEAP_FLAGS));
        }
        let found: Vec<_> = plan.pages.iter().map(|p| (p.offset, p.secinfo_flags)).collect();
        assert_eq!(found, expected);
        assert_eq!(plan.size, (image.header.heap_offset + 0x20000).next_power_of_two());
        assert_eq!(plan.ssaframesize, 1);
        let all: Vec<_> = (0..16)
            .map(|i| PlannedChunk { chunk: vsgx_isa::sgxs::ChunkIndex::new(i).unwrap(), measured: true })
            .collect();
        for page in &plan.pages {
            assert_eq!(page.chunks, all, "page {:#x} fully measured in order", page.offset);
        }
        for (page, tcs_offset) in [(&plan.pages[1], 0x1000u64), (&plan.pages[5], 0x5000)] {
            let tcs = Tcs::from_bytes(&page.content[..]).unwrap();
            assert_eq!(tcs.ossa, tcs_offset + 0x1000);
            assert_eq!((tcs.nssa, tcs.cssa, tcs.state, tcs.flags), (3, 0, 0, 0));
            assert_eq!((tcs.oentry, tcs.aep, tcs.ofsbasgx, tcs.ogsbasgx), (0, 0, 0, 0));
            assert_eq!((tcs.fslimit, tcs.gslimit), (0xFFF, 0xFFF));
            assert!(tcs.reserved.iter().all(|&b| b == 0));
        }
        // The code pages hold the module, zero-padded.
        let code: Vec<u8> = plan.pages[9..9 + code_pages as usize].iter().flat_map(|p| p.content.to_vec()).collect();
        assert_eq!(&code[..module.len()], &module[..]);
        assert!(code[module.len()..].iter().all(|&b| b == 0));
    }

    #[test]
    fn header_round_trips_through_read_header() {
        let image = build(SMALL).unwrap();
        let plan = LoadPlan::from_sgxs(&image.sgxs).unwrap();
        assert_eq!(read_header(&plan).unwrap(), image.header);
        assert_eq!(plan.pages[0].content[..], image.header.encode().unwrap()[..]);

        let mut no_header = plan.clone();
        no_header.pages.remove(0);
        assert_eq!(read_header(&no_header), Err(ImageError::NoHeaderPage));
        let mut bad_magic = plan.clone();
        bad_magic.pages[0].content[0] ^= 1;
        assert_eq!(read_header(&bad_magic), Err(ImageError::Header(HeaderError::Magic)));
        let mut small = plan;
        small.size = image.header.heap_offset;
        assert!(matches!(read_header(&small), Err(ImageError::HeaderOutsideEnclave { .. })));
    }

    #[test]
    fn data_segments_are_folded_into_the_heap() {
        let src = r#"(module
            (import "env" "memory" (memory 1))
            (func (export "ecall_x") (param i64 i64 i64 i64) (result i64) i64.const 0)
            (data (i32.const 16) "xyz")
            (data (i32.const 0x1FFE) "abcd")
            (data "passive, not applied")
            (data (i32.const 17) "Q"))"#;
        let image = build(src).unwrap();
        let plan = LoadPlan::from_sgxs(&image.sgxs).unwrap();
        let heap = |offset: u64| plan.pages.iter().find(|p| p.offset == image.header.heap_offset + offset).unwrap();
        assert_eq!(&heap(0).content[16..19], b"xQz", "later segments overwrite earlier ones");
        assert_eq!(&heap(0x1000).content[0xFFE..], b"ab", "a segment may straddle pages");
        assert_eq!(&heap(0x2000).content[..2], b"cd");
        let nonzero: usize = plan
            .pages
            .iter()
            .filter(|p| p.offset >= image.header.heap_offset)
            .map(|p| p.content.iter().filter(|&&b| b != 0).count())
            .sum();
        assert_eq!(nonzero, 3 + 4, "nothing else in the heap (passive segments are not applied)");

        // The last byte of the heap is in bounds, one more is not.
        let at = |offset: u32, bytes: &str| with(&format!(r#"(data (i32.const {offset}) "{bytes}")"#));
        let params = ImageParams { heap_bytes: 0x10000, ..ImageParams::default() };
        assert!(build_image(&wasm(&at(0xFFFE, "ab")), &params).is_ok());
        assert_eq!(
            build_image(&wasm(&at(0xFFFF, "ab")), &params),
            Err(ImageError::DataOutOfBounds { index: 0, start: 0xFFFF, end: 0x10001, heap: 0x10000 })
        );
        assert_eq!(
            build_image(&wasm(&at(u32::MAX, "ab")), &params),
            Err(ImageError::DataOutOfBounds { index: 0, start: 0xFFFF_FFFF, end: 0x1_0000_0001, heap: 0x10000 })
        );
    }

    #[test]
    fn one_byte_of_the_module_changes_mrenclave() {
        let module = wasm(SMALL);
        let base = build_image(&module, &ImageParams::default()).unwrap();
        let at = module.windows(3).position(|w| w == b"xyz").unwrap();
        let mut changed = module.clone();
        changed[at + 2] = b'w';
        let other = build_image(&changed, &ImageParams::default()).unwrap();
        assert_ne!(other.mrenclave, base.mrenclave);
        assert_eq!(other.header, base.header);
        // Parameters are measured too.
        for params in [
            ImageParams { heap_bytes: 2 << 20, ..ImageParams::default() },
            ImageParams { tcs: 2, ..ImageParams::default() },
            ImageParams { ssa_frames: 1, ..ImageParams::default() },
        ] {
            assert_ne!(build_image(&module, &params).unwrap().mrenclave, base.mrenclave, "{params:?}");
        }
        // ... but not the SIGSTRUCT fields.
        let debug = ImageParams { debug: true, isvprodid: 7, isvsvn: 3, ..ImageParams::default() };
        let image = build_image(&module, &debug).unwrap();
        assert_eq!(image.mrenclave, base.mrenclave);
        assert_eq!(image.body.attributes.flags, (AttributesFlags::MODE64BIT | AttributesFlags::DEBUG).bits());
        assert_eq!(image.body.attributemask.flags, u64::MAX);
        assert_eq!((image.body.isvprodid, image.body.isvsvn, image.body.date), (7, 3, 0));
    }

    #[test]
    fn rejects_invalid_and_unsupported_modules() {
        assert!(matches!(build_image(b"not wasm", &ImageParams::default()), Err(ImageError::Invalid { .. })));
        assert!(matches!(build_image(&[], &ImageParams::default()), Err(ImageError::Invalid { .. })));
        let truncated = wasm(SMALL);
        assert!(matches!(
            build_image(&truncated[..truncated.len() - 3], &ImageParams::default()),
            Err(ImageError::Invalid { .. })
        ));
        let simd = with("(func (result v128) v128.const i64x2 0 0)");
        assert!(matches!(build(&simd), Err(ImageError::Unsupported { .. })));
        let shared = r#"(module (import "env" "memory" (memory 1 1 shared))
            (func (export "ecall_x") (param i64 i64 i64 i64) (result i64) i64.const 0))"#;
        assert!(matches!(build(shared), Err(ImageError::Unsupported { .. })));
        let mem64 = r#"(module (import "env" "memory" (memory i64 1))
            (func (export "ecall_x") (param i64 i64 i64 i64) (result i64) i64.const 0))"#;
        assert!(matches!(build(mem64), Err(ImageError::Unsupported { .. })));
    }

    #[test]
    fn rejects_imports_outside_the_abi() {
        let e = build(&with(r#"(import "vsgx" "rdrand" (func (result i64)))"#)).unwrap_err();
        assert!(
            matches!(&e, ImageError::UnknownImport { module, name, kind: "function", .. } if module == "vsgx" && name == "rdrand")
        );
        assert!(e.to_string().contains("vsgx.rdrand"), "{e}");
        assert!(e.to_string().contains("eexit, copy_in, copy_out, egetkey"), "{e}");
        let e = build(&with(r#"(import "env" "table" (table 1 funcref))"#)).unwrap_err();
        assert!(matches!(&e, ImageError::UnknownImport { kind: "table", .. }), "{e}");
        let e = build(&with(r#"(import "wasi" "fd_write" (func))"#)).unwrap_err();
        assert!(matches!(&e, ImageError::UnknownImport { module, .. } if module == "wasi"), "{e}");

        let e = build(&with(r#"(import "vsgx" "copy_in" (func (param i32 i32 i32)))"#)).unwrap_err();
        assert_eq!(
            e,
            ImageError::ImportSignature {
                name: String::from("copy_in"),
                found: String::from("(i32, i32, i32) -> ()"),
                expected: String::from("(i32, i64, i32) -> ()"),
            }
        );
        let e = build(&with(r#"(import "vsgx" "egetkey" (func (param i32 i32)))"#)).unwrap_err();
        assert!(matches!(&e, ImageError::ImportSignature { expected, .. } if expected == "(i32, i32) -> i64"), "{e}");

        let e = build(&with(r#"(import "vsgx" "__vsgx_touch" (func (param i32 i32 i32)))"#)).unwrap_err();
        assert_eq!(e, ImageError::ReservedImport { name: String::from("__vsgx_touch") });
        let e = build(&with(r#"(import "vsgx" "eexit" (global i64))"#)).unwrap_err();
        assert!(matches!(e, ImageError::ImportKind { found: "global", expected: "function", .. }), "{e}");

        // Every ABI import with its exact signature is accepted.
        let all: String = abi::IMPORTS
            .iter()
            .map(|i| {
                let params: Vec<_> = i.params.iter().map(|&t| ty_name(t)).collect();
                let results: Vec<_> = i.results.iter().map(|&t| ty_name(t)).collect();
                format!(
                    r#"(import "vsgx" "{}" (func (param {}) (result {})))"#,
                    i.name,
                    params.join(" "),
                    results.join(" ")
                )
            })
            .collect();
        build(&with(&all)).unwrap();
    }

    #[test]
    fn rejects_bad_memories() {
        let ecall = format!(r#"(func (export "ecall_x") {ECALL})"#);
        let e = build(&format!("(module (memory 1) {ecall})")).unwrap_err();
        assert_eq!(e, ImageError::MemoryCount { imported: 0, defined: 1 });
        let e = build(&format!("(module {ecall})")).unwrap_err();
        assert_eq!(e, ImageError::MemoryCount { imported: 0, defined: 0 });
        let e = build(&format!(r#"(module (import "env" "heap" (memory 1)) {ecall})"#)).unwrap_err();
        assert!(matches!(&e, ImageError::UnknownImport { kind: "memory", name, .. } if name == "heap"), "{e}");
        let e = build(&format!(r#"(module (import "env" "memory" (func)) {ecall})"#)).unwrap_err();
        assert!(matches!(e, ImageError::ImportKind { found: "function", expected: "memory", .. }), "{e}");

        let big = format!(r#"(module (import "env" "memory" (memory 17)) {ecall})"#);
        let e = build(&big).unwrap_err();
        assert_eq!(e, ImageError::MemoryTooSmall { pages: 17, needed: 17 << 16, heap: 1 << 20 });
        let params = ImageParams { heap_bytes: 17 << 16, ..ImageParams::default() };
        build_image(&wasm(&big), &params).unwrap();
        // A declared maximum below the heap size could never be instantiated: refused.
        let e = build(&format!(r#"(module (import "env" "memory" (memory 1 2)) {ecall})"#)).unwrap_err();
        assert_eq!(e, ImageError::MemoryMaximum { maximum: 2, heap: 1 << 20 });
        build(&format!(r#"(module (import "env" "memory" (memory 1 16)) {ecall})"#)).unwrap();
    }

    #[test]
    fn rejects_bad_ecalls_and_start_functions() {
        let e = build(&with(r#"(import "vsgx" "eexit" (func (param i64))) (func $s) (start $s)"#)).unwrap_err();
        assert_eq!(e, ImageError::StartFunction(1));

        let e = build(&with(r#"(func (export "ecall_y") (param i64 i64 i64) (result i64) i64.const 0)"#)).unwrap_err();
        assert_eq!(
            e,
            ImageError::EcallSignature {
                export: String::from("ecall_y"),
                found: String::from("(i64, i64, i64) -> i64")
            }
        );
        assert!(e.to_string().contains("ecall_y"));
        let e = build(&with(r#"(func (export "ecall_y") (param i64 i64 i64 i64))"#)).unwrap_err();
        assert!(matches!(e, ImageError::EcallSignature { found, .. } if found == "(i64, i64, i64, i64) -> ()"));
        let e = build(&with(r#"(global (export "ecall_g") i64 (i64.const 0))"#)).unwrap_err();
        assert_eq!(e, ImageError::EcallKind { export: String::from("ecall_g"), kind: "global" });

        let named = |name: &str| {
            format!(r#"(module (import "env" "memory" (memory 1)) (func (export "ecall_{name}") {ECALL}))"#)
        };
        assert_eq!(build(&named(&"n".repeat(31))).unwrap().header.ecalls, ["n".repeat(31)]);
        let e = build(&named(&"n".repeat(32))).unwrap_err();
        assert_eq!(e, ImageError::EcallName { export: format!("ecall_{}", "n".repeat(32)) });
        assert!(matches!(build(&named("")), Err(ImageError::EcallName { .. })));
        assert!(matches!(build(&named("a\\00b")), Err(ImageError::EcallName { .. })));

        let none = r#"(module (import "env" "memory" (memory 1))
            (func (export "run") (param i64 i64 i64 i64) (result i64) i64.const 0))"#;
        assert_eq!(build(none).unwrap_err(), ImageError::NoEcalls);

        let many: String = (0..=MAX_ECALLS).map(|i| format!(r#"(func (export "ecall_{i:03}") {ECALL})"#)).collect();
        let src = format!(r#"(module (import "env" "memory" (memory 1)) {many})"#);
        assert_eq!(build(&src).unwrap_err(), ImageError::TooManyEcalls(MAX_ECALLS + 1));
        let src = src.replace(&format!(r#"(func (export "ecall_{MAX_ECALLS:03}") {ECALL})"#), "");
        assert_eq!(build(&src).unwrap().header.ecalls.len(), MAX_ECALLS);
    }

    #[test]
    fn rejects_bad_parameters() {
        let module = wasm(SMALL);
        for params in [
            ImageParams { tcs: 0, ..ImageParams::default() },
            ImageParams { ssa_frames: 0, ..ImageParams::default() },
            ImageParams { heap_bytes: 0, ..ImageParams::default() },
            ImageParams { heap_bytes: MAX_HEAP_BYTES + 1, ..ImageParams::default() },
            ImageParams { heap_bytes: u64::MAX, ..ImageParams::default() },
        ] {
            assert!(matches!(build_image(&module, &params), Err(ImageError::Params(_))), "{params:?}");
        }
        let huge = ImageParams { tcs: u32::MAX, ssa_frames: u32::MAX, ..ImageParams::default() };
        assert!(matches!(build_image(&module, &huge), Err(ImageError::TooLarge(_))));
        let params = ImageParams { heap_bytes: 1, ..ImageParams::default() };
        assert_eq!(build_image(&module, &params).unwrap().header.heap_len, WASM_PAGE);
    }

    #[test]
    fn examples_build() {
        for (src, ecalls) in [
            (HELLO, &["hello"][..]),
            (COUNTER, &["get", "increment"][..]),
            (SEALER, &["seal", "seal_signer", "unseal"][..]),
            (ATTEST, &["report", "verify_report"][..]),
        ] {
            assert!(src.starts_with(";; "), "one-line comment header");
            let image = build(src).unwrap();
            assert_eq!(image.header.ecalls, ecalls);
            assert!(!src.contains("__vsgx_touch"));
        }
    }

    /// Runs the examples on wasmi with a mock of the ABI imports (the real executor is tested with
    /// the examples elsewhere): this checks their logic, not the platform.
    mod examples {
        use sha2::{Digest, Sha256};
        use wasmi::{Caller, Engine, Linker, Memory, MemoryType, Module, Store};

        use super::*;

        /// Outside linear address of the mock's normal-memory buffer.
        const OUTSIDE: i64 = 0x7F00_0000_0000;

        #[derive(Clone, Debug, Default)]
        struct Identity {
            mrenclave: [u8; 32],
            mrsigner: [u8; 32],
            isvsvn: u16,
        }

        struct Host {
            memory: Option<Memory>,
            outside: Vec<u8>,
            id: Identity,
        }

        fn trap(msg: &str) -> wasmi::Error {
            wasmi::Error::new(String::from(msg))
        }

        fn range(addr: i64, len: i32, size: usize) -> Result<std::ops::Range<usize>, wasmi::Error> {
            let start = usize::try_from(addr).map_err(|_| trap("bad address"))?;
            let end = start.checked_add(usize::try_from(len).map_err(|_| trap("bad length"))?);
            end.filter(|&e| e <= size).map(|e| start..e).ok_or_else(|| trap("out of bounds"))
        }

        fn key_of(parts: &[&[u8]]) -> [u8; 16] {
            let mut h = Sha256::new();
            for p in parts {
                h.update(p);
            }
            let d = h.finalize();
            let mut k = [0u8; 16];
            k.copy_from_slice(&d[..16]);
            k
        }

        fn report_key(mrenclave: &[u8], keyid: &[u8]) -> [u8; 16] {
            key_of(&[b"report", mrenclave, keyid])
        }

        const KEYID: [u8; 32] = [0xA5; 32];

        fn instance(src: &str, id: Identity) -> (Store<Host>, wasmi::Instance) {
            let engine = Engine::default();
            let module = Module::new(&engine, wasm(src)).unwrap();
            let mut store = Store::new(&engine, Host { memory: None, outside: Vec::new(), id });
            let memory = Memory::new(&mut store, MemoryType::new(16, Some(16))).unwrap();
            store.data_mut().memory = Some(memory);
            let mut l = Linker::<Host>::new(&engine);
            l.define("env", "memory", memory).unwrap();
            l.func_wrap("vsgx", "copy_in", |mut c: Caller<'_, Host>, dst: i32, src: i64, len: i32| {
                let m = c.data().memory.ok_or_else(|| trap("no memory"))?;
                let (data, host) = m.data_and_store_mut(&mut c);
                let from = range(src - OUTSIDE, len, host.outside.len())?;
                let to = range(i64::from(dst), len, data.len())?;
                data[to].copy_from_slice(&host.outside[from]);
                Ok(())
            })
            .unwrap();
            l.func_wrap("vsgx", "copy_out", |mut c: Caller<'_, Host>, dst: i64, src: i32, len: i32| {
                let m = c.data().memory.ok_or_else(|| trap("no memory"))?;
                let (data, host) = m.data_and_store_mut(&mut c);
                let to = range(dst - OUTSIDE, len, host.outside.len())?;
                let from = range(i64::from(src), len, data.len())?;
                host.outside[to].copy_from_slice(&data[from]);
                Ok(())
            })
            .unwrap();
            l.func_wrap(
                "vsgx",
                "egetkey",
                |mut c: Caller<'_, Host>, req: i32, out: i32| -> Result<i64, wasmi::Error> {
                    if req % 512 != 0 || out % 16 != 0 {
                        return Err(trap("#GP: misaligned EGETKEY operand"));
                    }
                    let m = c.data().memory.ok_or_else(|| trap("no memory"))?;
                    let (data, host) = m.data_and_store_mut(&mut c);
                    let r = data[range(i64::from(req), 512, data.len())?].to_vec();
                    if r[6..8].iter().chain(&r[78..]).any(|&b| b != 0) || r[3] != 0 || r[2] & !3 != 0 {
                        return Err(trap("#GP: reserved KEYREQUEST bits"));
                    }
                    let keyname = u16::from_le_bytes([r[0], r[1]]);
                    let isvsvn = u16::from_le_bytes([r[4], r[5]]);
                    if r[8..24].iter().any(|&b| b != 0) {
                        return Ok(32); // the mock platform's CPUSVN is zero
                    }
                    let key = match keyname {
                        3 => report_key(&host.id.mrenclave, &r[40..72]),
                        4 => {
                            if isvsvn > host.id.isvsvn {
                                return Ok(64);
                            }
                            let mre: &[u8] = if r[2] & 1 != 0 { &host.id.mrenclave } else { &[0; 32] };
                            let mrs: &[u8] = if r[2] & 2 != 0 { &host.id.mrsigner } else { &[0; 32] };
                            key_of(&[b"seal", &r[..72], mre, mrs])
                        }
                        _ => return Ok(256),
                    };
                    let to = range(i64::from(out), 16, data.len())?;
                    data[to].copy_from_slice(&key);
                    Ok(0)
                },
            )
            .unwrap();
            l.func_wrap("vsgx", "ereport", |mut c: Caller<'_, Host>, ti: i32, rd: i32, out: i32| {
                if ti % 512 != 0 || rd % 128 != 0 || out % 512 != 0 {
                    return Err(trap("#GP: misaligned EREPORT operand"));
                }
                let m = c.data().memory.ok_or_else(|| trap("no memory"))?;
                let (data, host) = m.data_and_store_mut(&mut c);
                let t = data[range(i64::from(ti), 512, data.len())?].to_vec();
                if t[48..50].iter().chain(&t[56..64]).chain(&t[128..]).any(|&b| b != 0) {
                    return Err(trap("#GP: reserved TARGETINFO bytes"));
                }
                let mut report = vec![0u8; 432];
                report[64..96].copy_from_slice(&host.id.mrenclave);
                report[128..160].copy_from_slice(&host.id.mrsigner);
                report[258..260].copy_from_slice(&host.id.isvsvn.to_le_bytes());
                report[320..384].copy_from_slice(&data[range(i64::from(rd), 64, data.len())?]);
                report[384..416].copy_from_slice(&KEYID);
                let mac = key_of(&[&report_key(&t[..32], &KEYID), &report[..384]]);
                report[416..].copy_from_slice(&mac);
                let to = range(i64::from(out), 432, data.len())?;
                data[to].copy_from_slice(&report);
                Ok(())
            })
            .unwrap();
            let instance = l.instantiate_and_start(&mut store, &module).unwrap();
            (store, instance)
        }

        /// Runs `f` on a thread with a large stack: wasmi 2 built without the `portable-dispatch`
        /// (or `auto-dispatch`) feature dispatches instructions by tail calls, which are not
        /// eliminated in test builds, so a long-running loop needs a deep native stack.
        fn big_stack(f: fn()) {
            std::thread::Builder::new().stack_size(256 << 20).spawn(f).unwrap().join().unwrap();
        }

        /// Calls ECALL `name` with `input` and an output buffer of `cap` bytes.
        fn call(
            store: &mut Store<Host>,
            instance: &wasmi::Instance,
            name: &str,
            input: &[u8],
            cap: usize,
        ) -> (i64, Vec<u8>) {
            let f = instance.get_typed_func::<(i64, i64, i64, i64), i64>(&*store, &format!("ecall_{name}")).unwrap();
            let outside = &mut store.data_mut().outside;
            outside.clear();
            outside.extend_from_slice(input);
            outside.resize(input.len() + cap, 0xEE);
            let args = (OUTSIDE, input.len() as i64, OUTSIDE + input.len() as i64, cap as i64);
            let result = f.call(&mut *store, args).unwrap();
            let written = usize::try_from(result).unwrap_or(0);
            (result, store.data().outside[input.len()..input.len() + written].to_vec())
        }

        #[test]
        fn hello() {
            big_stack(run_hello);
        }

        fn run_hello() {
            let (mut s, i) = instance(HELLO, Identity::default());
            assert_eq!(call(&mut s, &i, "hello", b"world, 42!", 64), (17, b"Hello, WORLD, 42!".to_vec()));
            assert_eq!(call(&mut s, &i, "hello", b"", 7), (7, b"Hello, ".to_vec()));
            assert_eq!(call(&mut s, &i, "hello", b"abc", 9).0, status::OUTPUT_TOO_SMALL);
            assert_eq!(call(&mut s, &i, "hello", b"\xFFz`{", 64), (11, b"Hello, \xFFZ`{".to_vec()));
            let long = vec![b'a'; 0xE001];
            assert_eq!(call(&mut s, &i, "hello", &long, 0x10000).0, status::BAD_INPUT);
            let max = vec![b'a'; 0xE000];
            let (n, out) = call(&mut s, &i, "hello", &max, 0x10000);
            assert_eq!((n, out.len(), out[0xE006]), (0xE007, 0xE007, b'A'));
        }

        #[test]
        fn counter() {
            big_stack(run_counter);
        }

        fn run_counter() {
            let (mut s, i) = instance(COUNTER, Identity::default());
            assert_eq!(call(&mut s, &i, "get", b"", 8), (8, 0u64.to_le_bytes().to_vec()));
            for n in 1..=3u64 {
                assert_eq!(call(&mut s, &i, "increment", b"", 8), (8, n.to_le_bytes().to_vec()));
            }
            assert_eq!(call(&mut s, &i, "increment", b"", 7).0, status::OUTPUT_TOO_SMALL);
            assert_eq!(call(&mut s, &i, "get", b"", 7).0, status::OUTPUT_TOO_SMALL);
            assert_eq!(call(&mut s, &i, "get", b"ignored", 100), (8, 3u64.to_le_bytes().to_vec()));
        }

        fn identity(mrenclave: u8, isvsvn: u16) -> Identity {
            Identity { mrenclave: [mrenclave; 32], mrsigner: [0x51; 32], isvsvn }
        }

        #[test]
        fn sealer() {
            big_stack(run_sealer);
        }

        fn run_sealer() {
            let (mut s, i) = instance(SEALER, identity(1, 2));
            let data = b"attack at dawn";
            let (n, blob) = call(&mut s, &i, "seal", data, 100);
            assert_eq!(n as usize, data.len() + 19);
            assert_eq!(&blob[..3], &[1, 2, 0], "policy MRENCLAVE, ISVSVN 2");
            assert_ne!(&blob[3..3 + data.len()], data);
            assert_eq!(call(&mut s, &i, "unseal", &blob, 100), (data.len() as i64, data.to_vec()));
            assert_eq!(call(&mut s, &i, "unseal", &blob, data.len() - 1).0, status::OUTPUT_TOO_SMALL);
            assert_eq!(call(&mut s, &i, "seal", data, data.len() + 18).0, status::OUTPUT_TOO_SMALL);
            assert_eq!(call(&mut s, &i, "seal", data, 100).1, blob, "deterministic (toy: no nonce)");
            for at in [0, 1, 3, blob.len() - 1] {
                let mut bad = blob.clone();
                bad[at] ^= 4;
                assert_eq!(call(&mut s, &i, "unseal", &bad, 100).0, status::BAD_INPUT, "byte {at}");
            }
            assert_eq!(call(&mut s, &i, "unseal", &blob[..18], 100).0, status::BAD_INPUT);
            let (n, empty) = call(&mut s, &i, "seal", b"", 100);
            assert_eq!(n, 19);
            assert_eq!(call(&mut s, &i, "unseal", &empty, 0), (0, Vec::new()));

            let (_, signer_blob) = call(&mut s, &i, "seal_signer", data, 100);
            assert_eq!(&signer_blob[..3], &[2, 2, 0]);
            assert_ne!(signer_blob[3..], blob[3..]);

            // A newer version of the same signer (other MRENCLAVE, ISVSVN 3) opens MRSIGNER blobs of
            // ISVSVN 2 but not MRENCLAVE blobs; version 1 opens neither (EGETKEY refuses ISVSVN 2).
            let (mut s3, i3) = instance(SEALER, identity(3, 3));
            assert_eq!(call(&mut s3, &i3, "unseal", &signer_blob, 100), (data.len() as i64, data.to_vec()));
            assert_eq!(call(&mut s3, &i3, "unseal", &blob, 100).0, status::BAD_INPUT);
            let (_, newer) = call(&mut s3, &i3, "seal_signer", data, 100);
            assert_eq!(&newer[..3], &[2, 3, 0]);
            let (mut s1, i1) = instance(SEALER, identity(4, 1));
            assert_eq!(call(&mut s1, &i1, "unseal", &signer_blob, 100).0, status::BAD_INPUT);
            assert_eq!(call(&mut s, &i, "unseal", &newer, 100).0, status::BAD_INPUT);
        }

        #[test]
        fn attest() {
            big_stack(run_attest);
        }

        fn run_attest() {
            let me = identity(9, 5);
            let (mut s, i) = instance(ATTEST, me.clone());
            let mut ti = vec![0u8; 512];
            ti[..32].copy_from_slice(&[0x77; 32]);
            let mut input = ti.clone();
            input.extend_from_slice(b"nonce");
            let (n, report) = call(&mut s, &i, "report", &input, 432);
            assert_eq!((n, report.len()), (432, 432));
            assert_eq!(&report[64..96], &me.mrenclave);
            assert_eq!(&report[320..325], b"nonce");
            assert!(report[325..384].iter().all(|&b| b == 0));
            assert_eq!(&report[416..], &key_of(&[&report_key(&[0x77; 32], &KEYID), &report[..384]]));
            // REPORTDATA is cleared between calls.
            let (_, again) = call(&mut s, &i, "report", &ti, 432);
            assert!(again[320..384].iter().all(|&b| b == 0));
            assert_eq!(call(&mut s, &i, "report", &ti[..511], 432).0, status::BAD_INPUT);
            assert_eq!(call(&mut s, &i, "report", &[ti.clone(), vec![0; 65]].concat(), 432).0, status::BAD_INPUT);
            assert_eq!(call(&mut s, &i, "report", &ti, 431).0, status::OUTPUT_TOO_SMALL);
            let mut reserved = ti.clone();
            reserved[300] = 1;
            assert_eq!(call(&mut s, &i, "report", &reserved, 432).0, status::BAD_INPUT);

            let (n, key) = call(&mut s, &i, "verify_report", &report, 16);
            assert_eq!(n, 16);
            assert_eq!(key, report_key(&me.mrenclave, &KEYID));
            assert_eq!(call(&mut s, &i, "verify_report", &report[..431], 16).0, status::BAD_INPUT);
            assert_eq!(call(&mut s, &i, "verify_report", &report, 15).0, status::OUTPUT_TOO_SMALL);
        }
    }
}

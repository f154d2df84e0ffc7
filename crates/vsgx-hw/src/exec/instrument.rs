//! Memory-access instrumentation of enclave modules.
//!
//! [`instrument`] validates an enclave module against the vsgx enclave ABI ([`super::abi`]) and
//! rewrites it so that every access to its linear memory (the enclave heap) is announced to the
//! host before it happens: the executor runs the *output* and checks each announced range against
//! the EPCM. Concretely:
//!
//! - a function import `vsgx.__vsgx_touch: (i32, i32, i32) -> ()` ([`abi::TOUCH`]) is added as the
//!   last function import, so every defined function's index grows by one (calls, `ref.func`,
//!   exports, element segments and global initializers are renumbered);
//! - before every load, store, `memory.fill`, `memory.copy` and `memory.init` the module calls
//!   `touch(address, static offset, length | is_write << 31)` (the effective address is
//!   `address + static offset`; lengths of bulk operations of 2^31 bytes or more are passed as
//!   `0x7FFF_FFFF`, the executor bounds-checks them anyway);
//! - `memory.grow` always fails (`drop; i32.const -1`): the heap has a fixed size;
//! - active data segments become passive: the build tool already folded them into the measured
//!   heap image, and re-applying them at every instantiation would clobber enclave state;
//! - custom sections are dropped; everything else is re-encoded unchanged.

use core::convert::Infallible;

use wasm_encoder::reencode::{self, Reencode};
use wasm_encoder::{
    BlockType, CodeSection, ConstExpr, DataCountSection, DataSection, ElementSection, EntityType, ExportKind,
    ExportSection, Function, FunctionSection, GlobalSection, GlobalType, ImportSection, Instruction, Module,
    TableSection, TypeSection,
};
use wasmparser::{
    BinaryReaderError, CompositeInnerType, FuncType, FunctionBody, Import, MemArg, Operator, Parser, Payload, TypeRef,
    ValType, Validator, WasmFeatures,
};

use super::abi::{self, Ty};

/// Bit 31 of the packed length word: the access writes.
const WRITE: u32 = 1 << 31;
/// Largest length a packed length word can carry.
const MAX_LEN: i32 = 0x7FFF_FFFF;
/// wasmparser's (and so wasmi's) limit on the number of locals of a function, parameters included.
const MAX_LOCALS: u64 = 50_000;
/// Temporaries the instrumentation appends to a function that accesses memory: three i32 (address
/// and the other operands of bulk operations / stored i32 values), then one i64, f32 and f64 for
/// stored values of those types.
const TEMPS: [(u32, wasm_encoder::ValType); 5] = [
    (3, wasm_encoder::ValType::I32),
    (1, wasm_encoder::ValType::I64),
    (1, wasm_encoder::ValType::F32),
    (1, wasm_encoder::ValType::F64),
    (1, wasm_encoder::ValType::I64),
];
/// Exported names of the four window globals the instrumentation appends (read window
/// `[rlo, rhi)` and write window `[wlo, whi)` of linear-memory offsets, i64, mutable, initially
/// empty). The executor sets them to the last page it validated; an access inside the window skips
/// the host call. The original code cannot reach them: it only knows the global indices it had.
pub const WINDOW_GLOBALS: [&str; 4] = ["__vsgx_rlo", "__vsgx_rhi", "__vsgx_wlo", "__vsgx_whi"];

/// Prefix reserved for names the instrumentation adds.
pub const RESERVED_PREFIX: &str = "__vsgx_";

/// Number of temporaries in [`TEMPS`].
const TEMP_COUNT: u64 = 7;

/// Why a module cannot be instrumented.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InstrumentError {
    /// The module is not valid WebAssembly.
    #[error("invalid WebAssembly module (byte offset {offset}): {message}")]
    Invalid {
        /// Byte offset in the module where wasmparser found the problem.
        offset: usize,
        /// wasmparser's description.
        message: String,
    },
    /// The module is valid WebAssembly but uses a proposal enclaves do not support (threads,
    /// SIMD, memory64, multi-memory, exceptions, GC, tail calls, the component model, ...).
    #[error("module uses a WebAssembly feature vsgx enclaves do not support (byte offset {offset}): {message}")]
    Unsupported {
        /// Byte offset in the module where wasmparser found the problem.
        offset: usize,
        /// wasmparser's description (names the feature).
        message: String,
    },
    /// The module defines a memory instead of importing the heap.
    #[error(
        "the module defines its own linear memory (memory section at byte offset {offset}); enclave modules must \
         import their heap as env.memory"
    )]
    DefinedMemory {
        /// Byte offset of the memory section.
        offset: usize,
    },
    /// The module has no linear memory at all.
    #[error("the module does not import a linear memory; enclave modules must import their heap as env.memory")]
    NoMemory,
    /// The module imports more than one memory.
    #[error("second memory import at byte offset {offset}; enclave modules have exactly one memory (env.memory)")]
    MultipleMemories {
        /// Byte offset of the import.
        offset: usize,
    },
    /// A memory is imported under another name than `env.memory`.
    #[error(
        "memory imported as {module}.{name} (byte offset {offset}); the enclave heap must be imported as env.memory"
    )]
    MemoryImportName {
        /// Import module name.
        module: String,
        /// Import field name.
        name: String,
        /// Byte offset of the import.
        offset: usize,
    },
    /// The imported memory has a type enclaves do not support.
    #[error(
        "the imported memory env.memory (byte offset {offset}) is {reason}; the enclave heap is a 32-bit unshared memory with 64 KiB pages"
    )]
    MemoryType {
        /// What is wrong ("shared", "64-bit", ...).
        reason: &'static str,
        /// Byte offset of the import.
        offset: usize,
    },
    /// A function import that is not part of the enclave ABI.
    #[error("function import {module}.{name} (byte offset {offset}) is not part of the vsgx enclave ABI")]
    UnknownImport {
        /// Import module name.
        module: String,
        /// Import field name.
        name: String,
        /// Byte offset of the import.
        offset: usize,
    },
    /// An ABI import with the wrong signature.
    #[error("import vsgx.{name} (byte offset {offset}) has type {found}, the enclave ABI requires {expected}")]
    ImportSignature {
        /// Import field name.
        name: String,
        /// The ABI's signature.
        expected: String,
        /// The module's signature.
        found: String,
        /// Byte offset of the import.
        offset: usize,
    },
    /// The module imports the instrumentation hook itself.
    #[error(
        "the module imports vsgx.__vsgx_touch itself (byte offset {offset}); that hook is reserved for the \
         instrumentation"
    )]
    TouchImported {
        /// Byte offset of the import.
        offset: usize,
    },
    /// A table, global or tag import.
    #[error(
        "{kind} import {module}.{name} (byte offset {offset}): enclave modules may only import functions from vsgx \
         and the memory env.memory"
    )]
    ForbiddenImport {
        /// "table", "global" or "tag".
        kind: &'static str,
        /// Import module name.
        module: String,
        /// Import field name.
        name: String,
        /// Byte offset of the import.
        offset: usize,
    },
    /// An export uses the name prefix the instrumentation reserves.
    #[error("export \"{name}\" uses the reserved prefix __vsgx_")]
    ReservedExport {
        /// The export's name.
        name: String,
    },
    /// The module has a start function.
    #[error(
        "the module has a start function (function {func}, start section at byte offset {offset}); enclave modules \
         must not run code at instantiation"
    )]
    StartFunction {
        /// Index of the start function.
        func: u32,
        /// Byte offset of the start section.
        offset: usize,
    },
    /// A memory access with a static offset of 2^31 or more (always out of bounds of the heap).
    #[error(
        "function {func}: the memory access at byte offset {offset} has static offset {static_offset:#x}, which does \
         not fit in 31 bits"
    )]
    OffsetTooLarge {
        /// Function index (in the input module's function index space).
        func: u32,
        /// Byte offset of the instruction.
        offset: usize,
        /// The static offset (memarg offset).
        static_offset: u64,
    },
    /// Adding the instrumentation's temporaries exceeds the locals limit.
    #[error(
        "function {func}: adding the instrumentation's {TEMP_COUNT} temporaries to its {locals} locals exceeds the \
         limit of {MAX_LOCALS} locals"
    )]
    TooManyLocals {
        /// Function index (in the input module's function index space).
        func: u32,
        /// Its locals (parameters included).
        locals: u64,
    },
    /// The instrumented module does not validate (a limit was exceeded, or a bug).
    #[error("the instrumented module is not valid (byte offset {offset} of the output): {message}")]
    Output {
        /// Byte offset in the output.
        offset: usize,
        /// wasmparser's description.
        message: String,
    },
    /// Re-encoding failed (a bug: validation should have excluded it).
    #[error("internal instrumentation error: {0}")]
    Internal(String),
}

impl From<BinaryReaderError> for InstrumentError {
    fn from(e: BinaryReaderError) -> Self {
        Self::Invalid { offset: e.offset(), message: e.message().to_string() }
    }
}

impl From<reencode::Error<Infallible>> for InstrumentError {
    fn from(e: reencode::Error<Infallible>) -> Self {
        match e {
            reencode::Error::ParseError(e) => e.into(),
            other => Self::Internal(other.to_string()),
        }
    }
}

/// The WebAssembly features enclave modules may use (what wasmi supports minus the proposals the
/// instrumentation does not handle).
fn features() -> WasmFeatures {
    WasmFeatures::MUTABLE_GLOBAL
        | WasmFeatures::SATURATING_FLOAT_TO_INT
        | WasmFeatures::SIGN_EXTENSION
        | WasmFeatures::MULTI_VALUE
        | WasmFeatures::BULK_MEMORY
        | WasmFeatures::REFERENCE_TYPES
        | WasmFeatures::GC_TYPES // externref (gated by both REFERENCE_TYPES and GC_TYPES)
        | WasmFeatures::FLOATS
}

/// Validates `module` against the enclave ABI and returns it instrumented (see the module docs).
///
/// Never panics, whatever the input.
pub fn instrument(module: &[u8]) -> Result<Vec<u8>, InstrumentError> {
    if let Err(e) = Validator::new_with_features(features()).validate_all(module) {
        // Tell "uses an unsupported proposal" apart from "not WebAssembly at all".
        let unsupported = Validator::new_with_features(WasmFeatures::all()).validate_all(module).is_ok();
        let (offset, message) = (e.offset(), e.message().to_string());
        return Err(if unsupported {
            InstrumentError::Unsupported { offset, message }
        } else {
            InstrumentError::Invalid { offset, message }
        });
    }
    let out = Rewriter::default().run(module)?;
    // Defense in depth: never hand the executor a module its engine would reject.
    Validator::new_with_features(features())
        .validate_all(&out)
        .map_err(|e| InstrumentError::Output { offset: e.offset(), message: e.message().to_string() })?;
    Ok(out)
}

/// Renumbers defined functions past the added import.
struct Remap {
    /// Function imports of the input module (= index of the touch import in the output).
    imported_funcs: u32,
}

impl Reencode for Remap {
    type Error = Infallible;

    fn function_index(&mut self, func: u32) -> u32 {
        if func >= self.imported_funcs { func.saturating_add(1) } else { func }
    }
}

/// State of one pass over a validated module.
#[derive(Default)]
struct Rewriter {
    /// Function types by type index (`None`: not a function type; cannot happen without GC).
    types: Vec<Option<FuncType>>,
    /// Whether the type section has been emitted.
    types_done: bool,
    /// Type index of the touch hook's signature.
    touch_type: u32,
    /// Function imports seen.
    imported_funcs: u32,
    /// Memory imports seen.
    memories: u32,
    /// Type index of every defined function.
    defined: Vec<u32>,
    /// Code section being built and function bodies still expected.
    code: Option<(CodeSection, u32)>,
    /// Defined functions instrumented so far.
    bodies: u32,
    /// Index of the first window global, once the global section is out.
    window: Option<u32>,
    /// Whether the export section (with the window exports) is out.
    exports_done: bool,
}

impl Rewriter {
    fn run(mut self, bytes: &[u8]) -> Result<Vec<u8>, InstrumentError> {
        let mut out = Module::new();
        for payload in Parser::new(0).parse_all(bytes) {
            let mut remap = Remap { imported_funcs: self.imported_funcs };
            match payload? {
                Payload::Version { .. } | Payload::CustomSection(_) | Payload::End(_) => {}
                Payload::TypeSection(reader) => {
                    let mut types = TypeSection::new();
                    for group in reader {
                        let group = group?;
                        for sub in group.types() {
                            self.types.push(match &sub.composite_type.inner {
                                CompositeInnerType::Func(f) => Some(f.clone()),
                                _ => None,
                            });
                        }
                        remap.parse_recursive_type_group(types.ty(), group)?;
                    }
                    self.emit_types(&mut out, types)?;
                }
                Payload::ImportSection(reader) => {
                    if !self.types_done {
                        self.emit_types(&mut out, TypeSection::new())?;
                    }
                    let mut imports = ImportSection::new();
                    for item in reader.into_iter_with_offsets() {
                        let (offset, import) = item?;
                        self.check_import(&import, offset)?;
                        remap.parse_import(&mut imports, import)?;
                    }
                    out.section(&self.finish_imports(imports));
                }
                Payload::FunctionSection(reader) => {
                    let mut functions = FunctionSection::new();
                    for ty in reader {
                        let ty = ty?;
                        self.defined.push(ty);
                        functions.function(remap.type_index(ty));
                    }
                    out.section(&functions);
                }
                Payload::TableSection(reader) => {
                    let mut tables = TableSection::new();
                    remap.parse_table_section(&mut tables, reader)?;
                    out.section(&tables);
                }
                Payload::MemorySection(reader) => {
                    if reader.count() > 0 {
                        return Err(InstrumentError::DefinedMemory { offset: reader.range().start });
                    }
                }
                Payload::GlobalSection(reader) => {
                    let mut globals = GlobalSection::new();
                    let defined = reader.count();
                    remap.parse_global_section(&mut globals, reader)?;
                    self.emit_globals(&mut out, globals, defined);
                }
                Payload::ExportSection(reader) => {
                    self.ensure_globals(&mut out);
                    let mut exports = ExportSection::new();
                    for item in reader.clone() {
                        let export = item?;
                        if export.name.starts_with(RESERVED_PREFIX) {
                            return Err(InstrumentError::ReservedExport { name: export.name.to_string() });
                        }
                    }
                    remap.parse_export_section(&mut exports, reader)?;
                    self.emit_exports(&mut out, exports);
                }
                Payload::StartSection { func, range } => {
                    return Err(InstrumentError::StartFunction { func, offset: range.start });
                }
                Payload::ElementSection(reader) => {
                    self.ensure_exports(&mut out);
                    let mut elements = ElementSection::new();
                    remap.parse_element_section(&mut elements, reader)?;
                    out.section(&elements);
                }
                Payload::DataCountSection { count, .. } => {
                    self.ensure_exports(&mut out);
                    out.section(&DataCountSection { count });
                }
                Payload::DataSection(reader) => {
                    self.ensure_exports(&mut out);
                    let mut data = DataSection::new();
                    for datum in reader {
                        data.passive(datum?.data.iter().copied());
                    }
                    out.section(&data);
                }
                Payload::CodeSectionStart { count, .. } => {
                    self.ensure_exports(&mut out);
                    self.code = Some((CodeSection::new(), count));
                    self.flush_code(&mut out);
                }
                Payload::CodeSectionEntry(body) => {
                    let func = self.instrument_body(&mut remap, body)?;
                    let Some((code, remaining)) = self.code.as_mut() else {
                        return Err(InstrumentError::Internal("function body outside the code section".into()));
                    };
                    code.function(&func);
                    *remaining = remaining.saturating_sub(1);
                    self.flush_code(&mut out);
                }
                other => {
                    let what = match other.as_section() {
                        Some((id, range)) => format!("unexpected section {id} at byte offset {}", range.start),
                        None => "unexpected payload".to_string(),
                    };
                    return Err(InstrumentError::Internal(what));
                }
            }
        }
        if self.memories == 0 {
            return Err(InstrumentError::NoMemory);
        }
        // A module without code, data or element sections still gets its window globals.
        self.ensure_exports(&mut out);
        Ok(out.finish())
    }

    /// Emits the global section with the four window globals appended after `defined` globals.
    fn emit_globals(&mut self, out: &mut Module, mut globals: GlobalSection, defined: u32) {
        let ty = GlobalType { val_type: wasm_encoder::ValType::I64, mutable: true, shared: false };
        for _ in WINDOW_GLOBALS {
            globals.global(ty, &ConstExpr::i64_const(0));
        }
        out.section(&globals);
        self.window = Some(defined);
    }

    /// Emits the window globals if the module had no global section.
    fn ensure_globals(&mut self, out: &mut Module) {
        if self.window.is_none() {
            self.emit_globals(out, GlobalSection::new(), 0);
        }
    }

    /// Emits the export section with the window globals' exports appended.
    fn emit_exports(&mut self, out: &mut Module, mut exports: ExportSection) {
        let base = self.window.unwrap_or(0);
        for (i, name) in WINDOW_GLOBALS.iter().enumerate() {
            exports.export(name, ExportKind::Global, base + i as u32);
        }
        out.section(&exports);
        self.exports_done = true;
    }

    /// Emits globals and exports if the module had neither section.
    fn ensure_exports(&mut self, out: &mut Module) {
        self.ensure_globals(out);
        if !self.exports_done {
            self.emit_exports(out, ExportSection::new());
        }
    }

    /// Adds the touch signature (reusing an identical type) and emits the type section.
    fn emit_types(&mut self, out: &mut Module, mut types: TypeSection) -> Result<(), InstrumentError> {
        let existing = self.types.iter().position(|t| t.as_ref().is_some_and(|f| sig_matches(f, &abi::TOUCH)));
        let index = match existing {
            Some(index) => index,
            None => {
                types.ty().function(
                    abi::TOUCH.params.iter().map(|&t| enc_ty(t)),
                    abi::TOUCH.results.iter().map(|&t| enc_ty(t)),
                );
                self.types.push(Some(FuncType::new(
                    abi::TOUCH.params.iter().map(|&t| parser_ty(t)),
                    abi::TOUCH.results.iter().map(|&t| parser_ty(t)),
                )));
                self.types.len() - 1
            }
        };
        self.touch_type =
            u32::try_from(index).map_err(|_| InstrumentError::Internal("type index out of range".into()))?;
        self.types_done = true;
        out.section(&types);
        Ok(())
    }

    /// Appends the touch import to `imports`.
    fn finish_imports(&self, mut imports: ImportSection) -> ImportSection {
        imports.import(vsgx_isa::wasm_abi::IMPORT_MODULE, abi::TOUCH.name, EntityType::Function(self.touch_type));
        imports
    }

    /// Emits the code section once all its bodies are in.
    fn flush_code(&mut self, out: &mut Module) {
        if let Some((code, 0)) = &self.code {
            out.section(code);
            self.code = None;
        }
    }

    /// Checks one import against the ABI.
    fn check_import(&mut self, import: &Import<'_>, offset: usize) -> Result<(), InstrumentError> {
        let (module, name) = (import.module.to_string(), import.name.to_string());
        match import.ty {
            TypeRef::Memory(ty) => {
                if (import.module, import.name) != abi::MEMORY {
                    return Err(InstrumentError::MemoryImportName { module, name, offset });
                }
                let reason = if ty.memory64 {
                    Some("a 64-bit memory")
                } else if ty.shared {
                    Some("shared")
                } else if ty.page_size_log2.is_some_and(|log2| log2 != 16) {
                    Some("using a custom page size")
                } else {
                    None
                };
                if let Some(reason) = reason {
                    return Err(InstrumentError::MemoryType { reason, offset });
                }
                self.memories += 1;
                if self.memories > 1 {
                    return Err(InstrumentError::MultipleMemories { offset });
                }
            }
            TypeRef::Func(ty) => {
                if import.module != vsgx_isa::wasm_abi::IMPORT_MODULE {
                    return Err(InstrumentError::UnknownImport { module, name, offset });
                }
                if import.name == abi::TOUCH.name {
                    return Err(InstrumentError::TouchImported { offset });
                }
                let Some(expected) = abi::IMPORTS.iter().find(|i| i.name == import.name) else {
                    return Err(InstrumentError::UnknownImport { module, name, offset });
                };
                let Some(found) = usize::try_from(ty).ok().and_then(|ty| self.types.get(ty)).and_then(Option::as_ref)
                else {
                    return Err(InstrumentError::Internal(format!(
                        "import {module}.{name}: type {ty} is not a function type"
                    )));
                };
                if !sig_matches(found, expected) {
                    return Err(InstrumentError::ImportSignature {
                        name,
                        expected: fmt_sig(
                            expected.params.iter().map(|&t| parser_ty(t)),
                            expected.results.iter().map(|&t| parser_ty(t)),
                        ),
                        found: fmt_sig(found.params().iter(), found.results().iter()),
                        offset,
                    });
                }
                self.imported_funcs += 1;
            }
            TypeRef::Table(_) => return Err(InstrumentError::ForbiddenImport { kind: "table", module, name, offset }),
            TypeRef::Global(_) => {
                return Err(InstrumentError::ForbiddenImport { kind: "global", module, name, offset });
            }
            TypeRef::Tag(_) => return Err(InstrumentError::ForbiddenImport { kind: "tag", module, name, offset }),
        }
        Ok(())
    }

    /// Re-encodes one function body with touch calls before every memory access.
    fn instrument_body(&mut self, remap: &mut Remap, body: FunctionBody<'_>) -> Result<Function, InstrumentError> {
        let func = self.imported_funcs.saturating_add(self.bodies);
        let ty = self.defined.get(self.bodies as usize).copied();
        self.bodies += 1;
        let params = ty
            .and_then(|ty| self.types.get(ty as usize))
            .and_then(Option::as_ref)
            .map(|f| f.params().len())
            .ok_or_else(|| InstrumentError::Internal(format!("function {func} has no function type")))?;
        let mut locals = Vec::new();
        let mut count = params as u64;
        for item in body.get_locals_reader()? {
            let (n, ty) = item?;
            count += u64::from(n);
            locals.push((n, remap.val_type(ty)?));
        }
        let base = u32::try_from(count).map_err(|_| InstrumentError::TooManyLocals { func, locals: count })?;
        let window = self.window.ok_or_else(|| InstrumentError::Internal("code before the global section".into()))?;
        let mut e = Emitter { insns: Vec::new(), touch: self.imported_funcs, base, used: false, window };
        let mut reader = body.get_operators_reader()?;
        while !reader.eof() {
            let offset = reader.original_position();
            let op = reader.read()?;
            let memarg_offset = |m: &MemArg| {
                i32::try_from(m.offset).map_err(|_| InstrumentError::OffsetTooLarge {
                    func,
                    offset,
                    static_offset: m.offset,
                })
            };
            match access(&op) {
                Access::None => {}
                Access::Load(m, size) => e.load(memarg_offset(&m)?, size),
                Access::Store(m, size, slot) => e.store(memarg_offset(&m)?, size, slot),
                Access::Fill | Access::Init => e.fill_or_init(),
                Access::Copy => e.copy(),
                Access::Grow => {
                    e.insns.extend([Instruction::Drop, Instruction::I32Const(-1)]);
                    continue;
                }
            }
            e.insns.push(remap.instruction(op)?);
        }
        if e.used {
            if count + TEMP_COUNT > MAX_LOCALS {
                return Err(InstrumentError::TooManyLocals { func, locals: count });
            }
            locals.extend(TEMPS);
        }
        let mut f = Function::new(locals);
        for insn in &e.insns {
            f.instruction(insn);
        }
        Ok(f)
    }
}

/// Temporary slots (offsets from the first temporary local, see [`TEMPS`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// The address / destination (i32).
    A = 0,
    /// Second i32 operand (stored i32 value, fill value, copy source, init source offset).
    B = 1,
    /// Third i32 operand (bulk length).
    C = 2,
    /// Stored i64 value.
    I64 = 3,
    /// Stored f32 value.
    F32 = 4,
    /// Stored f64 value.
    F64 = 5,
    /// Effective address of the access (i64), for the window check.
    E = 6,
}

/// What an operator does to linear memory.
#[derive(Clone, Copy, Debug)]
enum Access {
    /// Nothing.
    None,
    /// Reads `size` bytes at `[addr] + offset`.
    Load(MemArg, u32),
    /// Writes `size` bytes at `[addr, value] + offset`; the value is saved in the slot.
    Store(MemArg, u32, Slot),
    /// `memory.fill`: writes `[dst, val, len]`.
    Fill,
    /// `memory.copy`: reads `[dst, src, len]` at src, writes at dst.
    Copy,
    /// `memory.init`: writes `[dst, src_offset, len]` at dst.
    Init,
    /// `memory.grow`.
    Grow,
}

fn access(op: &Operator<'_>) -> Access {
    use Operator as O;
    match *op {
        O::I32Load8S { memarg } | O::I32Load8U { memarg } | O::I64Load8S { memarg } | O::I64Load8U { memarg } => {
            Access::Load(memarg, 1)
        }
        O::I32Load16S { memarg } | O::I32Load16U { memarg } | O::I64Load16S { memarg } | O::I64Load16U { memarg } => {
            Access::Load(memarg, 2)
        }
        O::I32Load { memarg } | O::F32Load { memarg } | O::I64Load32S { memarg } | O::I64Load32U { memarg } => {
            Access::Load(memarg, 4)
        }
        O::I64Load { memarg } | O::F64Load { memarg } => Access::Load(memarg, 8),
        O::I32Store8 { memarg } => Access::Store(memarg, 1, Slot::B),
        O::I32Store16 { memarg } => Access::Store(memarg, 2, Slot::B),
        O::I32Store { memarg } => Access::Store(memarg, 4, Slot::B),
        O::I64Store8 { memarg } => Access::Store(memarg, 1, Slot::I64),
        O::I64Store16 { memarg } => Access::Store(memarg, 2, Slot::I64),
        O::I64Store32 { memarg } => Access::Store(memarg, 4, Slot::I64),
        O::I64Store { memarg } => Access::Store(memarg, 8, Slot::I64),
        O::F32Store { memarg } => Access::Store(memarg, 4, Slot::F32),
        O::F64Store { memarg } => Access::Store(memarg, 8, Slot::F64),
        O::MemoryFill { .. } => Access::Fill,
        O::MemoryCopy { .. } => Access::Copy,
        O::MemoryInit { .. } => Access::Init,
        O::MemoryGrow { .. } => Access::Grow,
        _ => Access::None,
    }
}

/// Builds an instrumented function body.
struct Emitter<'a> {
    insns: Vec<Instruction<'a>>,
    /// Function index of the touch import.
    touch: u32,
    /// Local index of the first temporary.
    base: u32,
    /// Whether any temporary is used.
    used: bool,
    /// Global index of the first window global (rlo, rhi, wlo, whi).
    window: u32,
}

impl Emitter<'_> {
    fn local(&mut self, slot: Slot) -> u32 {
        self.used = true;
        self.base + slot as u32
    }

    fn set(&mut self, slot: Slot) {
        let l = self.local(slot);
        self.insns.push(Instruction::LocalSet(l));
    }

    fn get(&mut self, slot: Slot) {
        let l = self.local(slot);
        self.insns.push(Instruction::LocalGet(l));
    }

    /// `[addr] -> [addr]`, having called touch(addr, offset, len) unless the access lies inside the
    /// current read (or, for writes, write) window.
    fn touch_tee(&mut self, offset: i32, len: u32) {
        let a = self.local(Slot::A);
        let e = self.local(Slot::E);
        let (lo, hi) =
            if len & WRITE != 0 { (self.window + 2, self.window + 3) } else { (self.window, self.window + 1) };
        let size = i64::from(len & !WRITE);
        self.insns.extend([
            Instruction::LocalTee(a),
            // e = addr + offset (64-bit: no wrap-around)
            Instruction::LocalGet(a),
            Instruction::I64ExtendI32U,
            Instruction::I64Const(i64::from(offset as u32)),
            Instruction::I64Add,
            Instruction::LocalTee(e),
            Instruction::GlobalGet(lo),
            Instruction::I64GeU,
            Instruction::LocalGet(e),
            Instruction::I64Const(size),
            Instruction::I64Add,
            Instruction::GlobalGet(hi),
            Instruction::I64LeU,
            Instruction::I32And,
            Instruction::I32Eqz,
            Instruction::If(BlockType::Empty),
            Instruction::LocalGet(a),
            Instruction::I32Const(offset),
            Instruction::I32Const(len as i32),
            Instruction::Call(self.touch),
            Instruction::End,
        ]);
    }

    /// Pushes min(len in C, 0x7FFF_FFFF) | write << 31.
    fn packed_len(&mut self, write: bool) {
        let c = self.local(Slot::C);
        self.insns.extend([
            Instruction::LocalGet(c),
            Instruction::I32Const(MAX_LEN),
            Instruction::LocalGet(c),
            Instruction::I32Const(MAX_LEN),
            Instruction::I32LtU,
            Instruction::Select,
        ]);
        if write {
            self.insns.extend([Instruction::I32Const(WRITE as i32), Instruction::I32Or]);
        }
    }

    /// Pushes touch(addr in `slot`, 0, packed len in C).
    fn touch_bulk(&mut self, slot: Slot, write: bool) {
        self.get(slot);
        self.insns.push(Instruction::I32Const(0));
        self.packed_len(write);
        self.insns.push(Instruction::Call(self.touch));
    }

    fn load(&mut self, offset: i32, size: u32) {
        self.touch_tee(offset, size);
    }

    fn store(&mut self, offset: i32, size: u32, value: Slot) {
        self.set(value);
        self.touch_tee(offset, size | WRITE);
        self.get(value);
    }

    /// `memory.fill` / `memory.init`: `[dst, x, len]`, writes `len` bytes at dst.
    fn fill_or_init(&mut self) {
        self.set(Slot::C);
        self.set(Slot::B);
        self.set(Slot::A);
        self.touch_bulk(Slot::A, true);
        self.get(Slot::A);
        self.get(Slot::B);
        self.get(Slot::C);
    }

    /// `memory.copy`: `[dst, src, len]`, reads at src, then writes at dst.
    fn copy(&mut self) {
        self.set(Slot::C);
        self.set(Slot::B);
        self.set(Slot::A);
        self.touch_bulk(Slot::B, false);
        self.touch_bulk(Slot::A, true);
        self.get(Slot::A);
        self.get(Slot::B);
        self.get(Slot::C);
    }
}

fn enc_ty(t: Ty) -> wasm_encoder::ValType {
    match t {
        Ty::I32 => wasm_encoder::ValType::I32,
        Ty::I64 => wasm_encoder::ValType::I64,
    }
}

fn parser_ty(t: Ty) -> ValType {
    match t {
        Ty::I32 => ValType::I32,
        Ty::I64 => ValType::I64,
    }
}

fn sig_matches(f: &FuncType, import: &abi::Import) -> bool {
    f.params().iter().copied().eq(import.params.iter().map(|&t| parser_ty(t)))
        && f.results().iter().copied().eq(import.results.iter().map(|&t| parser_ty(t)))
}

fn fmt_sig<P: core::fmt::Display, R: core::fmt::Display>(
    params: impl Iterator<Item = P>,
    results: impl Iterator<Item = R>,
) -> String {
    let list = |items: Vec<String>| items.join(", ");
    format!(
        "({}) -> ({})",
        list(params.map(|p| p.to_string()).collect()),
        list(results.map(|r| r.to_string()).collect())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmi::{Caller, Engine, Instance, Linker, Memory, MemoryType, Module as WasmiModule, Store};

    const W: u32 = WRITE;

    /// Host state: recorded touches and ABI calls.
    #[derive(Default)]
    struct Host {
        touches: Vec<(u32, u32, u32)>,
        calls: Vec<&'static str>,
    }

    struct Running {
        store: Store<Host>,
        instance: Instance,
        memory: Memory,
    }

    impl Running {
        fn new(bytes: &[u8]) -> Self {
            let engine = Engine::default();
            let module = WasmiModule::new(&engine, bytes).unwrap();
            let mut store = Store::new(&engine, Host::default());
            let memory = Memory::new(&mut store, MemoryType::new(1, Some(4))).unwrap();
            let mut linker = Linker::<Host>::new(&engine);
            linker.define("env", "memory", memory).unwrap();
            linker
                .func_wrap("vsgx", "__vsgx_touch", |mut c: Caller<'_, Host>, a: i32, o: i32, l: i32| {
                    c.data_mut().touches.push((a as u32, o as u32, l as u32))
                })
                .unwrap();
            linker
                .func_wrap("vsgx", "eexit", |mut c: Caller<'_, Host>, _: i64| c.data_mut().calls.push("eexit"))
                .unwrap();
            linker
                .func_wrap("vsgx", "copy_in", |mut c: Caller<'_, Host>, _: i32, _: i64, _: i32| {
                    c.data_mut().calls.push("copy_in")
                })
                .unwrap();
            linker
                .func_wrap("vsgx", "copy_out", |mut c: Caller<'_, Host>, _: i64, _: i32, _: i32| {
                    c.data_mut().calls.push("copy_out")
                })
                .unwrap();
            linker
                .func_wrap("vsgx", "egetkey", |mut c: Caller<'_, Host>, _: i32, _: i32| -> i64 {
                    c.data_mut().calls.push("egetkey");
                    0
                })
                .unwrap();
            linker
                .func_wrap("vsgx", "ereport", |mut c: Caller<'_, Host>, _: i32, _: i32, _: i32| {
                    c.data_mut().calls.push("ereport")
                })
                .unwrap();
            linker
                .func_wrap("vsgx", "eaccept", |mut c: Caller<'_, Host>, _: i32, _: i32| -> i64 {
                    c.data_mut().calls.push("eaccept");
                    0
                })
                .unwrap();
            linker
                .func_wrap("vsgx", "emodpe", |mut c: Caller<'_, Host>, _: i32, _: i32| {
                    c.data_mut().calls.push("emodpe")
                })
                .unwrap();
            linker
                .func_wrap("vsgx", "eacceptcopy", |mut c: Caller<'_, Host>, _: i32, _: i32, _: i32| -> i64 {
                    c.data_mut().calls.push("eacceptcopy");
                    0
                })
                .unwrap();
            let instance = linker.instantiate_and_start(&mut store, &module).unwrap();
            Self { store, instance, memory }
        }

        fn call<P: wasmi::WasmParams, R: wasmi::WasmResults>(
            &mut self,
            name: &str,
            args: P,
        ) -> Result<R, wasmi::Error> {
            let f = self.instance.get_typed_func::<P, R>(&self.store, name).unwrap();
            f.call(&mut self.store, args)
        }

        fn mem(&self) -> &[u8] {
            self.memory.data(&self.store)
        }

        fn take_touches(&mut self) -> Vec<(u32, u32, u32)> {
            std::mem::take(&mut self.store.data_mut().touches)
        }
    }

    fn wasm(text: &str) -> Vec<u8> {
        wat::parse_str(text).unwrap()
    }

    /// Instruments and checks the output validates under the enclave feature set.
    fn instrumented(bytes: &[u8]) -> Vec<u8> {
        let out = instrument(bytes).unwrap();
        Validator::new_with_features(features()).validate_all(&out).unwrap();
        out
    }

    /// Original and instrumented instances of the same module.
    fn pair(text: &str) -> (Running, Running) {
        let bytes = wasm(text);
        let out = instrumented(&bytes);
        (Running::new(&bytes), Running::new(&out))
    }

    const MEMORY_HEAVY: &str = r#"
        (module
          (import "vsgx" "eexit" (func $eexit (param i64)))
          (import "env" "memory" (memory 1))
          (data $seg "\01\02\03\04\05\06\07\08")
          (func (export "fill") (param $p i32) (param $n i32)
            (local $i i32)
            (block $done (loop $l
              (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
              (i32.store (i32.add (local.get $p) (i32.shl (local.get $i) (i32.const 2)))
                         (i32.add (i32.mul (local.get $i) (local.get $i)) (i32.const 1)))
              (local.set $i (i32.add (local.get $i) (i32.const 1)))
              (br $l))))
          (func (export "sum") (param $p i32) (param $n i32) (result i64)
            (local $i i32) (local $s i64)
            (block $done (loop $l
              (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
              (local.set $s (i64.add (local.get $s)
                (i64.load32_u (i32.add (local.get $p) (i32.shl (local.get $i) (i32.const 2))))))
              (local.set $i (i32.add (local.get $i) (i32.const 1)))
              (br $l)))
            (local.get $s))
          (func (export "mixed") (param $p i32) (result i64)
            (local $s i64)
            (i64.store offset=8 (local.get $p) (i64.const 0x0102030405060708))
            (f32.store offset=16 (local.get $p) (f32.const 1.5))
            (f64.store offset=24 (local.get $p) (f64.const -2.25))
            (i32.store8 offset=32 (local.get $p) (i32.const 0x1ff))
            (i32.store16 offset=34 (local.get $p) (i32.const 0x12345))
            (i64.store8 offset=36 (local.get $p) (i64.const -1))
            (i64.store16 offset=38 (local.get $p) (i64.const 0x8001))
            (i64.store32 offset=40 (local.get $p) (i64.const 0xdeadbeef))
            (local.set $s (i64.load offset=8 (local.get $p)))
            (local.set $s (i64.add (local.get $s) (i64.extend_i32_u (i32.reinterpret_f32 (f32.load offset=16 (local.get $p))))))
            (local.set $s (i64.add (local.get $s) (i64.reinterpret_f64 (f64.load offset=24 (local.get $p)))))
            (local.set $s (i64.add (local.get $s) (i64.extend_i32_s (i32.load8_s offset=32 (local.get $p)))))
            (local.set $s (i64.add (local.get $s) (i64.extend_i32_u (i32.load8_u offset=32 (local.get $p)))))
            (local.set $s (i64.add (local.get $s) (i64.extend_i32_s (i32.load16_s offset=34 (local.get $p)))))
            (local.set $s (i64.add (local.get $s) (i64.extend_i32_u (i32.load16_u offset=34 (local.get $p)))))
            (local.set $s (i64.add (local.get $s) (i64.load8_s offset=36 (local.get $p))))
            (local.set $s (i64.add (local.get $s) (i64.load8_u offset=36 (local.get $p))))
            (local.set $s (i64.add (local.get $s) (i64.load16_s offset=38 (local.get $p))))
            (local.set $s (i64.add (local.get $s) (i64.load16_u offset=38 (local.get $p))))
            (local.set $s (i64.add (local.get $s) (i64.load32_s offset=40 (local.get $p))))
            (local.set $s (i64.add (local.get $s) (i64.extend_i32_u (i32.load offset=40 (local.get $p)))))
            (local.get $s))
          (func (export "bulk") (param $dst i32) (param $src i32) (param $n i32)
            (memory.fill (local.get $dst) (i32.const 0xab) (local.get $n))
            (memory.copy (i32.add (local.get $dst) (local.get $n)) (local.get $src) (local.get $n))
            (memory.init $seg (i32.add (local.get $dst) (i32.shl (local.get $n) (i32.const 1))) (i32.const 2) (i32.const 4)))
          (func (export "fill_len") (param $dst i32) (param $n i32)
            (memory.fill (local.get $dst) (i32.const 0) (local.get $n)))
          (func (export "copy_len") (param $dst i32) (param $src i32) (param $n i32)
            (memory.copy (local.get $dst) (local.get $src) (local.get $n)))
          (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0)))
          (func (export "size") (result i32) (memory.size))
          (func (export "no_memory") (param i32) (result i32) (i32.add (local.get 0) (i32.const 1))))
    "#;

    #[test]
    fn loads_and_stores_behave_identically_and_are_touched() {
        let (mut orig, mut inst) = pair(MEMORY_HEAVY);

        orig.call::<_, ()>("fill", (100, 5)).unwrap();
        inst.call::<_, ()>("fill", (100, 5)).unwrap();
        assert_eq!(orig.mem(), inst.mem());
        assert_eq!(inst.take_touches(), (0..5).map(|i| (100 + 4 * i, 0, 4 | W)).collect::<Vec<_>>());

        let a: i64 = orig.call("sum", (100, 5)).unwrap();
        let b: i64 = inst.call("sum", (100, 5)).unwrap();
        assert_eq!((a, b), (1 + 2 + 5 + 10 + 17, 1 + 2 + 5 + 10 + 17));
        assert_eq!(inst.take_touches(), (0..5).map(|i| (100 + 4 * i, 0, 4)).collect::<Vec<_>>());

        let a: i64 = orig.call("mixed", 1000).unwrap();
        let b: i64 = inst.call("mixed", 1000).unwrap();
        assert_eq!(a, b);
        assert_eq!(orig.mem(), inst.mem());
        let stores =
            [(8, 8), (16, 4), (24, 8), (32, 1), (34, 2), (36, 1), (38, 2), (40, 4)].map(|(o, n)| (1000, o, n | W));
        let loads = [
            (8, 8),
            (16, 4),
            (24, 8),
            (32, 1),
            (32, 1),
            (34, 2),
            (34, 2),
            (36, 1),
            (36, 1),
            (38, 2),
            (38, 2),
            (40, 4),
            (40, 4),
        ]
        .map(|(o, n)| (1000, o, n));
        assert_eq!(inst.take_touches(), [&stores[..], &loads[..]].concat());
        assert!(orig.store.data().touches.is_empty());
    }

    #[test]
    fn bulk_operations_behave_identically_and_are_touched() {
        let (mut orig, mut inst) = pair(MEMORY_HEAVY);
        orig.call::<_, ()>("fill", (100, 8)).unwrap();
        inst.call::<_, ()>("fill", (100, 8)).unwrap();
        inst.take_touches();
        orig.call::<_, ()>("bulk", (2000, 100, 32)).unwrap();
        inst.call::<_, ()>("bulk", (2000, 100, 32)).unwrap();
        assert_eq!(orig.mem(), inst.mem());
        assert_eq!(&inst.mem()[2064..2068], &[3, 4, 5, 6]);
        assert_eq!(inst.take_touches(), vec![(2000, 0, 32 | W), (100, 0, 32), (2032, 0, 32 | W), (2064, 0, 4 | W)]);

        // Zero-length operations are touched with length 0.
        inst.call::<_, ()>("copy_len", (10, 20, 0)).unwrap();
        assert_eq!(inst.take_touches(), vec![(20, 0, 0), (10, 0, W)]);
    }

    #[test]
    fn huge_bulk_lengths_are_clamped() {
        let (mut orig, mut inst) = pair(MEMORY_HEAVY);
        // Both trap (out of bounds), the instrumented one after announcing a clamped length.
        assert!(orig.call::<_, ()>("fill_len", (16, i32::MIN)).is_err());
        assert!(inst.call::<_, ()>("fill_len", (16, i32::MIN)).is_err());
        assert_eq!(inst.take_touches(), vec![(16, 0, 0x7FFF_FFFF | W)]);
        assert!(inst.call::<_, ()>("copy_len", (1, 2, -1)).is_err());
        assert_eq!(inst.take_touches(), vec![(2, 0, 0x7FFF_FFFF), (1, 0, 0x7FFF_FFFF | W)]);
        assert!(inst.call::<_, ()>("fill_len", (16, 0x7FFF_FFFF)).is_err());
        assert_eq!(inst.take_touches(), vec![(16, 0, 0x7FFF_FFFF | W)]);
    }

    #[test]
    fn memory_grow_always_fails() {
        let (mut orig, mut inst) = pair(MEMORY_HEAVY);
        assert_eq!(orig.call::<_, i32>("grow", 1).unwrap(), 1);
        assert_eq!(orig.call::<_, i32>("size", ()).unwrap(), 2);
        assert_eq!(inst.call::<_, i32>("grow", 1).unwrap(), -1);
        assert_eq!(inst.call::<_, i32>("grow", 0).unwrap(), -1);
        assert_eq!(inst.call::<_, i32>("size", ()).unwrap(), 1);
        assert_eq!(inst.mem().len(), 65536);
        assert!(inst.take_touches().is_empty());
    }

    /// Parsed shape of an output module.
    struct Shape {
        types: Vec<FuncType>,
        func_imports: Vec<(String, String, u32)>,
        locals: Vec<u32>,
        data: Vec<bool>,
        data_count: Option<u32>,
    }

    fn shape(bytes: &[u8]) -> Shape {
        let mut s = Shape { types: vec![], func_imports: vec![], locals: vec![], data: vec![], data_count: None };
        for p in Parser::new(0).parse_all(bytes) {
            match p.unwrap() {
                Payload::TypeSection(r) => {
                    for t in r.into_iter_err_on_gc_types() {
                        s.types.push(t.unwrap());
                    }
                }
                Payload::ImportSection(r) => {
                    for i in r {
                        let i = i.unwrap();
                        if let TypeRef::Func(t) = i.ty {
                            s.func_imports.push((i.module.into(), i.name.into(), t));
                        }
                    }
                }
                Payload::CodeSectionEntry(b) => {
                    s.locals.push(b.get_locals_reader().unwrap().into_iter().map(|l| l.unwrap().0).sum());
                }
                Payload::DataSection(r) => {
                    for d in r {
                        s.data.push(matches!(d.unwrap().kind, wasmparser::DataKind::Active { .. }));
                    }
                }
                Payload::DataCountSection { count, .. } => s.data_count = Some(count),
                _ => {}
            }
        }
        s
    }

    #[test]
    fn touch_is_the_last_function_import_and_temporaries_are_appended() {
        let input = wasm(MEMORY_HEAVY);
        let (before, after) = (shape(&input), shape(&instrumented(&input)));
        // `bulk` and `copy_len` already have the type (i32, i32, i32) -> ().
        assert_eq!(after.types.len(), before.types.len());
        let last = after.func_imports.last().unwrap();
        assert_eq!((last.0.as_str(), last.1.as_str()), ("vsgx", "__vsgx_touch"));
        let touch = &after.types[last.2 as usize];
        assert_eq!((touch.params(), touch.results()), (&[ValType::I32; 3][..], &[][..]));
        assert_eq!(after.func_imports.len(), before.func_imports.len() + 1);
        // Functions touching memory get 7 temporaries after their own locals; others none.
        let added: Vec<u32> = after.locals.iter().zip(&before.locals).map(|(a, b)| a - b).collect();
        assert_eq!(added, vec![7, 7, 7, 7, 7, 7, 0, 0, 0]);
    }

    #[test]
    fn identical_touch_type_is_reused() {
        let input = wasm(
            r#"(module (import "vsgx" "ereport" (func (param i32 i32 i32)))
                       (import "env" "memory" (memory 1)))"#,
        );
        let (before, after) = (shape(&input), shape(&instrumented(&input)));
        assert_eq!(before.types.len(), 1);
        assert_eq!(after.types.len(), 1);
        assert_eq!(after.func_imports[1], ("vsgx".into(), "__vsgx_touch".into(), 0));

        // Otherwise the type is appended.
        let input = wasm(CALLS);
        let (before, after) = (shape(&input), shape(&instrumented(&input)));
        assert_eq!(after.types.len(), before.types.len() + 1);
        assert_eq!(after.func_imports[2], ("vsgx".into(), "__vsgx_touch".into(), before.types.len() as u32));

        // A module without a type section gets one.
        let input = wasm(r#"(module (import "env" "memory" (memory 1)))"#);
        let after = shape(&instrumented(&input));
        assert_eq!(after.types.len(), 1);
        assert_eq!(after.func_imports, vec![("vsgx".into(), "__vsgx_touch".into(), 0)]);
    }

    const CALLS: &str = r#"
        (module
          (import "vsgx" "copy_in" (func $copy_in (param i32 i64 i32)))
          (import "env" "memory" (memory 1))
          (import "vsgx" "eexit" (func $eexit (param i64)))
          (type $ret_i32 (func (result i32)))
          (table $t 4 funcref)
          (elem (table $t) (i32.const 0) funcref (ref.func $ten) (ref.func $twenty))
          (elem (table $t) (i32.const 2) func $thirty)
          (elem declare func $forty)
          (global $g funcref (ref.func $forty))
          (func $ten (result i32) (i32.const 10))
          (func $twenty (result i32) (i32.const 20))
          (func $thirty (result i32) (i32.const 30))
          (func $forty (result i32) (i32.const 40))
          (func (export "direct") (result i32) (i32.add (call $ten) (call $thirty)))
          (func (export "indirect") (param i32) (result i32) (call_indirect (type $ret_i32) (local.get 0)))
          (func (export "via_ref") (result i32)
            (table.set $t (i32.const 3) (ref.func $forty))
            (call_indirect (type $ret_i32) (i32.const 3)))
          (func (export "via_global") (result i32)
            (table.set $t (i32.const 3) (global.get $g))
            (call_indirect (type $ret_i32) (i32.const 3)))
          (func (export "host") (call $copy_in (i32.const 0) (i64.const 0) (i32.const 0)) (call $eexit (i64.const 7)))
          (export "twenty" (func $twenty)))
    "#;

    #[test]
    fn calls_reach_the_same_functions_after_the_index_shift() {
        let (mut orig, mut inst) = pair(CALLS);
        for r in [&mut orig, &mut inst] {
            assert_eq!(r.call::<_, i32>("direct", ()).unwrap(), 40);
            assert_eq!(r.call::<_, i32>("indirect", 0).unwrap(), 10);
            assert_eq!(r.call::<_, i32>("indirect", 1).unwrap(), 20);
            assert_eq!(r.call::<_, i32>("indirect", 2).unwrap(), 30);
            assert!(r.call::<_, i32>("indirect", 3).is_err());
            assert_eq!(r.call::<_, i32>("via_ref", ()).unwrap(), 40);
            assert_eq!(r.call::<_, i32>("via_global", ()).unwrap(), 40);
            assert_eq!(r.call::<_, i32>("twenty", ()).unwrap(), 20);
            r.call::<_, ()>("host", ()).unwrap();
            assert_eq!(r.store.data().calls, vec!["copy_in", "eexit"]);
            assert!(r.store.data().touches.is_empty());
        }
    }

    #[test]
    fn active_data_segments_are_not_applied() {
        let text = r#"
            (module
              (import "env" "memory" (memory 1))
              (data (i32.const 16) "hello")
              (data $p "world")
              (func (export "init") (memory.init $p (i32.const 32) (i32.const 0) (i32.const 5)))
              (func (export "drop") (data.drop 0) (data.drop $p)))
        "#;
        let (mut orig, mut inst) = pair(text);
        assert_eq!(&orig.mem()[16..21], b"hello");
        assert_eq!(&inst.mem()[16..21], &[0; 5]);
        inst.call::<_, ()>("init", ()).unwrap();
        assert_eq!(&inst.mem()[32..37], b"world");
        assert_eq!(inst.take_touches(), vec![(32, 0, 5 | W)]);
        inst.call::<_, ()>("drop", ()).unwrap();
        orig.call::<_, ()>("drop", ()).unwrap();

        let (before, after) = (shape(&wasm(text)), shape(&instrumented(&wasm(text))));
        assert_eq!(before.data, vec![true, false]);
        assert_eq!(after.data, vec![false, false]);
        assert_eq!(before.data_count, Some(2));
        assert_eq!(after.data_count, Some(2));
    }

    fn err(text: &str) -> InstrumentError {
        instrument(&wasm(text)).unwrap_err()
    }

    #[test]
    fn structural_violations_are_rejected() {
        assert!(matches!(err("(module (memory 1))"), InstrumentError::DefinedMemory { .. }));
        assert_eq!(err("(module)"), InstrumentError::NoMemory);
        assert!(matches!(
            err(r#"(module (import "env" "mem" (memory 1)))"#),
            InstrumentError::MemoryImportName { module, name, .. } if module == "env" && name == "mem"
        ));
        assert!(matches!(
            err(r#"(module (import "env" "memory" (memory 1)) (import "vsgx" "foo" (func)))"#),
            InstrumentError::UnknownImport { module, name, .. } if module == "vsgx" && name == "foo"
        ));
        assert!(matches!(
            err(r#"(module (import "env" "memory" (memory 1)) (import "env" "eexit" (func (param i64))))"#),
            InstrumentError::UnknownImport { module, .. } if module == "env"
        ));
        let e = err(
            r#"(module (import "env" "memory" (memory 1)) (import "vsgx" "egetkey" (func (param i32 i32) (result i32))))"#,
        );
        assert_eq!(
            e,
            InstrumentError::ImportSignature {
                name: "egetkey".into(),
                expected: "(i32, i32) -> (i64)".into(),
                found: "(i32, i32) -> (i32)".into(),
                offset: match e {
                    InstrumentError::ImportSignature { offset, .. } => offset,
                    _ => unreachable!(),
                },
            }
        );
        assert!(matches!(
            err(r#"(module (import "env" "memory" (memory 1)) (func $f) (start $f))"#),
            InstrumentError::StartFunction { func: 0, .. }
        ));
        assert!(matches!(
            err(
                r#"(module (import "env" "memory" (memory 1)) (import "vsgx" "__vsgx_touch" (func (param i32 i32 i32))))"#
            ),
            InstrumentError::TouchImported { .. }
        ));
        assert!(matches!(
            err(r#"(module (import "env" "memory" (memory 1)) (import "env" "g" (global i32)))"#),
            InstrumentError::ForbiddenImport { kind: "global", .. }
        ));
        assert!(matches!(
            err(r#"(module (import "env" "memory" (memory 1)) (import "env" "t" (table 1 funcref)))"#),
            InstrumentError::ForbiddenImport { kind: "table", .. }
        ));
        assert!(matches!(
            err(
                r#"(module (import "env" "memory" (memory 1)) (import "vsgx" "eexit" (func (param i64))) (func) (func (drop (i32.load offset=0x80000000 (i32.const 0)))))"#
            ),
            InstrumentError::OffsetTooLarge { func: 2, static_offset: 0x8000_0000, .. }
        ));
        // The largest representable static offset is fine.
        instrumented(&wasm(
            r#"(module (import "env" "memory" (memory 1)) (func (drop (i32.load offset=0x7fffffff (i32.const 0)))))"#,
        ));
    }

    #[test]
    fn unsupported_features_and_invalid_modules_are_rejected() {
        let unsupported = |text: &str, what: &str| match err(text) {
            InstrumentError::Unsupported { message, .. } => assert!(message.contains(what), "{message}"),
            other => panic!("expected Unsupported({what}), got {other:?}"),
        };
        unsupported(r#"(module (import "env" "memory" (memory i64 1)))"#, "memory64");
        unsupported(r#"(module (import "env" "memory" (memory 1 1 shared)))"#, "threads");
        unsupported(r#"(module (import "env" "memory" (memory 1)) (func (drop (v128.load (i32.const 0)))))"#, "SIMD");
        unsupported(
            r#"(module (import "env" "memory" (memory 1)) (func (drop (i32.atomic.load (i32.const 0)))))"#,
            "threads",
        );
        unsupported(
            r#"(module (import "env" "memory" (memory 1)) (import "env" "m2" (memory 1)))"#,
            "multiple memories",
        );
        unsupported(r#"(module (import "env" "memory" (memory 1)) (func $f (return_call $f)))"#, "tail");
        assert!(matches!(instrument(b"\0asm\x01\0\0\0\x01"), Err(InstrumentError::Invalid { .. })));
        assert!(matches!(instrument(b"not wasm"), Err(InstrumentError::Invalid { offset: 0, .. })));
        assert!(matches!(
            err(r#"(module (import "env" "memory" (memory 1)) (func (result i32) (i64.const 0)))"#),
            InstrumentError::Invalid { .. }
        ));
    }

    #[test]
    fn accesses_in_unreachable_code_still_validate() {
        let text = r#"
            (module
              (import "env" "memory" (memory 1))
              (func (unreachable) (i64.store) (unreachable) (f32.store offset=4) (unreachable) (f64.store)
                    (unreachable) (i32.store8) (unreachable) (drop (i64.load))
                    (unreachable) (memory.fill) (unreachable) (memory.copy) (unreachable) (drop (memory.grow)))
              (func (export "f") (result i32)
                (block (result i32) (br 0 (i32.const 7)) (i32.store (i32.const 0)) (i32.const 1))))
        "#;
        let (_, mut inst) = pair(text);
        assert_eq!(inst.call::<_, i32>("f", ()).unwrap(), 7);
        assert!(inst.take_touches().is_empty());
    }

    #[test]
    fn window_globals_are_appended_exported_and_reserved() {
        let text = r#"(module (import "env" "memory" (memory 1)) (global $g (mut i32) (i32.const 5))
            (func (export "f") (result i32) (i32.add (global.get $g) (i32.load (i32.const 0)))))"#;
        let out = instrumented(&wasm(text));
        let mut exports = Vec::new();
        let mut globals = 0;
        for payload in Parser::new(0).parse_all(&out) {
            match payload.unwrap() {
                Payload::ExportSection(r) => exports.extend(r.into_iter().map(|e| e.unwrap().name.to_string())),
                Payload::GlobalSection(r) => globals = r.count(),
                _ => {}
            }
        }
        assert_eq!(globals, 5, "the module's global, then the four window globals");
        for name in WINDOW_GLOBALS {
            assert!(exports.iter().any(|e| e == name), "{name} exported");
        }
        let reserved = r#"(module (import "env" "memory" (memory 1)) (func (export "__vsgx_rlo")))"#;
        assert_eq!(err(reserved), InstrumentError::ReservedExport { name: "__vsgx_rlo".into() });
    }

    #[test]
    fn too_many_locals_is_rejected() {
        let many = |n: usize| {
            format!(
                r#"(module (import "env" "memory" (memory 1)) (func (local {}) (drop (i32.load (i32.const 0)))))"#,
                "i32 ".repeat(n)
            )
        };
        assert_eq!(err(&many(49_994)), InstrumentError::TooManyLocals { func: 0, locals: 49_994 });
        instrumented(&wasm(&many(49_993)));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        /// Corrupted modules never panic, and whatever is accepted validates.
        #[test]
        fn mutated_modules_never_panic(flips in proptest::collection::vec((proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>()), 1..4)) {
            let mut bytes = wasm(MEMORY_HEAVY);
            let len = bytes.len();
            for (at, byte) in flips {
                bytes[at % len] = byte;
            }
            if let Ok(out) = instrument(&bytes) {
                Validator::new_with_features(features()).validate_all(&out).unwrap();
            }
        }
    }
}

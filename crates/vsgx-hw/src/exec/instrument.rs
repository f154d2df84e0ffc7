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
    CodeSection, DataCountSection, DataSection, ElementSection, EntityType, ExportSection, Function,
    FunctionSection, GlobalSection, ImportSection, Instruction, Module, TableSection, TypeSection,
};
use wasmparser::{
    BinaryReaderError, CompositeInnerType, FuncType, FunctionBody, Import, MemArg, Operator, Parser, Payload,
    TypeRef, ValType, Validator, WasmFeatures,
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
const TEMPS: [(u32, wasm_encoder::ValType); 4] = [
    (3, wasm_encoder::ValType::I32),
    (1, wasm_encoder::ValType::I64),
    (1, wasm_encoder::ValType::F32),
    (1, wasm_encoder::ValType::F64),
];
/// Number of temporaries in [`TEMPS`].
const TEMP_COUNT: u64 = 6;

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
    #[error("memory imported as {module}.{name} (byte offset {offset}); the enclave heap must be imported as env.memory")]
    MemoryImportName {
        /// Import module name.
        module: String,
        /// Import field name.
        name: String,
        /// Byte offset of the import.
        offset: usize,
    },
    /// The imported memory has a type enclaves do not support.
    #[error("the imported memory env.memory (byte offset {offset}) is {reason}; the enclave heap is a 32-bit unshared memory with 64 KiB pages")]
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
    Rewriter::default().run(module)
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
                    remap.parse_global_section(&mut globals, reader)?;
                    out.section(&globals);
                }
                Payload::ExportSection(reader) => {
                    let mut exports = ExportSection::new();
                    remap.parse_export_section(&mut exports, reader)?;
                    out.section(&exports);
                }
                Payload::StartSection { func, range } => {
                    return Err(InstrumentError::StartFunction { func, offset: range.start });
                }
                Payload::ElementSection(reader) => {
                    let mut elements = ElementSection::new();
                    remap.parse_element_section(&mut elements, reader)?;
                    out.section(&elements);
                }
                Payload::DataCountSection { count, .. } => {
                    out.section(&DataCountSection { count });
                }
                Payload::DataSection(reader) => {
                    let mut data = DataSection::new();
                    for datum in reader {
                        data.passive(datum?.data.iter().copied());
                    }
                    out.section(&data);
                }
                Payload::CodeSectionStart { count, .. } => {
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
        Ok(out.finish())
    }

    /// Adds the touch signature (reusing an identical type) and emits the type section.
    fn emit_types(&mut self, out: &mut Module, mut types: TypeSection) -> Result<(), InstrumentError> {
        let existing = self.types.iter().position(|t| t.as_ref().is_some_and(|f| sig_matches(f, &abi::TOUCH)));
        let index = match existing {
            Some(index) => index,
            None => {
                types.ty().function(abi::TOUCH.params.iter().map(|&t| enc_ty(t)), abi::TOUCH.results.iter().map(|&t| enc_ty(t)));
                self.types.push(None);
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
                    return Err(InstrumentError::Internal(format!("import {module}.{name}: type {ty} is not a function type")));
                };
                if !sig_matches(found, expected) {
                    return Err(InstrumentError::ImportSignature {
                        name,
                        expected: fmt_sig(expected.params.iter().map(|&t| parser_ty(t)), expected.results.iter().map(|&t| parser_ty(t))),
                        found: fmt_sig(found.params().iter(), found.results().iter()),
                        offset,
                    });
                }
                self.imported_funcs += 1;
            }
            TypeRef::Table(_) => return Err(InstrumentError::ForbiddenImport { kind: "table", module, name, offset }),
            TypeRef::Global(_) => return Err(InstrumentError::ForbiddenImport { kind: "global", module, name, offset }),
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
        let mut e = Emitter { insns: Vec::new(), touch: self.imported_funcs, base, used: false };
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

    /// `[addr] -> [addr]`, having called touch(addr, offset, len).
    fn touch_tee(&mut self, offset: i32, len: u32) {
        let a = self.local(Slot::A);
        self.insns.extend([
            Instruction::LocalTee(a),
            Instruction::LocalGet(a),
            Instruction::I32Const(offset),
            Instruction::I32Const(len as i32),
            Instruction::Call(self.touch),
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

//! Instrumentation: the module the host runs is the uploaded module plus
//! three mechanical changes, made before compiling, so that every call into
//! it is bounded and its whole state can be copied and put back exactly.
//!
//! 1. **Bulk memory is metered.** wasmtime charges one unit of fuel per
//!    operator, and `memory.fill` or `memory.copy` is one operator whatever its
//!    length: a loop of 1 GiB fills costs a few fuel per GiB, so fuel alone does
//!    not bound time. Each of them becomes a call to an appended function that
//!    does the same work in [`BULK_CHUNK_BYTES`] pieces, each piece paying fuel
//!    like ordinary code (about a dozen operators per piece). Bounds are
//!    checked first, so an out-of-bounds operation still traps before it
//!    writes anything, as the original would.
//! 2. **Mutable globals are exported** under `exhost:global:<index>`, because
//!    wasmtime reaches globals only through exports. With the linear memory
//!    they are an instance's entire mutable state, which is what lets the host
//!    copy an instance (an *image*) and resume it byte for byte.
//! 3. **State the host cannot copy is refused**: a start function (code that
//!    would run before any bound is set), and instructions that change tables
//!    or drop segments (`table.set`, `table.grow`, `table.fill`, `table.copy`,
//!    `table.init`, `elem.drop`, `memory.init`, `data.drop`). Rust modules use
//!    none of them.
//!
//! The changes are deterministic and versioned ([`INSTRUMENTATION_VERSION`],
//! part of the compiled-artifact cache key). The module's identity stays the
//! hash of the bytes the operator uploaded.

use wasm_encoder::reencode::{Error as ReencodeError, Reencode, utils};
use wasm_encoder::{BlockType, CodeSection, ExportKind, ExportSection, Function, FunctionSection, Instruction};
use wasm_encoder::{TypeSection, ValType};
use wasmparser::{Operator, Parser, Payload};

/// Changes to the instrumentation change compiled code: bump this with them.
pub const INSTRUMENTATION_VERSION: u32 = 1;

/// The piece a metered bulk-memory operation works in. About twelve operators
/// of fuel per piece: a fill or copy costs roughly one unit of fuel per ten
/// bytes, the same order as storing them one word at a time would.
pub const BULK_CHUNK_BYTES: i32 = 128;

/// The prefix of the exports that expose mutable globals.
pub const GLOBAL_EXPORT_PREFIX: &str = "exhost:global:";

/// Why instrumentation refused a module; the text is meant for its author.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

/// What the host runs, and what it learned about the module on the way.
pub struct Instrumented {
    pub bytes: Vec<u8>,
    /// The mutable globals, by index, in the order their exports were added.
    pub mutable_globals: Vec<u32>,
}

/// What the first pass learns before anything is rewritten.
#[derive(Default)]
struct Survey {
    types: u32,
    functions_defined: u32,
    memories: u32,
    mutable_globals: Vec<u32>,
}

fn survey(bytes: &[u8]) -> Result<Survey, Refusal> {
    let mut found = Survey::default();
    let mut globals = 0u32;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|error| Refusal(format!("the module does not parse: {error}")))?;
        match payload {
            Payload::TypeSection(section) => {
                for group in section {
                    let group = group.map_err(|error| Refusal(error.to_string()))?;
                    found.types += group.types().len() as u32;
                }
            }
            Payload::ImportSection(section) if section.count() > 0 => {
                return Err(Refusal("the module imports something; exhost modules import nothing".into()));
            }
            Payload::FunctionSection(section) => found.functions_defined = section.count(),
            Payload::MemorySection(section) => found.memories = section.count(),
            Payload::GlobalSection(section) => {
                for global in section {
                    let global = global.map_err(|error| Refusal(error.to_string()))?;
                    if global.ty.mutable {
                        if !matches!(
                            global.ty.content_type,
                            wasmparser::ValType::I32
                                | wasmparser::ValType::I64
                                | wasmparser::ValType::F32
                                | wasmparser::ValType::F64
                        ) {
                            return Err(Refusal(format!(
                                "global {globals} is a mutable {}; only numeric globals may be mutable",
                                global.ty.content_type
                            )));
                        }
                        found.mutable_globals.push(globals);
                    }
                    globals += 1;
                }
            }
            Payload::ExportSection(section) => {
                for export in section {
                    let export = export.map_err(|error| Refusal(error.to_string()))?;
                    if export.name.starts_with(GLOBAL_EXPORT_PREFIX) {
                        return Err(Refusal(format!(
                            "the export name `{}` is reserved for the host (prefix `{GLOBAL_EXPORT_PREFIX}`)",
                            export.name
                        )));
                    }
                }
            }
            Payload::StartSection { .. } => {
                return Err(Refusal(
                    "the module has a start function; exhost modules may run code only when the host calls an export"
                        .into(),
                ));
            }
            _ => {}
        }
    }
    if found.types == 0 || found.functions_defined == 0 {
        return Err(Refusal("the module defines no functions".into()));
    }
    Ok(found)
}

/// What a module imports, as `module::name` (validated bytes only).
pub fn imports(bytes: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    for payload in Parser::new(0).parse_all(bytes).flatten() {
        if let Payload::ImportSection(section) = payload {
            for import in section.into_imports().flatten() {
                found.push(format!("`{}::{}`", import.module, import.name));
            }
        }
    }
    found
}

/// Instrument module bytes (already validated by wasmtime as a module).
pub fn instrument(bytes: &[u8]) -> Result<Instrumented, Refusal> {
    let survey = survey(bytes)?;
    let mut rewriter = Rewriter {
        helper_type: survey.types,
        fill_function: survey.functions_defined,
        copy_function: survey.functions_defined + 1,
        mutable_globals: survey.mutable_globals.clone(),
        // The metered helpers work on memory 0. Without a memory no bulk
        // operation can occur, and helpers naming one would make a valid
        // module invalid (found by the `module_bytes` fuzzer): the validator
        // then refuses it for what it is, a module with no memory.
        helpers: survey.memories > 0,
    };
    let mut module = wasm_encoder::Module::new();
    rewriter.parse_core_module(&mut module, Parser::new(0), bytes).map_err(|error| match error {
        ReencodeError::UserError(refusal) => refusal,
        other => Refusal(format!("the module could not be instrumented: {other}")),
    })?;
    Ok(Instrumented { bytes: module.finish(), mutable_globals: survey.mutable_globals })
}

struct Rewriter {
    /// The index of the appended type `(i32, i32, i32) -> ()`.
    helper_type: u32,
    fill_function: u32,
    copy_function: u32,
    mutable_globals: Vec<u32>,
    /// Whether to append the metered fill and copy.
    helpers: bool,
}

impl Reencode for Rewriter {
    type Error = Refusal;

    fn parse_type_section(
        &mut self,
        types: &mut TypeSection,
        section: wasmparser::TypeSectionReader<'_>,
    ) -> Result<(), ReencodeError<Refusal>> {
        utils::parse_type_section(self, types, section)?;
        types.ty().function([ValType::I32, ValType::I32, ValType::I32], []);
        Ok(())
    }

    fn parse_function_section(
        &mut self,
        functions: &mut FunctionSection,
        section: wasmparser::FunctionSectionReader<'_>,
    ) -> Result<(), ReencodeError<Refusal>> {
        utils::parse_function_section(self, functions, section)?;
        if self.helpers {
            functions.function(self.helper_type);
            functions.function(self.helper_type);
        }
        Ok(())
    }

    fn parse_export_section(
        &mut self,
        exports: &mut ExportSection,
        section: wasmparser::ExportSectionReader<'_>,
    ) -> Result<(), ReencodeError<Refusal>> {
        utils::parse_export_section(self, exports, section)?;
        for &global in &self.mutable_globals {
            exports.export(&format!("{GLOBAL_EXPORT_PREFIX}{global}"), ExportKind::Global, global);
        }
        Ok(())
    }

    fn parse_code_section(
        &mut self,
        code: &mut CodeSection,
        section: wasmparser::CodeSectionReader<'_>,
    ) -> Result<(), ReencodeError<Refusal>> {
        utils::parse_code_section(self, code, section)?;
        if self.helpers {
            code.function(&metered_fill());
            code.function(&metered_copy());
        }
        Ok(())
    }

    fn instruction<'a>(&mut self, operator: Operator<'a>) -> Result<Instruction<'a>, ReencodeError<Refusal>> {
        let refuse = |what: &str| {
            Err(ReencodeError::UserError(Refusal(format!(
                "the module uses `{what}`, which changes state the host cannot copy (tables or segments); exhost modules may change only their linear memory and globals"
            ))))
        };
        match operator {
            Operator::MemoryFill { mem: 0 } => Ok(Instruction::Call(self.fill_function)),
            Operator::MemoryCopy { dst_mem: 0, src_mem: 0 } => Ok(Instruction::Call(self.copy_function)),
            Operator::MemoryFill { .. } | Operator::MemoryCopy { .. } => refuse("a second memory"),
            Operator::TableSet { .. } => refuse("table.set"),
            Operator::TableGrow { .. } => refuse("table.grow"),
            Operator::TableFill { .. } => refuse("table.fill"),
            Operator::TableCopy { .. } => refuse("table.copy"),
            Operator::TableInit { .. } => refuse("table.init"),
            Operator::ElemDrop { .. } => refuse("elem.drop"),
            Operator::MemoryInit { .. } => refuse("memory.init"),
            Operator::DataDrop { .. } => refuse("data.drop"),
            other => utils::instruction(self, other),
        }
    }
}

// The appended functions take (destination, value or source, length), as the
// instructions they replace take their operands.
const DST: u32 = 0;
const SRC_OR_VALUE: u32 = 1;
const LEN: u32 = 2;

/// Trap (`unreachable`) unless `[local at, at + LEN)` lies inside the memory.
fn bounds_check(f: &mut Function, at: u32) {
    f.instruction(&Instruction::LocalGet(at))
        .instruction(&Instruction::I64ExtendI32U)
        .instruction(&Instruction::LocalGet(LEN))
        .instruction(&Instruction::I64ExtendI32U)
        .instruction(&Instruction::I64Add)
        .instruction(&Instruction::MemorySize(0))
        .instruction(&Instruction::I64ExtendI32U)
        .instruction(&Instruction::I64Const(16))
        .instruction(&Instruction::I64Shl)
        .instruction(&Instruction::I64GtU)
        .instruction(&Instruction::If(BlockType::Empty))
        .instruction(&Instruction::Unreachable)
        .instruction(&Instruction::End);
}

/// `local -= BULK_CHUNK_BYTES` or `+=`.
fn step(f: &mut Function, local: u32, add: bool) {
    f.instruction(&Instruction::LocalGet(local))
        .instruction(&Instruction::I32Const(BULK_CHUNK_BYTES))
        .instruction(if add { &Instruction::I32Add } else { &Instruction::I32Sub })
        .instruction(&Instruction::LocalSet(local));
}

/// `block loop (br_if 1 when LEN <= chunk) ... br 0 end end` around `body`.
fn chunk_loop(f: &mut Function, body: impl FnOnce(&mut Function)) {
    f.instruction(&Instruction::Block(BlockType::Empty))
        .instruction(&Instruction::Loop(BlockType::Empty))
        .instruction(&Instruction::LocalGet(LEN))
        .instruction(&Instruction::I32Const(BULK_CHUNK_BYTES))
        .instruction(&Instruction::I32LeU)
        .instruction(&Instruction::BrIf(1));
    body(f);
    f.instruction(&Instruction::Br(0)).instruction(&Instruction::End).instruction(&Instruction::End);
}

fn metered_fill() -> Function {
    let mut f = Function::new([]);
    bounds_check(&mut f, DST);
    chunk_loop(&mut f, |f| {
        f.instruction(&Instruction::LocalGet(DST))
            .instruction(&Instruction::LocalGet(SRC_OR_VALUE))
            .instruction(&Instruction::I32Const(BULK_CHUNK_BYTES))
            .instruction(&Instruction::MemoryFill(0));
        step(f, DST, true);
        step(f, LEN, false);
    });
    f.instruction(&Instruction::LocalGet(DST))
        .instruction(&Instruction::LocalGet(SRC_OR_VALUE))
        .instruction(&Instruction::LocalGet(LEN))
        .instruction(&Instruction::MemoryFill(0))
        .instruction(&Instruction::End);
    f
}

fn metered_copy() -> Function {
    let copy = Instruction::MemoryCopy { src_mem: 0, dst_mem: 0 };
    let mut f = Function::new([]);
    bounds_check(&mut f, DST);
    bounds_check(&mut f, SRC_OR_VALUE);
    // Overlapping ranges copy like memmove: from the end when the destination
    // is above the source, so no piece overwrites source bytes not yet copied.
    f.instruction(&Instruction::LocalGet(DST))
        .instruction(&Instruction::LocalGet(SRC_OR_VALUE))
        .instruction(&Instruction::I32GtU)
        .instruction(&Instruction::If(BlockType::Empty));
    chunk_loop(&mut f, |f| {
        step(f, LEN, false);
        f.instruction(&Instruction::LocalGet(DST))
            .instruction(&Instruction::LocalGet(LEN))
            .instruction(&Instruction::I32Add)
            .instruction(&Instruction::LocalGet(SRC_OR_VALUE))
            .instruction(&Instruction::LocalGet(LEN))
            .instruction(&Instruction::I32Add)
            .instruction(&Instruction::I32Const(BULK_CHUNK_BYTES))
            .instruction(&copy);
    });
    f.instruction(&Instruction::Else);
    chunk_loop(&mut f, |f| {
        f.instruction(&Instruction::LocalGet(DST))
            .instruction(&Instruction::LocalGet(SRC_OR_VALUE))
            .instruction(&Instruction::I32Const(BULK_CHUNK_BYTES))
            .instruction(&copy);
        step(f, DST, true);
        step(f, SRC_OR_VALUE, true);
        step(f, LEN, false);
    });
    f.instruction(&Instruction::End)
        .instruction(&Instruction::LocalGet(DST))
        .instruction(&Instruction::LocalGet(SRC_OR_VALUE))
        .instruction(&Instruction::LocalGet(LEN))
        .instruction(&copy)
        .instruction(&Instruction::End);
    f
}

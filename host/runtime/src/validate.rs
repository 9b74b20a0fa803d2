//! Module validation: everything checked before a module may hold state.
//!
//! In order: the bytes are a binary WebAssembly module valid under the
//! deterministic configuration; it imports nothing, has no start function and
//! changes no state but its memory and globals (see [`crate::instrument`],
//! which then meters its bulk memory operations and exposes its globals); it
//! exports a memory with a declared maximum and every ABI function with its
//! exact signature; and, once instantiated in a scratch store, it declares the
//! host's ABI version and a known module kind. Each failure is a
//! [`Rejection`] whose message tells a plugin author what to change.

use exhost_engine::ModuleHash;
use exhost_guest_sdk::abi::exports;
use exhost_guest_sdk::{ABI_VERSION, ModuleKind};
use wasmtime::{ExternType, Linker, Module, Store, ValType};

use crate::engine::Runtime;
use crate::limiter::StoreState;

/// What a module declared about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleInfo {
    pub hash: ModuleHash,
    pub kind: ModuleKind,
    pub abi_version: u32,
    pub state_version: u32,
    /// The SDK revision it was built with (`exhost_abi_revision`; 0 without it).
    pub abi_revision: u32,
    pub size_bytes: u64,
    /// The declared maximum of its linear memory, in bytes.
    pub memory_bytes_max: u64,
    /// The exports (added by instrumentation) of its mutable globals, in index order.
    pub mutable_globals: Vec<String>,
}

/// A validated, compiled module, ready to instantiate cheaply.
pub struct CompiledModule {
    pub info: ModuleInfo,
    pub(crate) pre: wasmtime::InstancePre<StoreState>,
}

/// Why module bytes were refused. Messages are meant for the plugin's author.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    #[error("not a WebAssembly binary module: {0}")]
    NotWasm(String),
    #[error("the module imports {0}; exhost modules must import nothing (no clock, no randomness, no host calls)")]
    HasImports(String),
    #[error("the module does not export `{0}`; build it with exhost-guest-sdk's export macro")]
    MissingExport(&'static str),
    #[error("export `{name}` has signature {found}, the ABI wants {expected}")]
    WrongSignature { name: &'static str, expected: String, found: String },
    #[error("the module does not export its linear memory as `memory`")]
    NoMemory,
    #[error(
        "the module's memory has no declared maximum; link with `-C link-arg=--max-memory=<bytes>` (see guest-sdk/README.md)"
    )]
    UnboundedMemory,
    #[error("the module's memory maximum is {declared} bytes, above the host's limit of {limit} bytes")]
    MemoryTooLarge { declared: u64, limit: u64 },
    #[error(
        "the module was built for ABI version {found}, this host speaks version {supported}; rebuild it against a matching exhost-guest-sdk"
    )]
    AbiVersion { found: u32, supported: u32 },
    #[error("the module declares kind code {0}, which is neither matching (1) nor position (2)")]
    UnknownKind(u32),
    #[error("the module failed while starting: {0}")]
    StartFailed(String),
    #[error("{0}")]
    Unsafe(String),
}

/// The largest memory maximum a module may declare (4 GiB: all of wasm32).
pub const MODULE_MEMORY_BYTES_LIMIT: u64 = 1 << 32;

/// Fuel for the metadata calls made while validating.
const VALIDATION_FUEL: u64 = 10_000_000;

/// Where compiled machine code is kept between runs.
pub trait ArtifactCache: Send + Sync {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>>;
    fn put(&self, key: &[u8], artifact: &[u8]);
}

/// The cache key of a module's compiled artifact: its hash, the wasmtime
/// version and a hash of everything in the engine configuration that affects
/// compiled code. Any change to one of them misses the cache and recompiles.
fn artifact_key(runtime: &Runtime, hash: &ModuleHash) -> Vec<u8> {
    use std::hash::{Hash, Hasher};
    // SipHash with its fixed default keys: stable within a toolchain; a new
    // toolchain at worst misses the cache.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    runtime.engine().precompile_compatibility_hash().hash(&mut hasher);
    let mut key = Vec::with_capacity(64);
    key.extend_from_slice(&hash.0);
    key.extend_from_slice(wasmtime_version().as_bytes());
    key.extend_from_slice(&crate::instrument::INSTRUMENTATION_VERSION.to_be_bytes());
    key.extend_from_slice(&hasher.finish().to_be_bytes());
    key
}

fn wasmtime_version() -> &'static str {
    // The workspace pins wasmtime exactly; this names the pin in cache keys.
    "wasmtime-48.0.8"
}

/// Like [`compile`], but loads the compiled code from `cache` when an artifact
/// for this module and engine is there, and stores it there otherwise.
pub(crate) fn compile_cached(
    runtime: &Runtime,
    hash: ModuleHash,
    bytes: &[u8],
    cache: &dyn ArtifactCache,
) -> Result<CompiledModule, Rejection> {
    let key = artifact_key(runtime, &hash);
    if let Some(artifact) = cache.get(&key) {
        // SAFETY: wasmtime runs deserialized code without verifying it. The
        // artifact was serialized by this engine configuration and version (the
        // key says so) and read back from the operator's own data directory,
        // which is trusted like the binary: whoever can write it can run code.
        if let Ok(module) = unsafe { Module::deserialize(runtime.engine(), &artifact) } {
            return check(runtime, hash, bytes.len() as u64, module);
        }
    }
    let compiled = compile(runtime, hash, bytes)?;
    if let Ok(artifact) = compiled.pre.module().serialize() {
        cache.put(&key, &artifact);
    }
    Ok(compiled)
}

pub(crate) fn compile(runtime: &Runtime, hash: ModuleHash, bytes: &[u8]) -> Result<CompiledModule, Rejection> {
    // from_binary, not new: text format must not sneak in through the upload endpoint.
    if !bytes.starts_with(b"\0asm") {
        return Err(Rejection::NotWasm(
            "the bytes do not start with the WebAssembly magic number (upload the .wasm file the compiler wrote)"
                .into(),
        ));
    }
    let not_wasm = |error: wasmtime::Error| {
        // wasmtime's first line says what is wrong; the rest is context.
        let text = format!("{error:#}");
        Rejection::NotWasm(text.lines().next().unwrap_or_default().to_string())
    };
    // Validated as uploaded first: instrumentation rewrites only valid modules.
    Module::validate(runtime.engine(), bytes).map_err(not_wasm)?;
    let imports = crate::instrument::imports(bytes);
    if !imports.is_empty() {
        return Err(Rejection::HasImports(imports.join(", ")));
    }
    let instrumented = crate::instrument::instrument(bytes).map_err(|refusal| Rejection::Unsafe(refusal.0))?;
    let module = Module::from_binary(runtime.engine(), &instrumented.bytes).map_err(not_wasm)?;
    check(runtime, hash, bytes.len() as u64, module)
}

/// Everything checked on a compiled module before it may hold state.
fn check(runtime: &Runtime, hash: ModuleHash, size_bytes: u64, module: Module) -> Result<CompiledModule, Rejection> {
    let imports: Vec<String> =
        module.imports().map(|import| format!("`{}::{}`", import.module(), import.name())).collect();
    if !imports.is_empty() {
        return Err(Rejection::HasImports(imports.join(", ")));
    }

    let memory_bytes_max = check_memory(&module)?;
    let check_signature = |name: &'static str, export: ExternType, params: &[T], results: &[T]| {
        let expected = render(params, results);
        let found = match export {
            ExternType::Func(func) => {
                let params: Vec<ValType> = func.params().collect();
                let results: Vec<ValType> = func.results().collect();
                render_types(&params, &results)
            }
            other => format!("a non-function ({other:?})"),
        };
        if found != expected {
            return Err(Rejection::WrongSignature { name, expected, found });
        }
        Ok(())
    };
    for (name, params, results) in signatures() {
        let Some(export) = module.get_export(name) else {
            return Err(Rejection::MissingExport(name));
        };
        check_signature(name, export, params, results)?;
    }
    let declares_revision = match module.get_export(exports::ABI_REVISION) {
        Some(export) => {
            check_signature(exports::ABI_REVISION, export, &[], &[T::I32])?;
            true
        }
        None => false,
    };

    let pre = Linker::new(runtime.engine())
        .instantiate_pre(&module)
        .map_err(|error| Rejection::StartFailed(format!("{error:#}")))?;
    let (abi_version, kind_code, state_version, declared_revision) =
        read_metadata(runtime, &pre, memory_bytes_max, declares_revision)?;
    if abi_version != ABI_VERSION {
        return Err(Rejection::AbiVersion { found: abi_version, supported: ABI_VERSION });
    }
    let kind = ModuleKind::from_code(kind_code).ok_or(Rejection::UnknownKind(kind_code))?;
    let abi_revision = declared_revision.unwrap_or(0);
    let mut globals: Vec<(u32, String)> = module
        .exports()
        .filter_map(|export| {
            let index = export.name().strip_prefix(crate::instrument::GLOBAL_EXPORT_PREFIX)?.parse().ok()?;
            Some((index, export.name().to_string()))
        })
        .collect();
    globals.sort();
    let mutable_globals = globals.into_iter().map(|(_, name)| name).collect();
    Ok(CompiledModule {
        info: ModuleInfo {
            hash,
            kind,
            abi_version,
            state_version,
            abi_revision,
            size_bytes,
            memory_bytes_max,
            mutable_globals,
        },
        pre,
    })
}

fn check_memory(module: &Module) -> Result<u64, Rejection> {
    let Some(ExternType::Memory(memory)) = module.get_export(exports::MEMORY) else {
        return Err(Rejection::NoMemory);
    };
    let pages_max = memory.maximum().ok_or(Rejection::UnboundedMemory)?;
    let declared = pages_max.saturating_mul(memory.page_size());
    if declared > MODULE_MEMORY_BYTES_LIMIT {
        return Err(Rejection::MemoryTooLarge { declared, limit: MODULE_MEMORY_BYTES_LIMIT });
    }
    Ok(declared)
}

fn read_metadata(
    runtime: &Runtime,
    pre: &wasmtime::InstancePre<StoreState>,
    memory_bytes_max: u64,
    declares_revision: bool,
) -> Result<(u32, u32, u32, Option<u32>), Rejection> {
    let mut store = Store::new(runtime.engine(), StoreState::new(memory_bytes_max));
    store.limiter(|state| state);
    store.set_fuel(VALIDATION_FUEL).map_err(|error| Rejection::StartFailed(error.to_string()))?;
    let instance = pre.instantiate(&mut store).map_err(|error| Rejection::StartFailed(format!("{error:#}")))?;
    let mut call = |name: &'static str| -> Result<u32, Rejection> {
        let func = instance
            .get_typed_func::<(), u32>(&mut store, name)
            .map_err(|error| Rejection::StartFailed(format!("{name}: {error:#}")))?;
        func.call(&mut store, ()).map_err(|error| Rejection::StartFailed(format!("{name}: {error:#}")))
    };
    let revision = if declares_revision { Some(call(exports::ABI_REVISION)?) } else { None };
    Ok((call(exports::ABI_VERSION)?, call(exports::MODULE_KIND)?, call(exports::STATE_VERSION)?, revision))
}

#[derive(Clone, Copy)]
enum T {
    I32,
    I64,
}

/// Every ABI function with its wasm signature (all integers are unsigned in meaning).
fn signatures() -> [(&'static str, &'static [T], &'static [T]); 12] {
    use T::*;
    [
        (exports::ABI_VERSION, &[], &[I32]),
        (exports::MODULE_KIND, &[], &[I32]),
        (exports::STATE_VERSION, &[], &[I32]),
        (exports::INPUT, &[I32], &[I32]),
        (exports::OUTPUT, &[], &[I64]),
        (exports::INIT, &[I32], &[I32]),
        (exports::APPLY, &[I32, I32], &[I32]),
        (exports::QUERY, &[I32], &[I32]),
        (exports::SNAPSHOT, &[], &[I32]),
        (exports::RESTORE, &[I32], &[I32]),
        (exports::MIGRATE, &[I32, I32], &[I32]),
        (exports::PANIC_MESSAGE, &[], &[I64]),
    ]
}

fn render(params: &[T], results: &[T]) -> String {
    let names = |types: &[T]| {
        types
            .iter()
            .map(|t| match t {
                T::I32 => "i32",
                T::I64 => "i64",
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!("({}) -> ({})", names(params), names(results))
}

fn render_types(params: &[ValType], results: &[ValType]) -> String {
    let names = |types: &[ValType]| {
        types
            .iter()
            .map(|t| match t {
                ValType::I32 => "i32".to_string(),
                ValType::I64 => "i64".to_string(),
                other => format!("{other}"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!("({}) -> ({})", names(params), names(results))
}

impl Runtime {
    /// Validate and compile module bytes, checking the ABI and the module's
    /// declared kind, ABI version and state version.
    pub fn compile(&self, bytes: &[u8]) -> Result<CompiledModule, Rejection> {
        compile(self, ModuleHash::of(bytes), bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal module in text form with the whole ABI, for editing into bad ones.
    pub(crate) fn abi_wat(extra: &str, abi_version: u32, memory: &str) -> String {
        format!(
            r#"(module
                {extra}
                (memory (export "memory") {memory})
                (func (export "exhost_abi_version") (result i32) i32.const {abi_version})
                (func (export "exhost_module_kind") (result i32) i32.const 1)
                (func (export "exhost_state_version") (result i32) i32.const 1)
                (func (export "exhost_input") (param i32) (result i32) i32.const 1024)
                (func (export "exhost_output") (result i64) i64.const 0)
                (func (export "exhost_init") (param i32) (result i32) i32.const 0)
                (func (export "exhost_apply") (param i32 i32) (result i32) i32.const 0)
                (func (export "exhost_query") (param i32) (result i32) i32.const 0)
                (func (export "exhost_snapshot") (result i32) i32.const 0)
                (func (export "exhost_restore") (param i32) (result i32) i32.const 0)
                (func (export "exhost_migrate") (param i32 i32) (result i32) i32.const 0)
                (func (export "exhost_panic_message") (result i64) i64.const 0)
            )"#
        )
    }

    fn compile_wat(text: &str) -> Result<ModuleInfo, Rejection> {
        let bytes = wat::parse_str(text).expect("test module parses");
        Runtime::new().unwrap().compile(&bytes).map(|compiled| compiled.info)
    }

    #[test]
    fn a_complete_module_passes_and_reports_itself() {
        let info = compile_wat(&abi_wat("", ABI_VERSION, "1 16")).unwrap();
        assert_eq!((info.kind, info.abi_version, info.state_version), (ModuleKind::Matching, ABI_VERSION, 1));
        assert_eq!(info.memory_bytes_max, 16 * 65536);
    }

    /// A module says which SDK revision it was built with; one built before
    /// the export existed is revision 0, and a malformed export is refused.
    #[test]
    fn the_abi_revision_is_read_or_is_zero() {
        assert_eq!(compile_wat(&abi_wat("", ABI_VERSION, "1 16")).unwrap().abi_revision, 0);
        let declared = r#"(func (export "exhost_abi_revision") (result i32) i32.const 1)"#;
        assert_eq!(compile_wat(&abi_wat(declared, ABI_VERSION, "1 16")).unwrap().abi_revision, 1);
        let wrong = r#"(func (export "exhost_abi_revision") (result i64) i64.const 1)"#;
        assert!(matches!(
            compile_wat(&abi_wat(wrong, ABI_VERSION, "1 16")),
            Err(Rejection::WrongSignature { name: "exhost_abi_revision", .. })
        ));
    }

    #[test]
    fn each_defect_is_refused_with_a_specific_reason() {
        let import = r#"(import "env" "clock" (func (result i64)))"#;
        assert_eq!(
            compile_wat(&abi_wat(import, ABI_VERSION, "1 16")),
            Err(Rejection::HasImports("`env::clock`".into()))
        );
        assert_eq!(compile_wat(&abi_wat("", ABI_VERSION, "1")), Err(Rejection::UnboundedMemory));
        assert_eq!(
            compile_wat(&abi_wat("", 99, "1 16")),
            Err(Rejection::AbiVersion { found: 99, supported: ABI_VERSION })
        );
        let missing = abi_wat("", ABI_VERSION, "1 16").replace(r#"(export "exhost_snapshot")"#, "");
        assert_eq!(compile_wat(&missing), Err(Rejection::MissingExport("exhost_snapshot")));
        let wrong = abi_wat("", ABI_VERSION, "1 16").replace(
            r#"(func (export "exhost_apply") (param i32 i32)"#,
            r#"(func (export "exhost_apply") (param i32)"#,
        );
        assert!(matches!(compile_wat(&wrong), Err(Rejection::WrongSignature { name: "exhost_apply", .. })));
        let runtime = Runtime::new().unwrap();
        assert!(matches!(runtime.compile(b"garbage bytes"), Err(Rejection::NotWasm(_))));
        assert!(matches!(runtime.compile(b"(module)"), Err(Rejection::NotWasm(_))), "text format is refused");
        let trapping = abi_wat("", ABI_VERSION, "1 16").replace(
            r#"(func (export "exhost_module_kind") (result i32) i32.const 1)"#,
            r#"(func (export "exhost_module_kind") (result i32) unreachable)"#,
        );
        assert!(matches!(compile_wat(&trapping), Err(Rejection::StartFailed(_))));
        let unknown_kind = abi_wat("", ABI_VERSION, "1 16").replace(
            r#"(func (export "exhost_module_kind") (result i32) i32.const 1)"#,
            r#"(func (export "exhost_module_kind") (result i32) i32.const 7)"#,
        );
        assert_eq!(compile_wat(&unknown_kind), Err(Rejection::UnknownKind(7)));
    }
}

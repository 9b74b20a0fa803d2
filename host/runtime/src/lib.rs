//! # exhost runtime
//!
//! The only code that knows wasmtime. It configures the engine for
//! deterministic execution, validates module bytes before anything runs them,
//! and wraps instances behind the engine's [`MatchingInstance`] trait.
//!
//! Determinism contract: the wasmtime version is pinned exactly in the
//! workspace manifest and [`Runtime::new`] fixes every setting that could make
//! two runs of the same module on the same input differ: NaN bits are
//! canonicalised, relaxed SIMD is off (and deterministic if ever enabled), shared memory is
//! off and the threads proposal is not even compiled in (wasmtime's `threads`
//! feature is left out of the workspace manifest), and execution is bounded by fuel (counted in instructions), never by
//! wall-clock interruption.

mod instance;
pub mod instrument;
mod loader;
mod validate;

use exhost_engine::ModuleHash;
use wasmtime::{Config, Engine, OptLevel};

pub use instance::{
    APPLY_MEMORY_GROWTH_BYTES_MAX, CallBudget, INIT_FUEL_PER_COMMAND_FUEL, QUERY_FUEL_PER_COMMAND_FUEL,
    STATE_FUEL_PER_COMMAND_FUEL, WasmMatching, WasmModule,
};
pub use loader::{ModuleSource, WasmLoader};
pub use validate::{ArtifactCache, CompiledModule, ModuleInfo, Rejection};

/// Failures of the runtime itself (not of a module).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    #[error("wasmtime could not be configured: {0}")]
    Config(String),
}

/// A configured wasmtime engine; cheap to clone, shared by all instances.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
}

impl Runtime {
    /// The deterministic configuration every module runs under.
    pub fn new() -> Result<Runtime, RuntimeError> {
        let mut config = Config::new();
        config
            .consume_fuel(true)
            .epoch_interruption(false)
            .cranelift_nan_canonicalization(true)
            .cranelift_opt_level(OptLevel::Speed)
            .shared_memory(false)
            .wasm_relaxed_simd(false)
            .relaxed_simd_deterministic(true)
            .wasm_memory64(false)
            .wasm_multi_memory(false)
            .wasm_gc(false)
            .wasm_stack_switching(false)
            .wasm_wide_arithmetic(false)
            .wasm_custom_page_sizes(false)
            .wasm_backtrace_max_frames(std::num::NonZeroUsize::new(32))
            .parallel_compilation(true);
        // Profiling only names the compiled code for `perf` (EXHOST_WASM_PROFILE=perfmap);
        // it changes no generated instruction.
        if std::env::var("EXHOST_WASM_PROFILE").is_ok_and(|value| value == "perfmap") {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(|error| RuntimeError::Config(error.to_string()))?;
        Ok(Runtime { engine })
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Validate and compile module bytes, checking the ABI and the module's
    /// declared kind, ABI version and state version.
    pub fn compile(&self, bytes: &[u8]) -> Result<CompiledModule, Rejection> {
        validate::compile(self, ModuleHash::of(bytes), bytes)
    }
}

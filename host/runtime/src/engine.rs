//! The wasmtime engine, configured once for deterministic execution.

use wasmtime::{Config, Engine, OptLevel};

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
}

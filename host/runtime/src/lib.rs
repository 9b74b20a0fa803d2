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

mod engine;
mod instance;
pub mod instrument;
mod limiter;
mod loader;
mod validate;

pub use engine::{Runtime, RuntimeError};

pub use instance::{
    APPLY_MEMORY_GROWTH_BYTES_MAX, CallBudget, INIT_FUEL_PER_COMMAND_FUEL, QUERY_FUEL_PER_COMMAND_FUEL,
    RESTORE_FUEL_PER_INPUT_BYTE, STATE_FUEL_PER_COMMAND_FUEL, WasmMatching, WasmModule,
};
pub use loader::{ModuleSource, WasmLoader};
pub use validate::{ArtifactCache, CompiledModule, ModuleInfo, Rejection};

//! # exhost engine
//!
//! The deterministic heart of the host: commands in, change messages out,
//! through rule modules it knows only as traits. No clock, no I/O, no tokio, no
//! RocksDB, no wasmtime (a test checks the dependency graph), so the same code
//! runs live, in replay, in `verify` and in benchmarks.

#![forbid(unsafe_code)]

mod batch;
pub mod command;
pub mod decimal;
pub mod engine;
mod error;
pub mod event;
mod image;
pub mod module;
mod observe;
pub mod record;
pub mod registry;
mod report;
mod setup;
mod shadow;
mod slot;
pub mod snapshot;
mod swap;
mod tap;

pub use batch::BATCH_COMMANDS_MAX;
pub use command::{Command, Credential, MarketId, MarketSpec, ModuleTarget, NewOrder, RiskParams};
pub use decimal::{DecimalError, Scale};
pub use engine::Engine;
pub use error::EngineError;
pub use event::{Event, EventBody};
pub use module::{
    Instance, InstanceImage, LoadError, Loader, MatchingInstance, MemoryImage, ModuleCall, ModuleFault, ModuleHash,
    ModuleLimits, ModuleLoader, Native, NativeLoader, NativeMatching, NoModule, PositionInstance,
};
pub use record::{MarketRecording, RecordingLoader};
pub use registry::{Activation, PositionInstall, Registry, UserRecord};
pub use report::{FaultReport, ModuleReport};
pub use shadow::{Divergence, Shadow, ShadowError, ShadowFault, ShadowReport, ShadowStart};
pub use slot::{IMAGE_BYTES_PER_RETAINED_COMMAND, RETAINED_COMMANDS_MIN};
pub use snapshot::{EngineSnapshot, ModuleState, StateDigest};
pub use tap::{Tap, TappedCall};

//! The engine's view of a rule module: a trait for a live instance, a trait for
//! whatever makes instances (the wasm runtime in production, native code in
//! tests and benchmarks), and the typed faults a module can raise.
//!
//! The engine never knows how an instance runs. That is what lets the same
//! pipeline run the wasm build and the native build of the same plugin.

use core::fmt;

use exhost_guest_sdk::{
    CommandContext, MarketConfig, MatchingCommand, MatchingEvent, MatchingModule, MatchingQuery, MatchingQueryResult,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::command::ModuleLimits;

/// A module's identity: the SHA-256 of its bytes (so `sha256sum module.wasm` agrees).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ModuleHash(pub [u8; 32]);

impl ModuleHash {
    pub fn of(bytes: &[u8]) -> ModuleHash {
        ModuleHash(Sha256::digest(bytes).into())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Option<ModuleHash> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(ModuleHash(bytes))
    }
}

impl fmt::Debug for ModuleHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModuleHash({})", self.to_hex())
    }
}

impl fmt::Display for ModuleHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A module misbehaved while running a call. Deterministic faults (trap, fuel)
/// make the engine reject the command; the others are host problems.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModuleFault {
    /// The module trapped (a panic, an out-of-bounds access, `unreachable`).
    #[error("module trapped: {message}")]
    Trap { message: String },
    /// The module used up the fuel of one command.
    #[error("module ran out of fuel ({fuel} per command)")]
    OutOfFuel { fuel: u64 },
    /// The module answered something that does not follow the ABI.
    #[error("module broke the ABI: {message}")]
    Protocol { message: String },
    /// The module refused the call with its own message (bad snapshot, bad config).
    #[error("module refused: {message}")]
    Refused { message: String },
}

/// A live matching-module instance.
pub trait MatchingInstance: Send {
    /// Apply one command, appending its events.
    fn apply(
        &mut self,
        ctx: &CommandContext,
        command: &MatchingCommand,
        events: &mut Vec<MatchingEvent>,
    ) -> Result<(), ModuleFault>;

    /// Apply several commands; `outcomes[i]` is the result of `commands[i]`,
    /// and its events are appended to `events[i]`. The default calls `apply`
    /// in turn; runtimes override it to cross their boundary once per batch.
    /// On a fault at index `i`, commands before `i` were applied but `events`
    /// is unspecified, and the instance must not be used again: the engine
    /// rebuilds it and re-applies them one by one.
    fn apply_batch(
        &mut self,
        commands: &[(CommandContext, MatchingCommand)],
        events: &mut Vec<Vec<MatchingEvent>>,
    ) -> Result<(), (usize, ModuleFault)> {
        for (i, (ctx, command)) in commands.iter().enumerate() {
            let mut out = Vec::new();
            self.apply(ctx, command, &mut out).map_err(|fault| (i, fault))?;
            events.push(out);
        }
        Ok(())
    }

    fn query(&mut self, query: &MatchingQuery) -> Result<MatchingQueryResult, ModuleFault>;

    /// The instance's canonical snapshot bytes.
    fn snapshot(&mut self, out: &mut Vec<u8>) -> Result<(), ModuleFault>;

    /// The snapshot format version of the module.
    fn state_version(&self) -> u32;
}

/// Why no instance could be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    #[error("no module with hash {0} is stored")]
    UnknownModule(ModuleHash),
    #[error("module {hash} is not usable: {reason}")]
    Invalid { hash: ModuleHash, reason: String },
    #[error("module {hash} failed to start: {fault}")]
    Fault { hash: ModuleHash, fault: ModuleFault },
}

/// Makes module instances.
pub trait ModuleLoader {
    /// A fresh instance for a new market.
    fn new_matching(
        &self,
        hash: &ModuleHash,
        limits: &ModuleLimits,
        config: &MarketConfig,
    ) -> Result<Box<dyn MatchingInstance>, LoadError>;

    /// An instance holding the state of a snapshot written by `state_version`.
    fn restore_matching(
        &self,
        hash: &ModuleHash,
        limits: &ModuleLimits,
        state_version: u32,
        bytes: &[u8],
    ) -> Result<Box<dyn MatchingInstance>, LoadError>;
}

/// A plugin linked natively, as an instance. Native code cannot be metered or
/// sandboxed, so this is for tests and for the wasm-versus-native baseline only.
pub struct NativeMatching<M: MatchingModule> {
    module: M,
}

impl<M: MatchingModule> NativeMatching<M> {
    pub fn new(module: M) -> Self {
        NativeMatching { module }
    }
}

impl<M: MatchingModule + Send> MatchingInstance for NativeMatching<M> {
    fn apply(
        &mut self,
        ctx: &CommandContext,
        command: &MatchingCommand,
        events: &mut Vec<MatchingEvent>,
    ) -> Result<(), ModuleFault> {
        self.module.apply(ctx, command, events);
        Ok(())
    }

    fn query(&mut self, query: &MatchingQuery) -> Result<MatchingQueryResult, ModuleFault> {
        Ok(self.module.query(query))
    }

    fn snapshot(&mut self, out: &mut Vec<u8>) -> Result<(), ModuleFault> {
        self.module.snapshot(out);
        Ok(())
    }

    fn state_version(&self) -> u32 {
        M::STATE_VERSION
    }
}

/// A loader for one natively linked matching module, whatever hash is asked for.
pub struct NativeLoader<M> {
    _module: core::marker::PhantomData<fn() -> M>,
}

impl<M> Default for NativeLoader<M> {
    fn default() -> Self {
        NativeLoader { _module: core::marker::PhantomData }
    }
}

impl<M: MatchingModule + Send + 'static> ModuleLoader for NativeLoader<M> {
    fn new_matching(
        &self,
        hash: &ModuleHash,
        _: &ModuleLimits,
        config: &MarketConfig,
    ) -> Result<Box<dyn MatchingInstance>, LoadError> {
        let module = M::init(config).map_err(|error| LoadError::Fault {
            hash: *hash,
            fault: ModuleFault::Refused { message: error.message },
        })?;
        Ok(Box::new(NativeMatching::new(module)))
    }

    fn restore_matching(
        &self,
        hash: &ModuleHash,
        _: &ModuleLimits,
        state_version: u32,
        bytes: &[u8],
    ) -> Result<Box<dyn MatchingInstance>, LoadError> {
        let module =
            if state_version == M::STATE_VERSION { M::restore(bytes) } else { M::migrate(state_version, bytes) }
                .map_err(|error| LoadError::Fault {
                    hash: *hash,
                    fault: ModuleFault::Refused { message: error.message },
                })?;
        Ok(Box::new(NativeMatching::new(module)))
    }
}

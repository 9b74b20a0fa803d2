//! The engine's view of a rule module: a trait for a live instance, a trait for
//! whatever makes instances (the wasm runtime in production, native code in
//! tests and benchmarks), and the typed faults a module can raise. Both are
//! generic over the module kind's [`Abi`], so matching and position modules
//! share one implementation of everything.
//!
//! The engine never knows how an instance runs. That is what lets the same
//! pipeline run the wasm build and the native build of the same plugin.

use core::fmt;
use core::marker::PhantomData;

use exhost_guest_sdk::abi::Rules;
use exhost_guest_sdk::{
    Abi, CommandContext, MarketConfig, MatchingAbi, MatchingCommand, MatchingEvent, MatchingModule, MatchingQuery,
    MatchingQueryResult, ModuleError, PositionAbi, PositionCommand, PositionConfig, PositionModule, PositionOutput,
    PositionQuery, PositionQueryResult,
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

/// A module misbehaved while running a call. The engine rejects the command
/// that caused it; the instance is rebuilt.
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

/// A live module instance of one kind.
pub trait Instance<A: Abi>: Send {
    /// Apply one command, writing what it produced into `out` (which starts empty).
    fn apply(&mut self, ctx: &CommandContext, command: &A::Command, out: &mut A::Output) -> Result<(), ModuleFault>;

    /// Apply several commands, pushing one output per command. The default calls
    /// `apply` in turn; runtimes override it to cross their boundary once per
    /// batch. On a fault at index `i`, commands before `i` were applied but
    /// `outputs` is unspecified, and the instance must not be used again.
    fn apply_batch(
        &mut self,
        commands: &[(CommandContext, A::Command)],
        outputs: &mut Vec<A::Output>,
    ) -> Result<(), (usize, ModuleFault)> {
        for (i, (ctx, command)) in commands.iter().enumerate() {
            let mut out = A::Output::default();
            self.apply(ctx, command, &mut out).map_err(|fault| (i, fault))?;
            outputs.push(out);
        }
        Ok(())
    }

    fn query(&mut self, query: &A::Query) -> Result<A::QueryResult, ModuleFault>;

    /// The instance's canonical snapshot bytes, appended to `out`.
    fn snapshot(&mut self, out: &mut Vec<u8>) -> Result<(), ModuleFault>;

    /// The snapshot format version of the module.
    fn state_version(&self) -> u32;

    /// Bytes of memory the instance holds for its state, where the runtime
    /// can tell (a wasm instance: its linear memory, which never shrinks).
    fn memory_bytes(&self) -> Option<usize> {
        None
    }
}

/// A matching-module instance.
pub type MatchingInstance = dyn Instance<MatchingAbi>;
/// A position-module instance.
pub type PositionInstance = dyn Instance<PositionAbi>;

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

/// Makes instances of one module kind.
pub trait Loader<A: Abi> {
    /// A fresh instance, initialised with `config`.
    fn create(
        &self,
        hash: &ModuleHash,
        limits: &ModuleLimits,
        config: &A::Config,
    ) -> Result<Box<dyn Instance<A>>, LoadError>;

    /// An instance holding the state of a snapshot written by `state_version`
    /// (migrated if that is not the module's own version).
    fn restore(
        &self,
        hash: &ModuleHash,
        limits: &ModuleLimits,
        state_version: u32,
        bytes: &[u8],
    ) -> Result<Box<dyn Instance<A>>, LoadError>;
}

/// Makes instances of every kind.
pub trait ModuleLoader: Loader<MatchingAbi> + Loader<PositionAbi> + Send + Sync {}

impl<T: Loader<MatchingAbi> + Loader<PositionAbi> + Send + Sync> ModuleLoader for T {}

/// A plugin linked natively, as an instance. Native code cannot be metered or
/// sandboxed, so this is for tests and for the wasm-versus-native baseline only.
pub struct Native<A, R> {
    rules: R,
    _abi: PhantomData<fn() -> A>,
}

impl<A: Abi, R: Rules<A>> Native<A, R> {
    pub fn new(rules: R) -> Self {
        Native { rules, _abi: PhantomData }
    }

    pub fn rules(&self) -> &R {
        &self.rules
    }
}

/// A natively linked matching module.
pub type NativeMatching<M> = Native<MatchingAbi, M>;

impl<A: Abi, R: Rules<A> + Send> Instance<A> for Native<A, R> {
    fn apply(&mut self, ctx: &CommandContext, command: &A::Command, out: &mut A::Output) -> Result<(), ModuleFault> {
        self.rules.apply(ctx, command, out);
        Ok(())
    }

    fn query(&mut self, query: &A::Query) -> Result<A::QueryResult, ModuleFault> {
        Ok(self.rules.query(query))
    }

    fn snapshot(&mut self, out: &mut Vec<u8>) -> Result<(), ModuleFault> {
        self.rules.snapshot(out);
        Ok(())
    }

    fn state_version(&self) -> u32 {
        R::STATE_VERSION
    }
}

/// A loader of natively linked modules: `M` for every market, `P` for positions,
/// whatever hash is asked for.
pub struct NativeLoader<M, P = NoModule> {
    _modules: PhantomData<fn() -> (M, P)>,
}

impl<M, P> Default for NativeLoader<M, P> {
    fn default() -> Self {
        NativeLoader { _modules: PhantomData }
    }
}

fn native<A: Abi, R: Rules<A> + Send + 'static>(
    hash: &ModuleHash,
    made: Result<R, ModuleError>,
) -> Result<Box<dyn Instance<A>>, LoadError> {
    let rules =
        made.map_err(|error| LoadError::Fault { hash: *hash, fault: ModuleFault::Refused { message: error.message } })?;
    Ok(Box::new(Native::<A, R>::new(rules)))
}

fn restore_rules<A: Abi, R: Rules<A>>(state_version: u32, bytes: &[u8]) -> Result<R, ModuleError> {
    if state_version == R::STATE_VERSION { R::restore(bytes) } else { R::migrate(state_version, bytes) }
}

impl<M: Rules<MatchingAbi> + Send + 'static, P> Loader<MatchingAbi> for NativeLoader<M, P> {
    fn create(
        &self,
        hash: &ModuleHash,
        _: &ModuleLimits,
        config: &MarketConfig,
    ) -> Result<Box<dyn Instance<MatchingAbi>>, LoadError> {
        native::<MatchingAbi, M>(hash, M::init(config))
    }

    fn restore(
        &self,
        hash: &ModuleHash,
        _: &ModuleLimits,
        state_version: u32,
        bytes: &[u8],
    ) -> Result<Box<dyn Instance<MatchingAbi>>, LoadError> {
        native::<MatchingAbi, M>(hash, restore_rules::<MatchingAbi, M>(state_version, bytes))
    }
}

impl<M, P: Rules<PositionAbi> + Send + 'static> Loader<PositionAbi> for NativeLoader<M, P> {
    fn create(
        &self,
        hash: &ModuleHash,
        _: &ModuleLimits,
        config: &PositionConfig,
    ) -> Result<Box<dyn Instance<PositionAbi>>, LoadError> {
        native::<PositionAbi, P>(hash, P::init(config))
    }

    fn restore(
        &self,
        hash: &ModuleHash,
        _: &ModuleLimits,
        state_version: u32,
        bytes: &[u8],
    ) -> Result<Box<dyn Instance<PositionAbi>>, LoadError> {
        native::<PositionAbi, P>(hash, restore_rules::<PositionAbi, P>(state_version, bytes))
    }
}

/// Stands in for a kind of module a native loader does not link: it refuses to start.
pub struct NoModule;

impl MatchingModule for NoModule {
    const STATE_VERSION: u32 = 0;
    fn init(_: &MarketConfig) -> Result<Self, ModuleError> {
        Err(ModuleError::new("no module of this kind is linked"))
    }
    fn apply(&mut self, _: &CommandContext, _: &MatchingCommand, _: &mut Vec<MatchingEvent>) {}
    fn query(&self, _: &MatchingQuery) -> MatchingQueryResult {
        MatchingQueryResult::Orders(Vec::new())
    }
    fn snapshot(&self, _: &mut Vec<u8>) {}
    fn restore(_: &[u8]) -> Result<Self, ModuleError> {
        Err(ModuleError::new("no module of this kind is linked"))
    }
}

impl PositionModule for NoModule {
    const STATE_VERSION: u32 = 0;
    fn init(_: &PositionConfig) -> Result<Self, ModuleError> {
        Err(ModuleError::new("no module of this kind is linked"))
    }
    fn apply(&mut self, _: &CommandContext, _: &PositionCommand, _: &mut PositionOutput) {}
    fn query(&self, _: &PositionQuery) -> PositionQueryResult {
        PositionQueryResult::Account(None)
    }
    fn snapshot(&self, _: &mut Vec<u8>) {}
    fn restore(_: &[u8]) -> Result<Self, ModuleError> {
        Err(ModuleError::new("no module of this kind is linked"))
    }
}

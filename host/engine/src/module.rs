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
    Abi, CommandContext, MarketConfig, MarketId, MatchingAbi, MatchingCommand, MatchingEvent, MatchingModule,
    MatchingQuery, MatchingQueryResult, ModuleError, PositionAbi, PositionCommand, PositionConfig, PositionModule,
    PositionOutput, PositionQuery, PositionQueryResult,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use crate::image::MemoryImage;

/// Resource limits of a module instance. Part of the journaled market
/// definition: an out-of-fuel outcome is only deterministic if the fuel is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleLimits {
    /// Fuel (roughly, wasm instructions) one command may use.
    pub fuel_per_command: u64,
    /// The most linear memory the instance may grow to, in bytes.
    pub memory_bytes_max: u64,
}

impl Default for ModuleLimits {
    fn default() -> Self {
        ModuleLimits { fuel_per_command: 50_000_000, memory_bytes_max: 1 << 30 }
    }
}

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

/// The calls the host makes into a module. Each has its own named bound of
/// fuel and memory growth (`exhost_runtime::CallBudget`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModuleCall {
    Init,
    Apply,
    Query,
    Snapshot,
    Restore,
    Migrate,
    /// The small calls of the memory protocol (`exhost_input`, `exhost_output`).
    Buffer,
}

impl ModuleCall {
    pub const fn as_str(self) -> &'static str {
        match self {
            ModuleCall::Init => "init",
            ModuleCall::Apply => "apply",
            ModuleCall::Query => "query",
            ModuleCall::Snapshot => "snapshot",
            ModuleCall::Restore => "restore",
            ModuleCall::Migrate => "migrate",
            ModuleCall::Buffer => "input/output",
        }
    }
}

impl fmt::Display for ModuleCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A module misbehaved while running a call. The engine rejects the command
/// that caused it; the instance is put back as it was before.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModuleFault {
    /// The module trapped (a panic, an out-of-bounds access, `unreachable`).
    #[error("module trapped: {message}")]
    Trap { message: String },
    /// The module used up the fuel one call may use.
    #[error("module ran out of fuel in {call} ({fuel} allowed)")]
    OutOfFuel { call: ModuleCall, fuel: u64 },
    /// The module trapped after the host refused to grow its memory: one call
    /// may grow it by at most `allowed_bytes`, and an instance only up to its limit.
    #[error("module hit its memory limit in {call} (growth to {requested_bytes} bytes refused; {message})")]
    MemoryLimit { call: ModuleCall, requested_bytes: u64, message: String },
    /// The module answered something that does not follow the ABI.
    #[error("module broke the ABI: {message}")]
    Protocol { message: String },
    /// The module refused the call with its own message (bad snapshot, bad config).
    #[error("module refused: {message}")]
    Refused { message: String },
}

/// Which instance a module runs as: one market's book or the position module.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModuleTarget {
    Market(MarketId),
    Position,
}

impl ModuleTarget {
    /// How metrics label the instance: `position`, `market 3`.
    pub fn label(self) -> String {
        match self {
            ModuleTarget::Position => "position".into(),
            ModuleTarget::Market(market) => format!("market {market}"),
        }
    }
}

/// How messages name the instance: "the position module", "market 3".
impl std::fmt::Display for ModuleTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModuleTarget::Position => f.write_str("the position module"),
            ModuleTarget::Market(market) => write!(f, "market {market}"),
        }
    }
}

/// An instance's exact state. A checkpoint and a stored snapshot hold one,
/// so that an instance put back from it is the instance it was, byte for byte:
/// the same outputs, the same fuel, the same memory layout, whatever the
/// module's own `snapshot` and `restore` do. That is what makes rolling back a
/// faulted command, and restarting from a stored snapshot, exact for any module.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstanceImage {
    /// A sandboxed instance: its linear memory and its mutable globals.
    Memory(MemoryImage),
    /// A native instance's own snapshot. Native code has no memory the host
    /// can copy; native instances serve tests and benchmarks only.
    Snapshot {
        state_version: u32,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
}

impl InstanceImage {
    /// Bytes the image holds.
    pub fn stored_bytes(&self) -> usize {
        match self {
            InstanceImage::Memory(image) => image.stored_bytes(),
            InstanceImage::Snapshot { bytes, .. } => bytes.len(),
        }
    }
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

    /// The SDK revision the module was built with: the host sends it
    /// nothing of a later one. A native instance is built with this SDK.
    fn abi_revision(&self) -> u32 {
        exhost_guest_sdk::abi::ABI_REVISION
    }

    /// Fuel every `apply` of this instance used so far, together, where the
    /// runtime meters it (a native instance is not metered).
    fn apply_fuel_used(&self) -> Option<u64> {
        None
    }

    /// Bytes of memory the instance holds for its state, where the runtime
    /// can tell (a wasm instance: its linear memory, which never shrinks).
    fn memory_bytes(&self) -> Option<usize> {
        None
    }

    /// The instance's exact state, copied. Runs no module code on a sandboxed
    /// instance, so it changes nothing and cannot fault there.
    fn image(&mut self) -> Result<InstanceImage, ModuleFault>;

    /// [`Instance::image`] taken into `image`, reusing its buffers where the
    /// runtime can: a checkpoint at a million resting orders is 145 MB, and
    /// most of the time to copy it into fresh memory is the kernel handing
    /// out and zeroing pages (`exhost-bench memory`: 110 ms fresh, against a
    /// copy at memory speed into pages already mapped). On an error `image`
    /// is left as it was.
    fn image_into(&mut self, image: &mut InstanceImage) -> Result<(), ModuleFault> {
        *image = self.image()?;
        Ok(())
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

/// Makes instances of one module kind. Every call names the slot the
/// instance is for: a loader may ignore it, a decorator may keep something
/// per slot (the fixture recorder keeps each market's commands).
pub trait Loader<A: Abi> {
    /// A fresh instance, initialised with `config`.
    fn create(
        &self,
        target: ModuleTarget,
        hash: &ModuleHash,
        limits: &ModuleLimits,
        config: &A::Config,
    ) -> Result<Box<dyn Instance<A>>, LoadError>;

    /// An instance holding the state of a snapshot written by `state_version`
    /// (migrated if that is not the module's own version).
    fn restore(
        &self,
        target: ModuleTarget,
        hash: &ModuleHash,
        limits: &ModuleLimits,
        state_version: u32,
        bytes: &[u8],
    ) -> Result<Box<dyn Instance<A>>, LoadError>;

    /// An instance exactly as it was when `image` was taken of an instance of
    /// this module. Runs no module code for a memory image.
    fn resume(
        &self,
        target: ModuleTarget,
        hash: &ModuleHash,
        limits: &ModuleLimits,
        image: &InstanceImage,
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

    fn image(&mut self) -> Result<InstanceImage, ModuleFault> {
        let mut bytes = Vec::new();
        self.rules.snapshot(&mut bytes);
        Ok(InstanceImage::Snapshot { state_version: R::STATE_VERSION, bytes })
    }
}

/// What a native loader resumes from: only its own snapshots.
fn native_image(hash: &ModuleHash, image: &InstanceImage) -> Result<(u32, Vec<u8>), LoadError> {
    match image {
        InstanceImage::Snapshot { state_version, bytes } => Ok((*state_version, bytes.clone())),
        InstanceImage::Memory(_) => {
            Err(LoadError::Invalid { hash: *hash, reason: "a native module cannot resume a memory image".into() })
        }
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
        _: ModuleTarget,
        hash: &ModuleHash,
        _: &ModuleLimits,
        config: &MarketConfig,
    ) -> Result<Box<dyn Instance<MatchingAbi>>, LoadError> {
        native::<MatchingAbi, M>(hash, M::init(config))
    }

    fn restore(
        &self,
        _: ModuleTarget,
        hash: &ModuleHash,
        _: &ModuleLimits,
        state_version: u32,
        bytes: &[u8],
    ) -> Result<Box<dyn Instance<MatchingAbi>>, LoadError> {
        native::<MatchingAbi, M>(hash, restore_rules::<MatchingAbi, M>(state_version, bytes))
    }

    fn resume(
        &self,
        target: ModuleTarget,
        hash: &ModuleHash,
        limits: &ModuleLimits,
        image: &InstanceImage,
    ) -> Result<Box<dyn Instance<MatchingAbi>>, LoadError> {
        let (state_version, bytes) = native_image(hash, image)?;
        Loader::<MatchingAbi>::restore(self, target, hash, limits, state_version, &bytes)
    }
}

impl<M, P: Rules<PositionAbi> + Send + 'static> Loader<PositionAbi> for NativeLoader<M, P> {
    fn create(
        &self,
        _: ModuleTarget,
        hash: &ModuleHash,
        _: &ModuleLimits,
        config: &PositionConfig,
    ) -> Result<Box<dyn Instance<PositionAbi>>, LoadError> {
        native::<PositionAbi, P>(hash, P::init(config))
    }

    fn restore(
        &self,
        _: ModuleTarget,
        hash: &ModuleHash,
        _: &ModuleLimits,
        state_version: u32,
        bytes: &[u8],
    ) -> Result<Box<dyn Instance<PositionAbi>>, LoadError> {
        native::<PositionAbi, P>(hash, restore_rules::<PositionAbi, P>(state_version, bytes))
    }

    fn resume(
        &self,
        target: ModuleTarget,
        hash: &ModuleHash,
        limits: &ModuleLimits,
        image: &InstanceImage,
    ) -> Result<Box<dyn Instance<PositionAbi>>, LoadError> {
        let (state_version, bytes) = native_image(hash, image)?;
        Loader::<PositionAbi>::restore(self, target, hash, limits, state_version, &bytes)
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

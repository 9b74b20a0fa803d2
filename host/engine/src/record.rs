//! A loader decorator that records what each market's module received: the
//! commands as the engine handed them over, with their contexts, minus what
//! the engine rolled back. `exhost module fixture` replays a journal through
//! an engine built on it, so a fixture is never re-derived from the journal
//! (a re-derivation drifts from what a module really receives: orders the
//! position module refused never reach the book, liquidation orders do).
//!
//! The one subtlety is rollback. The engine puts an instance back by resuming
//! an image of it and applying again the commands it keeps (see `slot`), and
//! it answers queries and hands a state over in a copy resumed from an image
//! taken just then. So each image an instance gives out is noted with how far
//! into the market's history it was, and an instance resumed from an image
//! stands at that point. The history is the path to whichever instance applied
//! last: a copy that only answers questions changes nothing, and an instance
//! rebuilt after a fault overwrites the commands that were undone.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use exhost_guest_sdk::abi::ApplyInput;
use exhost_guest_sdk::{CommandContext, MarketConfig, MatchingAbi, MatchingCommand, PositionAbi, PositionConfig};
use sha2::{Digest, Sha256};

use crate::command::MarketId;
use crate::module::{
    Instance, InstanceImage, LoadError, Loader, MatchingInstance, ModuleFault, ModuleHash, ModuleLimits, ModuleLoader,
    ModuleTarget, PositionInstance,
};

/// What one market's module received, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarketRecording {
    /// The config the market's first module was created with.
    pub config: MarketConfig,
    pub commands: Vec<ApplyInput<MatchingCommand>>,
    /// Which module received the commands from which index on (a hot swap
    /// adds one): `(index of the first command it received, module)`.
    pub modules: Vec<(usize, ModuleHash)>,
}

/// Wraps a loader; every matching instance it makes records into it.
pub struct RecordingLoader {
    inner: Arc<dyn ModuleLoader>,
    markets: Arc<Mutex<BTreeMap<MarketId, History>>>,
}

struct History {
    recording: MarketRecording,
    /// Each image given out: its digest, and how many commands it had applied.
    images: Vec<([u8; 32], usize)>,
}

impl RecordingLoader {
    pub fn new(inner: Arc<dyn ModuleLoader>) -> RecordingLoader {
        RecordingLoader { inner, markets: Arc::default() }
    }

    /// What `market`'s module received so far, if the market was created through this loader.
    pub fn recording(&self, market: MarketId) -> Option<MarketRecording> {
        let markets = self.markets.lock().unwrap_or_else(PoisonError::into_inner);
        markets.get(&market).map(|history| history.recording.clone())
    }

    /// `instance`, recording into `market`'s history from its command `at`;
    /// `None`: the recorder never saw the state it starts from.
    fn recorded(
        &self,
        market: MarketId,
        hash: ModuleHash,
        at: Option<usize>,
        instance: Box<MatchingInstance>,
    ) -> Result<Box<MatchingInstance>, LoadError> {
        let at = at.ok_or_else(|| LoadError::Invalid {
            hash,
            reason: format!(
                "the recorder did not see this state of market {market} made: a recording starts from an empty engine"
            ),
        })?;
        Ok(Box::new(Recorded { inner: instance, market, hash, at, markets: self.markets.clone() }))
    }

    fn with_history<T>(&self, market: MarketId, f: impl FnOnce(&mut History) -> T) -> Option<T> {
        let mut markets = self.markets.lock().unwrap_or_else(PoisonError::into_inner);
        markets.get_mut(&market).map(f)
    }
}

/// Images are compared by content: an image is moved around by value, so
/// nothing else identifies it when it comes back.
fn digest(image: &InstanceImage) -> [u8; 32] {
    let mut hasher = Sha256::new();
    match image {
        InstanceImage::Memory(memory) => {
            hasher.update(b"memory");
            hasher.update(memory.size_bytes.to_le_bytes());
            hasher.update((memory.globals.len() as u64).to_le_bytes());
            for global in &memory.globals {
                hasher.update(global.to_le_bytes());
            }
            for (offset, bytes) in memory.runs() {
                hasher.update(offset.to_le_bytes());
                hasher.update((bytes.len() as u64).to_le_bytes());
                hasher.update(bytes);
            }
        }
        InstanceImage::Snapshot { state_version, bytes } => {
            hasher.update(b"snapshot");
            hasher.update(state_version.to_le_bytes());
            hasher.update(bytes);
        }
    }
    hasher.finalize().into()
}

impl Loader<MatchingAbi> for RecordingLoader {
    fn create(
        &self,
        target: ModuleTarget,
        hash: &ModuleHash,
        limits: &ModuleLimits,
        config: &MarketConfig,
    ) -> Result<Box<MatchingInstance>, LoadError> {
        let instance = Loader::<MatchingAbi>::create(&*self.inner, target, hash, limits, config)?;
        let ModuleTarget::Market(market) = target else { return Ok(instance) };
        let recording = MarketRecording { config: config.clone(), commands: Vec::new(), modules: Vec::new() };
        let mut markets = self.markets.lock().unwrap_or_else(PoisonError::into_inner);
        markets.insert(market, History { recording, images: Vec::new() });
        drop(markets);
        self.recorded(market, *hash, Some(0), instance)
    }

    /// A hot swap: the new module takes the state over where the history stands.
    fn restore(
        &self,
        target: ModuleTarget,
        hash: &ModuleHash,
        limits: &ModuleLimits,
        state_version: u32,
        bytes: &[u8],
    ) -> Result<Box<MatchingInstance>, LoadError> {
        let instance = Loader::<MatchingAbi>::restore(&*self.inner, target, hash, limits, state_version, bytes)?;
        let ModuleTarget::Market(market) = target else { return Ok(instance) };
        let at = self.with_history(market, |history| history.recording.commands.len());
        self.recorded(market, *hash, at, instance)
    }

    fn resume(
        &self,
        target: ModuleTarget,
        hash: &ModuleHash,
        limits: &ModuleLimits,
        image: &InstanceImage,
    ) -> Result<Box<MatchingInstance>, LoadError> {
        let instance = Loader::<MatchingAbi>::resume(&*self.inner, target, hash, limits, image)?;
        let ModuleTarget::Market(market) = target else { return Ok(instance) };
        let digest = digest(image);
        // The latest image with this content. Should an earlier one match too,
        // the state was byte for byte the same at both points, so replaying
        // either history leads to the same state.
        let at = self.with_history(market, |history| {
            history.images.iter().rev().find(|(seen, _)| *seen == digest).map(|&(_, at)| at)
        });
        self.recorded(market, *hash, at.flatten(), instance)
    }
}

/// Position instances are not recorded.
impl Loader<PositionAbi> for RecordingLoader {
    fn create(
        &self,
        target: ModuleTarget,
        hash: &ModuleHash,
        limits: &ModuleLimits,
        config: &PositionConfig,
    ) -> Result<Box<PositionInstance>, LoadError> {
        Loader::<PositionAbi>::create(&*self.inner, target, hash, limits, config)
    }

    fn restore(
        &self,
        target: ModuleTarget,
        hash: &ModuleHash,
        limits: &ModuleLimits,
        state_version: u32,
        bytes: &[u8],
    ) -> Result<Box<PositionInstance>, LoadError> {
        Loader::<PositionAbi>::restore(&*self.inner, target, hash, limits, state_version, bytes)
    }

    fn resume(
        &self,
        target: ModuleTarget,
        hash: &ModuleHash,
        limits: &ModuleLimits,
        image: &InstanceImage,
    ) -> Result<Box<PositionInstance>, LoadError> {
        Loader::<PositionAbi>::resume(&*self.inner, target, hash, limits, image)
    }
}

/// A matching instance that notes what it applies in its market's history.
struct Recorded {
    inner: Box<MatchingInstance>,
    market: MarketId,
    hash: ModuleHash,
    /// How many of the history's commands this instance's state reflects.
    at: usize,
    markets: Arc<Mutex<BTreeMap<MarketId, History>>>,
}

impl Recorded {
    fn note(&mut self, applied: &[(CommandContext, MatchingCommand)]) {
        let mut markets = self.markets.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(history) = markets.get_mut(&self.market) {
            let commands = &mut history.recording.commands;
            // Whatever came after this instance's point was undone.
            commands.truncate(self.at);
            let modules = &mut history.recording.modules;
            modules.retain(|&(from, _)| from < self.at);
            if !applied.is_empty() && modules.last().is_none_or(|&(_, hash)| hash != self.hash) {
                modules.push((self.at, self.hash));
            }
            commands.extend(applied.iter().map(|(ctx, command)| ApplyInput { ctx: *ctx, command: command.clone() }));
            self.at = commands.len();
        }
    }
}

impl Instance<MatchingAbi> for Recorded {
    fn apply(
        &mut self,
        ctx: &CommandContext,
        command: &MatchingCommand,
        out: &mut Vec<exhost_guest_sdk::MatchingEvent>,
    ) -> Result<(), ModuleFault> {
        self.inner.apply(ctx, command, out)?;
        self.note(&[(*ctx, command.clone())]);
        Ok(())
    }

    fn apply_batch(
        &mut self,
        commands: &[(CommandContext, MatchingCommand)],
        outputs: &mut Vec<Vec<exhost_guest_sdk::MatchingEvent>>,
    ) -> Result<(), (usize, ModuleFault)> {
        let outcome = self.inner.apply_batch(commands, outputs);
        let applied = match &outcome {
            Ok(()) => commands.len(),
            Err((index, _)) => *index,
        };
        self.note(&commands[..applied]);
        outcome
    }

    fn query(
        &mut self,
        query: &exhost_guest_sdk::MatchingQuery,
    ) -> Result<exhost_guest_sdk::MatchingQueryResult, ModuleFault> {
        self.inner.query(query)
    }

    fn snapshot(&mut self, out: &mut Vec<u8>) -> Result<(), ModuleFault> {
        self.inner.snapshot(out)
    }

    fn state_version(&self) -> u32 {
        self.inner.state_version()
    }

    fn memory_bytes(&self) -> Option<usize> {
        self.inner.memory_bytes()
    }

    fn abi_revision(&self) -> u32 {
        self.inner.abi_revision()
    }

    fn apply_fuel_used(&self) -> Option<u64> {
        self.inner.apply_fuel_used()
    }

    fn image(&mut self) -> Result<InstanceImage, ModuleFault> {
        let image = self.inner.image()?;
        let digest = digest(&image);
        let at = self.at;
        let mut markets = self.markets.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(history) = markets.get_mut(&self.market) {
            history.images.push((digest, at));
        }
        Ok(image)
    }
}

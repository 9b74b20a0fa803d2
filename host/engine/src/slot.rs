//! One module instance with its checkpoint: what it takes to rebuild the
//! instance exactly as it was after any of its retained commands.

use std::marker::PhantomData;

use exhost_guest_sdk::codec::{decode, encode_into};
use exhost_guest_sdk::{Abi, CommandContext};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::command::ModuleLimits;
use crate::engine::EngineError;
use crate::module::{Instance, Loader, ModuleFault, ModuleHash};

/// One module instance with what it takes to rebuild it.
pub(crate) struct Slot<A: Abi> {
    pub(crate) instance: Box<dyn Instance<A>>,
    pub(crate) hash: ModuleHash,
    pub(crate) limits: ModuleLimits,
    /// Snapshot bytes the instance can be rebuilt from, and their format version.
    pub(crate) checkpoint: Vec<u8>,
    pub(crate) checkpoint_version: u32,
    /// Commands applied since the checkpoint, in order.
    pub(crate) retained: Retained<A::Command>,
}

/// Commands kept to rebuild an instance from its checkpoint, encoded.
///
/// A large book is checkpointed rarely (see `checkpoint_due`), so millions of
/// commands may be held. As values they took about 145 bytes each (a
/// settlement holds a vector of book events on the heap): over 500 MB at a
/// million resting orders. Encoded, they take a few dozen bytes and no
/// allocation of their own.
pub(crate) struct Retained<C> {
    bytes: Vec<u8>,
    /// Where each command's encoding ends in `bytes`.
    ends: Vec<usize>,
    kind: PhantomData<fn() -> C>,
}

/// How many retained commands a rebuild hands to the instance at once.
const REBUILD_BATCH: usize = 4_096;

impl<C: Serialize + DeserializeOwned> Retained<C> {
    fn new() -> Self {
        Retained { bytes: Vec::new(), ends: Vec::new(), kind: PhantomData }
    }

    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Bytes held (the encodings and their ends).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.bytes.capacity() + self.ends.capacity() * size_of::<usize>()
    }

    pub(crate) fn push(&mut self, ctx: &CommandContext, command: &C) {
        encode_into(&(ctx, command), &mut self.bytes);
        self.ends.push(self.bytes.len());
    }

    pub(crate) fn truncate(&mut self, keep: usize) {
        if keep < self.ends.len() {
            self.ends.truncate(keep);
            self.bytes.truncate(self.ends.last().copied().unwrap_or(0));
        }
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    /// The command at `index`, decoded.
    fn get(&self, index: usize) -> Result<(CommandContext, C), ModuleFault> {
        let start = index.checked_sub(1).map_or(0, |before| self.ends[before]);
        decode(&self.bytes[start..self.ends[index]])
            .map_err(|error| ModuleFault::Protocol { message: format!("retained command {index}: {error}") })
    }
}

impl<A: Abi> Slot<A> {
    pub(crate) fn new(
        instance: Box<dyn Instance<A>>,
        hash: ModuleHash,
        limits: ModuleLimits,
    ) -> Result<Slot<A>, ModuleFault> {
        let mut slot =
            Slot { instance, hash, limits, checkpoint: Vec::new(), checkpoint_version: 0, retained: Retained::new() };
        slot.take_checkpoint()?;
        Ok(slot)
    }

    /// A slot whose instance was just restored from `bytes` (same format): they are its checkpoint.
    pub(crate) fn restored(
        instance: Box<dyn Instance<A>>,
        hash: ModuleHash,
        limits: ModuleLimits,
        bytes: Vec<u8>,
    ) -> Slot<A> {
        let checkpoint_version = instance.state_version();
        Slot::with_checkpoint(instance, hash, limits, bytes, checkpoint_version)
    }

    /// A slot whose instance was restored from `checkpoint` (of format `checkpoint_version`).
    pub(crate) fn with_checkpoint(
        instance: Box<dyn Instance<A>>,
        hash: ModuleHash,
        limits: ModuleLimits,
        checkpoint: Vec<u8>,
        checkpoint_version: u32,
    ) -> Slot<A> {
        Slot { instance, hash, limits, checkpoint, checkpoint_version, retained: Retained::new() }
    }

    pub(crate) fn run(&mut self, ctx: CommandContext, command: A::Command) -> Result<A::Output, ModuleFault> {
        let mut out = A::Output::default();
        self.instance.apply(&ctx, &command, &mut out)?;
        self.retained.push(&ctx, &command);
        Ok(out)
    }

    /// Rebuild the instance as it was after its first `keep` retained commands.
    pub(crate) fn rebuild(&mut self, loader: &dyn Loader<A>, keep: usize, target: &str) -> Result<(), EngineError> {
        self.instance = loader
            .restore(&self.hash, &self.limits, self.checkpoint_version, &self.checkpoint)
            .map_err(|source| EngineError::Load { target: target.to_string(), source })?;
        self.retained.truncate(keep);
        let count = self.retained.len();
        // In batches, as replay applies them: one crossing into the module per batch.
        let recovery = |fault| EngineError::Recovery { target: target.to_string(), fault };
        let mut commands = Vec::with_capacity(REBUILD_BATCH.min(count));
        let mut outputs = Vec::with_capacity(REBUILD_BATCH.min(count));
        for start in (0..count).step_by(REBUILD_BATCH) {
            commands.clear();
            for index in start..(start + REBUILD_BATCH).min(count) {
                commands.push(self.retained.get(index).map_err(recovery)?);
            }
            outputs.clear();
            self.instance.apply_batch(&commands, &mut outputs).map_err(|(_, fault)| recovery(fault))?;
        }
        Ok(())
    }

    /// Whether enough commands piled up since the checkpoint to take a new one.
    pub(crate) fn checkpoint_due(&self) -> bool {
        self.retained.len() >= crate::engine::RETAINED_COMMANDS_MAX.max(self.checkpoint.len() / 4)
    }

    pub(crate) fn take_checkpoint(&mut self) -> Result<(), ModuleFault> {
        let mut bytes = Vec::new();
        self.instance.snapshot(&mut bytes)?;
        self.checkpoint = bytes;
        self.checkpoint_version = self.instance.state_version();
        self.retained.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(seq: u64) -> CommandContext {
        CommandContext { seq, ts_ns: seq * 1_000 }
    }

    #[test]
    fn retained_commands_come_back_as_they_went_in_and_truncate_to_a_prefix() {
        let mut retained: Retained<Vec<u64>> = Retained::new();
        let commands: Vec<Vec<u64>> = (0..100u64).map(|n| (0..n % 7).map(|i| i * n).collect()).collect();
        for (seq, command) in commands.iter().enumerate() {
            retained.push(&ctx(seq as u64 + 1), command);
        }
        assert_eq!(retained.len(), 100);
        for (index, command) in commands.iter().enumerate() {
            assert_eq!(retained.get(index).unwrap(), (ctx(index as u64 + 1), command.clone()));
        }
        retained.truncate(40);
        assert_eq!(retained.len(), 40);
        assert_eq!(retained.get(39).unwrap(), (ctx(40), commands[39].clone()));
        // What is pushed after a truncation follows the kept prefix directly.
        retained.push(&ctx(41), &vec![7, 7]);
        assert_eq!(retained.get(40).unwrap(), (ctx(41), vec![7, 7]));
        assert_eq!(retained.get(39).unwrap(), (ctx(40), commands[39].clone()));
        retained.truncate(0);
        assert_eq!(retained.len(), 0);
        retained.push(&ctx(1), &vec![1]);
        assert_eq!(retained.get(0).unwrap(), (ctx(1), vec![1]));
    }
}

//! One module instance with its checkpoint: what it takes to put the
//! instance back exactly as it was after any of its retained commands.
//!
//! A checkpoint is an [`InstanceImage`], the instance's memory and globals
//! byte for byte, never the module's own snapshot: rolling back a faulted
//! command must not depend on the module's `restore` being right (a module
//! whose `restore` traps must still be rolled back), and must give back the
//! very layout the command met, so that what comes next (outputs, fuel) is
//! the same as if the command had never run.

use std::marker::PhantomData;
use std::sync::Arc;

use exhost_guest_sdk::codec::{decode, encode_into};
use exhost_guest_sdk::{Abi, CommandContext, MatchingAbi, MatchingCommand};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::command::{ModuleLimits, ModuleTarget};
use crate::error::EngineError;
use crate::module::{Instance, InstanceImage, Loader, ModuleFault, ModuleHash};
use crate::tap::{Tap, fuel_after};

/// One module instance with what it takes to rebuild it.
pub(crate) struct Slot<A: Abi> {
    pub(crate) instance: Box<dyn Instance<A>>,
    pub(crate) hash: ModuleHash,
    pub(crate) limits: ModuleLimits,
    /// The instance's image at some point (shared with the snapshot that took it).
    pub(crate) checkpoint: Arc<InstanceImage>,
    /// Commands applied since the checkpoint, in order.
    pub(crate) retained: Retained<A::Command>,
    /// While a shadow run watches this market: each call the instance
    /// applied since the host last took them, with what it produced. A call
    /// undone with its command is taken out again, so what the host takes is
    /// exactly what the market's state went through.
    pub(crate) tap: Option<Tap>,
}

/// Fewest commands retained before a new checkpoint is taken.
pub const RETAINED_COMMANDS_MIN: usize = 10_000;
/// A larger image is copied less often: one command retained per this many
/// image bytes. A checkpoint after the first is copied into the previous
/// one's buffers at about 0.14 ns a byte (a plain memcpy on this project's VM
/// is 0.13: `exhost-bench memory`), and a book command costs about 1.5 µs, so
/// checkpoints cost about a tenth of a command's time, and a rollback
/// re-applies at most one command per 1,024 image bytes (about 140,000
/// commands at a million resting orders). A fresh image costs 0.7 ns a byte,
/// mostly page faults: at that price this was 256.
pub const IMAGE_BYTES_PER_RETAINED_COMMAND: usize = 1_024;
/// A native instance's checkpoint is its own snapshot, which costs far more
/// per byte than a memory copy: one command retained per 4 of its bytes.
pub const SNAPSHOT_BYTES_PER_RETAINED_COMMAND: usize = 4;

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

impl Slot<MatchingAbi> {
    /// Whether the module decodes this command (a module built before it
    /// existed does not: it is never sent one).
    pub(crate) fn knows(&self, command: &MatchingCommand) -> bool {
        command.revision() <= self.instance.abi_revision()
    }

    /// [`Slot::run`], and what it did, for the shadow run if one watches.
    pub(crate) fn run_tapped(
        &mut self,
        ctx: CommandContext,
        command: MatchingCommand,
    ) -> Result<Vec<exhost_guest_sdk::MatchingEvent>, ModuleFault> {
        if self.tap.is_none() {
            return self.run(ctx, command);
        }
        let fuel_before = self.instance.apply_fuel_used();
        let output = self.run(ctx, command.clone())?;
        let fuel_used = fuel_after(fuel_before, self.instance.apply_fuel_used());
        if let Some(tap) = &mut self.tap {
            tap.push(ctx, command, &output, fuel_used);
        }
        Ok(output)
    }
}

impl<A: Abi> Slot<A> {
    /// A slot for a fresh instance: its image now is the checkpoint.
    pub(crate) fn new(
        mut instance: Box<dyn Instance<A>>,
        hash: ModuleHash,
        limits: ModuleLimits,
    ) -> Result<Slot<A>, ModuleFault> {
        let checkpoint = Arc::new(instance.image()?);
        Ok(Slot { instance, hash, limits, checkpoint, retained: Retained::new(), tap: None })
    }

    /// A slot for an instance resumed from `checkpoint`.
    pub(crate) fn resumed(
        instance: Box<dyn Instance<A>>,
        hash: ModuleHash,
        limits: ModuleLimits,
        checkpoint: Arc<InstanceImage>,
    ) -> Slot<A> {
        Slot { instance, hash, limits, checkpoint, retained: Retained::new(), tap: None }
    }

    pub(crate) fn run(&mut self, ctx: CommandContext, command: A::Command) -> Result<A::Output, ModuleFault> {
        let mut out = A::Output::default();
        self.instance.apply(&ctx, &command, &mut out)?;
        self.retained.push(&ctx, &command);
        Ok(out)
    }

    /// Put the instance back exactly as it was after its first `keep` retained
    /// commands: resume the checkpoint, then apply them again, one by one as
    /// they were first applied, so each meets the memory it met then.
    pub(crate) fn rebuild(
        &mut self,
        loader: &dyn Loader<A>,
        keep: usize,
        target: ModuleTarget,
    ) -> Result<(), EngineError> {
        assert!(keep <= self.retained.len(), "a rebuild keeps at most the commands retained");
        self.instance = loader
            .resume(target, &self.hash, &self.limits, &self.checkpoint)
            .map_err(|source| EngineError::Load { target, source })?;
        // The calls undone are the newest, all of the current command, which
        // the tap holds (it is emptied between commands only).
        let undone = self.retained.len() - keep;
        if let Some(tap) = &mut self.tap {
            tap.keep(tap.len().saturating_sub(undone));
        }
        self.retained.truncate(keep);
        // A retained command succeeded on this very state before: failing now
        // means the module is not deterministic, and the engine must stop.
        let recovery = |fault| EngineError::Recovery { target, fault };
        let mut out = A::Output::default();
        for index in 0..self.retained.len() {
            let (ctx, command) = self.retained.get(index).map_err(recovery)?;
            A::clear_output(&mut out);
            self.instance.apply(&ctx, &command, &mut out).map_err(recovery)?;
        }
        Ok(())
    }

    /// Whether enough commands piled up since the checkpoint to take a new one.
    pub(crate) fn checkpoint_due(&self) -> bool {
        let bytes_per_command = match &*self.checkpoint {
            InstanceImage::Memory(_) => IMAGE_BYTES_PER_RETAINED_COMMAND,
            InstanceImage::Snapshot { .. } => SNAPSHOT_BYTES_PER_RETAINED_COMMAND,
        };
        self.retained.len() >= RETAINED_COMMANDS_MIN.max(self.checkpoint.stored_bytes() / bytes_per_command)
    }

    /// Put `instance` of the module `hash` in this slot from now on (a hot
    /// swap), its image the new checkpoint, nothing retained. The image goes
    /// into the old checkpoint's buffers when nothing else holds them. On an
    /// error the slot is as it was.
    pub(crate) fn hand_over_to(
        &mut self,
        mut instance: Box<dyn Instance<A>>,
        hash: ModuleHash,
    ) -> Result<(), ModuleFault> {
        match Arc::get_mut(&mut self.checkpoint) {
            Some(checkpoint) => instance.image_into(checkpoint)?,
            None => self.checkpoint = Arc::new(instance.image()?),
        }
        self.instance = instance;
        self.hash = hash;
        self.retained.clear();
        Ok(())
    }

    pub(crate) fn take_checkpoint(&mut self) -> Result<(), ModuleFault> {
        // Into the old checkpoint's buffers unless a snapshot still holds them.
        match Arc::get_mut(&mut self.checkpoint) {
            Some(checkpoint) => self.instance.image_into(checkpoint)?,
            None => self.checkpoint = Arc::new(self.instance.image()?),
        }
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

//! One module instance with its checkpoint: what it takes to rebuild the
//! instance exactly as it was after any of its retained commands.

use exhost_guest_sdk::{Abi, CommandContext};

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
    pub(crate) retained: Vec<(CommandContext, A::Command)>,
}

impl<A: Abi> Slot<A> {
    pub(crate) fn new(
        instance: Box<dyn Instance<A>>,
        hash: ModuleHash,
        limits: ModuleLimits,
    ) -> Result<Slot<A>, ModuleFault> {
        let mut slot =
            Slot { instance, hash, limits, checkpoint: Vec::new(), checkpoint_version: 0, retained: Vec::new() };
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
        Slot { instance, hash, limits, checkpoint: bytes, checkpoint_version, retained: Vec::new() }
    }

    pub(crate) fn run(&mut self, ctx: CommandContext, command: A::Command) -> Result<A::Output, ModuleFault> {
        let mut out = A::Output::default();
        self.instance.apply(&ctx, &command, &mut out)?;
        self.retained.push((ctx, command));
        Ok(out)
    }

    /// Rebuild the instance as it was after its first `keep` retained commands.
    pub(crate) fn rebuild(&mut self, loader: &dyn Loader<A>, keep: usize, target: &str) -> Result<(), EngineError> {
        self.instance = loader
            .restore(&self.hash, &self.limits, self.checkpoint_version, &self.checkpoint)
            .map_err(|source| EngineError::Load { target: target.to_string(), source })?;
        self.retained.truncate(keep);
        for (ctx, command) in &self.retained {
            let mut out = A::Output::default();
            self.instance
                .apply(ctx, command, &mut out)
                .map_err(|fault| EngineError::Recovery { target: target.to_string(), fault })?;
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

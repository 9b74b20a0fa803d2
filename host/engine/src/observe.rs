//! What the engine tells the host about its modules, outside the
//! deterministic output: the faults it turned into rejections, with their
//! details, and the memory each instance holds. The host logs and exports
//! them; nothing here affects state.

use exhost_guest_sdk::CommandContext;

use crate::command::{MarketId, ModuleTarget};
use crate::engine::Engine;
use crate::error::{Abort, EngineError, fault_reason};
use crate::module::ModuleFault;
use crate::report::{FaultReport, ModuleReport};

/// Fault reports held until the host takes them; past this, only counted.
const FAULT_REPORTS_MAX: usize = 64;

impl Engine {
    /// Keep a fault's details for the host and turn it into the command's rejection.
    pub(crate) fn fault(&mut self, ctx: CommandContext, target: ModuleTarget, fault: ModuleFault) -> Abort {
        let reason = fault_reason(&fault);
        self.report_fault(ctx, target, fault);
        Abort::Fault(reason)
    }

    /// Keep a fault's details for the host.
    pub(crate) fn report_fault(&mut self, ctx: CommandContext, target: ModuleTarget, fault: ModuleFault) {
        if self.faults.len() < FAULT_REPORTS_MAX {
            self.faults.push(FaultReport { seq: ctx.seq, target, fault });
        } else {
            self.faults_dropped += 1;
        }
    }

    /// Each instance, the position module's first, then each market's: what
    /// it holds in memory and what a rebuild of it would have to redo.
    pub fn module_reports(&self) -> Vec<ModuleReport> {
        let position = self.position.as_ref().map(|slot| {
            (
                ModuleTarget::Position,
                slot.instance.memory_bytes(),
                slot.retained.len(),
                slot.retained.heap_bytes(),
                slot.checkpoint.stored_bytes(),
            )
        });
        let markets = (self.markets.iter().enumerate()).map(|(index, slot)| {
            (
                ModuleTarget::Market(MarketId(index as u32)),
                slot.instance.memory_bytes(),
                slot.retained.len(),
                slot.retained.heap_bytes(),
                slot.checkpoint.stored_bytes(),
            )
        });
        position
            .into_iter()
            .chain(markets)
            .map(|(target, memory_bytes, retained_commands, retained_bytes, checkpoint_bytes)| ModuleReport {
                module: target,
                memory_bytes,
                retained_commands,
                retained_bytes,
                checkpoint_bytes,
            })
            .collect()
    }

    /// Rebuild every instance from its checkpoint and retained commands, as
    /// a fault in it would, and say how long each took: the pause a fault
    /// costs. For benchmarks and checks; the state does not change.
    pub fn rebuild_modules(&mut self) -> Result<Vec<(ModuleTarget, std::time::Duration)>, EngineError> {
        let mut took = Vec::new();
        if let Some(slot) = self.position.as_mut() {
            let started = std::time::Instant::now();
            slot.rebuild(&*self.loader, slot.retained.len(), ModuleTarget::Position)?;
            took.push((ModuleTarget::Position, started.elapsed()));
        }
        for (index, slot) in self.markets.iter_mut().enumerate() {
            let started = std::time::Instant::now();
            let market = MarketId(index as u32);
            slot.rebuild(&*self.loader, slot.retained.len(), ModuleTarget::Market(market))?;
            took.push((ModuleTarget::Market(market), started.elapsed()));
        }
        Ok(took)
    }

    /// The module faults since the last call, and how many more were not kept.
    pub fn take_faults(&mut self) -> (Vec<FaultReport>, u64) {
        (std::mem::take(&mut self.faults), std::mem::take(&mut self.faults_dropped))
    }
}

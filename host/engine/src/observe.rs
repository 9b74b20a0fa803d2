//! What the engine tells the host about its modules, outside the
//! deterministic output: the faults it turned into rejections, with their
//! details, and the memory each instance holds. The host logs and exports
//! them; nothing here affects state.

use exhost_guest_sdk::CommandContext;

use crate::command::MarketId;
use crate::engine::{Abort, Engine, EngineError, Target, fault_reason};
use crate::module::ModuleFault;

/// A module fault the engine turned into a rejection. The rejection event
/// carries only the reason code (it is part of the deterministic output); the
/// operator needs the rest: which command, which module, and its message.
#[derive(Clone, Debug)]
pub struct FaultReport {
    pub seq: u64,
    pub target: String,
    pub fault: ModuleFault,
}

/// One instance as the host sees it from outside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleReport {
    /// "position", or "market N".
    pub module: String,
    /// Its linear memory, where the runtime can tell (not for native builds).
    pub memory_bytes: Option<usize>,
    /// Commands applied since its checkpoint, kept to rebuild it after a
    /// fault: a rebuild restores the checkpoint and applies them all again.
    pub retained_commands: usize,
    /// What the retained commands take, encoded.
    pub retained_bytes: usize,
    /// The checkpoint's size.
    pub checkpoint_bytes: usize,
}

/// Fault reports held until the host takes them; past this, only counted.
const FAULT_REPORTS_MAX: usize = 64;

impl Engine {
    /// Keep a fault's details for the host and turn it into the command's rejection.
    pub(crate) fn fault(&mut self, ctx: CommandContext, target: Target, fault: ModuleFault) -> Abort {
        let reason = fault_reason(&fault);
        self.report_fault(ctx, target.name(), fault);
        Abort::Fault(reason)
    }

    /// Keep a fault's details for the host.
    pub(crate) fn report_fault(&mut self, ctx: CommandContext, target: String, fault: ModuleFault) {
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
                Target::Position,
                slot.instance.memory_bytes(),
                slot.retained.len(),
                slot.retained.heap_bytes(),
                slot.checkpoint.stored_bytes(),
            )
        });
        let markets = (self.markets.iter().enumerate()).map(|(index, slot)| {
            (
                Target::Market(MarketId(index as u32)),
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
                module: match target {
                    Target::Position => "position".into(),
                    Target::Market(market) => format!("market {market}"),
                },
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
    pub fn rebuild_modules(&mut self) -> Result<Vec<(String, std::time::Duration)>, EngineError> {
        let mut took = Vec::new();
        if let Some(slot) = self.position.as_mut() {
            let started = std::time::Instant::now();
            slot.rebuild(&*self.loader, slot.retained.len(), &Target::Position.name())?;
            took.push(("position".to_string(), started.elapsed()));
        }
        for (index, slot) in self.markets.iter_mut().enumerate() {
            let started = std::time::Instant::now();
            let market = MarketId(index as u32);
            slot.rebuild(&*self.loader, slot.retained.len(), &Target::Market(market).name())?;
            took.push((format!("market {market}"), started.elapsed()));
        }
        Ok(took)
    }

    /// The module faults since the last call, and how many more were not kept.
    pub fn take_faults(&mut self) -> (Vec<FaultReport>, u64) {
        (std::mem::take(&mut self.faults), std::mem::take(&mut self.faults_dropped))
    }
}

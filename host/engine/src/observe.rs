//! What the engine tells the host about its modules, outside the
//! deterministic output: the faults it turned into rejections, with their
//! details, and the memory each instance holds. The host logs and exports
//! them; nothing here affects state.

use exhost_guest_sdk::CommandContext;

use crate::command::MarketId;
use crate::engine::{Abort, Engine, Target, fault_reason};
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

/// Fault reports held until the host takes them; past this, only counted.
const FAULT_REPORTS_MAX: usize = 64;

impl Engine {
    /// Keep a fault's details for the host and turn it into the command's rejection.
    pub(crate) fn fault(&mut self, ctx: CommandContext, target: Target, fault: ModuleFault) -> Abort {
        let reason = fault_reason(&fault);
        if self.faults.len() < FAULT_REPORTS_MAX {
            self.faults.push(FaultReport { seq: ctx.seq, target: target.name(), fault });
        } else {
            self.faults_dropped += 1;
        }
        Abort::Fault(reason)
    }

    /// Memory held by each instance (where its runtime can tell): the
    /// position module's, then each market's.
    pub fn module_memory(&self) -> (Option<usize>, Vec<(MarketId, Option<usize>)>) {
        let position = self.position.as_ref().and_then(|slot| slot.instance.memory_bytes());
        let markets = (self.markets.iter().enumerate())
            .map(|(index, slot)| (MarketId(index as u32), slot.instance.memory_bytes()))
            .collect();
        (position, markets)
    }

    /// The module faults since the last call, and how many more were not kept.
    pub fn take_faults(&mut self) -> (Vec<FaultReport>, u64) {
        (std::mem::take(&mut self.faults), std::mem::take(&mut self.faults_dropped))
    }
}

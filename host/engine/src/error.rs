//! What stops the engine, and what stops one command.

use exhost_guest_sdk::Reason;

use crate::command::{MarketId, ModuleTarget};
use crate::module::{LoadError, ModuleFault};

/// A failure that stops the engine: the journal cannot be applied any further.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error("command {got} arrived, but {expected} was expected next")]
    OutOfSequence { expected: u64, got: u64 },
    #[error("module for {target} could not be loaded")]
    Load {
        target: ModuleTarget,
        #[source]
        source: LoadError,
    },
    #[error("{target} could not be rebuilt after a module fault: {fault}")]
    Recovery { target: ModuleTarget, fault: ModuleFault },
    /// A call made in a copy of an instance (a query, a hand-over snapshot)
    /// faulted; the live instance is untouched and the engine goes on.
    #[error("{target} faulted in a copy of its instance: {fault}")]
    Detached { target: ModuleTarget, fault: ModuleFault },
    #[error("snapshot is unusable: {0}")]
    BadSnapshot(String),
    #[error("no market {0}")]
    NoMarket(MarketId),
    #[error("no position module is installed")]
    NoPositionModule,
}

/// Why a command stopped before its end.
pub(crate) enum Abort {
    /// A module faulted: undo the command and reject it with this reason.
    Fault(Reason),
    /// The engine cannot go on.
    Fatal(EngineError),
}

impl From<EngineError> for Abort {
    fn from(error: EngineError) -> Abort {
        Abort::Fatal(error)
    }
}

pub(crate) fn fault_reason(fault: &ModuleFault) -> Reason {
    match fault {
        ModuleFault::OutOfFuel { .. } => Reason::ModuleOutOfFuel,
        ModuleFault::Trap { .. } => Reason::ModuleTrap,
        ModuleFault::MemoryLimit { .. } => Reason::ModuleMemoryLimit,
        _ => Reason::ModuleProtocol,
    }
}

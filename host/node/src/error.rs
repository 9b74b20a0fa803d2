//! The write path's errors, one family per seam, each keeping its source.

use std::sync::Arc;

use exhost_engine::EngineError;
use exhost_store::StoreError;

/// Why the node stopped taking commands. It stays halted until a restart,
/// which replays the journal: nothing journaled is lost by a halt.
#[derive(Debug, thiserror::Error)]
pub enum Halt {
    /// The outcome of the batch is unknown: a failed sync can leave it written.
    #[error("journal write failed at seq {seq}: {source}")]
    JournalWrite {
        seq: u64,
        #[source]
        source: StoreError,
    },
    #[error("the journal watermark could not be raised at seq {seq}: {source}")]
    Watermark {
        seq: u64,
        #[source]
        source: std::io::Error,
    },
    /// The engine could not apply a journaled command (a module that cannot
    /// be loaded, say): going on would diverge from the journal.
    #[error("command {seq} cannot be applied: {source}")]
    Apply {
        seq: u64,
        #[source]
        source: EngineError,
    },
    #[error("read model read failed at seq {seq}: {source}")]
    ReadModelRead {
        seq: u64,
        #[source]
        source: StoreError,
    },
    #[error("read model write failed: {source}")]
    ReadModelWrite {
        #[source]
        source: StoreError,
    },
}

/// Why a submitted command has no outcome to report.
#[derive(Clone, Debug, thiserror::Error)]
pub enum SubmitError {
    /// Refused before the journal: not recorded, ever.
    #[error("the command queue is full; retry later")]
    Overloaded,
    /// The journal write of its batch failed: the command may or may not be
    /// journaled, so its outcome is unknown until a restart replays the journal.
    #[error("the journal write failed: {0}")]
    Journal(#[source] Arc<Halt>),
    /// Refused before the journal: not recorded, ever.
    #[error("the engine has halted: {0}")]
    Halted(#[source] Arc<Halt>),
    /// Journaled (durable) but not applied: the engine stopped first. It takes
    /// effect when the host restarts and replays the journal.
    #[error("journaled but not applied, the engine stopped: {0}")]
    NotApplied(#[source] Arc<Halt>),
    /// Refused before the journal, or (if it was already sequenced) answered by
    /// the next start's replay.
    #[error("the host is shutting down")]
    ShuttingDown,
}

/// A request to the engine thread that did not get its answer.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("the engine has stopped")]
    Stopped,
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a write-path thread could not start: {0}")]
    Thread(#[source] std::io::Error),
}

impl From<std::io::Error> for NodeError {
    fn from(error: std::io::Error) -> NodeError {
        NodeError::Thread(error)
    }
}

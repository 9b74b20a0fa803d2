//! The write path's errors, one family per seam, each keeping its source.

use std::path::{Path, PathBuf};
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
    /// A cluster node cannot follow the replicated log (a message it cannot
    /// read, a gap, a log that lost what this node's journal holds): going
    /// on would diverge from the other nodes.
    #[error("the replicated log cannot be followed: {reason}")]
    Replication { reason: String },
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
    /// Refused by the replicated command log: this node is not its writer
    /// (a standby, or an active node that was deposed). Not recorded, ever;
    /// the same command may be sent to the active node.
    #[error("this node is not the active node: {0}")]
    NotActive(String),
    /// The replicated command log did not confirm the batch in time: it may
    /// or may not be in the log, and this node stopped writing (another node
    /// takes over and applies whatever the log holds).
    #[error("the replicated command log did not confirm the write: {0}")]
    Unconfirmed(String),
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

/// Why no state could be rebuilt from a data directory (start-up,
/// point-in-time queries, `exhost replay`, `verify`, fixtures).
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("journal record {seq} holds no command this host understands: {source}")]
    Undecodable {
        seq: u64,
        #[source]
        source: exhost_guest_sdk::codec::DecodeError,
    },
    #[error("replaying command {seq}: {source}")]
    Apply {
        seq: u64,
        #[source]
        source: EngineError,
    },
    #[error("the journal ends at {last_seq} before the requested sequence {to_seq}")]
    JournalShort { last_seq: u64, to_seq: u64 },
    #[error(
        "the newest snapshot is at {snapshot_seq} but the journal ends at {last_seq}: the journal has lost records"
    )]
    SnapshotAhead { snapshot_seq: u64, last_seq: u64 },
}

/// Why a data directory cannot be used (opened, checked against its
/// watermark, keyed, seeded).
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("no exhost data in {data_dir} (start `exhost serve` with this --data-dir first)")]
    Missing { data_dir: PathBuf },
    #[error("opening {db_dir} (is `exhost serve` running on it?): {source}")]
    Open {
        db_dir: PathBuf,
        #[source]
        source: StoreError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the journal ends at seq {last_seq}, but commands up to seq {confirmed} were acknowledged (and up to seq {} may have been): at least {} acknowledged commands are lost, so the write-ahead log was cut or damaged. Starting would hand their sequence numbers to new commands. Restore the data directory from a copy, or accept the loss on the record with `exhost repair --accept-journal-loss --data-dir {}`",
        .ceiling - 1, .confirmed - .last_seq, .data_dir.display()
    )]
    JournalLost { data_dir: PathBuf, last_seq: u64, confirmed: u64, ceiling: u64 },
    /// A file of the data directory (the watermark, the secrets key) could not be read or written.
    #[error("{action} {path}: {source}")]
    File {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} {problem}")]
    Malformed { path: PathBuf, problem: String },
    #[error("no randomness for {purpose}: {reason}")]
    Randomness { purpose: &'static str, reason: String },
    #[error("configuring wasmtime: {0}")]
    Runtime(#[source] exhost_runtime::RuntimeError),
}

impl DataDirError {
    pub(crate) fn file(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DataDirError {
        let path = path.to_path_buf();
        move |source| DataDirError::File { action, path, source }
    }
}

//! What passes along the write path: settings, commands between the
//! threads, and what comes back.

use std::sync::Arc;

use exhost_engine::{Command, Event};
use exhost_store::Durability;
use tokio::sync::oneshot;

use crate::error::SubmitError;
use crate::secrets::Sealer;

/// The outcome of one applied command, as the engine reported it.
#[derive(Clone, Debug)]
pub struct Applied {
    pub seq: u64,
    pub ts_ns: u64,
    pub events: Vec<Event>,
}

/// Settings of the write path.
#[derive(Clone, Debug)]
pub struct NodeSettings {
    pub durability: Durability,
    pub batch_commands_max: usize,
    pub submit_queue_max: usize,
    pub snapshot_every_commands: u64,
    /// Opens sealed API secrets (`None`: only keys in clear and Ed25519 keys work).
    pub sealer: Option<Arc<Sealer>>,
}

pub(crate) struct Submission {
    pub(crate) command: Command,
    pub(crate) reply: oneshot::Sender<Result<Applied, SubmitError>>,
}

/// A command with its place in the journal, durable once the engine sees it.
pub(crate) struct Sequenced {
    pub(crate) seq: u64,
    pub(crate) ts_ns: u64,
    pub(crate) command: Command,
    pub(crate) reply: oneshot::Sender<Result<Applied, SubmitError>>,
}

/// A snapshot the node stored.
#[derive(Clone, Debug)]
pub struct SnapshotTaken {
    pub seq: u64,
    pub digest_hex: String,
    pub size_bytes: u64,
}

/// Nanoseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ns() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

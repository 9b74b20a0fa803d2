//! The node's part in the cluster, as a loop of roles: follow the command
//! stream as a standby until the lease can be taken; take over (catch up to
//! the stream's end, write a term marker that fences the previous writer,
//! let the sequencer continue where the stream ends); lead (renew the lease,
//! publish events downstream) until the lease or the stream is lost; follow
//! again. A replica only ever follows.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use async_nats::jetstream::{self, consumer, kv, stream};
use exhost_engine::Command;
use exhost_guest_sdk::codec::decode as decode_command;
use exhost_node::{Halt, Node};
use exhost_server::cluster::Role;
use exhost_store::journal::decode_record;
use exhost_store::{Durability, Store};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::events::EventPublisher;
use crate::lease::{LeaseTiming, LeaseValue, LeaseWatch, Observed};
use crate::log::{PublishFailure, publish_chain};
use crate::shared::{Shared, WriterLease};
use crate::wire::{self, LogMessage};

/// The lease's key in the cluster bucket.
pub const LEASE_KEY: &str = "active";
/// How often the node reads where the stream ends (for `log_seq`).
const LOG_SEQ_EVERY: Duration = Duration::from_millis(1_000);

/// Where following stands.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Position {
    /// The next stream message to read.
    pub(crate) next_stream_seq: u64,
    /// The command sequence the next batch must start at.
    pub(crate) next_seq: u64,
}

/// A lease this node has just taken.
struct Acquired {
    revision: u64,
    term: u64,
    sent: Instant,
}

/// Puts uploaded modules in the stream, as the active node.
pub(crate) struct ModuleReplicator {
    pub(crate) js: jetstream::Context,
}

impl ModuleReplicator {
    pub(crate) async fn replicate(&self, shared: &Shared, hash: [u8; 32], bytes: Vec<u8>) -> Result<(), String> {
        let mut writer = shared.writer.lock().await;
        let Some(lease) = writer.lease.clone().filter(|lease| Instant::now() < lease.holds_until) else {
            return Err(format!("this node is not the active node ({})", shared.not_writer_reason()));
        };
        let messages = wire::encode_module(writer.next_seq, hash, &bytes)
            .into_iter()
            .enumerate()
            .map(|(i, payload)| (format!("m{}:{i}", hex::encode(hash)), payload))
            .collect();
        let prefix = format!("{}:{}", shared.node, lease.term);
        match publish_chain(&self.js, writer.last_stream_seq, &prefix, messages, lease.holds_until).await {
            Ok(last) => {
                writer.last_stream_seq = last;
                Ok(())
            }
            Err(failure) => {
                writer.lease = None;
                shared.stepped_down.notify_one();
                Err(match failure {
                    PublishFailure::Fenced(reason) | PublishFailure::Unknown(reason) => reason,
                })
            }
        }
    }
}

pub(crate) struct Controller {
    pub(crate) shared: Arc<Shared>,
    pub(crate) js: jetstream::Context,
    pub(crate) commands: stream::Stream,
    pub(crate) kv: kv::Store,
    pub(crate) store: Store,
    pub(crate) node: Arc<Node>,
    pub(crate) durability: Durability,
    pub(crate) timing: LeaseTiming,
    /// Where other nodes reach this one's API.
    pub(crate) http: String,
    pub(crate) position: Position,
    pub(crate) events: EventPublisher,
    /// Module chunks seen, by hash, until each module is whole.
    modules: BTreeMap<[u8; 32], Vec<Option<Vec<u8>>>>,
    /// The lease as last read; kept when following starts again, so a
    /// hiccup does not restart the wait for a lapse.
    watch: LeaseWatch,
    last_log_seq_read: Option<Instant>,
}

impl Controller {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        shared: Arc<Shared>,
        js: jetstream::Context,
        commands: stream::Stream,
        kv: kv::Store,
        store: Store,
        node: Arc<Node>,
        durability: Durability,
        timing: LeaseTiming,
        http: String,
        position: Position,
        events: EventPublisher,
    ) -> Controller {
        Controller {
            shared,
            js,
            commands,
            kv,
            store,
            node,
            durability,
            timing,
            http,
            position,
            events,
            modules: BTreeMap::new(),
            watch: LeaseWatch::default(),
            last_log_seq_read: None,
        }
    }

    pub(crate) async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        loop {
            let acquired = match self.follow(&mut shutdown).await {
                Ok(Some(acquired)) => acquired,
                Ok(None) => return,
                Err(error) => {
                    if self.node.health.problem().is_some() {
                        tracing::error!(error = %format!("{error:#}"), "the node halted; it no longer follows the log");
                        let _ = shutdown.changed().await;
                        return;
                    }
                    tracing::warn!(error = %format!("{error:#}"), "following the command stream failed; starting again");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
            };
            let started = Instant::now();
            match self.take_over(acquired).await {
                Ok(revision) => {
                    metrics::counter!("exhost_cluster_takeovers_total").increment(1);
                    tracing::info!(
                        node = %self.shared.node,
                        took_ms = started.elapsed().as_millis() as u64,
                        next_seq = self.position.next_seq,
                        "this node is now the active node"
                    );
                    let stop = self.lead(revision, &mut shutdown).await;
                    self.step_down().await;
                    if stop {
                        return;
                    }
                }
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "taking over failed; following again");
                    self.step_down().await;
                }
            }
        }
    }

    /// Follow the stream until this node takes the lease (`Some`) or the node stops (`None`).
    async fn follow(&mut self, shutdown: &mut watch::Receiver<bool>) -> anyhow::Result<Option<Acquired>> {
        let consumer = self
            .commands
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: self.position.next_stream_seq,
                },
                ..Default::default()
            })
            .await
            .context("creating a consumer of the command stream")?;
        let mut messages = consumer.messages().await.context("reading the command stream")?;
        let mut tick = tokio::time::interval(self.timing.watch_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return Ok(None),
                message = messages.next() => {
                    let message = message.ok_or_else(|| anyhow!("the command stream's consumer ended"))??;
                    let stream_seq = message.info().map_err(|error| anyhow!("a message without its stream position: {error}"))?.stream_sequence;
                    self.apply(stream_seq, &message.payload).await?;
                }
                _ = tick.tick() => {
                    self.read_log_seq().await;
                    match self.read_lease().await {
                        Ok(observed) => self.watch.observe(observed, Instant::now()),
                        // The bucket is moving its leader, say: the lapse clock runs on.
                        Err(error) => tracing::debug!(error = %format!("{error:#}"), "reading the lease failed"),
                    }
                    let watch = &self.watch;
                    let holder = watch.holder().cloned();
                    let term = watch.term();
                    self.shared.set_view(|view| {
                        view.active_node = holder.as_ref().map(|h| h.node.clone());
                        view.active_http = holder.as_ref().map(|h| h.http.clone());
                        view.term = view.term.max(term);
                    });
                    if self.shared.replica || self.node.health.problem().is_some() {
                        continue;
                    }
                    if let Some(revision) = self.watch.takeable(Instant::now(), self.timing.ttl) {
                        let term = self.watch.term().max(self.shared.view().term) + 1;
                        let value = LeaseValue { node: self.shared.node.clone(), http: self.http.clone(), term };
                        let sent = Instant::now();
                        match self.kv.update(LEASE_KEY, serde_json::to_vec(&value)?.into(), revision).await {
                            Ok(revision) => {
                                self.watch.forget();
                                return Ok(Some(Acquired { revision, term, sent }));
                            }
                            Err(error) => {
                                tracing::debug!(%error, "another node took the lease first");
                                self.watch.forget();
                            }
                        }
                    }
                }
            }
        }
    }

    async fn read_lease(&self) -> anyhow::Result<Observed> {
        let entry = self.kv.entry(LEASE_KEY).await.context("reading the lease")?;
        Ok(match entry {
            None => Observed::Free { revision: 0 },
            Some(entry) if entry.operation != kv::Operation::Put => Observed::Free { revision: entry.revision },
            Some(entry) => match serde_json::from_slice::<LeaseValue>(&entry.value) {
                Ok(value) => Observed::Held { revision: entry.revision, value },
                // An entry no node of this version wrote: wait it out like any other.
                Err(_) => Observed::Held {
                    revision: entry.revision,
                    value: LeaseValue { node: "?".into(), http: String::new(), term: 0 },
                },
            },
        })
    }

    /// Where the stream ends, in commands, now and then (for `log_seq`).
    async fn read_log_seq(&mut self) {
        if self.last_log_seq_read.is_some_and(|at| at.elapsed() < LOG_SEQ_EVERY) {
            return;
        }
        self.last_log_seq_read = Some(Instant::now());
        if let Ok(Some(last)) = last_command_in_stream(&self.commands).await {
            self.shared.saw_log_seq(last);
        }
    }

    /// Apply one stream message: journal and apply a batch, store a module, note a term.
    async fn apply(&mut self, stream_seq: u64, payload: &[u8]) -> anyhow::Result<()> {
        let message = match wire::decode(payload) {
            Ok(message) => message,
            Err(error) => return Err(self.halt(format!("stream message {stream_seq} cannot be read: {error}"))),
        };
        match message {
            LogMessage::Batch { first_seq, records } => {
                let last_seq = first_seq + records.len() as u64 - 1;
                if last_seq < self.position.next_seq {
                    // Already in this node's journal (it wrote it, or followed it before a restart).
                } else if first_seq != self.position.next_seq {
                    // Ahead of this node: retention dropped what it had not read yet.
                    let hint = if first_seq > self.position.next_seq {
                        format!(" (the stream was trimmed past this node): {MOVE_ASIDE}")
                    } else {
                        String::new()
                    };
                    return Err(self.halt(format!(
                        "stream message {stream_seq} holds commands {first_seq}..={last_seq}, but the next command is {}{hint}",
                        self.position.next_seq
                    )));
                } else {
                    let mut batch = Vec::with_capacity(records.len());
                    for (i, record) in records.iter().enumerate() {
                        let seq = first_seq + i as u64;
                        let record = decode_record(seq, record)?;
                        let command: Command = decode_command(&record.command)
                            .map_err(|error| self.halt(format!("command {seq} does not decode: {error}")))?;
                        batch.push((seq, record.ts_ns, command));
                    }
                    let (store, durability) = (self.store.clone(), self.durability);
                    tokio::task::spawn_blocking(move || {
                        let slices: Vec<(u64, &[u8])> =
                            records.iter().enumerate().map(|(i, r)| (first_seq + i as u64, r.as_slice())).collect();
                        store.append_journal(slices, durability)
                    })
                    .await??;
                    self.node.follow(batch).await?;
                    self.position.next_seq = last_seq + 1;
                    self.shared.saw_log_seq(last_seq);
                    metrics::counter!("exhost_cluster_followed_commands_total").increment(last_seq - first_seq + 1);
                }
            }
            LogMessage::Term { term, node, .. } => {
                self.shared.set_view(|view| {
                    view.term = view.term.max(term);
                    if view.active_node.is_none() {
                        view.active_node = Some(node);
                    }
                });
            }
            LogMessage::ModuleChunk { hash, index, count, bytes, .. } => {
                let chunks = self.modules.entry(hash).or_insert_with(|| vec![None; count as usize]);
                if chunks.len() == count as usize {
                    chunks[index as usize] = Some(bytes);
                }
                if chunks.iter().all(Option::is_some) {
                    let chunks = self.modules.remove(&hash).unwrap_or_default();
                    let module: Vec<u8> = chunks.into_iter().flatten().flatten().collect();
                    if <[u8; 32]>::from(Sha256::digest(&module)) != hash {
                        return Err(
                            self.halt(format!("module {} in the stream does not match its hash", hex::encode(hash)))
                        );
                    }
                    let store = self.store.clone();
                    tokio::task::spawn_blocking(move || store.put_module(&hash, &module)).await??;
                }
            }
        }
        self.position.next_stream_seq = stream_seq + 1;
        Ok(())
    }

    fn halt(&self, reason: String) -> anyhow::Error {
        let halt = self.node.health.halt(Halt::Replication { reason });
        anyhow!("{halt}")
    }

    /// Catch up to the stream's end, fence the previous writer with a term
    /// marker, and let the sequencer continue. Returns the lease's revision.
    async fn take_over(&mut self, mut acquired: Acquired) -> anyhow::Result<u64> {
        let (name, http) = (self.shared.node.clone(), self.http.clone());
        let value = move |term| LeaseValue { node: name.clone(), http: http.clone(), term };
        loop {
            // Renew while catching up, which may take longer than a lease.
            if acquired.sent.elapsed() >= self.timing.renew_every {
                let sent = Instant::now();
                acquired.revision = self
                    .kv
                    .update(LEASE_KEY, serde_json::to_vec(&value(acquired.term))?.into(), acquired.revision)
                    .await?;
                acquired.sent = sent;
            }
            let last = self.commands.get_info().await?.state.last_sequence;
            while self.position.next_stream_seq <= last {
                let seq = self.position.next_stream_seq;
                let message = self
                    .commands
                    .get_raw_message(seq)
                    .await
                    .with_context(|| format!("reading stream message {seq}"))?;
                self.apply(seq, &message.payload).await?;
            }
            let marker = wire::encode_term(self.position.next_seq, acquired.term, &self.shared.node);
            let prefix = format!("{}:{}", self.shared.node, acquired.term);
            let until = self.timing.holds_until(acquired.sent);
            let last = self.position.next_stream_seq - 1;
            match publish_chain(&self.js, last, &prefix, vec![("term".into(), marker)], until).await {
                Ok(marker_seq) => {
                    self.position.next_stream_seq = marker_seq + 1;
                    break;
                }
                // The previous writer appended meanwhile: read it, and try again.
                Err(PublishFailure::Fenced(_)) => continue,
                Err(PublishFailure::Unknown(reason)) => {
                    return Err(anyhow!("the term marker was not confirmed: {reason}"));
                }
            }
        }
        // Everything followed is applied before the sequencer numbers anything.
        let last_applied = self.position.next_seq - 1;
        while self.node.health.applied_seq() < last_applied {
            if let Some(problem) = self.node.health.problem() {
                return Err(anyhow!("the node halted while taking over: {problem}"));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let last_ts_ns = {
            let store = self.store.clone();
            tokio::task::spawn_blocking(move || store.journal_last()).await??.map_or(0, |record| record.ts_ns)
        };
        self.node.resume_sequencing(self.position.next_seq, last_ts_ns);
        {
            let mut writer = self.shared.writer.lock().await;
            writer.lease =
                Some(WriterLease { term: acquired.term, holds_until: self.timing.holds_until(acquired.sent) });
            writer.last_stream_seq = self.position.next_stream_seq - 1;
            writer.next_seq = self.position.next_seq;
        }
        self.shared.set_view(|view| {
            view.role = Role::Active;
            view.active_node = Some(self.shared.node.clone());
            view.active_http = Some(self.http.clone());
            view.term = acquired.term;
        });
        self.events.start(self.node.clone());
        if self.position.next_seq == 1 {
            // The stream holds no command: this is the cluster's first active node,
            // and the only one that will ever see it empty (the term marker fenced
            // every other). It installs the defaults once.
            let node = self.node.clone();
            tokio::spawn(async move {
                if let Err(error) = exhost_server::serve::install_defaults(&node).await {
                    tracing::error!(error = %format!("{error:#}"), "installing the cluster's defaults failed");
                }
            });
        }
        Ok(acquired.revision)
    }

    /// Renew the lease until it is lost, the node halts, or it stops (`true`).
    async fn lead(&mut self, mut revision: u64, shutdown: &mut watch::Receiver<bool>) -> bool {
        let term = self.shared.view().term;
        let value = LeaseValue { node: self.shared.node.clone(), http: self.http.clone(), term };
        let Ok(value) = serde_json::to_vec(&value) else { return false };
        loop {
            tokio::select! {
                _ = shutdown.changed() => {
                    // Let go at once, so a standby need not wait a whole lease.
                    self.shared.writer.lock().await.lease = None;
                    let _ = self.kv.delete_expect_revision(LEASE_KEY, Some(revision)).await;
                    return true;
                }
                _ = self.shared.stepped_down.notified() => return false,
                _ = tokio::time::sleep(self.timing.renew_every) => {
                    if self.node.health.problem().is_some() {
                        self.shared.writer.lock().await.lease = None;
                        let _ = self.kv.delete_expect_revision(LEASE_KEY, Some(revision)).await;
                        return false;
                    }
                    let sent = Instant::now();
                    match self.kv.update(LEASE_KEY, value.clone().into(), revision).await {
                        Ok(next) => {
                            revision = next;
                            let mut writer = self.shared.writer.lock().await;
                            match writer.lease.as_mut() {
                                Some(lease) => lease.holds_until = self.timing.holds_until(sent),
                                None => return false,
                            }
                        }
                        Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                            tracing::warn!("another node took the lease: stepping down");
                            self.shared.writer.lock().await.lease = None;
                            return false;
                        }
                        Err(error) => {
                            let writer = self.shared.writer.lock().await;
                            if writer.lease.as_ref().is_none_or(|lease| Instant::now() >= lease.holds_until) {
                                tracing::warn!(%error, "the lease could not be renewed in time: stepping down");
                                drop(writer);
                                self.shared.writer.lock().await.lease = None;
                                return false;
                            }
                            tracing::warn!(%error, "renewing the lease failed; retrying");
                        }
                    }
                }
            }
        }
    }

    /// Stop writing, and follow from where the stream is known to end.
    async fn step_down(&mut self) {
        self.events.stop().await;
        let (last_stream_seq, next_seq) = {
            let mut writer = self.shared.writer.lock().await;
            writer.lease = None;
            (writer.last_stream_seq, writer.next_seq)
        };
        if next_seq > 0 && last_stream_seq >= self.position.next_stream_seq.saturating_sub(1) {
            self.position = Position { next_stream_seq: last_stream_seq + 1, next_seq };
        }
        // What the sequencer journaled reaches the engine before anything followed does.
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.node.health.applied_seq() + 1 < self.position.next_seq
            && self.node.health.problem().is_none()
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        self.shared.set_view(|view| view.role = if self.shared.replica { Role::Replica } else { Role::Standby });
        // A wake-up left by a failed append of the term just ended would end the next one at once.
        let _ = tokio::time::timeout(Duration::ZERO, self.shared.stepped_down.notified()).await;
    }
}

/// The last command sequence the stream holds (`None`: no message yet).
pub(crate) async fn last_command_in_stream(commands: &stream::Stream) -> anyhow::Result<Option<u64>> {
    let last = commands.get_info().await?.state.last_sequence;
    if last == 0 {
        return Ok(None);
    }
    let message = commands.get_raw_message(last).await?;
    Ok(Some(match wire::decode(&message.payload)? {
        LogMessage::Batch { first_seq, records } => first_seq + records.len() as u64 - 1,
        other => other.at_seq() - 1,
    }))
}

/// What to do with a data directory the stream can no longer bring up to date.
const MOVE_ASIDE: &str = "move this data directory aside (or remove it) and start the node again: \
    with an empty one it fetches a checkpoint of the active node";

/// Where a node whose journal ends at `last_seq` resumes following: the
/// first stream message at or past command `last_seq + 1` (binary search:
/// `at_seq` never decreases along the stream). Refuses a stream that ends
/// before the journal (it lost acknowledged commands) or starts after it
/// (trimmed past what this node has). The stream may be trimmed while the
/// search runs (retention drops the oldest messages under load): a message
/// gone from the front stands before everything still there.
pub(crate) async fn resume_position(commands: &stream::Stream, last_seq: u64) -> anyhow::Result<Position> {
    let state = commands.get_info().await?.state;
    let next_seq = last_seq + 1;
    if state.messages == 0 && state.last_sequence > 0 {
        anyhow::bail!("every message of the command stream up to {} was trimmed: {MOVE_ASIDE}", state.last_sequence);
    }
    if state.last_sequence == 0 {
        if last_seq > 0 {
            anyhow::bail!(
                "the command stream is empty but this node's journal holds commands up to {last_seq}: \
                 this data directory belongs to another cluster (or the stream was deleted)"
            );
        }
        return Ok(Position { next_stream_seq: state.last_sequence + 1, next_seq });
    }
    // `None`: trimmed since `state` was read.
    let at = |seq: u64| async move {
        match commands.get_raw_message(seq).await {
            Ok(message) => anyhow::Ok(Some(wire::decode(&message.payload)?)),
            Err(error) if error.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {
                let first = commands.get_info().await?.state.first_sequence;
                anyhow::ensure!(
                    seq < first,
                    "stream message {seq} is missing inside the stream (which starts at {first})"
                );
                Ok(None)
            }
            Err(error) => Err(anyhow::Error::new(error).context(format!("reading stream message {seq}"))),
        }
    };
    if let Some(log_last) = last_command_in_stream(commands).await?
        && log_last < last_seq
    {
        anyhow::bail!(
            "the command stream ends at command {log_last} but this node's journal holds commands up to \
             {last_seq}: the stream lost acknowledged commands (see docs/GUARANTEES.md); this node will not \
             follow a log that contradicts its journal"
        );
    }
    let trimmed_past = |from_seq: u64| {
        anyhow!(
            "the command stream starts at command {from_seq} (older messages were trimmed) but this node's \
             journal ends at {last_seq}: {MOVE_ASIDE}"
        )
    };
    let (mut low, mut high) = (state.first_sequence, state.last_sequence + 1);
    // Invariant: every message before `low` stands before `next_seq`; `high` is at or past it.
    while low < high {
        let middle = low + (high - low) / 2;
        let before = match at(middle).await? {
            None => true,
            Some(LogMessage::Batch { first_seq, records }) => first_seq + records.len() as u64 - 1 < next_seq,
            Some(other) => other.at_seq() < next_seq,
        };
        if before { low = middle + 1 } else { high = middle }
    }
    // The message found must not have skipped commands this node lacks, and
    // must still be there: a stream trimmed past it cannot continue this journal.
    if low <= state.last_sequence {
        match at(low).await? {
            Some(message) if message.at_seq() <= next_seq => {}
            Some(message) => return Err(trimmed_past(message.at_seq())),
            None => return Err(trimmed_past(commands.get_info().await?.state.first_sequence)),
        }
    }
    Ok(Position { next_stream_seq: low, next_seq })
}

//! The live write path: sequencer, journal, engine, read model.
//!
//! ```text
//! handlers ──submit──► sequencer thread ──durable batch──► engine thread ──► replies
//!                      (seq, ts, group commit, fsync)      (apply, events,
//!                                                           read model, snapshots)
//! ```
//!
//! Two threads, so journal writes of one batch overlap the engine work of the
//! previous one. The rule that matters: the engine sees a command only after
//! the journal write holding it returned from fsync, and a client hears about
//! a command only from the engine. So no answer and no event exists for a
//! command that is not durable.
//!
//! If the engine cannot apply a journaled command (a module that cannot be
//! loaded, say), the node halts: it answers every later command with
//! `unavailable` rather than diverge from its journal. Restarting replays the
//! journal, so nothing accepted is lost.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use exhost_engine::{Command, Engine, EngineSnapshot, Event, EventBody, MarketId, MarketSpec, Registry};
use exhost_guest_sdk::codec::encode_into;
use exhost_guest_sdk::{MatchingQuery, MatchingQueryResult, UserId};
use exhost_store::journal::encode_record;
use exhost_store::{Durability, Store};
use tokio::sync::{mpsc, oneshot};

use crate::livebook::{Depth, LiveBooks};
use crate::readmodel::ReadModelWriter;
use crate::secrets::{Sealer, Verifier};
use crate::watermark::Watermark;

/// The outcome of one applied command, as the engine reported it.
#[derive(Clone, Debug)]
pub struct Applied {
    pub seq: u64,
    pub ts_ns: u64,
    pub events: Vec<Event>,
}

/// The answer to an enqueued command, once the engine has applied it.
pub struct Pending(oneshot::Receiver<Result<Applied, SubmitError>>);

impl std::future::Future for Pending {
    type Output = Result<Applied, SubmitError>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|answer| answer.unwrap_or(Err(SubmitError::ShuttingDown)))
    }
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the command queue is full; retry later")]
    Overloaded,
    #[error("the journal write failed: {0}")]
    Journal(String),
    /// Refused before the journal: not recorded, ever.
    #[error("the engine has halted: {0}")]
    Halted(String),
    /// Journaled (durable) but not applied: the engine stopped first. It takes
    /// effect when the host restarts and replays the journal.
    #[error("journaled but not applied, the engine stopped: {0}")]
    NotApplied(String),
    #[error("the host is shutting down")]
    ShuttingDown,
}

/// What the gateway needs to know about users and markets without asking the
/// engine thread: kept in step with the engine's registry after every command
/// that changes it.
#[derive(Clone, Debug, Default)]
pub struct Directory {
    /// API key to (user, what checks its signatures).
    pub users: HashMap<String, (UserId, Verifier)>,
    pub user_ids: BTreeMap<UserId, String>,
    pub markets: Vec<MarketSpec>,
    pub symbols: HashMap<String, MarketId>,
    pub assets: BTreeMap<String, u8>,
    pub settlement_asset: Option<String>,
    pub position_module: Option<exhost_engine::ModuleHash>,
    pub activations: Vec<exhost_engine::Activation>,
    /// Opens the sealed secrets of new users.
    sealer: Option<Arc<Sealer>>,
}

impl Directory {
    pub fn from_registry(registry: &Registry, sealer: Option<Arc<Sealer>>) -> Directory {
        let mut directory = Directory { sealer, ..Directory::default() };
        directory.refresh(registry);
        let unusable = directory.users.values().filter(|(_, verifier)| matches!(verifier, Verifier::Unusable(_)));
        let unusable = unusable.count();
        if unusable > 0 {
            tracing::error!(
                users = unusable,
                "some users cannot sign requests: their secrets do not open with this host's secrets key (is secrets_key_file the key this data directory was made with?)"
            );
        }
        directory
    }

    fn refresh(&mut self, registry: &Registry) {
        for (user_id, record) in
            registry.users.range(self.user_ids.keys().next_back().map_or(UserId(0), |id| UserId(id.0 + 1))..)
        {
            let verifier = Verifier::of(&record.api_key, &record.credential, self.sealer.as_deref());
            self.users.insert(record.api_key.clone(), (*user_id, verifier));
            self.user_ids.insert(*user_id, record.api_key.clone());
        }
        for (index, spec) in registry.markets.iter().enumerate().skip(self.markets.len()) {
            self.symbols.insert(spec.symbol.clone(), MarketId(index as u32));
            self.markets.push(spec.clone());
        }
        self.assets.clone_from(&registry.assets);
        self.settlement_asset = registry.position.as_ref().map(|p| p.config.settlement_asset.clone());
        self.position_module = registry.position.as_ref().map(|p| p.module_hash);
        // Hot swaps change a market's module.
        for (spec, live) in self.markets.iter_mut().zip(&registry.markets) {
            spec.module_hash = live.module_hash;
        }
        self.activations.clone_from(&registry.activations);
    }

    /// The settlement asset, if a position module is installed.
    pub fn position_asset(&self) -> Option<&str> {
        self.settlement_asset.as_deref()
    }

    pub fn market(&self, symbol: &str) -> Option<(MarketId, &MarketSpec)> {
        let id = *self.symbols.get(symbol)?;
        Some((id, &self.markets[id.0 as usize]))
    }
}

/// Whether the node can take commands, and whether its engine is moving.
#[derive(Default)]
pub struct Health {
    halted: AtomicBool,
    reason: Mutex<Option<String>>,
    /// When the engine thread started its current piece of work (ns since the
    /// epoch), 0 while it waits for work.
    engine_busy_since_ns: AtomicU64,
    /// The last sequence number the engine applied.
    engine_seq: AtomicU64,
}

/// Engine work longer than this is reported as a stall by `/healthz`. Bounds
/// on module calls make every piece of work finish; this says when one is
/// taking long enough that the operator should know.
pub const ENGINE_STALL_REPORT_AFTER: Duration = Duration::from_secs(5);

impl Health {
    pub fn halt(&self, reason: String) {
        tracing::error!(%reason, "node halted: no further commands are accepted until restart");
        *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
        self.halted.store(true, Ordering::SeqCst);
    }

    /// `None` while the node takes commands, otherwise why not.
    pub fn problem(&self) -> Option<String> {
        if self.halted.load(Ordering::SeqCst) {
            Some(self.reason.lock().unwrap_or_else(|p| p.into_inner()).clone().unwrap_or_default())
        } else {
            None
        }
    }

    /// How long the engine has been on its current piece of work (zero while idle).
    pub fn engine_busy(&self) -> Duration {
        let since = self.engine_busy_since_ns.load(Ordering::SeqCst);
        if since == 0 { Duration::ZERO } else { Duration::from_nanos(now_ns().saturating_sub(since)) }
    }

    /// `Some` while the engine has been busy past [`ENGINE_STALL_REPORT_AFTER`]: what it is stuck on.
    pub fn stall(&self) -> Option<String> {
        let busy = self.engine_busy();
        (busy > ENGINE_STALL_REPORT_AFTER).then(|| {
            format!(
                "the engine has been busy for {:.1} s on the work after seq {}",
                busy.as_secs_f64(),
                self.engine_seq.load(Ordering::SeqCst)
            )
        })
    }

    fn engine_started(&self) {
        self.engine_busy_since_ns.store(now_ns().max(1), Ordering::SeqCst);
    }

    fn engine_finished(&self, seq: u64) {
        self.engine_seq.store(seq, Ordering::SeqCst);
        self.engine_busy_since_ns.store(0, Ordering::SeqCst);
    }
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

struct Submission {
    command: Command,
    reply: oneshot::Sender<Result<Applied, SubmitError>>,
}

struct Sequenced {
    seq: u64,
    ts_ns: u64,
    command: Command,
    reply: oneshot::Sender<Result<Applied, SubmitError>>,
}

/// Requests answered by the engine thread between batches.
enum EngineInput {
    Durable(Vec<Sequenced>),
    Snapshot {
        reply: oneshot::Sender<Result<SnapshotTaken, String>>,
    },
    /// The engine's whole state right now (for dry runs of uploaded modules).
    State {
        reply: oneshot::Sender<Result<exhost_engine::EngineSnapshot, String>>,
    },
    /// The sequencer has stopped: apply nothing more, snapshot, and end.
    Shutdown,
}

/// A snapshot the node stored.
#[derive(Clone, Debug)]
pub struct SnapshotTaken {
    pub seq: u64,
    pub digest_hex: String,
    pub size_bytes: u64,
}

/// How many applied batches live subscribers may fall behind before they are
/// told to resubscribe (they then resume from the stored event log).
pub const LIVE_BATCHES_BUFFERED: usize = 4_096;

pub struct Node {
    submit_tx: Mutex<Option<mpsc::Sender<Submission>>>,
    /// Every applied batch's events, after they are durable and stored.
    pub live: tokio::sync::broadcast::Sender<Arc<Vec<Event>>>,
    engine_tx: mpsc::Sender<EngineInput>,
    pub directory: Arc<RwLock<Directory>>,
    /// The public order books, kept from the applied events.
    pub books: Arc<RwLock<LiveBooks>>,
    pub store: Store,
    pub health: Arc<Health>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Node {
    /// Start the write path on a recovered engine.
    pub fn start(
        store: Store,
        mut engine: Engine,
        settings: NodeSettings,
        last_snapshot_seq: u64,
        watermark: Option<Watermark>,
    ) -> Node {
        let directory = Arc::new(RwLock::new(Directory::from_registry(engine.registry(), settings.sealer.clone())));
        let books = Arc::new(RwLock::new(initial_books(&mut engine)));
        let health = Arc::new(Health::default());
        let (live, _) = tokio::sync::broadcast::channel(LIVE_BATCHES_BUFFERED);
        let (submit_tx, submit_rx) = mpsc::channel(settings.submit_queue_max.max(1));
        // A few batches in flight between the threads: enough to overlap, bounded for memory.
        let (engine_tx, engine_rx) = mpsc::channel(64);
        let next_seq = engine.last_seq() + 1;
        let last_ts_ns = engine.last_ts_ns();

        let sequencer = {
            let (store, health, engine_tx, settings) =
                (store.clone(), health.clone(), engine_tx.clone(), settings.clone());
            std::thread::Builder::new()
                .name("exhost-sequencer".into())
                .spawn(move || {
                    sequencer_loop(submit_rx, engine_tx, store, health, settings, watermark, next_seq, last_ts_ns)
                })
                .expect("the sequencer thread starts")
        };
        let engine_thread = {
            let (store, health, directory, live, books) =
                (store.clone(), health.clone(), directory.clone(), live.clone(), books.clone());
            std::thread::Builder::new()
                .name("exhost-engine".into())
                .spawn(move || {
                    EngineLoop {
                        engine,
                        store,
                        health,
                        directory,
                        books,
                        settings,
                        last_snapshot_seq,
                        live,
                        memory_reported: None,
                    }
                    .run(engine_rx)
                })
                .expect("the engine thread starts")
        };
        Node {
            submit_tx: Mutex::new(Some(submit_tx)),
            live,
            engine_tx,
            directory,
            books,
            store,
            health,
            threads: Mutex::new(vec![sequencer, engine_thread]),
        }
    }

    /// Journal a command, apply it, and return what happened.
    pub async fn submit(&self, command: Command) -> Result<Applied, SubmitError> {
        self.enqueue(command)?.await
    }

    /// Hand a command to the sequencer now and await its answer later. Commands
    /// enqueued one after another from one task are journaled, applied and
    /// answered in that order, which is what lets a socket pipeline them.
    pub fn enqueue(&self, command: Command) -> Result<Pending, SubmitError> {
        if let Some(problem) = self.health.problem() {
            return Err(SubmitError::Halted(problem));
        }
        let sender =
            self.submit_tx.lock().unwrap_or_else(|p| p.into_inner()).clone().ok_or(SubmitError::ShuttingDown)?;
        let (reply, answer) = oneshot::channel();
        sender.try_send(Submission { command, reply }).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => SubmitError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => SubmitError::ShuttingDown,
        })?;
        Ok(Pending(answer))
    }

    /// The engine's whole state after every command applied so far.
    pub async fn state(&self) -> Result<exhost_engine::EngineSnapshot, String> {
        let (reply, answer) = oneshot::channel();
        self.engine_tx.send(EngineInput::State { reply }).await.map_err(|_| "the engine has stopped".to_string())?;
        answer.await.map_err(|_| "the engine has stopped".to_string())?
    }

    /// Take and store a snapshot now.
    pub async fn snapshot(&self) -> Result<SnapshotTaken, String> {
        let (reply, answer) = oneshot::channel();
        self.engine_tx.send(EngineInput::Snapshot { reply }).await.map_err(|_| "the engine has stopped".to_string())?;
        answer.await.map_err(|_| "the engine has stopped".to_string())?
    }

    /// Stop taking commands, finish those in flight, snapshot, and join the threads.
    pub fn shutdown(&self) {
        // Dropping the only sender ends the sequencer, which ends the engine thread
        // once every journaled command is applied.
        self.submit_tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for thread in threads {
            let _ = thread.join();
        }
    }
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

fn sequencer_loop(
    mut submit_rx: mpsc::Receiver<Submission>,
    engine_tx: mpsc::Sender<EngineInput>,
    store: Store,
    health: Arc<Health>,
    settings: NodeSettings,
    mut watermark: Option<Watermark>,
    mut next_seq: u64,
    mut last_ts_ns: u64,
) {
    let mut batch: Vec<Submission> = Vec::with_capacity(settings.batch_commands_max);
    let mut encoded = Vec::new();
    let mut records: Vec<u8> = Vec::new();
    let mut bounds: Vec<(u64, usize, usize)> = Vec::new();
    while let Some(first) = submit_rx.blocking_recv() {
        batch.push(first);
        // Group commit: everything already waiting shares this write.
        while batch.len() < settings.batch_commands_max {
            match submit_rx.try_recv() {
                Ok(submission) => batch.push(submission),
                Err(_) => break,
            }
        }
        if let Some(problem) = health.problem() {
            for submission in batch.drain(..) {
                let _ = submission.reply.send(Err(SubmitError::Halted(problem.clone())));
            }
            continue;
        }
        let ts_ns = now_ns().max(last_ts_ns);
        records.clear();
        bounds.clear();
        for (i, submission) in batch.iter().enumerate() {
            let seq = next_seq + i as u64;
            encoded.clear();
            encode_into(&submission.command, &mut encoded);
            let start = records.len();
            encode_record(seq, ts_ns, &encoded, &mut records);
            bounds.push((seq, start, records.len()));
        }
        let last_seq = next_seq + batch.len() as u64 - 1;
        // The watermark's ceiling goes up before anything past it can be acknowledged.
        if let Some(Err(error)) = watermark.as_mut().map(|watermark| watermark.cover(last_seq)) {
            let reason = format!("the journal watermark could not be raised at seq {next_seq}: {error}");
            health.halt(reason.clone());
            for submission in batch.drain(..) {
                let _ = submission.reply.send(Err(SubmitError::Halted(reason.clone())));
            }
            continue;
        }
        let started = Instant::now();
        let written = store
            .append_journal(bounds.iter().map(|&(seq, start, end)| (seq, &records[start..end])), settings.durability);
        metrics::histogram!("exhost_journal_write_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("exhost_journal_batch_commands").record(batch.len() as f64);
        match written {
            Ok(()) => {
                if let Some(watermark) = watermark.as_mut() {
                    watermark.confirm(last_seq);
                }
                metrics::counter!("exhost_journal_commands_total").increment(batch.len() as u64);
                let sequenced: Vec<Sequenced> = batch
                    .drain(..)
                    .enumerate()
                    .map(|(i, submission)| Sequenced {
                        seq: next_seq + i as u64,
                        ts_ns,
                        command: submission.command,
                        reply: submission.reply,
                    })
                    .collect();
                next_seq += sequenced.len() as u64;
                last_ts_ns = ts_ns;
                if engine_tx.blocking_send(EngineInput::Durable(sequenced)).is_err() {
                    // The engine thread is gone: its replies are dropped, clients see shutdown.
                    return;
                }
            }
            Err(error) => {
                // The batch may or may not be durable (a failed sync can leave it
                // written): its outcome is unknown, and its clients are told so. The
                // host stops taking commands, since the disk may be failing; a
                // restart replays whatever of it is in the journal.
                let reason = format!("journal write failed at seq {next_seq}: {error}");
                health.halt(reason.clone());
                for submission in batch.drain(..) {
                    let _ = submission.reply.send(Err(SubmitError::Journal(reason.clone())));
                }
            }
        }
    }
    // Every sender is gone: the host is shutting down. Everything journaled has
    // been handed over, so the engine can finish and stop.
    let _ = engine_tx.blocking_send(EngineInput::Shutdown);
}

struct EngineLoop {
    engine: Engine,
    store: Store,
    health: Arc<Health>,
    directory: Arc<RwLock<Directory>>,
    books: Arc<RwLock<LiveBooks>>,
    settings: NodeSettings,
    last_snapshot_seq: u64,
    live: tokio::sync::broadcast::Sender<Arc<Vec<Event>>>,
    /// When the modules' memory was last put in the metrics.
    memory_reported: Option<Instant>,
}

impl EngineLoop {
    fn run(mut self, mut rx: mpsc::Receiver<EngineInput>) {
        while let Some(input) = rx.blocking_recv() {
            self.health.engine_started();
            let shutdown = matches!(input, EngineInput::Shutdown);
            match input {
                EngineInput::Durable(items) => self.apply_batch(items),
                EngineInput::Snapshot { reply } => {
                    let _ = reply.send(self.take_snapshot());
                }
                EngineInput::State { reply } => {
                    let _ = reply.send(self.engine.snapshot().map_err(|error| error.to_string()));
                }
                EngineInput::Shutdown => {}
            }
            self.health.engine_finished(self.engine.last_seq());
            if shutdown {
                break;
            }
        }
        // Clean shutdown: leave a snapshot so the next start replays nothing,
        // and flush, so it reads tables rather than a write-ahead log.
        if self.health.problem().is_none()
            && self.engine.last_seq() > self.last_snapshot_seq
            && let Err(error) = self.take_snapshot()
        {
            tracing::error!(%error, "snapshot at shutdown failed");
        }
        if let Err(error) = self.store.flush() {
            tracing::warn!(%error, "flushing the store at shutdown failed");
        }
    }

    fn apply_batch(&mut self, items: Vec<Sequenced>) {
        let started = Instant::now();
        let mut writer = ReadModelWriter::new(&self.store);
        let mut replies = Vec::with_capacity(items.len());
        let mut registry_changed = false;
        // Activations are applied on their own, to measure the swap pause; every
        // other run of commands goes to the engine as one batch.
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            let mut segment: Vec<Sequenced> = Vec::new();
            while let Some(item) = items.next_if(|item| !matches!(item.command, Command::ActivateModule { .. })) {
                segment.push(item);
            }
            if segment.is_empty() {
                segment.extend(items.next());
            }
            if let Some(problem) = self.health.problem() {
                for item in segment {
                    let _ = item.reply.send(Err(SubmitError::NotApplied(problem.clone())));
                }
                continue;
            }
            let first_seq = segment[0].seq;
            let activation = matches!(segment[0].command, Command::ActivateModule { .. });
            let commands: Vec<(u64, &Command)> = segment.iter().map(|item| (item.ts_ns, &item.command)).collect();
            let command_started = Instant::now();
            let (results, error) = self.engine.apply_batch_partial(first_seq, &commands);
            if activation {
                // The swap pause: the time the engine, and so every market, takes no other command.
                let pause = command_started.elapsed();
                metrics::histogram!("exhost_module_swap_seconds").record(pause.as_secs_f64());
                tracing::info!(seq = first_seq, pause_us = pause.as_micros() as u64, "module activation applied");
            }
            let applied = results.len();
            let mut segment = segment.into_iter();
            // Results first: `zip` would take, and drop, the item after the last
            // result, and with it the answer of the command that stopped the engine.
            for (bodies, item) in results.into_iter().zip(segment.by_ref()) {
                let events = stamp(item.seq, item.ts_ns, bodies);
                writer.cover(item.seq);
                for event in &events {
                    registry_changed |= matches!(
                        event.body,
                        EventBody::UserCreated { .. }
                            | EventBody::MarketCreated { .. }
                            | EventBody::PositionModuleInstalled { .. }
                            | EventBody::ModuleActivated { .. }
                    );
                    if let Err(error) = writer.apply(event) {
                        self.health.halt(format!("read model read failed at seq {}: {error}", item.seq));
                    }
                }
                replies.push((item.reply, Applied { seq: item.seq, ts_ns: item.ts_ns, events }));
            }
            if let Some(error) = error {
                let reason = format!("command {} cannot be applied: {error}", first_seq + applied as u64);
                self.health.halt(reason.clone());
                for item in segment {
                    let _ = item.reply.send(Err(SubmitError::NotApplied(reason.clone())));
                }
            }
        }
        if let Err(error) = writer.commit() {
            self.health.halt(format!("read model write failed: {error}"));
        }
        let (faults, unreported) = self.engine.take_faults();
        for report in &faults {
            // The command was rejected and its module rebuilt; its sender sees only the reason code.
            metrics::counter!("exhost_module_faults_total").increment(1);
            tracing::warn!(seq = report.seq, module = %report.target, fault = %report.fault, "a module faulted; the command was rejected");
        }
        if unreported > 0 {
            metrics::counter!("exhost_module_faults_total").increment(unreported);
            tracing::warn!(count = unreported, "more module faults in this batch than were logged");
        }
        if registry_changed {
            self.directory.write().unwrap_or_else(|p| p.into_inner()).refresh(self.engine.registry());
        }
        metrics::histogram!("exhost_engine_batch_seconds").record(started.elapsed().as_secs_f64());
        metrics::gauge!("exhost_last_applied_seq").set(self.engine.last_seq() as f64);
        {
            let mut books = self.books.write().unwrap_or_else(|p| p.into_inner());
            for (_, applied) in &replies {
                books.apply(&applied.events, applied.seq);
            }
        }
        // Published only now: durable, applied and stored, so a subscriber that
        // reads the stored log and then follows this stream misses nothing.
        if self.live.receiver_count() > 0 {
            let events: Vec<Event> = replies.iter().flat_map(|(_, applied)| applied.events.iter().cloned()).collect();
            let _ = self.live.send(Arc::new(events));
        }
        for (reply, applied) in replies {
            let _ = reply.send(Ok(applied));
        }
        // After the answers: nothing here is needed to acknowledge a command.
        self.report_memory(registry_changed);
        // Not once halted: the read model may have missed this batch, and a
        // snapshot past it would only make recovery replay further.
        if self.settings.snapshot_every_commands > 0
            && self.health.problem().is_none()
            && self.engine.last_seq() - self.last_snapshot_seq >= self.settings.snapshot_every_commands
            && let Err(error) = self.take_snapshot()
        {
            // Not fatal: recovery just replays more.
            tracing::error!(%error, "periodic snapshot failed");
        }
    }

    /// Each module's memory, once a second at most and whenever a module came
    /// or went: wasm memory never shrinks, so a module whose state leaks shows
    /// as a gauge that only rises.
    fn report_memory(&mut self, modules_changed: bool) {
        if !modules_changed && self.memory_reported.is_some_and(|at| at.elapsed() < Duration::from_secs(1)) {
            return;
        }
        self.memory_reported = Some(Instant::now());
        for report in self.engine.module_reports() {
            let module = report.module;
            if let Some(bytes) = report.memory_bytes {
                metrics::gauge!("exhost_module_memory_bytes", "module" => module.clone()).set(bytes as f64);
            }
            metrics::gauge!("exhost_module_retained_commands", "module" => module.clone())
                .set(report.retained_commands as f64);
            metrics::gauge!("exhost_module_retained_bytes", "module" => module.clone())
                .set(report.retained_bytes as f64);
            metrics::gauge!("exhost_module_checkpoint_bytes", "module" => module).set(report.checkpoint_bytes as f64);
        }
    }

    fn take_snapshot(&mut self) -> Result<SnapshotTaken, String> {
        let started = Instant::now();
        let taken = take_snapshot(&mut self.engine, &self.store)?;
        self.last_snapshot_seq = taken.seq;
        metrics::histogram!("exhost_snapshot_seconds").record(started.elapsed().as_secs_f64());
        tracing::info!(seq = taken.seq, digest = %taken.digest_hex, bytes = taken.size_bytes, "snapshot stored");
        Ok(taken)
    }
}

/// The books of every market after recovery, each asked of a copy of its
/// instance (never the live one). A module that cannot answer gets an empty
/// book until its next changes, and a warning.
fn initial_books(engine: &mut Engine) -> LiveBooks {
    let mut books = LiveBooks { seq: engine.last_seq(), markets: Vec::new() };
    for index in 0..engine.registry().markets.len() {
        let market = MarketId(index as u32);
        let depth = match engine.query(market, &MatchingQuery::Depth { levels_max: u32::MAX }) {
            Ok(MatchingQueryResult::Depth { bids, asks }) => Depth::from_levels(&bids, &asks),
            Ok(_) => Depth::default(),
            Err(error) => {
                tracing::warn!(%market, %error, "the market's module could not tell its book; it starts empty");
                Depth::default()
            }
        };
        books.markets.push(depth);
    }
    books
}

/// Snapshot the engine and store it (synced) with its digest.
pub fn take_snapshot(engine: &mut Engine, store: &Store) -> Result<SnapshotTaken, String> {
    let snapshot = engine.snapshot().map_err(|error| error.to_string())?;
    let bytes = snapshot.encode();
    let digest = EngineSnapshot::digest_of(&bytes);
    store.put_snapshot(snapshot.seq, digest.0, &bytes).map_err(|error| error.to_string())?;
    Ok(SnapshotTaken { seq: snapshot.seq, digest_hex: digest.to_hex(), size_bytes: bytes.len() as u64 })
}

/// Give each event of a command its place in history.
pub fn stamp(seq: u64, ts_ns: u64, bodies: Vec<EventBody>) -> Vec<Event> {
    bodies.into_iter().enumerate().map(|(idx, body)| Event { seq, idx: idx as u32, ts_ns, body }).collect()
}

//! The engine thread: applies durable batches in sequence order, stamps
//! their events, keeps the directory and the live books in step, answers the
//! submitters, hands the events to the read-side thread (which stores them),
//! and takes snapshots (the images here, the encoding and the synced write on
//! the snapshot-writer thread).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use exhost_engine::{Command, Engine, EngineSnapshot, Event, EventBody, MarketId, ShadowStart};
use exhost_guest_sdk::{MatchingQuery, MatchingQueryResult};
use exhost_store::Store;
use tokio::sync::{mpsc, oneshot};

use crate::directory::Directory;
use crate::error::{Halt, NodeError, SubmitError};
use crate::health::Health;
use crate::livebook::{Depth, LiveBooks};
use crate::pipeline::{Applied, NodeSettings, Sequenced, SnapshotTaken};
use crate::read_side::ReadFeed;
use crate::shadow::ShadowLink;
use crate::snapshot_writer::{SnapshotJob, SnapshotReply, SnapshotWriter, store_snapshot};

/// Requests answered by the engine thread between batches.
pub(crate) enum EngineInput {
    Durable(Vec<Sequenced>),
    Snapshot {
        reply: oneshot::Sender<Result<SnapshotTaken, NodeError>>,
    },
    /// The engine's whole state right now (for dry runs of uploaded modules).
    State {
        reply: oneshot::Sender<Result<EngineSnapshot, NodeError>>,
    },
    /// Start handing `market`'s calls to a shadow run: the live state now.
    Tap {
        market: MarketId,
        link: ShadowLink,
        reply: oneshot::Sender<Result<Option<ShadowStart>, String>>,
    },
    /// Stop handing `market`'s calls to its shadow run.
    Untap {
        market: MarketId,
    },
    /// The sequencer has stopped: apply nothing more, snapshot, and end.
    Shutdown,
}

pub(crate) struct EngineLoop {
    pub(crate) engine: Engine,
    pub(crate) store: Store,
    pub(crate) health: Arc<Health>,
    pub(crate) directory: Arc<RwLock<Directory>>,
    pub(crate) books: Arc<RwLock<LiveBooks>>,
    pub(crate) settings: NodeSettings,
    /// The newest snapshot taken (maybe still being written).
    pub(crate) last_snapshot_seq: u64,
    /// Where applied events go to be stored and published.
    pub(crate) read: ReadFeed,
    /// Where snapshots go to be encoded and stored.
    pub(crate) snapshots: SnapshotWriter,
    /// When the modules' memory was last put in the metrics.
    pub(crate) memory_reported: Option<Instant>,
    /// The shadow runs' queues, by market.
    pub(crate) shadows: BTreeMap<MarketId, ShadowLink>,
}

impl EngineLoop {
    pub(crate) fn run(mut self, mut rx: mpsc::Receiver<EngineInput>) {
        while let Some(input) = rx.blocking_recv() {
            self.health.engine_started();
            let shutdown = matches!(input, EngineInput::Shutdown);
            match input {
                EngineInput::Durable(items) => self.apply_batch(items),
                EngineInput::Snapshot { reply } => self.take_snapshot(Some(reply)),
                EngineInput::State { reply } => {
                    let _ = reply.send(self.engine.snapshot().map_err(NodeError::from));
                }
                EngineInput::Tap { market, link, reply } => {
                    let start = self.engine.tap_market(market).map_err(|fault| fault.to_string());
                    if let Ok(Some(_)) = &start {
                        self.shadows.insert(market, link);
                    }
                    let _ = reply.send(start);
                }
                EngineInput::Untap { market } => {
                    self.shadows.remove(&market);
                    self.engine.untap_market(market);
                }
                EngineInput::Shutdown => {}
            }
            self.health.engine_finished(self.engine.last_seq());
            if shutdown {
                break;
            }
        }
        // Clean shutdown: the read model written to the end, the snapshots
        // handed over stored, then a snapshot of the last state (unless one
        // holds it already) so the next start replays nothing, and a flush, so
        // it reads tables rather than a write-ahead log.
        self.read.finish();
        self.snapshots.finish();
        if self.health.problem().is_none()
            && self.engine.last_seq() > self.snapshots.stored_seq()
            && let Err(error) = self.engine.snapshot().map_err(NodeError::from).and_then(|snapshot| {
                let taken = store_snapshot(&self.store, &snapshot)?;
                tracing::info!(seq = taken.seq, digest = %taken.digest_hex, bytes = taken.size_bytes, "snapshot stored");
                Ok(taken)
            })
        {
            tracing::error!(seq = self.engine.last_seq(), %error, "snapshot at shutdown failed");
        }
        if let Err(error) = self.store.flush() {
            tracing::warn!(seq = self.engine.last_seq(), %error, "flushing the store at shutdown failed");
        }
    }

    fn apply_batch(&mut self, items: Vec<Sequenced>) {
        // The sequencer numbers a batch consecutively, after everything applied before it.
        assert!(
            items.windows(2).all(|pair| pair[1].seq == pair[0].seq + 1),
            "a durable batch holds consecutive sequence numbers"
        );
        assert!(
            items.first().is_none_or(|item| self.health.problem().is_some() || item.seq == self.engine.last_seq() + 1),
            "a durable batch follows the last applied command"
        );
        let started = Instant::now();
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
            assert!(applied <= commands.len(), "no more results than commands");
            let mut segment = segment.into_iter();
            // Results first: `zip` would take, and drop, the item after the last
            // result, and with it the answer of the command that stopped the engine.
            for (bodies, item) in results.into_iter().zip(segment.by_ref()) {
                let events = stamp(item.seq, item.ts_ns, bodies);
                registry_changed |= events.iter().any(|event| {
                    matches!(
                        event.body,
                        EventBody::UserCreated { .. }
                            | EventBody::MarketCreated { .. }
                            | EventBody::PositionModuleInstalled { .. }
                            | EventBody::ModuleActivated { .. }
                    )
                });
                replies.push((item.reply, Applied { seq: item.seq, ts_ns: item.ts_ns, events }));
            }
            if let Some(source) = error {
                let halt = self.health.halt(Halt::Apply { seq: first_seq + applied as u64, source });
                for item in segment {
                    let _ = item.reply.send(Err(SubmitError::NotApplied(halt.clone())));
                }
            } else {
                assert_eq!(segment.next().map(|item| item.seq), None, "a result for every command of the segment");
            }
        }
        let (faults, unreported) = self.engine.take_faults();
        for report in &faults {
            // The command was rejected and its module rebuilt; its sender sees only the reason code.
            metrics::counter!("exhost_module_faults_total").increment(1);
            tracing::warn!(seq = report.seq, module = %report.target, fault = %report.fault, "a module faulted; the command was rejected");
        }
        if !faults.is_empty() || unreported > 0 {
            let seen = faults.iter().map(|report| crate::health::FaultSeen {
                seq: report.seq,
                module: report.target.to_string(),
                fault: report.fault.to_string(),
            });
            self.health.record_faults(seen, faults.len() as u64 + unreported);
        }
        if unreported > 0 {
            metrics::counter!("exhost_module_faults_total").increment(unreported);
            tracing::warn!(
                seq = self.engine.last_seq(),
                count = unreported,
                "more module faults in this batch (up to this seq) than were logged"
            );
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
        // The events go to the read side (stored, then published live) before
        // the answers, so that a read made after an answer waits for them
        // (`ReadSide::barrier`) rather than missing them.
        if let Some((_, last)) = replies.last() {
            let last_seq = last.seq;
            // Before the answers: a read's barrier waits for what was applied when it came.
            self.health.applied(last_seq);
            let events: Vec<Event> = replies.iter().flat_map(|(_, applied)| applied.events.iter().cloned()).collect();
            self.read.send(events, last_seq);
        }
        for (reply, applied) in replies {
            let _ = reply.send(Ok(applied));
        }
        // After the answers: nothing here is needed to acknowledge a command.
        self.feed_shadows();
        self.report_memory(registry_changed);
        // Not once halted: the read model may have missed this batch, and a
        // snapshot past it would only make recovery replay further. Not while
        // the last one is still being written: one at a time is enough.
        if self.settings.snapshot_every_commands > 0
            && self.health.problem().is_none()
            && self.engine.last_seq() - self.last_snapshot_seq >= self.settings.snapshot_every_commands
            && self.snapshots.idle()
        {
            self.take_snapshot(None);
        }
    }

    /// Offer each shadow run the calls its market's module applied in this
    /// batch; one that is gone or full stops being fed (never waited for).
    fn feed_shadows(&mut self) {
        if self.shadows.is_empty() {
            return;
        }
        for (market, calls) in self.engine.take_taps() {
            let fed = self.shadows.get(&market).is_some_and(|link| link.offer(calls));
            if !fed {
                tracing::warn!(%market, seq = self.engine.last_seq(), "shadow run no longer fed");
                self.shadows.remove(&market);
                self.engine.untap_market(market);
            }
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
            let module = report.module.label();
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

    /// Take the instances' images now and hand them to the snapshot writer,
    /// which answers `reply`, if any, once the snapshot is stored.
    fn take_snapshot(&mut self, reply: Option<SnapshotReply>) {
        let started = Instant::now();
        let snapshot = match self.engine.snapshot() {
            Ok(snapshot) => snapshot,
            Err(error) => {
                let error = NodeError::from(error);
                match reply {
                    Some(reply) => {
                        let _ = reply.send(Err(error));
                    }
                    None => tracing::error!(seq = self.engine.last_seq(), %error, "periodic snapshot failed"),
                }
                return;
            }
        };
        // What the engine stalls for; the writer's time is `exhost_snapshot_seconds`.
        metrics::histogram!("exhost_snapshot_stall_seconds").record(started.elapsed().as_secs_f64());
        self.last_snapshot_seq = snapshot.seq;
        // Recovery starts from a snapshot the read model covers: the writer waits for this mark.
        let read_written = self.read.mark();
        self.snapshots.send(SnapshotJob { snapshot, read_written, reply });
    }
}

/// The books of every market after recovery, each asked of a copy of its
/// instance (never the live one). A module that cannot answer gets an empty
/// book until its next changes, and a warning.
pub(crate) fn initial_books(engine: &mut Engine) -> LiveBooks {
    let mut books = LiveBooks { seq: engine.last_seq(), markets: Vec::new() };
    for index in 0..engine.registry().markets.len() {
        let market = MarketId(index as u32);
        let depth = match engine.query(market, &MatchingQuery::Depth { levels_max: u32::MAX }) {
            Ok(MatchingQueryResult::Depth { bids, asks }) => Depth::from_levels(&bids, &asks),
            Ok(_) => Depth::default(),
            Err(error) => {
                tracing::warn!(
                    seq = books.seq,
                    %market,
                    %error,
                    "the market's module could not tell its book; it starts empty"
                );
                Depth::default()
            }
        };
        books.markets.push(depth);
    }
    books
}

/// Snapshot the engine and store it (synced) with its digest, on this thread.
pub fn take_snapshot(engine: &mut Engine, store: &Store) -> Result<SnapshotTaken, NodeError> {
    store_snapshot(store, &engine.snapshot()?)
}

/// Give each event of a command its place in history.
pub fn stamp(seq: u64, ts_ns: u64, bodies: Vec<EventBody>) -> Vec<Event> {
    bodies.into_iter().enumerate().map(|(idx, body)| Event { seq, idx: idx as u32, ts_ns, body }).collect()
}

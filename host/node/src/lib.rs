//! # exhost node
//!
//! The write path of one host: sequencer, journal writer, engine thread, read
//! model, recovery. It knows no HTTP and no command line; it reaches storage
//! only through `exhost-store`'s seam ([`CommandLog`] for the journal,
//! [`Store`] for events, snapshots, modules and the read model), so every
//! part of it runs over the in-memory twin in tests.
//!
//! ```text
//! handlers ──submit──► sequencer thread ──durable batch──► engine thread ──► replies
//!                      (seq, ts, group commit, fsync)      (apply, events, │
//!                                                           snapshots)     ▼
//!                                                   read-side thread (event log,
//!                                                   read model, then live streams)
//! ```
//!
//! Three threads, so the journal write of one batch, the engine work of the
//! previous one and the read-model write of the one before overlap. The rule
//! that matters: the engine sees a command only after the journal write
//! holding it returned from fsync, and a client hears about a command only
//! from the engine. So no answer and no event exists for a command that is
//! not durable. Reads wait on [`ReadSide::barrier`], so an answered command
//! is in every read made after its answer.
//!
//! If the engine cannot apply a journaled command (a module that cannot be
//! loaded, say), the node halts: it answers every later command with
//! `unavailable` rather than diverge from its journal. Restarting replays the
//! journal, so nothing accepted is lost.

pub mod checkpoint;
pub mod datadir;
mod directory;
mod engine_loop;
mod error;
mod health;
pub mod livebook;
pub mod modcheck;
pub mod modules;
mod pipeline;
mod read_side;
pub mod readmodel;
pub mod recovery;
pub mod secrets;
mod sequencer;
mod shadow;
mod snapshot_writer;
pub mod watermark;

use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use exhost_engine::{Command, Engine, EngineSnapshot, Event, MarketId, ModuleHash};
use exhost_store::{CommandLog, Store};
use tokio::sync::{mpsc, oneshot};

pub use directory::Directory;
pub use engine_loop::{stamp, take_snapshot};
pub use error::{DataDirError, Halt, NodeError, RecoveryError, SubmitError};
pub use health::{ENGINE_STALL_REPORT_AFTER, FaultSeen, Faults, Health, RECENT_FAULTS_KEPT};
pub use modules::loader_for;
pub use pipeline::{Applied, NodeSettings, SnapshotTaken};
pub use read_side::ReadSide;
pub use shadow::{SHADOW_BATCHES_QUEUED_MAX, ShadowLoader, ShadowPhase, ShadowStartError, ShadowStatus};

use engine_loop::{EngineInput, EngineLoop, initial_books};
use livebook::LiveBooks;
use pipeline::Submission;
use watermark::Watermark;

/// The answer to an enqueued command, once the engine has applied it.
pub struct Pending(oneshot::Receiver<Result<Applied, SubmitError>>);

impl std::future::Future for Pending {
    type Output = Result<Applied, SubmitError>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|answer| answer.unwrap_or(Err(SubmitError::ShuttingDown)))
    }
}

/// Where the write path keeps things: the command log, and the store for
/// everything derived from it (events, read model, snapshots, modules).
#[derive(Clone)]
pub struct Storage {
    pub log: Arc<dyn CommandLog>,
    pub store: Store,
}

impl Storage {
    /// The journal and everything else in one local store.
    pub fn local(store: Store) -> Storage {
        Storage { log: Arc::new(store.clone()), store }
    }
}

/// How many applied batches live subscribers may fall behind before they are
/// told to resubscribe (they then resume from the stored event log).
pub const LIVE_BATCHES_BUFFERED: usize = 4_096;

/// A few batches in flight between the threads: enough to overlap, bounded for memory.
const BATCHES_IN_FLIGHT_MAX: usize = 64;

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
    /// How far the read model is written; reads wait on its barrier.
    pub read_side: ReadSide,
    resume_at: Arc<Mutex<Option<(u64, u64)>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    shadows: shadow::Shadows,
    /// One shadow start or stop at a time.
    shadow_control: tokio::sync::Mutex<()>,
}

impl Node {
    /// Start the write path on a recovered engine.
    pub fn start(
        storage: Storage,
        mut engine: Engine,
        settings: NodeSettings,
        last_snapshot_seq: u64,
        watermark: Option<Watermark>,
    ) -> Result<Node, NodeError> {
        let Storage { log, store } = storage;
        let directory = Arc::new(RwLock::new(Directory::from_registry(engine.registry(), settings.sealer.clone())));
        let books = Arc::new(RwLock::new(initial_books(&mut engine)));
        let health = Arc::new(Health::default());
        health.engine_finished(engine.last_seq());
        let (live, _) = tokio::sync::broadcast::channel(LIVE_BATCHES_BUFFERED);
        let (submit_tx, submit_rx) = mpsc::channel(settings.submit_queue_max.max(1));
        let (engine_tx, engine_rx) = mpsc::channel(BATCHES_IN_FLIGHT_MAX);
        let resume_at = Arc::new(Mutex::new(None));
        let sequencer = sequencer::Sequencer {
            resume_at: resume_at.clone(),
            log,
            health: health.clone(),
            engine_tx: engine_tx.clone(),
            settings: settings.clone(),
            watermark,
            next_seq: engine.last_seq() + 1,
            last_ts_ns: engine.last_ts_ns(),
        };
        let sequencer =
            std::thread::Builder::new().name("exhost-sequencer".into()).spawn(move || sequencer.run(submit_rx))?;
        let (read, read_side) = read_side::start(store.clone(), health.clone(), live.clone(), engine.last_seq())?;
        let snapshots = snapshot_writer::SnapshotWriter::start(store.clone(), last_snapshot_seq)?;
        let engine_loop = EngineLoop {
            engine,
            store: store.clone(),
            health: health.clone(),
            directory: directory.clone(),
            books: books.clone(),
            settings,
            last_snapshot_seq,
            read,
            snapshots,
            memory_reported: None,
            shadows: Default::default(),
        };
        let engine_thread =
            match std::thread::Builder::new().name("exhost-engine".into()).spawn(move || engine_loop.run(engine_rx)) {
                Ok(thread) => thread,
                Err(error) => {
                    // Closing the queue ends the sequencer, which has journaled nothing.
                    drop(submit_tx);
                    let _ = sequencer.join();
                    return Err(error.into());
                }
            };
        Ok(Node {
            submit_tx: Mutex::new(Some(submit_tx)),
            live,
            engine_tx,
            directory,
            books,
            store,
            health,
            read_side,
            resume_at,
            threads: Mutex::new(vec![sequencer, engine_thread]),
            shadows: Default::default(),
            shadow_control: tokio::sync::Mutex::new(()),
        })
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

    /// Apply a batch another node sequenced (a standby following the
    /// replicated log): `(seq, ts_ns, command)`, consecutive, after the last
    /// one applied, and already durable in the log. Nobody waits for the
    /// answers; the events are stored and broadcast as for local commands.
    pub async fn follow(&self, batch: Vec<(u64, u64, Command)>) -> Result<(), NodeError> {
        let items = batch
            .into_iter()
            .map(|(seq, ts_ns, command)| {
                let (reply, _) = oneshot::channel();
                pipeline::Sequenced { seq, ts_ns, command, reply }
            })
            .collect();
        self.engine_tx.send(EngineInput::Durable(items)).await.map_err(|_| NodeError::Stopped)
    }

    /// Sequence from `next_seq` on, with timestamps from `last_ts_ns` on, from
    /// the next batch: the log was written by another node up to here.
    pub fn resume_sequencing(&self, next_seq: u64, last_ts_ns: u64) {
        *self.resume_at.lock().unwrap_or_else(|p| p.into_inner()) = Some((next_seq, last_ts_ns));
    }

    /// The engine's whole state after every command applied so far.
    pub async fn state(&self) -> Result<EngineSnapshot, NodeError> {
        let (reply, answer) = oneshot::channel();
        self.engine_tx.send(EngineInput::State { reply }).await.map_err(|_| NodeError::Stopped)?;
        answer.await.map_err(|_| NodeError::Stopped)?
    }

    /// Take and store a snapshot now.
    pub async fn snapshot(&self) -> Result<SnapshotTaken, NodeError> {
        let (reply, answer) = oneshot::channel();
        self.engine_tx.send(EngineInput::Snapshot { reply }).await.map_err(|_| NodeError::Stopped)?;
        answer.await.map_err(|_| NodeError::Stopped)?
    }

    /// Start a shadow run of the stored matching module `candidate` on
    /// `market`, from its live state now: every later call of the market's
    /// module goes to the candidate too, on a thread of its own.
    pub async fn start_shadow(
        &self,
        market: MarketId,
        candidate: ModuleHash,
        loader: ShadowLoader,
    ) -> Result<ShadowStatus, ShadowStartError> {
        let _control = self.shadow_control.lock().await;
        if self.shadows.running(market) {
            return Err(ShadowStartError::Running);
        }
        // An ended run is replaced; its thread ends by itself (its queue is
        // closed already), so it is not waited for here.
        drop(self.shadows.take(market));
        let (feed_tx, feed) = std::sync::mpsc::sync_channel(SHADOW_BATCHES_QUEUED_MAX);
        let cut_at_seq = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let link = shadow::ShadowLink { feed: feed_tx, cut_at_seq: cut_at_seq.clone() };
        let (reply, answer) = oneshot::channel();
        self.engine_tx.send(EngineInput::Tap { market, link, reply }).await.map_err(|_| ShadowStartError::Stopped)?;
        let start = answer.await.map_err(|_| ShadowStartError::Stopped)?.map_err(ShadowStartError::Image)?;
        let start = start.ok_or(ShadowStartError::UnknownMarket)?;
        let outcome = match self.shadows.launch(start, candidate, loader, feed, cut_at_seq) {
            Ok(started) => match started.await {
                Ok(Ok(status)) => return Ok(status),
                Ok(Err(refusal)) => ShadowStartError::Refused(refusal),
                Err(_) => ShadowStartError::Thread("it ended before the candidate took over".into()),
            },
            Err(error) => ShadowStartError::Thread(error.to_string()),
        };
        let _ = self.engine_tx.send(EngineInput::Untap { market }).await;
        // Its thread has returned, or never started.
        drop(self.shadows.take(market));
        Err(outcome)
    }

    /// The shadow run on `market`: running, or ended and not yet replaced.
    pub fn shadow_status(&self, market: MarketId) -> Option<ShadowStatus> {
        self.shadows.status(market)
    }

    /// Stop the shadow run on `market` once it has compared everything it
    /// was sent, and give its last report.
    pub async fn stop_shadow(&self, market: MarketId) -> Option<ShadowStatus> {
        let _control = self.shadow_control.lock().await;
        let run = self.shadows.take(market)?;
        // Closing the queue (the engine thread drops its end) ends the
        // thread once it has drained it.
        let _ = self.engine_tx.send(EngineInput::Untap { market }).await;
        let (done_tx, done) = oneshot::channel();
        let joined = std::thread::Builder::new().name("exhost-shadow-stop".into()).spawn(move || {
            let _ = done_tx.send(shadow::finish(run));
        });
        match joined {
            Ok(_) => done.await.ok(),
            Err(_) => None,
        }
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

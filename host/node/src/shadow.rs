//! Shadow runs on their own threads: one per watched market, fed by the
//! engine thread through a bounded queue it never waits on.
//!
//! The engine thread takes each batch's tapped calls after it has answered
//! the batch and offers them to the market's queue with `try_send`. A shadow
//! that falls so far behind that its queue is full is cut off there (its
//! report says at which command) rather than ever slowing the live market: a
//! comparison with a gap in it would mean nothing, and a wait would be paid
//! by every trader. Starting one copies the live instance's memory on the
//! engine thread (an image, as a snapshot does); the candidate takes the
//! state over on the shadow's own thread, never on the engine's.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use exhost_engine::{Loader, MarketId, ModuleHash, Shadow, ShadowError, ShadowReport, ShadowStart, Tap};
use exhost_guest_sdk::MatchingAbi;
use tokio::sync::oneshot;

/// Batches of calls a shadow may fall behind before it is cut off. A batch
/// holds a market's share of one engine batch (up to a few thousand calls).
pub const SHADOW_BATCHES_QUEUED_MAX: usize = 1_024;

/// The loader a shadow makes its candidate with (the host's module loader).
pub type ShadowLoader = Arc<dyn Loader<MatchingAbi> + Send + Sync>;

/// The engine thread's end of a shadow's queue.
pub(crate) struct ShadowLink {
    pub(crate) feed: SyncSender<Tap>,
    /// The first command the shadow missed because its queue was full (0: none).
    pub(crate) cut_at_seq: Arc<AtomicU64>,
}

impl ShadowLink {
    /// Offer a batch of calls; false once the shadow is gone or cut off, and
    /// the engine thread then stops tapping the market.
    pub(crate) fn offer(&self, calls: Tap) -> bool {
        let first_seq = calls.calls().next().map_or(0, |(call, _)| call.ctx.seq);
        match self.feed.try_send(calls) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.cut_at_seq.store(first_seq, Ordering::Release);
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

/// Where a shadow run is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShadowPhase {
    Running,
    /// Stopped by the operator.
    Stopped,
    /// Ended on its own, with why.
    Ended(String),
}

/// A shadow run's report and phase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShadowStatus {
    pub report: ShadowReport,
    pub phase: ShadowPhase,
}

/// Why a shadow run was not started.
#[derive(Debug, thiserror::Error)]
pub enum ShadowStartError {
    #[error("a shadow run is already going on this market (DELETE it first)")]
    Running,
    #[error("no such market")]
    UnknownMarket,
    #[error("{0}")]
    Refused(#[from] ShadowError),
    #[error("the live module could not be imaged: {0}")]
    Image(String),
    #[error("the shadow's thread could not run: {0}")]
    Thread(String),
    #[error("the node has stopped")]
    Stopped,
}

struct Run {
    status: Arc<Mutex<ShadowStatus>>,
    thread: Option<JoinHandle<()>>,
    cut_at_seq: Arc<AtomicU64>,
}

impl Run {
    fn status(&self) -> ShadowStatus {
        let mut status = lock(&self.status).clone();
        let cut = self.cut_at_seq.load(Ordering::Acquire);
        if cut > 0 && status.phase == ShadowPhase::Running {
            status.phase = ShadowPhase::Ended(format!(
                "it fell {SHADOW_BATCHES_QUEUED_MAX} batches behind the live market and was cut off at seq {cut}, \
                 so as not to slow it"
            ));
        }
        status
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The shadow runs of a node, by market; an ended one stays until the next
/// start or stop on its market, so its last report can still be read.
#[derive(Default)]
pub struct Shadows {
    runs: Mutex<BTreeMap<MarketId, Run>>,
}

impl Shadows {
    pub fn status(&self, market: MarketId) -> Option<ShadowStatus> {
        lock(&self.runs).get(&market).map(Run::status)
    }

    /// Whether a run is going on `market` (an ended one does not count).
    pub(crate) fn running(&self, market: MarketId) -> bool {
        self.status(market).is_some_and(|status| status.phase == ShadowPhase::Running)
    }

    /// Start a shadow's thread: the candidate takes the state of `start`
    /// over there, then compares every batch `feed` brings. The answer says
    /// whether the take-over worked; the run is listed only if it did.
    pub(crate) fn launch(
        &self,
        start: ShadowStart,
        candidate: ModuleHash,
        loader: ShadowLoader,
        feed: Receiver<Tap>,
        cut_at_seq: Arc<AtomicU64>,
    ) -> Result<oneshot::Receiver<Result<ShadowStatus, ShadowError>>, std::io::Error> {
        let market = start.market;
        let status = Arc::new(Mutex::new(ShadowStatus {
            report: ShadowReport::new(candidate, &start),
            phase: ShadowPhase::Running,
        }));
        let (started_tx, started) = oneshot::channel();
        let thread_status = status.clone();
        let thread =
            std::thread::Builder::new().name(format!("exhost-shadow-{}", market.0)).spawn(
                move || match Shadow::start(&*loader, &start, candidate) {
                    Err(error) => {
                        let _ = started_tx.send(Err(error));
                    }
                    Ok(shadow) => {
                        let _ = started_tx.send(Ok(lock(&thread_status).clone()));
                        follow(market, shadow, &*loader, feed, &thread_status);
                    }
                },
            )?;
        lock(&self.runs).insert(market, Run { status, thread: Some(thread), cut_at_seq });
        Ok(started)
    }

    /// Take `market`'s run out, if any (its thread ends once its queue is
    /// closed and drained: [`finish`]).
    pub(crate) fn take(&self, market: MarketId) -> Option<Taken> {
        lock(&self.runs).remove(&market).map(Taken)
    }
}

/// A run taken out of the list.
pub(crate) struct Taken(Run);

/// Wait for a taken run's thread to compare what it was sent, and give its
/// final status: stopped, unless it had ended on its own.
pub(crate) fn finish(Taken(mut run): Taken) -> ShadowStatus {
    if let Some(thread) = run.thread.take() {
        let _ = thread.join();
    }
    let mut status = run.status();
    if status.phase == ShadowPhase::Running {
        status.phase = ShadowPhase::Stopped;
    }
    status
}

/// A shadow's thread: compare every batch of calls until the queue closes.
fn follow(
    market: MarketId,
    mut shadow: Shadow,
    loader: &dyn Loader<MatchingAbi>,
    feed: Receiver<Tap>,
    status: &Mutex<ShadowStatus>,
) {
    let candidate = shadow.report().candidate;
    let label = market.0.to_string();
    while let Ok(calls) = feed.recv() {
        let outcome = shadow.feed(loader, &calls);
        let mut status = lock(status);
        let before = status.report.clone();
        status.report = shadow.report().clone();
        let report = &status.report;
        metrics::counter!("exhost_shadow_commands_total", "market" => label.clone())
            .increment(report.commands - before.commands);
        metrics::counter!("exhost_shadow_divergences_total", "market" => label.clone())
            .increment(report.divergences - before.divergences);
        if before.divergences == 0 && report.divergences > 0 {
            let seq = report.first_divergence.as_ref().map_or(0, |divergence| divergence.seq);
            tracing::warn!(%market, %candidate, seq, "shadow run: the candidate diverged from the live module");
        }
        if let Err(error) = outcome {
            tracing::warn!(%market, %candidate, %error, "shadow run ended: the candidate cannot go on");
            status.phase = ShadowPhase::Ended(format!("the candidate cannot go on: {error}"));
            return;
        }
    }
}

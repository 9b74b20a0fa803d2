//! The read-side thread: writes each applied batch's events into the stored
//! event log and the read model, in sequence order, then hands them to live
//! subscribers. It runs beside the engine thread, so the engine applies the
//! next batch while this one is written.
//!
//! Why a thread of its own: the read model shares the store with the
//! journal, and a write to it waits in RocksDB's write queue behind the
//! sequencer's synced journal write. Made on the engine thread, that wait
//! serialized the whole write path (17–18k acknowledged commands/s with 64
//! clients in `exhost-bench journal`, against 54–71k with the read-model
//! write left out; docs/BENCHMARKS.md).
//!
//! What readers see: a command is answered once it is applied, maybe before
//! its events are in the read model. A read waits for [`ReadSide::barrier`]
//! (everything applied when it arrived is written), so a client that got an
//! answer and then reads sees its command. Live subscribers get a batch only
//! once it is stored, so one that reads the stored log and then follows the
//! live stream misses nothing.

use std::sync::Arc;
use std::sync::mpsc as std_mpsc;

use exhost_engine::Event;
use exhost_store::Store;
use tokio::sync::watch;

use crate::error::Halt;
use crate::health::Health;
use crate::readmodel::ReadModelWriter;

/// Batches written to the read side may trail the engine by this many.
const BATCHES_BEHIND_MAX: usize = 16;

pub(crate) enum ReadInput {
    /// The events of consecutive applied commands up to `last_seq`, in order.
    Applied { events: Vec<Event>, last_seq: u64 },
    /// Answer once everything sent before is written.
    Mark(std_mpsc::Sender<()>),
}

/// The engine thread's end of the read side.
pub(crate) struct ReadFeed {
    tx: Option<std_mpsc::SyncSender<ReadInput>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What readers wait on: the last sequence number whose events are written.
#[derive(Clone)]
pub struct ReadSide {
    written: watch::Receiver<u64>,
    health: Arc<Health>,
}

impl ReadSide {
    /// Wait until the read model holds everything the engine had applied when
    /// this was called (at once if it does already, or if the node halted:
    /// then the read model stays where it stopped).
    pub async fn barrier(&self) {
        let target = self.health.applied_seq();
        let mut written = self.written.clone();
        if *written.borrow() >= target {
            return;
        }
        let health = self.health.clone();
        // The sender lives as long as the read-side thread; if it is gone the read model is final.
        let _ = written.wait_for(|seq| *seq >= target || health.problem().is_some()).await;
    }

    /// The last sequence number whose events are in the read model.
    pub fn written_seq(&self) -> u64 {
        *self.written.borrow()
    }
}

/// Start the read-side thread, the read model written up to `written_seq`.
pub(crate) fn start(
    store: Store,
    health: Arc<Health>,
    live: tokio::sync::broadcast::Sender<Arc<Vec<Event>>>,
    written_seq: u64,
) -> std::io::Result<(ReadFeed, ReadSide)> {
    let (tx, rx) = std_mpsc::sync_channel(BATCHES_BEHIND_MAX);
    let (written_tx, written) = watch::channel(written_seq);
    let thread_health = health.clone();
    let thread = std::thread::Builder::new()
        .name("exhost-read-side".into())
        .spawn(move || run(rx, &store, &thread_health, &live, &written_tx))?;
    Ok((ReadFeed { tx: Some(tx), thread: Some(thread) }, ReadSide { written, health }))
}

fn run(
    rx: std_mpsc::Receiver<ReadInput>,
    store: &Store,
    health: &Health,
    live: &tokio::sync::broadcast::Sender<Arc<Vec<Event>>>,
    written: &watch::Sender<u64>,
) {
    // After a failed write nothing more is written: the read model stays whole
    // up to its last good batch, which is what recovery rewrites from. (Written
    // on, it would skip the failed batch, and recovery, trusting its covered
    // seq, would never fill the gap: the write-path simulation found that.)
    let mut failed = false;
    while let Ok(input) = rx.recv() {
        match input {
            ReadInput::Applied { events, last_seq } => {
                if failed {
                    // Wakes the barriers, which see the halt.
                    written.send_modify(|_| ());
                    continue;
                }
                let started = std::time::Instant::now();
                let mut writer = ReadModelWriter::new(store);
                let applied = events.iter().try_for_each(|event| {
                    writer.apply(event).map_err(|source| Halt::ReadModelRead { seq: event.seq, source })
                });
                writer.cover(last_seq);
                if let Err(halt) =
                    applied.and_then(|()| writer.commit().map_err(|source| Halt::ReadModelWrite { source }))
                {
                    health.halt(halt);
                    failed = true;
                    written.send_modify(|_| ());
                    continue;
                }
                metrics::histogram!("exhost_read_model_batch_seconds").record(started.elapsed().as_secs_f64());
                written.send_replace(last_seq);
                // Published only now: durable, applied and stored.
                if live.receiver_count() > 0 {
                    let _ = live.send(Arc::new(events));
                }
            }
            ReadInput::Mark(done) => {
                let _ = done.send(());
            }
        }
    }
}

impl ReadFeed {
    /// Hand on a batch's events (waits while the read side is
    /// [`BATCHES_BEHIND_MAX`] batches behind).
    pub(crate) fn send(&self, events: Vec<Event>, last_seq: u64) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(ReadInput::Applied { events, last_seq });
        }
    }

    /// What answers (or hangs up) once everything handed on so far is written,
    /// without waiting for it here.
    pub(crate) fn mark(&self) -> std_mpsc::Receiver<()> {
        let (done, written) = std_mpsc::channel();
        if let Some(tx) = &self.tx {
            let _ = tx.send(ReadInput::Mark(done));
        }
        written
    }

    /// Write what is left and stop the thread.
    pub(crate) fn finish(&mut self) {
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ReadFeed {
    fn drop(&mut self) {
        self.finish();
    }
}

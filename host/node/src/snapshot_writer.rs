//! The snapshot-writer thread: encodes, digests and stores (synced) the
//! snapshots the engine thread takes.
//!
//! A snapshot holds every instance's memory image, 145 MB at a million
//! resting orders. The engine thread only takes the images
//! (`Engine::snapshot`, a copy of each instance's memory); encoding them,
//! hashing them and the synced write happen here, while the engine goes on
//! applying. The images are shared, not copied again, and never change once
//! taken, so what is stored is the state after the snapshot's `seq` exactly,
//! whatever the engine applied since.
//!
//! A snapshot is stored only once the read side has written everything
//! applied before it: recovery starts from a snapshot the read model covers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::Instant;

use exhost_engine::EngineSnapshot;
use exhost_store::Store;
use tokio::sync::oneshot;

use crate::error::NodeError;
use crate::pipeline::SnapshotTaken;

pub(crate) type SnapshotReply = oneshot::Sender<Result<SnapshotTaken, NodeError>>;

pub(crate) struct SnapshotJob {
    pub(crate) snapshot: EngineSnapshot,
    /// Answers (or hangs up) once the read side wrote everything applied before the snapshot.
    pub(crate) read_written: std_mpsc::Receiver<()>,
    /// Who asked, if anyone (an operator); periodic snapshots have no one.
    pub(crate) reply: Option<SnapshotReply>,
}

/// The engine thread's end of the snapshot writer.
pub(crate) struct SnapshotWriter {
    tx: Option<std_mpsc::Sender<SnapshotJob>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Jobs sent and not finished.
    in_flight: Arc<AtomicUsize>,
    /// The newest snapshot stored, by sequence number.
    stored_seq: Arc<AtomicU64>,
}

impl SnapshotWriter {
    /// Start the thread; `stored_seq` is the newest snapshot already stored.
    pub(crate) fn start(store: Store, stored_seq: u64) -> std::io::Result<SnapshotWriter> {
        let (tx, rx) = std_mpsc::channel::<SnapshotJob>();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let stored = Arc::new(AtomicU64::new(stored_seq));
        let (thread_in_flight, thread_stored) = (in_flight.clone(), stored.clone());
        let thread = std::thread::Builder::new().name("exhost-snapshots".into()).spawn(move || {
            for job in rx {
                let seq = job.snapshot.seq;
                let answer = write(&store, job.snapshot, &job.read_written);
                if let Ok(taken) = &answer {
                    thread_stored.fetch_max(taken.seq, Ordering::AcqRel);
                }
                match (job.reply, &answer) {
                    (Some(reply), _) => {
                        let _ = reply.send(answer);
                    }
                    // Not fatal: recovery just replays more.
                    (None, Err(error)) => tracing::error!(seq, %error, "periodic snapshot failed"),
                    (None, Ok(_)) => {}
                }
                thread_in_flight.fetch_sub(1, Ordering::AcqRel);
            }
        })?;
        Ok(SnapshotWriter { tx: Some(tx), thread: Some(thread), in_flight, stored_seq: stored })
    }

    /// Hand a snapshot over to be stored.
    pub(crate) fn send(&self, job: SnapshotJob) {
        let Some(tx) = &self.tx else {
            if let Some(reply) = job.reply {
                let _ = reply.send(Err(NodeError::Stopped));
            }
            return;
        };
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        if let Err(std_mpsc::SendError(job)) = tx.send(job) {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            if let Some(reply) = job.reply {
                let _ = reply.send(Err(NodeError::Stopped));
            }
        }
    }

    /// Whether every snapshot handed over is stored (or failed).
    pub(crate) fn idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    /// The newest snapshot stored.
    pub(crate) fn stored_seq(&self) -> u64 {
        self.stored_seq.load(Ordering::Acquire)
    }

    /// Store what was handed over and stop the thread.
    pub(crate) fn finish(&mut self) {
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        self.finish();
    }
}

fn write(
    store: &Store,
    snapshot: EngineSnapshot,
    read_written: &std_mpsc::Receiver<()>,
) -> Result<SnapshotTaken, NodeError> {
    // A hang-up means the read side has stopped, having written all it will.
    let _ = read_written.recv();
    let started = Instant::now();
    let taken = store_snapshot(store, &snapshot)?;
    metrics::histogram!("exhost_snapshot_seconds").record(started.elapsed().as_secs_f64());
    tracing::info!(seq = taken.seq, digest = %taken.digest_hex, bytes = taken.size_bytes, "snapshot stored");
    Ok(taken)
}

/// Encode a snapshot and store it (synced) with its digest.
pub(crate) fn store_snapshot(store: &Store, snapshot: &EngineSnapshot) -> Result<SnapshotTaken, NodeError> {
    let bytes = snapshot.encode();
    let digest = EngineSnapshot::digest_of(&bytes);
    store.put_snapshot(snapshot.seq, digest.0, &bytes)?;
    Ok(SnapshotTaken { seq: snapshot.seq, digest_hex: digest.to_hex(), size_bytes: bytes.len() as u64 })
}

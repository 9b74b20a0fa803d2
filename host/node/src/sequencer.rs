//! The sequencer thread: gives each command its sequence number and
//! timestamp, writes a batch of them to the command log (group commit), and
//! hands the batch to the engine only once the write is durable.

use std::sync::Arc;
use std::time::Instant;

use exhost_guest_sdk::codec::encode_into;
use exhost_store::CommandLog;
use exhost_store::journal::encode_record;
use tokio::sync::mpsc;

use crate::engine_loop::EngineInput;
use crate::error::{Halt, SubmitError};
use crate::health::Health;
use crate::pipeline::{NodeSettings, Sequenced, Submission, now_ns};
use crate::watermark::Watermark;

pub(crate) struct Sequencer {
    pub(crate) log: Arc<dyn CommandLog>,
    pub(crate) health: Arc<Health>,
    pub(crate) engine_tx: mpsc::Sender<EngineInput>,
    pub(crate) settings: NodeSettings,
    pub(crate) watermark: Option<Watermark>,
    /// The sequence number the next command gets.
    pub(crate) next_seq: u64,
    /// Timestamps never go back, even when the clock does.
    pub(crate) last_ts_ns: u64,
    /// Where to continue after others wrote the log (a standby promoted to
    /// active): `(next_seq, last_ts_ns)`, taken before the next batch.
    pub(crate) resume_at: Arc<std::sync::Mutex<Option<(u64, u64)>>>,
}

impl Sequencer {
    pub(crate) fn run(mut self, mut submit_rx: mpsc::Receiver<Submission>) {
        let mut batch: Vec<Submission> = Vec::with_capacity(self.settings.batch_commands_max);
        let mut encoded = Vec::new();
        let mut records: Vec<u8> = Vec::new();
        let mut bounds: Vec<(u64, usize, usize)> = Vec::new();
        while let Some(first) = submit_rx.blocking_recv() {
            batch.push(first);
            // Group commit: everything already waiting shares this write.
            while batch.len() < self.settings.batch_commands_max {
                match submit_rx.try_recv() {
                    Ok(submission) => batch.push(submission),
                    Err(_) => break,
                }
            }
            if let Some(problem) = self.health.problem() {
                for submission in batch.drain(..) {
                    let _ = submission.reply.send(Err(SubmitError::Halted(problem.clone())));
                }
                continue;
            }
            if let Some((next_seq, last_ts_ns)) = self.resume_at.lock().unwrap_or_else(|p| p.into_inner()).take() {
                self.next_seq = next_seq;
                self.last_ts_ns = self.last_ts_ns.max(last_ts_ns);
            }
            let next_seq = self.next_seq;
            let ts_ns = now_ns().max(self.last_ts_ns);
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
            assert_eq!(bounds.len(), batch.len(), "one journal record per command");
            // The watermark's ceiling goes up before anything past it can be acknowledged.
            if let Some(Err(source)) = self.watermark.as_mut().map(|watermark| watermark.cover(last_seq)) {
                let halt = self.health.halt(Halt::Watermark { seq: next_seq, source });
                for submission in batch.drain(..) {
                    let _ = submission.reply.send(Err(SubmitError::Halted(halt.clone())));
                }
                continue;
            }
            let started = Instant::now();
            let slices: Vec<(u64, &[u8])> =
                bounds.iter().map(|&(seq, start, end)| (seq, &records[start..end])).collect();
            let written = self.log.append(&slices, self.settings.durability);
            metrics::histogram!("exhost_journal_write_seconds").record(started.elapsed().as_secs_f64());
            metrics::histogram!("exhost_journal_batch_commands").record(batch.len() as f64);
            match written {
                Ok(()) => {
                    if let Some(watermark) = self.watermark.as_mut() {
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
                    self.next_seq = last_seq + 1;
                    self.last_ts_ns = ts_ns;
                    if self.engine_tx.blocking_send(EngineInput::Durable(sequenced)).is_err() {
                        // The engine thread is gone: its replies are dropped, clients see shutdown.
                        return;
                    }
                }
                Err(exhost_store::StoreError::NotWriter(reason)) => {
                    // Nothing was written: the node stays up, as a standby, and
                    // the clients may send the same commands to the active node.
                    for submission in batch.drain(..) {
                        let _ = submission.reply.send(Err(SubmitError::NotActive(reason.clone())));
                    }
                }
                Err(exhost_store::StoreError::Unconfirmed(reason)) => {
                    // The log may hold the batch: the node has stepped down and
                    // will apply whatever the log holds as a standby; its clients
                    // learn the outcome by looking the command up.
                    for submission in batch.drain(..) {
                        let _ = submission.reply.send(Err(SubmitError::Unconfirmed(reason.clone())));
                    }
                }
                Err(source) => {
                    // The batch may or may not be durable (a failed sync can leave it
                    // written): its outcome is unknown, and its clients are told so. The
                    // host stops taking commands, since the disk may be failing; a
                    // restart replays whatever of it is in the journal.
                    let halt = self.health.halt(Halt::JournalWrite { seq: next_seq, source });
                    for submission in batch.drain(..) {
                        let _ = submission.reply.send(Err(SubmitError::Journal(halt.clone())));
                    }
                }
            }
        }
        // Every sender is gone: the host is shutting down. Everything journaled has
        // been handed over, so the engine can finish and stop.
        let _ = self.engine_tx.blocking_send(EngineInput::Shutdown);
    }
}

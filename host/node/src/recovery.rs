//! Rebuilding state from the data directory: the newest usable snapshot, then
//! the journal replayed through the same modules. Start-up, point-in-time
//! queries, `exhost replay` and `exhost verify` all go through here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use exhost_engine::{BATCH_COMMANDS_MAX, Command, Engine, EngineSnapshot, Event, ModuleLoader};
use exhost_guest_sdk::codec::decode;
use exhost_store::Store;

use crate::engine_loop::stamp;
use crate::error::RecoveryError;
use crate::readmodel::{self, ReadModelWriter};

/// Journal records decoded: `(seq, ts_ns, command)`, consecutive.
type Decoded = Vec<(u64, u64, Command)>;

/// Reports progress of long work on stderr: a bar with rate and ETA on a
/// terminal (`indicatif`), otherwise a plain log line at most once a second.
pub struct Progress {
    label: &'static str,
    total: u64,
    done: u64,
    started: Instant,
    last_report: Instant,
    enabled: bool,
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    pub fn new(label: &'static str, total: u64, enabled: bool) -> Progress {
        let now = Instant::now();
        let bar = (enabled && std::io::IsTerminal::is_terminal(&std::io::stderr())).then(|| {
            let bar = indicatif::ProgressBar::with_draw_target(Some(total), indicatif::ProgressDrawTarget::stderr());
            let style = indicatif::ProgressStyle::with_template(
                "{msg} [{bar:40}] {human_pos}/{human_len} commands ({per_sec}, ETA {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            bar.set_style(style.progress_chars("=> "));
            bar.set_message(label);
            bar
        });
        Progress { label, total, done: 0, started: now, last_report: now, enabled, bar }
    }

    pub fn advance(&mut self, by: u64) {
        self.done += by;
        if let Some(bar) = &self.bar {
            bar.set_position(self.done);
            return;
        }
        if self.enabled && self.last_report.elapsed() >= Duration::from_secs(1) {
            self.last_report = Instant::now();
            let rate = self.done as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
            let percent = if self.total > 0 { 100.0 * self.done as f64 / self.total as f64 } else { 100.0 };
            tracing::info!("{}: {}/{} commands ({percent:.1}%, {rate:.0}/s)", self.label, self.done, self.total);
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

/// How a rebuild went.
#[derive(Clone, Debug, Default)]
pub struct RebuildStats {
    /// The snapshot it started from (0: none, replayed from the first record).
    pub snapshot_seq: u64,
    pub replayed: u64,
    pub restore_time: Duration,
    pub replay_time: Duration,
}

/// An engine at the newest usable snapshot at or before `seq` (or empty), not
/// yet replayed. Whatever makes a snapshot unusable (a damaged record, a
/// damaged table under it, an older format, a module that cannot be loaded)
/// is reported and the next older one is tried, down to the journal's start:
/// a snapshot only saves replay, so losing one never stops recovery.
pub fn engine_from_snapshot(store: &Store, loader: Arc<dyn ModuleLoader>, seq: u64) -> Engine {
    for snapshot_seq in snapshot_seqs_at_or_before(store, seq) {
        let stored = match store.snapshot(snapshot_seq) {
            Ok(Some(stored)) => stored,
            Ok(None) => continue,
            Err(problem) => {
                tracing::warn!(snapshot_seq, %problem, "skipping an unreadable snapshot; an older one (or the journal) will be used");
                continue;
            }
        };
        let restored = EngineSnapshot::decode(&stored.bytes)
            .map_err(|error| format!("it does not decode: {error}"))
            .and_then(|decoded| Engine::restore(loader.clone(), decoded).map_err(|error| error.to_string()));
        match restored {
            Ok(engine) => return engine,
            Err(problem) => tracing::warn!(
                snapshot_seq,
                %problem,
                "skipping an unusable snapshot; an older one (or the journal) will be used"
            ),
        }
    }
    Engine::new(loader)
}

/// The sequence numbers of stored snapshots at or before `seq`, newest first,
/// from the snapshot index; what cannot be read is reported and left out.
fn snapshot_seqs_at_or_before(store: &Store, seq: u64) -> Vec<u64> {
    match store.snapshot_infos() {
        Ok(infos) => infos.iter().rev().map(|info| info.seq).filter(|&at| at <= seq).collect(),
        Err(problem) => {
            tracing::warn!(%problem, "the snapshot index cannot be read; replaying the journal from its start");
            Vec::new()
        }
    }
}

/// Apply journal records after the engine's position, up to `to_seq`,
/// calling `on_events` with each command's events.
///
/// Reading runs beside applying: a second thread iterates the journal,
/// checks each record's CRC and decodes its command, a batch at a time, while
/// this one applies the batch before. Reading and decoding were about a
/// quarter of replay's time, and at start-up the other core is otherwise idle.
pub fn replay(
    store: &Store,
    engine: &mut Engine,
    to_seq: u64,
    progress: &mut Progress,
    mut on_events: impl FnMut(&[Event]) -> Result<(), RecoveryError>,
) -> Result<u64, RecoveryError> {
    if engine.last_seq() >= to_seq {
        return Ok(0);
    }
    let from_seq = engine.last_seq() + 1;
    // Two batches queued ahead keep the applier fed without holding much memory.
    let (batches, decoded) = std::sync::mpsc::sync_channel::<Result<Decoded, RecoveryError>>(2);
    let mut replayed = 0;
    std::thread::scope(|scope| -> Result<(), RecoveryError> {
        scope.spawn(move || read_batches(store, from_seq, to_seq, &batches));
        for batch in decoded {
            let mut batch = batch?;
            let applied = apply_replayed(engine, &mut batch, &mut on_events)?;
            replayed += applied;
            progress.advance(applied);
        }
        Ok(())
    })?;
    if engine.last_seq() < to_seq {
        return Err(RecoveryError::JournalShort { last_seq: engine.last_seq(), to_seq });
    }
    // Faults met again on replay were reported when they first happened.
    let (faults, unreported) = engine.take_faults();
    if !faults.is_empty() {
        tracing::debug!(
            count = faults.len() as u64 + unreported,
            "module faults replayed (rejected again, as journaled)"
        );
    }
    Ok(replayed)
}

/// The journal from `from_seq` to `to_seq`, decoded, in batches of consecutive
/// records as the live path applies them; stops at the first error (sent on)
/// or when the applier hangs up.
fn read_batches(
    store: &Store,
    from_seq: u64,
    to_seq: u64,
    batches: &std::sync::mpsc::SyncSender<Result<Decoded, RecoveryError>>,
) {
    let mut batch: Vec<(u64, u64, Command)> = Vec::with_capacity(BATCH_COMMANDS_MAX);
    for record in store.journal_from(from_seq) {
        // Records past `to_seq` are not decoded (nor need they be decodable).
        let decoded = record.map_err(RecoveryError::from).and_then(|record| {
            if record.seq > to_seq {
                return Ok(None);
            }
            let command: Command =
                decode(&record.command).map_err(|source| RecoveryError::Undecodable { seq: record.seq, source })?;
            Ok(Some((record.seq, record.ts_ns, command)))
        });
        let (seq, ts_ns, command) = match decoded {
            Ok(Some(decoded)) => decoded,
            Ok(None) => break,
            Err(error) => {
                // What was read before the error is applied first, so the engine
                // stops right before the record that could not be read.
                if !batch.is_empty() && batches.send(Ok(std::mem::take(&mut batch))).is_err() {
                    return;
                }
                let _ = batches.send(Err(error));
                return;
            }
        };
        // A gap ends the batch; the engine then refuses the record after it by its sequence number.
        if batch.len() == BATCH_COMMANDS_MAX || batch.last().is_some_and(|(last, _, _)| last + 1 != seq) {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_COMMANDS_MAX));
            if batches.send(Ok(full)).is_err() {
                return;
            }
        }
        batch.push((seq, ts_ns, command));
    }
    if !batch.is_empty() {
        let _ = batches.send(Ok(batch));
    }
}

/// Apply a batch of journaled commands (consecutive sequence numbers) and hand on their events.
fn apply_replayed(
    engine: &mut Engine,
    batch: &mut Vec<(u64, u64, Command)>,
    on_events: &mut impl FnMut(&[Event]) -> Result<(), RecoveryError>,
) -> Result<u64, RecoveryError> {
    let Some(&(first_seq, _, _)) = batch.first() else { return Ok(0) };
    let items: Vec<(u64, &Command)> = batch.iter().map(|(_, ts_ns, command)| (*ts_ns, command)).collect();
    let (results, error) = engine.apply_batch_partial(first_seq, &items);
    let applied = results.len() as u64;
    for ((seq, ts_ns, _), bodies) in batch.iter().zip(results) {
        on_events(&stamp(*seq, *ts_ns, bodies))?;
    }
    if let Some(error) = error {
        return Err(RecoveryError::Apply { seq: first_seq + applied, source: error });
    }
    batch.clear();
    Ok(applied)
}

/// Start-up: the newest snapshot, then the whole journal tail; events the
/// read model missed (a crash loses its unsynced writes) are written again.
pub fn recover(store: &Store, loader: Arc<dyn ModuleLoader>) -> Result<(Engine, RebuildStats), RecoveryError> {
    // Reading the last record checks it: a torn or corrupt tail stops start-up here.
    let last_seq = store.journal_last()?.map_or(0, |record| record.seq);
    if let Some(newest) = store.snapshot_infos().ok().and_then(|infos| infos.last().copied())
        && newest.seq > last_seq
    {
        return Err(RecoveryError::SnapshotAhead { snapshot_seq: newest.seq, last_seq });
    }
    // The read model is written unsynced, so it may end before the newest
    // snapshot (a synced write it did not share): start from a snapshot it
    // covers, so that every event it lacks is written again. Found by the
    // write-path simulation: a failed read-model write, then a snapshot, and
    // the read model never learned of the commands between.
    readmodel::rebuild_records(store)?;
    let covered = readmodel::covered_seq(store)?;
    let started = Instant::now();
    let mut engine = engine_from_snapshot(store, loader, last_seq.min(covered));
    let restore_time = started.elapsed();
    let snapshot_seq = engine.last_seq();
    tracing::info!(snapshot_seq, last_seq, "recovering: replaying {} journaled commands", last_seq - snapshot_seq);

    let started = Instant::now();
    let mut progress = Progress::new("recovery", last_seq - snapshot_seq, true);
    let mut writer = ReadModelWriter::new(store);
    let replayed = replay(store, &mut engine, last_seq, &mut progress, |events| {
        let Some(first) = events.first() else { return Ok(()) };
        if first.seq > covered {
            for event in events {
                writer.apply(event)?;
            }
            writer.cover(first.seq);
        }
        if writer.pending() > 50_000 {
            std::mem::replace(&mut writer, ReadModelWriter::new(store)).commit()?;
        }
        Ok(())
    })?;
    writer.commit()?;
    let stats = RebuildStats { snapshot_seq, replayed, restore_time, replay_time: started.elapsed() };
    Ok((engine, stats))
}

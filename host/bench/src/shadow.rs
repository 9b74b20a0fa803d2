//! `exhost bench shadow`: what a shadow run costs the live path. The same
//! flow goes through the wasm engine a journal batch at a time, as the
//! node's engine thread runs it, without a shadow and with one (an identical
//! rebuild of the reference book under another hash) fed on a thread of its
//! own through the node's bounded queue, and, to tell the tap's own cost from
//! the second busy thread's, tapped with nobody fed; rounds interleaved.
//! Reported: the live commands per second of each, how long after the live flow the shadow
//! finished comparing, and what it found (an identical rebuild must find no
//! divergence).

use std::sync::Arc;
use std::sync::mpsc::{TrySendError, sync_channel};
use std::time::Instant;

use anyhow::bail;
use exhost_engine::{Command, Engine, MarketId, ModuleHash, Shadow, Tap};
use exhost_runtime::WasmLoader;
use serde_json::json;

/// What one run with a shadow measured.
struct Shadowed {
    live_seconds: f64,
    /// From the end of the live flow to the shadow's last comparison.
    catch_up_seconds: f64,
    commands_compared: u64,
    divergences: u64,
    faults: u64,
    live_fuel: u64,
    shadow_fuel: u64,
    cut_off: bool,
}

fn setup_engine(loader: Arc<WasmLoader>, setup: &[Command]) -> anyhow::Result<Engine> {
    let mut engine = Engine::new(loader);
    for (i, command) in setup.iter().enumerate() {
        engine.apply(i as u64 + 1, i as u64, command)?;
    }
    Ok(engine)
}

/// The measured flow a batch at a time; `after_batch` runs after each, as the
/// node feeds shadows after answering a batch.
fn drive(
    engine: &mut Engine,
    first: u64,
    measured: &[Command],
    mut after_batch: impl FnMut(&mut Engine),
) -> anyhow::Result<f64> {
    let started = Instant::now();
    for (chunk_index, chunk) in measured.chunks(exhost_engine::BATCH_COMMANDS_MAX).enumerate() {
        let chunk_first = first + (chunk_index * exhost_engine::BATCH_COMMANDS_MAX) as u64;
        let items: Vec<(u64, &Command)> =
            chunk.iter().enumerate().map(|(i, command)| (chunk_first + i as u64, command)).collect();
        engine.apply_batch(chunk_first, &items)?;
        after_batch(engine);
    }
    Ok(started.elapsed().as_secs_f64())
}

fn with_shadow(
    loader: Arc<WasmLoader>,
    candidate: ModuleHash,
    setup: &[Command],
    measured: &[Command],
) -> anyhow::Result<Shadowed> {
    let mut engine = setup_engine(loader.clone(), setup)?;
    let Some(start) = engine.tap_market(MarketId(0))? else { bail!("no market to shadow") };
    let shadow = Shadow::start(&*loader, &start, candidate)?;
    let (feed, calls) = sync_channel::<Tap>(exhost_node::SHADOW_BATCHES_QUEUED_MAX);
    let thread_loader = loader.clone();
    let follower = std::thread::spawn(move || -> anyhow::Result<(Shadow, Instant)> {
        let mut shadow = shadow;
        while let Ok(batch) = calls.recv() {
            shadow.feed(&*thread_loader, &batch)?;
        }
        Ok((shadow, Instant::now()))
    });
    let mut cut_off = false;
    let live_seconds = drive(&mut engine, setup.len() as u64 + 1, measured, |engine| {
        for (market, calls) in engine.take_taps() {
            if cut_off {
                continue;
            }
            if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = feed.try_send(calls) {
                cut_off = true;
                engine.untap_market(market);
            }
        }
    })?;
    let live_done = Instant::now();
    drop(feed);
    let (shadow, finished) = follower.join().map_err(|_| anyhow::anyhow!("the shadow thread panicked"))??;
    let report = shadow.report();
    Ok(Shadowed {
        live_seconds,
        catch_up_seconds: finished.saturating_duration_since(live_done).as_secs_f64(),
        commands_compared: report.commands,
        divergences: report.divergences,
        faults: report.faults,
        live_fuel: report.live_fuel,
        shadow_fuel: report.shadow_fuel,
        cut_off,
    })
}

/// The flow `measured` after `setup`, on `loader`, alone and beside a
/// shadow run of `candidate` (which must behave as the live module does).
pub fn run(
    loader: Arc<WasmLoader>,
    candidate: ModuleHash,
    setup: &[Command],
    measured: &[Command],
    positions: bool,
    rounds: u32,
) -> anyhow::Result<()> {
    let rate = |seconds: f64| measured.len() as f64 / seconds;
    let (mut best_alone, mut best_tapped, mut best_shadowed) = (f64::MAX, f64::MAX, None::<Shadowed>);
    for round in 0..rounds.max(1) {
        let mut engine = setup_engine(loader.clone(), setup)?;
        let alone = drive(&mut engine, setup.len() as u64 + 1, measured, |_| {})?;
        eprintln!("round {round} live alone: {:.0} commands/s", rate(alone));
        best_alone = best_alone.min(alone);
        // The tap's own cost on the engine thread: calls kept and taken, then dropped.
        let mut engine = setup_engine(loader.clone(), setup)?;
        engine.tap_market(MarketId(0))?;
        let tapped = drive(&mut engine, setup.len() as u64 + 1, measured, |engine| drop(engine.take_taps()))?;
        eprintln!("round {round} live tapped, nobody fed: {:.0} commands/s", rate(tapped));
        best_tapped = best_tapped.min(tapped);
        let shadowed = with_shadow(loader.clone(), candidate, setup, measured)?;
        eprintln!(
            "round {round} live with a shadow: {:.0} commands/s (shadow done {:.3} s later, {} divergences)",
            rate(shadowed.live_seconds),
            shadowed.catch_up_seconds,
            shadowed.divergences
        );
        if shadowed.divergences > 0 || shadowed.faults > 0 {
            bail!("an identical rebuild diverged: {} divergences, {} faults", shadowed.divergences, shadowed.faults);
        }
        if best_shadowed.as_ref().is_none_or(|best| shadowed.live_seconds < best.live_seconds) {
            best_shadowed = Some(shadowed);
        }
    }
    let Some(shadowed) = best_shadowed else { bail!("no rounds ran") };
    println!(
        "{}",
        json!({
            "bench": "shadow", "positions": positions, "commands": measured.len(),
            "best_of": rounds, "live_alone_commands_per_sec": rate(best_alone).round(),
            "live_tapped_commands_per_sec": rate(best_tapped).round(),
            "live_with_shadow_commands_per_sec": rate(shadowed.live_seconds).round(),
            "live_ratio": ((best_alone / shadowed.live_seconds) * 1000.0).round() / 1000.0,
            "shadow_catch_up_seconds": shadowed.catch_up_seconds, "shadow_commands_compared": shadowed.commands_compared,
            "divergences": shadowed.divergences, "live_fuel": shadowed.live_fuel, "shadow_fuel": shadowed.shadow_fuel,
            "cut_off": shadowed.cut_off,
        })
    );
    Ok(())
}

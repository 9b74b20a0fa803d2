//! `exhost bench memory`: bytes per resting order inside the matching
//! module's linear memory, snapshot bytes per order, and the host's resident
//! memory with that many orders resting; the time (and fuel) to snapshot that
//! book and to restore it into a new instance, and the time to image it and
//! to resume an instance from the image (what checkpoints and stored
//! snapshots do).

use std::time::Instant;

use exhost_engine::{Instance, ModuleLimits};
use exhost_guest_sdk::{
    CommandContext, MarketConfig, MatchingCommand, OrderId, OrderType, PlaceOrder, SelfTradePrevention, Side,
    TimeInForce, UserId,
};
use exhost_runtime::{Runtime, WasmMatching};
use serde_json::json;

/// Resident memory of this process, from /proc (Linux), in bytes.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `resting` non-crossing orders over `levels` price levels per side.
pub fn run(resting: u64, levels: u64) -> anyhow::Result<()> {
    let runtime = Runtime::new()?;
    let compiled = runtime.compile(exhost_embedded::PRICETIME_WASM).map_err(|e| anyhow::anyhow!("{e}"))?;
    let rss_before = resident_bytes().unwrap_or(0);
    let mut book = WasmMatching::instantiate(&runtime, &compiled, &ModuleLimits::default())?;
    let config = MarketConfig { resting_orders_max: u32::MAX, ..MarketConfig::default() };
    book.init(&config)?;
    let empty = book.memory_bytes();
    let started = Instant::now();
    let mut batch = Vec::with_capacity(10_000);
    let mut outputs = Vec::with_capacity(10_000);
    for i in 0..resting {
        let seq = i + 1;
        let buy = i % 2 == 0;
        let offset = 1 + (i / 2) % levels;
        batch.push((
            CommandContext { seq, ts_ns: seq },
            MatchingCommand::Place(PlaceOrder {
                order_id: OrderId(seq),
                user_id: UserId(1 + i % 1_000),
                side: if buy { Side::Buy } else { Side::Sell },
                order_type: OrderType::Limit,
                price_ticks: if buy { 1_000_000 - offset } else { 1_000_000 + offset },
                qty_lots: 1 + i % 10,
                time_in_force: TimeInForce::Gtc,
                self_trade_prevention: SelfTradePrevention::CancelTaker,
            }),
        ));
        if batch.len() == batch.capacity() || i + 1 == resting {
            outputs.clear();
            book.apply_batch(&batch, &mut outputs).map_err(|(_, fault)| fault)?;
            batch.clear();
        }
    }
    let load_seconds = started.elapsed().as_secs_f64();
    let full = book.memory_bytes();
    let rss_after = resident_bytes().unwrap_or(0);
    // The snapshot a checkpoint or a hot swap takes, and a new instance restoring it.
    let started = Instant::now();
    let mut snapshot = Vec::new();
    book.snapshot(&mut snapshot)?;
    let snapshot_seconds = started.elapsed().as_secs_f64();
    let snapshot_fuel = book.last_fuel_used();
    // The image a checkpoint and a stored snapshot take, and an instance resumed from it.
    let started = Instant::now();
    let image = book.image();
    let image_seconds = started.elapsed().as_secs_f64();
    let image_bytes = image.stored_bytes();
    // What a checkpoint after the first takes: the image copied into the
    // previous one's buffers (the engine's stall for a checkpoint or a
    // snapshot), best of three, against the limit: a plain copy of as many
    // bytes into memory already mapped.
    let mut recaptured = image.clone();
    let mut recapture_seconds = f64::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        book.image_into(&mut recaptured);
        recapture_seconds = recapture_seconds.min(started.elapsed().as_secs_f64());
    }
    if recaptured != image {
        anyhow::bail!("an image taken into an old one's buffers differs from a fresh one");
    }
    drop(recaptured);
    let source = vec![1u8; image_bytes];
    let mut target = vec![2u8; image_bytes];
    let mut memcpy_seconds = f64::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        target.copy_from_slice(std::hint::black_box(&source));
        std::hint::black_box(&target);
        memcpy_seconds = memcpy_seconds.min(started.elapsed().as_secs_f64());
    }
    drop((source, target));
    let started = Instant::now();
    let resumed = WasmMatching::resume(&runtime, &compiled, &ModuleLimits::default(), &image)?;
    let resume_seconds = started.elapsed().as_secs_f64();
    drop(resumed);
    let started = Instant::now();
    let mut restored = WasmMatching::instantiate(&runtime, &compiled, &ModuleLimits::default())?;
    restored.restore(book.state_version(), &snapshot)?;
    let restore_seconds = started.elapsed().as_secs_f64();
    let restore_fuel = restored.last_fuel_used();
    let mut again = Vec::new();
    restored.snapshot(&mut again)?;
    if again != snapshot {
        anyhow::bail!("the restored book's snapshot differs from the one it was restored from");
    }
    println!(
        "{}",
        json!({
            "bench": "memory", "resting_orders": resting, "levels_per_side": levels,
            "module_memory_bytes": full, "module_bytes_per_order": ((full - empty) as f64 / resting.max(1) as f64).round(),
            "snapshot_bytes": snapshot.len(), "snapshot_bytes_per_order": (snapshot.len() as f64 / resting.max(1) as f64 * 10.0).round() / 10.0,
            "snapshot_seconds": snapshot_seconds, "restore_seconds": restore_seconds,
            "snapshot_fuel": snapshot_fuel, "restore_fuel": restore_fuel,
            "image_bytes": image_bytes, "image_seconds": image_seconds, "resume_seconds": resume_seconds,
            "image_into_previous_seconds": recapture_seconds, "memcpy_same_bytes_seconds": memcpy_seconds,
            "host_resident_bytes": rss_after, "host_resident_growth_bytes": rss_after.saturating_sub(rss_before),
            "load_orders_per_sec": (resting as f64 / load_seconds).round(),
        })
    );
    Ok(())
}

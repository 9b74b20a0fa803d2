//! `exhost bench journal`: the journal's synced group commit against the raw
//! speed of the same disk (append then fsync, in a loop, in the same run), and
//! the time from submit to acknowledgement through the whole write path.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use exhost_engine::{Command, Engine, ModuleHash, NewOrder};
use exhost_guest_sdk::codec::encode_into;
use exhost_guest_sdk::{OrderType, SelfTradePrevention, Side, TimeInForce, UserId};
use exhost_store::journal::encode_record;
use exhost_store::{Durability, Store};
use serde_json::json;

use exhost_node::{Node, NodeSettings, Storage};

/// A typical journaled command: a limit order.
fn sample_command(i: u64) -> Command {
    Command::PlaceOrder(NewOrder {
        market: exhost_engine::MarketId(0),
        user_id: UserId(1 + i % 16),
        client_order_id: None,
        side: if i.is_multiple_of(2) { Side::Buy } else { Side::Sell },
        order_type: OrderType::Limit,
        price_ticks: 270_000 + (i % 50),
        qty_lots: 1 + i % 9,
        time_in_force: TimeInForce::Gtc,
        self_trade_prevention: SelfTradePrevention::CancelTaker,
        reduce_only: false,
    })
}

pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64()
}

/// Raw disk and journal, at several batch sizes, then the write path end to end.
pub fn run(dir: &Path, seconds: f64, clients: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let command_bytes = {
        let mut encoded = Vec::new();
        encode_into(&sample_command(1), &mut encoded);
        let mut record = Vec::new();
        encode_record(1, 1, &encoded, &mut record);
        record.len()
    };
    for batch in [1usize, 16, 256] {
        // The physical limit: append `batch` records' bytes to a file, fdatasync, repeat.
        let path = dir.join("raw.bin");
        let mut file = std::fs::OpenOptions::new().create(true).write(true).truncate(true).open(&path)?;
        let chunk = vec![7u8; command_bytes * batch];
        let started = Instant::now();
        let mut records = 0u64;
        while started.elapsed().as_secs_f64() < seconds {
            file.write_all(&chunk)?;
            file.sync_data()?;
            records += batch as u64;
        }
        let raw_rate = records as f64 / started.elapsed().as_secs_f64();
        drop(file);
        std::fs::remove_file(&path)?;

        // The journal: the same records through Store::append_journal, synced.
        let db = dir.join(format!("journal-{batch}"));
        let _ = std::fs::remove_dir_all(&db);
        let store = Store::open(&db)?;
        let mut encoded = Vec::new();
        let mut bytes = Vec::new();
        let mut bounds = Vec::new();
        let mut seq = 0u64;
        let mut latencies = Vec::new();
        let started = Instant::now();
        while started.elapsed().as_secs_f64() < seconds {
            bytes.clear();
            bounds.clear();
            for _ in 0..batch {
                seq += 1;
                encoded.clear();
                encode_into(&sample_command(seq), &mut encoded);
                let start = bytes.len();
                encode_record(seq, seq, &encoded, &mut bytes);
                bounds.push((seq, start, bytes.len()));
            }
            let write_started = Instant::now();
            store.append_journal(bounds.iter().map(|&(s, a, b)| (s, &bytes[a..b])), Durability::Synced)?;
            latencies.push(write_started.elapsed());
        }
        let journal_rate = seq as f64 / started.elapsed().as_secs_f64();
        latencies.sort();
        drop(store);
        let _ = std::fs::remove_dir_all(&db);
        println!(
            "{}",
            json!({
                "bench": "journal", "batch_commands": batch, "record_bytes": command_bytes,
                "raw_append_fsync_commands_per_sec": raw_rate.round(),
                "raw_bytes_per_sec": (raw_rate * command_bytes as f64).round(),
                "journal_commands_per_sec": journal_rate.round(),
                "journal_bytes_per_sec": (journal_rate * command_bytes as f64).round(),
                "journal_vs_raw": (journal_rate / raw_rate * 1000.0).round() / 1000.0,
                "write_p50_seconds": percentile(&latencies, 0.50), "write_p99_seconds": percentile(&latencies, 0.99),
            })
        );
    }
    write_path(dir, seconds, clients)
}

/// Concurrent submitters through the real node (sequencer, synced group commit,
/// engine with the wasm book, read model): acknowledged commands per second and
/// the time from submit to acknowledgement.
fn write_path(dir: &Path, seconds: f64, clients: usize) -> anyhow::Result<()> {
    let db = dir.join("node");
    let _ = std::fs::remove_dir_all(&db);
    let store = Store::open(&db)?;
    let hash = ModuleHash::of(exhost_embedded::PRICETIME_WASM);
    store.put_module(&hash.0, exhost_embedded::PRICETIME_WASM)?;
    let loader = exhost_node::loader_for(&store)?;
    let mut engine = Engine::new(loader);
    engine.apply(1, 1, &Command::CreateMarket(exhost_node::datadir::default_market(hash)))?;
    for user in 0..16 {
        let seq = engine.last_seq() + 1;
        engine.apply(seq, seq, &Command::CreateUser { api_key: format!("k{user}"), api_secret: "s".into() })?;
    }
    // The engine's setup is not journaled here: the node starts past it.
    let settings = NodeSettings {
        sealer: None,
        durability: Durability::Synced,
        batch_commands_max: 4_096,
        submit_queue_max: 65_536,
        snapshot_every_commands: 0,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let node = Arc::new(Node::start(Storage::local(store), engine, settings, 0, None)?);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let latencies = runtime.block_on(async {
        let mut tasks = Vec::new();
        for client in 0..clients {
            let node = node.clone();
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = client as u64;
                while Instant::now() < deadline {
                    i += clients as u64;
                    let started = Instant::now();
                    if node.submit(sample_command(i)).await.is_ok() {
                        latencies.push(started.elapsed());
                    }
                }
                latencies
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap_or_default());
        }
        all
    });
    let node_for_shutdown = node.clone();
    std::thread::spawn(move || node_for_shutdown.shutdown()).join().ok().context("node shutdown")?;
    let mut latencies = latencies;
    latencies.sort();
    println!(
        "{}",
        json!({
            "bench": "write_path", "clients": clients, "acknowledged": latencies.len(),
            "acknowledged_per_sec": (latencies.len() as f64 / seconds).round(),
            "p50_seconds": percentile(&latencies, 0.50), "p99_seconds": percentile(&latencies, 0.99),
            "p999_seconds": percentile(&latencies, 0.999),
        })
    );
    let _ = std::fs::remove_dir_all(&db);
    Ok(())
}

//! `exhost bench`: measurements anyone can reproduce with one command. Each
//! figure is printed as one JSON line, so runs can be compared by machine.
//!
//! - `engine`: commands per second through the engine, in process, no
//!   journal, no network: the embedded wasm module and the same plugin code
//!   linked natively, on the same command list, in the same process.
//! - `fill`: a data directory holding N journaled commands, written by the
//!   same engine and read-model code as the live path (journal writes unsynced,
//!   since this is data generation, not a durability figure).
//! - `startup`: how long recovery of a data directory takes.
//! - `journal`: synced group commit against the raw disk, and the write path.
//! - `swap`: the hot-swap pause at a given book size.
//! - `shadow`: the live path with and without a shadow run beside it.
//! - `holders`: a mark move, a funding and a liquidating move against the
//!   number of open positions in the market.

pub mod holders;
pub mod journal;
pub mod load;
pub mod memory;
pub mod peer;
pub mod shadow;

use std::path::Path;

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use exhost_engine::{Command, Engine, EngineSnapshot, ModuleHash, ModuleLoader, NativeLoader, NewOrder};
use exhost_guest_sdk::{OrderId, OrderType, SelfTradePrevention, Side, TimeInForce, UserId};
use exhost_positions::Positions;
use exhost_pricetime::PriceTimeBook;
use exhost_runtime::{ModuleSource, Runtime, WasmLoader};
use exhost_store::Store;
use serde_json::json;

use exhost_node::datadir::default_market;
use exhost_node::recovery;

/// The shape of a benchmark order flow.
#[derive(Clone, Copy, Debug)]
pub struct FlowShape {
    /// Run the position module in the pipeline (margin check and settlement of every order).
    pub positions: bool,
    /// Orders resting in the book before the measured flow starts.
    pub resting: u64,
    /// Price levels per side the resting orders spread over.
    pub levels: u64,
    /// Commands in the measured flow.
    pub commands: u64,
    pub users: u64,
    pub seed: u64,
    /// Markets the orders spread over, each with its own instance of the module.
    pub markets: u32,
}

/// Deterministic, so both engines see the very same commands.
use exhost_seeded::Rng;

const MID_TICKS: u64 = 300_000;

/// Set-up commands (market, users, resting book) then the measured flow:
/// 70% limit orders (about a third of them crossing), 20% cancels of resting
/// orders, 10% market or IOC orders. Sequence numbers start at 1.
pub fn flow(shape: FlowShape, module_hash: ModuleHash) -> (Vec<Command>, Vec<Command>) {
    let mut rng = Rng::new(shape.seed);
    let mut setup = Vec::new();
    if shape.positions {
        setup.push(exhost_node::datadir::default_position_install(ModuleHash::of(exhost_embedded::POSITIONS_WASM)));
    }
    let markets = shape.markets.max(1);
    for market in 0..markets {
        let mut spec = default_market(module_hash);
        if market > 0 {
            spec.symbol = format!("M{market}-PERP");
            spec.base = format!("M{market}");
        }
        setup.push(Command::CreateMarket(spec));
    }
    for user in 0..shape.users {
        setup.push(Command::CreateUser { api_key: format!("bench-key-{user}"), api_secret: format!("bench-{user}") });
        if shape.positions {
            // Deep pockets: the benchmark measures the pipeline, not margin refusals.
            let amount_units = 1_000_000_000_000_000;
            setup.push(Command::Deposit { user_id: UserId(user + 1), asset: "USD".into(), amount_units });
        }
    }
    if shape.positions {
        for market in 0..markets {
            setup.push(Command::MarkPrice { market: exhost_engine::MarketId(market), price_ticks: MID_TICKS });
        }
    }
    // Order ids are sequence numbers; remember which are likely resting, and where, to cancel them.
    let mut resting: Vec<(u64, u32)> = Vec::new();
    let place = |market: u32, side: Side, order_type, price_ticks, qty_lots, tif, rng: &mut Rng| {
        Command::PlaceOrder(NewOrder {
            market: exhost_engine::MarketId(market),
            user_id: UserId(1 + rng.below(shape.users)),
            client_order_id: None,
            side,
            order_type,
            price_ticks,
            qty_lots,
            time_in_force: tif,
            self_trade_prevention: SelfTradePrevention::CancelMaker,
            reduce_only: false,
        })
    };
    for _ in 0..shape.resting {
        let seq = setup.len() as u64 + 1;
        let market = if markets > 1 { rng.below(markets as u64) as u32 } else { 0 };
        let side = if rng.below(2) == 0 { Side::Buy } else { Side::Sell };
        let offset = 1 + rng.below(shape.levels);
        let price = if side == Side::Buy { MID_TICKS - offset } else { MID_TICKS + offset };
        setup.push(place(market, side, OrderType::Limit, price, 1 + rng.below(10), TimeInForce::Gtc, &mut rng));
        resting.push((seq, market));
    }
    let mut measured = Vec::with_capacity(shape.commands as usize);
    for _ in 0..shape.commands {
        let seq = (setup.len() + measured.len()) as u64 + 1;
        let market = if markets > 1 { rng.below(markets as u64) as u32 } else { 0 };
        let roll = rng.below(100);
        let side = if rng.below(2) == 0 { Side::Buy } else { Side::Sell };
        let command = if roll < 70 {
            // A third cross into the book a little; the rest join it.
            let offset = rng.below(shape.levels / 4 + 1);
            let crossing = rng.below(3) == 0;
            let price = match (side, crossing) {
                (Side::Buy, false) | (Side::Sell, true) => MID_TICKS - 1 - offset.min(MID_TICKS - 2),
                (Side::Sell, false) | (Side::Buy, true) => MID_TICKS + 1 + offset,
            };
            if !crossing {
                resting.push((seq, market));
            }
            place(market, side, OrderType::Limit, price, 1 + rng.below(10), TimeInForce::Gtc, &mut rng)
        } else if roll < 90 && !resting.is_empty() {
            let index = rng.below(resting.len() as u64) as usize;
            let (order_id, market) = resting.swap_remove(index);
            // The user may not own it: then it is a refused cancel, which costs the same lookup.
            Command::CancelOrder {
                market: exhost_engine::MarketId(market),
                user_id: UserId(1 + rng.below(shape.users)),
                order_id: OrderId(order_id),
            }
        } else if rng.below(2) == 0 {
            place(market, side, OrderType::Market, 0, 1 + rng.below(5), TimeInForce::Ioc, &mut rng)
        } else {
            let price = if side == Side::Buy { MID_TICKS + 2 } else { MID_TICKS - 2 };
            place(market, side, OrderType::Limit, price, 1 + rng.below(5), TimeInForce::Ioc, &mut rng)
        };
        measured.push(command);
    }
    (setup, measured)
}

/// The embedded modules, and any others added, by hash.
#[derive(Default)]
struct Embedded {
    extra: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl ModuleSource for Embedded {
    fn module_bytes(&self, hash: &ModuleHash) -> Option<Vec<u8>> {
        let extra = self.extra.lock().unwrap_or_else(|p| p.into_inner());
        [exhost_embedded::PRICETIME_WASM, exhost_embedded::POSITIONS_WASM]
            .into_iter()
            .chain(extra.iter().map(Vec::as_slice))
            .find(|bytes| ModuleHash::of(bytes) == *hash)
            .map(<[u8]>::to_vec)
    }
}

/// The same module under another hash: a custom section changes the bytes, not the code.
pub fn rebuilt(wasm: &[u8], tag: u32) -> Vec<u8> {
    let name = b"exhost-build";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend_from_slice(&tag.to_le_bytes());
    let mut out = wasm.to_vec();
    out.push(0);
    out.push(payload.len() as u8);
    out.extend_from_slice(&payload);
    out
}

/// `exhost bench shadow`: the live engine alone and beside a shadow run of an
/// identical rebuild of the reference book (`shadow.rs`).
pub fn shadow(shape: FlowShape, rounds: u32) -> anyhow::Result<()> {
    let hash = ModuleHash::of(exhost_embedded::PRICETIME_WASM);
    let (setup, measured) = flow(FlowShape { markets: 1, ..shape }, hash);
    let source = Arc::new(Embedded::default());
    let candidate_bytes = rebuilt(exhost_embedded::PRICETIME_WASM, 1);
    let candidate = ModuleHash::of(&candidate_bytes);
    source.extra.lock().unwrap_or_else(|p| p.into_inner()).push(candidate_bytes);
    let loader = Arc::new(WasmLoader::new(Runtime::new()?, source));
    shadow::run(loader, candidate, &setup, &measured, shape.positions, rounds)
}

/// `exhost bench swap`: with a book of `shape.resting` orders, the time an
/// upload takes (validate and compile, then the dry run that restores the live
/// state into the new module) and the pause of the activation itself, during
/// which the engine (every market) takes no other command.
pub fn swap(shape: FlowShape, rounds: u32) -> anyhow::Result<()> {
    let hash = ModuleHash::of(exhost_embedded::PRICETIME_WASM);
    let (setup, _) = flow(FlowShape { commands: 0, ..shape }, hash);
    let source = Arc::new(Embedded::default());
    let loader = Arc::new(WasmLoader::new(Runtime::new()?, source.clone()));
    let mut engine = Engine::new(loader.clone());
    for (i, command) in setup.iter().enumerate() {
        engine.apply(i as u64 + 1, i as u64, command)?;
    }
    let mut seq = setup.len() as u64;
    let (mut compiles, mut dry_runs, mut pauses) = (Vec::new(), Vec::new(), Vec::new());
    let mut current = hash;
    for round in 0..rounds.max(1) {
        let bytes = rebuilt(exhost_embedded::PRICETIME_WASM, round);
        source.extra.lock().unwrap_or_else(|p| p.into_inner()).push(bytes.clone());
        let started = Instant::now();
        let compiled = loader.runtime().compile(&bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
        compiles.push(started.elapsed().as_secs_f64());
        let state = engine.snapshot()?;
        let started = Instant::now();
        // The checks an upload and an activation run on a copy of the live state.
        let limits = exhost_engine::ModuleLimits::default();
        exhost_node::modcheck::check_takeover::<exhost_guest_sdk::MatchingAbi>(
            &loader,
            exhost_engine::ModuleTarget::Market(exhost_engine::MarketId(0)),
            &current,
            &limits,
            &state.markets[0].image,
            &compiled,
        )
        .map_err(|reason| anyhow::anyhow!("the dry run failed: {reason}"))?;
        dry_runs.push(started.elapsed().as_secs_f64());
        let new_hash = compiled.info.hash;
        loader.insert(compiled);
        seq += 1;
        let started = Instant::now();
        let events = engine.apply(
            seq,
            seq,
            &Command::ActivateModule {
                target: exhost_engine::ModuleTarget::Market(exhost_engine::MarketId(0)),
                module_hash: new_hash,
            },
        )?;
        pauses.push(started.elapsed().as_secs_f64());
        if !events.iter().any(|e| matches!(e, exhost_engine::EventBody::ModuleActivated { .. })) {
            bail!("the activation did not happen: {events:?}");
        }
        current = new_hash;
    }
    let median = |values: &mut Vec<f64>| {
        values.sort_by(|a, b| a.total_cmp(b));
        values[values.len() / 2]
    };
    let resting = match engine
        .query(exhost_engine::MarketId(0), &exhost_guest_sdk::MatchingQuery::Depth { levels_max: u32::MAX })?
    {
        exhost_guest_sdk::MatchingQueryResult::Depth { bids, asks } => bids.len() + asks.len(),
        _ => 0,
    };
    let (compile, dry_run, pause) = (median(&mut compiles), median(&mut dry_runs), median(&mut pauses));
    println!(
        "{}",
        json!({
            "bench": "swap", "resting_orders": shape.resting, "price_levels": resting, "rounds": rounds,
            "upload_compile_seconds": compile, "upload_dry_run_seconds": dry_run,
            "swap_pause_seconds": pause, "upload_to_active_seconds": compile + dry_run + pause,
        })
    );
    Ok(())
}

fn run_engine(loader: Arc<dyn ModuleLoader>, setup: &[Command], measured: &[Command]) -> anyhow::Result<(f64, usize)> {
    let mut engine = Engine::new(loader);
    for (i, command) in setup.iter().enumerate() {
        engine.apply(i as u64 + 1, i as u64, command)?;
    }
    let first = setup.len() as u64 + 1;
    let mut events = 0;
    let started = Instant::now();
    // As the node does: a journal batch at a time through `apply_batch`.
    for (chunk_index, chunk) in measured.chunks(exhost_engine::BATCH_COMMANDS_MAX).enumerate() {
        let chunk_first = first + (chunk_index * exhost_engine::BATCH_COMMANDS_MAX) as u64;
        let items: Vec<(u64, &Command)> =
            chunk.iter().enumerate().map(|(i, command)| (chunk_first + i as u64, command)).collect();
        events += engine.apply_batch(chunk_first, &items)?.iter().map(Vec::len).sum::<usize>();
    }
    Ok((started.elapsed().as_secs_f64(), events))
}

/// `exhost bench engine`: wasm and native on the same flow, and their ratio.
pub fn engine(shape: FlowShape, rounds: u32) -> anyhow::Result<()> {
    let hash = ModuleHash::of(exhost_embedded::PRICETIME_WASM);
    let (setup, measured) = flow(shape, hash);
    let wasm: Arc<dyn ModuleLoader> = Arc::new(WasmLoader::new(Runtime::new()?, Arc::new(Embedded::default())));
    let native: Arc<dyn ModuleLoader> = Arc::new(NativeLoader::<PriceTimeBook, Positions>::default());
    let mut best = [f64::MAX; 2];
    let mut events = [0usize; 2];
    for round in 0..rounds {
        for (index, (name, loader)) in [("wasm", &wasm), ("native", &native)].into_iter().enumerate() {
            let (seconds, count) = run_engine(loader.clone(), &setup, &measured)?;
            best[index] = best[index].min(seconds);
            events[index] = count;
            eprintln!("round {round} {name}: {:.0} commands/s", measured.len() as f64 / seconds);
        }
    }
    if events[0] != events[1] {
        bail!("wasm emitted {} events and native {}: the builds disagree", events[0], events[1]);
    }
    let rate = |seconds: f64| measured.len() as f64 / seconds;
    for (name, seconds) in [("wasm", best[0]), ("native", best[1])] {
        println!(
            "{}",
            json!({
                "bench": "engine", "impl": name, "positions": shape.positions, "markets": shape.markets.max(1),
                "commands": measured.len(), "resting_orders": shape.resting,
                "levels_per_side": shape.levels, "events": events[0], "best_of": rounds,
                "seconds": seconds, "commands_per_sec": rate(seconds).round(),
            })
        );
    }
    println!(
        "{}",
        json!({ "bench": "engine", "ratio": "wasm/native", "value": (rate(best[0]) / rate(best[1]) * 1000.0).round() / 1000.0 })
    );
    // The peer is an order book only: it is measured on the matching flow.
    if !shape.positions && shape.markets <= 1 {
        let mut peer_best = f64::MAX;
        let mut refused = 0;
        for round in 0..rounds {
            let (seconds, peer_refused) = peer::run(&setup, &measured);
            eprintln!("round {round} peer: {:.0} commands/s", measured.len() as f64 / seconds);
            peer_best = peer_best.min(seconds);
            refused = peer_refused;
        }
        println!(
            "{}",
            json!({
                "bench": "engine", "impl": "peer orderbook-rs 0.15.3", "commands": measured.len(), "resting_orders": shape.resting,
                "best_of": rounds, "seconds": peer_best, "commands_per_sec": rate(peer_best).round(), "peer_refused": refused,
            })
        );
        println!(
            "{}",
            json!({ "bench": "engine", "ratio": "wasm/peer", "value": (rate(best[0]) / rate(peer_best) * 1000.0).round() / 1000.0 })
        );
    }
    Ok(())
}

/// `exhost bench fill`: a new data directory with the set-up and the flow journaled and applied.
pub fn fill(data_dir: &Path, shape: FlowShape, snapshot: bool) -> anyhow::Result<()> {
    let (setup, measured) = flow(shape, ModuleHash::of(exhost_embedded::PRICETIME_WASM));
    let commands: Vec<Command> = setup.into_iter().chain(measured).collect();
    let started = Instant::now();
    holders::fill_commands(data_dir, &commands, snapshot)?;
    println!(
        "{}",
        json!({ "bench": "fill", "commands": commands.len(), "resting_orders_at_start": shape.resting,
                "seconds": started.elapsed().as_secs_f64(), "snapshot": snapshot })
    );
    Ok(())
}

/// `exhost bench startup`: recover a data directory (read-only) and time it.
pub fn startup(data_dir: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let store = Store::open_read_only(&data_dir.join("db")).context("opening the data directory")?;
    let opened = started.elapsed();
    let loader = exhost_node::loader_for(&store)?;
    let last = store.journal_last()?.map_or(0, |record| record.seq);
    let restore_started = Instant::now();
    let mut engine = recovery::engine_from_snapshot(&store, loader, last);
    let restore = restore_started.elapsed();
    let snapshot_seq = engine.last_seq();
    let replay_started = Instant::now();
    let replayed = recovery::replay(
        &store,
        &mut engine,
        last,
        &mut recovery::Progress::new("replay", last - snapshot_seq, true),
        |_| Ok(()),
    )?;
    let replay = replay_started.elapsed();
    // What the recovered engine holds to rebuild each instance after a fault.
    let reports = engine.module_reports();
    // The pause a module fault would cost now: its instance rebuilt from the
    // checkpoint and every retained command.
    let rebuilds = engine.rebuild_modules()?;
    // The engine's stall for a snapshot: every instance's image copied (into
    // its checkpoint's buffers, as the live host does once the last snapshot
    // is written), three times; then what the snapshot-writer thread does
    // beside the engine: encode and digest (no write: the store is read-only here).
    let mut snapshot_stall_seconds = Vec::new();
    let mut snapshot_encode_seconds = 0.0;
    for _ in 0..3 {
        let started = Instant::now();
        let snapshot = engine.snapshot()?;
        snapshot_stall_seconds.push(started.elapsed().as_secs_f64());
        let started = Instant::now();
        std::hint::black_box(EngineSnapshot::digest_of(&snapshot.encode()));
        snapshot_encode_seconds = started.elapsed().as_secs_f64();
    }
    let modules: Vec<_> = (reports.into_iter().zip(rebuilds))
        .map(|(report, (_, rebuild))| {
            json!({
                "module": report.module, "memory_mb": report.memory_bytes.map(|bytes| bytes / 1_000_000),
                "retained_commands": report.retained_commands, "retained_mb": report.retained_bytes / 1_000_000,
                "checkpoint_mb": report.checkpoint_bytes as f64 / 1e6, "rebuild_seconds": rebuild.as_secs_f64(),
            })
        })
        .collect();
    println!(
        "{}",
        json!({
            "bench": "startup", "journaled_commands": last, "snapshot_seq": snapshot_seq, "replayed": replayed,
            "snapshot_stall_seconds": snapshot_stall_seconds, "snapshot_encode_seconds": snapshot_encode_seconds,
            "modules": modules, "rss_mb": memory::resident_bytes().map(|bytes| bytes / 1_000_000),
            "open_seconds": opened.as_secs_f64(), "restore_seconds": restore.as_secs_f64(),
            "replay_seconds": replay.as_secs_f64(), "total_seconds": started.elapsed().as_secs_f64(),
            "replayed_per_sec": if replayed > 0 { (replayed as f64 / replay.as_secs_f64()).round() } else { 0.0 },
        })
    );
    Ok(())
}

/// `exhost bench all`: every figure in one run. `quick` shrinks every size so
/// the whole suite runs in seconds (CI runs it that way, so it cannot rot;
/// nothing asserts on the numbers there).
pub fn all(dir: &Path, quick: bool) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let scale = |full: u64, small: u64| if quick { small } else { full };
    let shape = |resting: u64, commands: u64, positions: bool| FlowShape {
        positions,
        resting,
        levels: 1_000,
        commands,
        users: 16,
        seed: 1,
        markets: 1,
    };
    let rounds = if quick { 1 } else { 3 };
    // Engine: matching only and the full pipeline, and how it grows with the book.
    for resting in [scale(10_000, 1_000), scale(100_000, 5_000), scale(1_000_000, 10_000)] {
        engine(shape(resting, scale(1_000_000, 20_000), false), rounds)?;
    }
    engine(shape(scale(100_000, 5_000), scale(1_000_000, 20_000), true), rounds)?;
    // One command against the number of open positions in its market.
    let counts: Vec<u64> = if quick { vec![100, 1_000] } else { vec![1_000, 10_000, 100_000, 1_000_000] };
    holders::run(&counts, 10)?;
    holders::run_http(&dir.join("holders"), &counts[..1])?;
    // Growth with the number of markets: the same total book and flow over 50 markets.
    engine(FlowShape { markets: 50, ..shape(scale(100_000, 5_000), scale(1_000_000, 20_000), false) }, rounds)?;
    journal::run(&dir.join("journal"), if quick { 0.2 } else { 3.0 }, 64)?;
    // End to end on loopback: HTTP one request per connection, WebSocket pipelined.
    for (protocol, connections, pipeline) in [(load::Protocol::Http, 64, 1), (load::Protocol::Ws, 8, 256)] {
        let seconds = if quick { 0.5 } else { 10.0 };
        load::run(
            dir,
            load::LoadShape { protocol, connections: if quick { 4 } else { connections }, pipeline, seconds },
        )?;
    }
    memory::run(scale(1_000_000, 10_000), 1_000)?;
    swap(shape(scale(100_000, 5_000), 0, false), if quick { 2 } else { 7 })?;
    // Recovery: a filled data directory, started from the journal and from a snapshot.
    let filled = dir.join("fill");
    fill(&filled, shape(scale(100_000, 2_000), scale(1_000_000, 20_000), true), false)?;
    startup(&filled)?;
    let store = Store::open(&filled.join("db"))?;
    let loader = exhost_node::loader_for(&store)?;
    let (mut engine, _) = recovery::recover(&store, loader)?;
    exhost_node::take_snapshot(&mut engine, &store)?;
    drop(engine);
    drop(store);
    startup(&filled)?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

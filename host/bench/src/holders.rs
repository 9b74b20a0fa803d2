//! `exhost-bench holders`: what one command costs against the number of
//! open positions in its market. One market, N traders who each hold one
//! long lot against one maker's short (the shape of the report that opened
//! issue 33); then, on that state:
//!
//! - five mark moves of one tick that liquidate nobody (median engine time,
//!   events emitted);
//! - one funding;
//! - one mark move that puts exactly `k` of them below maintenance (the
//!   thin ones, set up with less money), which must liquidate those `k`.
//!
//! The state is built with the native build of the same modules (fast), then
//! snapshotted and restored into the wasm engine, as a host does at start-up;
//! both are measured, in the same process, on the same commands.
//! `--http` measures the same mark moves end to end: a data directory is
//! written with the state, a host is started on it on 127.0.0.1 in this
//! process, and the operator's `POST /admin/v1/mark-prices` is timed.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use exhost_guest_sdk::codec::encode_into;
use exhost_node::readmodel::ReadModelWriter;
use exhost_node::{recovery, stamp};
use exhost_store::journal::encode_record;
use exhost_store::{Durability, Store};

use anyhow::{Context, bail};
use exhost_engine::{
    Command, Engine, EngineSnapshot, EventBody, MarketId, ModuleHash, ModuleLoader, NativeLoader, NewOrder,
};
use exhost_engine::{Instance, InstanceImage, ModuleCall, ModuleLimits, ModuleState};
use exhost_guest_sdk::PositionAbi;
use exhost_guest_sdk::{OrderType, PositionEvent, SelfTradePrevention, Side, TimeInForce, UserId};
use exhost_node::datadir::{default_market, default_position_install};
use exhost_positions::Positions;
use exhost_pricetime::PriceTimeBook;
use exhost_runtime::{CallBudget, Runtime, WasmLoader, WasmModule};
use serde_json::{Value, json};

const MID_TICKS: u64 = 300_000;
/// Money of a holder: 10 USD for one lot of 30 USD at 10% initial margin,
/// liquidated near 21,052 USD. A thin holder has 4 USD: liquidated below 27,368.
const HOLDER_UNITS: u64 = 10_000_000;
const THIN_UNITS: u64 = 4_000_000;
/// The move that liquidates the thin ones: 30,000 to 27,000 USD.
const CRASH_TICKS: u64 = 270_000;

/// The commands that build the state: position module, market, maker (user
/// 1, one resting sell of N lots), then each holder's user, deposit and buy.
/// The last `thin` holders have less money.
pub fn setup(holders: u64, thin: u64) -> Vec<Command> {
    let market_hash = ModuleHash::of(exhost_embedded::PRICETIME_WASM);
    let mut commands = vec![
        default_position_install(ModuleHash::of(exhost_embedded::POSITIONS_WASM)),
        Command::CreateMarket(default_market(market_hash)),
        Command::CreateUser { api_key: "holders-maker".into(), api_secret: "holders-maker-secret".into() },
        Command::Deposit { user_id: UserId(1), asset: "USD".into(), amount_units: 1_000_000_000_000_000 },
        Command::MarkPrice { market: MarketId(0), price_ticks: MID_TICKS },
    ];
    let order = |user_id: u64, side, qty_lots, time_in_force| {
        Command::PlaceOrder(NewOrder {
            market: MarketId(0),
            user_id: UserId(user_id),
            client_order_id: None,
            side,
            order_type: OrderType::Limit,
            price_ticks: MID_TICKS,
            qty_lots,
            time_in_force,
            self_trade_prevention: SelfTradePrevention::CancelTaker,
            reduce_only: false,
        })
    };
    commands.push(order(1, Side::Sell, holders, TimeInForce::Gtc));
    for holder in 0..holders {
        let user_id = holder + 2;
        commands.push(Command::CreateUser {
            api_key: format!("holder-{holder}"),
            api_secret: format!("holder-secret-{holder}"),
        });
        let amount_units = if holder + thin >= holders { THIN_UNITS } else { HOLDER_UNITS };
        commands.push(Command::Deposit { user_id: UserId(user_id), asset: "USD".into(), amount_units });
        commands.push(order(user_id, Side::Buy, 1, TimeInForce::Ioc));
    }
    commands
}

/// What one measured command did.
struct Measured {
    seconds: f64,
    events: Vec<EventBody>,
}

impl Measured {
    fn refused(&self) -> Option<String> {
        self.events.iter().find_map(|event| match event {
            EventBody::CommandRejected { reason } | EventBody::Position(PositionEvent::Rejected { reason, .. }) => {
                Some(reason.as_str().to_string())
            }
            _ => None,
        })
    }

    fn liquidated(&self) -> usize {
        let started =
            |event: &&EventBody| matches!(event, EventBody::Position(PositionEvent::LiquidationStarted { .. }));
        self.events.iter().filter(started).count()
    }
}

fn measure(engine: &mut Engine, seq: &mut u64, command: &Command) -> anyhow::Result<Measured> {
    *seq += 1;
    let ts = 1_700_000_000_000_000_000 + *seq * 1_000;
    let started = Instant::now();
    let events = engine.apply(*seq, ts, command)?;
    Ok(Measured { seconds: started.elapsed().as_secs_f64(), events })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The figures of one engine on the built state.
fn run_moves(engine: &mut Engine, mut seq: u64, thin: u64) -> anyhow::Result<Value> {
    let mark = |price_ticks| Command::MarkPrice { market: MarketId(0), price_ticks };
    let mut times = Vec::new();
    let mut events = Vec::new();
    for step in 0..5u64 {
        let moved = measure(engine, &mut seq, &mark(MID_TICKS + 1 - 2 * (step % 2)))?;
        if let Some(reason) = moved.refused() {
            bail!("a mark move was refused: {reason}");
        }
        if moved.liquidated() > 0 {
            bail!("a one-tick move liquidated {} accounts", moved.liquidated());
        }
        times.push(moved.seconds);
        events.push(moved.events.len());
    }
    let funding = measure(engine, &mut seq, &Command::Funding { market: MarketId(0), rate: 10_000 })?;
    if let Some(reason) = funding.refused() {
        bail!("the funding was refused: {reason}");
    }
    let crash = measure(engine, &mut seq, &mark(CRASH_TICKS))?;
    if crash.liquidated() as u64 != thin {
        bail!("the crash liquidated {} accounts, not the {thin} thin ones", crash.liquidated());
    }
    Ok(json!({
        "mark_move_median_ms": median(times) * 1e3,
        "mark_move_events": events,
        "funding_ms": funding.seconds * 1e3, "funding_events": funding.events.len(),
        "crash_liquidated": crash.liquidated(), "crash_ms": crash.seconds * 1e3, "crash_events": crash.events.len(),
    }))
}

/// `exhost-bench holders`: the figures for each holder count.
pub fn run(counts: &[u64], thin: u64) -> anyhow::Result<()> {
    for &holders in counts {
        let thin = thin.min(holders);
        let commands = setup(holders, thin);
        let native: Arc<dyn ModuleLoader> = Arc::new(NativeLoader::<PriceTimeBook, Positions>::default());
        let started = Instant::now();
        let mut engine = Engine::new(native.clone());
        for (i, command) in commands.iter().enumerate() {
            engine.apply(i as u64 + 1, 1_700_000_000_000_000_000 + i as u64, command)?;
        }
        let setup_seconds = started.elapsed().as_secs_f64();
        let snapshot = engine.snapshot()?.encode();
        let seq = commands.len() as u64;
        let native_figures = run_moves(&mut engine, seq, thin)?;
        drop(engine);

        let wasm: Arc<dyn ModuleLoader> = Arc::new(WasmLoader::new(Runtime::new()?, Arc::new(EmbeddedModules)));
        let started = Instant::now();
        let mut engine = Engine::restore(wasm, EngineSnapshot::decode(&snapshot)?)?;
        let restore_seconds = started.elapsed().as_secs_f64();
        let memory_bytes = engine.module_reports().first().and_then(|report| report.memory_bytes);
        let wasm_figures = run_moves(&mut engine, seq, thin)?;
        drop(engine);
        let state_calls = position_state_calls(&EngineSnapshot::decode(&snapshot)?)?;
        println!(
            "{}",
            json!({
                "bench": "holders", "holders": holders, "thin": thin,
                "setup_commands": commands.len(), "setup_native_seconds": setup_seconds,
                "snapshot_mb": snapshot.len() as f64 / 1e6, "wasm_restore_seconds": restore_seconds,
                "position_module_memory_mb": memory_bytes.map(|bytes| bytes as f64 / 1e6),
                "wasm_position_state": state_calls,
                "wasm": wasm_figures, "native": native_figures,
            })
        );
    }
    Ok(())
}

/// The position module's own state calls in wasm on this state (what a
/// hot swap does): restore from the native snapshot, then snapshot again,
/// with the fuel each used against its budget.
fn position_state_calls(snapshot: &EngineSnapshot) -> anyhow::Result<Value> {
    let Some(ModuleState { image, .. }) = &snapshot.position else { bail!("no position module in the snapshot") };
    let InstanceImage::Snapshot { state_version, bytes } = image.as_ref() else {
        bail!("the native engine's snapshot holds a memory image")
    };
    let runtime = Runtime::new()?;
    let compiled = runtime.compile(exhost_embedded::POSITIONS_WASM).map_err(|error| anyhow::anyhow!("{error}"))?;
    let limits = ModuleLimits::default();
    let mut module = WasmModule::<PositionAbi>::instantiate(&runtime, &compiled, &limits)?;
    let started = Instant::now();
    module.restore(*state_version, bytes)?;
    let restore_seconds = started.elapsed().as_secs_f64();
    let restore_fuel = module.last_fuel_used();
    let mut again = Vec::new();
    let started = Instant::now();
    module.snapshot(&mut again)?;
    let snapshot_seconds = started.elapsed().as_secs_f64();
    if &again != bytes {
        bail!("the wasm module's snapshot differs from the native one it restored");
    }
    let budget = |call| CallBudget::of(call, &limits, bytes.len() as u64).fuel;
    Ok(json!({
        "restore_seconds": restore_seconds, "restore_fuel": restore_fuel,
        "restore_budget": budget(ModuleCall::Restore),
        "snapshot_seconds": snapshot_seconds, "snapshot_fuel": module.last_fuel_used(),
        "snapshot_budget": budget(ModuleCall::Snapshot),
    }))
}

/// `exhost-bench holders --http`: the same state in a data directory, a host
/// on it, and the operator's mark moves timed through HTTP.
pub fn run_http(dir: &Path, counts: &[u64]) -> anyhow::Result<()> {
    for &holders in counts {
        let data_dir = dir.join(format!("holders-{holders}"));
        let _ = std::fs::remove_dir_all(&data_dir);
        fill_commands(&data_dir, &setup(holders, 0), true)?;
        std::fs::write(data_dir.join("admin.token"), "bench-operator-token\n")?;
        let config = exhost_server::Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.clone(),
            snapshot_every_commands: 0,
            ..exhost_server::Config::default()
        };
        let server = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("exhost-http")
            .build()?;
        let started_at = Instant::now();
        let started = server.block_on(exhost_server::serve::start(config.clone()))?;
        let start_seconds = started_at.elapsed().as_secs_f64();
        let addr = started.listener.local_addr()?;
        let node = started.state.node.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = server.spawn(async move {
            let app = exhost_server::router(started.state);
            exhost_server::serve::serve_connections(started.listener, app, &config, async {
                let _ = stopped.await;
            })
            .await;
        });
        let result = http_moves(addr);
        let _ = stop.send(());
        server.block_on(serving)?;
        server.block_on(async { tokio::task::spawn_blocking(move || node.shutdown()).await })?;
        drop(server);
        let (times, events) = result?;
        println!(
            "{}",
            json!({
                "bench": "holders_http", "holders": holders, "host_start_seconds": start_seconds,
                "mark_move_median_ms": median(times.clone()) * 1e3, "mark_move_ms": times.iter().map(|t| t * 1e3).collect::<Vec<_>>(),
                "mark_move_events": events,
            })
        );
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    Ok(())
}

/// Five one-tick moves through `POST /admin/v1/mark-prices`: each one's
/// round trip, and the events its sequence number holds.
fn http_moves(addr: SocketAddr) -> anyhow::Result<(Vec<f64>, Vec<usize>)> {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let base = format!("http://{addr}");
    let auth = "Bearer bench-operator-token";
    let mut times = Vec::new();
    let mut events = Vec::new();
    for step in 0..5u64 {
        let price = if step % 2 == 0 { "30000.1" } else { "29999.9" };
        let started = Instant::now();
        let mut answer = agent
            .post(format!("{base}/admin/v1/mark-prices"))
            .header("Authorization", auth)
            .send_json(json!({"symbol": "BTC-PERP", "price": price}))?;
        let body: Value = answer.body_mut().read_json()?;
        times.push(started.elapsed().as_secs_f64());
        let seq = body["seq"].as_u64().with_context(|| format!("a mark move answered {body}"))?;
        let mut page =
            agent.get(format!("{base}/admin/v1/events?from_seq={seq}&limit=1")).header("Authorization", auth).call()?;
        let page: Value = page.body_mut().read_json()?;
        let count = page["events"].as_array().map_or(0, |all| all.iter().filter(|e| e["seq"] == seq).count());
        events.push(count);
    }
    Ok((times, events))
}

/// The two embedded modules, by hash.
struct EmbeddedModules;

impl exhost_runtime::ModuleSource for EmbeddedModules {
    fn module_bytes(&self, hash: &ModuleHash) -> Option<Vec<u8>> {
        [exhost_embedded::PRICETIME_WASM, exhost_embedded::POSITIONS_WASM]
            .into_iter()
            .find(|bytes| ModuleHash::of(bytes) == *hash)
            .map(<[u8]>::to_vec)
    }
}

/// A new data directory holding `commands` journaled and applied (and the
/// read model built), with a snapshot at the end if asked. The native build
/// of the embedded modules applies them (the same code and state encoding
/// as the wasm ones, so the snapshot restores into them), because this is
/// data generation, not a measurement.
pub fn fill_commands(data_dir: &Path, commands: &[Command], snapshot: bool) -> anyhow::Result<()> {
    let db = data_dir.join("db");
    if db.exists() {
        bail!("{} already holds data; fill needs a new directory", data_dir.display());
    }
    std::fs::create_dir_all(data_dir)?;
    let store = Store::open(&db)?;
    // What a new host's first start does: mark the read model's records as
    // covering the (empty) event log, so that the host started on this
    // directory does not take it for an older one and index it again.
    exhost_node::readmodel::rebuild_records(&store)?;
    for bytes in [exhost_embedded::PRICETIME_WASM, exhost_embedded::POSITIONS_WASM] {
        store.put_module(&ModuleHash::of(bytes).0, bytes)?;
    }
    let loader: Arc<dyn ModuleLoader> = Arc::new(NativeLoader::<PriceTimeBook, Positions>::default());
    let mut engine = Engine::new(loader);
    let mut progress = recovery::Progress::new("fill", commands.len() as u64, true);
    let mut encoded = Vec::new();
    let mut records = Vec::new();
    let mut bounds = Vec::new();
    for (chunk_index, chunk) in commands.chunks(10_000).enumerate() {
        records.clear();
        bounds.clear();
        let mut writer = ReadModelWriter::new(&store);
        for (i, command) in chunk.iter().enumerate() {
            let seq = (chunk_index * 10_000 + i) as u64 + 1;
            let ts = 1_700_000_000_000_000_000 + seq * 1_000;
            encoded.clear();
            encode_into(command, &mut encoded);
            let start = records.len();
            encode_record(seq, ts, &encoded, &mut records);
            bounds.push((seq, start, records.len()));
            for event in stamp(seq, ts, engine.apply(seq, ts, command)?) {
                writer.apply(&event)?;
            }
            writer.cover(seq);
        }
        store.append_journal(bounds.iter().map(|&(seq, s, e)| (seq, &records[s..e])), Durability::None)?;
        writer.commit()?;
        progress.advance(chunk.len() as u64);
    }
    if snapshot {
        let taken = exhost_node::take_snapshot(&mut engine, &store)?;
        eprintln!("snapshot at {} ({} bytes)", taken.seq, taken.size_bytes);
    }
    store.flush()?;
    Ok(())
}

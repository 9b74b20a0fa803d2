//! `exhost bench load`: order entry end to end on loopback. A real host (the
//! embedded modules, the position module in the pipeline, the journal synced
//! before every answer) serves in this process on 127.0.0.1; a load generator
//! in the same process opens N connections, over HTTP (one request in flight
//! per connection, keep-alive) or WebSocket (up to `pipeline` requests in
//! flight per connection), and signs and sends a trader's order flow: limit
//! orders resting around the mid, cancels of the client's own resting orders,
//! and IOC orders that cross. It reports acknowledged commands per second and
//! the time from sending a request to reading its answer.
//!
//! Both sides share this machine's cores, so the figures are a floor for a
//! host with the load generator elsewhere.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use exhost_engine::{Command, EventBody};
use exhost_guest_sdk::UserId;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use exhost_server::Config;
use exhost_server::auth::{sign_v2, sign_ws};
use exhost_server::router;
use exhost_server::serve::{Started, start};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    Http,
    Ws,
}

#[derive(Clone, Copy, Debug)]
pub struct LoadShape {
    pub protocol: Protocol,
    pub connections: usize,
    /// Requests in flight per WebSocket connection (HTTP always has one).
    pub pipeline: usize,
    pub seconds: f64,
}

/// The prices the flow trades around, in ticks of the default market (0.1).
const MID_TICKS: u64 = 500_000;
/// A client cancels before placing more once it has this many resting orders.
const OPEN_ORDERS_PER_CLIENT_MAX: usize = 200;

/// One client's order flow: 70% limit orders that rest, 20% cancels of its
/// own resting orders, 10% IOC orders that cross the spread.
struct OrderFlow {
    state: u64,
    open: Vec<u64>,
}

enum Step {
    Place(Value),
    Cancel(u64),
}

impl OrderFlow {
    fn new(seed: u64) -> OrderFlow {
        OrderFlow { state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1, open: Vec::new() }
    }

    fn below(&mut self, n: u64) -> u64 {
        // xorshift64*: enough spread for an order flow, and reproducible.
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }

    fn next(&mut self) -> Step {
        let roll = self.below(100);
        if (!self.open.is_empty() && roll < 20) || self.open.len() >= OPEN_ORDERS_PER_CLIENT_MAX {
            let index = self.below(self.open.len() as u64) as usize;
            return Step::Cancel(self.open.swap_remove(index));
        }
        let buy = self.below(2) == 0;
        let qty = format!("0.00{}", 1 + self.below(9));
        let (price_ticks, time_in_force) = if roll >= 90 {
            (if buy { MID_TICKS + 100 } else { MID_TICKS - 100 }, "ioc")
        } else {
            let away = 1 + self.below(500);
            (if buy { MID_TICKS - away } else { MID_TICKS + away }, "gtc")
        };
        Step::Place(json!({
            "symbol": "BTC-PERP",
            "side": if buy { "buy" } else { "sell" },
            "type": "limit",
            "price": format!("{}.{}", price_ticks / 10, price_ticks % 10),
            "qty": qty,
            "time_in_force": time_in_force,
        }))
    }

    /// Learn from an answer which orders now rest.
    fn answered(&mut self, order: &Value) {
        if matches!(order["status"].as_str(), Some("new" | "partially_filled"))
            && let Some(order_id) = order["order_id"].as_u64()
        {
            self.open.push(order_id);
        }
    }
}

struct ClientStats {
    /// Request-to-answer times in microseconds. A histogram, not a list: its size
    /// is fixed, so a long run measures the host's memory, not the generator's.
    latencies: Histogram<u64>,
    /// Answers that were errors, by code (an order refused by the book is still journaled).
    errors: BTreeMap<String, u64>,
}

impl ClientStats {
    fn new() -> ClientStats {
        // 1 µs to 10 minutes at 3 significant digits (0.1% resolution).
        let latencies = Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds");
        ClientStats { latencies, errors: BTreeMap::new() }
    }

    fn answered_after(&mut self, sent: Instant) {
        self.latencies.saturating_record(sent.elapsed().as_micros().max(1) as u64);
    }
}

struct Credentials {
    api_key: String,
    api_secret: String,
}

fn now_ms() -> String {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0).to_string()
}

/// A timestamp for a new signature by `api_key`, never the same millisecond
/// twice for one key: a state-changing signature counts once. Per key, since
/// one counter for the whole generator ran ahead of the clock at tens of
/// thousands of signatures a second, and the host refused them as from the
/// future (`unauthorized`).
fn fresh_timestamp(api_key: &str) -> String {
    static LAST: std::sync::Mutex<BTreeMap<String, u64>> = std::sync::Mutex::new(BTreeMap::new());
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    let entry = last.entry(api_key.to_string()).or_insert(0);
    *entry = if *entry < now { now } else { *entry + 1 };
    entry.to_string()
}

async fn http_client(addr: SocketAddr, user: Credentials, seed: u64, deadline: Instant) -> anyhow::Result<ClientStats> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut flow = OrderFlow::new(seed);
    let mut stats = ClientStats::new();
    while Instant::now() < deadline {
        let (method, path, body) = match flow.next() {
            Step::Place(order) => ("POST", "/v1/orders".to_string(), order.to_string()),
            Step::Cancel(order_id) => ("DELETE", format!("/v1/orders/{order_id}"), String::new()),
        };
        let timestamp = fresh_timestamp(&user.api_key);
        let signature = sign_v2(&user.api_secret, &timestamp, method, &path, body.as_bytes());
        let request = hyper::Request::builder()
            .method(method)
            .uri(&path)
            .header("host", addr.to_string())
            .header("content-type", "application/json")
            .header("x-api-key", &user.api_key)
            .header("x-timestamp", timestamp)
            .header("x-signature-version", "2")
            .header("x-signature", signature)
            .body(Full::new(Bytes::from(body)))?;
        let sent = Instant::now();
        let response = sender.send_request(request).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        stats.answered_after(sent);
        let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            flow.answered(&answer);
        } else {
            let code = answer["error"]["code"].as_str().unwrap_or("unreadable").to_string();
            *stats.errors.entry(code).or_default() += 1;
        }
    }
    Ok(stats)
}

async fn ws_client(
    addr: SocketAddr,
    user: Credentials,
    seed: u64,
    pipeline: usize,
    deadline: Instant,
) -> anyhow::Result<ClientStats> {
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await?;
    let nonce = match socket.next().await {
        Some(Ok(Message::Text(text))) => {
            let challenge: Value = serde_json::from_str(&text)?;
            challenge["nonce"].as_str().map(str::to_string).context("the socket's first message is its challenge")?
        }
        other => bail!("no challenge from the WebSocket: {other:?}"),
    };
    let timestamp = fresh_timestamp(&user.api_key);
    let signature = sign_ws(&user.api_secret, &timestamp, &nonce);
    let auth = json!({
        "op": "auth", "api_key": user.api_key, "timestamp": timestamp, "signature": signature, "nonce": nonce,
    });
    socket.send(Message::text(auth.to_string())).await?;
    match socket.next().await {
        Some(Ok(Message::Text(text))) if text.contains("\"authenticated\"") => {}
        other => bail!("the WebSocket authentication failed: {other:?}"),
    }
    let mut flow = OrderFlow::new(seed);
    let mut stats = ClientStats::new();
    let mut sent: HashMap<u64, Instant> = HashMap::new();
    let mut next_id = 0u64;
    loop {
        let sending = Instant::now() < deadline;
        if !sending && sent.is_empty() {
            break;
        }
        if sending && sent.len() < pipeline {
            while sent.len() < pipeline {
                next_id += 1;
                let mut message = match flow.next() {
                    Step::Place(order) => order,
                    Step::Cancel(order_id) => json!({ "op": "cancel", "order_id": order_id }),
                };
                if message.get("op").is_none() {
                    message["op"] = json!("order");
                }
                message["id"] = json!(next_id);
                socket.feed(Message::text(message.to_string())).await?;
                sent.insert(next_id, Instant::now());
            }
            socket.flush().await?;
        }
        let text = match socket.next().await {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(_)) => continue,
            Some(Err(error)) => return Err(error.into()),
            None => bail!("the host closed the WebSocket with {} requests unanswered", sent.len()),
        };
        let answer: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
        let Some(started) = answer["id"].as_u64().and_then(|id| sent.remove(&id)) else {
            bail!("an answer without a known id: {text}");
        };
        stats.answered_after(started);
        match answer["type"].as_str() {
            Some("order") => flow.answered(&answer["order"]),
            _ => {
                let code = answer["error"]["code"].as_str().unwrap_or("unreadable").to_string();
                *stats.errors.entry(code).or_default() += 1;
            }
        }
    }
    Ok(stats)
}

/// Users with money, one per connection, created through the node as the operator endpoints do.
async fn traders(started: &Started, count: usize) -> anyhow::Result<Vec<Credentials>> {
    let mut users = Vec::with_capacity(count);
    for i in 0..count {
        let credentials = Credentials {
            api_key: format!("bench-key-{i:04}"),
            api_secret: format!("bench-secret-{i:04}-{}", now_ms()),
        };
        let applied = started
            .state
            .node
            .submit(Command::RegisterUser {
                api_key: credentials.api_key.clone(),
                credential: exhost_engine::Credential::SealedSecret(
                    started.state.sealer.seal(&credentials.api_key, &credentials.api_secret)?,
                ),
            })
            .await?;
        let user_id = applied
            .events
            .iter()
            .find_map(|event| match event.body {
                EventBody::UserCreated { user_id } => Some(user_id),
                _ => None,
            })
            .context("the engine created no user")?;
        deposit(started, user_id).await?;
        users.push(credentials);
    }
    Ok(users)
}

async fn deposit(started: &Started, user_id: UserId) -> anyhow::Result<()> {
    let applied = started
        .state
        .node
        .submit(Command::Deposit { user_id, asset: "USD".into(), amount_units: 10_000_000_000_000_000 })
        .await?;
    if let Some(EventBody::CommandRejected { reason }) = applied.events.first().map(|event| &event.body) {
        bail!("the deposit was refused: {reason}");
    }
    Ok(())
}

/// Resident memory by kind (Linux `smaps_rollup`), in MB.
fn smaps_rollup() -> BTreeMap<String, u64> {
    let text = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let kib: u64 = rest.trim().strip_suffix("kB")?.trim().parse().ok()?;
            ["Rss", "Anonymous", "Shared_Clean", "Private_Clean", "Private_Dirty"]
                .contains(&name)
                .then(|| (name.to_string(), kib / 1000))
        })
        .collect()
}

/// Bytes of RocksDB write-ahead log files in `db`.
fn wal_bytes(db: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(db) else { return 0 };
    entries
        .filter_map(Result::ok)
        .filter(|entry| entry.path().extension().is_some_and(|extension| extension == "log"))
        .filter_map(|entry| entry.metadata().ok())
        .map(|metadata| metadata.len())
        .sum()
}

/// The host's memory gauges from its `/metrics`, in MB by gauge and label.
fn memory_metrics(addr: SocketAddr) -> BTreeMap<String, f64> {
    let Ok(mut response) = ureq::get(&format!("http://{addr}/metrics")).call() else { return BTreeMap::new() };
    let Ok(text) = response.body_mut().read_to_string() else { return BTreeMap::new() };
    text.lines()
        .filter(|line| line.starts_with("exhost_module_memory_bytes") || line.starts_with("exhost_store_memory_bytes"))
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            let name = name.replace("exhost_", "").replace("_bytes", "").replace('"', "");
            Some((name, (value.parse::<f64>().ok()? / 1e5).round() / 10.0))
        })
        .collect()
}

/// Start a host on a new data directory under `dir`, load it, report, stop it.
pub fn run(dir: &Path, shape: LoadShape) -> anyhow::Result<()> {
    let data_dir = dir.join(format!("load-{:?}-{}", shape.protocol, shape.connections).to_lowercase());
    let _ = std::fs::remove_dir_all(&data_dir);
    std::fs::create_dir_all(&data_dir)?;
    std::fs::write(data_dir.join("admin.token"), "bench-operator-token\n")?;
    let config = Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: data_dir.clone(),
        // Snapshots are not what this measures; the host still journals every command synced.
        snapshot_every_commands: 0,
        // One key per connection pushes far past a trader's allowance: this measures the host, not the limit.
        rate_limit_per_second: u32::MAX / 2,
        rate_limit_burst: u32::MAX / 2,
        ..Config::default()
    };
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("exhost-http")
        .build()?;
    let started = server.block_on(start(config.clone()))?;
    let addr = started.listener.local_addr()?;
    let users = server.block_on(traders(&started, shape.connections))?;
    let node = started.state.node.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // Served as `exhost serve` serves: the same connection limits and timeouts.
    let serving = server.spawn(async move {
        let app = router(started.state);
        exhost_server::serve::serve_connections(started.listener, app, &config, async {
            let _ = stopped.await;
        })
        .await;
        Ok::<(), std::io::Error>(())
    });

    // The load generator: its own runtime, so it does not queue behind the host's tasks.
    let generator = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let began = Instant::now();
    let deadline = began + Duration::from_secs_f64(shape.seconds);
    // Resident memory once a second, and what the host says its modules and
    // RocksDB hold, to show whether sustained load makes the process grow.
    let sampler = std::thread::spawn(move || {
        let mut samples = Vec::new();
        while Instant::now() < deadline {
            samples.push((crate::memory::resident_bytes().unwrap_or(0), memory_metrics(addr)));
            std::thread::sleep(Duration::from_secs(1).min(deadline.saturating_duration_since(Instant::now())));
        }
        samples
    });
    let results = generator.block_on(async {
        let mut clients = tokio::task::JoinSet::new();
        for (i, user) in users.into_iter().enumerate() {
            let seed = i as u64 + 1;
            // A host that stops answering fails the run rather than hanging it.
            let limit = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(30);
            match shape.protocol {
                Protocol::Http => clients.spawn(tokio::time::timeout(limit, http_client(addr, user, seed, deadline))),
                Protocol::Ws => clients
                    .spawn(tokio::time::timeout(limit, ws_client(addr, user, seed, shape.pipeline.max(1), deadline))),
            };
        }
        clients.join_all().await
    });
    let elapsed = began.elapsed().as_secs_f64();
    let samples = sampler.join().unwrap_or_default();
    let resident: Vec<u64> = samples.iter().map(|(rss, _)| *rss).collect();
    let tenths = |len: usize| (0..=10).map(move |tenth| len.saturating_sub(1) * tenth / 10);
    let _ = stop.send(());
    server.block_on(serving)??;
    drop(generator);
    server.block_on(async { tokio::task::spawn_blocking(move || node.shutdown()).await })?;
    drop(server);

    let mut latencies = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds");
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for result in results {
        let stats = result.context("a load client got no answer for 30 s")?.context("a load client failed")?;
        latencies.add(&stats.latencies).context("merging the latency histograms")?;
        for (code, count) in stats.errors {
            *errors.entry(code).or_default() += count;
        }
    }
    let answered = latencies.len();
    let refused: u64 = errors.iter().filter(|(code, _)| code.as_str() != "not_found").map(|(_, count)| count).sum();
    let ms = |p: f64| latencies.value_at_quantile(p) as f64 / 1e3;
    println!(
        "{}",
        json!({
            "bench": "load", "protocol": format!("{:?}", shape.protocol).to_lowercase(),
            "connections": shape.connections,
            "in_flight_per_connection": if shape.protocol == Protocol::Http { 1 } else { shape.pipeline.max(1) },
            "journal_sync": true, "seconds": elapsed, "answered": answered,
            "answered_per_sec": (answered as f64 / elapsed).round(),
            "p50_ms": ms(0.50), "p99_ms": ms(0.99), "p999_ms": ms(0.999), "max_ms": latencies.max() as f64 / 1e3,
            "refused": errors,
            // Resident memory of the whole process (host and load generator), in MB: after
            // the first tenth of the run, at its end, and the highest sample.
            "rss_mb_early": resident.get(resident.len() / 10).map(|b| b / 1_000_000),
            "rss_mb_end": resident.last().map(|b| b / 1_000_000),
            "rss_mb_max": resident.iter().max().map(|b| b / 1_000_000),
            // And at each tenth of the run, to show whether it levels off.
            "rss_mb_by_tenth": tenths(resident.len()).filter_map(|i| resident.get(i).map(|b| b / 1_000_000)).collect::<Vec<_>>(),
            // The process's resident memory at the end by kind, in MB (anonymous: the heap and
            // wasm memories; file: mapped files), from /proc/self/smaps_rollup.
            "smaps_mb_end": smaps_rollup(),
            // RocksDB's write-ahead log left on disk at the end, in MB (a restart replays it).
            "wal_mb_end": wal_bytes(&data_dir.join("db")) / 1_000_000,
            // The host's own account of its memory (module and RocksDB gauges), in MB, by tenth.
            "host_memory_mb_by_tenth": tenths(samples.len()).filter_map(|i| samples.get(i).map(|(_, gauges)| gauges.clone())).collect::<Vec<_>>(),
        })
    );
    // A cancel that meets an order filled meanwhile is `not_found`, which is normal; other refusals mean the flow is wrong.
    if answered > 0 && refused * 100 > answered {
        bail!("{refused} of {answered} requests were refused: {errors:?}");
    }
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(())
}

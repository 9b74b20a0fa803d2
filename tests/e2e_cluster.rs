//! A cluster on loopback: three nats-server processes (JetStream, R3) and
//! three `exhost serve --cluster` nodes, each with its own data directory,
//! under load from several clients spread over all nodes, through faults:
//! kill -9 the active node, SIGSTOP it past its lease, kill -9 a NATS
//! server, kill -9 and restart a standby, wipe a standby's data directory.
//!
//! After the faults, with the load stopped: every acknowledged order is in
//! the log exactly once; every node's journal has no gap and replays to the
//! same digest at the same seq; every node holds the same events; the
//! `EXHOST_EVENTS` stream holds each of them exactly once, in order.
//!
//! CI runs the short version; `EXHOST_CLUSTER_LONG=1` loads each phase longer
//! and repeats the failovers.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{ADMIN_TOKEN, Host, TempDir, Trader};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Three nats-server processes clustered on loopback.
struct Nats {
    dir: PathBuf,
    ports: Vec<(u16, u16)>,
    servers: Vec<Option<Child>>,
}

impl Nats {
    fn start(dir: &Path) -> Nats {
        assert!(
            Command::new("nats-server").arg("--version").output().is_ok(),
            "nats-server is not installed: run `bash .ci/setup` (Debian's nats-server 2.9.10)"
        );
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let mut nats = Nats { dir: dir.to_path_buf(), ports, servers: vec![None, None, None] };
        for i in 0..3 {
            nats.start_server(i);
        }
        for &(port, _) in &nats.ports {
            let deadline = Instant::now() + Duration::from_secs(20);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "nats-server on port {port} did not start");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        nats
    }

    fn start_server(&mut self, i: usize) {
        let store = self.dir.join(format!("nats{i}"));
        std::fs::create_dir_all(&store).unwrap();
        let routes: Vec<String> =
            (0..3).filter(|&j| j != i).map(|j| format!("nats://127.0.0.1:{}", self.ports[j].1)).collect();
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join(format!("nats{i}.log"))).unwrap();
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-n", &format!("n{i}"), "--cluster_name", "exhost-e2e"])
            .args(["-p", &self.ports[i].0.to_string()])
            .args(["--cluster", &format!("nats://127.0.0.1:{}", self.ports[i].1)])
            .args(["--routes", &routes.join(",")])
            .arg("-sd")
            .arg(&store)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server starts");
        self.servers[i] = Some(child);
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.servers[i].take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    fn urls(&self) -> String {
        self.ports.iter().map(|(port, _)| format!("nats://127.0.0.1:{port}")).collect::<Vec<_>>().join(",")
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        for i in 0..3 {
            self.kill(i);
        }
    }
}

/// The nodes' shared settings: one secrets key for all (each node opens the
/// sealed secrets every other one journaled), one operator token (from the harness).
struct Cluster {
    dir: TempDir,
    urls: String,
    key_file: PathBuf,
    nodes: Vec<Option<Host>>,
    /// More `exhost serve` arguments for every node.
    extra: Vec<String>,
}

const NODES: [&str; 3] = ["alpha", "bravo", "charlie"];

impl Cluster {
    fn node_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(NODES[i])
    }

    fn start_node(&mut self, i: usize) {
        let config = format!("secrets_key_file = {:?}\n", self.key_file.display().to_string());
        let mut args = ["--cluster", &self.urls, "--node", NODES[i], "--lease-ms", "2000"].map(String::from).to_vec();
        args.extend(self.extra.iter().cloned());
        self.nodes[i] = Some(Host::start_args(&self.node_dir(i), &config, &args));
    }

    fn config(&self) -> String {
        format!("secrets_key_file = {:?}\n", self.key_file.display().to_string())
    }

    fn node(&self, i: usize) -> &Host {
        self.nodes[i].as_ref().unwrap_or_else(|| panic!("node {} is not running", NODES[i]))
    }

    fn running(&self) -> Vec<usize> {
        (0..3).filter(|&i| self.nodes[i].is_some()).collect()
    }

    fn status(&self, i: usize) -> Value {
        self.node(i).admin("GET", "/admin/v1/cluster", Value::Null).ok()
    }

    /// The running node that reports itself active, waiting up to `within`.
    fn wait_active(&self, among: &[usize], within: Duration) -> (usize, Duration) {
        let started = Instant::now();
        loop {
            for &i in among {
                if self.status(i)["role"] == "active" {
                    return (i, started.elapsed());
                }
            }
            assert!(started.elapsed() < within, "no node became active within {within:?}");
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Wait until every running node has applied everything the log holds.
    fn wait_converged(&self, within: Duration) -> u64 {
        let started = Instant::now();
        loop {
            let statuses: Vec<Value> = self.running().into_iter().map(|i| self.status(i)).collect();
            let applied: BTreeSet<u64> = statuses.iter().map(|s| s["applied_seq"].as_u64().unwrap()).collect();
            let log = statuses.iter().map(|s| s["log_seq"].as_u64().unwrap()).max().unwrap();
            if applied.len() == 1 && applied.first() == Some(&log) {
                return log;
            }
            assert!(started.elapsed() < within, "the nodes did not converge: {statuses:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// What the load's clients were told.
#[derive(Default)]
struct Outcomes {
    /// Acknowledged orders: client order id -> seq.
    acknowledged: BTreeMap<String, u64>,
    /// Answers of `unavailable` (not recorded, or outcome unknown: both allowed during a fault).
    unavailable: u64,
}

/// Clients placing orders, round-robin over the nodes, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    outcomes: Arc<Mutex<Outcomes>>,
}

fn start_load(bases: Arc<Mutex<Vec<Option<String>>>>, traders: Vec<Trader>) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    static ORDER: AtomicU64 = AtomicU64::new(0);
    let threads = traders
        .into_iter()
        .enumerate()
        .map(|(client, trader)| {
            let (stop, outcomes, bases) = (stop.clone(), outcomes.clone(), bases.clone());
            std::thread::spawn(move || {
                let agent = client_agent();
                let mut n = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let live: Vec<String> = bases.lock().unwrap().iter().flatten().cloned().collect();
                    if live.is_empty() {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                    let base = &live[(client + n) % live.len()];
                    let id = ORDER.fetch_add(1, Ordering::SeqCst);
                    let coid = format!("c{client}-{id}");
                    let side = if id.is_multiple_of(2) { "buy" } else { "sell" };
                    let price = 100 + (id % 7);
                    let body = json!({"symbol": "BTC-PERP", "side": side, "type": "limit", "price": price.to_string(),
                        "qty": "0.001", "client_order_id": coid})
                    .to_string();
                    let headers = trader.headers("POST", "/v1/orders", body.as_bytes());
                    let mut request = ureq::http::Request::builder().method("POST").uri(format!("{base}/v1/orders"));
                    for (name, value) in &headers {
                        request = request.header(*name, value);
                    }
                    let Ok(mut response) = agent.run(request.body(body.into_bytes()).unwrap()) else {
                        // The connection broke (a killed node): the outcome is unknown, like a 503.
                        outcomes.lock().unwrap().unavailable += 1;
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    let status = response.status().as_u16();
                    let text = response.body_mut().read_to_string().unwrap_or_default();
                    let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    match status {
                        200 => {
                            let seq = answer["seq"].as_u64().expect("an acknowledged order has a seq");
                            outcomes.lock().unwrap().acknowledged.insert(coid, seq);
                        }
                        503 => {
                            // As a client should: a little patience before the next try.
                            outcomes.lock().unwrap().unavailable += 1;
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        429 => std::thread::sleep(Duration::from_millis(20)),
                        other => panic!("order {coid} at {base}: unexpected {other} {text}"),
                    }
                }
            })
        })
        .collect();
    Load { stop, threads, outcomes }
}

impl Load {
    fn finish(self) -> Outcomes {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads {
            thread.join().expect("a load client panicked");
        }
        Arc::try_unwrap(self.outcomes).ok().unwrap().into_inner().unwrap()
    }
}

/// A load client's HTTP agent: error statuses are answers, and a node that
/// stops answering (paused, killed) costs at most 20 s.
fn client_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

fn signal(pid: u32, signal: &str) {
    assert!(Command::new("kill").args([signal, &pid.to_string()]).status().unwrap().success());
}

/// A runtime and a JetStream context on the test's NATS servers (the runtime
/// must outlive every call made with the context).
fn jetstream(urls: &str) -> (tokio::runtime::Runtime, async_nats::jetstream::Context) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let addresses: Vec<async_nats::ServerAddr> = urls.split(',').map(|u| u.parse().unwrap()).collect();
    let client = runtime.block_on(async_nats::connect(addresses)).expect("the test connects to NATS");
    (runtime, async_nats::jetstream::new(client))
}

/// Every message of `EXHOST_EVENTS`: (message id, JSON body).
fn downstream_events(urls: &str) -> Vec<(String, Value)> {
    let (runtime, js) = jetstream(urls);
    runtime.block_on(async {
        let stream = js.get_stream("EXHOST_EVENTS").await.expect("the event stream exists");
        let last = stream.get_info().await.unwrap().state.last_sequence;
        let mut out = Vec::with_capacity(last as usize);
        if last == 0 {
            return out;
        }
        // One ordered consumer over the whole stream (a request per message would take minutes).
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
                deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut messages = consumer.messages().await.unwrap();
        while let Some(message) = futures_util::StreamExt::next(&mut messages).await {
            let message = message.unwrap();
            let id = message
                .headers
                .as_ref()
                .and_then(|headers| headers.get(async_nats::header::NATS_MESSAGE_ID))
                .map(|v| v.as_str().to_string())
                .unwrap_or_default();
            out.push((id, serde_json::from_slice(&message.payload).unwrap()));
            if message.info().unwrap().stream_sequence >= last {
                break;
            }
        }
        out
    })
}

/// Each acknowledged order (client order id -> seq) is received exactly once,
/// at its seq, and no order is received twice.
fn each_acknowledged_once(acknowledged: &BTreeMap<String, u64>, events: &[Value]) -> Result<(), String> {
    let mut received: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for event in events {
        if event["type"] == "order_received"
            && let Some(coid) = event["client_order_id"].as_str()
        {
            received.entry(coid.to_string()).or_default().push(event["seq"].as_u64().unwrap_or(0));
        }
    }
    for (coid, seq) in acknowledged {
        if received.get(coid) != Some(&vec![*seq]) {
            return Err(format!("acknowledged order {coid} (seq {seq}) is in the log as {:?}", received.get(coid)));
        }
    }
    match received.iter().find(|(_, seqs)| seqs.len() > 1) {
        Some((coid, seqs)) => Err(format!("order {coid} is in the log {} times: {seqs:?}", seqs.len())),
        None => Ok(()),
    }
}

/// The downstream stream is the event log: the same ids `SEQ:IDX`, once each, in order, with the same bodies.
fn downstream_is_the_event_log(downstream: &[(String, Value)], events: &[Value]) -> Result<(), String> {
    if downstream.len() != events.len() {
        return Err(format!("EXHOST_EVENTS holds {} messages for {} events", downstream.len(), events.len()));
    }
    for (n, ((id, body), event)) in downstream.iter().zip(events).enumerate() {
        let expected = format!("{}:{}", event["seq"], event["idx"]);
        if *id != expected || body != event {
            return Err(format!(
                "message {} of EXHOST_EVENTS is {id} {body}, the event log's is {expected} {event}",
                n + 1
            ));
        }
    }
    Ok(())
}

/// Negative control: the checks above see a lost, a doubled and a misplaced command.
#[test]
fn the_exactly_once_checks_see_a_lost_a_doubled_and_a_misplaced_command() {
    let event = |seq: u64, idx: u64, coid: &str| json!({"seq": seq, "idx": idx, "type": "order_received", "client_order_id": coid});
    let events = vec![event(1, 0, "a"), event(2, 0, "b")];
    let acknowledged: BTreeMap<String, u64> = [("a".to_string(), 1), ("b".to_string(), 2)].into();
    assert_eq!(each_acknowledged_once(&acknowledged, &events), Ok(()));
    assert!(each_acknowledged_once(&acknowledged, &events[..1]).is_err(), "a lost command");
    let doubled = vec![event(1, 0, "a"), event(2, 0, "b"), event(3, 0, "b")];
    assert!(each_acknowledged_once(&acknowledged, &doubled).is_err(), "a command applied twice");
    let misplaced: BTreeMap<String, u64> = [("a".to_string(), 2)].into();
    assert!(each_acknowledged_once(&misplaced, &events).is_err(), "an answer with another seq");

    let downstream: Vec<(String, Value)> =
        events.iter().map(|e| (format!("{}:{}", e["seq"], e["idx"]), e.clone())).collect();
    assert_eq!(downstream_is_the_event_log(&downstream, &events), Ok(()));
    assert!(downstream_is_the_event_log(&downstream[..1], &events).is_err(), "a gap");
    let twice = vec![downstream[0].clone(), downstream[0].clone()];
    assert!(downstream_is_the_event_log(&twice, &events).is_err(), "a duplicate");
    let swapped = vec![downstream[1].clone(), downstream[0].clone()];
    assert!(downstream_is_the_event_log(&swapped, &events).is_err(), "out of order");
}

fn replay_digest(data_dir: &Path) -> String {
    let output = support::exhost(&["replay", "--from-start"], data_dir);
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "replay of {}: {stdout}{}",
        data_dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    stdout.lines().filter(|line| line.starts_with("seq ") || line.contains("digest")).collect::<Vec<_>>().join(" ")
}

#[test]
fn a_cluster_keeps_every_acknowledged_command_through_failover_pause_and_lost_servers() {
    let long = std::env::var("EXHOST_CLUSTER_LONG").is_ok_and(|v| v == "1");
    let phase = Duration::from_secs(if long { 20 } else { 3 });
    let rounds = if long { 3 } else { 1 };
    let dir = TempDir::new("cluster");
    let mut nats = Nats::start(dir.path());
    let key_file = dir.path().join("secrets.key");
    let mut cluster = Cluster { urls: nats.urls(), key_file, nodes: vec![None, None, None], dir, extra: Vec::new() };
    // All three start at once: exactly one installs the defaults.
    let starting: Vec<_> = (0..3)
        .map(|i| {
            let (config, urls, dir) = (
                format!("secrets_key_file = {:?}\n", cluster.key_file.display().to_string()),
                cluster.urls.clone(),
                cluster.node_dir(i),
            );
            std::thread::spawn(move || {
                let args = ["--cluster", &urls, "--node", NODES[i], "--lease-ms", "2000"].map(String::from);
                Host::start_args(&dir, &config, &args)
            })
        })
        .collect();
    for (i, thread) in starting.into_iter().enumerate() {
        cluster.nodes[i] = Some(thread.join().unwrap());
    }
    let (first_active, elapsed) = cluster.wait_active(&[0, 1, 2], Duration::from_secs(30));
    eprintln!("cluster: {} active {elapsed:?} after the nodes listened", NODES[first_active]);
    // The defaults, once: one market, on every node.
    let markets = |i: usize| cluster.node(i).get("/v1/markets").ok();
    let deadline = Instant::now() + Duration::from_secs(10);
    while markets(first_active).as_array().is_none_or(Vec::is_empty) {
        assert!(Instant::now() < deadline, "the defaults were not installed");
        std::thread::sleep(Duration::from_millis(50));
    }
    cluster.wait_converged(Duration::from_secs(10));
    for (i, name) in NODES.iter().enumerate() {
        assert_eq!(markets(i).as_array().unwrap().len(), 1, "node {name} sees one market");
    }

    // Traders made through every node (operator writes are forwarded too).
    let traders: Vec<Trader> = (0..6).map(|i| cluster.node(i % 3).new_trader()).collect();
    let bases = Arc::new(Mutex::new((0..3).map(|i| Some(cluster.node(i).base.clone())).collect::<Vec<_>>()));
    let load = start_load(bases.clone(), traders);
    std::thread::sleep(phase);
    let mut failovers = Vec::new();

    for round in 0..rounds {
        // kill -9 the active node.
        let (active, _) = cluster.wait_active(&cluster.running(), Duration::from_secs(10));
        bases.lock().unwrap()[active] = None;
        let killed_at = Instant::now();
        cluster.nodes[active].take().unwrap().kill();
        let survivors = cluster.running();
        let (next, _) = cluster.wait_active(&survivors, Duration::from_secs(10));
        let failover = killed_at.elapsed();
        eprintln!("round {round}: killed {}, {} active after {failover:?}", NODES[active], NODES[next]);
        failovers.push(failover);
        assert!(failover < Duration::from_secs(5), "failover took {failover:?}");
        std::thread::sleep(phase);
        // It comes back, catches up, and stands by.
        cluster.start_node(active);
        bases.lock().unwrap()[active] = Some(cluster.node(active).base.clone());
        std::thread::sleep(phase);

        // SIGSTOP the active node past its lease, then SIGCONT: it must not go on as active.
        let (paused, _) = cluster.wait_active(&cluster.running(), Duration::from_secs(10));
        let pid = cluster.node(paused).pid();
        signal(pid, "-STOP");
        let others: Vec<usize> = cluster.running().into_iter().filter(|&i| i != paused).collect();
        let (took_over, waited) = cluster.wait_active(&others, Duration::from_secs(10));
        eprintln!("round {round}: paused {}, {} active after {waited:?}", NODES[paused], NODES[took_over]);
        std::thread::sleep(Duration::from_secs(1));
        signal(pid, "-CONT");
        let resumed = Instant::now();
        loop {
            let role = cluster.status(paused)["role"].clone();
            if role != "active" {
                break;
            }
            assert!(resumed.elapsed() < Duration::from_secs(3), "the paused node still says it is active");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(phase);
    }

    // kill -9 one NATS server, trade on, bring it back. JetStream moves the
    // leaders of the streams it led: writes pause meanwhile, and the cluster
    // comes back by itself once they have moved.
    nats.kill(1);
    std::thread::sleep(phase);
    nats.start_server(1);
    let (_, back) = cluster.wait_active(&cluster.running(), Duration::from_secs(90));
    eprintln!("cluster: a node is active {back:?} after the NATS server came back");
    std::thread::sleep(phase);

    // kill -9 a standby and restart it: it catches up.
    let (active, _) = cluster.wait_active(&cluster.running(), Duration::from_secs(10));
    let standby = (active + 1) % 3;
    bases.lock().unwrap()[standby] = None;
    cluster.nodes[standby].take().unwrap().kill();
    std::thread::sleep(phase);
    cluster.start_node(standby);
    bases.lock().unwrap()[standby] = Some(cluster.node(standby).base.clone());
    std::thread::sleep(phase);

    // Wipe another standby's data directory: it rebuilds from the stream.
    let (active, _) = cluster.wait_active(&cluster.running(), Duration::from_secs(10));
    let wiped = (active + 2) % 3;
    bases.lock().unwrap()[wiped] = None;
    cluster.nodes[wiped].take().unwrap().kill();
    std::fs::remove_dir_all(cluster.node_dir(wiped)).unwrap();
    cluster.start_node(wiped);
    bases.lock().unwrap()[wiped] = Some(cluster.node(wiped).base.clone());
    std::thread::sleep(phase);

    let outcomes = load.finish();
    let log_seq = cluster.wait_converged(Duration::from_secs(60));
    eprintln!(
        "cluster: {} orders acknowledged, {} unavailable answers, log at seq {log_seq}, failovers {failovers:?}",
        outcomes.acknowledged.len(),
        outcomes.unavailable
    );
    assert!(outcomes.acknowledged.len() > 50, "the load got too little through: {}", outcomes.acknowledged.len());

    // Every node holds the same events; each acknowledged order is in them once, at its seq.
    let events = cluster.node(0).all_events();
    for (i, name) in NODES.iter().enumerate().skip(1) {
        assert!(cluster.node(i).all_events() == events, "node {name} holds other events than {}", NODES[0]);
    }
    if let Err(problem) = each_acknowledged_once(&outcomes.acknowledged, &events) {
        panic!("{problem}");
    }

    // Downstream: every event exactly once, in order, with id SEQ:IDX.
    let deadline = Instant::now() + Duration::from_secs(30);
    let downstream = loop {
        let downstream = downstream_events(&cluster.urls);
        if downstream.len() >= events.len() || Instant::now() > deadline {
            break downstream;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if let Err(problem) = downstream_is_the_event_log(&downstream, &events) {
        panic!("{problem}");
    }

    // The reconciliation consumer, following EXHOST_EVENTS, agrees with the nodes.
    let urls: Vec<String> = cluster.urls.split(',').map(str::to_string).collect();
    for (i, name) in NODES.iter().enumerate() {
        let report = exhost_examples::reconcile::run_from(
            &cluster.node(i).base,
            ADMIN_TOKEN,
            exhost_examples::reconcile::Source::Nats(&urls),
        )
        .expect("the reconcile consumer runs");
        assert!(report.mismatches.is_empty(), "node {name}: {:?}", report.mismatches);
        assert_eq!(report.events, events.len() as u64, "the consumer read every event");
    }

    // Stopped, every journal has no gap and replays to the same digest.
    for node in &mut cluster.nodes {
        node.take().unwrap().stop();
    }
    let digests: Vec<String> = (0..3).map(|i| replay_digest(&cluster.node_dir(i))).collect();
    eprintln!("cluster: replayed {digests:?}");
    assert!(digests[0].contains(&format!("seq {log_seq}")), "{digests:?}");
    assert!(digests.iter().all(|d| *d == digests[0]), "the nodes replay to different states: {digests:?}");
}

/// The command stream's first and last message sequence.
fn stream_bounds(urls: &str) -> (u64, u64) {
    let (runtime, js) = jetstream(urls);
    runtime.block_on(async {
        let stream = js.get_stream("EXHOST_COMMANDS").await.expect("the command stream exists");
        let state = stream.get_info().await.unwrap().state;
        (state.first_sequence, state.last_sequence)
    })
}

/// Load on `on` until the stream's oldest message is past `past` (its retention dropped everything up to there).
fn trade_until_trimmed_past(cluster: &Cluster, on: &[usize], traders: &[Trader], past: u64) -> Outcomes {
    let bases = Arc::new(Mutex::new(on.iter().map(|&i| Some(cluster.node(i).base.clone())).collect::<Vec<_>>()));
    let load = start_load(bases, traders.to_vec());
    let deadline = Instant::now() + Duration::from_secs(120);
    while stream_bounds(&cluster.urls).0 <= past {
        assert!(
            Instant::now() < deadline,
            "the stream was not trimmed past {past}: {:?}",
            stream_bounds(&cluster.urls)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    load.finish()
}

#[test]
fn a_node_the_trimmed_stream_cannot_rebuild_starts_from_a_fetched_checkpoint() {
    let dir = TempDir::new("cluster-trimmed");
    let nats = Nats::start(dir.path());
    let key_file = dir.path().join("secrets.key");
    // 512 KiB of stream, about 2,500 single-order batches, then the oldest go:
    // enough that a fetched node (its copy, recovery, then the stream) is not
    // trimmed past again before it reads on, under load on a busy machine.
    let max_bytes = "524288";
    let extra = vec!["--cluster-max-bytes".to_string(), max_bytes.to_string()];
    let mut cluster = Cluster { urls: nats.urls(), key_file, nodes: vec![None, None, None], dir, extra };
    for i in 0..3 {
        cluster.start_node(i);
    }
    let (active, _) = cluster.wait_active(&[0, 1, 2], Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.node(active).get("/v1/markets").ok().as_array().is_none_or(Vec::is_empty) {
        assert!(Instant::now() < deadline, "the defaults were not installed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let traders: Vec<Trader> = (0..4).map(|_| cluster.node(active).new_trader()).collect();
    cluster.wait_converged(Duration::from_secs(10));
    let (first, _) = stream_bounds(&cluster.urls);
    assert_eq!(first, 1, "nothing is trimmed yet");
    let mut acknowledged = BTreeMap::new();

    // Two standbys go down: one keeps its data directory, one loses it.
    let standbys: Vec<usize> = (0..3).filter(|&i| i != active).collect();
    let (stale, wiped) = (standbys[0], standbys[1]);
    cluster.nodes[stale].take().unwrap().kill();
    cluster.nodes[wiped].take().unwrap().kill();
    std::fs::remove_dir_all(cluster.node_dir(wiped)).unwrap();
    let (_, last_seen) = stream_bounds(&cluster.urls);
    acknowledged.extend(trade_until_trimmed_past(&cluster, &[active], &traders, last_seen + 1).acknowledged);
    eprintln!("trimmed: the stream now holds messages {:?}", stream_bounds(&cluster.urls));

    // The control: the stream cannot bring the stale node up to date, and it says what to do.
    let args = ["--cluster", &cluster.urls, "--node", NODES[stale], "--cluster-max-bytes", max_bytes].map(String::from);
    let stderr = refused_to_start(&cluster.node_dir(stale), &cluster.config(), &args, ADMIN_TOKEN);
    assert!(stderr.contains("trimmed") && stderr.contains("move this data directory aside"), "{stderr}");

    // The wiped node starts from the active node's checkpoint, under load.
    let bases = Arc::new(Mutex::new(vec![Some(cluster.node(active).base.clone())]));
    let load = start_load(bases.clone(), traders.clone());
    cluster.start_node(wiped);
    let log = std::fs::read_to_string(cluster.node_dir(wiped).join("host.log")).unwrap();
    assert!(log.contains("fetched a checkpoint"), "{log}");
    // Doing what the refusal said: moved aside, the stale node fetches one too.
    std::fs::rename(cluster.node_dir(stale), cluster.dir.path().join("stale-moved-aside")).unwrap();
    cluster.start_node(stale);
    bases.lock().unwrap().extend([Some(cluster.node(wiped).base.clone()), Some(cluster.node(stale).base.clone())]);
    std::thread::sleep(Duration::from_secs(2));
    acknowledged.extend(load.finish().acknowledged);
    cluster.wait_converged(Duration::from_secs(60));

    // A node started from a checkpoint is a whole node: it takes over.
    cluster.nodes[active].take().unwrap().kill();
    let (next, failover) = cluster.wait_active(&[stale, wiped], Duration::from_secs(10));
    eprintln!("{} (started from a checkpoint) active {failover:?} after the kill", NODES[next]);
    // The old active node comes back before more is appended: its journal is still in the stream.
    cluster.start_node(active);
    let bases = Arc::new(Mutex::new((0..3).map(|i| Some(cluster.node(i).base.clone())).collect::<Vec<_>>()));
    let load = start_load(bases, traders);
    std::thread::sleep(Duration::from_secs(2));
    acknowledged.extend(load.finish().acknowledged);
    let log_seq = cluster.wait_converged(Duration::from_secs(60));

    let events = cluster.node(next).all_events();
    assert_eq!(events[0]["seq"], 1, "the fetched copy holds the history from its start");
    for (i, name) in NODES.iter().enumerate() {
        assert!(cluster.node(i).all_events() == events, "node {name} holds other events");
    }
    if let Err(problem) = each_acknowledged_once(&acknowledged, &events) {
        panic!("{problem}");
    }
    for node in &mut cluster.nodes {
        node.take().unwrap().stop();
    }
    let digests: Vec<String> = (0..3).map(|i| replay_digest(&cluster.node_dir(i))).collect();
    eprintln!("{} orders acknowledged, log at {log_seq}, replayed {digests:?}", acknowledged.len());
    assert!(digests[0].contains(&format!("seq {log_seq}")), "{digests:?}");
    assert!(digests.iter().all(|d| *d == digests[0]), "the nodes replay to different states: {digests:?}");
}

/// Placing orders as fast as `clients` threads can, against `bases`, for
/// `seconds`: (acknowledged per second, p50 ms, p99 ms).
fn throughput(bases: &[String], traders: &[Trader], seconds: f64) -> (f64, f64, f64) {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let threads: Vec<_> = traders
        .iter()
        .cloned()
        .enumerate()
        .map(|(client, trader)| {
            let base = bases[client % bases.len()].clone();
            std::thread::spawn(move || {
                let agent = client_agent();
                let mut latencies_us = Vec::new();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    n += 1;
                    let side = if n.is_multiple_of(2) { "buy" } else { "sell" };
                    let price = if n.is_multiple_of(2) { 90 + n % 5 } else { 110 + n % 5 };
                    let body = json!({"symbol": "BTC-PERP", "side": side, "type": "limit",
                        "price": price.to_string(), "qty": "0.001"})
                    .to_string();
                    let mut request = ureq::http::Request::builder().method("POST").uri(format!("{base}/v1/orders"));
                    for (name, value) in trader.headers("POST", "/v1/orders", body.as_bytes()) {
                        request = request.header(name, value);
                    }
                    let sent = Instant::now();
                    let mut response = agent.run(request.body(body.into_bytes()).unwrap()).expect("an answer");
                    let _ = response.body_mut().read_to_string();
                    if response.status() == 200 {
                        latencies_us.push(sent.elapsed().as_micros() as u64);
                    }
                }
                latencies_us
            })
        })
        .collect();
    let mut latencies: Vec<u64> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let at = |q: f64| latencies.get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)));
    let ms = |q: f64| at(q).map_or(0.0, |us| *us as f64 / 1e3);
    (latencies.len() as f64 / elapsed, ms(0.5), ms(0.99))
}

/// Not a test of correctness: the figures of docs/BENCHMARKS.md "Cluster".
/// `cargo test --release --test e2e_cluster -- --ignored --nocapture`
#[test]
#[ignore = "a measurement; run by command (docs/BENCHMARKS.md)"]
fn measure_cluster_against_one_node() {
    let clients = 16;
    let seconds = 10.0;
    // Baseline: one node, the same generator, the same process.
    let single_dir = TempDir::new("cluster-bench-single");
    let single = Host::start(single_dir.path());
    let traders: Vec<Trader> = (0..clients).map(|_| single.new_trader()).collect();
    let (single_rate, single_p50, single_p99) = throughput(std::slice::from_ref(&single.base), &traders, seconds);
    println!(
        "{}",
        json!({"bench": "cluster", "mode": "single", "clients": clients, "acknowledged_per_sec": single_rate.round(), "p50_ms": single_p50, "p99_ms": single_p99})
    );
    single.stop();

    let dir = TempDir::new("cluster-bench");
    let nats = Nats::start(dir.path());
    let key_file = dir.path().join("secrets.key");
    let mut cluster = Cluster { urls: nats.urls(), key_file, nodes: vec![None, None, None], dir, extra: Vec::new() };
    for i in 0..3 {
        cluster.start_node(i);
    }
    let (active, _) = cluster.wait_active(&[0, 1, 2], Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.node(active).get("/v1/markets").ok().as_array().is_none_or(Vec::is_empty) {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    let traders: Vec<Trader> = (0..clients).map(|_| cluster.node(active).new_trader()).collect();
    let active_base = [cluster.node(active).base.clone()];
    let (rate, p50, p99) = throughput(&active_base, &traders, seconds);
    println!(
        "{}",
        json!({"bench": "cluster", "mode": "cluster, orders to the active node", "clients": clients, "acknowledged_per_sec": rate.round(), "p50_ms": p50, "p99_ms": p99})
    );
    let all: Vec<String> = (0..3).map(|i| cluster.node(i).base.clone()).collect();
    let (rate, p50, p99) = throughput(&all, &traders, seconds);
    println!(
        "{}",
        json!({"bench": "cluster", "mode": "cluster, orders spread over all nodes (2 of 3 forwarded)", "clients": clients, "acknowledged_per_sec": rate.round(), "p50_ms": p50, "p99_ms": p99})
    );
    let log_seq = cluster.wait_converged(Duration::from_secs(60));

    // Bytes per command in the stream.
    let (runtime, js) = jetstream(&cluster.urls);
    let stream_bytes = runtime
        .block_on(async { js.get_stream("EXHOST_COMMANDS").await.unwrap().get_info().await.unwrap().state.bytes });
    println!(
        "{}",
        json!({"bench": "cluster", "figure": "stream bytes per command", "commands": log_seq, "stream_bytes": stream_bytes, "bytes_per_command": (stream_bytes as f64 / log_seq as f64).round()})
    );

    // Catch-up: a standby wiped and restarted rebuilds the whole log.
    let standby = (active + 1) % 3;
    cluster.nodes[standby].take().unwrap().kill();
    std::fs::remove_dir_all(cluster.node_dir(standby)).unwrap();
    let started = Instant::now();
    cluster.start_node(standby);
    loop {
        if cluster.status(standby)["applied_seq"].as_u64().unwrap() >= log_seq {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"bench": "cluster", "figure": "catch-up of a wiped standby (process start included)", "commands": log_seq, "seconds": took, "commands_per_sec": (log_seq as f64 / took).round()})
    );

    // A checkpoint of the active node, fetched as a node joining a trimmed stream fetches it.
    let fetched_into = cluster.dir.path().join("fetched");
    std::fs::create_dir_all(&fetched_into).unwrap();
    let started = Instant::now();
    let stats = exhost_cluster::fetch::fetch(&cluster.node(active).base, ADMIN_TOKEN, &fetched_into)
        .expect("the active node sends a checkpoint");
    let took = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"bench": "cluster", "figure": "checkpoint fetched from the active node (made, sent, checked, synced)", "commands": log_seq, "files": stats.files, "bytes": stats.bytes, "seconds": took, "mb_per_sec": (stats.bytes as f64 / 1e6 / took * 10.0).round() / 10.0})
    );

    // Failover: kill -9 the active node, time until another says it is active.
    let killed_at = Instant::now();
    cluster.nodes[active].take().unwrap().kill();
    let (_, _) = cluster.wait_active(&cluster.running(), Duration::from_secs(10));
    println!(
        "{}",
        json!({"bench": "cluster", "figure": "failover after kill -9 (lease 2 s)", "seconds": killed_at.elapsed().as_secs_f64()})
    );
}

/// Start `exhost serve` expecting it to exit with an error; its standard error.
fn refused_to_start(data_dir: &Path, config_toml: &str, args: &[String], token: &str) -> String {
    std::fs::create_dir_all(data_dir).unwrap();
    std::fs::write(data_dir.join("exhost.toml"), config_toml).unwrap();
    let mut refused = Command::new(support::EXHOST)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .arg("--config")
        .arg(data_dir.join("exhost.toml"))
        .args(args)
        .env("EXHOST_ADMIN_TOKEN", token)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = refused.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = refused.kill();
            panic!("a node that should have refused to start in {} kept running", data_dir.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut refused.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    stderr
}

/// A node whose secrets key or operator token is not the cluster's refuses
/// to join, saying why (after a failover it could open no HMAC user's
/// secret; forwarded operator writes would be refused); a node with the
/// cluster's key and token joins.
#[test]
fn a_node_with_another_secrets_key_or_operator_token_refuses_to_join() {
    let dir = TempDir::new("cluster-key");
    let port = free_port();
    let mut server = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir.path().join("nats"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server is installed (bash .ci/setup)");
    let url = format!("nats://127.0.0.1:{port}");
    let node_config = |key: &str| format!("secrets_key_file = {:?}\n", dir.path().join(key).display().to_string());
    let args = |name: &str| ["--cluster", &url, "--node", name].map(String::from);
    let first = Host::start_args(&dir.path().join("one"), &node_config("cluster.key"), &args("one"));

    let stderr = refused_to_start(&dir.path().join("two"), &node_config("other.key"), &args("two"), ADMIN_TOKEN);
    assert!(stderr.contains("secrets key is not the cluster's"), "{stderr}");
    // The same for another operator token: forwarded operator writes would be refused.
    let stderr = refused_to_start(
        &dir.path().join("four"),
        &node_config("cluster.key"),
        &args("four"),
        "another-operator-token",
    );
    assert!(stderr.contains("operator token is not the cluster's"), "{stderr}");

    // The control: the cluster's key and token join.
    let third = Host::start_args(&dir.path().join("three"), &node_config("cluster.key"), &args("three"));
    assert_eq!(third.admin("GET", "/admin/v1/cluster", Value::Null).ok()["node"], "three");
    third.stop();
    first.stop();
    let _ = server.kill();
    let _ = server.wait();
}

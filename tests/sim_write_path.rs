//! A seeded simulation of the write path, in the spirit of TigerBeetle's VOPR
//! and FoundationDB's simulator: the real node (sequencer, journal writer,
//! engine thread, read model) over the in-memory twin of the store, with
//! random clients, random storage faults (a failed write, a failed sync)
//! and crashes that lose what was not synced, restarting each time through
//! the real recovery. After every restart and at the end it checks:
//!
//! - every acknowledged command is in the journal, at the sequence its
//!   answer named, and the event log shows it;
//! - no command answered "not recorded" is there; a command answered
//!   "outcome unknown" may be either, and nothing else;
//! - a replay from the first record reaches the live engine's digest;
//! - the exchange's books balance (the position module's ledger).
//!
//! Each seed prints itself on failure. `EXHOST_SIM_SEEDS` (default 200) and
//! `EXHOST_SIM_STEPS` (default 40) set how much runs; `EXHOST_SIM_SEED`
//! runs one seed alone.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use exhost_engine::{Command, EngineSnapshot, EventBody, MarketId, ModuleHash, NewOrder};
use exhost_guest_sdk::codec::decode;
use exhost_guest_sdk::{OrderType, SelfTradePrevention, Side, TimeInForce, UserId};
use exhost_node::recovery;
use exhost_node::{Node, NodeSettings, Storage, SubmitError};
use exhost_store::memory::{Fault, MemoryBackend};
use exhost_store::{Durability, Store};
use support::Rng;

/// How a command's answer ended.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Acknowledged(u64),
    /// Refused before the journal: never applied.
    NotRecorded,
    /// The journal write failed or the host went away: either.
    Unknown,
}

struct World {
    rng: Rng,
    seed: u64,
    backend: Arc<MemoryBackend>,
    store: Store,
    node: Option<Arc<Node>>,
    runtime: tokio::runtime::Runtime,
    /// Every command submitted, by its tag (a unique client order id or deposit amount), and how it ended.
    outcomes: BTreeMap<String, (Command, Outcome)>,
    users: u64,
    next_tag: u64,
    restarts: u32,
    faults: u32,
}

fn settings(rng: &mut Rng) -> NodeSettings {
    NodeSettings {
        durability: Durability::Synced,
        batch_commands_max: 1 + rng.below(16) as usize,
        submit_queue_max: 1_024,
        snapshot_every_commands: [0, 7, 25][rng.below(3) as usize],
        sealer: None,
    }
}

impl World {
    fn new(seed: u64) -> World {
        let backend = Arc::new(MemoryBackend::new());
        let store = Store::with_backend(backend.clone());
        for bytes in [exhost_embedded::PRICETIME_WASM, exhost_embedded::POSITIONS_WASM] {
            store.put_module(&ModuleHash::of(bytes).0, bytes).unwrap();
        }
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let mut world = World {
            rng: Rng::new(seed),
            seed,
            backend,
            store,
            node: None,
            runtime,
            outcomes: BTreeMap::new(),
            users: 0,
            next_tag: 0,
            restarts: 0,
            faults: 0,
        };
        world.boot();
        let pricetime = ModuleHash::of(exhost_embedded::PRICETIME_WASM);
        let positions = ModuleHash::of(exhost_embedded::POSITIONS_WASM);
        let setup = [
            exhost_node::datadir::default_position_install(positions),
            Command::CreateMarket(exhost_node::datadir::default_market(pricetime)),
        ];
        for command in setup {
            let applied = world.runtime.block_on(world.node().submit(command)).expect("setup is not faulted");
            assert!(!applied.events.iter().any(|e| matches!(e.body, EventBody::CommandRejected { .. })));
        }
        world
    }

    fn node(&self) -> Arc<Node> {
        self.node.clone().expect("the node runs")
    }

    /// Start (or restart) the process: recover from what the store holds.
    fn boot(&mut self) {
        let loader = exhost_node::loader_for(&self.store).unwrap();
        let (engine, stats) = recovery::recover(&self.store, loader)
            .unwrap_or_else(|error| panic!("seed {}: recovery failed: {error:#}", self.seed));
        let settings = settings(&mut self.rng);
        self.node = Some(Arc::new(
            Node::start(Storage::local(self.store.clone()), engine, settings, stats.snapshot_seq, None).unwrap(),
        ));
    }

    /// A crash: the process dies, the disk keeps what was synced and a prefix of the rest.
    fn crash(&mut self) {
        let unsynced = self.backend.unsynced_writes();
        let surviving = self.rng.below(unsynced as u64 + 1) as usize;
        self.backend.crash(surviving);
        if let Some(node) = self.node.take() {
            // The threads find every call failing and end; their answers are "unknown".
            node.shutdown();
        }
        self.backend.restart();
        self.restarts += 1;
        self.boot();
        self.check();
    }

    fn tag(&mut self) -> u64 {
        self.next_tag += 1;
        self.next_tag
    }

    fn user(&mut self) -> UserId {
        UserId(1 + self.rng.below(self.users.max(1)))
    }

    fn random_command(&mut self) -> (String, Command) {
        if self.users < 3 || self.rng.below(20) == 0 {
            self.users += 1;
            let tag = self.tag();
            let command = Command::CreateUser { api_key: format!("user-{tag}"), api_secret: "s".into() };
            return (format!("user-{tag}"), command);
        }
        match self.rng.below(10) {
            0..=1 => {
                // A unique amount tags the deposit.
                let tag = self.tag();
                let user_id = self.user();
                let amount_units = 10_000_000_000 + tag;
                (format!("deposit-{amount_units}"), Command::Deposit { user_id, asset: "USD".into(), amount_units })
            }
            2 => {
                let tag = self.tag();
                let price_ticks = 269_000 + self.rng.below(2_000);
                (format!("mark-{tag}"), Command::MarkPrice { market: MarketId(0), price_ticks })
            }
            3 => {
                let tag = self.tag();
                let user_id = self.user();
                (format!("cancel-all-{tag}"), Command::MassCancel { market: None, user_id })
            }
            _ => {
                let tag = self.tag();
                let side = if self.rng.below(2) == 0 { Side::Buy } else { Side::Sell };
                let offset = self.rng.below(40);
                let price_ticks = if side == Side::Buy { 270_000 - offset + 10 } else { 270_000 + offset - 10 };
                let order = NewOrder {
                    market: MarketId(0),
                    user_id: self.user(),
                    client_order_id: Some(format!("order-{tag}")),
                    side,
                    order_type: if self.rng.below(8) == 0 { OrderType::Market } else { OrderType::Limit },
                    price_ticks,
                    qty_lots: 1 + self.rng.below(20),
                    time_in_force: TimeInForce::ALL[self.rng.below(4) as usize],
                    self_trade_prevention: SelfTradePrevention::CancelTaker,
                    reduce_only: false,
                };
                let order = NewOrder {
                    price_ticks: if order.order_type == OrderType::Market { 0 } else { order.price_ticks },
                    time_in_force: if order.order_type == OrderType::Market {
                        TimeInForce::Ioc
                    } else {
                        order.time_in_force
                    },
                    ..order
                };
                (format!("order-{tag}"), Command::PlaceOrder(order))
            }
        }
    }

    /// A group of commands sent at once (they may share a journal batch), maybe with a storage fault.
    fn step(&mut self) {
        // A fault on one of the next few writes: the journal's, the read
        // model's, a snapshot's, whichever comes.
        let after = self.rng.below(4);
        match self.rng.below(12) {
            0 => {
                self.faults += 1;
                self.backend.inject_after(after, Fault::FailWrite);
            }
            1 => {
                self.faults += 1;
                self.backend.inject_after(after, Fault::FailSync);
            }
            _ => {}
        }
        let count = 1 + self.rng.below(8) as usize;
        let commands: Vec<(String, Command)> = (0..count).map(|_| self.random_command()).collect();
        let node = self.node();
        let pending: Vec<_> = commands.iter().map(|(_, command)| node.enqueue(command.clone())).collect();
        for ((tag, command), pending) in commands.into_iter().zip(pending) {
            let outcome = match pending {
                Err(SubmitError::Halted(_)) | Err(SubmitError::Overloaded) => Outcome::NotRecorded,
                Err(_) => Outcome::Unknown,
                Ok(pending) => match self.runtime.block_on(pending) {
                    Ok(applied) => Outcome::Acknowledged(applied.seq),
                    Err(SubmitError::Halted(_)) | Err(SubmitError::Overloaded) => Outcome::NotRecorded,
                    Err(_) => Outcome::Unknown,
                },
            };
            self.outcomes.insert(tag, (command, outcome));
        }
        // A halted node (its journal or read-model write failed) is restarted,
        // as an operator would. A read-model write fails after the answers
        // (it runs beside the engine): looked at as a reader does, past the barrier.
        self.runtime.block_on(node.read_side.barrier());
        let halted = node.health.problem().is_some();
        if halted || self.rng.below(15) == 0 {
            self.crash();
        }
    }

    /// The tag a journaled command carries.
    fn tag_of(command: &Command) -> Option<String> {
        match command {
            Command::CreateUser { api_key, .. } => Some(api_key.clone()),
            Command::Deposit { amount_units, .. } => Some(format!("deposit-{amount_units}")),
            Command::PlaceOrder(order) => order.client_order_id.clone(),
            _ => None,
        }
    }

    /// Every promise, against what the store holds now.
    fn check(&self) {
        // As a reader does: what was answered is read once the read side has written it.
        if let Some(node) = &self.node {
            self.runtime.block_on(node.read_side.barrier());
        }
        let seed = self.seed;
        let mut journaled: BTreeMap<String, (u64, Command)> = BTreeMap::new();
        let mut by_seq: BTreeMap<u64, Command> = BTreeMap::new();
        for record in self.store.journal_from(1) {
            let record = record.unwrap_or_else(|error| panic!("seed {seed}: the journal does not read: {error}"));
            let command: Command = decode(&record.command).unwrap();
            if let Some(tag) = Self::tag_of(&command) {
                journaled.insert(tag, (record.seq, command.clone()));
            }
            by_seq.insert(record.seq, command);
        }
        for (tag, (command, outcome)) in &self.outcomes {
            let found = journaled.get(tag);
            match outcome {
                Outcome::Acknowledged(seq) => {
                    assert_eq!(
                        by_seq.get(seq),
                        Some(command),
                        "seed {seed}: {tag} was acknowledged at seq {seq} and that is not what the journal holds there"
                    );
                    if Self::tag_of(command).is_some() {
                        assert_eq!(found.map(|(at, _)| at), Some(seq), "seed {seed}: {tag} is journaled twice");
                    }
                    // The read side shows it: every command leaves an event.
                    let (events, _) = exhost_node::readmodel::events_from(&self.store, *seq, 1).unwrap();
                    assert_eq!(
                        events.first().map(|event| event.seq),
                        Some(*seq),
                        "seed {seed}: {tag} (seq {seq}) left no event in the event log"
                    );
                }
                Outcome::NotRecorded => {
                    assert!(found.is_none(), "seed {seed}: {tag} was answered 'not recorded' and is journaled");
                }
                Outcome::Unknown => {}
            }
        }
    }

    /// At the end: replay equals live, and the books balance.
    fn finish(mut self) -> (u32, u32, usize) {
        self.runtime.block_on(self.node().read_side.barrier());
        if self.node().health.problem().is_some() {
            self.crash();
        }
        self.check();
        let node = self.node();
        let live = self.runtime.block_on(node.state()).unwrap();
        let live_digest = EngineSnapshot::digest_of(&live.encode());
        let loader = exhost_node::loader_for(&self.store).unwrap();
        let mut replayed = exhost_engine::Engine::new(loader);
        let mut progress = recovery::Progress::new("sim", 0, false);
        recovery::replay(&self.store, &mut replayed, live.seq, &mut progress, |_| Ok(())).unwrap();
        let replayed_digest = EngineSnapshot::digest_of(&replayed.snapshot().unwrap().encode());
        assert_eq!(
            replayed_digest, live_digest,
            "seed {}: replay from the start differs from the live state",
            self.seed
        );
        match replayed.query_position(&exhost_guest_sdk::PositionQuery::Ledger).unwrap() {
            exhost_guest_sdk::PositionQueryResult::Ledger(ledger) => {
                assert_eq!(ledger.imbalance(), 0, "seed {}: the books do not balance: {ledger:?}", self.seed)
            }
            other => panic!("a ledger query answered {other:?}"),
        }
        let acknowledged =
            self.outcomes.values().filter(|(_, outcome)| matches!(outcome, Outcome::Acknowledged(_))).count();
        if let Some(node) = self.node.take() {
            node.shutdown();
        }
        (self.restarts, self.faults, acknowledged)
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

#[test]
fn the_write_path_keeps_every_promise_under_random_faults_and_crashes() {
    let steps = env_number("EXHOST_SIM_STEPS", 40);
    let seeds: Vec<u64> = match std::env::var("EXHOST_SIM_SEED").ok().and_then(|seed| seed.parse().ok()) {
        Some(seed) => vec![seed],
        None => {
            let first = env_number("EXHOST_SIM_FIRST_SEED", 1);
            (first..first + env_number("EXHOST_SIM_SEEDS", 200)).collect()
        }
    };
    let (mut restarts, mut faults, mut acknowledged) = (0, 0, 0);
    for &seed in &seeds {
        let outcome = std::panic::catch_unwind(|| {
            let mut world = World::new(seed);
            for _ in 0..steps {
                world.step();
            }
            world.finish()
        });
        match outcome {
            Ok((r, f, a)) => {
                restarts += r;
                faults += f;
                acknowledged += a;
            }
            Err(panic) => {
                eprintln!("the simulation failed with seed {seed}: rerun it with EXHOST_SIM_SEED={seed}");
                std::panic::resume_unwind(panic);
            }
        }
    }
    eprintln!(
        "simulation: {} seeds x {steps} steps, {acknowledged} acknowledged commands, {faults} storage faults, {restarts} crashes and restarts",
        seeds.len()
    );
    assert!(acknowledged > 0 && restarts > 0 && faults > 0, "the simulation exercised nothing");
    let unique: BTreeSet<u64> = seeds.iter().copied().collect();
    assert_eq!(unique.len(), seeds.len());
}

/// The story (finding 1): when the engine could not apply a journaled
/// command, `apply_batch` zipped the batch with the results, which took and
/// dropped the item after the last result: the very command that stopped
/// the engine, whose client then heard "the host is shutting down" instead
/// of what happened to it. Now it hears that its command is journaled and
/// will take effect when the host restarts.
#[test]
fn the_command_that_stops_the_engine_is_answered_with_its_fate() {
    let mut world = World::new(7);
    let node = world.node();
    // Only missing module bytes stop the engine now; no module behaviour can.
    let mut market = exhost_node::datadir::default_market(ModuleHash([9; 32]));
    market.symbol = "GONE-PERP".into();
    let stopping = node.enqueue(Command::CreateMarket(market)).unwrap();
    // The engine may have stopped before this one is offered: then it is
    // refused at once, with the same fate.
    let after = node.enqueue(Command::CreateUser { api_key: "late".into(), api_secret: "s".into() });
    let answer = world.runtime.block_on(stopping);
    assert!(matches!(answer, Err(SubmitError::NotApplied(_))), "{answer:?}");
    let answer = match after {
        Ok(after) => world.runtime.block_on(after),
        Err(refused) => Err(refused),
    };
    assert!(matches!(answer, Err(SubmitError::NotApplied(_)) | Err(SubmitError::Halted(_))), "{answer:?}");
    assert!(node.health.problem().is_some(), "the node says why it stopped");
    world.node = None;
    node.shutdown();
}

/// Snapshots are encoded and stored on a thread of their own while the
/// engine applies on (the engine only takes the instances' images). Each one
/// stored must be the state after its `seq` exactly: the very bytes an engine
/// replayed from the first record to that `seq` snapshots to.
#[test]
fn a_snapshot_written_beside_the_engine_is_the_state_replayed_to_its_seq() {
    let mut world = World::new(11);
    if let Some(node) = world.node.take() {
        node.shutdown();
    }
    let loader = exhost_node::loader_for(&world.store).unwrap();
    let (engine, stats) = recovery::recover(&world.store, loader).unwrap();
    let settings = NodeSettings {
        durability: Durability::Synced,
        batch_commands_max: 16,
        submit_queue_max: 1_024,
        snapshot_every_commands: 40,
        sealer: None,
    };
    let node =
        Arc::new(Node::start(Storage::local(world.store.clone()), engine, settings, stats.snapshot_seq, None).unwrap());
    // Many commands in flight at once, so the engine applies while snapshots are written.
    for _ in 0..25 {
        let pending: Vec<_> = (0..48).map(|_| node.enqueue(world.random_command().1).unwrap()).collect();
        for answer in pending {
            world.runtime.block_on(answer).expect("no fault was injected");
        }
    }
    node.shutdown();
    let infos = world.store.snapshot_infos().unwrap();
    assert!(infos.len() >= 10, "a snapshot every 40 commands of 1,200: {} stored", infos.len());
    let loader = exhost_node::loader_for(&world.store).unwrap();
    let mut replayed = exhost_engine::Engine::new(loader);
    let mut progress = recovery::Progress::new("snapshots", 0, false);
    for info in &infos {
        recovery::replay(&world.store, &mut replayed, info.seq, &mut progress, |_| Ok(())).unwrap();
        assert_eq!(replayed.last_seq(), info.seq);
        let bytes = replayed.snapshot().unwrap().encode();
        let stored = world.store.snapshot(info.seq).unwrap().expect("an indexed snapshot is stored");
        assert_eq!(EngineSnapshot::digest_of(&stored.bytes).0, info.digest, "the index holds the stored bytes' digest");
        assert_eq!(
            EngineSnapshot::digest_of(&bytes).0,
            info.digest,
            "the snapshot stored at seq {} differs from the state replayed to it",
            info.seq
        );
    }
    // Negative control: the state one command further, labelled with the
    // first snapshot's seq and time, has another digest: the check above
    // compares the modules' state, not just the labels.
    let first = infos[0];
    let mut further = exhost_engine::Engine::new(exhost_node::loader_for(&world.store).unwrap());
    recovery::replay(&world.store, &mut further, first.seq + 1, &mut progress, |_| Ok(())).unwrap();
    let stored = EngineSnapshot::decode(&world.store.snapshot(first.seq).unwrap().unwrap().bytes).unwrap();
    let relabelled = EngineSnapshot { seq: stored.seq, ts_ns: stored.ts_ns, ..further.snapshot().unwrap() };
    assert_ne!(EngineSnapshot::digest_of(&relabelled.encode()).0, first.digest);
}

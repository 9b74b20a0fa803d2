//! The engine with the reference matching module linked natively: replay
//! equality, snapshot equivalence, fault isolation, and its dependency rule.

use std::sync::Arc;

use exhost_engine::*;
use exhost_guest_sdk::*;
use exhost_pricetime::PriceTimeBook;

fn loader() -> Arc<dyn ModuleLoader> {
    Arc::new(NativeLoader::<PriceTimeBook>::default())
}

fn market_spec(symbol: &str) -> MarketSpec {
    MarketSpec {
        symbol: symbol.into(),
        base: "BTC".into(),
        quote: "USD".into(),
        quote_decimals: 6,
        price_scale: Scale { decimals: 1, step_units: 1 },
        qty_scale: Scale { decimals: 3, step_units: 1 },
        module_hash: ModuleHash([7; 32]),
        limits: ModuleLimits::default(),
        config: MarketConfig::default(),
        risk: RiskParams::default(),
    }
}

/// A deterministic pseudo-random flow (xorshift), so the test needs no seed source.
fn flow(commands: usize, seed: u64) -> Vec<Command> {
    let mut rng = exhost_seeded::Rng::from_state(seed);
    let mut next = move || rng.next_u64();
    let mut out = vec![Command::CreateMarket(market_spec("BTC-PERP")), Command::CreateMarket(market_spec("ETH-PERP"))];
    for i in 0..4 {
        out.push(Command::CreateUser { api_key: format!("k{i}"), api_secret: format!("s{i}") });
    }
    while out.len() < commands {
        let r = next();
        let market = MarketId((r % 2) as u32);
        let user_id = UserId(1 + (r >> 8) % 4);
        let seq_guess = out.len() as u64 + 1;
        let command = match (r >> 16) % 10 {
            0..=6 => Command::PlaceOrder(NewOrder {
                market,
                user_id,
                client_order_id: None,
                side: if (r >> 24) % 2 == 0 { Side::Buy } else { Side::Sell },
                order_type: if (r >> 28) % 10 == 0 { OrderType::Market } else { OrderType::Limit },
                price_ticks: 990 + (r >> 32) % 20,
                qty_lots: 1 + (r >> 40) % 9,
                time_in_force: TimeInForce::ALL[((r >> 44) % 4) as usize],
                self_trade_prevention: SelfTradePrevention::ALL[((r >> 48) % 3) as usize],
                reduce_only: false,
            }),
            7..=8 => Command::CancelOrder {
                market,
                user_id,
                order_id: OrderId(seq_guess.saturating_sub(1 + (r >> 32) % 30)),
            },
            _ => Command::AmendOrder {
                market,
                user_id,
                order_id: OrderId(seq_guess.saturating_sub(1 + (r >> 32) % 30)),
                price_ticks: Some(990 + (r >> 40) % 20),
                qty_lots: None,
            },
        };
        out.push(command);
    }
    out
}

fn run(engine: &mut Engine, commands: &[Command], from_seq: u64) -> Vec<Vec<EventBody>> {
    commands
        .iter()
        .enumerate()
        .map(|(i, command)| {
            let seq = from_seq + i as u64;
            engine.apply(seq, seq * 1000, command).unwrap()
        })
        .collect()
}

fn digest(engine: &mut Engine) -> StateDigest {
    EngineSnapshot::digest_of(&engine.snapshot().unwrap().encode())
}

#[test]
fn replaying_the_same_commands_twice_gives_the_same_events_and_digest() {
    let commands = flow(3_000, 42);
    let mut first = Engine::new(loader());
    let mut second = Engine::new(loader());
    assert_eq!(run(&mut first, &commands, 1), run(&mut second, &commands, 1));
    assert_eq!(digest(&mut first), digest(&mut second));
    // And a different flow gives a different state: the digest means something.
    let mut other = Engine::new(loader());
    run(&mut other, &flow(3_000, 1_000_003), 1);
    assert_ne!(digest(&mut first), digest(&mut other));
}

#[test]
fn snapshot_then_tail_equals_replay_from_the_start() {
    let commands = flow(4_000, 7);
    let mut full = Engine::new(loader());
    let full_events = run(&mut full, &commands, 1);

    let mut head = Engine::new(loader());
    run(&mut head, &commands[..1_500], 1);
    let snapshot = EngineSnapshot::decode(&head.snapshot().unwrap().encode()).unwrap();
    let mut resumed = Engine::restore(loader(), snapshot).unwrap();
    let tail_events = run(&mut resumed, &commands[1_500..], 1_501);

    assert_eq!(&full_events[1_500..], &tail_events[..]);
    assert_eq!(digest(&mut full), digest(&mut resumed));
}

#[test]
fn commands_must_arrive_in_sequence() {
    let mut engine = Engine::new(loader());
    let error = engine.apply(2, 1, &Command::CreateMarket(market_spec("X"))).unwrap_err();
    assert!(matches!(error, EngineError::OutOfSequence { expected: 1, got: 2 }));
}

#[test]
fn engine_level_rejections_change_nothing() {
    let mut engine = Engine::new(loader());
    run(&mut engine, &[Command::CreateMarket(market_spec("BTC-PERP"))], 1);
    let before = digest(&mut engine);
    let refused = [
        Command::CreateMarket(market_spec("BTC-PERP")),
        Command::Deposit { user_id: UserId(9), asset: "USD".into(), amount_units: 5 },
        Command::CancelOrder { market: MarketId(5), user_id: UserId(1), order_id: OrderId(1) },
    ];
    let events = run(&mut engine, &refused, 2);
    assert_eq!(events[0], vec![EventBody::CommandRejected { reason: Reason::MarketExists }]);
    assert_eq!(events[1], vec![EventBody::CommandRejected { reason: Reason::UnknownUser }]);
    assert_eq!(events[2], vec![EventBody::CommandRejected { reason: Reason::UnknownMarket }]);
    // Sequence and time moved on; the state itself did not.
    let after = engine.snapshot().unwrap();
    assert_eq!(after.seq, 4);
    let mut rebuilt = Engine::restore(loader(), after).unwrap();
    let mut original = Engine::new(loader());
    run(&mut original, &[Command::CreateMarket(market_spec("BTC-PERP"))], 1);
    assert_eq!(rebuilt.registry(), original.registry());
    assert_ne!(before, digest(&mut rebuilt), "seq and ts are part of the digest");
}

/// Wraps the reference book and traps on any order of exactly 13 lots, like a
/// buggy plugin would, to exercise fault isolation.
struct TrapOn13(NativeMatching<PriceTimeBook>);

impl Instance<MatchingAbi> for TrapOn13 {
    fn apply(
        &mut self,
        ctx: &CommandContext,
        command: &MatchingCommand,
        events: &mut Vec<MatchingEvent>,
    ) -> Result<(), ModuleFault> {
        if let MatchingCommand::Place(order) = command
            && order.qty_lots == 13
        {
            // Half-apply first, as a real trap mid-command would leave things.
            self.0.apply(ctx, command, events)?;
            return Err(ModuleFault::Trap { message: "unlucky".into() });
        }
        self.0.apply(ctx, command, events)
    }
    fn query(&mut self, query: &MatchingQuery) -> Result<MatchingQueryResult, ModuleFault> {
        self.0.query(query)
    }
    fn snapshot(&mut self, out: &mut Vec<u8>) -> Result<(), ModuleFault> {
        self.0.snapshot(out)
    }
    fn state_version(&self) -> u32 {
        Instance::<MatchingAbi>::state_version(&self.0)
    }
    fn image(&mut self) -> Result<InstanceImage, ModuleFault> {
        Instance::<MatchingAbi>::image(&mut self.0)
    }
}

struct TrapLoader;

impl Loader<MatchingAbi> for TrapLoader {
    fn create(
        &self,
        _: ModuleTarget,
        _: &ModuleHash,
        _: &ModuleLimits,
        config: &MarketConfig,
    ) -> Result<Box<MatchingInstance>, LoadError> {
        Ok(Box::new(TrapOn13(NativeMatching::new(PriceTimeBook::init(config).unwrap()))))
    }
    fn restore(
        &self,
        _: ModuleTarget,
        _: &ModuleHash,
        _: &ModuleLimits,
        _: u32,
        bytes: &[u8],
    ) -> Result<Box<MatchingInstance>, LoadError> {
        Ok(Box::new(TrapOn13(NativeMatching::new(PriceTimeBook::restore(bytes).unwrap()))))
    }
    fn resume(
        &self,
        target: ModuleTarget,
        hash: &ModuleHash,
        limits: &ModuleLimits,
        image: &InstanceImage,
    ) -> Result<Box<MatchingInstance>, LoadError> {
        let InstanceImage::Snapshot { state_version, bytes } = image else { panic!("native images are snapshots") };
        Loader::<MatchingAbi>::restore(self, target, hash, limits, *state_version, bytes)
    }
}

impl Loader<PositionAbi> for TrapLoader {
    fn create(
        &self,
        target: ModuleTarget,
        hash: &ModuleHash,
        limits: &ModuleLimits,
        config: &PositionConfig,
    ) -> Result<Box<PositionInstance>, LoadError> {
        Loader::<PositionAbi>::create(&NativeLoader::<PriceTimeBook>::default(), target, hash, limits, config)
    }
    fn restore(
        &self,
        target: ModuleTarget,
        hash: &ModuleHash,
        limits: &ModuleLimits,
        version: u32,
        bytes: &[u8],
    ) -> Result<Box<PositionInstance>, LoadError> {
        Loader::<PositionAbi>::restore(&NativeLoader::<PriceTimeBook>::default(), target, hash, limits, version, bytes)
    }
    fn resume(
        &self,
        target: ModuleTarget,
        hash: &ModuleHash,
        limits: &ModuleLimits,
        image: &InstanceImage,
    ) -> Result<Box<PositionInstance>, LoadError> {
        Loader::<PositionAbi>::resume(&NativeLoader::<PriceTimeBook>::default(), target, hash, limits, image)
    }
}

#[test]
fn a_trapping_command_is_rejected_and_leaves_the_state_as_before_it() {
    // As many commands before the trap as a checkpoint retains at least, so
    // the rollback re-applies a long run of them.
    const BEFORE: usize = 10_000;
    let commands = flow(BEFORE + 1_000, 99);
    let poisoned = Command::PlaceOrder(NewOrder {
        market: MarketId(0),
        user_id: UserId(1),
        client_order_id: None,
        side: Side::Buy,
        order_type: OrderType::Market,
        price_ticks: 0,
        qty_lots: 13,
        time_in_force: TimeInForce::Ioc,
        self_trade_prevention: SelfTradePrevention::CancelTaker,
        reduce_only: false,
    });

    let mut faulty = Engine::new(Arc::new(TrapLoader));
    run(&mut faulty, &commands[..BEFORE], 1);
    let events = faulty.apply(BEFORE as u64 + 1, 1, &poisoned).unwrap();
    let last = events.last().unwrap();
    assert!(
        matches!(
            last,
            EventBody::Matching {
                event: MatchingEvent::Order(OrderUpdate {
                    status: OrderStatus::Rejected,
                    reason: Some(Reason::ModuleTrap),
                    ..
                }),
                ..
            }
        ),
        "{last:?}"
    );
    let rest = run(&mut faulty, &commands[BEFORE..], BEFORE as u64 + 2);

    // The same flow without the poisoned command (a harmless refused command in its
    // place keeps the sequence) on the plain module gives the same later events.
    let mut clean = Engine::new(loader());
    run(&mut clean, &commands[..BEFORE], 1);
    clean
        .apply(BEFORE as u64 + 1, 1, &Command::Deposit { user_id: UserId(99), asset: "USD".into(), amount_units: 1 })
        .unwrap();
    let clean_rest = run(&mut clean, &commands[BEFORE..], BEFORE as u64 + 2);
    assert_eq!(rest, clean_rest);
    let (a, b) = (faulty.snapshot().unwrap(), clean.snapshot().unwrap());
    assert_eq!(a.markets, b.markets);
}

fn run_batched(engine: &mut Engine, commands: &[Command], chunk: usize) -> Vec<Vec<EventBody>> {
    let mut results = Vec::new();
    for part in commands.chunks(chunk) {
        let first = engine.last_seq() + 1;
        let items: Vec<(u64, &Command)> =
            part.iter().enumerate().map(|(i, command)| ((first + i as u64) * 1000, command)).collect();
        results.extend(engine.apply_batch(first, &items).unwrap());
    }
    results
}

#[test]
fn batches_give_exactly_the_events_of_one_command_at_a_time() {
    let commands = flow(6_000, 17);
    let mut single = Engine::new(loader());
    let expected = run(&mut single, &commands, 1);
    for chunk in [1, 7, 777, 6_000] {
        let mut batched = Engine::new(loader());
        assert_eq!(run_batched(&mut batched, &commands, chunk), expected, "chunks of {chunk}");
        assert_eq!(digest(&mut batched), digest(&mut single), "chunks of {chunk}");
    }
}

#[test]
fn a_fault_inside_a_batch_rejects_only_its_command() {
    // In the first market, then in the second, whose fault must also undo the
    // first market's share of the same batch.
    for market in [MarketId(0), MarketId(1)] {
        fault_inside_a_batch(market);
    }
}

fn fault_inside_a_batch(market: MarketId) {
    let mut commands = flow(3_000, 23);
    let poisoned = Command::PlaceOrder(NewOrder {
        market,
        user_id: UserId(2),
        client_order_id: None,
        side: Side::Sell,
        order_type: OrderType::Market,
        price_ticks: 0,
        qty_lots: 13,
        time_in_force: TimeInForce::Ioc,
        self_trade_prevention: SelfTradePrevention::CancelTaker,
        reduce_only: false,
    });
    commands[1_500] = poisoned.clone();
    commands[1_501] = poisoned;
    let mut single = Engine::new(Arc::new(TrapLoader));
    let expected = run(&mut single, &commands, 1);
    let mut batched = Engine::new(Arc::new(TrapLoader));
    let got = run_batched(&mut batched, &commands, 1_000);
    assert_eq!(got, expected);
    assert!(got[1_500].iter().any(|e| matches!(
        e,
        EventBody::Matching { event: MatchingEvent::Order(OrderUpdate { reason: Some(Reason::ModuleTrap), .. }), .. }
    )));
    let (a, b) = (single.snapshot().unwrap(), batched.snapshot().unwrap());
    assert_eq!(a.markets, b.markets);
}

/// The recorder keeps what each book received and kept: replayed alone
/// through a fresh book, its commands give the engine's book exactly, with no
/// trace of the commands a fault rolled back, however often the book was
/// checkpointed, rebuilt and copied for queries.
#[test]
fn a_recording_holds_what_each_book_received_and_kept() {
    let mut commands = flow(30_000, 5);
    // Poisoned orders (13 lots trap the module after it half-applied them),
    // spread out so some land long after a checkpoint.
    let mut poisoned = 0;
    for start in (1_000..commands.len() - 50).step_by(997) {
        let place = commands[start..].iter_mut().find_map(|command| match command {
            Command::PlaceOrder(order) => Some(order),
            _ => None,
        });
        if let Some(order) = place {
            order.qty_lots = 13;
            poisoned += 1;
        }
    }
    assert!(poisoned > 20);
    let recorder = Arc::new(RecordingLoader::new(Arc::new(TrapLoader)));
    let mut engine = Engine::new(recorder.clone());
    for (i, command) in commands.iter().enumerate() {
        let seq = i as u64 + 1;
        engine.apply(seq, seq * 1000, command).unwrap();
        if seq.is_multiple_of(1_000) {
            // A query runs in a copy, which must leave the history alone.
            engine.query(MarketId(0), &MatchingQuery::Depth { levels_max: 5 }).unwrap();
        }
    }
    let snapshot = engine.snapshot().unwrap();
    for market in [MarketId(0), MarketId(1)] {
        let recording = recorder.recording(market).unwrap();
        assert_eq!(recording.modules, vec![(0, ModuleHash([7; 32]))]);
        assert!(recording.commands.len() > 10_000, "{} commands", recording.commands.len());
        assert!(recording.commands.windows(2).all(|pair| pair[0].ctx.seq < pair[1].ctx.seq));
        let placed_13 = recording
            .commands
            .iter()
            .filter(|input| matches!(&input.command, MatchingCommand::Place(order) if order.qty_lots == 13));
        assert_eq!(placed_13.count(), 0, "a rolled-back command was recorded");
        let mut book = NativeMatching::new(PriceTimeBook::init(&recording.config).unwrap());
        for input in &recording.commands {
            let mut events = Vec::new();
            book.apply(&input.ctx, &input.command, &mut events).unwrap();
        }
        let mut replayed = Vec::new();
        book.snapshot(&mut replayed).unwrap();
        let InstanceImage::Snapshot { bytes, .. } = &*snapshot.markets[market.0 as usize].image else {
            panic!("a native book's image is its snapshot")
        };
        assert_eq!(&replayed, bytes, "{market}: the recording does not rebuild the book");
    }
    // A market the engine never created has no recording.
    assert!(recorder.recording(MarketId(2)).is_none());
}

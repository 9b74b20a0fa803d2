//! The whole pipeline natively, with the reference position module: replay
//! equality over flows with margin refusals, liquidations, deleveraging and
//! funding, from the start and from a snapshot; and atomicity when the position
//! module faults in the middle of a command.

use std::sync::Arc;

use exhost_engine::*;
use exhost_guest_sdk::*;
use exhost_positions::Positions;
use exhost_pricetime::PriceTimeBook;

fn loader() -> Arc<dyn ModuleLoader> {
    Arc::new(NativeLoader::<PriceTimeBook, Positions>::default())
}

fn setup() -> Vec<Command> {
    let mut commands = vec![
        Command::InstallPositionModule {
            module_hash: ModuleHash([2; 32]),
            limits: ModuleLimits::default(),
            config: PositionConfig {
                settlement_asset: "USD".into(),
                follow_ups_per_command_max: 1_000,
                params: vec![],
            },
        },
        Command::CreateMarket(MarketSpec {
            symbol: "BTC-PERP".into(),
            base: "BTC".into(),
            quote: "USD".into(),
            quote_decimals: 6,
            price_scale: Scale { decimals: 1, step_units: 1 },
            qty_scale: Scale { decimals: 3, step_units: 1 },
            module_hash: ModuleHash([1; 32]),
            limits: ModuleLimits::default(),
            config: MarketConfig::default(),
            risk: RiskParams::default(),
        }),
        Command::FundInsurance { amount_units: 1_000_000_000 },
    ];
    for user in 0..6u64 {
        commands.push(Command::CreateUser { api_key: format!("k{user}"), api_secret: format!("s{user}") });
        let usd = if user == 0 { 500_000 } else { 1_000 + 1_500 * user };
        commands.push(Command::Deposit {
            user_id: UserId(user + 1),
            asset: "USD".into(),
            amount_units: usd * 1_000_000,
        });
    }
    commands.push(Command::MarkPrice { market: MarketId(0), price_ticks: 270_000 });
    commands
}

/// A deterministic flow around a wandering mark price.
fn flow(count: usize, seed: u64) -> Vec<Command> {
    let mut rng = exhost_seeded::Rng::new(seed);
    let mut next = move || rng.next_u64();
    let mut mark: i64 = 270_000;
    let mut commands = setup();
    while commands.len() < count {
        let r = next();
        let user_id = UserId(1 + (r >> 8) % 6);
        commands.push(match r % 100 {
            0..=64 => Command::PlaceOrder(NewOrder {
                market: MarketId(0),
                user_id,
                client_order_id: None,
                side: if (r >> 16) % 2 == 0 { Side::Buy } else { Side::Sell },
                order_type: if (r >> 20) % 8 == 0 { OrderType::Market } else { OrderType::Limit },
                price_ticks: (mark + ((r >> 24) % 400) as i64 - 200) as u64,
                qty_lots: 1 + (r >> 32) % 500,
                time_in_force: TimeInForce::Gtc,
                self_trade_prevention: SelfTradePrevention::CancelMaker,
                reduce_only: false,
            }),
            65..=84 => {
                let step = if (r >> 16) % 6 == 0 { 20_000 } else { 3_000 };
                mark = (mark + ((r >> 24) % (2 * step + 1)) as i64 - step as i64).clamp(150_000, 400_000);
                Command::MarkPrice { market: MarketId(0), price_ticks: mark as u64 }
            }
            85..=89 => Command::Funding { market: MarketId(0), rate: ((r >> 16) % 2_001) as i64 - 1_000 },
            90..=94 => Command::Deposit { user_id, asset: "USD".into(), amount_units: 2_000_000_000 },
            _ => Command::Withdraw { user_id, asset: "USD".into(), amount_units: ((r >> 16) % 1_000) * 1_000_000 },
        });
    }
    commands
}

fn run(engine: &mut Engine, commands: &[Command], first_seq: u64) -> Vec<Vec<EventBody>> {
    commands
        .iter()
        .enumerate()
        .map(|(i, command)| {
            let seq = first_seq + i as u64;
            engine.apply(seq, seq, command).unwrap()
        })
        .collect()
}

fn digest(engine: &mut Engine) -> StateDigest {
    EngineSnapshot::digest_of(&engine.snapshot().unwrap().encode())
}

fn count(events: &[Vec<EventBody>], pick: impl Fn(&PositionEvent) -> bool) -> usize {
    events.iter().flatten().filter(|e| matches!(e, EventBody::Position(p) if pick(p))).count()
}

#[test]
fn replay_with_liquidations_and_deleveraging_is_exact() {
    let commands = flow(4_000, 3);
    let mut first = Engine::new(loader());
    let events = run(&mut first, &commands, 1);
    // The flow exercises what it claims to.
    assert!(count(&events, |e| matches!(e, PositionEvent::LiquidationStarted { .. })) > 0, "no liquidation");
    assert!(count(&events, |e| matches!(e, PositionEvent::AutoDeleverage { .. })) > 0, "no deleveraging");
    assert!(count(&events, |e| matches!(e, PositionEvent::Rejected { reason: Reason::InsufficientMargin, .. })) > 0);
    assert!(count(&events, |e| matches!(e, PositionEvent::FundingIndex { .. })) > 0);
    assert!(count(&events, |e| matches!(e, PositionEvent::FundingSettled { .. })) > 0, "nobody settled funding");
    // Every command leaves the books balanced.
    for (i, command_events) in events.iter().enumerate() {
        for event in command_events {
            if let EventBody::Position(PositionEvent::Ledger(ledger)) = event {
                assert_eq!(ledger.imbalance(), 0, "command {}", i + 1);
            }
        }
    }

    let mut second = Engine::new(loader());
    assert_eq!(run(&mut second, &commands, 1), events);
    assert_eq!(digest(&mut first), digest(&mut second));

    let mut head = Engine::new(loader());
    run(&mut head, &commands[..2_222], 1);
    let snapshot = EngineSnapshot::decode(&head.snapshot().unwrap().encode()).unwrap();
    let mut resumed = Engine::restore(loader(), snapshot).unwrap();
    assert_eq!(run(&mut resumed, &commands[2_222..], 2_223), events[2_222..]);
    assert_eq!(digest(&mut resumed), digest(&mut first));
}

/// Positions that trap on settling any trade of exactly 77 lots, after having
/// changed their state: the whole command, book included, must be undone.
struct TrapOn77(Native<PositionAbi, Positions>);

impl Instance<PositionAbi> for TrapOn77 {
    fn apply(
        &mut self,
        ctx: &CommandContext,
        command: &PositionCommand,
        out: &mut PositionOutput,
    ) -> Result<(), ModuleFault> {
        self.0.apply(ctx, command, out)?;
        if let PositionCommand::Settle { events, .. } = command
            && events.iter().any(|e| matches!(e, MatchingEvent::Trade(t) if t.qty_lots == 77))
        {
            return Err(ModuleFault::Trap { message: "boom".into() });
        }
        Ok(())
    }
    fn query(&mut self, query: &PositionQuery) -> Result<PositionQueryResult, ModuleFault> {
        self.0.query(query)
    }
    fn snapshot(&mut self, out: &mut Vec<u8>) -> Result<(), ModuleFault> {
        self.0.snapshot(out)
    }
    fn state_version(&self) -> u32 {
        Instance::<PositionAbi>::state_version(&self.0)
    }
    fn image(&mut self) -> Result<InstanceImage, ModuleFault> {
        Instance::<PositionAbi>::image(&mut self.0)
    }
}

struct Faulty;

impl Loader<MatchingAbi> for Faulty {
    fn create(
        &self,
        t: ModuleTarget,
        h: &ModuleHash,
        l: &ModuleLimits,
        c: &MarketConfig,
    ) -> Result<Box<MatchingInstance>, LoadError> {
        Loader::<MatchingAbi>::create(&NativeLoader::<PriceTimeBook>::default(), t, h, l, c)
    }
    fn restore(
        &self,
        t: ModuleTarget,
        h: &ModuleHash,
        l: &ModuleLimits,
        v: u32,
        b: &[u8],
    ) -> Result<Box<MatchingInstance>, LoadError> {
        Loader::<MatchingAbi>::restore(&NativeLoader::<PriceTimeBook>::default(), t, h, l, v, b)
    }
    fn resume(
        &self,
        t: ModuleTarget,
        h: &ModuleHash,
        l: &ModuleLimits,
        i: &InstanceImage,
    ) -> Result<Box<MatchingInstance>, LoadError> {
        Loader::<MatchingAbi>::resume(&NativeLoader::<PriceTimeBook>::default(), t, h, l, i)
    }
}

impl Loader<PositionAbi> for Faulty {
    fn create(
        &self,
        _: ModuleTarget,
        _: &ModuleHash,
        _: &ModuleLimits,
        c: &PositionConfig,
    ) -> Result<Box<PositionInstance>, LoadError> {
        Ok(Box::new(TrapOn77(Native::new(Positions::init(c).unwrap()))))
    }
    fn restore(
        &self,
        _: ModuleTarget,
        _: &ModuleHash,
        _: &ModuleLimits,
        _: u32,
        b: &[u8],
    ) -> Result<Box<PositionInstance>, LoadError> {
        Ok(Box::new(TrapOn77(Native::new(Positions::restore(b).unwrap()))))
    }
    fn resume(
        &self,
        t: ModuleTarget,
        h: &ModuleHash,
        l: &ModuleLimits,
        i: &InstanceImage,
    ) -> Result<Box<PositionInstance>, LoadError> {
        let InstanceImage::Snapshot { state_version, bytes } = i else { panic!("native images are snapshots") };
        Loader::<PositionAbi>::restore(self, t, h, l, *state_version, bytes)
    }
}

#[test]
fn a_fault_in_settlement_undoes_the_match_too() {
    let mut engine = Engine::new(Arc::new(Faulty));
    run(&mut engine, &setup(), 1);
    let mut seq = setup().len() as u64 + 1;
    let place = |user: u64, side: Side, qty_lots: u64| {
        Command::PlaceOrder(NewOrder {
            market: MarketId(0),
            user_id: UserId(user),
            client_order_id: None,
            side,
            order_type: OrderType::Limit,
            price_ticks: 270_000,
            qty_lots,
            time_in_force: TimeInForce::Gtc,
            self_trade_prevention: SelfTradePrevention::CancelTaker,
            reduce_only: false,
        })
    };
    engine.apply(seq, seq, &place(1, Side::Sell, 100)).unwrap();
    seq += 1;
    let before = engine.snapshot().unwrap();
    let events = engine.apply(seq, seq, &place(2, Side::Buy, 77)).unwrap();
    assert!(
        matches!(
            events.last(),
            Some(EventBody::Matching {
                event: MatchingEvent::Order(OrderUpdate {
                    status: OrderStatus::Rejected,
                    reason: Some(Reason::ModuleTrap),
                    ..
                }),
                ..
            })
        ),
        "{events:?}"
    );
    let after = engine.snapshot().unwrap();
    assert_eq!(after.markets, before.markets, "the book is as before the command");
    assert_eq!(after.position, before.position, "positions are as before the command");
    // And the engine goes on: a 76-lot order trades.
    seq += 1;
    let events = engine.apply(seq, seq, &place(2, Side::Buy, 76)).unwrap();
    assert!(events.iter().any(|e| matches!(e, EventBody::Matching { event: MatchingEvent::Trade(_), .. })));
}

//! Shadow runs in the engine: the tap hands over exactly the calls a market's
//! book applied, one by one and in batches, without the ones undone with a
//! faulted command; a candidate fed them reports the first command whose
//! outputs differ, and an identical one reports none.

use std::sync::Arc;

use exhost_engine::*;
use exhost_guest_sdk::*;
use exhost_pricetime::PriceTimeBook;
use exhost_prorata::ProRataBook;

const PRICE_TIME: ModuleHash = ModuleHash([7; 32]);
/// The same rules under another hash: an identical rebuild.
const PRICE_TIME_REBUILT: ModuleHash = ModuleHash([8; 32]);
const PRO_RATA: ModuleHash = ModuleHash([9; 32]);

/// Natively linked books by hash; an order of exactly 13 lots traps in
/// every one of them, as a buggy module would.
#[derive(Default)]
struct Books {
    price_time: NativeLoader<PriceTimeBook>,
    pro_rata: NativeLoader<ProRataBook>,
}

struct TrapOn13(Box<dyn Instance<MatchingAbi>>);

impl Instance<MatchingAbi> for TrapOn13 {
    fn apply(
        &mut self,
        ctx: &CommandContext,
        command: &MatchingCommand,
        out: &mut Vec<MatchingEvent>,
    ) -> Result<(), ModuleFault> {
        if let MatchingCommand::Place(order) = command
            && order.qty_lots == 13
        {
            // Half-apply first, as a real trap mid-command would leave things.
            self.0.apply(ctx, command, out)?;
            return Err(ModuleFault::Trap { message: "13 lots".into() });
        }
        self.0.apply(ctx, command, out)
    }
    fn query(&mut self, query: &MatchingQuery) -> Result<MatchingQueryResult, ModuleFault> {
        self.0.query(query)
    }
    fn snapshot(&mut self, out: &mut Vec<u8>) -> Result<(), ModuleFault> {
        self.0.snapshot(out)
    }
    fn state_version(&self) -> u32 {
        self.0.state_version()
    }
    fn image(&mut self) -> Result<InstanceImage, ModuleFault> {
        self.0.image()
    }
}

impl Books {
    fn pick(&self, hash: &ModuleHash) -> &dyn Loader<MatchingAbi> {
        if *hash == PRO_RATA { &self.pro_rata } else { &self.price_time }
    }
}

fn trapping(
    made: Result<Box<dyn Instance<MatchingAbi>>, LoadError>,
) -> Result<Box<dyn Instance<MatchingAbi>>, LoadError> {
    made.map(|inner| Box::new(TrapOn13(inner)) as Box<dyn Instance<MatchingAbi>>)
}

impl Loader<MatchingAbi> for Books {
    fn create(
        &self,
        target: ModuleTarget,
        hash: &ModuleHash,
        limits: &ModuleLimits,
        config: &MarketConfig,
    ) -> Result<Box<dyn Instance<MatchingAbi>>, LoadError> {
        trapping(self.pick(hash).create(target, hash, limits, config))
    }
    fn restore(
        &self,
        target: ModuleTarget,
        hash: &ModuleHash,
        limits: &ModuleLimits,
        state_version: u32,
        bytes: &[u8],
    ) -> Result<Box<dyn Instance<MatchingAbi>>, LoadError> {
        trapping(self.pick(hash).restore(target, hash, limits, state_version, bytes))
    }
    fn resume(
        &self,
        target: ModuleTarget,
        hash: &ModuleHash,
        limits: &ModuleLimits,
        image: &InstanceImage,
    ) -> Result<Box<dyn Instance<MatchingAbi>>, LoadError> {
        trapping(self.pick(hash).resume(target, hash, limits, image))
    }
}

impl Loader<PositionAbi> for Books {
    fn create(
        &self,
        target: ModuleTarget,
        hash: &ModuleHash,
        limits: &ModuleLimits,
        config: &PositionConfig,
    ) -> Result<Box<dyn Instance<PositionAbi>>, LoadError> {
        self.price_time.create(target, hash, limits, config)
    }
    fn restore(
        &self,
        target: ModuleTarget,
        hash: &ModuleHash,
        limits: &ModuleLimits,
        state_version: u32,
        bytes: &[u8],
    ) -> Result<Box<dyn Instance<PositionAbi>>, LoadError> {
        self.price_time.restore(target, hash, limits, state_version, bytes)
    }
    fn resume(
        &self,
        target: ModuleTarget,
        hash: &ModuleHash,
        limits: &ModuleLimits,
        image: &InstanceImage,
    ) -> Result<Box<dyn Instance<PositionAbi>>, LoadError> {
        self.price_time.resume(target, hash, limits, image)
    }
}

fn market_spec() -> MarketSpec {
    MarketSpec {
        symbol: "BTC-PERP".into(),
        base: "BTC".into(),
        quote: "USD".into(),
        quote_decimals: 6,
        price_scale: Scale { decimals: 1, step_units: 1 },
        qty_scale: Scale { decimals: 3, step_units: 1 },
        module_hash: PRICE_TIME,
        limits: ModuleLimits::default(),
        config: MarketConfig::default(),
        risk: RiskParams::default(),
    }
}

fn order(user: u64, side: Side, price_ticks: u64, qty_lots: u64) -> Command {
    Command::PlaceOrder(NewOrder {
        market: MarketId(0),
        user_id: UserId(user),
        client_order_id: None,
        side,
        order_type: OrderType::Limit,
        price_ticks,
        qty_lots,
        time_in_force: TimeInForce::Gtc,
        self_trade_prevention: SelfTradePrevention::CancelTaker,
        reduce_only: false,
    })
}

/// A market with three sellers resting 10, 10 and 40 lots at 1000, in that order.
fn resting_book(loader: &Arc<Books>) -> Engine {
    let mut engine = Engine::new(loader.clone());
    let mut commands = vec![Command::CreateMarket(market_spec())];
    for i in 0..4 {
        commands.push(Command::CreateUser { api_key: format!("k{i}"), api_secret: format!("s{i}") });
    }
    commands.extend([order(1, Side::Sell, 1000, 10), order(2, Side::Sell, 1000, 10), order(3, Side::Sell, 1000, 40)]);
    for (i, command) in commands.iter().enumerate() {
        let seq = i as u64 + 1;
        engine.apply(seq, seq * 1_000, command).unwrap();
    }
    engine
}

/// After the tap: a resting bid and a trapping order (both the same under
/// either rule), then a buy of 30 that takes 10/10/10 by time and 5/5/20 pro rata.
fn later_commands() -> Vec<Command> {
    vec![
        order(4, Side::Buy, 990, 5),
        order(4, Side::Buy, 995, 13),
        Command::CancelOrder { market: MarketId(0), user_id: UserId(4), order_id: OrderId(9) },
        order(4, Side::Buy, 1000, 30),
        order(4, Side::Buy, 990, 1),
    ]
}

/// What the engine's taps held, by market.
type Taps = Vec<(MarketId, Tap)>;

fn shadow_of(candidate: ModuleHash, batched: bool) -> (Shadow, Vec<Vec<EventBody>>, Taps) {
    let loader = Arc::new(Books::default());
    let mut engine = resting_book(&loader);
    let start = engine.tap_market(MarketId(0)).unwrap().unwrap();
    assert_eq!(start.from_seq, 9);
    assert_eq!(start.live_hash, PRICE_TIME);
    let mut shadow = Shadow::start(&*loader, &start, candidate).unwrap();
    let commands = later_commands();
    let events = if batched {
        let refs: Vec<(u64, &Command)> =
            commands.iter().enumerate().map(|(i, c)| ((9 + i as u64) * 1_000, c)).collect();
        engine.apply_batch(9, &refs).unwrap()
    } else {
        commands
            .iter()
            .enumerate()
            .map(|(i, c)| engine.apply(9 + i as u64, (9 + i as u64) * 1_000, c).unwrap())
            .collect()
    };
    let taps = engine.take_taps();
    assert!(engine.take_taps().is_empty(), "taking empties the tap");
    for (_, calls) in &taps {
        shadow.feed(&*loader, calls).unwrap();
    }
    (shadow, events, taps)
}

#[test]
fn the_tap_holds_exactly_what_the_book_did_one_by_one_and_batched() {
    for batched in [false, true] {
        let (_, events, taps) = shadow_of(PRICE_TIME_REBUILT, batched);
        assert_eq!(taps.len(), 1);
        let (market, calls) = &taps[0];
        assert_eq!(*market, MarketId(0));
        // The 13-lot order trapped: its command was rejected, its call undone, so not tapped.
        let trapped = events[1].iter().any(|event| {
            matches!(event, EventBody::Matching { event: MatchingEvent::Order(update), .. }
                if update.status == OrderStatus::Rejected && update.reason == Some(Reason::ModuleTrap))
        });
        assert!(trapped, "batched {batched}: {:?}", events[1]);
        assert_eq!(
            calls.calls().map(|(call, _)| call.ctx.seq).collect::<Vec<_>>(),
            vec![9, 11, 12, 13],
            "batched {batched}"
        );
        for (call, output) in calls.calls() {
            let book_events: Vec<MatchingEvent> = events[(call.ctx.seq - 9) as usize]
                .iter()
                .filter_map(|event| match event {
                    EventBody::Matching { event, .. } => Some(event.clone()),
                    _ => None,
                })
                .collect();
            assert_eq!(output, book_events, "seq {} batched {batched}", call.ctx.seq);
            assert_eq!(call.fuel_used, 0, "a native book is not metered");
        }
    }
}

#[test]
fn an_identical_rebuild_reports_no_divergence() {
    for batched in [false, true] {
        let (shadow, _, _) = shadow_of(PRICE_TIME_REBUILT, batched);
        let report = shadow.report();
        assert_eq!(report.candidate, PRICE_TIME_REBUILT);
        assert_eq!((report.from_seq, report.last_seq), (9, 13));
        assert_eq!((report.commands, report.divergences, report.faults), (4, 0, 0));
        assert_eq!(report.first_divergence, None);
    }
}

#[test]
fn pro_rata_beside_price_time_diverges_first_at_the_buy_that_meets_three_makers() {
    let (shadow, events, _) = shadow_of(PRO_RATA, false);
    let report = shadow.report();
    assert_eq!((report.commands, report.faults), (4, 0));
    let first = report.first_divergence.as_ref().expect("the rules differ");
    assert_eq!(first.seq, 12, "the 30-lot buy, not the commands before it");
    let fills = |events: &[MatchingEvent]| -> Vec<(OrderId, u64)> {
        events
            .iter()
            .filter_map(|event| match event {
                MatchingEvent::Trade(trade) => Some((trade.maker_order_id, trade.qty_lots)),
                _ => None,
            })
            .collect()
    };
    assert_eq!(fills(&first.live_events), vec![(OrderId(6), 10), (OrderId(7), 10), (OrderId(8), 10)]);
    assert_eq!(fills(&first.shadow_events), vec![(OrderId(6), 5), (OrderId(7), 5), (OrderId(8), 20)]);
    assert_eq!(first.shadow_fault, None);
    // The live events in the report are the ones the engine published.
    let published: Vec<MatchingEvent> = events[3]
        .iter()
        .filter_map(|event| match event {
            EventBody::Matching { event, .. } => Some(event.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(first.live_events, published);
    // The makers' remainders now differ (0/0/30 against 5/5/20), but the
    // resting 1-lot bid at 990 does the same in both: one divergence so far.
    assert_eq!(report.divergences, 1);
}

#[test]
fn a_candidate_fault_is_undone_counted_and_the_run_goes_on() {
    let loader = Arc::new(Books::default());
    let mut engine = resting_book(&loader);
    let start = engine.tap_market(MarketId(0)).unwrap().unwrap();
    let mut shadow = Shadow::start(&*loader, &start, PRICE_TIME_REBUILT).unwrap();
    // A call the live book applied that the candidate traps on: fed by hand,
    // as if only the candidate had the bug (it half-applies the bid first).
    let Command::PlaceOrder(bid) = order(4, Side::Buy, 995, 13) else { unreachable!() };
    let mut trap = Tap::default();
    trap.push(CommandContext { seq: 9, ts_ns: 9_000 }, MatchingCommand::Place(bid.to_matching(OrderId(9))), &[], 0);
    shadow.feed(&*loader, &trap).unwrap();
    // A sell at 995 rests in the live book; it would trade with the 13-lot
    // bid had the candidate kept what it half-applied.
    engine.apply(9, 9_000, &order(1, Side::Sell, 995, 5)).unwrap();
    let mut later = Tap::default();
    for (call, output) in engine.take_taps()[0].1.calls() {
        later.push(CommandContext { seq: 10, ..call.ctx }, call.command.clone(), output, call.fuel_used);
    }
    shadow.feed(&*loader, &later).unwrap();
    let report = shadow.report();
    assert_eq!((report.commands, report.divergences, report.faults), (2, 1, 1));
    let first = report.first_divergence.as_ref().unwrap();
    assert_eq!(first.seq, 9);
    assert!(first.shadow_fault.as_deref().is_some_and(|message| message.contains("13 lots")), "{first:?}");
    assert_eq!(report.last_fault.as_ref().map(|fault| fault.seq), Some(9));
}

#[test]
fn calls_undone_with_their_command_leave_the_tap() {
    let loader = Arc::new(Books::default());
    let mut engine = resting_book(&loader);
    // A bid good till ts 20_000: the book asks to be woken then.
    let Command::PlaceOrder(mut gtd) = order(4, Side::Buy, 990, 2) else { unreachable!() };
    gtd.time_in_force = TimeInForce::Gtd;
    let options = OrderOptions { display_lots: None, expire_time_ns: Some(20_000) };
    engine.apply(9, 9_000, &Command::PlaceOrderWith { order: gtd, options }).unwrap();
    engine.tap_market(MarketId(0)).unwrap().unwrap();
    // The first command after the expiry wakes the book (the bid expires),
    // then its own order traps: the whole command is undone, the wake with it.
    let rejected = engine.apply(10, 30_000, &order(4, Side::Buy, 995, 13)).unwrap();
    assert!(
        !rejected.iter().any(|event| matches!(event, EventBody::Matching { event: MatchingEvent::Order(update), .. }
        if update.status == OrderStatus::Cancelled && update.reason == Some(Reason::Expired))),
        "{rejected:?}"
    );
    assert!(engine.take_taps().is_empty(), "the wake call was undone with its command");
    // The next command wakes the book again, and that stands.
    engine.apply(11, 31_000, &order(4, Side::Buy, 980, 1)).unwrap();
    let taps = engine.take_taps();
    let calls: Vec<(&TappedCall, &[MatchingEvent])> = taps[0].1.calls().collect();
    assert_eq!(
        calls.iter().map(|(call, _)| (call.ctx.seq, call.command == MatchingCommand::Wake)).collect::<Vec<_>>(),
        vec![(11, true), (11, false)]
    );
    assert!(calls[0].1.iter().any(|event| matches!(event, MatchingEvent::Order(update) if update.status == OrderStatus::Cancelled && update.reason == Some(Reason::Expired))));
}

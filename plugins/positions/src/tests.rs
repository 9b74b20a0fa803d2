//! Scenario tests per rule, with the book's part played by hand-made events,
//! and a property test that checks the invariants after every step of random
//! flows with marks, liquidations, ADL and funding.

use exhost_guest_sdk::*;
use proptest::prelude::*;

use super::Positions;

const BTC: MarketId = MarketId(0);
/// tick 0.1 USD × lot 0.001 BTC = 0.0001 USD = 100 micro-dollars.
const K: u64 = 100;
const USD: i128 = 1_000_000;

fn risk() -> MarketRisk {
    MarketRisk {
        market: BTC,
        units_per_tick_lot: K,
        initial_margin_rate: 10_000_000,
        maintenance_margin_rate: 5_000_000,
        maker_fee_rate: 20_000,
        taker_fee_rate: 50_000,
        liquidation_fee_rate: 500_000,
        price_ticks_max: 1 << 40,
    }
}

struct Harness {
    module: Positions,
    seq: u64,
    next_trade: u64,
    next_order: u64,
}

impl Harness {
    fn new() -> Harness {
        let config =
            PositionConfig { settlement_asset: "USD".into(), follow_ups_per_command_max: 1000, params: vec![] };
        let mut h = Harness { module: Positions::init(&config).unwrap(), seq: 0, next_trade: 0, next_order: 0 };
        h.run(PositionCommand::AddMarket(risk()));
        h
    }

    /// A harness whose market has these tiers (standard funding terms).
    fn tiered(tiers: Vec<RiskTier>) -> Harness {
        let mut h = Harness::new();
        let out = h.run(PositionCommand::MarketTerms(MarketTerms { tiers, ..MarketTerms::standard(BTC) }));
        assert_eq!(out.rejection(), None);
        h
    }

    fn run(&mut self, command: PositionCommand) -> PositionOutput {
        let ts_ns = self.seq + 1;
        self.run_at(ts_ns, command)
    }

    fn run_at(&mut self, ts_ns: u64, command: PositionCommand) -> PositionOutput {
        self.seq += 1;
        let mut out = PositionOutput::default();
        self.module.apply(&CommandContext { seq: self.seq, ts_ns }, &command, &mut out);
        out
    }

    fn deposit(&mut self, user: u64, usd: i128) {
        self.run(PositionCommand::Deposit { user_id: Some(UserId(user)), amount_units: (usd * USD) as u64 });
    }

    /// A trade on the book: taker `taker` buys or sells `qty` lots at `price` ticks from `maker`.
    fn trade(&mut self, taker: u64, maker: u64, taker_side: Side, qty: u64, price: u64) -> PositionOutput {
        self.next_trade += 1;
        self.next_order += 2;
        let trade = Trade {
            trade_id: TradeId(self.next_trade),
            price_ticks: price,
            qty_lots: qty,
            taker_side,
            maker_order_id: OrderId(self.next_order),
            maker_user_id: UserId(maker),
            taker_order_id: OrderId(self.next_order + 1),
            taker_user_id: UserId(taker),
        };
        let out = self.run(PositionCommand::Settle { market: BTC, events: vec![MatchingEvent::Trade(trade)] });
        self.module.check_invariants().unwrap();
        out
    }

    fn account(&self, user: u64) -> AccountState {
        match self.module.query(&PositionQuery::Account { user_id: UserId(user) }) {
            PositionQueryResult::Account(Some(state)) => state,
            other => panic!("no account {user}: {other:?}"),
        }
    }

    fn size(&self, user: u64) -> i64 {
        self.account(user).positions.iter().find(|p| p.market == BTC).map_or(0, |p| p.size_lots)
    }

    /// Play the book for follow-ups: cancels cancel nothing, liquidation orders
    /// fill `fill_lots` against `maker` at their limit price, the rest is cancelled.
    /// Follow-ups of the answers are carried out in turn, like the engine does.
    fn book_answers(&mut self, follow_ups: Vec<FollowUp>, maker: u64, fill_lots: u64) -> Vec<PositionOutput> {
        self.book_answers_at(follow_ups, maker, fill_lots, None)
    }

    /// Like `book_answers`, the fills at `fill_price` (a bid better than the
    /// order's limit) when given.
    fn book_answers_at(
        &mut self,
        follow_ups: Vec<FollowUp>,
        maker: u64,
        fill_lots: u64,
        fill_price: Option<u64>,
    ) -> Vec<PositionOutput> {
        let mut outputs = Vec::new();
        let mut queue: std::collections::VecDeque<FollowUp> = follow_ups.into();
        while let Some(follow_up) = queue.pop_front() {
            if let FollowUp::LiquidationOrder { order_id, user_id, side, qty_lots, price_ticks, .. } = follow_up {
                let mut events = Vec::new();
                let filled = fill_lots.min(qty_lots);
                if filled > 0 {
                    self.next_trade += 1;
                    events.push(MatchingEvent::Trade(Trade {
                        trade_id: TradeId(self.next_trade),
                        price_ticks: fill_price.unwrap_or(price_ticks),
                        qty_lots: filled,
                        taker_side: side,
                        maker_order_id: OrderId(999_999),
                        maker_user_id: UserId(maker),
                        taker_order_id: order_id,
                        taker_user_id: user_id,
                    }));
                }
                events.push(MatchingEvent::Order(OrderUpdate {
                    order_id,
                    user_id,
                    side,
                    price_ticks,
                    qty_lots,
                    filled_lots: filled,
                    status: if filled == qty_lots { OrderStatus::Filled } else { OrderStatus::Cancelled },
                    reason: None,
                }));
                let out = self.run(PositionCommand::Settle { market: BTC, events });
                queue.extend(out.follow_ups.iter().cloned());
                outputs.push(out);
            }
        }
        self.module.check_invariants().unwrap();
        outputs
    }
}

fn events_of<T>(out: &PositionOutput, pick: impl Fn(&PositionEvent) -> Option<T>) -> Vec<T> {
    out.events.iter().filter_map(pick).collect()
}

#[test]
fn deposits_withdrawals_and_the_ledger() {
    let mut h = Harness::new();
    h.deposit(1, 1_000);
    let out = h.run(PositionCommand::Withdraw { user_id: UserId(1), amount_units: (2_000 * USD) as u64 });
    assert_eq!(out.rejection(), Some(Reason::InsufficientMargin));
    let out = h.run(PositionCommand::Withdraw { user_id: UserId(1), amount_units: (400 * USD) as u64 });
    assert_eq!(out.rejection(), None);
    assert_eq!(h.account(1).balance_units, 600 * USD);
    let ledger = h.module.ledger();
    assert_eq!(
        (ledger.deposits_units, ledger.withdrawals_units, ledger.user_balances_units),
        (1_000 * USD, 400 * USD, 600 * USD)
    );
    h.module.check_invariants().unwrap();
}

#[test]
fn fills_move_positions_fees_and_realized_pnl_exactly() {
    let mut h = Harness::new();
    h.deposit(1, 10_000);
    h.deposit(2, 10_000);
    // User 1 buys 1 BTC (1000 lots) at 27,000.0 (270,000 ticks) from maker 2.
    h.trade(1, 2, Side::Buy, 1_000, 270_000);
    let notional = 27_000 * USD;
    let (taker_fee, maker_fee) = (notional * 5 / 10_000, notional * 2 / 10_000);
    assert_eq!(h.account(1).balance_units, 10_000 * USD - taker_fee);
    assert_eq!(h.account(2).balance_units, 10_000 * USD - maker_fee);
    assert_eq!((h.size(1), h.size(2)), (1_000, -1_000));
    // Half closed at 28,000: +500 USD realized for 1, -500 for 2.
    h.trade(1, 2, Side::Sell, 500, 280_000);
    let a1 = h.account(1);
    let p1 = &a1.positions[0];
    assert_eq!(p1.realized_pnl_units, 500 * USD);
    assert_eq!(p1.entry_price_ticks, 270_000);
    // Mark is 27,000 (the first trade); upnl of the remaining 0.5 BTC is 0.
    assert_eq!(p1.unrealized_pnl_units, 0);
    assert_eq!(h.account(2).positions[0].realized_pnl_units, -500 * USD);
    // Flip through zero: user 1 sells 1.5 BTC, ends short 1 BTC at 26,000.
    h.trade(1, 2, Side::Sell, 1_500, 260_000);
    assert_eq!((h.size(1), h.size(2)), (-1_000, 1_000));
    assert_eq!(h.account(1).positions[0].entry_price_ticks, 260_000);
    assert_eq!(h.account(1).positions[0].realized_pnl_units, 500 * USD - 500 * USD);
    assert!(h.module.ledger().fees_units > 0);
}

#[test]
fn pre_trade_checks_margin_and_reduce_only() {
    let mut h = Harness::new();
    h.deposit(1, 1_000);
    let intent = |qty: u64, reduce_only: bool, side: Side, order_type: OrderType| {
        PositionCommand::CheckOrder(OrderIntent {
            market: BTC,
            order_id: OrderId(1),
            user_id: UserId(1),
            side,
            order_type,
            price_ticks: 270_000,
            qty_lots: qty,
            reduce_only,
        })
    };
    // 10% initial margin: 1,000 USD carries 10,000 USD of notional = 0.370 BTC at 27,000.
    assert_eq!(h.run(intent(370, false, Side::Buy, OrderType::Limit)).rejection(), None);
    assert_eq!(h.run(intent(371, false, Side::Buy, OrderType::Limit)).rejection(), Some(Reason::InsufficientMargin));
    assert_eq!(h.run(intent(1, true, Side::Sell, OrderType::Limit)).rejection(), Some(Reason::ReduceOnlyViolation));
    assert_eq!(h.run(intent(1, false, Side::Buy, OrderType::Market)).rejection(), Some(Reason::NoMarkPrice));
    // A resting order uses margin too.
    h.run(PositionCommand::Settle {
        market: BTC,
        events: vec![MatchingEvent::Order(OrderUpdate {
            order_id: OrderId(7),
            user_id: UserId(1),
            side: Side::Buy,
            price_ticks: 270_000,
            qty_lots: 300,
            filled_lots: 0,
            status: OrderStatus::New,
            reason: None,
        })],
    });
    assert_eq!(h.run(intent(71, false, Side::Buy, OrderType::Limit)).rejection(), Some(Reason::InsufficientMargin));
    assert_eq!(h.account(1).initial_margin_units, 810 * USD);
}

#[test]
fn liquidation_through_the_book_then_adl_and_the_fee_to_the_fund() {
    let mut h = Harness::new();
    h.deposit(1, 3_000); // the victim: long 1 BTC at 27,000 with 3,000 USD
    h.deposit(2, 50_000); // short against 1
    h.deposit(3, 50_000); // a second short, less profitable
    h.deposit(4, 50_000); // the book's buyer
    h.trade(1, 2, Side::Buy, 600, 270_000);
    h.trade(1, 3, Side::Buy, 400, 270_000);
    // Mark 25,000: equity about 3,000 - 2,000 - fees = ~986; maintenance 5% of 25,000 = 1,250.
    let out = h.run(PositionCommand::MarkPrice { market: BTC, price_ticks: 250_000 });
    assert!(events_of(&out, |e| matches!(e, PositionEvent::LiquidationStarted { .. }).then_some(())).len() == 1);
    let bankruptcy = events_of(&out, |e| match e {
        PositionEvent::LiquidationOrder { bankruptcy_price_ticks, qty_lots, side, .. } => {
            Some((*bankruptcy_price_ticks, *qty_lots, *side))
        }
        _ => None,
    });
    let (bankruptcy, qty, side) = bankruptcy[0];
    assert_eq!((qty, side), (1_000, Side::Sell));
    assert!(bankruptcy < 250_000 && bankruptcy > 240_000, "bankruptcy price {bankruptcy}");
    // The book takes 0.3 BTC at the bankruptcy price; 0.7 BTC is deleveraged.
    let outputs = h.book_answers(out.follow_ups, 4, 300);
    let adl = events_of(&outputs[0], |e| match e {
        PositionEvent::AutoDeleverage { counterparty_user_id, qty_lots, price_ticks, .. } => {
            Some((counterparty_user_id.0, *qty_lots, *price_ticks))
        }
        _ => None,
    });
    // Users 2 and 3 are equally profitable per unit; 2 is more leveraged (larger
    // position, same equity), so 2 goes first and absorbs all 0.6 BTC it has.
    assert_eq!(adl, vec![(2, 600, 250_000), (3, 100, 250_000)]);
    assert_eq!((h.size(1), h.size(2), h.size(3), h.size(4)), (0, 0, -300, 300));
    // The fund took the liquidation fee out of what was left.
    let fund = h.module.ledger().insurance_fund_units;
    assert!(fund > 0, "fund {fund}");
    assert_eq!(fund, (25_000 * USD) * 5 / 1_000);
    h.module.check_invariants().unwrap();
}

#[test]
fn an_insolvent_account_is_covered_by_the_fund_then_socialised() {
    let mut h = Harness::new();
    h.run(PositionCommand::Deposit { user_id: None, amount_units: (100 * USD) as u64 });
    h.deposit(1, 3_000);
    h.deposit(2, 50_000);
    h.trade(1, 2, Side::Buy, 1_000, 270_000);
    // A gap to 20,000: equity 3,000 - 7,000 = -4,000 (minus fees). The fund has 100.
    let out = h.run(PositionCommand::MarkPrice { market: BTC, price_ticks: 200_000 });
    let outputs = h.book_answers(out.follow_ups, 4, 0);
    let adl = events_of(&outputs[0], |e| match e {
        PositionEvent::AutoDeleverage { price_ticks, .. } => Some(*price_ticks),
        _ => None,
    });
    // Closed above the mark: the counterparty bears what the fund could not.
    assert!(adl[0] > 200_000, "{adl:?}");
    let ledger = h.module.ledger().clone();
    assert_eq!(ledger.insurance_fund_units, 0, "the fund paid all it had");
    assert_eq!(h.account(1).balance_units, 0, "the liquidated account ends at zero");
    h.module.check_invariants().unwrap();
}

#[test]
fn funding_is_one_index_move_settled_by_each_position_with_the_rounding_to_the_fund() {
    let mut h = Harness::new();
    h.deposit(1, 10_000);
    h.deposit(2, 10_000);
    h.deposit(3, 10_000);
    h.trade(1, 2, Side::Buy, 3, 270_001);
    h.trade(3, 2, Side::Buy, 7, 270_001);
    let before: Vec<AccountState> = (1..=3).map(|u| h.account(u)).collect();
    // 0.01% at mark 27,000.1: the index moves by 270,001 × 100 × 10,000 per lot.
    let out = h.run(PositionCommand::Funding { market: BTC, rate: 10_000 });
    let delta = 270_001 * 100 * 10_000;
    assert_eq!(
        out.events,
        vec![PositionEvent::FundingIndex {
            market: BTC,
            rate: 10_000,
            mark_price_ticks: 270_001,
            index_delta: delta,
            index: delta
        }],
        "one event, whoever holds"
    );
    h.module.check_invariants().unwrap();
    // Nobody's balance moved; what each owes shows at once: longs 1 (3 lots)
    // and 3 (7 lots) owe 8,100.03 and 18,900.07 USD-units, paid rounded up;
    // the short (10 lots) is owed 27,000.1, received rounded down.
    let owed = [-8_101, 27_000, -18_901];
    for user in 1..=3u64 {
        let (now, then) = (h.account(user), &before[user as usize - 1]);
        assert_eq!(now.balance_units, then.balance_units);
        assert_eq!(now.equity_units - then.equity_units, owed[user as usize - 1], "user {user}");
    }
    // Each settles when its account next changes (a withdrawal here); the
    // receiver first, so the fund takes the rounding as the payers settle: 1 each.
    let mut fund = Vec::new();
    for user in [2u64, 1, 3] {
        let out = h.run(PositionCommand::Withdraw { user_id: UserId(user), amount_units: 1 });
        let settled = events_of(&out, |e| match e {
            PositionEvent::FundingSettled { amount_units, index, .. } => Some((*amount_units, *index)),
            _ => None,
        });
        assert_eq!(settled, vec![(owed[user as usize - 1], delta)], "user {user}");
        assert_eq!(
            h.account(user).balance_units,
            before[user as usize - 1].balance_units + owed[user as usize - 1] - 1
        );
        h.module.check_invariants().unwrap();
        fund.push(h.module.ledger().insurance_fund_units);
    }
    assert_eq!(fund, vec![0, 1, 2]);
    // Settled: a second withdrawal settles nothing more.
    let out = h.run(PositionCommand::Withdraw { user_id: UserId(1), amount_units: 1 });
    assert!(events_of(&out, |e| matches!(e, PositionEvent::FundingSettled { .. }).then_some(())).is_empty());
}

#[test]
fn a_mark_move_finds_the_accounts_below_maintenance_without_visiting_the_others() {
    let mut h = Harness::new();
    h.deposit(1, 3_000);
    h.deposit(2, 100_000);
    for user in 10..=40 {
        h.deposit(user, 30_000);
    }
    // User 1: long 1 BTC at 27,000 with 2,986.5 USD after the fee; liquidated
    // below 25,277.4 (2,986.5 − 27,000 + m = 0.05 m). Thirty others hold
    // 1 BTC long each against user 2, with ten times the margin.
    h.trade(1, 2, Side::Buy, 1_000, 270_000);
    for user in 10..=40 {
        h.trade(user, 2, Side::Buy, 1_000, 270_000);
    }
    let due = |h: &Harness, mark| {
        let mut probe = h.module.clone();
        probe.markets.get_mut(&BTC).unwrap().mark_ticks = Some(mark);
        probe.due(BTC)
    };
    assert_eq!(due(&h, 265_000), Vec::<UserId>::new(), "a small move is due for nobody");
    assert_eq!(due(&h, 252_775), Vec::<UserId>::new(), "healthy at 25,277.5");
    assert_eq!(due(&h, 252_773), vec![UserId(1)], "below 25,277.4, user 1 alone");
    // A move that liquidates nobody emits the mark and nothing else.
    let out = h.run(PositionCommand::MarkPrice { market: BTC, price_ticks: 260_000 });
    assert_eq!(out.events, vec![PositionEvent::MarkPrice { market: BTC, price_ticks: 260_000 }]);
    assert!(out.follow_ups.is_empty());
    // Funding at 0.75% makes every long owe 202.5 USD without anyone being
    // visited: user 1 is now liquidated below 25,490.5, and is due there.
    h.run(PositionCommand::MarkPrice { market: BTC, price_ticks: 270_000 });
    h.run(PositionCommand::Funding { market: BTC, rate: 750_000 });
    h.module.check_invariants().unwrap();
    assert!(due(&h, 254_000).contains(&UserId(1)), "funding brought user 1's check price up");
    // 25,400: equity 2,986.5 − 202.5 − 1,600 = 1,184 < maintenance 1,270.
    let out = h.run(PositionCommand::MarkPrice { market: BTC, price_ticks: 254_000 });
    let started = events_of(&out, |e| match e {
        PositionEvent::LiquidationStarted { user_id, equity_units, maintenance_margin_units } => {
            Some((user_id.0, *equity_units, *maintenance_margin_units))
        }
        _ => None,
    });
    assert_eq!(started, vec![(1, 1_184 * USD, 1_270 * USD)]);
    // It settles its funding first.
    assert!(out.events.contains(&PositionEvent::FundingSettled {
        user_id: UserId(1),
        market: BTC,
        index: 270_000 * 100 * 750_000,
        amount_units: -202_500_000,
    }));
}

/// 1% / 2% up to 50,000 USD, 2.5% / 5% up to 250,000, 5% / 10% above
/// (maintenance / initial).
fn three_tiers() -> Vec<RiskTier> {
    let tier = |usd: u128, maintenance, initial| RiskTier {
        notional_max_units: usd * USD as u128,
        initial_margin_rate: initial,
        maintenance_margin_rate: maintenance,
    };
    vec![
        tier(50_000, 1_000_000, 2_000_000),
        tier(250_000, 2_500_000, 5_000_000),
        tier(1_000_000, 5_000_000, 10_000_000),
    ]
}

fn liquidation_orders(outputs: &[&PositionOutput]) -> Vec<u64> {
    outputs
        .iter()
        .flat_map(|out| out.events.iter())
        .filter_map(|e| match e {
            PositionEvent::LiquidationOrder { qty_lots, .. } => Some(*qty_lots),
            _ => None,
        })
        .collect()
}

#[test]
fn tier_two_margins_by_hand() {
    let mut h = Harness::tiered(three_tiers());
    h.deposit(1, 10_000);
    h.deposit(2, 50_000);
    // Long 4 BTC at 27,000: 108,000 USD, in tier 2.
    h.trade(1, 2, Side::Buy, 4_000, 270_000);
    let account = h.account(1);
    // Maintenance 108,000 × 2.5% − 50,000 × (2.5% − 1%) = 2,700 − 750 = 1,950.
    assert_eq!(account.maintenance_margin_units, 1_950 * USD);
    // Initial 108,000 × 5% − 50,000 × (5% − 2%) = 5,400 − 1,500 = 3,900.
    assert_eq!(account.initial_margin_units, 3_900 * USD);
    // The flat 5% / 10% market would ask 5,400 and 10,800 of the same position.
    let mut flat = Harness::new();
    flat.deposit(1, 10_000);
    flat.deposit(2, 50_000);
    flat.trade(1, 2, Side::Buy, 4_000, 270_000);
    assert_eq!(flat.account(1).maintenance_margin_units, 5_400 * USD);
    // The liquidation price uses the tier: at it the account still holds, one tick below it does not.
    let price = account.positions[0].liquidation_price_ticks.expect("a long has one");
    // Equity 9,946 + 4 × (P − 27,000) = maintenance 4 × P × 2.5% − 750 at
    // P = 97,304 / 3.9 = 24,949.74..., rounded up to the tick: 24,949.8.
    assert_eq!(price, 249_498);
    assert!(h.run(PositionCommand::MarkPrice { market: BTC, price_ticks: price }).follow_ups.is_empty());
    let out = h.run(PositionCommand::MarkPrice { market: BTC, price_ticks: price - 1 });
    assert!(out.events.iter().any(|e| matches!(e, PositionEvent::LiquidationStarted { .. })));
}

#[test]
fn partial_liquidation_stops_once_the_account_is_healthy() {
    let mut h = Harness::tiered(three_tiers());
    h.deposit(1, 15_835);
    h.deposit(2, 100_000);
    h.deposit(4, 100_000);
    // Long 10 BTC at 27,000 (270,000 USD, tier 3); the taker fee is 135: balance 15,700.
    h.trade(1, 2, Side::Buy, 10_000, 270_000);
    // Mark 26,000: equity 15,700 − 10,000 = 5,700; maintenance 260,000 × 5% − 7,000 = 6,000.
    let out = h.run(PositionCommand::MarkPrice { market: BTC, price_ticks: 260_000 });
    let started: Vec<(i128, i128)> = events_of(&out, |e| match e {
        PositionEvent::LiquidationStarted { equity_units, maintenance_margin_units, .. } => {
            Some((*equity_units, *maintenance_margin_units))
        }
        _ => None,
    });
    assert_eq!(started, vec![(5_700 * USD, 6_000 * USD)]);
    // Down to tier 2's bound at the mark: keep floor(250,000 / 26) = 9,615 lots, sell 385.
    assert_eq!(liquidation_orders(&[&out]), vec![385]);
    let outputs = h.book_answers_at(out.follow_ups, 4, u64::MAX, Some(260_000));
    // Sold at the mark: equity 5,700 − 5.005 fee; maintenance 249,990 × 2.5% − 750 = 5,499.75: healthy, no more orders.
    assert_eq!(liquidation_orders(&outputs.iter().collect::<Vec<_>>()), Vec::<u64>::new());
    assert_eq!(h.size(1), 9_615);
    let account = h.account(1);
    assert_eq!(account.maintenance_margin_units, 5_499_750_000);
    // The fund takes the step's fee, 0.5% of 10,010 = 50.05 USD.
    assert_eq!(h.module.ledger().insurance_fund_units, 50_050_000);
    assert_eq!(account.equity_units, 5_700 * USD - 5_005_000 - 50_050_000);
    assert!(account.equity_units >= account.maintenance_margin_units);
}

#[test]
fn full_liquidation_when_the_steps_are_not_enough() {
    let mut h = Harness::tiered(three_tiers());
    h.deposit(1, 10_500);
    h.deposit(2, 100_000);
    h.deposit(4, 100_000);
    h.trade(1, 2, Side::Buy, 10_000, 270_000);
    // Mark 26,000: equity 365. Tier 3 to 2 (385 lots), tier 2 to 1 (keep
    // floor(50,000 / 26) = 1,923, sell 7,692): equity ≈ 260 is still below
    // 1,923 × 26 × 1% ≈ 500, so the rest, 1,923 lots, is closed in full.
    let out = h.run(PositionCommand::MarkPrice { market: BTC, price_ticks: 260_000 });
    let outputs = h.book_answers_at(out.follow_ups.clone(), 4, u64::MAX, Some(260_000));
    let mut all = vec![&out];
    all.extend(outputs.iter());
    assert_eq!(liquidation_orders(&all), vec![385, 7_692, 1_923]);
    assert_eq!((h.size(1), h.size(4)), (0, 10_000));
    // Closed out: the fund takes the fee out of what was left, all of it here.
    assert_eq!(h.account(1).balance_units, 0);
    assert!(h.module.ledger().insurance_fund_units > 0);

    // A step the book cannot take ends the stepping at once: full close and deleveraging.
    let mut h = Harness::tiered(three_tiers());
    h.deposit(1, 15_835);
    h.deposit(2, 100_000);
    h.trade(1, 2, Side::Buy, 10_000, 270_000);
    let out = h.run(PositionCommand::MarkPrice { market: BTC, price_ticks: 260_000 });
    let outputs = h.book_answers_at(out.follow_ups.clone(), 4, 0, None);
    let mut all = vec![&out];
    all.extend(outputs.iter());
    assert_eq!(liquidation_orders(&all), vec![385, 10_000]);
    let adl = events_of(outputs.last().unwrap(), |e| match e {
        PositionEvent::AutoDeleverage { qty_lots, .. } => Some(*qty_lots),
        _ => None,
    });
    assert_eq!((adl, h.size(1), h.size(2)), (vec![10_000], 0, 0));
}

fn index(h: &mut Harness, ts_ns: u64, index_ticks: u64, mid_ticks: Option<u64>) -> (Option<i64>, u64) {
    let out = h.run_at(ts_ns, PositionCommand::IndexPrice { market: BTC, index_ticks, mid_ticks });
    h.module.check_invariants().unwrap();
    let found = events_of(&out, |e| match e {
        PositionEvent::IndexPrice { premium_rate, mark_price_ticks, .. } => Some((*premium_rate, *mark_price_ticks)),
        _ => None,
    });
    assert_eq!(found.len(), 1, "{out:?}");
    found[0]
}

fn funding_rate(out: &PositionOutput) -> i64 {
    let rates = events_of(out, |e| match e {
        PositionEvent::FundingIndex { rate, .. } => Some(*rate),
        _ => None,
    });
    assert_eq!(rates.len(), 1, "{out:?}");
    rates[0]
}

#[test]
fn funding_from_a_known_premium_series() {
    let mut h = Harness::new();
    h.deposit(1, 10_000);
    h.deposit(2, 10_000);
    // Premiums (mid − index) / index: +0.5%, +0.1%, 0, and a sample with no mid (not counted).
    assert_eq!(index(&mut h, 1, 270_000, Some(271_350)).0, Some(500_000));
    assert_eq!(index(&mut h, 2, 270_000, Some(270_270)).0, Some(100_000));
    assert_eq!(index(&mut h, 3, 270_000, Some(270_000)).0, Some(0));
    assert_eq!(index(&mut h, 4, 270_000, None).0, None);
    h.trade(1, 2, Side::Buy, 1_000, 270_000);
    let before = h.account(1);
    // Average 0.2%; 0.2% + clamp(0.01% − 0.2%, ±0.05%) = 0.15%.
    let out = h.run(PositionCommand::PremiumFunding { market: BTC });
    assert_eq!(funding_rate(&out), 150_000);
    // Owed by the long at the mark: 27,000 × 0.15% = 40.5 USD, shown at once
    // and paid from the balance when the account next changes.
    assert_eq!(before.equity_units - h.account(1).equity_units, 40_500_000);
    h.run(PositionCommand::Withdraw { user_id: UserId(1), amount_units: 0 });
    assert_eq!(before.balance_units - h.account(1).balance_units, 40_500_000);
    // Sampled afresh: no premium since, so the interest alone.
    assert_eq!(funding_rate(&h.run(PositionCommand::PremiumFunding { market: BTC })), 10_000);
    // A small premium (within 0.05% of the interest) gives the interest; a
    // large negative one is capped at the market's cap.
    index(&mut h, 5, 270_000, Some(270_027));
    assert_eq!(funding_rate(&h.run(PositionCommand::PremiumFunding { market: BTC })), 10_000);
    h.run(PositionCommand::MarketTerms(MarketTerms { funding_rate_cap: 300_000, ..MarketTerms::standard(BTC) }));
    index(&mut h, 6, 270_000, Some(267_300));
    assert_eq!(funding_rate(&h.run(PositionCommand::PremiumFunding { market: BTC })), -300_000);
    // An explicit rate (the operator's override) still works, and restarts the sampling too.
    index(&mut h, 7, 270_000, Some(271_350));
    assert_eq!(funding_rate(&h.run(PositionCommand::Funding { market: BTC, rate: -2_000 })), -2_000);
    assert_eq!(funding_rate(&h.run(PositionCommand::PremiumFunding { market: BTC })), 10_000);
}

#[test]
fn the_mark_is_the_median_of_three_prices_from_the_index() {
    let mut h = Harness::new();
    h.deposit(1, 10_000);
    h.deposit(2, 10_000);
    // No trade, no funding yet: (index, index + basis 1,350, index) -> the index.
    assert_eq!(index(&mut h, 1, 270_000, Some(271_350)).1, 270_000);
    // A last trade at 27,200.0: median(27,000.0, 27,135.0, 27,200.0).
    h.trade(1, 2, Side::Buy, 10, 272_000);
    assert_eq!(index(&mut h, 2, 270_000, Some(271_350)).1, 271_350);
    // The basis average moves with the samples: (1,350 + 1,350 + 0) / 3 = 900.
    assert_eq!(index(&mut h, 3, 270_000, Some(270_000)).1, 270_900);
    // After a funding of 0.15%, half an interval before the next one, price 1
    // is 270,000 × (1 + 0.0015 × 0.5) = 270,202.5, floored; the basis average
    // (675) gives 270,675, the last trade 272,000: the median is 270,675.
    h.run(PositionCommand::Funding { market: BTC, rate: 150_000 });
    let half = 4 * 3_600 * 1_000_000_000;
    assert_eq!(index(&mut h, half, 270_000, Some(270_000)).1, 270_675);
    // With the trade below, price 1 is the median.
    h.trade(1, 2, Side::Sell, 10, 269_000);
    let (_, mark) = index(&mut h, half, 270_000, Some(270_000));
    assert_eq!(mark, 270_202);
    // And it moved the mark like the mark-price command does.
    assert_eq!(h.account(1).positions[0].mark_price_ticks, 0, "flat now");
    assert_eq!(h.module.markets[&BTC].mark_ticks, Some(270_202));
    // The operator's mark still overrides until the next index.
    h.run(PositionCommand::MarkPrice { market: BTC, price_ticks: 280_000 });
    assert_eq!(h.module.markets[&BTC].mark_ticks, Some(280_000));
    let bad = h.run(PositionCommand::IndexPrice { market: BTC, index_ticks: 0, mid_ticks: None });
    assert_eq!(bad.rejection(), Some(Reason::InvalidPrice));
}

#[test]
fn a_version_1_snapshot_migrates() {
    let mut h = Harness::new();
    h.deposit(1, 10_000);
    h.deposit(2, 10_000);
    h.trade(1, 2, Side::Buy, 123, 270_005);
    h.run(PositionCommand::MarkPrice { market: BTC, price_ticks: 271_000 });
    // Version 1 is today's layout without the new market fields and liquidation flag.
    let mut bytes = Vec::new();
    exhost_guest_sdk::codec::encode_into(&super::v1::tests::as_v1(&h.module), &mut bytes);
    let migrated = Positions::migrate(1, &bytes).unwrap();
    // Version 1 did not keep the last trade: the index stands in for it until
    // the next one. The migration indexes every account at the marks of the snapshot.
    let mut expected = h.module.clone();
    expected.markets.get_mut(&BTC).unwrap().last_trade_ticks = None;
    expected.watch_everyone();
    assert_eq!(migrated, expected);
    assert!(Positions::migrate(1, &bytes[..bytes.len() - 3]).is_err());
    assert!(Positions::migrate(7, &bytes).is_err());
}

#[test]
fn a_version_2_snapshot_migrates() {
    let mut h = Harness::tiered(three_tiers());
    h.deposit(1, 10_000);
    h.deposit(2, 10_000);
    h.trade(1, 2, Side::Buy, 123, 270_005);
    index(&mut h, 5, 271_000, Some(271_500));
    let mut bytes = Vec::new();
    exhost_guest_sdk::codec::encode_into(&super::v2::tests::as_v2(&h.module), &mut bytes);
    let migrated = Positions::migrate(2, &bytes).unwrap();
    let mut expected = h.module.clone();
    expected.watch_everyone();
    assert_eq!(migrated, expected);
    migrated.check_invariants().unwrap();
    assert!(Positions::migrate(2, &bytes[..bytes.len() - 3]).is_err());
}

#[test]
fn snapshot_round_trips() {
    let mut h = Harness::new();
    h.deposit(1, 10_000);
    h.deposit(2, 10_000);
    h.trade(1, 2, Side::Buy, 123, 270_005);
    let mut bytes = Vec::new();
    h.module.snapshot(&mut bytes);
    let restored = Positions::restore(&bytes).unwrap();
    assert_eq!(restored, h.module);
    assert!(Positions::restore(&bytes[..bytes.len() - 2]).is_err());
}

#[derive(Clone, Debug)]
enum Step {
    Trade { taker: u64, maker: u64, buy: bool, qty: u64, price: u64 },
    Mark { price: u64 },
    Funding { rate: i64 },
    Withdraw { user: u64, usd: u64 },
    Index { price: u64, mid: Option<u64> },
    PremiumFunding,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (1u64..=5, 1u64..=5, any::<bool>(), 1u64..=400, 240_000u64..=300_000)
            .prop_filter("two users", |(a, b, ..)| a != b)
            .prop_map(|(taker, maker, buy, qty, price)| Step::Trade { taker, maker, buy, qty, price }),
        2 => (200_000u64..=340_000).prop_map(|price| Step::Mark { price }),
        1 => (-50_000i64..=50_000).prop_map(|rate| Step::Funding { rate }),
        1 => (1u64..=5, 1u64..=3_000).prop_map(|(user, usd)| Step::Withdraw { user, usd }),
        2 => (200_000u64..=340_000, proptest::option::of(-5_000i64..=5_000))
            .prop_map(|(price, basis)| Step::Index { price, mid: basis.map(|b| (price as i64 + b) as u64) }),
        1 => Just(Step::PremiumFunding),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Sizes sum to zero, the books balance to the unit, no liquidation
    /// outlives its command, and nobody is left below maintenance margin after
    /// a mark update (a liquidation ends healthy or flat), over random flows
    /// including partial and full liquidations, ADL, index marks and funding,
    /// on a flat market and on a tiered one.
    #[test]
    fn invariants_hold_at_every_step(
        steps in proptest::collection::vec(step(), 1..120),
        fills in 0u64..300,
        tiered in any::<bool>(),
    ) {
        // Small tiers, so these positions cross them: 1% / 2% to 2,000 USD, 2.5% / 5% to 8,000, 5% / 10% above.
        let tier = |usd: u128, maintenance, initial| RiskTier {
            notional_max_units: usd * USD as u128,
            initial_margin_rate: initial,
            maintenance_margin_rate: maintenance,
        };
        let mut h = if tiered {
            Harness::tiered(vec![tier(2_000, 1_000_000, 2_000_000), tier(8_000, 2_500_000, 5_000_000), tier(20_000, 5_000_000, 10_000_000)])
        } else {
            Harness::new()
        };
        h.run(PositionCommand::Deposit { user_id: None, amount_units: (500 * USD) as u64 });
        for user in 1..=5 {
            h.deposit(user, 2_000 + 1_000 * user as i128);
        }
        for step in steps {
            match step {
                Step::Trade { taker, maker, buy, qty, price } => {
                    h.trade(taker, maker, if buy { Side::Buy } else { Side::Sell }, qty, price);
                }
                Step::Mark { .. } | Step::Index { .. } => {
                    let command = match step {
                        Step::Mark { price } => PositionCommand::MarkPrice { market: BTC, price_ticks: price },
                        Step::Index { price, mid } => PositionCommand::IndexPrice { market: BTC, index_ticks: price, mid_ticks: mid },
                        _ => unreachable!(),
                    };
                    let out = h.run(command);
                    // Liquidation orders fill partly against user 6, who has no position to start with.
                    let outputs = h.book_answers(out.follow_ups.clone(), 6, fills);
                    let victims: Vec<u64> = std::iter::once(&out).chain(outputs.iter()).flat_map(|o| o.events.iter()).filter_map(|e| match e {
                        PositionEvent::LiquidationStarted { user_id, .. } => Some(user_id.0),
                        _ => None,
                    }).collect();
                    // The index found everyone a full scan would: nobody
                    // holding a position is left below maintenance, and
                    // nobody was liquidated who was not below it.
                    for user in 1..=6 {
                        if let PositionQueryResult::Account(Some(account)) = h.module.query(&PositionQuery::Account { user_id: UserId(user) })
                        {
                            let holds = account.positions.iter().any(|p| p.size_lots != 0);
                            prop_assert!(!holds || account.equity_units >= account.maintenance_margin_units, "user {} missed below maintenance: {:?}", user, account);
                        }
                    }
                    let started: Vec<(u64, bool)> = std::iter::once(&out).chain(outputs.iter()).flat_map(|o| o.events.iter()).filter_map(|e| match e {
                        PositionEvent::LiquidationStarted { user_id, equity_units, maintenance_margin_units } => Some((user_id.0, equity_units < maintenance_margin_units)),
                        _ => None,
                    }).collect();
                    prop_assert!(started.iter().all(|(_, below)| *below), "a healthy account liquidated: {:?}", started);
                    for user in 1..=5 {
                        if let PositionQueryResult::Account(Some(account)) = h.module.query(&PositionQuery::Account { user_id: UserId(user) })
                            && victims.contains(&user)
                        {
                            let flat = account.positions.iter().all(|p| p.size_lots == 0);
                            prop_assert!(flat || account.equity_units >= account.maintenance_margin_units, "user {} left below maintenance: {:?}", user, account);
                            prop_assert!(tiered || flat, "a flat market liquidates in full");
                        }
                    }
                }
                Step::PremiumFunding => {
                    h.run(PositionCommand::PremiumFunding { market: BTC });
                }
                Step::Funding { rate } => {
                    h.run(PositionCommand::Funding { market: BTC, rate });
                }
                Step::Withdraw { user, usd } => {
                    h.run(PositionCommand::Withdraw { user_id: UserId(user), amount_units: usd * USD as u64 });
                }
            }
            prop_assert_eq!(h.module.check_invariants(), Ok(()));
        }
    }
}

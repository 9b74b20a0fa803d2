//! Unit tests per matching rule, and a property test against the simple model.

use exhost_book_model::ModelBook;
use exhost_guest_sdk::*;
use proptest::prelude::*;

use super::PriceTimeBook;

type Levels = Vec<(u64, u64)>;

const CTX: CommandContext = CommandContext { seq: 1, ts_ns: 1 };

struct Fixture {
    book: PriceTimeBook,
    next_id: u64,
}

impl Fixture {
    fn new() -> Self {
        Fixture { book: PriceTimeBook::init(&MarketConfig::default()).unwrap(), next_id: 0 }
    }

    fn with_config(config: MarketConfig) -> Self {
        Fixture { book: PriceTimeBook::init(&config).unwrap(), next_id: 0 }
    }

    /// Apply a command; returns its events without the trailing level changes
    /// (checked on their own in `level_changes_are_reported_once_in_canonical_order`).
    fn apply(&mut self, command: MatchingCommand) -> Vec<MatchingEvent> {
        self.apply_at(CTX.ts_ns, command)
    }

    /// Apply a command at a time; returns its events without level changes and wake times.
    fn apply_at(&mut self, ts_ns: u64, command: MatchingCommand) -> Vec<MatchingEvent> {
        let mut events = Vec::new();
        self.book.apply(&CommandContext { seq: CTX.seq, ts_ns }, &command, &mut events);
        self.book.check_invariants().unwrap();
        events.retain(|event| !matches!(event, MatchingEvent::Level { .. } | MatchingEvent::Wake { .. }));
        events
    }

    /// Place a limit order with options at a time.
    #[allow(clippy::too_many_arguments)]
    fn limit_with(
        &mut self,
        ts_ns: u64,
        user: u64,
        side: Side,
        price: u64,
        qty: u64,
        tif: TimeInForce,
        options: OrderOptions,
    ) -> (OrderId, Vec<MatchingEvent>) {
        self.next_id += 1;
        let order_id = OrderId(self.next_id);
        let order = PlaceOrder {
            order_id,
            user_id: UserId(user),
            side,
            order_type: OrderType::Limit,
            price_ticks: price,
            qty_lots: qty,
            time_in_force: tif,
            self_trade_prevention: SelfTradePrevention::CancelTaker,
        };
        (order_id, self.apply_at(ts_ns, MatchingCommand::PlaceWith { order, options }))
    }

    #[allow(clippy::too_many_arguments)]
    fn order(
        &mut self,
        user: u64,
        side: Side,
        order_type: OrderType,
        price: u64,
        qty: u64,
        tif: TimeInForce,
        stp: SelfTradePrevention,
    ) -> (OrderId, Vec<MatchingEvent>) {
        self.next_id += 1;
        let order_id = OrderId(self.next_id);
        let events = self.apply(MatchingCommand::Place(PlaceOrder {
            order_id,
            user_id: UserId(user),
            side,
            order_type,
            price_ticks: price,
            qty_lots: qty,
            time_in_force: tif,
            self_trade_prevention: stp,
        }));
        (order_id, events)
    }

    fn limit(&mut self, user: u64, side: Side, price: u64, qty: u64) -> (OrderId, Vec<MatchingEvent>) {
        self.order(user, side, OrderType::Limit, price, qty, TimeInForce::Gtc, SelfTradePrevention::CancelTaker)
    }

    /// Bids and asks as `(price_ticks, qty_lots)`.
    fn depth(&self) -> (Levels, Levels) {
        match self.book.query(&MatchingQuery::Depth { levels_max: 100 }) {
            MatchingQueryResult::Depth { bids, asks } => (
                bids.iter().map(|l| (l.price_ticks, l.qty_lots)).collect(),
                asks.iter().map(|l| (l.price_ticks, l.qty_lots)).collect(),
            ),
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn last_update(events: &[MatchingEvent]) -> &OrderUpdate {
    match events.last() {
        Some(MatchingEvent::Order(update)) => update,
        other => panic!("expected an order update last, got {other:?}"),
    }
}

fn trades(events: &[MatchingEvent]) -> Vec<(u64, u64, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            MatchingEvent::Trade(t) => Some((t.maker_order_id.0, t.price_ticks, t.qty_lots)),
            _ => None,
        })
        .collect()
}

#[test]
fn trades_at_the_makers_price_in_price_then_time_priority() {
    let mut f = Fixture::new();
    let (a, _) = f.limit(1, Side::Sell, 101, 5);
    let (b, _) = f.limit(2, Side::Sell, 100, 5);
    let (c, _) = f.limit(3, Side::Sell, 100, 5);
    let (_, events) = f.limit(4, Side::Buy, 105, 12);
    assert_eq!(trades(&events), vec![(b.0, 100, 5), (c.0, 100, 5), (a.0, 101, 2)]);
    let taker = last_update(&events);
    assert_eq!((taker.status, taker.filled_lots), (OrderStatus::Filled, 12));
    assert_eq!(f.depth(), (vec![], vec![(101, 3)]));
}

#[test]
fn gtc_rests_its_remainder_as_partially_filled() {
    let mut f = Fixture::new();
    f.limit(1, Side::Sell, 100, 3);
    let (_, events) = f.limit(2, Side::Buy, 100, 10);
    let taker = last_update(&events);
    assert_eq!((taker.status, taker.filled_lots, taker.remaining_lots()), (OrderStatus::PartiallyFilled, 3, 7));
    assert_eq!(f.depth(), (vec![(100, 7)], vec![]));
}

#[test]
fn ioc_and_market_cancel_their_remainder() {
    let mut f = Fixture::new();
    f.limit(1, Side::Sell, 100, 3);
    let (_, events) =
        f.order(2, Side::Buy, OrderType::Limit, 100, 5, TimeInForce::Ioc, SelfTradePrevention::CancelTaker);
    let taker = last_update(&events);
    assert_eq!((taker.status, taker.filled_lots, taker.reason), (OrderStatus::Cancelled, 3, Some(Reason::Unfilled)));
    f.limit(1, Side::Buy, 90, 4);
    let (_, events) =
        f.order(3, Side::Sell, OrderType::Market, 0, 6, TimeInForce::Gtc, SelfTradePrevention::CancelTaker);
    assert_eq!(trades(&events).len(), 1);
    let taker = last_update(&events);
    assert_eq!((taker.status, taker.filled_lots), (OrderStatus::Cancelled, 4));
    assert_eq!(f.depth(), (vec![], vec![]));
}

#[test]
fn fok_fills_completely_or_changes_nothing() {
    let mut f = Fixture::new();
    f.limit(1, Side::Sell, 100, 3);
    f.limit(1, Side::Sell, 101, 3);
    let fok = |f: &mut Fixture, qty| {
        f.order(2, Side::Buy, OrderType::Limit, 101, qty, TimeInForce::Fok, SelfTradePrevention::CancelTaker).1
    };
    let events = fok(&mut f, 7);
    assert_eq!(events.len(), 1);
    assert_eq!(
        (last_update(&events).status, last_update(&events).reason),
        (OrderStatus::Rejected, Some(Reason::NotFillable))
    );
    assert_eq!(f.depth(), (vec![], vec![(100, 3), (101, 3)]));
    let events = fok(&mut f, 6);
    assert_eq!(last_update(&events).status, OrderStatus::Filled);
}

#[test]
fn fok_counts_only_what_fills_before_a_self_trade_stop() {
    let mut f = Fixture::new();
    f.limit(1, Side::Sell, 100, 3);
    f.limit(2, Side::Sell, 100, 3);
    f.limit(1, Side::Sell, 100, 3);
    // cancel_taker: stops at user 2's own order, only 3 fillable before it.
    let (_, events) =
        f.order(2, Side::Buy, OrderType::Limit, 100, 6, TimeInForce::Fok, SelfTradePrevention::CancelTaker);
    assert_eq!(last_update(&events).reason, Some(Reason::NotFillable));
    // cancel_maker: skips its own order, 6 fillable from user 1.
    let (_, events) =
        f.order(2, Side::Buy, OrderType::Limit, 100, 6, TimeInForce::Fok, SelfTradePrevention::CancelMaker);
    assert_eq!(last_update(&events).status, OrderStatus::Filled);
    assert_eq!(trades(&events).len(), 2);
    assert_eq!(f.depth(), (vec![], vec![]));
}

#[test]
fn post_only_is_refused_when_it_would_cross() {
    let mut f = Fixture::new();
    f.limit(1, Side::Sell, 100, 3);
    let (_, events) =
        f.order(2, Side::Buy, OrderType::Limit, 100, 1, TimeInForce::PostOnly, SelfTradePrevention::CancelTaker);
    assert_eq!(last_update(&events).reason, Some(Reason::WouldCross));
    let (_, events) =
        f.order(2, Side::Buy, OrderType::Limit, 99, 1, TimeInForce::PostOnly, SelfTradePrevention::CancelTaker);
    assert_eq!(last_update(&events).status, OrderStatus::New);
    assert_eq!(f.depth(), (vec![(99, 1)], vec![(100, 3)]));
}

#[test]
fn self_trade_prevention_modes() {
    // cancel_taker: the taker's remainder is cancelled at its own order.
    let mut f = Fixture::new();
    let (own, _) = f.limit(1, Side::Sell, 100, 5);
    let (_, events) =
        f.order(1, Side::Buy, OrderType::Limit, 100, 5, TimeInForce::Gtc, SelfTradePrevention::CancelTaker);
    assert_eq!(
        (last_update(&events).status, last_update(&events).reason),
        (OrderStatus::Cancelled, Some(Reason::SelfTrade))
    );
    assert!(f.book.book.contains(own));

    // cancel_maker: its own resting order goes, matching continues.
    let mut f = Fixture::new();
    let (own, _) = f.limit(1, Side::Sell, 100, 5);
    f.limit(2, Side::Sell, 100, 5);
    let (_, events) =
        f.order(1, Side::Buy, OrderType::Limit, 100, 5, TimeInForce::Gtc, SelfTradePrevention::CancelMaker);
    assert_eq!(last_update(&events).status, OrderStatus::Filled);
    assert!(!f.book.book.contains(own));

    // cancel_both: both go.
    let mut f = Fixture::new();
    let (own, _) = f.limit(1, Side::Sell, 100, 5);
    f.limit(2, Side::Sell, 100, 5);
    let (_, events) =
        f.order(1, Side::Buy, OrderType::Limit, 100, 5, TimeInForce::Gtc, SelfTradePrevention::CancelBoth);
    assert_eq!(last_update(&events).status, OrderStatus::Cancelled);
    assert!(!f.book.book.contains(own));
    assert_eq!(f.depth(), (vec![], vec![(100, 5)]));
}

#[test]
fn cancel_only_the_callers_open_orders() {
    let mut f = Fixture::new();
    let (id, _) = f.limit(1, Side::Buy, 100, 5);
    let events = f.apply(MatchingCommand::Cancel { order_id: id, user_id: UserId(2) });
    assert_eq!(
        events,
        vec![MatchingEvent::Rejected { order_id: id, user_id: UserId(2), reason: Reason::UnknownOrder }]
    );
    let events = f.apply(MatchingCommand::Cancel { order_id: id, user_id: UserId(1) });
    assert_eq!(
        (last_update(&events).status, last_update(&events).reason),
        (OrderStatus::Cancelled, Some(Reason::UserCancel))
    );
    let events = f.apply(MatchingCommand::Cancel { order_id: id, user_id: UserId(1) });
    assert!(matches!(events[..], [MatchingEvent::Rejected { reason: Reason::UnknownOrder, .. }]));
}

#[test]
fn amend_keeps_priority_only_for_same_price_and_smaller_quantity() {
    let mut f = Fixture::new();
    let (first, _) = f.limit(1, Side::Sell, 100, 5);
    let (second, _) = f.limit(2, Side::Sell, 100, 5);
    // Reduce: keeps its place.
    f.apply(MatchingCommand::Amend { order_id: first, user_id: UserId(1), price_ticks: None, qty_lots: Some(4) });
    let (_, events) = f.limit(3, Side::Buy, 100, 1);
    assert_eq!(trades(&events), vec![(first.0, 100, 1)]);
    // Increase: goes to the back.
    f.apply(MatchingCommand::Amend { order_id: first, user_id: UserId(1), price_ticks: None, qty_lots: Some(9) });
    let (_, events) = f.limit(3, Side::Buy, 100, 1);
    assert_eq!(trades(&events), vec![(second.0, 100, 1)]);
    assert_eq!(f.depth(), (vec![], vec![(100, 4 + 8)]));
}

#[test]
fn amend_to_a_crossing_price_matches_like_a_new_order() {
    let mut f = Fixture::new();
    let (ask, _) = f.limit(1, Side::Sell, 105, 3);
    let (bid, _) = f.limit(2, Side::Buy, 100, 5);
    let events =
        f.apply(MatchingCommand::Amend { order_id: bid, user_id: UserId(2), price_ticks: Some(106), qty_lots: None });
    assert_eq!(trades(&events), vec![(ask.0, 105, 3)]);
    let update = last_update(&events);
    assert_eq!(
        (update.order_id, update.status, update.filled_lots, update.price_ticks),
        (bid, OrderStatus::PartiallyFilled, 3, 106)
    );
    // Amend to at or below the filled quantity cancels what is left.
    let events =
        f.apply(MatchingCommand::Amend { order_id: bid, user_id: UserId(2), price_ticks: None, qty_lots: Some(2) });
    let update = last_update(&events);
    assert_eq!((update.status, update.qty_lots, update.remaining_lots()), (OrderStatus::Cancelled, 3, 0));
    assert_eq!(f.depth(), (vec![], vec![]));
}

#[test]
fn post_only_amend_that_would_cross_is_refused_and_unchanged() {
    let mut f = Fixture::new();
    f.limit(1, Side::Sell, 105, 3);
    let (bid, _) =
        f.order(2, Side::Buy, OrderType::Limit, 100, 5, TimeInForce::PostOnly, SelfTradePrevention::CancelTaker);
    let events =
        f.apply(MatchingCommand::Amend { order_id: bid, user_id: UserId(2), price_ticks: Some(105), qty_lots: None });
    assert!(matches!(events[..], [MatchingEvent::Rejected { reason: Reason::WouldCross, .. }]));
    assert_eq!(f.depth(), (vec![(100, 5)], vec![(105, 3)]));
}

#[test]
fn mass_cancel_removes_every_order_of_the_user_in_id_order() {
    let mut f = Fixture::new();
    let (a, _) = f.limit(1, Side::Buy, 100, 5);
    f.limit(2, Side::Buy, 100, 5);
    let (b, _) = f.limit(1, Side::Sell, 110, 5);
    let events = f.apply(MatchingCommand::MassCancel { user_id: UserId(1) });
    let ids: Vec<OrderId> = events
        .iter()
        .map(|e| match e {
            MatchingEvent::Order(u) => u.order_id,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids, vec![a, b]);
    assert_eq!(f.depth(), (vec![(100, 5)], vec![]));
}

#[test]
fn range_checks_reject_and_change_nothing() {
    let mut f =
        Fixture::with_config(MarketConfig { price_ticks_max: 1000, qty_lots_max: 50, ..MarketConfig::default() });
    assert_eq!(last_update(&f.limit(1, Side::Buy, 0, 5).1).reason, Some(Reason::InvalidPrice));
    assert_eq!(last_update(&f.limit(1, Side::Buy, 1001, 5).1).reason, Some(Reason::InvalidPrice));
    assert_eq!(last_update(&f.limit(1, Side::Buy, 10, 0).1).reason, Some(Reason::InvalidQuantity));
    assert_eq!(last_update(&f.limit(1, Side::Buy, 10, 51).1).reason, Some(Reason::InvalidQuantity));
    assert_eq!(f.depth(), (vec![], vec![]));
}

#[test]
fn named_limits_are_typed_outcomes() {
    let mut f = Fixture::with_config(MarketConfig { resting_orders_max: 2, ..MarketConfig::default() });
    f.limit(1, Side::Sell, 100, 1);
    f.limit(1, Side::Sell, 100, 1);
    let (_, events) = f.limit(1, Side::Sell, 100, 1);
    assert_eq!(
        (last_update(&events).status, last_update(&events).reason),
        (OrderStatus::Cancelled, Some(Reason::BookFull))
    );
    assert_eq!(f.depth(), (vec![], vec![(100, 2)]));

    let mut f = Fixture::with_config(MarketConfig { match_steps_per_command_max: 2, ..MarketConfig::default() });
    for _ in 0..3 {
        f.limit(1, Side::Sell, 100, 1);
    }
    let (_, events) = f.limit(3, Side::Buy, 100, 3);
    assert_eq!(trades(&events).len(), 2);
    let taker = last_update(&events);
    assert_eq!((taker.status, taker.reason, taker.filled_lots), (OrderStatus::Cancelled, Some(Reason::FillLimit), 2));
    assert_eq!(f.depth(), (vec![], vec![(100, 1)]));
}

#[test]
fn snapshot_restore_round_trips_the_exact_queues() {
    let mut f = Fixture::new();
    for i in 0..20 {
        f.limit(
            1 + i % 3,
            if i % 2 == 0 { Side::Buy } else { Side::Sell },
            if i % 2 == 0 { 90 + i % 4 } else { 110 - i % 5 },
            1 + i,
        );
    }
    let mut bytes = Vec::new();
    f.book.snapshot(&mut bytes);
    let restored = PriceTimeBook::restore(&bytes).unwrap();
    let mut again = Vec::new();
    restored.snapshot(&mut again);
    assert_eq!(bytes, again);
    // Same queues: a sweep gives the same trades on both.
    let sweep = |book: &mut PriceTimeBook| {
        let mut events = Vec::new();
        book.apply(
            &CTX,
            &MatchingCommand::Place(PlaceOrder {
                order_id: OrderId(999),
                user_id: UserId(9),
                side: Side::Buy,
                order_type: OrderType::Market,
                price_ticks: 0,
                qty_lots: 1000,
                time_in_force: TimeInForce::Ioc,
                self_trade_prevention: SelfTradePrevention::CancelTaker,
            }),
            &mut events,
        );
        events
    };
    let mut restored = restored;
    assert_eq!(sweep(&mut f.book), sweep(&mut restored));
    assert!(PriceTimeBook::restore(&bytes[..bytes.len() - 1]).is_err());
}

#[test]
fn restore_refuses_books_that_break_an_invariant() {
    use exhost_guest_sdk::book::{BOOK_STATE_V1, BookOrder, BookSnapshotV1};
    let order = |id: u64, side: Side, price_ticks: u64| BookOrder {
        order_id: OrderId(id),
        user_id: UserId(1),
        side,
        price_ticks,
        qty_lots: 3,
        filled_lots: 1,
        time_in_force: TimeInForce::Gtc,
        self_trade_prevention: SelfTradePrevention::CancelTaker,
    };
    let restore = |orders: Vec<BookOrder>| {
        let snapshot = BookSnapshotV1 { config: MarketConfig::default(), last_trade_id: 0, orders };
        let bytes = exhost_guest_sdk::codec::encode(&snapshot);
        PriceTimeBook::migrate(BOOK_STATE_V1, &bytes).map(|_| ()).map_err(|e| e.message)
    };
    assert_eq!(restore(vec![order(1, Side::Buy, 90), order(2, Side::Buy, 90), order(3, Side::Sell, 91)]), Ok(()));
    let crossed = restore(vec![order(1, Side::Buy, 95), order(2, Side::Sell, 95)]).unwrap_err();
    assert!(crossed.contains("crossed"), "{crossed}");
    let repeated = restore(vec![order(1, Side::Buy, 90), order(1, Side::Sell, 95)]).unwrap_err();
    assert!(repeated.contains("order 1 appears twice"), "{repeated}");
    let unordered = restore(vec![order(1, Side::Buy, 91), order(2, Side::Buy, 90)]).unwrap_err();
    assert!(unordered.contains("order 2 is out of canonical order"), "{unordered}");
}

#[test]
fn level_changes_are_reported_once_in_canonical_order() {
    let mut f = Fixture::new();
    f.limit(1, Side::Sell, 101, 5);
    f.limit(1, Side::Sell, 102, 5);
    f.limit(2, Side::Buy, 99, 5);
    let mut events = Vec::new();
    // Sweeps 101 completely and 102 partly, then rests the remainder at 103: three
    // levels change, the bid side not at all.
    f.book.apply(
        &CTX,
        &MatchingCommand::Place(PlaceOrder {
            order_id: OrderId(50),
            user_id: UserId(3),
            side: Side::Buy,
            order_type: OrderType::Limit,
            price_ticks: 103,
            qty_lots: 12,
            time_in_force: TimeInForce::Gtc,
            self_trade_prevention: SelfTradePrevention::CancelTaker,
        }),
        &mut events,
    );
    let levels: Vec<(Side, u64, u64)> = events
        .iter()
        .filter_map(|e| match e {
            MatchingEvent::Level { side, price_ticks, qty_lots } => Some((*side, *price_ticks, *qty_lots)),
            _ => None,
        })
        .collect();
    assert_eq!(levels, vec![(Side::Buy, 103, 2), (Side::Sell, 101, 0), (Side::Sell, 102, 0)]);
    assert!(matches!(events.last(), Some(MatchingEvent::Level { .. })), "level changes come last");
    // A refused command changes no level.
    let mut events = Vec::new();
    f.book.apply(&CTX, &MatchingCommand::Cancel { order_id: OrderId(999), user_id: UserId(1) }, &mut events);
    assert_eq!(events.len(), 1);
}

fn level_events(events: &[MatchingEvent]) -> Vec<(Side, u64, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            MatchingEvent::Level { side, price_ticks, qty_lots } => Some((*side, *price_ticks, *qty_lots)),
            _ => None,
        })
        .collect()
}

fn iceberg(display_lots: u64) -> OrderOptions {
    OrderOptions { display_lots: Some(display_lots), expire_time_ns: None }
}

fn expiring(expire_time_ns: u64) -> OrderOptions {
    OrderOptions { display_lots: None, expire_time_ns: Some(expire_time_ns) }
}

fn the_order(f: &Fixture, order_id: OrderId) -> Option<OpenOrder> {
    match f.book.query(&MatchingQuery::Order { order_id }) {
        MatchingQueryResult::Orders(orders) => orders.into_iter().next(),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn an_iceberg_shows_its_display_quantity_and_each_next_part_joins_the_back() {
    let mut f = Fixture::new();
    let (hidden, events) = f.limit_with(1, 1, Side::Sell, 100, 10, TimeInForce::Gtc, iceberg(3));
    assert_eq!(last_update(&events).status, OrderStatus::New);
    let (plain, _) = f.limit(2, Side::Sell, 100, 5);
    assert_eq!(f.depth().1, vec![(100, 3 + 5)], "the book shows 3 of the iceberg's 10");
    // 4 lots: the 3 shown, then the iceberg's next part goes behind the plain order.
    let (_, events) = f.limit(3, Side::Buy, 100, 4);
    let makers: Vec<(u64, u64)> = events
        .iter()
        .filter_map(|e| match e {
            MatchingEvent::Trade(t) => Some((t.maker_order_id.0, t.qty_lots)),
            _ => None,
        })
        .collect();
    assert_eq!(makers, vec![(hidden.0, 3), (plain.0, 1)]);
    assert_eq!(f.depth().1, vec![(100, 4 + 3)]);
    // Its owner still sees the whole order.
    let mine = the_order(&f, hidden).unwrap();
    assert_eq!((mine.qty_lots, mine.filled_lots), (10, 3));
    // Reduced at the same price, it keeps its place and shows no more than it has.
    f.apply(MatchingCommand::Amend { order_id: hidden, user_id: UserId(1), price_ticks: None, qty_lots: Some(4) });
    assert_eq!(f.depth().1, vec![(100, 4 + 1)]);
}

#[test]
fn a_fill_or_kill_counts_the_hidden_quantity_step_by_step() {
    let fok = |f: &mut Fixture, qty| {
        f.order(3, Side::Buy, OrderType::Limit, 100, qty, TimeInForce::Fok, SelfTradePrevention::CancelTaker).1
    };
    let mut f = Fixture::new();
    let (hidden, _) = f.limit_with(1, 1, Side::Sell, 100, 10, TimeInForce::Gtc, iceberg(2));
    assert_eq!(last_update(&fok(&mut f, 11)).reason, Some(Reason::NotFillable));
    let events = fok(&mut f, 10);
    assert_eq!(trades(&events).len(), 5, "five parts of 2");
    assert_eq!(the_order(&f, hidden), None);
    // Each part is a step: with 3 steps a command, 4 parts cannot fill.
    let mut f = Fixture::with_config(MarketConfig { match_steps_per_command_max: 3, ..MarketConfig::default() });
    f.limit_with(1, 1, Side::Sell, 100, 8, TimeInForce::Gtc, iceberg(2));
    assert_eq!(last_update(&fok(&mut f, 8)).reason, Some(Reason::NotFillable));
    assert_eq!(last_update(&fok(&mut f, 6)).status, OrderStatus::Filled);
}

#[test]
fn a_gtd_order_expires_in_the_first_command_at_or_after_its_time() {
    let mut f = Fixture::new();
    let order = PlaceOrder {
        order_id: OrderId(1),
        user_id: UserId(1),
        side: Side::Buy,
        order_type: OrderType::Limit,
        price_ticks: 90,
        qty_lots: 5,
        time_in_force: TimeInForce::Gtd,
        self_trade_prevention: SelfTradePrevention::CancelTaker,
    };
    f.next_id = 1;
    let mut events = Vec::new();
    f.book.apply(&CTX, &MatchingCommand::PlaceWith { order, options: expiring(100) }, &mut events);
    assert_eq!(events.last(), Some(&MatchingEvent::Wake { at_ts_ns: Some(100) }), "{events:?}");
    // Before its time nothing happens; a wake too early says when to come back.
    let mut events = Vec::new();
    f.book.apply(&CommandContext { seq: 2, ts_ns: 99 }, &MatchingCommand::Wake, &mut events);
    assert_eq!(events, vec![MatchingEvent::Wake { at_ts_ns: Some(100) }]);
    assert_eq!(f.depth().0, vec![(90, 5)]);
    let mut events = Vec::new();
    f.book.apply(&CommandContext { seq: 3, ts_ns: 100 }, &MatchingCommand::Wake, &mut events);
    let MatchingEvent::Order(expired) = &events[0] else { panic!("{events:?}") };
    assert_eq!(
        (expired.order_id, expired.status, expired.reason),
        (OrderId(1), OrderStatus::Cancelled, Some(Reason::Expired))
    );
    assert_eq!(
        events[1..],
        [
            MatchingEvent::Level { side: Side::Buy, price_ticks: 90, qty_lots: 0 },
            MatchingEvent::Wake { at_ts_ns: None }
        ]
    );
    // Expiry comes before the command's own work: an amend at that time finds nothing.
    let (late, _) = f.limit_with(200, 1, Side::Buy, 90, 5, TimeInForce::Gtd, expiring(300));
    let events = f.apply_at(
        300,
        MatchingCommand::Amend { order_id: late, user_id: UserId(1), price_ticks: Some(91), qty_lots: None },
    );
    let MatchingEvent::Order(expired) = &events[0] else { panic!("{events:?}") };
    assert_eq!((expired.order_id, expired.reason), (late, Some(Reason::Expired)));
    assert_eq!(events[1], MatchingEvent::Rejected { order_id: late, user_id: UserId(1), reason: Reason::UnknownOrder });
}

#[test]
fn expiries_are_bounded_per_command_and_the_rest_follow_in_the_next() {
    let mut f = Fixture::with_config(MarketConfig { match_steps_per_command_max: 2, ..MarketConfig::default() });
    for price in [90, 91, 92] {
        f.limit_with(1, 1, Side::Buy, price, 1, TimeInForce::Gtd, expiring(50));
    }
    let mut events = Vec::new();
    f.book.apply(&CommandContext { seq: 9, ts_ns: 60 }, &MatchingCommand::Wake, &mut events);
    assert_eq!(level_events(&events), vec![(Side::Buy, 90, 0), (Side::Buy, 91, 0)]);
    assert_eq!(events.last(), Some(&MatchingEvent::Wake { at_ts_ns: Some(50) }), "still due: {events:?}");
    let mut events = Vec::new();
    f.book.apply(&CommandContext { seq: 10, ts_ns: 60 }, &MatchingCommand::Wake, &mut events);
    assert_eq!(level_events(&events), vec![(Side::Buy, 92, 0)]);
    assert_eq!(events.last(), Some(&MatchingEvent::Wake { at_ts_ns: None }));
}

#[test]
fn options_that_cannot_apply_are_refused_and_change_nothing() {
    let mut f = Fixture::new();
    let cases = [
        (TimeInForce::Gtc, iceberg(0), Reason::InvalidDisplayQty),
        (TimeInForce::Gtc, iceberg(6), Reason::InvalidDisplayQty),
        (TimeInForce::Ioc, iceberg(2), Reason::InvalidDisplayQty),
        (TimeInForce::Gtd, OrderOptions::default(), Reason::InvalidExpireTime),
        (TimeInForce::Gtc, expiring(50), Reason::InvalidExpireTime),
        (TimeInForce::Gtd, expiring(10), Reason::InvalidExpireTime),
        (TimeInForce::Gtd, expiring(9), Reason::InvalidExpireTime),
    ];
    for (tif, options, reason) in cases {
        let (_, events) = f.limit_with(10, 1, Side::Buy, 90, 5, tif, options);
        assert_eq!(events.len(), 1, "{tif:?} {options:?}");
        let update = last_update(&events);
        assert_eq!((update.status, update.reason), (OrderStatus::Rejected, Some(reason)), "{tif:?} {options:?}");
    }
    assert_eq!(f.depth(), (vec![], vec![]));
    let (_, events) = f.limit_with(10, 1, Side::Buy, 90, 5, TimeInForce::Gtd, expiring(11));
    assert_eq!(last_update(&events).status, OrderStatus::New);
}

#[test]
fn a_book_v1_snapshot_migrates_to_the_same_book_with_no_options() {
    use exhost_guest_sdk::book::{BOOK_STATE_V1, BookSnapshotV1, book_v1_to_v2};
    let mut f = Fixture::new();
    for i in 0..6 {
        f.limit(1 + i % 2, if i % 2 == 0 { Side::Buy } else { Side::Sell }, if i % 2 == 0 { 90 } else { 110 }, 1 + i);
    }
    let mut orders = Vec::new();
    for user in [1, 2] {
        let MatchingQueryResult::Orders(mine) = f.book.query(&MatchingQuery::OpenOrders { user_id: UserId(user) })
        else {
            panic!()
        };
        orders.extend(mine);
    }
    orders.sort_by_key(|o| (o.side, o.price_ticks, o.order_id));
    let v1 = BookSnapshotV1 { config: MarketConfig::default(), last_trade_id: 0, orders };
    let migrated = PriceTimeBook::migrate(BOOK_STATE_V1, &exhost_guest_sdk::codec::encode(&v1)).unwrap();
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    migrated.snapshot(&mut theirs);
    f.book.snapshot(&mut ours);
    assert_eq!(theirs, ours);
    assert_eq!(theirs, exhost_guest_sdk::codec::encode(&exhost_guest_sdk::book::book_v2_to_v3(book_v1_to_v2(v1))));
    assert!(PriceTimeBook::migrate(7, &theirs).is_err());
}

// ---- conditional orders ----

impl Fixture {
    /// Place a conditional order: a market one (`limit: None`) or a limit one.
    fn conditional(
        &mut self,
        user: u64,
        side: Side,
        limit: Option<u64>,
        qty: u64,
        trigger: Trigger,
    ) -> (OrderId, Vec<MatchingEvent>) {
        self.next_id += 1;
        let order_id = OrderId(self.next_id);
        let order = PlaceOrder {
            order_id,
            user_id: UserId(user),
            side,
            order_type: if limit.is_some() { OrderType::Limit } else { OrderType::Market },
            price_ticks: limit.unwrap_or(0),
            qty_lots: qty,
            time_in_force: TimeInForce::Gtc,
            self_trade_prevention: SelfTradePrevention::CancelTaker,
        };
        (order_id, self.apply(MatchingCommand::PlaceConditional { order, options: OrderOptions::default(), trigger }))
    }
}

fn on_mark(price_ticks: u64, rises: bool) -> Trigger {
    Trigger { price_ticks, by: TriggerBy::Mark, rises }
}

/// `(order id, status)` of each order update, and `(taker, maker, qty, price)` of each trade, in order.
fn story(events: &[MatchingEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|event| match event {
            MatchingEvent::Order(u) => {
                Some(format!("order {} {} {}/{}", u.order_id.0, u.status.as_str(), u.filled_lots, u.qty_lots))
            }
            MatchingEvent::Trade(t) => {
                Some(format!("trade {}<-{} {}@{}", t.taker_order_id.0, t.maker_order_id.0, t.qty_lots, t.price_ticks))
            }
            _ => None,
        })
        .collect()
}

/// Three stop sells and a take-profit buy wait on the mark. A move of the
/// mark from 100 to 94 meets the stops at 98, 96 and 95 and the take-profit
/// at 97 (all falling): they enter by descending trigger price, 98, 97, 96,
/// 95, ties by id, each trading with the book as it is by then (the
/// take-profit buys from the stop-limit that rested just before it).
#[test]
fn several_stops_triggered_by_one_mark_move_enter_in_trigger_price_order() {
    let mut f = Fixture::new();
    f.apply(MatchingCommand::Mark { price_ticks: 100 });
    let (bid_90, _) = f.limit(1, Side::Buy, 90, 10);
    let (ask_110, _) = f.limit(1, Side::Sell, 110, 10);
    let (stop_95, placed) = f.conditional(2, Side::Sell, None, 2, on_mark(95, false));
    assert_eq!(story(&placed), ["order 3 untriggered 0/2"]);
    let MatchingEvent::Order(update) = &placed[0] else { unreachable!() };
    assert_eq!(update.price_ticks, 95, "a market stop is margined at its trigger price");
    let (stop_98, _) = f.conditional(3, Side::Sell, Some(91), 3, on_mark(98, false));
    let (take_97, _) = f.conditional(4, Side::Buy, None, 1, on_mark(97, false));
    let (stop_96, _) = f.conditional(5, Side::Sell, None, 4, on_mark(96, false));
    // Not yet: the mark at 99 meets none of them.
    assert_eq!(f.apply(MatchingCommand::Mark { price_ticks: 99 }), vec![]);
    assert_eq!(f.depth(), (vec![(90, 10)], vec![(110, 10)]), "untriggered orders are not in the book");

    let events = f.apply(MatchingCommand::Mark { price_ticks: 94 });
    assert_eq!(
        story(&events),
        [
            // 98: a stop-limit sell at 91 finds no bid at or above 91: it rests.
            "order 4 new 0/3",
            // 97: a market buy meets that ask at 91 before the one at 110.
            "trade 5<-4 1@91",
            "order 4 partially_filled 1/3",
            "order 5 filled 1/1",
            // 96: a market sell of 4 at the bid of 90.
            "trade 6<-1 4@90",
            "order 1 partially_filled 4/10",
            "order 6 filled 4/4",
            // 95: the last, 2 more at 90.
            "trade 3<-1 2@90",
            "order 1 partially_filled 6/10",
            "order 3 filled 2/2",
        ]
    );
    assert_eq!((stop_95, stop_98, take_97, stop_96), (OrderId(3), OrderId(4), OrderId(5), OrderId(6)));
    assert_eq!(f.depth(), (vec![(90, 4)], vec![(91, 2), (110, 10)]));
    let _ = (bid_90, ask_110);
}

/// A stop buy on the last price is met by a trade of the command that moves
/// it, and what it buys can move the last price on to the next one.
#[test]
fn last_price_triggers_cascade_inside_the_command_that_traded() {
    let mut f = Fixture::new();
    f.limit(1, Side::Sell, 100, 1);
    f.limit(1, Side::Sell, 102, 1);
    f.limit(1, Side::Sell, 104, 5);
    let last = |price_ticks| Trigger { price_ticks, by: TriggerBy::Last, rises: true };
    let (first, _) = f.conditional(2, Side::Buy, None, 1, last(100));
    let (second, _) = f.conditional(3, Side::Buy, None, 1, last(102));
    // No trade yet, so nothing to watch: both wait. A buy at 100 trades...
    let events = f.order(4, Side::Buy, OrderType::Limit, 100, 1, TimeInForce::Gtc, SelfTradePrevention::CancelTaker).1;
    // ...which meets the stop at 100; it buys at 102, which meets the one at 102.
    assert_eq!(
        story(&events),
        [
            "trade 6<-1 1@100",
            "order 1 filled 1/1",
            "order 6 filled 1/1",
            "trade 4<-2 1@102",
            "order 2 filled 1/1",
            "order 4 filled 1/1",
            "trade 5<-3 1@104",
            "order 3 partially_filled 1/5",
            "order 5 filled 1/1",
        ]
    );
    assert_eq!((first, second), (OrderId(4), OrderId(5)));
}

#[test]
fn untriggered_orders_are_refused_when_met_already_and_can_be_cancelled_amended_and_expire() {
    let mut f = Fixture::new();
    f.apply(MatchingCommand::Mark { price_ticks: 100 });
    let reason = |events: &[MatchingEvent]| match &events[0] {
        MatchingEvent::Order(update) => (update.status, update.reason),
        other => panic!("{other:?}"),
    };
    let (_, met) = f.conditional(1, Side::Sell, None, 1, on_mark(100, false));
    assert_eq!(reason(&met), (OrderStatus::Rejected, Some(Reason::WouldTrigger)));
    let (_, zero) = f.conditional(1, Side::Sell, None, 1, on_mark(0, false));
    assert_eq!(reason(&zero), (OrderStatus::Rejected, Some(Reason::InvalidTriggerPrice)));
    // Amend what it becomes; the trigger stays; a market one has no price to amend.
    let (limit_stop, _) = f.conditional(1, Side::Sell, Some(95), 4, on_mark(96, false));
    let amended = f.apply(MatchingCommand::Amend {
        order_id: limit_stop,
        user_id: UserId(1),
        price_ticks: Some(94),
        qty_lots: Some(2),
    });
    assert_eq!(story(&amended), ["order 3 untriggered 0/2"]);
    let (market_stop, _) = f.conditional(1, Side::Sell, None, 1, on_mark(90, false));
    let refused = f.apply(MatchingCommand::Amend {
        order_id: market_stop,
        user_id: UserId(1),
        price_ticks: Some(94),
        qty_lots: None,
    });
    assert_eq!(
        refused,
        vec![MatchingEvent::Rejected { order_id: market_stop, user_id: UserId(1), reason: Reason::InvalidPrice }]
    );
    // Another user's is unknown; the owner cancels it.
    let theirs = f.apply(MatchingCommand::Cancel { order_id: market_stop, user_id: UserId(2) });
    assert_eq!(
        theirs,
        vec![MatchingEvent::Rejected { order_id: market_stop, user_id: UserId(2), reason: Reason::UnknownOrder }]
    );
    let cancelled = f.apply(MatchingCommand::Cancel { order_id: market_stop, user_id: UserId(1) });
    assert_eq!(story(&cancelled), ["order 4 cancelled 0/1"]);
    // A gtd one expires while it waits.
    f.next_id += 1;
    let order = PlaceOrder {
        order_id: OrderId(f.next_id),
        user_id: UserId(1),
        side: Side::Buy,
        order_type: OrderType::Limit,
        price_ticks: 99,
        qty_lots: 1,
        time_in_force: TimeInForce::Gtd,
        self_trade_prevention: SelfTradePrevention::CancelTaker,
    };
    let options = OrderOptions { display_lots: None, expire_time_ns: Some(50) };
    let mut events = Vec::new();
    f.book.apply(&CTX, &MatchingCommand::PlaceConditional { order, options, trigger: on_mark(105, true) }, &mut events);
    assert_eq!(events.last(), Some(&MatchingEvent::Wake { at_ts_ns: Some(50) }));
    let expired = f.apply_at(50, MatchingCommand::Wake);
    assert_eq!(reason(&expired), (OrderStatus::Cancelled, Some(Reason::Expired)));
    // A snapshot holds what waits, and the prices watched.
    let mut bytes = Vec::new();
    f.book.snapshot(&mut bytes);
    let decoded = exhost_guest_sdk::book::read_book_v3(&bytes).unwrap();
    assert_eq!(decoded.conditional.iter().map(|c| c.order.order_id).collect::<Vec<_>>(), vec![limit_stop]);
    assert_eq!((decoded.mark_price_ticks, decoded.last_price_ticks), (Some(100), None));
    let mut again = Vec::new();
    PriceTimeBook::restore(&bytes).unwrap().snapshot(&mut again);
    assert_eq!(again, bytes);
}

/// Triggered orders share one budget of steps per command; the rest enter in
/// the next command, which the book asks for at once.
#[test]
fn triggered_orders_share_one_step_budget_and_the_rest_follow() {
    let mut f = Fixture::with_config(MarketConfig { match_steps_per_command_max: 4, ..MarketConfig::default() });
    f.apply(MatchingCommand::Mark { price_ticks: 100 });
    f.limit(1, Side::Buy, 90, 10);
    for trigger in [99, 98, 97] {
        f.conditional(2, Side::Sell, None, 1, on_mark(trigger, false));
    }
    let mut events = Vec::new();
    f.book.apply(&CommandContext { seq: 9, ts_ns: 70 }, &MatchingCommand::Mark { price_ticks: 95 }, &mut events);
    // Entry and fill of the first (2 steps), of the second (2 steps): the budget is spent.
    assert_eq!(story(&events).iter().filter(|line| line.ends_with("filled 1/1")).count(), 2, "{events:?}");
    assert_eq!(events.last(), Some(&MatchingEvent::Wake { at_ts_ns: Some(70) }), "the third is due now");
    let events = f.apply_at(71, MatchingCommand::Wake);
    assert_eq!(story(&events), ["trade 4<-1 1@90", "order 1 partially_filled 3/10", "order 4 filled 1/1"]);
}

// ---- property test against the model ----

type RawCommand = ((u8, u64, bool, u8, u64, u64, u8, u8, u64), (u8, u64), (u8, u64, bool));

fn arb_command(users: u64) -> impl Strategy<Value = RawCommand> {
    (
        (0u8..100, 1..=users, any::<bool>(), 0u8..10, 95u64..=105, 1u64..=8, 0u8..5, 0u8..3, 0u64..64),
        (0u8..8, 0u64..40),
        (0u8..10, 93u64..=107, any::<bool>()),
    )
}

/// Random commands: orders of every type and time in force, icebergs (some
/// with impossible display quantities), `gtd` orders expiring up to 40
/// commands later (some at once, which is refused), conditional orders on
/// the mark and the last price, rising and falling (some with a zero trigger,
/// some already met), cancels, amends, mass cancels, marks and wakes.
fn to_command(
    (
        (kind, user, buy, type_pick, price, qty, tif, stp, target),
        (display_pick, expire_in),
        (cond_pick, trigger_ticks, by_mark),
    ): RawCommand,
    seq: u64,
    placed: &[OrderId],
) -> MatchingCommand {
    let user_id = UserId(user);
    let pick = |target: u64| placed.get((target as usize) % placed.len().max(1)).copied().unwrap_or(OrderId(1));
    match kind {
        0..=64 => {
            let order = PlaceOrder {
                order_id: OrderId(seq),
                user_id,
                side: if buy { Side::Buy } else { Side::Sell },
                order_type: if type_pick == 0 { OrderType::Market } else { OrderType::Limit },
                price_ticks: if type_pick == 0 { 0 } else { price },
                qty_lots: qty,
                time_in_force: TimeInForce::ALL[tif as usize],
                self_trade_prevention: SelfTradePrevention::ALL[stp as usize],
            };
            let options = OrderOptions {
                display_lots: match display_pick {
                    0 | 1 => Some(1 + target % qty),
                    2 => Some(qty + 1),
                    _ => None,
                },
                expire_time_ns: (order.time_in_force == TimeInForce::Gtd || display_pick == 3)
                    .then_some(seq + expire_in),
            };
            let by = if by_mark { TriggerBy::Mark } else { TriggerBy::Last };
            match cond_pick {
                0..=2 => {
                    let price_ticks = if cond_pick == 2 { 0 } else { trigger_ticks };
                    let trigger = Trigger { price_ticks, by, rises: cond_pick == 0 };
                    MatchingCommand::PlaceConditional { order, options, trigger }
                }
                _ if options.is_plain() => MatchingCommand::Place(order),
                _ => MatchingCommand::PlaceWith { order, options },
            }
        }
        65..=79 => MatchingCommand::Cancel { order_id: pick(target), user_id },
        80..=96 => MatchingCommand::Amend {
            order_id: pick(target),
            user_id,
            price_ticks: (type_pick < 6).then_some(price),
            qty_lots: (type_pick >= 3).then_some(qty),
        },
        97 => MatchingCommand::Wake,
        98 => MatchingCommand::Mark { price_ticks: trigger_ticks },
        _ => MatchingCommand::MassCancel { user_id },
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Over random command sequences the module emits exactly the model's events,
    /// keeps its invariants, and its depth equals the model's after every step.
    #[test]
    fn matches_the_simple_model(raw in proptest::collection::vec(arb_command(4), 1..300)) {
        let mut book = PriceTimeBook::init(&MarketConfig::default()).unwrap();
        let mut model = ModelBook::new();
        let mut placed = Vec::new();
        // Halfway, the book is replaced by one restored from its snapshot (the
        // bulk build of hot swaps and recovery): the model must not notice.
        let restore_at = raw.len() / 2;
        for (i, raw) in raw.into_iter().enumerate() {
            if i == restore_at {
                let mut bytes = Vec::new();
                book.snapshot(&mut bytes);
                book = PriceTimeBook::restore(&bytes).unwrap();
                prop_assert_eq!(book.check_invariants(), Ok(()));
            }
            let seq = i as u64 + 1;
            let command = to_command(raw, seq, &placed);
            if matches!(
                command,
                MatchingCommand::Place(_) | MatchingCommand::PlaceWith { .. } | MatchingCommand::PlaceConditional { .. }
            ) {
                placed.push(OrderId(seq));
            }
            let mut events = Vec::new();
            book.apply(&CommandContext { seq, ts_ns: seq }, &command, &mut events);
            let expected = model.apply_at(seq, &command);
            prop_assert_eq!(&events, &expected, "command {} {:?}", seq, command);
            prop_assert_eq!(book.check_invariants(), Ok(()));
            let (bids, asks) = model.depth();
            let depth = book.query(&MatchingQuery::Depth { levels_max: u32::MAX });
            prop_assert_eq!(depth, MatchingQueryResult::Depth { bids, asks });
        }
        // A snapshot taken at the end restores to the same bytes.
        let mut bytes = Vec::new();
        book.snapshot(&mut bytes);
        let mut again = Vec::new();
        PriceTimeBook::restore(&bytes).unwrap().snapshot(&mut again);
        prop_assert_eq!(bytes, again);
    }
}

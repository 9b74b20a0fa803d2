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
    assert_eq!(theirs, exhost_guest_sdk::codec::encode(&book_v1_to_v2(v1)));
    assert!(PriceTimeBook::migrate(7, &theirs).is_err());
}

// ---- property test against the model ----

type RawCommand = ((u8, u64, bool, u8, u64, u64, u8, u8, u64), (u8, u64));

fn arb_command(users: u64) -> impl Strategy<Value = RawCommand> {
    ((0u8..100, 1..=users, any::<bool>(), 0u8..10, 95u64..=105, 1u64..=8, 0u8..5, 0u8..3, 0u64..64), (0u8..8, 0u64..40))
}

/// Random commands: orders of every type and time in force, icebergs (some
/// with impossible display quantities), `gtd` orders expiring up to 40
/// commands later (some at once, which is refused), cancels, amends, mass
/// cancels and wakes.
fn to_command(
    ((kind, user, buy, type_pick, price, qty, tif, stp, target), (display_pick, expire_in)): RawCommand,
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
            if options.is_plain() {
                MatchingCommand::Place(order)
            } else {
                MatchingCommand::PlaceWith { order, options }
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
            if matches!(command, MatchingCommand::Place(_) | MatchingCommand::PlaceWith { .. }) {
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

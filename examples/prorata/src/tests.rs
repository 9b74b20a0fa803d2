//! The pro-rata rules, with fills worked out by hand.

use exhost_guest_sdk::*;

use super::{ProRataBook, allocate};

const CTX: CommandContext = CommandContext { seq: 1, ts_ns: 1 };

fn book() -> ProRataBook {
    ProRataBook::init(&MarketConfig::default()).unwrap()
}

fn place(
    book: &mut ProRataBook,
    id: u64,
    user: u64,
    side: Side,
    price: u64,
    qty: u64,
    tif: TimeInForce,
) -> Vec<MatchingEvent> {
    let mut events = Vec::new();
    book.apply(
        &CTX,
        &MatchingCommand::Place(PlaceOrder {
            order_id: OrderId(id),
            user_id: UserId(user),
            side,
            order_type: OrderType::Limit,
            price_ticks: price,
            qty_lots: qty,
            time_in_force: tif,
            self_trade_prevention: SelfTradePrevention::CancelTaker,
        }),
        &mut events,
    );
    events
}

/// (maker order id, qty) of each trade, in order.
fn fills(events: &[MatchingEvent]) -> Vec<(u64, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            MatchingEvent::Trade(t) => Some((t.maker_order_id.0, t.qty_lots)),
            _ => None,
        })
        .collect()
}

#[test]
fn allocation_is_proportional_then_oldest_first() {
    // 10 lots over 30, 10, 10 remaining: 6, 2, 2.
    assert_eq!(allocate(10, &[Some(30), Some(10), Some(10)]), vec![6, 2, 2]);
    // 7 over 1, 1, 1: floor gives 2, 2, 2 ... no: 7 × 1 / 3 = 2 each, 1 left to the oldest.
    assert_eq!(allocate(7, &[Some(3), Some(3), Some(3)]), vec![3, 2, 2]);
    // 5 over 10, 1: 4, 0 by floor; the leftover lot goes to the oldest with room.
    assert_eq!(allocate(5, &[Some(10), Some(1)]), vec![5, 0]);
    // An ineligible order gets nothing.
    assert_eq!(allocate(4, &[None, Some(2), Some(2)]), vec![0, 2, 2]);
}

#[test]
fn a_level_is_shared_in_proportion_not_by_time() {
    let mut b = book();
    place(&mut b, 1, 1, Side::Sell, 100, 30, TimeInForce::Gtc);
    place(&mut b, 2, 2, Side::Sell, 100, 10, TimeInForce::Gtc);
    place(&mut b, 3, 3, Side::Sell, 100, 10, TimeInForce::Gtc);
    let events = place(&mut b, 4, 4, Side::Buy, 100, 10, TimeInForce::Gtc);
    assert_eq!(fills(&events), vec![(1, 6), (2, 2), (3, 2)]);
    // Price-time would have given all 10 to order 1.
    let taker = events.iter().rev().find_map(|e| match e {
        MatchingEvent::Order(u) if u.order_id == OrderId(4) => Some(u.status),
        _ => None,
    });
    assert_eq!(taker, Some(OrderStatus::Filled));
}

#[test]
fn better_prices_first_and_own_orders_stop_the_taker() {
    let mut b = book();
    place(&mut b, 1, 1, Side::Sell, 101, 5, TimeInForce::Gtc);
    place(&mut b, 2, 2, Side::Sell, 100, 4, TimeInForce::Gtc);
    place(&mut b, 3, 9, Side::Sell, 102, 5, TimeInForce::Gtc);
    let events = place(&mut b, 4, 9, Side::Buy, 102, 20, TimeInForce::Gtc);
    // 4 at 100, 5 at 101, then only its own order at 102: the remainder is cancelled.
    assert_eq!(fills(&events), vec![(2, 4), (1, 5)]);
    assert!(events.iter().any(
        |e| matches!(e, MatchingEvent::Order(u) if u.order_id == OrderId(4) && u.reason == Some(Reason::SelfTrade))
    ));
}

#[test]
fn snapshots_are_book_v1_and_interchange_with_the_reference_book() {
    let mut b = book();
    place(&mut b, 1, 1, Side::Sell, 101, 5, TimeInForce::Gtc);
    place(&mut b, 2, 2, Side::Buy, 99, 4, TimeInForce::Gtc);
    let mut bytes = Vec::new();
    b.snapshot(&mut bytes);
    let decoded = exhost_guest_sdk::book::read_book_v1(&bytes).unwrap();
    assert_eq!(decoded.orders.len(), 2);
    let mut again = Vec::new();
    ProRataBook::restore(&bytes).unwrap().snapshot(&mut again);
    assert_eq!(bytes, again);
}

#[test]
fn fok_and_post_only() {
    let mut b = book();
    place(&mut b, 1, 1, Side::Sell, 100, 5, TimeInForce::Gtc);
    let events = place(&mut b, 2, 2, Side::Buy, 100, 6, TimeInForce::Fok);
    assert!(matches!(&events[..], [MatchingEvent::Order(u)] if u.reason == Some(Reason::NotFillable)));
    let events = place(&mut b, 3, 2, Side::Buy, 100, 1, TimeInForce::PostOnly);
    assert!(matches!(&events[..], [MatchingEvent::Order(u)] if u.reason == Some(Reason::WouldCross)));
    let events = place(&mut b, 4, 2, Side::Buy, 100, 5, TimeInForce::Fok);
    assert_eq!(fills(&events), vec![(1, 5)]);
}

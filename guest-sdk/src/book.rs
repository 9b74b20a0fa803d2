//! Shared snapshot formats for order books, so matching modules with
//! different rules can take over each other's state in a hot swap (and swap
//! back): every rule set that keeps resting limit orders in per-price FIFO
//! queues can read and write them.
//!
//! "book v1" layout (postcard): the market config, the last trade id, then the
//! resting orders as a length-prefixed sequence: bids then asks, each by
//! ascending price, each level in queue order. That order is canonical: equal
//! books give equal bytes.
//!
//! "book v2" is v1 with, per order, what order options add: the iceberg's
//! display quantity and the part shown now, and the `gtd` expire time. A v1
//! book is a v2 book with no options ([`book_v1_to_v2`]); a v2 book is a v1
//! book only if no order has one ([`book_v2_to_v1`]), so a module without
//! options refuses a book it could not keep faithfully.
//!
//! "book v3" is v2 with the conditional orders waiting for their trigger (by
//! order id) and the two prices they watch: the last trade price and the
//! mark price the host handed over. A v2 book is a v3 book with none and no
//! prices ([`book_v2_to_v3`]); a v3 book is a v2 book only if it has no
//! conditional order ([`book_v3_to_v2`]).

use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::codec::{decode, encode_into};
use crate::matching::{MarketConfig, ModuleError, OpenOrder, OrderOptions, PlaceOrder, Trigger};
use crate::types::OrderId;

/// The state version of the "book v1" format.
pub const BOOK_STATE_V1: u32 = 1;

/// An order resting in a book: the very order a `Orders` query reports, so
/// the snapshot format and the query answer cannot drift apart.
pub type BookOrder = OpenOrder;

impl OpenOrder {
    pub fn remaining_lots(&self) -> u64 {
        self.qty_lots - self.filled_lots
    }
}

/// A decoded "book v1" snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookSnapshotV1 {
    pub config: MarketConfig,
    pub last_trade_id: u64,
    pub orders: Vec<BookOrder>,
}

/// Append a "book v1" snapshot; `orders` must be in the canonical order and
/// yield exactly `count` orders. Streams them: nothing is collected.
pub fn write_book_v1<'a>(
    config: &MarketConfig,
    last_trade_id: u64,
    count: usize,
    orders: impl Iterator<Item = &'a BookOrder>,
    out: &mut Vec<u8>,
) {
    // postcard writes a struct as its fields in order and a sequence as a varint
    // length then its elements, so this is byte for byte `BookSnapshotV1`.
    encode_into(config, out);
    encode_into(&last_trade_id, out);
    encode_into(&(count as u64), out);
    let mut written = 0;
    for order in orders {
        encode_into(order, out);
        written += 1;
    }
    debug_assert_eq!(written, count, "the order count must match the orders written");
}

/// Decode a "book v1" snapshot and check it is in canonical order with
/// positive remaining quantities and no repeated order id.
pub fn read_book_v1(bytes: &[u8]) -> Result<BookSnapshotV1, ModuleError> {
    let snapshot: BookSnapshotV1 =
        decode(bytes).map_err(|error| ModuleError::new(alloc::format!("book v1 snapshot: {error}")))?;
    let mut ids: Vec<OrderId> = snapshot.orders.iter().map(|o| o.order_id).collect();
    ids.sort_unstable();
    if ids.windows(2).any(|w| w[0] == w[1]) {
        return Err(ModuleError::new("book v1 snapshot repeats an order id"));
    }
    for pair in snapshot.orders.windows(2) {
        if (pair[0].side, pair[0].price_ticks) > (pair[1].side, pair[1].price_ticks) {
            return Err(ModuleError::new("book v1 snapshot orders are not in canonical order"));
        }
    }
    if let Some(order) = snapshot.orders.iter().find(|o| o.filled_lots >= o.qty_lots) {
        return Err(ModuleError::new(alloc::format!("book v1 snapshot order {} has nothing left", order.order_id)));
    }
    Ok(snapshot)
}

/// The state version of the "book v2" format.
pub const BOOK_STATE_V2: u32 = 2;

/// A resting order of "book v2".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookOrderV2 {
    pub order: BookOrder,
    /// Iceberg: the most the book shows at once.
    pub display_lots: Option<u64>,
    /// What the book shows of it now: the remaining quantity for a plain
    /// order, at most `display_lots` for an iceberg; never zero.
    pub shown_lots: u64,
    /// A `gtd` order's expire time, in nanoseconds since the epoch.
    pub expire_time_ns: Option<u64>,
}

impl BookOrderV2 {
    /// A plain order: all of it shown, no expiry.
    pub fn plain(order: BookOrder) -> BookOrderV2 {
        let shown_lots = order.remaining_lots();
        BookOrderV2 { order, display_lots: None, shown_lots, expire_time_ns: None }
    }

    pub fn is_plain(&self) -> bool {
        self.display_lots.is_none() && self.expire_time_ns.is_none()
    }
}

/// A decoded "book v2" snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookSnapshotV2 {
    pub config: MarketConfig,
    pub last_trade_id: u64,
    pub orders: Vec<BookOrderV2>,
}

/// Append a "book v2" snapshot, as [`write_book_v1`] does a v1 one.
pub fn write_book_v2<'a>(
    config: &MarketConfig,
    last_trade_id: u64,
    count: usize,
    orders: impl Iterator<Item = &'a BookOrderV2>,
    out: &mut Vec<u8>,
) {
    encode_into(config, out);
    encode_into(&last_trade_id, out);
    encode_into(&(count as u64), out);
    let mut written = 0;
    for order in orders {
        encode_into(order, out);
        written += 1;
    }
    debug_assert_eq!(written, count, "the order count must match the orders written");
}

/// Decode a "book v2" snapshot with the checks of [`read_book_v1`], and that
/// each order shows a part it has (an iceberg's at most its display quantity).
pub fn read_book_v2(bytes: &[u8]) -> Result<BookSnapshotV2, ModuleError> {
    let snapshot: BookSnapshotV2 =
        decode(bytes).map_err(|error| ModuleError::new(alloc::format!("book v2 snapshot: {error}")))?;
    check_v2_orders(&snapshot.orders)?;
    Ok(snapshot)
}

/// The checks [`read_book_v2`] makes, for a module that decodes in its own way.
pub fn check_v2_orders(orders: &[BookOrderV2]) -> Result<(), ModuleError> {
    let mut ids: Vec<OrderId> = orders.iter().map(|o| o.order.order_id).collect();
    ids.sort_unstable();
    if ids.windows(2).any(|w| w[0] == w[1]) {
        return Err(ModuleError::new("book v2 snapshot repeats an order id"));
    }
    for pair in orders.windows(2) {
        if (pair[0].order.side, pair[0].order.price_ticks) > (pair[1].order.side, pair[1].order.price_ticks) {
            return Err(ModuleError::new("book v2 snapshot orders are not in canonical order"));
        }
    }
    for entry in orders {
        let order = &entry.order;
        let remaining = order.qty_lots.saturating_sub(order.filled_lots);
        let shows_what_it_has = match entry.display_lots {
            None => remaining > 0 && entry.shown_lots == remaining,
            Some(display) => entry.shown_lots > 0 && entry.shown_lots <= display.min(remaining),
        };
        if !shows_what_it_has {
            return Err(ModuleError::new(alloc::format!(
                "book v2 snapshot order {} shows {} of what it has",
                order.order_id,
                entry.shown_lots
            )));
        }
    }
    Ok(())
}

/// A v1 book as v2: the same orders, none with options.
pub fn book_v1_to_v2(v1: BookSnapshotV1) -> BookSnapshotV2 {
    BookSnapshotV2 {
        config: v1.config,
        last_trade_id: v1.last_trade_id,
        orders: v1.orders.into_iter().map(BookOrderV2::plain).collect(),
    }
}

/// A v2 book as v1, if no order has an option v1 cannot hold.
pub fn book_v2_to_v1(v2: BookSnapshotV2) -> Result<BookSnapshotV1, ModuleError> {
    if let Some(entry) = v2.orders.iter().find(|entry| !entry.is_plain()) {
        return Err(ModuleError::new(alloc::format!(
            "order {} is an iceberg or has an expire time, which this module cannot keep; cancel such orders before the swap",
            entry.order.order_id
        )));
    }
    Ok(BookSnapshotV1 {
        config: v2.config,
        last_trade_id: v2.last_trade_id,
        orders: v2.orders.into_iter().map(|entry| entry.order).collect(),
    })
}

/// The state version of the "book v3" format.
pub const BOOK_STATE_V3: u32 = 3;

/// A conditional order of "book v3": what it becomes, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConditionalOrder {
    pub order: PlaceOrder,
    pub options: OrderOptions,
    pub trigger: Trigger,
}

/// A decoded "book v3" snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookSnapshotV3 {
    pub book: BookSnapshotV2,
    /// By ascending order id.
    pub conditional: Vec<ConditionalOrder>,
    pub last_price_ticks: Option<u64>,
    pub mark_price_ticks: Option<u64>,
}

/// Append a "book v3" snapshot: the v2 part, then the rest.
#[allow(clippy::too_many_arguments)]
pub fn write_book_v3<'a>(
    config: &MarketConfig,
    last_trade_id: u64,
    count: usize,
    orders: impl Iterator<Item = &'a BookOrderV2>,
    conditional: &[&ConditionalOrder],
    last_price_ticks: Option<u64>,
    mark_price_ticks: Option<u64>,
    out: &mut Vec<u8>,
) {
    write_book_v2(config, last_trade_id, count, orders, out);
    encode_into(&conditional, out);
    encode_into(&last_price_ticks, out);
    encode_into(&mark_price_ticks, out);
}

/// Decode a "book v3" snapshot with the checks of [`read_book_v2`], and that
/// conditional orders come by ascending id, unique across the whole book.
pub fn read_book_v3(bytes: &[u8]) -> Result<BookSnapshotV3, ModuleError> {
    let snapshot: BookSnapshotV3 =
        decode(bytes).map_err(|error| ModuleError::new(alloc::format!("book v3 snapshot: {error}")))?;
    check_v2_orders(&snapshot.book.orders)?;
    if snapshot.conditional.windows(2).any(|w| w[0].order.order_id >= w[1].order.order_id) {
        return Err(ModuleError::new("book v3 conditional orders are not by ascending id"));
    }
    if let Some(entry) =
        snapshot.conditional.iter().find(|c| snapshot.book.orders.iter().any(|o| o.order.order_id == c.order.order_id))
    {
        return Err(ModuleError::new(alloc::format!("book v3 snapshot holds order {} twice", entry.order.order_id)));
    }
    Ok(snapshot)
}

/// A v2 book as v3: no conditional orders, no prices seen yet.
pub fn book_v2_to_v3(book: BookSnapshotV2) -> BookSnapshotV3 {
    BookSnapshotV3 { book, conditional: Vec::new(), last_price_ticks: None, mark_price_ticks: None }
}

/// A v3 book as v2, if it holds no conditional order.
pub fn book_v3_to_v2(v3: BookSnapshotV3) -> Result<BookSnapshotV2, ModuleError> {
    if let Some(entry) = v3.conditional.first() {
        return Err(ModuleError::new(alloc::format!(
            "order {} is a conditional order, which this module cannot keep; cancel such orders before the swap",
            entry.order.order_id
        )));
    }
    Ok(v3.book)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{SelfTradePrevention, Side, TimeInForce, UserId};

    fn order(id: u64, side: Side, price: u64) -> BookOrder {
        BookOrder {
            order_id: OrderId(id),
            user_id: UserId(1),
            side,
            price_ticks: price,
            qty_lots: 5,
            filled_lots: 1,
            time_in_force: TimeInForce::Gtc,
            self_trade_prevention: SelfTradePrevention::CancelTaker,
        }
    }

    #[test]
    fn streamed_bytes_equal_the_struct_encoding() {
        let orders = vec![order(1, Side::Buy, 10), order(2, Side::Buy, 11), order(3, Side::Sell, 12)];
        let snapshot = BookSnapshotV1 { config: MarketConfig::default(), last_trade_id: 9, orders: orders.clone() };
        let mut streamed = Vec::new();
        write_book_v1(&snapshot.config, 9, orders.len(), orders.iter(), &mut streamed);
        assert_eq!(streamed, crate::codec::encode(&snapshot));
        assert_eq!(read_book_v1(&streamed).unwrap(), snapshot);
    }

    #[test]
    fn v2_round_trips_and_converts_to_v1_only_without_options() {
        let plain = BookOrderV2::plain(order(1, Side::Buy, 10));
        let iceberg =
            BookOrderV2 { display_lots: Some(2), shown_lots: 2, ..BookOrderV2::plain(order(2, Side::Sell, 12)) };
        let snapshot = BookSnapshotV2 {
            config: MarketConfig::default(),
            last_trade_id: 3,
            orders: vec![plain.clone(), iceberg.clone()],
        };
        let mut streamed = Vec::new();
        write_book_v2(&snapshot.config, 3, 2, snapshot.orders.iter(), &mut streamed);
        assert_eq!(streamed, crate::codec::encode(&snapshot));
        assert_eq!(read_book_v2(&streamed).unwrap(), snapshot);
        assert!(book_v2_to_v1(snapshot.clone()).unwrap_err().message.contains("order 2"));
        let v1 =
            BookSnapshotV1 { config: MarketConfig::default(), last_trade_id: 3, orders: vec![order(1, Side::Buy, 10)] };
        assert_eq!(book_v2_to_v1(book_v1_to_v2(v1.clone())).unwrap(), v1);
        assert_eq!(book_v1_to_v2(v1).orders, vec![plain]);
    }

    #[test]
    fn v2_orders_must_show_what_they_have() {
        let base = BookOrderV2::plain(order(1, Side::Buy, 10)); // 4 remaining
        for (display, shown, valid) in [
            (None, 4, true),
            (None, 3, false),
            (Some(2), 2, true),
            (Some(2), 1, true),
            (Some(2), 3, false),
            (Some(9), 4, true),
            (Some(9), 5, false),
            (Some(2), 0, false),
            (Some(0), 0, false),
        ] {
            let entry = BookOrderV2 { display_lots: display, shown_lots: shown, ..base.clone() };
            assert_eq!(check_v2_orders(&[entry]).is_ok(), valid, "display {display:?} shown {shown}");
        }
    }

    #[test]
    fn non_canonical_snapshots_are_refused() {
        let orders = vec![order(1, Side::Sell, 12), order(2, Side::Buy, 11)];
        let bytes = crate::codec::encode(&BookSnapshotV1 { config: MarketConfig::default(), last_trade_id: 0, orders });
        assert!(read_book_v1(&bytes).is_err());
    }
}

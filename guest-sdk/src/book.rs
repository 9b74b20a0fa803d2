//! A shared snapshot format for order books, "book v1", so matching modules
//! with different rules can take over each other's state in a hot swap (and
//! swap back): every rule set that keeps resting limit orders in per-price
//! FIFO queues can read and write it.
//!
//! Layout (postcard): the market config, the last trade id, then the resting
//! orders as a length-prefixed sequence: bids then asks, each by ascending
//! price, each level oldest first. That order is canonical: equal books give
//! equal bytes.

use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::codec::{decode, encode_into};
use crate::matching::{MarketConfig, ModuleError, OpenOrder};
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
    fn non_canonical_snapshots_are_refused() {
        let orders = vec![order(1, Side::Sell, 12), order(2, Side::Buy, 11)];
        let bytes = crate::codec::encode(&BookSnapshotV1 { config: MarketConfig::default(), last_trade_id: 0, orders });
        assert!(read_book_v1(&bytes).is_err());
    }
}

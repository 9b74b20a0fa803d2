//! The snapshot format of the price-time book, version 1.
//!
//! Layout (postcard): the market config, the last trade id, then the resting
//! orders as a length-prefixed sequence: bids then asks, each by ascending
//! price, each level in queue order. That order is canonical, so equal books
//! give equal bytes whatever the slab layout, and restoring by appending each
//! order to its level's tail reproduces every queue exactly.

use exhost_guest_sdk::codec::{decode, encode_into};
use exhost_guest_sdk::{MarketConfig, ModuleError};
use serde::ser::{SerializeSeq, SerializeTuple};
use serde::{Deserialize, Serialize, Serializer};

use crate::book::{Book, RestingOrder};

/// Refuse a configuration whose limits cannot work.
pub fn check_config(config: &MarketConfig) -> Result<(), ModuleError> {
    if config.price_ticks_max == 0 || config.qty_lots_max == 0 {
        return Err(ModuleError::new("price_ticks_max and qty_lots_max must be positive"));
    }
    // Notional = price * qty must fit in u128 with room for sums; u64 * u64 always does,
    // but keep each factor within 2^63 so signed arithmetic downstream cannot overflow.
    if config.price_ticks_max > i64::MAX as u64 || config.qty_lots_max > i64::MAX as u64 {
        return Err(ModuleError::new("price_ticks_max and qty_lots_max must be below 2^63"));
    }
    if config.match_steps_per_command_max == 0 {
        return Err(ModuleError::new("match_steps_per_command_max must be positive"));
    }
    Ok(())
}

/// Serializes the book's orders in canonical order without copying them.
struct Orders<'a>(&'a Book);

impl Serialize for Orders<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.resting_count()))?;
        for order in self.0.all_orders() {
            seq.serialize_element(order)?;
        }
        seq.end()
    }
}

struct SnapshotRef<'a> {
    config: &'a MarketConfig,
    last_trade_id: u64,
    orders: Orders<'a>,
}

impl Serialize for SnapshotRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut tuple = serializer.serialize_tuple(3)?;
        tuple.serialize_element(self.config)?;
        tuple.serialize_element(&self.last_trade_id)?;
        tuple.serialize_element(&self.orders)?;
        tuple.end()
    }
}

#[derive(Deserialize)]
struct SnapshotOwned {
    config: MarketConfig,
    last_trade_id: u64,
    orders: Vec<RestingOrder>,
}

pub fn write(config: &MarketConfig, last_trade_id: u64, book: &Book, out: &mut Vec<u8>) {
    encode_into(&SnapshotRef { config, last_trade_id, orders: Orders(book) }, out);
}

pub fn read(bytes: &[u8]) -> Result<(MarketConfig, u64, Book), ModuleError> {
    let snapshot: SnapshotOwned =
        decode(bytes).map_err(|error| ModuleError::new(format!("price-time snapshot v1: {error}")))?;
    check_config(&snapshot.config)?;
    let mut book = Book::default();
    for order in snapshot.orders {
        if order.remaining_lots() == 0 || order.filled_lots > order.qty_lots {
            return Err(ModuleError::new(format!("snapshot order {} has nothing left", order.order_id)));
        }
        if book.contains(order.order_id) {
            return Err(ModuleError::new(format!("snapshot repeats order {}", order.order_id)));
        }
        book.insert(order);
    }
    book.forget_changes();
    book.check_invariants().map_err(|error| ModuleError::new(format!("snapshot is inconsistent: {error}")))?;
    Ok((snapshot.config, snapshot.last_trade_id, book))
}

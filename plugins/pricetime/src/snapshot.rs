//! The price-time book's snapshot: the SDK's shared "book v2" format (see
//! `exhost_guest_sdk::book`), so other book modules can take over its state;
//! "book v1", what it wrote before order options, it migrates.
//! Its order is canonical, so equal books give equal bytes whatever the slab
//! layout, and restoring by appending each order to its level's tail
//! reproduces every queue exactly; `Book::from_canonical` builds it in bulk.

use exhost_guest_sdk::book::{BookSnapshotV1, BookSnapshotV2, book_v1_to_v2, write_book_v2};
use exhost_guest_sdk::codec::decode;
use exhost_guest_sdk::{MarketConfig, ModuleError};

use crate::book::Book;

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

pub fn write(config: &MarketConfig, last_trade_id: u64, book: &Book, out: &mut Vec<u8>) {
    write_book_v2(config, last_trade_id, book.resting_count(), book.all_orders(), out);
}

pub fn read(bytes: &[u8]) -> Result<(MarketConfig, u64, Book), ModuleError> {
    // Not `read_book_v2`: its checks (canonical order, what each order
    // shows, no repeated id) are all made by the bulk build too, and sorting
    // every id twice was a fifth of a hot swap's pause.
    let snapshot: BookSnapshotV2 =
        decode(bytes).map_err(|error| ModuleError::new(format!("book v2 snapshot: {error}")))?;
    build(snapshot)
}

/// A "book v1" snapshot, as the book of the same orders with no options.
pub fn read_v1(bytes: &[u8]) -> Result<(MarketConfig, u64, Book), ModuleError> {
    let snapshot: BookSnapshotV1 =
        decode(bytes).map_err(|error| ModuleError::new(format!("book v1 snapshot: {error}")))?;
    build(book_v1_to_v2(snapshot))
}

fn build(snapshot: BookSnapshotV2) -> Result<(MarketConfig, u64, Book), ModuleError> {
    check_config(&snapshot.config)?;
    let book = Book::from_canonical(snapshot.orders)
        .map_err(|error| ModuleError::new(format!("snapshot is inconsistent: {error}")))?;
    debug_assert_eq!(book.check_invariants(), Ok(()));
    Ok((snapshot.config, snapshot.last_trade_id, book))
}

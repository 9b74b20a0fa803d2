//! The price-time book's snapshot: the SDK's shared "book v3" format (see
//! `exhost_guest_sdk::book`), so other book modules can take over its state;
//! "book v1" (before order options) and "book v2" (before conditional
//! orders), what it wrote before, it migrates.
//! Its order is canonical, so equal books give equal bytes whatever the slab
//! layout, and restoring by appending each order to its level's tail
//! reproduces every queue exactly; `Book::from_canonical` builds it in bulk.

use exhost_guest_sdk::book::{
    BookSnapshotV1, BookSnapshotV2, BookSnapshotV3, ConditionalOrder, book_v1_to_v2, book_v2_to_v3, write_book_v3,
};
use exhost_guest_sdk::codec::decode;
use exhost_guest_sdk::{MarketConfig, ModuleError};

use crate::book::Book;
use crate::conditional::Conditional;

/// What a snapshot holds.
pub type State = (MarketConfig, u64, Book, Conditional);

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

pub fn write(config: &MarketConfig, last_trade_id: u64, book: &Book, conditional: &Conditional, out: &mut Vec<u8>) {
    let waiting: Vec<&ConditionalOrder> = conditional.all().collect();
    write_book_v3(
        config,
        last_trade_id,
        book.resting_count(),
        book.all_orders(),
        &waiting,
        conditional.last_price_ticks,
        conditional.mark_price_ticks,
        out,
    );
}

pub fn read(bytes: &[u8]) -> Result<State, ModuleError> {
    // Not `read_book_v3`: its checks of the book part (canonical order, what
    // each order shows, no repeated id) are all made by the bulk build too,
    // and sorting every id twice was a fifth of a hot swap's pause.
    let snapshot: BookSnapshotV3 =
        decode(bytes).map_err(|error| ModuleError::new(format!("book v3 snapshot: {error}")))?;
    build(snapshot)
}

/// A "book v2" snapshot, as the book of the same orders with no conditional ones.
pub fn read_v2(bytes: &[u8]) -> Result<State, ModuleError> {
    let snapshot: BookSnapshotV2 =
        decode(bytes).map_err(|error| ModuleError::new(format!("book v2 snapshot: {error}")))?;
    build(book_v2_to_v3(snapshot))
}

/// A "book v1" snapshot, as the book of the same orders with no options.
pub fn read_v1(bytes: &[u8]) -> Result<State, ModuleError> {
    let snapshot: BookSnapshotV1 =
        decode(bytes).map_err(|error| ModuleError::new(format!("book v1 snapshot: {error}")))?;
    build(book_v2_to_v3(book_v1_to_v2(snapshot)))
}

fn build(snapshot: BookSnapshotV3) -> Result<State, ModuleError> {
    let BookSnapshotV3 { book: v2, conditional: waiting, last_price_ticks, mark_price_ticks } = snapshot;
    check_config(&v2.config)?;
    let book = Book::from_canonical(v2.orders)
        .map_err(|error| ModuleError::new(format!("snapshot is inconsistent: {error}")))?;
    debug_assert_eq!(book.check_invariants(), Ok(()));
    let mut conditional = Conditional::default();
    let mut previous = None;
    for entry in waiting {
        let order_id = entry.order.order_id;
        if previous.is_some_and(|previous| previous >= order_id) || book.contains(order_id) {
            return Err(ModuleError::new(format!(
                "snapshot is inconsistent: conditional order {order_id} is out of place"
            )));
        }
        previous = Some(order_id);
        conditional.insert(entry);
    }
    conditional.last_price_ticks = last_price_ticks;
    conditional.mark_price_ticks = mark_price_ticks;
    Ok((v2.config, v2.last_trade_id, book, conditional))
}

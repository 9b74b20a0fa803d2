//! The order book's storage: a slab of resting orders linked into FIFO queues,
//! one queue per price level, levels in ordered maps, and two ordered indexes.
//!
//! Invariants (checked by `check_invariants` in tests):
//! - every resting order is in exactly one level queue, the index and the
//!   per-user index, and nowhere else; a `gtd` order is in the expiry index;
//! - an order shows all it has left, or (an iceberg) a positive part of it no
//!   larger than its display quantity;
//! - a level's `qty_lots` is the sum of what its orders show, and a level
//!   exists only while it holds at least one order;
//! - bids and asks never cross (best bid < best ask) between commands.
//!
//! Only ordered collections are used: iteration order is part of the state's
//! meaning (queue priority, snapshot bytes), so it must never depend on a seed.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

use exhost_guest_sdk::{OrderId, Side, UserId};

/// The end of a queue.
const NIL: u32 = u32::MAX;

/// An order resting in the book: the SDK's shared "book v2" layout.
pub use exhost_guest_sdk::book::BookOrderV2 as RestingOrder;

struct Slot {
    order: RestingOrder,
    prev: u32,
    next: u32,
}

/// How many slots a chunk of the slab holds.
const CHUNK_SLOTS: usize = 4_096;

/// The slots of resting orders, in chunks of fixed capacity, addressed by a
/// `u32` slot id.
///
/// Why chunks: one `Vec` of every slot must move all of them when it grows,
/// in a single command, so a command's cost (its fuel, inside wasm) grew with
/// the book: the order that grew a 524,288-order book's slab cost 29 million
/// units of fuel, and at 1,048,576 orders more than the 50 million a command
/// may use, so every order needing a new slot was rejected as
/// `module_out_of_fuel`. Here growing adds one chunk and never moves a slot.
#[derive(Default)]
struct Slab {
    chunks: Vec<Vec<Slot>>,
}

impl Slab {
    fn len(&self) -> usize {
        self.chunks.last().map_or(0, |last| (self.chunks.len() - 1) * CHUNK_SLOTS + last.len())
    }

    fn push(&mut self, slot: Slot) {
        if self.chunks.last().is_none_or(|last| last.len() == CHUNK_SLOTS) {
            self.chunks.push(Vec::with_capacity(CHUNK_SLOTS));
        }
        self.chunks.last_mut().expect("a chunk with room exists").push(slot);
    }
}

impl core::ops::Index<u32> for Slab {
    type Output = Slot;
    fn index(&self, slot_id: u32) -> &Slot {
        &self.chunks[slot_id as usize / CHUNK_SLOTS][slot_id as usize % CHUNK_SLOTS]
    }
}

impl core::ops::IndexMut<u32> for Slab {
    fn index_mut(&mut self, slot_id: u32) -> &mut Slot {
        &mut self.chunks[slot_id as usize / CHUNK_SLOTS][slot_id as usize % CHUNK_SLOTS]
    }
}

/// A price level: a FIFO queue threaded through the slab.
#[derive(Clone, Copy, Debug)]
pub struct Level {
    head: u32,
    tail: u32,
    /// Sum of what the orders in the queue show.
    pub qty_lots: u64,
}

/// A handle to a resting order, valid until the order leaves the book.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handle(u32);

#[derive(Default)]
pub struct Book {
    slots: Slab,
    free: Vec<u32>,
    index: BTreeMap<OrderId, u32>,
    by_user: BTreeSet<(UserId, OrderId)>,
    /// `gtd` orders by expire time, then id: the order they expire in.
    expiries: BTreeSet<(u64, OrderId)>,
    bids: BTreeMap<u64, Level>,
    asks: BTreeMap<u64, Level>,
    /// Every change to a level's total during the current command, in the
    /// order they happened, as `(side, price, total before, total after)`
    /// (a level may appear more than once). Recorded where the level is
    /// already in hand, so reporting changes costs no extra search. Scratch,
    /// not state: empty between commands, and not kept while restoring.
    touched: Vec<(Side, u64, u64, u64)>,
    /// Whether changes are being recorded (during a command, not a restore).
    tracking: bool,
}

impl Book {
    fn record(&mut self, side: Side, price: u64, before: u64, after: u64) {
        if self.tracking {
            self.touched.push((side, price, before, after));
        }
    }

    /// Start recording level changes (at the start of a command).
    pub fn track_changes(&mut self) {
        self.tracking = true;
        self.touched.clear();
    }

    /// Hand each level whose total the command changed, with its new total,
    /// to `emit`: bids then asks, each by ascending price; and forget them.
    pub fn drain_changed_levels(&mut self, mut emit: impl FnMut(Side, u64, u64)) {
        self.tracking = false;
        // A stable sort keeps each level's changes in the order they happened:
        // the first holds its total before the command, the last its total after.
        self.touched.sort_by_key(|&(side, price, _, _)| (side, price));
        for group in self.touched.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1)) {
            let (side, price, before, _) = group[0];
            let after = group[group.len() - 1].3;
            if after != before {
                emit(side, price, after);
            }
        }
        self.touched.clear();
    }

    pub fn resting_count(&self) -> usize {
        self.index.len()
    }

    pub fn contains(&self, order_id: OrderId) -> bool {
        self.index.contains_key(&order_id)
    }

    pub fn find(&self, order_id: OrderId) -> Option<Handle> {
        self.index.get(&order_id).map(|&slot| Handle(slot))
    }

    pub fn order(&self, handle: Handle) -> &RestingOrder {
        &self.slots[handle.0].order
    }

    fn levels(&self, side: Side) -> &BTreeMap<u64, Level> {
        match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        }
    }

    fn levels_mut(&mut self, side: Side) -> &mut BTreeMap<u64, Level> {
        match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        }
    }

    /// The best price on a side: highest bid, lowest ask.
    pub fn best_price(&self, side: Side) -> Option<u64> {
        match side {
            Side::Buy => self.bids.last_key_value().map(|(&price, _)| price),
            Side::Sell => self.asks.first_key_value().map(|(&price, _)| price),
        }
    }

    /// The order first in time at the best price of a side.
    pub fn best_order(&self, side: Side) -> Option<Handle> {
        let price = self.best_price(side)?;
        Some(Handle(self.levels(side)[&price].head))
    }

    /// The order after this one in its level's queue.
    pub fn next_in_level(&self, handle: Handle) -> Option<Handle> {
        let next = self.slots[handle.0].next;
        (next != NIL).then_some(Handle(next))
    }

    /// Levels of a side from best to worst, as `(price, level)`.
    pub fn levels_best_first(&self, side: Side) -> Box<dyn Iterator<Item = (u64, &Level)> + '_> {
        match side {
            Side::Buy => Box::new(self.bids.iter().rev().map(|(&price, level)| (price, level))),
            Side::Sell => Box::new(self.asks.iter().map(|(&price, level)| (price, level))),
        }
    }

    /// The first order of a level.
    pub fn level_head(&self, level: &Level) -> Handle {
        Handle(level.head)
    }

    /// Orders of one user, by order id.
    pub fn user_orders(&self, user_id: UserId) -> impl Iterator<Item = OrderId> + '_ {
        self.by_user.range((user_id, OrderId(0))..=(user_id, OrderId(u64::MAX))).map(|&(_, order_id)| order_id)
    }

    /// Every resting order: bids then asks, each by ascending price, each level in queue order.
    pub fn all_orders(&self) -> impl Iterator<Item = &RestingOrder> + '_ {
        self.bids.values().chain(self.asks.values()).flat_map(move |level| {
            let mut cursor = level.head;
            core::iter::from_fn(move || {
                if cursor == NIL {
                    return None;
                }
                let slot = &self.slots[cursor];
                cursor = slot.next;
                Some(&slot.order)
            })
        })
    }

    /// The earliest expire time of a `gtd` order in the book.
    pub fn next_expiry(&self) -> Option<u64> {
        self.expiries.first().map(|&(expire_time_ns, _)| expire_time_ns)
    }

    /// The `gtd` order that expires first, if it expires at or before `ts_ns`.
    pub fn first_expired(&self, ts_ns: u64) -> Option<Handle> {
        let &(expire_time_ns, order_id) = self.expiries.first()?;
        (expire_time_ns <= ts_ns).then(|| self.find(order_id).expect("an expiring order rests"))
    }

    /// A book holding `orders`, given in the canonical order of "book v2"
    /// (bids then asks, each by ascending price, each level in queue order).
    ///
    /// Restores and hot swaps take this path, so it is built in bulk rather
    /// than order by order: queues are linked in one pass, and the ordered
    /// maps are built from sorted runs (a `BTreeMap` built from sorted input is
    /// filled node by node, with no search per key). Everything the invariants
    /// ask for is checked on the way, so a book built here holds them all.
    pub fn from_canonical(orders: Vec<RestingOrder>) -> Result<Book, String> {
        let count = orders.len();
        let mut slots = Slab::default();
        let mut bids: Vec<(u64, Level)> = Vec::new();
        let mut asks: Vec<(u64, Level)> = Vec::new();
        let mut index: Vec<(OrderId, u32)> = Vec::with_capacity(count);
        let mut by_user: Vec<(UserId, OrderId)> = Vec::with_capacity(count);
        let mut expiries: Vec<(u64, OrderId)> = Vec::new();
        let mut current: Option<(Side, u64)> = None;
        for entry in orders {
            let slot_id = u32::try_from(slots.len()).ok().filter(|&id| id != NIL).ok_or("too many orders")?;
            shows_what_it_has(&entry)?;
            let order = &entry.order;
            let shown = entry.shown_lots;
            let key = (order.side, order.price_ticks);
            let levels = match order.side {
                Side::Buy => &mut bids,
                Side::Sell => &mut asks,
            };
            let mut prev = NIL;
            if current == Some(key) {
                let level = &mut levels.last_mut().expect("the current level exists").1;
                prev = level.tail;
                slots[prev].next = slot_id;
                level.tail = slot_id;
                level.qty_lots = level.qty_lots.checked_add(shown).ok_or("a level's quantity overflows")?;
            } else {
                if current.is_some_and(|current| current > key) {
                    return Err(format!("order {} is out of canonical order", order.order_id));
                }
                current = Some(key);
                levels.push((order.price_ticks, Level { head: slot_id, tail: slot_id, qty_lots: shown }));
            }
            index.push((order.order_id, slot_id));
            by_user.push((order.user_id, order.order_id));
            if let Some(expire_time_ns) = entry.expire_time_ns {
                expiries.push((expire_time_ns, order.order_id));
            }
            slots.push(Slot { order: entry, prev, next: NIL });
        }
        index.sort_unstable_by_key(|&(order_id, _)| order_id);
        if let Some(pair) = index.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            return Err(format!("order {} appears twice", pair[0].0));
        }
        by_user.sort_unstable();
        expiries.sort_unstable();
        if let (Some((bid, _)), Some((ask, _))) = (bids.last(), asks.first())
            && bid >= ask
        {
            return Err(format!("book crossed: bid {bid} >= ask {ask}"));
        }
        Ok(Book {
            slots,
            free: Vec::new(),
            index: index.into_iter().collect(),
            by_user: by_user.into_iter().collect(),
            expiries: expiries.into_iter().collect(),
            bids: bids.into_iter().collect(),
            asks: asks.into_iter().collect(),
            touched: Vec::new(),
            tracking: false,
        })
    }

    /// Put an order at the back of its price level. The caller guarantees the
    /// id is new and that the order shows what it has.
    pub fn insert(&mut self, order: RestingOrder) -> Handle {
        debug_assert_eq!(shows_what_it_has(&order), Ok(()));
        debug_assert!(!self.index.contains_key(&order.order.order_id));
        let (order_id, user_id) = (order.order.order_id, order.order.user_id);
        self.by_user.insert((user_id, order_id));
        if let Some(expire_time_ns) = order.expire_time_ns {
            self.expiries.insert((expire_time_ns, order_id));
        }
        let slot = Slot { order, prev: NIL, next: NIL };
        let slot_id = match self.free.pop() {
            Some(free) => {
                self.slots[free] = slot;
                free
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        self.index.insert(order_id, slot_id);
        self.link_at_tail(slot_id);
        Handle(slot_id)
    }

    /// Append a slot that is in no queue to the back of its level, adding what it shows.
    fn link_at_tail(&mut self, slot_id: u32) {
        let (side, price, shown) = {
            let order = &self.slots[slot_id].order;
            (order.order.side, order.order.price_ticks, order.shown_lots)
        };
        let level = self.levels_mut(side).entry(price).or_insert(Level { head: NIL, tail: NIL, qty_lots: 0 });
        let before = level.qty_lots;
        let old_tail = level.tail;
        level.tail = slot_id;
        if old_tail == NIL {
            level.head = slot_id;
        }
        level.qty_lots += shown;
        let after = level.qty_lots;
        if old_tail != NIL {
            self.slots[old_tail].next = slot_id;
        }
        let slot = &mut self.slots[slot_id];
        slot.prev = old_tail;
        slot.next = NIL;
        self.record(side, price, before, after);
    }

    /// Take a slot out of its level's queue, taking away what it shows.
    fn unlink(&mut self, slot_id: u32) {
        let (prev, next) = {
            let slot = &self.slots[slot_id];
            (slot.prev, slot.next)
        };
        let (side, price, shown) = {
            let order = &self.slots[slot_id].order;
            (order.order.side, order.order.price_ticks, order.shown_lots)
        };
        if prev != NIL {
            self.slots[prev].next = next;
        }
        if next != NIL {
            self.slots[next].prev = prev;
        }
        let Entry::Occupied(mut entry) = self.levels_mut(side).entry(price) else {
            unreachable!("a resting order's level exists")
        };
        let level = entry.get_mut();
        let before = level.qty_lots;
        if level.head == slot_id {
            level.head = next;
        }
        if level.tail == slot_id {
            level.tail = prev;
        }
        level.qty_lots -= shown;
        let after = level.qty_lots;
        if level.head == NIL {
            entry.remove();
        }
        self.record(side, price, before, after);
        let slot = &mut self.slots[slot_id];
        slot.prev = NIL;
        slot.next = NIL;
    }

    /// Take an order out of the book, returning it.
    pub fn remove(&mut self, handle: Handle) -> RestingOrder {
        let slot_id = handle.0;
        self.unlink(slot_id);
        let order = self.slots[slot_id].order.clone();
        self.index.remove(&order.order.order_id);
        self.by_user.remove(&(order.order.user_id, order.order.order_id));
        if let Some(expire_time_ns) = order.expire_time_ns {
            self.expiries.remove(&(expire_time_ns, order.order.order_id));
        }
        self.free.push(slot_id);
        order
    }

    /// Record a fill of `qty_lots` (at most what it shows) against a resting
    /// order; returns the order's state after it. An iceberg whose shown part
    /// is used up while it has more shows its next part at the back of its
    /// level, as if it had just arrived there.
    pub fn fill(&mut self, handle: Handle, qty_lots: u64) -> &RestingOrder {
        let (side, price, refresh) = {
            let entry = &mut self.slots[handle.0].order;
            debug_assert!(qty_lots <= entry.shown_lots);
            entry.order.filled_lots += qty_lots;
            entry.shown_lots -= qty_lots;
            let remaining = entry.order.remaining_lots();
            (entry.order.side, entry.order.price_ticks, entry.shown_lots == 0 && remaining > 0)
        };
        let level = self.levels_mut(side).get_mut(&price).expect("a resting order's level exists");
        let before = level.qty_lots;
        level.qty_lots -= qty_lots;
        self.record(side, price, before, before - qty_lots);
        if refresh {
            // Unlinked while it shows nothing, so the level's total does not move twice.
            self.unlink(handle.0);
            let entry = &mut self.slots[handle.0].order;
            let display = entry.display_lots.expect("only an iceberg shows less than it has");
            entry.shown_lots = display.min(entry.order.remaining_lots());
            self.link_at_tail(handle.0);
        }
        &self.slots[handle.0].order
    }

    /// Lower an order's total quantity in place, keeping its queue position;
    /// an iceberg shows no more than it has left.
    pub fn reduce_qty(&mut self, handle: Handle, new_qty_lots: u64) -> &RestingOrder {
        let (side, price, reduction) = {
            let entry = &mut self.slots[handle.0].order;
            debug_assert!(new_qty_lots > entry.order.filled_lots && new_qty_lots <= entry.order.qty_lots);
            entry.order.qty_lots = new_qty_lots;
            let shown = entry.shown_lots.min(entry.order.remaining_lots());
            let shown = if entry.display_lots.is_some() { shown } else { entry.order.remaining_lots() };
            let reduction = entry.shown_lots - shown;
            entry.shown_lots = shown;
            (entry.order.side, entry.order.price_ticks, reduction)
        };
        let level = self.levels_mut(side).get_mut(&price).expect("a resting order's level exists");
        let before = level.qty_lots;
        level.qty_lots -= reduction;
        self.record(side, price, before, before - reduction);
        &self.slots[handle.0].order
    }

    /// Check every structural invariant; for tests.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut seen = 0usize;
        let mut expiring = 0usize;
        for side in [Side::Buy, Side::Sell] {
            for (&price, level) in self.levels(side) {
                if level.head == NIL {
                    return Err(format!("empty level {price} on {side}"));
                }
                let mut total = 0u64;
                let mut cursor = level.head;
                let mut prev = NIL;
                while cursor != NIL {
                    let slot = &self.slots[cursor];
                    if slot.prev != prev {
                        return Err(format!("broken back link at order {}", slot.order.order.order_id));
                    }
                    let entry = &slot.order;
                    let order = &entry.order;
                    if order.side != side || order.price_ticks != price {
                        return Err(format!("order {} in the wrong level", order.order_id));
                    }
                    shows_what_it_has(entry)?;
                    if self.index.get(&order.order_id) != Some(&cursor) {
                        return Err(format!("order {} missing from the index", order.order_id));
                    }
                    if !self.by_user.contains(&(order.user_id, order.order_id)) {
                        return Err(format!("order {} missing from the user index", order.order_id));
                    }
                    if let Some(expire_time_ns) = entry.expire_time_ns {
                        if !self.expiries.contains(&(expire_time_ns, order.order_id)) {
                            return Err(format!("order {} missing from the expiry index", order.order_id));
                        }
                        expiring += 1;
                    }
                    total += entry.shown_lots;
                    seen += 1;
                    prev = cursor;
                    cursor = slot.next;
                }
                if prev != level.tail {
                    return Err(format!("level {price} tail is wrong"));
                }
                if total != level.qty_lots {
                    return Err(format!("level {price} total {} != sum {total}", level.qty_lots));
                }
            }
        }
        if seen != self.index.len() || seen != self.by_user.len() || expiring != self.expiries.len() {
            return Err(format!(
                "{seen} orders in levels, {} in index, {} in user index; {expiring} expiring, {} in expiry index",
                self.index.len(),
                self.by_user.len(),
                self.expiries.len()
            ));
        }
        if let (Some(bid), Some(ask)) = (self.best_price(Side::Buy), self.best_price(Side::Sell))
            && bid >= ask
        {
            return Err(format!("book crossed: bid {bid} >= ask {ask}"));
        }
        Ok(())
    }
}

/// An order shows all it has left, or (an iceberg) a positive part no larger
/// than its display quantity.
fn shows_what_it_has(entry: &RestingOrder) -> Result<(), String> {
    exhost_guest_sdk::book::check_v2_orders(core::slice::from_ref(entry)).map_err(|error| error.message)
}

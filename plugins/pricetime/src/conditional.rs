//! Conditional orders waiting for their trigger, out of the book, and the two
//! prices they watch.
//!
//! The order in which orders whose triggers are met enter the book: rising
//! triggers before falling ones; rising by ascending trigger price, falling
//! by descending trigger price (the order a moving price meets them); then by
//! order id. Orders watching the mark and the last price are merged in that
//! order. Each source keeps its triggers sorted that way, so the next order
//! to enter is one of four heads, found without a scan.

use std::collections::{BTreeMap, BTreeSet};

use exhost_guest_sdk::book::ConditionalOrder;
use exhost_guest_sdk::{OrderId, OrderType, TriggerBy, UserId};

/// A key that sorts in the order triggers are met: for a rising trigger its
/// price, for a falling one the price's complement.
type Key = (u64, OrderId);

#[derive(Default)]
pub(crate) struct Conditional {
    orders: BTreeMap<OrderId, ConditionalOrder>,
    /// `[mark, last]`, each by `(price, id)` ascending.
    rising: [BTreeSet<Key>; 2],
    /// `[mark, last]`, each by `(u64::MAX - price, id)` ascending.
    falling: [BTreeSet<Key>; 2],
    /// `(expire time, id)` of those with one.
    expiry: BTreeSet<(u64, OrderId)>,
    pub(crate) last_price_ticks: Option<u64>,
    pub(crate) mark_price_ticks: Option<u64>,
}

const fn source(by: TriggerBy) -> usize {
    match by {
        TriggerBy::Mark => 0,
        TriggerBy::Last => 1,
    }
}

fn key(entry: &ConditionalOrder) -> Key {
    let price = entry.trigger.price_ticks;
    (if entry.trigger.rises { price } else { u64::MAX - price }, entry.order.order_id)
}

/// The price an untriggered order is margined at: what it will become, at
/// its limit price, or, for a market order, at its trigger price.
pub(crate) fn margin_price(entry: &ConditionalOrder) -> u64 {
    match entry.order.order_type {
        OrderType::Limit => entry.order.price_ticks,
        OrderType::Market => entry.trigger.price_ticks,
    }
}

impl Conditional {
    pub(crate) fn len(&self) -> usize {
        self.orders.len()
    }

    pub(crate) fn get(&self, order_id: OrderId) -> Option<&ConditionalOrder> {
        self.orders.get(&order_id)
    }

    /// The watched price of `by`, once there is one.
    pub(crate) fn price(&self, by: TriggerBy) -> Option<u64> {
        match by {
            TriggerBy::Mark => self.mark_price_ticks,
            TriggerBy::Last => self.last_price_ticks,
        }
    }

    pub(crate) fn insert(&mut self, entry: ConditionalOrder) {
        let sets = if entry.trigger.rises { &mut self.rising } else { &mut self.falling };
        sets[source(entry.trigger.by)].insert(key(&entry));
        if let Some(expire_time_ns) = entry.options.expire_time_ns {
            self.expiry.insert((expire_time_ns, entry.order.order_id));
        }
        self.orders.insert(entry.order.order_id, entry);
    }

    pub(crate) fn remove(&mut self, order_id: OrderId) -> Option<ConditionalOrder> {
        let entry = self.orders.remove(&order_id)?;
        let sets = if entry.trigger.rises { &mut self.rising } else { &mut self.falling };
        sets[source(entry.trigger.by)].remove(&key(&entry));
        if let Some(expire_time_ns) = entry.options.expire_time_ns {
            self.expiry.remove(&(expire_time_ns, order_id));
        }
        Some(entry)
    }

    /// Change what an untriggered order becomes (its trigger stays).
    pub(crate) fn amend(&mut self, order_id: OrderId, price_ticks: u64, qty_lots: u64) -> Option<&ConditionalOrder> {
        let entry = self.orders.get_mut(&order_id)?;
        entry.order.price_ticks = price_ticks;
        entry.order.qty_lots = qty_lots;
        Some(entry)
    }

    /// The user's untriggered orders, by id.
    pub(crate) fn user_orders(&self, user_id: UserId) -> Vec<OrderId> {
        self.orders.values().filter(|entry| entry.order.user_id == user_id).map(|entry| entry.order.order_id).collect()
    }

    /// All, by id (the snapshot's order).
    pub(crate) fn all(&self) -> impl Iterator<Item = &ConditionalOrder> + '_ {
        self.orders.values()
    }

    /// The next order whose trigger the watched prices meet now, if any.
    pub(crate) fn next_met(&self) -> Option<OrderId> {
        let met = |sets: &[BTreeSet<Key>; 2], rises: bool| {
            [TriggerBy::Mark, TriggerBy::Last]
                .into_iter()
                .filter_map(|by| {
                    let &(sort_price, order_id) = sets[source(by)].first()?;
                    let trigger_price = if rises { sort_price } else { u64::MAX - sort_price };
                    let price = self.price(by)?;
                    let is_met = if rises { price >= trigger_price } else { price <= trigger_price };
                    is_met.then_some((sort_price, order_id))
                })
                .min()
        };
        met(&self.rising, true).or_else(|| met(&self.falling, false)).map(|(_, order_id)| order_id)
    }

    pub(crate) fn next_expiry(&self) -> Option<u64> {
        self.expiry.first().map(|&(expire_time_ns, _)| expire_time_ns)
    }

    /// The untriggered order that expired first by `ts_ns`, if one has.
    pub(crate) fn first_expired(&self, ts_ns: u64) -> Option<OrderId> {
        self.expiry.first().filter(|&&(expire_time_ns, _)| expire_time_ns <= ts_ns).map(|&(_, order_id)| order_id)
    }

    /// Every index agrees with the orders (for tests).
    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        let indexed: usize = self.rising.iter().chain(self.falling.iter()).map(BTreeSet::len).sum();
        if indexed != self.orders.len() {
            return Err(format!("{} trigger keys for {} conditional orders", indexed, self.orders.len()));
        }
        for entry in self.orders.values() {
            let sets = if entry.trigger.rises { &self.rising } else { &self.falling };
            if !sets[source(entry.trigger.by)].contains(&key(entry)) {
                return Err(format!("conditional order {} is not indexed", entry.order.order_id));
            }
        }
        let expiring = self.orders.values().filter(|entry| entry.options.expire_time_ns.is_some()).count();
        if expiring != self.expiry.len() {
            return Err(format!("{} expiry keys for {} expiring conditional orders", self.expiry.len(), expiring));
        }
        Ok(())
    }
}

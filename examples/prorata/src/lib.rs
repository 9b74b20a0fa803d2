//! # Pro-rata matching: an example plugin
//!
//! A matching module written only against `exhost-guest-sdk`. Price priority
//! is as usual (best price first, trades at the resting price), but within a
//! price level an incoming order is **shared among the resting orders in
//! proportion to their remaining size**, not given to the oldest first.
//!
//! Allocation at one level, for `take` lots against eligible orders with
//! remaining sizes `r_i` (total `R`):
//! 1. each order gets `floor(take × r_i / R)`;
//! 2. the lots left over go one at a time to the orders, oldest first, that
//!    still have room, until none is left.
//!
//! The taker's own resting orders are not eligible; if a level holds only the
//! taker's own orders, matching stops there and the taker's remainder is
//! cancelled (`self_trade`), so the book never crosses. Everything else (time
//! in force, amend, cancel, level events, limits) follows the ABI like the
//! reference book, and the state is saved in the SDK's shared "book v1"
//! format, so a market can be switched between this module and the reference
//! price-time module in either direction while it trades: it takes the
//! reference module's "book v3" as long as no order in it is an iceberg,
//! `gtd` or conditional, which pro-rata does not offer (such orders are
//! refused here with `unsupported_order`).

use std::collections::BTreeMap;

use exhost_guest_sdk::book::{
    BOOK_STATE_V1, BOOK_STATE_V2, BOOK_STATE_V3, BookOrder, BookSnapshotV1, book_v2_to_v1, book_v3_to_v2, read_book_v1,
    read_book_v2, read_book_v3, write_book_v1,
};
use exhost_guest_sdk::{
    CommandContext, Level, MarketConfig, MatchingCommand, MatchingEvent, MatchingModule, MatchingQuery,
    MatchingQueryResult, ModuleError, OpenOrder, OrderId, OrderStatus, OrderType, OrderUpdate, PlaceOrder, Reason,
    Side, TimeInForce, Trade, TradeId, UserId, export_matching_module,
};

pub struct ProRataBook {
    config: MarketConfig,
    /// Price to the orders resting there, oldest first.
    bids: BTreeMap<u64, Vec<BookOrder>>,
    asks: BTreeMap<u64, Vec<BookOrder>>,
    /// Where each resting order is.
    index: BTreeMap<OrderId, (Side, u64)>,
    last_trade_id: u64,
}

struct Taker {
    order_id: OrderId,
    user_id: UserId,
    side: Side,
    limit: Option<u64>,
    qty: u64,
    filled: u64,
}

impl Taker {
    fn crosses(&self, price: u64) -> bool {
        match (self.limit, self.side) {
            (None, _) => true,
            (Some(limit), Side::Buy) => price <= limit,
            (Some(limit), Side::Sell) => price >= limit,
        }
    }
}

/// `floor(take × r_i / R)` for each eligible order, then the rest one lot at a
/// time oldest first. `remaining[i]` is `None` for an ineligible order.
pub fn allocate(take: u64, remaining: &[Option<u64>]) -> Vec<u64> {
    let total: u128 = remaining.iter().flatten().map(|&r| r as u128).sum();
    let mut shares: Vec<u64> = remaining
        .iter()
        .map(|r| match r {
            Some(r) if total > 0 => (take as u128 * *r as u128 / total) as u64,
            _ => 0,
        })
        .collect();
    let mut left = take - shares.iter().sum::<u64>();
    while left > 0 {
        let before = left;
        for (share, room) in shares.iter_mut().zip(remaining) {
            if left == 0 {
                break;
            }
            if let Some(room) = room
                && *share < *room
            {
                *share += 1;
                left -= 1;
            }
        }
        if left == before {
            break; // no order has room: take exceeded what is eligible (never, by the caller)
        }
    }
    shares
}

fn update(order: &BookOrder, status: OrderStatus, reason: Option<Reason>) -> MatchingEvent {
    MatchingEvent::Order(OrderUpdate {
        order_id: order.order_id,
        user_id: order.user_id,
        side: order.side,
        price_ticks: order.price_ticks,
        qty_lots: order.qty_lots,
        filled_lots: order.filled_lots,
        status,
        reason,
    })
}

/// A new order refused as it came: nothing changed.
fn refused(p: &PlaceOrder, reason: Reason) -> MatchingEvent {
    MatchingEvent::Order(OrderUpdate {
        order_id: p.order_id,
        user_id: p.user_id,
        side: p.side,
        price_ticks: p.price_ticks,
        qty_lots: p.qty_lots,
        filled_lots: 0,
        status: OrderStatus::Rejected,
        reason: Some(reason),
    })
}

impl ProRataBook {
    fn side(&self, side: Side) -> &BTreeMap<u64, Vec<BookOrder>> {
        match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        }
    }

    fn side_mut(&mut self, side: Side) -> &mut BTreeMap<u64, Vec<BookOrder>> {
        match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        }
    }

    /// Opposite levels that cross the taker, best first.
    fn crossing_prices(&self, taker: &Taker) -> Vec<u64> {
        let levels = self.side(taker.side.opposite());
        let prices: Box<dyn Iterator<Item = &u64>> = match taker.side {
            Side::Buy => Box::new(levels.keys()),
            Side::Sell => Box::new(levels.keys().rev()),
        };
        prices.copied().take_while(|&price| taker.crosses(price)).collect()
    }

    fn depth(&self) -> BTreeMap<(Side, u64), u64> {
        let mut depth = BTreeMap::new();
        for side in [Side::Buy, Side::Sell] {
            for (price, orders) in self.side(side) {
                depth.insert((side, *price), orders.iter().map(BookOrder::remaining_lots).sum());
            }
        }
        depth
    }

    /// What a fill-or-kill taker could fill, stopping like matching would.
    fn fillable(&self, taker: &Taker) -> u64 {
        let mut total = 0;
        for price in self.crossing_prices(taker) {
            let orders = &self.side(taker.side.opposite())[&price];
            let eligible: u64 =
                orders.iter().filter(|o| o.user_id != taker.user_id).map(BookOrder::remaining_lots).sum();
            total += eligible;
            if eligible == 0 || total >= taker.qty - taker.filled {
                break;
            }
        }
        total
    }

    /// Returns the reason matching stopped early, if it did.
    fn match_taker(&mut self, taker: &mut Taker, events: &mut Vec<MatchingEvent>) -> Option<Reason> {
        let mut fills = 0u32;
        let fills_max = self.config.match_steps_per_command_max;
        for price in self.crossing_prices(taker) {
            let want = taker.qty - taker.filled;
            if want == 0 {
                return None;
            }
            let maker_side = taker.side.opposite();
            let orders = self.side_mut(maker_side).get_mut(&price).expect("a crossing level exists");
            let remaining: Vec<Option<u64>> =
                orders.iter().map(|o| (o.user_id != taker.user_id).then(|| o.remaining_lots())).collect();
            let eligible: u64 = remaining.iter().flatten().sum();
            if eligible == 0 {
                return Some(Reason::SelfTrade);
            }
            let take = want.min(eligible);
            let shares = allocate(take, &remaining);
            // Under the named fill limit a level is matched whole or not at all.
            let level_fills = shares.iter().filter(|&&share| share > 0).count() as u32;
            if fills + level_fills > fills_max {
                return Some(Reason::FillLimit);
            }
            let mut trades = Vec::new();
            for (order, share) in orders.iter_mut().zip(&shares) {
                if *share == 0 {
                    continue;
                }
                order.filled_lots += share;
                trades.push((order.clone(), *share));
            }
            orders.retain(|o| o.remaining_lots() > 0);
            if orders.is_empty() {
                self.side_mut(maker_side).remove(&price);
            }
            for (maker, qty) in trades {
                fills += 1;
                self.last_trade_id += 1;
                events.push(MatchingEvent::Trade(Trade {
                    trade_id: TradeId(self.last_trade_id),
                    price_ticks: price,
                    qty_lots: qty,
                    taker_side: taker.side,
                    maker_order_id: maker.order_id,
                    maker_user_id: maker.user_id,
                    taker_order_id: taker.order_id,
                    taker_user_id: taker.user_id,
                }));
                taker.filled += qty;
                let done = maker.remaining_lots() == 0;
                if done {
                    self.index.remove(&maker.order_id);
                }
                events.push(update(
                    &maker,
                    if done { OrderStatus::Filled } else { OrderStatus::PartiallyFilled },
                    None,
                ));
            }
            if taker.filled < taker.qty && eligible < want {
                // This level still holds the taker's own orders; going on would cross them.
                if self.side(maker_side).contains_key(&price) {
                    return Some(Reason::SelfTrade);
                }
            }
        }
        None
    }

    fn rest(&mut self, order: BookOrder) {
        self.index.insert(order.order_id, (order.side, order.price_ticks));
        self.side_mut(order.side).entry(order.price_ticks).or_default().push(order);
    }

    fn remove(&mut self, order_id: OrderId) -> Option<BookOrder> {
        let (side, price) = self.index.remove(&order_id)?;
        let orders = self.side_mut(side).get_mut(&price)?;
        let position = orders.iter().position(|o| o.order_id == order_id)?;
        let order = orders.remove(position);
        if orders.is_empty() {
            self.side_mut(side).remove(&price);
        }
        Some(order)
    }

    fn own(&self, order_id: OrderId, user_id: UserId) -> Option<&BookOrder> {
        let (side, price) = self.index.get(&order_id)?;
        self.side(*side)[price].iter().find(|o| o.order_id == order_id && o.user_id == user_id)
    }

    /// Rest or cancel what is left of a taker, and report its final state.
    fn finish(
        &mut self,
        taker: Taker,
        stop: Option<Reason>,
        rests: bool,
        template: BookOrder,
        events: &mut Vec<MatchingEvent>,
    ) {
        let order = BookOrder { filled_lots: taker.filled, qty_lots: taker.qty, ..template };
        let (status, reason) = if taker.filled == taker.qty {
            (OrderStatus::Filled, None)
        } else if let Some(reason) = stop {
            (OrderStatus::Cancelled, Some(reason))
        } else if !rests {
            (OrderStatus::Cancelled, Some(Reason::Unfilled))
        } else if self.index.len() >= self.config.resting_orders_max as usize {
            (OrderStatus::Cancelled, Some(Reason::BookFull))
        } else {
            self.rest(order.clone());
            (if taker.filled == 0 { OrderStatus::New } else { OrderStatus::PartiallyFilled }, None)
        };
        events.push(update(&order, status, reason));
    }

    fn place(&mut self, p: &PlaceOrder, events: &mut Vec<MatchingEvent>) {
        let reject = |reason, events: &mut Vec<MatchingEvent>| {
            events.push(MatchingEvent::Order(OrderUpdate {
                order_id: p.order_id,
                user_id: p.user_id,
                side: p.side,
                price_ticks: p.price_ticks,
                qty_lots: p.qty_lots,
                filled_lots: 0,
                status: OrderStatus::Rejected,
                reason: Some(reason),
            }))
        };
        if p.qty_lots == 0 || p.qty_lots > self.config.qty_lots_max {
            return reject(Reason::InvalidQuantity, events);
        }
        let limit = match p.order_type {
            OrderType::Limit if p.price_ticks == 0 || p.price_ticks > self.config.price_ticks_max => {
                return reject(Reason::InvalidPrice, events);
            }
            OrderType::Limit => Some(p.price_ticks),
            OrderType::Market if p.time_in_force == TimeInForce::PostOnly => {
                return reject(Reason::InvalidPrice, events);
            }
            OrderType::Market => None,
        };
        if p.time_in_force == TimeInForce::Gtd {
            return reject(Reason::UnsupportedOrder, events);
        }
        if self.index.contains_key(&p.order_id) {
            return reject(Reason::DuplicateOrderId, events);
        }
        let mut taker =
            Taker { order_id: p.order_id, user_id: p.user_id, side: p.side, limit, qty: p.qty_lots, filled: 0 };
        if p.time_in_force == TimeInForce::PostOnly && !self.crossing_prices(&taker).is_empty() {
            return reject(Reason::WouldCross, events);
        }
        if p.time_in_force == TimeInForce::Fok && self.fillable(&taker) < p.qty_lots {
            return reject(Reason::NotFillable, events);
        }
        let stop = self.match_taker(&mut taker, events);
        let rests = limit.is_some() && matches!(p.time_in_force, TimeInForce::Gtc | TimeInForce::PostOnly);
        let template = BookOrder {
            order_id: p.order_id,
            user_id: p.user_id,
            side: p.side,
            price_ticks: limit.unwrap_or(0),
            qty_lots: p.qty_lots,
            filled_lots: 0,
            time_in_force: p.time_in_force,
            self_trade_prevention: p.self_trade_prevention,
        };
        self.finish(taker, stop, rests, template, events);
    }

    fn amend(
        &mut self,
        order_id: OrderId,
        user_id: UserId,
        price: Option<u64>,
        qty: Option<u64>,
        events: &mut Vec<MatchingEvent>,
    ) {
        let reject = |reason, events: &mut Vec<MatchingEvent>| {
            events.push(MatchingEvent::Rejected { order_id, user_id, reason })
        };
        let Some(current) = self.own(order_id, user_id).cloned() else { return reject(Reason::UnknownOrder, events) };
        if price.is_none() && qty.is_none() {
            return reject(Reason::NothingToAmend, events);
        }
        let new_price = price.unwrap_or(current.price_ticks);
        let new_qty = qty.unwrap_or(current.qty_lots);
        if new_price == 0 || new_price > self.config.price_ticks_max {
            return reject(Reason::InvalidPrice, events);
        }
        if new_qty == 0 || new_qty > self.config.qty_lots_max {
            return reject(Reason::InvalidQuantity, events);
        }
        if new_qty <= current.filled_lots {
            let mut order = self.remove(order_id).expect("found above");
            order.qty_lots = order.filled_lots;
            return events.push(update(&order, OrderStatus::Cancelled, Some(Reason::AmendedToFilled)));
        }
        if new_price == current.price_ticks && new_qty <= current.qty_lots {
            let (side, price) = self.index[&order_id];
            let order = self
                .side_mut(side)
                .get_mut(&price)
                .and_then(|o| o.iter_mut().find(|o| o.order_id == order_id))
                .expect("resting");
            order.qty_lots = new_qty;
            let status = if order.filled_lots == 0 { OrderStatus::New } else { OrderStatus::PartiallyFilled };
            let order = order.clone();
            return events.push(update(&order, status, None));
        }
        let mut taker = Taker {
            order_id,
            user_id,
            side: current.side,
            limit: Some(new_price),
            qty: new_qty,
            filled: current.filled_lots,
        };
        if current.time_in_force == TimeInForce::PostOnly && !self.crossing_prices(&taker).is_empty() {
            return reject(Reason::WouldCross, events);
        }
        self.remove(order_id);
        let stop = self.match_taker(&mut taker, events);
        let template = BookOrder { price_ticks: new_price, ..current };
        self.finish(taker, stop, true, template, events);
    }
}

fn open_order(order: &BookOrder) -> OpenOrder {
    OpenOrder {
        order_id: order.order_id,
        user_id: order.user_id,
        side: order.side,
        price_ticks: order.price_ticks,
        qty_lots: order.qty_lots,
        filled_lots: order.filled_lots,
        time_in_force: order.time_in_force,
        self_trade_prevention: order.self_trade_prevention,
    }
}

impl MatchingModule for ProRataBook {
    /// The shared "book v1" format: this module and the reference book read each other's state.
    const STATE_VERSION: u32 = BOOK_STATE_V1;

    fn init(config: &MarketConfig) -> Result<Self, ModuleError> {
        if config.price_ticks_max == 0 || config.qty_lots_max == 0 || config.match_steps_per_command_max == 0 {
            return Err(ModuleError::new(
                "price_ticks_max, qty_lots_max and match_steps_per_command_max must be positive",
            ));
        }
        Ok(ProRataBook {
            config: config.clone(),
            bids: BTreeMap::new(),
            asks: BTreeMap::new(),
            index: BTreeMap::new(),
            last_trade_id: 0,
        })
    }

    fn apply(&mut self, _ctx: &CommandContext, command: &MatchingCommand, events: &mut Vec<MatchingEvent>) {
        let before = self.depth();
        match command {
            MatchingCommand::Place(p) => self.place(p, events),
            MatchingCommand::PlaceWith { order, options } => match options.is_plain() {
                true => self.place(order, events),
                false => events.push(refused(order, Reason::UnsupportedOrder)),
            },
            // No conditional orders here: refused precisely, and marks are not watched.
            MatchingCommand::PlaceConditional { order, .. } => events.push(refused(order, Reason::UnsupportedOrder)),
            MatchingCommand::Mark { .. } => {}
            // It keeps no time-driven state, and never asks to be woken.
            MatchingCommand::Wake => {}
            MatchingCommand::Cancel { order_id, user_id } => match self.own(*order_id, *user_id).is_some() {
                true => {
                    let order = self.remove(*order_id).expect("found");
                    events.push(update(&order, OrderStatus::Cancelled, Some(Reason::UserCancel)));
                }
                false => events.push(MatchingEvent::Rejected {
                    order_id: *order_id,
                    user_id: *user_id,
                    reason: Reason::UnknownOrder,
                }),
            },
            MatchingCommand::Amend { order_id, user_id, price_ticks, qty_lots } => {
                self.amend(*order_id, *user_id, *price_ticks, *qty_lots, events)
            }
            MatchingCommand::MassCancel { user_id } => {
                let mine: Vec<OrderId> =
                    self.index.keys().copied().filter(|id| self.own(*id, *user_id).is_some()).collect();
                for order_id in mine {
                    let order = self.remove(order_id).expect("found");
                    events.push(update(&order, OrderStatus::Cancelled, Some(Reason::MassCancel)));
                }
            }
        }
        // Level changes, bids then asks by ascending price.
        let after = self.depth();
        let mut keys: Vec<&(Side, u64)> = before.keys().chain(after.keys()).collect();
        keys.sort_unstable();
        keys.dedup();
        for key in keys {
            let (old, new) = (before.get(key).copied().unwrap_or(0), after.get(key).copied().unwrap_or(0));
            if old != new {
                events.push(MatchingEvent::Level { side: key.0, price_ticks: key.1, qty_lots: new });
            }
        }
    }

    fn query(&self, query: &MatchingQuery) -> MatchingQueryResult {
        match query {
            MatchingQuery::Depth { levels_max } => {
                let levels = |side: Side| -> Vec<Level> {
                    let map = self.side(side);
                    let prices: Box<dyn Iterator<Item = (&u64, &Vec<BookOrder>)>> =
                        if side == Side::Buy { Box::new(map.iter().rev()) } else { Box::new(map.iter()) };
                    prices
                        .take(*levels_max as usize)
                        .map(|(price, orders)| Level {
                            price_ticks: *price,
                            qty_lots: orders.iter().map(BookOrder::remaining_lots).sum(),
                        })
                        .collect()
                };
                MatchingQueryResult::Depth { bids: levels(Side::Buy), asks: levels(Side::Sell) }
            }
            MatchingQuery::OpenOrders { user_id } => MatchingQueryResult::Orders(
                self.index.keys().filter_map(|id| self.own(*id, *user_id)).map(open_order).collect(),
            ),
            MatchingQuery::Order { order_id } => MatchingQueryResult::Orders(
                self.index
                    .get(order_id)
                    .and_then(|(side, price)| self.side(*side)[price].iter().find(|o| o.order_id == *order_id))
                    .map(open_order)
                    .into_iter()
                    .collect(),
            ),
        }
    }

    fn snapshot(&self, out: &mut Vec<u8>) {
        let orders = self.bids.values().chain(self.asks.values()).flatten();
        write_book_v1(&self.config, self.last_trade_id, self.index.len(), orders, out);
    }

    fn restore(bytes: &[u8]) -> Result<Self, ModuleError> {
        ProRataBook::from_v1(read_book_v1(bytes)?)
    }

    /// The reference module's "book v2", if it holds no iceberg or `gtd` order.
    fn migrate(from_version: u32, bytes: &[u8]) -> Result<Self, ModuleError> {
        match from_version {
            BOOK_STATE_V2 => ProRataBook::from_v1(book_v2_to_v1(read_book_v2(bytes)?)?),
            BOOK_STATE_V3 => ProRataBook::from_v1(book_v2_to_v1(book_v3_to_v2(read_book_v3(bytes)?)?)?),
            other => Err(ModuleError::new(format!("cannot migrate state version {other} to {BOOK_STATE_V1}"))),
        }
    }
}

impl ProRataBook {
    fn from_v1(snapshot: BookSnapshotV1) -> Result<Self, ModuleError> {
        let mut book = ProRataBook::init(&snapshot.config)?;
        book.last_trade_id = snapshot.last_trade_id;
        for order in snapshot.orders {
            book.rest(order);
        }
        Ok(book)
    }
}

export_matching_module!(ProRataBook);

#[cfg(test)]
mod tests;

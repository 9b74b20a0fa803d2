//! A deliberately simple model of the matching rules in `API.md`, written
//! independently of the reference module so tests can compare the two.
//!
//! It keeps resting orders in one vector and finds the next maker by scanning
//! it: best price, then earliest time. Slow and obviously right is the point;
//! it shares no code with `exhost-pricetime` beyond the ABI types. It emits the
//! same event sequence the ABI documents for a matching module, so property
//! tests can compare whole event streams, and end-to-end tests can compare
//! the host's answers.

use exhost_guest_sdk::book::ConditionalOrder;
use exhost_guest_sdk::{
    Level, MatchingCommand, MatchingEvent, OpenOrder, OrderId, OrderOptions, OrderStatus, OrderType, OrderUpdate,
    PlaceOrder, Reason, SelfTradePrevention, Side, TimeInForce, Trade, TradeId, Trigger, TriggerBy, UserId,
};

/// A resting order: the SDK's own open order (what a query reports), and
/// when it joined the queue.
#[derive(Clone, Debug)]
pub struct ModelOrder {
    pub order: OpenOrder,
    /// Arrival time in the queue; lower is earlier. An iceberg that shows
    /// its next part arrives anew.
    pub time: u64,
    /// Iceberg: the most it shows at once.
    pub display: Option<u64>,
    /// What the book shows of it.
    pub shown: u64,
    /// A `gtd` order's expire time.
    pub expire: Option<u64>,
}

impl std::ops::Deref for ModelOrder {
    type Target = OpenOrder;

    fn deref(&self) -> &OpenOrder {
        &self.order
    }
}

impl std::ops::DerefMut for ModelOrder {
    fn deref_mut(&mut self) -> &mut OpenOrder {
        &mut self.order
    }
}

/// The model book.
#[derive(Clone, Debug, Default)]
pub struct ModelBook {
    pub resting: Vec<ModelOrder>,
    /// Conditional orders waiting for their trigger, in arrival order.
    pub waiting: Vec<ConditionalOrder>,
    pub last_price: Option<u64>,
    pub mark_price: Option<u64>,
    clock: u64,
    last_trade_id: u64,
}

struct Incoming {
    order_id: OrderId,
    user_id: UserId,
    side: Side,
    limit: Option<u64>,
    qty: u64,
    filled: u64,
    stp: SelfTradePrevention,
    options: OrderOptions,
}

fn crosses(side: Side, limit: Option<u64>, price: u64) -> bool {
    match (side, limit) {
        (_, None) => true,
        (Side::Buy, Some(limit)) => price <= limit,
        (Side::Sell, Some(limit)) => price >= limit,
    }
}

/// A waiting order's update: at its limit price, or a market one's trigger price.
fn waiting_update(entry: &ConditionalOrder, status: OrderStatus, reason: Option<Reason>) -> MatchingEvent {
    MatchingEvent::Order(OrderUpdate {
        order_id: entry.order.order_id,
        user_id: entry.order.user_id,
        side: entry.order.side,
        price_ticks: match entry.order.order_type {
            OrderType::Limit => entry.order.price_ticks,
            OrderType::Market => entry.trigger.price_ticks,
        },
        qty_lots: entry.order.qty_lots,
        filled_lots: 0,
        status,
        reason,
    })
}

fn update(order: &ModelOrder, status: OrderStatus, reason: Option<Reason>) -> MatchingEvent {
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

impl ModelBook {
    pub fn new() -> Self {
        Self::default()
    }

    /// Index of the maker an incoming order of `side` meets next, if any crosses.
    fn next_maker(&self, side: Side, limit: Option<u64>) -> Option<usize> {
        let mut best: Option<usize> = None;
        for (i, order) in self.resting.iter().enumerate() {
            if order.side == side || !crosses(side, limit, order.price_ticks) {
                continue;
            }
            let better = match best {
                None => true,
                Some(b) => {
                    let current = &self.resting[b];
                    let price_better = match side {
                        Side::Buy => order.price_ticks < current.price_ticks,
                        Side::Sell => order.price_ticks > current.price_ticks,
                    };
                    price_better || (order.price_ticks == current.price_ticks && order.time < current.time)
                }
            };
            if better {
                best = Some(i);
            }
        }
        best
    }

    /// Returns whether matching stopped on a self-trade.
    fn run(&mut self, taker: &mut Incoming, events: &mut Vec<MatchingEvent>) -> bool {
        while taker.filled < taker.qty {
            let Some(i) = self.next_maker(taker.side, taker.limit) else { return false };
            if self.resting[i].user_id == taker.user_id {
                match taker.stp {
                    SelfTradePrevention::CancelTaker => return true,
                    SelfTradePrevention::CancelMaker | SelfTradePrevention::CancelBoth => {
                        let maker = self.resting.remove(i);
                        events.push(update(&maker, OrderStatus::Cancelled, Some(Reason::SelfTrade)));
                        if taker.stp == SelfTradePrevention::CancelBoth {
                            return true;
                        }
                        continue;
                    }
                }
            }
            let maker = &mut self.resting[i];
            let qty = (taker.qty - taker.filled).min(maker.shown);
            self.last_trade_id += 1;
            self.last_price = Some(maker.price_ticks);
            events.push(MatchingEvent::Trade(Trade {
                trade_id: TradeId(self.last_trade_id),
                price_ticks: maker.price_ticks,
                qty_lots: qty,
                taker_side: taker.side,
                maker_order_id: maker.order_id,
                maker_user_id: maker.user_id,
                taker_order_id: taker.order_id,
                taker_user_id: taker.user_id,
            }));
            maker.filled_lots += qty;
            maker.shown -= qty;
            taker.filled += qty;
            if maker.filled_lots == maker.qty_lots {
                let maker = self.resting.remove(i);
                events.push(update(&maker, OrderStatus::Filled, None));
            } else {
                if maker.shown == 0 {
                    // The next part of an iceberg, at the back of the queue.
                    self.clock += 1;
                    maker.time = self.clock;
                    maker.shown = maker.display.unwrap_or(u64::MAX).min(maker.qty_lots - maker.filled_lots);
                }
                events.push(update(maker, OrderStatus::PartiallyFilled, None));
            }
        }
        false
    }

    fn finish(
        &mut self,
        taker: Incoming,
        self_trade: bool,
        rests: bool,
        tif: TimeInForce,
        events: &mut Vec<MatchingEvent>,
    ) {
        let mut order = ModelOrder {
            order: OpenOrder {
                order_id: taker.order_id,
                user_id: taker.user_id,
                side: taker.side,
                price_ticks: taker.limit.unwrap_or(0),
                qty_lots: taker.qty,
                filled_lots: taker.filled,
                time_in_force: tif,
                self_trade_prevention: taker.stp,
            },
            time: 0,
            display: taker.options.display_lots,
            shown: taker.options.display_lots.unwrap_or(u64::MAX).min(taker.qty - taker.filled),
            expire: taker.options.expire_time_ns,
        };
        let (status, reason) = if taker.filled == taker.qty {
            (OrderStatus::Filled, None)
        } else if self_trade {
            (OrderStatus::Cancelled, Some(Reason::SelfTrade))
        } else if !rests {
            (OrderStatus::Cancelled, Some(Reason::Unfilled))
        } else {
            self.clock += 1;
            order.time = self.clock;
            self.resting.push(order.clone());
            (if taker.filled == 0 { OrderStatus::New } else { OrderStatus::PartiallyFilled }, None)
        };
        events.push(update(&order, status, reason));
    }

    fn watched(&self, by: TriggerBy) -> Option<u64> {
        match by {
            TriggerBy::Mark => self.mark_price,
            TriggerBy::Last => self.last_price,
        }
    }

    /// The waiting order to enter next: of those whose trigger is met, rising
    /// ones first by ascending trigger price, then falling ones by
    /// descending trigger price, each then by order id.
    fn next_triggered(&self) -> Option<usize> {
        let met = |rises: bool| {
            self.waiting
                .iter()
                .enumerate()
                .filter(|(_, w)| {
                    w.trigger.rises == rises && self.watched(w.trigger.by).is_some_and(|p| w.trigger.met_by(p))
                })
                .min_by_key(|(_, w)| {
                    let price = w.trigger.price_ticks;
                    (if rises { price } else { u64::MAX - price }, w.order.order_id)
                })
                .map(|(i, _)| i)
        };
        met(true).or_else(|| met(false))
    }

    /// Enter every waiting order whose trigger is met, one at a time.
    fn enter_triggered(&mut self, events: &mut Vec<MatchingEvent>) {
        while let Some(i) = self.next_triggered() {
            let entry = self.waiting.remove(i);
            let p = &entry.order;
            let limit = (p.order_type == OrderType::Limit).then_some(p.price_ticks);
            let mut taker = Incoming {
                order_id: p.order_id,
                user_id: p.user_id,
                side: p.side,
                limit,
                qty: p.qty_lots,
                filled: 0,
                stp: p.self_trade_prevention,
                options: entry.options,
            };
            let rests = limit.is_some() && matches!(p.time_in_force, TimeInForce::Gtc | TimeInForce::Gtd);
            let self_trade = self.run(&mut taker, events);
            self.finish(taker, self_trade, rests, p.time_in_force, events);
        }
    }

    fn place(&mut self, ts_ns: u64, p: &PlaceOrder, options: &OrderOptions) -> Vec<MatchingEvent> {
        self.place_maybe_conditional(ts_ns, p, options, None)
    }

    fn place_maybe_conditional(
        &mut self,
        ts_ns: u64,
        p: &PlaceOrder,
        options: &OrderOptions,
        trigger: Option<Trigger>,
    ) -> Vec<MatchingEvent> {
        let mut events = Vec::new();
        let limit = (p.order_type == OrderType::Limit).then_some(p.price_ticks);
        let reject = |reason| {
            vec![MatchingEvent::Order(OrderUpdate {
                order_id: p.order_id,
                user_id: p.user_id,
                side: p.side,
                // A conditional order is reported at the price it would be margined at.
                price_ticks: match trigger {
                    Some(trigger) if p.order_type == OrderType::Market => trigger.price_ticks,
                    _ => p.price_ticks,
                },
                qty_lots: p.qty_lots,
                filled_lots: 0,
                status: OrderStatus::Rejected,
                reason: Some(reason),
            })]
        };
        if p.qty_lots == 0 {
            return reject(Reason::InvalidQuantity);
        }
        if limit == Some(0) || (limit.is_none() && p.time_in_force == TimeInForce::PostOnly) {
            return reject(Reason::InvalidPrice);
        }
        let rests =
            limit.is_some() && matches!(p.time_in_force, TimeInForce::Gtc | TimeInForce::Gtd | TimeInForce::PostOnly);
        if options.display_lots.is_some_and(|display| !rests || display == 0 || display > p.qty_lots) {
            return reject(Reason::InvalidDisplayQty);
        }
        let gtd = p.time_in_force == TimeInForce::Gtd;
        if gtd != options.expire_time_ns.is_some() || (gtd && (!rests || options.expire_time_ns <= Some(ts_ns))) {
            return reject(Reason::InvalidExpireTime);
        }
        if self.resting.iter().any(|o| o.order_id == p.order_id)
            || self.waiting.iter().any(|w| w.order.order_id == p.order_id)
        {
            return reject(Reason::DuplicateOrderId);
        }
        if let Some(trigger) = trigger {
            let entry = ConditionalOrder { order: p.clone(), options: *options, trigger };
            let refused = |reason| vec![waiting_update(&entry, OrderStatus::Rejected, Some(reason))];
            if matches!(p.time_in_force, TimeInForce::Fok | TimeInForce::PostOnly) {
                return refused(Reason::UnsupportedOrder);
            }
            if trigger.price_ticks == 0 {
                return refused(Reason::InvalidTriggerPrice);
            }
            if self.watched(trigger.by).is_some_and(|price| trigger.met_by(price)) {
                return refused(Reason::WouldTrigger);
            }
            let placed = vec![waiting_update(&entry, OrderStatus::Untriggered, None)];
            self.waiting.push(entry);
            return placed;
        }
        if p.time_in_force == TimeInForce::PostOnly
            && self.resting.iter().any(|o| o.side != p.side && crosses(p.side, limit, o.price_ticks))
        {
            return reject(Reason::WouldCross);
        }
        let incoming = || Incoming {
            order_id: p.order_id,
            user_id: p.user_id,
            side: p.side,
            limit,
            qty: p.qty_lots,
            filled: 0,
            stp: p.self_trade_prevention,
            options: *options,
        };
        if p.time_in_force == TimeInForce::Fok {
            // Try it on a copy: fill-or-kill means the trial must fill everything.
            let mut trial = self.clone();
            let mut taker = incoming();
            trial.run(&mut taker, &mut Vec::new());
            if taker.filled < taker.qty {
                return reject(Reason::NotFillable);
            }
        }
        let mut taker = incoming();
        let self_trade = self.run(&mut taker, &mut events);
        self.finish(taker, self_trade, rests, p.time_in_force, &mut events);
        events
    }

    fn position(&self, order_id: OrderId, user_id: UserId) -> Option<usize> {
        self.resting.iter().position(|o| o.order_id == order_id && o.user_id == user_id)
    }

    fn waiting_position(&self, order_id: OrderId, user_id: UserId) -> Option<usize> {
        self.waiting.iter().position(|w| w.order.order_id == order_id && w.order.user_id == user_id)
    }

    /// [`ModelBook::apply_at`] at time zero.
    pub fn apply(&mut self, command: &MatchingCommand) -> Vec<MatchingEvent> {
        self.apply_at(0, command)
    }

    /// When the book wants to be woken: the earliest expire time of a
    /// resting or waiting order.
    fn next_wake(&self) -> Option<u64> {
        self.resting
            .iter()
            .filter_map(|o| o.expire)
            .chain(self.waiting.iter().filter_map(|w| w.options.expire_time_ns))
            .min()
    }

    /// Apply one command at time `ts_ns`, returning the events a matching
    /// module must emit: first the orders that expired, then the command's
    /// own, then level changes (found by comparing the depth before and
    /// after), then a wake time if it changed or the command was a wake.
    pub fn apply_at(&mut self, ts_ns: u64, command: &MatchingCommand) -> Vec<MatchingEvent> {
        let before = self.depth();
        let wake_before = self.next_wake();
        let mut expired: Vec<ModelOrder> =
            self.resting.iter().filter(|o| o.expire.is_some_and(|expire| expire <= ts_ns)).cloned().collect();
        expired.sort_by_key(|o| (o.expire, o.order_id));
        self.resting.retain(|o| o.expire.is_none_or(|expire| expire > ts_ns));
        let mut events: Vec<MatchingEvent> =
            expired.iter().map(|o| update(o, OrderStatus::Cancelled, Some(Reason::Expired))).collect();
        let due = |w: &ConditionalOrder| w.options.expire_time_ns.is_some_and(|expire| expire <= ts_ns);
        let mut expired: Vec<ConditionalOrder> = self.waiting.iter().filter(|w| due(w)).cloned().collect();
        expired.sort_by_key(|w| (w.options.expire_time_ns, w.order.order_id));
        self.waiting.retain(|w| !due(w));
        events.extend(expired.iter().map(|w| waiting_update(w, OrderStatus::Cancelled, Some(Reason::Expired))));
        events.extend(self.apply_command(ts_ns, command));
        self.enter_triggered(&mut events);
        let after = self.depth();
        let mut changed: Vec<(Side, u64, u64)> = Vec::new();
        for (side, old, new) in [(Side::Buy, &before.0, &after.0), (Side::Sell, &before.1, &after.1)] {
            let mut prices: Vec<u64> = old.iter().chain(new.iter()).map(|l| l.price_ticks).collect();
            prices.sort_unstable();
            prices.dedup();
            for price in prices {
                let qty = |levels: &[Level]| levels.iter().find(|l| l.price_ticks == price).map_or(0, |l| l.qty_lots);
                if qty(old) != qty(new) {
                    changed.push((side, price, qty(new)));
                }
            }
        }
        events.extend(changed.into_iter().map(|(side, price_ticks, qty_lots)| MatchingEvent::Level {
            side,
            price_ticks,
            qty_lots,
        }));
        let wake_after = self.next_wake();
        if wake_after != wake_before || *command == MatchingCommand::Wake {
            events.push(MatchingEvent::Wake { at_ts_ns: wake_after });
        }
        events
    }

    fn apply_command(&mut self, ts_ns: u64, command: &MatchingCommand) -> Vec<MatchingEvent> {
        match command {
            MatchingCommand::Place(p) => self.place(ts_ns, p, &OrderOptions::default()),
            MatchingCommand::PlaceWith { order, options } => self.place(ts_ns, order, options),
            MatchingCommand::Wake => Vec::new(),
            MatchingCommand::PlaceConditional { order, options, trigger } => {
                self.place_maybe_conditional(ts_ns, order, options, Some(*trigger))
            }
            MatchingCommand::Mark { price_ticks } => {
                self.mark_price = Some(*price_ticks);
                Vec::new()
            }
            MatchingCommand::Cancel { order_id, user_id } => match self.position(*order_id, *user_id) {
                Some(i) => {
                    let order = self.resting.remove(i);
                    vec![update(&order, OrderStatus::Cancelled, Some(Reason::UserCancel))]
                }
                None if let Some(i) = self.waiting_position(*order_id, *user_id) => {
                    let entry = self.waiting.remove(i);
                    vec![waiting_update(&entry, OrderStatus::Cancelled, Some(Reason::UserCancel))]
                }
                None => vec![MatchingEvent::Rejected {
                    order_id: *order_id,
                    user_id: *user_id,
                    reason: Reason::UnknownOrder,
                }],
            },
            MatchingCommand::MassCancel { user_id } => {
                let mut mine: Vec<ModelOrder> =
                    self.resting.iter().filter(|o| o.user_id == *user_id).cloned().collect();
                mine.sort_by_key(|o| o.order_id);
                self.resting.retain(|o| o.user_id != *user_id);
                let mut events: Vec<MatchingEvent> =
                    mine.iter().map(|o| update(o, OrderStatus::Cancelled, Some(Reason::MassCancel))).collect();
                let mut waiting: Vec<ConditionalOrder> =
                    self.waiting.iter().filter(|w| w.order.user_id == *user_id).cloned().collect();
                waiting.sort_by_key(|w| w.order.order_id);
                self.waiting.retain(|w| w.order.user_id != *user_id);
                events.extend(
                    waiting.iter().map(|w| waiting_update(w, OrderStatus::Cancelled, Some(Reason::MassCancel))),
                );
                events
            }
            MatchingCommand::Amend { order_id, user_id, price_ticks, qty_lots } => {
                let reject = |reason| vec![MatchingEvent::Rejected { order_id: *order_id, user_id: *user_id, reason }];
                if let Some(i) = self.waiting_position(*order_id, *user_id) {
                    if price_ticks.is_none() && qty_lots.is_none() {
                        return reject(Reason::NothingToAmend);
                    }
                    let entry = &self.waiting[i];
                    if price_ticks.is_some() && (entry.order.order_type != OrderType::Limit || *price_ticks == Some(0))
                    {
                        return reject(Reason::InvalidPrice);
                    }
                    let qty = qty_lots.unwrap_or(entry.order.qty_lots);
                    if qty == 0 || entry.options.display_lots.is_some_and(|display| display > qty) {
                        return reject(Reason::InvalidQuantity);
                    }
                    let entry = &mut self.waiting[i];
                    entry.order.qty_lots = qty;
                    entry.order.price_ticks = price_ticks.unwrap_or(entry.order.price_ticks);
                    return vec![waiting_update(entry, OrderStatus::Untriggered, None)];
                }
                let Some(i) = self.position(*order_id, *user_id) else { return reject(Reason::UnknownOrder) };
                if price_ticks.is_none() && qty_lots.is_none() {
                    return reject(Reason::NothingToAmend);
                }
                let current = self.resting[i].clone();
                let price = price_ticks.unwrap_or(current.price_ticks);
                let qty = qty_lots.unwrap_or(current.qty_lots);
                if price == 0 {
                    return reject(Reason::InvalidPrice);
                }
                if qty == 0 {
                    return reject(Reason::InvalidQuantity);
                }
                if qty <= current.filled_lots {
                    let mut order = self.resting.remove(i);
                    order.qty_lots = order.filled_lots;
                    return vec![update(&order, OrderStatus::Cancelled, Some(Reason::AmendedToFilled))];
                }
                if price == current.price_ticks && qty <= current.qty_lots {
                    let order = &mut self.resting[i];
                    order.qty_lots = qty;
                    let remaining = qty - order.filled_lots;
                    order.shown = if order.display.is_some() { order.shown.min(remaining) } else { remaining };
                    let order = &self.resting[i];
                    let status = if order.filled_lots == 0 { OrderStatus::New } else { OrderStatus::PartiallyFilled };
                    return vec![update(order, status, None)];
                }
                if current.time_in_force == TimeInForce::PostOnly
                    && self
                        .resting
                        .iter()
                        .any(|o| o.side != current.side && crosses(current.side, Some(price), o.price_ticks))
                {
                    return reject(Reason::WouldCross);
                }
                self.resting.remove(i);
                let mut events = Vec::new();
                let mut taker = Incoming {
                    order_id: *order_id,
                    user_id: *user_id,
                    side: current.side,
                    limit: Some(price),
                    qty,
                    filled: current.filled_lots,
                    stp: current.self_trade_prevention,
                    options: OrderOptions { display_lots: current.display, expire_time_ns: current.expire },
                };
                let self_trade = self.run(&mut taker, &mut events);
                self.finish(taker, self_trade, true, current.time_in_force, &mut events);
                events
            }
        }
    }

    /// Aggregated levels, best first.
    pub fn depth(&self) -> (Vec<Level>, Vec<Level>) {
        let side = |side: Side| {
            let mut levels: Vec<Level> = Vec::new();
            let mut orders: Vec<&ModelOrder> = self.resting.iter().filter(|o| o.side == side).collect();
            orders.sort_by_key(|o| match side {
                Side::Buy => u64::MAX - o.price_ticks,
                Side::Sell => o.price_ticks,
            });
            for order in orders {
                match levels.last_mut() {
                    Some(level) if level.price_ticks == order.price_ticks => level.qty_lots += order.shown,
                    _ => levels.push(Level { price_ticks: order.price_ticks, qty_lots: order.shown }),
                }
            }
            levels
        };
        (side(Side::Buy), side(Side::Sell))
    }

    /// Open orders of a user, by order id.
    pub fn open_orders(&self, user_id: UserId) -> Vec<&ModelOrder> {
        let mut orders: Vec<&ModelOrder> = self.resting.iter().filter(|o| o.user_id == user_id).collect();
        orders.sort_by_key(|o| o.order_id);
        orders
    }
}

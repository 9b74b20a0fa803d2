//! # Reference matching module: price-time priority
//!
//! The order book of one market, exactly per the matching rules of `API.md`:
//! limit (`gtc`, `gtd`, `ioc`, `fok`, `post_only`) and market orders,
//! icebergs (`display_lots`), cancel, amend, mass cancel, self-trade
//! prevention, price and quantity range checks. A trade executes at the
//! resting (maker) order's price.
//!
//! Time: a `gtd` order is cancelled (`expired`) at the start of the first
//! command whose timestamp is at or after its expire time, before that
//! command's own work; the module asks the host with `MatchingEvent::Wake`
//! to be woken then even if its market gets no command. At most
//! `match_steps_per_command_max` orders expire in one command (the rest in
//! the next, which the module asks for at once), so no burst of expiries
//! can make a command run out of fuel.
//!
//! Conditional orders (stop, take-profit) wait out of the book, `untriggered`,
//! until the price they watch (the mark the host hands over with
//! `MatchingCommand::Mark`, or the book's last trade) meets their trigger;
//! then, inside that command, they enter as the order they become, after
//! the command's own work, in the order of [`conditional`]'s rule. Orders
//! they trade with can move the last price and trigger more: all the
//! triggered orders of one command share one budget of
//! `match_steps_per_command_max` steps (an entry is a step, and each fill or
//! self-trade cancellation), and what the budget leaves enters in the next
//! command, which the module asks for at once with a wake. A conditional
//! order whose trigger the watched price already meets is refused
//! (`would_trigger`).
//!
//! Every loop is bounded: a taker meets at most
//! [`MarketConfig::match_steps_per_command_max`] makers (fills plus self-trade
//! cancellations), and the book holds at most
//! [`MarketConfig::resting_orders_max`] orders. Reaching either is a typed
//! outcome (`fill_limit`, `book_full`), never a trap.
//!
//! The same code is the native library the host's tests and benchmarks link,
//! and, through [`export_matching_module!`], the wasm module the host runs.

mod book;
mod conditional;
mod snapshot;

use exhost_guest_sdk::{
    CommandContext, Level, MarketConfig, MatchingCommand, MatchingEvent, MatchingModule, MatchingQuery,
    MatchingQueryResult, ModuleError, OpenOrder, OrderId, OrderOptions, OrderStatus, OrderType, OrderUpdate,
    PlaceOrder, Reason, SelfTradePrevention, Side, TimeInForce, Trade, TradeId, Trigger, UserId,
    export_matching_module,
};

use book::{Book, Handle, RestingOrder};
use conditional::{Conditional, margin_price};
use exhost_guest_sdk::book::ConditionalOrder;

/// The snapshot format version of this module: the shared "book v3". It
/// migrates "book v1" (before order options) and "book v2" (before
/// conditional orders).
pub const STATE_VERSION: u32 = exhost_guest_sdk::book::BOOK_STATE_V3;

/// A price-time priority order book.
pub struct PriceTimeBook {
    config: MarketConfig,
    book: Book,
    last_trade_id: u64,
    conditional: Conditional,
}

/// The incoming side of a match: a new order, or an amended one re-entering.
struct Taker {
    order_id: OrderId,
    user_id: UserId,
    side: Side,
    /// `None` for a market order: any price.
    limit_ticks: Option<u64>,
    qty_lots: u64,
    filled_lots: u64,
    stp: SelfTradePrevention,
    /// What it rests with, if it rests.
    time_in_force: TimeInForce,
    options: OrderOptions,
}

impl Taker {
    fn remaining_lots(&self) -> u64 {
        self.qty_lots - self.filled_lots
    }

    /// Whether this taker may trade with a maker at `price_ticks`.
    fn crosses(&self, price_ticks: u64) -> bool {
        match (self.limit_ticks, self.side) {
            (None, _) => true,
            (Some(limit), Side::Buy) => price_ticks <= limit,
            (Some(limit), Side::Sell) => price_ticks >= limit,
        }
    }
}

/// Why matching stopped before the taker was filled.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stop {
    /// Filled, or the book no longer crosses the taker's limit.
    Exhausted,
    SelfTrade,
    StepLimit,
}

impl PriceTimeBook {
    /// The configuration this book was created with.
    pub fn config(&self) -> &MarketConfig {
        &self.config
    }

    /// Check the book's structural invariants (for tests and debugging).
    pub fn check_invariants(&self) -> Result<(), String> {
        self.book.check_invariants()?;
        self.conditional.check_invariants()
    }

    fn apply_command(&mut self, ctx: &CommandContext, command: &MatchingCommand, events: &mut Vec<MatchingEvent>) {
        match command {
            MatchingCommand::Place(order) => self.place(ctx, order, &OrderOptions::default(), events),
            MatchingCommand::PlaceWith { order, options } => self.place(ctx, order, options, events),
            // What is due was done before the command: nothing else to do.
            MatchingCommand::Wake => {}
            MatchingCommand::Cancel { order_id, user_id } => self.cancel(*order_id, *user_id, events),
            MatchingCommand::Amend { order_id, user_id, price_ticks, qty_lots } => {
                self.amend(*order_id, *user_id, *price_ticks, *qty_lots, events)
            }
            MatchingCommand::MassCancel { user_id } => self.mass_cancel(*user_id, events),
            MatchingCommand::PlaceConditional { order, options, trigger } => {
                self.place_conditional(ctx, order, options, trigger, events)
            }
            MatchingCommand::Mark { price_ticks } => self.conditional.mark_price_ticks = Some(*price_ticks),
        }
    }

    /// Enter the conditional orders whose triggers the watched prices meet,
    /// within one shared budget of steps.
    fn enter_triggered(&mut self, events: &mut Vec<MatchingEvent>) {
        let mut budget = self.config.match_steps_per_command_max;
        while budget > 0 {
            let Some(order_id) = self.conditional.next_met() else { return };
            let entry = self.conditional.remove(order_id).expect("a met trigger names an order");
            budget -= 1;
            let order = &entry.order;
            let mut taker = Taker {
                order_id: order.order_id,
                user_id: order.user_id,
                side: order.side,
                limit_ticks: (order.order_type == OrderType::Limit).then_some(order.price_ticks),
                qty_lots: order.qty_lots,
                filled_lots: 0,
                stp: order.self_trade_prevention,
                time_in_force: order.time_in_force,
                options: entry.options,
            };
            let (stop, steps) = self.match_taker_within(&mut taker, budget, events);
            budget -= steps;
            let rests = order.order_type == OrderType::Limit
                && matches!(order.time_in_force, TimeInForce::Gtc | TimeInForce::Gtd);
            self.finish_taker(taker, stop, rests, events);
        }
    }

    /// When the host should wake this book: its first expiry, or now if
    /// triggered orders wait for budget.
    fn next_wake(&self, now_ns: u64) -> Option<u64> {
        let expiry = match (self.book.next_expiry(), self.conditional.next_expiry()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match self.conditional.next_met() {
            Some(_) => Some(expiry.map_or(now_ns, |at| at.min(now_ns))),
            None => expiry,
        }
    }

    fn take_trade_id(&mut self) -> TradeId {
        self.last_trade_id += 1;
        TradeId(self.last_trade_id)
    }

    /// Cancel the `gtd` orders whose time has come, at most
    /// `match_steps_per_command_max` of them: those in the book, then the
    /// untriggered ones, each by expire time then id.
    fn expire_due(&mut self, ts_ns: u64, events: &mut Vec<MatchingEvent>) {
        for _ in 0..self.config.match_steps_per_command_max {
            if let Some(handle) = self.book.first_expired(ts_ns) {
                self.cancel_resting(handle, Reason::Expired, events);
            } else if let Some(order_id) = self.conditional.first_expired(ts_ns) {
                let entry = self.conditional.remove(order_id).expect("an expiry names an order");
                events.push(MatchingEvent::Order(conditional_update(
                    &entry,
                    OrderStatus::Cancelled,
                    Some(Reason::Expired),
                )));
            } else {
                return;
            }
        }
    }

    /// Why a new order (or what a conditional one becomes) is refused, if
    /// it is: quantity, price, options. Returns its limit price otherwise.
    fn check_new(
        &self,
        ctx: &CommandContext,
        order: &PlaceOrder,
        options: &OrderOptions,
    ) -> Result<Option<u64>, Reason> {
        if order.qty_lots == 0 || order.qty_lots > self.config.qty_lots_max {
            return Err(Reason::InvalidQuantity);
        }
        let limit_ticks = match order.order_type {
            OrderType::Limit => {
                if order.price_ticks == 0 || order.price_ticks > self.config.price_ticks_max {
                    return Err(Reason::InvalidPrice);
                }
                Some(order.price_ticks)
            }
            // A maker-only order needs a price to rest at.
            OrderType::Market if order.time_in_force == TimeInForce::PostOnly => return Err(Reason::InvalidPrice),
            OrderType::Market => None,
        };
        let rests = order.order_type == OrderType::Limit
            && matches!(order.time_in_force, TimeInForce::Gtc | TimeInForce::Gtd | TimeInForce::PostOnly);
        if let Some(display_lots) = options.display_lots
            && (!rests || display_lots == 0 || display_lots > order.qty_lots)
        {
            return Err(Reason::InvalidDisplayQty);
        }
        let expiry_valid = match (order.time_in_force, options.expire_time_ns) {
            (TimeInForce::Gtd, Some(expire_time_ns)) => rests && expire_time_ns > ctx.ts_ns,
            (TimeInForce::Gtd, None) => false,
            (_, expire_time_ns) => expire_time_ns.is_none(),
        };
        if !expiry_valid {
            return Err(Reason::InvalidExpireTime);
        }
        if self.book.contains(order.order_id) || self.conditional.get(order.order_id).is_some() {
            return Err(Reason::DuplicateOrderId);
        }
        Ok(limit_ticks)
    }

    fn place_conditional(
        &mut self,
        ctx: &CommandContext,
        order: &PlaceOrder,
        options: &OrderOptions,
        trigger: &Trigger,
        events: &mut Vec<MatchingEvent>,
    ) {
        let entry = ConditionalOrder { order: order.clone(), options: *options, trigger: *trigger };
        let refused = |reason| MatchingEvent::Order(conditional_update(&entry, OrderStatus::Rejected, Some(reason)));
        if let Err(reason) = self.check_new(ctx, order, options) {
            return events.push(refused(reason));
        }
        // What it becomes decides on entry, when the book is another:
        // all or nothing, or maker only, cannot be promised then.
        if matches!(order.time_in_force, TimeInForce::Fok | TimeInForce::PostOnly) {
            return events.push(refused(Reason::UnsupportedOrder));
        }
        if trigger.price_ticks == 0 || trigger.price_ticks > self.config.price_ticks_max {
            return events.push(refused(Reason::InvalidTriggerPrice));
        }
        if self.conditional.price(trigger.by).is_some_and(|price| trigger.met_by(price)) {
            return events.push(refused(Reason::WouldTrigger));
        }
        if self.book.resting_count() + self.conditional.len() >= self.config.resting_orders_max as usize {
            return events.push(refused(Reason::BookFull));
        }
        events.push(MatchingEvent::Order(conditional_update(&entry, OrderStatus::Untriggered, None)));
        self.conditional.insert(entry);
    }

    fn place(
        &mut self,
        ctx: &CommandContext,
        order: &PlaceOrder,
        options: &OrderOptions,
        events: &mut Vec<MatchingEvent>,
    ) {
        let reject = |reason: Reason, events: &mut Vec<MatchingEvent>| {
            events.push(MatchingEvent::Order(OrderUpdate {
                order_id: order.order_id,
                user_id: order.user_id,
                side: order.side,
                price_ticks: order.price_ticks,
                qty_lots: order.qty_lots,
                filled_lots: 0,
                status: OrderStatus::Rejected,
                reason: Some(reason),
            }));
        };
        let limit_ticks = match self.check_new(ctx, order, options) {
            Ok(limit_ticks) => limit_ticks,
            Err(reason) => return reject(reason, events),
        };
        let rests = order.order_type == OrderType::Limit
            && matches!(order.time_in_force, TimeInForce::Gtc | TimeInForce::Gtd | TimeInForce::PostOnly);
        let mut taker = Taker {
            order_id: order.order_id,
            user_id: order.user_id,
            side: order.side,
            limit_ticks,
            qty_lots: order.qty_lots,
            filled_lots: 0,
            stp: order.self_trade_prevention,
            time_in_force: order.time_in_force,
            options: *options,
        };
        match order.time_in_force {
            TimeInForce::PostOnly if self.would_cross(&taker) => {
                return reject(Reason::WouldCross, events);
            }
            TimeInForce::Fok if !self.fillable(&taker) => {
                return reject(Reason::NotFillable, events);
            }
            _ => {}
        }
        let stop = self.match_taker(&mut taker, events);
        self.finish_taker(taker, stop, rests, events);
    }

    /// Rest the taker's remainder or cancel it, and report the taker's final state.
    fn finish_taker(&mut self, taker: Taker, stop: Stop, rests: bool, events: &mut Vec<MatchingEvent>) {
        let (status, reason) = if taker.remaining_lots() == 0 {
            (OrderStatus::Filled, None)
        } else {
            match stop {
                Stop::SelfTrade => (OrderStatus::Cancelled, Some(Reason::SelfTrade)),
                Stop::StepLimit => (OrderStatus::Cancelled, Some(Reason::FillLimit)),
                Stop::Exhausted if !rests => (OrderStatus::Cancelled, Some(Reason::Unfilled)),
                Stop::Exhausted if self.book.resting_count() >= self.config.resting_orders_max as usize => {
                    (OrderStatus::Cancelled, Some(Reason::BookFull))
                }
                Stop::Exhausted => {
                    let remaining = taker.remaining_lots();
                    self.book.insert(RestingOrder {
                        order: OpenOrder {
                            order_id: taker.order_id,
                            user_id: taker.user_id,
                            side: taker.side,
                            price_ticks: taker.limit_ticks.expect("only limit orders rest"),
                            qty_lots: taker.qty_lots,
                            filled_lots: taker.filled_lots,
                            time_in_force: taker.time_in_force,
                            self_trade_prevention: taker.stp,
                        },
                        display_lots: taker.options.display_lots,
                        shown_lots: taker.options.display_lots.map_or(remaining, |display| display.min(remaining)),
                        expire_time_ns: taker.options.expire_time_ns,
                    });
                    let status = if taker.filled_lots == 0 { OrderStatus::New } else { OrderStatus::PartiallyFilled };
                    (status, None)
                }
            }
        };
        events.push(MatchingEvent::Order(OrderUpdate {
            order_id: taker.order_id,
            user_id: taker.user_id,
            side: taker.side,
            price_ticks: taker.limit_ticks.unwrap_or(0),
            qty_lots: taker.qty_lots,
            filled_lots: taker.filled_lots,
            status,
            reason,
        }));
    }

    /// Whether a maker-only order would match on arrival.
    fn would_cross(&self, taker: &Taker) -> bool {
        self.book.best_price(taker.side.opposite()).is_some_and(|best| taker.crosses(best))
    }

    /// Whether a fill-or-kill taker can be filled completely, counting only what
    /// it could fill before a self-trade stop, and skipping (not counting) its
    /// own orders under `cancel_maker`. Changes nothing.
    ///
    /// It walks the makers in the order `match_taker` would meet them, step
    /// for step: each level's queue, then the icebergs that queue sent to its
    /// back with their next part, as often as they have one.
    fn fillable(&self, taker: &Taker) -> bool {
        let needed = taker.remaining_lots();
        let mut available = 0u64;
        let mut steps = 0u32;
        for (price, level) in self.book.levels_best_first(taker.side.opposite()) {
            if !taker.crosses(price) {
                break;
            }
            // Icebergs refreshed at the back: (remaining after this part, display).
            let mut refreshed: std::collections::VecDeque<(u64, u64)> = Default::default();
            let mut cursor = Some(self.book.level_head(level));
            loop {
                let (shown, rest, display) = if let Some(handle) = cursor {
                    cursor = self.book.next_in_level(handle);
                    let maker = self.book.order(handle);
                    if maker.order.user_id == taker.user_id {
                        if steps == self.config.match_steps_per_command_max {
                            return false;
                        }
                        steps += 1;
                        if taker.stp != SelfTradePrevention::CancelMaker {
                            return false;
                        }
                        continue;
                    }
                    let rest = maker.order.remaining_lots() - maker.shown_lots;
                    (maker.shown_lots, rest, maker.display_lots.unwrap_or(0))
                } else if let Some((remaining, display)) = refreshed.pop_front() {
                    let shown = display.min(remaining);
                    (shown, remaining - shown, display)
                } else {
                    break;
                };
                if steps == self.config.match_steps_per_command_max {
                    return false;
                }
                steps += 1;
                available += shown;
                if available >= needed {
                    return true;
                }
                if rest > 0 {
                    refreshed.push_back((rest, display));
                }
            }
        }
        false
    }

    /// Match the taker against the opposite side, best price first, oldest first.
    fn match_taker(&mut self, taker: &mut Taker, events: &mut Vec<MatchingEvent>) -> Stop {
        self.match_taker_within(taker, self.config.match_steps_per_command_max, events).0
    }

    /// [`Self::match_taker`] within `steps_max` steps; also returns the steps taken.
    fn match_taker_within(
        &mut self,
        taker: &mut Taker,
        steps_max: u32,
        events: &mut Vec<MatchingEvent>,
    ) -> (Stop, u32) {
        let mut steps = 0u32;
        let stop = loop {
            if taker.remaining_lots() == 0 {
                break Stop::Exhausted;
            }
            let Some(handle) = self.book.best_order(taker.side.opposite()) else {
                break Stop::Exhausted;
            };
            let maker = &self.book.order(handle).order;
            if !taker.crosses(maker.price_ticks) {
                break Stop::Exhausted;
            }
            if steps == steps_max {
                break Stop::StepLimit;
            }
            steps += 1;
            if maker.user_id == taker.user_id {
                match taker.stp {
                    SelfTradePrevention::CancelTaker => break Stop::SelfTrade,
                    SelfTradePrevention::CancelMaker => {
                        self.cancel_resting(handle, Reason::SelfTrade, events);
                        continue;
                    }
                    SelfTradePrevention::CancelBoth => {
                        self.cancel_resting(handle, Reason::SelfTrade, events);
                        break Stop::SelfTrade;
                    }
                }
            }
            let qty_lots = taker.remaining_lots().min(self.book.order(handle).shown_lots);
            let (price_ticks, maker_order_id, maker_user_id) = (maker.price_ticks, maker.order_id, maker.user_id);
            let trade_id = self.take_trade_id();
            self.conditional.last_price_ticks = Some(price_ticks);
            events.push(MatchingEvent::Trade(Trade {
                trade_id,
                price_ticks,
                qty_lots,
                taker_side: taker.side,
                maker_order_id,
                maker_user_id,
                taker_order_id: taker.order_id,
                taker_user_id: taker.user_id,
            }));
            taker.filled_lots += qty_lots;
            let maker = &self.book.fill(handle, qty_lots).order;
            let maker_done = maker.remaining_lots() == 0;
            events.push(MatchingEvent::Order(resting_update(
                maker,
                if maker_done { OrderStatus::Filled } else { OrderStatus::PartiallyFilled },
                None,
            )));
            if maker_done {
                self.book.remove(handle);
            }
        };
        (stop, steps)
    }

    fn cancel_resting(&mut self, handle: Handle, reason: Reason, events: &mut Vec<MatchingEvent>) {
        let entry = self.book.remove(handle);
        events.push(MatchingEvent::Order(resting_update(&entry.order, OrderStatus::Cancelled, Some(reason))));
    }

    /// The caller's open order, or nothing: another user's order is as unknown as a missing one.
    fn own_order(&self, order_id: OrderId, user_id: UserId) -> Option<Handle> {
        self.book.find(order_id).filter(|&handle| self.book.order(handle).order.user_id == user_id)
    }

    /// The caller's untriggered order, if it is one.
    fn own_conditional(&self, order_id: OrderId, user_id: UserId) -> Option<&ConditionalOrder> {
        self.conditional.get(order_id).filter(|entry| entry.order.user_id == user_id)
    }

    fn cancel_conditional(&mut self, order_id: OrderId, reason: Reason, events: &mut Vec<MatchingEvent>) {
        let entry = self.conditional.remove(order_id).expect("the caller found it");
        events.push(MatchingEvent::Order(conditional_update(&entry, OrderStatus::Cancelled, Some(reason))));
    }

    fn cancel(&mut self, order_id: OrderId, user_id: UserId, events: &mut Vec<MatchingEvent>) {
        match self.own_order(order_id, user_id) {
            Some(handle) => self.cancel_resting(handle, Reason::UserCancel, events),
            None if self.own_conditional(order_id, user_id).is_some() => {
                self.cancel_conditional(order_id, Reason::UserCancel, events)
            }
            None => events.push(MatchingEvent::Rejected { order_id, user_id, reason: Reason::UnknownOrder }),
        }
    }

    /// The user's orders in the book, then the untriggered ones by id.
    fn mass_cancel(&mut self, user_id: UserId, events: &mut Vec<MatchingEvent>) {
        let order_ids: Vec<OrderId> = self.book.user_orders(user_id).collect();
        for order_id in order_ids {
            if let Some(handle) = self.book.find(order_id) {
                self.cancel_resting(handle, Reason::MassCancel, events);
            }
        }
        for order_id in self.conditional.user_orders(user_id) {
            self.cancel_conditional(order_id, Reason::MassCancel, events);
        }
    }

    /// An untriggered order changes what it becomes: its limit price (a
    /// market one has none) and quantity; the trigger stays.
    fn amend_conditional(
        &mut self,
        order_id: OrderId,
        user_id: UserId,
        price_ticks: Option<u64>,
        qty_lots: Option<u64>,
        events: &mut Vec<MatchingEvent>,
    ) {
        let reject = |reason| MatchingEvent::Rejected { order_id, user_id, reason };
        let entry = self.conditional.get(order_id).expect("the caller found it");
        if price_ticks.is_none() && qty_lots.is_none() {
            return events.push(reject(Reason::NothingToAmend));
        }
        let is_limit = entry.order.order_type == OrderType::Limit;
        let new_price_ticks = price_ticks.unwrap_or(entry.order.price_ticks);
        if price_ticks.is_some() && (!is_limit || new_price_ticks == 0 || new_price_ticks > self.config.price_ticks_max)
        {
            return events.push(reject(Reason::InvalidPrice));
        }
        let new_qty_lots = qty_lots.unwrap_or(entry.order.qty_lots);
        if new_qty_lots == 0
            || new_qty_lots > self.config.qty_lots_max
            || entry.options.display_lots.is_some_and(|display| display > new_qty_lots)
        {
            return events.push(reject(Reason::InvalidQuantity));
        }
        let entry = self.conditional.amend(order_id, new_price_ticks, new_qty_lots).expect("found above");
        events.push(MatchingEvent::Order(conditional_update(entry, OrderStatus::Untriggered, None)));
    }

    fn amend(
        &mut self,
        order_id: OrderId,
        user_id: UserId,
        price_ticks: Option<u64>,
        qty_lots: Option<u64>,
        events: &mut Vec<MatchingEvent>,
    ) {
        let reject = |reason: Reason, events: &mut Vec<MatchingEvent>| {
            events.push(MatchingEvent::Rejected { order_id, user_id, reason });
        };
        let Some(handle) = self.own_order(order_id, user_id) else {
            if self.own_conditional(order_id, user_id).is_some() {
                return self.amend_conditional(order_id, user_id, price_ticks, qty_lots, events);
            }
            return reject(Reason::UnknownOrder, events);
        };
        if price_ticks.is_none() && qty_lots.is_none() {
            return reject(Reason::NothingToAmend, events);
        }
        let current_entry = self.book.order(handle).clone();
        let current = &current_entry.order;
        let new_price_ticks = price_ticks.unwrap_or(current.price_ticks);
        let new_qty_lots = qty_lots.unwrap_or(current.qty_lots);
        if new_price_ticks == 0 || new_price_ticks > self.config.price_ticks_max {
            return reject(Reason::InvalidPrice, events);
        }
        if new_qty_lots == 0 || new_qty_lots > self.config.qty_lots_max {
            return reject(Reason::InvalidQuantity, events);
        }
        if new_qty_lots <= current.filled_lots {
            // Nothing would be left: the order leaves the book, its total being what filled.
            let mut order = self.book.remove(handle).order;
            order.qty_lots = order.filled_lots;
            events.push(MatchingEvent::Order(resting_update(
                &order,
                OrderStatus::Cancelled,
                Some(Reason::AmendedToFilled),
            )));
            return;
        }
        if new_price_ticks == current.price_ticks && new_qty_lots <= current.qty_lots {
            // Same price, not larger: keeps its place in the queue.
            let order = &self.book.reduce_qty(handle, new_qty_lots).order;
            let status = if order.filled_lots == 0 { OrderStatus::New } else { OrderStatus::PartiallyFilled };
            events.push(MatchingEvent::Order(resting_update(order, status, None)));
            return;
        }
        let mut taker = Taker {
            order_id,
            user_id,
            side: current.side,
            limit_ticks: Some(new_price_ticks),
            qty_lots: new_qty_lots,
            filled_lots: current.filled_lots,
            stp: current.self_trade_prevention,
            time_in_force: current.time_in_force,
            options: OrderOptions {
                display_lots: current_entry.display_lots,
                expire_time_ns: current_entry.expire_time_ns,
            },
        };
        if current.time_in_force == TimeInForce::PostOnly && self.would_cross(&taker) {
            return reject(Reason::WouldCross, events);
        }
        // Re-enter as a taker at the new price, at the back of its new level.
        self.book.remove(handle);
        let stop = self.match_taker(&mut taker, events);
        self.finish_taker(taker, stop, true, events);
    }
}

fn resting_update(order: &OpenOrder, status: OrderStatus, reason: Option<Reason>) -> OrderUpdate {
    OrderUpdate {
        order_id: order.order_id,
        user_id: order.user_id,
        side: order.side,
        price_ticks: order.price_ticks,
        qty_lots: order.qty_lots,
        filled_lots: order.filled_lots,
        status,
        reason,
    }
}

/// An untriggered order's update: at the price it is margined at.
fn conditional_update(entry: &ConditionalOrder, status: OrderStatus, reason: Option<Reason>) -> OrderUpdate {
    OrderUpdate {
        order_id: entry.order.order_id,
        user_id: entry.order.user_id,
        side: entry.order.side,
        price_ticks: margin_price(entry),
        qty_lots: entry.order.qty_lots,
        filled_lots: 0,
        status,
        reason,
    }
}

fn open_order(entry: &RestingOrder) -> OpenOrder {
    entry.order.clone()
}

impl MatchingModule for PriceTimeBook {
    const STATE_VERSION: u32 = STATE_VERSION;

    fn init(config: &MarketConfig) -> Result<Self, ModuleError> {
        snapshot::check_config(config)?;
        Ok(PriceTimeBook {
            config: config.clone(),
            book: Book::default(),
            last_trade_id: 0,
            conditional: Conditional::default(),
        })
    }

    fn apply(&mut self, ctx: &CommandContext, command: &MatchingCommand, events: &mut Vec<MatchingEvent>) {
        let wake_before = self.next_wake(ctx.ts_ns);
        self.book.track_changes();
        self.expire_due(ctx.ts_ns, events);
        self.apply_command(ctx, command, events);
        self.enter_triggered(events);
        self.book.drain_changed_levels(|side, price_ticks, qty_lots| {
            events.push(MatchingEvent::Level { side, price_ticks, qty_lots });
        });
        // The host keeps the last wake time it was told: tell it each change,
        // and answer a wake always (the host forgets the time it woke us for).
        let wake_after = self.next_wake(ctx.ts_ns);
        if wake_after != wake_before || *command == MatchingCommand::Wake {
            events.push(MatchingEvent::Wake { at_ts_ns: wake_after });
        }
    }

    fn query(&self, query: &MatchingQuery) -> MatchingQueryResult {
        match query {
            MatchingQuery::Depth { levels_max } => {
                let side = |side: Side| -> Vec<Level> {
                    self.book
                        .levels_best_first(side)
                        .take(*levels_max as usize)
                        .map(|(price_ticks, level)| Level { price_ticks, qty_lots: level.qty_lots })
                        .collect()
                };
                MatchingQueryResult::Depth { bids: side(Side::Buy), asks: side(Side::Sell) }
            }
            MatchingQuery::OpenOrders { user_id } => MatchingQueryResult::Orders(
                self.book
                    .user_orders(*user_id)
                    .filter_map(|order_id| self.book.find(order_id))
                    .map(|handle| open_order(self.book.order(handle)))
                    .collect(),
            ),
            MatchingQuery::Order { order_id } => MatchingQueryResult::Orders(
                self.book.find(*order_id).map(|handle| open_order(self.book.order(handle))).into_iter().collect(),
            ),
        }
    }

    fn snapshot(&self, out: &mut Vec<u8>) {
        snapshot::write(&self.config, self.last_trade_id, &self.book, &self.conditional, out);
    }

    fn restore(bytes: &[u8]) -> Result<Self, ModuleError> {
        let (config, last_trade_id, book, conditional) = snapshot::read(bytes)?;
        Ok(PriceTimeBook { config, book, last_trade_id, conditional })
    }

    fn migrate(from_version: u32, bytes: &[u8]) -> Result<Self, ModuleError> {
        let (config, last_trade_id, book, conditional) = match from_version {
            exhost_guest_sdk::book::BOOK_STATE_V1 => snapshot::read_v1(bytes)?,
            exhost_guest_sdk::book::BOOK_STATE_V2 => snapshot::read_v2(bytes)?,
            other => return Err(ModuleError::new(format!("cannot migrate state version {other} to {STATE_VERSION}"))),
        };
        Ok(PriceTimeBook { config, book, last_trade_id, conditional })
    }
}

#[cfg(feature = "export")]
export_matching_module!(PriceTimeBook);

#[cfg(test)]
mod tests;

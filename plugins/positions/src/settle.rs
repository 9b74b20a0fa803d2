//! Settlement of what a book did: fills change positions, balances and fees;
//! order updates change the open exposure this module margins.

use exhost_guest_sdk::{
    BalanceCause, MarketId, MatchingEvent, OrderUpdate, PositionEvent, PositionOutput, Side, TradeId, UserId,
};

use exhost_guest_sdk::margin::{charge, notional};

use crate::{Call, OpenOrder, Positions};

impl Positions {
    pub(crate) fn settle(
        &mut self,
        market: MarketId,
        events: &[MatchingEvent],
        call: &mut Call,
        out: &mut PositionOutput,
    ) {
        if !self.markets.contains_key(&market) {
            return;
        }
        for event in events {
            match event {
                MatchingEvent::Trade(trade) => {
                    let (maker_fee, taker_fee) = {
                        let risk = &self.markets[&market].risk;
                        (risk.maker_fee_rate, risk.taker_fee_rate)
                    };
                    // The first trade of a market sets its mark, so positions can be valued.
                    let market_state = self.markets.get_mut(&market).expect("checked above");
                    market_state.last_trade_ticks = Some(trade.price_ticks);
                    if market_state.mark_ticks.is_none() {
                        market_state.mark_ticks = Some(trade.price_ticks);
                        out.events.push(PositionEvent::MarkPrice { market, price_ticks: trade.price_ticks });
                    }
                    let maker_side = trade.taker_side.opposite();
                    let (qty, price, id) = (trade.qty_lots, trade.price_ticks, Some(trade.trade_id));
                    self.fill(market, trade.maker_user_id, maker_side, qty, price, (maker_fee, id), call, out);
                    self.fill(market, trade.taker_user_id, trade.taker_side, qty, price, (taker_fee, id), call, out);
                }
                MatchingEvent::Order(update) => {
                    self.follow_order(market, update, out);
                    if !update.status.is_open()
                        && self
                            .liquidating
                            .as_ref()
                            .and_then(|l| l.order)
                            .is_some_and(|(_, id, ..)| id == update.order_id)
                    {
                        self.liquidation_order_done(market, update, call, out);
                    }
                }
                MatchingEvent::Rejected { .. } | MatchingEvent::Level { .. } | MatchingEvent::Wake { .. } => {}
            }
        }
    }

    /// Keep the open-order book of exposures in step with an order's new
    /// state, and say what the owner's resting exposure is when it changed.
    fn follow_order(&mut self, market: MarketId, update: &OrderUpdate, out: &mut PositionOutput) {
        let key = (market, update.order_id);
        let before = self.accounts.get(&update.user_id).and_then(|a| a.exposure.get(&market)).copied();
        if let Some(old) = self.orders.remove(&key)
            && let Some(account) = self.accounts.get_mut(&old.user_id)
            && let Some(exposure) = account.exposure.get_mut(&market)
        {
            exposure.remove(old.side, old.remaining_lots, old.price_ticks);
            if exposure.is_empty() {
                account.exposure.remove(&market);
            }
        }
        if update.status.is_open() {
            let remaining_lots = update.qty_lots - update.filled_lots;
            self.account_mut(update.user_id).exposure.entry(market).or_default().add(
                update.side,
                remaining_lots,
                update.price_ticks,
            );
            self.orders.insert(
                key,
                OpenOrder {
                    user_id: update.user_id,
                    side: update.side,
                    price_ticks: update.price_ticks,
                    filled_lots: update.filled_lots,
                    remaining_lots,
                },
            );
        }
        let after = self.accounts.get(&update.user_id).and_then(|a| a.exposure.get(&market)).copied();
        if before != after {
            out.events.push(PositionEvent::Exposure {
                user_id: update.user_id,
                market,
                exposure: after.unwrap_or_default(),
            });
        }
    }

    /// One side of a trade (or of an auto-deleveraging): position, realized PnL, fee.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn fill(
        &mut self,
        market: MarketId,
        user_id: UserId,
        side: Side,
        qty_lots: u64,
        price_ticks: u64,
        (fee_rate, trade_id): (u64, Option<TradeId>),
        call: &mut Call,
        out: &mut PositionOutput,
    ) {
        let k = self.markets[&market].risk.units_per_tick_lot as i128;
        let delta = match side {
            Side::Buy => qty_lots as i64,
            Side::Sell => -(qty_lots as i64),
        };
        let price = price_ticks as i128;
        // A position settles its funding before it changes, so its index is the market's from here on.
        self.accounts.entry(user_id).or_default().positions.entry(market).or_default();
        self.settle_funding(user_id, market, call, out);
        let index = self.markets[&market].funding_index;
        let account = self.accounts.entry(user_id).or_default();
        let position = account.positions.entry(market).or_default();
        position.funding_index = index;
        let cost_before = position.cost;
        let size = position.size_lots;
        let mut realized_ticklots = 0i128;
        let closing =
            if size != 0 && (size > 0) != (delta > 0) { (delta.unsigned_abs()).min(size.unsigned_abs()) } else { 0 };
        if closing > 0 {
            // Release the closed part's share of the cost basis; the rounding stays in the
            // position's remaining cost, so nothing is created or lost.
            let cost_removed = position.cost * closing as i128 / size.unsigned_abs() as i128;
            let closed_delta = if delta > 0 { closing as i128 } else { -(closing as i128) };
            realized_ticklots = -price * closed_delta - cost_removed;
            position.size_lots += closed_delta as i64;
            position.cost -= cost_removed;
        }
        let opening = delta.unsigned_abs() - closing;
        if opening > 0 {
            let opened_delta = if delta > 0 { opening as i128 } else { -(opening as i128) };
            position.size_lots += opened_delta as i64;
            position.cost += price * opened_delta;
        }
        let realized_units = realized_ticklots * k;
        position.realized_units += realized_units;
        let (size_lots, cost, realized_total) = (position.size_lots, position.cost, position.realized_units);
        if size_lots == 0 {
            debug_assert_eq!(cost, 0, "a flat position has no cost left");
        }
        let market_state = self.markets.get_mut(&market).expect("settled markets exist");
        market_state.cost_total += cost - cost_before;
        if size_lots != 0 {
            market_state.holders.insert(user_id);
        } else {
            market_state.holders.remove(&user_id);
        }
        call.touched.insert(user_id);
        call.ledger_changed = true;
        out.events.push(PositionEvent::Position {
            user_id,
            market,
            size_lots,
            cost,
            realized_pnl_units: realized_total,
        });
        self.credit(user_id, realized_units, BalanceCause::RealizedPnl, call, out);
        let fee = charge(notional(qty_lots, price_ticks, k as u64), fee_rate);
        if fee > 0 {
            self.credit(user_id, -fee, BalanceCause::Fee, call, out);
            self.ledger.fees_units += fee;
        }
        if let Some(trade_id) = trade_id {
            out.events.push(PositionEvent::Fee { user_id, market, trade_id, fee_units: fee });
        }
    }
}

//! Mark prices, liquidation, auto-deleveraging, the insurance fund, funding.
//!
//! A mark-price command checks the holders the liquidation index says the
//! move may have put below maintenance (`watch.rs`): an account whose equity
//! is below its maintenance margin is liquidated within the same command. Its open orders are cancelled; in a tiered market a position is
//! first cut back tier by tier through the book, stopping as soon as the
//! account is healthy; otherwise each position goes to its book
//! as an immediate-or-cancel order no worse than the position's bankruptcy
//! price; what the book cannot absorb is closed against the most profitable,
//! most leveraged opposite positions (auto-deleveraging) at the mark price, or
//! at a worse one only as far as the insurance fund cannot cover the
//! account's deficit. At the end the fund takes the liquidation fee out of
//! what is left, or pays what is missing.

use exhost_guest_sdk::{
    BalanceCause, FollowUp, MarketId, OrderId, OrderUpdate, PositionEvent, PositionOutput, RATE_SCALE, Reason, Side,
    UserId,
};

use crate::{Call, Liquidating, Positions};
use exhost_guest_sdk::margin::{charge, div_ceil, notional, price_where, unrealized};

impl Positions {
    pub(crate) fn mark_price(&mut self, market: MarketId, price_ticks: u64, call: &mut Call, out: &mut PositionOutput) {
        let Some(state) = self.markets.get_mut(&market) else { return };
        if price_ticks == 0 || price_ticks > state.risk.price_ticks_max {
            out.events.push(PositionEvent::Rejected {
                user_id: UserId(0),
                order_id: None,
                reason: Reason::InvalidPrice,
            });
            return;
        }
        state.mark_ticks = Some(price_ticks);
        out.events.push(PositionEvent::MarkPrice { market, price_ticks });
        // Only the accounts the index says this move may have put below
        // maintenance are looked at (`watch.rs`); the healthy ones among
        // them get fresh check prices, the others are liquidated in user-id order.
        for user_id in self.due(market) {
            if self.margin(user_id, None).breached() {
                self.liquidation_queue.push(user_id);
            } else {
                self.watch(user_id);
            }
        }
        self.next_liquidation(call, out);
    }

    fn next_internal_order(call: &mut Call) -> OrderId {
        let id = OrderId(call.next_internal);
        call.next_internal += 1;
        id
    }

    /// Start liquidating the next queued user who is still below maintenance
    /// margin. When the queue runs dry, the users this call touched are checked
    /// again: a liquidation order may have filled resting orders far from the
    /// mark, and deleveraging may have moved counterparties, so the cascade
    /// goes on until nobody holding a position is below maintenance margin.
    fn next_liquidation(&mut self, call: &mut Call, out: &mut PositionOutput) {
        while self.liquidating.is_none() {
            if self.liquidation_queue.is_empty() {
                let breached: Vec<UserId> = call
                    .touched
                    .iter()
                    .copied()
                    .filter(|user_id| {
                        let holds =
                            self.accounts.get(user_id).is_some_and(|a| a.positions.values().any(|p| p.size_lots != 0));
                        let margin = self.margin(*user_id, None);
                        holds && margin.equity_units < margin.maintenance_units
                    })
                    .collect();
                if breached.is_empty() {
                    return;
                }
                self.liquidation_queue.extend(breached);
            }
            let user_id = self.liquidation_queue.remove(0);
            let margin = self.margin(user_id, None);
            // An earlier liquidation's deleveraging may have changed this account.
            if margin.equity_units >= margin.maintenance_units {
                continue;
            }
            out.events.push(PositionEvent::LiquidationStarted {
                user_id,
                equity_units: margin.equity_units,
                maintenance_margin_units: margin.maintenance_units,
            });
            self.settle_all_funding(user_id, call, out);
            for market in self.accounts[&user_id].exposure.keys() {
                out.follow_ups.push(FollowUp::CancelOrders { market: *market, user_id });
            }
            self.liquidating =
                Some(Liquidating { user_id, order: None, fee_units: 0, partial: true, step_from_lots: 0 });
            self.next_position_order(call, out);
        }
    }

    /// Send the liquidated user's next order to a book, or finish. While the
    /// liquidation is partial, a position above its market's first tier is
    /// reduced to the next lower tier's bound, one step at a time, until the
    /// account is healthy again; then (or without such a position) every
    /// position is closed in full.
    fn next_position_order(&mut self, call: &mut Call, out: &mut PositionOutput) {
        let Some(state) = self.liquidating.as_ref() else { return };
        let user_id = state.user_id;
        let margin = self.margin(user_id, None);
        if state.partial {
            if margin.equity_units >= margin.maintenance_units {
                let fee_units = state.fee_units;
                self.liquidating = None;
                self.finish_partial(user_id, fee_units, call, out);
                return;
            }
            match self.next_step(user_id) {
                Some((market, qty_lots)) => return self.send_liquidation_order(user_id, market, qty_lots, call, out),
                None => self.liquidating.as_mut().expect("checked above").partial = false,
            }
        }
        let next = self.accounts[&user_id]
            .positions
            .iter()
            .find(|(_, p)| p.size_lots != 0)
            .map(|(m, p)| (*m, p.size_lots.unsigned_abs()));
        match next {
            Some((market, qty_lots)) => self.send_liquidation_order(user_id, market, qty_lots, call, out),
            None => {
                let fee_units = self.liquidating.as_ref().map_or(0, |state| state.fee_units);
                self.liquidating = None;
                self.finish_liquidation(user_id, fee_units, call, out);
            }
        }
    }

    /// The next partial step: the first position (by market) above its
    /// market's first tier, and how much brings its notional at the mark down
    /// to the next lower tier's bound.
    fn next_step(&self, user_id: UserId) -> Option<(MarketId, u64)> {
        self.accounts[&user_id].positions.iter().filter(|(_, p)| p.size_lots != 0).find_map(|(market_id, position)| {
            let market = &self.markets[market_id];
            let tiers = &market.terms.tiers;
            let k = market.risk.units_per_tick_lot;
            let mark = market.mark_ticks.unwrap_or(0);
            let size = position.size_lots.unsigned_abs();
            let value_per_lot = mark as i128 * k as i128;
            if tiers.len() < 2 || value_per_lot == 0 {
                return None;
            }
            let (tier, _) = crate::risk::tier_of(notional(size, mark, k), tiers, |t| t.maintenance_margin_rate);
            if tier == 0 {
                return None;
            }
            let keep = (tiers[tier - 1].notional_max_units as i128 / value_per_lot).min(size as i128) as u64;
            (keep < size).then_some((*market_id, size - keep))
        })
    }

    /// An immediate-or-cancel order for `qty_lots` of the user's position in
    /// `market`, no worse than its bankruptcy price.
    fn send_liquidation_order(
        &mut self,
        user_id: UserId,
        market: MarketId,
        qty_lots: u64,
        call: &mut Call,
        out: &mut PositionOutput,
    ) {
        let margin = self.margin(user_id, None);
        let (size, cost) = {
            let position = &self.accounts[&user_id].positions[&market];
            (position.size_lots, position.cost)
        };
        let risk = &self.markets[&market].risk;
        let k = risk.units_per_tick_lot;
        let mark = self.markets[&market].mark_ticks.unwrap_or(0);
        // Bankruptcy price: where closing this position leaves the equity at zero.
        let rest = margin.equity_units - unrealized(size, cost, mark, k) - cost * k as i128;
        let bankruptcy =
            price_where(rest, 0, size, k, 0, 0).unwrap_or(mark as i128).clamp(1, risk.price_ticks_max as i128) as u64;
        let side = if size > 0 { Side::Sell } else { Side::Buy };
        let fee = charge(notional(qty_lots, mark, k), risk.liquidation_fee_rate);
        let order_id = Self::next_internal_order(call);
        let state = self.liquidating.as_mut().expect("a liquidation is in progress");
        state.fee_units += fee;
        state.step_from_lots = size.unsigned_abs();
        state.order = Some((market, order_id, side, qty_lots));
        out.events.push(PositionEvent::LiquidationOrder {
            user_id,
            market,
            order_id,
            side,
            qty_lots,
            bankruptcy_price_ticks: bankruptcy,
        });
        out.follow_ups.push(FollowUp::LiquidationOrder {
            market,
            order_id,
            user_id,
            side,
            qty_lots,
            price_ticks: bankruptcy,
        });
    }

    /// A liquidation order's final state arrived: deleverage what the book left,
    /// then go on with the next position or user.
    pub(crate) fn liquidation_order_done(
        &mut self,
        market: MarketId,
        update: &OrderUpdate,
        call: &mut Call,
        out: &mut PositionOutput,
    ) {
        let Some(state) = self.liquidating.as_mut() else { return };
        let user_id = state.user_id;
        let Some((_, _, side, qty_lots)) = state.order.take() else { return };
        if state.partial {
            // A step the book could not take in full ends the stepping: the
            // account is closed out, deleveraging what the book cannot absorb.
            // So does one that left the position as large (it met the user's
            // own order): every step must shrink it, or stepping could not end.
            let step_from_lots = state.step_from_lots;
            let size = self.accounts.get(&user_id).and_then(|a| a.positions.get(&market)).map_or(0, |p| p.size_lots);
            let state = self.liquidating.as_mut().expect("checked above");
            if update.filled_lots < qty_lots || size.unsigned_abs() >= step_from_lots {
                state.partial = false;
            }
        } else {
            let size = self.accounts.get(&user_id).and_then(|a| a.positions.get(&market)).map_or(0, |p| p.size_lots);
            if size != 0 {
                self.auto_deleverage(user_id, market, side, size.unsigned_abs(), call, out);
            }
        }
        self.next_position_order(call, out);
        self.next_liquidation(call, out);
    }

    /// Close `qty` of the liquidated user's position against opposite positions,
    /// ranked by profit ratio × leverage (highest first, then lowest user id).
    fn auto_deleverage(
        &mut self,
        user_id: UserId,
        market: MarketId,
        side: Side,
        qty_lots: u64,
        call: &mut Call,
        out: &mut PositionOutput,
    ) {
        let (k, mark, price_max) = {
            let state = &self.markets[&market];
            (state.risk.units_per_tick_lot, state.mark_ticks.unwrap_or(1), state.risk.price_ticks_max)
        };
        // At the mark, the account ends with its equity at marks; the fund covers a
        // deficit as far as it can, and only the rest moves the price against the counterparties.
        let equity = self.margin(user_id, None).equity_units;
        let shortfall = (-equity) - self.ledger.insurance_fund_units.max(0);
        let mut price = mark as i128;
        if shortfall > 0 {
            let per_lot = div_ceil(shortfall, qty_lots as i128 * k as i128);
            price = match side {
                Side::Sell => price + per_lot,
                Side::Buy => price - per_lot,
            };
        }
        let price = price.clamp(1, price_max as i128) as u64;
        // The candidates: the opposite side of the liquidation index (every
        // position on that side as of its last re-index), and whoever this
        // call changed since. Not every holder: a market of a million longs
        // and a few shorts ranks the few.
        let state = &self.markets[&market];
        let indexed = match side {
            Side::Sell => &state.watch_short,
            Side::Buy => &state.watch_long,
        };
        let mut candidates: Vec<UserId> =
            indexed.iter().map(|&(_, holder)| holder).chain(call.touched.iter().copied()).collect();
        candidates.sort_unstable();
        candidates.dedup();
        let mut ranked: Vec<(i128, UserId)> = candidates
            .into_iter()
            .filter(|&holder| holder != user_id)
            .filter_map(|holder| {
                let position = self.accounts.get(&holder)?.positions.get(&market)?;
                // A liquidated seller closes against shorts (who buy), a buyer against longs.
                let opposite = match side {
                    Side::Sell => position.size_lots < 0,
                    Side::Buy => position.size_lots > 0,
                };
                opposite.then(|| (self.adl_score(holder, market), holder))
            })
            .collect();
        ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut left = qty_lots;
        for (_, counterparty) in ranked {
            if left == 0 {
                break;
            }
            let available = self.accounts[&counterparty].positions[&market].size_lots.unsigned_abs();
            let take = left.min(available);
            self.fill(market, user_id, side, take, price, (0, None), call, out);
            self.fill(market, counterparty, side.opposite(), take, price, (0, None), call, out);
            out.events.push(PositionEvent::AutoDeleverage {
                market,
                liquidated_user_id: user_id,
                counterparty_user_id: counterparty,
                liquidated_side: side,
                qty_lots: take,
                price_ticks: price,
            });
            left -= take;
        }
    }

    /// Profit ratio × leverage, both in 1e-8 units: who gives up a position first.
    fn adl_score(&self, user_id: UserId, market: MarketId) -> i128 {
        let state = &self.markets[&market];
        let k = state.risk.units_per_tick_lot;
        let mark = state.mark_ticks.unwrap_or(0);
        let position = &self.accounts[&user_id].positions[&market];
        let upnl = unrealized(position.size_lots, position.cost, mark, k);
        let entry_notional = (position.cost.abs() * k as i128).max(1);
        let equity = self.margin(user_id, None).equity_units.max(1);
        let notional_at_mark = notional(position.size_lots.unsigned_abs(), mark, k);
        let profit_ratio = upnl * RATE_SCALE / entry_notional;
        let leverage = notional_at_mark * RATE_SCALE / equity;
        profit_ratio * leverage
    }

    /// Healthy again after partial steps: the fund takes the steps' fee, as
    /// far as the balance, and the margin above maintenance, allow.
    fn finish_partial(&mut self, user_id: UserId, fee_units: i128, call: &mut Call, out: &mut PositionOutput) {
        let balance = self.accounts.get(&user_id).map_or(0, |a| a.balance_units);
        let margin = self.margin(user_id, None);
        let fee = fee_units.min(balance).min(margin.equity_units - margin.maintenance_units).max(0);
        self.credit(user_id, -fee, BalanceCause::LiquidationFee, call, out);
        self.fund(fee, Some(user_id), call, out);
        call.touched.insert(user_id);
    }

    /// All positions closed: the fund takes the fee out of what is left, or pays the deficit.
    fn finish_liquidation(&mut self, user_id: UserId, fee_units: i128, call: &mut Call, out: &mut PositionOutput) {
        let balance = self.accounts.get(&user_id).map_or(0, |a| a.balance_units);
        if balance > 0 {
            let fee = fee_units.min(balance);
            self.credit(user_id, -fee, BalanceCause::LiquidationFee, call, out);
            self.fund(fee, Some(user_id), call, out);
        } else if balance < 0 {
            self.fund(balance, Some(user_id), call, out);
            self.credit(user_id, -balance, BalanceCause::InsurancePayout, call, out);
        }
        call.touched.insert(user_id);
    }

    /// Funding at the mark: positive rates make longs pay shorts. One move of
    /// the market's funding index; each position settles what it owes when
    /// it next changes, is liquidated or its account withdraws.
    pub(crate) fn funding(&mut self, market: MarketId, rate: i64, out: &mut PositionOutput) {
        let Some(state) = self.markets.get_mut(&market) else { return };
        let Some(mark) = state.mark_ticks else {
            out.events.push(PositionEvent::Rejected {
                user_id: UserId(0),
                order_id: None,
                reason: Reason::NoMarkPrice,
            });
            return;
        };
        let index_delta = mark as i128 * state.risk.units_per_tick_lot as i128 * rate as i128;
        state.funding_index += index_delta;
        state.shift_for_funding(index_delta);
        out.events.push(PositionEvent::FundingIndex {
            market,
            rate,
            mark_price_ticks: mark,
            index_delta,
            index: state.funding_index,
        });
        // The premium is sampled afresh for the next interval.
        state.last_funding_rate = rate;
        state.premium_sum = 0;
        state.premium_samples = 0;
    }
}

//! Money in and out, margin of an account, the pre-trade checks, and the
//! account change message.

use exhost_guest_sdk::{
    AccountState, BalanceCause, MarketId, OrderId, OrderIntent, OrderType, PositionEvent, PositionOutput,
    PositionState, RATE_SCALE, Reason, Side, UserId,
};

use crate::risk::{notional, price_where, unrealized};
use crate::{Account, Call, Exposure, Positions};

/// An account's margin figures at the current marks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Margin {
    pub unrealized_units: i128,
    pub equity_units: i128,
    pub initial_units: i128,
    pub maintenance_units: i128,
}

impl Positions {
    pub(crate) fn account_mut(&mut self, user_id: UserId) -> &mut Account {
        self.accounts.entry(user_id).or_default()
    }

    /// Change a balance and say so.
    pub(crate) fn credit(
        &mut self,
        user_id: UserId,
        delta_units: i128,
        cause: BalanceCause,
        call: &mut Call,
        out: &mut PositionOutput,
    ) {
        if delta_units == 0 {
            return;
        }
        let account = self.account_mut(user_id);
        account.balance_units += delta_units;
        let balance_units = account.balance_units;
        self.ledger.user_balances_units += delta_units;
        call.touched.insert(user_id);
        call.ledger_changed = true;
        out.events.push(PositionEvent::Balance { user_id, balance_units, delta_units, cause });
    }

    /// Change the insurance fund and say so.
    pub(crate) fn fund(
        &mut self,
        delta_units: i128,
        user_id: Option<UserId>,
        call: &mut Call,
        out: &mut PositionOutput,
    ) {
        if delta_units == 0 {
            return;
        }
        self.ledger.insurance_fund_units += delta_units;
        call.ledger_changed = true;
        out.events.push(PositionEvent::InsuranceFund {
            balance_units: self.ledger.insurance_fund_units,
            delta_units,
            user_id,
        });
    }

    pub(crate) fn deposit(
        &mut self,
        user_id: Option<UserId>,
        amount_units: u64,
        call: &mut Call,
        out: &mut PositionOutput,
    ) {
        let amount = amount_units as i128;
        self.ledger.deposits_units += amount;
        call.ledger_changed = true;
        match user_id {
            Some(user_id) => self.credit(user_id, amount, BalanceCause::Deposit, call, out),
            None => self.fund(amount, None, call, out),
        }
    }

    /// Refused if it would leave the balance negative or the equity below the initial margin.
    pub(crate) fn withdraw(&mut self, user_id: UserId, amount_units: u64, call: &mut Call, out: &mut PositionOutput) {
        let amount = amount_units as i128;
        let balance = self.accounts.get(&user_id).map_or(0, |a| a.balance_units);
        let margin = self.margin(user_id, None);
        if amount > balance || margin.equity_units - amount < margin.initial_units {
            out.events.push(PositionEvent::Rejected { user_id, order_id: None, reason: Reason::InsufficientMargin });
            return;
        }
        self.ledger.withdrawals_units += amount;
        self.credit(user_id, -amount, BalanceCause::Withdrawal, call, out);
    }

    /// Margin of an account, optionally with its resting exposure in one market changed.
    pub(crate) fn margin(&self, user_id: UserId, extra: Option<(MarketId, &ExposureChange)>) -> Margin {
        let Some(account) = self.accounts.get(&user_id) else {
            return self.extra_only_margin(extra);
        };
        let mut margin = Margin { equity_units: account.balance_units, ..Margin::default() };
        let mut markets: Vec<MarketId> = account.positions.keys().chain(account.exposure.keys()).copied().collect();
        if let Some((market, _)) = extra {
            markets.push(market);
        }
        markets.sort_unstable();
        markets.dedup();
        for market_id in markets {
            let Some(market) = self.markets.get(&market_id) else { continue };
            let k = market.risk.units_per_tick_lot;
            let position = account.positions.get(&market_id);
            let (size, cost) = position.map_or((0, 0), |p| (p.size_lots, p.cost));
            let mark = market.mark_ticks.unwrap_or(0);
            if size != 0 {
                let upnl = unrealized(size, cost, mark, k);
                margin.unrealized_units += upnl;
                margin.maintenance_units += market.maintenance_units(notional(size.unsigned_abs(), mark, k));
            }
            let mut exposure = account.exposure.get(&market_id).cloned().unwrap_or_default();
            if let Some((extra_market, change)) = extra
                && extra_market == market_id
            {
                change.apply_to(&mut exposure);
            }
            margin.initial_units += market.initial_units(exposure_notional(size, mark, &exposure, k));
        }
        margin.equity_units += margin.unrealized_units;
        margin
    }

    fn extra_only_margin(&self, extra: Option<(MarketId, &ExposureChange)>) -> Margin {
        let mut margin = Margin::default();
        if let Some((market_id, change)) = extra
            && let Some(market) = self.markets.get(&market_id)
        {
            let mut exposure = Exposure::default();
            change.apply_to(&mut exposure);
            let k = market.risk.units_per_tick_lot;
            margin.initial_units = market.initial_units(exposure_notional(0, 0, &exposure, k));
        }
        margin
    }

    /// The pre-trade check: reduce-only orders must reduce; others must leave
    /// equity at or above the initial margin of positions plus open orders.
    pub(crate) fn check_order(&self, intent: &OrderIntent, out: &mut PositionOutput) {
        let reject = |reason: Reason, out: &mut PositionOutput| {
            out.events.push(PositionEvent::Rejected {
                user_id: intent.user_id,
                order_id: Some(intent.order_id),
                reason,
            });
        };
        let Some(market) = self.markets.get(&intent.market) else {
            return reject(Reason::UnknownMarket, out);
        };
        if intent.reduce_only {
            let size = self
                .accounts
                .get(&intent.user_id)
                .and_then(|a| a.positions.get(&intent.market))
                .map_or(0, |p| p.size_lots);
            let reduces = match intent.side {
                Side::Buy => size < 0,
                Side::Sell => size > 0,
            };
            if !reduces || intent.qty_lots > size.unsigned_abs() {
                reject(Reason::ReduceOnlyViolation, out);
            }
            return;
        }
        let price_ticks = match (intent.order_type, market.mark_ticks) {
            (OrderType::Limit, _) => intent.price_ticks,
            (OrderType::Market, Some(mark)) => mark,
            (OrderType::Market, None) => return reject(Reason::NoMarkPrice, out),
        };
        let mut change = ExposureChange::default();
        change.add.add(intent.side, intent.qty_lots, price_ticks);
        let margin = self.margin(intent.user_id, Some((intent.market, &change)));
        if margin.equity_units < margin.initial_units {
            reject(Reason::InsufficientMargin, out);
        }
    }

    /// An amend is checked like an order, for the exposure it adds.
    pub(crate) fn check_amend(
        &self,
        market: MarketId,
        order_id: OrderId,
        user_id: UserId,
        price_ticks: Option<u64>,
        qty_lots: Option<u64>,
        out: &mut PositionOutput,
    ) {
        // Unknown or someone else's: the book refuses it; nothing to check here.
        let Some(order) = self.orders.get(&(market, order_id)).filter(|o| o.user_id == user_id) else { return };
        let new_price = price_ticks.unwrap_or(order.price_ticks);
        let new_remaining = qty_lots.map_or(order.remaining_lots, |qty| qty.saturating_sub(order.filled_lots));
        let mut change = ExposureChange::default();
        change.remove.add(order.side, order.remaining_lots, order.price_ticks);
        change.add.add(order.side, new_remaining, new_price);
        let before = self.margin(user_id, None);
        let after = self.margin(user_id, Some((market, &change)));
        if after.initial_units > before.initial_units && after.equity_units < after.initial_units {
            out.events.push(PositionEvent::Rejected {
                user_id,
                order_id: Some(order_id),
                reason: Reason::InsufficientMargin,
            });
        }
    }

    /// The account change message: everything a reader needs, computed now.
    pub(crate) fn account_state(&self, user_id: UserId) -> Option<AccountState> {
        let account = self.accounts.get(&user_id)?;
        let margin = self.margin(user_id, None);
        let mut positions = Vec::new();
        for (market_id, position) in &account.positions {
            let Some(market) = self.markets.get(market_id) else { continue };
            let k = market.risk.units_per_tick_lot;
            let mark = market.mark_ticks.unwrap_or(0);
            let upnl = if position.size_lots == 0 { 0 } else { unrealized(position.size_lots, position.cost, mark, k) };
            let liquidation_price_ticks = if position.size_lots == 0 {
                None
            } else {
                // Equity without this position's mark term, and maintenance without its own.
                let rest = margin.equity_units - upnl - position.cost * k as i128;
                // With tiers: the rate and amount of the tier the position is in now.
                let own_notional = notional(position.size_lots.unsigned_abs(), mark, k);
                let own_mm = market.maintenance_units(own_notional);
                let (rate, cumulative) = market.maintenance_tier(own_notional);
                price_where(rest, margin.maintenance_units - own_mm, position.size_lots, k, rate, cumulative)
                    .filter(|&price| price > 0)
                    .map(|price| price.min(u64::MAX as i128) as u64)
            };
            positions.push(PositionState {
                market: *market_id,
                size_lots: position.size_lots,
                cost: position.cost,
                entry_price_ticks: if position.size_lots == 0 {
                    0
                } else {
                    (position.cost / position.size_lots as i128).unsigned_abs() as u64
                },
                // A flat position's message must not change with marks it no longer follows.
                mark_price_ticks: if position.size_lots == 0 { 0 } else { mark },
                unrealized_pnl_units: upnl,
                realized_pnl_units: position.realized_units,
                liquidation_price_ticks,
            });
        }
        Some(AccountState {
            user_id,
            balance_units: account.balance_units,
            unrealized_pnl_units: margin.unrealized_units,
            equity_units: margin.equity_units,
            initial_margin_units: margin.initial_units,
            maintenance_margin_units: margin.maintenance_units,
            available_units: margin.equity_units - margin.initial_units,
            margin_ratio: (margin.equity_units > 0)
                .then(|| margin.maintenance_units * RATE_SCALE / margin.equity_units),
            positions,
        })
    }
}

/// A hypothetical change of resting exposure, for checks.
#[derive(Default)]
pub(crate) struct ExposureChange {
    add: Exposure,
    remove: Exposure,
}

impl ExposureChange {
    fn apply_to(&self, exposure: &mut Exposure) {
        exposure.buy_lots = (exposure.buy_lots + self.add.buy_lots).saturating_sub(self.remove.buy_lots);
        exposure.buy_notional =
            (exposure.buy_notional + self.add.buy_notional).saturating_sub(self.remove.buy_notional);
        exposure.sell_lots = (exposure.sell_lots + self.add.sell_lots).saturating_sub(self.remove.sell_lots);
        exposure.sell_notional =
            (exposure.sell_notional + self.add.sell_notional).saturating_sub(self.remove.sell_notional);
    }
}

/// What one market's initial margin is charged on: the larger of the long
/// and the short exposure (position at mark plus resting orders at their
/// prices), settlement units.
fn exposure_notional(size_lots: i64, mark_ticks: u64, exposure: &Exposure, k: u64) -> i128 {
    let long = size_lots.max(0) as u128 * mark_ticks as u128 + exposure.buy_notional;
    let short = (-size_lots).max(0) as u128 * mark_ticks as u128 + exposure.sell_notional;
    long.max(short) as i128 * k as i128
}

//! Money in and out, margin of an account, the pre-trade checks, and the
//! account as a query shows it.

use exhost_guest_sdk::margin::{Exposure, Margin, div_ceil, funding_owed_scaled, funding_settlement_units};
use exhost_guest_sdk::{
    AccountState, BalanceCause, MarketId, OrderId, OrderIntent, OrderType, PositionEvent, PositionOutput, RATE_SCALE,
    Reason, Side, UserId,
};

use crate::{Account, Call, Markets, Positions};

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
        self.settle_all_funding(user_id, call, out);
        self.credit(user_id, -amount, BalanceCause::Withdrawal, call, out);
    }

    /// Settle the funding a position owes or is owed since it last settled:
    /// the balance moves by it (payers rounded up, receivers down), and the
    /// rounding goes to the insurance fund as the last receiver of each
    /// funding settles (see `funding_settled_scaled`).
    pub(crate) fn settle_funding(
        &mut self,
        user_id: UserId,
        market: MarketId,
        call: &mut Call,
        out: &mut PositionOutput,
    ) {
        let Some(index) = self.markets.get(&market).map(|m| m.funding_index) else { return };
        let Some(position) = self.accounts.get_mut(&user_id).and_then(|a| a.positions.get_mut(&market)) else { return };
        if position.funding_index == index {
            return;
        }
        let owed = funding_owed_scaled(position.size_lots, index, position.funding_index);
        position.funding_index = index;
        if owed == 0 {
            return;
        }
        let amount = funding_settlement_units(owed);
        let owed_before = div_ceil(self.funding_settled_scaled, RATE_SCALE);
        self.funding_settled_scaled += owed;
        let owed_after = div_ceil(self.funding_settled_scaled, RATE_SCALE);
        call.ledger_changed = true;
        out.events.push(PositionEvent::FundingSettled { user_id, market, index, amount_units: amount });
        self.credit(user_id, amount, BalanceCause::Funding, call, out);
        self.fund(-amount - (owed_after - owed_before), None, call, out);
        call.touched.insert(user_id);
    }

    /// Settle every position of the user.
    pub(crate) fn settle_all_funding(&mut self, user_id: UserId, call: &mut Call, out: &mut PositionOutput) {
        let markets: Vec<MarketId> =
            self.accounts.get(&user_id).map_or(Vec::new(), |a| a.positions.keys().copied().collect());
        for market in markets {
            self.settle_funding(user_id, market, call, out);
        }
    }

    /// Margin of an account, optionally with its resting exposure in one market changed.
    pub(crate) fn margin(&self, user_id: UserId, extra: Option<(MarketId, &ExposureChange)>) -> Margin {
        let empty = Account::default();
        let account = self.accounts.get(&user_id).unwrap_or(&empty);
        let extra = extra.map(|(market, change)| {
            let mut exposure = account.exposure.get(&market).copied().unwrap_or_default();
            change.apply_to(&mut exposure);
            (market, exposure)
        });
        exhost_guest_sdk::margin::margin(
            account.balance_units,
            &account.positions,
            &account.exposure,
            extra,
            &Markets(&self.markets),
        )
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

    /// The account as a query shows it: every figure computed now, with
    /// the valuation the read side uses too.
    pub(crate) fn account_state(&self, user_id: UserId) -> Option<AccountState> {
        let account = self.accounts.get(&user_id)?;
        Some(exhost_guest_sdk::margin::account_state(
            user_id,
            account.balance_units,
            &account.positions,
            &account.exposure,
            &Markets(&self.markets),
        ))
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

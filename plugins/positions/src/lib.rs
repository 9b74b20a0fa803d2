//! # Reference position module
//!
//! Linear perpetual futures margined in one settlement asset, one-way mode,
//! cross margin per user. It keeps balances, positions (size and exact cost
//! basis), every open order's exposure, the fee account, the insurance fund
//! and the exchange's ledger; it checks orders before they reach a book,
//! settles what books did, moves marks, liquidates, auto-deleverages and
//! charges funding. Everything is an integer; every rule is in
//! `docs/positions.md`.
//!
//! Positions carry their cost basis `cost = Σ price × signed qty` (tick·lot
//! units) instead of a rounded entry price, so value is conserved exactly:
//! across any trade, the sum over both sides of `balance + mark × size − cost`
//! does not change, whatever the rounding of a partial close. That is what
//! lets the ledger balance to the unit.

mod accounts;
mod index;
mod liquidation;
pub mod risk;
mod settle;
mod v1;

use std::collections::{BTreeMap, BTreeSet};

use exhost_guest_sdk::codec::{decode, encode_into};
use exhost_guest_sdk::{
    CommandContext, LedgerState, MarketId, MarketRisk, MarketTerms, ModuleError, OrderId, PositionCommand,
    PositionConfig, PositionEvent, PositionModule, PositionOutput, PositionQuery, PositionQueryResult, Side, UserId,
    export_position_module,
};
use serde::{Deserialize, Serialize};

/// The snapshot format version of this module: 2 added market terms (risk
/// tiers, funding), the index and premium samples, and partial liquidation.
/// Version 1 snapshots migrate (`v1.rs`).
pub const STATE_VERSION: u32 = 2;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Position {
    size_lots: i64,
    /// Σ price × signed qty over the open part, tick·lot units.
    cost: i128,
    /// Realized PnL in this market since the account opened, settlement units.
    realized_units: i128,
}

/// Resting quantity and notional per side of one user in one market.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Exposure {
    buy_lots: u64,
    /// Σ price × qty of resting buys, tick·lot units.
    buy_notional: u128,
    sell_lots: u64,
    sell_notional: u128,
}

impl Exposure {
    fn is_empty(&self) -> bool {
        self.buy_lots == 0 && self.sell_lots == 0
    }

    fn add(&mut self, side: Side, qty_lots: u64, price_ticks: u64) {
        let notional = qty_lots as u128 * price_ticks as u128;
        match side {
            Side::Buy => {
                self.buy_lots += qty_lots;
                self.buy_notional += notional;
            }
            Side::Sell => {
                self.sell_lots += qty_lots;
                self.sell_notional += notional;
            }
        }
    }

    fn remove(&mut self, side: Side, qty_lots: u64, price_ticks: u64) {
        let notional = qty_lots as u128 * price_ticks as u128;
        match side {
            Side::Buy => {
                self.buy_lots -= qty_lots;
                self.buy_notional -= notional;
            }
            Side::Sell => {
                self.sell_lots -= qty_lots;
                self.sell_notional -= notional;
            }
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Account {
    balance_units: i128,
    positions: BTreeMap<MarketId, Position>,
    exposure: BTreeMap<MarketId, Exposure>,
}

/// An order resting in a book, as this module follows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct OpenOrder {
    user_id: UserId,
    side: Side,
    price_ticks: u64,
    filled_lots: u64,
    remaining_lots: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Market {
    risk: MarketRisk,
    mark_ticks: Option<u64>,
    /// Users with a non-zero position here.
    holders: BTreeSet<UserId>,
    /// Σ cost over all positions: Σ unrealized PnL = −Σ cost × k, since sizes sum to zero.
    cost_total: i128,
    /// Tiers and funding terms (standard ones until the host sends others).
    terms: MarketTerms,
    index_ticks: Option<u64>,
    last_trade_ticks: Option<u64>,
    /// The last `BASIS_SAMPLES_MAX` samples of `mid − index`, ticks, oldest first.
    basis_samples: Vec<i64>,
    /// Σ and count of the premium samples since the last funding (1e-8 units).
    premium_sum: i128,
    premium_samples: u64,
    /// The rate of the last funding, 1e-8 units.
    last_funding_rate: i64,
}

impl Market {
    fn new(risk: MarketRisk) -> Market {
        Market {
            terms: MarketTerms::standard(risk.market),
            risk,
            mark_ticks: None,
            holders: BTreeSet::new(),
            cost_total: 0,
            index_ticks: None,
            last_trade_ticks: None,
            basis_samples: Vec::new(),
            premium_sum: 0,
            premium_samples: 0,
            last_funding_rate: 0,
        }
    }

    /// Maintenance margin of a position of this notional (settlement units).
    fn maintenance_units(&self, notional_units: i128) -> i128 {
        if self.terms.tiers.is_empty() {
            risk::charge(notional_units, self.risk.maintenance_margin_rate)
        } else {
            risk::tiered_charge(notional_units, &self.terms.tiers, |tier| tier.maintenance_margin_rate)
        }
    }

    /// Initial margin of an exposure of this notional.
    fn initial_units(&self, notional_units: i128) -> i128 {
        if self.terms.tiers.is_empty() {
            risk::charge(notional_units, self.risk.initial_margin_rate)
        } else {
            risk::tiered_charge(notional_units, &self.terms.tiers, |tier| tier.initial_margin_rate)
        }
    }

    /// The maintenance rate and cumulative amount (rate-scaled) of the tier this notional is in.
    fn maintenance_tier(&self, notional_units: i128) -> (u64, i128) {
        if self.terms.tiers.is_empty() {
            (self.risk.maintenance_margin_rate, 0)
        } else {
            let (index, cumulative) =
                risk::tier_of(notional_units, &self.terms.tiers, |tier| tier.maintenance_margin_rate);
            (self.terms.tiers[index].maintenance_margin_rate, cumulative)
        }
    }
}

/// The liquidation in progress within the current command: one user at a
/// time, one position at a time, so every order is sized from the state left
/// by the previous one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Liquidating {
    user_id: UserId,
    /// The order sent for the current position: (market, order id, side, qty).
    order: Option<(MarketId, OrderId, Side, u64)>,
    /// Σ liquidation fee over the positions closed so far, charged at the end.
    fee_units: i128,
    /// Still reducing tier by tier; false once a full close has begun.
    partial: bool,
    /// |size| of the position the current partial step reduces, before it.
    step_from_lots: u64,
}

/// The whole state; its postcard encoding is the snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Positions {
    config: PositionConfig,
    markets: BTreeMap<MarketId, Market>,
    accounts: BTreeMap<UserId, Account>,
    orders: BTreeMap<(MarketId, OrderId), OpenOrder>,
    ledger: LedgerState,
    /// Users found below maintenance margin by the current command, not yet started.
    liquidation_queue: Vec<UserId>,
    liquidating: Option<Liquidating>,
}

/// Per-call bookkeeping: who changed, so each gets one `Account` event.
#[derive(Default)]
struct Call {
    touched: BTreeSet<UserId>,
    ledger_changed: bool,
    /// Liquidation order ids made in this call: seq << 16 | counter, high bit set.
    next_internal: u64,
}

/// Internal order ids (liquidations) have the top bit set, so they never meet
/// the host's order ids, which are sequence numbers.
const INTERNAL_ORDER_BIT: u64 = 1 << 63;

impl Positions {
    /// The exchange's books now.
    pub fn ledger(&self) -> &LedgerState {
        &self.ledger
    }

    /// Check the invariants that must hold between commands (for tests).
    pub fn check_invariants(&self) -> Result<(), String> {
        for (id, market) in &self.markets {
            let mut size_sum = 0i128;
            let mut cost_sum = 0i128;
            for (user_id, account) in &self.accounts {
                if let Some(position) = account.positions.get(id) {
                    size_sum += position.size_lots as i128;
                    cost_sum += position.cost;
                    if (position.size_lots != 0) != market.holders.contains(user_id) {
                        return Err(format!("holders of market {id} out of step for user {user_id}"));
                    }
                }
            }
            if size_sum != 0 {
                return Err(format!("sizes in market {id} sum to {size_sum}"));
            }
            if cost_sum != market.cost_total {
                return Err(format!("market {id} cost total {} != {cost_sum}", market.cost_total));
            }
        }
        let balances: i128 = self.accounts.values().map(|a| a.balance_units).sum();
        if balances != self.ledger.user_balances_units {
            return Err(format!("balances {balances} != ledger {}", self.ledger.user_balances_units));
        }
        let mut ledger = self.ledger.clone();
        ledger.unrealized_pnl_units = self.unrealized_total();
        if ledger.imbalance() != 0 {
            return Err(format!("the books do not balance by {}: {ledger:?}", ledger.imbalance()));
        }
        if !self.liquidation_queue.is_empty() || self.liquidating.is_some() {
            return Err("a liquidation outlived its command".into());
        }
        Ok(())
    }

    fn unrealized_total(&self) -> i128 {
        self.markets.values().map(|m| -m.cost_total * m.risk.units_per_tick_lot as i128).sum()
    }

    fn finish_call(&mut self, call: Call, out: &mut PositionOutput) {
        for user_id in &call.touched {
            if let Some(state) = self.account_state(*user_id) {
                out.events.push(PositionEvent::Account(state));
            }
        }
        if call.ledger_changed {
            self.ledger.unrealized_pnl_units = self.unrealized_total();
            out.events.push(PositionEvent::Ledger(self.ledger.clone()));
        }
    }
}

impl PositionModule for Positions {
    const STATE_VERSION: u32 = STATE_VERSION;

    fn init(config: &PositionConfig) -> Result<Self, ModuleError> {
        if config.settlement_asset.is_empty() {
            return Err(ModuleError::new("settlement_asset must be named"));
        }
        Ok(Positions {
            config: config.clone(),
            markets: BTreeMap::new(),
            accounts: BTreeMap::new(),
            orders: BTreeMap::new(),
            ledger: LedgerState::default(),
            liquidation_queue: Vec::new(),
            liquidating: None,
        })
    }

    fn apply(&mut self, ctx: &CommandContext, command: &PositionCommand, out: &mut PositionOutput) {
        let mut call = Call { next_internal: INTERNAL_ORDER_BIT | (ctx.seq << 16), ..Call::default() };
        match command {
            PositionCommand::Deposit { user_id, amount_units } => self.deposit(*user_id, *amount_units, &mut call, out),
            PositionCommand::Withdraw { user_id, amount_units } => {
                self.withdraw(*user_id, *amount_units, &mut call, out)
            }
            PositionCommand::AddMarket(risk) => {
                self.markets.entry(risk.market).or_insert_with(|| Market::new(risk.clone()));
            }
            PositionCommand::MarketTerms(terms) => self.market_terms(terms, out),
            PositionCommand::IndexPrice { market, index_ticks, mid_ticks } => {
                self.index_price(ctx, *market, *index_ticks, *mid_ticks, &mut call, out)
            }
            PositionCommand::PremiumFunding { market } => self.premium_funding(*market, &mut call, out),
            PositionCommand::CheckOrder(intent) => self.check_order(intent, out),
            PositionCommand::CheckAmend { market, order_id, user_id, price_ticks, qty_lots } => {
                self.check_amend(*market, *order_id, *user_id, *price_ticks, *qty_lots, out)
            }
            PositionCommand::Settle { market, events } => self.settle(*market, events, &mut call, out),
            PositionCommand::MarkPrice { market, price_ticks } => {
                self.mark_price(*market, *price_ticks, &mut call, out)
            }
            PositionCommand::Funding { market, rate } => self.funding(*market, *rate, &mut call, out),
        }
        self.finish_call(call, out);
    }

    fn query(&self, query: &PositionQuery) -> PositionQueryResult {
        match query {
            PositionQuery::Account { user_id } => PositionQueryResult::Account(self.account_state(*user_id)),
            PositionQuery::Ledger => {
                let mut ledger = self.ledger.clone();
                ledger.unrealized_pnl_units = self.unrealized_total();
                PositionQueryResult::Ledger(ledger)
            }
        }
    }

    fn snapshot(&self, out: &mut Vec<u8>) {
        encode_into(self, out);
    }

    fn restore(bytes: &[u8]) -> Result<Self, ModuleError> {
        let state: Positions =
            decode(bytes).map_err(|error| ModuleError::new(format!("positions snapshot v{STATE_VERSION}: {error}")))?;
        state
            .check_invariants()
            .map_err(|error| ModuleError::new(format!("positions snapshot is inconsistent: {error}")))?;
        Ok(state)
    }

    fn migrate(from_version: u32, bytes: &[u8]) -> Result<Self, ModuleError> {
        let state = match from_version {
            1 => v1::read(bytes)?,
            other => return Err(ModuleError::new(format!("cannot migrate state version {other} to {STATE_VERSION}"))),
        };
        state
            .check_invariants()
            .map_err(|error| ModuleError::new(format!("migrated positions state is inconsistent: {error}")))?;
        Ok(state)
    }
}

export_position_module!(Positions);

#[cfg(test)]
mod tests;

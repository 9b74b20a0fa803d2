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
mod v2;
mod watch;

use std::collections::{BTreeMap, BTreeSet};

use exhost_guest_sdk::codec::{decode, encode_into};
use exhost_guest_sdk::margin::{ByMarket, Exposure, MarketLookup, MarketView, PositionRecord};
use exhost_guest_sdk::{
    CommandContext, LedgerState, MarketId, MarketRisk, MarketTerms, ModuleError, OrderId, PositionCommand,
    PositionConfig, PositionEvent, PositionModule, PositionOutput, PositionQuery, PositionQueryResult, RATE_SCALE,
    Side, UserId, export_position_module,
};
use serde::{Deserialize, Serialize};

/// The snapshot format version of this module: 3 made funding an index
/// settled per position, indexed every account by the mark at which it must
/// be checked, and stopped re-emitting accounts; 2 added market terms (risk
/// tiers, funding), the index and premium samples, and partial liquidation.
/// Version 1 and 2 snapshots migrate (`v1.rs`, `v2.rs`).
pub const STATE_VERSION: u32 = 3;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Account {
    balance_units: i128,
    positions: ByMarket<PositionRecord>,
    exposure: ByMarket<Exposure>,
    /// Where each open position of this account sits in its market's
    /// liquidation index (`watch.rs`).
    watch: ByMarket<WatchKey>,
}

/// A position's entry in its market's liquidation index: the side's set and the key in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct WatchKey {
    long: bool,
    key: i128,
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
    /// Σ mark × k × rate over every funding: settlement units × 10⁸ per lot long.
    funding_index: i128,
    /// Long positions by the mark at or below which their account must be
    /// checked, less `long_shift` when the key was made.
    watch_long: BTreeSet<(i128, UserId)>,
    /// Short positions by the mark at or above which their account must be
    /// checked, plus `short_shift` when the key was made.
    watch_short: BTreeSet<(i128, UserId)>,
    /// Ticks by which fundings since the start have brought every long's
    /// (short's) check price closer, at most: a key made at shift `d` is due
    /// at `key + (shift − d)` (`key − (shift − d)` for shorts).
    long_shift: i128,
    short_shift: i128,
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
            funding_index: 0,
            watch_long: BTreeSet::new(),
            watch_short: BTreeSet::new(),
            long_shift: 0,
            short_shift: 0,
        }
    }

    fn view(&self) -> MarketView<'_> {
        MarketView {
            risk: &self.risk,
            tiers: &self.terms.tiers,
            mark_ticks: self.mark_ticks,
            funding_index: self.funding_index,
        }
    }
}

/// The markets, as the valuation in `exhost_guest_sdk::margin` reads them.
struct Markets<'a>(&'a BTreeMap<MarketId, Market>);

impl MarketLookup for Markets<'_> {
    fn view(&self, market: MarketId) -> Option<MarketView<'_>> {
        self.0.get(&market).map(Market::view)
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
    /// Σ over every settlement of the exact funding it settled (settlement
    /// units × 10⁸; payers positive). Since every funding is zero-sum,
    /// `ceil` of it over 10⁸ is what the unsettled positions are owed, net:
    /// a term of the ledger's unrealized PnL.
    funding_settled_scaled: i128,
    /// Users found below maintenance margin by the current command, not yet started.
    liquidation_queue: Vec<UserId>,
    liquidating: Option<Liquidating>,
}

/// Per-call bookkeeping.
#[derive(Default)]
struct Call {
    /// Accounts whose balance or positions changed: checked again by a
    /// liquidation cascade, and re-indexed at the end of the call.
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
        let mut owed_total = self.funding_settled_scaled;
        for (user_id, account) in &self.accounts {
            for (market_id, position) in &account.positions {
                let Some(market) = self.markets.get(market_id) else { continue };
                owed_total += exhost_guest_sdk::margin::funding_owed_scaled(
                    position.size_lots,
                    market.funding_index,
                    position.funding_index,
                );
                let watched = account.watch.get(market_id).is_some_and(|watch| {
                    let set = if watch.long { &market.watch_long } else { &market.watch_short };
                    watch.long == (position.size_lots > 0) && set.contains(&(watch.key, *user_id))
                });
                if watched != (position.size_lots != 0) {
                    return Err(format!(
                        "the liquidation index of market {market_id} is out of step for user {user_id}"
                    ));
                }
            }
        }
        if owed_total != 0 {
            return Err(format!("funding is not zero-sum: {owed_total} (units × 10⁸) unaccounted for"));
        }
        for (id, market) in &self.markets {
            if market.watch_long.len() + market.watch_short.len() != market.holders.len() {
                return Err(format!(
                    "market {id} watches {} positions for {} holders",
                    market.watch_long.len() + market.watch_short.len(),
                    market.holders.len()
                ));
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

    /// Σ unrealized PnL: at the marks (which cancel, sizes summing to zero),
    /// plus the funding the unsettled positions are owed, net.
    fn unrealized_total(&self) -> i128 {
        let at_marks: i128 = self.markets.values().map(|m| -m.cost_total * m.risk.units_per_tick_lot as i128).sum();
        at_marks + exhost_guest_sdk::margin::div_ceil(self.funding_settled_scaled, RATE_SCALE)
    }

    fn finish_call(&mut self, call: Call, out: &mut PositionOutput) {
        for user_id in &call.touched {
            self.watch(*user_id);
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
            funding_settled_scaled: 0,
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
            PositionCommand::PremiumFunding { market } => self.premium_funding(*market, out),
            PositionCommand::CheckOrder(intent) => self.check_order(intent, out),
            PositionCommand::CheckAmend { market, order_id, user_id, price_ticks, qty_lots } => {
                self.check_amend(*market, *order_id, *user_id, *price_ticks, *qty_lots, out)
            }
            PositionCommand::Settle { market, events } => self.settle(*market, events, &mut call, out),
            PositionCommand::MarkPrice { market, price_ticks } => {
                self.mark_price(*market, *price_ticks, &mut call, out)
            }
            PositionCommand::Funding { market, rate } => self.funding(*market, *rate, out),
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
            1 => v2::upgrade(v1::read(bytes)?),
            2 => v2::read(bytes)?,
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

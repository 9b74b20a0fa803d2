//! The position-module contract: one instance per exchange, holding balances,
//! perpetual-futures positions, margin, liquidation, funding and the insurance
//! fund. Its configuration, commands, outputs (events and follow-up actions),
//! queries and the trait a plugin implements.
//!
//! Money is an integer number of minimal units of the settlement asset (USD:
//! micro-dollars); sizes are signed lots; prices are ticks; rates are integers
//! in units of 1e-8 ([`RATE_SCALE`]). Variants of the data enums are
//! append-only (their index is the wire tag).

use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::matching::{MatchingEvent, ModuleError};
use crate::types::{CommandContext, MarketId, OrderId, OrderType, Reason, Side, TradeId, UserId};

/// Rates (margin, fees, funding) are integers in units of 1 / RATE_SCALE.
pub const RATE_SCALE: i128 = 100_000_000;

/// What the host gives the position module when it is installed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PositionConfig {
    /// The asset balances and margin are kept in (every market's quote asset).
    pub settlement_asset: String,
    /// How many follow-up actions (cancellations, liquidation orders) one command may cause.
    pub follow_ups_per_command_max: u32,
    /// Module-specific parameters, opaque to the host.
    pub params: Vec<u8>,
}

/// A market's risk parameters, fixed at market creation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketRisk {
    pub market: MarketId,
    /// Settlement-asset minimal units per (one tick × one lot): the contract multiplier.
    pub units_per_tick_lot: u64,
    /// Initial margin rate (1e-8 units): required to open exposure.
    pub initial_margin_rate: u64,
    /// Maintenance margin rate: below it, an account is liquidated.
    pub maintenance_margin_rate: u64,
    pub maker_fee_rate: u64,
    pub taker_fee_rate: u64,
    /// Charged on the notional a liquidation closes, to the insurance fund.
    pub liquidation_fee_rate: u64,
    /// Highest valid price (ticks), for clamping liquidation prices.
    pub price_ticks_max: u64,
}

/// One step of a market's margin schedule: the rates for a position (or an
/// exposure) whose notional is at most `notional_max_units`. The last tier
/// also covers everything above its bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskTier {
    /// Upper bound of the tier's notional, settlement units, inclusive.
    pub notional_max_units: u128,
    pub initial_margin_rate: u64,
    pub maintenance_margin_rate: u64,
}

/// A market's terms beyond [`MarketRisk`] (ABI revision 3): its margin
/// tiers and how funding is computed from the premium index. Sent right
/// after `AddMarket`, to modules that know revision 3.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketTerms {
    pub market: MarketId,
    /// Ascending by `notional_max_units`; empty: one tier with the flat rates of [`MarketRisk`].
    pub tiers: Vec<RiskTier>,
    /// The funding interval, nanoseconds: fundings fall on multiples of it since the epoch.
    pub funding_interval_ns: u64,
    /// The interest rate per interval (1e-8 units; 0.01% = 10,000).
    pub funding_interest_rate: i64,
    /// The largest funding rate, either way, per interval.
    pub funding_rate_cap: u64,
}

impl MarketTerms {
    /// Eight hours, 0.01% interest per interval, rates capped at 0.75%.
    pub fn standard(market: MarketId) -> MarketTerms {
        MarketTerms {
            market,
            tiers: Vec::new(),
            funding_interval_ns: 8 * 3_600 * 1_000_000_000,
            funding_interest_rate: 10_000,
            funding_rate_cap: 750_000,
        }
    }

    /// What is wrong with these terms, if anything: tiers must rise in
    /// notional and never lower a rate, each needs a bound and
    /// 0 < maintenance ≤ initial ≤ 1; the interval must be positive and the
    /// cap at most 1.
    pub fn problem(&self) -> Option<&'static str> {
        let scale = RATE_SCALE as u64;
        let ascending = self.tiers.windows(2).all(|pair| {
            pair[0].notional_max_units < pair[1].notional_max_units
                && pair[0].initial_margin_rate <= pair[1].initial_margin_rate
                && pair[0].maintenance_margin_rate <= pair[1].maintenance_margin_rate
        });
        if self.tiers.len() > TIERS_MAX {
            Some("at most 20 tiers")
        } else if !ascending {
            Some("tiers must rise in notional_max and never lower a margin rate")
        } else if self.tiers.iter().any(|tier| {
            tier.notional_max_units == 0
                || tier.initial_margin_rate > scale
                || tier.maintenance_margin_rate == 0
                || tier.maintenance_margin_rate > tier.initial_margin_rate
        }) {
            Some("every tier needs a positive notional_max and 0 < maintenance_margin <= initial_margin <= 1")
        } else if self.funding_interval_ns == 0 || self.funding_rate_cap > scale {
            Some("the funding interval must be positive and the funding rate cap at most 1")
        } else {
            None
        }
    }
}

/// The most tiers a market may have.
pub const TIERS_MAX: usize = 20;

/// An order about to be sent to a book, for the pre-trade check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderIntent {
    pub market: MarketId,
    pub order_id: OrderId,
    pub user_id: UserId,
    pub side: Side,
    pub order_type: OrderType,
    /// Limit price in ticks; zero for market orders.
    pub price_ticks: u64,
    pub qty_lots: u64,
    pub reduce_only: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PositionCommand {
    /// Money in (settlement asset), to a user or, with no user, to the insurance fund.
    Deposit { user_id: Option<UserId>, amount_units: u64 },
    /// Money out; refused if it would leave less than the initial margin.
    Withdraw { user_id: UserId, amount_units: u64 },
    /// A new market's risk parameters.
    AddMarket(MarketRisk),
    /// May this order go to the book? Changes nothing.
    CheckOrder(OrderIntent),
    /// May this open order be amended so? Changes nothing.
    CheckAmend { market: MarketId, order_id: OrderId, user_id: UserId, price_ticks: Option<u64>, qty_lots: Option<u64> },
    /// What a market's book did: settle fills, follow open orders.
    Settle { market: MarketId, events: Vec<MatchingEvent> },
    /// A new mark price; liquidates accounts below maintenance margin.
    MarkPrice { market: MarketId, price_ticks: u64 },
    /// Funding at the current mark: positive rates make longs pay shorts.
    Funding { market: MarketId, rate: i64 },
    /// Revision 3: the market's tiers and funding terms.
    MarketTerms(MarketTerms),
    /// Revision 3: a new index price, with the book's mid price at that
    /// moment (`None` when a side is empty). The module samples the premium
    /// and derives the mark from it.
    IndexPrice { market: MarketId, index_ticks: u64, mid_ticks: Option<u64> },
    /// Revision 3: funding at a rate the module computes from the premium
    /// index sampled since the last funding.
    PremiumFunding { market: MarketId },
}

impl PositionCommand {
    /// The [`ABI_REVISION`](crate::abi::ABI_REVISION) a module needs to decode this command.
    pub const fn revision(&self) -> u32 {
        match self {
            PositionCommand::MarketTerms(_)
            | PositionCommand::IndexPrice { .. }
            | PositionCommand::PremiumFunding { .. } => 3,
            _ => 0,
        }
    }
}

/// Why a balance changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BalanceCause {
    Deposit,
    Withdrawal,
    RealizedPnl,
    Fee,
    Funding,
    LiquidationFee,
    InsurancePayout,
}

impl BalanceCause {
    pub const fn as_str(self) -> &'static str {
        match self {
            BalanceCause::Deposit => "deposit",
            BalanceCause::Withdrawal => "withdrawal",
            BalanceCause::RealizedPnl => "realized_pnl",
            BalanceCause::Fee => "fee",
            BalanceCause::Funding => "funding",
            BalanceCause::LiquidationFee => "liquidation_fee",
            BalanceCause::InsurancePayout => "insurance_payout",
        }
    }
}

/// One position of an account, with its risk values at the current marks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PositionState {
    pub market: MarketId,
    /// Signed: positive long, negative short.
    pub size_lots: i64,
    /// Signed entry value in tick·lot units (price × size summed over the open part).
    pub cost: i128,
    /// `cost / size`, rounded toward zero; zero when flat.
    pub entry_price_ticks: u64,
    /// The mark this position is valued at; zero when the position is flat.
    pub mark_price_ticks: u64,
    pub unrealized_pnl_units: i128,
    /// Realized PnL of this market since the account opened (fees excluded).
    pub realized_pnl_units: i128,
    /// The mark price of this market at which the account would be liquidated,
    /// other marks unchanged; `None` if there is none.
    pub liquidation_price_ticks: Option<u64>,
}

/// An account after a change: the change message the read side is built from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountState {
    pub user_id: UserId,
    pub balance_units: i128,
    pub unrealized_pnl_units: i128,
    /// `balance + unrealized PnL`.
    pub equity_units: i128,
    /// Initial margin of positions and open orders.
    pub initial_margin_units: i128,
    pub maintenance_margin_units: i128,
    /// `equity - initial margin`, what new exposure or a withdrawal may use.
    pub available_units: i128,
    /// Maintenance margin over equity, in 1e-8 units; `None` when equity is not positive.
    pub margin_ratio: Option<i128>,
    pub positions: Vec<PositionState>,
}

/// The exchange's books for the settlement asset. They balance when
/// `deposits - withdrawals == user_balances + unrealized_pnl + fees + insurance_fund`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerState {
    pub deposits_units: i128,
    pub withdrawals_units: i128,
    pub fees_units: i128,
    pub insurance_fund_units: i128,
    pub user_balances_units: i128,
    pub unrealized_pnl_units: i128,
}

impl LedgerState {
    /// `deposits - withdrawals - (balances + unrealized + fees + insurance)`: zero when the books balance.
    pub fn imbalance(&self) -> i128 {
        self.deposits_units
            - self.withdrawals_units
            - (self.user_balances_units + self.unrealized_pnl_units + self.fees_units + self.insurance_fund_units)
    }
}

/// Resting quantity and notional per side of one user in one market.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exposure {
    pub buy_lots: u64,
    /// Σ price × qty of resting buys, tick·lot units.
    pub buy_notional: u128,
    pub sell_lots: u64,
    pub sell_notional: u128,
}

impl Exposure {
    pub fn is_empty(&self) -> bool {
        self.buy_lots == 0 && self.sell_lots == 0
    }

    pub fn add(&mut self, side: Side, qty_lots: u64, price_ticks: u64) {
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

    pub fn remove(&mut self, side: Side, qty_lots: u64, price_ticks: u64) {
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

/// Change messages of the position module.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PositionEvent {
    /// A balance after a change.
    Balance {
        user_id: UserId,
        balance_units: i128,
        delta_units: i128,
        cause: BalanceCause,
    },
    /// A position after a change (fill, ADL, liquidation).
    Position {
        user_id: UserId,
        market: MarketId,
        size_lots: i64,
        cost: i128,
        realized_pnl_units: i128,
    },
    /// An account's full state after the command changed it (or its marks).
    /// The reference module of state version 3 no longer emits it: readers
    /// value an account from the lean messages with `exhost_guest_sdk::margin`.
    Account(AccountState),
    MarkPrice {
        market: MarketId,
        price_ticks: u64,
    },
    /// An account fell below maintenance margin and is being closed out.
    LiquidationStarted {
        user_id: UserId,
        equity_units: i128,
        maintenance_margin_units: i128,
    },
    /// A liquidation order for one position.
    LiquidationOrder {
        user_id: UserId,
        market: MarketId,
        order_id: OrderId,
        side: Side,
        qty_lots: u64,
        bankruptcy_price_ticks: u64,
    },
    /// Part of a liquidated position closed against an opposite position.
    AutoDeleverage {
        market: MarketId,
        liquidated_user_id: UserId,
        counterparty_user_id: UserId,
        /// The liquidated user's side in this trade.
        liquidated_side: Side,
        qty_lots: u64,
        price_ticks: u64,
    },
    /// The insurance fund after a change.
    InsuranceFund {
        balance_units: i128,
        delta_units: i128,
        user_id: Option<UserId>,
    },
    Funding {
        market: MarketId,
        rate: i64,
        mark_price_ticks: u64,
        paid_units: i128,
        received_units: i128,
    },
    /// The exchange's books after the command.
    Ledger(LedgerState),
    /// A check or a withdrawal was refused; nothing changed.
    Rejected {
        user_id: UserId,
        order_id: Option<OrderId>,
        reason: Reason,
    },
    /// The fee one side of a trade paid (also in its `Balance` message).
    Fee {
        user_id: UserId,
        market: MarketId,
        trade_id: TradeId,
        fee_units: i128,
    },
    /// Revision 3: an index price arrived; the premium sampled with it
    /// (`(mid − index) / index`, 1e-8 units; `None` without a mid), and the
    /// mark it derived (also in a `MarkPrice` message when it changed).
    IndexPrice {
        market: MarketId,
        index_ticks: u64,
        mid_ticks: Option<u64>,
        premium_rate: Option<i64>,
        mark_price_ticks: u64,
    },
    /// A user's resting exposure in a market after a change (an order
    /// placed, filled, amended or cancelled): what its initial margin is
    /// charged on. All zero when nothing rests any more.
    Exposure {
        user_id: UserId,
        market: MarketId,
        exposure: Exposure,
    },
    /// A funding, as one move of the market's cumulative funding index
    /// (settlement units × 10⁸ per lot of long position): `index_delta =
    /// mark × units_per_tick_lot × rate`. Nobody's balance moves yet; each
    /// position settles `size × (index − its index)` when it next changes,
    /// is liquidated, or its account withdraws (`FundingSettled`). Replaces
    /// `Funding`, which modules of state version 3 no longer emit.
    FundingIndex {
        market: MarketId,
        rate: i64,
        mark_price_ticks: u64,
        index_delta: i128,
        index: i128,
    },
    /// A position settled the funding it owed since its last settlement;
    /// `amount_units` is what its balance moved by (also in a `Balance`
    /// message with cause `Funding`), and `index` the market index it has
    /// settled up to. A `Position` message settles too: after it, the
    /// position's index is the market's current one.
    FundingSettled {
        user_id: UserId,
        market: MarketId,
        index: i128,
        amount_units: i128,
    },
}

/// Something the engine must do for the position module within the same command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FollowUp {
    /// Cancel every open order of the user in the market.
    CancelOrders { market: MarketId, user_id: UserId },
    /// Send an immediate-or-cancel limit order to the market's book.
    LiquidationOrder {
        market: MarketId,
        order_id: OrderId,
        user_id: UserId,
        side: Side,
        qty_lots: u64,
        price_ticks: u64,
    },
}

/// What one position command produced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PositionOutput {
    pub events: Vec<PositionEvent>,
    pub follow_ups: Vec<FollowUp>,
}

impl PositionOutput {
    /// Whether the command was refused (a check, a withdrawal).
    pub fn rejection(&self) -> Option<Reason> {
        self.events.iter().find_map(|event| match event {
            PositionEvent::Rejected { reason, .. } => Some(*reason),
            _ => None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PositionQuery {
    Account { user_id: UserId },
    Ledger,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PositionQueryResult {
    Account(Option<AccountState>),
    Ledger(LedgerState),
}

/// The rules of the exchange's accounts. Implement it on a plain Rust type and
/// export it with [`export_position_module!`](crate::export_position_module).
/// The same determinism rules as for matching modules apply.
pub trait PositionModule: Sized {
    const STATE_VERSION: u32;
    fn init(config: &PositionConfig) -> Result<Self, ModuleError>;
    fn apply(&mut self, ctx: &CommandContext, command: &PositionCommand, out: &mut PositionOutput);
    fn query(&self, query: &PositionQuery) -> PositionQueryResult;
    fn snapshot(&self, out: &mut Vec<u8>);
    fn restore(bytes: &[u8]) -> Result<Self, ModuleError>;
    fn migrate(from_version: u32, bytes: &[u8]) -> Result<Self, ModuleError> {
        let _ = bytes;
        Err(ModuleError::new(alloc::format!(
            "this module cannot migrate state version {from_version} to {}",
            Self::STATE_VERSION
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn market_terms_are_checked() {
        let tier = |max: u128, initial, maintenance| RiskTier {
            notional_max_units: max,
            initial_margin_rate: initial,
            maintenance_margin_rate: maintenance,
        };
        let mut terms = MarketTerms::standard(MarketId(0));
        assert_eq!(terms.problem(), None);
        terms.tiers = alloc::vec![tier(10, 2, 1), tier(20, 4, 2)];
        assert_eq!(terms.problem(), None);
        terms.tiers = alloc::vec![tier(20, 2, 1), tier(10, 4, 2)];
        assert!(terms.problem().is_some(), "descending bounds");
        terms.tiers = alloc::vec![tier(10, 2, 3)];
        assert!(terms.problem().is_some(), "maintenance above initial");
        terms.tiers = alloc::vec![tier(10, 4, 2), tier(20, 3, 2)];
        assert!(terms.problem().is_some(), "a lower initial rate");
        terms.tiers = alloc::vec![tier(10, 2, 1); 21];
        assert!(terms.problem().is_some(), "too many");
        terms.tiers.clear();
        terms.funding_interval_ns = 0;
        assert!(terms.problem().is_some(), "no interval");
    }
}

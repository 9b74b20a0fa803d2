//! How an account is valued: margin, PnL, pending funding and liquidation
//! prices as pure functions over integers.
//!
//! This is the one definition of the figures an account shows. The
//! reference position module margins with it, and the host's read side
//! computes `GET /v1/account` with it from the lean change messages (the
//! record of an account, the marks and the funding indexes as of a
//! sequence number), so the two agree to the unit by construction. Every
//! rounding is in the exchange's favour (fees and margins up, payouts down,
//! liquidation triggers early); `docs/positions.md` states the rules.

use alloc::vec::Vec;

pub use litemap::LiteMap;

use serde::{Deserialize, Serialize};

pub use crate::position::Exposure;
use crate::position::{AccountState, MarketRisk, PositionState, RATE_SCALE, RiskTier};
use crate::types::{MarketId, UserId};

/// One account's records per market (its positions, its resting exposure):
/// a sorted vector, since an account holds a few markets and a market may
/// have a million accounts, where a `BTreeMap` node per account would cost
/// over half a kilobyte each. It encodes exactly as a `BTreeMap` does.
pub type ByMarket<V> = LiteMap<MarketId, V>;

/// `ceil(a / b)` for `b > 0`.
pub fn div_ceil(a: i128, b: i128) -> i128 {
    debug_assert!(b > 0);
    let quotient = a.div_euclid(b);
    if a.rem_euclid(b) == 0 { quotient } else { quotient + 1 }
}

/// `floor(a / b)` for `b > 0`.
pub fn div_floor(a: i128, b: i128) -> i128 {
    debug_assert!(b > 0);
    a.div_euclid(b)
}

/// `amount × rate / RATE_SCALE`, rounded up: what the exchange charges.
pub fn charge(amount_units: i128, rate: u64) -> i128 {
    div_ceil(amount_units * rate as i128, RATE_SCALE)
}

/// The tier a notional falls in (the first whose bound it does not exceed;
/// the last one above them all) and that tier's cumulative amount, in
/// rate-scaled units: `Σ bound(j−1) × (rate(j) − rate(j−1))` over the tiers
/// up to it. `notional × rate − cumulative` is then continuous at every
/// bound, and equals the flat formula in the first tier.
pub fn tier_of(notional_units: i128, tiers: &[RiskTier], rate: impl Fn(&RiskTier) -> u64) -> (usize, i128) {
    let mut cumulative = 0i128;
    for (index, tier) in tiers.iter().enumerate() {
        if index > 0 {
            let below = &tiers[index - 1];
            cumulative += below.notional_max_units as i128 * (rate(tier) as i128 - rate(below) as i128);
        }
        if notional_units <= tier.notional_max_units as i128 || index + 1 == tiers.len() {
            return (index, cumulative);
        }
    }
    (0, 0)
}

/// The margin a tiered schedule asks for a notional: `ceil((notional ×
/// rate − cumulative) / 10⁸)` with the tier's rate and amount (see [`tier_of`]).
pub fn tiered_charge(notional_units: i128, tiers: &[RiskTier], rate: impl Fn(&RiskTier) -> u64) -> i128 {
    div_ceil(tiered_charge_scaled(notional_units, tiers, rate), RATE_SCALE)
}

/// `notional × rate − cumulative` of the notional's tier: the margin before
/// the division by 10⁸ and its rounding.
pub fn tiered_charge_scaled(notional_units: i128, tiers: &[RiskTier], rate: impl Fn(&RiskTier) -> u64) -> i128 {
    if tiers.is_empty() {
        return 0;
    }
    let (index, cumulative) = tier_of(notional_units, tiers, &rate);
    notional_units * rate(&tiers[index]) as i128 - cumulative
}

/// The middle one of three.
pub fn median3(a: i128, b: i128, c: i128) -> i128 {
    a.max(b).min(a.min(b).max(c))
}

/// Mark-to-market PnL of a position at `mark`, in settlement units.
pub fn unrealized(size_lots: i64, cost: i128, mark_ticks: u64, units_per_tick_lot: u64) -> i128 {
    (mark_ticks as i128 * size_lots as i128 - cost) * units_per_tick_lot as i128
}

/// Notional of `qty` lots at `price`, in settlement units.
pub fn notional(qty_lots: u64, price_ticks: u64, units_per_tick_lot: u64) -> i128 {
    qty_lots as i128 * price_ticks as i128 * units_per_tick_lot as i128
}

/// What a position of `size_lots` owes in funding since it last settled at
/// `settled_index`, the market's index being `index` now, before rounding:
/// `size × (index − settled_index)`, in settlement units × 10⁸ (positive:
/// it pays).
pub fn funding_owed_scaled(size_lots: i64, index: i128, settled_index: i128) -> i128 {
    size_lots as i128 * (index - settled_index)
}

/// What settling that funding moves the balance by: a payer pays rounded
/// up, a receiver gets rounded down (`−ceil(owed / 10⁸)` both ways).
pub fn funding_settlement_units(owed_scaled: i128) -> i128 {
    -div_ceil(owed_scaled, RATE_SCALE)
}

/// The price at which an account's equity reaches `target` as this market's
/// mark moves, other marks fixed. `rest` is equity without this position's
/// mark term (`equity − mark × size × k`), `target_rest` the part of the
/// target not from this position, `rate` the margin rate applied to this
/// position's notional in the target (0 for bankruptcy) and `cumulative` its
/// tier's cumulative amount (rate-scaled; 0 without tiers). Long positions
/// round up, shorts down: the trigger comes a little early, never late.
pub fn price_where(
    rest: i128,
    target_rest: i128,
    size_lots: i64,
    units_per_tick_lot: u64,
    rate: u64,
    cumulative: i128,
) -> Option<i128> {
    if size_lots == 0 {
        return None;
    }
    let k = units_per_tick_lot as i128;
    let s = size_lots as i128;
    let denominator = k * (s * RATE_SCALE - rate as i128 * s.abs());
    if denominator == 0 {
        return None;
    }
    let numerator = (target_rest - rest) * RATE_SCALE - cumulative;
    // Make the denominator positive so the floor/ceil helpers apply.
    let (numerator, denominator) = if denominator < 0 { (-numerator, -denominator) } else { (numerator, denominator) };
    let price = if size_lots > 0 { div_ceil(numerator, denominator) } else { div_floor(numerator, denominator) };
    Some(price)
}

/// One position as the change messages describe it: size, cost basis,
/// realized PnL and the market's funding index when it last settled.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PositionRecord {
    /// Signed: positive long, negative short.
    pub size_lots: i64,
    /// Σ price × signed qty over the open part, tick·lot units.
    pub cost: i128,
    /// Realized PnL in this market since the account opened, settlement units.
    pub realized_units: i128,
    /// The market's cumulative funding index at the last settlement.
    pub funding_index: i128,
}

/// What valuing an account needs of one market.
#[derive(Clone, Copy, Debug)]
pub struct MarketView<'a> {
    pub risk: &'a MarketRisk,
    /// Empty: one tier with the flat rates of `risk`.
    pub tiers: &'a [RiskTier],
    pub mark_ticks: Option<u64>,
    /// The cumulative funding index (settlement units × 10⁸ per lot).
    pub funding_index: i128,
}

impl MarketView<'_> {
    /// Maintenance margin of a position of this notional (settlement units).
    pub fn maintenance_units(&self, notional_units: i128) -> i128 {
        div_ceil(self.maintenance_scaled(notional_units), RATE_SCALE)
    }

    /// The maintenance margin before the division by 10⁸ and its rounding.
    pub fn maintenance_scaled(&self, notional_units: i128) -> i128 {
        if self.tiers.is_empty() {
            notional_units * self.risk.maintenance_margin_rate as i128
        } else {
            tiered_charge_scaled(notional_units, self.tiers, |tier| tier.maintenance_margin_rate)
        }
    }

    /// Initial margin of an exposure of this notional.
    pub fn initial_units(&self, notional_units: i128) -> i128 {
        if self.tiers.is_empty() {
            charge(notional_units, self.risk.initial_margin_rate)
        } else {
            tiered_charge(notional_units, self.tiers, |tier| tier.initial_margin_rate)
        }
    }

    /// The maintenance rate and cumulative amount (rate-scaled) of the tier this notional is in.
    pub fn maintenance_tier(&self, notional_units: i128) -> (u64, i128) {
        if self.tiers.is_empty() {
            (self.risk.maintenance_margin_rate, 0)
        } else {
            let (index, cumulative) = tier_of(notional_units, self.tiers, |tier| tier.maintenance_margin_rate);
            (self.tiers[index].maintenance_margin_rate, cumulative)
        }
    }

    /// The highest maintenance rate of any tier.
    pub fn maintenance_rate_max(&self) -> u64 {
        self.tiers.last().map_or(self.risk.maintenance_margin_rate, |tier| tier.maintenance_margin_rate)
    }

    fn mark(&self) -> u64 {
        self.mark_ticks.unwrap_or(0)
    }
}

/// Where an account's markets are found.
pub trait MarketLookup {
    fn view(&self, market: MarketId) -> Option<MarketView<'_>>;
}

/// An account's margin figures at the current marks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Margin {
    /// Mark-to-market PnL less the funding owed and not yet settled.
    pub unrealized_units: i128,
    pub equity_units: i128,
    pub initial_units: i128,
    pub maintenance_units: i128,
}

impl Margin {
    /// Equity below maintenance margin: the account must be liquidated.
    pub fn breached(&self) -> bool {
        self.equity_units < self.maintenance_units
    }
}

/// The unrealized PnL of one position: at the mark, less its unsettled funding.
pub fn position_unrealized(position: &PositionRecord, market: &MarketView<'_>) -> i128 {
    if position.size_lots == 0 {
        return 0;
    }
    let owed = funding_owed_scaled(position.size_lots, market.funding_index, position.funding_index);
    unrealized(position.size_lots, position.cost, market.mark(), market.risk.units_per_tick_lot)
        + funding_settlement_units(owed)
}

/// What one market's initial margin is charged on: the larger of the long
/// and the short exposure (position at mark plus resting orders at their
/// prices), settlement units.
pub fn exposure_notional(size_lots: i64, mark_ticks: u64, exposure: &Exposure, k: u64) -> i128 {
    let long = size_lots.max(0) as u128 * mark_ticks as u128 + exposure.buy_notional;
    let short = (-size_lots).max(0) as u128 * mark_ticks as u128 + exposure.sell_notional;
    long.max(short) as i128 * k as i128
}

/// Margin of an account; `extra` replaces its resting exposure in one
/// market (for a pre-trade check of an order or an amend).
pub fn margin(
    balance_units: i128,
    positions: &ByMarket<PositionRecord>,
    exposure: &ByMarket<Exposure>,
    extra: Option<(MarketId, Exposure)>,
    markets: &impl MarketLookup,
) -> Margin {
    let mut margin = Margin { equity_units: balance_units, ..Margin::default() };
    let mut ids: Vec<MarketId> = positions.keys().chain(exposure.keys()).copied().collect();
    if let Some((market, _)) = extra {
        ids.push(market);
    }
    ids.sort_unstable();
    ids.dedup();
    for market_id in ids {
        let Some(market) = markets.view(market_id) else { continue };
        let k = market.risk.units_per_tick_lot;
        let mark = market.mark();
        let size = positions.get(&market_id).map_or(0, |p| p.size_lots);
        if let Some(position) = positions.get(&market_id)
            && size != 0
        {
            margin.unrealized_units += position_unrealized(position, &market);
            margin.maintenance_units += market.maintenance_units(notional(size.unsigned_abs(), mark, k));
        }
        let resting = match extra {
            Some((extra_market, replaced)) if extra_market == market_id => replaced,
            _ => exposure.get(&market_id).copied().unwrap_or_default(),
        };
        margin.initial_units += market.initial_units(exposure_notional(size, mark, &resting, k));
    }
    margin.equity_units += margin.unrealized_units;
    margin
}

/// The account as `GET /v1/account` shows it: every figure computed now.
pub fn account_state(
    user_id: UserId,
    balance_units: i128,
    positions: &ByMarket<PositionRecord>,
    exposure: &ByMarket<Exposure>,
    markets: &impl MarketLookup,
) -> AccountState {
    let margin = margin(balance_units, positions, exposure, None, markets);
    let mut states = Vec::new();
    for (market_id, position) in positions {
        let Some(market) = markets.view(*market_id) else { continue };
        let k = market.risk.units_per_tick_lot;
        let mark = market.mark();
        let size = position.size_lots;
        let liquidation_price_ticks = if size == 0 {
            None
        } else {
            // Equity without this position's mark term, and maintenance without its own.
            let rest = margin.equity_units - mark as i128 * size as i128 * k as i128;
            // With tiers: the rate and amount of the tier the position is in now.
            let own_notional = notional(size.unsigned_abs(), mark, k);
            let own_mm = market.maintenance_units(own_notional);
            let (rate, cumulative) = market.maintenance_tier(own_notional);
            price_where(rest, margin.maintenance_units - own_mm, size, k, rate, cumulative)
                .filter(|&price| price > 0)
                .map(|price| price.min(u64::MAX as i128) as u64)
        };
        states.push(PositionState {
            market: *market_id,
            size_lots: size,
            cost: position.cost,
            entry_price_ticks: if size == 0 { 0 } else { (position.cost / size as i128).unsigned_abs() as u64 },
            // A flat position's state must not change with marks it no longer follows.
            mark_price_ticks: if size == 0 { 0 } else { mark },
            unrealized_pnl_units: position_unrealized(position, &market),
            realized_pnl_units: position.realized_units,
            liquidation_price_ticks,
        });
    }
    AccountState {
        user_id,
        balance_units,
        unrealized_pnl_units: margin.unrealized_units,
        equity_units: margin.equity_units,
        initial_margin_units: margin.initial_units,
        maintenance_margin_units: margin.maintenance_units,
        available_units: margin.equity_units - margin.initial_units,
        margin_ratio: (margin.equity_units > 0).then(|| margin.maintenance_units * RATE_SCALE / margin.equity_units),
        positions: states,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_by_market_map_encodes_as_a_btree_map() {
        // Snapshots and read-model records written with `BTreeMap` must decode, and digest, the same.
        let pairs =
            [(MarketId(2), Exposure { buy_lots: 3, ..Exposure::default() }), (MarketId(7), Exposure::default())];
        let tree: alloc::collections::BTreeMap<MarketId, Exposure> = pairs.into_iter().collect();
        let by_market: ByMarket<Exposure> = pairs.into_iter().collect();
        let bytes = postcard::to_allocvec(&tree).unwrap();
        assert_eq!(postcard::to_allocvec(&by_market).unwrap(), bytes);
        assert_eq!(postcard::from_bytes::<ByMarket<Exposure>>(&bytes).unwrap(), by_market);
    }

    #[test]
    fn rounding_directions() {
        assert_eq!((div_ceil(7, 2), div_ceil(-7, 2), div_floor(-7, 2), div_floor(7, 2)), (4, -3, -4, 3));
        // 0.05% of 1001 units is 0.5005: charged as 1.
        assert_eq!(charge(1001, 50_000), 1);
        assert_eq!(charge(0, 50_000), 0);
        // Owing 1.5 units pays 2; being owed 1.5 receives 1.
        assert_eq!(funding_settlement_units(150_000_000), -2);
        assert_eq!(funding_settlement_units(-150_000_000), 1);
        assert_eq!(funding_owed_scaled(-3, 70, 20), -150);
    }

    #[test]
    fn liquidation_and_bankruptcy_prices() {
        // Long 10 lots at cost 1000 (price 100), k = 1, balance 100: equity at P is 100 + 10P - 1000.
        let rest = 100 - 1000;
        // Bankruptcy: equity 0 at P = 90.
        assert_eq!(price_where(rest, 0, 10, 1, 0, 0), Some(90));
        // Maintenance 5%: 100 + 10P - 1000 = 0.05 × 10P  =>  P = 900 / 9.5 = 94.7..., rounded up.
        assert_eq!(price_where(rest, 0, 10, 1, 5_000_000, 0), Some(95));
        // Short 10 at 100 (cost -1000), balance 100: equity 100 - 10P + 1000; bankrupt at 110.
        assert_eq!(price_where(100 + 1000, 0, -10, 1, 0, 0), Some(110));
        // Maintenance 5%: 1100 - 10P = 0.5P  =>  P = 104.76..., rounded down.
        assert_eq!(price_where(1100, 0, -10, 1, 5_000_000, 0), Some(104));
        assert_eq!(price_where(1, 0, 0, 1, 0, 0), None);
    }

    /// Binance-like brackets: 0.5% up to 50,000, 1% up to 250,000, 2.5% above.
    fn tiers() -> Vec<RiskTier> {
        let tier = |max: u128, initial, maintenance| RiskTier {
            notional_max_units: max,
            initial_margin_rate: initial,
            maintenance_margin_rate: maintenance,
        };
        alloc::vec![
            tier(50_000, 1_000_000, 500_000),
            tier(250_000, 2_000_000, 1_000_000),
            tier(1_000_000, 5_000_000, 2_500_000),
        ]
    }

    #[test]
    fn tiers_are_continuous_at_their_bounds() {
        let tiers = tiers();
        let maintenance = |n| tiered_charge(n, &tiers, |t| t.maintenance_margin_rate);
        // Tier 1: 40,000 × 0.5% = 200.
        assert_eq!(maintenance(40_000), 200);
        // At the first bound both formulas give 250; just above, tier 2 with
        // its amount 50,000 × 0.5% = 250: 50,001 × 1% − 250 = 250.01, up to 251.
        assert_eq!((maintenance(50_000), maintenance(50_001)), (250, 251));
        // Tier 2 by hand: 100,000 × 1% − 250 = 750.
        assert_eq!(maintenance(100_000), 750);
        // Tier 3: amount 250 + 250,000 × 1.5% = 4,000; 400,000 × 2.5% − 4,000 = 6,000.
        assert_eq!(tier_of(400_000, &tiers, |t| t.maintenance_margin_rate), (2, 400_000_000_000));
        assert_eq!(maintenance(400_000), 6_000);
        assert_eq!((maintenance(250_000), maintenance(250_000) - 2_250), (2_250, 0));
        // Above the last bound the last tier goes on.
        assert_eq!(maintenance(2_000_000), 46_000);
        let initial = |n| tiered_charge(n, &tiers, |t| t.initial_margin_rate);
        // 100,000 × 2% − 50,000 × 1% = 1,500.
        assert_eq!(initial(100_000), 1_500);
        assert_eq!(median3(3, 1, 2), 2);
        assert_eq!((median3(1, 2, 3), median3(2, 3, 1), median3(5, 5, 1)), (2, 2, 5));
    }
}

//! The arithmetic of margin, PnL and prices: pure functions over integers.
//! Every rounding is in the exchange's favour (fees and margins up, payouts
//! down, liquidation triggers earlier); see `docs/positions.md`.

use exhost_guest_sdk::{RATE_SCALE, RiskTier};

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
    if tiers.is_empty() {
        return 0;
    }
    let (index, cumulative) = tier_of(notional_units, tiers, &rate);
    div_ceil(notional_units * rate(&tiers[index]) as i128 - cumulative, RATE_SCALE)
}

/// The middle one of three.
pub fn median3(a: i128, b: i128, c: i128) -> i128 {
    a.max(b).min(a.min(b).max(c))
}

/// Unrealized PnL of a position at `mark`, in settlement units.
pub fn unrealized(size_lots: i64, cost: i128, mark_ticks: u64, units_per_tick_lot: u64) -> i128 {
    (mark_ticks as i128 * size_lots as i128 - cost) * units_per_tick_lot as i128
}

/// Notional of `qty` lots at `price`, in settlement units.
pub fn notional(qty_lots: u64, price_ticks: u64, units_per_tick_lot: u64) -> i128 {
    qty_lots as i128 * price_ticks as i128 * units_per_tick_lot as i128
}

/// The price at which an account's equity reaches `target` as this market's
/// mark moves, other marks fixed. `rest` is equity without this position's
/// mark term (`balance + other upnl - cost × k`), `target_rest` the part of the
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_directions() {
        assert_eq!((div_ceil(7, 2), div_ceil(-7, 2), div_floor(-7, 2), div_floor(7, 2)), (4, -3, -4, 3));
        // 0.05% of 1001 units is 0.5005: charged as 1.
        assert_eq!(charge(1001, 50_000), 1);
        assert_eq!(charge(0, 50_000), 0);
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
        vec![
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

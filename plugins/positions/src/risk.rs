//! The arithmetic of margin, PnL and prices: pure functions over integers.
//! Every rounding is in the exchange's favour (fees and margins up, payouts
//! down, liquidation triggers earlier); see `docs/positions.md`.

use exhost_guest_sdk::RATE_SCALE;

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
/// position's notional in the target (0 for bankruptcy). Long positions round
/// up, shorts down: the trigger comes a little early, never late.
pub fn price_where(rest: i128, target_rest: i128, size_lots: i64, units_per_tick_lot: u64, rate: u64) -> Option<i128> {
    if size_lots == 0 {
        return None;
    }
    let k = units_per_tick_lot as i128;
    let s = size_lots as i128;
    let denominator = k * (s * RATE_SCALE - rate as i128 * s.abs());
    if denominator == 0 {
        return None;
    }
    let numerator = (target_rest - rest) * RATE_SCALE;
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
        assert_eq!(price_where(rest, 0, 10, 1, 0), Some(90));
        // Maintenance 5%: 100 + 10P - 1000 = 0.05 × 10P  =>  P = 900 / 9.5 = 94.7..., rounded up.
        assert_eq!(price_where(rest, 0, 10, 1, 5_000_000), Some(95));
        // Short 10 at 100 (cost -1000), balance 100: equity 100 - 10P + 1000; bankrupt at 110.
        assert_eq!(price_where(100 + 1000, 0, -10, 1, 0), Some(110));
        // Maintenance 5%: 1100 - 10P = 0.5P  =>  P = 104.76..., rounded down.
        assert_eq!(price_where(1100, 0, -10, 1, 5_000_000), Some(104));
        assert_eq!(price_where(1, 0, 0, 1, 0), None);
    }
}

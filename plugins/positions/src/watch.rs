//! The liquidation index: which accounts a mark move may put below
//! maintenance margin, found without visiting the healthy ones.
//!
//! Each open position of an account sits in its market's index under a
//! **check price**: the mark beyond which (at or below for a long, at or
//! above for a short) the account must be looked at again. It is made from
//! the account's buffer `equity − maintenance` at the marks of the moment,
//! split evenly over its open positions: as long as no market crosses its
//! check price, no market has lost more than its share, so the account is
//! still healthy whatever the other marks did. For an account with one
//! position the share is the whole buffer, and the check price is its exact
//! liquidation price (rounded early by at most one unit of margin).
//!
//! Funding is owed without anyone being visited, so it moves every payer's
//! check price toward the mark. Each funding adds to its paying side's
//! `shift` the most ticks it can have moved any check price, and a key is due
//! once the mark is within that shift of it.
//!
//! A mark move checks the accounts due, exactly, in user-id order: those
//! below maintenance are liquidated as before, the others get fresh check
//! prices from their state now. Every account whose balance or positions a
//! command changed is indexed again at the end of the call.

use exhost_guest_sdk::margin::{MarketView, PositionRecord};
use exhost_guest_sdk::{MarketId, RATE_SCALE, UserId};

use crate::{Market, Positions, WatchKey};

impl Positions {
    /// Index the user's open positions afresh, from its state now.
    pub(crate) fn watch(&mut self, user_id: UserId) {
        self.unwatch(user_id);
        let Some(account) = self.accounts.get(&user_id) else { return };
        let open = account.positions.values().filter(|p| p.size_lots != 0).count() as i128;
        if open == 0 {
            return;
        }
        let margin = self.margin(user_id, None);
        let buffer = margin.equity_units - margin.maintenance_units;
        let mut keys = Vec::new();
        for (market_id, position) in account.positions.iter().filter(|(_, p)| p.size_lots != 0) {
            let market = &self.markets[market_id];
            let long = position.size_lots > 0;
            // Below maintenance already (a trade at a bad price, funding):
            // due at the next mark move of the market.
            let key = if buffer < 0 {
                if long { i128::MAX } else { i128::MIN }
            } else {
                let price = check_price(position, &market.view(), buffer / open);
                if long { price - market.long_shift } else { price + market.short_shift }
            };
            keys.push((*market_id, WatchKey { long, key }));
        }
        for (market_id, watch) in keys {
            let market = self.markets.get_mut(&market_id).expect("indexed markets exist");
            let set = if watch.long { &mut market.watch_long } else { &mut market.watch_short };
            set.insert((watch.key, user_id));
            self.accounts.get_mut(&user_id).expect("checked above").watch.insert(market_id, watch);
        }
    }

    /// Take the user's positions out of the index.
    pub(crate) fn unwatch(&mut self, user_id: UserId) {
        let Some(account) = self.accounts.get_mut(&user_id) else { return };
        for (market_id, watch) in std::mem::take(&mut account.watch) {
            if let Some(market) = self.markets.get_mut(&market_id) {
                let set = if watch.long { &mut market.watch_long } else { &mut market.watch_short };
                set.remove(&(watch.key, user_id));
            }
        }
    }

    /// The accounts due for a check at the market's mark now, by user id.
    pub(crate) fn due(&self, market_id: MarketId) -> Vec<UserId> {
        let Some(market) = self.markets.get(&market_id) else { return Vec::new() };
        let Some(mark) = market.mark_ticks else { return Vec::new() };
        let mark = mark as i128;
        let longs = market.watch_long.range((mark - market.long_shift, UserId(0))..);
        let shorts = market.watch_short.range(..=(mark + market.short_shift, UserId(u64::MAX)));
        let mut users: Vec<UserId> = longs.chain(shorts).map(|&(_, user_id)| user_id).collect();
        users.sort_unstable();
        users.dedup();
        users
    }

    /// Every holder of the market indexed again (its terms changed).
    pub(crate) fn watch_market(&mut self, market_id: MarketId) {
        let holders: Vec<UserId> =
            self.markets.get(&market_id).map_or(Vec::new(), |m| m.holders.iter().copied().collect());
        for user_id in holders {
            self.watch(user_id);
        }
    }
}

impl Market {
    /// After a funding that moved the index by `index_delta`: how far the
    /// paying side's check prices may have come toward the mark, in ticks,
    /// at most. A payer of `s` lots owes `s × Δ / 10⁸` more, rounded up by
    /// less than one unit, and every tick the mark moves its way costs it at
    /// least `s × k × (10⁸ − highest maintenance rate) / 10⁸`.
    pub(crate) fn shift_for_funding(&mut self, index_delta: i128) {
        if index_delta == 0 {
            return;
        }
        let k = self.risk.units_per_tick_lot as i128;
        let room = RATE_SCALE - self.view().maintenance_rate_max() as i128;
        let ticks = if room <= 0 || k == 0 {
            // A 100% maintenance rate: every payer is due at the next move.
            self.risk.price_ticks_max as i128 + 1
        } else {
            exhost_guest_sdk::margin::div_ceil(index_delta.abs() + RATE_SCALE, k * room)
        };
        if index_delta > 0 {
            self.long_shift += ticks;
        } else {
            self.short_shift += ticks;
        }
    }
}

/// The check price of one position whose account may lose `share` units in
/// this market: the highest mark (long) or lowest (short) at which
///
/// ```text
/// 10⁸ × k × |s| × |m0 − m|  +  MM₈(m)  +  10⁸  −  10⁸ × MM(m0)   >   10⁸ × share
/// ```
///
/// `MM₈` is the maintenance margin before its rounding up (so `MM ≤ MM₈ /
/// 10⁸ + 1` bounds it), `m0` the mark now. The left side only grows as the
/// mark moves against the position (the price term grows faster than a
/// margin rate of at most 100% can shrink it), so a binary search over the
/// price range finds it. 0 (long) or `price max + 1` (short) when no price
/// gets there.
fn check_price(position: &PositionRecord, market: &MarketView<'_>, share: i128) -> i128 {
    let mark = market.mark_ticks.unwrap_or(0) as i128;
    let k = market.risk.units_per_tick_lot as i128;
    let size = position.size_lots.unsigned_abs() as i128;
    let price_max = market.risk.price_ticks_max as i128;
    let at_mark = market.maintenance_units(size * mark * k) * RATE_SCALE;
    let crossed = |price: i128| {
        RATE_SCALE * k * size * (mark - price).abs() + market.maintenance_scaled(size * price * k) + RATE_SCALE
            - at_mark
            > RATE_SCALE * share
    };
    if position.size_lots > 0 {
        if mark <= 1 || crossed(mark) {
            return mark.max(1);
        }
        if !crossed(1) {
            return 0;
        }
        // crossed(low) and not crossed(high): the answer is `low`.
        let (mut low, mut high) = (1, mark);
        while high - low > 1 {
            let middle = low + (high - low) / 2;
            if crossed(middle) { low = middle } else { high = middle }
        }
        low
    } else {
        if mark >= price_max || crossed(mark) {
            return mark;
        }
        if !crossed(price_max) {
            return price_max + 1;
        }
        // not crossed(low) and crossed(high): the answer is `high`.
        let (mut low, mut high) = (mark, price_max);
        while high - low > 1 {
            let middle = low + (high - low) / 2;
            if crossed(middle) { high = middle } else { low = middle }
        }
        high
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use exhost_guest_sdk::MarketRisk;

    fn risk() -> MarketRisk {
        MarketRisk {
            market: MarketId(0),
            units_per_tick_lot: 1,
            initial_margin_rate: 10_000_000,
            maintenance_margin_rate: 5_000_000,
            maker_fee_rate: 0,
            taker_fee_rate: 0,
            liquidation_fee_rate: 0,
            price_ticks_max: 1_000,
        }
    }

    #[test]
    fn one_position_is_due_at_its_liquidation_price() {
        let risk = risk();
        let market = MarketView { risk: &risk, tiers: &[], mark_ticks: Some(100), funding_index: 0 };
        // Long 10 at 100 with balance 100: equity 100 + 10(m − 100), maintenance
        // ceil(0.5 m); the buffer at 100 is 50. At 95 equity 50 ≥ 48, at 94
        // equity 40 < 47: due at 94 and below, exactly.
        let long = PositionRecord { size_lots: 10, cost: 1_000, ..PositionRecord::default() };
        assert_eq!(check_price(&long, &market, 50), 94);
        // Short 10 at 100: at 104 equity 60 ≥ 52, at 105 equity 50 < 53.
        let short = PositionRecord { size_lots: -10, cost: -1_000, ..PositionRecord::default() };
        assert_eq!(check_price(&short, &market, 50), 105);
        // No room at all: due at the mark; more room than any price can use: never.
        assert_eq!(check_price(&long, &market, 0), 100);
        assert_eq!(check_price(&long, &market, 10_000), 0);
        assert_eq!(check_price(&short, &market, 1_000_000), 1_001);
    }
}

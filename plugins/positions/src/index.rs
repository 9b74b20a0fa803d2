//! Market terms, the index price feed, the mark derived from it, and
//! funding from the premium index (`docs/positions.md`, "Index, mark and
//! funding").

use exhost_guest_sdk::{
    CommandContext, MarketId, MarketTerms, PositionEvent, PositionOutput, RATE_SCALE, Reason, UserId,
};

use crate::risk::{div_floor, median3};
use crate::{Call, Positions};

/// How many `mid − index` samples the moving average of the basis spans.
pub(crate) const BASIS_SAMPLES_MAX: usize = 60;

/// The clamp of `interest − premium` in the funding rate: ±0.05%.
const FUNDING_CLAMP: i64 = 50_000;

impl Positions {
    /// Replace a market's terms; refused (nothing changes) when they are not well formed.
    pub(crate) fn market_terms(&mut self, terms: &MarketTerms, out: &mut PositionOutput) {
        let Some(market) = self.markets.get_mut(&terms.market) else {
            out.events.push(PositionEvent::Rejected {
                user_id: UserId(0),
                order_id: None,
                reason: Reason::UnknownMarket,
            });
            return;
        };
        if terms.problem().is_some() {
            out.events.push(PositionEvent::Rejected {
                user_id: UserId(0),
                order_id: None,
                reason: Reason::InvalidQuantity,
            });
            return;
        }
        market.terms = terms.clone();
        // New margins for everyone holding here: their check prices change.
        self.watch_market(terms.market);
    }

    /// A new index price: sample the basis and the premium (with a mid),
    /// derive the mark, and move it like a mark-price command (liquidations).
    pub(crate) fn index_price(
        &mut self,
        ctx: &CommandContext,
        market_id: MarketId,
        index_ticks: u64,
        mid_ticks: Option<u64>,
        call: &mut Call,
        out: &mut PositionOutput,
    ) {
        let Some(market) = self.markets.get_mut(&market_id) else { return };
        let price_max = market.risk.price_ticks_max;
        if index_ticks == 0 || index_ticks > price_max {
            out.events.push(PositionEvent::Rejected {
                user_id: UserId(0),
                order_id: None,
                reason: Reason::InvalidPrice,
            });
            return;
        }
        market.index_ticks = Some(index_ticks);
        let index = index_ticks as i128;
        let premium_rate = mid_ticks.map(|mid| {
            let basis = mid as i128 - index;
            if market.basis_samples.len() == BASIS_SAMPLES_MAX {
                market.basis_samples.remove(0);
            }
            market.basis_samples.push(basis as i64);
            let premium = div_floor(basis * RATE_SCALE, index) as i64;
            market.premium_sum += premium as i128;
            market.premium_samples += 1;
            premium
        });
        // 1: the index carried to the next funding at the last rate.
        let interval = market.terms.funding_interval_ns as i128;
        let time_left = interval - (ctx.ts_ns as i128).rem_euclid(interval);
        let carried = index + div_floor(index * market.last_funding_rate as i128 * time_left, RATE_SCALE * interval);
        // 2: the index plus the moving average of the basis.
        let samples = market.basis_samples.len() as i128;
        let basis_sum: i128 = market.basis_samples.iter().map(|&basis| basis as i128).sum();
        let based = index + if samples == 0 { 0 } else { div_floor(basis_sum, samples) };
        // 3: the last trade, or the index before there is one.
        let last = market.last_trade_ticks.map_or(index, |price| price as i128);
        let mark = median3(carried, based, last).clamp(1, price_max as i128) as u64;
        out.events.push(PositionEvent::IndexPrice {
            market: market_id,
            index_ticks,
            mid_ticks,
            premium_rate,
            mark_price_ticks: mark,
        });
        self.mark_price(market_id, mark, call, out);
    }

    /// Funding at the rate the premium index gives: the average premium
    /// since the last funding, plus the interest minus it clamped to ±0.05%,
    /// capped at the market's cap.
    pub(crate) fn premium_funding(&mut self, market_id: MarketId, out: &mut PositionOutput) {
        let Some(market) = self.markets.get(&market_id) else { return };
        let premium = if market.premium_samples == 0 {
            0
        } else {
            div_floor(market.premium_sum, market.premium_samples as i128) as i64
        };
        let interest = market.terms.funding_interest_rate;
        let cap = market.terms.funding_rate_cap as i64;
        let rate = (premium + (interest - premium).clamp(-FUNDING_CLAMP, FUNDING_CLAMP)).clamp(-cap, cap);
        self.funding(market_id, rate, out);
    }
}

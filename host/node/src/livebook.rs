//! The live order books as the public sees them: price levels per market,
//! kept from the matching modules' `Level` events after every applied batch.
//!
//! Public book requests are answered from here, not by asking the module:
//! a request anyone can send must never run module code in a live instance
//! (code that loops would freeze every market, and any call changes the
//! instance's memory outside the journal). This is the query side of the
//! book, built from change messages like the rest of the read model.

use std::collections::BTreeMap;

use exhost_engine::{Event, EventBody, MarketId};
use exhost_guest_sdk::{Level, MatchingEvent, Side};

/// One market's levels: price ticks to total quantity in lots.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Depth {
    pub bids: BTreeMap<u64, u64>,
    pub asks: BTreeMap<u64, u64>,
}

impl Depth {
    /// From a module's full depth answer.
    pub fn from_levels(bids: &[Level], asks: &[Level]) -> Depth {
        let side = |levels: &[Level]| levels.iter().map(|level| (level.price_ticks, level.qty_lots)).collect();
        Depth { bids: side(bids), asks: side(asks) }
    }

    /// The best `levels_max` levels of each side, best first.
    pub fn top(&self, levels_max: usize) -> (Vec<Level>, Vec<Level>) {
        let level = |(&price_ticks, &qty_lots): (&u64, &u64)| Level { price_ticks, qty_lots };
        let bids = self.bids.iter().rev().take(levels_max).map(level).collect();
        let asks = self.asks.iter().take(levels_max).map(level).collect();
        (bids, asks)
    }

    fn set(&mut self, side: Side, price_ticks: u64, qty_lots: u64) {
        let levels = match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        };
        if qty_lots == 0 {
            levels.remove(&price_ticks);
        } else {
            levels.insert(price_ticks, qty_lots);
        }
    }
}

/// Every market's levels, as of `seq`.
#[derive(Clone, Debug, Default)]
pub struct LiveBooks {
    /// The last sequence number whose events are applied.
    pub seq: u64,
    pub markets: Vec<Depth>,
}

impl LiveBooks {
    /// Apply one batch's events (in sequence order) and move to `seq`.
    pub fn apply(&mut self, events: &[Event], seq: u64) {
        for event in events {
            match &event.body {
                EventBody::MarketCreated { market, .. } => {
                    let index = market.0 as usize;
                    if self.markets.len() <= index {
                        self.markets.resize_with(index + 1, Depth::default);
                    }
                }
                EventBody::Matching { market, event: MatchingEvent::Level { side, price_ticks, qty_lots } } => {
                    if let Some(depth) = self.markets.get_mut(market.0 as usize) {
                        depth.set(*side, *price_ticks, *qty_lots);
                    }
                }
                _ => {}
            }
        }
        self.seq = self.seq.max(seq);
    }

    pub fn market(&self, market: MarketId) -> Option<&Depth> {
        self.markets.get(market.0 as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use exhost_engine::ModuleHash;

    fn event(seq: u64, body: EventBody) -> Event {
        Event { seq, idx: 0, ts_ns: seq, body }
    }

    fn level(side: Side, price_ticks: u64, qty_lots: u64) -> EventBody {
        EventBody::Matching { market: MarketId(0), event: MatchingEvent::Level { side, price_ticks, qty_lots } }
    }

    #[test]
    fn levels_follow_their_events_and_the_best_come_first() {
        let mut books = LiveBooks::default();
        let created =
            EventBody::MarketCreated { market: MarketId(0), symbol: "X".into(), module_hash: ModuleHash([0; 32]) };
        books.apply(&[event(1, created)], 1);
        books.apply(
            &[
                event(2, level(Side::Buy, 100, 5)),
                event(2, level(Side::Buy, 101, 2)),
                event(3, level(Side::Sell, 105, 7)),
                event(3, level(Side::Sell, 103, 1)),
            ],
            3,
        );
        books.apply(&[event(4, level(Side::Buy, 101, 0)), event(4, level(Side::Sell, 105, 9))], 4);
        let depth = books.market(MarketId(0)).unwrap();
        let (bids, asks) = depth.top(10);
        assert_eq!(bids, vec![Level { price_ticks: 100, qty_lots: 5 }]);
        assert_eq!(asks, vec![Level { price_ticks: 103, qty_lots: 1 }, Level { price_ticks: 105, qty_lots: 9 }]);
        assert_eq!(depth.top(1).1, vec![Level { price_ticks: 103, qty_lots: 1 }]);
        assert_eq!(books.seq, 4);
        assert!(books.market(MarketId(1)).is_none(), "no market, no book");
        assert_eq!(Depth::from_levels(&bids, &asks).top(10), (bids, asks));
    }
}

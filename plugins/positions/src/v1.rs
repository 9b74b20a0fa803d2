//! State version 1 (before market terms, the index and partial
//! liquidation): its layout, kept to read old snapshots, and the migration.
//! Accounts, positions and open orders did not change shape.

use std::collections::{BTreeMap, BTreeSet};

use exhost_guest_sdk::codec::decode;
use exhost_guest_sdk::{LedgerState, MarketId, MarketRisk, ModuleError, OrderId, PositionConfig, Side, UserId};
use serde::Deserialize;

use crate::{Account, Market, OpenOrder, Positions};

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct MarketV1 {
    risk: MarketRisk,
    mark_ticks: Option<u64>,
    holders: BTreeSet<UserId>,
    cost_total: i128,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct LiquidatingV1 {
    #[allow(dead_code)]
    user_id: UserId,
    #[allow(dead_code)]
    order: Option<(MarketId, OrderId, Side, u64)>,
    #[allow(dead_code)]
    fee_units: i128,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct PositionsV1 {
    config: PositionConfig,
    markets: BTreeMap<MarketId, MarketV1>,
    accounts: BTreeMap<UserId, Account>,
    orders: BTreeMap<(MarketId, OrderId), OpenOrder>,
    ledger: LedgerState,
    liquidation_queue: Vec<UserId>,
    liquidating: Option<LiquidatingV1>,
}

/// A version-1 snapshot as today's state: every market gets the standard
/// terms (one flat tier, eight-hour funding) and no index yet, which is
/// exactly how version 1 margined and funded it.
pub(crate) fn read(bytes: &[u8]) -> Result<Positions, ModuleError> {
    let old: PositionsV1 =
        decode(bytes).map_err(|error| ModuleError::new(format!("positions snapshot v1: {error}")))?;
    if old.liquidating.is_some() || !old.liquidation_queue.is_empty() {
        return Err(ModuleError::new("positions snapshot v1 holds a liquidation in progress"));
    }
    let markets = old
        .markets
        .into_iter()
        .map(|(id, market)| {
            let mut new = Market::new(market.risk);
            new.mark_ticks = market.mark_ticks;
            new.holders = market.holders;
            new.cost_total = market.cost_total;
            (id, new)
        })
        .collect();
    Ok(Positions {
        config: old.config,
        markets,
        accounts: old.accounts,
        orders: old.orders,
        ledger: old.ledger,
        liquidation_queue: Vec::new(),
        liquidating: None,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Today's state in the version-1 layout (for the migration test).
    pub(crate) fn as_v1(state: &Positions) -> impl serde::Serialize {
        PositionsV1 {
            config: state.config.clone(),
            markets: state
                .markets
                .iter()
                .map(|(id, market)| {
                    let old = MarketV1 {
                        risk: market.risk.clone(),
                        mark_ticks: market.mark_ticks,
                        holders: market.holders.clone(),
                        cost_total: market.cost_total,
                    };
                    (*id, old)
                })
                .collect(),
            accounts: state.accounts.clone(),
            orders: state.orders.clone(),
            ledger: state.ledger.clone(),
            liquidation_queue: Vec::new(),
            liquidating: None,
        }
    }
}

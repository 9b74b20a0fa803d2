//! State version 1 (before market terms, the index and partial
//! liquidation): its layout, kept to read old snapshots, and the migration.
//! Accounts, positions and open orders did not change shape.

use std::collections::{BTreeMap, BTreeSet};

use exhost_guest_sdk::codec::decode;
use exhost_guest_sdk::{
    LedgerState, MarketId, MarketRisk, MarketTerms, ModuleError, OrderId, PositionConfig, Side, UserId,
};
use serde::Deserialize;

use crate::OpenOrder;
use crate::v2::{AccountV2, MarketV2, PositionsV2};

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
    accounts: BTreeMap<UserId, AccountV2>,
    orders: BTreeMap<(MarketId, OrderId), OpenOrder>,
    ledger: LedgerState,
    liquidation_queue: Vec<UserId>,
    liquidating: Option<LiquidatingV1>,
}

/// A version-1 snapshot in the version-2 layout: every market gets the
/// standard terms (one flat tier, eight-hour funding) and no index yet,
/// which is exactly how version 1 margined and funded it.
pub(crate) fn read(bytes: &[u8]) -> Result<PositionsV2, ModuleError> {
    let old: PositionsV1 =
        decode(bytes).map_err(|error| ModuleError::new(format!("positions snapshot v1: {error}")))?;
    if old.liquidating.is_some() || !old.liquidation_queue.is_empty() {
        return Err(ModuleError::new("positions snapshot v1 holds a liquidation in progress"));
    }
    let markets = old
        .markets
        .into_iter()
        .map(|(id, market)| {
            let new = MarketV2 {
                terms: MarketTerms::standard(market.risk.market),
                risk: market.risk,
                mark_ticks: market.mark_ticks,
                holders: market.holders,
                cost_total: market.cost_total,
                index_ticks: None,
                last_trade_ticks: None,
                basis_samples: Vec::new(),
                premium_sum: 0,
                premium_samples: 0,
                last_funding_rate: 0,
            };
            (id, new)
        })
        .collect();
    Ok(PositionsV2 {
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
    use crate::Positions;

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
            accounts: state
                .accounts
                .iter()
                .map(|(user, account)| (*user, crate::v2::tests::account_as_v2(account)))
                .collect(),
            orders: state.orders.clone(),
            ledger: state.ledger.clone(),
            liquidation_queue: Vec::new(),
            liquidating: None,
        }
    }
}

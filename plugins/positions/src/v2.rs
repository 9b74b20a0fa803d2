//! State version 2 (before funding became an index and accounts were
//! indexed by their check prices): its layout, kept to read old snapshots,
//! and the migration. Open orders and a liquidation's progress did not
//! change shape; positions gained their funding index, markets the index
//! and the liquidation index.

use std::collections::{BTreeMap, BTreeSet};

use exhost_guest_sdk::codec::decode;
use exhost_guest_sdk::margin::{ByMarket, Exposure, PositionRecord};
use exhost_guest_sdk::{LedgerState, MarketId, MarketRisk, MarketTerms, ModuleError, OrderId, PositionConfig, UserId};
use serde::Deserialize;

use crate::{Account, Liquidating, Market, OpenOrder, Positions};

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(crate) struct PositionV2 {
    pub(crate) size_lots: i64,
    pub(crate) cost: i128,
    pub(crate) realized_units: i128,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(crate) struct AccountV2 {
    pub(crate) balance_units: i128,
    pub(crate) positions: BTreeMap<MarketId, PositionV2>,
    pub(crate) exposure: BTreeMap<MarketId, Exposure>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(crate) struct MarketV2 {
    pub(crate) risk: MarketRisk,
    pub(crate) mark_ticks: Option<u64>,
    pub(crate) holders: BTreeSet<UserId>,
    pub(crate) cost_total: i128,
    pub(crate) terms: MarketTerms,
    pub(crate) index_ticks: Option<u64>,
    pub(crate) last_trade_ticks: Option<u64>,
    pub(crate) basis_samples: Vec<i64>,
    pub(crate) premium_sum: i128,
    pub(crate) premium_samples: u64,
    pub(crate) last_funding_rate: i64,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(crate) struct PositionsV2 {
    pub(crate) config: PositionConfig,
    pub(crate) markets: BTreeMap<MarketId, MarketV2>,
    pub(crate) accounts: BTreeMap<UserId, AccountV2>,
    pub(crate) orders: BTreeMap<(MarketId, OrderId), OpenOrder>,
    pub(crate) ledger: LedgerState,
    pub(crate) liquidation_queue: Vec<UserId>,
    pub(crate) liquidating: Option<Liquidating>,
}

/// A version-2 snapshot as today's state.
pub(crate) fn read(bytes: &[u8]) -> Result<Positions, ModuleError> {
    let old: PositionsV2 =
        decode(bytes).map_err(|error| ModuleError::new(format!("positions snapshot v2: {error}")))?;
    if old.liquidating.is_some() || !old.liquidation_queue.is_empty() {
        return Err(ModuleError::new("positions snapshot v2 holds a liquidation in progress"));
    }
    Ok(upgrade(old))
}

/// Version 2 settled every funding as it happened, so every funding index
/// starts at zero with nothing owed; every account with a position is
/// indexed at the marks it was snapshotted at. One pass over the accounts,
/// once, at the activation.
pub(crate) fn upgrade(old: PositionsV2) -> Positions {
    let markets = old
        .markets
        .into_iter()
        .map(|(id, market)| {
            let mut new = Market::new(market.risk);
            new.mark_ticks = market.mark_ticks;
            new.holders = market.holders;
            new.cost_total = market.cost_total;
            new.terms = market.terms;
            new.index_ticks = market.index_ticks;
            new.last_trade_ticks = market.last_trade_ticks;
            new.basis_samples = market.basis_samples;
            new.premium_sum = market.premium_sum;
            new.premium_samples = market.premium_samples;
            new.last_funding_rate = market.last_funding_rate;
            (id, new)
        })
        .collect();
    let accounts = old
        .accounts
        .into_iter()
        .map(|(user_id, account)| {
            let positions = account
                .positions
                .into_iter()
                .map(|(market, p)| {
                    let record = PositionRecord {
                        size_lots: p.size_lots,
                        cost: p.cost,
                        realized_units: p.realized_units,
                        funding_index: 0,
                    };
                    (market, record)
                })
                .collect();
            let account = Account {
                balance_units: account.balance_units,
                positions,
                exposure: account.exposure.into_iter().collect(),
                watch: ByMarket::new(),
            };
            (user_id, account)
        })
        .collect();
    let mut state = Positions {
        config: old.config,
        markets,
        accounts,
        orders: old.orders,
        ledger: old.ledger,
        funding_settled_scaled: 0,
        liquidation_queue: Vec::new(),
        liquidating: None,
    };
    state.watch_everyone();
    state
}

impl Positions {
    /// Every account with a position indexed from its state now.
    pub(crate) fn watch_everyone(&mut self) {
        let users: Vec<UserId> = self.accounts.keys().copied().collect();
        for user_id in users {
            self.watch(user_id);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An account in the version-2 layout (funding must be settled: version 2 had no index).
    pub(crate) fn account_as_v2(account: &Account) -> AccountV2 {
        AccountV2 {
            balance_units: account.balance_units,
            positions: account
                .positions
                .iter()
                .map(|(market, p)| {
                    (*market, PositionV2 { size_lots: p.size_lots, cost: p.cost, realized_units: p.realized_units })
                })
                .collect(),
            exposure: account.exposure.iter().map(|(market, exposure)| (*market, *exposure)).collect(),
        }
    }

    /// Today's state in the version-2 layout (for the migration test).
    pub(crate) fn as_v2(state: &Positions) -> PositionsV2 {
        PositionsV2 {
            config: state.config.clone(),
            markets: state
                .markets
                .iter()
                .map(|(id, market)| {
                    let old = MarketV2 {
                        risk: market.risk.clone(),
                        mark_ticks: market.mark_ticks,
                        holders: market.holders.clone(),
                        cost_total: market.cost_total,
                        terms: market.terms.clone(),
                        index_ticks: market.index_ticks,
                        last_trade_ticks: market.last_trade_ticks,
                        basis_samples: market.basis_samples.clone(),
                        premium_sum: market.premium_sum,
                        premium_samples: market.premium_samples,
                        last_funding_rate: market.last_funding_rate,
                    };
                    (*id, old)
                })
                .collect(),
            accounts: state.accounts.iter().map(|(user, account)| (*user, account_as_v2(account))).collect(),
            orders: state.orders.clone(),
            ledger: state.ledger.clone(),
            liquidation_queue: Vec::new(),
            liquidating: None,
        }
    }
}

//! The exchange's directory, kept by the engine: users, assets, markets.
//! Part of every snapshot; changed only by commands.

use std::collections::BTreeMap;

use exhost_guest_sdk::{PositionConfig, UserId};
use serde::{Deserialize, Serialize};

use crate::command::{MarketId, MarketSpec, ModuleLimits, ModuleTarget};
use crate::module::ModuleHash;

/// The installed position module.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PositionInstall {
    pub module_hash: ModuleHash,
    pub limits: ModuleLimits,
    pub config: PositionConfig,
}

/// A user's trading credentials. The secret is needed to check signatures, so
/// it is kept as given; the data directory is the operator's to protect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub api_key: String,
    pub api_secret: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    pub users: BTreeMap<UserId, UserRecord>,
    pub last_user_id: u64,
    /// Asset name to the decimal places of its minimal unit.
    pub assets: BTreeMap<String, u8>,
    /// Indexed by [`MarketId`].
    pub markets: Vec<MarketSpec>,
    pub position: Option<PositionInstall>,
    /// Every module activation (hot swap), in order.
    pub activations: Vec<Activation>,
}

/// One hot swap, as history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activation {
    pub seq: u64,
    pub target: ModuleTarget,
    pub from: ModuleHash,
    pub to: ModuleHash,
    /// The state version handed over, and the new module's own.
    pub from_state_version: u32,
    pub to_state_version: u32,
}

impl Registry {
    pub fn add_user(&mut self, record: UserRecord) -> UserId {
        self.last_user_id += 1;
        let user_id = UserId(self.last_user_id);
        self.users.insert(user_id, record);
        user_id
    }

    pub fn add_market(&mut self, spec: MarketSpec) -> MarketId {
        self.assets.entry(spec.quote.clone()).or_insert(spec.quote_decimals);
        self.markets.push(spec);
        MarketId(self.markets.len() as u32 - 1)
    }

    pub fn market_id(&self, symbol: &str) -> Option<MarketId> {
        self.markets.iter().position(|spec| spec.symbol == symbol).map(|index| MarketId(index as u32))
    }

    pub fn market(&self, market: MarketId) -> Option<&MarketSpec> {
        self.markets.get(market.0 as usize)
    }
}

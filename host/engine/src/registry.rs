//! The exchange's directory, kept by the engine: users, assets, markets.
//! Part of every snapshot; changed only by commands.

use std::collections::{BTreeMap, BTreeSet};

use exhost_guest_sdk::{MarketTerms, MatchingEvent, OrderId, PositionConfig, UserId};
use serde::{Deserialize, Serialize};

pub use crate::command::Credential;
use crate::command::{MarketId, MarketSpec, ModuleLimits, ModuleTarget};
use crate::event::EventBody;
use crate::module::ModuleHash;

/// The installed position module.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PositionInstall {
    pub module_hash: ModuleHash,
    pub limits: ModuleLimits,
    pub config: PositionConfig,
}

/// A user's trading credentials.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub api_key: String,
    pub credential: Credential,
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
    /// The client order ids of open orders, by user: unique among a user's open orders.
    pub open_client_orders: BTreeSet<(UserId, String)>,
    /// The same, by order id, to forget an id when its order closes.
    pub client_order_ids: BTreeMap<OrderId, (UserId, String)>,
    /// Terms of the markets created with them (tiers, funding). Kept after
    /// the rest of the snapshot (see `EngineSnapshot::encode`), so a
    /// registry without any encodes as it did before they existed.
    #[serde(skip)]
    pub market_terms: BTreeMap<MarketId, MarketTerms>,
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

    /// Whether the user has an open order with this client order id.
    pub fn client_order_open(&self, user_id: UserId, client_order_id: Option<&str>) -> bool {
        client_order_id.is_some_and(|id| self.open_client_orders.contains(&(user_id, id.to_string())))
    }

    /// Follow one command's events: an order with a client id that rests
    /// holds the id, and gives it back when it closes.
    pub fn track_client_orders(&mut self, events: &[EventBody]) {
        for event in events {
            match event {
                EventBody::OrderReceived { order_id, user_id, client_order_id: Some(id), .. } => {
                    self.open_client_orders.insert((*user_id, id.clone()));
                    self.client_order_ids.insert(*order_id, (*user_id, id.clone()));
                }
                EventBody::Matching { event: MatchingEvent::Order(update), .. } if !update.status.is_open() => {
                    if let Some(key) = self.client_order_ids.remove(&update.order_id) {
                        self.open_client_orders.remove(&key);
                    }
                }
                _ => {}
            }
        }
    }
}

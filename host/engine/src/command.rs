//! Commands: what the sequencer journals and the engine applies, in order.
//!
//! A command carries everything its outcome depends on (ids the host chose,
//! decimal strings already converted to integers), so applying it is a pure
//! function of the engine state. Variants are append-only: the journal holds
//! their index as the tag.

use exhost_guest_sdk::{MarketConfig, OrderId, OrderType, SelfTradePrevention, Side, TimeInForce, UserId};
use serde::{Deserialize, Serialize};

use crate::decimal::Scale;
use crate::module::ModuleHash;

/// A market, numbered in creation order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MarketId(pub u32);

/// Resource limits of a module instance. Part of the journaled market
/// definition: an out-of-fuel outcome is only deterministic if the fuel is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleLimits {
    /// Fuel (roughly, wasm instructions) one command may use.
    pub fuel_per_command: u64,
    /// The most linear memory the instance may grow to, in bytes.
    pub memory_bytes_max: u64,
}

impl Default for ModuleLimits {
    fn default() -> Self {
        ModuleLimits { fuel_per_command: 50_000_000, memory_bytes_max: 1 << 30 }
    }
}

/// Everything that defines a market.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketSpec {
    pub symbol: String,
    pub base: String,
    pub quote: String,
    /// Decimal places of the quote asset's minimal unit (USD: 6).
    pub quote_decimals: u8,
    /// The tick: prices are integer multiples of it.
    pub price_scale: Scale,
    /// The lot: quantities are integer multiples of it.
    pub qty_scale: Scale,
    pub module_hash: ModuleHash,
    pub limits: ModuleLimits,
    /// Handed to the module's `init`.
    pub config: MarketConfig,
}

/// A new order as the gateway accepted it. Its id is the command's sequence number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewOrder {
    pub market: MarketId,
    pub user_id: UserId,
    pub client_order_id: Option<String>,
    pub side: Side,
    pub order_type: OrderType,
    pub price_ticks: u64,
    pub qty_lots: u64,
    pub time_in_force: TimeInForce,
    pub self_trade_prevention: SelfTradePrevention,
    pub reduce_only: bool,
}

/// A command, as journaled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A user with trading credentials chosen by the gateway.
    CreateUser {
        api_key: String,
        api_secret: String,
    },
    /// Money in, recorded; balances are kept by the position module.
    Deposit {
        user_id: UserId,
        asset: String,
        amount_units: u64,
    },
    CreateMarket(MarketSpec),
    PlaceOrder(NewOrder),
    CancelOrder {
        market: MarketId,
        user_id: UserId,
        order_id: OrderId,
    },
    AmendOrder {
        market: MarketId,
        user_id: UserId,
        order_id: OrderId,
        price_ticks: Option<u64>,
        qty_lots: Option<u64>,
    },
    /// Cancel every open order of the user in one market, or in all of them.
    MassCancel {
        market: Option<MarketId>,
        user_id: UserId,
    },
}

impl Command {
    /// A short name for logs, metrics and `exhost journal`.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::CreateUser { .. } => "create_user",
            Command::Deposit { .. } => "deposit",
            Command::CreateMarket(_) => "create_market",
            Command::PlaceOrder(_) => "place_order",
            Command::CancelOrder { .. } => "cancel_order",
            Command::AmendOrder { .. } => "amend_order",
            Command::MassCancel { .. } => "mass_cancel",
        }
    }
}

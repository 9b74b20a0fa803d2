//! Commands: what the sequencer journals and the engine applies, in order.
//!
//! A command carries everything its outcome depends on (ids the host chose,
//! decimal strings already converted to integers), so applying it is a pure
//! function of the engine state. Variants are append-only: the journal holds
//! their index as the tag.

pub use exhost_guest_sdk::MarketId;
use exhost_guest_sdk::{
    MarketConfig, MarketTerms, MatchingCommand, OrderId, OrderOptions, OrderType, PlaceOrder, PositionConfig,
    SelfTradePrevention, Side, TimeInForce, Trigger, UserId,
};
use serde::{Deserialize, Serialize};

use crate::decimal::Scale;
use crate::module::ModuleHash;
pub use crate::module::{ModuleLimits, ModuleTarget};

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
    /// Handed to the position module, if one is installed.
    pub risk: RiskParams,
}

/// A market's margin and fee rates, in units of 1e-8 (`RATE_SCALE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskParams {
    pub initial_margin_rate: u64,
    pub maintenance_margin_rate: u64,
    pub maker_fee_rate: u64,
    pub taker_fee_rate: u64,
    pub liquidation_fee_rate: u64,
}

impl Default for RiskParams {
    /// 10% initial and 5% maintenance margin (10x leverage), 0.02% maker and
    /// 0.05% taker fees, 0.5% liquidation fee.
    fn default() -> Self {
        RiskParams {
            initial_margin_rate: 10_000_000,
            maintenance_margin_rate: 5_000_000,
            maker_fee_rate: 20_000,
            taker_fee_rate: 50_000,
            liquidation_fee_rate: 500_000,
        }
    }
}

impl MarketSpec {
    /// Settlement-asset minimal units per (one tick × one lot), if that is a
    /// positive integer: tick × lot must be a whole number of minimal units.
    pub fn units_per_tick_lot(&self) -> Option<u64> {
        let exponent = self.quote_decimals as i32 - self.price_scale.decimals as i32 - self.qty_scale.decimals as i32;
        let steps = (self.price_scale.step_units as u128).checked_mul(self.qty_scale.step_units as u128)?;
        let units = if exponent >= 0 {
            steps.checked_mul(10u128.checked_pow(exponent as u32)?)?
        } else {
            let divisor = 10u128.checked_pow((-exponent) as u32)?;
            if steps % divisor != 0 {
                return None;
            }
            steps / divisor
        };
        u64::try_from(units).ok().filter(|&units| units > 0)
    }

    /// The position module's view of this market, as market `market`; `None`
    /// when a tick × lot is not a whole number of settlement units.
    pub fn position_risk(&self, market: MarketId) -> Option<exhost_guest_sdk::MarketRisk> {
        Some(exhost_guest_sdk::MarketRisk {
            market,
            units_per_tick_lot: self.units_per_tick_lot()?,
            initial_margin_rate: self.risk.initial_margin_rate,
            maintenance_margin_rate: self.risk.maintenance_margin_rate,
            maker_fee_rate: self.risk.maker_fee_rate,
            taker_fee_rate: self.risk.taker_fee_rate,
            liquidation_fee_rate: self.risk.liquidation_fee_rate,
            price_ticks_max: self.config.price_ticks_max,
        })
    }
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

impl NewOrder {
    /// The order as its market's matching module receives it, under the id
    /// the engine gave it (the command's sequence number). The one place
    /// this translation is written: the engine, its batches and the fixture
    /// recorder all use it.
    pub fn to_matching(&self, order_id: OrderId) -> PlaceOrder {
        PlaceOrder {
            order_id,
            user_id: self.user_id,
            side: self.side,
            order_type: self.order_type,
            price_ticks: self.price_ticks,
            qty_lots: self.qty_lots,
            time_in_force: self.time_in_force,
            self_trade_prevention: self.self_trade_prevention,
        }
    }

    /// The matching command that places this order: `Place` for a plain
    /// order, so modules that predate options keep taking those, and
    /// `PlaceWith` for one with options.
    pub fn to_matching_command(
        &self,
        order_id: OrderId,
        options: &OrderOptions,
        trigger: Option<&Trigger>,
    ) -> MatchingCommand {
        let order = self.to_matching(order_id);
        match trigger {
            Some(trigger) => MatchingCommand::PlaceConditional { order, options: *options, trigger: *trigger },
            None if options.is_plain() => MatchingCommand::Place(order),
            None => MatchingCommand::PlaceWith { order, options: *options },
        }
    }

    /// The price the pre-trade check margins it at: its limit price, or, for
    /// a conditional market order, its trigger price.
    pub fn margin_price_ticks(&self, trigger: Option<&Trigger>) -> u64 {
        match (self.order_type, trigger) {
            (OrderType::Market, Some(trigger)) => trigger.price_ticks,
            _ => self.price_ticks,
        }
    }
}

/// How a user's requests are proven. Nothing here is a secret in clear
/// (except what hosts before sealing journaled): the journal, every snapshot
/// and every log line hold only what this says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Credential {
    /// An HMAC secret in clear, as hosts before sealing journaled it. Read
    /// from old journals, never written.
    Clear(String),
    /// An HMAC secret sealed by the host (an AEAD with a key kept outside the
    /// database); the engine never opens it.
    SealedSecret(#[serde(with = "serde_bytes")] Vec<u8>),
    /// An Ed25519 public key: the host holds no secret at all.
    Ed25519([u8; 32]),
}

/// A command, as journaled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A user with trading credentials chosen by the gateway, the secret in
    /// clear. Written by hosts before sealing; still applied from old journals.
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
    /// Install the exchange's position module (once).
    InstallPositionModule {
        module_hash: ModuleHash,
        limits: ModuleLimits,
        config: PositionConfig,
    },
    /// Money out, if the position module allows it.
    Withdraw {
        user_id: UserId,
        asset: String,
        amount_units: u64,
    },
    /// Money into the insurance fund.
    FundInsurance {
        amount_units: u64,
    },
    /// A new mark price; may liquidate accounts.
    MarkPrice {
        market: MarketId,
        price_ticks: u64,
    },
    /// Funding at the current mark, rate in 1e-8 units (positive: longs pay shorts).
    Funding {
        market: MarketId,
        rate: i64,
    },
    /// Hot swap: hand the live state of `target` to the module `module_hash`
    /// (restore, or migrate from an older state version) and run it from now on.
    ActivateModule {
        target: ModuleTarget,
        module_hash: ModuleHash,
    },
    /// A user with credentials that hold no secret in clear (a sealed HMAC
    /// secret, or an Ed25519 public key). Replaces `CreateUser`, which only
    /// old journals hold.
    RegisterUser {
        api_key: String,
        credential: Credential,
    },
    /// A new order with options (iceberg, expire time). Plain orders stay
    /// `PlaceOrder`, so journals written before options read as they were.
    PlaceOrderWith {
        order: NewOrder,
        options: OrderOptions,
    },
    /// A conditional order (stop, take-profit): `order` is what it becomes.
    PlaceConditional {
        order: NewOrder,
        options: OrderOptions,
        trigger: Trigger,
    },
    /// A market with terms beyond its flat risk parameters: margin tiers and
    /// funding terms (`terms.market` is set by the engine). Plain markets
    /// stay `CreateMarket`, so older journals read as they were.
    CreateMarketWith {
        spec: MarketSpec,
        terms: MarketTerms,
    },
    /// A new index price, with the book's mid price the host saw when it
    /// arrived (journaled, so replay samples the same premium); the position
    /// module derives the mark from them.
    IndexPrice {
        market: MarketId,
        index_ticks: u64,
        mid_ticks: Option<u64>,
    },
    /// Funding at the rate the position module computes from the premium index.
    PremiumFunding {
        market: MarketId,
    },
}

impl Command {
    /// The order a place command carries, with its options and trigger.
    pub fn as_new_order(&self) -> Option<(&NewOrder, OrderOptions, Option<&Trigger>)> {
        match self {
            Command::PlaceOrder(order) => Some((order, OrderOptions::default(), None)),
            Command::PlaceOrderWith { order, options } => Some((order, *options, None)),
            Command::PlaceConditional { order, options, trigger } => Some((order, *options, Some(trigger))),
            _ => None,
        }
    }

    /// A short name for logs, metrics and `exhost journal`.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::CreateUser { .. } => "create_user",
            Command::Deposit { .. } => "deposit",
            Command::CreateMarket(_) | Command::CreateMarketWith { .. } => "create_market",
            Command::PlaceOrder(_) | Command::PlaceOrderWith { .. } | Command::PlaceConditional { .. } => "place_order",
            Command::CancelOrder { .. } => "cancel_order",
            Command::AmendOrder { .. } => "amend_order",
            Command::MassCancel { .. } => "mass_cancel",
            Command::InstallPositionModule { .. } => "install_position_module",
            Command::Withdraw { .. } => "withdraw",
            Command::FundInsurance { .. } => "fund_insurance",
            Command::MarkPrice { .. } => "mark_price",
            Command::Funding { .. } | Command::PremiumFunding { .. } => "funding",
            Command::IndexPrice { .. } => "index_price",
            Command::ActivateModule { .. } => "activate_module",
            Command::RegisterUser { .. } => "register_user",
        }
    }
}

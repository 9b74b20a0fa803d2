//! The matching-module contract: its configuration, commands, events, queries and
//! the trait a plugin implements.
//!
//! Prices are integer ticks and quantities integer lots; the host converts the
//! decimal strings of the public API. The enums with data below are encoded with
//! their variant index as the wire tag, so their variants are append-only: never
//! reorder or remove one.

use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::types::{
    CommandContext, OrderId, OrderStatus, OrderType, Reason, SelfTradePrevention, Side, TimeInForce, TradeId,
    TriggerBy, UserId,
};

/// What the host gives a matching module when a market is created. Limits are
/// part of the journaled market definition, so replay sees the same ones.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketConfig {
    /// Highest accepted price, in ticks. Keeps `price * qty` far from overflow.
    pub price_ticks_max: u64,
    /// Highest accepted order quantity, in lots.
    pub qty_lots_max: u64,
    /// How many orders may rest in the book at once; more is `book_full`.
    pub resting_orders_max: u32,
    /// How many makers one command may meet (fills plus self-trade cancellations);
    /// the taker's remainder past that is cancelled (`fill_limit`).
    pub match_steps_per_command_max: u32,
    /// Module-specific parameters (UTF-8 JSON from the market's `params`), opaque to the host.
    pub params: Vec<u8>,
}

impl Default for MarketConfig {
    fn default() -> Self {
        MarketConfig {
            price_ticks_max: 1 << 40,
            qty_lots_max: 1 << 40,
            resting_orders_max: 10_000_000,
            match_steps_per_command_max: 100_000,
            params: Vec::new(),
        }
    }
}

/// A new order for the book.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceOrder {
    pub order_id: OrderId,
    pub user_id: UserId,
    pub side: Side,
    pub order_type: OrderType,
    /// The limit price in ticks; ignored (and zero) for market orders.
    pub price_ticks: u64,
    pub qty_lots: u64,
    pub time_in_force: TimeInForce,
    pub self_trade_prevention: SelfTradePrevention,
}

/// What a new order may carry beyond [`PlaceOrder`]. The host sends an order
/// with options as [`MatchingCommand::PlaceWith`], and one without as
/// [`MatchingCommand::Place`], so modules built before options existed keep
/// taking plain orders.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderOptions {
    /// Iceberg: the book shows at most this much of the order; each time the
    /// shown part fills, the next part is shown at the back of its level.
    pub display_lots: Option<u64>,
    /// With [`TimeInForce::Gtd`]: cancelled (`expired`) by the first command
    /// whose timestamp is at or after this (nanoseconds since the epoch).
    pub expire_time_ns: Option<u64>,
}

impl OrderOptions {
    pub fn is_plain(&self) -> bool {
        *self == OrderOptions::default()
    }
}

/// When a conditional order enters the book: once the price it watches is
/// at or above (`rises`) or at or below (`!rises`) `price_ticks`. The host
/// sets `rises` from the order's kind and side: a stop buy and a
/// take-profit sell rise, a stop sell and a take-profit buy fall.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trigger {
    pub price_ticks: u64,
    pub by: TriggerBy,
    pub rises: bool,
}

impl Trigger {
    /// Whether `price_ticks` meets this trigger.
    pub const fn met_by(&self, price_ticks: u64) -> bool {
        if self.rises { price_ticks >= self.price_ticks } else { price_ticks <= self.price_ticks }
    }
}

/// A command for one market's book.
///
/// Time-driven rules (an order's expiry) need the module to run when no
/// command of its market arrives. A module asks for that with
/// [`MatchingEvent::Wake`]; the host then sends it [`MatchingCommand::Wake`]
/// inside the first command, of any market, whose timestamp is at or after
/// the time asked for, before that command's own work, with its context.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MatchingCommand {
    Place(PlaceOrder),
    /// Cancel one open order of this user.
    Cancel {
        order_id: OrderId,
        user_id: UserId,
    },
    /// Change price and/or total quantity of an open order of this user.
    Amend {
        order_id: OrderId,
        user_id: UserId,
        price_ticks: Option<u64>,
        qty_lots: Option<u64>,
    },
    /// Cancel every open order of this user in this market.
    MassCancel {
        user_id: UserId,
    },
    /// A new order with options.
    PlaceWith {
        order: PlaceOrder,
        options: OrderOptions,
    },
    /// The time the module asked for with [`MatchingEvent::Wake`] has come:
    /// do what is due at the context's timestamp.
    Wake,
    /// A conditional order (stop, take-profit): `order` is what it becomes
    /// when `trigger` is met. Until then it is `untriggered`: open, out of
    /// the book; its update carries as `price_ticks` the price it is
    /// margined at (its limit price, or its trigger price for a market one).
    PlaceConditional {
        order: PlaceOrder,
        options: OrderOptions,
        trigger: Trigger,
    },
    /// The market's mark price changed (the position module set it): the
    /// book triggers what watches it.
    Mark {
        price_ticks: u64,
    },
}

impl MatchingCommand {
    /// The [`ABI_REVISION`](crate::abi::ABI_REVISION) a module needs to
    /// decode this command.
    pub const fn revision(&self) -> u32 {
        match self {
            MatchingCommand::Place(order) => order.time_in_force.revision(),
            MatchingCommand::Cancel { .. } | MatchingCommand::Amend { .. } | MatchingCommand::MassCancel { .. } => 0,
            MatchingCommand::PlaceWith { .. } | MatchingCommand::Wake => 1,
            MatchingCommand::PlaceConditional { .. } | MatchingCommand::Mark { .. } => 2,
        }
    }
}

/// The state of one order after a command changed it: a change message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderUpdate {
    pub order_id: OrderId,
    pub user_id: UserId,
    pub side: Side,
    /// Limit price in ticks (zero for a market order).
    pub price_ticks: u64,
    /// Total quantity of the order, in lots.
    pub qty_lots: u64,
    /// Quantity filled so far, in lots; never above `qty_lots`.
    pub filled_lots: u64,
    pub status: OrderStatus,
    /// Why it was rejected or cancelled, when it was.
    pub reason: Option<Reason>,
}

impl OrderUpdate {
    /// `qty_lots - filled_lots`.
    pub fn remaining_lots(&self) -> u64 {
        self.qty_lots - self.filled_lots
    }
}

/// One execution between a resting (maker) and an incoming (taker) order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trade {
    pub trade_id: TradeId,
    /// The maker's price, in ticks.
    pub price_ticks: u64,
    pub qty_lots: u64,
    pub taker_side: Side,
    pub maker_order_id: OrderId,
    pub maker_user_id: UserId,
    pub taker_order_id: OrderId,
    pub taker_user_id: UserId,
}

/// What a matching module reports for a command, in the order it happened.
///
/// Per command the reference module emits: for each fill a `Trade` then the
/// maker's `Order` update; for each maker cancelled by self-trade prevention its
/// `Order` update; last, the taker's (or the cancelled or amended order's) `Order`
/// update; then a `Level` per changed price level. A refused place is a single `Order` update with status `rejected`; a
/// refused cancel or amend is a single `Rejected` (the order, if any, is unchanged).
/// Orders that expire at the start of a command come first, each as its
/// `Order` update (`cancelled`, `expired`); a `Wake` is the very last event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MatchingEvent {
    Order(OrderUpdate),
    Trade(Trade),
    /// A cancel or amend was refused; nothing changed.
    Rejected {
        order_id: OrderId,
        user_id: UserId,
        reason: Reason,
    },
    /// A price level's total after the command (zero: the level is gone). One per
    /// level whose total changed, after all other events, bids then asks, each by
    /// ascending price: the sequenced diffs of a book feed.
    Level {
        side: Side,
        price_ticks: u64,
        qty_lots: u64,
    },
    /// For the host, not published: send [`MatchingCommand::Wake`] in the
    /// first command at or after `at_ts_ns` (`None`: never). Emitted when the
    /// module's next wake time changes; the host keeps the latest, and a
    /// module woken early does nothing and says when to come back.
    Wake {
        at_ts_ns: Option<u64>,
    },
}

/// Read-only questions to a matching module.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MatchingQuery {
    /// Aggregated levels, best first, at most `levels_max` per side.
    Depth { levels_max: u32 },
    /// Open orders of one user, by order id.
    OpenOrders { user_id: UserId },
    /// One open order.
    Order { order_id: OrderId },
}

/// An aggregated price level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Level {
    pub price_ticks: u64,
    pub qty_lots: u64,
}

/// Answers to [`MatchingQuery`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MatchingQueryResult {
    Depth { bids: Vec<Level>, asks: Vec<Level> },
    Orders(Vec<OpenOrder>),
}

/// An order resting in the book.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenOrder {
    pub order_id: OrderId,
    pub user_id: UserId,
    pub side: Side,
    pub price_ticks: u64,
    pub qty_lots: u64,
    pub filled_lots: u64,
    pub time_in_force: TimeInForce,
    pub self_trade_prevention: SelfTradePrevention,
}

/// A failure of a module outside the domain: bad configuration or snapshot bytes.
/// Domain outcomes (an order refused) are never errors: they are events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleError {
    pub message: alloc::string::String,
}

impl ModuleError {
    pub fn new(message: impl Into<alloc::string::String>) -> Self {
        ModuleError { message: message.into() }
    }
}

impl core::fmt::Display for ModuleError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The rules of one market's book. Implement this on a plain Rust type and
/// export it with [`export_matching_module!`](crate::export_matching_module).
///
/// Everything must be a pure function of the arguments and `self`: no clock, no
/// randomness, no iteration over hash maps with random seeds, integers only.
pub trait MatchingModule: Sized {
    /// The version of this module's snapshot format. Bump it when the layout of
    /// `snapshot` changes, and accept older versions in `migrate`.
    const STATE_VERSION: u32;

    /// A new, empty book for a market.
    fn init(config: &MarketConfig) -> Result<Self, ModuleError>;

    /// Apply one command, appending what happened to `events`.
    fn apply(&mut self, ctx: &CommandContext, command: &MatchingCommand, events: &mut Vec<MatchingEvent>);

    /// Answer a read-only question.
    fn query(&self, query: &MatchingQuery) -> MatchingQueryResult;

    /// The whole state, canonically encoded: equal states give equal bytes.
    fn snapshot(&self, out: &mut Vec<u8>);

    /// Rebuild the state from bytes written by `snapshot` of this `STATE_VERSION`.
    fn restore(bytes: &[u8]) -> Result<Self, ModuleError>;

    /// Rebuild the state from a snapshot of an older module's `from_version`.
    fn migrate(from_version: u32, bytes: &[u8]) -> Result<Self, ModuleError> {
        let _ = bytes;
        Err(ModuleError::new(alloc::format!(
            "this module cannot migrate state version {from_version} to {}",
            Self::STATE_VERSION
        )))
    }
}

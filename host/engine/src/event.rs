//! Events: the change messages the engine publishes for every command.
//!
//! Each carries, once stamped by the host, the sequence number of the command
//! that caused it, its index within that command and the command's timestamp.
//! The read side is built only from these. Variants are append-only.

use exhost_guest_sdk::{
    MatchingEvent, OrderId, OrderType, PositionEvent, Reason, SelfTradePrevention, Side, TimeInForce, Trigger, UserId,
};
use serde::{Deserialize, Serialize};

use crate::command::{MarketId, ModuleTarget};
use crate::module::ModuleHash;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventBody {
    UserCreated {
        user_id: UserId,
    },
    Deposited {
        user_id: UserId,
        asset: String,
        amount_units: u64,
    },
    MarketCreated {
        market: MarketId,
        symbol: String,
        module_hash: ModuleHash,
    },
    /// An order reached its market's module (which may still reject it).
    OrderReceived {
        market: MarketId,
        order_id: OrderId,
        user_id: UserId,
        client_order_id: Option<String>,
        side: Side,
        order_type: OrderType,
        price_ticks: u64,
        qty_lots: u64,
        time_in_force: TimeInForce,
        self_trade_prevention: SelfTradePrevention,
        reduce_only: bool,
    },
    /// Something the market's matching module reported.
    Matching {
        market: MarketId,
        event: MatchingEvent,
    },
    /// The engine refused the command before any module saw it, or a module
    /// faulted and the whole command was undone; nothing changed.
    CommandRejected {
        reason: Reason,
    },
    /// Something the position module reported.
    Position(PositionEvent),
    PositionModuleInstalled {
        module_hash: ModuleHash,
    },
    /// A hot swap happened at this sequence.
    ModuleActivated {
        target: ModuleTarget,
        from: ModuleHash,
        to: ModuleHash,
        migrated: bool,
    },
    /// A hot swap was refused (the new module could not take the state); the old module stays.
    ModuleActivationRefused {
        target: ModuleTarget,
        module_hash: ModuleHash,
        reason: String,
    },
    /// One market's part of a command that spans markets (a mass cancel in
    /// every market) was refused because its module faulted; that market is
    /// as it was, the other markets' parts went ahead.
    MarketCommandRejected {
        market: MarketId,
        user_id: UserId,
        reason: Reason,
    },
    /// A mass cancel finished: how many of the user's orders it cancelled
    /// (in one market, or in all when `market` is `None`).
    MassCancelled {
        market: Option<MarketId>,
        user_id: UserId,
        orders: u32,
    },
    /// The command was applied and changed nothing anyone sees. Emitted only
    /// when a command would otherwise leave no event, so that every sequence
    /// number shows in the event log.
    NoEffect,
    /// The options of the order received just before, in the same command
    /// (only for an order that has some).
    OrderOptions {
        market: MarketId,
        order_id: OrderId,
        user_id: UserId,
        display_lots: Option<u64>,
        expire_time_ns: Option<u64>,
    },
    /// The trigger of the conditional order received just before, in the
    /// same command.
    OrderTrigger {
        market: MarketId,
        order_id: OrderId,
        user_id: UserId,
        trigger: Trigger,
    },
}

/// An event with its place in history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    pub idx: u32,
    pub ts_ns: u64,
    pub body: EventBody,
}

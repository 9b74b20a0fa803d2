//! # exhost guest SDK
//!
//! What a plugin author depends on to write an exhost rule module, and what the
//! host uses to talk to one: the ABI is defined here once.
//!
//! - [`types`]: ids, sides, statuses, reasons (numbered, stable codes).
//! - [`matching`]: the matching-module commands, events, queries and trait.
//! - [`position`]: the position-module commands, events, queries and trait.
//! - [`margin`]: how an account is valued (margins, PnL, funding, liquidation prices).
//! - [`codec`]: the one deterministic binary encoding.
//! - [`book`]: "book v1" and "book v2", snapshot formats order books share, so they can swap.
//! - [`abi`]: export names, the memory protocol, `ABI_VERSION`.
//! - [`export_matching_module!`], [`export_position_module!`]: one macro line
//!   turns your type into a module.
//!
//! Rule code is plain Rust: test it natively, then build it with
//! `cargo build --target wasm32-unknown-unknown --release`. See `README.md`.

extern crate alloc;

pub mod abi;
pub mod book;
pub mod codec;
mod export;
pub mod guest;
pub mod margin;
pub mod matching;
pub mod position;
pub mod types;

pub use abi::{ABI_VERSION, Abi, MatchingAbi, ModuleKind, PositionAbi};
pub use matching::{
    Level, MarketConfig, MatchingCommand, MatchingEvent, MatchingModule, MatchingQuery, MatchingQueryResult,
    ModuleError, OpenOrder, OrderOptions, OrderUpdate, PlaceOrder, Trade, Trigger,
};
pub use position::{
    AccountState, BalanceCause, FollowUp, LedgerState, MarketRisk, MarketTerms, OrderIntent, PositionCommand,
    PositionConfig, PositionEvent, PositionModule, PositionOutput, PositionQuery, PositionQueryResult, PositionState,
    RATE_SCALE, RiskTier, TIERS_MAX,
};
pub use types::{
    CommandContext, MarketId, OrderId, OrderStatus, OrderType, Reason, SelfTradePrevention, Side, TimeInForce, TradeId,
    TriggerBy, UserId,
};

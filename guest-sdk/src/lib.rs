//! # exhost guest SDK
//!
//! What a plugin author depends on to write an exhost rule module, and what the
//! host uses to talk to one: the ABI is defined here once.
//!
//! - [`types`]: ids, sides, statuses, reasons (numbered, stable codes).
//! - [`matching`]: the matching-module commands, events, queries and trait.
//! - [`codec`]: the one deterministic binary encoding.
//! - [`abi`]: export names, the memory protocol, `ABI_VERSION`.
//! - [`export_matching_module!`]: one macro line turns your type into a module.
//!
//! Rule code is plain Rust: test it natively, then build it with
//! `cargo build --target wasm32-unknown-unknown --release`. See `README.md`.

extern crate alloc;

pub mod abi;
pub mod codec;
mod export;
pub mod guest;
pub mod matching;
pub mod types;

pub use abi::{ABI_VERSION, ModuleKind};
pub use matching::{
    Level, MarketConfig, MatchingCommand, MatchingEvent, MatchingModule, MatchingQuery, MatchingQueryResult,
    ModuleError, OpenOrder, OrderUpdate, PlaceOrder, Trade,
};
pub use types::{
    CommandContext, OrderId, OrderStatus, OrderType, Reason, SelfTradePrevention, Side, TimeInForce, TradeId, UserId,
};

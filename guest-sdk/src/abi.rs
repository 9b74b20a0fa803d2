//! The module ABI: export names, kinds, status codes and the memory protocol.
//! This file is the single point of definition; `guest-sdk/README.md` explains it.
//!
//! A module is a core WebAssembly module that imports nothing and exports a
//! memory named `memory` plus the functions below. All integers are `i32`/`i64`
//! at the boundary, read as unsigned.
//!
//! Memory protocol: the guest owns two buffers, *input* and *output*.
//! - `exhost_input(len) -> ptr` makes the input buffer at least `len` bytes long,
//!   clears the output buffer and returns the input's address; the host then
//!   writes into `[ptr, ptr + len)`.
//! - `exhost_output() -> (ptr << 32) | len` tells where the output is.
//! - `exhost_apply(offset, len)` decodes one [`ApplyInput`] from the input buffer
//!   at `[offset, offset + len)`, applies it and *appends* one frame to the
//!   output: a little-endian `u32` byte count followed by that many bytes, the
//!   encoded `Vec` of events. A batch is one copy in (many commands written
//!   back to back), one `exhost_apply` call per command (so fuel is metered per
//!   command, which keeps out-of-fuel outcomes independent of batching), and one
//!   copy out.
//! - Every other call clears the output first, then writes its answer (or, when
//!   it returns a non-zero status, a UTF-8 error message) into it.

use alloc::vec::Vec;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::matching::{
    MarketConfig, MatchingCommand, MatchingEvent, MatchingModule, MatchingQuery, MatchingQueryResult, ModuleError,
};
use crate::position::{
    PositionCommand, PositionConfig, PositionModule, PositionOutput, PositionQuery, PositionQueryResult,
};
use crate::types::CommandContext;

/// The version of this ABI. The host refuses modules that declare another.
pub const ABI_VERSION: u32 = 1;

/// What this SDK adds to [`ABI_VERSION`] without breaking it: message
/// variants and stable-enum codes only grow, and a module built with an
/// older SDK cannot decode what came after it. A module exports its SDK's
/// revision ([`exports::ABI_REVISION`]), and the host sends it nothing of a
/// later one: an order that needs more than the market's book or the
/// position module reads is refused for it (`unsupported_order`) before
/// any module runs.
///
/// - 0: the first ABI (no `exhost_abi_revision` export).
/// - 1: order options (`MatchingCommand::PlaceWith`, `TimeInForce::Gtd`),
///   wakes (`MatchingCommand::Wake`, `MatchingEvent::Wake`), the reasons
///   `invalid_expire_time`, `invalid_display_qty`, `unsupported_order`,
///   `expired`.
/// - 2: conditional orders (`MatchingCommand::PlaceConditional`, `Trigger`,
///   `TriggerBy`, `OrderStatus::Untriggered`), the mark price handed to books
///   (`MatchingCommand::Mark`), the reasons `invalid_trigger_price`,
///   `would_trigger`.
/// - 3: risk tiers and funding terms (`PositionCommand::MarketTerms`), the
///   index price feed (`PositionCommand::IndexPrice`,
///   `PositionEvent::IndexPrice`), funding from the premium index
///   (`PositionCommand::PremiumFunding`).
pub const ABI_REVISION: u32 = 3;

/// Export names, spelled once.
pub mod exports {
    /// `() -> i32`: [`ABI_VERSION`](super::ABI_VERSION) of the SDK the module was built with.
    pub const ABI_VERSION: &str = "exhost_abi_version";
    /// `() -> i32`: a [`ModuleKind`](super::ModuleKind) code.
    pub const MODULE_KIND: &str = "exhost_module_kind";
    /// `() -> i32`: the module's snapshot format version.
    pub const STATE_VERSION: &str = "exhost_state_version";
    /// `(len: i32) -> i32`: reserve the input buffer, clear the output; returns its address.
    pub const INPUT: &str = "exhost_input";
    /// `() -> i64`: `(ptr << 32) | len` of the output buffer.
    pub const OUTPUT: &str = "exhost_output";
    /// `(len: i32) -> i32 status`: initialise from an encoded config in the input buffer.
    pub const INIT: &str = "exhost_init";
    /// `(offset: i32, len: i32) -> i32 status`: apply one encoded command; appends a frame.
    pub const APPLY: &str = "exhost_apply";
    /// `(len: i32) -> i32 status`: answer an encoded query.
    pub const QUERY: &str = "exhost_query";
    /// `() -> i32 status`: write the state's snapshot into the output buffer.
    pub const SNAPSHOT: &str = "exhost_snapshot";
    /// `(len: i32) -> i32 status`: replace the state with a snapshot of this state version.
    pub const RESTORE: &str = "exhost_restore";
    /// `(from_version: i32, len: i32) -> i32 status`: replace the state from an older snapshot.
    pub const MIGRATE: &str = "exhost_migrate";
    /// `() -> i64`: `(ptr << 32) | len` of the last panic message (empty if none).
    pub const PANIC_MESSAGE: &str = "exhost_panic_message";
    /// Optional, `() -> i32`: the [`ABI_REVISION`](super::ABI_REVISION) of
    /// the SDK the module was built with; without it, revision 0.
    pub const ABI_REVISION: &str = "exhost_abi_revision";
    /// The exported linear memory.
    pub const MEMORY: &str = "memory";

    /// Every function a module of any kind must export.
    pub const REQUIRED_FUNCTIONS: &[&str] = &[
        ABI_VERSION,
        MODULE_KIND,
        STATE_VERSION,
        INPUT,
        OUTPUT,
        INIT,
        APPLY,
        QUERY,
        SNAPSHOT,
        RESTORE,
        MIGRATE,
        PANIC_MESSAGE,
    ];
}

/// Status codes returned by the calls that return one.
pub mod status {
    pub const OK: u32 = 0;
    /// The module refused (bad config, bad snapshot, not initialised); message in output.
    pub const MODULE_ERROR: u32 = 1;
    /// The input could not be decoded; message in output.
    pub const DECODE_ERROR: u32 = 2;
}

/// What kind of rules a module holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModuleKind {
    /// One instance per market: the order book.
    Matching,
    /// One instance per exchange: balances, positions, margin.
    Position,
}

impl ModuleKind {
    pub const fn code(self) -> u32 {
        match self {
            ModuleKind::Matching => 1,
            ModuleKind::Position => 2,
        }
    }

    pub const fn from_code(code: u32) -> Option<Self> {
        match code {
            1 => Some(ModuleKind::Matching),
            2 => Some(ModuleKind::Position),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            ModuleKind::Matching => "matching",
            ModuleKind::Position => "position",
        }
    }
}

/// One command as written into the input buffer for `exhost_apply`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyInput<C> {
    pub ctx: CommandContext,
    pub command: C,
}

/// Pack an address and a length into the `i64` that `exhost_output` returns.
pub const fn pack_region(ptr: u32, len: u32) -> u64 {
    ((ptr as u64) << 32) | len as u64
}

/// Split a packed region into `(ptr, len)`.
pub const fn unpack_region(region: u64) -> (u32, u32) {
    ((region >> 32) as u32, region as u32)
}

/// The message types of one kind of module. Host and guest code is written once,
/// generically over this, for every kind.
pub trait Abi: 'static {
    const KIND: ModuleKind;
    type Config: Serialize + DeserializeOwned + Clone + Send + Sync;
    type Command: Serialize + DeserializeOwned + Clone + Send + Sync;
    /// What one command produces; `Default` is "nothing".
    type Output: Serialize + DeserializeOwned + Default + Send;
    type Query: Serialize + DeserializeOwned + Send;
    type QueryResult: Serialize + DeserializeOwned + Send;

    /// Empty an output, keeping its allocations: the guest reuses one output
    /// for every command instead of allocating one per command.
    fn clear_output(out: &mut Self::Output);
}

/// The matching-module kind.
pub struct MatchingAbi;

impl Abi for MatchingAbi {
    const KIND: ModuleKind = ModuleKind::Matching;
    type Config = MarketConfig;
    type Command = MatchingCommand;
    type Output = Vec<MatchingEvent>;
    type Query = MatchingQuery;
    type QueryResult = MatchingQueryResult;

    fn clear_output(out: &mut Vec<MatchingEvent>) {
        out.clear();
    }
}

/// The position-module kind.
pub struct PositionAbi;

impl Abi for PositionAbi {
    const KIND: ModuleKind = ModuleKind::Position;
    type Config = PositionConfig;
    type Command = PositionCommand;
    type Output = PositionOutput;
    type Query = PositionQuery;
    type QueryResult = PositionQueryResult;

    fn clear_output(out: &mut PositionOutput) {
        out.events.clear();
        out.follow_ups.clear();
    }
}

/// A module's rules, seen generically. Implemented for every
/// [`MatchingModule`] and every [`PositionModule`]; plugin authors implement
/// those instead.
pub trait Rules<A: Abi>: Sized {
    const STATE_VERSION: u32;
    fn init(config: &A::Config) -> Result<Self, ModuleError>;
    fn apply(&mut self, ctx: &CommandContext, command: &A::Command, out: &mut A::Output);
    fn query(&self, query: &A::Query) -> A::QueryResult;
    fn snapshot(&self, out: &mut Vec<u8>);
    fn restore(bytes: &[u8]) -> Result<Self, ModuleError>;
    fn migrate(from_version: u32, bytes: &[u8]) -> Result<Self, ModuleError>;
}

impl<M: MatchingModule> Rules<MatchingAbi> for M {
    const STATE_VERSION: u32 = M::STATE_VERSION;
    fn init(config: &MarketConfig) -> Result<Self, ModuleError> {
        M::init(config)
    }
    fn apply(&mut self, ctx: &CommandContext, command: &MatchingCommand, out: &mut Vec<MatchingEvent>) {
        MatchingModule::apply(self, ctx, command, out)
    }
    fn query(&self, query: &MatchingQuery) -> MatchingQueryResult {
        MatchingModule::query(self, query)
    }
    fn snapshot(&self, out: &mut Vec<u8>) {
        MatchingModule::snapshot(self, out)
    }
    fn restore(bytes: &[u8]) -> Result<Self, ModuleError> {
        M::restore(bytes)
    }
    fn migrate(from_version: u32, bytes: &[u8]) -> Result<Self, ModuleError> {
        M::migrate(from_version, bytes)
    }
}

impl<P: PositionModule> Rules<PositionAbi> for P {
    const STATE_VERSION: u32 = P::STATE_VERSION;
    fn init(config: &PositionConfig) -> Result<Self, ModuleError> {
        P::init(config)
    }
    fn apply(&mut self, ctx: &CommandContext, command: &PositionCommand, out: &mut PositionOutput) {
        PositionModule::apply(self, ctx, command, out)
    }
    fn query(&self, query: &PositionQuery) -> PositionQueryResult {
        PositionModule::query(self, query)
    }
    fn snapshot(&self, out: &mut Vec<u8>) {
        PositionModule::snapshot(self, out)
    }
    fn restore(bytes: &[u8]) -> Result<Self, ModuleError> {
        P::restore(bytes)
    }
    fn migrate(from_version: u32, bytes: &[u8]) -> Result<Self, ModuleError> {
        P::migrate(from_version, bytes)
    }
}

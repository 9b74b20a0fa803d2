//! The engine: applies journaled commands, strictly in sequence order, through
//! the rule modules, and returns the change messages each one caused.
//!
//! It holds no I/O: the caller feeds it commands that are already durable and
//! does whatever it wants with the events. Given the same commands and module
//! bytes it reaches the same state, which is what replay and `verify` rely on.
//!
//! Module faults: a trap, fuel exhaustion or ABI breach while applying a
//! command rejects that command and only that command. The instance is rebuilt
//! from its last checkpoint (a snapshot kept in memory) plus the commands it
//! applied since, so its state is exactly the state before the command. All of
//! that is deterministic, so replay reaches the same outcome.

use std::sync::Arc;

use exhost_guest_sdk::{
    CommandContext, MatchingCommand, MatchingEvent, MatchingQuery, MatchingQueryResult, OrderId, OrderStatus,
    OrderUpdate, PlaceOrder, Reason, UserId,
};

use crate::command::{Command, MarketId, MarketSpec, NewOrder};
use crate::event::EventBody;
use crate::module::{LoadError, MatchingInstance, ModuleFault, ModuleLoader};
use crate::registry::{Registry, UserRecord};
use crate::snapshot::{EngineSnapshot, MarketState, SNAPSHOT_FORMAT};

/// How many commands a market instance may apply after its checkpoint before
/// the engine takes a fresh one, bounding both memory and recovery time.
pub const RETAINED_COMMANDS_MAX: usize = 100_000;

/// A failure that stops the engine: the journal cannot be applied any further.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error("command {got} arrived, but {expected} was expected next")]
    OutOfSequence { expected: u64, got: u64 },
    #[error("module for market {market:?} could not be loaded: {source}")]
    Load {
        market: MarketId,
        #[source]
        source: LoadError,
    },
    #[error("market {market:?} could not be rebuilt after a module fault: {fault}")]
    Recovery { market: MarketId, fault: ModuleFault },
    #[error("snapshot is unusable: {0}")]
    BadSnapshot(String),
}

struct Market {
    instance: Box<dyn MatchingInstance>,
    /// Snapshot bytes the instance can be rebuilt from, and its format version.
    checkpoint: Vec<u8>,
    checkpoint_version: u32,
    /// Commands applied since the checkpoint, in order.
    retained: Vec<(CommandContext, MatchingCommand)>,
}

pub struct Engine {
    loader: Arc<dyn ModuleLoader + Send + Sync>,
    registry: Registry,
    markets: Vec<Market>,
    last_seq: u64,
    last_ts_ns: u64,
    scratch: Vec<MatchingEvent>,
}

impl Engine {
    /// An empty exchange, before the first command.
    pub fn new(loader: Arc<dyn ModuleLoader + Send + Sync>) -> Engine {
        Engine {
            loader,
            registry: Registry::default(),
            markets: Vec::new(),
            last_seq: 0,
            last_ts_ns: 0,
            scratch: Vec::new(),
        }
    }

    /// The sequence number of the last applied command (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    pub fn last_ts_ns(&self) -> u64 {
        self.last_ts_ns
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Apply the command with sequence number `seq`; it must be the next one.
    pub fn apply(&mut self, seq: u64, ts_ns: u64, command: &Command) -> Result<Vec<EventBody>, EngineError> {
        if seq != self.last_seq + 1 {
            return Err(EngineError::OutOfSequence { expected: self.last_seq + 1, got: seq });
        }
        // Time never goes backwards inside the engine, whatever the sequencer's clock did.
        let ts_ns = ts_ns.max(self.last_ts_ns);
        let ctx = CommandContext { seq, ts_ns };
        let mut events = Vec::new();
        match command {
            Command::CreateUser { api_key, api_secret } => {
                let user_id =
                    self.registry.add_user(UserRecord { api_key: api_key.clone(), api_secret: api_secret.clone() });
                events.push(EventBody::UserCreated { user_id });
            }
            Command::Deposit { user_id, asset, amount_units } => {
                if !self.registry.users.contains_key(user_id) {
                    events.push(EventBody::CommandRejected { reason: Reason::UnknownUser });
                } else if !self.registry.assets.contains_key(asset) {
                    events.push(EventBody::CommandRejected { reason: Reason::UnknownAsset });
                } else {
                    events.push(EventBody::Deposited {
                        user_id: *user_id,
                        asset: asset.clone(),
                        amount_units: *amount_units,
                    });
                }
            }
            Command::CreateMarket(spec) => self.create_market(spec, &mut events)?,
            Command::PlaceOrder(order) => self.place(ctx, order, &mut events)?,
            Command::CancelOrder { market, user_id, order_id } => {
                let command = MatchingCommand::Cancel { order_id: *order_id, user_id: *user_id };
                self.to_market(ctx, *market, *user_id, command, &mut events)?;
            }
            Command::AmendOrder { market, user_id, order_id, price_ticks, qty_lots } => {
                let command = MatchingCommand::Amend {
                    order_id: *order_id,
                    user_id: *user_id,
                    price_ticks: *price_ticks,
                    qty_lots: *qty_lots,
                };
                self.to_market(ctx, *market, *user_id, command, &mut events)?;
            }
            Command::MassCancel { market: Some(market), user_id } => {
                self.to_market(ctx, *market, *user_id, MatchingCommand::MassCancel { user_id: *user_id }, &mut events)?;
            }
            Command::MassCancel { market: None, user_id } => {
                if !self.registry.users.contains_key(user_id) {
                    events.push(EventBody::CommandRejected { reason: Reason::UnknownUser });
                } else {
                    for index in 0..self.markets.len() {
                        let market = MarketId(index as u32);
                        let command = MatchingCommand::MassCancel { user_id: *user_id };
                        self.run_matching(ctx, market, command, &mut events)?;
                    }
                }
            }
        }
        self.last_seq = seq;
        self.last_ts_ns = ts_ns;
        Ok(events)
    }

    fn create_market(&mut self, spec: &MarketSpec, events: &mut Vec<EventBody>) -> Result<(), EngineError> {
        if self.registry.market_id(&spec.symbol).is_some() {
            events.push(EventBody::CommandRejected { reason: Reason::MarketExists });
            return Ok(());
        }
        if self.registry.assets.get(&spec.quote).is_some_and(|&decimals| decimals != spec.quote_decimals) {
            events.push(EventBody::CommandRejected { reason: Reason::UnknownAsset });
            return Ok(());
        }
        let market = MarketId(self.markets.len() as u32);
        let mut instance = match self.loader.new_matching(&spec.module_hash, &spec.limits, &spec.config) {
            Ok(instance) => instance,
            // Without the module's bytes nothing after this command can be replayed.
            Err(source @ LoadError::UnknownModule(_)) => return Err(EngineError::Load { market, source }),
            // The module refused its config or failed to start: deterministic, so a rejection.
            Err(_) => {
                events.push(EventBody::CommandRejected { reason: Reason::ModuleProtocol });
                return Ok(());
            }
        };
        let mut checkpoint = Vec::new();
        if instance.snapshot(&mut checkpoint).is_err() {
            events.push(EventBody::CommandRejected { reason: Reason::ModuleProtocol });
            return Ok(());
        }
        let checkpoint_version = instance.state_version();
        self.markets.push(Market { instance, checkpoint, checkpoint_version, retained: Vec::new() });
        self.registry.add_market(spec.clone());
        events.push(EventBody::MarketCreated { market, symbol: spec.symbol.clone(), module_hash: spec.module_hash });
        Ok(())
    }

    fn place(&mut self, ctx: CommandContext, order: &NewOrder, events: &mut Vec<EventBody>) -> Result<(), EngineError> {
        if (order.market.0 as usize) >= self.markets.len() {
            events.push(EventBody::CommandRejected { reason: Reason::UnknownMarket });
            return Ok(());
        }
        if !self.registry.users.contains_key(&order.user_id) {
            events.push(EventBody::CommandRejected { reason: Reason::UnknownUser });
            return Ok(());
        }
        let order_id = OrderId(ctx.seq);
        events.push(EventBody::OrderReceived {
            market: order.market,
            order_id,
            user_id: order.user_id,
            client_order_id: order.client_order_id.clone(),
            side: order.side,
            order_type: order.order_type,
            price_ticks: order.price_ticks,
            qty_lots: order.qty_lots,
            time_in_force: order.time_in_force,
            self_trade_prevention: order.self_trade_prevention,
            reduce_only: order.reduce_only,
        });
        // The position module's pre-trade check goes here, before the book sees the order,
        // and settlement of the fills after it.
        let command = MatchingCommand::Place(PlaceOrder {
            order_id,
            user_id: order.user_id,
            side: order.side,
            order_type: order.order_type,
            price_ticks: order.price_ticks,
            qty_lots: order.qty_lots,
            time_in_force: order.time_in_force,
            self_trade_prevention: order.self_trade_prevention,
        });
        self.run_matching(ctx, order.market, command, events)
    }

    fn to_market(
        &mut self,
        ctx: CommandContext,
        market: MarketId,
        user_id: UserId,
        command: MatchingCommand,
        events: &mut Vec<EventBody>,
    ) -> Result<(), EngineError> {
        if (market.0 as usize) >= self.markets.len() {
            events.push(EventBody::CommandRejected { reason: Reason::UnknownMarket });
        } else if !self.registry.users.contains_key(&user_id) {
            events.push(EventBody::CommandRejected { reason: Reason::UnknownUser });
        } else {
            self.run_matching(ctx, market, command, events)?;
        }
        Ok(())
    }

    /// Run one command through a market's module; a module fault rejects it.
    fn run_matching(
        &mut self,
        ctx: CommandContext,
        market: MarketId,
        command: MatchingCommand,
        events: &mut Vec<EventBody>,
    ) -> Result<(), EngineError> {
        let slot = &mut self.markets[market.0 as usize];
        self.scratch.clear();
        match slot.instance.apply(&ctx, &command, &mut self.scratch) {
            Ok(()) => {
                events.extend(self.scratch.drain(..).map(|event| EventBody::Matching { market, event }));
                slot.retained.push((ctx, command));
                if slot.retained.len() >= RETAINED_COMMANDS_MAX {
                    self.checkpoint(market)?;
                }
            }
            Err(fault) => {
                self.recover(market)?;
                let reason = match fault {
                    ModuleFault::OutOfFuel { .. } => Reason::ModuleOutOfFuel,
                    ModuleFault::Trap { .. } => Reason::ModuleTrap,
                    _ => Reason::ModuleProtocol,
                };
                events.push(EventBody::Matching { market, event: rejection(&command, reason) });
            }
        }
        Ok(())
    }

    /// Rebuild a market's instance as it was after its last successful command.
    fn recover(&mut self, market: MarketId) -> Result<(), EngineError> {
        let spec = &self.registry.markets[market.0 as usize];
        let slot = &mut self.markets[market.0 as usize];
        slot.instance = self
            .loader
            .restore_matching(&spec.module_hash, &spec.limits, slot.checkpoint_version, &slot.checkpoint)
            .map_err(|source| EngineError::Load { market, source })?;
        let mut scratch = Vec::new();
        for (ctx, command) in &slot.retained {
            scratch.clear();
            slot.instance.apply(ctx, command, &mut scratch).map_err(|fault| EngineError::Recovery { market, fault })?;
        }
        Ok(())
    }

    /// Take a fresh in-memory checkpoint of one market.
    fn checkpoint(&mut self, market: MarketId) -> Result<(), EngineError> {
        let slot = &mut self.markets[market.0 as usize];
        let mut bytes = Vec::new();
        slot.instance.snapshot(&mut bytes).map_err(|fault| EngineError::Recovery { market, fault })?;
        slot.checkpoint = bytes;
        slot.checkpoint_version = slot.instance.state_version();
        slot.retained.clear();
        Ok(())
    }

    /// Ask a market's module a read-only question.
    pub fn query(&mut self, market: MarketId, query: &MatchingQuery) -> Result<MatchingQueryResult, EngineError> {
        let slot = self
            .markets
            .get_mut(market.0 as usize)
            .ok_or_else(|| EngineError::BadSnapshot(format!("no market {market:?}")))?;
        match slot.instance.query(query) {
            Ok(result) => Ok(result),
            Err(fault) => {
                // A faulting query changes no state, but the instance's memory may be
                // mid-operation: rebuild it before anyone uses it again.
                self.recover(market)?;
                Err(EngineError::Recovery { market, fault })
            }
        }
    }

    /// The whole state: registry and every module's snapshot. Also refreshes
    /// each market's in-memory checkpoint, since these bytes are one.
    pub fn snapshot(&mut self) -> Result<EngineSnapshot, EngineError> {
        let mut markets = Vec::with_capacity(self.markets.len());
        for (index, slot) in self.markets.iter_mut().enumerate() {
            let market = MarketId(index as u32);
            let mut bytes = Vec::new();
            slot.instance.snapshot(&mut bytes).map_err(|fault| EngineError::Recovery { market, fault })?;
            let state_version = slot.instance.state_version();
            slot.checkpoint.clone_from(&bytes);
            slot.checkpoint_version = state_version;
            slot.retained.clear();
            markets.push(MarketState { state_version, bytes });
        }
        Ok(EngineSnapshot {
            format: SNAPSHOT_FORMAT,
            seq: self.last_seq,
            ts_ns: self.last_ts_ns,
            registry: self.registry.clone(),
            markets,
        })
    }

    /// An engine holding the state of a snapshot.
    pub fn restore(
        loader: Arc<dyn ModuleLoader + Send + Sync>,
        snapshot: EngineSnapshot,
    ) -> Result<Engine, EngineError> {
        if snapshot.format != SNAPSHOT_FORMAT {
            return Err(EngineError::BadSnapshot(format!("format {} is not {SNAPSHOT_FORMAT}", snapshot.format)));
        }
        if snapshot.markets.len() != snapshot.registry.markets.len() {
            return Err(EngineError::BadSnapshot("market count does not match the registry".into()));
        }
        let mut markets = Vec::with_capacity(snapshot.markets.len());
        for (index, (state, spec)) in snapshot.markets.into_iter().zip(&snapshot.registry.markets).enumerate() {
            let market = MarketId(index as u32);
            let instance = loader
                .restore_matching(&spec.module_hash, &spec.limits, state.state_version, &state.bytes)
                .map_err(|source| EngineError::Load { market, source })?;
            markets.push(Market {
                instance,
                checkpoint: state.bytes,
                checkpoint_version: state.state_version,
                retained: Vec::new(),
            });
        }
        Ok(Engine {
            loader,
            registry: snapshot.registry,
            markets,
            last_seq: snapshot.seq,
            last_ts_ns: snapshot.ts_ns,
            scratch: Vec::new(),
        })
    }
}

/// The event that reports a command refused because its module faulted.
fn rejection(command: &MatchingCommand, reason: Reason) -> MatchingEvent {
    match command {
        MatchingCommand::Place(order) => MatchingEvent::Order(OrderUpdate {
            order_id: order.order_id,
            user_id: order.user_id,
            side: order.side,
            price_ticks: order.price_ticks,
            qty_lots: order.qty_lots,
            filled_lots: 0,
            status: OrderStatus::Rejected,
            reason: Some(reason),
        }),
        MatchingCommand::Cancel { order_id, user_id } | MatchingCommand::Amend { order_id, user_id, .. } => {
            MatchingEvent::Rejected { order_id: *order_id, user_id: *user_id, reason }
        }
        MatchingCommand::MassCancel { user_id } => {
            MatchingEvent::Rejected { order_id: OrderId(0), user_id: *user_id, reason }
        }
    }
}

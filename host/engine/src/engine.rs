//! The engine: applies journaled commands, strictly in sequence order, through
//! the rule modules, and returns the change messages each one caused.
//!
//! It holds no I/O: the caller feeds it commands that are already durable and
//! does whatever it wants with the events. Given the same commands and module
//! bytes it reaches the same state, which is what replay and `verify` rely on.
//!
//! An order runs the pipeline of DESIGN.md in a fixed order: the position
//! module checks it, the market's matching module matches it, the position
//! module settles what the book did; follow-ups the position module asks for
//! (cancelling a liquidated user's orders, liquidation orders) run within the
//! same command, each settled in turn, up to a named limit.
//!
//! Commands are atomic. If any module traps, runs out of fuel or breaks the
//! ABI at any step, the whole command is rejected: every instance it touched
//! is rebuilt from its in-memory checkpoint (an image of its memory) plus the
//! commands it applied before this one, so the state is exactly, byte for
//! byte, the state before the command. All of that is deterministic, so
//! replay reaches the same outcome.
//!
//! Only journaled commands ever run code in a live instance. Queries, and
//! the module's own snapshot (for a hot swap's hand-over), run in a copy
//! resumed from the live instance's image, so nothing a client asks and
//! nothing an operator inspects changes a byte that later commands could see.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use exhost_guest_sdk::{
    Abi, CommandContext, FollowUp, MatchingAbi, MatchingCommand, MatchingEvent, MatchingQuery, MatchingQueryResult,
    OrderId, OrderIntent, OrderOptions, OrderStatus, OrderType, OrderUpdate, PlaceOrder, PositionAbi, PositionCommand,
    PositionEvent, PositionQuery, PositionQueryResult, Reason, SelfTradePrevention, TimeInForce, Trigger, UserId,
};

use crate::command::{Command, MarketId, ModuleTarget, NewOrder};
use crate::error::Abort;
pub use crate::error::EngineError;
use crate::event::EventBody;
use crate::module::{Instance, Loader, ModuleLoader};
use crate::registry::{Credential, Registry, UserRecord};
use crate::report::FaultReport;
use crate::slot::Slot;

/// What the engine keeps of a position command's output once its events are
/// appended to the command's.
pub(crate) struct PositionRun {
    /// Why the module refused the command, if it did.
    rejection: Option<Reason>,
    follow_ups: Vec<FollowUp>,
}

pub struct Engine {
    pub(crate) loader: Arc<dyn ModuleLoader>,
    pub(crate) registry: Registry,
    pub(crate) markets: Vec<Slot<MatchingAbi>>,
    pub(crate) position: Option<Slot<PositionAbi>>,
    pub(crate) last_seq: u64,
    pub(crate) last_ts_ns: u64,
    /// Faults not yet taken by the host (`take_faults`), and how many did not fit.
    pub(crate) faults: Vec<FaultReport>,
    pub(crate) faults_dropped: u64,
    /// Instances the current command touched, with their retained length before it.
    pub(crate) touched: Vec<(ModuleTarget, usize)>,
    /// When each market's module asked to be woken (`MatchingEvent::Wake`):
    /// state, in every snapshot.
    pub(crate) wakes: BTreeMap<MarketId, u64>,
    /// The wake times the current command's modules asked for, in order;
    /// they take effect only if the command completes.
    pub(crate) pending_wakes: Vec<(MarketId, Option<u64>)>,
    /// Mark prices the position module set in the current command, in
    /// order, for their books (conditional orders watch them).
    pub(crate) pending_marks: VecDeque<(MarketId, u64)>,
}

impl Engine {
    /// An empty exchange, before the first command.
    pub fn new(loader: Arc<dyn ModuleLoader>) -> Engine {
        Engine {
            loader,
            registry: Registry::default(),
            markets: Vec::new(),
            position: None,
            last_seq: 0,
            last_ts_ns: 0,
            faults: Vec::new(),
            faults_dropped: 0,
            touched: Vec::new(),
            wakes: BTreeMap::new(),
            pending_wakes: Vec::new(),
            pending_marks: VecDeque::new(),
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

    /// Move the engine's position after commands applied outside `apply` (batches).
    pub(crate) fn set_position(&mut self, last_seq: u64, last_ts_ns: u64) {
        assert!(last_seq >= self.last_seq, "the sequence never moves back");
        self.last_seq = last_seq;
        self.last_ts_ns = last_ts_ns;
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
        self.touched.clear();
        self.pending_wakes.clear();
        self.pending_marks.clear();
        let outcome = self
            .wake_due(ctx, &mut events)
            .and_then(|()| self.dispatch(ctx, command, &mut events))
            .and_then(|()| self.deliver_marks(ctx, &mut events));
        match outcome {
            Ok(()) => {
                // Every sequence number shows in the event log, so a follower
                // can tell a command that changed nothing from a lost one.
                if events.is_empty() {
                    events.push(EventBody::NoEffect);
                }
                self.commit_wakes();
                self.checkpoint_full_slots()?
            }
            Err(Abort::Fatal(error)) => return Err(error),
            Err(Abort::Fault(reason)) => {
                self.pending_wakes.clear();
                self.undo_command()?;
                events = rejection(ctx, command, reason);
            }
        }
        self.registry.track_client_orders(&events);
        self.last_seq = seq;
        self.last_ts_ns = ts_ns;
        Ok(events)
    }

    /// Wake, before the command's own work, each market whose module asked
    /// for a time at or before the command's, in market order. A module that
    /// faults there is put back and not woken again until it asks anew: its
    /// market's next command meets the same fault, the others go on.
    fn wake_due(&mut self, ctx: CommandContext, events: &mut Vec<EventBody>) -> Result<(), Abort> {
        let due: Vec<MarketId> =
            self.wakes.iter().filter(|&(_, &at_ts_ns)| at_ts_ns <= ctx.ts_ns).map(|(&market, _)| market).collect();
        for market in due {
            // A wake is used up: the module answers with its next one, if any
            // (one that does not answer, a module swapped in, is not woken again).
            self.pending_wakes.push((market, None));
            if !self.markets[market.0 as usize].knows(&MatchingCommand::Wake) {
                continue;
            }
            // A fault drops what the wake did, and the wake with it.
            self.on_its_own(events, None, |engine, events| {
                engine.match_and_settle(ctx, market, MatchingCommand::Wake, events)
            })?;
        }
        Ok(())
    }

    /// Hand each mark price the command set to its market's book, after the
    /// command's own work (a mark's liquidations included), each on its own:
    /// a book that faults on it loses what the mark did there, not the mark.
    /// What the triggered orders trade is settled like any fill, and a mark
    /// that sets (a market's first trade) is handed over in turn.
    fn deliver_marks(&mut self, ctx: CommandContext, events: &mut Vec<EventBody>) -> Result<(), Abort> {
        let limit = self.registry.position.as_ref().map_or(0, |p| p.config.follow_ups_per_command_max);
        let mut delivered = 0u32;
        while let Some((market, price_ticks)) = self.pending_marks.pop_front() {
            let command = MatchingCommand::Mark { price_ticks };
            if (market.0 as usize) >= self.markets.len() || !self.markets[market.0 as usize].knows(&command) {
                continue;
            }
            if delivered == limit {
                return Err(Abort::Fault(Reason::FollowUpLimit));
            }
            delivered += 1;
            self.on_its_own(events, None, |engine, events| engine.match_and_settle(ctx, market, command, events))?;
        }
        Ok(())
    }

    /// Keep the wake times the completed command's modules asked for.
    pub(crate) fn commit_wakes(&mut self) {
        for (market, at_ts_ns) in self.pending_wakes.drain(..) {
            match at_ts_ns {
                Some(at_ts_ns) => self.wakes.insert(market, at_ts_ns),
                None => self.wakes.remove(&market),
            };
        }
    }

    /// When `market`'s module asked to be woken, if it did.
    pub fn wake_at(&self, market: MarketId) -> Option<u64> {
        self.wakes.get(&market).copied()
    }

    fn dispatch(&mut self, ctx: CommandContext, command: &Command, events: &mut Vec<EventBody>) -> Result<(), Abort> {
        match command {
            Command::CreateUser { api_key, api_secret } => {
                let credential = Credential::Clear(api_secret.clone());
                let user_id = self.registry.add_user(UserRecord { api_key: api_key.clone(), credential });
                events.push(EventBody::UserCreated { user_id });
            }
            Command::RegisterUser { api_key, credential } => {
                let user_id =
                    self.registry.add_user(UserRecord { api_key: api_key.clone(), credential: credential.clone() });
                events.push(EventBody::UserCreated { user_id });
            }
            Command::Deposit { user_id, asset, amount_units } => {
                if let Some(reason) = self.check_user_asset(*user_id, asset) {
                    events.push(EventBody::CommandRejected { reason });
                    return Ok(());
                }
                events.push(EventBody::Deposited {
                    user_id: *user_id,
                    asset: asset.clone(),
                    amount_units: *amount_units,
                });
                if self.position.is_some() {
                    let command = PositionCommand::Deposit { user_id: Some(*user_id), amount_units: *amount_units };
                    self.run_position(ctx, command, events)?;
                }
            }
            Command::Withdraw { user_id, asset, amount_units } => {
                if let Some(reason) = self.check_user_asset(*user_id, asset) {
                    events.push(EventBody::CommandRejected { reason });
                } else if self.position.is_none() {
                    events.push(EventBody::CommandRejected { reason: Reason::NoModule });
                } else {
                    let command = PositionCommand::Withdraw { user_id: *user_id, amount_units: *amount_units };
                    self.run_position(ctx, command, events)?;
                }
            }
            Command::FundInsurance { amount_units } => {
                if self.position.is_none() {
                    events.push(EventBody::CommandRejected { reason: Reason::NoModule });
                } else {
                    self.run_position(
                        ctx,
                        PositionCommand::Deposit { user_id: None, amount_units: *amount_units },
                        events,
                    )?;
                }
            }
            Command::CreateMarket(spec) => self.create_market(ctx, spec, None, events)?,
            Command::CreateMarketWith { spec, terms } => self.create_market(ctx, spec, Some(terms), events)?,
            Command::InstallPositionModule { module_hash, limits, config } => {
                self.install_position(ctx, *module_hash, *limits, config, events)?
            }
            Command::PlaceOrder(order) => self.place(ctx, order, &OrderOptions::default(), None, events)?,
            Command::PlaceOrderWith { order, options } => self.place(ctx, order, options, None, events)?,
            Command::PlaceConditional { order, options, trigger } => {
                self.place(ctx, order, options, Some(trigger), events)?
            }
            Command::CancelOrder { market, user_id, order_id } => {
                if let Some(reason) = self.check_market_user(*market, *user_id) {
                    events.push(EventBody::CommandRejected { reason });
                } else {
                    let command = MatchingCommand::Cancel { order_id: *order_id, user_id: *user_id };
                    self.match_and_settle(ctx, *market, command, events)?;
                }
            }
            Command::AmendOrder { market, user_id, order_id, price_ticks, qty_lots } => {
                if let Some(reason) = self.check_market_user(*market, *user_id) {
                    events.push(EventBody::CommandRejected { reason });
                    return Ok(());
                }
                if self.position.is_some() {
                    let check = PositionCommand::CheckAmend {
                        market: *market,
                        order_id: *order_id,
                        user_id: *user_id,
                        price_ticks: *price_ticks,
                        qty_lots: *qty_lots,
                    };
                    if let Some(reason) = self.run_position(ctx, check, events)?.rejection {
                        let event = MatchingEvent::Rejected { order_id: *order_id, user_id: *user_id, reason };
                        events.push(EventBody::Matching { market: *market, event });
                        return Ok(());
                    }
                }
                let command = MatchingCommand::Amend {
                    order_id: *order_id,
                    user_id: *user_id,
                    price_ticks: *price_ticks,
                    qty_lots: *qty_lots,
                };
                self.match_and_settle(ctx, *market, command, events)?;
            }
            Command::MassCancel { market: Some(market), user_id } => {
                if let Some(reason) = self.check_market_user(*market, *user_id) {
                    events.push(EventBody::CommandRejected { reason });
                } else {
                    let before = events.len();
                    self.match_and_settle(ctx, *market, MatchingCommand::MassCancel { user_id: *user_id }, events)?;
                    events.push(mass_cancelled(Some(*market), *user_id, &events[before..]));
                }
            }
            Command::MassCancel { market: None, user_id } => {
                if !self.registry.users.contains_key(user_id) {
                    events.push(EventBody::CommandRejected { reason: Reason::UnknownUser });
                } else {
                    // Market by market, each on its own: a market whose module
                    // faults keeps its orders (and says so), every other market
                    // still cancels. A trader pulling out must not be held in
                    // every market by one broken module.
                    let before = events.len();
                    for index in 0..self.markets.len() {
                        let market = MarketId(index as u32);
                        let command = MatchingCommand::MassCancel { user_id: *user_id };
                        let rejected = |reason| EventBody::MarketCommandRejected { market, user_id: *user_id, reason };
                        self.on_its_own(events, Some(&rejected), |engine, events| {
                            engine.match_and_settle(ctx, market, command, events)
                        })?;
                    }
                    events.push(mass_cancelled(None, *user_id, &events[before..]));
                }
            }
            Command::MarkPrice { market, price_ticks } => {
                self.position_market_command(ctx, *market, events, |market| PositionCommand::MarkPrice {
                    market,
                    price_ticks: *price_ticks,
                })?
            }
            Command::ActivateModule { target, module_hash } => self.activate(ctx, *target, *module_hash, events)?,
            Command::Funding { market, rate } => self.position_market_command(ctx, *market, events, |market| {
                PositionCommand::Funding { market, rate: *rate }
            })?,
            Command::IndexPrice { market, index_ticks, mid_ticks } => {
                self.position_market_command(ctx, *market, events, |market| PositionCommand::IndexPrice {
                    market,
                    index_ticks: *index_ticks,
                    mid_ticks: *mid_ticks,
                })?
            }
            Command::PremiumFunding { market } => {
                self.position_market_command(ctx, *market, events, |market| PositionCommand::PremiumFunding { market })?
            }
        }
        Ok(())
    }

    fn check_user_asset(&self, user_id: UserId, asset: &str) -> Option<Reason> {
        if !self.registry.users.contains_key(&user_id) {
            Some(Reason::UnknownUser)
        } else if !self.registry.assets.contains_key(asset)
            || self.registry.position.as_ref().is_some_and(|p| p.config.settlement_asset != asset)
        {
            // An asset the exchange does not know, or not the one positions settle in.
            Some(Reason::UnknownAsset)
        } else {
            None
        }
    }

    fn check_market_user(&self, market: MarketId, user_id: UserId) -> Option<Reason> {
        if (market.0 as usize) >= self.markets.len() {
            Some(Reason::UnknownMarket)
        } else if !self.registry.users.contains_key(&user_id) {
            Some(Reason::UnknownUser)
        } else {
            None
        }
    }

    /// Whether the installed position module's SDK revision reads this command.
    pub(crate) fn position_reads(&self, command: &PositionCommand) -> bool {
        self.position.as_ref().is_some_and(|slot| command.revision() <= slot.instance.abi_revision())
    }

    fn position_market_command(
        &mut self,
        ctx: CommandContext,
        market: MarketId,
        events: &mut Vec<EventBody>,
        command: impl FnOnce(MarketId) -> PositionCommand,
    ) -> Result<(), Abort> {
        if (market.0 as usize) >= self.markets.len() {
            events.push(EventBody::CommandRejected { reason: Reason::UnknownMarket });
        } else if self.position.is_none() {
            events.push(EventBody::CommandRejected { reason: Reason::NoModule });
        } else {
            let command = command(market);
            if !self.position_reads(&command) {
                events.push(EventBody::CommandRejected { reason: Reason::UnsupportedByModule });
                return Ok(());
            }
            let output = self.run_position(ctx, command, events)?;
            self.follow_ups(ctx, output.follow_ups, events)?;
        }
        Ok(())
    }

    fn place(
        &mut self,
        ctx: CommandContext,
        order: &NewOrder,
        options: &OrderOptions,
        trigger: Option<&Trigger>,
        events: &mut Vec<EventBody>,
    ) -> Result<(), Abort> {
        if let Some(reason) = self.check_market_user(order.market, order.user_id) {
            events.push(EventBody::CommandRejected { reason });
            return Ok(());
        }
        if self.registry.client_order_open(order.user_id, order.client_order_id.as_deref()) {
            events.push(EventBody::CommandRejected { reason: Reason::DuplicateClientOrderId });
            return Ok(());
        }
        let order_id = OrderId(ctx.seq);
        events.push(received(order_id, order));
        events.extend(received_options(order_id, order, options, trigger));
        let command = order.to_matching_command(order_id, options, trigger);
        let position_reads = |slot: &Slot<PositionAbi>| command.revision() <= slot.instance.abi_revision();
        if !self.markets[order.market.0 as usize].knows(&command) || !self.position.as_ref().is_none_or(position_reads)
        {
            // A module built before this kind of order existed cannot decode
            // it, or what the book would say of it (a new reason, status).
            let refused = refused_order(order_id, order, Reason::UnsupportedOrder);
            events.push(EventBody::Matching { market: order.market, event: refused });
            return Ok(());
        }
        if self.position.is_some() {
            let check = PositionCommand::CheckOrder(OrderIntent {
                market: order.market,
                order_id,
                user_id: order.user_id,
                side: order.side,
                // An untriggered order is margined as a limit order at the
                // price its update carries (its limit, or its trigger price).
                order_type: if trigger.is_some() { OrderType::Limit } else { order.order_type },
                price_ticks: order.margin_price_ticks(trigger),
                qty_lots: order.qty_lots,
                reduce_only: order.reduce_only,
            });
            if let Some(reason) = self.run_position(ctx, check, events)?.rejection {
                events
                    .push(EventBody::Matching { market: order.market, event: refused_order(order_id, order, reason) });
                return Ok(());
            }
        }
        self.match_and_settle(ctx, order.market, command, events)
    }

    /// A command to a book, then settlement of what it did, then any follow-ups.
    fn match_and_settle(
        &mut self,
        ctx: CommandContext,
        market: MarketId,
        command: MatchingCommand,
        events: &mut Vec<EventBody>,
    ) -> Result<(), Abort> {
        let follow_ups = self.match_and_settle_once(ctx, market, command, events)?;
        self.follow_ups(ctx, follow_ups, events)
    }

    fn match_and_settle_once(
        &mut self,
        ctx: CommandContext,
        market: MarketId,
        command: MatchingCommand,
        events: &mut Vec<EventBody>,
    ) -> Result<Vec<FollowUp>, Abort> {
        let book_events = self.run_matching(ctx, market, command)?;
        events.extend(book_events.iter().cloned().map(|event| EventBody::Matching { market, event }));
        if self.position.is_none() || book_events.is_empty() {
            return Ok(Vec::new());
        }
        let output = self.run_position(ctx, PositionCommand::Settle { market, events: book_events }, events)?;
        Ok(output.follow_ups)
    }

    /// Carry out what the position module asked for, settling each in turn.
    fn follow_ups(
        &mut self,
        ctx: CommandContext,
        first: Vec<FollowUp>,
        events: &mut Vec<EventBody>,
    ) -> Result<(), Abort> {
        let limit = self.registry.position.as_ref().map_or(0, |p| p.config.follow_ups_per_command_max);
        let mut queue: VecDeque<FollowUp> = first.into();
        let mut done = 0u32;
        while let Some(follow_up) = queue.pop_front() {
            if done == limit {
                return Err(Abort::Fault(Reason::FollowUpLimit));
            }
            done += 1;
            let (market, command) = match follow_up {
                FollowUp::CancelOrders { market, user_id } => (market, MatchingCommand::MassCancel { user_id }),
                FollowUp::LiquidationOrder { market, order_id, user_id, side, qty_lots, price_ticks } => (
                    market,
                    MatchingCommand::Place(PlaceOrder {
                        order_id,
                        user_id,
                        side,
                        order_type: OrderType::Limit,
                        price_ticks,
                        qty_lots,
                        time_in_force: TimeInForce::Ioc,
                        self_trade_prevention: SelfTradePrevention::CancelTaker,
                    }),
                ),
            };
            if (market.0 as usize) >= self.markets.len() {
                return Err(Abort::Fault(Reason::ModuleProtocol));
            }
            queue.extend(self.match_and_settle_once(ctx, market, command, events)?);
        }
        Ok(())
    }

    pub(crate) fn touch(&mut self, target: ModuleTarget) {
        if !self.touched.iter().any(|(t, _)| *t == target) {
            let retained = match target {
                ModuleTarget::Position => self.position.as_ref().map_or(0, |slot| slot.retained.len()),
                ModuleTarget::Market(market) => self.markets[market.0 as usize].retained.len(),
            };
            self.touched.push((target, retained));
        }
    }

    fn run_matching(
        &mut self,
        ctx: CommandContext,
        market: MarketId,
        command: MatchingCommand,
    ) -> Result<Vec<MatchingEvent>, Abort> {
        if !self.markets[market.0 as usize].knows(&command) {
            // Never sent: the callers refuse such commands before they get here.
            return Err(Abort::Fault(Reason::ModuleProtocol));
        }
        self.touch(ModuleTarget::Market(market));
        let faulted = self.markets[market.0 as usize].run_tapped(ctx, command);
        let mut book_events = faulted.map_err(|fault| self.fault(ctx, ModuleTarget::Market(market), fault))?;
        take_wakes(market, &mut book_events, &mut self.pending_wakes);
        Ok(book_events)
    }

    /// Run a position command, appending its events.
    pub(crate) fn run_position(
        &mut self,
        ctx: CommandContext,
        command: PositionCommand,
        events: &mut Vec<EventBody>,
    ) -> Result<PositionRun, Abort> {
        self.touch(ModuleTarget::Position);
        let slot = self.position.as_mut().ok_or(Abort::Fatal(EngineError::NoPositionModule))?;
        let faulted = slot.run(ctx, command);
        let mut output = faulted.map_err(|fault| self.fault(ctx, ModuleTarget::Position, fault))?;
        // Moved, not cloned: an account message holds a vector per event.
        let rejection = output.rejection();
        for event in &output.events {
            if let PositionEvent::MarkPrice { market, price_ticks } = event {
                self.pending_marks.push_back((*market, *price_ticks));
            }
        }
        events.extend(output.events.drain(..).map(EventBody::Position));
        Ok(PositionRun { rejection, follow_ups: output.follow_ups })
    }

    /// Run one part of a command on its own: if a module faults in it, every
    /// instance the part touched is put back as it was before the part, its
    /// events are dropped and replaced by a rejection of that part, and the
    /// command goes on. What earlier parts did stays.
    /// Whether the part faulted; `rejected` says so in the events, if given.
    fn on_its_own(
        &mut self,
        events: &mut Vec<EventBody>,
        rejected: Option<&dyn Fn(Reason) -> EventBody>,
        part: impl FnOnce(&mut Engine, &mut Vec<EventBody>) -> Result<(), Abort>,
    ) -> Result<bool, Abort> {
        let outer = std::mem::take(&mut self.touched);
        let events_before = events.len();
        let wakes_before = self.pending_wakes.len();
        let marks_before = self.pending_marks.len();
        let outcome = part(self, events);
        let inner = std::mem::replace(&mut self.touched, outer);
        if let Err(Abort::Fault(reason)) = outcome {
            for &(target, keep) in &inner {
                self.rebuild_target(target, keep)?;
            }
            events.truncate(events_before);
            self.pending_wakes.truncate(wakes_before);
            self.pending_marks.truncate(marks_before);
            if let Some(rejected) = rejected {
                events.push(rejected(reason));
            }
        }
        // What the whole command touched, with the length each had before it.
        for (target, keep) in inner {
            if !self.touched.iter().any(|(touched, _)| *touched == target) {
                self.touched.push((target, keep));
            }
        }
        match outcome {
            Err(Abort::Fatal(error)) => Err(Abort::Fatal(error)),
            Err(Abort::Fault(_)) => Ok(true),
            Ok(()) => Ok(false),
        }
    }

    fn rebuild_target(&mut self, target: ModuleTarget, keep: usize) -> Result<(), EngineError> {
        match target {
            ModuleTarget::Position => match self.position.as_mut() {
                Some(slot) => slot.rebuild(&*self.loader, keep, target),
                None => Ok(()),
            },
            ModuleTarget::Market(market) => self.markets[market.0 as usize].rebuild(&*self.loader, keep, target),
        }
    }

    /// Put every instance the current command touched back as it was before it.
    fn undo_command(&mut self) -> Result<(), EngineError> {
        for (target, keep) in std::mem::take(&mut self.touched) {
            self.rebuild_target(target, keep)?;
        }
        Ok(())
    }

    /// After a complete command, refresh the checkpoints that have grown too old.
    fn checkpoint_full_slots(&mut self) -> Result<(), EngineError> {
        for (target, _) in std::mem::take(&mut self.touched) {
            let result = match target {
                ModuleTarget::Position => match self.position.as_mut() {
                    Some(slot) if slot.checkpoint_due() => slot.take_checkpoint(),
                    _ => Ok(()),
                },
                ModuleTarget::Market(market) => {
                    let slot = &mut self.markets[market.0 as usize];
                    if slot.checkpoint_due() { slot.take_checkpoint() } else { Ok(()) }
                }
            };
            result.map_err(|fault| EngineError::Recovery { target, fault })?;
        }
        Ok(())
    }

    /// Ask a market's module a read-only question, in a copy of its instance.
    pub fn query(&mut self, market: MarketId, query: &MatchingQuery) -> Result<MatchingQueryResult, EngineError> {
        let target = ModuleTarget::Market(market);
        let slot = self.markets.get_mut(market.0 as usize).ok_or(EngineError::NoMarket(market))?;
        let mut copy = detached::<MatchingAbi>(&*self.loader, slot, target)?;
        copy.query(query).map_err(|fault| EngineError::Detached { target, fault })
    }

    /// Ask the position module a read-only question, in a copy of its instance.
    pub fn query_position(&mut self, query: &PositionQuery) -> Result<PositionQueryResult, EngineError> {
        let slot = self.position.as_mut().ok_or(EngineError::NoPositionModule)?;
        let mut copy = detached::<PositionAbi>(&*self.loader, slot, ModuleTarget::Position)?;
        copy.query(query).map_err(|fault| EngineError::Detached { target: ModuleTarget::Position, fault })
    }
}

/// A copy of a slot's live instance, resumed from an image of it now.
fn detached<A: Abi>(
    loader: &dyn Loader<A>,
    slot: &mut Slot<A>,
    target: ModuleTarget,
) -> Result<Box<dyn Instance<A>>, EngineError> {
    let image = slot.instance.image().map_err(|fault| EngineError::Detached { target, fault })?;
    loader.resume(target, &slot.hash, &slot.limits, &image).map_err(|source| EngineError::Load { target, source })
}

pub(crate) fn received(order_id: OrderId, order: &NewOrder) -> EventBody {
    EventBody::OrderReceived {
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
    }
}

/// Move a module's wake times out of its events (they are for the engine,
/// not published or settled) into `wakes`, in order.
pub(crate) fn take_wakes(market: MarketId, events: &mut Vec<MatchingEvent>, wakes: &mut Vec<(MarketId, Option<u64>)>) {
    events.retain(|event| match event {
        MatchingEvent::Wake { at_ts_ns } => {
            wakes.push((market, *at_ts_ns));
            false
        }
        _ => true,
    });
}

/// The options and trigger of an order that has some, as their events.
pub(crate) fn received_options(
    order_id: OrderId,
    order: &NewOrder,
    options: &OrderOptions,
    trigger: Option<&Trigger>,
) -> impl Iterator<Item = EventBody> {
    let options = (!options.is_plain()).then_some(EventBody::OrderOptions {
        market: order.market,
        order_id,
        user_id: order.user_id,
        display_lots: options.display_lots,
        expire_time_ns: options.expire_time_ns,
    });
    let trigger = trigger.map(|trigger| EventBody::OrderTrigger {
        market: order.market,
        order_id,
        user_id: order.user_id,
        trigger: *trigger,
    });
    options.into_iter().chain(trigger)
}

fn refused_order(order_id: OrderId, order: &NewOrder, reason: Reason) -> MatchingEvent {
    MatchingEvent::Order(OrderUpdate {
        order_id,
        user_id: order.user_id,
        side: order.side,
        price_ticks: order.price_ticks,
        qty_lots: order.qty_lots,
        filled_lots: 0,
        status: OrderStatus::Rejected,
        reason: Some(reason),
    })
}

/// The summary of a mass cancel: how many orders it cancelled, among `events`.
fn mass_cancelled(market: Option<MarketId>, user_id: UserId, events: &[EventBody]) -> EventBody {
    let orders = events
        .iter()
        .filter(|event| {
            matches!(event, EventBody::Matching { event: MatchingEvent::Order(update), .. }
                if update.status == OrderStatus::Cancelled && update.user_id == user_id)
        })
        .count();
    EventBody::MassCancelled { market, user_id, orders: orders as u32 }
}

/// The events that report a command undone because a module faulted.
fn rejection(ctx: CommandContext, command: &Command, reason: Reason) -> Vec<EventBody> {
    match command {
        Command::PlaceOrder(_) | Command::PlaceOrderWith { .. } | Command::PlaceConditional { .. } => {
            let (order, options, trigger) = command.as_new_order().expect("a place command");
            let order_id = OrderId(ctx.seq);
            let mut events = vec![received(order_id, order)];
            events.extend(received_options(order_id, order, &options, trigger));
            events.push(EventBody::Matching { market: order.market, event: refused_order(order_id, order, reason) });
            events
        }
        Command::CancelOrder { market, user_id, order_id } | Command::AmendOrder { market, user_id, order_id, .. } => {
            vec![EventBody::Matching {
                market: *market,
                event: MatchingEvent::Rejected { order_id: *order_id, user_id: *user_id, reason },
            }]
        }
        _ => vec![EventBody::CommandRejected { reason }],
    }
}

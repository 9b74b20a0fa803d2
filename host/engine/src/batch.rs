//! Applying many commands at once. Where a run of consecutive commands needs
//! only one market's book (no position module in the pipeline), the run goes
//! to the module as one batch: one copy in, one call per command (each with
//! its own fuel, so outcomes do not depend on batching), one copy out. The
//! results are exactly those of applying the commands one by one; if the
//! module faults anywhere in a batch, the instance is rebuilt to before the
//! batch and the run is applied one by one instead, which rejects the faulting
//! command just as `apply` would.

use exhost_guest_sdk::{CommandContext, MatchingCommand, MatchingEvent, OrderId, PlaceOrder};

use crate::command::{Command, MarketId};
use crate::engine::{Engine, EngineError, Target, received};
use crate::event::EventBody;

/// The most commands one batch hands to a module.
pub const BATCH_COMMANDS_MAX: usize = 4_096;

impl Engine {
    /// Apply commands with consecutive sequence numbers starting at `first_seq`;
    /// returns each command's events, as `apply` would.
    pub fn apply_batch(
        &mut self,
        first_seq: u64,
        commands: &[(u64, &Command)],
    ) -> Result<Vec<Vec<EventBody>>, EngineError> {
        let (results, error) = self.apply_batch_partial(first_seq, commands);
        match error {
            Some(error) => Err(error),
            None => Ok(results),
        }
    }

    /// Like [`Engine::apply_batch`], but a failure keeps what was applied before
    /// it: the events of the applied prefix, and the error that stopped the rest.
    pub fn apply_batch_partial(
        &mut self,
        first_seq: u64,
        commands: &[(u64, &Command)],
    ) -> (Vec<Vec<EventBody>>, Option<EngineError>) {
        let mut results = Vec::with_capacity(commands.len());
        let error = self.apply_batch_into(first_seq, commands, &mut results).err();
        (results, error)
    }

    fn apply_batch_into(
        &mut self,
        first_seq: u64,
        commands: &[(u64, &Command)],
        results: &mut Vec<Vec<EventBody>>,
    ) -> Result<(), EngineError> {
        let mut i = 0;
        while i < commands.len() {
            let seq = first_seq + i as u64;
            let run = self.book_run(&commands[i..]);
            if run.len() >= 2 {
                let market = run[0].0;
                let end = i + run.len();
                match self.apply_run(seq, market, &commands[i..end], &run)? {
                    Some(events) => results.extend(events),
                    None => {
                        for (offset, (ts_ns, command)) in commands[i..end].iter().enumerate() {
                            results.push(self.apply(seq + offset as u64, *ts_ns, command)?);
                        }
                    }
                }
                i = end;
            } else {
                let (ts_ns, command) = commands[i];
                results.push(self.apply(seq, ts_ns, command)?);
                i += 1;
            }
        }
        Ok(())
    }

    /// The matching command each of the next commands would send to one
    /// market's book, for as long as they all go to the same book only.
    fn book_run(&self, commands: &[(u64, &Command)]) -> Vec<(MarketId, MatchingCommand)> {
        let mut run: Vec<(MarketId, MatchingCommand)> = Vec::new();
        if self.position.is_some() {
            return run;
        }
        for (offset, (_, command)) in commands.iter().take(BATCH_COMMANDS_MAX).enumerate() {
            let seq = self.last_seq() + 1 + offset as u64;
            let (market, user_id, matching) = match command {
                Command::PlaceOrder(order) => (
                    order.market,
                    order.user_id,
                    MatchingCommand::Place(PlaceOrder {
                        order_id: OrderId(seq),
                        user_id: order.user_id,
                        side: order.side,
                        order_type: order.order_type,
                        price_ticks: order.price_ticks,
                        qty_lots: order.qty_lots,
                        time_in_force: order.time_in_force,
                        self_trade_prevention: order.self_trade_prevention,
                    }),
                ),
                Command::CancelOrder { market, user_id, order_id } => {
                    (*market, *user_id, MatchingCommand::Cancel { order_id: *order_id, user_id: *user_id })
                }
                Command::AmendOrder { market, user_id, order_id, price_ticks, qty_lots } => (
                    *market,
                    *user_id,
                    MatchingCommand::Amend {
                        order_id: *order_id,
                        user_id: *user_id,
                        price_ticks: *price_ticks,
                        qty_lots: *qty_lots,
                    },
                ),
                _ => break,
            };
            let valid = (market.0 as usize) < self.markets.len() && self.registry.users.contains_key(&user_id);
            if !valid || run.first().is_some_and(|(first, _)| *first != market) {
                break;
            }
            run.push((market, matching));
        }
        run
    }

    /// One batch to one book. `None`: the module faulted, nothing was applied,
    /// and the caller applies the commands one by one.
    fn apply_run(
        &mut self,
        first_seq: u64,
        market: MarketId,
        commands: &[(u64, &Command)],
        run: &[(MarketId, MatchingCommand)],
    ) -> Result<Option<Vec<Vec<EventBody>>>, EngineError> {
        let mut ts_ns = self.last_ts_ns();
        let inputs: Vec<(CommandContext, MatchingCommand)> = run
            .iter()
            .enumerate()
            .map(|(offset, (_, command))| {
                ts_ns = ts_ns.max(commands[offset].0);
                (CommandContext { seq: first_seq + offset as u64, ts_ns }, command.clone())
            })
            .collect();
        let slot = &mut self.markets[market.0 as usize];
        let keep = slot.retained.len();
        let mut outputs: Vec<Vec<MatchingEvent>> = Vec::with_capacity(inputs.len());
        if slot.instance.apply_batch(&inputs, &mut outputs).is_err() {
            slot.rebuild(&*self.loader, keep, &Target::Market(market).name())?;
            return Ok(None);
        }
        let mut results = Vec::with_capacity(inputs.len());
        for ((ctx, _), (output, (_, command))) in inputs.iter().zip(outputs.into_iter().zip(commands)) {
            let mut events = Vec::with_capacity(output.len() + 1);
            if let Command::PlaceOrder(order) = command {
                events.push(received(OrderId(ctx.seq), order));
            }
            events.extend(output.into_iter().map(|event| EventBody::Matching { market, event }));
            results.push(events);
        }
        let slot = &mut self.markets[market.0 as usize];
        slot.retained.extend(inputs);
        if slot.checkpoint_due() {
            slot.take_checkpoint()
                .map_err(|fault| EngineError::Recovery { target: Target::Market(market).name(), fault })?;
        }
        let last = first_seq + run.len() as u64 - 1;
        self.set_position(last, ts_ns);
        Ok(Some(results))
    }
}

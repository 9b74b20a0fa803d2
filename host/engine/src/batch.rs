//! Applying many commands at once. Where a run of consecutive commands needs
//! only markets' books (no position module in the pipeline), the run is split
//! by market and each market's share goes to its module as one batch: one copy
//! in, one call per command (each with its own fuel, so outcomes do not depend
//! on batching), one copy out. Books are independent of each other, so each
//! sees exactly the commands, contexts and order it would one by one, and the
//! events are put back in sequence order. If a module faults anywhere in the
//! run, every book the run touched is rebuilt to before it and the run is
//! applied one by one instead, which rejects the faulting command just as
//! `apply` would.

use exhost_guest_sdk::{CommandContext, MatchingCommand, MatchingEvent, OrderId};
use std::collections::BTreeMap;

use crate::command::ModuleTarget;
use crate::command::{Command, MarketId};
use crate::engine::{Engine, received, received_options, take_wakes};
use crate::error::EngineError;
use crate::event::EventBody;
use crate::tap::fuel_after;

/// A matching command with its context, as a market's module takes it.
type Input = (CommandContext, MatchingCommand);

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
        let before = self.last_seq;
        let error = self.apply_batch_into(first_seq, commands, &mut results).err();
        // One result per applied command, and the sequence moved by exactly as many.
        assert!(results.len() <= commands.len(), "no more results than commands");
        assert!(error.is_some() || results.len() == commands.len(), "a result for every command of a whole batch");
        assert_eq!(self.last_seq, before + results.len() as u64, "the sequence moves by one per applied command");
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
                let end = i + run.len();
                match self.apply_run(seq, &commands[i..end], &run)? {
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

    /// The matching command each of the next commands would send to its
    /// market's book, for as long as they all go to a book only.
    fn book_run(&self, commands: &[(u64, &Command)]) -> Vec<(MarketId, MatchingCommand)> {
        let mut run: Vec<(MarketId, MatchingCommand)> = Vec::new();
        if self.position.is_some() {
            return run;
        }
        // Client order ids taken in this run: a repeat ends the run, and the
        // command-by-command path decides whether it is a duplicate.
        let mut client_ids: std::collections::BTreeSet<(exhost_guest_sdk::UserId, &str)> = Default::default();
        // A command at or after a wake time wakes a book first: `apply` does that.
        let first_wake = self.wakes.values().min().copied().unwrap_or(u64::MAX);
        let mut ts_ns = self.last_ts_ns();
        for (offset, (command_ts_ns, command)) in commands.iter().take(BATCH_COMMANDS_MAX).enumerate() {
            let seq = self.last_seq() + 1 + offset as u64;
            ts_ns = ts_ns.max(*command_ts_ns);
            if ts_ns >= first_wake {
                break;
            }
            let (market, user_id, matching) = match command.as_new_order() {
                Some((order, _, _))
                    if order.client_order_id.as_deref().is_some_and(|id| {
                        self.registry.client_order_open(order.user_id, Some(id))
                            || !client_ids.insert((order.user_id, id))
                    }) =>
                {
                    break;
                }
                Some((order, options, trigger)) => {
                    (order.market, order.user_id, order.to_matching_command(OrderId(seq), &options, trigger))
                }
                None => match command {
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
                },
            };
            let valid = (market.0 as usize) < self.markets.len()
                && self.registry.users.contains_key(&user_id)
                && self.markets[market.0 as usize].knows(&matching);
            if !valid {
                break;
            }
            run.push((market, matching));
        }
        run
    }

    /// One batch per book the run touches. `None`: a module faulted, nothing
    /// was applied, and the caller applies the commands one by one.
    fn apply_run(
        &mut self,
        first_seq: u64,
        commands: &[(u64, &Command)],
        run: &[(MarketId, MatchingCommand)],
    ) -> Result<Option<Vec<Vec<EventBody>>>, EngineError> {
        // Contexts as `apply` would give them: time never runs backwards.
        let mut ts_ns = self.last_ts_ns();
        let contexts: Vec<CommandContext> = commands
            .iter()
            .enumerate()
            .map(|(offset, (command_ts_ns, _))| {
                ts_ns = ts_ns.max(*command_ts_ns);
                CommandContext { seq: first_seq + offset as u64, ts_ns }
            })
            .collect();
        let mut shares: BTreeMap<MarketId, Vec<usize>> = BTreeMap::new();
        for (offset, (market, _)) in run.iter().enumerate() {
            shares.entry(*market).or_default().push(offset);
        }
        let mut outputs: Vec<Vec<MatchingEvent>> = Vec::new();
        outputs.resize_with(run.len(), Vec::new);
        // Per market: the retained commands before its share, the share, and its fuel.
        let mut applied: Vec<(MarketId, usize, Vec<Input>, u64)> = Vec::with_capacity(shares.len());
        for (market, offsets) in shares {
            let inputs: Vec<Input> = offsets.iter().map(|&offset| (contexts[offset], run[offset].1.clone())).collect();
            let slot = &mut self.markets[market.0 as usize];
            let keep = slot.retained.len();
            let mut share_outputs: Vec<Vec<MatchingEvent>> = Vec::with_capacity(inputs.len());
            let fuel_before = slot.instance.apply_fuel_used();
            if slot.instance.apply_batch(&inputs, &mut share_outputs).is_err() {
                applied.push((market, keep, Vec::new(), 0));
                for (market, keep, _, _) in applied {
                    self.markets[market.0 as usize].rebuild(&*self.loader, keep, ModuleTarget::Market(market))?;
                }
                return Ok(None);
            }
            let fuel_used = fuel_after(fuel_before, slot.instance.apply_fuel_used());
            for (&offset, output) in offsets.iter().zip(share_outputs) {
                outputs[offset] = output;
            }
            applied.push((market, keep, inputs, fuel_used));
        }
        // What a shadow run watches, as the books produced it (wakes
        // included); taken out again if the run is applied one by one after
        // all. A share's fuel is metered as a whole: its last call carries it.
        let mut tapped_before: Vec<(MarketId, usize)> = Vec::new();
        for (market, _, inputs, fuel_used) in &applied {
            let Some(tap) = &mut self.markets[market.0 as usize].tap else { continue };
            tapped_before.push((*market, tap.len()));
            for (index, ((ctx, command), offset)) in inputs.iter().zip(shares_of(run, *market)).enumerate() {
                let fuel_used = if index + 1 == inputs.len() { *fuel_used } else { 0 };
                tap.push(*ctx, command.clone(), &outputs[offset], fuel_used);
            }
        }
        // A wake time a command of the run asked for, at or before a later
        // command of the run, would have woken a book in between: one by one.
        let mut wakes = Vec::new();
        for (offset, output) in outputs.iter_mut().enumerate() {
            let before = wakes.len();
            take_wakes(run[offset].0, output, &mut wakes);
            let earliest = wakes[before..].iter().filter_map(|&(_, at_ts_ns)| at_ts_ns).min();
            if earliest.is_some_and(|at_ts_ns| contexts[offset + 1..].iter().any(|later| later.ts_ns >= at_ts_ns)) {
                for &(market, calls) in &tapped_before {
                    if let Some(tap) = &mut self.markets[market.0 as usize].tap {
                        tap.keep(calls);
                    }
                }
                for (market, keep, _, _) in applied {
                    self.markets[market.0 as usize].rebuild(&*self.loader, keep, ModuleTarget::Market(market))?;
                }
                return Ok(None);
            }
        }
        self.pending_wakes = wakes;
        self.commit_wakes();
        let mut results = Vec::with_capacity(run.len());
        for ((ctx, output), ((market, _), (_, command))) in contexts.iter().zip(outputs).zip(run.iter().zip(commands)) {
            let mut events = Vec::with_capacity(output.len() + 1);
            if let Some((order, options, trigger)) = command.as_new_order() {
                events.push(received(OrderId(ctx.seq), order));
                events.extend(received_options(OrderId(ctx.seq), order, &options, trigger));
            }
            events.extend(output.into_iter().map(|event| EventBody::Matching { market: *market, event }));
            if events.is_empty() {
                events.push(EventBody::NoEffect);
            }
            self.registry.track_client_orders(&events);
            results.push(events);
        }
        for (market, _, inputs, _) in applied {
            let slot = &mut self.markets[market.0 as usize];
            for (ctx, command) in &inputs {
                slot.retained.push(ctx, command);
            }
            if slot.checkpoint_due() {
                slot.take_checkpoint()
                    .map_err(|fault| EngineError::Recovery { target: ModuleTarget::Market(market), fault })?;
            }
        }
        let last = first_seq + run.len() as u64 - 1;
        self.set_position(last, ts_ns);
        Ok(Some(results))
    }
}

/// The offsets in `run` of the commands for `market`, in order.
fn shares_of(run: &[(MarketId, MatchingCommand)], market: MarketId) -> impl Iterator<Item = usize> + '_ {
    run.iter().enumerate().filter(move |(_, (of, _))| *of == market).map(|(offset, _)| offset)
}

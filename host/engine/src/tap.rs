//! The tap of a watched market: each call its live module applied, with
//! what it produced and the fuel it used, for a shadow run (`shadow.rs`).
//! The outputs are kept one after another in one vector, so tapping a call
//! allocates nothing of its own (a vector per call cost the matching-only
//! path about a tenth of its throughput).

use exhost_guest_sdk::{CommandContext, MatchingCommand, MatchingEvent};

/// One call a watched market's live module applied, as it went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TappedCall {
    pub ctx: CommandContext,
    pub command: MatchingCommand,
    /// Fuel the live call used (0 for a native module). Calls applied as one
    /// batch are metered together, and the batch's last call carries it.
    pub fuel_used: u64,
    /// Where the call's output ends in [`Tap::events`].
    output_end: usize,
}

/// Calls in the order they were applied, with their outputs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tap {
    calls: Vec<TappedCall>,
    /// Every call's output (wake requests included), one after another.
    events: Vec<MatchingEvent>,
}

impl Tap {
    /// An empty tap with room for about as much as `like` holds.
    pub fn sized_like(like: &Tap) -> Tap {
        Tap { calls: Vec::with_capacity(like.calls.len()), events: Vec::with_capacity(like.events.len()) }
    }

    pub fn push(&mut self, ctx: CommandContext, command: MatchingCommand, output: &[MatchingEvent], fuel_used: u64) {
        self.events.extend_from_slice(output);
        self.calls.push(TappedCall { ctx, command, fuel_used, output_end: self.events.len() });
    }

    pub fn len(&self) -> usize {
        self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Each call with its output, in order.
    pub fn calls(&self) -> impl Iterator<Item = (&TappedCall, &[MatchingEvent])> {
        let mut start = 0;
        self.calls.iter().map(move |call| {
            let output = &self.events[start..call.output_end];
            start = call.output_end;
            (call, output)
        })
    }

    /// Keep the first `calls` calls.
    pub(crate) fn keep(&mut self, calls: usize) {
        if calls < self.calls.len() {
            self.calls.truncate(calls);
            self.events.truncate(self.calls.last().map_or(0, |call| call.output_end));
        }
    }
}

/// Fuel used between two readings of an instance's counter (0 unmetered).
pub(crate) fn fuel_after(before: Option<u64>, after: Option<u64>) -> u64 {
    match (before, after) {
        (Some(before), Some(after)) => after.saturating_sub(before),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use exhost_guest_sdk::{Side, UserId};

    fn level(qty_lots: u64) -> MatchingEvent {
        MatchingEvent::Level { side: Side::Buy, price_ticks: 10, qty_lots }
    }

    #[test]
    fn each_call_keeps_its_own_output_and_a_kept_prefix_drops_the_rest() {
        let mut tap = Tap::default();
        let ctx = |seq| CommandContext { seq, ts_ns: seq };
        let cancel = MatchingCommand::Cancel { order_id: exhost_guest_sdk::OrderId(1), user_id: UserId(1) };
        tap.push(ctx(1), cancel.clone(), &[level(1), level(2)], 5);
        tap.push(ctx(2), MatchingCommand::Wake, &[], 0);
        tap.push(ctx(3), cancel.clone(), &[level(3)], 7);
        let outputs: Vec<(u64, Vec<MatchingEvent>)> =
            tap.calls().map(|(call, output)| (call.ctx.seq, output.to_vec())).collect();
        assert_eq!(outputs, vec![(1, vec![level(1), level(2)]), (2, vec![]), (3, vec![level(3)])]);
        tap.keep(2);
        assert_eq!(tap.len(), 2);
        assert_eq!(tap.events, vec![level(1), level(2)]);
        tap.push(ctx(4), cancel, &[level(4)], 1);
        assert_eq!(tap.calls().last().map(|(call, output)| (call.ctx.seq, output.to_vec())), Some((4, vec![level(4)])));
        tap.keep(0);
        assert!(tap.is_empty() && tap.events.is_empty());
    }
}

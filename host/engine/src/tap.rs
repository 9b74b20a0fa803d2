//! The tap of a watched market: each call its live module applied, with
//! what it produced and the fuel it used, for a shadow run (`shadow.rs`).

use exhost_guest_sdk::{CommandContext, MatchingCommand, MatchingEvent};

/// One call a watched market's live module applied, as it went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TappedCall {
    pub ctx: CommandContext,
    pub command: MatchingCommand,
    /// What the live module produced, wake requests included.
    pub output: Vec<MatchingEvent>,
    /// Fuel the live call used (0 for a native module). Calls applied as one
    /// batch are metered together, and the batch's last call carries it.
    pub fuel_used: u64,
}

/// Fuel used between two readings of an instance's counter (0 unmetered).
pub(crate) fn fuel_after(before: Option<u64>, after: Option<u64>) -> u64 {
    match (before, after) {
        (Some(before), Some(after)) => after.saturating_sub(before),
        _ => 0,
    }
}

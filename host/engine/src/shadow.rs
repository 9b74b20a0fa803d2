//! Shadow runs: a candidate matching module fed, off the live path, every
//! call the live module of one market applies, starting from the live state,
//! so that an operator sees what a hot swap would change on real traffic
//! before it is journaled.
//!
//! The engine's part is the tap: while a market is watched, each call its
//! book applies is kept with what it produced and the fuel it used
//! ([`TappedCall`]); a call undone with its command (a fault anywhere in the
//! command) is taken out again, so the host takes exactly the calls the
//! market's state went through. The host takes them between batches and hands
//! them to a [`Shadow`] on a thread of its own, which applies each to the
//! candidate and compares the outputs.
//!
//! The candidate sees the inputs the live book saw, never its own
//! consequences: what the position module would have done with the
//! candidate's fills, and wakes only the candidate asked for, are not
//! followed. A divergence is therefore exact at the first command that
//! differs; after it, later commands compare a state that has drifted, which
//! is why the report keeps the first one in full and counts the rest.
//! Nothing here is journaled or snapshotted: a shadow does not survive a
//! restart and changes nothing anyone sees.

use exhost_guest_sdk::{MatchingAbi, MatchingEvent};

use crate::command::{MarketId, ModuleLimits, ModuleTarget};
use crate::engine::Engine;
use crate::error::EngineError;
use crate::module::{InstanceImage, LoadError, Loader, ModuleFault, ModuleHash};
use crate::slot::Slot;
use crate::tap::{Tap, TappedCall, fuel_after};

/// Where a shadow run starts: the market's live instance exactly as it was
/// after `from_seq - 1`; the tap holds every call from `from_seq` on.
#[derive(Clone, Debug)]
pub struct ShadowStart {
    pub market: MarketId,
    pub live_hash: ModuleHash,
    pub limits: ModuleLimits,
    pub image: InstanceImage,
    pub from_seq: u64,
}

impl Engine {
    /// Start keeping the calls of `market`'s module for a shadow run (again
    /// from empty if it was watched already), and give the state they start
    /// from. `None` for a market that does not exist. Copies the live
    /// instance's memory; runs no code in it (a native module snapshots).
    pub fn tap_market(&mut self, market: MarketId) -> Result<Option<ShadowStart>, ModuleFault> {
        let from_seq = self.last_seq + 1;
        let Some(slot) = self.markets.get_mut(market.0 as usize) else {
            return Ok(None);
        };
        let image = slot.instance.image()?;
        slot.tap = Some(Tap::default());
        Ok(Some(ShadowStart { market, live_hash: slot.hash, limits: slot.limits, image, from_seq }))
    }

    /// Stop keeping `market`'s calls.
    pub fn untap_market(&mut self, market: MarketId) {
        if let Some(slot) = self.markets.get_mut(market.0 as usize) {
            slot.tap = None;
        }
    }

    /// The calls each watched market applied since the last take, in order;
    /// markets with none are left out. Call it between commands only.
    pub fn take_taps(&mut self) -> Vec<(MarketId, Tap)> {
        let mut taken = Vec::new();
        for (index, slot) in self.markets.iter_mut().enumerate() {
            if let Some(tap) = &mut slot.tap
                && !tap.is_empty()
            {
                let next = Tap::sized_like(tap);
                taken.push((MarketId(index as u32), std::mem::replace(tap, next)));
            }
        }
        taken
    }
}

/// Why a shadow run could not start.
#[derive(Debug, thiserror::Error)]
pub enum ShadowError {
    #[error("the live module could not be copied: {0}")]
    ResumeLive(#[source] LoadError),
    #[error("the live module {live} could not snapshot its state: {fault}")]
    LiveSnapshot {
        live: ModuleHash,
        #[source]
        fault: ModuleFault,
    },
    #[error("the candidate cannot take over the live state (state version {state_version}): {source}")]
    TakeOver {
        state_version: u32,
        #[source]
        source: LoadError,
    },
    #[error("the candidate {hash} could not be imaged: {fault}")]
    Image {
        hash: ModuleHash,
        #[source]
        fault: ModuleFault,
    },
}

/// The first command at which the candidate did not do what the live module did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    pub seq: u64,
    pub ts_ns: u64,
    /// Everything the live module produced for the market in this command.
    pub live_events: Vec<MatchingEvent>,
    /// Everything the candidate produced for the same calls (a faulted
    /// call's part is left out, and its fault is in `shadow_fault`).
    pub shadow_events: Vec<MatchingEvent>,
    pub shadow_fault: Option<String>,
}

/// A candidate's fault, with the command it happened in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShadowFault {
    pub seq: u64,
    pub message: String,
}

/// What a shadow run found so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShadowReport {
    pub candidate: ModuleHash,
    /// The live module the run started beside.
    pub live_hash: ModuleHash,
    pub from_seq: u64,
    /// The newest command compared (`from_seq - 1` before the first).
    pub last_seq: u64,
    /// The market's commands compared (each with one call or more).
    pub commands: u64,
    /// Of those, the ones whose outputs differed in any call.
    pub divergences: u64,
    pub first_divergence: Option<Divergence>,
    pub live_fuel: u64,
    pub shadow_fuel: u64,
    /// The candidate's calls that faulted (each undone, the run goes on).
    pub faults: u64,
    pub last_fault: Option<ShadowFault>,
}

impl ShadowReport {
    /// Nothing compared yet.
    pub fn new(candidate: ModuleHash, start: &ShadowStart) -> ShadowReport {
        ShadowReport {
            candidate,
            live_hash: start.live_hash,
            from_seq: start.from_seq,
            last_seq: start.from_seq - 1,
            commands: 0,
            divergences: 0,
            first_divergence: None,
            live_fuel: 0,
            shadow_fuel: 0,
            faults: 0,
            last_fault: None,
        }
    }
}

/// A candidate module applying a live market's calls beside it.
pub struct Shadow {
    slot: Slot<MatchingAbi>,
    target: ModuleTarget,
    report: ShadowReport,
}

/// One command's calls, being compared.
struct Pending {
    seq: u64,
    ts_ns: u64,
    live_events: Vec<MatchingEvent>,
    shadow_events: Vec<MatchingEvent>,
    diverged: bool,
    fault: Option<String>,
}

impl Shadow {
    /// The candidate `candidate` holding the live state of `start`: the live
    /// module's own snapshot, taken in a copy resumed from the image, restored
    /// (or migrated, when the state versions differ) by the candidate, as a
    /// hot swap would hand it over.
    pub fn start(
        loader: &dyn Loader<MatchingAbi>,
        start: &ShadowStart,
        candidate: ModuleHash,
    ) -> Result<Shadow, ShadowError> {
        let target = ModuleTarget::Market(start.market);
        let mut live =
            loader.resume(target, &start.live_hash, &start.limits, &start.image).map_err(ShadowError::ResumeLive)?;
        let mut handed_over = Vec::new();
        live.snapshot(&mut handed_over).map_err(|fault| ShadowError::LiveSnapshot { live: start.live_hash, fault })?;
        let state_version = live.state_version();
        drop(live);
        let instance = loader
            .restore(target, &candidate, &start.limits, state_version, &handed_over)
            .map_err(|source| ShadowError::TakeOver { state_version, source })?;
        let slot = Slot::new(instance, candidate, start.limits)
            .map_err(|fault| ShadowError::Image { hash: candidate, fault })?;
        let report = ShadowReport::new(candidate, start);
        Ok(Shadow { slot, target, report })
    }

    pub fn report(&self) -> &ShadowReport {
        &self.report
    }

    /// Apply the live calls of whole commands, in order, and compare. An
    /// error means the candidate cannot be put back after a fault (it is not
    /// deterministic, or cannot be loaded again): the run cannot go on.
    pub fn feed(&mut self, loader: &dyn Loader<MatchingAbi>, calls: &Tap) -> Result<(), EngineError> {
        let mut pending: Option<Pending> = None;
        for (call, output) in calls.calls() {
            if pending.as_ref().is_some_and(|p| p.seq != call.ctx.seq) {
                self.finish(pending.take());
            }
            let current = pending.get_or_insert_with(|| Pending {
                seq: call.ctx.seq,
                ts_ns: call.ctx.ts_ns,
                live_events: Vec::new(),
                shadow_events: Vec::new(),
                diverged: false,
                fault: None,
            });
            self.report.live_fuel += call.fuel_used;
            // Only the first divergence is kept in full.
            let keep_events = self.report.first_divergence.is_none();
            if keep_events {
                current.live_events.extend_from_slice(output);
            }
            match self.run(loader, call)? {
                Ok(shadow_output) => {
                    current.diverged |= shadow_output != output;
                    if keep_events {
                        current.shadow_events.extend(shadow_output);
                    }
                }
                Err(message) => {
                    current.diverged = true;
                    current.fault.get_or_insert(message.clone());
                    self.report.faults += 1;
                    self.report.last_fault = Some(ShadowFault { seq: call.ctx.seq, message });
                }
            }
        }
        self.finish(pending);
        if self.slot.checkpoint_due() {
            self.slot.take_checkpoint().map_err(|fault| EngineError::Recovery { target: self.target, fault })?;
        }
        Ok(())
    }

    /// One call in the candidate: its output, or why it faulted (the call
    /// then undone, so the candidate goes on from the state before it).
    fn run(
        &mut self,
        loader: &dyn Loader<MatchingAbi>,
        call: &TappedCall,
    ) -> Result<Result<Vec<MatchingEvent>, String>, EngineError> {
        if !self.slot.knows(&call.command) {
            return Ok(Err(format!(
                "the candidate (ABI revision {}) cannot read this command (revision {})",
                self.slot.instance.abi_revision(),
                call.command.revision()
            )));
        }
        let keep = self.slot.retained.len();
        let fuel_before = self.slot.instance.apply_fuel_used();
        let outcome = self.slot.run(call.ctx, call.command.clone());
        self.report.shadow_fuel += fuel_after(fuel_before, self.slot.instance.apply_fuel_used());
        match outcome {
            Ok(output) => Ok(Ok(output)),
            Err(fault) => {
                self.slot.rebuild(loader, keep, self.target)?;
                Ok(Err(fault.to_string()))
            }
        }
    }

    fn finish(&mut self, pending: Option<Pending>) {
        let Some(pending) = pending else { return };
        self.report.commands += 1;
        self.report.last_seq = pending.seq;
        if pending.diverged {
            self.report.divergences += 1;
            self.report.first_divergence.get_or_insert(Divergence {
                seq: pending.seq,
                ts_ns: pending.ts_ns,
                live_events: pending.live_events,
                shadow_events: pending.shadow_events,
                shadow_fault: pending.fault,
            });
        }
    }
}

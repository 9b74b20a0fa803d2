//! Hot swap: the journaled activation of another module for a market or for
//! the positions. At its sequence the old module's own snapshot of its state
//! (taken in a copy of the live instance) goes into the new module (restore,
//! or migrate when the state versions differ), which replaces it from then
//! on, live and on every replay.
//!
//! Every step is deterministic, so every outcome is too: a live module that
//! cannot snapshot, or a new one that cannot take the state, refuses the
//! activation with its own message and the old module goes on untouched.
//! The host checks the same steps on a copy before it journals an
//! activation (`POST /admin/v1/markets/{symbol}/module`), so a refusal here
//! is rare; it must still be an outcome, never a halt.

use exhost_guest_sdk::{Abi, CommandContext, MatchingAbi, PositionAbi, Reason};

use crate::command::{ModuleLimits, ModuleTarget};
use crate::engine::Engine;
use crate::error::{Abort, EngineError};
use crate::event::EventBody;
use crate::module::{LoadError, Loader, ModuleHash};
use crate::registry::Activation;
use crate::slot::Slot;

impl Engine {
    pub(crate) fn activate(
        &mut self,
        ctx: CommandContext,
        target: ModuleTarget,
        module_hash: ModuleHash,
        events: &mut Vec<EventBody>,
    ) -> Result<(), Abort> {
        let (swapped, from, limits) = match target {
            ModuleTarget::Market(market) => match self.markets.get(market.0 as usize) {
                Some(slot) => (ModuleTarget::Market(market), slot.hash, slot.limits),
                None => {
                    events.push(EventBody::CommandRejected { reason: Reason::UnknownMarket });
                    return Ok(());
                }
            },
            ModuleTarget::Position => match &self.position {
                Some(slot) => (ModuleTarget::Position, slot.hash, slot.limits),
                None => {
                    events.push(EventBody::CommandRejected { reason: Reason::NoModule });
                    return Ok(());
                }
            },
        };
        if from == module_hash {
            events.push(EventBody::CommandRejected { reason: Reason::AlreadyInstalled });
            return Ok(());
        }
        let refused = |reason: String, events: &mut Vec<EventBody>| {
            events.push(EventBody::ModuleActivationRefused { target, module_hash, reason });
        };
        let (from_version, bytes) = match self.canonical_state(swapped) {
            Ok(state) => state,
            Err(EngineError::Detached { fault, .. }) => {
                return {
                    let _: () =
                        refused(format!("the live module {from} could not hand over its state: {fault}"), events);
                    Ok(())
                };
            }
            Err(other) => return Err(other.into()),
        };
        let to_version = match target {
            ModuleTarget::Market(market) => {
                match take_over::<MatchingAbi>(&*self.loader, target, module_hash, limits, from_version, &bytes) {
                    Ok(slot) => {
                        let version = slot.instance.state_version();
                        self.markets[market.0 as usize] = slot;
                        self.registry.markets[market.0 as usize].module_hash = module_hash;
                        version
                    }
                    Err(source @ LoadError::UnknownModule(_)) => {
                        return Err(EngineError::Load { target: swapped, source }.into());
                    }
                    Err(error) => {
                        return {
                            let _: () = refused(error.to_string(), events);
                            Ok(())
                        };
                    }
                }
            }
            ModuleTarget::Position => {
                match take_over::<PositionAbi>(&*self.loader, target, module_hash, limits, from_version, &bytes) {
                    Ok(slot) => {
                        let version = slot.instance.state_version();
                        self.position = Some(slot);
                        if let Some(install) = self.registry.position.as_mut() {
                            install.module_hash = module_hash;
                        }
                        version
                    }
                    Err(source @ LoadError::UnknownModule(_)) => {
                        return Err(EngineError::Load { target: swapped, source }.into());
                    }
                    Err(error) => {
                        return {
                            let _: () = refused(error.to_string(), events);
                            Ok(())
                        };
                    }
                }
            }
        };
        // The new slot starts with a fresh checkpoint and nothing retained: this
        // command cannot be undone by rebuilding, and need not be (nothing follows).
        self.touched.retain(|(touched, _)| *touched != swapped);
        self.registry.activations.push(Activation {
            seq: ctx.seq,
            target,
            from,
            to: module_hash,
            from_state_version: from_version,
            to_state_version: to_version,
        });
        events.push(EventBody::ModuleActivated { target, from, to: module_hash, migrated: from_version != to_version });
        Ok(())
    }
}

/// The slot of a module that takes over a state handed over in `bytes`.
fn take_over<A: Abi>(
    loader: &dyn Loader<A>,
    target: ModuleTarget,
    hash: ModuleHash,
    limits: ModuleLimits,
    from_version: u32,
    bytes: &[u8],
) -> Result<Slot<A>, LoadError> {
    let mut instance = loader.restore(target, &hash, &limits, from_version, bytes)?;
    // The new module must be able to hand the state on in its turn: without
    // that no later swap, not even a rollback, could happen. (Its own
    // snapshot call is part of this journaled command, so its effect on the
    // new instance's memory is the same on every replay.)
    let mut handed_on = Vec::new();
    instance.snapshot(&mut handed_on).map_err(|fault| LoadError::Invalid {
        hash,
        reason: format!("it took the state over but cannot snapshot it, so no later swap could happen: {fault}"),
    })?;
    Slot::new(instance, hash, limits).map_err(|fault| LoadError::Fault { hash, fault })
}

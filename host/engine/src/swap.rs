//! Hot swap: the journaled activation of another module for a market or for
//! the positions. At its sequence the old module's own snapshot of its state
//! (taken in the live instance) goes into the new module (restore, or
//! migrate when the state versions differ), which replaces it from then on,
//! live and on every replay.
//!
//! Every step is deterministic, so every outcome is too: a live module that
//! cannot snapshot, or a new one that cannot take the state, refuses the
//! activation with its own message and the old module goes on from exactly
//! the state before (rebuilt from its checkpoint, since its snapshot call ran
//! in the live instance).
//! The host checks the same steps on a copy before it journals an
//! activation (`POST /admin/v1/markets/{symbol}/module`), so a refusal here
//! is rare; it must still be an outcome, never a halt.

use exhost_guest_sdk::{Abi, CommandContext, MatchingAbi, PositionAbi, Reason};

use crate::command::{ModuleLimits, ModuleTarget};
use crate::engine::Engine;
use crate::error::{Abort, EngineError};
use crate::event::EventBody;
use crate::module::{Instance, LoadError, Loader, ModuleHash};
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
        let from = match target {
            ModuleTarget::Market(market) => match self.markets.get(market.0 as usize) {
                Some(slot) => slot.hash,
                None => {
                    events.push(EventBody::CommandRejected { reason: Reason::UnknownMarket });
                    return Ok(());
                }
            },
            ModuleTarget::Position => match &self.position {
                Some(slot) => slot.hash,
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
        let handed = match target {
            ModuleTarget::Market(market) => {
                let slot = &mut self.markets[market.0 as usize];
                hand_over::<MatchingAbi>(&*self.loader, slot, target, module_hash)?
            }
            ModuleTarget::Position => {
                let slot = self.position.as_mut().ok_or(Abort::Fatal(EngineError::NoPositionModule))?;
                hand_over::<PositionAbi>(&*self.loader, slot, target, module_hash)?
            }
        };
        let (from_version, to_version) = match handed {
            Ok(versions) => versions,
            Err(reason) => {
                events.push(EventBody::ModuleActivationRefused { target, module_hash, reason });
                return Ok(());
            }
        };
        match target {
            ModuleTarget::Market(market) => self.registry.markets[market.0 as usize].module_hash = module_hash,
            ModuleTarget::Position => {
                if let Some(install) = self.registry.position.as_mut() {
                    install.module_hash = module_hash;
                }
            }
        }
        // The slot starts over from the new instance's image with nothing
        // retained: this command cannot be undone by rebuilding, and need not
        // be (nothing follows).
        self.touched.retain(|(touched, _)| *touched != target);
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

/// Hand the live instance's state over to the module `to`, in place in `slot`:
/// the live instance writes its snapshot, a new instance restores (or
/// migrates) it and must be able to snapshot it in its turn, and the slot's
/// checkpoint becomes the new instance's image. `Ok(Err(reason))` is a
/// refusal: the slot is then rebuilt from its checkpoint and retained
/// commands to exactly the state before (the live instance's own snapshot
/// call may have changed its memory). The snapshot is taken in the live
/// instance, not in a copy of it, so the pause of a swap that succeeds, the
/// common case since the host checks the same steps before it journals an
/// activation, has no copy of the live memory in it.
fn hand_over<A: Abi>(
    loader: &dyn Loader<A>,
    slot: &mut Slot<A>,
    target: ModuleTarget,
    to: ModuleHash,
) -> Result<Result<(u32, u32), String>, EngineError> {
    let from = slot.hash;
    let from_version = slot.instance.state_version();
    let mut bytes = Vec::new();
    let refusal = match slot.instance.snapshot(&mut bytes) {
        Err(fault) => format!("the live module {from} could not hand over its state: {fault}"),
        Ok(()) => match take_over(loader, target, to, &slot.limits, from_version, &bytes) {
            Err(source @ LoadError::UnknownModule(_)) => return Err(EngineError::Load { target, source }),
            Err(error) => error.to_string(),
            Ok(instance) => {
                let to_version = instance.state_version();
                match slot.hand_over_to(instance, to) {
                    Ok(()) => return Ok(Ok((from_version, to_version))),
                    Err(fault) => LoadError::Fault { hash: to, fault }.to_string(),
                }
            }
        },
    };
    slot.rebuild(loader, slot.retained.len(), target)?;
    Ok(Err(refusal))
}

/// A new instance of `hash` that took over the state handed over in `bytes`.
fn take_over<A: Abi>(
    loader: &dyn Loader<A>,
    target: ModuleTarget,
    hash: ModuleHash,
    limits: &ModuleLimits,
    from_version: u32,
    bytes: &[u8],
) -> Result<Box<dyn Instance<A>>, LoadError> {
    let mut instance = loader.restore(target, &hash, limits, from_version, bytes)?;
    // The new module must be able to hand the state on in its turn: without
    // that no later swap, not even a rollback, could happen. (Its own
    // snapshot call is part of this journaled command, so its effect on the
    // new instance's memory is the same on every replay.)
    let mut handed_on = Vec::new();
    instance.snapshot(&mut handed_on).map_err(|fault| LoadError::Invalid {
        hash,
        reason: format!("it took the state over but cannot snapshot it, so no later swap could happen: {fault}"),
    })?;
    Ok(instance)
}

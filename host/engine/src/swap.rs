//! Hot swap: the journaled activation of another module for a market or for
//! the positions. At its sequence the old instance's snapshot goes into the new
//! module (restore, or migrate when the state versions differ), which replaces
//! it from then on, live and on every replay.

use exhost_guest_sdk::{Abi, CommandContext, MatchingAbi, PositionAbi, Reason};

use crate::command::{ModuleLimits, ModuleTarget};
use crate::engine::{Abort, Engine, EngineError, Target};
use crate::event::EventBody;
use crate::module::{Instance, LoadError, Loader, ModuleHash};
use crate::registry::Activation;
use crate::slot::Slot;

impl Engine {
    /// Hot swap: the old instance's snapshot goes into the new module (restore,
    /// or migrate when the state versions differ), which replaces it from this
    /// sequence on. A module that cannot take the state is refused, with its
    /// own message, and the old one stays.
    pub(crate) fn activate(
        &mut self,
        ctx: CommandContext,
        target: ModuleTarget,
        module_hash: ModuleHash,
        events: &mut Vec<EventBody>,
    ) -> Result<(), Abort> {
        let (from, from_version, bytes) = match target {
            ModuleTarget::Market(market) => {
                if (market.0 as usize) >= self.markets.len() {
                    events.push(EventBody::CommandRejected { reason: Reason::UnknownMarket });
                    return Ok(());
                }
                // A snapshot that faults leaves the instance to be rebuilt like any fault.
                self.touch(Target::Market(market));
                let slot = &mut self.markets[market.0 as usize];
                let mut bytes = Vec::new();
                let taken = slot.instance.snapshot(&mut bytes);
                let (hash, version) = (slot.hash, slot.instance.state_version());
                taken.map_err(|fault| self.fault(ctx, Target::Market(market), fault))?;
                (hash, version, bytes)
            }
            ModuleTarget::Position => {
                if self.position.is_none() {
                    events.push(EventBody::CommandRejected { reason: Reason::NoModule });
                    return Ok(());
                }
                self.touch(Target::Position);
                let slot = self.position.as_mut().expect("checked above");
                let mut bytes = Vec::new();
                let taken = slot.instance.snapshot(&mut bytes);
                let (hash, version) = (slot.hash, slot.instance.state_version());
                taken.map_err(|fault| self.fault(ctx, Target::Position, fault))?;
                (hash, version, bytes)
            }
        };
        if from == module_hash {
            events.push(EventBody::CommandRejected { reason: Reason::AlreadyInstalled });
            return Ok(());
        }
        let refused = |reason: String, events: &mut Vec<EventBody>| {
            events.push(EventBody::ModuleActivationRefused { target, module_hash, reason });
        };
        let to_version = match target {
            ModuleTarget::Market(market) => {
                let limits = self.markets[market.0 as usize].limits;
                let made = Loader::<MatchingAbi>::restore(&*self.loader, &module_hash, &limits, from_version, &bytes)
                    .and_then(|instance| swapped_slot(instance, module_hash, limits, from_version, bytes));
                match made {
                    Ok(slot) => {
                        let version = slot.checkpoint_version;
                        self.markets[market.0 as usize] = slot;
                        self.registry.markets[market.0 as usize].module_hash = module_hash;
                        version
                    }
                    Err(source @ LoadError::UnknownModule(_)) => {
                        return Err(EngineError::Load { target: Target::Market(market).name(), source }.into());
                    }
                    Err(error) => return Ok(refused(error.to_string(), events)),
                }
            }
            ModuleTarget::Position => {
                let limits = self.position.as_ref().map(|slot| slot.limits).unwrap_or_default();
                let made = Loader::<PositionAbi>::restore(&*self.loader, &module_hash, &limits, from_version, &bytes)
                    .and_then(|instance| swapped_slot(instance, module_hash, limits, from_version, bytes));
                match made {
                    Ok(slot) => {
                        let version = slot.checkpoint_version;
                        self.position = Some(slot);
                        if let Some(install) = self.registry.position.as_mut() {
                            install.module_hash = module_hash;
                        }
                        version
                    }
                    Err(source @ LoadError::UnknownModule(_)) => {
                        return Err(EngineError::Load { target: Target::Position.name(), source }.into());
                    }
                    Err(error) => return Ok(refused(error.to_string(), events)),
                }
            }
        };
        // The swapped slot starts with a fresh checkpoint and nothing retained: this
        // command cannot be undone by rebuilding, and needs not be (nothing follows).
        let swapped = match target {
            ModuleTarget::Market(market) => Target::Market(market),
            ModuleTarget::Position => Target::Position,
        };
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

/// The slot of a module that just took over a state. When it kept the state
/// format, the handed-over bytes are its checkpoint (no second snapshot during
/// the swap pause); after a migration it takes its own.
fn swapped_slot<A: Abi>(
    instance: Box<dyn Instance<A>>,
    hash: ModuleHash,
    limits: ModuleLimits,
    from_version: u32,
    bytes: Vec<u8>,
) -> Result<Slot<A>, LoadError> {
    if instance.state_version() == from_version {
        Ok(Slot::restored(instance, hash, limits, bytes))
    } else {
        Slot::new(instance, hash, limits).map_err(|fault| LoadError::Fault { hash, fault })
    }
}

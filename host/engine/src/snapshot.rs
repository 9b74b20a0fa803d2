//! The engine snapshot: what is stored to skip replaying the journal from the
//! start, and what `verify` recomputes. It holds each instance's image (its
//! memory and globals, byte for byte), not the module's own snapshot, so an
//! engine restored from it is the engine that took it, down to the memory
//! layout a command's fuel depends on, and restoring runs no module code.
//! Its digest is the SHA-256 of its encoding, so two engines agree on a
//! digest exactly when they agree on every byte of state.

use std::collections::BTreeMap;
use std::sync::Arc;

use exhost_guest_sdk::codec::{self, DecodeError};
use exhost_guest_sdk::{Abi, MatchingAbi, PositionAbi};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::command::ModuleTarget;
use crate::command::{MarketId, ModuleLimits};
use crate::engine::Engine;
use crate::error::EngineError;
use crate::module::{InstanceImage, Loader, ModuleHash, ModuleLoader};
use crate::registry::Registry;
use crate::slot::Slot;

/// The version of [`EngineSnapshot`]'s layout. Format 2 held the modules'
/// own snapshots; a host meeting one replays the journal instead.
pub const SNAPSHOT_FORMAT: u32 = 3;

/// One module instance's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleState {
    /// The module's own snapshot format version (what a hot swap would hand over).
    pub state_version: u32,
    /// The instance, exactly.
    pub image: Arc<InstanceImage>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineSnapshot {
    pub format: u32,
    /// The sequence number of the last command the state includes.
    pub seq: u64,
    pub ts_ns: u64,
    pub registry: Registry,
    /// Indexed like `registry.markets`.
    pub markets: Vec<ModuleState>,
    /// The position module's state, if one is installed.
    pub position: Option<ModuleState>,
    /// When each market's module asked to be woken. Encoded after the rest,
    /// and only when there is one, so the snapshot of an exchange without
    /// any is byte for byte what format 3 was before wakes existed: older
    /// data directories restore, and `verify` their digests, unchanged.
    #[serde(skip)]
    pub wakes: BTreeMap<MarketId, u64>,
}

/// A state digest: SHA-256 of a snapshot's encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateDigest(pub [u8; 32]);

impl StateDigest {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Display for StateDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl EngineSnapshot {
    /// The snapshot, then what came later and is written only when there
    /// is some: the wake times, then the markets' terms.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = codec::encode(self);
        let terms = &self.registry.market_terms;
        if !self.wakes.is_empty() || !terms.is_empty() {
            codec::encode_into(&self.wakes, &mut out);
        }
        if !terms.is_empty() {
            codec::encode_into(terms, &mut out);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<EngineSnapshot, DecodeError> {
        let (mut snapshot, rest): (EngineSnapshot, _) = codec::decode_prefix(bytes)?;
        if !rest.is_empty() {
            let (wakes, rest) = codec::decode_prefix(rest)?;
            snapshot.wakes = wakes;
            if !rest.is_empty() {
                snapshot.registry.market_terms = codec::decode(rest)?;
            }
        }
        Ok(snapshot)
    }

    /// The digest of encoded snapshot bytes.
    pub fn digest_of(encoded: &[u8]) -> StateDigest {
        StateDigest(Sha256::digest(encoded).into())
    }
}

impl Engine {
    /// The whole state: registry and every instance's image. Also refreshes
    /// each instance's in-memory checkpoint, since these images are one.
    /// Runs no module code.
    pub fn snapshot(&mut self) -> Result<EngineSnapshot, EngineError> {
        fn state<A: Abi>(slot: &mut Slot<A>, target: ModuleTarget) -> Result<ModuleState, EngineError> {
            slot.take_checkpoint().map_err(|fault| EngineError::Recovery { target, fault })?;
            Ok(ModuleState { state_version: slot.instance.state_version(), image: slot.checkpoint.clone() })
        }
        let mut markets = Vec::with_capacity(self.markets.len());
        for (index, slot) in self.markets.iter_mut().enumerate() {
            markets.push(state(slot, ModuleTarget::Market(MarketId(index as u32)))?);
        }
        let position = self.position.as_mut().map(|slot| state(slot, ModuleTarget::Position)).transpose()?;
        Ok(EngineSnapshot {
            format: SNAPSHOT_FORMAT,
            seq: self.last_seq,
            ts_ns: self.last_ts_ns,
            registry: self.registry.clone(),
            markets,
            position,
            wakes: self.wakes.clone(),
        })
    }

    /// An engine holding the state of a snapshot.
    pub fn restore(loader: Arc<dyn ModuleLoader>, snapshot: EngineSnapshot) -> Result<Engine, EngineError> {
        if snapshot.format != SNAPSHOT_FORMAT {
            return Err(EngineError::BadSnapshot(format!("format {} is not {SNAPSHOT_FORMAT}", snapshot.format)));
        }
        if snapshot.markets.len() != snapshot.registry.markets.len()
            || snapshot.position.is_some() != snapshot.registry.position.is_some()
        {
            return Err(EngineError::BadSnapshot("module states do not match the registry".into()));
        }
        if snapshot.wakes.keys().any(|market| market.0 as usize >= snapshot.markets.len()) {
            return Err(EngineError::BadSnapshot("a wake time names a market the snapshot does not have".into()));
        }
        if snapshot.registry.market_terms.keys().any(|market| market.0 as usize >= snapshot.markets.len()) {
            return Err(EngineError::BadSnapshot("market terms name a market the snapshot does not have".into()));
        }
        fn slot<A: Abi>(
            loader: &dyn Loader<A>,
            hash: ModuleHash,
            limits: ModuleLimits,
            state: ModuleState,
            target: ModuleTarget,
        ) -> Result<Slot<A>, EngineError> {
            let instance = loader
                .resume(target, &hash, &limits, &state.image)
                .map_err(|source| EngineError::Load { target, source })?;
            Ok(Slot::resumed(instance, hash, limits, state.image))
        }
        let mut markets = Vec::with_capacity(snapshot.markets.len());
        for (index, (state, spec)) in snapshot.markets.into_iter().zip(&snapshot.registry.markets).enumerate() {
            let target = ModuleTarget::Market(MarketId(index as u32));
            markets.push(slot::<MatchingAbi>(&*loader, spec.module_hash, spec.limits, state, target)?);
        }
        let position = match (snapshot.position, &snapshot.registry.position) {
            (Some(state), Some(install)) => {
                Some(slot::<PositionAbi>(&*loader, install.module_hash, install.limits, state, ModuleTarget::Position)?)
            }
            _ => None,
        };
        Ok(Engine {
            loader,
            registry: snapshot.registry,
            markets,
            position,
            last_seq: snapshot.seq,
            last_ts_ns: snapshot.ts_ns,
            faults: Vec::new(),
            faults_dropped: 0,
            touched: Vec::new(),
            wakes: snapshot.wakes,
            pending_wakes: Vec::new(),
            pending_marks: Default::default(),
        })
    }
}

//! The engine snapshot: what is stored to skip replaying the journal from the
//! start, and what `verify` recomputes. Its digest is the SHA-256 of its
//! canonical encoding, so two engines agree on a digest exactly when they agree
//! on every byte of state.

use exhost_guest_sdk::codec::{self, DecodeError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::registry::Registry;

/// The version of [`EngineSnapshot`]'s layout.
pub const SNAPSHOT_FORMAT: u32 = 2;

/// One module instance's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketState {
    pub state_version: u32,
    pub bytes: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineSnapshot {
    pub format: u32,
    /// The sequence number of the last command the state includes.
    pub seq: u64,
    pub ts_ns: u64,
    pub registry: Registry,
    /// Indexed like `registry.markets`.
    pub markets: Vec<MarketState>,
    /// The position module's state, if one is installed.
    pub position: Option<MarketState>,
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
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<EngineSnapshot, DecodeError> {
        codec::decode(bytes)
    }

    /// The digest of encoded snapshot bytes.
    pub fn digest_of(encoded: &[u8]) -> StateDigest {
        StateDigest(Sha256::digest(encoded).into())
    }
}

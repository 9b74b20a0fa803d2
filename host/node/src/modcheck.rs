//! What a module must show before the host stores it (upload) or journals
//! its activation (hot swap): every call the swap, and a later swap away from
//! it, will need, run on copies, under the same bounds as live.
//!
//! - **On its own** ([`check_fresh`]): `init` with a config, `snapshot`,
//!   `restore` of that snapshot, `snapshot` again giving the same bytes, and a
//!   query. A module whose `restore` traps is refused here, before anything
//!   could depend on it.
//! - **Taking over a live state** ([`check_takeover`]): the live module's
//!   own snapshot, taken in a copy resumed from an image of the live
//!   instance; the candidate's `restore` (or `migrate`) of it; the
//!   candidate's `snapshot`, which it must restore again to the same bytes;
//!   a query; and, when both speak the same state version, the live module's
//!   `restore` of the candidate's snapshot, so that rolling back stays possible.
//!
//! Nothing here runs in a live instance or on the engine thread.

use exhost_engine::{Instance, InstanceImage, LoadError, Loader, ModuleFault, ModuleHash, ModuleLimits, ModuleTarget};
use exhost_guest_sdk::{Abi, MarketConfig, MatchingAbi, MatchingQuery, PositionAbi, PositionConfig, PositionQuery};
use exhost_runtime::{CompiledModule, WasmLoader, WasmModule};

/// A question every module of a kind must answer, to show `query` works.
pub trait Probe: Abi {
    fn probe() -> Self::Query;
}

impl Probe for MatchingAbi {
    fn probe() -> MatchingQuery {
        MatchingQuery::Depth { levels_max: 10 }
    }
}

impl Probe for PositionAbi {
    fn probe() -> PositionQuery {
        PositionQuery::Ledger
    }
}

/// A fresh market's config, for checking a matching module on its own.
pub fn fresh_market_config() -> MarketConfig {
    MarketConfig::default()
}

/// A fresh position module's config, for checking one on its own.
pub fn fresh_position_config() -> PositionConfig {
    PositionConfig { settlement_asset: "USD".into(), follow_ups_per_command_max: 10_000, params: Vec::new() }
}

/// Why a module was refused: the call that failed and how.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("{0}")]
    Instantiate(#[source] ModuleFault),
    #[error("init failed: {0}")]
    Init(#[source] ModuleFault),
    #[error("snapshot failed: {0}")]
    Snapshot(#[source] ModuleFault),
    #[error("restoring its own snapshot failed: {0}")]
    RestoreOwn(#[source] ModuleFault),
    #[error("snapshot after restore failed: {0}")]
    SnapshotAgain(#[source] ModuleFault),
    #[error(
        "its snapshot changes when restored and taken again ({first_bytes} bytes, then {second_bytes}): restore must give back the state exactly"
    )]
    Unstable { first_bytes: usize, second_bytes: usize },
    #[error("query failed: {0}")]
    Query(#[source] ModuleFault),
    #[error("{0}")]
    ResumeLive(#[source] LoadError),
    #[error("the live module {live} could not snapshot its state: {fault}")]
    LiveSnapshot {
        live: ModuleHash,
        #[source]
        fault: ModuleFault,
    },
    #[error("cannot take over the live state (state version {state_version}): {fault}")]
    TakeOver {
        state_version: u32,
        #[source]
        fault: ModuleFault,
    },
    #[error("the live module could not take the new module's state back, so no rollback would work: {0}")]
    RollbackRestore(#[source] LoadError),
    #[error("after a rollback the live module's query failed: {0}")]
    RollbackQuery(#[source] ModuleFault),
}

/// What a take-over check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Takeover {
    pub from_state_version: u32,
    pub to_state_version: u32,
    /// Whether the live module was shown to take the candidate's state back.
    pub rollback_checked: bool,
}

fn instance<A: Abi>(
    loader: &WasmLoader,
    compiled: &CompiledModule,
    limits: &ModuleLimits,
) -> Result<WasmModule<A>, CheckError> {
    WasmModule::<A>::instantiate(loader.runtime(), compiled, limits).map_err(CheckError::Instantiate)
}

/// The candidate snapshots its state, restores that into a new instance, and
/// snapshots the same bytes again; then answers the probe.
fn round_trip<A: Probe>(
    loader: &WasmLoader,
    compiled: &CompiledModule,
    limits: &ModuleLimits,
    module: &mut WasmModule<A>,
) -> Result<(u32, Vec<u8>), CheckError> {
    let mut first = Vec::new();
    module.snapshot(&mut first).map_err(CheckError::Snapshot)?;
    let mut again = instance::<A>(loader, compiled, limits)?;
    let version = module.state_version();
    again.restore(version, &first).map_err(CheckError::RestoreOwn)?;
    let mut second = Vec::new();
    again.snapshot(&mut second).map_err(CheckError::SnapshotAgain)?;
    if first != second {
        return Err(CheckError::Unstable { first_bytes: first.len(), second_bytes: second.len() });
    }
    again.query(&A::probe()).map_err(CheckError::Query)?;
    Ok((version, first))
}

/// The module on its own: init with `config`, then the round trip.
pub fn check_fresh<A: Probe>(
    loader: &WasmLoader,
    compiled: &CompiledModule,
    limits: &ModuleLimits,
    config: &A::Config,
) -> Result<(), CheckError> {
    let mut module = instance::<A>(loader, compiled, limits)?;
    module.init(config).map_err(CheckError::Init)?;
    round_trip(loader, compiled, limits, &mut module).map(|_| ())
}

/// The candidate taking over the state of the live instance `image` (of module `live_hash`).
pub fn check_takeover<A: Probe>(
    loader: &WasmLoader,
    target: ModuleTarget,
    live_hash: &ModuleHash,
    limits: &ModuleLimits,
    image: &InstanceImage,
    candidate: &CompiledModule,
) -> Result<Takeover, CheckError>
where
    WasmLoader: Loader<A>,
{
    let mut live = Loader::<A>::resume(loader, target, live_hash, limits, image).map_err(CheckError::ResumeLive)?;
    let mut handed_over = Vec::new();
    live.snapshot(&mut handed_over).map_err(|fault| CheckError::LiveSnapshot { live: *live_hash, fault })?;
    let from_state_version = live.state_version();
    let mut module = instance::<A>(loader, candidate, limits)?;
    module
        .restore(from_state_version, &handed_over)
        .map_err(|fault| CheckError::TakeOver { state_version: from_state_version, fault })?;
    let (to_state_version, own) = round_trip(loader, candidate, limits, &mut module)?;
    let rollback_checked = from_state_version == to_state_version;
    if rollback_checked {
        let mut back = Loader::<A>::restore(loader, target, live_hash, limits, to_state_version, &own)
            .map_err(CheckError::RollbackRestore)?;
        back.query(&A::probe()).map_err(CheckError::RollbackQuery)?;
    }
    Ok(Takeover { from_state_version, to_state_version, rollback_checked })
}

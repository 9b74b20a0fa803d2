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

use exhost_engine::{Instance, InstanceImage, Loader, ModuleHash, ModuleLimits};
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
) -> Result<WasmModule<A>, String> {
    WasmModule::<A>::instantiate(loader.runtime(), compiled, limits).map_err(|fault| fault.to_string())
}

/// The candidate snapshots its state, restores that into a new instance, and
/// snapshots the same bytes again; then answers the probe.
fn round_trip<A: Probe>(
    loader: &WasmLoader,
    compiled: &CompiledModule,
    limits: &ModuleLimits,
    module: &mut WasmModule<A>,
) -> Result<(u32, Vec<u8>), String> {
    let mut first = Vec::new();
    module.snapshot(&mut first).map_err(|fault| format!("snapshot failed: {fault}"))?;
    let mut again = instance::<A>(loader, compiled, limits)?;
    let version = module.state_version();
    again.restore(version, &first).map_err(|fault| format!("restoring its own snapshot failed: {fault}"))?;
    let mut second = Vec::new();
    again.snapshot(&mut second).map_err(|fault| format!("snapshot after restore failed: {fault}"))?;
    if first != second {
        return Err(format!(
            "its snapshot changes when restored and taken again ({} bytes, then {}): restore must give back the state exactly",
            first.len(),
            second.len()
        ));
    }
    again.query(&A::probe()).map_err(|fault| format!("query failed: {fault}"))?;
    Ok((version, first))
}

/// The module on its own: init with `config`, then the round trip.
pub fn check_fresh<A: Probe>(
    loader: &WasmLoader,
    compiled: &CompiledModule,
    limits: &ModuleLimits,
    config: &A::Config,
) -> Result<(), String> {
    let mut module = instance::<A>(loader, compiled, limits)?;
    module.init(config).map_err(|fault| format!("init failed: {fault}"))?;
    round_trip(loader, compiled, limits, &mut module).map(|_| ())
}

/// The candidate taking over the state of the live instance `image` (of module `live_hash`).
pub fn check_takeover<A: Probe>(
    loader: &WasmLoader,
    live_hash: &ModuleHash,
    limits: &ModuleLimits,
    image: &InstanceImage,
    candidate: &CompiledModule,
) -> Result<Takeover, String>
where
    WasmLoader: Loader<A>,
{
    let mut live = Loader::<A>::resume(loader, live_hash, limits, image).map_err(|error| error.to_string())?;
    let mut handed_over = Vec::new();
    live.snapshot(&mut handed_over)
        .map_err(|fault| format!("the live module {live_hash} could not snapshot its state: {fault}"))?;
    let from_state_version = live.state_version();
    let mut module = instance::<A>(loader, candidate, limits)?;
    module
        .restore(from_state_version, &handed_over)
        .map_err(|fault| format!("cannot take over the live state (state version {from_state_version}): {fault}"))?;
    let (to_state_version, own) = round_trip(loader, candidate, limits, &mut module)?;
    let rollback_checked = from_state_version == to_state_version;
    if rollback_checked {
        let mut back = Loader::<A>::restore(loader, live_hash, limits, to_state_version, &own).map_err(|error| {
            format!("the live module could not take the new module's state back, so no rollback would work: {error}")
        })?;
        back.query(&A::probe()).map_err(|fault| format!("after a rollback the live module's query failed: {fault}"))?;
    }
    Ok(Takeover { from_state_version, to_state_version, rollback_checked })
}

//! Module lifecycle for operators: upload (validate, dry run, store), hot swap
//! (a journaled activation), and the list of modules with the activation history.
//!
//! Upload never changes the exchange: it compiles the bytes under the
//! deterministic configuration, checks the ABI, then restores (or migrates)
//! the live state into a scratch instance and applies nothing. Only then are
//! the bytes stored by their SHA-256. Activation is a command: it is journaled
//! and happens at its sequence number, live and on every replay.

use axum::Json;
use axum::body::to_bytes;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::StatusCode;
use exhost_engine::{Command, EventBody, LoadError, ModuleHash, ModuleLimits, ModuleTarget};
use exhost_guest_sdk::{MarketConfig, MatchingAbi, ModuleKind, PositionAbi};
use exhost_runtime::{CompiledModule, WasmModule};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::auth::{Operator, parse_json};
use super::error::{ApiError, ApiResult};
use super::trading::market_of;

/// A module upload's bytes, up to `module_bytes_max`.
pub struct ModuleBytes(pub axum::body::Bytes);

impl FromRequest<AppState> for ModuleBytes {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limit = state.config.module_bytes_max;
        to_bytes(request.into_body(), limit).await.map(ModuleBytes).map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("modules are limited to {limit} bytes"),
            )
        })
    }
}

fn rejected(reason: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "module_rejected", reason)
}

#[derive(Deserialize)]
pub(super) struct UploadQuery {
    /// Dry-run against this market only, and refuse the module if that fails.
    market: Option<String>,
}

/// Restore one live state into a scratch instance of the module.
fn dry_run_matching(
    state: &AppState,
    compiled: &CompiledModule,
    limits: &ModuleLimits,
    version: u32,
    bytes: &[u8],
) -> Result<(), String> {
    let mut instance =
        WasmModule::<MatchingAbi>::instantiate(state.loader.runtime(), compiled, limits).map_err(|f| f.to_string())?;
    instance.restore(version, bytes).map_err(|f| f.to_string())
}

pub(super) async fn upload(
    State(state): State<AppState>,
    _: Operator,
    Query(query): Query<UploadQuery>,
    ModuleBytes(bytes): ModuleBytes,
) -> ApiResult<Json<Value>> {
    let loader = state.loader.clone();
    let compile_bytes = bytes.clone();
    let compiled = tokio::task::spawn_blocking(move || loader.compile(&compile_bytes))
        .await
        .map_err(|error| ApiError::internal(error.to_string()))?
        .map_err(|rejection| rejected(rejection.to_string()))?;
    let info = compiled.info.clone();
    let live = state.node.state().await.map_err(ApiError::unavailable)?;
    let focus = query.market.as_deref().map(|symbol| market_of(&state, symbol)).transpose()?;

    let (dry_run, compiled) = {
        let state = state.clone();
        tokio::task::spawn_blocking(move || -> ApiResult<(Vec<Value>, CompiledModule)> {
            let mut results = Vec::new();
            match info.kind {
                ModuleKind::Matching => {
                    // It must at least start a fresh book.
                    let limits = ModuleLimits::default();
                    let mut fresh = WasmModule::<MatchingAbi>::instantiate(state.loader.runtime(), &compiled, &limits)
                        .map_err(|fault| rejected(fault.to_string()))?;
                    fresh
                        .init(&MarketConfig::default())
                        .map_err(|fault| rejected(format!("init with the default market config failed: {fault}")))?;
                    for (index, (spec, market_state)) in live.registry.markets.iter().zip(&live.markets).enumerate() {
                        if focus.as_ref().is_some_and(|(id, _)| id.0 as usize != index) {
                            continue;
                        }
                        let outcome =
                            dry_run_matching(&state, &compiled, &spec.limits, market_state.state_version, &market_state.bytes);
                        if let (Some(_), Err(reason)) = (&focus, &outcome) {
                            return Err(rejected(format!("cannot take over the state of market {}: {reason}", spec.symbol)));
                        }
                        results.push(json!({
                            "target": spec.symbol, "from_state_version": market_state.state_version,
                            "ok": outcome.is_ok(), "error": outcome.err(),
                        }));
                    }
                }
                ModuleKind::Position => {
                    if let (Some(install), Some(position_state)) = (&live.registry.position, &live.position) {
                        let mut instance = WasmModule::<PositionAbi>::instantiate(state.loader.runtime(), &compiled, &install.limits)
                            .map_err(|fault| rejected(fault.to_string()))?;
                        instance.restore(position_state.state_version, &position_state.bytes).map_err(|fault| {
                            rejected(format!("cannot take over the live position state (version {}): {fault}", position_state.state_version))
                        })?;
                        results.push(json!({ "target": "positions", "from_state_version": position_state.state_version, "ok": true }));
                    }
                }
            }
            Ok((results, compiled))
        })
        .await
        .map_err(|error| ApiError::internal(error.to_string()))??
    };

    state.store.put_module(&info.hash.0, &bytes).map_err(|error| ApiError::internal(error.to_string()))?;
    state.loader.insert(compiled);
    Ok(Json(json!({
        "hash": info.hash.to_hex(),
        "kind": info.kind.as_str(),
        "abi_version": info.abi_version,
        "state_version": info.state_version,
        "size": info.size_bytes,
        "memory_bytes_max": info.memory_bytes_max,
        "dry_run": dry_run,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActivateRequest {
    hash: String,
}

async fn activate(state: &AppState, target: ModuleTarget, kind: ModuleKind, hash: &str) -> ApiResult<Json<Value>> {
    let module_hash = ModuleHash::from_hex(hash).ok_or_else(|| ApiError::bad_request("hash must be 64 hex digits"))?;
    let compiled = state.loader.compiled(&module_hash).map_err(|error| match error {
        LoadError::UnknownModule(_) => {
            ApiError::not_found(format!("no module {module_hash} is stored; upload it first"))
        }
        other => rejected(other.to_string()),
    })?;
    if compiled.info.kind != kind {
        return Err(rejected(format!("{module_hash} is a {} module", compiled.info.kind.as_str())));
    }
    let applied = state.node.submit(Command::ActivateModule { target, module_hash }).await?;
    for event in &applied.events {
        match &event.body {
            EventBody::ModuleActivated { from, to, migrated, .. } => {
                return Ok(Json(json!({
                    "seq": applied.seq, "previous": from.to_hex(), "current": to.to_hex(), "migrated": migrated,
                })));
            }
            EventBody::ModuleActivationRefused { reason, .. } => return Err(rejected(reason.clone())),
            EventBody::CommandRejected { reason } => return Err(ApiError::refused(*reason)),
            _ => {}
        }
    }
    Err(ApiError::internal("the activation reported nothing"))
}

pub(super) async fn activate_market(
    State(state): State<AppState>,
    _: Operator,
    Path(symbol): Path<String>,
    super::auth::Body(body): super::auth::Body,
) -> ApiResult<Json<Value>> {
    let request: ActivateRequest = parse_json(&body)?;
    let (market, _) = market_of(&state, &symbol)?;
    activate(&state, ModuleTarget::Market(market), ModuleKind::Matching, &request.hash).await
}

pub(super) async fn activate_position(
    State(state): State<AppState>,
    _: Operator,
    super::auth::Body(body): super::auth::Body,
) -> ApiResult<Json<Value>> {
    let request: ActivateRequest = parse_json(&body)?;
    activate(&state, ModuleTarget::Position, ModuleKind::Position, &request.hash).await
}

pub(super) async fn list(State(state): State<AppState>, _: Operator) -> ApiResult<Json<Value>> {
    let modules = state.store.modules().map_err(|e| ApiError::internal(e.to_string()))?;
    let directory = state.node.directory.read().unwrap_or_else(|p| p.into_inner()).clone();
    let target_name = |target: &ModuleTarget| match target {
        ModuleTarget::Market(market) => {
            directory.markets.get(market.0 as usize).map_or_else(|| format!("market {market}"), |s| s.symbol.clone())
        }
        ModuleTarget::Position => "positions".to_string(),
    };
    let mut listed = Vec::new();
    for (hash, size) in modules {
        let hash = ModuleHash(hash);
        let in_use: Vec<String> = directory
            .markets
            .iter()
            .filter(|spec| spec.module_hash == hash)
            .map(|spec| spec.symbol.clone())
            .chain(directory.position_module.filter(|h| *h == hash).map(|_| "positions".to_string()))
            .collect();
        let entry = match state.loader.compiled(&hash) {
            Ok(compiled) => json!({
                "hash": hash.to_hex(), "kind": compiled.info.kind.as_str(), "abi_version": compiled.info.abi_version,
                "state_version": compiled.info.state_version, "size": size, "active_for": in_use,
            }),
            Err(error) => {
                json!({ "hash": hash.to_hex(), "kind": null, "size": size, "error": error.to_string(), "active_for": in_use })
            }
        };
        listed.push(entry);
    }
    let activations: Vec<Value> = directory
        .activations
        .iter()
        .map(|a| {
            json!({
                "seq": a.seq, "target": target_name(&a.target), "from": a.from.to_hex(), "to": a.to.to_hex(),
                "from_state_version": a.from_state_version, "to_state_version": a.to_state_version,
            })
        })
        .collect();
    Ok(Json(json!({ "modules": listed, "activations": activations })))
}

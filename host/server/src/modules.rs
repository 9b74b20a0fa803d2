//! Module lifecycle for operators: upload (validate, dry run, store), hot swap
//! (a journaled activation), and the list of modules with the activation history.
//!
//! Upload never changes the exchange: it compiles the bytes under the
//! deterministic configuration, checks the ABI, runs the module on its own
//! and against the live state of each market in copies ([`exhost_node::modcheck`]),
//! and applies nothing. Only then are the bytes stored by their SHA-256.
//! Activation is checked again on a copy of the live state, then journaled:
//! it happens at its sequence number, live and on every replay.

use axum::Json;
use axum::body::to_bytes;
use axum::extract::{FromRequest, Path, RawQuery, Request, State};
use axum::http::StatusCode;
use exhost_engine::{Command, EventBody, LoadError, MarketId, ModuleHash, ModuleLimits, ModuleTarget};
use exhost_guest_sdk::{MatchingAbi, ModuleKind, PositionAbi};
use exhost_runtime::CompiledModule;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Operator, parse_json};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::openapi;
use crate::state::AppState;
use crate::trading::market_of;
use exhost_node::modcheck::{
    CheckError, Takeover, check_fresh, check_takeover, fresh_market_config, fresh_position_config,
};

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

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct UploadQuery {
    /// Dry-run against this market only, and refuse the module if that fails.
    #[param(example = "BTC-PERP")]
    market: Option<String>,
}

fn blocking_failed(error: tokio::task::JoinError) -> ApiError {
    ApiError::internal(format!("a module check did not finish: {error}"))
}

/// Upload a module: validated, dry-run against the live state, stored by its SHA-256. Changes nothing else.
#[utoipa::path(post, path = "/admin/v1/modules", tag = openapi::OPERATOR, params(UploadQuery),
    request_body(content = openapi::WasmBytes, content_type = "application/wasm", description = "The module's bytes"),
    security(("operator_token" = [])),
    responses(
        (status = 200, description = "`{hash, kind: matching|position, abi_version, state_version, size, dry_run}`", body = Object),
        (status = 400, description = "The module failed validation or its dry run (`module_rejected`, with the reason)", body = ErrorBody),
        (status = 404, description = "No such market (`unknown_market`)", body = ErrorBody),
    ))]
pub(super) async fn upload(
    State(state): State<AppState>,
    _: Operator,
    RawQuery(raw): RawQuery,
    ModuleBytes(bytes): ModuleBytes,
) -> ApiResult<Json<Value>> {
    let query: UploadQuery = crate::params::parse_query(raw.as_deref())?;
    let loader = state.loader.clone();
    let compile_bytes = bytes.clone();
    let compiled = tokio::task::spawn_blocking(move || loader.compile(&compile_bytes))
        .await
        .map_err(blocking_failed)?
        .map_err(|rejection| rejected(rejection.to_string()))?;
    let info = compiled.info.clone();
    let live = state.node.state().await?;
    let focus = query.market.as_deref().map(|symbol| market_of(&state, symbol)).transpose()?;

    let (dry_run, compiled) = {
        let loader = state.loader.clone();
        tokio::task::spawn_blocking(move || -> ApiResult<(Vec<Value>, CompiledModule)> {
            let mut results = Vec::new();
            match info.kind {
                ModuleKind::Matching => {
                    check_fresh::<MatchingAbi>(&loader, &compiled, &ModuleLimits::default(), &fresh_market_config())
                        .map_err(|reason| rejected(format!("the module fails on a fresh market: {reason}")))?;
                    for (index, (spec, market_state)) in live.registry.markets.iter().zip(&live.markets).enumerate() {
                        if focus.as_ref().is_some_and(|(id, _)| id.0 as usize != index) {
                            continue;
                        }
                        let outcome = check_takeover::<MatchingAbi>(
                            &loader,
                            ModuleTarget::Market(MarketId(index as u32)),
                            &spec.module_hash,
                            &spec.limits,
                            &market_state.image,
                            &compiled,
                        );
                        if let (Some(_), Err(reason)) = (&focus, &outcome) {
                            return Err(rejected(format!("cannot take over market {}: {reason}", spec.symbol)));
                        }
                        results.push(takeover_json(&spec.symbol, market_state.state_version, &outcome));
                    }
                }
                ModuleKind::Position => {
                    let config =
                        live.registry.position.as_ref().map_or_else(fresh_position_config, |p| p.config.clone());
                    check_fresh::<PositionAbi>(&loader, &compiled, &ModuleLimits::default(), &config)
                        .map_err(|reason| rejected(format!("the module fails on its own: {reason}")))?;
                    if let (Some(install), Some(position_state)) = (&live.registry.position, &live.position) {
                        let outcome = check_takeover::<PositionAbi>(
                            &loader,
                            ModuleTarget::Position,
                            &install.module_hash,
                            &install.limits,
                            &position_state.image,
                            &compiled,
                        );
                        if let Err(reason) = &outcome {
                            return Err(rejected(format!("cannot take over the live positions: {reason}")));
                        }
                        results.push(takeover_json("positions", position_state.state_version, &outcome));
                    }
                }
            }
            Ok((results, compiled))
        })
        .await
        .map_err(blocking_failed)??
    };

    if let Some(cluster) = &state.cluster {
        // In the log before it is stored or answered, so every node has the
        // bytes before any command that names them.
        cluster.replicate_module(info.hash.0, bytes.to_vec()).await.map_err(|reason| {
            ApiError::unavailable("the module could not be put in the cluster's log; upload it again")
                .with_detail(reason)
        })?;
    }
    state.store.put_module(&info.hash.0, &bytes)?;
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

fn takeover_json(target: &str, from_state_version: u32, outcome: &Result<Takeover, CheckError>) -> Value {
    match outcome {
        Ok(takeover) => json!({
            "target": target, "from_state_version": takeover.from_state_version,
            "to_state_version": takeover.to_state_version, "rollback_checked": takeover.rollback_checked,
            "ok": true, "error": null,
        }),
        Err(reason) => json!({
            "target": target, "from_state_version": from_state_version, "ok": false, "error": reason.to_string(),
        }),
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ActivateRequest {
    /// A stored module of the right kind.
    #[schema(value_type = openapi::ModuleHashHex)]
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
    // Every call the swap, and a swap back, will need, on a copy of the live
    // state, before anything is journaled.
    let live = state.node.state().await?;
    let loader = state.loader.clone();
    let checked = tokio::task::spawn_blocking(move || match target {
        ModuleTarget::Market(market) => {
            let index = market.0 as usize;
            let (Some(spec), Some(module_state)) = (live.registry.markets.get(index), live.markets.get(index)) else {
                return Err("no such market".to_string());
            };
            if spec.module_hash == module_hash {
                return Ok(None);
            }
            check_takeover::<MatchingAbi>(
                &loader,
                target,
                &spec.module_hash,
                &spec.limits,
                &module_state.image,
                &compiled,
            )
            .map(Some)
            .map_err(|error| error.to_string())
        }
        ModuleTarget::Position => {
            let (Some(install), Some(module_state)) = (&live.registry.position, &live.position) else {
                return Err("no position module is installed".to_string());
            };
            if install.module_hash == module_hash {
                return Ok(None);
            }
            check_takeover::<PositionAbi>(
                &loader,
                target,
                &install.module_hash,
                &install.limits,
                &module_state.image,
                &compiled,
            )
            .map(Some)
            .map_err(|error| error.to_string())
        }
    })
    .await
    .map_err(blocking_failed)?
    .map_err(rejected)?;
    let applied = state.node.submit(Command::ActivateModule { target, module_hash }).await?;
    for event in &applied.events {
        match &event.body {
            EventBody::ModuleActivated { from, to, migrated, .. } => {
                return Ok(Json(json!({
                    "seq": applied.seq, "previous": from.to_hex(), "current": to.to_hex(), "migrated": migrated,
                    "rollback_checked": checked.as_ref().is_some_and(|takeover| takeover.rollback_checked),
                })));
            }
            EventBody::ModuleActivationRefused { reason, .. } => return Err(rejected(reason.clone())),
            EventBody::CommandRejected { reason } => return Err(ApiError::refused(*reason)),
            _ => {}
        }
    }
    Err(ApiError::internal("the activation reported nothing"))
}

/// Hot swap a market's matching module, at the next sequence number.
#[utoipa::path(post, path = "/admin/v1/markets/{symbol}/module", tag = openapi::OPERATOR, params(crate::market::SymbolPath),
    request_body = ActivateRequest, security(("operator_token" = [])),
    responses(
        (status = 200, description = "`{seq, previous, current, migrated}`", body = Object),
        (status = 400, description = "The module was refused (`module_rejected`, with the reason); the old one stays", body = ErrorBody),
    ))]
pub(super) async fn activate_market(
    State(state): State<AppState>,
    _: Operator,
    Path(symbol): Path<String>,
    crate::auth::Body(body): crate::auth::Body,
) -> ApiResult<Json<Value>> {
    let request: ActivateRequest = parse_json(&body)?;
    let (market, _) = market_of(&state, &symbol)?;
    activate(&state, ModuleTarget::Market(market), ModuleKind::Matching, &request.hash).await
}

/// Hot swap the position module, at the next sequence number.
#[utoipa::path(post, path = "/admin/v1/position-module", tag = openapi::OPERATOR, request_body = ActivateRequest,
    security(("operator_token" = [])),
    responses(
        (status = 200, description = "`{seq, previous, current, migrated}`", body = Object),
        (status = 404, description = "No such module is stored", body = ErrorBody),
    ))]
pub(super) async fn activate_position(
    State(state): State<AppState>,
    _: Operator,
    crate::auth::Body(body): crate::auth::Body,
) -> ApiResult<Json<Value>> {
    let request: ActivateRequest = parse_json(&body)?;
    activate(&state, ModuleTarget::Position, ModuleKind::Position, &request.hash).await
}

/// Every stored module and the activation history.
#[utoipa::path(get, path = "/admin/v1/modules", tag = openapi::OPERATOR,
    security(("operator_token" = [])),
    responses((status = 200, description = "`{modules: [{hash, kind, abi_version, size, active_for}], activations: [{seq, target, from, to}]}`", body = Object)))]
pub(super) async fn list(State(state): State<AppState>, _: Operator) -> ApiResult<Json<Value>> {
    let modules = state.store.modules()?;
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

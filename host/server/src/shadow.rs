//! Shadow runs for operators: `POST/GET/DELETE /admin/v1/markets/{symbol}/shadow`.
//!
//! A stored candidate matching module starts from the market's live state
//! and receives every later call of the market's module beside it, on a
//! thread of its own ([`exhost_node::Node::start_shadow`]). Nothing is
//! journaled and nothing anyone else sees changes; a restart ends it.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use exhost_engine::{Event, EventBody, LoadError, MarketId, ModuleHash, ShadowError};
use exhost_guest_sdk::{MatchingEvent, ModuleKind};
use exhost_node::{Directory, ShadowPhase, ShadowStartError, ShadowStatus};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::auth::{Operator, parse_json};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::openapi;
use crate::state::AppState;
use crate::trading::market_of;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShadowRequest {
    /// The stored matching module to run beside the live one (64 hex digits).
    pub hash: String,
}

fn rejected(reason: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "module_rejected", reason)
}

fn no_shadow(symbol: &str) -> ApiError {
    ApiError::not_found(format!("no shadow run on {symbol}; start one with POST"))
}

/// Start a shadow run of a stored matching module on a market, from its live state now.
#[utoipa::path(post, path = "/admin/v1/markets/{symbol}/shadow", tag = openapi::OPERATOR, params(crate::market::SymbolPath),
    request_body = ShadowRequest, security(("operator_token" = [])),
    responses(
        (status = 200, description = "The run's report, nothing compared yet", body = Object),
        (status = 400, description = "The candidate cannot take over the live state (`module_rejected`, with the reason)", body = ErrorBody),
        (status = 404, description = "No such market, or no such module is stored", body = ErrorBody),
        (status = 409, description = "A shadow run is already going on the market (`shadow_running`)", body = ErrorBody),
    ))]
pub(super) async fn start(
    State(state): State<AppState>,
    _: Operator,
    Path(symbol): Path<String>,
    crate::auth::Body(body): crate::auth::Body,
) -> ApiResult<Json<Value>> {
    let request: ShadowRequest = parse_json(&body)?;
    let (market, _) = market_of(&state, &symbol)?;
    let candidate =
        ModuleHash::from_hex(&request.hash).ok_or_else(|| ApiError::bad_request("hash must be 64 hex digits"))?;
    let compiled = state.loader.compiled(&candidate).map_err(|error| match error {
        LoadError::UnknownModule(_) => ApiError::not_found(format!("no module {candidate} is stored; upload it first")),
        other => rejected(other.to_string()),
    })?;
    if compiled.info.kind != ModuleKind::Matching {
        return Err(rejected(format!(
            "{candidate} is a {} module, not a matching module",
            compiled.info.kind.as_str()
        )));
    }
    let status =
        state.node.start_shadow(market, candidate, state.loader.clone()).await.map_err(|error| match error {
            ShadowStartError::Running => ApiError::new(
                StatusCode::CONFLICT,
                "shadow_running",
                format!("a shadow run is already going on {symbol}; DELETE it first"),
            ),
            ShadowStartError::UnknownMarket => ApiError::unknown_market(&symbol),
            ShadowStartError::Refused(ShadowError::TakeOver { source: LoadError::UnknownModule(_), .. }) => {
                ApiError::not_found(format!("no module {candidate} is stored; upload it first"))
            }
            ShadowStartError::Refused(refusal) => rejected(format!("cannot shadow {symbol}: {refusal}")),
            ShadowStartError::Image(message) | ShadowStartError::Thread(message) => ApiError::internal(message),
            ShadowStartError::Stopped => ApiError::unavailable("the node is stopping"),
        })?;
    tracing::info!(%symbol, %candidate, from_seq = status.report.from_seq, "shadow run started");
    Ok(json_of(&state, &status, market))
}

/// What the shadow run on a market found so far.
#[utoipa::path(get, path = "/admin/v1/markets/{symbol}/shadow", tag = openapi::OPERATOR, params(crate::market::SymbolPath),
    security(("operator_token" = [])),
    responses(
        (status = 200, description = "`{hash, live_hash, state, from_seq, last_seq, commands, divergences, first_divergence: {seq, live_events, shadow_events} | null, live_fuel, shadow_fuel, faults, last_fault}`", body = Object),
        (status = 404, description = "No shadow run on the market", body = ErrorBody),
    ))]
pub(super) async fn report(
    State(state): State<AppState>,
    _: Operator,
    Path(symbol): Path<String>,
) -> ApiResult<Json<Value>> {
    let (market, _) = market_of(&state, &symbol)?;
    let status = state.node.shadow_status(market).ok_or_else(|| no_shadow(&symbol))?;
    Ok(json_of(&state, &status, market))
}

/// Stop the shadow run on a market, once it has compared what it was sent; its last report.
#[utoipa::path(delete, path = "/admin/v1/markets/{symbol}/shadow", tag = openapi::OPERATOR, params(crate::market::SymbolPath),
    security(("operator_token" = [])),
    responses(
        (status = 200, description = "The run's last report, `state: stopped`", body = Object),
        (status = 404, description = "No shadow run on the market", body = ErrorBody),
    ))]
pub(super) async fn stop(
    State(state): State<AppState>,
    _: Operator,
    Path(symbol): Path<String>,
) -> ApiResult<Json<Value>> {
    let (market, _) = market_of(&state, &symbol)?;
    let status = state.node.stop_shadow(market).await.ok_or_else(|| no_shadow(&symbol))?;
    tracing::info!(%symbol, divergences = status.report.divergences, "shadow run stopped");
    Ok(json_of(&state, &status, market))
}

fn json_of(state: &AppState, status: &ShadowStatus, market: MarketId) -> Json<Value> {
    let directory = state.node.directory.read().unwrap_or_else(|p| p.into_inner());
    Json(status_json(status, market, &directory))
}

/// A book's events as the event stream shows them.
fn events_json(events: &[MatchingEvent], market: MarketId, seq: u64, ts_ns: u64, directory: &Directory) -> Vec<Value> {
    events
        .iter()
        .enumerate()
        .map(|(idx, event)| {
            let event =
                Event { seq, idx: idx as u32, ts_ns, body: EventBody::Matching { market, event: event.clone() } };
            crate::views::event_json(&event, directory)
        })
        .collect()
}

fn status_json(status: &ShadowStatus, market: MarketId, directory: &Directory) -> Value {
    let report = &status.report;
    let (phase, ended_reason) = match &status.phase {
        ShadowPhase::Running => ("running", None),
        ShadowPhase::Stopped => ("stopped", None),
        ShadowPhase::Ended(reason) => ("ended", Some(reason.clone())),
    };
    let first_divergence = report.first_divergence.as_ref().map(|divergence| {
        json!({
            "seq": divergence.seq,
            "live_events": events_json(&divergence.live_events, market, divergence.seq, divergence.ts_ns, directory),
            "shadow_events": events_json(&divergence.shadow_events, market, divergence.seq, divergence.ts_ns, directory),
            "shadow_fault": divergence.shadow_fault,
        })
    });
    json!({
        "symbol": directory.markets.get(market.0 as usize).map(|spec| spec.symbol.clone()),
        "hash": report.candidate.to_hex(),
        "live_hash": report.live_hash.to_hex(),
        "state": phase,
        "ended_reason": ended_reason,
        "from_seq": report.from_seq,
        "last_seq": report.last_seq,
        "commands": report.commands,
        "divergences": report.divergences,
        "first_divergence": first_divergence,
        "live_fuel": report.live_fuel,
        "shadow_fuel": report.shadow_fuel,
        "faults": report.faults,
        "last_fault": report.last_fault.as_ref().map(|fault| json!({ "seq": fault.seq, "message": fault.message })),
    })
}

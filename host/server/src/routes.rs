//! The routes of the API, and the handlers of the host as a whole.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use serde_json::json;

use crate::error::ApiError;
use crate::state::AppState;
use crate::{accounts, admin, checkpoint, forward, market, modules, openapi, trading, ws};

/// A request is handled once the read side has written everything the
/// engine had applied when it came (`ReadSide::barrier`), so a command that
/// was answered is in every read made after its answer; a cancel finds the
/// order that was just placed. Order entry is answered by the engine and
/// reads nothing, and liveness and metrics must answer while the read side
/// is slow: they do not wait.
async fn read_after_applied(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let path = request.uri().path();
    let order_entry = request.method() == axum::http::Method::POST && path == "/v1/orders";
    let waits = !order_entry && !matches!(path, "/healthz" | "/metrics" | "/ws");
    if waits {
        state.node.read_side.barrier().await;
    }
    next.run(request).await
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/ws", get(ws::upgrade))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(|| async { axum::Json(openapi::document().clone()) }))
        .route("/v1/markets", get(market::list_markets))
        .route("/v1/markets/{symbol}/book", get(market::book))
        .route("/v1/markets/{symbol}/trades", get(market::trades))
        .route("/v1/orders", post(trading::place).get(trading::open_orders).delete(trading::mass_cancel))
        .route("/v1/orders/{order_id}", delete(trading::cancel).patch(trading::amend))
        .route("/v1/orders/by-client-id/{client_order_id}", get(trading::by_client_id))
        .route("/v1/withdrawals", post(accounts::withdraw))
        .route("/v1/account", get(accounts::account))
        .route("/v1/account/history", get(accounts::history))
        .route("/admin/v1/ledger", get(accounts::ledger))
        .route("/admin/v1/mark-prices", post(accounts::mark_price))
        .route("/admin/v1/funding", post(accounts::funding))
        .route("/admin/v1/insurance-fund", post(accounts::insurance_fund))
        .route("/admin/v1/accounts/{user_id}", get(accounts::admin_account))
        .route("/admin/v1/users", post(admin::create_user))
        .route("/admin/v1/deposits", post(admin::deposit))
        .route("/admin/v1/markets", post(admin::create_market))
        .route("/admin/v1/modules", get(modules::list).post(modules::upload))
        .route("/admin/v1/markets/{symbol}/module", post(modules::activate_market))
        .route("/admin/v1/position-module", post(modules::activate_position))
        .route("/admin/v1/snapshots", post(admin::snapshot))
        .route("/admin/v1/events", get(admin::events))
        .route("/admin/v1/cluster", get(forward::status))
        .route("/admin/v1/checkpoint", get(checkpoint::send))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), read_after_applied))
        .layer(axum::middleware::from_fn_with_state(state.clone(), forward::forward_writes))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this endpoint does not take that method")
}

/// Ok only while the node takes commands and its engine is not stuck on one
/// piece of work (a watchdog: the engine thread cannot report on itself).
async fn healthz(State(state): State<AppState>) -> axum::response::Response {
    match state.node.health.problem().map(|halt| halt.to_string()).or_else(|| state.node.health.stall()) {
        None => axum::Json(json!({ "status": "ok" })).into_response(),
        Some(problem) => ApiError::unavailable(problem).into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> axum::response::Response {
    match &state.metrics {
        Some(handle) => {
            // Read here, from outside the engine thread: it may be the one that is stuck.
            let health = &state.node.health;
            metrics::gauge!("exhost_engine_busy_seconds").set(health.engine_busy().as_secs_f64());
            metrics::gauge!("exhost_engine_stalled").set(if health.stall().is_some() { 1.0 } else { 0.0 });
            forward::record_metrics(&state);
            // RocksDB's memory is read here, when asked for, not on the engine thread.
            if let Ok(store) = state.store.memory() {
                for (part, bytes) in [
                    ("memtables", store.memtables),
                    ("memtables_pinned", store.memtables_pinned),
                    ("table_readers", store.table_readers),
                    ("block_cache", store.block_cache),
                    ("block_cache_pinned", store.block_cache_pinned),
                ] {
                    metrics::gauge!("exhost_store_memory_bytes", "part" => part).set(bytes as f64);
                }
            }
            ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response()
        }
        None => ApiError::not_found("metrics are not enabled in this process").into_response(),
    }
}

//! The routes of the API, and the handlers of the host as a whole.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::state::AppState;
use crate::{accounts, admin, checkpoint, console, forward, market, modules, openapi, shadow, trading, ws};

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
    let page = path.starts_with("/console") || path.starts_with("/docs") || path == "/openapi.json";
    let waits = !order_entry && !page && !matches!(path, "/healthz" | "/metrics" | "/ws");
    if waits {
        state.node.read_side.barrier().await;
    }
    next.run(request).await
}

/// The API's routes and its OpenAPI document, from the same declarations:
/// every route is registered through `routes!`, which reads the handler's
/// `#[utoipa::path]` (a test keeps `.route(` out of here, see
/// `tests/architecture.rs`).
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let api = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
        .routes(routes!(ws::upgrade))
        .routes(routes!(console::enter))
        .routes(routes!(console::index))
        .routes(routes!(console::index_html))
        .routes(routes!(console::asset))
        .routes(routes!(market::list_markets))
        .routes(routes!(market::book))
        .routes(routes!(market::trades))
        .routes(routes!(market::ticker))
        .routes(routes!(trading::place, trading::open_orders, trading::mass_cancel))
        .routes(routes!(trading::cancel, trading::amend))
        .routes(routes!(trading::by_client_id))
        .routes(routes!(accounts::withdraw))
        .routes(routes!(accounts::account))
        .routes(routes!(accounts::history))
        .routes(routes!(accounts::ledger))
        .routes(routes!(accounts::mark_price))
        .routes(routes!(accounts::funding))
        .routes(routes!(accounts::index_price))
        .routes(routes!(accounts::insurance_fund))
        .routes(routes!(accounts::admin_account))
        .routes(routes!(admin::create_user, admin::list_users))
        .routes(routes!(admin::deposit))
        .routes(routes!(admin::create_market))
        .routes(routes!(modules::list, modules::upload))
        .routes(routes!(modules::activate_market))
        .routes(routes!(modules::activate_position))
        .routes(routes!(shadow::start, shadow::report, shadow::stop))
        .routes(routes!(admin::snapshot))
        .routes(routes!(admin::status))
        .routes(routes!(admin::events))
        .routes(routes!(forward::status))
        .routes(routes!(checkpoint::send));
    let (router, mut document) = api.split_for_parts();
    // After the routes: the document's own modifiers run before they are added.
    openapi::add_common_errors(&mut document);
    (router, document)
}

/// The document `GET /openapi.json` serves, made once by [`router`].
static DOCUMENT: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();

/// The whole API, `/docs` (Swagger UI rendering `/openapi.json`) and the console.
pub fn router(state: AppState) -> Router {
    let (api, document) = api();
    let _ = DOCUMENT.set(openapi::document(&document));
    api.merge(docs())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), read_after_applied))
        .layer(axum::middleware::from_fn_with_state(state.clone(), forward::forward_writes))
        .with_state(state)
}

/// `/docs`: Swagger UI (its assets are in the binary, vendored by the crate)
/// pointed at `/openapi.json`. A page for people, not part of the API.
fn docs() -> Router<AppState> {
    let config = utoipa_swagger_ui::Config::new(["/openapi.json"])
        .try_it_out_enabled(false)
        .display_request_duration(true)
        .deep_linking(true);
    Router::from(utoipa_swagger_ui::SwaggerUi::new("/docs").config(config))
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = openapi::HOST,
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", body = Object)))]
async fn openapi_json() -> axum::Json<serde_json::Value> {
    axum::Json(DOCUMENT.get().cloned().unwrap_or_default())
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this endpoint does not take that method")
}

/// Ok only while the node takes commands and its engine is not stuck on one
/// piece of work (a watchdog: the engine thread cannot report on itself).
#[utoipa::path(get, path = "/healthz", tag = openapi::HOST, responses(
    (status = 200, description = "`{\"status\": \"ok\"}`: the host takes commands", body = Object),
    (status = 503, description = "Why the host does not take commands (halted, or its engine stalled)", body = crate::error::ErrorBody),
))]
async fn healthz(State(state): State<AppState>) -> axum::response::Response {
    match state.node.health.problem().map(|halt| halt.to_string()).or_else(|| state.node.health.stall()) {
        None => axum::Json(json!({ "status": "ok" })).into_response(),
        Some(problem) => ApiError::unavailable(problem).into_response(),
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = openapi::HOST, responses(
    (status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain; version=0.0.4"),
    (status = 404, description = "Metrics are not enabled in this process", body = crate::error::ErrorBody),
))]
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

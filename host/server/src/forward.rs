//! Writes that reach a node which is not active are forwarded, as they came
//! (headers, signature, body), to the active node's HTTP address, so every
//! rule of the API (authentication, replay protection, rate limits) is
//! applied in one place, by the node that sequences them. And the cluster's
//! operator endpoint and metrics.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::auth::Operator;
use crate::cluster::Role;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Marks a forwarded request, so it is forwarded at most once.
const FORWARDED_BY: &str = "x-exhost-forwarded-by";
/// How long a forwarded write may take before its client is told the outcome is unknown.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(15);

/// Requests a node answers itself, whatever its role: reads, the event
/// socket, and operator work on its own data directory.
fn served_locally(method: &Method, path: &str) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) || path == "/admin/v1/snapshots"
}

/// Middleware: on a node that is not active, send writes to the active node.
pub async fn forward_writes(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(cluster) = state.cluster.clone() else { return next.run(request).await };
    if served_locally(request.method(), request.uri().path()) {
        return next.run(request).await;
    }
    let status = cluster.status();
    if status.role == Role::Active {
        return next.run(request).await;
    }
    if request.headers().contains_key(FORWARDED_BY) {
        return ApiError::unavailable(
            "this write was forwarded to a node that is no longer active, so it was not recorded; send it again",
        )
        .into_response();
    }
    let (Some(active_http), Some(forwarder)) = (status.active_http, state.forwarder.clone()) else {
        return ApiError::unavailable(
            "the cluster has no active node right now (it is choosing one), so this write was not recorded; \
             send it again in a moment",
        )
        .into_response();
    };
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let uri: Uri = match format!("http://{active_http}{path}").parse() {
        Ok(uri) => uri,
        Err(_) => {
            return ApiError::internal(format!("the active node's address {active_http:?} is not usable"))
                .into_response();
        }
    };
    parts.uri = uri;
    parts.headers.remove(axum::http::header::HOST);
    if let Ok(value) = HeaderValue::from_str(&status.node) {
        parts.headers.insert(FORWARDED_BY, value);
    }
    let forwarded = Request::from_parts(parts, body);
    match tokio::time::timeout(FORWARD_TIMEOUT, forwarder.request(forwarded)).await {
        Ok(Ok(response)) => response.map(Body::new),
        Ok(Err(error)) if error.is_connect() => ApiError::unavailable(format!(
            "the active node {} could not be reached, so this write was not recorded; send it again",
            status.active_node.unwrap_or_default()
        ))
        .with_detail(error.to_string())
        .into_response(),
        Ok(Err(error)) => ApiError::unavailable(
            "the connection to the active node broke while it had this write, so whether it was recorded is \
             unknown; look it up (by client order id) before sending it again",
        )
        .with_detail(error.to_string())
        .into_response(),
        Err(_) => ApiError::unavailable(
            "the active node did not answer in time, so whether this write was recorded is unknown; look it up \
             (by client order id) before sending it again",
        )
        .into_response(),
    }
}

/// This node's place in its cluster (`exhost serve --cluster`).
#[utoipa::path(get, path = "/admin/v1/cluster", tag = crate::openapi::OPERATOR,
    security(("operator_token" = [])),
    responses((status = 200, description = "`{node, role: active|standby|replica, active_node, applied_seq, log_seq, term}`; a host without a cluster is `active`, with `node` and `active_node` null", body = Object)))]
pub(crate) async fn status(State(state): State<AppState>, _: Operator) -> ApiResult<axum::Json<Value>> {
    Ok(axum::Json(match &state.cluster {
        Some(cluster) => {
            let status = cluster.status();
            json!({
                "node": status.node,
                "role": status.role,
                "active_node": status.active_node,
                "applied_seq": status.applied_seq,
                "log_seq": status.log_seq,
                "term": status.term,
            })
        }
        None => {
            // One process is the whole cluster: it is active, and its journal is the log.
            let seq = state.node.health.applied_seq();
            json!({
                "node": null,
                "role": "active",
                "active_node": null,
                "applied_seq": seq,
                "log_seq": state.store.journal_last_seq()?.unwrap_or(0),
                "term": 0,
            })
        }
    }))
}

/// The cluster's figures, for `/metrics`.
pub(crate) fn record_metrics(state: &AppState) {
    let Some(cluster) = &state.cluster else { return };
    let status = cluster.status();
    for role in [Role::Active, Role::Standby, Role::Replica] {
        metrics::gauge!("exhost_cluster_role", "role" => role.as_str()).set(if status.role == role {
            1.0
        } else {
            0.0
        });
    }
    metrics::gauge!("exhost_cluster_applied_seq").set(status.applied_seq as f64);
    metrics::gauge!("exhost_cluster_log_seq").set(status.log_seq as f64);
    metrics::gauge!("exhost_cluster_term").set(status.term as f64);
}

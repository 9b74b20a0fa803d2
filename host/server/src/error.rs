//! The one error type of the HTTP edge. Every 4xx/5xx body has the shape
//! `{"error": {"code": "<snake_case>", "message": "..."}}`; 4xx are the
//! client's business and not logged. A 5xx body never carries internal
//! text (paths, storage errors, module messages): it says what the client
//! can know and gives an error id, and the log line with the same id holds
//! the details.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use exhost_engine::{DecimalError, EngineError};
use exhost_guest_sdk::Reason;
use exhost_store::StoreError;

use exhost_node::secrets::SealError;
use exhost_node::{NodeError, RecoveryError, SubmitError};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    /// What the client is told.
    pub message: String,
    /// What only the log is told (5xx).
    pub detail: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), detail: None }
    }

    /// Keep `detail` for the log only.
    pub fn with_detail(mut self, detail: impl Into<String>) -> ApiError {
        self.detail = Some(detail.into());
        self
    }

    pub fn rate_limited(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unknown_market(symbol: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "unknown_market", format!("no market {symbol:?}"))
    }

    /// Something went wrong inside the host; `detail` goes to the log only.
    pub fn internal(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the host could not answer this request")
            .with_detail(detail)
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// A decimal field that failed to parse: `invalid_price`, `invalid_quantity` or `bad_request`.
    pub fn decimal(code: &'static str, field: &str, value: &str, step: &str, error: DecimalError) -> ApiError {
        let message = match error {
            DecimalError::OffStep => format!("{field} {value:?} is not a multiple of {step}"),
            DecimalError::TooPrecise => format!("{field} {value:?} has more decimals than {step}"),
            other => format!("{field} {value:?} {other}"),
        };
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// A command the engine or a module refused outright.
    pub fn refused(reason: Reason) -> ApiError {
        let status = match reason {
            Reason::UnknownOrder | Reason::UnknownMarket | Reason::UnknownUser => StatusCode::NOT_FOUND,
            Reason::MarketExists | Reason::UnsupportedByModule => StatusCode::CONFLICT,
            Reason::ModuleTrap | Reason::ModuleOutOfFuel | Reason::ModuleProtocol | Reason::ModuleMemoryLimit => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            _ => StatusCode::BAD_REQUEST,
        };
        let code = match reason {
            Reason::UnknownOrder | Reason::UnknownUser => "not_found",
            Reason::ModuleTrap | Reason::ModuleOutOfFuel | Reason::ModuleProtocol | Reason::ModuleMemoryLimit => {
                "module_rejected"
            }
            other => other.as_str(),
        };
        ApiError::new(status, code, format!("refused: {}", reason.as_str()))
    }
}

impl From<SubmitError> for ApiError {
    fn from(error: SubmitError) -> ApiError {
        match error {
            SubmitError::Overloaded => ApiError::rate_limited(error.to_string()),
            SubmitError::Journal(detail) => ApiError::unavailable(
                "the journal could not be written, so whether this command was recorded is unknown; \
                 the host takes no commands until it is restarted. Once it is back, look the order up \
                 (GET /v1/orders/by-client-id/{client_order_id}) before sending it again",
            )
            .with_detail(detail.to_string()),
            SubmitError::Halted(detail) => ApiError::unavailable(
                "the host has stopped taking commands until it is restarted; this command was not recorded",
            )
            .with_detail(detail.to_string()),
            SubmitError::NotApplied(detail) => ApiError::unavailable(
                "this command is in the journal but the host stopped before applying it; it takes effect \
                 when the host restarts, so do not send it again",
            )
            .with_detail(detail.to_string()),
            SubmitError::ShuttingDown => ApiError::unavailable(
                "the host is shutting down; whether this command was recorded is unknown until it is back \
                 (look the order up by its client order id before sending it again)",
            ),
            SubmitError::NotActive(detail) => ApiError::unavailable(
                "this node is not the cluster's active node, so the command was not recorded; send it again \
                 (to any node: writes are forwarded to the active one)",
            )
            .with_detail(detail),
            SubmitError::Unconfirmed(detail) => ApiError::unavailable(
                "the replicated log did not confirm this command, so whether it was recorded is unknown; \
                 the cluster is changing its active node. Look the order up by its client order id on any \
                 node before sending it again",
            )
            .with_detail(detail),
        }
    }
}

/// A store or engine failure behind a read: the host's fault, detail logged only.
impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        ApiError::internal(error.to_string())
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> ApiError {
        ApiError::internal(error.to_string())
    }
}

impl From<NodeError> for ApiError {
    fn from(error: NodeError) -> ApiError {
        match error {
            NodeError::Stopped => ApiError::unavailable(error.to_string()),
            NodeError::Engine(_) | NodeError::Store(_) | NodeError::Thread(_) => ApiError::internal(error.to_string()),
        }
    }
}

/// A point-in-time rebuild that could not finish: the host's fault (its
/// journal or a module), detail logged only.
impl From<RecoveryError> for ApiError {
    fn from(error: RecoveryError) -> ApiError {
        ApiError::internal(error.to_string())
    }
}

/// Sealing a new user's secret failed: nothing was journaled.
impl From<SealError> for ApiError {
    fn from(error: SealError) -> ApiError {
        ApiError::internal(error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = if self.status.is_server_error() {
            let id = error_id();
            // Logging must never fail a request: tracing's writer ignores write errors.
            tracing::error!(code = self.code, %id, message = %self.message, detail = self.detail.as_deref().unwrap_or(""), "request failed");
            format!("{} (error id {id})", self.message)
        } else {
            self.message
        };
        (self.status, Json(ErrorBody { error: ErrorDetail { code: self.code, message } })).into_response()
    }
}

/// The body of every error answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// What went wrong, in snake_case (`bad_request`, `unauthorized`, `unknown_market`, `invalid_price`, ...).
    #[schema(pattern = "^[a-z][a-z0-9_]*$")]
    pub code: &'static str,
    /// For a person; a 5xx message ends with the error id of its log line.
    pub message: String,
}

/// A short random id that ties a 5xx answer to its log line.
fn error_id() -> String {
    let mut bytes = [0u8; 6];
    if getrandom::fill(&mut bytes).is_err() {
        static FALLBACK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        bytes.copy_from_slice(&FALLBACK.fetch_add(1, std::sync::atomic::Ordering::Relaxed).to_be_bytes()[2..]);
    }
    hex::encode(bytes)
}

pub type ApiResult<T> = Result<T, ApiError>;

//! The one error type of the HTTP edge. Every 4xx/5xx body has the shape
//! `{"error": {"code": "<snake_case>", "message": "..."}}`; 4xx are the
//! client's business and not logged, 5xx are logged.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use exhost_engine::DecimalError;
use exhost_guest_sdk::Reason;
use serde_json::json;

use crate::node::SubmitError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into() }
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

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
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
            Reason::MarketExists => StatusCode::CONFLICT,
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
            SubmitError::Overloaded => ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", error.to_string()),
            other => ApiError::unavailable(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, message = %self.message, "request failed");
        }
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        (self.status, Json(body)).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

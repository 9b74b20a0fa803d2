//! Request bodies and authentication, as extractors.
//!
//! Bodies are read here, under the configured size limit, so that an
//! oversized body is a JSON `payload_too_large` like every other error, and so
//! the trader signature can cover the exact bytes received.

use axum::body::{Bytes, to_bytes};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use exhost_guest_sdk::UserId;
use hmac::{Hmac, KeyInit, Mac};
use serde::de::DeserializeOwned;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;

/// The raw body, at most `body_bytes_max` long.
pub struct Body(pub Bytes);

async fn read_body(request: Request, limit: usize) -> Result<Bytes, ApiError> {
    to_bytes(request.into_body(), limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request bodies are limited to {limit} bytes"),
        )
    })
}

impl FromRequest<AppState> for Body {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(Body(read_body(request, state.config.body_bytes_max).await?))
    }
}

/// Decode a JSON body, or say exactly what is wrong with it.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}".as_slice() } else { bytes };
    serde_json::from_slice(bytes).map_err(|error| ApiError::bad_request(format!("invalid JSON body: {error}")))
}

/// The operator, proven by `Authorization: Bearer <token>`.
pub struct Operator;

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("operator endpoints need `Authorization: Bearer <token>`"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer <token>`"))?;
        if bool::from(token.as_bytes().ct_eq(state.admin_token.as_bytes())) {
            Ok(Operator)
        } else {
            Err(ApiError::forbidden("the operator token is not valid"))
        }
    }
}

/// A trader, proven by an HMAC signature over the request, with the body it signed.
pub struct Trader {
    pub user_id: UserId,
    pub body: Bytes,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, ApiError> {
    headers
        .get(name)
        .ok_or_else(|| ApiError::unauthorized(format!("missing {name} header")))?
        .to_str()
        .map_err(|_| ApiError::unauthorized(format!("{name} is not text")))
}

impl FromRequest<AppState> for Trader {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        let api_key = header(&parts.headers, "x-api-key")?.to_owned();
        let timestamp = header(&parts.headers, "x-timestamp")?.to_owned();
        let signature = header(&parts.headers, "x-signature")?.to_owned();
        let method = parts.method.as_str().to_owned();
        let path = parts.uri.path_and_query().map(|pq| pq.as_str().to_owned()).unwrap_or_else(|| "/".into());
        let body = read_body(Request::from_parts(parts, body), state.config.body_bytes_max).await?;
        let user_id = state.verify_signature(&api_key, &timestamp, &signature, &method, &path, &body)?;
        Ok(Trader { user_id, body })
    }
}

impl AppState {
    /// Check a trader signature: a known key, a fresh timestamp, and
    /// HMAC-SHA256(secret, timestamp + METHOD + path_with_query + body).
    pub fn verify_signature(
        &self,
        api_key: &str,
        timestamp: &str,
        signature_hex: &str,
        method: &str,
        path_with_query: &str,
        body: &[u8],
    ) -> Result<UserId, ApiError> {
        let (user_id, secret) = self
            .node
            .directory
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .users
            .get(api_key)
            .cloned()
            .ok_or_else(|| ApiError::unauthorized("unknown API key"))?;
        let timestamp_ms: i64 = timestamp
            .parse()
            .map_err(|_| ApiError::unauthorized("X-TIMESTAMP must be milliseconds since the Unix epoch"))?;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        if (now_ms - timestamp_ms).unsigned_abs() > self.config.signature_window_ms {
            return Err(ApiError::unauthorized(format!(
                "X-TIMESTAMP is {} ms away from the host clock (allowed: {} ms)",
                now_ms - timestamp_ms,
                self.config.signature_window_ms
            )));
        }
        let signature =
            hex::decode(signature_hex).map_err(|_| ApiError::unauthorized("X-SIGNATURE must be lowercase hex"))?;
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|_| ApiError::internal("bad key"))?;
        mac.update(timestamp.as_bytes());
        mac.update(method.as_bytes());
        mac.update(path_with_query.as_bytes());
        mac.update(body);
        mac.verify_slice(&signature).map_err(|_| ApiError::unauthorized("signature does not match"))?;
        Ok(user_id)
    }
}

/// The signature a client computes; shared with tests and examples.
pub fn sign(secret: &str, timestamp: &str, method: &str, path_with_query: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(method.as_bytes());
    mac.update(path_with_query.as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

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

use crate::error::ApiError;
use crate::gate::Replay;
use crate::state::AppState;

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

/// A trader, proven by a signature over the request, with the body it signed.
pub struct Trader {
    pub user_id: UserId,
    pub api_key: String,
    pub body: Bytes,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, ApiError> {
    headers
        .get(name)
        .ok_or_else(|| ApiError::unauthorized(format!("missing {name} header")))?
        .to_str()
        .map_err(|_| ApiError::unauthorized(format!("{name} is not text")))
}

/// The header that chooses how the signed bytes are laid out.
pub const SIGNATURE_VERSION_HEADER: &str = "x-signature-version";

/// How the signed bytes of a request are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureVersion {
    /// `timestamp + METHOD + path_with_query + body`, run together: accepted
    /// only where no part can be moved into another (see [`check_unambiguous`]).
    V1,
    /// `timestamp \n METHOD \n path_with_query \n body`.
    V2,
}

impl SignatureVersion {
    fn of(headers: &HeaderMap) -> Result<SignatureVersion, ApiError> {
        match headers.get(SIGNATURE_VERSION_HEADER).map(|value| value.to_str()) {
            None => Ok(SignatureVersion::V1),
            Some(Ok("1")) => Ok(SignatureVersion::V1),
            Some(Ok("2")) => Ok(SignatureVersion::V2),
            Some(_) => Err(ApiError::bad_request("X-SIGNATURE-VERSION must be 1 or 2")),
        }
    }
}

/// The bytes a request's signature covers.
pub fn signed_message(version: SignatureVersion, timestamp: &str, method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(timestamp.len() + method.len() + path.len() + body.len() + 3);
    for (index, part) in [timestamp.as_bytes(), method.as_bytes(), path.as_bytes(), body].into_iter().enumerate() {
        if index > 0 && version == SignatureVersion::V2 {
            message.push(b'\n');
        }
        message.extend_from_slice(part);
    }
    message
}

/// The story (finding 4): a signed `DELETE /v1/orders/40` with an empty body,
/// sent as `DELETE /v1/orders` with the body `/40`, verified (the run-together
/// bytes are the same) and cancelled every order of the user. So a request
/// that takes no body must have none, whatever the version, and a version 1
/// POST or PATCH body must be exactly one JSON object, which no path can end
/// in. Checked before the signature, so nothing is learned from it.
pub fn check_unambiguous(version: SignatureVersion, method: &str, body: &[u8]) -> Result<(), ApiError> {
    match method {
        "GET" | "DELETE" | "HEAD" if !body.is_empty() => {
            Err(ApiError::bad_request(format!("a {method} request takes no body; send it without one")))
        }
        "POST" | "PATCH" | "PUT" if version == SignatureVersion::V1 => {
            let trimmed = body.trim_ascii();
            let one_object = trimmed.first() == Some(&b'{')
                && serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(trimmed).is_ok();
            if one_object {
                Ok(())
            } else {
                Err(ApiError::bad_request(
                    "with signature version 1 a POST or PATCH body must be one JSON object; sign with X-SIGNATURE-VERSION: 2 for anything else",
                ))
            }
        }
        _ => Ok(()),
    }
}

impl FromRequest<AppState> for Trader {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        let api_key = header(&parts.headers, "x-api-key")?.to_owned();
        let timestamp = header(&parts.headers, "x-timestamp")?.to_owned();
        let signature = header(&parts.headers, "x-signature")?.to_owned();
        let version = SignatureVersion::of(&parts.headers)?;
        let method = parts.method.as_str().to_owned();
        let path = parts.uri.path_and_query().map(|pq| pq.as_str().to_owned()).unwrap_or_else(|| "/".into());
        let body = read_body(Request::from_parts(parts, body), state.config.body_bytes_max).await?;
        check_unambiguous(version, &method, &body)?;
        let message = signed_message(version, &timestamp, &method, &path, &body);
        let proven = state.authenticate(&api_key, &timestamp, &signature, &message)?;
        if !state.gate.limits.allow(&api_key) {
            return Err(ApiError::rate_limited("too many requests from this API key; slow down"));
        }
        if method != "GET" && method != "HEAD" {
            state.first_use(&api_key, &proven)?;
        }
        Ok(Trader { user_id: proven.user_id, api_key, body })
    }
}

/// A signature that checked out.
pub struct Proven {
    pub user_id: UserId,
    pub timestamp_ms: u64,
    pub signature: Vec<u8>,
}

impl AppState {
    /// Check a trader signature over `message`: a known key, a fresh
    /// timestamp, and HMAC-SHA256 or Ed25519 by the user's credential.
    pub fn authenticate(
        &self,
        api_key: &str,
        timestamp: &str,
        signature_hex: &str,
        message: &[u8],
    ) -> Result<Proven, ApiError> {
        let (user_id, verifier) = self
            .node
            .directory
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .users
            .get(api_key)
            .cloned()
            .ok_or_else(|| ApiError::unauthorized("unknown API key"))?;
        let timestamp_ms: u64 = timestamp
            .parse()
            .map_err(|_| ApiError::unauthorized("X-TIMESTAMP must be milliseconds since the Unix epoch"))?;
        let now_ms = now_ms();
        let skew_ms = now_ms as i128 - timestamp_ms as i128;
        if skew_ms.unsigned_abs() > self.config.signature_window_ms as u128 {
            return Err(ApiError::unauthorized(format!(
                "X-TIMESTAMP is {skew_ms} ms away from the host clock (allowed: {} ms)",
                self.config.signature_window_ms
            )));
        }
        let signature =
            hex::decode(signature_hex).map_err(|_| ApiError::unauthorized("X-SIGNATURE must be lowercase hex"))?;
        verifier.verify(message, &signature).map_err(ApiError::unauthorized)?;
        Ok(Proven { user_id, timestamp_ms, signature })
    }

    /// Refuse a signature already accepted for a state-changing request.
    pub fn first_use(&self, api_key: &str, proven: &Proven) -> Result<(), ApiError> {
        match self.gate.replay.first_use(api_key, &proven.signature, proven.timestamp_ms, now_ms()) {
            Ok(()) => Ok(()),
            Err(Replay::Seen) => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "replayed_signature",
                "this signature was already used; sign each request anew (a fresh X-TIMESTAMP)",
            )),
            Err(Replay::Full) => Err(ApiError::unavailable("the host is refusing new signed requests for a moment")),
        }
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A version 1 signature, as clients before version 2 compute it.
pub fn sign(secret: &str, timestamp: &str, method: &str, path_with_query: &str, body: &[u8]) -> String {
    sign_message(secret, &signed_message(SignatureVersion::V1, timestamp, method, path_with_query, body))
}

/// A version 2 signature (send `X-SIGNATURE-VERSION: 2` with it).
pub fn sign_v2(secret: &str, timestamp: &str, method: &str, path_with_query: &str, body: &[u8]) -> String {
    sign_message(secret, &signed_message(SignatureVersion::V2, timestamp, method, path_with_query, body))
}

/// The signature of a WebSocket `auth`: over `timestamp \n GET \n /ws \n nonce`.
pub fn sign_ws(secret: &str, timestamp: &str, nonce: &str) -> String {
    sign_message(secret, &ws_message(timestamp, nonce))
}

pub fn ws_message(timestamp: &str, nonce: &str) -> Vec<u8> {
    signed_message(SignatureVersion::V2, timestamp, "GET", "/ws", nonce.as_bytes())
}

/// HMAC-SHA256 of `message`, in lowercase hex.
pub fn sign_message(secret: &str, message: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_2_keeps_the_parts_apart_and_version_1_refuses_what_could_move() {
        // The attack: the same run-together bytes for two different requests.
        let v1 = |method: &str, path: &str, body: &[u8]| signed_message(SignatureVersion::V1, "1", method, path, body);
        assert_eq!(v1("DELETE", "/v1/orders/40", b""), v1("DELETE", "/v1/orders", b"/40"));
        let v2 = |method: &str, path: &str, body: &[u8]| signed_message(SignatureVersion::V2, "1", method, path, body);
        assert_ne!(v2("DELETE", "/v1/orders/40", b""), v2("DELETE", "/v1/orders", b"/40"));
        assert_eq!(v2("POST", "/p", b"{}"), b"1\nPOST\n/p\n{}".to_vec());
        // And the ambiguous requests never reach the signature check.
        for version in [SignatureVersion::V1, SignatureVersion::V2] {
            assert!(check_unambiguous(version, "DELETE", b"/40").is_err());
            assert!(check_unambiguous(version, "GET", b"x").is_err());
            assert!(check_unambiguous(version, "DELETE", b"").is_ok());
        }
        assert!(check_unambiguous(SignatureVersion::V1, "POST", br#"{"a":1}"#).is_ok());
        for body in [&b""[..], b"[1]", br#"{"a":1}{"b":2}"#, b"x{}", br#""text""#] {
            assert!(check_unambiguous(SignatureVersion::V1, "POST", body).is_err(), "{body:?}");
            assert!(check_unambiguous(SignatureVersion::V2, "POST", body).is_ok(), "{body:?}");
        }
    }
}

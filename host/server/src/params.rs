//! Query strings, decoded into the API's JSON errors: a malformed number in a
//! query (`at_seq=abc`) is `400 bad_request` with the error shape of every
//! other error, never axum's plain-text rejection.
//!
//! Trader endpoints take the raw query and decode it after the signature is
//! checked ([`parse_query`]), so an unsigned request learns only that it is
//! unauthorized. Public and operator endpoints use [`Params`] (operator
//! extractors come first in their handlers, so they too check auth first).

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};

use crate::error::{ApiError, ApiResult};

/// Decode a query string (without the `?`), or say what is wrong with it.
pub fn parse_query<T: DeserializeOwned>(raw: Option<&str>) -> ApiResult<T> {
    // Through axum's own decoder, so every endpoint reads queries one way.
    let raw = raw.unwrap_or("");
    let uri: axum::http::Uri =
        format!("/?{raw}").parse().map_err(|_| ApiError::bad_request("the query string is not valid in a URI"))?;
    Query::<T>::try_from_uri(&uri)
        .map(|Query(value)| value)
        .map_err(|rejection| ApiError::bad_request(format!("invalid query string: {}", rejection.body_text())))
}

/// A sequence number or a time in a query: at most `i64::MAX`, as the
/// document's `int64` says and as integrators' languages can hold (2^63 ns is
/// the year 2262). Use as `#[serde(default, deserialize_with = "int64")]`.
pub fn int64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    let value = Option::<u64>::deserialize(deserializer)?;
    match value {
        Some(number) if number > i64::MAX as u64 => {
            Err(D::Error::custom(format!("{number} is above the largest allowed, {}", i64::MAX)))
        }
        _ => Ok(value),
    }
}

/// A decoded query string whose rejection is the API's JSON error.
pub struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parse_query(parts.uri.query()).map(Params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Book {
        depth: Option<u32>,
        #[serde(default, deserialize_with = "int64")]
        at_seq: Option<u64>,
    }

    #[test]
    fn good_queries_decode_and_bad_ones_are_json_errors() {
        assert_eq!(parse_query::<Book>(Some("depth=5&at_seq=9")).unwrap(), Book { depth: Some(5), at_seq: Some(9) });
        assert_eq!(parse_query::<Book>(None).unwrap(), Book { depth: None, at_seq: None });
        let largest = parse_query::<Book>(Some("at_seq=9223372036854775807")).unwrap();
        assert_eq!(largest.at_seq, Some(i64::MAX as u64));
        for bad in ["at_seq=abc", "depth=x", "depth=-1", "at_seq=99999999999999999999999", "at_seq=9223372036854775808"]
        {
            let error = parse_query::<Book>(Some(bad)).unwrap_err();
            assert_eq!((error.status.as_u16(), error.code), (400, "bad_request"), "{bad}");
            assert!(error.message.starts_with("invalid query string"), "{bad}: {}", error.message);
        }
    }
}

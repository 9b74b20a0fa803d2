//! The one binary encoding of everything that crosses the module boundary or
//! goes into the journal: postcard (varint integers, variant-index enum tags).
//!
//! It is deterministic: equal values encode to equal bytes, which is what lets a
//! state digest be a hash of encoded bytes. Decoding is strict: trailing bytes
//! are an error, so a record cannot carry junk that replay would ignore.

use alloc::vec::Vec;
use core::fmt;

use serde::{Serialize, de::DeserializeOwned};

/// Why bytes could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes do not form a value of the expected type.
    Malformed(postcard::Error),
    /// A value was decoded but bytes were left over.
    TrailingBytes { count: usize },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Malformed(error) => write!(f, "malformed encoding: {error}"),
            DecodeError::TrailingBytes { count } => write!(f, "{count} trailing bytes after the value"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Append the encoding of `value` to `out`.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) {
    // Encoding into a growable vector can only fail if a Serialize impl itself
    // fails; none of the ABI types can, so a failure here is a programming error.
    let taken = core::mem::take(out);
    *out = postcard::to_extend(value, taken).expect("ABI types always encode");
}

/// The encoding of `value`.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(value, &mut out);
    out
}

/// Decode exactly one value from all of `bytes`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(DecodeError::Malformed)?;
    if rest.is_empty() { Ok(value) } else { Err(DecodeError::TrailingBytes { count: rest.len() }) }
}

/// Decode one value from the start of `bytes`; returns it and what follows.
pub fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, &[u8]), DecodeError> {
    postcard::take_from_bytes(bytes).map_err(DecodeError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matching::{MatchingCommand, PlaceOrder};
    use crate::types::*;

    fn place() -> MatchingCommand {
        MatchingCommand::Place(PlaceOrder {
            order_id: OrderId(7),
            user_id: UserId(3),
            side: Side::Sell,
            order_type: OrderType::Limit,
            price_ticks: 273_505,
            qty_lots: 12,
            time_in_force: TimeInForce::PostOnly,
            self_trade_prevention: SelfTradePrevention::CancelBoth,
        })
    }

    #[test]
    fn round_trips_and_is_deterministic() {
        let bytes = encode(&place());
        assert_eq!(bytes, encode(&place()));
        assert_eq!(decode::<MatchingCommand>(&bytes).unwrap(), place());
    }

    #[test]
    fn stable_enums_encode_their_code_not_their_position() {
        // Sell has code 2; postcard writes small unsigned integers as one byte.
        assert_eq!(encode(&Side::Sell), vec![2]);
        assert_eq!(encode(&Reason::UserCancel), vec![100]);
        assert!(decode::<Side>(&[0]).is_err());
        assert!(decode::<Side>(&[3]).is_err());
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = encode(&place());
        bytes.push(0);
        assert_eq!(decode::<MatchingCommand>(&bytes), Err(DecodeError::TrailingBytes { count: 1 }));
    }

    #[test]
    fn truncated_bytes_are_refused() {
        let bytes = encode(&place());
        for cut in 0..bytes.len() {
            assert!(decode::<MatchingCommand>(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    /// What a module of an older SDK could not decode needs a later revision.
    #[test]
    fn commands_name_the_revision_that_added_them() {
        use crate::matching::OrderOptions;
        let MatchingCommand::Place(order) = place() else { unreachable!() };
        let (order_id, user_id) = (order.order_id, order.user_id);
        let gtd = PlaceOrder { time_in_force: TimeInForce::Gtd, ..order.clone() };
        let options = OrderOptions { display_lots: Some(2), expire_time_ns: None };
        let revisions = [
            (place(), 0),
            (MatchingCommand::Cancel { order_id, user_id }, 0),
            (MatchingCommand::Amend { order_id, user_id, price_ticks: Some(1), qty_lots: None }, 0),
            (MatchingCommand::MassCancel { user_id }, 0),
            (MatchingCommand::Place(gtd), 1),
            (MatchingCommand::PlaceWith { order, options }, 1),
            (MatchingCommand::Wake, 1),
        ];
        for (command, revision) in revisions {
            assert_eq!(command.revision(), revision, "{command:?}");
            assert!(revision <= crate::abi::ABI_REVISION);
        }
    }

    #[test]
    fn every_stable_enum_code_round_trips() {
        for reason in Reason::ALL {
            assert_eq!(Reason::from_code(reason.code()), Some(*reason));
            assert_eq!(Reason::from_str_name(reason.as_str()), Some(*reason));
        }
        for status in OrderStatus::ALL {
            assert_eq!(decode::<OrderStatus>(&encode(status)).unwrap(), *status);
        }
    }
}

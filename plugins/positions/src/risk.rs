//! The arithmetic of margin, PnL and prices. It lives in the SDK
//! (`exhost_guest_sdk::margin`), so the host's read side values accounts
//! with the very functions this module margins with.

pub use exhost_guest_sdk::margin::{
    charge, div_ceil, div_floor, median3, notional, price_where, tier_of, tiered_charge, unrealized,
};

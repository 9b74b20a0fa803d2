//! The reference plugins, compiled to wasm32 from this checkout's source by
//! `build.rs` and embedded, so `exhost serve` needs no files beside the binary.

/// The price-time priority matching module (`plugins/pricetime`).
pub const PRICETIME_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/exhost_pricetime.wasm"));

/// The perpetual-futures position module (`plugins/positions`).
pub const POSITIONS_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/exhost_positions.wasm"));

/// Test-only: the reference book with a version-2 state and deliberate faults (`plugins/testbed`).
#[cfg(feature = "test-plugins")]
pub const TESTBED_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/exhost_testbed.wasm"));

/// The pro-rata example plugin (`examples/prorata`).
#[cfg(feature = "test-plugins")]
pub const PRORATA_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/exhost_prorata.wasm"));

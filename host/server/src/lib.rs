//! # exhost server
//!
//! The HTTP and WebSocket edge: the only code that knows axum. Handlers are
//! thin: decode and validate, hand a command to the node, map the outcome to
//! the API's shapes and error codes. It reaches storage through the node and
//! `exhost-store`'s seam, never RocksDB or wasmtime directly, so every
//! handler runs in process over the in-memory twin (`tests/handlers.rs`).

mod accounts;
mod admin;
pub mod auth;
mod checkpoint;
pub mod cluster;
pub mod config;
mod console;
pub mod error;
mod forward;
pub mod gate;
mod market;
mod modules;
pub mod openapi;
pub mod params;
mod pit;
pub mod process;
mod routes;
pub mod serve;
mod shadow;
pub mod state;
mod trading;
pub mod views;
mod ws;

pub use config::Config;
pub use routes::router;
pub use state::AppState;
pub use trading::parse_place_order;

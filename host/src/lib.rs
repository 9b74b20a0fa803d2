//! # exhost
//!
//! The host process: HTTP gateway ([`server`]), write path ([`node`]),
//! recovery and offline tools ([`recovery`], [`cli`]), and the read model
//! ([`readmodel`]). The deterministic parts live in `exhost-engine`, the wasm
//! runtime in `exhost-runtime`, storage in `exhost-store`.

pub mod bench;
pub mod cli;
pub mod config;
pub mod livebook;
pub mod modcheck;
pub mod modules_cli;
pub mod node;
pub mod readmodel;
pub mod recovery;
pub mod secrets;
pub mod serve;
pub mod server;
pub mod watermark;

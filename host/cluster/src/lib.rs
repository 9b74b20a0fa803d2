//! # exhost cluster
//!
//! exhost on several machines, with NATS JetStream as the replicated command
//! log and no consensus of its own:
//!
//! ```text
//!            writes (forwarded by any node)
//! clients ──► active node ──publish batch (expected-last-seq)──► EXHOST_COMMANDS (R3)
//!              │ fsync local journal, apply, answer                 │
//!              └──publish events (SEQ:IDX)──► EXHOST_EVENTS          ├──► standby: journal, apply
//!                                                                   └──► replica: journal, apply
//! lease: KV bucket EXHOST_CLUSTER, key "active", compare-and-set on revision
//! ```
//!
//! - [`log::ReplicatedLog`] is the write path's [`exhost_store::CommandLog`]:
//!   a batch is durable once the stream's quorum has it **and** the local
//!   journal has fsynced it.
//! - [`controller`] runs the roles: follow, take over, lead.
//! - [`wire`] is what the command stream holds; [`lease`] the lease's rules.
//! - [`events`] publishes every event once, in order, downstream.
//! - [`fetch`] starts an empty node from the active node's checkpoint when
//!   the stream no longer holds the first command.
//!
//! What this survives and what it does not: `docs/GUARANTEES.md`.

pub mod bootstrap;
mod controller;
pub mod events;
pub mod fetch;
pub mod lease;
pub mod log;
mod serve;
mod shared;
pub mod wire;

pub use bootstrap::Retention;
pub use lease::LeaseTiming;
pub use serve::{ClusterConfig, run};

//! What the HTTP edge needs of a cluster, and nothing of NATS: the node's
//! role, where the active node is, how a module reaches the other nodes.
//! `exhost-cluster` implements [`ClusterRole`]; a single host has none.
//! Forwarding writes and the cluster endpoint are in `forward.rs`.

use std::future::Future;
use std::pin::Pin;

use axum::body::Body;
use serde::Serialize;

/// A node's part in its cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Sequences and answers commands.
    Active,
    /// Applies every logged command; takes over when the active node is gone.
    Standby,
    /// Applies every logged command; never becomes active.
    Replica,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Active => "active",
            Role::Standby => "standby",
            Role::Replica => "replica",
        }
    }
}

/// The figures of `GET /admin/v1/cluster`.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterStatus {
    pub node: String,
    pub role: Role,
    /// The node holding the lease, as this node last saw it.
    pub active_node: Option<String>,
    /// The active node's HTTP address (where writes are forwarded).
    #[serde(skip)]
    pub active_http: Option<String>,
    /// The last command this node has applied.
    pub applied_seq: u64,
    /// The last command in the replicated log, as this node last saw it.
    pub log_seq: u64,
    /// The leadership term (one more at every change of active node).
    pub term: u64,
}

/// A future a trait object can return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The cluster as the handlers see it.
pub trait ClusterRole: Send + Sync {
    fn status(&self) -> ClusterStatus;
    /// Put an uploaded module's bytes in the replicated log, so that every
    /// node holds them before any command that names them; `Err` says why not.
    fn replicate_module(&self, hash: [u8; 32], bytes: Vec<u8>) -> BoxFuture<'_, Result<(), String>>;
}

/// The HTTP client writes are forwarded with (one per process, pooled).
pub type Forwarder = hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Body>;

pub fn forwarder() -> Forwarder {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

//! What the write path, the controller and the handlers share about the
//! node's place in the cluster.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use exhost_node::Node;
use exhost_server::cluster::{BoxFuture, ClusterRole, ClusterStatus, Role};

/// This node's right to append, while it has one.
#[derive(Clone, Debug)]
pub(crate) struct WriterLease {
    pub(crate) term: u64,
    /// Appends stop at this instant unless a renewal moves it on.
    pub(crate) holds_until: Instant,
}

/// The writer's side: guarded by one async mutex, so batches and module
/// uploads append to the stream one at a time.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    pub(crate) lease: Option<WriterLease>,
    /// The stream sequence of the stream's last message, as this node knows it.
    pub(crate) last_stream_seq: u64,
    /// The command sequence the next batch must start at.
    pub(crate) next_seq: u64,
}

/// What `GET /admin/v1/cluster` reports besides the writer.
#[derive(Clone, Debug)]
pub(crate) struct View {
    pub(crate) role: Role,
    pub(crate) active_node: Option<String>,
    pub(crate) active_http: Option<String>,
    pub(crate) term: u64,
}

pub(crate) struct Shared {
    pub(crate) node: String,
    pub(crate) replica: bool,
    pub(crate) writer: tokio::sync::Mutex<Writer>,
    pub(crate) view: Mutex<View>,
    /// The last command in the stream, as last seen.
    pub(crate) log_seq: AtomicU64,
    /// Woken when an append lost this node its lease.
    pub(crate) stepped_down: tokio::sync::Notify,
    pub(crate) node_handle: OnceLock<Arc<Node>>,
    pub(crate) module_replicator: OnceLock<crate::controller::ModuleReplicator>,
}

impl Shared {
    pub(crate) fn new(node: String, replica: bool) -> Shared {
        Shared {
            view: Mutex::new(View {
                role: if replica { Role::Replica } else { Role::Standby },
                active_node: None,
                active_http: None,
                term: 0,
            }),
            node,
            replica,
            writer: tokio::sync::Mutex::new(Writer::default()),
            log_seq: AtomicU64::new(0),
            stepped_down: tokio::sync::Notify::new(),
            node_handle: OnceLock::new(),
            module_replicator: OnceLock::new(),
        }
    }

    pub(crate) fn view(&self) -> View {
        self.view.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn set_view(&self, change: impl FnOnce(&mut View)) {
        change(&mut self.view.lock().unwrap_or_else(|p| p.into_inner()));
    }

    pub(crate) fn saw_log_seq(&self, seq: u64) {
        self.log_seq.fetch_max(seq, Ordering::SeqCst);
    }

    pub(crate) fn not_writer_reason(&self) -> String {
        match self.view().active_node {
            Some(active) if active != self.node => format!("the active node is {active}"),
            _ => "no node holds the lease right now".into(),
        }
    }
}

/// The handlers' view of the cluster.
pub struct ClusterHandle(pub(crate) Arc<Shared>);

impl ClusterRole for ClusterHandle {
    fn status(&self) -> ClusterStatus {
        let mut view = self.0.view();
        if view.role == Role::Active {
            // Active by its own clock too: a node that wakes from a pause past its
            // lease says so at once, before its next renewal is refused.
            let lapsed = self
                .0
                .writer
                .try_lock()
                .is_ok_and(|writer| writer.lease.as_ref().is_none_or(|lease| Instant::now() >= lease.holds_until));
            if lapsed {
                view.role = if self.0.replica { Role::Replica } else { Role::Standby };
                view.active_node = None;
                view.active_http = None;
            }
        }
        let applied_seq = self.0.node_handle.get().map_or(0, |node| node.health.applied_seq());
        ClusterStatus {
            node: self.0.node.clone(),
            role: view.role,
            active_node: view.active_node,
            active_http: view.active_http,
            applied_seq,
            log_seq: self.0.log_seq.load(Ordering::SeqCst).max(applied_seq),
            term: view.term,
        }
    }

    fn replicate_module(&self, hash: [u8; 32], bytes: Vec<u8>) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            match self.0.module_replicator.get() {
                Some(replicator) => replicator.replicate(&self.0, hash, bytes).await,
                None => Err("the cluster is still starting".into()),
            }
        })
    }
}

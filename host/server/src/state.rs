//! What every handler can reach.

use std::sync::Arc;

use exhost_node::Node;
use exhost_runtime::WasmLoader;
use exhost_store::Store;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::Config;
use crate::gate;

/// The host as the handlers see it.
#[derive(Clone)]
pub struct AppState {
    pub node: Arc<Node>,
    pub store: Store,
    pub loader: Arc<WasmLoader>,
    pub config: Arc<Config>,
    pub admin_token: Arc<str>,
    pub metrics: Option<PrometheusHandle>,
    /// Seals the secrets of new users before they are journaled.
    pub sealer: Arc<exhost_node::secrets::Sealer>,
    pub gate: Arc<gate::Gate>,
    /// The node's cluster, if it runs as one (`exhost serve --cluster`).
    pub cluster: Option<Arc<dyn crate::cluster::ClusterRole>>,
    /// Held while a checkpoint is sent (one at a time).
    pub checkpoint_slot: Arc<tokio::sync::Semaphore>,
    /// Sends writes to the active node (cluster mode only).
    pub forwarder: Option<crate::cluster::Forwarder>,
}

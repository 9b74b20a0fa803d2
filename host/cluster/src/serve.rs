//! `exhost serve --cluster`: a node of a cluster, assembled from the same
//! parts as a single host, with the replicated log under its write path.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use exhost_server::Config;
use exhost_server::serve::{Started, assemble, bind, open, serve_http};
use exhost_store::Durability;

use crate::bootstrap::{self, Retention};
use crate::controller::{Controller, ModuleReplicator, resume_position};
use crate::events::EventPublisher;
use crate::fetch;
use crate::lease::LeaseTiming;
use crate::log::ReplicatedLog;
use crate::shared::{ClusterHandle, Shared};

/// What `--cluster` adds to a host's configuration.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// The NATS servers (`nats://host:port`).
    pub urls: Vec<String>,
    /// This node's name, unique in the cluster.
    pub node: String,
    /// Never become active.
    pub replica: bool,
    /// Where other nodes reach this node's API (default: the listen address).
    pub advertise: Option<String>,
    pub retention: Retention,
    pub timing: LeaseTiming,
}

/// The bucket keys holding digests every node must share.
const SECRETS_KEY_CHECK: &str = "secrets-key-check";
const OPERATOR_TOKEN_CHECK: &str = "operator-token-check";

/// A digest of the operator token: equal tokens give equal checks, and the
/// token cannot be read back from it.
fn operator_token_check(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::new().chain_update(b"exhost operator token check\0").chain_update(token).finalize())
}

/// Refuse to join a cluster whose nodes hold another value of `what`: the
/// first node records its check under `key`; every later one compares.
/// (Another secrets key: after a failover no HMAC user could sign. Another
/// operator token: operator writes forwarded to the active node, and the
/// checkpoint a new node fetches, would be refused.)
async fn same_everywhere(
    kv: &async_nats::jetstream::kv::Store,
    key: &str,
    check: &str,
    what: &str,
    remedy: &str,
) -> anyhow::Result<()> {
    use async_nats::jetstream::kv::CreateErrorKind;
    // A bucket just created may not take writes for a moment (its leader is being elected).
    let started = std::time::Instant::now();
    let created = loop {
        match kv.create(key, check.as_bytes().to_vec().into()).await {
            Err(error)
                if error.kind() != CreateErrorKind::AlreadyExists && started.elapsed() < Duration::from_secs(30) =>
            {
                tracing::debug!(%error, key, "recording a cluster-wide check; retrying");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            other => break other,
        }
    };
    match created {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == CreateErrorKind::AlreadyExists => {
            let entry = kv.entry(key).await.with_context(|| format!("reading the cluster's {what} check"))?;
            let recorded = entry.map(|entry| String::from_utf8_lossy(&entry.value).to_string()).unwrap_or_default();
            anyhow::ensure!(
                recorded == check,
                "this node's {what} is not the cluster's (its check {check} differs from the recorded {recorded}): \
                 {remedy}"
            );
            Ok(())
        }
        Err(error) => Err(anyhow::Error::new(error).context(format!("recording the cluster's {what} check"))),
    }
}

pub fn run(config: Config, cluster: ClusterConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("exhost-http").build()?;
    runtime.block_on(serve(config, cluster))
}

async fn serve(config: Config, cluster: ClusterConfig) -> anyhow::Result<()> {
    anyhow::ensure!(
        !cluster.node.is_empty() && !cluster.node.contains([':', ' ', '.']),
        "--node needs a name without ':', '.' or spaces"
    );
    let addresses: Vec<async_nats::ServerAddr> = cluster
        .urls
        .iter()
        .map(|url| url.parse().with_context(|| format!("{url:?} is not a NATS server address")))
        .collect::<anyhow::Result<_>>()?;
    let client = async_nats::ConnectOptions::new()
        .name(format!("exhost-{}", cluster.node))
        .retry_on_initial_connect()
        .connect(addresses)
        .await
        .context("connecting to NATS")?;
    let mut js = async_nats::jetstream::new(client);
    js.set_timeout(Duration::from_secs(5));
    let streams = bootstrap::ensure(&js, &cluster.retention).await?;

    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;
    let token = exhost_server::serve::admin_token(&config)?;
    same_everywhere(
        &streams.kv,
        OPERATOR_TOKEN_CHECK,
        &operator_token_check(&token),
        "operator token",
        "every node needs the same one; give each the cluster's in EXHOST_ADMIN_TOKEN",
    )
    .await?;
    if fetch::needed(&config.db_dir(), &streams.commands).await? {
        fetch::from_active(&streams.kv, &config.data_dir, &token, &cluster.node).await?;
    }
    let mut parts = open(&config, false)?;
    same_everywhere(
        &streams.kv,
        SECRETS_KEY_CHECK,
        &parts.sealer.key_check_hex(),
        "secrets key",
        "every node must seal API secrets with the same key; point secrets_key_file at the cluster's key",
    )
    .await?;
    let store = parts.store.clone();
    let shared = Arc::new(Shared::new(cluster.node.clone(), cluster.replica));
    parts.log = Some(Arc::new(ReplicatedLog::new(
        store.clone(),
        shared.clone(),
        js.clone(),
        tokio::runtime::Handle::current(),
    )));
    parts.cluster = Some(Arc::new(ClusterHandle(shared.clone())));
    let state = assemble(config.clone(), parts).await?;
    let node = state.node.clone();
    let _ = shared.node_handle.set(node.clone());
    let _ = shared.module_replicator.set(ModuleReplicator { js: js.clone() });
    let listener = bind(&config).await?;
    let http = match &cluster.advertise {
        Some(address) => address.clone(),
        None => {
            let local = listener.local_addr()?;
            if local.ip().is_unspecified() {
                anyhow::bail!("listening on {local}: give --advertise HOST:PORT, where the other nodes reach this one");
            }
            local.to_string()
        }
    };
    let last_seq = node.health.applied_seq().max(store.journal_last_seq()?.unwrap_or(0));
    let position = resume_position(&streams.commands, last_seq).await?;
    tracing::info!(
        node = %cluster.node,
        replica = cluster.replica,
        journal_seq = last_seq,
        stream_seq = position.next_stream_seq,
        "following the command stream"
    );
    let durability = if config.journal_sync { Durability::Synced } else { Durability::None };
    let events = EventPublisher::new(js.clone(), streams.events.clone(), store.clone());
    let controller = Controller::new(
        shared.clone(),
        js,
        streams.commands,
        streams.kv,
        store,
        node.clone(),
        durability,
        cluster.timing,
        http,
        position,
        events,
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let controller = tokio::spawn(controller.run(stopped));
    serve_http(&config, Started { state, listener }).await?;

    tracing::info!("shutting down: handing over the lease, finishing journaled commands, taking a snapshot");
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), controller).await;
    tokio::task::spawn_blocking(move || node.shutdown()).await?;
    Ok(())
}

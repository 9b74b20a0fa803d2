//! `exhost serve`: open the data directory, recover, start the write path and
//! the HTTP server, and on first start create the default market.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use exhost_engine::{Command, EventBody};
use exhost_node::datadir::{self, default_market, default_position_install};
use exhost_node::{Node, NodeSettings, Storage, loader_for, recovery};
use exhost_store::{CommandLog, Durability, Store};

use crate::config::Config;
use crate::routes::router;
use crate::state::AppState;

/// How often the metrics recorder drains its histograms when nobody scrapes.
const METRICS_UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The operator token: `EXHOST_ADMIN_TOKEN`, or the one saved in the data
/// directory, or a new one saved there (mode 0600) and printed once.
pub fn admin_token(config: &Config) -> anyhow::Result<String> {
    if let Ok(token) = std::env::var("EXHOST_ADMIN_TOKEN")
        && !token.is_empty()
    {
        return Ok(token);
    }
    let path = config.token_path();
    if let Ok(token) = std::fs::read_to_string(&path) {
        return Ok(token.trim().to_string());
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|error| anyhow::anyhow!("no randomness for the operator token: {error}"))?;
    let token = hex::encode(bytes);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path).with_context(|| format!("creating {}", path.display()))?;
    writeln!(file, "{token}")?;
    file.sync_all()?;
    exhost_node::watermark::sync_directory(&config.data_dir)?;
    let mut out = std::io::stdout();
    let _ = writeln!(out, "operator token: {token}");
    let _ = writeln!(out, "(saved to {}; send it as `Authorization: Bearer <token>`)", path.display());
    Ok(token)
}

pub fn run(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("exhost-http").build()?;
    runtime.block_on(serve(config))
}

/// A host ready to serve: recovered, its write path running, its listener bound.
pub struct Started {
    pub state: AppState,
    pub listener: tokio::net::TcpListener,
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let started = start(config.clone()).await?;
    let node = started.state.node.clone();
    serve_http(&config, started).await?;
    tracing::info!("shutting down: finishing journaled commands and taking a snapshot");
    tokio::task::spawn_blocking(move || node.shutdown()).await?;
    Ok(())
}

/// Serve a started host's API until SIGTERM or Ctrl-C; the caller then shuts
/// the node down (a cluster node first hands over its lease).
pub async fn serve_http(config: &Config, started: Started) -> anyhow::Result<()> {
    let Started { state, listener } = started;
    let gate = state.gate.clone();
    tokio::spawn(async move {
        // Buckets of keys that went quiet are full again: forget them, so memory follows active keys.
        let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            every.tick().await;
            gate.limits.forget_idle();
        }
    });
    let app = router(state).layer(tower_http::timeout::RequestBodyTimeoutLayer::new(std::time::Duration::from_millis(
        config.body_read_timeout_ms,
    )));
    // A line a person may read even when the log cannot be written.
    let _ = writeln!(std::io::stdout(), "exhost listening on http://{}", listener.local_addr()?);
    let _ = std::io::stdout().flush();
    serve_connections(listener, app, config, shutdown_signal()).await;
    Ok(())
}

/// How long a clean shutdown waits for open connections (a socket following
/// the event stream never ends by itself).
const CONNECTIONS_DRAIN_MAX: std::time::Duration = std::time::Duration::from_secs(10);

/// Accept and serve connections until `shutdown`: HTTP/1.1 with upgrades
/// (WebSocket), at most `connections_max` at once (beyond, new connections
/// wait in the listen backlog), and a connection that does not send a
/// request's headers within `header_read_timeout_ms` closed: a client that
/// trickles its headers (slowloris) cannot hold connections open.
pub async fn serve_connections(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    config: &Config,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let permits = Arc::new(tokio::sync::Semaphore::new(config.connections_max.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_millis(config.header_read_timeout_ms));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, say: wait a little rather than spin.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(CONNECTIONS_DRAIN_MAX, graceful.shutdown()).await.is_err() {
        tracing::warn!("some connections were still open at shutdown; closing them");
    }
}

/// Everything `exhost serve` does before it answers the first request.
pub async fn start(config: Config) -> anyhow::Result<Started> {
    let parts = open(&config, true)?;
    let state = assemble(config.clone(), parts).await?;
    let listener = bind(&config).await?;
    Ok(Started { state, listener })
}

/// Bind the API's listener.
pub async fn bind(config: &Config) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("listening on {}", config.listen))
}

/// Open the data directory: its store, operator token and secrets key, and,
/// with `watermark`, the journal's watermark (a cluster node's journal is a
/// copy of the replicated log, which has its own). Installs the metrics recorder.
pub fn open(config: &Config, watermark: bool) -> anyhow::Result<Parts> {
    datadir::create_durably(&config.db_dir())
        .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;
    let admin_token = admin_token(config)?;
    // A checkpoint left by a send that a crash cut short: it holds disk space.
    let _ = std::fs::remove_dir_all(config.data_dir.join(exhost_node::checkpoint::OUTGOING_DIR));
    let store = Store::open(&config.db_dir())
        .with_context(|| format!("opening {} (is another exhost using it?)", config.db_dir().display()))?;
    let watermark = if watermark { Some(datadir::journal_watermark(&config.data_dir, &store)?) } else { None };
    let sealer = Arc::new(exhost_node::secrets::Sealer::load_or_create(&config.secrets_key_path())?);
    // Installed before the first command, so counters cover everything this process journals.
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder().ok();
    if let Some(handle) = metrics.clone() {
        // Histograms keep every sample until they are drained, which rendering
        // `/metrics` does; a host nobody scrapes would grow without this upkeep.
        tokio::spawn(async move {
            let mut every = tokio::time::interval(METRICS_UPKEEP_EVERY);
            loop {
                every.tick().await;
                handle.run_upkeep();
            }
        });
    }
    Ok(Parts { store, admin_token, sealer, watermark, metrics, log: None, cluster: None })
}

/// What a host is assembled from, beyond its configuration.
pub struct Parts {
    /// The data directory's store (RocksDB), or the in-memory twin.
    pub store: Store,
    pub admin_token: String,
    pub sealer: Arc<exhost_node::secrets::Sealer>,
    /// The journal's watermark (`None` over the in-memory twin, which has no file for it).
    pub watermark: Option<exhost_node::watermark::Watermark>,
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// The command log (`None`: the store's own journal).
    pub log: Option<Arc<dyn CommandLog>>,
    /// The node's cluster (`None`: a single host, which installs the
    /// defaults itself on a fresh store; a cluster does it once, on its
    /// first active node).
    pub cluster: Option<Arc<dyn crate::cluster::ClusterRole>>,
}

/// Recover from `parts.store`, start the write path, and, on a fresh store,
/// install the embedded position module and create the default market: the
/// host, ready for requests, with no listener. `start` serves it; handler
/// tests call its router directly over the in-memory twin.
pub async fn assemble(config: Config, parts: Parts) -> anyhow::Result<AppState> {
    let Parts { store, admin_token, sealer, watermark, metrics, log, cluster } = parts;
    let loader = loader_for(&store)?;
    let (embedded, embedded_positions) = datadir::install_embedded(&store)?;
    // Compile now, so a broken embedded module fails start-up rather than the first market.
    loader.compiled(&embedded).context("the embedded matching module")?;
    loader.compiled(&embedded_positions).context("the embedded position module")?;

    let (engine, stats) = {
        let (store, loader) = (store.clone(), loader.clone());
        tokio::task::spawn_blocking(move || recovery::recover(&store, loader)).await??
    };
    tracing::info!(
        snapshot_seq = stats.snapshot_seq,
        replayed = stats.replayed,
        restore_ms = stats.restore_time.as_millis() as u64,
        replay_ms = stats.replay_time.as_millis() as u64,
        "recovered at seq {}",
        engine.last_seq()
    );
    let fresh = engine.last_seq() == 0 && cluster.is_none();
    let settings = NodeSettings {
        sealer: Some(sealer.clone()),
        durability: if config.journal_sync { Durability::Synced } else { Durability::None },
        batch_commands_max: config.journal_batch_commands_max.max(1),
        submit_queue_max: config.submit_queue_max.max(1),
        snapshot_every_commands: config.snapshot_every_commands,
    };
    if !config.journal_sync {
        tracing::warn!("journal_sync = false: acknowledged commands can be lost in a crash (benchmarks only)");
    }
    let storage = match log {
        Some(log) => Storage { log, store: store.clone() },
        None => Storage::local(store.clone()),
    };
    let node = Arc::new(Node::start(storage, engine, settings, stats.snapshot_seq, watermark)?);
    if fresh {
        install_defaults(&node).await?;
    }

    let gate = Arc::new(crate::gate::Gate::new(&config));
    let state = AppState {
        node,
        store,
        loader,
        config: Arc::new(config.clone()),
        admin_token: admin_token.into(),
        metrics,
        sealer,
        gate,
        checkpoint_slot: Arc::new(tokio::sync::Semaphore::new(1)),
        forwarder: cluster.is_some().then(crate::cluster::forwarder),
        cluster,
    };
    Ok(state)
}

/// The exchange a fresh host starts with: the embedded position module and
/// market BTC-PERP on the embedded price-time module. Run once per history:
/// by a single host on a fresh store, by a cluster's first active node on an
/// empty log.
pub async fn install_defaults(node: &Node) -> anyhow::Result<()> {
    let (embedded, embedded_positions) = datadir::embedded_hashes();
    for command in [default_position_install(embedded_positions), Command::CreateMarket(default_market(embedded))] {
        let applied = node.submit(command).await?;
        if let Some(EventBody::CommandRejected { reason }) =
            applied.events.iter().map(|e| &e.body).find(|b| matches!(b, EventBody::CommandRejected { .. }))
        {
            anyhow::bail!("setting up the exchange failed: {reason}");
        }
    }
    tracing::info!(
        "installed the embedded position module {embedded_positions} and created market BTC-PERP with the embedded price-time module {embedded}"
    );
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

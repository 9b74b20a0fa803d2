//! `exhost serve`: open the data directory, recover, start the write path and
//! the HTTP server, and on first start create the default market.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use exhost_engine::{Command, EventBody, MarketSpec, ModuleHash, ModuleLimits, RiskParams, Scale};
use exhost_guest_sdk::{MarketConfig, PositionConfig};
use exhost_store::{Durability, Store};

use crate::cli::loader_for;
use crate::config::Config;
use crate::node::{Node, NodeSettings};
use crate::recovery;
use crate::server::{AppState, router};

/// How often the metrics recorder drains its histograms when nobody scrapes.
const METRICS_UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The market a fresh data directory starts with.
pub fn default_market(module_hash: ModuleHash) -> MarketSpec {
    MarketSpec {
        symbol: "BTC-PERP".into(),
        base: "BTC".into(),
        quote: "USD".into(),
        quote_decimals: 6,
        price_scale: Scale::from_step("0.1").expect("a valid tick"),
        qty_scale: Scale::from_step("0.001").expect("a valid lot"),
        module_hash,
        limits: ModuleLimits::default(),
        config: MarketConfig::default(),
        risk: RiskParams::default(),
    }
}

/// The position module a fresh data directory starts with.
pub fn default_position_install(module_hash: ModuleHash) -> Command {
    Command::InstallPositionModule {
        module_hash,
        limits: ModuleLimits::default(),
        config: PositionConfig {
            settlement_asset: "USD".into(),
            follow_ups_per_command_max: 10_000,
            params: Vec::new(),
        },
    }
}

/// The operator token: `EXHOST_ADMIN_TOKEN`, or the one saved in the data
/// directory, or a new one saved there (mode 0600) and printed once.
fn admin_token(config: &Config) -> anyhow::Result<String> {
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
    crate::watermark::sync_directory(&config.data_dir)?;
    let mut out = std::io::stdout();
    let _ = writeln!(out, "operator token: {token}");
    let _ = writeln!(out, "(saved to {}; send it as `Authorization: Bearer <token>`)", path.display());
    Ok(token)
}

/// Create the database directory (and the data directory) if needed, and
/// make their entries durable, up to the data directory's parent: RocksDB
/// syncs what it writes inside its directory, not the directory's own entry,
/// so a power cut after a fresh `mkdir` (by exhost or by the operator) could
/// take the whole data directory with it. The power-loss test's filesystem
/// showed exactly that.
fn create_durably(db_dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(db_dir)?;
    // The database directory, the data directory and the data directory's parent.
    for dir in db_dir.ancestors().skip(1).take(2) {
        let dir = if dir.as_os_str().is_empty() { std::path::Path::new(".") } else { dir };
        crate::watermark::sync_directory(dir)?;
    }
    Ok(())
}

/// Compare the journal with its watermark before anything is replayed: a
/// journal that lost acknowledged commands stops start-up, with what was
/// lost and how to accept it; otherwise the watermark is opened for the write path.
fn journal_watermark(config: &Config, store: &Store) -> anyhow::Result<crate::watermark::Watermark> {
    use crate::watermark::{self, Finding};
    let path = watermark::path_in(&config.data_dir);
    let last_seq = store.journal_last_seq()?.unwrap_or(0);
    match watermark::check(watermark::load(&path)?, last_seq) {
        Finding::Lost { last_seq, confirmed, ceiling } => anyhow::bail!(
            "the journal ends at seq {last_seq}, but commands up to seq {confirmed} were acknowledged (and up to seq {} may have been): at least {} acknowledged commands are lost, so the write-ahead log was cut or damaged. Starting would hand their sequence numbers to new commands. Restore the data directory from a copy, or accept the loss on the record with `exhost repair --accept-journal-loss --data-dir {}`",
            ceiling - 1,
            confirmed - last_seq,
            config.data_dir.display()
        ),
        Finding::Whole { last_seq, ceiling } => tracing::info!(
            last_seq,
            acknowledged_at_most = ceiling - 1,
            "the journal ends at seq {last_seq}; no acknowledgement could have named a sequence past {}",
            ceiling - 1
        ),
        Finding::Unmarked => tracing::info!(last_seq, "the journal has no watermark yet; starting one"),
    }
    watermark::Watermark::open(path, last_seq)
}

/// Store the embedded reference modules (idempotent); returns the hashes of
/// the matching and the position module.
fn install_embedded(store: &Store) -> anyhow::Result<(ModuleHash, ModuleHash)> {
    let mut hashes = Vec::new();
    for bytes in [exhost_embedded::PRICETIME_WASM, exhost_embedded::POSITIONS_WASM] {
        let hash = ModuleHash::of(bytes);
        if store.module(&hash.0)?.is_none() {
            store.put_module(&hash.0, bytes)?;
        }
        hashes.push(hash);
    }
    Ok((hashes[0], hashes[1]))
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
    let Started { state, listener } = start(config.clone()).await?;
    let node = state.node.clone();
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
    serve_connections(listener, app, &config, shutdown_signal()).await;

    tracing::info!("shutting down: finishing journaled commands and taking a snapshot");
    tokio::task::spawn_blocking(move || node.shutdown()).await?;
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
pub(crate) async fn serve_connections(
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
    create_durably(&config.db_dir())
        .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;
    let admin_token = admin_token(&config)?;
    let store = Store::open(&config.db_dir())
        .with_context(|| format!("opening {} (is another exhost using it?)", config.db_dir().display()))?;
    let watermark = journal_watermark(&config, &store)?;
    let loader = loader_for(&store)?;
    let (embedded, embedded_positions) = install_embedded(&store)?;
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
    let fresh = engine.last_seq() == 0;
    let sealer = Arc::new(crate::secrets::Sealer::load_or_create(&config.secrets_key_path())?);
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
    let node = Arc::new(Node::start(store.clone(), engine, settings, stats.snapshot_seq, Some(watermark)));
    if fresh {
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
    }

    let gate = Arc::new(crate::server::gate::Gate::new(&config));
    let state = AppState {
        node,
        store,
        loader,
        config: Arc::new(config.clone()),
        admin_token: admin_token.into(),
        metrics,
        sealer,
        gate,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    Ok(Started { state, listener })
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

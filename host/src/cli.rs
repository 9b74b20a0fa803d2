//! The `exhost` command line: `serve`, the offline tools that work on a
//! data directory (`journal`, `replay`, `verify`, `snapshot`), and the
//! operator commands against a running host (`markets`, `users`, `deposit`,
//! `module`, `snapshot --host`, `cluster`).

use std::io::Write;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use exhost_engine::{Command, EngineSnapshot};
use exhost_guest_sdk::codec::decode;
use exhost_node::loader_for;
use exhost_node::recovery::{self, Progress};
use exhost_node::{datadir, watermark};
use exhost_server::Config;
use exhost_store::Store;

use crate::args::DataArgs;
use crate::modules_cli::ModuleCommand;
use crate::remote::{HostArgs, UsersCommand};

#[derive(Parser)]
#[command(name = "exhost", version, about = "A WebAssembly-plugin exchange host")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Commands,
    /// Log lines as readable text, or as one JSON object per line.
    #[arg(long, global = true, env = "EXHOST_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

impl Cli {
    pub fn log_format(&self) -> exhost_server::process::LogFormat {
        match self.log_format.as_str() {
            "json" => exhost_server::process::LogFormat::Json,
            _ => exhost_server::process::LogFormat::Text,
        }
    }
}

#[derive(Subcommand)]
pub enum Commands {
    /// Run the host: HTTP API, journal, engine.
    Serve(ServeArgs),
    /// Print journal records.
    Journal {
        #[command(flatten)]
        data: DataArgs,
        /// First sequence number to print.
        #[arg(long, default_value_t = 1)]
        from_seq: u64,
        /// How many records to print.
        #[arg(long, default_value_t = 100)]
        limit: u64,
        /// One JSON object per line: `{"seq", "ts", "kind", "command"}`.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild the state offline up to a sequence number and print its digest.
    Replay {
        #[command(flatten)]
        data: DataArgs,
        /// Stop after this sequence number (default: the last record).
        #[arg(long)]
        to_seq: Option<u64>,
        /// Ignore snapshots and replay from the first record.
        #[arg(long)]
        from_start: bool,
    },
    /// Replay the whole journal from the first record and compare every stored snapshot digest.
    Verify {
        #[command(flatten)]
        data: DataArgs,
    },
    /// Store a snapshot: offline, of a data directory whose host is not
    /// running; or, with --host URL, by asking the running host.
    Snapshot {
        #[command(flatten)]
        data: DataArgs,
        /// Ask the host running at this URL to take one now.
        #[arg(long)]
        host: Option<String>,
        /// The operator token (with --host; default: EXHOST_ADMIN_TOKEN, then DATA_DIR/admin.token).
        #[arg(long, requires = "host")]
        token: Option<String>,
        #[arg(long, requires = "host")]
        json: bool,
    },
    /// The effective configuration: defaults, then the --config file, then
    /// flags and environment (as `exhost serve` with the same arguments would run).
    Config {
        #[command(flatten)]
        data: DataArgs,
        /// As `exhost serve --listen` (or EXHOST_LISTEN).
        #[arg(long, env = "EXHOST_LISTEN")]
        listen: Option<std::net::SocketAddr>,
    },
    /// The markets of a running host.
    Markets {
        #[command(flatten)]
        host: HostArgs,
        #[arg(long)]
        json: bool,
    },
    /// Users of a running host.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Credit a user of a running host (an operator deposit).
    Deposit {
        user_id: u64,
        asset: String,
        /// A decimal string in the asset's units, e.g. 1000.50.
        amount: String,
        #[command(flatten)]
        host: HostArgs,
        #[arg(long)]
        json: bool,
    },
    /// A running host's place in its cluster (one process alone is its own active node).
    Cluster {
        #[command(flatten)]
        host: HostArgs,
        #[arg(long)]
        json: bool,
    },
    /// Accept, on the record, what a damaged journal lost, so the host starts
    /// again from what is left (see docs/GUARANTEES.md before running it).
    Repair {
        #[command(flatten)]
        data: DataArgs,
        /// Accept that acknowledged commands past the journal's end are lost.
        #[arg(long)]
        accept_journal_loss: bool,
    },
    /// Rule modules: upload, activate (hot swap), start a new plugin, record a test fixture.
    #[command(subcommand)]
    Module(ModuleCommand),
}

#[derive(Args, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks a free one).
    #[arg(long, env = "EXHOST_LISTEN")]
    pub listen: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Running as one node of a cluster whose command log is a NATS JetStream stream.
#[derive(Args, Clone)]
pub struct ClusterArgs {
    /// The NATS servers, comma-separated: nats://HOST:PORT[,nats://HOST:PORT...].
    #[arg(long, value_delimiter = ',', requires = "node")]
    pub cluster: Vec<String>,
    /// This node's name, unique in the cluster.
    #[arg(long)]
    pub node: Option<String>,
    /// A read replica: applies every command, never becomes active.
    #[arg(long, requires = "node")]
    pub replica: bool,
    /// Where the other nodes reach this node's API (default: the listen address).
    #[arg(long, requires = "node")]
    pub advertise: Option<String>,
    /// Copies of the streams (default: the number of --cluster servers, at most 3).
    #[arg(long, requires = "node")]
    pub cluster_replicas: Option<usize>,
    /// Drop stream messages older than this many hours (0: keep them). Keep at
    /// least as long as a node may be away before it is rebuilt from a snapshot.
    #[arg(long, default_value_t = 168)]
    pub cluster_max_age_hours: u64,
    /// Drop the oldest stream messages beyond this many bytes (default: no cap).
    #[arg(long)]
    pub cluster_max_bytes: Option<u64>,
    /// Lease length in milliseconds: a standby takes over this long after the active node's last renewal.
    #[arg(long, default_value_t = 2_000)]
    pub lease_ms: u64,
}

impl ClusterArgs {
    fn config(&self) -> anyhow::Result<Option<exhost_cluster::ClusterConfig>> {
        let Some(node) = &self.node else { return Ok(None) };
        if self.cluster.is_empty() {
            bail!("--node names a cluster node: give the NATS servers with --cluster nats://HOST:PORT[,...]");
        }
        let ttl = std::time::Duration::from_millis(self.lease_ms.max(500));
        let timing = exhost_cluster::LeaseTiming {
            ttl,
            renew_every: ttl / 5,
            margin: ttl / 4,
            watch_every: (ttl / 12).max(std::time::Duration::from_millis(50)),
        };
        Ok(Some(exhost_cluster::ClusterConfig {
            urls: self.cluster.clone(),
            node: node.clone(),
            replica: self.replica,
            advertise: self.advertise.clone(),
            retention: exhost_cluster::Retention {
                replicas: self.cluster_replicas.unwrap_or(self.cluster.len().min(3)),
                max_age: (self.cluster_max_age_hours > 0)
                    .then(|| std::time::Duration::from_secs(self.cluster_max_age_hours * 3_600)),
                max_bytes: self.cluster_max_bytes,
            },
            timing,
        }))
    }
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Commands::Serve(args) => {
            let mut config = args.data.config()?;
            if let Some(listen) = args.listen {
                config.listen = listen;
            }
            match args.cluster.config()? {
                Some(cluster) => exhost_cluster::run(config, cluster),
                None => exhost_server::serve::run(config),
            }
        }
        Commands::Journal { data, from_seq, limit, json } => {
            let store = datadir::open_existing(&data.config()?.data_dir, true)?;
            for record in store.journal_from(from_seq).take(limit as usize) {
                let record = record?;
                let mut command: Command = decode(&record.command)
                    .with_context(|| format!("record {} holds no command this host understands", record.seq))?;
                // Never print a user's API secret.
                if let Command::CreateUser { api_secret, .. } = &mut command {
                    *api_secret = "<redacted>".into();
                }
                if json {
                    let line = serde_json::json!({
                        "seq": record.seq, "ts": record.ts_ns, "kind": command.kind(), "command": command,
                    });
                    println!("{line}");
                } else {
                    println!("{}\t{}\t{}\t{command:?}", record.seq, record.ts_ns, command.kind());
                }
            }
            Ok(())
        }
        Commands::Replay { data, to_seq, from_start } => {
            let store = datadir::open_existing(&data.config()?.data_dir, true)?;
            let loader = loader_for(&store)?;
            let last = store.journal_last_seq()?.unwrap_or(0);
            let to_seq = to_seq.unwrap_or(last);
            if to_seq > last {
                bail!("--to-seq {to_seq} is beyond the last journal record {last}");
            }
            let started = Instant::now();
            let mut engine = if from_start {
                exhost_engine::Engine::new(loader)
            } else {
                recovery::engine_from_snapshot(&store, loader, to_seq)
            };
            let start_seq = engine.last_seq();
            let mut progress = Progress::new("replay", to_seq - start_seq, true);
            let replayed = recovery::replay(&store, &mut engine, to_seq, &mut progress, |_| Ok(()))?;
            let elapsed = started.elapsed();
            let snapshot = engine.snapshot()?;
            let digest = EngineSnapshot::digest_of(&snapshot.encode());
            println!("seq {}", snapshot.seq);
            println!(
                "started from {}",
                if start_seq == 0 { "the first record".to_string() } else { format!("snapshot {start_seq}") }
            );
            println!(
                "replayed {replayed} commands in {:.3} s ({:.0}/s)",
                elapsed.as_secs_f64(),
                replayed as f64 / elapsed.as_secs_f64().max(1e-9)
            );
            for (spec, state) in snapshot.registry.markets.iter().zip(&snapshot.markets) {
                let image = exhost_guest_sdk::codec::encode(&*state.image);
                println!("market {} digest {}", spec.symbol, EngineSnapshot::digest_of(&image));
            }
            println!("state digest {digest}");
            Ok(())
        }
        Commands::Module(command) => crate::modules_cli::run(command),
        Commands::Verify { data } => verify(&datadir::open_existing(&data.config()?.data_dir, true)?),
        Commands::Repair { data, accept_journal_loss } => repair(&data.config()?, accept_journal_loss),
        Commands::Snapshot { data, host: Some(url), token, json } => {
            let host = HostArgs { url, token, data_dir: data.data_dir };
            crate::remote::snapshot(&host, json)
        }
        Commands::Config { data, listen } => {
            let mut config = data.config()?;
            if let Some(listen) = listen {
                config.listen = listen;
            }
            print!("{}", config.to_toml()?);
            Ok(())
        }
        Commands::Markets { host, json } => crate::remote::markets(&host, json),
        Commands::Users(command) => crate::remote::users(command),
        Commands::Deposit { user_id, asset, amount, host, json } => {
            crate::remote::deposit(&host, user_id, &asset, &amount, json)
        }
        Commands::Cluster { host, json } => crate::remote::cluster(&host, json),
        Commands::Snapshot { data, host: None, .. } => {
            let store = datadir::open_existing(&data.config()?.data_dir, false)?;
            let loader = loader_for(&store)?;
            let (mut engine, _) = recovery::recover(&store, loader)?;
            let taken = exhost_node::take_snapshot(&mut engine, &store)?;
            println!("snapshot seq {} digest {} ({} bytes)", taken.seq, taken.digest_hex, taken.size_bytes);
            Ok(())
        }
    }
}

/// `exhost repair --accept-journal-loss`: the journal lost acknowledged
/// commands (its end is below the watermark's confirmed sequence) and the
/// operator accepts it: the marks are set to the journal's end, and the loss
/// is written to `<data-dir>/repairs.log`, so it stays on the record.
fn repair(config: &Config, accept_journal_loss: bool) -> anyhow::Result<()> {
    let path = watermark::path_in(&config.data_dir);
    let marks = watermark::load(&path)?;
    let last = datadir::open_existing(&config.data_dir, true)?.journal_last_seq()?.unwrap_or(0);
    match watermark::check(marks, last) {
        watermark::Finding::Lost { last_seq, confirmed, ceiling } => {
            if !accept_journal_loss {
                bail!(
                    "the journal ends at {last_seq}, but commands up to {confirmed} were acknowledged (and up to {} may have been): rerun with --accept-journal-loss to start again from {last_seq}",
                    ceiling - 1
                );
            }
            let line = format!(
                "{} accepted the loss of journaled commands {}..={} (acknowledged at least), up to {} at most; the journal now ends at {last_seq}\n",
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
                last_seq + 1,
                confirmed,
                ceiling - 1
            );
            let log = config.data_dir.join("repairs.log");
            std::fs::OpenOptions::new().create(true).append(true).open(&log)?.write_all(line.as_bytes())?;
            watermark::store(&path, watermark::Marks { confirmed: last_seq, ceiling: last_seq + 1 })?;
            print!("{line}");
            println!("recorded in {}; `exhost serve` will start from seq {last_seq}", log.display());
            Ok(())
        }
        finding => {
            println!("nothing to repair: {finding:?}");
            Ok(())
        }
    }
}

/// Replay from the first record, checking every stored snapshot's digest.
fn verify(store: &Store) -> anyhow::Result<()> {
    let loader = loader_for(store)?;
    let last = store.journal_last_seq()?.unwrap_or(0);
    let snapshots = store.snapshot_infos()?;
    let mut engine = exhost_engine::Engine::new(loader);
    let mut progress = Progress::new("verify", last, true);
    let started = Instant::now();
    let mut mismatches = 0;
    for info in snapshots.iter().filter(|info| info.seq <= last) {
        recovery::replay(store, &mut engine, info.seq, &mut progress, |_| Ok(()))?;
        let digest = EngineSnapshot::digest_of(&engine.snapshot()?.encode());
        if digest.0 == info.digest {
            println!("snapshot {} digest {} ok", info.seq, digest);
        } else {
            mismatches += 1;
            println!("snapshot {} MISMATCH: stored {} replayed {}", info.seq, hex::encode(info.digest), digest);
        }
    }
    recovery::replay(store, &mut engine, last, &mut progress, |_| Ok(()))?;
    let digest = EngineSnapshot::digest_of(&engine.snapshot()?.encode());
    println!("replayed {last} commands in {:.3} s; final seq {last} digest {digest}", started.elapsed().as_secs_f64());
    if mismatches > 0 {
        bail!("{mismatches} of {} snapshots do not match their replay", snapshots.len());
    }
    println!("verify ok: {} snapshots match", snapshots.len());
    Ok(())
}

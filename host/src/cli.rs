//! The `exhost` command line: `serve`, and the offline tools that work on a
//! data directory (`journal`, `replay`, `verify`, `snapshot`).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use exhost_engine::{Command, EngineSnapshot, ModuleHash};
use exhost_guest_sdk::codec::decode;
use exhost_runtime::{ArtifactCache, ModuleSource, Runtime, WasmLoader};
use exhost_store::Store;

use crate::config::Config;
use crate::recovery::{self, Progress};

#[derive(Parser)]
#[command(name = "exhost", version, about = "A WebAssembly-plugin exchange host")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Commands,
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
    /// Recover the state offline and store a snapshot of it (the host must not be running).
    Snapshot {
        #[command(flatten)]
        data: DataArgs,
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
    /// Measurements; each figure is printed as one JSON line.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Rule modules: upload, activate (hot swap), start a new plugin, record a test fixture.
    #[command(subcommand)]
    Module(ModuleCommand),
}

#[derive(Args, Clone)]
pub struct HostArgs {
    /// The running host.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "EXHOST_URL")]
    pub url: String,
    /// The operator token (default: EXHOST_ADMIN_TOKEN, then ./exhost-data/admin.token).
    #[arg(long)]
    pub token: Option<String>,
}

impl HostArgs {
    pub fn token(&self) -> anyhow::Result<String> {
        if let Some(token) = &self.token {
            return Ok(token.clone());
        }
        if let Ok(token) = std::env::var("EXHOST_ADMIN_TOKEN") {
            return Ok(token);
        }
        let path = Config::default().token_path();
        std::fs::read_to_string(&path)
            .map(|t| t.trim().to_string())
            .with_context(|| format!("no --token, no EXHOST_ADMIN_TOKEN, and no {}", path.display()))
    }
}

#[derive(Subcommand)]
pub enum ModuleCommand {
    /// Upload a .wasm module to a running host (validated and dry-run there).
    Upload {
        file: PathBuf,
        #[command(flatten)]
        host: HostArgs,
        /// Dry-run against this market only, and refuse the module if that fails.
        #[arg(long)]
        market: Option<String>,
    },
    /// Activate an uploaded module on a market or as the position module (hot swap).
    Activate {
        hash: String,
        #[arg(long, conflicts_with = "position", required_unless_present = "position")]
        market: Option<String>,
        #[arg(long)]
        position: bool,
        #[command(flatten)]
        host: HostArgs,
    },
    /// Create a new matching-plugin crate that builds on the first try.
    New {
        name: String,
        /// Where to create it (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Path to exhost's guest-sdk (default: the one this binary was built from).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Record the commands a market's module received, from a data directory, as a test fixture.
    Fixture {
        #[command(flatten)]
        data: DataArgs,
        #[arg(long)]
        market: String,
        #[arg(long)]
        out: PathBuf,
        /// Stop after this sequence number.
        #[arg(long)]
        to_seq: Option<u64>,
    },
}

#[derive(Args, Clone, Copy)]
pub struct FlowArgs {
    /// Commands in the measured flow.
    #[arg(long, default_value_t = 1_000_000)]
    pub commands: u64,
    /// Orders resting in the book before the flow starts.
    #[arg(long, default_value_t = 100_000)]
    pub resting: u64,
    /// Price levels per side for the resting orders.
    #[arg(long, default_value_t = 1_000)]
    pub levels: u64,
    #[arg(long, default_value_t = 16)]
    pub users: u64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Put the position module in the pipeline (margin check and settlement of every order).
    #[arg(long)]
    pub positions: bool,
    /// Markets the orders spread over (the peer runs only with one).
    #[arg(long, default_value_t = 1)]
    pub markets: u32,
}

impl FlowArgs {
    fn shape(self) -> crate::bench::FlowShape {
        crate::bench::FlowShape {
            resting: self.resting,
            levels: self.levels.max(1),
            commands: self.commands,
            users: self.users.max(1),
            seed: self.seed,
            positions: self.positions,
            markets: self.markets.max(1),
        }
    }
}

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Engine throughput in process: the wasm module against the same plugin linked natively.
    Engine {
        #[command(flatten)]
        flow: FlowArgs,
        /// Runs of each; the best is reported.
        #[arg(long, default_value_t = 3)]
        rounds: u32,
    },
    /// Create a data directory holding a journaled, applied flow (for start-up measurements).
    Fill {
        #[command(flatten)]
        data: DataArgs,
        #[command(flatten)]
        flow: FlowArgs,
        /// Store a snapshot at the end.
        #[arg(long)]
        snapshot: bool,
    },
    /// Every figure, one JSON line each (`--quick`: small sizes, for CI's smoke run).
    All {
        #[command(flatten)]
        data: DataArgs,
        #[arg(long)]
        quick: bool,
    },
    /// Bytes per resting order in module memory and snapshots, and host resident memory.
    Memory {
        #[arg(long, default_value_t = 1_000_000)]
        resting: u64,
        #[arg(long, default_value_t = 1_000)]
        levels: u64,
    },
    /// The journal against the raw disk (append + fsync), and the write path end to end.
    Journal {
        #[command(flatten)]
        data: DataArgs,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Concurrent submitters for the write-path figure.
        #[arg(long, default_value_t = 64)]
        clients: usize,
    },
    /// Order entry end to end: a host on 127.0.0.1 (synced journal) and N connections signing orders.
    Load {
        #[command(flatten)]
        data: DataArgs,
        #[arg(long, value_enum, default_value_t = crate::bench::load::Protocol::Http)]
        protocol: crate::bench::load::Protocol,
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Requests in flight per WebSocket connection.
        #[arg(long, default_value_t = 256)]
        pipeline: usize,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
    },
    /// Hot swap at a given book size: upload (compile, dry run) and the activation pause.
    Swap {
        #[command(flatten)]
        flow: FlowArgs,
        #[arg(long, default_value_t = 5)]
        rounds: u32,
    },
    /// Time the recovery of a data directory (snapshot restore and journal replay).
    Startup {
        #[command(flatten)]
        data: DataArgs,
    },
}

#[derive(Args, Clone)]
pub struct DataArgs {
    /// The data directory.
    #[arg(long, env = "EXHOST_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// A TOML configuration file.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Args, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks a free one).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
}

impl DataArgs {
    pub fn config(&self) -> anyhow::Result<Config> {
        let mut config = Config::load(self.config.as_deref())?;
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        Ok(config)
    }
}

/// Module bytes from the store, for the wasm loader.
pub struct StoreModules(pub Store);

impl ModuleSource for StoreModules {
    fn module_bytes(&self, hash: &ModuleHash) -> Option<Vec<u8>> {
        match self.0.module(&hash.0) {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::error!(%error, %hash, "reading module bytes failed");
                None
            }
        }
    }
}

/// Compiled module code kept in the store, so a restart does not recompile.
pub struct StoreArtifacts(pub Store);

impl ArtifactCache for StoreArtifacts {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.get(exhost_store::Family::Artifacts, key).ok().flatten()
    }

    fn put(&self, key: &[u8], artifact: &[u8]) {
        let mut batch = exhost_store::Batch::default();
        batch.put(exhost_store::Family::Artifacts, key.to_vec(), artifact.to_vec());
        // A cache: losing a write only costs a compile at the next start.
        if let Err(error) = self.0.write(batch, exhost_store::Durability::None) {
            tracing::warn!(%error, "could not keep a compiled module");
        }
    }
}

/// A loader over the store's modules, with compiled code cached in the store.
pub fn loader_for(store: &Store) -> anyhow::Result<Arc<WasmLoader>> {
    let runtime = Runtime::new().context("configuring wasmtime")?;
    Ok(Arc::new(
        WasmLoader::new(runtime, Arc::new(StoreModules(store.clone())))
            .with_artifact_cache(Arc::new(StoreArtifacts(store.clone()))),
    ))
}

fn open_existing(config: &Config, read_only: bool) -> anyhow::Result<Store> {
    let dir = config.db_dir();
    if !dir.join("CURRENT").is_file() {
        bail!("no exhost data in {} (start `exhost serve` with this --data-dir first)", config.data_dir.display());
    }
    let store = if read_only { Store::open_read_only(&dir) } else { Store::open(&dir) };
    store.with_context(|| format!("opening {} (is `exhost serve` running on it?)", dir.display()))
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Commands::Serve(args) => {
            let mut config = args.data.config()?;
            if let Some(listen) = args.listen {
                config.listen = listen;
            }
            crate::serve::run(config)
        }
        Commands::Journal { data, from_seq, limit, json } => {
            let store = open_existing(&data.config()?, true)?;
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
            let store = open_existing(&data.config()?, true)?;
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
                recovery::engine_from_snapshot(&store, loader, to_seq)?
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
        Commands::Bench(BenchCommand::Engine { flow, rounds }) => crate::bench::engine(flow.shape(), rounds.max(1)),
        Commands::Bench(BenchCommand::Fill { data, flow, snapshot }) => {
            crate::bench::fill(&data.config()?.data_dir, flow.shape(), snapshot)
        }
        Commands::Bench(BenchCommand::All { data, quick }) => {
            crate::bench::all(&data.config()?.data_dir.join("bench-all"), quick)
        }
        Commands::Bench(BenchCommand::Memory { resting, levels }) => crate::bench::memory::run(resting, levels.max(1)),
        Commands::Bench(BenchCommand::Journal { data, seconds, clients }) => {
            crate::bench::journal::run(&data.config()?.data_dir.join("bench-journal"), seconds, clients.max(1))
        }
        Commands::Bench(BenchCommand::Load { data, protocol, connections, pipeline, seconds }) => {
            let shape = crate::bench::load::LoadShape { protocol, connections: connections.max(1), pipeline, seconds };
            crate::bench::load::run(&data.config()?.data_dir.join("bench-load"), shape)
        }
        Commands::Bench(BenchCommand::Swap { flow, rounds }) => crate::bench::swap(flow.shape(), rounds),
        Commands::Bench(BenchCommand::Startup { data }) => crate::bench::startup(&data.config()?.data_dir),
        Commands::Module(command) => crate::modules_cli::run(command),
        Commands::Verify { data } => verify(&open_existing(&data.config()?, true)?),
        Commands::Repair { data, accept_journal_loss } => repair(&data.config()?, accept_journal_loss),
        Commands::Snapshot { data } => {
            let store = open_existing(&data.config()?, false)?;
            let loader = loader_for(&store)?;
            let (mut engine, _) = recovery::recover(&store, loader)?;
            let taken = crate::node::take_snapshot(&mut engine, &store).map_err(anyhow::Error::msg)?;
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
    let path = crate::watermark::path_in(&config.data_dir);
    let marks = crate::watermark::load(&path)?;
    let last = open_existing(config, true)?.journal_last_seq()?.unwrap_or(0);
    match crate::watermark::check(marks, last) {
        crate::watermark::Finding::Lost { last_seq, confirmed, ceiling } => {
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
            crate::watermark::store(&path, crate::watermark::Marks { confirmed: last_seq, ceiling: last_seq + 1 })?;
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

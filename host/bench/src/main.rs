//! `exhost-bench`: the benchmark suite, a binary apart from `exhost` so the
//! host links none of its load generator, peer order book or native plugins.
//! Each figure is printed as one JSON line (see docs/BENCHMARKS.md).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use exhost_server::Config;

#[derive(Parser)]
#[command(name = "exhost-bench", version, about = "Measurements of exhost; each figure is printed as one JSON line")]
struct Cli {
    #[command(subcommand)]
    command: BenchCommand,
}

/// Where a benchmark keeps its data directories.
#[derive(Args, Clone)]
struct DataArgs {
    /// The data directory (benchmarks work in subdirectories of it).
    #[arg(long, env = "EXHOST_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// A host configuration file (TOML), for its data directory.
    #[arg(long)]
    config: Option<PathBuf>,
}

impl DataArgs {
    fn config(&self) -> anyhow::Result<Config> {
        let mut config = Config::load(self.config.as_deref())?;
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        Ok(config)
    }
}

#[derive(Args, Clone, Copy)]
struct FlowArgs {
    /// Commands in the measured flow.
    #[arg(long, default_value_t = 1_000_000)]
    commands: u64,
    /// Orders resting in the book before the flow starts.
    #[arg(long, default_value_t = 100_000)]
    resting: u64,
    /// Price levels per side for the resting orders.
    #[arg(long, default_value_t = 1_000)]
    levels: u64,
    #[arg(long, default_value_t = 16)]
    users: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Put the position module in the pipeline (margin check and settlement of every order).
    #[arg(long)]
    positions: bool,
    /// Markets the orders spread over (the peer runs only with one).
    #[arg(long, default_value_t = 1)]
    markets: u32,
}

impl FlowArgs {
    fn shape(self) -> exhost_bench::FlowShape {
        exhost_bench::FlowShape {
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
enum BenchCommand {
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
        #[arg(long, value_enum, default_value_t = exhost_bench::load::Protocol::Http)]
        protocol: exhost_bench::load::Protocol,
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
    /// The live engine with and without a shadow run of an identical rebuild beside it.
    Shadow {
        #[command(flatten)]
        flow: FlowArgs,
        #[arg(long, default_value_t = 3)]
        rounds: u32,
    },
    /// A mark move, a funding and a liquidating move in one market against the number of holders.
    Holders {
        /// Holder counts, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [1_000u64, 10_000, 100_000, 1_000_000])]
        holders: Vec<u64>,
        /// Holders with less money, whom the last move must liquidate (exactly them).
        #[arg(long, default_value_t = 10)]
        thin: u64,
        /// Also through HTTP: a host on 127.0.0.1 over a data directory holding the state.
        #[arg(long)]
        http: bool,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Time the recovery of a data directory (snapshot restore and journal replay).
    Startup {
        #[command(flatten)]
        data: DataArgs,
    },
}

fn main() -> std::process::ExitCode {
    exhost_server::process::main_with(|| run(Cli::parse().command))
}

fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Engine { flow, rounds } => exhost_bench::engine(flow.shape(), rounds.max(1)),
        BenchCommand::Fill { data, flow, snapshot } => {
            exhost_bench::fill(&data.config()?.data_dir, flow.shape(), snapshot)
        }
        BenchCommand::All { data, quick } => exhost_bench::all(&data.config()?.data_dir.join("bench-all"), quick),
        BenchCommand::Memory { resting, levels } => exhost_bench::memory::run(resting, levels.max(1)),
        BenchCommand::Journal { data, seconds, clients } => {
            exhost_bench::journal::run(&data.config()?.data_dir.join("bench-journal"), seconds, clients.max(1))
        }
        BenchCommand::Load { data, protocol, connections, pipeline, seconds } => {
            let shape = exhost_bench::load::LoadShape { protocol, connections: connections.max(1), pipeline, seconds };
            exhost_bench::load::run(&data.config()?.data_dir.join("bench-load"), shape)
        }
        BenchCommand::Swap { flow, rounds } => exhost_bench::swap(flow.shape(), rounds),
        BenchCommand::Shadow { flow, rounds } => exhost_bench::shadow(flow.shape(), rounds),
        BenchCommand::Startup { data } => exhost_bench::startup(&data.config()?.data_dir),
        BenchCommand::Holders { holders, thin, http, data } => {
            exhost_bench::holders::run(&holders, thin)?;
            if http {
                exhost_bench::holders::run_http(&data.config()?.data_dir.join("bench-holders"), &holders)?;
            }
            Ok(())
        }
    }
}

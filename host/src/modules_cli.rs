//! `exhost module ...`: upload and activate through a running host's API,
//! create a plugin crate from the template, record a test fixture from a
//! data directory's journal.

use std::path::{Path, PathBuf};

use std::sync::Arc;

use anyhow::{Context, bail};
use exhost_engine::{Engine, RecordingLoader};
use exhost_node::recovery::{self, Progress};
use exhost_node::{datadir, loader_for};
use serde_json::{Value, json};

use clap::Subcommand;

use crate::args::DataArgs;
use crate::remote::{Auth, HostArgs, call};

#[derive(Subcommand)]
pub enum ModuleCommand {
    /// The stored modules of a running host and its activation history.
    List {
        #[command(flatten)]
        host: HostArgs,
        #[arg(long)]
        json: bool,
    },
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

pub fn run(command: ModuleCommand) -> anyhow::Result<()> {
    match command {
        ModuleCommand::List { host, json } => crate::remote::module_list(&host, json),
        ModuleCommand::Upload { file, host, market } => {
            let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let path = match market {
                Some(symbol) => format!("/admin/v1/modules?market={symbol}"),
                None => "/admin/v1/modules".to_string(),
            };
            let answer = call(&host, Auth::Operator, "POST", &path, Some(("application/wasm", bytes)))?;
            println!("{}", serde_json::to_string_pretty(&answer)?);
            Ok(())
        }
        ModuleCommand::Activate { hash, market, position, host } => {
            let path = match (&market, position) {
                (Some(symbol), false) => format!("/admin/v1/markets/{symbol}/module"),
                (None, true) => "/admin/v1/position-module".to_string(),
                _ => bail!("give either --market SYMBOL or --position"),
            };
            let body = json!({ "hash": hash }).to_string().into_bytes();
            let answer = call(&host, Auth::Operator, "POST", &path, Some(("application/json", body)))?;
            println!("{}", serde_json::to_string_pretty(&answer)?);
            Ok(())
        }
        ModuleCommand::New { name, dir, sdk } => new_plugin(&name, dir, sdk),
        ModuleCommand::Fixture { data, market, out, to_seq } => {
            fixture(&data.config()?.data_dir, &market, &out, to_seq)
        }
    }
}

/// One operator request; an error answer becomes an error with its code and message.
const TEMPLATE_CARGO: &str = include_str!("../../guest-sdk/template/Cargo.toml.tmpl");
const TEMPLATE_CONFIG: &str = include_str!("../../guest-sdk/template/cargo-config.toml.tmpl");
const TEMPLATE_LIB: &str = include_str!("../../guest-sdk/template/lib.rs.tmpl");
const TEMPLATE_README: &str = include_str!("../../guest-sdk/template/README.md.tmpl");

/// The guest SDK this binary was built from, if it is still there.
fn default_sdk() -> Option<PathBuf> {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("guest-sdk");
    sdk.join("Cargo.toml").is_file().then(|| sdk.canonicalize().unwrap_or(sdk))
}

fn new_plugin(name: &str, dir: Option<PathBuf>, sdk: Option<PathBuf>) -> anyhow::Result<()> {
    let valid = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_lowercase();
    if !valid {
        bail!("the plugin name must be lowercase letters, digits, '-' or '_', starting with a letter");
    }
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() {
        bail!("{} already exists", dir.display());
    }
    let sdk = match sdk.or_else(default_sdk) {
        Some(sdk) => sdk.canonicalize().with_context(|| format!("the SDK path {}", sdk.display()))?,
        None => bail!("give --sdk PATH to exhost's guest-sdk folder"),
    };
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{crate}}", &name.replace('-', "_"))
            .replace("{{sdk}}", &sdk.display().to_string())
    };
    std::fs::create_dir_all(dir.join("src"))?;
    std::fs::create_dir_all(dir.join(".cargo"))?;
    std::fs::write(dir.join("Cargo.toml"), fill(TEMPLATE_CARGO))?;
    std::fs::write(dir.join(".cargo/config.toml"), fill(TEMPLATE_CONFIG))?;
    std::fs::write(dir.join("src/lib.rs"), fill(TEMPLATE_LIB))?;
    std::fs::write(dir.join("README.md"), fill(TEMPLATE_README))?;
    std::fs::write(dir.join(".gitignore"), "/target\n")?;
    println!("created {} (a complete price-time book to start from)", dir.display());
    println!("  cd {} && cargo test && cargo build --release --target wasm32-unknown-unknown", dir.display());
    Ok(())
}

/// Record what one market's module received, as the fixture format of
/// `exhost-testkit`: `{"config", "commands": [{"ctx", "command"}]}`. The
/// journal is replayed from its start through the data directory's modules,
/// with a recording loader: the commands are those the module was handed and
/// kept, exactly (liquidation orders are there; orders the position module
/// refused, and commands a module fault rolled back, are not). `modules` says
/// which module received them from which command on, when a hot swap changed it.
fn fixture(data_dir: &Path, symbol: &str, out: &Path, to_seq: Option<u64>) -> anyhow::Result<()> {
    let store = datadir::open_existing(data_dir, true)?;
    let last = store.journal_last_seq()?.unwrap_or(0);
    let to_seq = to_seq.unwrap_or(last);
    if to_seq > last {
        bail!("--to-seq {to_seq} is beyond the last journal record {last}");
    }
    let recorder = Arc::new(RecordingLoader::new(loader_for(&store)?));
    let mut engine = Engine::new(recorder.clone());
    let mut progress = Progress::new("record", to_seq, true);
    recovery::replay(&store, &mut engine, to_seq, &mut progress, |_| Ok(()))?;
    let recording = engine
        .registry()
        .market_id(symbol)
        .and_then(|market| recorder.recording(market))
        .with_context(|| format!("no market {symbol:?} in this journal up to seq {to_seq}"))?;
    let modules: Vec<Value> = recording
        .modules
        .iter()
        .map(|(from, hash)| json!({ "from_command": from, "module_hash": hash.to_hex() }))
        .collect();
    let fixture = json!({
        "symbol": symbol,
        "config": recording.config,
        "commands": recording.commands,
        "modules": modules,
    });
    std::fs::write(out, serde_json::to_vec(&fixture)?).with_context(|| format!("writing {}", out.display()))?;
    println!("recorded {} commands of {symbol} into {}", recording.commands.len(), out.display());
    if modules.len() > 1 {
        println!("  note: {} modules received them in turn (hot swaps); see \"modules\"", modules.len());
    }
    Ok(())
}

//! `exhost module ...`: upload and activate through a running host's API,
//! create a plugin crate from the template, record a test fixture from a
//! data directory's journal.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use exhost_engine::Command;
use exhost_guest_sdk::abi::ApplyInput;
use exhost_guest_sdk::codec::decode;
use exhost_guest_sdk::{CommandContext, MatchingCommand, OrderId};
use serde_json::{Value, json};

use clap::Subcommand;

use crate::args::{DataArgs, HostArgs};

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

pub fn run(command: ModuleCommand) -> anyhow::Result<()> {
    match command {
        ModuleCommand::Upload { file, host, market } => {
            let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let path = match market {
                Some(symbol) => format!("/admin/v1/modules?market={symbol}"),
                None => "/admin/v1/modules".to_string(),
            };
            let answer = call(&host, "POST", &path, Some(("application/wasm", bytes)))?;
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
            let answer = call(&host, "POST", &path, Some(("application/json", body)))?;
            println!("{}", serde_json::to_string_pretty(&answer)?);
            Ok(())
        }
        ModuleCommand::New { name, dir, sdk } => new_plugin(&name, dir, sdk),
        ModuleCommand::Fixture { data, market, out, to_seq } => {
            fixture(&data.config()?.db_dir(), &market, &out, to_seq)
        }
    }
}

/// One operator request; an error answer becomes an error with its code and message.
fn call(host: &HostArgs, method: &str, path: &str, body: Option<(&str, Vec<u8>)>) -> anyhow::Result<Value> {
    let token = host.token()?;
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut request = ureq::http::Request::builder()
        .method(method)
        .uri(format!("{}{path}", host.url.trim_end_matches('/')))
        .header("Authorization", format!("Bearer {token}"));
    let bytes = match body {
        Some((content_type, bytes)) => {
            request = request.header("Content-Type", content_type);
            bytes
        }
        None => Vec::new(),
    };
    let mut response =
        agent.run(request.body(bytes)?).with_context(|| format!("{method} {} (is exhost serve running?)", host.url))?;
    let status = response.status();
    let answer: Value = serde_json::from_str(&response.body_mut().read_to_string()?).unwrap_or(Value::Null);
    if !status.is_success() {
        bail!(
            "{} {}: {}",
            status.as_u16(),
            answer["error"]["code"].as_str().unwrap_or("error"),
            answer["error"]["message"].as_str().unwrap_or("")
        );
    }
    Ok(answer)
}

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

/// Record the order commands of one market from the journal, as the fixture
/// format of `exhost-testkit`: `{"config", "commands": [{"ctx", "command"}]}`.
/// These are the commands as journaled: orders the position module refused are
/// included, liquidation orders are not.
fn fixture(db: &Path, symbol: &str, out: &Path, to_seq: Option<u64>) -> anyhow::Result<()> {
    let store = exhost_store::Store::open_read_only(db).with_context(|| format!("opening {}", db.display()))?;
    let mut market = None;
    let mut config = None;
    let mut commands: Vec<ApplyInput<MatchingCommand>> = Vec::new();
    for record in store.journal_from(1) {
        let record = record?;
        if to_seq.is_some_and(|last| record.seq > last) {
            break;
        }
        let ctx = CommandContext { seq: record.seq, ts_ns: record.ts_ns };
        let command: Command = decode(&record.command)?;
        let matching = match command {
            Command::CreateMarket(spec) if spec.symbol == symbol => {
                config = Some(spec.config.clone());
                None
            }
            Command::CreateMarket(_) => {
                // Markets are numbered in creation order.
                None
            }
            Command::PlaceOrder(order) if Some(order.market) == market => {
                Some(MatchingCommand::Place(order.to_matching(OrderId(record.seq))))
            }
            Command::CancelOrder { market: m, user_id, order_id } if Some(m) == market => {
                Some(MatchingCommand::Cancel { order_id, user_id })
            }
            Command::AmendOrder { market: m, user_id, order_id, price_ticks, qty_lots } if Some(m) == market => {
                Some(MatchingCommand::Amend { order_id, user_id, price_ticks, qty_lots })
            }
            Command::MassCancel { market: m, user_id } if m.is_none() || m == market => {
                market.map(|_| MatchingCommand::MassCancel { user_id })
            }
            _ => None,
        };
        if config.is_some() && market.is_none() {
            market = Some(exhost_engine::MarketId(count_markets_before(&store, record.seq)?));
        }
        if let Some(command) = matching {
            commands.push(ApplyInput { ctx, command });
        }
    }
    let Some(config) = config else { bail!("no market {symbol:?} in this journal") };
    let fixture = json!({ "symbol": symbol, "config": config, "commands": commands });
    std::fs::write(out, serde_json::to_vec(&fixture)?)?;
    println!("recorded {} commands of {symbol} into {}", commands.len(), out.display());
    Ok(())
}

/// How many markets were created before `seq` (so the market created at `seq` has that id).
fn count_markets_before(store: &exhost_store::Store, seq: u64) -> anyhow::Result<u32> {
    let mut count = 0;
    for record in store.journal_from(1) {
        let record = record?;
        if record.seq >= seq {
            break;
        }
        if let Command::CreateMarket(_) = decode::<Command>(&record.command)? {
            count += 1;
        }
    }
    Ok(count)
}

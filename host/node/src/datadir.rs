//! A data directory: created durably, opened, checked against its journal
//! watermark, and seeded with the embedded reference modules and the default
//! market on first start.

use std::path::{Path, PathBuf};

use exhost_engine::{Command, MarketSpec, ModuleHash, ModuleLimits, RiskParams, Scale};
use exhost_guest_sdk::{MarketConfig, PositionConfig};
use exhost_store::Store;

use crate::error::DataDirError;
use crate::watermark::{self, Finding, Watermark};

/// Where the database of a data directory lives.
pub fn db_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("db")
}

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

/// Create the database directory (and the data directory) if needed, and
/// make their entries durable, up to the data directory's parent: RocksDB
/// syncs what it writes inside its directory, not the directory's own entry,
/// so a power cut after a fresh `mkdir` (by exhost or by the operator) could
/// take the whole data directory with it. The power-loss test's filesystem
/// showed exactly that.
pub fn create_durably(db_dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(db_dir)?;
    // The database directory, the data directory and the data directory's parent.
    for dir in db_dir.ancestors().skip(1).take(2) {
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        watermark::sync_directory(dir)?;
    }
    Ok(())
}

/// Open the database of a data directory that must already hold one (the
/// offline tools).
pub fn open_existing(data_dir: &Path, read_only: bool) -> Result<Store, DataDirError> {
    let dir = db_dir(data_dir);
    if !dir.join("CURRENT").is_file() {
        return Err(DataDirError::Missing { data_dir: data_dir.to_path_buf() });
    }
    let store = if read_only { Store::open_read_only(&dir) } else { Store::open(&dir) };
    store.map_err(|source| DataDirError::Open { db_dir: dir, source })
}

/// Compare the journal with its watermark before anything is replayed: a
/// journal that lost acknowledged commands stops start-up, with what was
/// lost and how to accept it; otherwise the watermark is opened for the write path.
pub fn journal_watermark(data_dir: &Path, store: &Store) -> Result<Watermark, DataDirError> {
    let path = watermark::path_in(data_dir);
    let last_seq = store.journal_last_seq()?.unwrap_or(0);
    match watermark::check(watermark::load(&path)?, last_seq) {
        Finding::Lost { last_seq, confirmed, ceiling } => {
            return Err(DataDirError::JournalLost { data_dir: data_dir.to_path_buf(), last_seq, confirmed, ceiling });
        }
        Finding::Whole { last_seq, ceiling } => tracing::info!(
            last_seq,
            acknowledged_at_most = ceiling - 1,
            "the journal ends at seq {last_seq}; no acknowledgement could have named a sequence past {}",
            ceiling - 1
        ),
        Finding::Unmarked => tracing::info!(last_seq, "the journal has no watermark yet; starting one"),
    }
    Watermark::open(path, last_seq)
}

/// The hashes of the embedded matching and position modules.
pub fn embedded_hashes() -> (ModuleHash, ModuleHash) {
    (ModuleHash::of(exhost_embedded::PRICETIME_WASM), ModuleHash::of(exhost_embedded::POSITIONS_WASM))
}

/// Store the embedded reference modules (idempotent); returns the hashes of
/// the matching and the position module.
pub fn install_embedded(store: &Store) -> Result<(ModuleHash, ModuleHash), DataDirError> {
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

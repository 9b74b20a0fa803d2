//! # exhost store
//!
//! The only code that knows RocksDB. One database per data directory, one
//! column family per concern:
//!
//! | family | key | value |
//! |---|---|---|
//! | `journal` | seq, u64 big-endian | a [`journal`] record (versioned, CRC32C) |
//! | `events` | seq u64 BE, idx u32 BE | an encoded event |
//! | `snapshots` | seq u64 BE | a [`snapshots`] record (digest, CRC32C, bytes) |
//! | `snapshot_index` | seq u64 BE | digest and size, to list snapshots cheaply |
//! | `modules` | SHA-256 of the bytes | module bytes |
//! | `read` | namespaced read-model keys | read-model values |
//! | `meta` | name | small values (positions of background writers) |
//! | `artifacts` | module hash, engine version and configuration | compiled machine code |
//!
//! Big-endian keys make RocksDB's byte order the numeric order, so "from
//! sequence N" is a seek and "newest first" is a reverse iteration.
//!
//! Durability: journal, snapshot and module writes are synced (unless the
//! operator chose `Durability::None` for a benchmark); event and read-model
//! writes are not, because they are rebuilt from the journal after a crash.

pub mod journal;
pub mod snapshots;

use std::path::Path;
use std::sync::Arc;

use rocksdb::{
    BlockBasedOptions, BoundColumnFamily, Cache, ColumnFamilyDescriptor, DBWithThreadMode, Direction, IteratorMode,
    MultiThreaded, Options, WriteBatch, WriteOptions,
};

pub use journal::{JournalRecord, RECORD_FORMAT};
pub use snapshots::{SnapshotInfo, StoredSnapshot};

type Db = DBWithThreadMode<MultiThreaded>;

/// RocksDB's memory, in bytes, as it reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreMemory {
    /// Memtables, active and waiting to be flushed.
    pub memtables: u64,
    /// Table readers' index and filter blocks held outside the block cache.
    pub table_readers: u64,
    /// The shared block cache (index and filter blocks included).
    pub block_cache: u64,
    /// Flushed memtables still held (by an iterator or an older version).
    pub memtables_pinned: u64,
    /// The part of the block cache in use and so not evictable.
    pub block_cache_pinned: u64,
}

/// Write-ahead log kept at most (bytes): past it, RocksDB flushes the families
/// that hold the oldest log back, so the log a restart replays stays small.
const WAL_BYTES_MAX: u64 = 256 << 20;
/// Memtables of all families together (bytes); past it, the largest is flushed.
const MEMTABLE_BYTES_MAX: usize = 256 << 20;
/// The block cache every family shares, index and filter blocks included (bytes).
const BLOCK_CACHE_BYTES: usize = 64 << 20;

/// The column families, spelled once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Journal,
    Events,
    Snapshots,
    SnapshotIndex,
    Modules,
    Read,
    Meta,
    Artifacts,
}

impl Family {
    pub const ALL: [Family; 8] = [
        Family::Journal,
        Family::Events,
        Family::Snapshots,
        Family::SnapshotIndex,
        Family::Modules,
        Family::Read,
        Family::Meta,
        Family::Artifacts,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Family::Journal => "journal",
            Family::Events => "events",
            Family::Snapshots => "snapshots",
            Family::SnapshotIndex => "snapshot_index",
            Family::Modules => "modules",
            Family::Read => "read",
            Family::Meta => "meta",
            Family::Artifacts => "artifacts",
        }
    }
}

/// Whether a write waits for the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// fsync before returning: the only mode for real use.
    Synced,
    /// Written to the OS only; for benchmarks that measure everything else.
    None,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("storage error: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("journal record {seq} is corrupt: {reason}")]
    CorruptRecord { seq: u64, reason: String },
    #[error("journal has a gap: record {found} follows {previous}")]
    Gap { previous: u64, found: u64 },
    #[error("snapshot at {seq} is corrupt: {reason}")]
    CorruptSnapshot { seq: u64, reason: String },
    #[error("stored value under {family}/{key} is malformed: {reason}")]
    Malformed { family: &'static str, key: String, reason: String },
}

/// The database of one data directory.
#[derive(Clone)]
pub struct Store {
    db: Arc<Db>,
}

/// Writes to apply together, atomically.
/// Writes to apply together, atomically and in order (a later write to the
/// same key wins).
#[derive(Default)]
pub struct Batch {
    ops: Vec<(Family, Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    pub fn put(&mut self, family: Family, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push((family, key.into(), Some(value.into())));
    }

    pub fn delete(&mut self, family: Family, key: impl Into<Vec<u8>>) {
        self.ops.push((family, key.into(), None));
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }
}

impl Store {
    /// Open (creating if needed) the database under `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Self::open_mode(dir, false)
    }

    /// Open an existing database to read only; works beside a running host
    /// (it sees what was written before it opened).
    pub fn open_read_only(dir: &Path) -> Result<Store, StoreError> {
        Self::open_mode(dir, true)
    }

    fn open_mode(dir: &Path, read_only: bool) -> Result<Store, StoreError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_max_background_jobs(2);
        options.set_bytes_per_sync(1 << 20);
        // Point-in-time WAL recovery: after a crash, keep every write up to the
        // first damaged one, which is exactly what was acknowledged.
        options.set_wal_recovery_mode(rocksdb::DBRecoveryMode::PointInTime);
        // Bounded memory and disk under sustained load. A family written rarely
        // (meta, snapshot index) keeps the oldest write-ahead log alive until its
        // memtable is flushed; without a cap the logs grew by 2.4 GB in three
        // minutes of load (RocksDB's default cap is four times every memtable,
        // 4 GB here), and all of it is replayed when the host opens.
        options.set_max_total_wal_size(WAL_BYTES_MAX);
        options.set_db_write_buffer_size(MEMTABLE_BYTES_MAX);
        // One block cache for every family, holding the index and filter blocks
        // too: otherwise each open table file keeps its own in memory, and the
        // host grows with the size of its history. Nothing is pinned in it:
        // pinned level-0 blocks took it past its capacity (83 MB of 64 in a
        // 25-minute run).
        let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let families = Family::ALL.iter().map(|family| {
            let mut cf = Options::default();
            cf.set_write_buffer_size(64 << 20);
            let mut tables = BlockBasedOptions::default();
            tables.set_block_cache(&cache);
            tables.set_cache_index_and_filter_blocks(true);
            cf.set_block_based_table_factory(&tables);
            if matches!(family, Family::Journal | Family::Events | Family::Snapshots) {
                cf.set_compression_type(rocksdb::DBCompressionType::Lz4);
            }
            ColumnFamilyDescriptor::new(family.name(), cf)
        });
        let db = if read_only {
            Db::open_cf_descriptors_read_only(&options, dir, families, false)?
        } else {
            Db::open_cf_descriptors(&options, dir, families)?
        };
        Ok(Store { db: Arc::new(db) })
    }

    fn cf(&self, family: Family) -> Arc<BoundColumnFamily<'_>> {
        self.db.cf_handle(family.name()).expect("every family is created at open")
    }

    /// Apply a batch atomically.
    pub fn write(&self, batch: Batch, durability: Durability) -> Result<(), StoreError> {
        let mut inner = WriteBatch::default();
        for (family, key, value) in &batch.ops {
            match value {
                Some(value) => inner.put_cf(&self.cf(*family), key, value),
                None => inner.delete_cf(&self.cf(*family), key),
            }
        }
        self.write_raw(inner, durability)
    }

    pub(crate) fn write_raw(&self, batch: WriteBatch, durability: Durability) -> Result<(), StoreError> {
        let mut options = WriteOptions::default();
        options.set_sync(durability == Durability::Synced);
        self.db.write_opt(batch, &options)?;
        Ok(())
    }

    pub fn get(&self, family: Family, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(&self.cf(family), key)?)
    }

    /// Entries with keys at or after `from` (forward) or at or before it (reverse).
    pub fn scan<'a>(
        &'a self,
        family: Family,
        from: &[u8],
        forward: bool,
    ) -> impl Iterator<Item = Result<(Box<[u8]>, Box<[u8]>), StoreError>> + use<'a> {
        let direction = if forward { Direction::Forward } else { Direction::Reverse };
        self.db
            .iterator_cf(&self.cf(family), IteratorMode::From(from, direction))
            .map(|item| item.map_err(StoreError::from))
    }

    /// The entry with the greatest key.
    pub fn last(&self, family: Family) -> Result<Option<(Box<[u8]>, Box<[u8]>)>, StoreError> {
        Ok(self.db.iterator_cf(&self.cf(family), IteratorMode::End).next().transpose()?)
    }

    /// Store module bytes under their hash (idempotent, synced).
    pub fn put_module(&self, hash: &[u8; 32], bytes: &[u8]) -> Result<(), StoreError> {
        let mut batch = Batch::default();
        batch.put(Family::Modules, hash.to_vec(), bytes.to_vec());
        self.write(batch, Durability::Synced)
    }

    pub fn module(&self, hash: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(Family::Modules, hash)
    }

    /// Every stored module's hash and size.
    pub fn modules(&self) -> Result<Vec<([u8; 32], u64)>, StoreError> {
        self.scan(Family::Modules, &[], true)
            .map(|item| {
                let (key, value) = item?;
                let hash: [u8; 32] = key.as_ref().try_into().map_err(|_| StoreError::Malformed {
                    family: Family::Modules.name(),
                    key: hex_key(&key),
                    reason: "key is not 32 bytes".into(),
                })?;
                Ok((hash, value.len() as u64))
            })
            .collect()
    }

    pub fn meta_u64(&self, name: &str) -> Result<Option<u64>, StoreError> {
        match self.get(Family::Meta, name.as_bytes())? {
            None => Ok(None),
            Some(bytes) => Ok(Some(u64::from_be_bytes(bytes.as_slice().try_into().map_err(|_| {
                StoreError::Malformed { family: Family::Meta.name(), key: name.into(), reason: "not 8 bytes".into() }
            })?))),
        }
    }

    /// What RocksDB holds in memory now, summed over the families.
    pub fn memory(&self) -> Result<StoreMemory, StoreError> {
        let mut memory = StoreMemory::default();
        for family in Family::ALL {
            let cf = self.cf(family);
            let property = |name: &str| self.db.property_int_value_cf(&cf, name).map(Option::unwrap_or_default);
            memory.memtables += property("rocksdb.cur-size-all-mem-tables")?;
            memory.memtables_pinned +=
                property("rocksdb.size-all-mem-tables")?.saturating_sub(property("rocksdb.cur-size-all-mem-tables")?);
            memory.table_readers += property("rocksdb.estimate-table-readers-mem")?;
            // One cache for every family: each reports the same figure.
            memory.block_cache = property("rocksdb.block-cache-usage")?;
            memory.block_cache_pinned = property("rocksdb.block-cache-pinned-usage")?;
        }
        Ok(memory)
    }

    /// Flush memtables to disk files (used before measuring sizes and at shutdown).
    pub fn flush(&self) -> Result<(), StoreError> {
        for family in Family::ALL {
            self.db.flush_cf(&self.cf(family))?;
        }
        Ok(())
    }
}

pub(crate) fn hex_key(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sequence-number keys.
pub fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// Event keys: sequence then index, both big-endian.
pub fn event_key(seq: u64, idx: u32) -> [u8; 12] {
    let mut key = [0u8; 12];
    key[..8].copy_from_slice(&seq.to_be_bytes());
    key[8..].copy_from_slice(&idx.to_be_bytes());
    key
}

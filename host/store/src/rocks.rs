//! The RocksDB backend: one database per data directory, one column family
//! per [`Family`], tuned for bounded memory and disk under sustained load.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{
    BlockBasedOptions, BoundColumnFamily, Cache, ColumnFamilyDescriptor, DBWithThreadMode, Direction, IteratorMode,
    MultiThreaded, Options, WriteBatch, WriteOptions,
};

use crate::store::{Backend, Batch, Durability, Entries, Entry, Family, Store, StoreError, StoreMemory};

type Db = DBWithThreadMode<MultiThreaded>;

impl From<rocksdb::Error> for StoreError {
    fn from(error: rocksdb::Error) -> StoreError {
        StoreError::Backend(error.to_string())
    }
}

/// Write-ahead log kept at most (bytes): past it, RocksDB flushes the families
/// that hold the oldest log back, so the log a restart replays stays small.
const WAL_BYTES_MAX: u64 = 256 << 20;
/// Memtables of all families together (bytes); past it, the largest is flushed.
const MEMTABLE_BYTES_MAX: usize = 256 << 20;
/// The block cache every family shares, index and filter blocks included (bytes).
const BLOCK_CACHE_BYTES: usize = 64 << 20;

struct Rocks {
    db: Db,
}

impl Store {
    /// Open (creating if needed) the RocksDB database under `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Ok(Store::with_backend(Arc::new(Rocks::open(dir, false)?)))
    }

    /// Open an existing database to read only; works beside a running host
    /// (it sees what was written before it opened).
    pub fn open_read_only(dir: &Path) -> Result<Store, StoreError> {
        Ok(Store::with_backend(Arc::new(Rocks::open(dir, true)?)))
    }
}

/// The table files (SSTs) that hold a family in the database under `dir`,
/// opened read-only: for diagnostics, and for tests that damage one.
pub fn table_files(dir: &Path, family: Family) -> Result<Vec<std::path::PathBuf>, StoreError> {
    let rocks = Rocks::open(dir, true)?;
    let files = rocks.db.live_files()?;
    Ok(files
        .into_iter()
        .filter(|file| file.column_family_name == family.name())
        .map(|file| dir.join(file.name.trim_start_matches('/')))
        .collect())
}

impl Rocks {
    fn open(dir: &Path, read_only: bool) -> Result<Rocks, StoreError> {
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
        Ok(Rocks { db })
    }

    fn cf(&self, family: Family) -> Arc<BoundColumnFamily<'_>> {
        self.db.cf_handle(family.name()).expect("every family is created at open")
    }
}

impl Backend for Rocks {
    fn write(&self, batch: Batch, durability: Durability) -> Result<(), StoreError> {
        let mut inner = WriteBatch::default();
        for (family, key, value) in batch.ops() {
            match value {
                Some(value) => inner.put_cf(&self.cf(*family), key, value),
                None => inner.delete_cf(&self.cf(*family), key),
            }
        }
        let mut options = WriteOptions::default();
        options.set_sync(durability == Durability::Synced);
        self.db.write_opt(inner, &options)?;
        Ok(())
    }

    fn get(&self, family: Family, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(&self.cf(family), key)?)
    }

    fn scan<'a>(&'a self, family: Family, from: &[u8], forward: bool) -> Entries<'a> {
        let direction = if forward { Direction::Forward } else { Direction::Reverse };
        Box::new(
            self.db
                .iterator_cf(&self.cf(family), IteratorMode::From(from, direction))
                .map(|item| item.map_err(StoreError::from)),
        )
    }

    fn last(&self, family: Family) -> Result<Option<Entry>, StoreError> {
        Ok(self.db.iterator_cf(&self.cf(family), IteratorMode::End).next().transpose()?)
    }

    fn memory(&self) -> Result<StoreMemory, StoreError> {
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

    fn size_bytes(&self, family: Family) -> Result<u64, StoreError> {
        let cf = self.cf(family);
        let property = |name: &str| self.db.property_int_value_cf(&cf, name).map(Option::unwrap_or_default);
        Ok(property("rocksdb.total-sst-files-size")? + property("rocksdb.cur-size-all-mem-tables")?)
    }

    fn flush(&self) -> Result<(), StoreError> {
        for family in Family::ALL {
            self.db.flush_cf(&self.cf(family))?;
        }
        Ok(())
    }

    fn checkpoint(&self, dir: &Path) -> Result<(), StoreError> {
        // Memtables are flushed first, so the copy needs no write-ahead log
        // replayed across families to be consistent.
        rocksdb::checkpoint::Checkpoint::new(&self.db)?.create_checkpoint(dir)?;
        Ok(())
    }
}

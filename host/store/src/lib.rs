//! # exhost store
//!
//! Storage for one data directory, behind a narrow seam ([`Backend`]: atomic
//! batches, point reads, ordered scans) with two implementations: RocksDB
//! (`rocks`, the only code that knows it) and an in-memory twin
//! ([`memory::MemoryBackend`]) that keeps synced and unsynced writes apart
//! and can fail a write, fail a sync or lose everything unsynced at a
//! simulated crash, so the write path can be tried against every fault. One
//! family per concern:
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
pub mod memory;
#[cfg(feature = "rocksdb")]
mod rocks;
mod store;
#[cfg(feature = "rocksdb")]
pub use rocks::table_files;
pub mod snapshots;

pub use journal::{CommandLog, JournalRecord, RECORD_FORMAT, Records};
pub use snapshots::{SnapshotInfo, StoredSnapshot};
pub use store::{
    Backend, Batch, BatchOp, Durability, Entries, Entry, Family, Store, StoreError, StoreMemory, event_key, seq_key,
};

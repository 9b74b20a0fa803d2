//! The seam itself: what a backend offers, the store over it, batches,
//! column families and keys.

use std::sync::Arc;

/// Entries of an ordered scan.
/// A stored key and its value.
pub type Entry = (Box<[u8]>, Box<[u8]>);
/// One write of a batch: a put (`Some` value) or a delete (`None`).
pub type BatchOp = (Family, Vec<u8>, Option<Vec<u8>>);

pub type Entries<'a> = Box<dyn Iterator<Item = Result<Entry, StoreError>> + 'a>;

/// What the store needs of a database: atomic batches, point reads, ordered
/// scans. Keys compare as bytes.
pub trait Backend: Send + Sync {
    /// Apply a batch atomically; with `Durability::Synced`, it and every
    /// earlier write are durable when this returns `Ok`.
    fn write(&self, batch: Batch, durability: Durability) -> Result<(), StoreError>;
    fn get(&self, family: Family, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Entries with keys at or after `from` (forward) or at or before it (reverse).
    fn scan<'a>(&'a self, family: Family, from: &[u8], forward: bool) -> Entries<'a>;
    /// The entry with the greatest key.
    fn last(&self, family: Family) -> Result<Option<Entry>, StoreError>;
    fn memory(&self) -> Result<StoreMemory, StoreError> {
        Ok(StoreMemory::default())
    }
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// About how many bytes one family holds (on disk and in memtables);
    /// an estimate, for the operator's status, never for correctness.
    fn size_bytes(&self, family: Family) -> Result<u64, StoreError>;
    /// Write a consistent copy of the whole database into `dir`, which must
    /// not exist yet (files are hard-linked where the filesystem allows).
    fn checkpoint(&self, dir: &std::path::Path) -> Result<(), StoreError> {
        let _ = dir;
        Err(StoreError::Backend("this store keeps nothing on disk to copy".into()))
    }
}

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
    Backend(String),
    #[error("journal record {seq} is corrupt: {reason}")]
    CorruptRecord { seq: u64, reason: String },
    #[error("journal has a gap: record {found} follows {previous}")]
    Gap { previous: u64, found: u64 },
    #[error("snapshot at {seq} is corrupt: {reason}")]
    CorruptSnapshot { seq: u64, reason: String },
    #[error("stored value under {family}/{key} is malformed: {reason}")]
    Malformed { family: &'static str, key: String, reason: String },
    /// A replicated command log refused the append because this node is not
    /// (or no longer) its writer: nothing of the batch was written, ever.
    #[error("this node is not the active writer of the command log: {0}")]
    NotWriter(String),
    /// A replicated command log did not confirm the append: the batch may or
    /// may not be in the log, and this node stopped writing to it.
    #[error("the replicated command log did not confirm the write: {0}")]
    Unconfirmed(String),
}

/// The database of one data directory.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
}

/// Writes to apply together, atomically and in order (a later write to the
/// same key wins).
#[derive(Clone, Debug, Default)]
pub struct Batch {
    ops: Vec<BatchOp>,
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

    /// The operations, in order: family, key, and the value (`None`: delete).
    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
    }
}

impl Store {
    /// A store over any backend.
    pub fn with_backend(backend: Arc<dyn Backend>) -> Store {
        Store { backend }
    }

    /// Apply a batch atomically.
    pub fn write(&self, batch: Batch, durability: Durability) -> Result<(), StoreError> {
        self.backend.write(batch, durability)
    }

    pub fn get(&self, family: Family, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.backend.get(family, key)
    }

    /// Entries with keys at or after `from` (forward) or at or before it (reverse).
    pub fn scan<'a>(&'a self, family: Family, from: &[u8], forward: bool) -> Entries<'a> {
        self.backend.scan(family, from, forward)
    }

    /// The entry with the greatest key.
    pub fn last(&self, family: Family) -> Result<Option<Entry>, StoreError> {
        self.backend.last(family)
    }

    /// What the backend holds in memory now, summed over the families.
    pub fn memory(&self) -> Result<StoreMemory, StoreError> {
        self.backend.memory()
    }

    /// About how many bytes one family holds (an estimate, for status pages).
    pub fn size_bytes(&self, family: Family) -> Result<u64, StoreError> {
        self.backend.size_bytes(family)
    }

    /// Flush memtables to disk files (used before measuring sizes and at shutdown).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.backend.flush()
    }

    /// A consistent copy of every family, as of now, in the new directory
    /// `dir` (on the same filesystem, its files are hard links): what a new
    /// node of a cluster starts from when the command stream no longer holds
    /// the beginning.
    pub fn checkpoint(&self, dir: &std::path::Path) -> Result<(), StoreError> {
        self.backend.checkpoint(dir)
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

//! Stored engine snapshots.
//!
//! Value under key = seq (u64 BE), format 1: a format byte, the 32-byte state
//! digest, the CRC32C (little-endian) of the snapshot bytes, then the bytes.
//! A small index family holds (digest, size) per snapshot so `verify` and the
//! admin API can list them without reading every snapshot.

use crate::store::{Batch, Durability, Family, Store, StoreError, seq_key};

const SNAPSHOT_RECORD_FORMAT: u8 = 1;
const HEADER_BYTES: usize = 1 + 32 + 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub seq: u64,
    pub digest: [u8; 32],
    pub size_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSnapshot {
    pub info: SnapshotInfo,
    pub bytes: Vec<u8>,
}

impl Store {
    /// Store a snapshot (synced): it may be all that recovery starts from.
    pub fn put_snapshot(&self, seq: u64, digest: [u8; 32], bytes: &[u8]) -> Result<(), StoreError> {
        let mut record = Vec::with_capacity(HEADER_BYTES + bytes.len());
        record.push(SNAPSHOT_RECORD_FORMAT);
        record.extend_from_slice(&digest);
        record.extend_from_slice(&crc32c::crc32c(bytes).to_le_bytes());
        record.extend_from_slice(bytes);
        let mut index = Vec::with_capacity(40);
        index.extend_from_slice(&digest);
        index.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
        let mut batch = Batch::default();
        batch.put(Family::Snapshots, seq_key(seq).to_vec(), record);
        batch.put(Family::SnapshotIndex, seq_key(seq).to_vec(), index);
        self.write(batch, Durability::Synced)
    }

    /// Every stored snapshot, oldest first.
    pub fn snapshot_infos(&self) -> Result<Vec<SnapshotInfo>, StoreError> {
        self.scan(Family::SnapshotIndex, &[], true)
            .map(|item| {
                let (key, value) = item?;
                let malformed = |reason: &str| StoreError::Malformed {
                    family: Family::SnapshotIndex.name(),
                    key: crate::store::hex_key(&key),
                    reason: reason.into(),
                };
                let seq = u64::from_be_bytes(key.as_ref().try_into().map_err(|_| malformed("key is not 8 bytes"))?);
                if value.len() != 40 {
                    return Err(malformed("value is not 40 bytes"));
                }
                Ok(SnapshotInfo {
                    seq,
                    digest: value[..32].try_into().expect("32 bytes"),
                    size_bytes: u64::from_be_bytes(value[32..].try_into().expect("8 bytes")),
                })
            })
            .collect()
    }

    /// The snapshot at exactly `seq`, checked.
    pub fn snapshot(&self, seq: u64) -> Result<Option<StoredSnapshot>, StoreError> {
        match self.get(Family::Snapshots, &seq_key(seq))? {
            None => Ok(None),
            Some(record) => decode(seq, record).map(Some),
        }
    }

    /// The newest valid snapshot at or before `seq`. A damaged one is reported
    /// in `skipped` and the next older one is tried.
    pub fn snapshot_at_or_before(
        &self,
        seq: u64,
        skipped: &mut Vec<StoreError>,
    ) -> Result<Option<StoredSnapshot>, StoreError> {
        for item in self.scan(Family::Snapshots, &seq_key(seq), false) {
            let (key, value) = item?;
            let Ok(key) = <[u8; 8]>::try_from(key.as_ref()) else { continue };
            match decode(u64::from_be_bytes(key), value.into_vec()) {
                Ok(snapshot) => return Ok(Some(snapshot)),
                Err(error) => skipped.push(error),
            }
        }
        Ok(None)
    }
}

fn decode(seq: u64, mut record: Vec<u8>) -> Result<StoredSnapshot, StoreError> {
    let corrupt = |reason: String| StoreError::CorruptSnapshot { seq, reason };
    if record.len() < HEADER_BYTES {
        return Err(corrupt("shorter than its header".into()));
    }
    if record[0] != SNAPSHOT_RECORD_FORMAT {
        return Err(corrupt(format!("unknown format {}", record[0])));
    }
    let digest: [u8; 32] = record[1..33].try_into().expect("32 bytes");
    let crc = u32::from_le_bytes(record[33..37].try_into().expect("4 bytes"));
    let bytes = record.split_off(HEADER_BYTES);
    if crc32c::crc32c(&bytes) != crc {
        return Err(corrupt("checksum mismatch".into()));
    }
    Ok(StoredSnapshot { info: SnapshotInfo { seq, digest, size_bytes: bytes.len() as u64 }, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_valid_snapshot_wins_and_damage_is_reported() {
        let dir = crate::journal::tests::tempdir().with_extension("snap");
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir).unwrap();
        store.put_snapshot(10, [1; 32], b"ten").unwrap();
        store.put_snapshot(20, [2; 32], b"twenty").unwrap();
        let mut skipped = Vec::new();
        assert_eq!(store.snapshot_at_or_before(25, &mut skipped).unwrap().unwrap().bytes, b"twenty");
        assert_eq!(store.snapshot_at_or_before(19, &mut skipped).unwrap().unwrap().info.seq, 10);
        assert!(store.snapshot_at_or_before(9, &mut skipped).unwrap().is_none());
        assert!(skipped.is_empty());

        // Damage the newest: recovery falls back to the older one and says why.
        let mut batch = Batch::default();
        batch.put(Family::Snapshots, seq_key(20).to_vec(), vec![1u8; 40]);
        store.write(batch, Durability::Synced).unwrap();
        assert_eq!(store.snapshot_at_or_before(u64::MAX, &mut skipped).unwrap().unwrap().info.seq, 10);
        assert!(matches!(skipped[..], [StoreError::CorruptSnapshot { seq: 20, .. }]));
        assert_eq!(store.snapshot_infos().unwrap().iter().map(|i| i.seq).collect::<Vec<_>>(), vec![10, 20]);
        drop(store);
        std::fs::remove_dir_all(dir).unwrap();
    }
}

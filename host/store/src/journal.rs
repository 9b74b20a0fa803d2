//! The journal: every accepted command, in sequence order, before it is applied.
//!
//! Record layout (value under key = seq as u64 big-endian), format 1:
//!
//! | bytes | field |
//! |---|---|
//! | 1 | format version (1) |
//! | 8 | timestamp, ns since the Unix epoch, u64 little-endian |
//! | n | the command, in the ABI codec |
//! | 4 | CRC32C, little-endian, of the key's 8 bytes then everything above |
//!
//! The key is inside the checksum, so a record copied under the wrong sequence
//! number is caught as surely as a flipped bit. Reading refuses a corrupt
//! record or a missing sequence number with the sequence it concerns, never
//! skipping one: replay past a hole would be a different history.

use crate::store::{Batch, Durability, Family, Store, StoreError, seq_key};

/// The current record format.
pub const RECORD_FORMAT: u8 = 1;

const HEADER_BYTES: usize = 1 + 8;
const CRC_BYTES: usize = 4;

/// A decoded journal record; `command` is still in the ABI codec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalRecord {
    pub seq: u64,
    pub ts_ns: u64,
    pub command: Vec<u8>,
}

/// Append one record's bytes to `out`.
pub fn encode_record(seq: u64, ts_ns: u64, command: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.push(RECORD_FORMAT);
    out.extend_from_slice(&ts_ns.to_le_bytes());
    out.extend_from_slice(command);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&seq_key(seq)), &out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Check and split one record.
pub fn decode_record(seq: u64, bytes: &[u8]) -> Result<JournalRecord, StoreError> {
    let corrupt = |reason: &str| StoreError::CorruptRecord { seq, reason: reason.into() };
    if bytes.len() < HEADER_BYTES + CRC_BYTES {
        return Err(corrupt("shorter than a record header"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - CRC_BYTES);
    let stored = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
    let computed = crc32c::crc32c_append(crc32c::crc32c(&seq_key(seq)), body);
    if stored != computed {
        return Err(corrupt(&format!("checksum {stored:08x} != computed {computed:08x}")));
    }
    if body[0] != RECORD_FORMAT {
        return Err(corrupt(&format!("unknown record format {}", body[0])));
    }
    let ts_ns = u64::from_le_bytes(body[1..9].try_into().expect("8 bytes"));
    Ok(JournalRecord { seq, ts_ns, command: body[HEADER_BYTES..].to_vec() })
}

/// Records read back from a command log, in order.
pub type Records<'a> = Box<dyn Iterator<Item = Result<JournalRecord, StoreError>> + 'a>;

/// The command log as the write path sees it, and all it asks of one: append
/// a batch and learn that it is durable, read from a sequence number, find
/// the last one. The local journal ([`Store`], on RocksDB or the in-memory
/// twin) is one; a replicated log can stand behind the same write path.
pub trait CommandLog: Send + Sync {
    /// Append encoded records `(seq, record bytes)` of consecutive sequence
    /// numbers as one atomic write. With `Durability::Synced` they, and every
    /// earlier record, are durable when this returns `Ok`; after an `Err` the
    /// outcome is unknown (a failed sync can leave the records written).
    fn append(&self, records: &[(u64, &[u8])], durability: Durability) -> Result<(), StoreError>;
    /// Records from `from_seq` on, checked, in order, with no gap allowed.
    fn read_from(&self, from_seq: u64) -> Records<'_>;
    /// The sequence number of the last record, if any.
    fn last_seq(&self) -> Result<Option<u64>, StoreError>;
}

impl CommandLog for Store {
    fn append(&self, records: &[(u64, &[u8])], durability: Durability) -> Result<(), StoreError> {
        self.append_journal(records.iter().copied(), durability)
    }

    fn read_from(&self, from_seq: u64) -> Records<'_> {
        Box::new(self.journal_from(from_seq))
    }

    fn last_seq(&self) -> Result<Option<u64>, StoreError> {
        self.journal_last_seq()
    }
}

impl Store {
    /// Append encoded records `(seq, record bytes)` in one atomic write.
    pub fn append_journal<'a>(
        &self,
        records: impl IntoIterator<Item = (u64, &'a [u8])>,
        durability: Durability,
    ) -> Result<(), StoreError> {
        let mut batch = Batch::default();
        for (seq, record) in records {
            batch.put(Family::Journal, seq_key(seq).to_vec(), record.to_vec());
        }
        self.write(batch, durability)
    }

    /// The sequence number of the last record, if any.
    pub fn journal_last_seq(&self) -> Result<Option<u64>, StoreError> {
        self.last(Family::Journal)?.map(|(key, _)| key_seq(&key)).transpose()
    }

    /// The last record, checked.
    pub fn journal_last(&self) -> Result<Option<JournalRecord>, StoreError> {
        match self.last(Family::Journal)? {
            None => Ok(None),
            Some((key, value)) => decode_record(key_seq(&key)?, &value).map(Some),
        }
    }

    /// The timestamp of one record (checked).
    pub fn journal_ts(&self, seq: u64) -> Result<Option<u64>, StoreError> {
        match self.get(Family::Journal, &seq_key(seq))? {
            None => Ok(None),
            Some(bytes) => Ok(Some(decode_record(seq, &bytes)?.ts_ns)),
        }
    }

    /// The last sequence number whose timestamp is at or before `ts_ns` (0 if
    /// none). Timestamps never decrease along the journal, so this is a binary
    /// search: O(log n) reads.
    pub fn journal_seq_at_time(&self, ts_ns: u64) -> Result<u64, StoreError> {
        let Some(last) = self.journal_last_seq()? else { return Ok(0) };
        let (mut low, mut high) = (0u64, last);
        // Invariant: ts(low) <= ts_ns (or low == 0), and every seq above high is later.
        while low < high {
            let middle = low + (high - low).div_ceil(2);
            match self.journal_ts(middle)? {
                Some(ts) if ts <= ts_ns => low = middle,
                _ => high = middle - 1,
            }
        }
        Ok(low)
    }

    /// Records from `from_seq` on, checked, in order, with no gap allowed.
    pub fn journal_from(&self, from_seq: u64) -> impl Iterator<Item = Result<JournalRecord, StoreError>> + '_ {
        let mut expected = from_seq;
        let mut failed = false;
        self.scan(Family::Journal, &seq_key(from_seq), true).map_while(move |item| {
            if failed {
                return None;
            }
            let result = item.and_then(|(key, value)| {
                let seq = key_seq(&key)?;
                if seq != expected {
                    return Err(StoreError::Gap { previous: expected.saturating_sub(1), found: seq });
                }
                expected += 1;
                decode_record(seq, &value)
            });
            failed = result.is_err();
            Some(result)
        })
    }
}

fn key_seq(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| StoreError::Malformed {
        family: Family::Journal.name(),
        key: crate::store::hex_key(key),
        reason: "journal keys are 8 bytes".into(),
    })?;
    Ok(u64::from_be_bytes(bytes))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_every_flipped_bit_is_caught() {
        let mut bytes = Vec::new();
        encode_record(42, 1_700_000_000_000_000_000, b"command bytes", &mut bytes);
        let record = decode_record(42, &bytes).unwrap();
        assert_eq!(
            (record.seq, record.ts_ns, record.command.as_slice()),
            (42, 1_700_000_000_000_000_000, &b"command bytes"[..])
        );
        for byte in 0..bytes.len() {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[byte] ^= 1 << bit;
                assert!(decode_record(42, &damaged).is_err(), "flip at byte {byte} bit {bit}");
            }
        }
        // The same bytes under another sequence number are refused.
        assert!(matches!(decode_record(43, &bytes), Err(StoreError::CorruptRecord { seq: 43, .. })));
        assert!(decode_record(42, &bytes[..bytes.len() - 1]).is_err());
        assert!(decode_record(42, &[]).is_err());
    }

    #[test]
    fn gaps_and_corruption_stop_reading_with_the_sequence() {
        let dir = tempdir();
        let store = Store::open(&dir).unwrap();
        let encode = |seq: u64| {
            let mut bytes = Vec::new();
            encode_record(seq, seq, &[seq as u8], &mut bytes);
            bytes
        };
        let (one, two, four) = (encode(1), encode(2), encode(4));
        store
            .append_journal([(1, one.as_slice()), (2, two.as_slice()), (4, four.as_slice())], Durability::Synced)
            .unwrap();
        let read: Vec<_> = store.journal_from(1).collect();
        assert_eq!(read.len(), 3);
        assert!(read[0].is_ok() && read[1].is_ok());
        assert!(matches!(read[2], Err(StoreError::Gap { previous: 2, found: 4 })));
        assert_eq!(store.journal_last_seq().unwrap(), Some(4));

        let mut bad = encode(3);
        bad[3] ^= 0xff;
        store.append_journal([(3, bad.as_slice())], Durability::Synced).unwrap();
        let read: Vec<_> = store.journal_from(2).collect();
        assert!(matches!(read[1], Err(StoreError::CorruptRecord { seq: 3, .. })));
        assert_eq!(read.len(), 2, "reading stops at the first bad record");
        std::fs::remove_dir_all(dir).unwrap();
    }

    pub(crate) fn tempdir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "exhost-store-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }
}

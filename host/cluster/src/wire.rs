//! What the command stream holds: one message per group-commit batch (or
//! part of one), a marker per leadership term, and uploaded modules in
//! chunks. Every message says where in the command sequence it stands
//! (`at_seq`), which never decreases along the stream, so a node finds where
//! to resume by binary search.
//!
//! Layout, all integers little-endian:
//!
//! | bytes | field |
//! |---|---|
//! | 1 | format (1) |
//! | 1 | kind: 1 batch, 2 term, 3 module chunk |
//! | 8 | `at_seq`: a batch's first command; otherwise the next command's seq |
//! | .. | the body of the kind |
//! | 4 | CRC32C of everything above |
//!
//! - batch: `count` u32, then per command `len` u32 and the journal record
//!   (the local journal's bytes, which carry their own checksum and seq);
//! - term: `term` u64, `node` (u16 length, UTF-8);
//! - module chunk: the module's SHA-256 (32), `index` u32, `count` u32, bytes.

use exhost_store::journal::decode_record;

const FORMAT: u8 = 1;
const KIND_BATCH: u8 = 1;
const KIND_TERM: u8 = 2;
const KIND_MODULE: u8 = 3;
const HEADER_BYTES: usize = 1 + 1 + 8;
const CRC_BYTES: usize = 4;

/// The most bytes of module one message carries: well under nats-server's
/// default `max_payload` of 1 MiB.
pub const MODULE_CHUNK_BYTES: usize = 512 * 1024;
/// A batch message is cut before it grows past this many bytes.
pub const BATCH_MESSAGE_BYTES: usize = 768 * 1024;

/// One message of the command stream, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogMessage {
    /// Journal records of consecutive commands from `first_seq` on.
    Batch { first_seq: u64, records: Vec<Vec<u8>> },
    /// A node took the lease for `term`; written before its first batch, so
    /// that a deposed writer's next append is refused.
    Term { next_seq: u64, term: u64, node: String },
    /// Part `index` of `count` of the module whose SHA-256 is `hash`.
    ModuleChunk { next_seq: u64, hash: [u8; 32], index: u32, count: u32, bytes: Vec<u8> },
}

impl LogMessage {
    /// Where in the command sequence the message stands.
    pub fn at_seq(&self) -> u64 {
        match self {
            LogMessage::Batch { first_seq, .. } => *first_seq,
            LogMessage::Term { next_seq, .. } | LogMessage::ModuleChunk { next_seq, .. } => *next_seq,
        }
    }
}

/// Why a stream message could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("message too short ({0} bytes)")]
    Short(usize),
    #[error("checksum {stored:08x} != computed {computed:08x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("unknown message format {0}")]
    Format(u8),
    #[error("unknown message kind {0}")]
    Kind(u8),
    #[error("message body malformed: {0}")]
    Body(&'static str),
    #[error("record {seq} of the batch: {reason}")]
    Record { seq: u64, reason: String },
}

fn header(kind: u8, at_seq: u64, out: &mut Vec<u8>) {
    out.push(FORMAT);
    out.push(kind);
    out.extend_from_slice(&at_seq.to_le_bytes());
}

fn seal(mut out: Vec<u8>) -> Vec<u8> {
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Batch messages for consecutive records `(seq, record)`: one, unless the
/// records pass [`BATCH_MESSAGE_BYTES`], then cut between records.
pub fn encode_batches(records: &[(u64, &[u8])]) -> Vec<(u64, u64, Vec<u8>)> {
    let mut messages = Vec::new();
    let mut at = 0;
    while at < records.len() {
        let first_seq = records[at].0;
        let mut out = Vec::new();
        header(KIND_BATCH, first_seq, &mut out);
        let count_at = out.len();
        out.extend_from_slice(&0u32.to_le_bytes());
        let mut count = 0u32;
        while at < records.len() && (count == 0 || out.len() + 4 + records[at].1.len() <= BATCH_MESSAGE_BYTES) {
            let record = records[at].1;
            out.extend_from_slice(&(record.len() as u32).to_le_bytes());
            out.extend_from_slice(record);
            count += 1;
            at += 1;
        }
        out[count_at..count_at + 4].copy_from_slice(&count.to_le_bytes());
        messages.push((first_seq, first_seq + u64::from(count) - 1, seal(out)));
    }
    messages
}

pub fn encode_term(next_seq: u64, term: u64, node: &str) -> Vec<u8> {
    let mut out = Vec::new();
    header(KIND_TERM, next_seq, &mut out);
    out.extend_from_slice(&term.to_le_bytes());
    let node = &node.as_bytes()[..node.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(node.len() as u16).to_le_bytes());
    out.extend_from_slice(node);
    seal(out)
}

/// A module's bytes as chunk messages.
pub fn encode_module(next_seq: u64, hash: [u8; 32], bytes: &[u8]) -> Vec<Vec<u8>> {
    let chunks: Vec<&[u8]> = if bytes.is_empty() { vec![&[]] } else { bytes.chunks(MODULE_CHUNK_BYTES).collect() };
    let count = chunks.len() as u32;
    chunks
        .into_iter()
        .enumerate()
        .map(|(index, chunk)| {
            let mut out = Vec::new();
            header(KIND_MODULE, next_seq, &mut out);
            out.extend_from_slice(&hash);
            out.extend_from_slice(&(index as u32).to_le_bytes());
            out.extend_from_slice(&count.to_le_bytes());
            out.extend_from_slice(chunk);
            seal(out)
        })
        .collect()
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Body("ends early"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().map_err(|_| WireError::Body("u16"))?))
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().map_err(|_| WireError::Body("u32"))?))
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().map_err(|_| WireError::Body("u64"))?))
    }
}

/// Check and decode one message; a batch's records are checked too.
pub fn decode(bytes: &[u8]) -> Result<LogMessage, WireError> {
    if bytes.len() < HEADER_BYTES + CRC_BYTES {
        return Err(WireError::Short(bytes.len()));
    }
    let (body, crc) = bytes.split_at(bytes.len() - CRC_BYTES);
    let stored = u32::from_le_bytes(crc.try_into().map_err(|_| WireError::Body("crc"))?);
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(WireError::Checksum { stored, computed });
    }
    if body[0] != FORMAT {
        return Err(WireError::Format(body[0]));
    }
    let kind = body[1];
    let mut reader = Reader(&body[2..]);
    let at_seq = reader.u64()?;
    let message = match kind {
        KIND_BATCH => {
            let count = reader.u32()?;
            if count == 0 {
                return Err(WireError::Body("a batch of no commands"));
            }
            let mut records = Vec::with_capacity(count.min(1 << 16) as usize);
            for i in 0..u64::from(count) {
                let len = reader.u32()? as usize;
                let record = reader.take(len)?;
                let seq = at_seq.checked_add(i).ok_or(WireError::Body("sequence overflows"))?;
                decode_record(seq, record).map_err(|error| WireError::Record { seq, reason: error.to_string() })?;
                records.push(record.to_vec());
            }
            LogMessage::Batch { first_seq: at_seq, records }
        }
        KIND_TERM => {
            let term = reader.u64()?;
            let len = reader.u16()? as usize;
            let node = std::str::from_utf8(reader.take(len)?).map_err(|_| WireError::Body("node name not UTF-8"))?;
            LogMessage::Term { next_seq: at_seq, term, node: node.to_string() }
        }
        KIND_MODULE => {
            let hash: [u8; 32] = reader.take(32)?.try_into().map_err(|_| WireError::Body("hash"))?;
            let index = reader.u32()?;
            let count = reader.u32()?;
            if index >= count {
                return Err(WireError::Body("chunk index past its count"));
            }
            let bytes = reader.0.to_vec();
            reader.0 = &[];
            LogMessage::ModuleChunk { next_seq: at_seq, hash, index, count, bytes }
        }
        other => return Err(WireError::Kind(other)),
    };
    if !reader.0.is_empty() {
        return Err(WireError::Body("bytes after the body"));
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use exhost_store::journal::encode_record;

    fn records(first: u64, n: u64, command_bytes: usize) -> Vec<(u64, Vec<u8>)> {
        (first..first + n)
            .map(|seq| {
                let mut out = Vec::new();
                encode_record(seq, 1_000 + seq, &vec![seq as u8; command_bytes], &mut out);
                (seq, out)
            })
            .collect()
    }

    #[test]
    fn a_batch_comes_back_as_it_went_and_is_cut_only_between_records() {
        let records = records(41, 3, 10);
        let slices: Vec<(u64, &[u8])> = records.iter().map(|(seq, r)| (*seq, r.as_slice())).collect();
        let messages = encode_batches(&slices);
        assert_eq!(messages.len(), 1);
        assert_eq!((messages[0].0, messages[0].1), (41, 43));
        let decoded = decode(&messages[0].2).unwrap();
        assert_eq!(
            decoded,
            LogMessage::Batch { first_seq: 41, records: records.into_iter().map(|(_, r)| r).collect() }
        );
        assert_eq!(decoded.at_seq(), 41);

        // 3 records of 300 KiB: two fit under the cut, the third starts a message.
        let big = self::records(7, 3, 300 * 1024);
        let slices: Vec<(u64, &[u8])> = big.iter().map(|(seq, r)| (*seq, r.as_slice())).collect();
        let messages = encode_batches(&slices);
        let ranges: Vec<(u64, u64)> = messages.iter().map(|m| (m.0, m.1)).collect();
        assert_eq!(ranges, [(7, 8), (9, 9)]);
        assert!(messages.iter().all(|m| m.2.len() <= BATCH_MESSAGE_BYTES + CRC_BYTES));
        let LogMessage::Batch { first_seq: 9, records } = decode(&messages[1].2).unwrap() else { panic!() };
        assert_eq!(records, [big[2].1.clone()]);
    }

    #[test]
    fn a_record_under_the_wrong_sequence_a_flipped_bit_and_junk_are_refused() {
        let records = records(5, 2, 4);
        let slices: Vec<(u64, &[u8])> = records.iter().map(|(seq, r)| (*seq, r.as_slice())).collect();
        let mut message = encode_batches(&slices).remove(0).2;
        // Renumbered to start at 6: the envelope checksum is redone, the records' own catch it.
        message[2..10].copy_from_slice(&6u64.to_le_bytes());
        let len = message.len();
        let crc = crc32c::crc32c(&message[..len - 4]);
        message[len - 4..].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(decode(&message), Err(WireError::Record { seq: 6, .. })));
        message[12] ^= 1;
        assert!(matches!(decode(&message), Err(WireError::Checksum { .. })));
        assert_eq!(decode(b"short"), Err(WireError::Short(5)));
        assert!(decode(&[0u8; 64]).is_err());
    }

    #[test]
    fn terms_and_modules_round_trip_and_a_module_is_chunked() {
        let term = encode_term(12, 3, "node-b");
        assert_eq!(decode(&term).unwrap(), LogMessage::Term { next_seq: 12, term: 3, node: "node-b".into() });
        let module: Vec<u8> = (0..MODULE_CHUNK_BYTES * 2 + 5).map(|i| i as u8).collect();
        let chunks = encode_module(12, [9; 32], &module);
        assert_eq!(chunks.len(), 3);
        let mut joined = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            let LogMessage::ModuleChunk { next_seq: 12, hash, index, count: 3, bytes } = decode(chunk).unwrap() else {
                panic!("chunk {i}")
            };
            assert_eq!((hash, index), ([9; 32], i as u32));
            joined.extend(bytes);
        }
        assert_eq!(joined, module);
    }
}

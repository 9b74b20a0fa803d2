//! A sandboxed instance's memory and globals, copied: what a checkpoint and
//! a stored snapshot hold.
//!
//! Memory is held sparsely: most of a module's memory may be zero (the
//! unused part of its stack, freed heap, pages grown and never touched), so
//! only the non-zero pages are kept, packed into one buffer. One buffer,
//! rather than one per run, is what lets a new checkpoint be copied into the
//! old one's pages: on this project's VM a fresh 145 MB copy takes about
//! 120 ms, almost all of it page faults, and a copy into mapped pages about
//! 22 ms (docs/BENCHMARKS.md, "Stalls").
//!
//! The encoding is the one of snapshot format 3, a list of runs each with its
//! own bytes, so stored snapshots and their digests are unchanged.

use core::fmt;

use serde::de::{SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A linear memory and the mutable globals of one instance.
#[derive(Clone, PartialEq, Eq)]
pub struct MemoryImage {
    /// The memory's size (a whole number of 64 KiB wasm pages).
    pub size_bytes: u64,
    /// The mutable globals' values as raw bits, in the module's order.
    pub globals: Vec<u64>,
    /// The bytes of the non-zero pages, in address order; every byte of
    /// memory outside `runs` is zero.
    packed: Vec<u8>,
    /// Runs of consecutive non-zero pages, in address order.
    runs: Vec<Run>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    /// Where the run starts in memory.
    offset: u64,
    /// Where its bytes end in `packed` (they start where the previous run's end).
    packed_end: usize,
}

impl MemoryImage {
    /// The granule of the sparse encoding: an OS page.
    pub const PAGE_BYTES: usize = 4096;

    /// Copy a memory (its bytes, whole) and the globals.
    pub fn capture(memory: &[u8], globals: Vec<u64>) -> MemoryImage {
        let mut image = MemoryImage { size_bytes: 0, globals: Vec::new(), packed: Vec::new(), runs: Vec::new() };
        image.recapture(memory, globals);
        image
    }

    /// Copy a memory and the globals into this image, reusing its buffers.
    pub fn recapture(&mut self, memory: &[u8], globals: Vec<u64>) {
        self.size_bytes = memory.len() as u64;
        self.globals = globals;
        self.packed.clear();
        self.runs.clear();
        // Reserving the whole memory maps address space, not pages: only what
        // is written below is touched.
        self.packed.reserve(memory.len());
        let mut run_start: Option<usize> = None;
        for (index, page) in memory.chunks(Self::PAGE_BYTES).enumerate() {
            let at = index * Self::PAGE_BYTES;
            match (is_zero(page), run_start) {
                (false, None) => run_start = Some(at),
                (true, Some(start)) => {
                    self.push_run(start, &memory[start..at]);
                    run_start = None;
                }
                _ => {}
            }
        }
        if let Some(start) = run_start {
            self.push_run(start, &memory[start..]);
        }
    }

    fn push_run(&mut self, offset: usize, bytes: &[u8]) {
        self.packed.extend_from_slice(bytes);
        self.runs.push(Run { offset: offset as u64, packed_end: self.packed.len() });
    }

    /// The runs of non-zero pages: where each starts in memory, and its bytes.
    pub fn runs(&self) -> impl ExactSizeIterator<Item = (u64, &[u8])> + '_ {
        self.runs.iter().enumerate().map(|(index, run)| {
            let start = index.checked_sub(1).map_or(0, |before| self.runs[before].packed_end);
            (run.offset, &self.packed[start..run.packed_end])
        })
    }

    /// Bytes of memory the image holds (its non-zero pages).
    pub fn stored_bytes(&self) -> usize {
        self.packed.len()
    }

    /// Write the image into `memory` (exactly `size_bytes` long), zeroing what no run covers.
    pub fn write_into(&self, memory: &mut [u8]) -> Result<(), String> {
        if memory.len() as u64 != self.size_bytes {
            return Err(format!("memory is {} bytes, the image {}", memory.len(), self.size_bytes));
        }
        let mut covered = 0usize;
        for (offset, bytes) in self.runs() {
            let start = usize::try_from(offset).map_err(|_| "run offset out of range".to_string())?;
            let end = start.checked_add(bytes.len()).filter(|&end| end <= memory.len() && start >= covered);
            let end = end.ok_or_else(|| format!("run at {start} (+{}) is out of order or range", bytes.len()))?;
            memory[covered..start].fill(0);
            memory[start..end].copy_from_slice(bytes);
            covered = end;
        }
        memory[covered..].fill(0);
        Ok(())
    }
}

fn is_zero(bytes: &[u8]) -> bool {
    let mut words = bytes.chunks_exact(8);
    words.by_ref().all(|word| word == [0u8; 8]) && words.remainder().iter().all(|&byte| byte == 0)
}

impl fmt::Debug for MemoryImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryImage")
            .field("size_bytes", &self.size_bytes)
            .field("globals", &self.globals)
            .field("runs", &self.runs.len())
            .field("stored_bytes", &self.packed.len())
            .finish()
    }
}

/// The encoded form: `{ size_bytes, globals, runs: [{ offset, bytes }] }`.
#[derive(Serialize)]
#[serde(rename = "MemoryImage")]
struct Encoded<'a> {
    size_bytes: u64,
    globals: &'a [u64],
    runs: EncodedRuns<'a>,
}

struct EncodedRuns<'a>(&'a MemoryImage);

#[derive(Serialize, Deserialize)]
#[serde(rename = "MemoryRun")]
struct EncodedRun<'a> {
    offset: u64,
    #[serde(with = "serde_bytes", borrow)]
    bytes: std::borrow::Cow<'a, [u8]>,
}

impl Serialize for EncodedRuns<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.runs().map(|(offset, bytes)| EncodedRun { offset, bytes: bytes.into() }))
    }
}

impl Serialize for MemoryImage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Encoded { size_bytes: self.size_bytes, globals: &self.globals, runs: EncodedRuns(self) }.serialize(serializer)
    }
}

#[derive(Deserialize)]
#[serde(rename = "MemoryImage")]
struct Decoded {
    size_bytes: u64,
    globals: Vec<u64>,
    runs: DecodedRuns,
}

/// Runs decoded straight into one packed buffer.
struct DecodedRuns {
    packed: Vec<u8>,
    runs: Vec<Run>,
}

impl<'de> Deserialize<'de> for DecodedRuns {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RunsVisitor;
        impl<'de> Visitor<'de> for RunsVisitor {
            type Value = DecodedRuns;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of memory runs")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<DecodedRuns, A::Error> {
                let mut decoded = DecodedRuns { packed: Vec::new(), runs: Vec::new() };
                while let Some(run) = seq.next_element::<EncodedRun<'de>>()? {
                    decoded.packed.extend_from_slice(&run.bytes);
                    decoded.runs.push(Run { offset: run.offset, packed_end: decoded.packed.len() });
                }
                Ok(decoded)
            }
        }
        deserializer.deserialize_seq(RunsVisitor)
    }
}

impl<'de> Deserialize<'de> for MemoryImage {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let Decoded { size_bytes, globals, runs } = Decoded::deserialize(deserializer)?;
        Ok(MemoryImage { size_bytes, globals, packed: runs.packed, runs: runs.runs })
    }
}

#[cfg(test)]
mod tests {
    use exhost_guest_sdk::codec::{decode, encode};

    use super::*;

    /// The format-3 encoding, as it was before the packed buffer.
    #[derive(Serialize)]
    struct OldImage {
        size_bytes: u64,
        globals: Vec<u64>,
        runs: Vec<OldRun>,
    }

    #[derive(Serialize)]
    struct OldRun {
        offset: u64,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    }

    /// Zero pages, runs of several pages, a run at the very end, a short tail page.
    fn memory() -> Vec<u8> {
        let page = MemoryImage::PAGE_BYTES;
        let mut memory = vec![0u8; page * 9 + 100];
        memory[page + 7] = 1;
        memory[page * 2..page * 3].fill(2);
        memory[page * 6 + page - 1] = 3;
        memory[page * 9 + 99] = 4;
        memory
    }

    #[test]
    fn an_image_holds_its_non_zero_pages_and_writes_the_memory_back_exactly() {
        let memory = memory();
        let image = MemoryImage::capture(&memory, vec![5, 6]);
        let runs: Vec<(u64, usize)> = image.runs().map(|(offset, bytes)| (offset, bytes.len())).collect();
        let page = MemoryImage::PAGE_BYTES;
        assert_eq!(runs, vec![(page as u64, 2 * page), (6 * page as u64, page), (9 * page as u64, 100)]);
        assert_eq!(image.stored_bytes(), 3 * page + 100);
        let mut back = vec![9u8; memory.len()];
        image.write_into(&mut back).unwrap();
        assert_eq!(back, memory);
        assert!(image.write_into(&mut vec![0u8; memory.len() - 1]).is_err(), "a memory of another size is refused");
    }

    #[test]
    fn a_recaptured_image_equals_a_fresh_one_whatever_it_held_before() {
        let mut memory = memory();
        let mut image = MemoryImage::capture(&vec![7u8; memory.len() * 2], vec![1, 2, 3]);
        image.recapture(&memory, vec![5]);
        assert_eq!(image, MemoryImage::capture(&memory, vec![5]));
        memory.fill(0);
        image.recapture(&memory, vec![]);
        assert_eq!(image, MemoryImage::capture(&memory, vec![]));
        assert_eq!(image.runs().len(), 0);
    }

    #[test]
    fn the_encoding_is_the_one_stored_snapshots_have_and_decodes_to_the_same_image() {
        let memory = memory();
        let image = MemoryImage::capture(&memory, vec![5, 6]);
        let old = OldImage {
            size_bytes: image.size_bytes,
            globals: image.globals.clone(),
            runs: image.runs().map(|(offset, bytes)| OldRun { offset, bytes: bytes.to_vec() }).collect(),
        };
        let bytes = encode(&image);
        assert_eq!(bytes, encode(&old), "the stored format (and so every digest) is unchanged");
        let decoded: MemoryImage = decode(&bytes).unwrap();
        assert_eq!(decoded, image);
    }
}

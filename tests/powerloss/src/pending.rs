//! The unsynced state of one regular file: what a page cache holds that the
//! disk does not.
//!
//! A [`PendingFile`] is an overlay on the backing file. Programs see the
//! overlay ([`PendingFile::read`]); the backing file keeps the last synced
//! contents until [`PendingFile::apply`] writes the overlay into it on fsync.
//! Dropping a `PendingFile` without applying it is a power cut for that file.
//!
//! Invariants, checked by the unit tests below:
//! - `extents` never overlap and never touch (touching writes are merged, so
//!   a file written sequentially is one growing buffer, not one per write);
//! - every extent ends at or before `len_bytes`;
//! - `backing_visible_bytes <= len_bytes`: bytes of the backing file at or
//!   past `backing_visible_bytes` were cut away by an unsynced truncate and
//!   read as zeros unless rewritten;
//! - `held_bytes` is the sum of the extents' lengths (what this costs in memory).
//!
//! This file does no I/O of its own: the backing file is reached through the
//! [`Backing`] seam, which `std::fs::File` implements and the tests replace
//! with a `Vec<u8>`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::ops::Bound::{Excluded, Included};
use std::os::unix::fs::FileExt;

/// Positioned access to the synced bytes underneath a [`PendingFile`].
pub trait Backing {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read
    /// (0 at end of file).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `data` at `offset`, growing the file if needed.
    fn write_all_at(&mut self, data: &[u8], offset: u64) -> io::Result<()>;
    /// Cuts or extends (with zeros) the file to `len_bytes`.
    fn set_len(&mut self, len_bytes: u64) -> io::Result<()>;
}

impl Backing for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, offset)
    }
    fn write_all_at(&mut self, data: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(self, data, offset)
    }
    fn set_len(&mut self, len_bytes: u64) -> io::Result<()> {
        File::set_len(self, len_bytes)
    }
}

/// Fills as much of `buf` as the backing has at `offset`, retrying short
/// reads; whatever lies past the backing's end stays as it was (zeros).
pub fn read_full(backing: &impl Backing, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match backing.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Unsynced writes and truncations of one file, over its synced bytes.
#[derive(Debug, Clone)]
pub struct PendingFile {
    /// The length programs see.
    len_bytes: u64,
    /// The prefix of the backing file that still shows through.
    backing_visible_bytes: u64,
    /// Written ranges, keyed by start offset.
    extents: BTreeMap<u64, Vec<u8>>,
    /// Sum of the extents' lengths.
    held_bytes: u64,
}

impl PendingFile {
    /// A clean overlay on a backing file of `backing_len_bytes`.
    pub fn new(backing_len_bytes: u64) -> PendingFile {
        PendingFile {
            len_bytes: backing_len_bytes,
            backing_visible_bytes: backing_len_bytes,
            extents: BTreeMap::new(),
            held_bytes: 0,
        }
    }

    /// The length programs see.
    pub fn len_bytes(&self) -> u64 {
        self.len_bytes
    }

    /// Bytes held in memory (lost on a cut).
    pub fn held_bytes(&self) -> u64 {
        self.held_bytes
    }

    /// Records a write. Fails only if `offset + data.len()` overflows.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let end = offset.checked_add(data.len() as u64).ok_or_else(|| io::Error::from_raw_os_error(libc::EFBIG))?;
        if data.is_empty() {
            return Ok(());
        }
        // Start from the extent that begins at or before `offset` and reaches
        // it (touching counts), so appends grow one buffer in place.
        let mut start = offset;
        let mut merged = Vec::new();
        let before = self.extents.range(..=offset).next_back().map(|(&s, v)| (s, s + v.len() as u64));
        if let Some((s, s_end)) = before
            && s_end >= offset
            && let Some(v) = self.extents.remove(&s)
        {
            start = s;
            merged = v;
        }
        self.held_bytes -= merged.len() as u64;
        // `offset - start` is at most `merged.len()`, so it fits in usize.
        let rel = (offset - start) as usize;
        let need = rel + data.len();
        if merged.len() < need {
            merged.resize(need, 0);
        }
        merged[rel..need].copy_from_slice(data);
        // Absorb every later extent that starts inside or right at the end of
        // the merged range, keeping only its tail past that end.
        loop {
            let merged_end = start + merged.len() as u64;
            let next = self.extents.range((Excluded(start), Included(merged_end))).next().map(|(&k, _)| k);
            let Some(v) = next.and_then(|k| self.extents.remove(&k).map(|v| (k, v))) else { break };
            let (k, v) = v;
            self.held_bytes -= v.len() as u64;
            let v_end = k + v.len() as u64;
            if v_end > merged_end {
                merged.extend_from_slice(&v[(merged_end - k) as usize..]);
            }
        }
        self.held_bytes += merged.len() as u64;
        self.extents.insert(start, merged);
        self.len_bytes = self.len_bytes.max(end);
        Ok(())
    }

    /// Records a truncate (or extension with zeros) to `len_bytes`.
    pub fn truncate(&mut self, len_bytes: u64) {
        if len_bytes < self.len_bytes {
            self.backing_visible_bytes = self.backing_visible_bytes.min(len_bytes);
            let cut_away = self.extents.split_off(&len_bytes);
            self.held_bytes -= cut_away.values().map(|v| v.len() as u64).sum::<u64>();
            if let Some((&s, v)) = self.extents.iter_mut().next_back()
                && s + v.len() as u64 > len_bytes
            {
                let keep = (len_bytes - s) as usize;
                self.held_bytes -= (v.len() - keep) as u64;
                v.truncate(keep);
            }
        }
        self.len_bytes = len_bytes;
    }

    /// What a program reads: up to `size` bytes at `offset`, short at end of file.
    pub fn read(&self, backing: &impl Backing, offset: u64, size: u32) -> io::Result<Vec<u8>> {
        let end = offset.saturating_add(u64::from(size)).min(self.len_bytes);
        if offset >= end {
            return Ok(Vec::new());
        }
        // `end - offset <= size`, a u32, so it fits in usize.
        let mut buf = vec![0u8; (end - offset) as usize];
        let backing_end = end.min(self.backing_visible_bytes);
        if offset < backing_end {
            read_full(backing, &mut buf[..(backing_end - offset) as usize], offset)?;
        }
        let first = self.extents.range(..=offset).next_back().map_or(offset, |(&s, _)| s);
        for (&s, data) in self.extents.range(first..end) {
            let lo = s.max(offset);
            let hi = (s + data.len() as u64).min(end);
            if lo < hi {
                buf[(lo - offset) as usize..(hi - offset) as usize]
                    .copy_from_slice(&data[(lo - s) as usize..(hi - s) as usize]);
            }
        }
        Ok(buf)
    }

    /// Makes the backing file hold exactly what programs see. The caller
    /// fsyncs the backing file afterwards and then drops this overlay.
    pub fn apply(&self, backing: &mut impl Backing) -> io::Result<()> {
        // Cut first, so hidden backing bytes become zeros where not rewritten;
        // the last `set_len` only extends, since every extent ends within it.
        backing.set_len(self.backing_visible_bytes)?;
        for (&s, data) in &self.extents {
            backing.write_all_at(data, s)?;
        }
        backing.set_len(self.len_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The in-memory twin of a backing file.
    impl Backing for Vec<u8> {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            let start = (offset as usize).min(self.len());
            let n = buf.len().min(self.len() - start);
            buf[..n].copy_from_slice(&self[start..start + n]);
            Ok(n)
        }
        fn write_all_at(&mut self, data: &[u8], offset: u64) -> io::Result<()> {
            let end = offset as usize + data.len();
            if self.len() < end {
                self.resize(end, 0);
            }
            self[offset as usize..end].copy_from_slice(data);
            Ok(())
        }
        fn set_len(&mut self, len_bytes: u64) -> io::Result<()> {
            self.resize(len_bytes as usize, 0);
            Ok(())
        }
    }

    fn check_invariants(p: &PendingFile) {
        let mut prev_end: Option<u64> = None;
        for (&s, v) in &p.extents {
            assert!(!v.is_empty());
            if let Some(e) = prev_end {
                assert!(s > e, "extents overlap or touch at {s}");
            }
            prev_end = Some(s + v.len() as u64);
        }
        assert!(prev_end.unwrap_or(0) <= p.len_bytes);
        assert!(p.backing_visible_bytes <= p.len_bytes);
        assert_eq!(p.held_bytes, p.extents.values().map(|v| v.len() as u64).sum::<u64>());
    }

    use exhost_seeded::Rng;

    /// Random writes and truncates against a plain `Vec<u8>` model: reads
    /// must match the model, the backing must stay untouched until `apply`,
    /// and after `apply` the backing must equal the model.
    #[test]
    fn overlay_matches_a_plain_buffer() {
        for seed in 0..200u64 {
            let mut rng = Rng::new(seed);
            let synced: Vec<u8> = (0..rng.below(64)).map(|i| i as u8 ^ 0xa5).collect();
            let mut backing = synced.clone();
            let mut model = synced.clone();
            let mut p = PendingFile::new(backing.len() as u64);
            for _ in 0..40 {
                if rng.below(5) == 0 {
                    let len = rng.below(96);
                    p.truncate(len);
                    model.resize(len as usize, 0);
                } else {
                    let off = rng.below(96);
                    let data: Vec<u8> = (0..rng.below(24)).map(|_| rng.below(256) as u8).collect();
                    p.write(off, &data).unwrap();
                    if !data.is_empty() {
                        let end = off as usize + data.len();
                        if model.len() < end {
                            model.resize(end, 0);
                        }
                        model[off as usize..end].copy_from_slice(&data);
                    }
                }
                check_invariants(&p);
                assert_eq!(p.len_bytes(), model.len() as u64, "seed {seed}");
                let off = rng.below(100) as usize;
                let size = rng.below(120) as usize + 1;
                let got = p.read(&backing, off as u64, size as u32).unwrap();
                let want = &model[off.min(model.len())..(off + size).min(model.len())];
                assert_eq!(got, want, "seed {seed} read at {off}");
                assert_eq!(backing, synced, "seed {seed}: backing changed before apply");
            }
            p.apply(&mut backing).unwrap();
            assert_eq!(backing, model, "seed {seed}: apply");
        }
    }

    #[test]
    fn sequential_appends_stay_one_extent() {
        let mut p = PendingFile::new(0);
        for i in 0..100u64 {
            p.write(i * 10, &[i as u8; 10]).unwrap();
        }
        assert_eq!(p.extents.len(), 1);
        assert_eq!(p.held_bytes(), 1000);
    }

    #[test]
    fn overflowing_offset_is_refused() {
        let mut p = PendingFile::new(0);
        let err = p.write(u64::MAX, b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EFBIG));
    }
}

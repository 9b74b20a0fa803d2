//! The in-memory twin of the RocksDB backend, for simulation.
//!
//! It keeps what is durable apart from what was written but not synced, as a
//! disk with a volatile cache does, and the test drives the faults:
//!
//! - [`Fault::FailWrite`]: the next write fails and changes nothing (a write
//!   refused before it reached the log);
//! - [`Fault::FailSync`]: the next write reaches the log but its sync fails,
//!   so it returns an error while its bytes may or may not survive a crash
//!   (the case that makes an answer of failure "outcome unknown");
//! - [`MemoryBackend::crash`]: everything not synced is lost, except a prefix
//!   of the unsynced writes the test chooses (the OS may have flushed some; a
//!   torn last batch is dropped whole, as RocksDB's checksummed log does);
//!   until [`MemoryBackend::restart`] every call fails, as a dead process's would.
//!
//! Semantics match what the host relies on from RocksDB: batches are atomic,
//! a synced write makes it and every earlier write durable, reads see every
//! write that returned.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Mutex;

use crate::store::{Backend, Batch, Durability, Entries, Entry, Family, StoreError};

/// A fault for the next write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    FailWrite,
    FailSync,
}

type Table = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Default)]
struct State {
    /// What survives any crash.
    durable: Vec<Table>,
    /// Writes since the last sync, in order (each applied to `current` already).
    unsynced: Vec<Batch>,
    /// What reads see: `durable` plus every unsynced write.
    current: Vec<Table>,
    /// Faults to come: how many writes to let pass first, and the fault.
    faults: Vec<(u64, Fault)>,
    crashed: bool,
    /// Counts, for the simulation's report.
    writes: u64,
    syncs: u64,
}

/// The in-memory backend. Share it (`Arc`) between the store and the test.
pub struct MemoryBackend {
    state: Mutex<State>,
}

impl Default for MemoryBackend {
    fn default() -> Self {
        MemoryBackend::new()
    }
}

fn apply(tables: &mut [Table], batch: &Batch) {
    for (family, key, value) in batch.ops() {
        let table = &mut tables[family_index(*family)];
        match value {
            Some(value) => {
                table.insert(key.clone(), value.clone());
            }
            None => {
                table.remove(key);
            }
        }
    }
}

fn family_index(family: Family) -> usize {
    Family::ALL.iter().position(|f| *f == family).expect("every family is in ALL")
}

impl MemoryBackend {
    pub fn new() -> MemoryBackend {
        let tables = || vec![Table::new(); Family::ALL.len()];
        MemoryBackend { state: Mutex::new(State { durable: tables(), current: tables(), ..State::default() }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Make the next write fail in this way.
    pub fn inject(&self, fault: Fault) {
        self.inject_after(0, fault);
    }

    /// Make a later write fail: the one after `writes` more have passed (so a
    /// fault can land on a read-model or snapshot write, not only the journal's).
    pub fn inject_after(&self, writes: u64, fault: Fault) {
        self.lock().faults.push((writes, fault));
    }

    /// The unsynced writes a crash now could lose.
    pub fn unsynced_writes(&self) -> usize {
        self.lock().unsynced.len()
    }

    /// Lose everything not synced but the first `surviving` unsynced writes;
    /// every call fails until [`restart`](Self::restart).
    pub fn crash(&self, surviving: usize) {
        let mut state = self.lock();
        let kept: Vec<Batch> = state.unsynced.drain(..).take(surviving).collect();
        let mut current = state.durable.clone();
        for batch in &kept {
            apply(&mut current, batch);
        }
        // What survived a crash is on the disk now.
        state.durable = current.clone();
        state.current = current;
        state.faults.clear();
        state.crashed = true;
    }

    /// The process is back: calls work again, on what survived.
    pub fn restart(&self) {
        self.lock().crashed = false;
    }

    /// (writes, syncs) so far.
    pub fn counts(&self) -> (u64, u64) {
        let state = self.lock();
        (state.writes, state.syncs)
    }

    fn dead() -> StoreError {
        StoreError::Backend("the simulated process has crashed".into())
    }
}

impl Backend for MemoryBackend {
    fn write(&self, batch: Batch, durability: Durability) -> Result<(), StoreError> {
        let mut state = self.lock();
        if state.crashed {
            return Err(Self::dead());
        }
        state.writes += 1;
        let due = state.faults.iter().position(|(after, _)| *after == 0);
        let fault = due.map(|index| state.faults.remove(index).1);
        for (after, _) in &mut state.faults {
            *after = after.saturating_sub(1);
        }
        if fault == Some(Fault::FailWrite) {
            return Err(StoreError::Backend("simulated write failure (nothing written)".into()));
        }
        apply(&mut state.current, &batch);
        state.unsynced.push(batch);
        if fault == Some(Fault::FailSync) {
            return Err(StoreError::Backend("simulated sync failure (written, not known to be durable)".into()));
        }
        if durability == Durability::Synced {
            state.syncs += 1;
            let unsynced = std::mem::take(&mut state.unsynced);
            for batch in &unsynced {
                apply(&mut state.durable, batch);
            }
        }
        Ok(())
    }

    fn get(&self, family: Family, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let state = self.lock();
        if state.crashed {
            return Err(Self::dead());
        }
        Ok(state.current[family_index(family)].get(key).cloned())
    }

    fn scan<'a>(&'a self, family: Family, from: &[u8], forward: bool) -> Entries<'a> {
        let state = self.lock();
        if state.crashed {
            return Box::new(std::iter::once(Err(Self::dead())));
        }
        let table = &state.current[family_index(family)];
        // Copied out: a scan must not hold the lock while its caller writes.
        let entries: Vec<Entry> = if forward {
            table
                .range::<[u8], _>((Bound::Included(from), Bound::Unbounded))
                .map(|(k, v)| (k.clone().into_boxed_slice(), v.clone().into_boxed_slice()))
                .collect()
        } else {
            table
                .range::<[u8], _>((Bound::Unbounded, Bound::Included(from)))
                .rev()
                .map(|(k, v)| (k.clone().into_boxed_slice(), v.clone().into_boxed_slice()))
                .collect()
        };
        Box::new(entries.into_iter().map(Ok))
    }

    fn last(&self, family: Family) -> Result<Option<Entry>, StoreError> {
        let state = self.lock();
        if state.crashed {
            return Err(Self::dead());
        }
        Ok(state.current[family_index(family)]
            .iter()
            .next_back()
            .map(|(k, v)| (k.clone().into_boxed_slice(), v.clone().into_boxed_slice())))
    }

    fn size_bytes(&self, family: Family) -> Result<u64, StoreError> {
        let state = self.lock();
        if state.crashed {
            return Err(Self::dead());
        }
        Ok(state.current[family_index(family)].iter().map(|(k, v)| (k.len() + v.len()) as u64).sum())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::Store;

    fn put(store: &Store, key: u8, durability: Durability) -> Result<(), StoreError> {
        let mut batch = Batch::default();
        batch.put(Family::Meta, vec![key], vec![key]);
        store.write(batch, durability)
    }

    fn keys(store: &Store) -> Vec<u8> {
        store.scan(Family::Meta, &[], true).map(|entry| entry.unwrap().0[0]).collect()
    }

    #[test]
    fn a_crash_keeps_what_was_synced_and_the_prefix_chosen() {
        let backend = Arc::new(MemoryBackend::new());
        let store = Store::with_backend(backend.clone());
        put(&store, 1, Durability::None).unwrap();
        put(&store, 2, Durability::Synced).unwrap();
        put(&store, 3, Durability::None).unwrap();
        put(&store, 4, Durability::None).unwrap();
        assert_eq!(keys(&store), vec![1, 2, 3, 4], "reads see every write that returned");
        backend.crash(1);
        assert!(store.get(Family::Meta, &[1]).is_err(), "a crashed process answers nothing");
        backend.restart();
        assert_eq!(keys(&store), vec![1, 2, 3], "the synced write synced the one before it; one unsynced survived");
        // A failed write changes nothing; a failed sync leaves its write to chance.
        backend.inject(Fault::FailWrite);
        assert!(put(&store, 5, Durability::Synced).is_err());
        backend.inject(Fault::FailSync);
        assert!(put(&store, 6, Durability::Synced).is_err());
        assert_eq!(keys(&store), vec![1, 2, 3, 6]);
        backend.crash(0);
        backend.restart();
        assert_eq!(keys(&store), vec![1, 2, 3], "the failed sync's write was lost this time");
        // Reverse scans and the last key.
        assert_eq!(store.scan(Family::Meta, &[2], false).map(|e| e.unwrap().0[0]).collect::<Vec<_>>(), vec![2, 1]);
        assert_eq!(store.last(Family::Meta).unwrap().unwrap().0.as_ref(), &[3]);
    }
}

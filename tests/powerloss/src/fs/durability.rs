//! Durability: a directory fsync makes the logged namespace changes it
//! completes durable; a cut undoes the rest, newest first, and drops every
//! unsynced byte; `sync_all` makes everything durable (an orderly shutdown).

use super::*;

impl State {
    pub(super) fn fsyncdir(&mut self, ino: u64) -> Result<(), Errno> {
        let rel = self.live_path(ino)?;
        File::open(self.full(&rel)).and_then(|d| d.sync_all()).map_err(errno)?;
        // Every logged change to this directory is now on disk as far as this
        // directory is concerned; a change is durable once all its directories are.
        let mut durable = Vec::new();
        self.log.retain_mut(|e| {
            e.dirs_unsynced.retain(|&d| d != ino);
            if e.dirs_unsynced.is_empty() {
                durable.push(e.op.clone());
                false
            } else {
                true
            }
        });
        for op in durable {
            self.finalize(&op);
        }
        self.stats.fsyncdirs += 1;
        Ok(())
    }

    /// A change became durable: what waited in the graveyard for it is gone for good.
    fn finalize(&mut self, op: &MetaOp) {
        match *op {
            MetaOp::Created { .. } => {}
            MetaOp::Removed { ino, .. } => self.purge(ino),
            MetaOp::Renamed { replaced, .. } => {
                if let Some(r) = replaced {
                    self.purge(r);
                }
            }
        }
    }

    fn purge(&mut self, ino: u64) {
        if let Some(rel) = self.path_of(ino).filter(|p| self.in_graveyard(p)) {
            // Removing a grave cannot fail in a way a program could notice;
            // the whole graveyard is emptied again at the next cut.
            let _ = remove_any(&self.full(&rel));
            self.drop_subtree(&rel);
        }
    }

    /// Restores the entry at `grave_or_current` to `parent/name`, if that
    /// place is free. Returns whether it did.
    fn restore(&mut self, ino: u64, parent: u64, name: &OsStr) -> bool {
        let (Some(current), Some(parent_path)) = (self.path_of(ino), self.path_of(parent)) else { return false };
        let target = parent_path.join(name);
        if fs::symlink_metadata(self.full(&target)).is_ok() {
            return false;
        }
        self.move_entry(&current, &target).is_ok()
    }

    /// Undoes one non-durable change. Returns whether the namespace now is as
    /// it was before the change.
    fn undo(&mut self, op: &MetaOp) -> bool {
        match op {
            MetaOp::Created { ino } => {
                let Some(rel) = self.path_of(*ino) else { return true };
                let removed = remove_any(&self.full(&rel)).is_ok();
                self.drop_subtree(&rel);
                removed
            }
            MetaOp::Removed { ino, parent, name } => self.restore(*ino, *parent, name),
            MetaOp::Renamed { ino, from_parent, from_name, to_parent, to_name, replaced } => {
                let back = self.restore(*ino, *from_parent, from_name);
                let replaced_back = replaced.is_none_or(|r| self.restore(r, *to_parent, to_name));
                back && replaced_back
            }
        }
    }

    pub(super) fn cut(&mut self) -> CutReport {
        let mut report = CutReport::default();
        // Newest first, so each undo finds the namespace as its change left it.
        for entry in std::mem::take(&mut self.log).into_iter().rev() {
            if self.undo(&entry.op) {
                report.metadata_ops_undone += 1;
            } else {
                report.metadata_ops_not_undone += 1;
            }
        }
        for node in self.nodes.values_mut() {
            if let Some(p) = node.pending.take() {
                report.bytes_dropped += p.held_bytes();
                report.files_dropped += 1;
            }
        }
        self.pending_bytes = 0;
        // Whatever could not be put back stays removed.
        let graveyard = self.graveyard.clone();
        let graveyard_full = self.full(&graveyard);
        let _ = fs::remove_dir_all(&graveyard_full);
        let _ = fs::create_dir(&graveyard_full);
        for n in self.nodes.values_mut() {
            if n.path.as_ref().is_some_and(|p| p.starts_with(&graveyard)) {
                n.path = None;
            }
        }
        self.ino_by_path.retain(|p, _| !p.starts_with(&graveyard));
        self.stats.cuts += 1;
        report
    }

    pub(super) fn sync_all(&mut self) -> SyncReport {
        let mut report = SyncReport::default();
        let dirty: Vec<u64> = self.nodes.iter().filter(|(_, n)| n.pending.is_some()).map(|(&i, _)| i).collect();
        for ino in dirty {
            let Some(p) = self.nodes.get_mut(&ino).and_then(|n| n.pending.take()) else { continue };
            let open_fh = self.handles.iter().find(|(_, h)| matches!(h, Handle::File { ino: i, .. } if *i == ino));
            let result = match (open_fh.map(|(&fh, _)| fh), self.path_of(ino)) {
                (Some(fh), _) => match self.handles.get_mut(&fh) {
                    Some(Handle::File { file, .. }) => p.apply(file).and_then(|()| file.sync_all()),
                    _ => Err(io::Error::from_raw_os_error(libc::EBADF)),
                },
                (None, Some(rel)) => OpenOptions::new()
                    .write(true)
                    .open(self.full(&rel))
                    .and_then(|mut f| p.apply(&mut f).and_then(|()| f.sync_all())),
                // Neither open nor named: nobody can ever read these bytes.
                (None, None) => Ok(()),
            };
            match result {
                Ok(()) => {
                    self.pending_bytes -= p.held_bytes();
                    report.files_synced += 1;
                    report.bytes_synced += p.held_bytes();
                    self.stats.bytes_synced += p.held_bytes();
                }
                Err(_) => {
                    report.errors += 1;
                    if let Some(n) = self.nodes.get_mut(&ino) {
                        n.pending = Some(p);
                    }
                }
            }
        }
        for entry in std::mem::take(&mut self.log) {
            self.finalize(&entry.op);
            report.metadata_ops_made_durable += 1;
        }
        report
    }

    pub(super) fn stats(&self) -> Stats {
        Stats {
            pending_bytes: self.pending_bytes,
            pending_files: self.nodes.values().filter(|n| n.pending.is_some()).count() as u64,
            pending_metadata_ops: self.log.len() as u64,
            ..self.stats
        }
    }
}

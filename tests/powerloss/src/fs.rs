//! The power-loss filesystem's model: a passthrough to a backing directory
//! that holds every unsynced byte in memory and logs every unsynced namespace
//! change, so that a power cut ([`Controller::cut`]) forgets exactly what a
//! disk would. The FUSE request glue is in `fs/fuse.rs`; what makes a
//! change durable, and what a cut undoes, is in `fs/durability.rs`.
//!
//! Data: each regular file's writes and truncates since its last fsync live in
//! a [`PendingFile`] overlay; the backing file only ever holds synced bytes.
//!
//! Namespace: create, mkdir, symlink, unlink, rmdir and rename are applied to
//! the backing directory at once (so paths, `readdir` and open descriptors
//! behave normally) and logged. An entry is durable once every directory it
//! changed has been fsynced after it; a cut undoes the rest, newest first.
//! Removed and replaced entries wait in the hidden [`GRAVEYARD_NAME`]
//! directory until their removal is durable, so an undo can put them back.
//!
//! Invariants: `ino_by_path` is the inverse of the nodes' live paths (this
//! process is the only writer of the backing directory while mounted);
//! `pending_bytes` is the sum of the overlays' `held_bytes`; the kernel caches
//! nothing (zero TTLs, direct I/O), so what it shows after a cut is what this
//! state says.
//!
//! Every request replies with an errno on failure; nothing here panics on a
//! request's input.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, File, FileTimes, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{Errno, FileAttr, FileType, INodeNo, OpenAccMode, OpenFlags, RenameFlags, TimeOrNow};

use crate::pending::{PendingFile, read_full};

mod durability;
mod fuse;

/// The kernel caches no attributes or entries: after a cut the next stat or
/// lookup must see the rolled-back state, not a remembered one.
const TTL: Duration = Duration::ZERO;

/// The hidden directory, in the backing root, where removed and replaced
/// entries wait until their removal is durable.
pub const GRAVEYARD_NAME: &str = ".exhost-powerloss-graveyard";

/// The default for [`Options::pending_bytes_max`]: 1 GiB.
pub const PENDING_BYTES_MAX_DEFAULT: u64 = 1 << 30;

/// How the filesystem behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// Writes fail with `ENOSPC` once this many unsynced bytes are held in
    /// memory, as a full disk would, rather than exhausting the machine.
    pub pending_bytes_max: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options { pending_bytes_max: PENDING_BYTES_MAX_DEFAULT }
    }
}

/// Counters since the mount. Its `Display` is the `stats` control reply.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub pending_bytes: u64,
    pub pending_files: u64,
    pub pending_metadata_ops: u64,
    pub fsyncs: u64,
    pub fsyncdirs: u64,
    pub bytes_synced: u64,
    pub cuts: u64,
}

/// What one power cut threw away.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CutReport {
    pub bytes_dropped: u64,
    pub files_dropped: u64,
    pub metadata_ops_undone: u64,
    /// Undos that could not be done because a later durable change took the
    /// place (for example the name was durably reused in another directory);
    /// such an entry is left as it is now.
    pub metadata_ops_not_undone: u64,
}

/// What a "sync everything" made durable.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SyncReport {
    pub files_synced: u64,
    pub bytes_synced: u64,
    pub metadata_ops_made_durable: u64,
    /// Files whose pending bytes could not be written (they stay pending).
    pub errors: u64,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pending_bytes={} pending_files={} pending_metadata_ops={} fsyncs={} fsyncdirs={} bytes_synced={} cuts={}",
            self.pending_bytes,
            self.pending_files,
            self.pending_metadata_ops,
            self.fsyncs,
            self.fsyncdirs,
            self.bytes_synced,
            self.cuts
        )
    }
}

impl fmt::Display for CutReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bytes_dropped={} files_dropped={} metadata_ops_undone={} metadata_ops_not_undone={}",
            self.bytes_dropped, self.files_dropped, self.metadata_ops_undone, self.metadata_ops_not_undone
        )
    }
}

impl fmt::Display for SyncReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "files_synced={} bytes_synced={} metadata_ops_made_durable={} errors={}",
            self.files_synced, self.bytes_synced, self.metadata_ops_made_durable, self.errors
        )
    }
}

/// One inode as this filesystem numbers it.
#[derive(Debug)]
struct Node {
    /// Relative to the backing root ("" is the root); `None` once the entry
    /// is gone from the backing directory (open descriptors still work).
    path: Option<PathBuf>,
    /// Unsynced writes and truncates (regular files only).
    pending: Option<PendingFile>,
}

#[derive(Debug)]
struct DirEntryOut {
    ino: u64,
    kind: FileType,
    name: OsString,
}

#[derive(Debug)]
enum Handle {
    File {
        ino: u64,
        file: File,
    },
    /// A directory listing, taken at `opendir` so offsets stay stable.
    Dir {
        entries: Vec<DirEntryOut>,
    },
}

/// A namespace change not yet durable, with what its undo needs.
#[derive(Debug, Clone)]
enum MetaOp {
    /// `ino` was created (file, directory or symlink).
    Created { ino: u64 },
    /// `ino`, once `parent/name`, now waits in the graveyard.
    Removed { ino: u64, parent: u64, name: OsString },
    /// `ino` moved from `from_parent/from_name` to `to_parent/to_name`; the
    /// entry it replaced there, if any, waits in the graveyard.
    Renamed {
        ino: u64,
        from_parent: u64,
        from_name: OsString,
        to_parent: u64,
        to_name: OsString,
        replaced: Option<u64>,
    },
}

#[derive(Debug)]
struct LoggedOp {
    op: MetaOp,
    /// Directories (inode numbers) that still need an fsync for `op` to be durable.
    dirs_unsynced: Vec<u64>,
}

#[derive(Debug)]
struct State {
    backing_root: PathBuf,
    graveyard: PathBuf,
    options: Options,
    nodes: HashMap<u64, Node>,
    ino_by_path: HashMap<PathBuf, u64>,
    ino_next: u64,
    handles: HashMap<u64, Handle>,
    fh_next: u64,
    grave_next: u64,
    log: Vec<LoggedOp>,
    pending_bytes: u64,
    stats: Stats,
}

/// The filesystem given to `fuser`.
#[derive(Debug)]
pub struct PowerLossFs {
    state: Arc<Mutex<State>>,
}

/// Cut, sync and stats from outside the FUSE request loop (the control
/// socket, tests). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Controller {
    state: Arc<Mutex<State>>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock would be a bug here; serving on is
    // still better for a test tool than wedging every later request.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PowerLossFs {
    /// A filesystem over `backing_root`, whose present contents count as
    /// durable. A graveyard left by an earlier run is emptied (what it held
    /// was removed, and is now treated as durably so).
    pub fn new(backing_root: &Path, options: Options) -> io::Result<(PowerLossFs, Controller)> {
        let backing_root = backing_root.canonicalize()?;
        if !backing_root.is_dir() {
            return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
        }
        let graveyard_full = backing_root.join(GRAVEYARD_NAME);
        match fs::remove_dir_all(&graveyard_full) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        fs::create_dir(&graveyard_full)?;
        let mut nodes = HashMap::new();
        nodes.insert(INodeNo::ROOT.0, Node { path: Some(PathBuf::new()), pending: None });
        let state = State {
            backing_root,
            graveyard: PathBuf::from(GRAVEYARD_NAME),
            options,
            nodes,
            ino_by_path: HashMap::from([(PathBuf::new(), INodeNo::ROOT.0)]),
            ino_next: INodeNo::ROOT.0 + 1,
            handles: HashMap::new(),
            fh_next: 1,
            grave_next: 1,
            log: Vec::new(),
            pending_bytes: 0,
            stats: Stats::default(),
        };
        let state = Arc::new(Mutex::new(state));
        Ok((PowerLossFs { state: state.clone() }, Controller { state }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

impl Controller {
    /// Simulates a power cut: drops every unsynced byte and undoes every
    /// namespace change not yet durable. The filesystem keeps serving.
    pub fn cut(&self) -> CutReport {
        lock(&self.state).cut()
    }

    /// Makes everything durable, as `sync(2)` then a clean shutdown would.
    pub fn sync_all(&self) -> SyncReport {
        lock(&self.state).sync_all()
    }

    pub fn stats(&self) -> Stats {
        lock(&self.state).stats()
    }
}

fn errno(e: io::Error) -> Errno {
    Errno::from(e)
}

fn system_time(secs: i64, nanos: i64) -> SystemTime {
    let nanos = u32::try_from(nanos).unwrap_or(0);
    match u64::try_from(secs) {
        Ok(s) => UNIX_EPOCH + Duration::new(s, nanos),
        Err(_) => UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs())).unwrap_or(UNIX_EPOCH),
    }
}

/// Removes whatever is at `full` (a directory with all it holds).
fn remove_any(full: &Path) -> io::Result<()> {
    match fs::symlink_metadata(full) {
        Ok(md) if md.is_dir() => fs::remove_dir_all(full),
        Ok(_) => fs::remove_file(full),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Opens a file read-write when possible, so any handle can later apply its
/// pending bytes; falls back to what the program asked for.
fn open_backing(full: &Path, acc_mode: OpenAccMode) -> io::Result<File> {
    match OpenOptions::new().read(true).write(true).open(full) {
        Ok(f) => Ok(f),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EROFS | libc::EPERM | libc::ETXTBSY)) => {
            let mut o = OpenOptions::new();
            match acc_mode {
                OpenAccMode::O_RDONLY => o.read(true),
                OpenAccMode::O_WRONLY => o.write(true),
                OpenAccMode::O_RDWR => o.read(true).write(true),
            };
            o.open(full)
        }
        Err(e) => Err(e),
    }
}

impl State {
    fn full(&self, rel: &Path) -> PathBuf {
        self.backing_root.join(rel)
    }

    fn path_of(&self, ino: u64) -> Option<PathBuf> {
        self.nodes.get(&ino).and_then(|n| n.path.clone())
    }

    fn live_path(&self, ino: u64) -> Result<PathBuf, Errno> {
        match self.nodes.get(&ino) {
            Some(n) => n.path.clone().ok_or(Errno::ENOENT),
            None => Err(Errno::ESTALE),
        }
    }

    fn in_graveyard(&self, rel: &Path) -> bool {
        rel.starts_with(&self.graveyard)
    }

    /// `parent/name` as a backing-relative path. The graveyard is invisible:
    /// naming it gives `hidden` (ENOENT to look it up, EPERM to create it).
    fn child(&self, parent: u64, name: &OsStr, hidden: Errno) -> Result<PathBuf, Errno> {
        if name.is_empty() || name == "." || name == ".." || name.as_bytes().contains(&b'/') {
            return Err(Errno::EINVAL);
        }
        let parent_path = self.live_path(parent)?;
        if parent_path.as_os_str().is_empty() && name == GRAVEYARD_NAME {
            return Err(hidden);
        }
        Ok(parent_path.join(name))
    }

    /// The inode number of the live path `rel`, numbering it if new.
    fn ino_for(&mut self, rel: &Path) -> u64 {
        if let Some(&ino) = self.ino_by_path.get(rel) {
            return ino;
        }
        self.new_ino(rel)
    }

    /// A fresh inode for a path just created (any old number there is stale).
    fn new_ino(&mut self, rel: &Path) -> u64 {
        let ino = self.ino_next;
        self.ino_next += 1;
        if let Some(old) = self.ino_by_path.insert(rel.to_path_buf(), ino)
            && let Some(node) = self.nodes.get_mut(&old)
        {
            node.path = None;
        }
        self.nodes.insert(ino, Node { path: Some(rel.to_path_buf()), pending: None });
        ino
    }

    /// Renames `from` to `to` in the backing directory and re-keys every
    /// node at or under `from`.
    fn move_entry(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        if from.as_os_str().is_empty() {
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        }
        fs::rename(self.full(from), self.full(to))?;
        let moved: Vec<(u64, PathBuf)> = self
            .nodes
            .iter()
            .filter_map(|(&ino, n)| n.path.as_ref().filter(|p| p.starts_with(from)).map(|p| (ino, p.clone())))
            .collect();
        for (_, old) in &moved {
            self.ino_by_path.remove(old);
        }
        for (ino, old) in moved {
            let suffix = old.strip_prefix(from).unwrap_or(Path::new(""));
            let new = if suffix.as_os_str().is_empty() { to.to_path_buf() } else { to.join(suffix) };
            self.ino_by_path.insert(new.clone(), ino);
            if let Some(n) = self.nodes.get_mut(&ino) {
                n.path = Some(new);
            }
        }
        Ok(())
    }

    /// Forgets the paths at or under `rel`, which are gone from the backing.
    fn drop_subtree(&mut self, rel: &Path) {
        if rel.as_os_str().is_empty() {
            return;
        }
        for n in self.nodes.values_mut() {
            if n.path.as_ref().is_some_and(|p| p.starts_with(rel)) {
                n.path = None;
            }
        }
        self.ino_by_path.retain(|p, _| !p.starts_with(rel));
    }

    fn new_grave(&mut self) -> PathBuf {
        let grave = self.graveyard.join(format!("g{}", self.grave_next));
        self.grave_next += 1;
        grave
    }

    fn log(&mut self, op: MetaOp, dirs: &[u64]) {
        let mut dirs_unsynced = dirs.to_vec();
        dirs_unsynced.dedup();
        self.log.push(LoggedOp { op, dirs_unsynced });
    }

    fn attr(&self, ino: u64, md: &fs::Metadata) -> Result<FileAttr, Errno> {
        let kind = FileType::from_std(md.file_type()).ok_or(Errno::EIO)?;
        let node = self.nodes.get(&ino);
        let size = node.and_then(|n| n.pending.as_ref()).map_or(md.size(), PendingFile::len_bytes);
        // An unlinked file that is still open has no name left: say so.
        let named = node.and_then(|n| n.path.as_ref()).is_some_and(|p| !self.in_graveyard(p));
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: md.blocks(),
            atime: system_time(md.atime(), md.atime_nsec()),
            mtime: system_time(md.mtime(), md.mtime_nsec()),
            ctime: system_time(md.ctime(), md.ctime_nsec()),
            crtime: UNIX_EPOCH,
            kind,
            perm: (md.mode() & 0o7777) as u16,
            nlink: if named { u32::try_from(md.nlink()).unwrap_or(u32::MAX) } else { 0 },
            uid: md.uid(),
            gid: md.gid(),
            rdev: u32::try_from(md.rdev()).unwrap_or(0),
            blksize: u32::try_from(md.blksize()).unwrap_or(4096),
            flags: 0,
        })
    }

    fn getattr(&self, ino: u64, fh: Option<u64>) -> Result<FileAttr, Errno> {
        let md = match (self.path_of(ino), fh.and_then(|fh| self.handles.get(&fh))) {
            (_, Some(Handle::File { file, .. })) => file.metadata(),
            (Some(rel), _) => fs::symlink_metadata(self.full(&rel)),
            (None, _) => return Err(Errno::ENOENT),
        }
        .map_err(errno)?;
        self.attr(ino, &md)
    }

    fn lookup(&mut self, parent: u64, name: &OsStr) -> Result<FileAttr, Errno> {
        let rel = self.child(parent, name, Errno::ENOENT)?;
        let md = fs::symlink_metadata(self.full(&rel)).map_err(errno)?;
        let ino = self.ino_for(&rel);
        self.attr(ino, &md)
    }

    /// The overlay of `ino`, made on first use from the backing length.
    fn pending_mut(&mut self, ino: u64, backing_len_bytes: u64) -> Result<&mut PendingFile, Errno> {
        let node = self.nodes.get_mut(&ino).ok_or(Errno::ESTALE)?;
        Ok(node.pending.get_or_insert_with(|| PendingFile::new(backing_len_bytes)))
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &mut self,
        ino: u64,
        fh: Option<u64>,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
    ) -> Result<FileAttr, Errno> {
        let rel = self.path_of(ino);
        let full = rel.as_ref().map(|r| self.full(r));
        // Owner, mode and times are applied at once and never undone: RocksDB
        // does not depend on them, and they are not what a cut tests.
        if let Some(mode) = mode {
            let full = full.as_ref().ok_or(Errno::ENOENT)?;
            fs::set_permissions(full, fs::Permissions::from_mode(mode & 0o7777)).map_err(errno)?;
        }
        if uid.is_some() || gid.is_some() {
            let full = full.as_ref().ok_or(Errno::ENOENT)?;
            std::os::unix::fs::lchown(full, uid, gid).map_err(errno)?;
        }
        if let Some(size) = size {
            let md = match fh.and_then(|fh| self.handles.get(&fh)) {
                Some(Handle::File { file, .. }) => file.metadata(),
                _ => fs::symlink_metadata(full.as_ref().ok_or(Errno::ENOENT)?),
            }
            .map_err(errno)?;
            if md.is_dir() {
                return Err(Errno::EISDIR);
            }
            if !md.is_file() {
                return Err(Errno::EINVAL);
            }
            let p = self.pending_mut(ino, md.size())?;
            let held_before = p.held_bytes();
            p.truncate(size);
            let held_after = p.held_bytes();
            self.pending_bytes = self.pending_bytes - held_before + held_after;
        }
        if atime.is_some() || mtime.is_some() {
            let resolve = |t: TimeOrNow| match t {
                TimeOrNow::SpecificTime(t) => t,
                TimeOrNow::Now => SystemTime::now(),
            };
            let mut times = FileTimes::new();
            if let Some(t) = atime {
                times = times.set_accessed(resolve(t));
            }
            if let Some(t) = mtime {
                times = times.set_modified(resolve(t));
            }
            let file = File::open(full.as_ref().ok_or(Errno::ENOENT)?).map_err(errno)?;
            file.set_times(times).map_err(errno)?;
        }
        self.getattr(ino, fh)
    }

    fn add_handle(&mut self, handle: Handle) -> u64 {
        let fh = self.fh_next;
        self.fh_next += 1;
        self.handles.insert(fh, handle);
        fh
    }

    fn create(&mut self, parent: u64, name: &OsStr, perm: u32, flags: i32) -> Result<(FileAttr, u64), Errno> {
        let rel = self.child(parent, name, Errno::EPERM)?;
        let full = self.full(&rel);
        let (ino, file) = match OpenOptions::new().read(true).write(true).create_new(true).mode(perm).open(&full) {
            Ok(file) => {
                // Set the mode exactly: this process's umask must not leak in.
                file.set_permissions(fs::Permissions::from_mode(perm)).map_err(errno)?;
                let ino = self.new_ino(&rel);
                self.log(MetaOp::Created { ino }, &[parent]);
                (ino, file)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && flags & libc::O_EXCL == 0 => {
                let file = open_backing(&full, OpenFlags(flags).acc_mode()).map_err(errno)?;
                (self.ino_for(&rel), file)
            }
            Err(e) => return Err(errno(e)),
        };
        let md = file.metadata().map_err(errno)?;
        let attr = self.attr(ino, &md)?;
        Ok((attr, self.add_handle(Handle::File { ino, file })))
    }

    fn mkdir(&mut self, parent: u64, name: &OsStr, perm: u32) -> Result<FileAttr, Errno> {
        let rel = self.child(parent, name, Errno::EPERM)?;
        let full = self.full(&rel);
        fs::create_dir(&full).map_err(errno)?;
        fs::set_permissions(&full, fs::Permissions::from_mode(perm)).map_err(errno)?;
        let ino = self.new_ino(&rel);
        self.log(MetaOp::Created { ino }, &[parent]);
        self.getattr(ino, None)
    }

    fn symlink(&mut self, parent: u64, name: &OsStr, target: &Path) -> Result<FileAttr, Errno> {
        let rel = self.child(parent, name, Errno::EPERM)?;
        std::os::unix::fs::symlink(target, self.full(&rel)).map_err(errno)?;
        let ino = self.new_ino(&rel);
        self.log(MetaOp::Created { ino }, &[parent]);
        self.getattr(ino, None)
    }

    /// unlink (`dir == false`) or rmdir (`dir == true`).
    fn remove(&mut self, parent: u64, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let rel = self.child(parent, name, Errno::ENOENT)?;
        let full = self.full(&rel);
        let md = fs::symlink_metadata(&full).map_err(errno)?;
        match (dir, md.is_dir()) {
            (false, true) => return Err(Errno::EISDIR),
            (true, false) => return Err(Errno::ENOTDIR),
            (true, true) if fs::read_dir(&full).map_err(errno)?.next().is_some() => return Err(Errno::ENOTEMPTY),
            _ => {}
        }
        let ino = self.ino_for(&rel);
        let grave = self.new_grave();
        self.move_entry(&rel, &grave).map_err(errno)?;
        self.log(MetaOp::Removed { ino, parent, name: name.to_os_string() }, &[parent]);
        Ok(())
    }

    fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        if !(flags - RenameFlags::RENAME_NOREPLACE).is_empty() {
            // RENAME_EXCHANGE and RENAME_WHITEOUT are not modelled.
            return Err(Errno::EINVAL);
        }
        let from = self.child(parent, name, Errno::ENOENT)?;
        let to = self.child(new_parent, new_name, Errno::EPERM)?;
        let src = fs::symlink_metadata(self.full(&from)).map_err(errno)?;
        if from == to {
            return Ok(());
        }
        if src.is_dir() && to.starts_with(&from) {
            return Err(Errno::EINVAL);
        }
        // The destination is moved aside rather than overwritten, so a cut can
        // bring it back; that needs rename(2)'s checks done here first.
        let replaced = match fs::symlink_metadata(self.full(&to)) {
            Ok(dst) => {
                if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                    return Err(Errno::EEXIST);
                }
                if dst.dev() == src.dev() && dst.ino() == src.ino() {
                    return Ok(()); // Two names of one file: rename(2) does nothing.
                }
                match (src.is_dir(), dst.is_dir()) {
                    (true, false) => return Err(Errno::ENOTDIR),
                    (false, true) => return Err(Errno::EISDIR),
                    (true, true) if fs::read_dir(self.full(&to)).map_err(errno)?.next().is_some() => {
                        return Err(Errno::ENOTEMPTY);
                    }
                    _ => {}
                }
                Some(self.ino_for(&to))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(errno(e)),
        };
        let ino = self.ino_for(&from);
        if replaced.is_some() {
            let grave = self.new_grave();
            self.move_entry(&to, &grave).map_err(errno)?;
            if let Err(e) = self.move_entry(&from, &to) {
                // Put the destination back; if even that fails it stays in the
                // graveyard and is gone, as after a failed rename on a bad disk.
                let _ = self.move_entry(&grave, &to);
                return Err(errno(e));
            }
        } else {
            self.move_entry(&from, &to).map_err(errno)?;
        }
        let op = MetaOp::Renamed {
            ino,
            from_parent: parent,
            from_name: name.to_os_string(),
            to_parent: new_parent,
            to_name: new_name.to_os_string(),
            replaced,
        };
        self.log(op, &[parent, new_parent]);
        Ok(())
    }

    fn open(&mut self, ino: u64, flags: OpenFlags) -> Result<u64, Errno> {
        let rel = self.live_path(ino)?;
        let file = open_backing(&self.full(&rel), flags.acc_mode()).map_err(errno)?;
        Ok(self.add_handle(Handle::File { ino, file }))
    }

    fn read(&self, ino: u64, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let Some(Handle::File { file, .. }) = self.handles.get(&fh) else { return Err(Errno::EBADF) };
        if let Some(p) = self.nodes.get(&ino).and_then(|n| n.pending.as_ref()) {
            return p.read(file, offset, size).map_err(errno);
        }
        let mut buf = vec![0u8; size as usize];
        let n = read_full(file, &mut buf, offset).map_err(errno)?;
        buf.truncate(n);
        Ok(buf)
    }

    fn write(&mut self, ino: u64, fh: u64, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        let written = u32::try_from(data.len()).map_err(|_| Errno::EINVAL)?;
        let Some(Handle::File { file, .. }) = self.handles.get(&fh) else { return Err(Errno::EBADF) };
        let backing_len = file.metadata().map_err(errno)?.len();
        if self.pending_bytes.saturating_add(data.len() as u64) > self.options.pending_bytes_max {
            return Err(Errno::ENOSPC);
        }
        let p = self.pending_mut(ino, backing_len)?;
        let held_before = p.held_bytes();
        p.write(offset, data).map_err(errno)?;
        let held_after = p.held_bytes();
        self.pending_bytes = self.pending_bytes - held_before + held_after;
        Ok(written)
    }

    fn fallocate(&mut self, ino: u64, fh: u64, offset: u64, length: u64, mode: i32) -> Result<(), Errno> {
        if mode & !libc::FALLOC_FL_KEEP_SIZE != 0 {
            return Err(Errno::EOPNOTSUPP); // Hole punching and the like are not modelled.
        }
        if mode & libc::FALLOC_FL_KEEP_SIZE != 0 {
            return Ok(()); // Reserving blocks changes no byte a program can see.
        }
        let end = offset.checked_add(length).ok_or(Errno::EFBIG)?;
        let Some(Handle::File { file, .. }) = self.handles.get(&fh) else { return Err(Errno::EBADF) };
        let backing_len = file.metadata().map_err(errno)?.len();
        let p = self.pending_mut(ino, backing_len)?;
        if end > p.len_bytes() {
            p.truncate(end); // Growth is unsynced like any other size change.
        }
        Ok(())
    }

    fn fsync(&mut self, ino: u64, fh: u64, datasync: bool) -> Result<(), Errno> {
        let Some(Handle::File { file, .. }) = self.handles.get_mut(&fh) else { return Err(Errno::EBADF) };
        let pending = self.nodes.get_mut(&ino).and_then(|n| n.pending.take());
        if let Some(p) = pending {
            if let Err(e) = p.apply(file) {
                // Keep the bytes pending: the program must not think them safe.
                if let Some(n) = self.nodes.get_mut(&ino) {
                    n.pending = Some(p);
                }
                return Err(errno(e));
            }
            self.pending_bytes -= p.held_bytes();
            self.stats.bytes_synced += p.held_bytes();
        }
        if datasync { file.sync_data() } else { file.sync_all() }.map_err(errno)?;
        self.stats.fsyncs += 1;
        Ok(())
    }

    fn opendir(&mut self, ino: u64) -> Result<u64, Errno> {
        let rel = self.live_path(ino)?;
        let mut entries = vec![
            DirEntryOut { ino, kind: FileType::Directory, name: ".".into() },
            // The kernel fills in ".." itself; the number here is not used.
            DirEntryOut { ino: INodeNo::ROOT.0, kind: FileType::Directory, name: "..".into() },
        ];
        for entry in fs::read_dir(self.full(&rel)).map_err(errno)? {
            let entry = entry.map_err(errno)?;
            let name = entry.file_name();
            if rel.as_os_str().is_empty() && name == GRAVEYARD_NAME {
                continue;
            }
            let Some(kind) = entry.file_type().ok().and_then(FileType::from_std) else { continue };
            let child_ino = self.ino_for(&rel.join(&name));
            entries.push(DirEntryOut { ino: child_ino, kind, name });
        }
        Ok(self.add_handle(Handle::Dir { entries }))
    }
}

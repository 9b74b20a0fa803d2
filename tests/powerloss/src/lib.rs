//! # exhost-powerloss
//!
//! A FUSE passthrough filesystem that simulates power loss, for crash tests
//! of the RocksDB journal (the role LazyFS plays elsewhere). Programs use the
//! mountpoint; the backing directory underneath holds only what a disk would
//! still hold after the power went out.
//!
//! ## The model
//!
//! **Data.** Every byte written to a file since that file's last `fsync` or
//! `fdatasync` is kept in memory, not in the backing file; so are truncates
//! and size growth. Reads see those bytes (a process reads its own unsynced
//! writes, as through a page cache). `fsync`/`fdatasync` writes the file's
//! pending bytes into the backing file and fsyncs it. `close` syncs nothing.
//! The kernel is told to cache nothing (direct I/O, zero attribute and entry
//! TTLs), so no unsynced byte survives a cut in the kernel's page cache
//! either. (Consequence: shared `mmap` of files on the mount is refused;
//! RocksDB does not use it by default.)
//!
//! **Namespace.** `create`, `mknod` (regular files), `mkdir`, `symlink`,
//! `unlink`, `rmdir` and `rename` are applied to the backing directory at once
//! and logged. A change is durable once *every directory it changed* (one, or
//! two for a cross-directory rename) has been fsynced after it, the POSIX
//! rule RocksDB follows (it fsyncs the directory after creating a WAL, an SST
//! or the MANIFEST, and after renaming `CURRENT`). An fsync of a file does not
//! make its directory entry durable (ext4 would, in practice; this model is
//! stricter on purpose). Removed and replaced entries wait in a hidden
//! graveyard (`.exhost-powerloss-graveyard` in the backing root) until their
//! removal is durable.
//!
//! **A power cut** drops every pending byte of every file, then undoes the
//! non-durable namespace changes newest first: created entries are deleted
//! (a directory with everything in it, even contents that were fsynced, since
//! its own entry never reached the disk), removed entries come back from the
//! graveyard, renames move back and put back what they replaced. An undo
//! whose place was since durably taken is skipped and counted in
//! `metadata_ops_not_undone`. The filesystem then keeps serving, so the
//! program under test can be restarted on the same mount.
//!
//! **Not modelled:** mode, owner and times (applied at once, never undone);
//! hard links (`link` fails with `EPERM`; RocksDB then copies); devices,
//! FIFOs and sockets; `RENAME_EXCHANGE`; torn writes within a sync (a synced
//! file is all or nothing); `sync(2)`/`syncfs(2)`, which FUSE does not pass
//! to this filesystem (use the `sync` command instead). A clean unmount syncs
//! everything, as a real one does; `kill -9` of the binary is neither a cut
//! nor an unmount (the backing then holds applied namespace changes without
//! their unsynced data), so cut first.
//!
//! **For test authors:** RocksDB creates its database directory without
//! fsyncing the parent, so under this model a cut before anything else
//! fsyncs that parent takes the whole database away. Create the data
//! directory and send `sync` before starting the program under test, unless
//! that loss is what the test is about.
//!
//! ## Command line and control
//!
//! ```text
//! exhost-powerloss MOUNTPOINT BACKING_DIR [--control SOCKET] [--pending-bytes-max N]
//! exhost-powerloss --send SOCKET COMMAND
//! ```
//!
//! The first form mounts and serves until SIGINT, SIGTERM, SIGHUP, an
//! `unmount` command or an external `umount`; the control socket appears
//! once the mount is ready, so a test waits for it. The second form is a
//! client: it sends one command and prints the reply. The control protocol
//! ([`control`]) is one line in, one line out, over a Unix stream socket:
//!
//! | command   | reply (one line) |
//! |-----------|------------------|
//! | `cut`     | `ok cut bytes_dropped=N files_dropped=N metadata_ops_undone=N metadata_ops_not_undone=N` |
//! | `sync`    | `ok sync files_synced=N bytes_synced=N metadata_ops_made_durable=N errors=N` |
//! | `stats`   | `ok stats pending_bytes=N pending_files=N pending_metadata_ops=N fsyncs=N fsyncdirs=N bytes_synced=N cuts=N` |
//! | `unmount` | `ok unmount`, then the binary unmounts (syncing) and exits |
//!
//! Anything else gets `error ...`. A reply means the command is complete:
//! after `ok cut` the next request on the mount sees the rolled-back state.
//!
//! In-process use (the tests): [`mount`] returns a [`Mounted`] whose
//! [`Controller`] cuts, syncs and counts, and whose drop unmounts.

pub mod control;
pub mod fs;
pub mod pending;

use std::io;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use fuser::{Config, MountOption, Session, SessionUnmounter};

pub use crate::fs::{Controller, CutReport, GRAVEYARD_NAME, Options, PowerLossFs, Stats, SyncReport};

/// Failures to set up or tear down a mount.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MountError {
    #[error("backing directory {path}: {source}")]
    Backing { path: PathBuf, source: io::Error },
    #[error("mounting at {path}: {source}")]
    Mount { path: PathBuf, source: io::Error },
    #[error("starting the FUSE thread: {0}")]
    Thread(io::Error),
    #[error("unmounting {path}: {source}")]
    Unmount { path: PathBuf, source: io::Error },
    #[error("the FUSE session at {path} ended with: {source}")]
    Session { path: PathBuf, source: io::Error },
    #[error("the FUSE thread panicked")]
    Panicked,
}

/// A live mount. Dropping it unmounts (lazily if the mount is busy).
#[derive(Debug)]
pub struct Mounted {
    mountpoint: PathBuf,
    controller: Controller,
    unmounter: Option<SessionUnmounter>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

/// Mounts the power-loss filesystem of `backing_dir` at `mountpoint` and
/// serves it on a background thread.
pub fn mount(mountpoint: &Path, backing_dir: &Path, options: Options) -> Result<Mounted, MountError> {
    let (fs, controller) = PowerLossFs::new(backing_dir, options)
        .map_err(|source| MountError::Backing { path: backing_dir.to_path_buf(), source })?;
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("exhost-powerloss".into()),
        MountOption::Subtype("exhost-powerloss".into()),
        // The kernel checks permissions from the attributes we report.
        MountOption::DefaultPermissions,
    ];
    let mut session = Session::new(fs, mountpoint, &config)
        .map_err(|source| MountError::Mount { path: mountpoint.to_path_buf(), source })?;
    let unmounter = session.unmount_callable();
    let thread = std::thread::Builder::new()
        .name("powerloss-fuse".into())
        .spawn(move || session.run())
        .map_err(MountError::Thread)?;
    Ok(Mounted { mountpoint: mountpoint.to_path_buf(), controller, unmounter: Some(unmounter), thread: Some(thread) })
}

impl Mounted {
    pub fn controller(&self) -> &Controller {
        &self.controller
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// False once the session has ended (for example an external `umount`).
    pub fn is_serving(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Unmounts (which syncs everything) and waits for the FUSE thread. A
    /// busy mount is detached lazily and reported as an error.
    pub fn unmount(mut self) -> Result<(), MountError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), MountError> {
        if let Some(mut unmounter) = self.unmounter.take()
            && let Err(source) = unmounter.unmount()
        {
            // Still in use: detach it so nothing is left mounted, and do not
            // wait for a thread that serves until the last file is closed.
            let _ = nix::mount::umount2(&self.mountpoint, nix::mount::MntFlags::MNT_DETACH);
            self.thread = None;
            return Err(MountError::Unmount { path: self.mountpoint.clone(), source });
        }
        match self.thread.take().map(JoinHandle::join) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(source))) => Err(MountError::Session { path: self.mountpoint.clone(), source }),
            Some(Err(_)) => Err(MountError::Panicked),
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

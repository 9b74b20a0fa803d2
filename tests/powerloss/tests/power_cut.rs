//! The power-loss filesystem end to end: real mounts in temporary
//! directories, real file I/O through the kernel, then a cut.
//!
//! What is checked: bytes fsynced before a cut survive and bytes written
//! after do not; namespace changes survive only if their directory was
//! fsynced; without a cut nothing is lost (the negative control: a test that
//! passes only because everything vanishes would prove nothing); and the
//! binary's control socket does the same from another process.
//!
//! Every mount is owned by a guard that unmounts on drop, panics included;
//! guards are declared before the files they serve, so files close first.
//! Without a usable /dev/fuse each test prints why and passes.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use exhost_powerloss::control::{field, request};
use exhost_powerloss::{Mounted, Options, mount};

const BINARY: &str = env!("CARGO_BIN_EXE_exhost-powerloss");
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

fn fuse_usable() -> bool {
    match OpenOptions::new().read(true).write(true).open("/dev/fuse") {
        Ok(_) => true,
        Err(e) => {
            // Straight to stderr, not through the harness's capture, so the
            // skip shows in a normal `cargo test` run.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: /dev/fuse is not usable here ({e}); the power-loss tests need FUSE"
            );
            false
        }
    }
}

/// A mount in a fresh temporary directory: `mnt/` over `back/`.
struct Fixture {
    // Field order is drop order: unmount before the directory is removed.
    mounted: Option<Mounted>,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Result<Fixture> {
        let dir = tempfile::tempdir()?;
        fs::create_dir(dir.path().join("mnt"))?;
        fs::create_dir(dir.path().join("back"))?;
        let mut fixture = Fixture { mounted: None, dir };
        fixture.remount()?;
        Ok(fixture)
    }

    fn mnt(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    fn back(&self) -> PathBuf {
        self.dir.path().join("back")
    }

    fn mounted(&self) -> &Mounted {
        self.mounted.as_ref().expect("mounted")
    }

    fn cut(&self) -> exhost_powerloss::CutReport {
        self.mounted().controller().cut()
    }

    fn remount(&mut self) -> Result<()> {
        if let Some(m) = self.mounted.take() {
            m.unmount()?;
        }
        self.mounted = Some(mount(&self.mnt(), &self.back(), Options::default())?);
        Ok(())
    }
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)?.sync_all().with_context(|| format!("fsync of {}", dir.display()))
}

fn read(path: &Path) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path).with_context(|| format!("open {}", path.display()))?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Creates `name` in the mount's root and makes its entry durable, so a
/// test of data loss is not confounded by the file itself vanishing.
fn durable_empty_file(fx: &Fixture, name: &str) -> Result<PathBuf> {
    let path = fx.mnt().join(name);
    File::create(&path)?.sync_all()?;
    fsync_dir(&fx.mnt())?;
    Ok(path)
}

#[test]
fn synced_bytes_survive_a_cut_and_unsynced_bytes_do_not() -> Result<()> {
    if !fuse_usable() {
        return Ok(());
    }
    let fx = Fixture::new()?;
    let path = durable_empty_file(&fx, "wal")?;
    {
        let mut f = OpenOptions::new().append(true).open(&path)?;
        f.write_all(b"synced-record;")?;
        f.sync_data()?; // fdatasync: this much is acknowledged.
        f.write_all(b"unsynced-record;")?;
    }
    // A process reads its own unsynced writes, even after close and reopen...
    assert_eq!(read(&path)?, b"synced-record;unsynced-record;");
    // ...but the disk holds only what was synced.
    assert_eq!(read(&fx.back().join("wal"))?, b"synced-record;");
    assert_eq!(fx.mounted().controller().stats().pending_bytes, 16);

    // Unsynced changes to already-synced bytes are lost too: an overwrite
    // in place and a truncate.
    let f = OpenOptions::new().write(true).open(&path)?;
    f.write_all_at(b"XXXXXX", 0)?;
    f.set_len(3)?;
    assert_eq!(read(&path)?, b"XXX");
    drop(f);

    let report = fx.cut();
    assert_eq!(report.metadata_ops_undone, 0);
    assert_eq!(read(&path)?, b"synced-record;", "through the mount after the cut");
    assert_eq!(read(&fx.back().join("wal"))?, b"synced-record;");
    assert_eq!(fs::metadata(&path)?.len(), 14);
    assert_eq!(fx.mounted().controller().stats().pending_bytes, 0);
    Ok(())
}

/// Writes `bytes` to a new `path` and fsyncs the file (not its directory).
fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

#[test]
fn namespace_changes_survive_a_cut_only_once_their_directory_is_fsynced() -> Result<()> {
    if !fuse_usable() {
        return Ok(());
    }
    let fx = Fixture::new()?;
    let m = fx.mnt();

    // Durable: every change below is followed by an fsync of its directory.
    write_synced(&m.join("kept"), b"old")?;
    write_synced(&m.join("doomed"), b"d")?;
    write_synced(&m.join("CURRENT"), b"MANIFEST-1")?;
    fs::create_dir(m.join("dir"))?;
    write_synced(&m.join("dir/inner"), b"x")?;
    fsync_dir(&m.join("dir"))?;
    fsync_dir(&m)?;

    // Not durable: files fsynced, their directories never.
    write_synced(&m.join("000010.log"), b"acknowledged?")?; // The WAL bug class.
    fs::rename(m.join("kept"), m.join("renamed"))?;
    fs::remove_file(m.join("doomed"))?;
    write_synced(&m.join("CURRENT.dbtmp"), b"MANIFEST-2")?;
    fs::rename(m.join("CURRENT.dbtmp"), m.join("CURRENT"))?; // RocksDB's way of switching manifests.
    fs::create_dir(m.join("newdir"))?;
    write_synced(&m.join("newdir/f"), b"y")?;
    fsync_dir(&m.join("newdir"))?; // Durable inside, but newdir's own entry is not.
    assert_eq!(read(&m.join("CURRENT"))?, b"MANIFEST-2");

    let report = fx.cut();
    assert_eq!(report.metadata_ops_not_undone, 0, "{report:?}");
    assert!(!m.join("000010.log").exists(), "a create not followed by a directory fsync must vanish");
    assert!(!fx.back().join("000010.log").exists());
    assert_eq!(read(&m.join("kept"))?, b"old", "a rename not made durable must be undone");
    assert!(!m.join("renamed").exists());
    assert_eq!(read(&m.join("doomed"))?, b"d", "an unlink not made durable must be undone");
    assert_eq!(read(&m.join("CURRENT"))?, b"MANIFEST-1", "the replaced file must come back");
    assert!(!m.join("CURRENT.dbtmp").exists());
    assert!(!m.join("newdir").exists(), "a directory whose own entry was not durable goes with its contents");
    assert_eq!(read(&m.join("dir/inner"))?, b"x", "durable entries stay");

    // The same switch of manifests, made durable this time, survives.
    write_synced(&m.join("CURRENT.dbtmp"), b"MANIFEST-2")?;
    fs::rename(m.join("CURRENT.dbtmp"), m.join("CURRENT"))?;
    fsync_dir(&m)?;
    fx.cut();
    assert_eq!(read(&m.join("CURRENT"))?, b"MANIFEST-2");
    assert!(!m.join("CURRENT.dbtmp").exists());

    // The graveyard is never visible through the mount.
    let names: Vec<_> = fs::read_dir(&m)?.map(|e| e.map(|e| e.file_name())).collect::<Result<_, _>>()?;
    assert!(!names.iter().any(|n| n == exhost_powerloss::GRAVEYARD_NAME), "{names:?}");
    Ok(())
}

#[test]
fn without_a_cut_everything_survives() -> Result<()> {
    if !fuse_usable() {
        return Ok(());
    }
    let mut fx = Fixture::new()?;
    let path = durable_empty_file(&fx, "wal")?;
    {
        let mut f = OpenOptions::new().append(true).open(&path)?;
        f.write_all(b"synced-record;")?;
        f.sync_data()?;
        f.write_all(b"unsynced-record;")?;
    }
    File::create(fx.mnt().join("new"))?.write_all(b"n")?;
    assert_eq!(read(&path)?, b"synced-record;unsynced-record;");
    // A clean unmount syncs everything, as a real one does.
    fx.remount()?;
    assert_eq!(read(&path)?, b"synced-record;unsynced-record;");
    assert_eq!(read(&fx.back().join("wal"))?, b"synced-record;unsynced-record;");
    assert_eq!(read(&fx.mnt().join("new"))?, b"n");
    // So does the explicit "sync everything": after it a cut loses nothing.
    fs::write(fx.mnt().join("late"), b"late")?;
    let synced = fx.mounted().controller().sync_all();
    assert_eq!(synced.errors, 0);
    assert_eq!(fx.cut(), exhost_powerloss::CutReport::default());
    assert_eq!(read(&fx.mnt().join("late"))?, b"late");
    Ok(())
}

/// The binary, with its control socket. Drop stops it and makes sure the
/// mount is gone.
struct Daemon {
    child: Child,
    mnt: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if is_mounted(&self.mnt) {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
    }
}

fn is_mounted(path: &Path) -> bool {
    let Ok(path) = path.canonicalize() else { return false };
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts.lines().any(|l| l.split_whitespace().nth(1) == Some(path.to_string_lossy().as_ref()))
}

#[test]
fn the_binary_cuts_on_a_control_command() -> Result<()> {
    if !fuse_usable() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let (mnt, back, sock) = (dir.path().join("mnt"), dir.path().join("back"), dir.path().join("control.sock"));
    fs::create_dir(&mnt)?;
    fs::create_dir(&back)?;
    let child = Command::new(BINARY)
        .arg(&mnt)
        .arg(&back)
        .arg("--control")
        .arg(&sock)
        .stdin(Stdio::null())
        .spawn()
        .context("starting exhost-powerloss")?;
    let mut daemon = Daemon { child, mnt: mnt.clone() };
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    while request(&sock, "stats").is_err() {
        if let Some(status) = daemon.child.try_wait()? {
            bail!("exhost-powerloss exited early: {status}");
        }
        ensure!(Instant::now() < deadline, "no control socket after {STARTUP_TIMEOUT:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    ensure!(is_mounted(&mnt), "the control socket answered before the mount was up");

    let path = mnt.join("wal");
    File::create(&path)?.sync_all()?;
    fsync_dir(&mnt)?;
    {
        let mut f = OpenOptions::new().append(true).open(&path)?;
        f.write_all(b"synced;")?;
        f.sync_data()?;
        f.write_all(b"unsynced;")?;
    }
    let stats = request(&sock, "stats")?;
    assert_eq!(field(&stats, "pending_bytes"), Some(9), "{stats}");
    assert_eq!(field(&stats, "fsyncdirs"), Some(1), "{stats}");

    // The client form of the binary, as a shell script would use it.
    let out = Command::new(BINARY).arg("--send").arg(&sock).arg("cut").output()?;
    ensure!(out.status.success(), "--send cut failed: {}", String::from_utf8_lossy(&out.stderr));
    let reply = String::from_utf8(out.stdout)?;
    assert_eq!(field(&reply, "bytes_dropped"), Some(9), "{reply}");
    assert_eq!(read(&path)?, b"synced;");

    // A bad command is refused without harm.
    assert!(request(&sock, "explode").is_err());

    // It keeps serving after a cut, and stops cleanly on request.
    fs::write(mnt.join("after"), b"a")?;
    assert_eq!(request(&sock, "unmount")?, "ok unmount");
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    let status = loop {
        if let Some(status) = daemon.child.try_wait()? {
            break status;
        }
        ensure!(Instant::now() < deadline, "exhost-powerloss did not exit after unmount");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    assert!(!is_mounted(&mnt));
    assert_eq!(read(&back.join("after"))?, b"a", "unmount syncs");
    assert!(!sock.exists());
    Ok(())
}

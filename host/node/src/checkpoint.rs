//! A data directory's database sent whole to another node: a tar stream of a
//! RocksDB checkpoint's files, then a manifest naming each file with its size
//! and SHA-256. A node of a cluster whose command stream no longer holds the
//! beginning starts from one (journal, events, read model, snapshots and
//! modules together), then follows the stream from where the copy ends.
//!
//! The manifest comes last, so a transfer cut anywhere (even between two
//! files, where tar alone would see a clean end) is refused, and so is one
//! byte changed on the way. Unpacking writes only plain files directly inside
//! the target directory: no links, no subdirectories, no `..`.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

/// Where a host makes the checkpoint it sends, inside its data directory.
pub const OUTGOING_DIR: &str = "checkpoint-out";
/// The last entry of an archive.
pub const MANIFEST_NAME: &str = "EXHOST-CHECKPOINT";
const MANIFEST_HEADER: &str = "exhost-checkpoint 1";
/// A manifest longer than this is not one (a checkpoint has a few hundred files).
const MANIFEST_BYTES_MAX: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("reading or writing the checkpoint: {0}")]
    Io(#[from] io::Error),
    /// The archive is not a complete, unchanged checkpoint.
    #[error("the checkpoint archive is not usable: {0}")]
    Malformed(String),
}

/// What an archive held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArchiveStats {
    pub files: u64,
    pub bytes: u64,
}

/// One file as the manifest lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Listed {
    bytes: u64,
    sha256: String,
}

/// Stream the files directly inside `dir` (a checkpoint) as a tar archive
/// ending with the manifest.
pub fn write_archive(dir: &Path, out: impl Write) -> io::Result<ArchiveStats> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            return Err(io::Error::other(format!("{} is not a plain file", entry.path().display())));
        }
        let name =
            entry.file_name().into_string().map_err(|name| io::Error::other(format!("{name:?} is not UTF-8")))?;
        names.push(name);
    }
    names.sort();
    let mut archive = tar::Builder::new(out);
    let mut manifest = format!("{MANIFEST_HEADER}\n");
    let mut stats = ArchiveStats::default();
    for name in names {
        let file = std::fs::File::open(dir.join(&name))?;
        let bytes = file.metadata()?.len();
        let mut reader = Hashing { inner: file.take(bytes), hasher: Sha256::new(), bytes: 0 };
        archive.append_data(&mut header(bytes), &name, &mut reader)?;
        if reader.bytes != bytes {
            return Err(io::Error::other(format!("{name} changed size while it was sent")));
        }
        manifest.push_str(&format!("{} {bytes} {name}\n", hex::encode(reader.hasher.finalize())));
        stats.files += 1;
        stats.bytes += bytes;
    }
    archive.append_data(&mut header(manifest.len() as u64), MANIFEST_NAME, manifest.as_bytes())?;
    archive.into_inner()?.flush()?;
    Ok(stats)
}

fn header(bytes: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(bytes);
    header.set_mode(0o600);
    header
}

/// Unpack an archive into the empty directory `dir`, checking every file
/// against the manifest and syncing each, then the directory. `progress` is
/// told the bytes written so far after each piece. On an error, what was
/// written stays in `dir` for the caller to remove.
pub fn unpack_archive(
    input: impl Read,
    dir: &Path,
    mut progress: impl FnMut(u64),
) -> Result<ArchiveStats, CheckpointError> {
    let malformed = |reason: String| CheckpointError::Malformed(reason);
    if std::fs::read_dir(dir)?.next().is_some() {
        return Err(malformed(format!("{} is not empty", dir.display())));
    }
    let mut archive = tar::Archive::new(input);
    let mut received: BTreeMap<String, Listed> = BTreeMap::new();
    let mut manifest: Option<BTreeMap<String, Listed>> = None;
    let mut written = 0u64;
    for entry in archive.entries()? {
        let mut entry = entry?;
        if manifest.is_some() {
            return Err(malformed("an entry follows the manifest".into()));
        }
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(malformed(format!("entry of type {:?}: only plain files belong", entry.header().entry_type())));
        }
        let path = entry.path()?.into_owned();
        let name = match path.to_str() {
            Some(name) if is_plain_name(name) => name.to_string(),
            _ => return Err(malformed(format!("entry {} is not a plain file name", path.display()))),
        };
        if name == MANIFEST_NAME {
            let mut text = String::new();
            (&mut entry).take(MANIFEST_BYTES_MAX).read_to_string(&mut text)?;
            manifest = Some(parse_manifest(&text)?);
            continue;
        }
        if received.contains_key(&name) {
            return Err(malformed(format!("{name} appears twice")));
        }
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(dir.join(&name))?;
        let mut hasher = Sha256::new();
        let mut bytes = 0u64;
        let mut buffer = vec![0u8; 256 << 10];
        loop {
            let read = entry.read(&mut buffer)?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
            file.write_all(&buffer[..read])?;
            bytes += read as u64;
            written += read as u64;
            progress(written);
        }
        if bytes != entry.header().size()? {
            return Err(malformed(format!("{name} is shorter than its header says")));
        }
        file.sync_all()?;
        received.insert(name, Listed { bytes, sha256: hex::encode(hasher.finalize()) });
    }
    let Some(manifest) = manifest else {
        return Err(malformed("the archive ends before its manifest (the transfer was cut)".into()));
    };
    for (name, listed) in &manifest {
        match received.get(name) {
            None => return Err(malformed(format!("{name} is listed but was not sent"))),
            Some(got) if got != listed => {
                return Err(malformed(format!(
                    "{name} arrived as {} bytes with SHA-256 {}, the manifest says {} bytes with {}",
                    got.bytes, got.sha256, listed.bytes, listed.sha256
                )));
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = received.keys().find(|name| !manifest.contains_key(*name)) {
        return Err(malformed(format!("{extra} was sent but is not listed")));
    }
    crate::watermark::sync_directory(dir)?;
    Ok(ArchiveStats { files: received.len() as u64, bytes: received.values().map(|listed| listed.bytes).sum() })
}

fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

fn parse_manifest(text: &str) -> Result<BTreeMap<String, Listed>, CheckpointError> {
    let malformed = |reason: String| CheckpointError::Malformed(format!("manifest: {reason}"));
    let mut lines = text.lines();
    if lines.next() != Some(MANIFEST_HEADER) {
        return Err(malformed(format!("it does not start with {MANIFEST_HEADER:?}")));
    }
    let mut listed = BTreeMap::new();
    for line in lines {
        let mut fields = line.splitn(3, ' ');
        let (Some(sha256), Some(bytes), Some(name)) = (fields.next(), fields.next(), fields.next()) else {
            return Err(malformed(format!("line {line:?} is not `SHA256 BYTES NAME`")));
        };
        let bytes = bytes.parse().map_err(|_| malformed(format!("line {line:?}: {bytes:?} is not a size")))?;
        if sha256.len() != 64 || !is_plain_name(name) || name == MANIFEST_NAME {
            return Err(malformed(format!("line {line:?} is not `SHA256 BYTES NAME`")));
        }
        if listed.insert(name.to_string(), Listed { bytes, sha256: sha256.to_string() }).is_some() {
            return Err(malformed(format!("{name} is listed twice")));
        }
    }
    Ok(listed)
}

/// A reader that hashes and counts what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.hasher.update(&buffer[..read]);
        self.bytes += read as u64;
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dirs {
        root: std::path::PathBuf,
    }

    impl Dirs {
        fn new(name: &str) -> Dirs {
            let root = std::env::temp_dir().join(format!("exhost-checkpoint-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(root.join("from")).unwrap();
            std::fs::create_dir_all(root.join("to")).unwrap();
            std::fs::write(root.join("from/CURRENT"), b"MANIFEST-000005\n").unwrap();
            std::fs::write(root.join("from/000009.sst"), vec![7u8; 300_000]).unwrap();
            std::fs::write(root.join("from/OPTIONS-000007"), b"[Version]\n").unwrap();
            Dirs { root }
        }
        fn from(&self) -> std::path::PathBuf {
            self.root.join("from")
        }
        fn to(&self) -> std::path::PathBuf {
            self.root.join("to")
        }
        fn archive(&self) -> Vec<u8> {
            let mut bytes = Vec::new();
            let stats = write_archive(&self.from(), &mut bytes).unwrap();
            assert_eq!(stats, ArchiveStats { files: 3, bytes: 16 + 300_000 + 10 });
            bytes
        }
    }

    impl Drop for Dirs {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    fn refused(archive: &[u8], dir: &Path) -> String {
        match unpack_archive(archive, dir, |_| {}) {
            Err(error) => error.to_string(),
            Ok(stats) => panic!("a bad archive was unpacked: {stats:?}"),
        }
    }

    #[test]
    fn an_archive_unpacks_to_the_same_files() {
        let dirs = Dirs::new("same");
        let archive = dirs.archive();
        let mut last_progress = 0;
        let stats = unpack_archive(&archive[..], &dirs.to(), |written| last_progress = written).unwrap();
        assert_eq!(stats, ArchiveStats { files: 3, bytes: 300_026 });
        assert_eq!(last_progress, 300_026);
        for name in ["CURRENT", "000009.sst", "OPTIONS-000007"] {
            assert_eq!(std::fs::read(dirs.from().join(name)).unwrap(), std::fs::read(dirs.to().join(name)).unwrap());
        }
        assert!(!dirs.to().join(MANIFEST_NAME).exists(), "the manifest is checked, not kept");
    }

    #[test]
    fn a_cut_or_changed_archive_is_refused() {
        let dirs = Dirs::new("damaged");
        let archive = dirs.archive();
        // Cut inside a file, and cut between two whole entries (tar alone sees a clean end there).
        let inside = refused(&archive[..archive.len() / 2], &dirs.to());
        assert!(inside.contains("not usable") || inside.contains("reading"), "{inside}");
        std::fs::remove_dir_all(dirs.to()).unwrap();
        std::fs::create_dir(dirs.to()).unwrap();
        let between = 512 + 300_000usize.div_ceil(512) * 512;
        assert!(refused(&archive[..between], &dirs.to()).contains("before its manifest"));
        // One byte of the table file changed on the way.
        std::fs::remove_dir_all(dirs.to()).unwrap();
        std::fs::create_dir(dirs.to()).unwrap();
        let mut changed = archive.clone();
        changed[512 + 1000] ^= 1;
        assert!(refused(&changed, &dirs.to()).contains("000009.sst arrived as"));
    }

    #[test]
    fn only_plain_files_inside_the_directory_are_written() {
        let dirs = Dirs::new("paths");
        for name in ["../escaped", "sub/file"] {
            let mut bytes = Vec::new();
            let mut builder = tar::Builder::new(&mut bytes);
            let mut header = header(1);
            // `append_data` refuses such names, so the header is written by hand.
            header.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
            header.set_cksum();
            builder.append(&header, &b"x"[..]).unwrap();
            builder.into_inner().unwrap();
            assert!(refused(&bytes, &dirs.to()).contains("not a plain file name"), "{name}");
        }
        assert!(!dirs.root.join("escaped").exists());
        let mut bytes = Vec::new();
        let mut builder = tar::Builder::new(&mut bytes);
        let mut link = header(0);
        link.set_entry_type(tar::EntryType::Symlink);
        builder.append_link(&mut link, "CURRENT", "/etc/passwd").unwrap();
        builder.into_inner().unwrap();
        assert!(refused(&bytes, &dirs.to()).contains("only plain files"));
        std::fs::write(dirs.to().join("left"), b"").unwrap();
        assert!(refused(&dirs.archive(), &dirs.to()).contains("is not empty"));
    }
}

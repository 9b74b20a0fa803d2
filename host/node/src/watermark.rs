//! The journal's watermark: a small file beside the database that says how
//! far acknowledgements went, so that recovery can tell a journal that lost
//! acknowledged commands from one that simply ends.
//!
//! The story (finding 8): random cuts of the write-ahead log lost 568 to
//! 4,359 acknowledged commands, and the host started without a word: what
//! survives a cut is always an exact prefix, which looks like a journal that
//! ends. The database cannot witness its own loss, so this file does:
//!
//! - `ceiling`: raised, and synced, *before* any command at or past it is
//!   acknowledged, so no acknowledgement ever named a sequence at or above it.
//!   It is raised in steps of [`CEILING_STEP`], one extra sync per step.
//! - `confirmed`: a sequence known durable and so possibly acknowledged,
//!   written at most every [`CONFIRM_EVERY`].
//!
//! At start: a journal ending before `confirmed` lost acknowledged commands
//! for certain, and the host refuses to start until an operator accepts the
//! loss (`exhost repair --accept-journal-loss`); a journal ending before
//! `ceiling` is reported with the gap an acknowledgement could have named.
//!
//! Format (text, one value a line): `exhost-watermark 1`, `confirmed N`,
//! `ceiling M`. Written to a temporary file, synced, renamed over, and the
//! directory synced, so a crash leaves the old marks or the new, never half.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::DataDirError;

/// How far ahead of the last journaled sequence the ceiling is raised.
pub const CEILING_STEP: u64 = 1_024;
/// How often `confirmed` is brought up to date (at most).
pub const CONFIRM_EVERY: Duration = Duration::from_secs(1);

const HEADER: &str = "exhost-watermark 1";

/// The two marks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Marks {
    pub confirmed: u64,
    pub ceiling: u64,
}

/// Where the watermark of a data directory lives.
pub fn path_in(data_dir: &Path) -> PathBuf {
    data_dir.join("journal.watermark")
}

/// The marks in `path`, if the file exists.
pub fn load(path: &Path) -> Result<Option<Marks>, DataDirError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(DataDirError::file("reading", path)(error)),
    };
    let malformed = |problem: String| DataDirError::Malformed { path: path.to_path_buf(), problem };
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return Err(malformed("is not an exhost watermark".into()));
    }
    let mut value = |name: &str| -> Result<u64, DataDirError> {
        let line = lines.next().unwrap_or_default();
        let number = line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')).unwrap_or("");
        number.parse().map_err(|_| malformed(format!("expected `{name} N`, found {line:?}")))
    };
    Ok(Some(Marks { confirmed: value("confirmed")?, ceiling: value("ceiling")? }))
}

/// Write `marks` to `path`, durably and atomically.
pub fn store(path: &Path, marks: Marks) -> std::io::Result<()> {
    let temporary = path.with_extension("watermark.new");
    {
        let mut file = std::fs::File::create(&temporary)?;
        write!(file, "{HEADER}\nconfirmed {}\nceiling {}\n", marks.confirmed, marks.ceiling)?;
        file.sync_all()?;
    }
    std::fs::rename(&temporary, path)?;
    sync_directory(path.parent().unwrap_or(Path::new(".")))
}

/// Make a directory's entries (a rename, a new file) durable.
pub fn sync_directory(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The sequencer's side: raise the ceiling ahead of acknowledgements, confirm behind them.
pub struct Watermark {
    path: PathBuf,
    marks: Marks,
    confirmed_at: Instant,
}

impl Watermark {
    /// Start from the marks on disk (or none), knowing the journal ends at `last_seq`.
    pub fn open(path: PathBuf, last_seq: u64) -> Result<Watermark, DataDirError> {
        let marks = load(&path)?.unwrap_or_default();
        let marks = Marks { confirmed: marks.confirmed.max(last_seq), ceiling: marks.ceiling.max(last_seq + 1) };
        store(&path, marks).map_err(DataDirError::file("writing", &path))?;
        Ok(Watermark { path, marks, confirmed_at: Instant::now() })
    }

    /// Before commands up to `last_seq` may be acknowledged.
    pub fn cover(&mut self, last_seq: u64) -> std::io::Result<()> {
        if last_seq >= self.marks.ceiling {
            let raised = Marks { ceiling: last_seq + CEILING_STEP, ..self.marks };
            store(&self.path, raised)?;
            self.marks = raised;
        }
        Ok(())
    }

    /// Commands up to `durable_seq` are durable (and may be acknowledged now).
    /// A failure here loses nothing: the mark only lags.
    pub fn confirm(&mut self, durable_seq: u64) {
        if durable_seq > self.marks.confirmed && self.confirmed_at.elapsed() >= CONFIRM_EVERY {
            let confirmed = Marks { confirmed: durable_seq, ..self.marks };
            match store(&self.path, confirmed) {
                Ok(()) => self.marks = confirmed,
                Err(error) => tracing::warn!(%error, "the journal watermark could not be confirmed"),
            }
            self.confirmed_at = Instant::now();
        }
    }
}

/// What recovery finds when it compares the journal with the marks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// No marks (a data directory from before the watermark, or a fresh one).
    Unmarked,
    /// The journal reaches every sequence known acknowledged.
    Whole { last_seq: u64, ceiling: u64 },
    /// Acknowledged commands are missing: `confirmed - last_seq` at least.
    Lost { last_seq: u64, confirmed: u64, ceiling: u64 },
}

pub fn check(marks: Option<Marks>, last_seq: u64) -> Finding {
    match marks {
        None => Finding::Unmarked,
        Some(marks) if last_seq < marks.confirmed => {
            Finding::Lost { last_seq, confirmed: marks.confirmed, ceiling: marks.ceiling }
        }
        Some(marks) => Finding::Whole { last_seq, ceiling: marks.ceiling },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_leads_acknowledgements_and_a_short_journal_is_caught() {
        let dir = std::env::temp_dir().join(format!("exhost-watermark-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = path_in(&dir);
        assert_eq!(load(&path).unwrap(), None);
        let mut watermark = Watermark::open(path.clone(), 10).unwrap();
        assert_eq!(load(&path).unwrap(), Some(Marks { confirmed: 10, ceiling: 11 }));
        watermark.cover(11).unwrap();
        assert_eq!(load(&path).unwrap().unwrap().ceiling, 11 + CEILING_STEP, "raised before 11 is acknowledged");
        watermark.cover(500).unwrap();
        assert_eq!(load(&path).unwrap().unwrap().ceiling, 11 + CEILING_STEP, "within the step: no write");
        watermark.confirmed_at -= CONFIRM_EVERY;
        watermark.confirm(400);
        let marks = load(&path).unwrap();
        assert_eq!(marks.unwrap().confirmed, 400);
        // A journal cut below what was confirmed lost acknowledged commands for certain.
        assert_eq!(check(marks, 350), Finding::Lost { last_seq: 350, confirmed: 400, ceiling: 11 + CEILING_STEP });
        assert_eq!(check(marks, 420), Finding::Whole { last_seq: 420, ceiling: 11 + CEILING_STEP });
        assert_eq!(check(None, 5), Finding::Unmarked);
        std::fs::write(&path, "garbage").unwrap();
        assert!(load(&path).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}

//! The state directory's one file: an append-only journal of volume records, one JSON line per
//! change (`{"put":{…}}` or `{"remove":"<volume id>"}`), rewritten from the live records at
//! start and whenever the removed lines outnumber them.
//!
//! One file instead of one per volume: a publish appends a line to a file that already exists,
//! so no inode is allocated or freed on the node's disk per volume. No fsync: the records
//! describe tmpfs mounts, and whatever loses the page cache (a power loss, a reboot) takes the
//! mounts with it; a process crash loses nothing that was written.
//!
//! What a disk can do to it is survived: the file is read as bytes and split on `\n`, each
//! line decoded on its own, so a line with invalid UTF-8, garbage or a torn append is skipped
//! with a warning and never stops the node from starting. A failed append is cut off again
//! (see [`Journal::append`]), so it cannot swallow the next line.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::state::VolumeRecord;

/// The journal's name inside the state directory.
pub(crate) const JOURNAL_FILE: &str = "volumes.jsonl";

/// Lines beyond the live records that may pile up before a rewrite.
const SLACK_LINES: usize = 256;

/// One line of the journal: owned when read, borrowed when written.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
enum Entry<R, K> {
    Put(R),
    Remove(K),
}

/// The open journal: appends go to `file`; `lines` counts what it holds and `len` is its
/// length in bytes up to the end of its last whole line.
#[derive(Debug)]
pub(super) struct Journal {
    path: PathBuf,
    file: File,
    lines: usize,
    len: u64,
    /// A failed append could not be cut off: the next record starts on a new line.
    torn: bool,
}

/// What reading a journal found.
#[derive(Debug, Default)]
pub(crate) struct ReadRecords {
    /// The live records, by volume id.
    pub records: HashMap<String, VolumeRecord>,
    /// Lines that were skipped (not UTF-8, not JSON, not a record, cut short).
    pub skipped: usize,
}

/// Reads the records a journal holds, applying its lines in order, without changing it.
/// A line that does not decode is skipped with a warning (see [`read_journal`]).
pub fn read_records(dir: &Path) -> io::Result<HashMap<String, VolumeRecord>> {
    read_journal(dir).map(|read| read.records)
}

/// Reads a journal as [`read_records`] does, and counts the skipped lines. A line that does
/// not decode is skipped with a warning naming its number; only an error reading the file
/// itself is returned.
pub(crate) fn read_journal(dir: &Path) -> io::Result<ReadRecords> {
    let path = dir.join(JOURNAL_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ReadRecords::default()),
        Err(e) => return Err(e),
    };
    let mut read = ReadRecords::default();
    for (number, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        // serde_json checks UTF-8 itself; the line is never echoed (only where and why).
        match serde_json::from_slice::<Entry<VolumeRecord, String>>(line) {
            Ok(Entry::Put(record)) => {
                read.records.insert(record.volume_id.clone(), record);
            }
            Ok(Entry::Remove(volume_id)) => {
                read.records.remove(&volume_id);
            }
            Err(error) => {
                read.skipped += 1;
                tracing::warn!(
                    path = %path.display(),
                    line = number + 1,
                    bytes = line.len(),
                    %error,
                    "skipping an unreadable volume state line"
                );
            }
        }
    }
    Ok(read)
}

impl Journal {
    /// Starts a fresh journal in `dir` holding exactly `records`.
    pub(super) fn create<'a>(
        dir: &Path,
        records: impl IntoIterator<Item = &'a VolumeRecord>,
    ) -> io::Result<Self> {
        Self::start(dir.join(JOURNAL_FILE), records)
    }

    /// The journal's path, for messages.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Appends the record of a published volume.
    pub(super) fn put(&mut self, record: &VolumeRecord) -> io::Result<()> {
        self.append(&Entry::<_, &str>::Put(record))
    }

    /// Appends the removal of a volume.
    pub(super) fn remove(&mut self, volume_id: &str) -> io::Result<()> {
        self.append(&Entry::<&VolumeRecord, _>::Remove(volume_id))
    }

    /// True when the journal holds enough dead lines to be worth rewriting.
    pub(super) fn wants_rewrite(&self, live: usize) -> bool {
        self.lines > 2 * live + SLACK_LINES
    }

    /// Replaces the journal with one line per live record.
    pub(super) fn rewrite<'a>(
        &mut self,
        records: impl IntoIterator<Item = &'a VolumeRecord>,
    ) -> io::Result<()> {
        *self = Self::start(self.path.clone(), records)?;
        Ok(())
    }

    /// Writes `records` to a temporary file, renames it over `path` and opens it for appends.
    /// A failure (a full disk) removes the temporary file and leaves `path` as it was.
    fn start<'a>(
        path: PathBuf,
        records: impl IntoIterator<Item = &'a VolumeRecord>,
    ) -> io::Result<Self> {
        let tmp = path.with_extension("jsonl.tmp");
        let written = Self::write_all(&tmp, records).and_then(|(lines, len)| {
            std::fs::rename(&tmp, &path)?;
            Ok((lines, len))
        });
        let (lines, len) = match written {
            Ok(done) => done,
            Err(error) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(error);
            }
        };
        let file = OpenOptions::new().append(true).open(&path)?;
        Ok(Self {
            path,
            file,
            lines,
            len,
            torn: false,
        })
    }

    fn write_all<'a>(
        tmp: &Path,
        records: impl IntoIterator<Item = &'a VolumeRecord>,
    ) -> io::Result<(usize, u64)> {
        let mut out = io::BufWriter::new(File::create(tmp)?);
        let (mut lines, mut len) = (0, 0);
        for record in records {
            let line = line(&Entry::<_, &str>::Put(record));
            out.write_all(&line)?;
            lines += 1;
            len += line.len() as u64;
        }
        out.into_inner().map_err(|e| e.into_error())?;
        Ok((lines, len))
    }

    /// Appends one line with one write(2), so concurrent readers see whole lines.
    ///
    /// A write that fails part-way (ENOSPC, EIO, EFBIG) may have put the start of the line in
    /// the file; left there, it would run into the next append and make the reader drop that
    /// good line too. So the file is cut back to its length before the append: the journal is
    /// then exactly its whole lines. Only if that truncation fails as well is the fallback
    /// used: the next append starts with a `\n`, closing the torn bytes into a line of their
    /// own that the reader skips. Truncation comes first because it leaves no garbage at all;
    /// a leading `\n` on every append would cost nothing but hides nothing either, and a
    /// journal whose every line is whole is what the rewrite and the tests can check.
    fn append(&mut self, entry: &Entry<&VolumeRecord, &str>) -> io::Result<()> {
        let mut line = line(entry);
        if self.torn {
            line.insert(0, b'\n');
        }
        match self.file.write_all(&line) {
            Ok(()) => {
                self.lines += 1;
                if !self.torn {
                    self.len += line.len() as u64;
                } else if let Ok(meta) = self.file.metadata() {
                    // The torn bytes are in the file: its length is known again only from it.
                    self.len = meta.len();
                    self.torn = false;
                }
                Ok(())
            }
            Err(error) => {
                // While torn, `len` is not the file's length: never cut by it.
                if !self.torn
                    && let Err(cut) = self.file.set_len(self.len)
                {
                    tracing::warn!(path = %self.path.display(), error = %cut, "cannot cut a failed append off the volume state journal; the next line starts anew");
                    self.torn = true;
                }
                Err(error)
            }
        }
    }
}

/// One journal line, newline included.
fn line(entry: &Entry<&VolumeRecord, &str>) -> Vec<u8> {
    let mut line = serde_json::to_vec(entry).expect("a record always serializes");
    line.push(b'\n');
    line
}

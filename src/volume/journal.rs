//! The state directory's one file: an append-only journal of volume records, one JSON line per
//! change (`{"put":{…}}` or `{"remove":"<volume id>"}`), rewritten from the live records at
//! start and whenever the removed lines outnumber them.
//!
//! One file instead of one per volume: a publish appends a line to a file that already exists,
//! so no inode is allocated or freed on the node's disk per volume. No fsync: the records
//! describe tmpfs mounts, and whatever loses the page cache (a power loss, a reboot) takes the
//! mounts with it; a process crash loses nothing that was written.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::state::VolumeRecord;

/// The journal's name inside the state directory.
pub const JOURNAL_FILE: &str = "volumes.jsonl";

/// Lines beyond the live records that may pile up before a rewrite.
const SLACK_LINES: usize = 256;

/// One line of the journal: owned when read, borrowed when written.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
enum Entry<R, K> {
    Put(R),
    Remove(K),
}

/// The open journal: appends go to `file`; `lines` counts what it holds.
#[derive(Debug)]
pub(super) struct Journal {
    path: PathBuf,
    file: File,
    lines: usize,
}

/// Reads the records a journal holds, applying its lines in order, without changing it.
/// A line that does not parse (a write cut short by a crash) is skipped with a warning.
pub fn read_records(dir: &Path) -> io::Result<HashMap<String, VolumeRecord>> {
    let path = dir.join(JOURNAL_FILE);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(e),
    };
    let mut records = HashMap::new();
    for (number, line) in BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        match serde_json::from_str::<Entry<VolumeRecord, String>>(&line) {
            Ok(Entry::Put(record)) => {
                records.insert(record.volume_id.clone(), record);
            }
            Ok(Entry::Remove(volume_id)) => {
                records.remove(&volume_id);
            }
            Err(error) => tracing::warn!(
                path = %path.display(),
                line = number + 1,
                %error,
                "skipping an unreadable volume state line"
            ),
        }
    }
    Ok(records)
}

impl Journal {
    /// Starts a fresh journal in `dir` holding exactly `records`.
    pub(super) fn create<'a>(
        dir: &Path,
        records: impl IntoIterator<Item = &'a VolumeRecord>,
    ) -> io::Result<Self> {
        Self::start(dir.join(JOURNAL_FILE), records)
    }

    /// The journal's path, for error messages.
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
    fn start<'a>(
        path: PathBuf,
        records: impl IntoIterator<Item = &'a VolumeRecord>,
    ) -> io::Result<Self> {
        let tmp = path.with_extension("jsonl.tmp");
        let mut out = io::BufWriter::new(File::create(&tmp)?);
        let mut lines = 0;
        for record in records {
            serde_json::to_writer(&mut out, &Entry::<_, &str>::Put(record))
                .map_err(io::Error::other)?;
            out.write_all(b"\n")?;
            lines += 1;
        }
        out.into_inner().map_err(|e| e.into_error())?;
        std::fs::rename(&tmp, &path)?;
        let file = OpenOptions::new().append(true).open(&path)?;
        Ok(Self { path, file, lines })
    }

    fn append(&mut self, entry: &Entry<&VolumeRecord, &str>) -> io::Result<()> {
        let mut line = serde_json::to_vec(entry).expect("a record always serializes");
        line.push(b'\n');
        // One write(2) of the whole line, so concurrent readers see whole lines.
        self.file.write_all(&line)?;
        self.lines += 1;
        Ok(())
    }
}

//! What keymount remembers about each published volume: in memory for the republish fast
//! path, and in the state directory's journal (`journal.rs`) so a restarted process can
//! unpublish and keep rotating. Metadata only: never a secret value or token.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::journal::{self, Journal};
use crate::fs::group::FsGroup;
use crate::provider::ObjectVersion;

/// The record of one published volume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeRecord {
    pub volume_id: String,
    pub target_path: PathBuf,
    pub pod_namespace: String,
    #[serde(default)]
    pub pod_name: Option<String>,
    #[serde(default)]
    pub pod_uid: Option<String>,
    pub class: String,
    pub provider: String,
    pub versions: Vec<ObjectVersion>,
    /// When the provider was last asked.
    pub fetched_at: Timestamp,
    /// When some object must be fetched again regardless of the interval (leases).
    #[serde(default)]
    pub refresh_before: Option<Timestamp>,
    /// The class's refresh annotation as of the last fetch (on-demand refresh).
    #[serde(default)]
    pub refresh_stamp: Option<String>,
    /// The SecretProviderClassPodStatus could not be written at the last fetch: the next
    /// republish fetches and writes it again, even if the content did not change.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub status_stale: bool,
    /// The device number of the volume's tmpfs when it was filled: a republish that finds the
    /// same tmpfs at the target need not read the node's whole mount table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<u64>,
    /// The group the volume's files belong to (the pod's fsGroup), so a rotation, also after
    /// a restart, writes them with the same group. Absent in records written before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_group: Option<FsGroup>,
}

/// Failure to persist or read a record.
#[derive(Debug, thiserror::Error)]
#[error("{action} volume state {path}: {source}")]
pub struct StateError {
    action: &'static str,
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

fn at<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StateError + 'a {
    move |source| StateError {
        action,
        path: path.to_owned(),
        source,
    }
}

/// All records, in memory and in the state directory's journal.
///
/// The journal never stops a publish: when it cannot be written (a full or read-only disk at
/// start or later), the records are kept in memory, the node says so (a warning, `/readyz`'s
/// text and the `keymount_state_journal_writable` gauge) and every later change, and the
/// periodic [`VolumeStates::retry_journal`], tries to write it afresh from memory. What is lost
/// while it cannot be written is only what a crash in that time forgets: the records of
/// volumes mounted meanwhile (their next republish mounts afresh over the same target).
#[derive(Debug)]
pub struct VolumeStates {
    /// Held while a change is appended and applied, so the file and the map agree in order.
    journal: Option<Mutex<Slot>>,
    records: RwLock<HashMap<String, Arc<VolumeRecord>>>,
    /// False while the journal cannot be written.
    writable: AtomicBool,
}

/// The journal of a state directory, when it can be written.
#[derive(Debug)]
struct Slot {
    dir: PathBuf,
    open: Option<Journal>,
}

/// Runs file work that can take a while (a rewrite of every record) without holding up the
/// other tasks of the runtime worker it is called on: on the multi-threaded runtime, the
/// worker's tasks move to another thread while `work` runs. Appends (one small write(2) into
/// the page cache, no fsync) stay inline: a hop to the blocking pool would cost more than they
/// do. Elsewhere (a current-thread runtime in tests, or no runtime) it runs inline.
fn heavy<T>(work: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

impl VolumeStates {
    /// Loads the records kept in `dir` (created if missing) and starts its journal afresh
    /// from them. `None` keeps state in memory only. Unreadable lines are skipped; a journal
    /// that cannot be written (a full disk) leaves the records in memory and is retried. Only
    /// an error reading an existing journal stops the start (serving without the records
    /// and then rewriting the journal would lose them).
    pub fn load(dir: Option<PathBuf>) -> Result<Self, StateError> {
        let Some(dir) = dir else {
            return Ok(Self {
                journal: None,
                records: RwLock::default(),
                writable: AtomicBool::new(true),
            });
        };
        let (records, open) = match std::fs::create_dir_all(&dir) {
            Err(error) => {
                tracing::warn!(dir = %dir.display(), %error, "cannot create the volume state directory; serving with the volume state in memory, retried at every change");
                (HashMap::new(), None)
            }
            Ok(()) => {
                let read = journal::read_journal(&dir).map_err(at("read", &dir))?;
                if read.skipped > 0 {
                    tracing::warn!(dir = %dir.display(), skipped = read.skipped, "unreadable volume state lines skipped; the rewritten journal drops them");
                }
                let open = match heavy(|| Journal::create(&dir, read.records.values())) {
                    Ok(journal) => Some(journal),
                    Err(error) => {
                        tracing::warn!(dir = %dir.display(), %error, "cannot write the volume state journal (disk full?); serving with the volume state in memory, retried at every change");
                        None
                    }
                };
                (read.records, open)
            }
        };
        tracing::info!(volumes = records.len(), dir = %dir.display(), journal_writable = open.is_some(), "volume state loaded");
        Ok(Self {
            writable: AtomicBool::new(open.is_some()),
            journal: Some(Mutex::new(Slot { dir, open })),
            records: RwLock::new(records.into_iter().map(|(k, v)| (k, Arc::new(v))).collect()),
        })
    }

    /// The record of `volume_id`, if it is published.
    pub fn get(&self, volume_id: &str) -> Option<Arc<VolumeRecord>> {
        self.read().get(volume_id).cloned()
    }

    /// Every record (for rotation and sync after a restart).
    pub fn all(&self) -> Vec<Arc<VolumeRecord>> {
        self.read().values().cloned().collect()
    }

    /// Number of published volumes.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// True when no volume is published.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// False while the journal cannot be written (the records are in memory only).
    pub fn journal_writable(&self) -> bool {
        self.writable.load(Ordering::Acquire)
    }

    /// Stores a record: appended to the journal first (when it can be), then kept in memory.
    pub fn put(&self, record: VolumeRecord) {
        let record = Arc::new(record);
        let kept = Arc::clone(&record);
        self.change(
            |journal| journal.put(&record),
            |records| {
                records.insert(kept.volume_id.clone(), kept);
            },
        );
    }

    /// Forgets a volume; one that is not known writes nothing.
    pub fn remove(&self, volume_id: &str) {
        if !self.read().contains_key(volume_id) {
            return;
        }
        self.change(
            |journal| journal.remove(volume_id),
            |records| {
                records.remove(volume_id);
            },
        );
    }

    /// Writes the journal afresh from memory if it could not be written before; true when it
    /// is writable now. Called at every change and periodically by the node.
    pub fn retry_journal(&self) -> bool {
        let Some(slot) = &self.journal else {
            return true;
        };
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        if slot.open.is_none() {
            let records = self.read();
            self.reopen(&mut slot, &records);
        }
        slot.open.is_some()
    }

    /// Appends with `write` and applies `apply` under the journal lock; rewrites the journal
    /// when dead lines pile up. A failed append or rewrite keeps the change in memory and
    /// leaves the journal to be written afresh at the next change (see the type's docs).
    fn change(
        &self,
        write: impl FnOnce(&mut Journal) -> std::io::Result<()>,
        apply: impl FnOnce(&mut HashMap<String, Arc<VolumeRecord>>),
    ) {
        let Some(slot) = &self.journal else {
            apply(&mut self.write());
            return;
        };
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        let written = slot.open.as_mut().map(write);
        let mut records = self.write();
        apply(&mut records);
        match written {
            None => self.reopen(&mut slot, &records),
            Some(Err(error)) => {
                let path = slot.dir.join(journal::JOURNAL_FILE);
                tracing::warn!(path = %path.display(), %error, "cannot append to the volume state journal; the volume state is kept in memory and the journal retried");
                slot.open = None;
                self.writable.store(false, Ordering::Release);
            }
            Some(Ok(())) => {
                let journal = slot.open.as_mut().expect("written, so open");
                if journal.wants_rewrite(records.len())
                    && let Err(error) = heavy(|| journal.rewrite(records.values().map(Arc::as_ref)))
                {
                    // The file is as it was: the change itself is written.
                    tracing::warn!(path = %journal.path().display(), %error, "cannot rewrite the volume state journal");
                }
            }
        }
    }

    /// Tries to write the journal afresh from `records`.
    fn reopen(&self, slot: &mut Slot, records: &HashMap<String, Arc<VolumeRecord>>) {
        let made = heavy(|| {
            std::fs::create_dir_all(&slot.dir)?;
            Journal::create(&slot.dir, records.values().map(Arc::as_ref))
        });
        match made {
            Ok(journal) => {
                tracing::info!(path = %journal.path().display(), volumes = records.len(), "volume state journal written again");
                slot.open = Some(journal);
                self.writable.store(true, Ordering::Release);
            }
            Err(error) => {
                tracing::debug!(dir = %slot.dir.display(), %error, "volume state journal still not writable");
                self.writable.store(false, Ordering::Release);
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<VolumeRecord>>> {
        self.records.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<VolumeRecord>>> {
        self.records.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;

//! What keymount remembers about each published volume: in memory for the republish fast
//! path, and in the state directory's journal (`journal.rs`) so a restarted process can
//! unpublish and keep rotating. Metadata only: never a secret value or token. The journal has
//! one writer, a thread of its own (`state_writer.rs`): its appends and rewrites never run on
//! the async runtime's workers, and a change returns once it is written.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::fs::group::FsGroup;
use crate::provider::ObjectVersion;

#[path = "state_writer.rs"]
mod writer;

/// The record of one published volume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeRecord {
    pub(crate) volume_id: String,
    pub(crate) target_path: PathBuf,
    pub(crate) pod_namespace: String,
    #[serde(default)]
    pub(crate) pod_name: Option<String>,
    #[serde(default)]
    pub(crate) pod_uid: Option<String>,
    pub(crate) class: String,
    pub(crate) provider: String,
    /// The versions the provider reported for the files on the volume.
    pub versions: Vec<ObjectVersion>,
    /// When the provider was last asked.
    pub(crate) fetched_at: Timestamp,
    /// When some object must be fetched again regardless of the interval (leases).
    #[serde(default)]
    pub(crate) refresh_before: Option<Timestamp>,
    /// The class's refresh annotation as of the last fetch (on-demand refresh).
    #[serde(default)]
    pub(crate) refresh_stamp: Option<String>,
    /// The SecretProviderClassPodStatus could not be written at the last fetch: the next
    /// republish fetches and writes it again, even if the content did not change.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub status_stale: bool,
    /// The device number of the volume's tmpfs when it was filled: a republish that finds the
    /// same tmpfs at the target need not read the node's whole mount table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) device: Option<u64>,
    /// The group the volume's files belong to (the pod's fsGroup), so a rotation, also after
    /// a restart, writes them with the same group. Absent in records written before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) fs_group: Option<FsGroup>,
}

impl VolumeRecord {
    /// The device of the tmpfs keymount filled at `target`, when this record is of that
    /// target: what lets a republish or an unpublish skip the mount table.
    pub(crate) fn device_at(&self, target: &std::path::Path) -> Option<u64> {
        self.device.filter(|_| self.target_path == target)
    }
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
    shared: Arc<Shared>,
    /// The journal's one writer; `None` keeps the records in memory only.
    writer: Option<writer::Writer>,
}

/// What every caller reads and only the writer (or, without a journal, the caller) changes.
#[derive(Debug)]
struct Shared {
    records: RwLock<HashMap<String, Arc<VolumeRecord>>>,
    /// False while the journal cannot be written.
    writable: AtomicBool,
}

impl Shared {
    fn new(records: HashMap<String, VolumeRecord>, writable: bool) -> Self {
        Self {
            records: RwLock::new(records.into_iter().map(|(k, v)| (k, Arc::new(v))).collect()),
            writable: AtomicBool::new(writable),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<String, Arc<VolumeRecord>>> {
        self.records.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<String, Arc<VolumeRecord>>> {
        self.records.write().unwrap_or_else(|e| e.into_inner())
    }

    fn set_writable(&self, writable: bool) {
        self.writable.store(writable, Ordering::Release);
    }
}

/// One change of the records: appended to the journal, then applied in memory.
#[derive(Debug, Clone)]
enum Change {
    Put(Arc<VolumeRecord>),
    Remove(String),
}

impl Change {
    /// False for a change that changes nothing (the removal of an unknown volume), which is
    /// not written.
    fn matters(&self, records: &HashMap<String, Arc<VolumeRecord>>) -> bool {
        match self {
            Self::Put(_) => true,
            Self::Remove(volume_id) => records.contains_key(volume_id),
        }
    }

    fn apply(self, records: &mut HashMap<String, Arc<VolumeRecord>>) {
        match self {
            Self::Put(record) => {
                records.insert(record.volume_id.clone(), record);
            }
            Self::Remove(volume_id) => {
                records.remove(&volume_id);
            }
        }
    }
}

impl VolumeStates {
    /// Loads the records kept in `dir` (created if missing) and starts its journal afresh
    /// from them, on the journal's writer thread. `None` keeps state in memory only.
    /// Unreadable lines are skipped; a journal that cannot be written (a full disk) leaves the
    /// records in memory and is retried. Only an error reading an existing journal stops the
    /// start (serving without the records and then rewriting the journal would lose them).
    pub async fn load(dir: Option<PathBuf>) -> Result<Self, StateError> {
        let Some(dir) = dir else {
            return Ok(Self {
                shared: Arc::new(Shared::new(HashMap::new(), true)),
                writer: None,
            });
        };
        let (writer, shared) = writer::Writer::start(dir).await?;
        Ok(Self {
            shared,
            writer: Some(writer),
        })
    }

    /// The record of `volume_id`, if it is published.
    pub(crate) fn get(&self, volume_id: &str) -> Option<Arc<VolumeRecord>> {
        self.shared.read().get(volume_id).cloned()
    }

    /// Every record (for rotation and sync after a restart).
    pub(crate) fn all(&self) -> Vec<Arc<VolumeRecord>> {
        self.shared.read().values().cloned().collect()
    }

    /// Number of published volumes.
    pub(crate) fn len(&self) -> usize {
        self.shared.read().len()
    }

    /// False while the journal cannot be written (the records are in memory only).
    pub(crate) fn journal_writable(&self) -> bool {
        self.shared.writable.load(Ordering::Acquire)
    }

    /// Stores a record: appended to the journal first (when it can be), then kept in memory.
    pub(crate) async fn put(&self, record: VolumeRecord) {
        self.change(Change::Put(Arc::new(record))).await;
    }

    /// Forgets a volume; one that is not known writes nothing.
    pub(crate) async fn remove(&self, volume_id: &str) {
        self.change(Change::Remove(volume_id.to_owned())).await;
    }

    /// Writes the journal afresh from memory if it could not be written before; true when it
    /// is writable now. Called at every change and periodically by the node.
    pub(crate) async fn retry_journal(&self) -> bool {
        match &self.writer {
            None => true,
            Some(writer) => writer.retry().await,
        }
    }

    /// Hands `change` to the writer and waits until it is written and applied.
    async fn change(&self, change: Change) {
        match &self.writer {
            None => change.apply(&mut self.shared.write()),
            Some(writer) => writer.change(change).await,
        }
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;

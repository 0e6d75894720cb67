//! What keymount remembers about each published volume: in memory for the republish fast
//! path, and in the state directory's journal (`journal.rs`) so a restarted process can
//! unpublish and keep rotating. Metadata only: never a secret value or token.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::journal::{self, Journal};
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
    pub fetched_at: DateTime<Utc>,
    /// When some object must be fetched again regardless of the interval (leases).
    #[serde(default)]
    pub refresh_before: Option<DateTime<Utc>>,
    /// The class's refresh annotation as of the last fetch (on-demand refresh).
    #[serde(default)]
    pub refresh_stamp: Option<String>,
    /// The SecretProviderClassPodStatus could not be written at the last fetch: the next
    /// republish fetches and writes it again, even if the content did not change.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub status_stale: bool,
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
#[derive(Debug)]
pub struct VolumeStates {
    /// Held while a change is appended and applied, so the file and the map agree in order.
    journal: Option<Mutex<Journal>>,
    records: RwLock<HashMap<String, Arc<VolumeRecord>>>,
}

impl VolumeStates {
    /// Loads the records kept in `dir` (created if missing) and starts its journal afresh
    /// from them. `None` keeps state in memory only.
    pub fn load(dir: Option<PathBuf>) -> Result<Self, StateError> {
        let Some(dir) = dir else {
            return Ok(Self {
                journal: None,
                records: RwLock::default(),
            });
        };
        std::fs::create_dir_all(&dir).map_err(at("create", &dir))?;
        let records = journal::read_records(&dir).map_err(at("read", &dir))?;
        let journal = Journal::create(&dir, records.values()).map_err(at("rewrite", &dir))?;
        tracing::info!(volumes = records.len(), dir = %dir.display(), "volume state loaded");
        Ok(Self {
            journal: Some(Mutex::new(journal)),
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

    /// Stores a record: appended to the journal first, then kept in memory.
    pub fn put(&self, record: VolumeRecord) -> Result<(), StateError> {
        let record = Arc::new(record);
        let kept = Arc::clone(&record);
        self.change(
            |journal| journal.put(&record),
            |records| {
                records.insert(kept.volume_id.clone(), kept);
            },
        )
    }

    /// Forgets a volume; one that is not known writes nothing.
    pub fn remove(&self, volume_id: &str) -> Result<(), StateError> {
        if !self.read().contains_key(volume_id) {
            return Ok(());
        }
        self.change(
            |journal| journal.remove(volume_id),
            |records| {
                records.remove(volume_id);
            },
        )
    }

    /// Appends with `write` and applies `apply` under the journal lock; rewrites the journal
    /// when dead lines pile up (a failed rewrite only warns: the change itself is written).
    fn change(
        &self,
        write: impl FnOnce(&mut Journal) -> std::io::Result<()>,
        apply: impl FnOnce(&mut HashMap<String, Arc<VolumeRecord>>),
    ) -> Result<(), StateError> {
        let Some(journal) = &self.journal else {
            apply(&mut self.write());
            return Ok(());
        };
        let mut journal = journal.lock().unwrap_or_else(|e| e.into_inner());
        write(&mut journal).map_err(at("write", journal.path()))?;
        let mut records = self.write();
        apply(&mut records);
        if journal.wants_rewrite(records.len())
            && let Err(error) = journal.rewrite(records.values().map(Arc::as_ref))
        {
            tracing::warn!(path = %journal.path().display(), %error, "cannot rewrite the volume state journal");
        }
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<VolumeRecord>>> {
        self.records.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<VolumeRecord>>> {
        self.records.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> VolumeRecord {
        VolumeRecord {
            volume_id: id.into(),
            target_path: "/t".into(),
            pod_namespace: "ns".into(),
            pod_name: Some("p".into()),
            pod_uid: None,
            class: "c".into(),
            provider: "vault".into(),
            versions: vec![ObjectVersion {
                id: "a".into(),
                version: "1".into(),
            }],
            fetched_at: Utc::now(),
            refresh_before: None,
            refresh_stamp: None,
            status_stale: false,
        }
    }

    #[test]
    fn records_survive_a_reload_and_removal_sticks() {
        let dir = tempfile::tempdir().unwrap();
        let states = VolumeStates::load(Some(dir.path().into())).unwrap();
        states.put(record("csi-1/../x")).unwrap();
        states.put(record("csi-2")).unwrap();
        states.remove("csi-2").unwrap();
        states.remove("never-published").unwrap();

        let reloaded = VolumeStates::load(Some(dir.path().into())).unwrap();
        assert_eq!(reloaded.len(), 1);
        assert_eq!(
            reloaded.get("csi-1/../x").unwrap(),
            states.get("csi-1/../x").unwrap()
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            [journal::JOURNAL_FILE],
            "one file, inside the state dir"
        );
    }

    #[test]
    fn the_journal_is_rewritten_once_dead_lines_pile_up() {
        let dir = tempfile::tempdir().unwrap();
        let states = VolumeStates::load(Some(dir.path().into())).unwrap();
        states.put(record("kept")).unwrap();
        for n in 0..1000 {
            states.put(record(&format!("v{n}"))).unwrap();
            states.remove(&format!("v{n}")).unwrap();
        }
        let text = std::fs::read_to_string(dir.path().join(journal::JOURNAL_FILE)).unwrap();
        let lines = text.lines().count();
        assert!(lines <= 2 + 256 + 1, "{lines} lines for one live record");
        let records = journal::read_records(dir.path()).unwrap();
        assert_eq!(records.keys().collect::<Vec<_>>(), ["kept"]);
    }

    #[test]
    fn a_line_cut_short_by_a_crash_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let states = VolumeStates::load(Some(dir.path().into())).unwrap();
        states.put(record("a")).unwrap();
        states.put(record("b")).unwrap();
        drop(states);
        let path = dir.path().join(journal::JOURNAL_FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        // The process died in the middle of appending b's removal.
        std::fs::write(&path, format!("{text}{{\"remove\":\"b")).unwrap();

        let reloaded = VolumeStates::load(Some(dir.path().into())).unwrap();
        assert_eq!(reloaded.len(), 2);
        let rewritten = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            rewritten.lines().count(),
            2,
            "the torn line is gone: {rewritten}"
        );
    }
}

//! What keymount remembers about each published volume: in memory for the republish fast
//! path, and as one JSON file per volume in the state directory so a restarted process can
//! unpublish and keep rotating. Metadata only: never a secret value or token.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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

/// All records, in memory and on disk.
#[derive(Debug)]
pub struct VolumeStates {
    dir: Option<PathBuf>,
    records: RwLock<HashMap<String, Arc<VolumeRecord>>>,
}

impl VolumeStates {
    /// Loads every record found in `dir` (created if missing). `None` keeps state in memory only.
    pub fn load(dir: Option<PathBuf>) -> Result<Self, StateError> {
        let mut records = HashMap::new();
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir).map_err(|source| StateError {
                action: "create",
                path: dir.clone(),
                source,
            })?;
            let entries = std::fs::read_dir(dir).map_err(|source| StateError {
                action: "read",
                path: dir.clone(),
                source,
            })?;
            for path in entries.filter_map(Result::ok).map(|e| e.path()) {
                if path.extension().is_none_or(|e| e != "json") {
                    continue;
                }
                match std::fs::read(&path)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<VolumeRecord>(&b).ok())
                {
                    Some(record) => {
                        records.insert(record.volume_id.clone(), Arc::new(record));
                    }
                    None => {
                        tracing::warn!(path = %path.display(), "ignoring unreadable volume state file")
                    }
                }
            }
            tracing::info!(volumes = records.len(), dir = %dir.display(), "volume state loaded");
        }
        Ok(Self {
            dir,
            records: RwLock::new(records),
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

    /// Stores a record, on disk first (write to a temporary file, then rename).
    pub fn put(&self, record: VolumeRecord) -> Result<(), StateError> {
        if let Some(path) = self.file_of(&record.volume_id) {
            let tmp = path.with_extension("json.tmp");
            let bytes = serde_json::to_vec_pretty(&record).expect("a record always serializes");
            std::fs::write(&tmp, bytes)
                .and_then(|()| std::fs::rename(&tmp, &path))
                .map_err(|source| StateError {
                    action: "write",
                    path: path.clone(),
                    source,
                })?;
        }
        let mut records = self.records.write().unwrap_or_else(|e| e.into_inner());
        records.insert(record.volume_id.clone(), Arc::new(record));
        Ok(())
    }

    /// Forgets a volume.
    pub fn remove(&self, volume_id: &str) -> Result<(), StateError> {
        if let Some(path) = self.file_of(volume_id) {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(StateError {
                        action: "remove",
                        path,
                        source: e,
                    });
                }
                _ => {}
            }
        }
        let mut records = self.records.write().unwrap_or_else(|e| e.into_inner());
        records.remove(volume_id);
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<VolumeRecord>>> {
        self.records.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Volume ids are arbitrary strings; the file name is their hex form.
    fn file_of(&self, volume_id: &str) -> Option<PathBuf> {
        self.dir
            .as_deref()
            .map(|d: &Path| d.join(format!("{}.json", hex::encode(volume_id))))
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
        }
    }

    #[test]
    fn records_survive_a_reload_and_removal_sticks() {
        let dir = tempfile::tempdir().unwrap();
        let states = VolumeStates::load(Some(dir.path().into())).unwrap();
        states.put(record("csi-1/../x")).unwrap();
        states.put(record("csi-2")).unwrap();
        states.remove("csi-2").unwrap();

        let reloaded = VolumeStates::load(Some(dir.path().into())).unwrap();
        assert_eq!(reloaded.len(), 1);
        assert_eq!(*reloaded.get("csi-1/../x").unwrap(), record_like(&states));
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "one file, inside the state dir");
    }

    fn record_like(states: &VolumeStates) -> VolumeRecord {
        (*states.get("csi-1/../x").unwrap()).clone()
    }
}

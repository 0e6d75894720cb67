//! Start-up: the volumes published by the previous process (read from the state directory)
//! are checked against the mount table, so rotation and sync carry on for pods that kept
//! running through a restart, and records of mounts that vanished (a node reboot) are dropped.
//! The layout of each kept volume is repaired first: a crash in the middle of a rotation may
//! have left links of the next set before its swap, or stale links and the old generation
//! after it.

use std::sync::Arc;

use super::VolumeService;
use crate::fs::atomic_writer;
use crate::mount::{Found, KubeletRoot, MountError, Mounter};
use crate::volume::blocking::off_runtime;
use crate::volume::state::VolumeRecord;

/// What start-up found in the state directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Recovered {
    /// Records whose tmpfs is still mounted: served as before the restart.
    pub kept: usize,
    /// Records whose target is no longer a mount point: forgotten (a publish mounts afresh).
    pub dropped: usize,
}

impl VolumeService {
    /// Keeps the records whose target is still mounted and drops the others.
    pub(crate) async fn recover(&self) -> Recovered {
        let (mounter, root) = (Arc::clone(&self.mounter), self.config.kubelet_root.clone());
        let records = self.states.all();
        let verdicts = off_runtime(move || {
            records
                .into_iter()
                .map(|record| (why_dropped(mounter.as_ref(), &root, &record), record))
                .collect::<Vec<_>>()
        })
        .await;
        let mut found = Recovered::default();
        for (why, record) in verdicts {
            let Some(why) = why else {
                found.kept += 1;
                continue;
            };
            self.states.remove(&record.volume_id).await;
            found.dropped += 1;
            tracing::info!(
                volume.id = %record.volume_id,
                target = %record.target_path.display(),
                "{why}; record dropped"
            );
        }
        tracing::info!(
            kept = found.kept,
            dropped = found.dropped,
            "published volumes recovered from the state directory"
        );
        found
    }
}

/// Why `record` is to be dropped, or `None` when it is kept (its layout repaired). The same
/// check a publish makes: the target in kubelet's layout, no symlink, and still keymount's
/// tmpfs (by its recorded device, else by the mount table).
fn why_dropped(mounter: &dyn Mounter, root: &KubeletRoot, record: &VolumeRecord) -> Option<String> {
    let inspected = root
        .parse(&record.target_path.to_string_lossy())
        .map_err(MountError::from)
        .and_then(|target| mounter.inspect(&target, record.device));
    match inspected {
        Ok(Found::Tmpfs { target: open, .. }) => {
            if let Err(error) = atomic_writer::repair(&open.via_fd()) {
                tracing::warn!(volume.id = %record.volume_id, %error, "cannot repair the volume's layout; the next write will");
            }
            None
        }
        Ok(Found::Absent | Found::Directory(_)) => Some("target no longer mounted".to_owned()),
        Err(error @ (MountError::Target(_) | MountError::Foreign { .. })) => {
            Some(format!("target is not keymount's: {error}"))
        }
        Err(error) => {
            tracing::warn!(volume.id = %record.volume_id, %error, "cannot check the target; keeping the record");
            None
        }
    }
}

//! The rest of a publish, once the target is checked and the provider resolved: mount a fresh
//! tmpfs or take over one found there, fetch, write, sync, report and record, and say exactly
//! what happened. A first mount that fails undoes only what this call did (a tmpfs it found
//! stays mounted and untouched); a rotation whose files were written but whose pod status or
//! state record failed is reported as that, and the next fetch writes them again.

use std::path::{Component, Path};
use std::sync::Arc;
use std::time::Instant;

use jiff::Timestamp;

use super::VolumeService;
use crate::class::SecretProviderClass;
use crate::fs::atomic_writer::{self, Outcome};
use crate::fs::group::FsGroup;
use crate::mount::{Found, Target};
use crate::provider::{MountInput, MountOutput, Provider};
use crate::volume::blocking::off_runtime;
use crate::volume::publish::{PublishError, PublishOutcome, fetch_for_class};
use crate::volume::report::{PodVolume, Rotation};
use crate::volume::rotation;
use crate::volume::state::VolumeRecord;

/// One fetch-and-write of a volume, with everything it needs resolved.
pub(super) struct Fill {
    /// The volume and whom it is for (what the cluster is told about).
    pub(super) volume: PodVolume,
    pub(super) class: Arc<SecretProviderClass>,
    pub(super) provider: Arc<dyn Provider>,
    pub(super) input: MountInput,
    /// The group the volume's files belong to (the pod's fsGroup).
    pub(super) group: Option<FsGroup>,
}

/// What a fetch that wrote the files did.
#[derive(Debug)]
struct Filled {
    /// The files were swapped (or the provider wrote them itself).
    changed: bool,
    /// The pod status or state record that could not be written (rotations only; a first
    /// mount fails instead).
    stale: Option<PublishError>,
}

/// A mounted file's bytes, for providers that wrote the files themselves. Only plain
/// relative paths inside the volume are read.
fn read_mounted(target: &Path, name: &str) -> Option<Vec<u8>> {
    let path = Path::new(name);
    let plain = !name.is_empty() && path.components().all(|c| matches!(c, Component::Normal(_)));
    plain
        .then(|| std::fs::read(target.join(path)).ok())
        .flatten()
}

impl VolumeService {
    /// A first publish: mounts a fresh tmpfs, or takes over the tmpfs `found` at the target
    /// (the upstream driver's, or one keymount lost track of) and replaces its content.
    pub(super) async fn first_mount(
        &self,
        fill: &Fill,
        target: &Target,
        found: Found,
    ) -> Result<PublishOutcome, PublishError> {
        let adopted = match found {
            Found::Tmpfs { target, hardened } => Some((target, hardened)),
            Found::Absent | Found::Directory(_) => {
                let (mounter, target) = (Arc::clone(&self.mounter), target.clone());
                let size = self.config.tmpfs_size;
                off_runtime(move || mounter.mount_fresh(&target, size)).await?;
                None
            }
        };
        match self.fill(fill, None).await {
            Ok(_) => {
                let how = match adopted {
                    None => "volume published",
                    Some((open, hardened)) => {
                        let mounter = Arc::clone(&self.mounter);
                        if !hardened
                            && let Err(error) = off_runtime(move || mounter.harden(&open)).await
                        {
                            tracing::warn!(%error, "cannot set nodev,nosuid,noexec on the tmpfs taken over");
                        }
                        "volume published on the tmpfs found at the target (taken over)"
                    }
                };
                let volume = &fill.volume;
                tracing::info!(
                    pod = %format!("{}/{}", volume.namespace, volume.pod_name.as_deref().unwrap_or("?")),
                    class = %volume.class_id(),
                    provider = %volume.provider,
                    "{how}"
                );
                Ok(PublishOutcome::Mounted)
            }
            Err(error) if adopted.is_some() => {
                tracing::warn!(%error, "publish on the tmpfs found at the target failed; it stays mounted as it was");
                Err(error)
            }
            Err(error) => {
                // Nothing this call mounted stays behind.
                let (mounter, target) = (Arc::clone(&self.mounter), target.clone());
                if let Err(cleanup) = off_runtime(move || mounter.undo_fresh(&target)).await {
                    tracing::error!(%cleanup, "cleanup after a failed publish failed");
                }
                Err(error)
            }
        }
    }

    /// A republish that fetches: the old content stays when the fetch or write fails.
    pub(super) async fn rotate(&self, fill: &Fill, record: &VolumeRecord) -> PublishOutcome {
        let started = Instant::now();
        let result = self.fill(fill, Some(record)).await;
        let seconds = started.elapsed().as_secs_f64();
        let class = fill.volume.class_id();
        let rotation = match &result {
            Ok(Filled {
                changed,
                stale: None,
            }) => {
                if *changed {
                    tracing::info!(%class, "rotated: new content swapped in");
                }
                Rotation::Done { changed: *changed }
            }
            Ok(Filled {
                changed,
                stale: Some(error),
            }) => {
                tracing::warn!(
                    %error,
                    changed,
                    %class,
                    "files rotated, but the pod status is stale; the next fetch writes it again"
                );
                Rotation::StatusStale {
                    changed: *changed,
                    error,
                }
            }
            Err(error) => {
                tracing::warn!(%error, versions = record.versions.len(), "rotation failed; old content kept");
                Rotation::Failed(error)
            }
        };
        self.metrics.rotation(
            &fill.volume.provider,
            rotation.changed(),
            rotation.error().map(PublishError::reason),
            seconds,
        );
        self.reporter.rotation(&fill.volume, rotation);
        match rotation {
            Rotation::Done { changed } => PublishOutcome::Rotated { changed },
            Rotation::StatusStale { changed, .. } => PublishOutcome::RotatedStatusStale { changed },
            Rotation::Failed(_) => PublishOutcome::RotationFailed,
        }
    }

    /// Fetch, write, sync, report and record; only what must happen after the tmpfs is
    /// mounted. `previous` is the record of a mounted volume; without one (a first mount)
    /// every step's failure fails the call.
    async fn fill(
        &self,
        fill: &Fill,
        previous: Option<&VolumeRecord>,
    ) -> Result<Filled, PublishError> {
        let first = previous.is_none();
        let volume = &fill.volume;
        let output = fetch_for_class(
            fill.provider.as_ref(),
            &fill.input,
            &volume.provider,
            self.config.provider_timeout,
            &self.config.limits,
            fill.class.metadata.annotations.as_ref(),
        )
        .await?;
        let changed = if output.files.is_empty() {
            // The provider wrote its files itself (upstream's legacy mode).
            true
        } else {
            // On the worker: the writes go to the volume's tmpfs, memory only.
            atomic_writer::write_as(&volume.target, &output.files, fill.group)? == Outcome::Written
        };
        self.sync_secrets(fill, &output, first).await?;
        if changed && !first && !output.files.is_empty() {
            self.reporter
                .content_changed(volume, &fill.class, &output.files);
        }
        // The status is written after a first mount or a change, and again after a fetch
        // whose status or record was not written (the record says so, or still holds the
        // versions from before).
        let status_due = match previous {
            None => true,
            Some(record) => changed || record.status_stale || record.versions != output.versions,
        };
        let status = if status_due {
            self.reporter.pod_status(volume, &output.versions).await
        } else {
            Ok(())
        };
        if first && let Err(error) = status {
            return Err(error);
        }
        // The record is kept in memory whatever the disk does; a journal that cannot be written
        // is reported by the state store itself (gauge, /readyz) and written again later.
        self.states
            .put(VolumeRecord {
                volume_id: volume.volume_id.clone(),
                target_path: volume.target.clone(),
                pod_namespace: volume.namespace.clone(),
                pod_name: volume.pod_name.clone(),
                pod_uid: volume.pod_uid.clone(),
                class: volume.class.clone(),
                provider: volume.provider.clone(),
                versions: output.versions,
                fetched_at: Timestamp::now(),
                refresh_before: output.refresh_before,
                refresh_stamp: rotation::refresh_stamp(&fill.class),
                status_stale: status.is_err(),
                fs_group: fill.group,
                device: std::fs::symlink_metadata(&volume.target)
                    .ok()
                    .map(|m| std::os::unix::fs::MetadataExt::dev(&m)),
            })
            .await;
        Ok(Filled {
            changed,
            stale: status.err(),
        })
    }

    /// Mirrors the class's `secretObjects` (when the sync is on), from the files just
    /// fetched. A failure fails a first mount (so the Secret exists before the pod's
    /// containers start); after a rotation it is reported, and the next fetch tries again.
    async fn sync_secrets(
        &self,
        fill: &Fill,
        output: &MountOutput,
        first: bool,
    ) -> Result<(), PublishError> {
        let Some(objects) = fill
            .class
            .spec
            .secret_objects
            .as_deref()
            .filter(|o| !o.is_empty())
        else {
            return Ok(());
        };
        let (mount_dir, files) = (fill.volume.target.as_path(), &output.files);
        let file = |name: &str| {
            if files.is_empty() {
                read_mounted(mount_dir, name)
            } else {
                files
                    .iter()
                    .find(|f| f.path == name)
                    .map(|f| f.contents.expose().clone())
            }
        };
        match self
            .reporter
            .sync_secrets(&fill.volume, objects, &file, first)
            .await
        {
            Err(error) if !first => {
                tracing::warn!(%error, "Secret sync after rotation failed; retried at the next fetch");
                Ok(())
            }
            result => result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::read_mounted;

    #[test]
    fn reads_only_plain_paths_inside_the_volume() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a"), "x").unwrap();
        assert_eq!(read_mounted(dir.path(), "sub/a"), Some(b"x".to_vec()));
        for bad in ["", "../a", "/etc/hostname", "sub/../sub/a", "./sub/a"] {
            assert_eq!(read_mounted(dir.path(), bad), None, "{bad}");
        }
    }
}

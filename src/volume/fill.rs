//! After the target is checked: mount a fresh tmpfs or take over one found there, fetch,
//! write, sync and record, and say exactly what happened. A first mount that fails undoes
//! only what this call did (a tmpfs it found stays mounted and untouched); a rotation whose
//! files were written but whose pod status or state record failed is reported as that, and
//! the next fetch writes them again.

use std::time::Instant;

use jiff::Timestamp;

use super::VolumeService;
use super::blocking::off_runtime;
use super::publish::{PublishError, PublishOutcome, Work};
use super::service::REFRESH_ANNOTATION;
use super::state::VolumeRecord;
use crate::fs::atomic_writer::{self, Outcome};
use crate::mount::{Found, Target, owned};

/// What a fetch that wrote the files did.
#[derive(Debug)]
pub(super) struct Filled {
    /// The files were swapped (or the provider wrote them itself).
    pub(super) changed: bool,
    /// The pod status or state record that could not be written (rotations only; a first
    /// mount fails instead).
    pub(super) stale: Option<PublishError>,
}

impl VolumeService {
    /// Fetch, write, sync and record; only what must happen after the tmpfs is mounted.
    /// `first` is true for a first mount (every step's failure fails it); `previous` is the
    /// record of a mounted volume.
    async fn fill(
        &self,
        work: &Work<'_>,
        previous: Option<&VolumeRecord>,
    ) -> Result<Filled, PublishError> {
        let first = previous.is_none();
        let output = self.fetch(work).await?;
        let changed = if output.files.is_empty() {
            // The provider wrote its files itself (upstream's legacy mode).
            true
        } else {
            // On the worker: the writes go to the volume's tmpfs, memory only.
            atomic_writer::write_as(work.target, &output.files, work.group)? == Outcome::Written
        };
        self.sync_secrets(work, &output, first).await?;
        // The status is written after a first mount or a change, and again after a fetch
        // whose status or record was not written (the record says so, or still holds the
        // versions from before).
        let status_due = match previous {
            None => true,
            Some(record) => changed || record.status_stale || record.versions != output.versions,
        };
        let status = if status_due {
            self.record_pod_status(work, &output).await
        } else {
            Ok(())
        };
        if first && let Err(error) = status {
            return Err(error);
        }
        let annotations = work.class.metadata.annotations.as_ref();
        // The record is kept in memory whatever the disk does; a journal that cannot be written
        // is reported by the state store itself (gauge, /readyz) and written again later.
        self.states.put(VolumeRecord {
            volume_id: work.req.volume_id.clone(),
            target_path: work.target.to_owned(),
            pod_namespace: work.context.pod_namespace.clone(),
            pod_name: work.context.pod_name.clone(),
            pod_uid: work.context.pod_uid.clone(),
            class: work.context.class.clone(),
            provider: work.provider_name.to_owned(),
            versions: output.versions,
            fetched_at: Timestamp::now(),
            refresh_before: output.refresh_before,
            refresh_stamp: annotations.and_then(|a| a.get(REFRESH_ANNOTATION)).cloned(),
            status_stale: status.is_err(),
            fs_group: work.group,
            device: std::fs::symlink_metadata(work.target)
                .ok()
                .map(|m| std::os::unix::fs::MetadataExt::dev(&m)),
        });
        Ok(Filled {
            changed,
            stale: status.err(),
        })
    }

    /// A first publish: mounts a fresh tmpfs, or takes over the tmpfs `found` at the target
    /// (the upstream driver's, or one keymount lost track of) and replaces its content.
    pub(super) async fn first_mount(
        &self,
        work: &Work<'_>,
        target: &Target,
        found: Found,
    ) -> Result<PublishOutcome, PublishError> {
        let adopted = match found {
            Found::Tmpfs { target, hardened } => Some((target, hardened)),
            Found::Absent | Found::Directory(_) => {
                let (target, size) = (target.clone(), self.config.tmpfs_size);
                off_runtime(move || owned::mount_fresh(&target, size)).await?;
                None
            }
        };
        match self.fill(work, None).await {
            Ok(_) => {
                let how = match adopted {
                    None => "volume published",
                    Some((open, hardened)) => {
                        if !hardened
                            && let Err(error) = off_runtime(move || owned::harden(&open)).await
                        {
                            tracing::warn!(%error, "cannot set nodev,nosuid,noexec on the tmpfs taken over");
                        }
                        "volume published on the tmpfs found at the target (taken over)"
                    }
                };
                tracing::info!(
                    pod = %format!("{}/{}", work.context.pod_namespace, work.context.pod_name.as_deref().unwrap_or("?")),
                    class = %work.class_id,
                    provider = %work.provider_name,
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
                let target = target.clone();
                if let Err(cleanup) = off_runtime(move || owned::undo_fresh(&target)).await {
                    tracing::error!(%cleanup, "cleanup after a failed publish failed");
                }
                Err(error)
            }
        }
    }

    /// A republish that fetches: the old content stays when the fetch or write fails.
    pub(super) async fn rotate(&self, work: &Work<'_>, record: &VolumeRecord) -> PublishOutcome {
        let started = Instant::now();
        let result = self.fill(work, Some(record)).await;
        let seconds = started.elapsed().as_secs_f64();
        match result {
            Ok(Filled {
                changed,
                stale: None,
            }) => {
                self.metrics
                    .rotation(work.provider_name, changed, None, seconds);
                if changed {
                    tracing::info!(class = %work.class_id, "rotated: new content swapped in");
                }
                self.rotation_event(work, Ok(changed));
                PublishOutcome::Rotated { changed }
            }
            Ok(Filled {
                changed,
                stale: Some(error),
            }) => {
                self.metrics
                    .rotation(work.provider_name, changed, Some(error.reason()), seconds);
                tracing::warn!(
                    %error,
                    changed,
                    class = %work.class_id,
                    "files rotated, but the pod status is stale; the next fetch writes it again"
                );
                self.rotation_event(work, Ok(changed));
                self.status_stale_event(work, changed, &error);
                PublishOutcome::RotatedStatusStale { changed }
            }
            Err(error) => {
                self.metrics
                    .rotation(work.provider_name, false, Some(error.reason()), seconds);
                tracing::warn!(%error, versions = record.versions.len(), "rotation failed; old content kept");
                self.rotation_event(work, Err(&error));
                PublishOutcome::RotationFailed
            }
        }
    }
}

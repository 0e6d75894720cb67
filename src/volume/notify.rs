//! What a publish tells the cluster besides the files: Events on the pod for rotations, and
//! (with `--enable-secret-sync`) the class's `secretObjects` as Kubernetes Secrets, built
//! from the files just fetched.

use std::path::{Component, Path};

use super::VolumeService;
use super::events::{
    PodRef, ROTATION_COMPLETE, ROTATION_COMPONENT, ROTATION_FAILED, ROTATION_STATUS_STALE,
    SECRET_ROTATION_COMPLETE, SECRET_SYNC_FAILED, SYNC_COMPONENT, Severity,
};
use super::publish::{PublishError, Work};
use crate::provider::MountOutput;
use crate::sync::{SecretChange, SyncTarget};

/// A mounted file's bytes, for providers that wrote the files themselves. Only plain
/// relative paths inside the volume are read.
fn read_mounted(target: &Path, name: &str) -> Option<Vec<u8>> {
    let path = Path::new(name);
    let plain = !name.is_empty() && path.components().all(|c| matches!(c, Component::Normal(_)));
    plain
        .then(|| std::fs::read(target.join(path)).ok())
        .flatten()
}

fn pod_ref(work: &Work<'_>) -> Option<PodRef> {
    Some(PodRef {
        namespace: work.context.pod_namespace.clone(),
        name: work.context.pod_name.clone()?,
        uid: work.context.pod_uid.clone()?,
    })
}

impl VolumeService {
    /// Records a rotation that swapped content (`Ok(true)`) or failed as an event on the pod.
    pub(super) fn rotation_event(&self, work: &Work<'_>, result: Result<bool, &PublishError>) {
        let (Some(events), Some(pod)) = (self.events.as_ref(), pod_ref(work)) else {
            return;
        };
        match result {
            Ok(false) => {}
            Ok(true) => events.emit(
                &pod,
                ROTATION_COMPONENT,
                Severity::Normal,
                ROTATION_COMPLETE,
                format!(
                    "successfully rotated mounted contents for SecretProviderClass {}",
                    work.class_id
                ),
            ),
            Err(error) => events.emit(
                &pod,
                ROTATION_COMPONENT,
                Severity::Warning,
                ROTATION_FAILED,
                format!("rotation failed, previous contents kept: {error}"),
            ),
        }
    }

    /// Records a rotation whose files were written but whose pod status or state record was
    /// not, as a Warning event on the pod (the MountRotationComplete event, if any, tells
    /// that the files changed).
    pub(super) fn status_stale_event(&self, work: &Work<'_>, changed: bool, error: &PublishError) {
        let (Some(events), Some(pod)) = (self.events.as_ref(), pod_ref(work)) else {
            return;
        };
        let files = if changed {
            "files rotated"
        } else {
            "files unchanged"
        };
        events.emit(
            &pod,
            ROTATION_COMPONENT,
            Severity::Warning,
            ROTATION_STATUS_STALE,
            format!(
                "{files} for SecretProviderClass {}, but the status is stale ({error}); the next fetch writes it again",
                work.class_id
            ),
        );
    }

    /// Mirrors the class's `secretObjects` when the sync is on. A failure fails a first mount
    /// (so the Secret exists before the pod's containers start); after a rotation it is an
    /// event and a metric, and the next fetch tries again.
    pub(super) async fn sync_secrets(
        &self,
        work: &Work<'_>,
        output: &MountOutput,
        first: bool,
    ) -> Result<(), PublishError> {
        let Some(sync) = self.secret_sync.as_ref() else {
            return Ok(());
        };
        let Some(objects) = work
            .class
            .spec
            .secret_objects
            .as_deref()
            .filter(|o| !o.is_empty())
        else {
            return Ok(());
        };
        let (Some(pod_name), Some(pod_uid)) = (
            work.context.pod_name.as_deref(),
            work.context.pod_uid.as_deref(),
        ) else {
            if first {
                return Err(PublishError::MissingField(
                    "csi.storage.k8s.io/pod.name and pod.uid in the volume context (secretObjects need the pod; set podInfoOnMount on the CSIDriver)",
                ));
            }
            return Ok(());
        };
        let target = SyncTarget {
            namespace: &work.context.pod_namespace,
            pod_name,
            pod_uid,
            class: work.class_id,
            provider: work.provider_name,
        };
        let (mount_dir, files) = (work.target, &output.files);
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
        let result = sync.sync(&target, objects, &file).await;
        let pod = pod_ref(work);
        let events = self.events.as_ref().zip(pod.as_ref());
        match result {
            Ok(done) => {
                if let Some((events, pod)) = events.filter(|_| !first) {
                    for secret in done.iter().filter(|s| s.change == SecretChange::Updated) {
                        events.emit(
                            pod,
                            SYNC_COMPONENT,
                            Severity::Normal,
                            SECRET_ROTATION_COMPLETE,
                            format!(
                                "successfully rotated Secret {}/{}",
                                target.namespace, secret.name
                            ),
                        );
                    }
                }
                Ok(())
            }
            Err(source) => {
                if let Some((events, pod)) = events {
                    events.emit(
                        pod,
                        SYNC_COMPONENT,
                        Severity::Warning,
                        SECRET_SYNC_FAILED,
                        source.to_string(),
                    );
                }
                let error = PublishError::SyncSecret {
                    class: work.class_id.to_owned(),
                    source: Box::new(source),
                };
                if first {
                    return Err(error);
                }
                tracing::warn!(%error, "Secret sync after rotation failed; retried at the next fetch");
                Ok(())
            }
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

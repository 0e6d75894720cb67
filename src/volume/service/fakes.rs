//! Test doubles of the orchestration's seams, so a publish runs in a temp dir without root:
//! a mounter that mounts nothing (a target is "mounted" while it is in its set, and an
//! unmount takes the files with it as a tmpfs would), a reporter that keeps what it is told
//! and fails on demand, a provider whose content the test sets, and a class source of one
//! class.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::class::crd::SecretObject;
use crate::class::{ClassSource, LookupError, SecretProviderClass};
use crate::fs::atomic_writer::Payload;
use crate::kube_errors::ApiError;
use crate::mount::target::OpenTarget;
use crate::mount::{Found, MountError, Mounter, Target};
use crate::provider::{MountInput, MountOutput, ObjectVersion, Provider, ProviderError};
use crate::redact::Redacted;
use crate::sync::{FileLookup, SyncError};
use crate::volume::publish::PublishError;
use crate::volume::report::{PodVolume, Reporter, Rotation};

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Mounts nothing; remembers what it did.
#[derive(Debug, Default)]
pub(super) struct FakeMounter {
    /// The "mounted" targets, and whether each is hardened.
    mounted: Mutex<HashMap<PathBuf, bool>>,
    calls: Mutex<Vec<String>>,
}

impl FakeMounter {
    /// What was done, in order: `mount`, `unmount`, `harden`.
    pub(super) fn calls(&self) -> Vec<String> {
        lock(&self.calls).clone()
    }

    pub(super) fn is_mounted(&self, path: &Path) -> bool {
        lock(&self.mounted).contains_key(path)
    }

    /// A tmpfs someone else mounted at `path` (the upstream driver's, say).
    pub(super) fn mounted_by_others(&self, path: &Path) {
        std::fs::create_dir_all(path).unwrap();
        lock(&self.mounted).insert(path.to_owned(), false);
    }

    /// The tmpfs at `path` is gone (a node reboot): the directory stays, empty.
    pub(super) fn lose(&self, path: &Path) {
        lock(&self.mounted).remove(path);
        std::fs::remove_dir_all(path).unwrap();
        std::fs::create_dir(path).unwrap();
    }

    fn call(&self, what: &str) {
        lock(&self.calls).push(what.to_owned());
    }

    fn unmount(&self, target: &Target) -> Result<(), MountError> {
        if lock(&self.mounted).remove(target.path()).is_some() {
            self.call("unmount");
        }
        match std::fs::remove_dir_all(target.path()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(MountError::Io {
                action: "remove",
                path: target.path().to_owned(),
                source: e,
            }),
            _ => Ok(()),
        }
    }
}

impl Mounter for FakeMounter {
    fn inspect(&self, target: &Target, _device: Option<u64>) -> Result<Found, MountError> {
        let Some(open) = target.open()? else {
            return Ok(Found::Absent);
        };
        Ok(match lock(&self.mounted).get(target.path()) {
            Some(&hardened) => Found::Tmpfs {
                target: open,
                hardened,
            },
            None => Found::Directory(open),
        })
    }

    fn mount_fresh(&self, target: &Target, _size: Option<u64>) -> Result<OpenTarget, MountError> {
        let open = target.create()?;
        lock(&self.mounted).insert(target.path().to_owned(), true);
        self.call("mount");
        Ok(open)
    }

    fn undo_fresh(&self, target: &Target) -> Result<(), MountError> {
        self.unmount(target)
    }

    fn harden(&self, _open: &OpenTarget) -> std::io::Result<()> {
        self.call("harden");
        Ok(())
    }

    fn unmount_and_remove(&self, target: &Target, _device: Option<u64>) -> Result<(), MountError> {
        self.unmount(target)
    }
}

/// Keeps what it is told; fails the pod status or the Secret sync when asked to.
#[derive(Debug, Default)]
pub(super) struct FakeReporter {
    pub(super) fail_status: AtomicBool,
    pub(super) fail_sync: AtomicBool,
    told: Mutex<Vec<String>>,
}

impl FakeReporter {
    /// What it was told, in order: `status <versions>`, `sync first|rotation`, `rotation …`.
    pub(super) fn told(&self) -> Vec<String> {
        lock(&self.told).clone()
    }

    fn tell(&self, what: String) {
        lock(&self.told).push(what);
    }
}

#[async_trait]
impl Reporter for FakeReporter {
    async fn pod_status(
        &self,
        volume: &PodVolume,
        versions: &[ObjectVersion],
    ) -> Result<(), PublishError> {
        if self.fail_status.load(Ordering::Relaxed) {
            return Err(PublishError::UpdatePodStatus {
                name: volume.volume_id.clone(),
                source: ApiError(kube::Error::Service("the API server is down".into())),
            });
        }
        let versions: Vec<_> = versions
            .iter()
            .map(|v| format!("{}={}", v.id, v.version))
            .collect();
        self.tell(format!("status {}", versions.join(",")));
        Ok(())
    }

    async fn sync_secrets(
        &self,
        volume: &PodVolume,
        _objects: &[SecretObject],
        file: FileLookup<'_>,
        first: bool,
    ) -> Result<(), PublishError> {
        if self.fail_sync.load(Ordering::Relaxed) {
            return Err(PublishError::SyncSecret {
                class: volume.class_id(),
                source: Box::new(SyncError::NotManaged {
                    secret: "db-creds".into(),
                }),
            });
        }
        let password = file("password").map(String::from_utf8);
        let stage = if first { "first" } else { "rotation" };
        self.tell(format!("sync {stage} {password:?}"));
        Ok(())
    }

    fn rotation(&self, _volume: &PodVolume, rotation: Rotation<'_>) {
        let what = match rotation {
            Rotation::Done { changed } => format!("rotation done changed={changed}"),
            Rotation::StatusStale { changed, .. } => format!("rotation stale changed={changed}"),
            Rotation::Failed(_) => "rotation failed".to_owned(),
        };
        self.tell(what);
    }
}

/// Returns one file, `password`, with the content the test set; hangs while it is `None`
/// (a store that does not answer, so the call runs into its deadline).
#[derive(Debug)]
pub(super) struct FakeProvider {
    password: Mutex<Option<String>>,
    calls: AtomicUsize,
}

impl FakeProvider {
    pub(super) fn new(password: &str) -> Self {
        Self {
            password: Mutex::new(Some(password.to_owned())),
            calls: AtomicUsize::new(0),
        }
    }

    pub(super) fn set(&self, password: Option<&str>) {
        *lock(&self.password) = password.map(str::to_owned);
    }

    /// How often the provider was asked.
    pub(super) fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl Provider for FakeProvider {
    async fn mount(&self, _input: &MountInput) -> Result<MountOutput, ProviderError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let Some(password) = lock(&self.password).clone() else {
            return std::future::pending().await;
        };
        Ok(MountOutput {
            files: vec![Payload {
                path: "password".into(),
                mode: 0o644,
                contents: Redacted::new(password.clone().into_bytes()),
            }],
            versions: vec![ObjectVersion {
                id: "password".into(),
                version: password,
            }],
            refresh_before: None,
        })
    }
}

/// One class, `db`, of provider `fake`, whatever is asked for; the test changes it.
#[derive(Debug)]
pub(super) struct OneClass(Mutex<Arc<SecretProviderClass>>);

impl OneClass {
    pub(super) fn new() -> Self {
        Self(Mutex::new(Arc::new(class(None, false))))
    }

    /// Sets the class's refresh annotation (an on-demand refresh) and its `secretObjects`.
    pub(super) fn set(&self, refresh: Option<&str>, secret_objects: bool) {
        *lock(&self.0) = Arc::new(class(refresh, secret_objects));
    }
}

fn class(refresh: Option<&str>, secret_objects: bool) -> SecretProviderClass {
    let annotations: BTreeMap<_, _> = refresh
        .map(|stamp| (crate::volume::rotation::REFRESH_ANNOTATION, stamp))
        .into_iter()
        .collect();
    let objects = serde_json::json!([{
        "secretName": "db-creds",
        "type": "Opaque",
        "data": [{"objectName": "password", "key": "password"}],
    }]);
    serde_json::from_value(serde_json::json!({
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": {"name": "db", "namespace": "shop", "annotations": annotations},
        "spec": {
            "provider": "fake",
            "parameters": {"objects": "- password"},
            "secretObjects": if secret_objects { objects } else { serde_json::json!([]) },
        },
    }))
    .unwrap()
}

#[async_trait]
impl ClassSource for OneClass {
    async fn get(
        &self,
        _namespace: &str,
        _name: &str,
    ) -> Result<Arc<SecretProviderClass>, LookupError> {
        Ok(Arc::clone(&lock(&self.0)))
    }

    fn is_synced(&self) -> bool {
        true
    }
}

//! The orchestration without root: a real kubelet layout and state journal in a temp dir, the
//! real atomic writer, and fakes for the mounts, the cluster, the class and the provider
//! (`fakes.rs`).

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::VolumeService;
use super::fakes::{FakeMounter, FakeProvider, FakeReporter, OneClass};
use crate::fs::paths::Limits;
use crate::metrics::Metrics;
use crate::mount::KubeletRoot;
use crate::provider::Providers;
use crate::provider::plugin::{PluginClients, PluginSettings};
use crate::redact::Redacted;
use crate::volume::journal;
use crate::volume::state::VolumeStates;
use crate::volume::{
    AccessType, NodeConfig, PublishError, PublishOutcome, PublishRequest, UnpublishRequest,
};

const UID: &str = "0b2e1f4c-0000-4000-8000-000000000001";

/// One node: the service and every fake it works with.
struct Node {
    dir: tempfile::TempDir,
    root: KubeletRoot,
    mounter: Arc<FakeMounter>,
    reporter: Arc<FakeReporter>,
    provider: Arc<FakeProvider>,
    class: Arc<OneClass>,
    service: VolumeService,
}

impl Node {
    async fn new(rotation_interval: Option<Duration>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("kubelet")).unwrap();
        let root = KubeletRoot::new(dir.path().join("kubelet")).unwrap();
        let (mounter, reporter) = (Arc::new(FakeMounter::default()), Arc::default());
        let (provider, class) = (Arc::new(FakeProvider::new("v1")), Arc::new(OneClass::new()));
        let states = VolumeStates::load(Some(dir.path().join("state")))
            .await
            .unwrap();
        let providers = Providers::new(PluginClients::new(PluginSettings::default()))
            .with_builtin("fake", Arc::clone(&provider) as _);
        let config = NodeConfig {
            node_id: "node-1".into(),
            kubelet_root: root.clone(),
            tmpfs_size: Some(1 << 20),
            limits: Limits::default(),
            provider_timeout: Duration::from_millis(100),
            rotation_interval,
            overrides: Default::default(),
            fs_group_from_pod: false,
        };
        let service = VolumeService::new(
            config,
            Arc::clone(&class) as _,
            Arc::new(providers),
            states,
            Arc::new(Metrics::new()),
        )
        .with_reporter(Arc::clone(&reporter) as _)
        .with_mounter(Arc::clone(&mounter) as _);
        Self {
            dir,
            root,
            mounter,
            reporter,
            provider,
            class,
            service,
        }
    }

    fn target(&self, volume: &str) -> PathBuf {
        self.root.target_of(UID, volume)
    }

    fn request(&self, volume: &str) -> PublishRequest {
        let context = [
            ("secretProviderClass", "db"),
            ("csi.storage.k8s.io/pod.name", "web-0"),
            ("csi.storage.k8s.io/pod.namespace", "shop"),
            ("csi.storage.k8s.io/pod.uid", UID),
        ];
        PublishRequest {
            volume_id: format!("csi-{volume}"),
            target_path: self.target(volume).to_string_lossy().into_owned(),
            access: Some(AccessType::Mount),
            readonly: true,
            volume_context: context
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            secrets: Redacted::new(Default::default()),
            mount_group: String::new(),
        }
    }

    async fn publish(&self, volume: &str) -> Result<PublishOutcome, PublishError> {
        self.service.publish(self.request(volume)).await
    }

    /// The volume ids in the state journal on disk.
    fn journal(&self) -> Vec<String> {
        let mut ids: Vec<_> = journal::read_records(&self.dir.path().join("state"))
            .unwrap()
            .into_keys()
            .collect();
        ids.sort();
        ids
    }

    /// The file the pod reads, as it reads it (through the `..data` link).
    fn password(&self, volume: &str) -> String {
        std::fs::read_to_string(self.target(volume).join("password")).unwrap()
    }
}

#[tokio::test]
async fn a_first_publish_mounts_writes_reports_and_records() {
    let node = Node::new(None).await;
    assert_eq!(node.publish("a").await.unwrap(), PublishOutcome::Mounted);

    assert_eq!(node.mounter.calls(), ["mount"]);
    assert!(node.mounter.is_mounted(&node.target("a")));
    assert_eq!(node.password("a"), "v1");
    assert_eq!(node.reporter.told(), ["status password=v1"]);
    let record = node.service.states().get("csi-a").expect("recorded");
    assert_eq!(
        (record.provider.as_str(), record.class.as_str()),
        ("fake", "db")
    );
    assert_eq!(record.target_path, node.target("a"));
    assert!(!record.status_stale);
    assert_eq!(
        node.journal(),
        ["csi-a"],
        "written before the call returned"
    );
    assert!(node.service.locks.is_empty());
}

#[tokio::test]
async fn a_failed_fetch_leaves_nothing_mounted_recorded_or_locked() {
    let node = Node::new(None).await;
    node.provider.set(None);
    let error = node.publish("a").await.unwrap_err();
    assert!(
        matches!(error, PublishError::ProviderTimeout { .. }),
        "{error}"
    );
    assert_eq!(node.mounter.calls(), ["mount", "unmount"]);
    assert!(!node.target("a").exists(), "the target directory is gone");
    assert!(node.service.states().get("csi-a").is_none());
    assert!(node.journal().is_empty());
    assert!(node.reporter.told().is_empty(), "nothing told");
    assert!(
        node.service.locks.is_empty(),
        "the volume's lock is forgotten"
    );

    // kubelet's retry is not refused as busy.
    node.provider.set(Some("v1"));
    assert_eq!(node.publish("a").await.unwrap(), PublishOutcome::Mounted);
    assert!(node.service.locks.is_empty());
}

#[tokio::test]
async fn a_republish_with_unchanged_content_writes_nothing() {
    let node = Node::new(Some(Duration::from_secs(3600))).await;
    node.publish("a").await.unwrap();
    let data = node.target("a").join("..data");
    let (generation, inode) = (
        std::fs::read_link(&data).unwrap(),
        std::fs::metadata(node.target("a").join("password"))
            .unwrap()
            .ino(),
    );

    // Inside the interval: not even the provider is asked.
    assert_eq!(node.publish("a").await.unwrap(), PublishOutcome::Skipped);
    assert_eq!(node.provider.calls(), 1);

    // An on-demand refresh asks it; the content is the same, so nothing is written or told.
    node.class.set(Some("now"), false);
    assert_eq!(
        node.publish("a").await.unwrap(),
        PublishOutcome::Rotated { changed: false }
    );
    assert_eq!(node.provider.calls(), 2);
    assert_eq!(std::fs::read_link(&data).unwrap(), generation);
    let file = std::fs::metadata(node.target("a").join("password")).unwrap();
    assert_eq!(file.ino(), inode, "the file was not rewritten");
    assert_eq!(
        node.reporter.told(),
        ["status password=v1", "rotation done changed=false"],
        "no second pod status"
    );
    assert_eq!(node.mounter.calls(), ["mount"]);
}

#[tokio::test]
async fn new_content_is_swapped_in_and_reported() {
    let node = Node::new(Some(Duration::from_secs(3600))).await;
    node.publish("a").await.unwrap();
    node.provider.set(Some("v2"));
    node.class.set(Some("1"), false);
    assert_eq!(
        node.publish("a").await.unwrap(),
        PublishOutcome::Rotated { changed: true }
    );
    assert_eq!(node.password("a"), "v2");
    assert_eq!(
        node.reporter.told()[1..],
        ["status password=v2", "rotation done changed=true"]
    );
    let record = node.service.states().get("csi-a").unwrap();
    assert_eq!(record.versions[0].version, "v2");
    assert_eq!(record.refresh_stamp.as_deref(), Some("1"));
}

#[tokio::test]
async fn a_pod_status_that_cannot_be_written_fails_a_first_mount_but_not_a_rotation() {
    let node = Node::new(Some(Duration::from_secs(3600))).await;
    node.reporter.fail_status.store(true, Ordering::Relaxed);
    let error = node.publish("a").await.unwrap_err();
    assert!(
        matches!(error, PublishError::UpdatePodStatus { .. }),
        "{error}"
    );
    assert_eq!(node.mounter.calls(), ["mount", "unmount"]);
    assert!(node.service.states().get("csi-a").is_none());

    node.reporter.fail_status.store(false, Ordering::Relaxed);
    assert_eq!(node.publish("a").await.unwrap(), PublishOutcome::Mounted);
    node.reporter.fail_status.store(true, Ordering::Relaxed);
    node.provider.set(Some("v2"));
    node.class.set(Some("1"), false);
    assert_eq!(
        node.publish("a").await.unwrap(),
        PublishOutcome::RotatedStatusStale { changed: true }
    );
    assert_eq!(node.password("a"), "v2", "the files rotated");
    assert!(node.service.states().get("csi-a").unwrap().status_stale);
    assert_eq!(
        node.reporter.told().last().unwrap(),
        "rotation stale changed=true"
    );

    // The next republish fetches because the status is stale, and writes it.
    node.reporter.fail_status.store(false, Ordering::Relaxed);
    assert_eq!(
        node.publish("a").await.unwrap(),
        PublishOutcome::Rotated { changed: false }
    );
    assert_eq!(
        node.reporter.told()[2..],
        ["status password=v2", "rotation done changed=false"]
    );
    assert!(!node.service.states().get("csi-a").unwrap().status_stale);
}

#[tokio::test]
async fn a_failed_secret_sync_fails_a_first_mount_and_only_warns_after_a_rotation() {
    let node = Node::new(Some(Duration::from_secs(3600))).await;
    node.class.set(None, true);
    node.reporter.fail_sync.store(true, Ordering::Relaxed);
    let error = node.publish("a").await.unwrap_err();
    assert!(matches!(error, PublishError::SyncSecret { .. }), "{error}");
    assert!(!node.mounter.is_mounted(&node.target("a")));

    node.reporter.fail_sync.store(false, Ordering::Relaxed);
    assert_eq!(node.publish("a").await.unwrap(), PublishOutcome::Mounted);
    assert_eq!(node.reporter.told()[0], r#"sync first Some(Ok("v1"))"#);
    node.reporter.fail_sync.store(true, Ordering::Relaxed);
    node.provider.set(Some("v2"));
    node.class.set(Some("1"), true);
    assert_eq!(
        node.publish("a").await.unwrap(),
        PublishOutcome::Rotated { changed: true }
    );
    assert_eq!(node.password("a"), "v2");
}

#[tokio::test]
async fn a_tmpfs_found_at_the_target_is_taken_over_and_left_mounted_when_the_publish_fails() {
    let node = Node::new(None).await;
    node.mounter.mounted_by_others(&node.target("a"));
    node.provider.set(None);
    node.publish("a").await.unwrap_err();
    assert!(node.mounter.is_mounted(&node.target("a")), "left as it was");
    assert!(
        node.mounter.calls().is_empty(),
        "{:?}",
        node.mounter.calls()
    );

    node.provider.set(Some("v1"));
    assert_eq!(node.publish("a").await.unwrap(), PublishOutcome::Mounted);
    assert_eq!(node.mounter.calls(), ["harden"], "no second tmpfs");
    assert_eq!(node.password("a"), "v1");
}

#[tokio::test]
async fn unpublish_unmounts_and_forgets() {
    let node = Node::new(None).await;
    node.publish("a").await.unwrap();
    let unpublish = || UnpublishRequest {
        volume_id: "csi-a".into(),
        target_path: node.target("a").to_string_lossy().into_owned(),
    };
    node.service.unpublish(unpublish()).await.unwrap();
    assert_eq!(node.mounter.calls(), ["mount", "unmount"]);
    assert!(!node.target("a").exists());
    assert!(node.service.states().get("csi-a").is_none());
    assert!(node.journal().is_empty());
    node.service.unpublish(unpublish()).await.unwrap();
}

#[tokio::test]
async fn start_up_keeps_the_volumes_still_mounted_and_drops_the_others() {
    let node = Node::new(None).await;
    node.publish("a").await.unwrap();
    node.publish("b").await.unwrap();
    node.mounter.lose(&node.target("b"));
    let recovered = node.service.recover().await;
    assert_eq!((recovered.kept, recovered.dropped), (1, 1));
    assert_eq!(node.journal(), ["csi-a"]);
}

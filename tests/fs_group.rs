//! The pod's fsGroup end to end: the real `keymount node` over its CSI socket, real tmpfs
//! mounts, files read by real processes of another user. kubelet (1.22 with the gate, 1.23 on)
//! sends the group in `volume_capability.mount.volume_mount_group` once NodeGetCapabilities
//! lists VOLUME_MOUNT_GROUP; the files must then be readable by a non-root process in that
//! group, and by no other non-root process, through every rotation and restart.

mod harness;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use harness::mounts::mounts_under;
use harness::node::{
    NodeOptions, NodeProcess, kubelet_target, pod_uid, publish_request, unpublish_request,
    write_class,
};
use harness::plugin::{FakePlugin, Reply};
use keymount::proto::csi::node_service_capability::{Type as CapType, rpc::Type as RpcType};
use keymount::proto::csi::volume_capability::AccessType;
use keymount::proto::csi::{NodeGetCapabilitiesRequest, NodePublishVolumeRequest};
use tonic::Code;

/// The test pod's user and the group it is given, as `runAsUser: 1000, fsGroup: 2000`.
const USER: u32 = 1000;
const GROUP: &str = "2000";

struct Bed {
    tmp: tempfile::TempDir,
    providers: PathBuf,
    options: NodeOptions,
}

impl Bed {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        // The other user must reach the target: the temp dir is 0700 by default.
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = tmp.path().to_owned();
        let classes = root.join("classes");
        let providers = root.join("providers");
        let work = root.join("node");
        let kubelet = root.join("kubelet");
        std::fs::create_dir_all(kubelet.join("pods")).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        write_class(&classes, "shop", "db", "fake", &[("objects", "- a")]);
        let options = NodeOptions {
            class_dir: Some(classes),
            provider_dir: Some(providers.clone()),
            work_dir: Some(work),
            kubelet_root: Some(kubelet),
            args: vec![
                "--provider-timeout=5s".into(),
                "--tmpfs-size=1Mi".into(),
                "--enable-secret-rotation".into(),
                "--rotation-poll-interval=1s".into(),
            ],
            ..Default::default()
        };
        Self {
            tmp,
            providers,
            options,
        }
    }

    fn target(&self, n: usize) -> PathBuf {
        let root = self.options.kubelet_root.as_ref().unwrap();
        let target = kubelet_target(root, &pod_uid(n), "secrets");
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        target
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        for _ in 0..4 {
            for point in mounts_under(self.tmp.path()).iter().rev() {
                let _ = Command::new("umount").arg("-l").arg(point).status();
            }
        }
    }
}

/// A publish as kubelet ≥ 1.23 sends it for a pod with `fsGroup: <group>`.
fn publish_for(volume: &str, target: &Path, group: &str) -> NodePublishVolumeRequest {
    let mut req = publish_request(volume, target, "db", "shop");
    if let Some(AccessType::Mount(mount)) = req
        .volume_capability
        .as_mut()
        .and_then(|c| c.access_type.as_mut())
    {
        mount.volume_mount_group = group.into();
    }
    req
}

/// Files of mode 0600 (one nested), as a provider asked to write a private key answers.
fn private(version: &str) -> Reply {
    Reply::Files(vec![
        ("key".into(), 0o600, format!("key-{version}").into_bytes()),
        (
            "tls/cert".into(),
            0o400,
            format!("cert-{version}").into_bytes(),
        ),
    ])
}

/// `cat path` as uid 1000 with supplementary group `group` (what kubelet gives a pod's
/// processes for its fsGroup), primary group 1000.
fn cat_in_group(path: &Path, group: &str) -> std::process::Output {
    Command::new("setpriv")
        .arg(format!("--reuid={USER}"))
        .arg(format!("--regid={USER}"))
        .arg(format!("--groups={group}"))
        .arg("cat")
        .arg(path)
        .output()
        .expect("run setpriv (util-linux)")
}

/// `cat path` as uid 1000, group 1000, no supplementary group (std drops root's groups).
fn cat_without_group(path: &Path) -> std::process::Output {
    Command::new("cat")
        .arg(path)
        .uid(USER)
        .gid(USER)
        .output()
        .unwrap()
}

/// The pod in the group reads every file; the same user outside the group reads none.
fn assert_only_the_group_reads(target: &Path, version: &str) {
    for (name, expected) in [("key", "key"), ("tls/cert", "cert")] {
        let path = target.join(name);
        let read = cat_in_group(&path, GROUP);
        assert!(
            read.status.success(),
            "uid {USER} in group {GROUP} cannot read {name}: {}",
            String::from_utf8_lossy(&read.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&read.stdout),
            format!("{expected}-{version}")
        );
        let denied = cat_without_group(&path);
        assert!(
            !denied.status.success(),
            "uid {USER} without the group read {name}"
        );
        assert!(
            String::from_utf8_lossy(&denied.stderr).contains("Permission denied"),
            "{}",
            String::from_utf8_lossy(&denied.stderr)
        );
        let other_group = cat_in_group(&path, "3000");
        assert!(!other_group.status.success(), "group 3000 read {name}");
    }
}

/// Group and mode of what `path` names (links followed), and the group of the link itself.
fn owner(path: &Path) -> (u32, u32) {
    let meta = std::fs::metadata(path).unwrap();
    (meta.gid(), meta.permissions().mode() & 0o7777)
}

fn assert_grouped(target: &Path, gid: u32) {
    assert_eq!(owner(target), (gid, 0o755), "the volume's root");
    assert_eq!(owner(&target.join("key")), (gid, 0o640));
    assert_eq!(owner(&target.join("tls/cert")), (gid, 0o440));
    assert_eq!(owner(&target.join("tls")), (gid, 0o755));
    assert_eq!(
        owner(&target.join("..data")),
        (gid, 0o755),
        "the generation"
    );
    for link in ["..data", "key", "tls"] {
        let meta = std::fs::symlink_metadata(target.join(link)).unwrap();
        assert!(meta.file_type().is_symlink(), "{link}");
        assert_eq!(meta.gid(), gid, "link {link}");
    }
}

fn generation(target: &Path) -> PathBuf {
    std::fs::read_link(target.join("..data")).unwrap()
}

#[tokio::test]
async fn node_get_capabilities_advertises_volume_mount_group() {
    let bed = Bed::new();
    let node = NodeProcess::start(bed.options.clone()).await;
    let capabilities = node
        .node_client()
        .await
        .node_get_capabilities(NodeGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner()
        .capabilities;
    let rpcs: Vec<i32> = capabilities
        .iter()
        .filter_map(|c| c.r#type.as_ref().map(|CapType::Rpc(rpc)| rpc.r#type))
        .collect();
    assert_eq!(rpcs, [RpcType::VolumeMountGroup as i32]);
}

#[tokio::test]
async fn a_non_root_pod_in_the_fs_group_reads_its_0600_files_and_no_one_else_does() {
    let bed = Bed::new();
    let plugin = FakePlugin::start(&bed.providers, "fake", private("v1")).await;
    let node = NodeProcess::start(bed.options.clone()).await;
    let mut csi = node.node_client().await;
    let target = bed.target(1);

    csi.node_publish_volume(publish_for("v1", &target, GROUP))
        .await
        .expect("publish with volume_mount_group");
    assert_grouped(&target, 2000);
    assert_only_the_group_reads(&target, "v1");
    // What the provider was asked for is unchanged (upstream's 0644 default); only the
    // files on disk get group read.
    let asked = plugin.last_request().unwrap();
    assert_eq!(asked.permission, "420");

    // An unchanged republish rewrites nothing.
    let before = generation(&target);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    csi.node_publish_volume(publish_for("v1", &target, GROUP))
        .await
        .unwrap();
    assert_eq!(plugin.mount_calls(), 2, "the rotation fetched");
    assert_eq!(
        generation(&target),
        before,
        "unchanged content, nothing rewritten"
    );

    // A rotation writes the new generation with the same group and modes.
    plugin.set_reply(private("v2"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    csi.node_publish_volume(publish_for("v1", &target, GROUP))
        .await
        .unwrap();
    assert_ne!(generation(&target), before);
    assert_grouped(&target, 2000);
    assert_only_the_group_reads(&target, "v2");

    // A kubelet that stops sending the group (a downgrade, or the gate turned off) does not
    // take it away: the recorded group stays.
    plugin.set_reply(private("v3"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    csi.node_publish_volume(publish_request("v1", &target, "db", "shop"))
        .await
        .unwrap();
    assert_grouped(&target, 2000);
    assert_only_the_group_reads(&target, "v3");

    // Another group for the same volume (kubelet never sends one: fsGroup cannot change in
    // a pod) is refused and the files keep theirs.
    plugin.set_reply(private("v4"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let status = csi
        .node_publish_volume(publish_for("v1", &target, "3000"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("published for group 2000")
            && status.message().contains("group 3000 is refused"),
        "{}",
        status.message()
    );
    assert_grouped(&target, 2000);
    assert_only_the_group_reads(&target, "v3");

    csi.node_unpublish_volume(unpublish_request("v1", &target))
        .await
        .unwrap();
    assert!(!target.exists());
}

#[tokio::test]
async fn a_restarted_node_rotates_with_the_recorded_group() {
    let bed = Bed::new();
    let plugin = FakePlugin::start(&bed.providers, "fake", private("v1")).await;
    let mut node = NodeProcess::start(bed.options.clone()).await;
    let target = bed.target(1);
    node.node_client()
        .await
        .node_publish_volume(publish_for("v1", &target, GROUP))
        .await
        .unwrap();
    assert_grouped(&target, 2000);
    node.kill();

    // The next process knows the group from its state journal alone: kubelet 1.20 (the
    // republish below) never sends one.
    let journal = std::fs::read_to_string(
        bed.options
            .work_dir
            .as_ref()
            .unwrap()
            .join("state/volumes.jsonl"),
    )
    .unwrap();
    assert!(journal.contains(r#""fsGroup":2000"#), "{journal}");
    plugin.set_reply(private("v2"));
    let node = NodeProcess::start(bed.options.clone()).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    node.node_client()
        .await
        .node_publish_volume(publish_request("v1", &target, "db", "shop"))
        .await
        .unwrap();
    assert_eq!(plugin.mount_calls(), 2);
    assert_grouped(&target, 2000);
    assert_only_the_group_reads(&target, "v2");
    node.node_client()
        .await
        .node_unpublish_volume(unpublish_request("v1", &target))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_volume_mount_group_that_is_not_a_group_id_is_refused_before_anything_is_made() {
    let bed = Bed::new();
    let plugin = FakePlugin::start(&bed.providers, "fake", private("v1")).await;
    let node = NodeProcess::start(bed.options.clone()).await;
    let mut csi = node.node_client().await;
    let target = bed.target(1);
    for bad in [
        "-1",
        "root",
        " 2000",
        "2000\n",
        "+2000",
        "02000",
        "0x7d0",
        "2147483648",
        "4294967295",
        "18446744073709551616",
        "../../etc",
    ] {
        let status = csi
            .node_publish_volume(publish_for("v1", &target, bad))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}: {status:?}");
        assert!(
            status
                .message()
                .starts_with("volume_capability.mount.volume_mount_group "),
            "{bad:?}: {}",
            status.message()
        );
        assert!(!target.exists(), "{bad:?}: the target was made");
    }
    assert_eq!(plugin.mount_calls(), 0);
    assert!(mounts_under(bed.tmp.path()).is_empty());

    // Group 0 is what Kubernetes allows (fsGroup: 0): accepted, root's group reads.
    csi.node_publish_volume(publish_for("v1", &target, "0"))
        .await
        .unwrap();
    assert_eq!(owner(&target.join("key")), (0, 0o640));
    csi.node_unpublish_volume(unpublish_request("v1", &target))
        .await
        .unwrap();
}

#[tokio::test]
async fn without_a_group_files_keep_the_requested_mode_until_a_republish_brings_one() {
    let bed = Bed::new();
    let _plugin = FakePlugin::start(&bed.providers, "fake", private("v1")).await;
    let node = NodeProcess::start(bed.options.clone()).await;
    let target = bed.target(1);
    node.node_client()
        .await
        .node_publish_volume(publish_request("v1", &target, "db", "shop"))
        .await
        .unwrap();
    assert_eq!(owner(&target.join("key")), (0, 0o600));
    assert!(!cat_in_group(&target.join("key"), GROUP).status.success());

    // kubelet upgraded under the running pod: the next republish sends the group, and the
    // volume gets it at once (rotation gate or not), content fetched and written afresh.
    node.node_client()
        .await
        .node_publish_volume(publish_for("v1", &target, GROUP))
        .await
        .unwrap();
    assert_grouped(&target, 2000);
    assert_only_the_group_reads(&target, "v1");
    node.node_client()
        .await
        .node_unpublish_volume(unpublish_request("v1", &target))
        .await
        .unwrap();
}

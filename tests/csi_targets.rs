//! Only what keymount owns, end to end: the real `keymount node` over its CSI socket, real
//! mounts. Targets outside `<kubelet root>/pods/<uid>/volumes/kubernetes.io~csi/<name>/mount`
//! or through a symlink are refused before anything is made; a tmpfs found at a target is
//! taken over (and left as it was when the publish fails); any other mount is refused and
//! never written into or unmounted; a publish whose caller gave up still finishes or cleans up.

mod harness;

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use harness::mounts::{mount_entry, mounts_under};
use harness::node::{
    NodeOptions, NodeProcess, kubelet_target, pod_uid, publish_request, unpublish_request,
    write_class,
};
use harness::plugin::{FakePlugin, Reply};
use keymount::proto::csi::NodePublishVolumeRequest;
use tonic::Code;

struct Bed {
    tmp: tempfile::TempDir,
    kubelet: PathBuf,
    classes: PathBuf,
    providers: PathBuf,
}

impl Bed {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let kubelet = tmp.path().join("kubelet");
        std::fs::create_dir_all(kubelet.join("pods")).unwrap();
        let bed = Self {
            classes: tmp.path().join("classes"),
            providers: tmp.path().join("providers"),
            kubelet,
            tmp,
        };
        write_class(&bed.classes, "shop", "db", "fake", &[("objects", "- a")]);
        bed
    }

    fn root(&self) -> &Path {
        self.tmp.path()
    }

    async fn node(&self) -> NodeProcess {
        NodeProcess::start(NodeOptions {
            class_dir: Some(self.classes.clone()),
            provider_dir: Some(self.providers.clone()),
            kubelet_root: Some(self.kubelet.clone()),
            args: vec!["--provider-timeout=5s".into(), "--tmpfs-size=1Mi".into()],
            ..Default::default()
        })
        .await
    }
}

impl Drop for Bed {
    /// A test that failed half-way leaves nothing mounted.
    fn drop(&mut self) {
        for _ in 0..4 {
            for point in mounts_under(self.tmp.path()).iter().rev() {
                let _ = Command::new("umount").arg("-l").arg(point).status();
            }
        }
    }
}

async fn publish(node: &NodeProcess, req: NodePublishVolumeRequest) -> Result<(), tonic::Status> {
    node.node_client()
        .await
        .node_publish_volume(req)
        .await
        .map(|_| ())
}

async fn unpublish(node: &NodeProcess, id: &str, target: &str) -> Result<(), tonic::Status> {
    let mut req = unpublish_request(id, Path::new(""));
    req.target_path = target.to_owned();
    node.node_client()
        .await
        .node_unpublish_volume(req)
        .await
        .map(|_| ())
}

/// Every path below `dir` with its kind and (for files) content: a snapshot of a tree.
fn tree(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            let what = if kind.is_symlink() {
                format!("-> {}", std::fs::read_link(&path).unwrap().display())
            } else if kind.is_dir() {
                stack.push(path.clone());
                "dir".into()
            } else if kind.is_file() {
                String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned()
            } else {
                "other".into()
            };
            out.insert(format!("{} {what}", path.display()));
        }
    }
    out
}

/// `tree(root)` without what lies at or below `target`.
fn tree_outside(root: &Path, target: &Path) -> BTreeSet<String> {
    let prefix = format!("{} ", target.display());
    let below = format!("{}/", target.display());
    tree(root)
        .into_iter()
        .filter(|e| !e.starts_with(&prefix) && !e.starts_with(&below))
        .collect()
}

fn run(cmd: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) {
    let status = Command::new(cmd).args(args).status().unwrap();
    assert!(status.success(), "{cmd} failed");
}

fn symlink(to: &Path, at: &Path) {
    std::fs::create_dir_all(at.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(to, at).unwrap();
}

#[tokio::test]
async fn invalid_targets_are_refused_before_anything_is_created_or_mounted() {
    let bed = Bed::new();
    let plugin = FakePlugin::start(&bed.providers, "fake", Reply::files(&[("a", "x")])).await;
    let node = bed.node().await;
    let outside = bed.root().join("outside");
    for dir in ["target", "pod", "volume"] {
        std::fs::create_dir_all(outside.join(dir)).unwrap();
    }
    let kubelet = &bed.kubelet;
    // The target itself a symlink; a symlinked pod directory; a symlinked volume directory.
    let link_target = kubelet_target(kubelet, &pod_uid(1), "secrets");
    symlink(&outside.join("target"), &link_target);
    symlink(&outside.join("pod"), &kubelet.join("pods").join(pod_uid(2)));
    let link_pod = kubelet_target(kubelet, &pod_uid(2), "secrets");
    let link_volume = kubelet_target(kubelet, &pod_uid(3), "secrets");
    symlink(&outside.join("volume"), link_volume.parent().unwrap());
    let valid = |n: usize| kubelet_target(kubelet, &pod_uid(n), "secrets");
    let text = |p: PathBuf| p.display().to_string();
    let csi_dir = |n: usize| text(valid(n).parent().unwrap().parent().unwrap().to_owned());

    let cases: Vec<(&str, String, &str)> = vec![
        (
            "symlinked target",
            text(link_target.clone()),
            "is a symlink",
        ),
        ("symlinked pod directory", text(link_pod), "is a symlink"),
        (
            "symlinked volume directory",
            text(link_volume),
            "is a symlink",
        ),
        (
            "relative",
            format!(
                "kubelet/pods/{}/volumes/kubernetes.io~csi/s/mount",
                pod_uid(4)
            ),
            "must be absolute and clean",
        ),
        (
            "dot-dot escaping the root",
            format!("{}/../../../../outside/target/x/mount", csi_dir(5)),
            "must be absolute and clean",
        ),
        (
            "dot-dot as the volume name",
            format!("{}/../mount", csi_dir(6)),
            "is not a volume name",
        ),
        (
            "dot-dot as the pod uid",
            format!(
                "{}/pods/../volumes/kubernetes.io~csi/s/mount",
                kubelet.display()
            ),
            "is not a pod UID",
        ),
        (
            "outside the kubelet root",
            text(kubelet_target(&outside, &pod_uid(7), "secrets")),
            "must be absolute and clean",
        ),
        (
            "/proc/sys",
            "/proc/sys".into(),
            "must be absolute and clean",
        ),
        (
            "not kubelet's layout",
            format!("{}/pods/{}/volumes/secrets", kubelet.display(), pod_uid(8)),
            "must be absolute and clean",
        ),
        (
            "a pod uid kubelet never makes",
            format!(
                "{}/pods/pod-1/volumes/kubernetes.io~csi/s/mount",
                kubelet.display()
            ),
            "is not a pod UID",
        ),
    ];

    let before = tree(bed.root());
    let proc_sys = mounts_under(Path::new("/proc/sys"));
    for (n, (name, target, message)) in cases.iter().enumerate() {
        let id = format!("bad-{n}");
        let mut req = publish_request(&id, Path::new("/"), "db", "shop");
        req.target_path = target.clone();
        let err = publish(&node, req).await.expect_err(name);
        assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err:?}");
        assert!(
            err.message().contains(message),
            "{name}: {:?} does not say {message:?}",
            err.message()
        );
        let err = unpublish(&node, &id, target).await.expect_err(name);
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "unpublish {name}: {err:?}"
        );
    }
    assert_eq!(plugin.mount_calls(), 0, "no provider was asked");
    assert_eq!(
        mounts_under(bed.root()),
        Vec::<String>::new(),
        "nothing mounted"
    );
    assert_eq!(mounts_under(Path::new("/proc/sys")), proc_sys);
    assert_eq!(tree(bed.root()), before, "nothing created or removed");

    // The same node publishes a valid target (making kubelet's missing directories).
    let good = valid(9);
    publish(&node, publish_request("good", &good, "db", "shop"))
        .await
        .unwrap();
    assert_eq!(std::fs::read_to_string(good.join("a")).unwrap(), "x");
    assert_eq!(mount_entry(&good).unwrap().0, "tmpfs");
    unpublish(&node, "good", &text(good.clone())).await.unwrap();
    assert!(!good.exists());
    assert!(mounts_under(bed.root()).is_empty());
}

#[tokio::test]
async fn a_foreign_tmpfs_is_taken_over_and_left_untouched_when_the_publish_fails() {
    let bed = Bed::new();
    let plugin = FakePlugin::start(
        &bed.providers,
        "fake",
        Reply::Status(tonic::Code::PermissionDenied, "denied".into()),
    )
    .await;
    let node = bed.node().await;
    let target = node.target(&pod_uid(1), "secrets");
    // What the upstream driver leaves: a tmpfs without options, its provider's files in it.
    std::fs::create_dir(&target).unwrap();
    run("mount", &[&"-t", &"tmpfs", &"tmpfs", &target]);
    std::fs::write(target.join("upstream.txt"), "old-content").unwrap();
    let device = std::fs::metadata(&target).unwrap().dev();
    let before = tree(&target);
    let outside = tree_outside(bed.root(), &target);

    let err = publish(&node, publish_request("v", &target, "db", "shop"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(plugin.mount_calls(), 1);
    assert_eq!(
        mounts_under(&target).len(),
        1,
        "still mounted, nothing stacked"
    );
    assert_eq!(std::fs::metadata(&target).unwrap().dev(), device);
    assert_eq!(tree(&target), before, "content untouched");

    plugin.set_reply(Reply::files(&[("a", "new")]));
    publish(&node, publish_request("v", &target, "db", "shop"))
        .await
        .unwrap();
    assert_eq!(std::fs::read_to_string(target.join("a")).unwrap(), "new");
    assert_eq!(
        std::fs::metadata(&target).unwrap().dev(),
        device,
        "the same tmpfs"
    );
    assert_eq!(mounts_under(&target).len(), 1, "taken over, not stacked");
    let (fs_type, options) = mount_entry(&target).unwrap();
    assert_eq!(fs_type, "tmpfs");
    for flag in ["nodev", "nosuid", "noexec"] {
        assert!(
            options.contains(flag),
            "{flag} not set on the taken tmpfs: {options}"
        );
    }
    assert_eq!(
        tree_outside(bed.root(), &target),
        outside,
        "nothing written or removed outside the target"
    );
    // Recorded: the next republish asks nobody.
    publish(&node, publish_request("v", &target, "db", "shop"))
        .await
        .unwrap();
    assert_eq!(plugin.mount_calls(), 2);

    unpublish(&node, "v", &target.display().to_string())
        .await
        .unwrap();
    assert!(mounts_under(bed.root()).is_empty());
    assert!(!target.exists());
}

/// The migration case: a volume the upstream driver mounted, holding its provider's plain
/// files (one with a name the new set uses), is taken over, its plain files replaced by the
/// new set's links, and then rotated like any volume.
#[tokio::test]
async fn an_upstream_volume_with_plain_files_is_taken_over_and_rotated() {
    let bed = Bed::new();
    let plugin = FakePlugin::start(&bed.providers, "fake", Reply::files(&[("a", "new")])).await;
    let node = NodeProcess::start(NodeOptions {
        class_dir: Some(bed.classes.clone()),
        provider_dir: Some(bed.providers.clone()),
        kubelet_root: Some(bed.kubelet.clone()),
        args: vec![
            "--provider-timeout=5s".into(),
            "--tmpfs-size=1Mi".into(),
            "--enable-secret-rotation".into(),
            "--rotation-poll-interval=1s".into(),
        ],
        ..Default::default()
    })
    .await;
    let target = node.target(&pod_uid(1), "secrets");
    std::fs::create_dir(&target).unwrap();
    run("mount", &[&"-t", &"tmpfs", &"tmpfs", &target]);
    std::fs::write(target.join("a"), "old").unwrap();
    std::fs::write(target.join("upstream-only.txt"), "old").unwrap();
    let outside = tree_outside(bed.root(), &target);

    publish(&node, publish_request("v", &target, "db", "shop"))
        .await
        .unwrap();
    let link = std::fs::read_link(target.join("a")).expect("a is now the writer's link");
    assert_eq!(link, Path::new("..data/a"));
    assert_eq!(std::fs::read_to_string(target.join("a")).unwrap(), "new");
    assert!(
        std::fs::symlink_metadata(target.join("upstream-only.txt")).is_err(),
        "the upstream provider's stale file is gone"
    );

    plugin.set_reply(Reply::files(&[("a", "newer")]));
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    publish(&node, publish_request("v", &target, "db", "shop"))
        .await
        .unwrap();
    assert_eq!(plugin.mount_calls(), 2, "rotated");
    assert_eq!(std::fs::read_to_string(target.join("a")).unwrap(), "newer");
    let names: BTreeSet<String> = std::fs::read_dir(&target)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 3, "a, ..data and one generation: {names:?}");
    assert_eq!(
        mounts_under(&target).len(),
        1,
        "the same tmpfs, not stacked"
    );
    assert_eq!(
        tree_outside(bed.root(), &target),
        outside,
        "nothing written or removed outside the target"
    );

    unpublish(&node, "v", &target.display().to_string())
        .await
        .unwrap();
    assert!(mounts_under(bed.root()).is_empty());
}

/// A republish of a recorded volume skips the mount table only while the target is still the
/// very tmpfs keymount filled: the same mounts replaced behind keymount's back (another
/// tmpfs bind-mounted from elsewhere, a ramfs, a read-only tmpfs) are refused as on a first
/// publish, and never written into.
#[tokio::test]
async fn a_recorded_volume_whose_tmpfs_was_replaced_is_refused_at_republish() {
    let bed = Bed::new();
    let plugin = FakePlugin::start(&bed.providers, "fake", Reply::files(&[("a", "x")])).await;
    let node = NodeProcess::start(NodeOptions {
        class_dir: Some(bed.classes.clone()),
        provider_dir: Some(bed.providers.clone()),
        kubelet_root: Some(bed.kubelet.clone()),
        args: vec![
            "--provider-timeout=5s".into(),
            "--tmpfs-size=1Mi".into(),
            "--enable-secret-rotation".into(),
            "--rotation-poll-interval=1s".into(),
        ],
        ..Default::default()
    })
    .await;
    let shm = bed.root().join("shm");
    std::fs::create_dir_all(&shm).unwrap();
    run("mount", &[&"-t", &"tmpfs", &"tmpfs", &shm]);

    type Setup = fn(&Path, &Path, &Path);
    let cases: [(&str, Setup); 3] = [
        ("bind mount of a tmpfs directory", bind_tmpfs_directory),
        ("ramfs", ramfs),
        ("read-only tmpfs", read_only_tmpfs),
    ];
    for (n, (name, setup)) in cases.into_iter().enumerate() {
        let target = node.target(&pod_uid(n), "secrets");
        let id = format!("v{n}");
        publish(&node, publish_request(&id, &target, "db", "shop"))
            .await
            .unwrap();
        let calls = plugin.mount_calls();
        // keymount's tmpfs goes, another mount takes its place.
        run("umount", &[&target]);
        setup(bed.root(), &shm, &target);
        let entry = mount_entry(&target).unwrap();
        let before = tree(&target);
        tokio::time::sleep(Duration::from_millis(1100)).await;

        let err = publish(&node, publish_request(&id, &target, "db", "shop"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{name}: {err:?}");
        assert_eq!(mount_entry(&target), Some(entry), "{name}: still mounted");
        assert_eq!(tree(&target), before, "{name}: nothing written");
        assert_eq!(plugin.mount_calls(), calls, "{name}: no provider asked");
        run("umount", &[&target]);
    }
    run("umount", &[&shm]);
}

#[tokio::test]
async fn a_mount_that_is_not_a_whole_tmpfs_is_refused_and_never_touched() {
    let bed = Bed::new();
    let plugin = FakePlugin::start(&bed.providers, "fake", Reply::files(&[("a", "x")])).await;
    let node = bed.node().await;
    let shm = bed.root().join("shm");
    std::fs::create_dir_all(&shm).unwrap();
    run("mount", &[&"-t", &"tmpfs", &"tmpfs", &shm]);

    // (name, how to mount it at the target: bed root, a tmpfs, target)
    type Setup = fn(&Path, &Path, &Path);
    let cases: [(&str, Setup); 4] = [
        ("bind mount of a directory", bind_directory),
        ("ramfs", ramfs),
        ("bind mount of a tmpfs directory", bind_tmpfs_directory),
        ("read-only tmpfs", read_only_tmpfs),
    ];
    for (n, (name, setup)) in cases.into_iter().enumerate() {
        let target = node.target(&pod_uid(n), "secrets");
        std::fs::create_dir(&target).unwrap();
        setup(bed.root(), &shm, &target);
        let entry = mount_entry(&target).unwrap();
        let fs_type = entry.0.clone();
        let before = tree(&target);
        let outside = tree_outside(bed.root(), &target);
        let id = format!("v{n}");

        let err = publish(&node, publish_request(&id, &target, "db", "shop"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{name}: {err:?}");
        let message = err.message();
        assert!(
            message.contains(&target.display().to_string()) && message.contains(&fs_type),
            "{name}: {message}"
        );
        assert_eq!(
            mount_entry(&target),
            Some(entry.clone()),
            "{name}: still mounted"
        );
        assert_eq!(mounts_under(&target).len(), 1, "{name}: nothing stacked");
        assert_eq!(tree(&target), before, "{name}: nothing written");
        assert_eq!(plugin.mount_calls(), 0, "{name}: no provider asked");

        let err = unpublish(&node, &id, &target.display().to_string())
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Code::FailedPrecondition,
            "unpublish {name}: {err:?}"
        );
        assert_eq!(mount_entry(&target), Some(entry), "{name}: not unmounted");
        assert_eq!(tree(&target), before, "{name}: nothing removed");
        assert_eq!(
            tree_outside(bed.root(), &target),
            outside,
            "{name}: nothing changed outside"
        );
        run("umount", &[&target]);
    }
    run("umount", &[&shm]);
    assert!(mounts_under(bed.root()).is_empty());
}

fn bind_directory(root: &Path, _: &Path, target: &Path) {
    let data = root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("keep"), "theirs").unwrap();
    run("mount", &[&"--bind", &data, &target]);
}

fn ramfs(_: &Path, _: &Path, target: &Path) {
    run("mount", &[&"-t", &"ramfs", &"ramfs", &target]);
    std::fs::write(target.join("keep"), "theirs").unwrap();
}

fn bind_tmpfs_directory(_: &Path, shm: &Path, target: &Path) {
    std::fs::create_dir_all(shm.join("sub")).unwrap();
    std::fs::write(shm.join("sub/keep"), "theirs").unwrap();
    run("mount", &[&"--bind", &shm.join("sub"), &target]);
}

fn read_only_tmpfs(_: &Path, _: &Path, target: &Path) {
    run("mount", &[&"-t", &"tmpfs", &"tmpfs", &target]);
    std::fs::write(target.join("keep"), "theirs").unwrap();
    run("mount", &[&"-o", &"remount,ro", &target]);
}

/// Waits up to 10 s for `check`.
async fn settle(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_publish_abandoned_by_its_caller_ends_complete_and_recorded_or_unmounted() {
    let bed = Bed::new();
    let slow = |reply: Reply| Reply::Delay(Duration::from_millis(1500), Box::new(reply));
    let plugin =
        FakePlugin::start(&bed.providers, "fake", slow(Reply::files(&[("a", "one")]))).await;
    let node = bed.node().await;
    let records = || {
        keymount::volume::journal::read_records(&node.work_dir.join("state"))
            .unwrap()
            .into_keys()
            .collect::<BTreeSet<_>>()
    };

    // 1. The caller drops the call (a client-side timeout); the provider then answers.
    let kept = node.target(&pod_uid(1), "secrets");
    let mut client = node.node_client().await;
    let call = client.node_publish_volume(publish_request("kept", &kept, "db", "shop"));
    let gave_up = tokio::time::timeout(Duration::from_millis(400), call).await;
    assert!(gave_up.is_err(), "the call was still running when dropped");
    // The publish goes on and holds the volume's lock: a retry meanwhile is ABORTED.
    let err = publish(&node, publish_request("kept", &kept, "db", "shop"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "{err:?}");
    settle("the abandoned publish to finish", || {
        kept.join("a").exists()
    })
    .await;
    assert_eq!(std::fs::read_to_string(kept.join("a")).unwrap(), "one");
    assert_eq!(mounts_under(&kept).len(), 1);
    settle("the record", || records().contains("kept")).await;
    // Recorded: kubelet's retry is a republish that asks nobody and mounts nothing more.
    publish(&node, publish_request("kept", &kept, "db", "shop"))
        .await
        .unwrap();
    assert_eq!(plugin.mount_calls(), 1);
    assert_eq!(mounts_under(&kept).len(), 1);

    // 2. kubelet's deadline (grpc-timeout) passes; the provider then fails: nothing stays.
    plugin.set_reply(slow(Reply::Status(
        tonic::Code::PermissionDenied,
        "no".into(),
    )));
    let gone = node.target(&pod_uid(2), "secrets");
    let mut request = tonic::Request::new(publish_request("gone", &gone, "db", "shop"));
    request.set_timeout(Duration::from_millis(400));
    let err = node
        .node_client()
        .await
        .node_publish_volume(request)
        .await
        .unwrap_err();
    assert!(
        matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{err:?}"
    );
    assert_eq!(plugin.mount_calls(), 2);
    settle("the cleanup", || {
        mounts_under(&gone).is_empty() && !gone.exists()
    })
    .await;
    // Stays so: nothing mounted, nothing recorded, the retry may go ahead.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(mounts_under(&gone).is_empty() && !gone.exists());
    assert!(!records().contains("gone"));
    plugin.set_reply(Reply::files(&[("a", "two")]));
    publish(&node, publish_request("gone", &gone, "db", "shop"))
        .await
        .unwrap();
    assert_eq!(std::fs::read_to_string(gone.join("a")).unwrap(), "two");

    for (id, target) in [("kept", &kept), ("gone", &gone)] {
        unpublish(&node, id, &target.display().to_string())
            .await
            .unwrap();
    }
    assert!(mounts_under(bed.root()).is_empty());
}

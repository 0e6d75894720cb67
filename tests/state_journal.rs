//! The volume state against what disks do, with the real `keymount node` binary: a journal
//! with invalid UTF-8 and garbage does not stop the start; a state directory on a full tmpfs
//! still serves, says so, and writes the journal once there is room; and 60,000 failed
//! publishes with distinct volume ids leave the node's memory flat.

mod harness;
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use harness::node::{
    NodeOptions, NodeProcess, kubelet_target, pod_uid, publish_request, unpublish_request,
    write_class,
};
use harness::plugin::{FakePlugin, Reply};
use tonic::Code;

struct Bed {
    tmp: tempfile::TempDir,
    classes: PathBuf,
    providers: PathBuf,
    work: PathBuf,
}

impl Bed {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let bed = Self {
            classes: root.join("classes"),
            providers: root.join("providers"),
            work: root.join("node"),
            tmp,
        };
        std::fs::create_dir_all(bed.work.join("state")).unwrap();
        write_class(&bed.classes, "shop", "db", "fake", &[("objects", "- a")]);
        bed
    }

    fn options(&self) -> NodeOptions {
        NodeOptions {
            class_dir: Some(self.classes.clone()),
            provider_dir: Some(self.providers.clone()),
            kubelet_root: Some(self.tmp.path().to_owned()),
            work_dir: Some(self.work.clone()),
            args: vec!["--tmpfs-size=1Mi".into()],
            ..Default::default()
        }
    }

    fn target(&self, n: usize) -> PathBuf {
        kubelet_target(self.tmp.path(), &pod_uid(n), "s")
    }

    fn journal(&self) -> PathBuf {
        self.work.join("state/volumes.jsonl")
    }
}

/// A tmpfs mounted at `path`, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, bytes: u64) -> Self {
        keymount::mount::mount_tmpfs(path, Some(bytes)).expect("mount tmpfs (tests run as root)");
        Self(path.to_owned())
    }

    /// Fills it to the last byte; returns the filler file.
    fn fill(&self) -> PathBuf {
        use std::io::Write as _;
        let filler = self.0.join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        while file.write_all(&[0; 512]).is_ok() {}
        while file.write_all(&[0]).is_ok() {}
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Detached: a node being started by another test may hold a copy of a descriptor here.
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

async fn publish(node: &NodeProcess, id: &str, target: &Path) -> Result<(), tonic::Status> {
    node.node_client()
        .await
        .node_publish_volume(publish_request(id, target, "db", "shop"))
        .await
        .map(|_| ())
}

async fn unpublish(node: &NodeProcess, id: &str, target: &Path) {
    node.node_client()
        .await
        .node_unpublish_volume(unpublish_request(id, target))
        .await
        .expect("unpublish");
}

#[tokio::test]
async fn a_journal_with_invalid_utf8_and_garbage_still_starts_and_keeps_its_good_records() {
    let bed = Bed::new();
    let _plugin = FakePlugin::start(&bed.providers, "fake", Reply::files(&[("a", "x")])).await;
    let target = bed.target(1);

    // A first process publishes one volume, then crashes.
    let mut node = NodeProcess::start(bed.options()).await;
    publish(&node, "vol-1", &target).await.unwrap();
    let _unmount_on_failure = Tmpfs(target.clone());
    node.kill();
    let good = std::fs::read(bed.journal()).unwrap();

    // The disk mangles the journal around the good line.
    let mut mangled = b"\xff\xfe\xfd not utf-8 at all\n{\"put\":{\"volumeId\":\"torn".to_vec();
    mangled.extend_from_slice(b"\n\x00\x00garbage\x00\n");
    mangled.extend_from_slice(&good);
    mangled.extend_from_slice(b"{\"remove\":\"vol-1\xc3\x28\"}\n{\"put\":");
    std::fs::write(bed.journal(), &mangled).unwrap();

    let node = NodeProcess::start(bed.options()).await;
    let logs = node.logs();
    assert!(
        logs.matches("skipping an unreadable volume state line")
            .count()
            >= 4,
        "{logs}"
    );
    assert!(
        logs.contains("kept=1"),
        "the good record survived the bad lines: {logs}"
    );
    // It serves: the recovered volume unpublishes, a new one publishes.
    let other = bed.target(2);
    publish(&node, "vol-2", &other).await.unwrap();
    unpublish(&node, "vol-1", &target).await;
    unpublish(&node, "vol-2", &other).await;
    let journal = std::fs::read(bed.journal()).unwrap();
    assert!(
        String::from_utf8(journal).is_ok(),
        "the rewrite dropped the bad bytes"
    );
}

#[tokio::test]
async fn a_full_state_disk_at_start_still_serves_and_says_so() {
    let bed = Bed::new();
    let _plugin = FakePlugin::start(&bed.providers, "fake", Reply::files(&[("a", "x")])).await;
    let state = Tmpfs::mount(&bed.work.join("state"), 64 * 1024);
    // A volume published before the restart (still mounted: the start keeps its record), so
    // the start has a journal to rewrite on the full disk.
    let old = bed.target(9);
    std::fs::create_dir_all(&old).unwrap();
    let _unmount_on_failure = Tmpfs::mount(&old, 1 << 20);
    std::fs::write(
        bed.journal(),
        format!(
            "{{\"put\":{{\"volumeId\":\"old\",\"targetPath\":{:?},\"podNamespace\":\"shop\",\"class\":\"db\",\"provider\":\"fake\",\"versions\":[],\"fetchedAt\":\"2026-01-01T00:00:00Z\"}}}}\n",
            old.display().to_string()
        ),
    )
    .unwrap();
    let filler = state.fill();

    let node = NodeProcess::start(bed.options()).await;
    let logs = node.logs();
    assert!(
        logs.contains("cannot write the volume state journal (disk full?); serving with the volume state in memory"),
        "{logs}"
    );
    let (code, body) = node.get("/readyz").await.unwrap();
    assert_eq!(code, 200);
    assert!(body.contains("volume state journal not writable"), "{body}");
    let (_, metrics) = node.get("/metrics").await.unwrap();
    assert!(
        metrics.contains("keymount_state_journal_writable 0"),
        "{metrics}"
    );

    // Publishes work from memory; a republish of the mounted volume is recognised.
    let target = bed.target(1);
    publish(&node, "vol-1", &target).await.unwrap();
    publish(&node, "vol-1", &target).await.unwrap();
    assert_eq!(std::fs::read_to_string(target.join("a")).unwrap(), "x");

    // Room again: the next change writes the journal, with every record.
    std::fs::remove_file(filler).unwrap();
    let second = bed.target(2);
    publish(&node, "vol-2", &second).await.unwrap();
    let journal = std::fs::read_to_string(bed.journal()).unwrap();
    assert!(
        journal.contains("\"vol-1\"") && journal.contains("\"vol-2\""),
        "{journal}"
    );
    let (_, metrics) = node.get("/metrics").await.unwrap();
    assert!(
        metrics.contains("keymount_state_journal_writable 1"),
        "{metrics}"
    );
    assert!(journal.contains("\"old\""), "{journal}");
    unpublish(&node, "vol-1", &target).await;
    unpublish(&node, "vol-2", &second).await;
    unpublish(&node, "old", &old).await;
    assert!(harness::mounts::mounts_under(&bed.tmp.path().join("pods")).is_empty());
    drop(node);
}

/// Publishes `count` volumes with distinct ids whose class does not exist (the lock is taken,
/// then the lookup fails), 16 at a time.
async fn failed_publishes(node: &NodeProcess, from: usize, count: usize, target: &Path) {
    let client = node.node_client().await;
    let per_task = count / 16;
    let mut tasks = Vec::new();
    for t in 0..16 {
        let mut client = client.clone();
        let target = target.to_owned();
        tasks.push(tokio::spawn(async move {
            for n in 0..per_task {
                let id = format!("csi-{:064x}", from + t * per_task + n);
                let req = publish_request(&id, &target, "missing", "shop");
                let err = client.node_publish_volume(req).await.unwrap_err();
                assert_eq!(err.code(), Code::NotFound, "{err:?}");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test]
async fn sixty_thousand_failed_publishes_keep_memory_flat() {
    let bed = Bed::new();
    let mut options = bed.options();
    // The failures are logged at WARN; keep the log file small.
    options.env.push(("RUST_LOG".into(), "error".into()));
    let node = NodeProcess::start(options).await;
    let target = bed.target(1);
    failed_publishes(&node, 0, 8_000, &target).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = support::proc::memory_kib(node.pid(), "VmRSS");
    failed_publishes(&node, 8_000, 60_000, &target).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = support::proc::memory_kib(node.pid(), "VmRSS");
    // A lock kept per failed id costs ≥ 360 bytes: 60,000 of them are over 20 MiB.
    assert!(
        after.saturating_sub(before) < 4 * 1024,
        "RSS grew from {before} KiB to {after} KiB over 60,000 failed publishes"
    );
    assert!(!target.exists());
}

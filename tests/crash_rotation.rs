//! Crash safety of rotation, end to end: the real `keymount node` rotates a volume of a
//! thousand top-level files (a provider plugin whose answer changes on every fetch, added and
//! removed names included) and is killed with SIGKILL at random instants of the rotation,
//! round after round. After each restart, at once and again after one republish, the volume
//! shows exactly one complete set (old or new): every name present, no dangling link, all
//! files of one generation, no leftover generation, one tmpfs in the mount table. A reader
//! thread reads a file kept by every set the whole time: never partial, never going back.
//! And a rotation that finds the tmpfs full fails with the volume and the sizes named, keeps
//! the old files and leaves no partial generation; a self-writing (legacy) provider's plain
//! files are replaced by the set, and a `..data` it planted pointing outside is never followed.

mod harness;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use harness::mounts::{mount_entry, mounts_under};
use harness::node::{
    NodeOptions, NodeProcess, kubelet_target, pod_uid, publish_request, unpublish_request,
};
use harness::plugin::{FakePlugin, Reply};

/// Names kept by every set, and names that alternate between two groups.
const KEPT: usize = 900;
const ALTERNATING: usize = 100;
const ROUNDS: u64 = 100;

fn names_of(generation: u64) -> BTreeSet<String> {
    let group = generation % 2;
    (0..KEPT)
        .map(|i| format!("kept-{i:04}"))
        .chain((0..ALTERNATING).map(|i| format!("g{group}-{i:03}")))
        .collect()
}

fn contents(generation: u64, name: &str) -> String {
    format!("generation {generation:06} of {name}\n")
}

fn reply(generation: u64) -> Reply {
    Reply::Files(
        names_of(generation)
            .into_iter()
            .map(|name| {
                let body = contents(generation, &name).into_bytes();
                (name, 0o644, body)
            })
            .collect(),
    )
}

fn parse_generation(body: &str, name: &str) -> Option<u64> {
    let rest = body.strip_prefix("generation ")?;
    let (number, of) = rest.split_once(" of ")?;
    (of == format!("{name}\n")).then(|| number.parse().ok())?
}

struct Bed {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    classes: PathBuf,
    providers: PathBuf,
    options: NodeOptions,
}

impl Bed {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_owned();
        let classes = root.join("classes");
        let providers = root.join("providers");
        let work = root.join("node");
        std::fs::create_dir_all(root.join("pods")).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        let options = NodeOptions {
            class_dir: Some(classes.clone()),
            provider_dir: Some(providers.clone()),
            work_dir: Some(work),
            kubelet_root: Some(root.clone()),
            args: vec![
                "--provider-timeout=30s".into(),
                // 1000 files of a page each: 4 MiB a set; the tmpfs holds two.
                "--tmpfs-size=5Mi".into(),
                "--enable-secret-rotation".into(),
                "--rotation-poll-interval=1h".into(),
            ],
            env: vec![("RUST_LOG".into(), "info".into())],
            ..Default::default()
        };
        let bed = Self {
            _tmp: tmp,
            root,
            classes,
            providers,
            options,
        };
        bed.write_class(0);
        bed
    }

    /// The target as kubelet lays it out under its root.
    fn target(&self) -> PathBuf {
        kubelet_target(&self.root, &pod_uid(1), "secrets")
    }

    /// The class, with a refresh stamp: a new stamp makes the next republish fetch at once.
    fn write_class(&self, stamp: u64) {
        std::fs::create_dir_all(&self.classes).unwrap();
        let yaml = format!(
            "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata:\n  \
             name: many\n  namespace: shop\n  annotations:\n    keymount.io/refresh-at: \"{stamp}\"\n\
             spec:\n  provider: fake\n  parameters:\n    objects: \"- a\"\n"
        );
        let tmp = self.classes.join(".many.tmp");
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(tmp, self.classes.join("shop-many.yaml")).unwrap();
    }

    async fn publish(&self, node: &NodeProcess) {
        node.node_client()
            .await
            .node_publish_volume(publish_request("crash-1", &self.target(), "many", "shop"))
            .await
            .unwrap_or_else(|e| panic!("publish: {e}\n{}", node.logs()));
    }
}

/// Unmounts the target if the test fails half-way (a passing test unpublishes it); lazily,
/// as the reader thread may still hold a file open.
struct MountGuard(PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(
            &self.0,
            nix::mount::MntFlags::MNT_DETACH | nix::mount::MntFlags::UMOUNT_NOFOLLOW,
        );
    }
}

/// The generation the volume shows, checked to be one complete set: `..data` names the only
/// generation directory, every name of that set is a link `..data/<name>` to a file of that
/// generation, and nothing else is there.
fn complete_generation(target: &Path) -> Result<u64, String> {
    let mut visible = BTreeSet::new();
    let mut hidden = BTreeSet::new();
    for entry in std::fs::read_dir(target).map_err(|e| format!("read_dir: {e}"))? {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.starts_with("..") {
            hidden.insert(name);
        } else {
            visible.insert(name);
        }
    }
    let data = std::fs::read_link(target.join("..data"))
        .map_err(|e| format!("..data: {e}"))?
        .into_os_string()
        .into_string()
        .unwrap();
    let expected_hidden = BTreeSet::from(["..data".to_owned(), data.clone()]);
    if hidden != expected_hidden {
        return Err(format!("leftovers: {hidden:?} (..data -> {data})"));
    }
    let mut generations = BTreeSet::new();
    for name in &visible {
        let link = std::fs::read_link(target.join(name)).map_err(|e| format!("{name}: {e}"))?;
        if link != Path::new("..data").join(name) {
            return Err(format!("{name} -> {}", link.display()));
        }
        let body = std::fs::read_to_string(target.join(name))
            .map_err(|e| format!("{name} dangles: {e}"))?;
        let generation =
            parse_generation(&body, name).ok_or_else(|| format!("{name}: {body:?}"))?;
        generations.insert(generation);
    }
    let [generation] = generations.into_iter().collect::<Vec<_>>()[..] else {
        return Err("files of more than one generation (or none)".into());
    };
    if visible != names_of(generation) {
        let missing = names_of(generation).difference(&visible).count();
        let extra = visible.difference(&names_of(generation)).count();
        return Err(format!(
            "generation {generation}: {missing} names missing, {extra} extra"
        ));
    }
    Ok(generation)
}

fn assert_one_tmpfs(root: &Path, target: &Path) {
    assert_eq!(
        mounts_under(root),
        vec![target.display().to_string()],
        "exactly the volume's tmpfs is mounted"
    );
    let (fstype, _) = mount_entry(target).expect("target in mountinfo");
    assert_eq!(fstype, "tmpfs");
}

/// Reads `kept-0000` until stopped: always a whole file, its generation never going back.
/// A name resolved just as the old generation is removed can be gone for an instant (as with
/// kubelet's own writer); that is counted, not an error.
fn start_reader(
    target: PathBuf,
    stop: Arc<AtomicBool>,
    reads: Arc<AtomicUsize>,
    gone: Arc<AtomicUsize>,
    newest: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let name = "kept-0000";
        while !stop.load(Ordering::Relaxed) {
            let body = match std::fs::read_to_string(target.join(name)) {
                Ok(body) => body,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    gone.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Err(e) => panic!("read {name}: {e}"),
            };
            let generation = parse_generation(&body, name)
                .unwrap_or_else(|| panic!("partial or foreign file {name}: {body:?}"));
            let before = newest.fetch_max(generation, Ordering::Relaxed);
            assert!(
                generation >= before,
                "went back from generation {before} to {generation}"
            );
            reads.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_micros(100));
        }
    })
}

/// When a write was seen: its new generation directory appearing, and `..data` swapped to it.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    began: Option<Duration>,
    swapped: Option<Duration>,
}

/// Watches the volume from now on for a generation directory other than the current one and
/// for the swap of `..data`, for at most 5 s; `until_swap` false stops at the first.
fn watch_write(target: PathBuf, until_swap: bool) -> tokio::task::JoinHandle<Seen> {
    let start = Instant::now();
    let current = std::fs::read_link(target.join("..data")).ok();
    tokio::task::spawn_blocking(move || {
        let mut seen = Seen::default();
        while start.elapsed() < Duration::from_secs(5) {
            let data = std::fs::read_link(target.join("..data")).ok();
            if data.is_some() && data != current {
                seen.swapped = Some(start.elapsed());
                seen.began.get_or_insert(start.elapsed());
                return seen;
            }
            if seen.began.is_none() {
                let found = std::fs::read_dir(&target).into_iter().flatten().any(|e| {
                    let name = e.map(|e| e.file_name()).unwrap_or_default();
                    let name = name.to_string_lossy();
                    name.starts_with("..20") && current.as_deref() != Some(Path::new(name.as_ref()))
                });
                if found {
                    seen.began = Some(start.elapsed());
                    if !until_swap {
                        return seen;
                    }
                }
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        seen
    })
}

/// Where a kill landed, as the restart saw it.
#[derive(Debug, Default)]
struct KillPoints {
    /// Old set intact, nothing to repair: killed before the write began.
    before_write: usize,
    /// Old set, with a partial generation or early links swept: killed mid-write, before the swap.
    mid_write: usize,
    /// New set, with stale links or the old generation swept: killed after the swap.
    after_swap: usize,
    /// New set, nothing to repair: killed after the write finished.
    after_write: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_of_rotations_leaves_old_or_new_complete() {
    let started = Instant::now();
    let bed = Bed::new();
    let target = bed.target();
    let _guard = MountGuard(target.clone());
    let plugin = FakePlugin::start(&bed.providers, "fake", reply(0)).await;
    let mut node = NodeProcess::start(bed.options.clone()).await;
    bed.publish(&node).await;
    assert_eq!(complete_generation(&target), Ok(0));
    assert_one_tmpfs(&bed.root, &target);

    let stop = Arc::new(AtomicBool::new(false));
    let (reads, gone) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let newest = Arc::new(AtomicU64::new(0));
    let reader = start_reader(
        target.clone(),
        stop.clone(),
        reads.clone(),
        gone.clone(),
        newest.clone(),
    );

    // Uninterrupted rotations first: how long one takes, and how long its write takes (from
    // the new generation directory appearing to the swap), to aim the kills.
    let mut generation = 0;
    let (mut longest, mut longest_write) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..3 {
        generation += 1;
        plugin.set_reply(reply(generation));
        bed.write_class(generation);
        let t = Instant::now();
        let watch = watch_write(target.clone(), true);
        bed.publish(&node).await;
        longest = longest.max(t.elapsed());
        if let Seen {
            began: Some(began),
            swapped: Some(swapped),
        } = watch.await.unwrap()
        {
            longest_write = longest_write.max(swapped.saturating_sub(began));
        }
        assert_eq!(complete_generation(&target), Ok(generation));
    }
    let window = longest.mul_f64(1.3).max(Duration::from_millis(20));
    let write_window = longest_write.mul_f64(1.5).max(Duration::from_millis(5));

    let mut points = KillPoints::default();
    for _ in 0..ROUNDS {
        let old = generation;
        generation += 1;
        plugin.set_reply(reply(generation));
        bed.write_class(generation);
        // Every other round the kill is aimed at the write itself: it waits for the new
        // generation directory to appear, then kills within the write's usual duration.
        let aimed = (generation % 2 == 1).then(|| watch_write(target.clone(), false));
        let mut client = node.node_client().await;
        let request = publish_request("crash-1", &target, "many", "shop");
        let call = tokio::spawn(async move { client.node_publish_volume(request).await });
        let delay = if let Some(watch) = aimed {
            let began = watch.await.unwrap().began;
            let delay = write_window.mul_f64(rand::random::<f64>());
            tokio::time::sleep(delay).await;
            began.unwrap_or_default() + delay
        } else {
            let delay = window.mul_f64(rand::random::<f64>());
            tokio::time::sleep(delay).await;
            delay
        };
        node.kill();
        let _ = call.await;

        let log_before = node.logs().len();
        node = NodeProcess::start(bed.options.clone()).await;
        let restart_log = node.logs()[log_before..].to_owned();
        let repaired = restart_log.contains("volume layout repaired");

        // At once: one complete set, the old or the new.
        let seen = complete_generation(&target).unwrap_or_else(|e| {
            panic!("after a kill {delay:?} into rotation {generation}: {e}\n{restart_log}")
        });
        assert!(
            seen == old || seen == generation,
            "{seen} is neither {old} nor {generation}"
        );
        assert_one_tmpfs(&bed.root, &target);
        match (seen == generation, repaired) {
            (false, false) => points.before_write += 1,
            (false, true) => points.mid_write += 1,
            (true, true) => points.after_swap += 1,
            (true, false) => points.after_write += 1,
        }

        // After one republish: the new set, complete, nothing left over.
        bed.publish(&node).await;
        assert_eq!(
            complete_generation(&target),
            Ok(generation),
            "after the republish of rotation {generation}"
        );
        assert_one_tmpfs(&bed.root, &target);
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().expect("reader saw an inconsistent file");

    node.node_client()
        .await
        .node_unpublish_volume(unpublish_request("crash-1", &target))
        .await
        .unwrap();
    assert!(mounts_under(&bed.root).is_empty(), "nothing left mounted");
    eprintln!(
        "{ROUNDS} rounds in {:?} (kill window {window:?}, aimed at the write {write_window:?}): \
         {points:?}; reader: {} reads, {} momentarily gone, last generation {}",
        started.elapsed(),
        reads.load(Ordering::Relaxed),
        gone.load(Ordering::Relaxed),
        newest.load(Ordering::Relaxed)
    );
    assert!(
        points.mid_write + points.after_swap > 0,
        "no kill landed inside a write: {points:?}"
    );
}

/// `n` files of one page each, all with `fill`.
fn pages(n: usize, fill: u8) -> Reply {
    Reply::Files(
        (0..n)
            .map(|i| (format!("p{i:02}"), 0o644, vec![fill; 4096]))
            .collect(),
    )
}

#[tokio::test]
async fn a_rotation_on_a_full_tmpfs_fails_clearly_and_keeps_the_old_files() {
    let mut bed = Bed::new();
    // Sets of up to 64 KiB; the tmpfs is mounted at 128 KiB, room for two of them.
    bed.options.args[1] = "--tmpfs-size=64Ki".into();
    let target = bed.target();
    let _guard = MountGuard(target.clone());
    let plugin = FakePlugin::start(&bed.providers, "fake", pages(15, b'a')).await;
    let node = NodeProcess::start(bed.options.clone()).await;
    bed.publish(&node).await;
    let (_, options) = mount_entry(&target).unwrap();
    assert!(options.contains("size=128k"), "{options}");

    // A 60 KiB set rotates (two generations fit) ...
    plugin.set_reply(pages(15, b'b'));
    bed.write_class(1);
    bed.publish(&node).await;
    assert_eq!(std::fs::read(target.join("p00")).unwrap(), vec![b'b'; 4096]);

    // ... until something else fills the volume (a self-writing provider's plain file).
    std::fs::write(target.join("legacy.bin"), vec![0u8; 40 * 1024]).unwrap();
    plugin.set_reply(pages(15, b'c'));
    bed.write_class(2);
    bed.publish(&node).await;
    assert_eq!(
        std::fs::read(target.join("p00")).unwrap(),
        vec![b'b'; 4096],
        "old files kept"
    );
    let generations = std::fs::read_dir(&target)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with("..20")
        })
        .count();
    assert_eq!(generations, 1, "no partial generation left");
    let logs = node.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("rotation failed"))
        .unwrap_or_else(|| panic!("no failed rotation logged:\n{logs}"));
    assert!(line.contains(&target.display().to_string()), "{line}");
    assert!(line.contains("they need 61440 bytes"), "{line}");
    assert!(line.contains("of 131072 bytes"), "{line}");
    let (_, metrics) = node.get("/metrics").await.unwrap();
    assert!(
        metrics.contains(
            "rotation_reconcile_error_total{provider=\"fake\",error_type=\"FileWriteError\""
        ),
        "{metrics}"
    );

    // Once the volume has room again, the next fetch rotates (and the plain file goes).
    std::fs::remove_file(target.join("legacy.bin")).unwrap();
    bed.write_class(3);
    bed.publish(&node).await;
    assert_eq!(std::fs::read(target.join("p00")).unwrap(), vec![b'c'; 4096]);

    node.node_client()
        .await
        .node_unpublish_volume(unpublish_request("crash-1", &target))
        .await
        .unwrap();
    assert!(mounts_under(&bed.root).is_empty(), "nothing left mounted");
}

/// A directory outside the volume with one sentinel file, checked intact.
fn sentinel_dir(dir: &Path) -> impl Fn() + '_ {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("sentinel"), "keep me").unwrap();
    move || {
        let names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["sentinel"], "{}", dir.display());
        assert_eq!(
            std::fs::read_to_string(dir.join("sentinel")).unwrap(),
            "keep me"
        );
    }
}

#[tokio::test]
async fn a_self_writing_provider_s_files_are_replaced_and_its_data_link_never_followed() {
    let bed = Bed::new();
    let target = bed.target();
    let _guard = MountGuard(target.clone());
    // `../../x` from the target, and an absolute path: both outside the volume.
    let relative_outside = target.parent().unwrap().parent().unwrap().join("x");
    let absolute_outside = bed.root.join("outside");
    let relative_intact = sentinel_dir(&relative_outside);
    let absolute_intact = sentinel_dir(&absolute_outside);

    // Legacy mode: the provider answers no files and writes into the target itself.
    let legacy = Reply::FilesVersions(Vec::new(), vec![("a".into(), "v1".into())]);
    let plugin = FakePlugin::start(&bed.providers, "fake", legacy).await;
    let node = NodeProcess::start(bed.options.clone()).await;
    bed.publish(&node).await;
    std::fs::write(target.join("a"), "plain old a").unwrap();
    std::fs::create_dir_all(target.join("conf")).unwrap();
    std::fs::write(target.join("conf/x"), "plain old x").unwrap();
    std::os::unix::fs::symlink("../../x", target.join("..data")).unwrap();

    // The provider now returns its files: they replace the plain ones, ..data is replaced
    // without being followed, and nothing outside the volume is touched.
    let files = |tag: &str| {
        Reply::Files(vec![
            ("a".into(), 0o644, format!("a {tag}").into_bytes()),
            ("b".into(), 0o644, format!("b {tag}").into_bytes()),
        ])
    };
    plugin.set_reply(files("one"));
    bed.write_class(1);
    bed.publish(&node).await;
    let read = |name: &str| std::fs::read_to_string(target.join(name)).unwrap();
    assert_eq!((read("a"), read("b")), ("a one".into(), "b one".into()));
    assert!(
        !target.join("conf").exists(),
        "the provider's plain directory went"
    );
    relative_intact();
    absolute_intact();

    // Planted again, absolute this time, before a rotation.
    std::fs::remove_file(target.join("..data")).unwrap();
    std::os::unix::fs::symlink(&absolute_outside, target.join("..data")).unwrap();
    plugin.set_reply(files("two"));
    bed.write_class(2);
    bed.publish(&node).await;
    assert_eq!((read("a"), read("b")), ("a two".into(), "b two".into()));
    let data = std::fs::read_link(target.join("..data")).unwrap();
    assert!(
        data.to_string_lossy().starts_with("..20"),
        "{}",
        data.display()
    );
    let names: BTreeSet<_> = std::fs::read_dir(&target)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 4, "a, b, ..data, one generation: {names:?}");
    relative_intact();
    absolute_intact();

    node.node_client()
        .await
        .node_unpublish_volume(unpublish_request("crash-1", &target))
        .await
        .unwrap();
    assert!(mounts_under(&bed.root).is_empty(), "nothing left mounted");
    relative_intact();
    absolute_intact();
}

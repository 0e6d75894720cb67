//! Graceful restarts of the real `keymount node` binary, as a DaemonSet rollout does them:
//! SIGTERM finishes the call in flight (bounded by `--shutdown-grace-period`) and refuses new
//! ones; the next process rediscovers the published volumes from its state directory, keeps
//! rotating them, unpublishes them, and leaves no mount behind.

mod harness;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use harness::mounts::mounts_under;
use harness::node::{
    NodeOptions, NodeProcess, kubelet_target, pod_uid, publish_request, unpublish_request,
    write_class,
};
use harness::plugin::{FakePlugin, Reply};

struct Bed {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    providers: PathBuf,
    work: PathBuf,
    options: NodeOptions,
}

impl Bed {
    /// A class `shop/db` served by plugin `fake`, rotation every second, one work dir for
    /// every process of the test (socket, state, log), as the hostPath is in the chart.
    fn new(extra: &[&str]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_owned();
        let classes = root.join("classes");
        let providers = root.join("providers");
        let work = root.join("node");
        std::fs::create_dir_all(root.join("pods")).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        write_class(&classes, "shop", "db", "fake", &[("objects", "- a")]);
        let mut args = vec![
            "--provider-timeout=30s".to_string(),
            "--tmpfs-size=1Mi".to_string(),
            "--enable-secret-rotation".to_string(),
            "--rotation-poll-interval=1s".to_string(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let options = NodeOptions {
            class_dir: Some(classes),
            provider_dir: Some(providers.clone()),
            work_dir: Some(work.clone()),
            kubelet_root: Some(root.clone()),
            args,
            ..Default::default()
        };
        Self {
            _tmp: tmp,
            root,
            providers,
            work,
            options,
        }
    }

    fn target(&self, n: usize) -> PathBuf {
        kubelet_target(&self.root, &pod_uid(n), "secrets")
    }

    /// Volumes recorded in the state directory's journal.
    fn state_records(&self) -> usize {
        keymount::volume::journal::read_records(&self.work.join("state"))
            .unwrap()
            .len()
    }
}

async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn sigterm_finishes_the_call_in_flight_and_the_next_process_carries_on() {
    let bed = Bed::new(&[]);
    let slow = Reply::Delay(
        Duration::from_millis(1500),
        Box::new(Reply::files(&[("a", "one")])),
    );
    let plugin = FakePlugin::start(&bed.providers, "fake", slow).await;
    let mut node = NodeProcess::start(bed.options.clone()).await;
    let target = bed.target(1);

    let mut client = node.node_client().await;
    let request = publish_request("v1", &target, "db", "shop");
    let in_flight = tokio::spawn(async move { client.node_publish_volume(request).await });
    wait_for("the provider call", || plugin.mount_calls() == 1).await;

    node.send_sigterm();
    // Draining: not ready any more, and the socket is gone so new calls fail at once.
    wait_for("the socket to go", || !node.socket.exists()).await;
    let (code, body) = node
        .get("/readyz")
        .await
        .expect("HTTP still served while draining");
    assert_eq!(code, 503, "{body}");
    assert!(tokio::net::UnixStream::connect(&node.socket).await.is_err());

    let answer = in_flight.await.unwrap();
    assert!(answer.is_ok(), "the call in flight was cut: {answer:?}");
    let status = node
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("node exited");
    assert!(status.success(), "{status}\n{}", node.logs());
    assert_eq!(std::fs::read_to_string(target.join("a")).unwrap(), "one");
    assert_eq!(mounts_under(&bed.root).len(), 1, "the pod keeps its volume");

    // The upgraded process: finds the volume, rotates it, unpublishes it.
    plugin.set_reply(Reply::files(&[("a", "two")]));
    let node = NodeProcess::start(bed.options.clone()).await;
    assert!(node.logs().contains("kept=1"), "{}", node.logs());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut client = node.node_client().await;
    client
        .node_publish_volume(publish_request("v1", &target, "db", "shop"))
        .await
        .expect("republish after the restart");
    assert_eq!(
        plugin.mount_calls(),
        2,
        "rotation went on after the restart"
    );
    assert_eq!(std::fs::read_to_string(target.join("a")).unwrap(), "two");
    assert_eq!(
        mounts_under(&bed.root).len(),
        1,
        "rotated in place, not mounted twice"
    );

    client
        .node_unpublish_volume(unpublish_request("v1", &target))
        .await
        .expect("unpublish after the restart");
    assert!(mounts_under(&bed.root).is_empty(), "mount leaked");
    assert!(!target.exists());
    assert_eq!(bed.state_records(), 0);
}

#[tokio::test]
async fn a_call_stuck_past_the_grace_period_does_not_hold_the_exit_nor_leak_a_mount() {
    let bed = Bed::new(&["--shutdown-grace-period=1s"]);
    let plugin = FakePlugin::start(&bed.providers, "fake", Reply::Hang).await;
    let mut node = NodeProcess::start(bed.options.clone()).await;
    let target = bed.target(1);
    let mut client = node.node_client().await;
    let request = publish_request("v1", &target, "db", "shop");
    let stuck = tokio::spawn(async move { client.node_publish_volume(request).await });
    wait_for("the provider call", || plugin.mount_calls() == 1).await;

    let started = Instant::now();
    node.send_sigterm();
    let status = node
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("node exited");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "exited before the grace period: {took:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "grace period not enforced: {took:?}"
    );
    assert!(status.success(), "{status}");
    assert!(
        node.logs()
            .contains("calls still in flight after the shutdown grace period")
    );
    assert!(
        stuck.await.unwrap().is_err(),
        "kubelet sees the call fail and retries it"
    );

    // kubelet retries against the next process, then the pod goes away.
    plugin.set_reply(Reply::files(&[("a", "one")]));
    let node = NodeProcess::start(bed.options.clone()).await;
    let mut client = node.node_client().await;
    client
        .node_publish_volume(publish_request("v1", &target, "db", "shop"))
        .await
        .expect("retried publish");
    assert_eq!(std::fs::read_to_string(target.join("a")).unwrap(), "one");
    client
        .node_unpublish_volume(unpublish_request("v1", &target))
        .await
        .unwrap();
    assert!(mounts_under(&bed.root).is_empty(), "mount leaked");
    assert_eq!(bed.state_records(), 0);
}

#[tokio::test]
async fn records_of_mounts_gone_while_stopped_are_dropped_at_start() {
    let bed = Bed::new(&[]);
    let plugin = FakePlugin::start(&bed.providers, "fake", Reply::files(&[("a", "one")])).await;
    let mut node = NodeProcess::start(bed.options.clone()).await;
    let (kept, gone) = (bed.target(1), bed.target(2));
    let mut client = node.node_client().await;
    for (id, target) in [("v1", &kept), ("v2", &gone)] {
        client
            .node_publish_volume(publish_request(id, target, "db", "shop"))
            .await
            .unwrap();
    }
    node.kill();
    // As after a node reboot: the tmpfs of one volume is gone.
    let status = std::process::Command::new("umount")
        .arg(&gone)
        .status()
        .unwrap();
    assert!(status.success());

    let node = NodeProcess::start(bed.options.clone()).await;
    let logs = node.logs();
    assert!(
        logs.contains("kept=1") && logs.contains("dropped=1"),
        "{logs}"
    );
    assert_eq!(bed.state_records(), 1);
    // The dropped volume's republish mounts afresh instead of trusting a stale record.
    let mut client = node.node_client().await;
    client
        .node_publish_volume(publish_request("v2", &gone, "db", "shop"))
        .await
        .unwrap();
    assert_eq!(plugin.mount_calls(), 3);
    assert_eq!(std::fs::read_to_string(gone.join("a")).unwrap(), "one");
    for (id, target) in [("v1", &kept), ("v2", &gone)] {
        client
            .node_unpublish_volume(unpublish_request(id, target))
            .await
            .unwrap();
    }
    assert!(mounts_under(&bed.root).is_empty(), "mount leaked");
    assert_eq!(bed.state_records(), 0);
}

//! Rotation end to end: the real `keymount node` against the test kube-apiserver, OpenBao as
//! the secret store, kubelet's periodic republish driven over the CSI socket. Provider calls
//! are counted at the server (OpenBao's audit log).

mod harness;
mod support;
mod sync_support;
mod vault_support;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt as _;
use harness::mounts::mounts_under;
use harness::node::{
    NodeOptions, NodeProcess, kubelet_target, pod_uid, publish_request, unpublish_request,
    write_class,
};
use keymount::class::crd::SecretProviderClassPodStatus;
use keymount::provider::tokens::TOKENS_KEY;
use kube::Api;
use serde_json::{Value, json};
use sync_support::{Bed, metric};
use vault_support::tokens_json;

const AB: &str = "- {objectName: a, secretPath: secret/data/app, secretKey: a}\n- {objectName: b, secretPath: secret/data/app, secretKey: b}";
const READ: (&str, &str) = ("read", "secret/data/app");

fn read(target: &Path, name: &str) -> String {
    std::fs::read_to_string(target.join(name)).unwrap()
}

/// Reads `a` and `b` in a loop until stopped: `a` must always be a whole value, and `a` and
/// `b` of one `..data` generation must always belong together. A path resolved just before
/// the old generation is removed may be gone (as with kubelet's own writer): read again.
fn start_reader(
    target: PathBuf,
    stop: Arc<AtomicBool>,
    reads: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let a = match std::fs::read_to_string(target.join("a")) {
                Ok(a) => a,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => panic!("read a: {e}"),
            };
            assert!(
                a.starts_with("a-") && a.len() == 4,
                "partial or empty file a: {a:?}"
            );
            // One generation, read through the directory `..data` points to at this instant.
            let Ok(generation) = std::fs::read_link(target.join("..data")) else {
                continue;
            };
            let dir = target.join(generation);
            if let (Ok(a), Ok(b)) = (
                std::fs::read_to_string(dir.join("a")),
                std::fs::read_to_string(dir.join("b")),
            ) {
                assert_eq!(
                    a[2..],
                    b[2..],
                    "a and b of one generation differ: {a:?} {b:?}"
                );
            }
            reads.fetch_add(1, Ordering::Relaxed);
        }
    })
}

#[tokio::test]
async fn rotation_fetches_after_the_interval_swaps_atomically_and_skips_unchanged_content() {
    let bed = Bed::new("rotate").await;
    bed.bao
        .kv2_put("secret", "app", json!({"a": "a-v1", "b": "b-v1"}))
        .await;
    bed.apply_class("app", &[], AB, Value::Null).await;
    let node = bed
        .node(&["--enable-secret-rotation", "--rotation-poll-interval=2s"])
        .await;
    let mut csi = node.node_client().await;
    let pod = bed.pod("web-0").await;
    let target = bed.target(&pod, "secrets");

    csi.node_publish_volume(bed.publish(&pod, "secrets", "app"))
        .await
        .expect("first mount");
    assert_eq!(read(&target, "a"), "a-v1");
    assert_eq!(bed.bao.count_requests_op(READ.0, READ.1), 1);

    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let reader = start_reader(target.clone(), stop.clone(), reads.clone());

    // Changed in Vault: inside the interval the old content stays and Vault is not asked.
    bed.bao
        .kv2_put("secret", "app", json!({"a": "a-v2", "b": "b-v2"}))
        .await;
    csi.node_publish_volume(bed.publish(&pod, "secrets", "app"))
        .await
        .unwrap();
    assert_eq!(
        read(&target, "a"),
        "a-v1",
        "old content until the interval has passed"
    );
    assert_eq!(
        bed.bao.count_requests_op(READ.0, READ.1),
        1,
        "no provider call inside the interval"
    );

    tokio::time::sleep(Duration::from_millis(2100)).await;
    csi.node_publish_volume(bed.publish(&pod, "secrets", "app"))
        .await
        .unwrap();
    assert_eq!(
        (read(&target, "a"), read(&target, "b")),
        ("a-v2".into(), "b-v2".into())
    );
    assert_eq!(bed.bao.count_requests_op(READ.0, READ.1), 2);
    let event = bed.wait_event(&pod.name, "MountRotationComplete").await;
    assert_eq!(event.type_.as_deref(), Some("Normal"));
    assert_eq!(
        event.source.as_ref().and_then(|s| s.component.as_deref()),
        Some("csi-secrets-store-rotation")
    );
    assert_eq!(event.involved_object.uid.as_deref(), Some(pod.uid.as_str()));

    // The pod status carries the new versions.
    let statuses: Api<SecretProviderClassPodStatus> = Api::namespaced(bed.client.clone(), &bed.ns);
    let status = statuses
        .get(&format!("web-0-{}-app", bed.ns))
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(status.objects.unwrap().len(), 2);

    // Several rotations while the reader runs, each a whole swap.
    for generation in 3..=4 {
        bed.bao
            .kv2_put(
                "secret",
                "app",
                json!({"a": format!("a-v{generation}"), "b": format!("b-v{generation}")}),
            )
            .await;
        tokio::time::sleep(Duration::from_millis(2100)).await;
        csi.node_publish_volume(bed.publish(&pod, "secrets", "app"))
            .await
            .unwrap();
        assert_eq!(read(&target, "b"), format!("b-v{generation}"));
    }

    // Unchanged in Vault: fetched after the interval, nothing written.
    let before = std::fs::metadata(target.join("a")).unwrap();
    let link_before = std::fs::read_link(target.join("..data")).unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    csi.node_publish_volume(bed.publish(&pod, "secrets", "app"))
        .await
        .unwrap();
    assert_eq!(
        bed.bao.count_requests_op(READ.0, READ.1),
        5,
        "fetched once the interval passed"
    );
    let after = std::fs::metadata(target.join("a")).unwrap();
    assert_eq!(
        (before.ino(), before.mtime_nsec()),
        (after.ino(), after.mtime_nsec()),
        "unchanged content is not rewritten"
    );
    assert_eq!(
        link_before,
        std::fs::read_link(target.join("..data")).unwrap()
    );

    stop.store(true, Ordering::Relaxed);
    reader
        .join()
        .expect("the reader saw only whole, consistent generations");
    assert!(reads.load(Ordering::Relaxed) > 100, "the reader ran");

    let (_, metrics) = node.get("/metrics").await.unwrap();
    assert_eq!(
        metric(
            &metrics,
            "rotation_reconcile_total{provider=\"vault\",os_type=\"linux\",rotated=\"true\"}"
        ),
        3.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "rotation_reconcile_total{provider=\"vault\",os_type=\"linux\",rotated=\"false\"}"
        ),
        1.0,
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "rotation_reconcile_duration_sec_count{os_type=\"linux\"}"
        ) >= 4.0,
        "{metrics}"
    );
    csi.node_unpublish_volume(unpublish_request(
        &format!("csi-{}-secrets", pod.uid),
        &target,
    ))
    .await
    .unwrap();
    assert!(
        !node.logs().contains("a-v2"),
        "a secret value reached the logs"
    );
}

#[tokio::test]
async fn per_class_interval_on_demand_refresh_and_leases() {
    let bed = Bed::new("interval").await;
    bed.bao
        .kv2_put("secret", "app", json!({"a": "a-v1", "b": "b-v1"}))
        .await;
    bed.bao
        .kv1_put(
            "kv",
            "leased",
            json!({"a": "a-v1", "b": "b-v1", "ttl": "3s"}),
        )
        .await;
    bed.apply_class(
        "fast",
        &[("keymount.io/rotation-poll-interval", "1s")],
        AB,
        Value::Null,
    )
    .await;
    bed.apply_class("slow", &[], AB, Value::Null).await;
    let leased = "- {objectName: a, secretPath: kv/leased, secretKey: a}\n- {objectName: b, secretPath: kv/leased, secretKey: b}";
    bed.apply_class("leased", &[], leased, Value::Null).await;
    // The global interval is an hour: only the annotation, the refresh stamp and the lease fetch.
    let node = bed
        .node(&["--enable-secret-rotation", "--rotation-poll-interval=1h"])
        .await;
    let mut csi = node.node_client().await;
    let pod = bed.pod("web-0").await;
    for class in ["fast", "slow", "leased"] {
        csi.node_publish_volume(bed.publish(&pod, class, class))
            .await
            .expect(class);
    }
    bed.bao
        .kv2_put("secret", "app", json!({"a": "a-v2", "b": "b-v2"}))
        .await;
    bed.bao
        .kv1_put(
            "kv",
            "leased",
            json!({"a": "a-v2", "b": "b-v2", "ttl": "3s"}),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for class in ["fast", "slow", "leased"] {
        csi.node_publish_volume(bed.publish(&pod, class, class))
            .await
            .unwrap();
    }
    assert_eq!(
        read(&bed.target(&pod, "fast"), "a"),
        "a-v2",
        "the class's 1s interval applies"
    );
    assert_eq!(
        read(&bed.target(&pod, "slow"), "a"),
        "a-v1",
        "the global hour applies"
    );
    assert_eq!(
        read(&bed.target(&pod, "leased"), "a"),
        "a-v1",
        "the lease has not run out yet"
    );

    // The lease (3 s) ends before the hour: fetched again before it does.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    csi.node_publish_volume(bed.publish(&pod, "leased", "leased"))
        .await
        .unwrap();
    assert_eq!(
        read(&bed.target(&pod, "leased"), "a"),
        "a-v2",
        "refreshed before the lease ended"
    );

    // On demand: a new refresh stamp on the class makes the next republish fetch.
    let reads = bed.bao.count_requests_op(READ.0, READ.1);
    bed.apply_class(
        "slow",
        &[("keymount.io/refresh-at", "2026-01-01T00:00:00Z")],
        AB,
        Value::Null,
    )
    .await;
    let target = bed.target(&pod, "slow");
    let (bed_ref, pod_ref, target_ref, csi_ref) = (&bed, &pod, &target, &csi);
    let refreshed = support::proc::wait_until(Duration::from_secs(10), || async move {
        csi_ref
            .clone()
            .node_publish_volume(bed_ref.publish(pod_ref, "slow", "slow"))
            .await
            .unwrap();
        read(target_ref, "a") == "a-v2"
    })
    .await;
    assert!(
        refreshed,
        "the refresh-at annotation did not trigger a fetch"
    );
    assert_eq!(
        bed.bao.count_requests_op(READ.0, READ.1),
        reads + 1,
        "exactly one fetch for the new stamp"
    );
    csi.node_publish_volume(bed.publish(&pod, "slow", "slow"))
        .await
        .unwrap();
    assert_eq!(
        bed.bao.count_requests_op(READ.0, READ.1),
        reads + 1,
        "the same stamp fetches no more"
    );
    for class in ["fast", "slow", "leased"] {
        let id = format!("csi-{}-{class}", pod.uid);
        csi.node_unpublish_volume(unpublish_request(&id, &bed.target(&pod, class)))
            .await
            .unwrap();
    }
    assert!(mounts_under(bed.work.path()).is_empty());
}

#[tokio::test]
async fn provider_down_during_rotation_keeps_the_old_content_and_records_an_event() {
    let bed = Bed::new("down").await;
    bed.bao
        .kv2_put("secret", "app", json!({"a": "a-v1", "b": "b-v1"}))
        .await;
    bed.apply_class("app", &[], AB, Value::Null).await;
    let node = bed
        .node(&[
            "--enable-secret-rotation",
            "--rotation-poll-interval=1s",
            "--provider-timeout=5s",
        ])
        .await;
    let mut csi = node.node_client().await;
    let pod = bed.pod("web-0").await;
    let target = bed.target(&pod, "secrets");
    csi.node_publish_volume(bed.publish(&pod, "secrets", "app"))
        .await
        .unwrap();
    let generation = std::fs::read_link(target.join("..data")).unwrap();

    // OpenBao goes away.
    let killed = std::process::Command::new("kill")
        .arg("-9")
        .arg(bed.bao.pid().to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    let addr = bed.bao.addr().to_owned();
    let down = support::proc::wait_until(Duration::from_secs(10), || {
        let url = format!("{addr}/v1/sys/health");
        async move { reqwest::get(url).await.is_err() }
    })
    .await;
    assert!(down, "OpenBao still answers after SIGKILL");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    csi.node_publish_volume(bed.publish(&pod, "secrets", "app"))
        .await
        .expect("a failed rotation answers OK so kubelet keeps the volume");
    assert_eq!(
        (read(&target, "a"), read(&target, "b")),
        ("a-v1".into(), "b-v1".into())
    );
    assert_eq!(
        std::fs::read_link(target.join("..data")).unwrap(),
        generation,
        "nothing rewritten"
    );
    let event = bed.wait_event(&pod.name, "MountRotationFailed").await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    let message = event.message.unwrap_or_default();
    assert!(
        message.contains(&format!("{}/app", bed.ns)) && message.contains("vault"),
        "{message}"
    );
    let (_, metrics) = node.get("/metrics").await.unwrap();
    assert!(
        metrics.contains("rotation_reconcile_error_total{provider=\"vault\""),
        "{metrics}"
    );
    csi.node_unpublish_volume(unpublish_request(
        &format!("csi-{}-secrets", pod.uid),
        &target,
    ))
    .await
    .unwrap();
    assert!(mounts_under(bed.work.path()).is_empty());
}

#[tokio::test]
async fn republishing_110_volumes_inside_the_interval_asks_the_provider_nothing() {
    const VOLUMES: usize = 110;
    let bao = support::openbao::OpenBao::start().await;
    let signer = vault_support::Signer::new();
    vault_support::jwt_setup(&bao, "", &signer, "web", "shop", "web", &["secret/data/*"]).await;
    bao.kv2_put("secret", "app", json!({"a": "a-v1", "b": "b-v1"}))
        .await;
    let work = tempfile::tempdir().unwrap();
    let classes = work.path().join("classes");
    write_class(
        &classes,
        "shop",
        "app",
        "vault",
        &[
            ("vaultAddress", bao.addr()),
            ("roleName", "web"),
            ("vaultAuthMountPath", "jwt"),
            ("objects", AB),
        ],
    );
    let node = NodeProcess::start(NodeOptions {
        class_dir: Some(classes),
        kubelet_root: Some(work.path().to_owned()),
        args: vec![
            "--enable-secret-rotation".into(),
            "--rotation-poll-interval=10m".into(),
        ],
        ..Default::default()
    })
    .await;
    let csi = node.node_client().await;
    let tokens = tokens_json("vault", &signer.token("shop", "web", "vault"));
    let request = |n: usize| {
        let mut req = publish_request(
            &format!("vol-{n}"),
            &kubelet_target(work.path(), &pod_uid(n), "secrets"),
            "app",
            "shop",
        );
        req.volume_context.insert(
            "csi.storage.k8s.io/serviceAccount.name".into(),
            "web".into(),
        );
        req.volume_context.insert(TOKENS_KEY.into(), tokens.clone());
        req
    };
    // First mounts, 8 at a time.
    let first = futures::stream::iter(0..VOLUMES)
        .map(|n| {
            let mut csi = csi.clone();
            let req = request(n);
            async move { csi.node_publish_volume(req).await.map(|_| ()) }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    assert!(first.iter().all(Result::is_ok), "{first:?}");
    let reads = bao.count_requests_op(READ.0, READ.1);
    let logins = bao.count_logins("jwt");
    assert!(
        (1..=VOLUMES).contains(&reads),
        "{reads} reads for {VOLUMES} first mounts"
    );

    // Kubelet's periodic republish, three rounds over every volume.
    for _ in 0..3 {
        let rounds = futures::stream::iter(0..VOLUMES)
            .map(|n| {
                let mut csi = csi.clone();
                let req = request(n);
                async move { csi.node_publish_volume(req).await.map(|_| ()) }
            })
            .buffer_unordered(8)
            .collect::<Vec<_>>()
            .await;
        assert!(rounds.iter().all(Result::is_ok), "{rounds:?}");
    }
    // Give the audit log a moment, then count at the server: nothing more arrived.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        bao.count_requests_op(READ.0, READ.1),
        reads,
        "a republish inside the interval reached Vault"
    );
    assert_eq!(
        bao.count_logins("jwt"),
        logins,
        "a republish inside the interval logged in"
    );
    let (_, metrics) = node.get("/metrics").await.unwrap();
    assert_eq!(
        metric(
            &metrics,
            "node_publish_total{provider=\"vault\",os_type=\"linux\"}"
        ),
        (4 * VOLUMES) as f64,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "rotation_reconcile_total{provider=\"vault\""),
        0.0,
        "{metrics}"
    );

    let mut csi = csi;
    for n in 0..VOLUMES {
        csi.node_unpublish_volume(unpublish_request(
            &format!("vol-{n}"),
            &kubelet_target(work.path(), &pod_uid(n), "secrets"),
        ))
        .await
        .unwrap();
    }
    assert!(mounts_under(work.path()).is_empty());
}

//! A node's memory and API load do not grow with the cluster: the real `keymount node` binary
//! against the test kube-apiserver, publishing 110 volumes of 20 classes, once on a nearly
//! empty cluster and once after thousands of ServiceAccounts (each with a 20 KiB annotation)
//! and SecretProviderClasses were added in hundreds of namespaces.
//!
//! Sizes come from `KEYMOUNT_SCALE_ACCOUNTS` / `KEYMOUNT_SCALE_CLASSES` (default 2,000 and
//! 1,000, ten classes and twenty accounts per namespace); docs/PERFORMANCE.md has the run with
//! 10,000 and 5,000.

mod harness;
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::{StreamExt as _, TryStreamExt as _};
use harness::mounts::mounts_under;
use harness::node::{NodeOptions, NodeProcess, pod_uid, publish_request, unpublish_request};
use harness::plugin::{FakePlugin, Reply};
use k8s_openapi::api::core::v1::ServiceAccount;
use keymount::class::{SecretProviderClass, SecretProviderClassSpec};
use kube::api::{Api, ObjectMeta, PostParams};
use support::kube::TestKube;
use support::proc::memory_kib;

const VOLUMES: usize = 110;
const CLASSES: usize = 20;
const ANNOTATION_BYTES: usize = 20 * 1024;

fn size(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn class(name: &str, provider: &str) -> SecretProviderClass {
    SecretProviderClass::new(
        name,
        SecretProviderClassSpec {
            provider: Some(provider.into()),
            parameters: Some(BTreeMap::from([(
                "objects".into(),
                "- {objectName: db-password, objectType: secretsmanager}".into(),
            )])),
            secret_objects: None,
        },
    )
}

/// Fills the cluster with `accounts` ServiceAccounts (each with a 20 KiB annotation and an
/// IRSA role) and `classes` SecretProviderClasses, in `classes / 10` namespaces.
async fn populate(kube: &TestKube, accounts: usize, classes: usize) {
    let namespaces = (classes / 10).max(1);
    let started = Instant::now();
    let names: Vec<String> = futures::stream::iter(0..namespaces)
        .map(|_| kube.namespace("scale"))
        .buffer_unordered(16)
        .collect()
        .await;
    let blob = "x".repeat(ANNOTATION_BYTES);
    let blob = blob.as_str();
    futures::stream::iter(0..accounts)
        .map(|n| {
            let ns = &names[n % namespaces];
            let account = ServiceAccount {
                metadata: ObjectMeta {
                    name: Some(format!("sa-{n}")),
                    annotations: Some(BTreeMap::from([
                        ("example.com/blob".to_owned(), blob.to_owned()),
                        (
                            "eks.amazonaws.com/role-arn".to_owned(),
                            format!("arn:aws:iam::123456789012:role/r{n}"),
                        ),
                    ])),
                    ..Default::default()
                },
                ..Default::default()
            };
            async move {
                Api::<ServiceAccount>::namespaced(kube.client(), ns)
                    .create(&PostParams::default(), &account)
                    .await
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .expect("create the ServiceAccounts");
    futures::stream::iter(0..classes)
        .map(|n| {
            let ns = &names[n % namespaces];
            let class = class(&format!("class-{n}"), "aws");
            async move {
                Api::<SecretProviderClass>::namespaced(kube.client(), ns)
                    .create(&PostParams::default(), &class)
                    .await
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .expect("create the classes");
    eprintln!(
        "populated {accounts} ServiceAccounts and {classes} classes in {namespaces} namespaces in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// The API server's own metric `name`, summed over the series whose labels contain every one
/// of `labels` (`key="value"`).
async fn api_metric(kube: &TestKube, name: &str, labels: &[&str]) -> f64 {
    let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = kube.client().request_text(request).await.unwrap();
    if std::env::var_os("KEYMOUNT_SCALE_DEBUG").is_some() {
        for line in text.lines().filter(|l| l.starts_with(name)) {
            eprintln!("{line}");
        }
    }
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// What one node run measured.
#[derive(Debug)]
struct Run {
    rss_kib: u64,
    peak_kib: u64,
    class_gets: f64,
}

/// Starts a node, publishes `VOLUMES` volumes of `CLASSES` classes of namespace `ns` one after
/// another, measures, then unpublishes them and stops the node.
async fn node_run(kube: &TestKube, ns: &str, work: &Path) -> Run {
    let providers = work.join("providers");
    let _plugin =
        FakePlugin::start(&providers, "fake", Reply::files(&[("db-password", "v")])).await;
    let class_gets_before = class_gets(kube).await;
    let node = NodeProcess::start(NodeOptions {
        kubeconfig: Some(kube.kubeconfig_path().to_owned()),
        provider_dir: Some(providers.clone()),
        kubelet_root: Some(work.join("kubelet")),
        args: vec!["--api-cache-ttl=30s".into()],
        ..Default::default()
    })
    .await;
    let mut client = node.node_client().await;
    let mut targets = Vec::new();
    for n in 0..VOLUMES {
        let uid = pod_uid(n);
        let target = node.target(&uid, "secrets");
        let mut request = publish_request(
            &format!("vol-{n}"),
            &target,
            &format!("app-{}", n % CLASSES),
            ns,
        );
        let context = &mut request.volume_context;
        context.insert("csi.storage.k8s.io/pod.uid".into(), uid);
        context.insert("csi.storage.k8s.io/pod.name".into(), format!("app-{n}"));
        client
            .node_publish_volume(request)
            .await
            .unwrap_or_else(|e| panic!("publish {n}: {e:?}"));
        targets.push((format!("vol-{n}"), target));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let run = Run {
        rss_kib: memory_kib(node.pid(), "VmRSS"),
        peak_kib: memory_kib(node.pid(), "VmHWM"),
        class_gets: class_gets(kube).await - class_gets_before,
    };
    for (volume, target) in &targets {
        client
            .node_unpublish_volume(unpublish_request(volume, target))
            .await
            .expect("unpublish");
    }
    assert!(mounts_under(work).is_empty(), "no mount left");
    drop(node);
    run
}

/// Reads of single classes the API server served. Kubernetes 1.20 labels a GET of a custom
/// resource by name `verb="LIST",scope="namespace"` (checked by hand with curl), so both count;
/// a node never lists the classes of a namespace.
async fn class_gets(kube: &TestKube) -> f64 {
    let resource = r#"resource="secretproviderclasses""#;
    let gets = api_metric(
        kube,
        "apiserver_request_total",
        &[resource, r#"verb="GET""#],
    )
    .await;
    let by_name = api_metric(
        kube,
        "apiserver_request_total",
        &[resource, r#"verb="LIST""#, r#"scope="namespace""#],
    )
    .await;
    gets + by_name
}

/// Watches the API server serves for `kind` (from its watch cache).
async fn watchers(kube: &TestKube, kind: &str) -> f64 {
    api_metric(
        kube,
        "apiserver_registered_watchers",
        &[&format!(r#"kind="{kind}""#)],
    )
    .await
}

#[tokio::test]
async fn node_memory_and_api_load_do_not_grow_with_the_cluster() {
    let kube = TestKube::get();
    kube.install_keymount_crds().await;
    let ns = kube.namespace("scale-node").await;
    let create = Api::<SecretProviderClass>::namespaced(kube.client(), &ns);
    for n in 0..CLASSES {
        create
            .create(&PostParams::default(), &class(&format!("app-{n}"), "fake"))
            .await
            .unwrap();
    }
    let work = tempfile::tempdir().unwrap();

    let empty = node_run(kube, &ns, &work.path().join("empty")).await;
    populate(
        kube,
        size("KEYMOUNT_SCALE_ACCOUNTS", 2_000),
        size("KEYMOUNT_SCALE_CLASSES", 1_000),
    )
    .await;

    // A running node opens no watch of the cluster's ServiceAccounts or classes. The
    // controller-manager's garbage collector watches every resource, a new CRD's from its next
    // discovery resync (every 30 s): the baseline is taken once it watches the classes, so that
    // its watcher cannot appear while the node runs.
    let gc_watches = support::proc::wait_until(Duration::from_secs(90), || async {
        watchers(kube, "SecretProviderClass").await >= 1.0
    })
    .await;
    assert!(
        gc_watches,
        "the controller-manager's garbage collector never watched SecretProviderClasses"
    );
    let before = (
        watchers(kube, "ServiceAccount").await,
        watchers(kube, "SecretProviderClass").await,
    );
    assert!(
        before.0 >= 1.0,
        "the API server reports its ServiceAccount watchers (the controller-manager's)"
    );
    let providers = work.path().join("idle-providers");
    std::fs::create_dir_all(&providers).unwrap();
    let idle = NodeProcess::start(NodeOptions {
        kubeconfig: Some(kube.kubeconfig_path().to_owned()),
        provider_dir: Some(providers),
        kubelet_root: Some(work.path().join("idle")),
        ..Default::default()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = (
        watchers(kube, "ServiceAccount").await,
        watchers(kube, "SecretProviderClass").await,
    );
    drop(idle);
    assert_eq!(
        during, before,
        "watchers of (ServiceAccount, SecretProviderClass) with a node running"
    );

    let full = node_run(kube, &ns, &work.path().join("full")).await;
    eprintln!("empty cluster: {empty:?}\nfull cluster:  {full:?}");
    for run in [&empty, &full] {
        assert_eq!(
            run.class_gets, CLASSES as f64,
            "GETs of classes for {VOLUMES} publishes of {CLASSES} classes: {run:?}"
        );
    }
    let grew = full.rss_kib.saturating_sub(empty.rss_kib);
    let peak_grew = full.peak_kib.saturating_sub(empty.peak_kib);
    assert!(
        grew < 2048 && peak_grew < 2048,
        "node memory grew with the cluster: RSS +{grew} KiB, peak +{peak_grew} KiB"
    );
}

//! Tenant names and local class manifests, with the real `keymount node` binary in local mode
//! (`--class-dir`): names that would change an API path are refused before any lookup, and a
//! class directory full of bad files (malformed, not UTF-8, wrong types, huge, a FIFO, a
//! directory named `x.yaml`) fails only the bad classes, without stalling anything.

mod harness;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use harness::mounts::mounts_under;
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
}

impl Bed {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let bed = Self {
            classes: tmp.path().join("classes"),
            providers: tmp.path().join("providers"),
            tmp,
        };
        write_class(&bed.classes, "shop", "db", "fake", &[("objects", "- a")]);
        bed
    }

    fn options(&self) -> NodeOptions {
        NodeOptions {
            class_dir: Some(self.classes.clone()),
            provider_dir: Some(self.providers.clone()),
            kubelet_root: Some(self.tmp.path().to_owned()),
            args: vec!["--tmpfs-size=1Mi".into(), "--provider-timeout=5s".into()],
            ..Default::default()
        }
    }

    fn target(&self, n: usize) -> PathBuf {
        kubelet_target(self.tmp.path(), &pod_uid(n), "s")
    }
}

async fn publish(
    node: &NodeProcess,
    id: &str,
    target: &Path,
    class: &str,
) -> Result<(), tonic::Status> {
    node.node_client()
        .await
        .node_publish_volume(publish_request(id, target, class, "shop"))
        .await
        .map(|_| ())
}

#[tokio::test]
async fn class_names_that_would_change_an_api_path_are_refused_before_any_lookup() {
    let bed = Bed::new();
    let plugin = FakePlugin::start(&bed.providers, "fake", Reply::files(&[("a", "x")])).await;
    // A class whose manifest name the lookup would find if the name reached it unchecked.
    std::fs::write(
        bed.classes.join("evil.yaml"),
        "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\n\
         metadata: {name: DB, namespace: shop}\nspec: {provider: fake, parameters: {a: b}}\n",
    )
    .unwrap();
    let node = NodeProcess::start(bed.options()).await;
    let long = "a".repeat(254);
    for (n, class) in [
        "../db",
        "db/../db",
        "db?watch=1",
        "DB",
        "..",
        "a/b",
        "db#x",
        long.as_str(),
    ]
    .into_iter()
    .enumerate()
    {
        let target = bed.target(n);
        let err = publish(&node, &format!("vol-{n}"), &target, class)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{class}: {err:?}");
        assert!(
            err.message()
                .starts_with("volume context: secretProviderClass "),
            "{class}: {}",
            err.message()
        );
        assert!(!target.exists(), "{class}: nothing created");
    }
    // A bad namespace and pod name are refused the same way, naming their attribute.
    let target = bed.target(100);
    let mut req = publish_request("vol-ns", &target, "db", "../kube-system");
    let err = node
        .node_client()
        .await
        .node_publish_volume(req.clone())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .contains("csi.storage.k8s.io/pod.namespace \"../kube-system\""),
        "{}",
        err.message()
    );
    req.volume_context
        .insert("csi.storage.k8s.io/pod.namespace".into(), "shop".into());
    req.volume_context
        .insert("csi.storage.k8s.io/pod.name".into(), "x?y".into());
    let err = node
        .node_client()
        .await
        .node_publish_volume(req)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("csi.storage.k8s.io/pod.name"),
        "{}",
        err.message()
    );

    assert_eq!(plugin.mount_calls(), 0, "no provider was asked");
    assert!(
        !node.logs().contains("failed to get SecretProviderClass"),
        "no lookup was made"
    );
    // The good class still works.
    let target = bed.target(200);
    publish(&node, "vol-ok", &target, "db").await.unwrap();
    node.node_client()
        .await
        .node_unpublish_volume(unpublish_request("vol-ok", &target))
        .await
        .unwrap();
    assert!(mounts_under(bed.tmp.path()).is_empty());
}

#[tokio::test]
async fn a_class_directory_of_bad_files_fails_only_their_classes_and_never_stalls() {
    let bed = Bed::new();
    let _plugin = FakePlugin::start(&bed.providers, "fake", Reply::files(&[("a", "x")])).await;
    let d = &bed.classes;
    std::fs::write(
        d.join("malformed.yaml"),
        "kind: SecretProviderClass\nmetadata: {name: [\n",
    )
    .unwrap();
    std::fs::write(
        d.join("latin1.yaml"),
        b"kind: SecretProviderClass\nmetadata: {name: caf\xe9}\n",
    )
    .unwrap();
    std::fs::write(
        d.join("typed.yaml"),
        "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\n\
         metadata: {name: typed, namespace: shop}\nspec: {provider: {a: 1}, parameters: [1]}\n",
    )
    .unwrap();
    let mut huge = "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\n\
                    metadata: {name: huge, namespace: shop}\nspec: {provider: fake, parameters: {a: b}}\n"
        .to_string();
    huge.push_str(&format!("# {}\n", "x".repeat(2 << 20)));
    std::fs::write(d.join("huge.yaml"), huge).unwrap();
    nix::unistd::mkfifo(
        &d.join("fifo.yaml"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    std::fs::create_dir(d.join("x.yaml")).unwrap();

    let node = NodeProcess::start(bed.options()).await;

    // The good class publishes at once, FIFO and all.
    let target = bed.target(1);
    let started = Instant::now();
    tokio::time::timeout(
        Duration::from_secs(2),
        publish(&node, "vol-1", &target, "db"),
    )
    .await
    .expect("a publish completes within 2 s while a FIFO is in the class dir")
    .unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(std::fs::read_to_string(target.join("a")).unwrap(), "x");
    let healthz = tokio::time::timeout(Duration::from_secs(2), node.get("/healthz"))
        .await
        .expect("/healthz answers");
    assert_eq!(healthz.map(|(code, _)| code), Some(200));

    // The wrong-typed class fails with its file.
    let err = publish(&node, "vol-2", &bed.target(2), "typed")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("shop/typed: manifest ") && err.message().contains("typed.yaml"),
        "{}",
        err.message()
    );
    // A class in an unreadable file: not found, naming every file that was skipped and why.
    let err = publish(&node, "vol-3", &bed.target(3), "huge")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    for part in [
        "huge.yaml: larger than 1048576 bytes (1 MiB)",
        "latin1.yaml: not UTF-8",
        "malformed.yaml: document 1",
    ] {
        assert!(err.message().contains(part), "{part}: {}", err.message());
    }
    let logs = node.logs();
    assert!(
        logs.contains("skipping a class manifest that is not a regular file"),
        "{logs}"
    );
    for n in 2..=3 {
        assert!(!bed.target(n).exists());
    }
    node.node_client()
        .await
        .node_unpublish_volume(unpublish_request("vol-1", &target))
        .await
        .unwrap();
    assert!(mounts_under(bed.tmp.path()).is_empty());
}

//! What a class author or a plugin can make the real `keymount node` keep or do: metric series
//! (label values from a closed set only), fetches per republish (a floor under the class's
//! rotation interval), and an oversized plugin answer (RESOURCE_EXHAUSTED naming the flag);
//! and what an API server's bodies can make it log (nothing).

mod harness;
mod store_support;
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use harness::mounts::mounts_under;
use harness::node::{
    NodeOptions, NodeProcess, kubelet_target, pod_uid, publish_request, unpublish_request,
};
use harness::plugin::{FakePlugin, Reply};
use keymount::proto::csi::NodePublishVolumeRequest;
use tonic::Code;

struct Bed {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    classes: PathBuf,
    providers: PathBuf,
}

impl Bed {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_owned();
        Self {
            classes: root.join("classes"),
            providers: root.join("providers"),
            root,
            _tmp: tmp,
        }
    }

    /// Class `ns/name` of `provider`, with `annotations`.
    fn class(&self, name: &str, provider: &str, annotations: &[(&str, &str)]) {
        std::fs::create_dir_all(&self.classes).unwrap();
        let mut yaml = format!(
            "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata:\n  name: {name}\n  namespace: shop\n"
        );
        if !annotations.is_empty() {
            yaml.push_str("  annotations:\n");
            for (k, v) in annotations {
                yaml.push_str(&format!("    {k}: {v:?}\n"));
            }
        }
        yaml.push_str(&format!(
            "spec:\n  provider: {provider:?}\n  parameters:\n    objects: \"- a\"\n"
        ));
        std::fs::write(self.classes.join(format!("shop-{name}.yaml")), yaml).unwrap();
    }

    fn options(&self, args: &[&str]) -> NodeOptions {
        let mut all = vec![
            "--provider-timeout=5s".to_string(),
            "--tmpfs-size=1Mi".into(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        NodeOptions {
            class_dir: Some(self.classes.clone()),
            provider_dir: Some(self.providers.clone()),
            kubelet_root: Some(self.root.clone()),
            args: all,
            ..Default::default()
        }
    }

    fn target(&self, n: usize) -> PathBuf {
        kubelet_target(&self.root, &pod_uid(n), "secrets")
    }
}

async fn publish(node: &NodeProcess, req: NodePublishVolumeRequest) -> Result<(), tonic::Status> {
    node.node_client()
        .await
        .node_publish_volume(req)
        .await
        .map(|_| ())
}

/// The series (lines with labels) of metric `name` in a scrape.
fn series(scrape: &str, name: &str) -> Vec<String> {
    let prefix = format!("{name}{{");
    scrape
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn plugin_error_codes_and_class_provider_names_make_no_metric_series() {
    let bed = Bed::new();
    bed.class("db", "fake", &[]);
    let plugin = FakePlugin::start(&bed.providers, "fake", Reply::ErrorCode("x".into())).await;
    let node = NodeProcess::start(bed.options(&[])).await;

    // 300 distinct error codes from a plugin that exists.
    for n in 0..300 {
        plugin.set_reply(Reply::ErrorCode(format!("PluginCode{n}")));
        let target = bed.target(n);
        let err = publish(
            &node,
            publish_request(&format!("e{n}"), &target, "db", "shop"),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), Code::Internal);
        assert!(
            err.message().contains(&format!("PluginCode{n}")),
            "{}",
            err.message()
        );
    }
    // 100 classes naming providers that do not exist, valid names or not.
    for n in 0..100 {
        let provider = match n % 3 {
            0 => format!("nope-{n}"),
            1 => format!("../../run/sock-{n}"),
            _ => format!("Provider With Spaces {n}"),
        };
        bed.class(&format!("c{n}"), &provider, &[]);
        let target = bed.target(1000 + n);
        let err = publish(
            &node,
            publish_request(&format!("c{n}"), &target, &format!("c{n}"), "shop"),
        )
        .await
        .unwrap_err();
        assert_ne!(err.code(), Code::Ok);
    }
    assert!(mounts_under(&bed.root).is_empty());

    let (_, scrape) = node.get("/metrics").await.unwrap();
    let errors = series(&scrape, "node_publish_error_total");
    assert!(
        errors.len() <= 3,
        "400 failures from tenant-chosen texts made {} series:\n{}",
        errors.len(),
        errors.join("\n")
    );
    let durations = series(&scrape, "node_publish_duration_seconds_count");
    assert!(durations.len() <= 2, "{durations:?}");
    for text in ["PluginCode", "nope-", "sock-", "Spaces"] {
        assert!(!scrape.contains(text), "{text} became a label value");
    }
    assert!(
        errors.iter().any(|l| l.contains("provider=\"fake\"")
            && l.contains("error_type=\"GRPCProviderError\"")
            && l.ends_with(" 300")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|l| l.contains("provider=\"unknown\"") && l.ends_with(" 100")),
        "{errors:?}"
    );
}

#[tokio::test]
async fn an_oversized_plugin_answer_is_resource_exhausted_and_names_the_flag() {
    let bed = Bed::new();
    bed.class("db", "fake", &[]);
    let big = vec![b'x'; 200 * 1024];
    let _plugin = FakePlugin::start(
        &bed.providers,
        "fake",
        Reply::Files(vec![("a".into(), 0o644, big)]),
    )
    .await;
    let node = NodeProcess::start(bed.options(&["--max-call-recv-msg-size=65536"])).await;
    let target = bed.target(1);
    let err = publish(&node, publish_request("v", &target, "db", "shop"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    assert!(
        err.message().contains("--max-call-recv-msg-size") && err.message().contains("65536"),
        "{}",
        err.message()
    );
    assert!(mounts_under(&bed.root).is_empty());
    assert!(!target.exists());
}

#[tokio::test]
async fn a_class_rotation_interval_below_the_floor_is_raised_to_it() {
    let bed = Bed::new();
    bed.class(
        "db",
        "fake",
        &[("keymount.io/rotation-poll-interval", "1ms")],
    );
    let plugin = FakePlugin::start(&bed.providers, "fake", Reply::files(&[("a", "one")])).await;
    let node = NodeProcess::start(
        bed.options(&["--enable-secret-rotation", "--rotation-poll-interval=1h"]),
    )
    .await;
    let target = bed.target(1);
    let req = || publish_request("v", &target, "db", "shop");
    publish(&node, req()).await.unwrap();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        publish(&node, req()).await.unwrap();
    }
    assert_eq!(
        plugin.mount_calls(),
        1,
        "republishes within the floor (1 s) do not call the provider"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    publish(&node, req()).await.unwrap();
    assert_eq!(plugin.mount_calls(), 2, "after the floor: fetched");
    assert!(
        node.logs().contains("below the floor"),
        "the clamp is logged:\n{}",
        node.logs()
    );

    node.node_client()
        .await
        .node_unpublish_volume(unpublish_request("v", &target))
        .await
        .unwrap();
    assert!(mounts_under(Path::new(&bed.root)).is_empty());
}

#[tokio::test]
async fn api_server_bodies_never_reach_the_logs() {
    // An "API server" whose answers do not decode: the HMAC key Secret with undecodable data,
    // every other path a 404 whose body is not a Status.
    let api = store_support::Store::start(|_, path, _| match path {
        "/api/v1/namespaces/default/secrets/keymount-hmac-key" => store_support::Answer::Body(
            200,
            r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"keymount-hmac-key"},"data":{"key":"hunter2-in-secret-body!"}}"#.into(),
        ),
        _ => store_support::Answer::Body(404, "hunter2-in-error-body".into()),
    })
    .await;
    let work = tempfile::tempdir().unwrap();
    let kubeconfig = work.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster: {{server: \"{}\"}}\nusers:\n- name: u\n  user: {{token: fake-api-token}}\ncontexts:\n- name: t\n  context: {{cluster: t, user: u}}\ncurrent-context: t\n",
            api.addr
        ),
    )
    .unwrap();
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_keymount"))
        .arg("node")
        .arg("--nodeid=test-node")
        .arg(format!(
            "--endpoint=unix://{}",
            work.path().join("csi.sock").display()
        ))
        .arg("--metrics-addr=127.0.0.1:0")
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg(format!(
            "--state-dir={}",
            work.path().join("state").display()
        ))
        // Everything, at the most verbose level a user could ask for.
        .env("RUST_LOG", "trace")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the node gives up without a readable key")
        .unwrap();
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{logs}");
    assert!(
        logs.contains("keymount-hmac-key") && logs.contains("could not be decoded"),
        "{logs}"
    );
    assert!(api.requests("/api/v1/namespaces/default/secrets/keymount-hmac-key") > 0);
    assert!(
        !logs.contains("hunter2"),
        "a response body reached the logs:\n{logs}"
    );
}

#[tokio::test]
async fn a_store_streaming_a_gigabyte_leaves_the_node_small() {
    use store_support::{Answer, Store, login_ok, unsigned_jwt};
    const GIB: u64 = 1 << 30;
    let store = Store::start(|_, path, _| match path {
        "/v1/auth/jwt/login" => login_ok(),
        _ => Answer::Stream(GIB),
    })
    .await;
    let bed = Bed::new();
    std::fs::create_dir_all(&bed.classes).unwrap();
    std::fs::write(
        bed.classes.join("shop-big.yaml"),
        format!(
            "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata:\n  name: big\n  namespace: shop\nspec:\n  provider: vault\n  parameters:\n    vaultAddress: {:?}\n    vaultAuthMountPath: jwt\n    roleName: web\n    objects: \"- {{objectName: v, secretPath: secret/data/big, secretKey: v}}\"\n",
            store.addr
        ),
    )
    .unwrap();
    let node = NodeProcess::start(bed.options(&["--max-call-recv-msg-size=1048576"])).await;
    let before = support::proc::memory_kib(node.pid(), "VmHWM") * 1024;
    let target = bed.target(1);
    let mut req = publish_request("big", &target, "big", "shop");
    let token = unsigned_jwt("shop", "app");
    req.volume_context.insert(
        keymount::provider::tokens::TOKENS_KEY.into(),
        format!(
            r#"{{"vault":{{"token":"{token}","expirationTimestamp":"2099-01-01T00:00:00Z"}}}}"#
        ),
    );
    let started = std::time::Instant::now();
    let err = publish(&node, req).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    assert!(
        err.message().contains("--max-call-recv-msg-size"),
        "{}",
        err.message()
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let after = support::proc::memory_kib(node.pid(), "VmHWM") * 1024;
    assert!(
        after < before + (64 << 20),
        "peak RSS grew from {} MiB to {} MiB",
        before >> 20,
        after >> 20
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        store.sent_bytes() < 64 << 20,
        "{} bytes sent",
        store.sent_bytes()
    );
    assert!(mounts_under(&bed.root).is_empty());
}

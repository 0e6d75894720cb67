//! The CSI node end to end: the real `keymount node` binary over a real unix socket, real tmpfs
//! mounts, an in-test provider plugin, classes from a local directory.

mod harness;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use harness::mounts::{mount_entry, mounts_under};
use harness::node::{
    NodeOptions, NodeProcess, kubelet_target, pod_uid, publish_request, unpublish_request,
    write_class,
};
use harness::plugin::{FakePlugin, Reply};
use keymount::proto::csi::volume_capability::{AccessType, BlockVolume};
use keymount::proto::csi::{
    GetPluginInfoRequest, NodeGetCapabilitiesRequest, NodeGetInfoRequest, NodePublishVolumeRequest,
    NodeStageVolumeRequest, ProbeRequest,
};
use tonic::Code;

struct Bed {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    classes: PathBuf,
    providers: PathBuf,
    kubelet: PathBuf,
    pods: PathBuf,
}

impl Bed {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_owned();
        let bed = Self {
            classes: root.join("classes"),
            providers: root.join("providers"),
            kubelet: root.join("kubelet"),
            pods: root.join("kubelet/pods"),
            root,
            _tmp: tmp,
        };
        std::fs::create_dir_all(&bed.pods).unwrap();
        write_class(
            &bed.classes,
            "shop",
            "db",
            "fake",
            &[("objects", "- a\n- b")],
        );
        bed
    }

    fn options(&self) -> NodeOptions {
        NodeOptions {
            class_dir: Some(self.classes.clone()),
            provider_dir: Some(self.providers.clone()),
            kubelet_root: Some(self.kubelet.clone()),
            args: vec!["--provider-timeout=2s".into(), "--tmpfs-size=1Mi".into()],
            ..Default::default()
        }
    }

    fn target(&self, n: usize) -> PathBuf {
        kubelet_target(&self.kubelet, &pod_uid(n), "secrets")
    }

    /// Everything under the pods dir except the target trees: must stay empty.
    fn strays(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        walk(&self.pods, &mut found);
        found
            .into_iter()
            .filter(|p| p.is_file() || p.is_symlink())
            .collect()
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            out.push(path.clone());
            if entry.file_type().unwrap().is_dir() {
                walk(&path, out);
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

async fn unpublish(node: &NodeProcess, id: &str, target: &Path) -> Result<(), tonic::Status> {
    node.node_client()
        .await
        .node_unpublish_volume(unpublish_request(id, target))
        .await
        .map(|_| ())
}

#[tokio::test]
async fn publishes_files_with_the_kubelet_layout_and_unpublishes_cleanly() {
    let bed = Bed::new();
    let plugin = FakePlugin::start(
        &bed.providers,
        "fake",
        Reply::FilesVersions(
            vec![
                ("user".into(), 0o644, b"admin".to_vec()),
                ("db/password".into(), 0o600, b"s3cr3t-value".to_vec()),
            ],
            vec![
                ("user".into(), "7".into()),
                ("db/password".into(), "9".into()),
            ],
        ),
    )
    .await;
    let node = NodeProcess::start(bed.options()).await;
    let target = bed.target(1);
    let mut req = publish_request("vol-1", &target, "db", "shop");
    req.volume_context
        .insert("extra".into(), "from-volume-attributes".into());
    req.secrets
        .insert("clientSecret".into(), "node-publish-secret".into());
    publish(&node, req).await.unwrap();

    // Files, contents, modes and the ..data layout.
    assert_eq!(
        std::fs::read_to_string(target.join("user")).unwrap(),
        "admin"
    );
    assert_eq!(
        std::fs::read_to_string(target.join("db/password")).unwrap(),
        "s3cr3t-value"
    );
    assert_eq!(
        std::fs::metadata(target.join("db/password"))
            .unwrap()
            .mode()
            & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::read_link(target.join("user")).unwrap(),
        Path::new("..data/user")
    );
    assert!(
        std::fs::read_link(target.join("..data"))
            .unwrap()
            .to_string_lossy()
            .starts_with("..20")
    );

    // A real tmpfs with the hardening options, sized for two sets of --tmpfs-size=1Mi.
    let (fstype, options) = mount_entry(&target).expect("target is a mount point");
    assert_eq!(fstype, "tmpfs");
    for opt in ["nodev", "nosuid", "noexec", "size=2048k", "mode=755"] {
        assert!(options.contains(opt), "{opt} missing in {options}");
    }

    // The plugin got upstream's request encoding.
    let request = plugin.last_request().unwrap();
    let attributes: serde_json::Value = serde_json::from_str(&request.attributes).unwrap();
    assert_eq!(attributes["objects"], "- a\n- b");
    assert_eq!(attributes["extra"], "from-volume-attributes");
    assert_eq!(attributes["csi.storage.k8s.io/pod.namespace"], "shop");
    assert_eq!(request.permission, "420");
    assert_eq!(request.target_path, target.display().to_string());
    let secrets: serde_json::Value = serde_json::from_str(&request.secrets).unwrap();
    assert_eq!(secrets["clientSecret"], "node-publish-secret");

    // Metrics count it.
    let (_, metrics) = node.get("/metrics").await.unwrap();
    assert!(
        metrics.contains("node_publish_total{provider=\"fake\",os_type=\"linux\"} 1"),
        "{metrics}"
    );

    unpublish(&node, "vol-1", &target).await.unwrap();
    assert!(mounts_under(&bed.root).is_empty());
    assert!(!target.exists(), "target directory removed");
    let (_, metrics) = node.get("/metrics").await.unwrap();
    assert!(
        metrics.contains("node_unpublish_total{os_type=\"linux\"} 1"),
        "{metrics}"
    );

    // Secret values and the nodePublishSecretRef value never reach the logs.
    let logs = node.logs();
    for secret in ["s3cr3t-value", "node-publish-secret", "admin"] {
        assert!(!logs.contains(secret), "{secret} leaked into logs");
    }
}

#[tokio::test]
async fn identity_and_node_info_are_node_only() {
    let bed = Bed::new();
    let node = NodeProcess::start(bed.options()).await;
    let mut identity = node.identity_client().await;
    let info = identity
        .get_plugin_info(GetPluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.name, "secrets-store.csi.k8s.io");
    assert!(!info.vendor_version.is_empty());
    let ready = identity.probe(ProbeRequest {}).await.unwrap().into_inner();
    assert_eq!(ready.ready, Some(true));
    let mut client = node.node_client().await;
    let info = client
        .node_get_info(NodeGetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.node_id, "test-node");
    let caps = client
        .node_get_capabilities(NodeGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    // Only VOLUME_MOUNT_GROUP (the pod's fsGroup; tests/fs_group.rs): no stage, stats or expand.
    assert_eq!(caps.capabilities.len(), 1, "{caps:?}");
    let err = client
        .node_stage_volume(NodeStageVolumeRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
}

/// One bad-input case: the request, the plugin's answer, the code and a message fragment.
struct Case {
    name: &'static str,
    edit: fn(&mut NodePublishVolumeRequest),
    reply: Reply,
    code: Code,
    message: &'static str,
}

fn no_edit(_: &mut NodePublishVolumeRequest) {}

fn files(paths: &[&str]) -> Reply {
    Reply::Files(
        paths
            .iter()
            .map(|p| (p.to_string(), 0o644, b"x".to_vec()))
            .collect(),
    )
}

#[tokio::test]
async fn bad_input_gets_the_right_code_and_leaves_nothing_behind() {
    let bed = Bed::new();
    write_class(&bed.classes, "other", "db", "fake", &[("objects", "x")]);
    write_class(
        &bed.classes,
        "shop",
        "nowhere",
        "missing",
        &[("objects", "x")],
    );
    write_class(&bed.classes, "shop", "noparams", "fake", &[]);
    write_class(
        &bed.classes,
        "shop",
        "badname",
        "../../etc/evil",
        &[("a", "b")],
    );
    let plugin = FakePlugin::start(&bed.providers, "fake", files(&["ok"])).await;
    let node = NodeProcess::start(bed.options()).await;
    let huge = vec![b'x'; 2 << 20];
    let many: Vec<String> = (0..1025).map(|i| format!("f{i}")).collect();
    let many_refs: Vec<&str> = many.iter().map(String::as_str).collect();

    let cases = vec![
        Case {
            name: "missing volume id",
            edit: |r| r.volume_id.clear(),
            reply: files(&["a"]),
            code: Code::InvalidArgument,
            message: "volume_id is missing",
        },
        Case {
            name: "missing target",
            edit: |r| r.target_path.clear(),
            reply: files(&["a"]),
            code: Code::InvalidArgument,
            message: "target_path is missing",
        },
        Case {
            name: "missing capability",
            edit: |r| r.volume_capability = None,
            reply: files(&["a"]),
            code: Code::InvalidArgument,
            message: "volume_capability is missing",
        },
        Case {
            name: "block capability",
            edit: |r| {
                r.volume_capability.as_mut().unwrap().access_type =
                    Some(AccessType::Block(BlockVolume {}))
            },
            reply: files(&["a"]),
            code: Code::InvalidArgument,
            message: "block volumes",
        },
        Case {
            name: "readonly false",
            edit: |r| r.readonly = false,
            reply: files(&["a"]),
            code: Code::InvalidArgument,
            message: "readonly must be true",
        },
        Case {
            name: "relative target",
            edit: |r| r.target_path = "relative/mount".into(),
            reply: files(&["a"]),
            code: Code::InvalidArgument,
            message: "must be absolute and clean",
        },
        Case {
            name: "empty volume context",
            edit: |r| r.volume_context.clear(),
            reply: files(&["a"]),
            code: Code::InvalidArgument,
            message: "volume_context is missing",
        },
        Case {
            name: "no class attribute",
            edit: |r| {
                r.volume_context.remove("secretProviderClass");
            },
            reply: files(&["a"]),
            code: Code::InvalidArgument,
            message: "secretProviderClass",
        },
        Case {
            name: "unknown class",
            edit: |r| {
                r.volume_context
                    .insert("secretProviderClass".into(), "ghost".into());
            },
            reply: files(&["a"]),
            code: Code::NotFound,
            message: "failed to get SecretProviderClass shop/ghost: not found",
        },
        Case {
            name: "class of another namespace",
            edit: |r| {
                r.volume_context
                    .insert("csi.storage.k8s.io/pod.namespace".into(), "third".into());
            },
            reply: files(&["a"]),
            code: Code::NotFound,
            message: "SecretProviderClass third/db: not found",
        },
        Case {
            name: "provider missing",
            edit: |r| {
                r.volume_context
                    .insert("secretProviderClass".into(), "nowhere".into());
            },
            reply: files(&["a"]),
            code: Code::NotFound,
            message: "provider \"missing\" not found: no socket missing.sock in",
        },
        Case {
            name: "invalid provider name",
            edit: |r| {
                r.volume_context
                    .insert("secretProviderClass".into(), "badname".into());
            },
            reply: files(&["a"]),
            code: Code::InvalidArgument,
            message: "provider name \"../../etc/evil\" is invalid",
        },
        Case {
            name: "class without parameters",
            edit: |r| {
                r.volume_context
                    .insert("secretProviderClass".into(), "noparams".into());
            },
            reply: files(&["a"]),
            code: Code::InvalidArgument,
            message: "SecretProviderClass shop/noparams has no spec.parameters",
        },
        Case {
            name: "malformed tokens",
            edit: |r| {
                r.volume_context.insert(
                    "csi.storage.k8s.io/serviceAccount.tokens".into(),
                    "{\"vault\": \"eyJ-not-an-object\"".into(),
                );
            },
            reply: files(&["a"]),
            code: Code::InvalidArgument,
            message: "malformed JSON in csi.storage.k8s.io/serviceAccount.tokens",
        },
        Case {
            name: "parent escape",
            edit: no_edit,
            reply: files(&["../x"]),
            code: Code::Internal,
            message: "\"../x\" has a '..' component",
        },
        Case {
            name: "absolute path",
            edit: no_edit,
            reply: files(&["/etc/x"]),
            code: Code::Internal,
            message: "\"/etc/x\" is absolute",
        },
        Case {
            name: "nested escape",
            edit: no_edit,
            reply: files(&["a/../../x"]),
            code: Code::Internal,
            message: "'..' component",
        },
        Case {
            name: "empty name",
            edit: no_edit,
            reply: files(&[""]),
            code: Code::Internal,
            message: "file path is empty",
        },
        Case {
            name: "duplicates",
            edit: no_edit,
            reply: files(&["a", "a"]),
            code: Code::Internal,
            message: "\"a\" appears more than once",
        },
        Case {
            name: "reserved name",
            edit: no_edit,
            reply: files(&["..data"]),
            code: Code::Internal,
            message: "reserved",
        },
        Case {
            name: "huge file",
            edit: no_edit,
            reply: Reply::Files(vec![("big".into(), 0o644, huge.clone())]),
            code: Code::Internal,
            message: "files are too large",
        },
        Case {
            name: "too many files",
            edit: no_edit,
            reply: files(&many_refs),
            code: Code::Internal,
            message: "too many files",
        },
        Case {
            name: "setuid mode",
            edit: no_edit,
            reply: Reply::Files(vec![("a".into(), 0o4755, b"x".to_vec())]),
            code: Code::Internal,
            message: "only permission bits",
        },
        Case {
            name: "provider error code",
            edit: no_edit,
            reply: Reply::ErrorCode("BackendDown".into()),
            code: Code::Internal,
            message: "provider \"fake\" failed to mount: BackendDown",
        },
        Case {
            name: "provider denies",
            edit: no_edit,
            reply: Reply::Status(
                Code::PermissionDenied,
                "role app may not read secret/db".into(),
            ),
            code: Code::PermissionDenied,
            message: "role app may not read secret/db",
        },
        Case {
            name: "no object versions",
            edit: no_edit,
            reply: Reply::NoVersions,
            code: Code::Internal,
            message: "returned no object versions",
        },
        Case {
            name: "provider hangs",
            edit: no_edit,
            reply: Reply::Hang,
            code: Code::DeadlineExceeded,
            message: "did not answer within 2s",
        },
    ];

    for (n, case) in cases.into_iter().enumerate() {
        plugin.set_reply(case.reply);
        let target = bed.target(100 + n);
        let mut req = publish_request(&format!("bad-{n}"), &target, "db", "shop");
        (case.edit)(&mut req);
        let err = publish(&node, req).await.expect_err(case.name);
        assert_eq!(err.code(), case.code, "{}: {}", case.name, err.message());
        assert!(
            err.message().contains(case.message),
            "{}: {:?} does not contain {:?}",
            case.name,
            err.message(),
            case.message
        );
        assert!(
            mounts_under(&bed.root).is_empty(),
            "{}: mount left behind",
            case.name
        );
        assert!(!target.exists(), "{}: target left behind", case.name);
        assert!(
            bed.strays().is_empty(),
            "{}: wrote {:?}",
            case.name,
            bed.strays()
        );
    }
    assert!(!bed.root.parent().unwrap().join("x").exists());
    let logs = node.logs();
    assert!(
        !logs.contains("eyJ-not-an-object"),
        "token text leaked into logs"
    );
}

#[tokio::test]
async fn publish_and_unpublish_are_idempotent() {
    let bed = Bed::new();
    let plugin = FakePlugin::start(&bed.providers, "fake", Reply::files(&[("a", "1")])).await;
    let node = NodeProcess::start(bed.options()).await;
    let target = bed.target(1);
    publish(&node, publish_request("v", &target, "db", "shop"))
        .await
        .unwrap();
    let inode = std::fs::metadata(target.join("a")).unwrap().ino();
    publish(&node, publish_request("v", &target, "db", "shop"))
        .await
        .unwrap();
    assert_eq!(
        plugin.mount_calls(),
        1,
        "a republish without rotation asks nothing"
    );
    assert_eq!(std::fs::metadata(target.join("a")).unwrap().ino(), inode);
    assert_eq!(mounts_under(&target).len(), 1, "mounted once");

    unpublish(&node, "v", &target).await.unwrap();
    unpublish(&node, "v", &target).await.unwrap();
    let never = bed.target(2);
    unpublish(&node, "never", &never).await.unwrap();
    assert!(mounts_under(&bed.root).is_empty());
    let err = unpublish(&node, "", &never).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn concurrent_publishes_of_one_volume_never_race() {
    let bed = Bed::new();
    let slow = Reply::Delay(
        Duration::from_millis(500),
        Box::new(Reply::files(&[("a", "1")])),
    );
    let plugin = FakePlugin::start(&bed.providers, "fake", slow).await;
    let node = NodeProcess::start(bed.options()).await;
    let target = bed.target(1);
    let calls = (0..8).map(|_| publish(&node, publish_request("same", &target, "db", "shop")));
    let results = futures::future::join_all(calls).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let aborted = results
        .iter()
        .filter(|r| r.as_ref().is_err_and(|e| e.code() == Code::Aborted))
        .count();
    assert_eq!(ok, 1, "{results:?}");
    assert_eq!(aborted, 7, "{results:?}");
    assert_eq!(plugin.mount_calls(), 1);
    assert_eq!(mounts_under(&target).len(), 1);
    // Once the first is done, a retry is an idempotent success.
    publish(&node, publish_request("same", &target, "db", "shop"))
        .await
        .unwrap();
    unpublish(&node, "same", &target).await.unwrap();
    assert!(mounts_under(&bed.root).is_empty());
}

#[tokio::test]
async fn a_hundred_volumes_in_parallel_leave_no_mount() {
    let bed = Bed::new();
    let plugin = FakePlugin::start(
        &bed.providers,
        "fake",
        Reply::files(&[("a", "1"), ("b", "2")]),
    )
    .await;
    let node = NodeProcess::start(bed.options()).await;
    let publishes = (0..100).map(|n| {
        let target = bed.target(n);
        let node = &node;
        async move {
            publish(
                node,
                publish_request(&format!("v{n}"), &target, "db", "shop"),
            )
            .await
        }
    });
    for result in futures::future::join_all(publishes).await {
        result.unwrap();
    }
    assert_eq!(mounts_under(&bed.pods).len(), 100);
    assert_eq!(plugin.mount_calls(), 100);
    for n in 0..100 {
        assert_eq!(
            std::fs::read_to_string(bed.target(n).join("b")).unwrap(),
            "2"
        );
    }
    let unpublishes = (0..100).map(|n| {
        let target = bed.target(n);
        let node = &node;
        async move { unpublish(node, &format!("v{n}"), &target).await }
    });
    for result in futures::future::join_all(unpublishes).await {
        result.unwrap();
    }
    assert!(
        mounts_under(&bed.root).is_empty(),
        "{:?}",
        mounts_under(&bed.root)
    );
    let state = keymount::volume::journal::read_records(&node.work_dir.join("state")).unwrap();
    assert!(state.is_empty(), "volume records left: {:?}", state.keys());
}

#[tokio::test]
async fn a_restarted_node_recovers_its_volumes_from_disk() {
    let bed = Bed::new();
    let plugin = FakePlugin::start(
        &bed.providers,
        "fake",
        Reply::files(&[("token", "s3cr3t-token-value")]),
    )
    .await;
    let work = bed.root.join("node");
    std::fs::create_dir_all(&work).unwrap();
    let options = NodeOptions {
        work_dir: Some(work.clone()),
        ..bed.options()
    };
    let mut node = NodeProcess::start(options.clone()).await;
    let target = bed.target(1);
    publish(&node, publish_request("v", &target, "db", "shop"))
        .await
        .unwrap();
    node.kill();

    // The state directory holds metadata only.
    let mut state_text = String::new();
    for entry in std::fs::read_dir(work.join("state")).unwrap() {
        state_text += &std::fs::read_to_string(entry.unwrap().path()).unwrap();
    }
    assert!(state_text.contains("\"volumeId\":\"v\""), "{state_text}");
    assert!(
        !state_text.contains("s3cr3t-token-value"),
        "secret in state file"
    );

    let node = NodeProcess::start(options).await;
    assert!(node.logs().contains("volumes=1"), "state reloaded");
    // The recovered record makes a republish a no-op, as before the crash.
    publish(&node, publish_request("v", &target, "db", "shop"))
        .await
        .unwrap();
    assert_eq!(plugin.mount_calls(), 1);
    assert_eq!(
        std::fs::read_to_string(target.join("token")).unwrap(),
        "s3cr3t-token-value"
    );
    unpublish(&node, "v", &target).await.unwrap();
    assert!(mounts_under(&bed.root).is_empty());
    let state = keymount::volume::journal::read_records(&work.join("state")).unwrap();
    assert!(state.is_empty(), "volume records left: {:?}", state.keys());
}

#[tokio::test]
async fn rotation_fetches_only_after_the_interval_and_rewrites_only_changes() {
    let bed = Bed::new();
    let plugin = FakePlugin::start(&bed.providers, "fake", Reply::files(&[("a", "one")])).await;
    let mut options = bed.options();
    options.args.extend([
        "--enable-secret-rotation".to_string(),
        "--rotation-poll-interval=1s".to_string(),
    ]);
    let node = NodeProcess::start(options).await;
    let target = bed.target(1);
    let req = || publish_request("v", &target, "db", "shop");
    publish(&node, req()).await.unwrap();
    publish(&node, req()).await.unwrap();
    assert_eq!(
        plugin.mount_calls(),
        1,
        "inside the interval: no provider call"
    );

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = std::fs::metadata(target.join("a")).unwrap();
    publish(&node, req()).await.unwrap();
    assert_eq!(plugin.mount_calls(), 2, "after the interval: fetched");
    let after = std::fs::metadata(target.join("a")).unwrap();
    assert_eq!(
        (before.ino(), before.mtime()),
        (after.ino(), after.mtime()),
        "unchanged content is not rewritten"
    );

    plugin.set_reply(Reply::files(&[("a", "two")]));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    publish(&node, req()).await.unwrap();
    assert_eq!(std::fs::read_to_string(target.join("a")).unwrap(), "two");

    // A failed rotation keeps the old content and still answers OK (kubelet would remove it).
    plugin.set_reply(Reply::Status(Code::Unavailable, "backend down".into()));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    publish(&node, req()).await.unwrap();
    assert_eq!(std::fs::read_to_string(target.join("a")).unwrap(), "two");
    let (_, metrics) = node.get("/metrics").await.unwrap();
    assert!(
        metrics.contains("rotation_reconcile_error_total{provider=\"fake\""),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "rotation_reconcile_total{provider=\"fake\",os_type=\"linux\",rotated=\"true\"} 1"
        ),
        "{metrics}"
    );

    unpublish(&node, "v", &target).await.unwrap();
    assert!(mounts_under(&bed.root).is_empty());
}

/// Makes a file immutable (appends and renames over it fail, even for root) until dropped.
struct Immutable(PathBuf);

impl Immutable {
    fn set(path: PathBuf) -> Self {
        let status = std::process::Command::new("chattr")
            .arg("+i")
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success(), "chattr +i {}", path.display());
        Self(path)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test]
async fn a_journal_that_refuses_a_rotation_s_record_is_reported_and_written_later() {
    let bed = Bed::new();
    let reply = |value: &str, version: &str| {
        Reply::FilesVersions(
            vec![("a".into(), 0o644, value.as_bytes().to_vec())],
            vec![("a".into(), version.into())],
        )
    };
    let plugin = FakePlugin::start(&bed.providers, "fake", reply("one", "1")).await;
    let mut options = bed.options();
    options.args.extend([
        "--enable-secret-rotation".to_string(),
        "--rotation-poll-interval=1s".to_string(),
    ]);
    let node = NodeProcess::start(options).await;
    let target = bed.target(1);
    let req = || publish_request("v", &target, "db", "shop");
    publish(&node, req()).await.unwrap();
    let state = node.work_dir.join("state");
    let recorded = || {
        keymount::volume::journal::read_records(&state)
            .unwrap()
            .remove("v")
            .expect("record of v")
            .versions[0]
            .version
            .clone()
    };
    assert_eq!(recorded(), "1");

    // The journal refuses writes; the provider has a new version. The rotation itself
    // succeeds (the record is kept in memory), and the node says its journal is behind.
    let frozen = Immutable::set(state.join("volumes.jsonl"));
    plugin.set_reply(reply("two", "2"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    publish(&node, req()).await.unwrap();
    assert_eq!(std::fs::read_to_string(target.join("a")).unwrap(), "two");
    assert_eq!(recorded(), "1", "the journal could not be written");
    let (_, metrics) = node.get("/metrics").await.unwrap();
    assert!(
        metrics.contains("keymount_state_journal_writable 0"),
        "{metrics}"
    );
    let (_, ready) = node.get("/readyz").await.unwrap();
    assert!(ready.contains("journal not writable"), "{ready}");
    // In memory the new versions are known: an unchanged republish does not fetch again
    // before the interval, and the next one after it records them.
    drop(frozen);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    publish(&node, req()).await.unwrap();
    assert_eq!(plugin.mount_calls(), 3, "fetched again");
    assert_eq!(recorded(), "2", "the next change wrote the journal");
    let (_, metrics) = node.get("/metrics").await.unwrap();
    assert!(
        metrics.contains("keymount_state_journal_writable 1"),
        "{metrics}"
    );
    assert_eq!(std::fs::read_to_string(target.join("a")).unwrap(), "two");

    unpublish(&node, "v", &target).await.unwrap();
    assert!(mounts_under(&bed.root).is_empty());
}

#[tokio::test]
async fn sigterm_stops_the_node_cleanly_and_removes_its_socket() {
    let bed = Bed::new();
    let mut node = NodeProcess::start(bed.options()).await;
    let socket = node.socket.clone();
    let status = node.terminate();
    assert!(status.success(), "{status}");
    assert!(!socket.exists());
}

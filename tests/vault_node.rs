//! The vault provider end to end: the real `keymount node` binary in local mode over its CSI
//! socket with real tmpfs mounts, the `keymount fetch` and `keymount csi` commands, and the
//! README demo script itself.

mod harness;
mod support;
mod vault_support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use harness::mounts::mount_entry;
use harness::node::{
    NodeOptions, NodeProcess, pod_uid, publish_request, unpublish_request, write_class,
};
use keymount::provider::tokens::TOKENS_KEY;
use serde_json::json;
use support::openbao::OpenBao;
use tonic::Code;
use vault_support::{Signer, jwt_setup, tokens_json};

const OBJECTS: &str = "- {objectName: password, secretPath: secret/data/app, secretKey: password, filePermission: 0600}\n- {objectName: app.json, secretPath: secret/data/app}";

async fn vault() -> (OpenBao, Signer) {
    let bao = OpenBao::start().await;
    let signer = Signer::new();
    jwt_setup(
        &bao,
        "",
        &signer,
        "web",
        "shop",
        "web",
        &["secret/data/app"],
    )
    .await;
    bao.kv2_put("secret", "app", json!({"password": "node-e2e-secret-42"}))
        .await;
    (bao, signer)
}

fn class_params(bao: &OpenBao) -> Vec<(&str, &str)> {
    vec![
        ("vaultAddress", bao.addr()),
        ("roleName", "web"),
        ("vaultAuthMountPath", "jwt"),
        ("objects", OBJECTS),
    ]
}

#[tokio::test]
async fn node_publishes_vault_secrets_onto_tmpfs_with_the_pods_token() {
    let (bao, signer) = vault().await;
    let work = tempfile::tempdir().unwrap();
    let classes = work.path().join("classes");
    write_class(&classes, "shop", "app", "vault", &class_params(&bao));
    let node = NodeProcess::start(NodeOptions {
        class_dir: Some(classes),
        ..Default::default()
    })
    .await;
    let mut client = node.node_client().await;

    let token = signer.token("shop", "web", "vault");
    let target = node.target(&pod_uid(1), "secrets");
    let mut request = publish_request("vol-1", &target, "app", "shop");
    request.volume_context.insert(
        "csi.storage.k8s.io/serviceAccount.name".into(),
        "web".into(),
    );
    request
        .volume_context
        .insert(TOKENS_KEY.into(), tokens_json("vault", &token));
    client
        .node_publish_volume(request.clone())
        .await
        .expect("publish");
    assert!(mount_entry(&target).is_some(), "target is a mount point");
    assert_eq!(
        std::fs::read_to_string(target.join("password")).unwrap(),
        "node-e2e-secret-42"
    );
    let mode = std::fs::metadata(target.join("password"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let whole: serde_json::Value =
        serde_json::from_slice(&std::fs::read(target.join("app.json")).unwrap()).unwrap();
    assert_eq!(whole["data"]["data"]["password"], "node-e2e-secret-42");

    // Another ServiceAccount's token is refused by Vault; the code reaches kubelet.
    let other = node.target(&pod_uid(2), "secrets");
    let mut denied = publish_request("vol-2", &other, "app", "shop");
    denied.volume_context.insert(
        TOKENS_KEY.into(),
        tokens_json("vault", &signer.token("shop", "other", "vault")),
    );
    let status = client.node_publish_volume(denied).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        mount_entry(&other).is_none(),
        "nothing stays mounted after a failed publish"
    );

    // No token for the audience: a clear FailedPrecondition.
    let mut missing = publish_request("vol-3", &other, "app", "shop");
    missing
        .volume_context
        .insert(TOKENS_KEY.into(), tokens_json("other-aud", &token));
    let status = client.node_publish_volume(missing).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("tokenRequests"),
        "{}",
        status.message()
    );

    client
        .node_unpublish_volume(unpublish_request("vol-1", &target))
        .await
        .expect("unpublish");
    assert!(mount_entry(&target).is_none() && !target.exists());

    let logs = node.logs();
    assert!(
        logs.contains("volume published"),
        "node logs were captured:\n{logs}"
    );
    assert!(
        !logs.contains("node-e2e-secret-42"),
        "secret value in node logs"
    );
    assert!(!logs.contains(&token), "token in node logs");
}

#[tokio::test]
async fn fetch_and_csi_commands() {
    let (bao, signer) = vault().await;
    let work = tempfile::tempdir().unwrap();
    let classes = work.path().join("classes");
    write_class(&classes, "shop", "app", "vault", &class_params(&bao));
    let token_file = work.path().join("token");
    std::fs::write(&token_file, signer.token("shop", "web", "vault")).unwrap();
    let out_dir = work.path().join("out");
    let bin = env!("CARGO_BIN_EXE_keymount");
    let fetch = Command::new(bin)
        .arg("fetch")
        .arg("--class")
        .arg(classes.join("shop-app.yaml"))
        .arg("--token-file")
        .arg(&token_file)
        .arg("--out")
        .arg(&out_dir)
        .args([
            "--namespace",
            "shop",
            "--service-account",
            "web",
            "--builtin-providers",
            "vault",
            "--allowed-store-addresses",
            "127.0.0.1",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&fetch.stdout);
    assert!(
        fetch.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&fetch.stderr)
    );
    assert!(stdout.contains("password mode 0600"), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(out_dir.join("password")).unwrap(),
        "node-e2e-secret-42"
    );
    assert!(
        out_dir.join("..data").is_symlink(),
        "same layout as a volume"
    );
    assert!(!stdout.contains("node-e2e-secret-42"));

    let node = NodeProcess::start(NodeOptions {
        class_dir: Some(classes),
        ..Default::default()
    })
    .await;
    let endpoint = format!("unix://{}", node.socket.display());
    let target = node.target(&pod_uid(1), "secrets");
    let other = node.target(&pod_uid(2), "secrets");
    let csi = |args: &[&str]| {
        Command::new(bin)
            .args(["csi", "--endpoint", &endpoint])
            .args(args)
            .output()
            .unwrap()
    };
    let target_s = target.display().to_string();
    let token_s = token_file.display().to_string();
    let publish = csi(&[
        "publish",
        "--volume-id",
        "v1",
        "--target-path",
        &target_s,
        "--class",
        "app",
        "--namespace",
        "shop",
        "--service-account",
        "web",
        "--token-file",
        &token_s,
    ]);
    assert!(
        publish.status.success(),
        "{}",
        String::from_utf8_lossy(&publish.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(target.join("password")).unwrap(),
        "node-e2e-secret-42"
    );
    let info = csi(&["info"]);
    assert!(String::from_utf8_lossy(&info.stdout).contains("secrets-store.csi.k8s.io"));
    let wrong = csi(&[
        "publish",
        "--volume-id",
        "v2",
        "--target-path",
        &other.display().to_string(),
        "--class",
        "nope",
        "--namespace",
        "shop",
    ]);
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("NotFound"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
    let unpublish = csi(&["unpublish", "--volume-id", "v1", "--target-path", &target_s]);
    assert!(unpublish.status.success());
    assert!(!target.exists());
}

#[test]
fn readme_demo_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(root.join("scripts/demo"))
        .env("KEYMOUNT_BIN", env!("CARGO_BIN_EXE_keymount"))
        .output()
        .expect("run scripts/demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed:\n{stdout}\n{stderr}");
    for expected in [
        "db-password: first-password-1",
        "db-password: rotated-password-2",
        "unpublished volume demo-volume",
        "Demo complete",
        "everything it started is stopped",
    ] {
        assert!(
            stdout.contains(expected),
            "demo output lacks {expected:?}:\n{stdout}"
        );
    }
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(
        !mounts.contains("/keymount-demo."),
        "the demo left a mount behind:\n{mounts}"
    );
}

//! keymount's own registration with kubelet (`--register-with-kubelet`), on the real binary:
//! kubelet's calls on `<kubelet root>/plugins_registry/<driver>-reg.sock` (tonic, and Python
//! grpcio with the socket path as `:authority`, as kubelet < 1.26 sends), the answer to a
//! refusal in `/readyz` and the gauge, the socket made again after it disappears (a kubelet
//! restart then registers again), and removed at shutdown.

mod harness;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use harness::grpcio::grpcio_calls;
use harness::node::{NodeOptions, NodeProcess, channel};
use keymount::proto::registration::registration_client::RegistrationClient;
use keymount::proto::registration::{InfoRequest, PluginInfo, RegistrationStatus};
use prost::Message;

const DRIVER: &str = "secrets-store.csi.k8s.io";

async fn start(extra: &[&str]) -> (NodeProcess, tempfile::TempDir) {
    let classes = tempfile::tempdir().unwrap();
    let mut args = vec![
        "--register-with-kubelet".to_owned(),
        "--registration-check-interval=100ms".to_owned(),
    ];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let node = NodeProcess::start(NodeOptions {
        class_dir: Some(classes.path().to_owned()),
        args,
        ..NodeOptions::default()
    })
    .await;
    (node, classes)
}

fn registration_socket(node: &NodeProcess) -> PathBuf {
    node.kubelet_root
        .join("plugins_registry")
        .join(format!("{DRIVER}-reg.sock"))
}

async fn wait_for(path: &Path, present: bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while path.exists() != present {
        assert!(
            Instant::now() < deadline,
            "{} still {}",
            path.display(),
            if present { "missing" } else { "there" }
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn get_info(socket: &Path) -> PluginInfo {
    RegistrationClient::new(channel(socket).await)
        .get_info(InfoRequest {})
        .await
        .unwrap()
        .into_inner()
}

async fn notify(socket: &Path, registered: bool, error: &str) {
    RegistrationClient::new(channel(socket).await)
        .notify_registration_status(RegistrationStatus {
            plugin_registered: registered,
            error: error.into(),
        })
        .await
        .unwrap();
}

async fn gauge(node: &NodeProcess) -> String {
    let (_, metrics) = node.get("/metrics").await.unwrap();
    metrics
        .lines()
        .find(|l| l.starts_with("keymount_kubelet_registered "))
        .unwrap_or_else(|| panic!("no gauge in {metrics}"))
        .to_owned()
}

#[tokio::test]
async fn kubelet_calls_register_and_the_socket_comes_back() {
    let (mut node, _classes) = start(&[]).await;
    let socket = registration_socket(&node);
    wait_for(&socket, true).await;
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    let info = get_info(&socket).await;
    assert_eq!(info.r#type, "CSIPlugin");
    assert_eq!(info.name, DRIVER);
    assert_eq!(info.supported_versions, ["1.0.0"]);
    // The harness's CSI socket is outside the kubelet root: the chart's host path is told.
    assert_eq!(
        Path::new(&info.endpoint),
        node.kubelet_root.join("plugins/csi-secrets-store/csi.sock")
    );
    assert_eq!(gauge(&node).await, "keymount_kubelet_registered 0");

    notify(
        &socket,
        false,
        "plugin name conflicts with an existing driver",
    )
    .await;
    let (code, body) = node.get("/readyz").await.unwrap();
    assert_eq!(code, 503);
    assert!(body.contains("plugin name conflicts"), "{body}");
    assert!(node.logs().contains("kubelet refused the registration"));
    assert_eq!(gauge(&node).await, "keymount_kubelet_registered 0");

    notify(&socket, true, "").await;
    assert_eq!(node.get("/readyz").await.unwrap().0, 200);
    assert_eq!(gauge(&node).await, "keymount_kubelet_registered 1");

    // The socket goes (kubelet restarted with a cleared directory, an admin): made again,
    // with the registration to be confirmed again, and served.
    std::fs::remove_file(&socket).unwrap();
    wait_for(&socket, true).await;
    assert_eq!(get_info(&socket).await.name, DRIVER);
    assert_eq!(gauge(&node).await, "keymount_kubelet_registered 0");
    notify(&socket, true, "").await;
    assert_eq!(gauge(&node).await, "keymount_kubelet_registered 1");
    assert!(node.logs().contains("the registration socket disappeared"));

    // The CSI socket was served throughout.
    assert!(node.socket.exists());

    // Shutdown removes the socket, so kubelet forgets the driver.
    assert!(node.terminate().success());
    assert!(!socket.exists(), "registration socket left behind");
}

#[tokio::test]
async fn python_grpcio_with_a_path_authority_gets_the_info() {
    let endpoint = "/var/lib/kubelet/plugins/csi-secrets-store/csi.sock";
    let (node, _classes) = start(&[&format!("--kubelet-registration-path={endpoint}")]).await;
    let socket = registration_socket(&node);
    wait_for(&socket, true).await;
    let path = socket.display().to_string();
    let results = tokio::task::spawn_blocking(move || {
        grpcio_calls(
            Path::new(&path),
            2,
            Some(&path),
            &["/pluginregistration.Registration/GetInfo"],
        )
    })
    .await
    .unwrap();
    assert_eq!(results.len(), 2);
    for (_, outcome) in results {
        let bytes = outcome.unwrap_or_else(|e| panic!("GetInfo failed for grpcio: {e:?}"));
        let info = PluginInfo::decode(&bytes[..]).unwrap();
        assert_eq!(info.name, DRIVER);
        assert_eq!(info.endpoint, endpoint);
    }
}

#[tokio::test]
async fn without_the_flag_there_is_no_registration_socket() {
    let classes = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(NodeOptions {
        class_dir: Some(classes.path().to_owned()),
        ..NodeOptions::default()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!registration_socket(&node).exists());
    assert_eq!(node.get("/readyz").await.unwrap().0, 200);
}

//! The real `keymount node` binary on a unix socket in a temp dir, and a CSI client for it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use keymount::proto::csi::identity_client::IdentityClient;
use keymount::proto::csi::node_client::NodeClient;
use keymount::proto::csi::volume_capability::{AccessMode, AccessType, MountVolume};
use keymount::proto::csi::{
    NodePublishVolumeRequest, NodeUnpublishVolumeRequest, VolumeCapability,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

/// How to start the node.
#[derive(Debug, Clone, Default)]
pub(crate) struct NodeOptions {
    /// Local mode: classes from this directory.
    pub(crate) class_dir: Option<PathBuf>,
    /// API server mode: this kubeconfig.
    pub(crate) kubeconfig: Option<PathBuf>,
    /// Directory of provider plugin sockets.
    pub(crate) provider_dir: Option<PathBuf>,
    /// Extra flags.
    pub(crate) args: Vec<String>,
    /// Extra environment.
    pub(crate) env: Vec<(String, String)>,
    /// Reuse this work dir (socket, state, logs) instead of a new one: restart tests.
    pub(crate) work_dir: Option<PathBuf>,
    /// kubelet's root directory (`--kubelet-root-dir`); `<work dir>/kubelet` when absent.
    /// Targets must be `<root>/pods/<uid>/volumes/kubernetes.io~csi/<volume>/mount`: see
    /// `kubelet_target` and `NodeProcess::target`.
    pub(crate) kubelet_root: Option<PathBuf>,
}

/// A pod UID of kubelet's shape (a UUID) for test pod `n`.
pub(crate) fn pod_uid(n: usize) -> String {
    format!("0b2e1f4c-0000-4000-8000-{n:012x}")
}

/// Where kubelet mounts CSI volume `volume` of pod `pod_uid` below kubelet root `root`.
pub(crate) fn kubelet_target(root: &Path, pod_uid: &str, volume: &str) -> PathBuf {
    root.join("pods")
        .join(pod_uid)
        .join("volumes/kubernetes.io~csi")
        .join(volume)
        .join("mount")
}

/// A running `keymount node`; killed when dropped.
#[derive(Debug)]
pub(crate) struct NodeProcess {
    child: Option<Child>,
    pub(crate) work_dir: PathBuf,
    pub(crate) socket: PathBuf,
    pub(crate) metrics: SocketAddr,
    pub(crate) log: PathBuf,
    /// The kubelet root the node was given.
    pub(crate) kubelet_root: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

/// A TCP port free on loopback right now.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl NodeProcess {
    /// Starts the node and waits until `/readyz` answers 200.
    pub(crate) async fn start(options: NodeOptions) -> Self {
        let (tmp, work_dir) = match &options.work_dir {
            Some(dir) => (None, dir.clone()),
            None => {
                let tmp = tempfile::tempdir().unwrap();
                let dir = tmp.path().to_owned();
                (Some(tmp), dir)
            }
        };
        let socket = work_dir.join("csi.sock");
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = work_dir.join("node.log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let provider_dir = options
            .provider_dir
            .clone()
            .unwrap_or_else(|| work_dir.join("providers"));
        let kubelet_root = options
            .kubelet_root
            .clone()
            .unwrap_or_else(|| work_dir.join("kubelet"));
        std::fs::create_dir_all(&kubelet_root).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keymount"));
        cmd.arg("node")
            .arg("--nodeid=test-node")
            .arg(format!("--endpoint=unix://{}", socket.display()))
            .arg(format!("--metrics-addr={metrics}"))
            .arg(format!("--provider-volume={}", provider_dir.display()))
            .arg(format!(
                "--additional-provider-volume-paths={}",
                provider_dir.display()
            ))
            .arg(format!("--state-dir={}", work_dir.join("state").display()))
            .arg(format!("--kubelet-root-dir={}", kubelet_root.display()))
            .env(
                "RUST_LOG",
                "debug,hyper=info,h2=info,tower=info,kube=info,rustls=info",
            )
            .env_remove("KUBECONFIG")
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file);
        if let Some(dir) = &options.class_dir {
            cmd.arg(format!("--class-dir={}", dir.display()));
        }
        if let Some(kubeconfig) = &options.kubeconfig {
            cmd.arg(format!("--kubeconfig={}", kubeconfig.display()));
        }
        if !options
            .args
            .iter()
            .any(|a| a.starts_with("--allowed-store-addresses"))
        {
            // OpenBao, moto and test servers listen on loopback, which a class may not name
            // unless the admin allows it.
            cmd.arg("--allowed-store-addresses=127.0.0.1");
        }
        if !options
            .args
            .iter()
            .any(|a| a.starts_with("--api-cache-ttl"))
        {
            // Tests edit classes and expect the next republish to see the edit within a few
            // seconds; tests/api_lookups.rs checks the default's caching.
            cmd.arg("--api-cache-ttl=1s");
        }
        cmd.args(&options.args);
        for (k, v) in &options.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn keymount node");
        let mut node = Self {
            child: Some(child),
            work_dir,
            socket,
            metrics,
            log,
            kubelet_root,
            _tmp: tmp,
        };
        node.wait_ready().await;
        node
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("keymount node exited with {status}:\n{}", self.logs());
            }
            if self
                .get("/readyz")
                .await
                .is_some_and(|(code, _)| code == 200)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "keymount node not ready after 30s:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A plain HTTP GET on the metrics/health server: (status, body).
    pub(crate) async fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream = tokio::net::TcpStream::connect(self.metrics).await.ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        let code = response.split(' ').nth(1)?.parse().ok()?;
        let body = response.split_once("\r\n\r\n")?.1.to_owned();
        Some((code, body))
    }

    /// The target path of `volume` of pod `pod_uid` under this node's kubelet root, with
    /// the directories kubelet makes before NodePublishVolume (up to `<volume>/`; the
    /// `mount` directory itself is keymount's to make).
    pub(crate) fn target(&self, pod_uid: &str, volume: &str) -> PathBuf {
        let target = kubelet_target(&self.kubelet_root, pod_uid, volume);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        target
    }

    /// The node's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("node running").id()
    }

    /// Everything the node logged so far.
    pub(crate) fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A CSI Node client over the socket.
    pub(crate) async fn node_client(&self) -> NodeClient<Channel> {
        NodeClient::new(channel(&self.socket).await)
    }

    /// A CSI Identity client over the socket.
    pub(crate) async fn identity_client(&self) -> IdentityClient<Channel> {
        IdentityClient::new(channel(&self.socket).await)
    }

    /// SIGKILL, as a crash.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and returns at once (the node drains; see `wait_exit`).
    pub(crate) fn send_sigterm(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits up to `timeout` for the process to exit; returns its status, or `None` if it
    /// is still running.
    pub(crate) async fn wait_exit(
        &mut self,
        timeout: Duration,
    ) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .expect("node running")
                .try_wait()
                .unwrap()
            {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status.
    pub(crate) fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("node running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        child.wait().unwrap()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A gRPC channel over a unix socket.
pub(crate) async fn channel(socket: &Path) -> Channel {
    keymount::unix_channel::connect(socket)
        .await
        .expect("connect to CSI socket")
}

/// A publish request the way kubelet sends one for an inline volume.
pub(crate) fn publish_request(
    volume_id: &str,
    target: &Path,
    class: &str,
    namespace: &str,
) -> NodePublishVolumeRequest {
    let volume_context: HashMap<String, String> = [
        ("secretProviderClass", class),
        ("csi.storage.k8s.io/pod.name", "app-0"),
        ("csi.storage.k8s.io/pod.namespace", namespace),
        (
            "csi.storage.k8s.io/pod.uid",
            "0b2e1f4c-0000-4000-8000-000000000001",
        ),
        ("csi.storage.k8s.io/serviceAccount.name", "app"),
        ("csi.storage.k8s.io/ephemeral", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    NodePublishVolumeRequest {
        volume_id: volume_id.into(),
        target_path: target.display().to_string(),
        volume_capability: Some(VolumeCapability {
            access_type: Some(AccessType::Mount(MountVolume::default())),
            access_mode: Some(AccessMode { mode: 1 }),
        }),
        readonly: true,
        volume_context,
        ..Default::default()
    }
}

/// The matching unpublish request.
pub(crate) fn unpublish_request(volume_id: &str, target: &Path) -> NodeUnpublishVolumeRequest {
    NodeUnpublishVolumeRequest {
        volume_id: volume_id.into(),
        target_path: target.display().to_string(),
    }
}

/// Writes a SecretProviderClass manifest into a class directory.
pub(crate) fn write_class(
    dir: &Path,
    namespace: &str,
    name: &str,
    provider: &str,
    params: &[(&str, &str)],
) {
    std::fs::create_dir_all(dir).unwrap();
    let mut yaml = format!(
        "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  provider: {provider}\n"
    );
    if !params.is_empty() {
        yaml.push_str("  parameters:\n");
        for (k, v) in params {
            yaml.push_str(&format!("    {k}: {v:?}\n"));
        }
    }
    std::fs::write(dir.join(format!("{namespace}-{name}.yaml")), yaml).unwrap();
}

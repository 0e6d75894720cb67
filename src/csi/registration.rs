//! Registering with kubelet without the node-driver-registrar sidecar: keymount serves
//! kubelet's plugin registration API (`pluginregistration.Registration`) on
//! `<kubelet root>/plugins_registry/<driver>-reg.sock`, which kubelet's plugin watcher finds
//! and calls (`GetInfo`, then `NotifyRegistrationStatus`).
//!
//! The socket is made like the CSI socket (`server::bind`: 0600 from the first instant, bound
//! in a private directory whose `.`-name kubelet's watcher ignores, renamed into place) and
//! served through the same `:authority` adapter (kubelet < 1.26 sends the socket path). It is
//! checked every `check_interval`: when it is gone (a kubelet restart or an admin may clear
//! the directory), it is made again, and kubelet, which watches the directory, registers
//! keymount again; keymount itself keeps running. At shutdown it is removed, if it is still
//! the one this process made, so kubelet forgets the driver until the next keymount starts.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::server::{self, SocketId};
use crate::metrics::Metrics;
use crate::proto::registration::registration_server::{Registration, RegistrationServer};
use crate::proto::registration::{
    InfoRequest, PluginInfo, RegistrationStatus, RegistrationStatusResponse,
};

/// The plugin type kubelet expects from a CSI driver.
const CSI_PLUGIN: &str = "CSIPlugin";
/// CSI versions keymount speaks.
const SUPPORTED_VERSIONS: &[&str] = &["1.0.0"];
/// Where upstream's chart (and keymount's) puts the CSI socket below kubelet's root.
pub(crate) const DEFAULT_PLUGIN_DIR: &str = "plugins/csi-secrets-store";

/// Where and what to register.
#[derive(Debug, Clone)]
pub(crate) struct RegistrationSettings {
    /// The registration socket: `<kubelet root>/plugins_registry/<driver>-reg.sock`.
    pub(crate) socket: PathBuf,
    /// The CSI driver name.
    pub(crate) driver_name: String,
    /// The CSI socket as kubelet on the host sees it.
    pub(crate) endpoint: PathBuf,
    /// How often the socket's presence is checked.
    pub(crate) check_interval: Duration,
}

impl RegistrationSettings {
    /// The registration socket of `driver_name` below kubelet root `root`.
    pub(crate) fn socket_path(root: &Path, driver_name: &str) -> PathBuf {
        root.join("plugins_registry")
            .join(format!("{driver_name}-reg.sock"))
    }

    /// The CSI socket as kubelet sees it when not given: the CSI socket itself if it is below
    /// kubelet's root (keymount runs on the host), else `<root>/plugins/csi-secrets-store/`
    /// and the socket's file name (keymount runs in the chart's container, where the host's
    /// plugin directory is mounted at `/csi`).
    pub(crate) fn default_endpoint(root: &Path, csi_socket: &Path) -> PathBuf {
        if csi_socket.starts_with(root) {
            return csi_socket.to_owned();
        }
        let name = csi_socket
            .file_name()
            .unwrap_or(std::ffi::OsStr::new("csi.sock"));
        root.join(DEFAULT_PLUGIN_DIR).join(name)
    }
}

/// What kubelet said about the registration last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KubeletStatus {
    /// kubelet has not answered since the socket was (re)made.
    Waiting,
    Registered,
    /// kubelet refused the registration, with its reason.
    Refused(String),
}

/// The registration's state, read by `/readyz` and the `keymount_kubelet_registered` gauge.
#[derive(Debug)]
pub(crate) struct KubeletRegistration {
    status: Mutex<KubeletStatus>,
    metrics: Arc<Metrics>,
}

impl KubeletRegistration {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        metrics.kubelet_registered(false);
        Self {
            status: Mutex::new(KubeletStatus::Waiting),
            metrics,
        }
    }

    pub(crate) fn status(&self) -> KubeletStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set(&self, status: KubeletStatus) {
        self.metrics
            .kubelet_registered(status == KubeletStatus::Registered);
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = status;
    }
}

/// The tonic service kubelet calls.
#[derive(Debug, Clone)]
struct RegistrationService {
    info: PluginInfo,
    state: Arc<KubeletRegistration>,
}

#[tonic::async_trait]
impl Registration for RegistrationService {
    async fn get_info(&self, _: Request<InfoRequest>) -> Result<Response<PluginInfo>, Status> {
        tracing::info!(endpoint = %self.info.endpoint, "kubelet asked for the plugin info");
        Ok(Response::new(self.info.clone()))
    }

    async fn notify_registration_status(
        &self,
        request: Request<RegistrationStatus>,
    ) -> Result<Response<RegistrationStatusResponse>, Status> {
        let status = request.into_inner();
        if status.plugin_registered {
            tracing::info!("registered with kubelet");
            self.state.set(KubeletStatus::Registered);
        } else {
            tracing::error!(error = %status.error, "kubelet refused the registration");
            self.state.set(KubeletStatus::Refused(status.error));
        }
        Ok(Response::new(RegistrationStatusResponse {}))
    }
}

/// Serves the registration socket until `shutdown`, making it again whenever it disappears;
/// removes it at the end.
pub(crate) async fn run(
    settings: RegistrationSettings,
    state: Arc<KubeletRegistration>,
    shutdown: CancellationToken,
) {
    let service = RegistrationService {
        info: PluginInfo {
            r#type: CSI_PLUGIN.into(),
            name: settings.driver_name.clone(),
            endpoint: settings.endpoint.display().to_string(),
            supported_versions: SUPPORTED_VERSIONS.iter().map(|v| (*v).into()).collect(),
        },
        state: state.clone(),
    };
    let socket = &settings.socket;
    let mut first = true;
    let mut occupied_logged = false;
    while !shutdown.is_cancelled() {
        // A stale socket of an earlier keymount is replaced at start; later, something that
        // appeared at the path after ours vanished is not ours to remove.
        if !first && std::fs::symlink_metadata(socket).is_ok() {
            if !occupied_logged {
                tracing::warn!(socket = %socket.display(), "the registration socket was replaced by another file; waiting for it to go");
                occupied_logged = true;
            }
            pause(settings.check_interval, &shutdown).await;
            continue;
        }
        // Before the socket appears: kubelet's answer about an earlier socket is void.
        state.set(KubeletStatus::Waiting);
        let listener = match server::bind(socket) {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(%error, "cannot make the kubelet registration socket; trying again");
                pause(settings.check_interval, &shutdown).await;
                continue;
            }
        };
        first = false;
        occupied_logged = false;
        let ours = SocketId::of(socket);
        tracing::info!(socket = %socket.display(), endpoint = %settings.endpoint.display(), "serving kubelet plugin registration");
        let gone = shutdown.child_token();
        let serve = server::unix_server()
            .add_service(RegistrationServer::new(service.clone()))
            .serve_with_incoming_shutdown(
                server::incoming(listener),
                gone.clone().cancelled_owned(),
            );
        let (served, ()) = tokio::join!(
            serve,
            watch(socket, ours, settings.check_interval, gone.clone())
        );
        if let Err(error) = served {
            tracing::error!(%error, "kubelet registration server failed; making the socket again");
            gone.cancel();
        }
        if shutdown.is_cancelled() {
            ours.remove_if_same(socket);
        } else {
            tracing::warn!(socket = %socket.display(), "the registration socket disappeared; making it again so that kubelet registers keymount again");
        }
    }
}

/// Cancels `gone` when `socket` no longer names the socket `ours` (or when `gone` fires
/// anyway).
async fn watch(socket: &Path, ours: SocketId, interval: Duration, gone: CancellationToken) {
    loop {
        tokio::select! {
            () = gone.cancelled() => return,
            () = tokio::time::sleep(interval) => {
                if !ours.same_file(socket) {
                    gone.cancel();
                    return;
                }
            }
        }
    }
}

async fn pause(interval: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(interval) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_kubelet_and_the_chart() {
        let root = Path::new("/var/lib/kubelet");
        assert_eq!(
            RegistrationSettings::socket_path(root, "secrets-store.csi.k8s.io"),
            Path::new("/var/lib/kubelet/plugins_registry/secrets-store.csi.k8s.io-reg.sock")
        );
        assert_eq!(
            RegistrationSettings::default_endpoint(root, Path::new("/csi/csi.sock")),
            Path::new("/var/lib/kubelet/plugins/csi-secrets-store/csi.sock")
        );
        let on_host = Path::new("/var/lib/kubelet/plugins/km/csi.sock");
        assert_eq!(
            RegistrationSettings::default_endpoint(root, on_host),
            on_host
        );
    }

    #[test]
    fn kubelet_status_drives_the_gauge() {
        let metrics = Arc::new(Metrics::new());
        let state = KubeletRegistration::new(metrics.clone());
        assert!(metrics.encode().contains("keymount_kubelet_registered 0"));
        state.set(KubeletStatus::Registered);
        assert!(metrics.encode().contains("keymount_kubelet_registered 1"));
        state.set(KubeletStatus::Refused("no".into()));
        assert!(metrics.encode().contains("keymount_kubelet_registered 0"));
        assert_eq!(state.status(), KubeletStatus::Refused("no".into()));
    }
}

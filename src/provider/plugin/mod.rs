//! Client for external provider plugins (`v1alpha1.CSIDriverProvider` on `<dir>/<name>.sock`),
//! so every existing provider works with keymount unchanged.

mod error;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::OnceCell;
use tonic::transport::Channel;

pub(crate) use self::error::PluginError;
use super::{MountInput, MountOutput, ObjectVersion, Provider, ProviderError, ResolveError};
use crate::fs::atomic_writer::Payload;
use crate::proto::provider as pb;
use crate::proto::provider::csi_driver_provider_client::CsiDriverProviderClient;
use crate::provider::tokens::TOKENS_KEY;
use crate::redact::Redacted;

/// The API version keymount speaks to plugins.
pub(crate) const API_VERSION: &str = "v1alpha1";

/// How keymount dials and calls external plugins.
#[derive(Debug, Clone)]
pub struct PluginSettings {
    /// Directories searched, in order, for `<provider>.sock`.
    pub dirs: Vec<PathBuf>,
    /// Largest response accepted, in bytes.
    pub max_message_bytes: usize,
    /// Attempts for a call that fails with UNAVAILABLE.
    pub attempts: u32,
    /// Wait before the second attempt; it grows by 1.5x per attempt.
    pub backoff: Duration,
}

impl Default for PluginSettings {
    fn default() -> Self {
        Self {
            dirs: vec![
                PathBuf::from("/etc/kubernetes/secrets-store-csi-providers"),
                PathBuf::from("/var/run/secrets-store-csi-providers"),
            ],
            max_message_bytes: 4 * 1024 * 1024,
            attempts: 3,
            backoff: Duration::from_millis(500),
        }
    }
}

/// Plugin clients, one per socket path, created on first use.
#[derive(Debug)]
pub struct PluginClients {
    settings: PluginSettings,
    clients: Mutex<HashMap<PathBuf, Arc<PluginProvider>>>,
}

impl PluginClients {
    /// Clients with these settings.
    pub fn new(settings: PluginSettings) -> Self {
        Self {
            settings,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The client for plugin `name`; the socket is looked up on every call, so a plugin that
    /// starts after keymount (or moves) is found.
    pub(crate) fn get(&self, name: &str) -> Result<Arc<dyn super::Provider>, ResolveError> {
        let socket = self
            .settings
            .dirs
            .iter()
            .map(|dir| dir.join(format!("{name}.sock")))
            .find(|path| path.exists())
            .ok_or_else(|| ResolveError::NotFound {
                name: name.to_owned(),
                dirs: self
                    .settings
                    .dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let client = clients
            .entry(socket.clone())
            .or_insert_with(|| Arc::new(PluginProvider::new(name, &socket, &self.settings)));
        Ok(client.clone())
    }
}

/// One external plugin.
#[derive(Debug)]
pub(crate) struct PluginProvider {
    name: String,
    socket: PathBuf,
    client: CsiDriverProviderClient<Channel>,
    settings: PluginSettings,
    version: OnceCell<pb::VersionResponse>,
}

impl PluginProvider {
    fn new(name: &str, socket: &Path, settings: &PluginSettings) -> Self {
        let client = CsiDriverProviderClient::new(crate::unix_channel::lazy(socket))
            .max_decoding_message_size(settings.max_message_bytes);
        Self {
            name: name.to_owned(),
            socket: socket.to_owned(),
            client,
            settings: settings.clone(),
            version: OnceCell::new(),
        }
    }

    fn status_error(&self, call: &'static str, status: &tonic::Status) -> PluginError {
        let (name, socket, message) = (
            self.name.clone(),
            self.socket.clone(),
            status.message().to_owned(),
        );
        if too_large(status) {
            return PluginError::TooLarge {
                name,
                socket,
                call,
                message,
                limit: self.settings.max_message_bytes,
            };
        }
        PluginError::Call {
            name,
            socket,
            call,
            code: status.code(),
            message,
        }
    }

    /// Calls `f`, retrying on UNAVAILABLE with backoff. The caller sets the deadline.
    async fn call<T, F, Fut>(&self, call: &'static str, f: F) -> Result<T, PluginError>
    where
        F: Fn(CsiDriverProviderClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut wait = self.settings.backoff;
        let mut attempt = 1;
        loop {
            match f(self.client.clone()).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status)
                    if status.code() == tonic::Code::Unavailable
                        && attempt < self.settings.attempts =>
                {
                    tracing::debug!(provider = %self.name, attempt, "provider unavailable; retrying");
                    tokio::time::sleep(wait).await;
                    wait = wait.mul_f32(1.5);
                    attempt += 1;
                }
                Err(status) => return Err(self.status_error(call, &status)),
            }
        }
    }

    async fn handshake(&self) -> Result<(), PluginError> {
        let version = self
            .version
            .get_or_try_init(|| {
                self.call("Version", |mut c| async move {
                    c.version(pb::VersionRequest {
                        version: API_VERSION.into(),
                    })
                    .await
                })
            })
            .await?;
        if version.version != API_VERSION {
            return Err(PluginError::Version {
                name: self.name.clone(),
                version: version.version.clone(),
            });
        }
        Ok(())
    }
}

/// True when `status` says an answer was over the receive limit. tonic reports its own
/// decoding limit as OUT_OF_RANGE ("decoded message length too large"); a plugin or proxy may
/// say RESOURCE_EXHAUSTED.
fn too_large(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::ResourceExhausted
        || (status.code() == tonic::Code::OutOfRange
            && status.message().contains("message length too large"))
}

/// The upstream request encoding: attributes and secrets as JSON strings, mode as decimal.
fn to_request(input: &MountInput) -> Result<pb::MountRequest, PluginError> {
    let mut attributes = input.attributes.clone();
    if let Some(raw) = input.tokens.raw() {
        attributes.insert(TOKENS_KEY.to_owned(), raw.expose().clone());
    }
    let secrets = if input.secrets.expose().is_empty() {
        // What upstream sends when kubelet passes no secrets (a nil map in JSON).
        String::from("null")
    } else {
        to_json(input.secrets.expose())?
    };
    Ok(pb::MountRequest {
        attributes: to_json(&attributes)?,
        secrets,
        target_path: input.target_path.display().to_string(),
        permission: input.permission.to_string(),
        current_object_version: input
            .current_versions
            .iter()
            .map(|v| pb::ObjectVersion {
                id: v.id.clone(),
                version: v.version.clone(),
            })
            .collect(),
    })
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, PluginError> {
    serde_json::to_string(value).map_err(PluginError::Encode)
}

#[async_trait]
impl Provider for PluginProvider {
    async fn mount(&self, input: &MountInput) -> Result<MountOutput, ProviderError> {
        self.handshake().await?;
        let request = to_request(input)?;
        let response = self
            .call("Mount", |mut c| {
                let request = request.clone();
                async move { c.mount(request).await }
            })
            .await?;
        if let Some(error) = response.error.filter(|e| !e.code.is_empty()) {
            // The code is the plugin's text: in the message, never in a metric label.
            return Err(PluginError::mount(&self.name, &error.code).into());
        }
        // Over the wire an empty list is what upstream reads as nil: a failure.
        if response.object_version.is_empty() {
            return Err(PluginError::NoVersions {
                name: self.name.clone(),
            }
            .into());
        }
        let files = response
            .files
            .into_iter()
            .map(|f| Payload {
                path: f.path,
                // Out-of-range modes are refused by path validation before any write.
                mode: u32::try_from(f.mode).unwrap_or(u32::MAX),
                contents: Redacted::new(f.contents),
            })
            .collect();
        let versions = response
            .object_version
            .into_iter()
            .map(|v| ObjectVersion {
                id: v.id,
                version: v.version,
            })
            .collect();
        Ok(MountOutput {
            files,
            versions,
            refresh_before: None,
        })
    }
}

//! NodePublishVolume: validate, find the class and provider, mount a tmpfs, fetch with the
//! pod's identity, validate every returned path, write atomically, record the pod status.
//! A republish of a mounted volume goes through the rotation gate instead.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;

use super::VolumeService;
use super::blocking::off_runtime;
use super::context::{RedactedContext, VolumeContext};
use super::pod_status::{self, PodStatusInput};
use super::service::{REFRESH_ANNOTATION, ROTATION_INTERVAL_ANNOTATION};
use super::state::VolumeRecord;
use super::unpublish::remove_target;
use crate::class::SecretProviderClass;
use crate::fs::atomic_writer::{self, Outcome};
use crate::mount;
use crate::provider::tokens::TOKENS_KEY;
use crate::provider::{MountInput, MountOutput, Provider, ServiceAccountTokens};
use crate::redact::Redacted;

pub use super::fetch::{fetch_checked, mount_attributes};
pub use super::publish_error::PublishError;

/// Default file mode handed to providers (upstream sends "420").
pub const DEFAULT_PERMISSION: u32 = 0o644;

/// How the CO wants the volume accessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessType {
    Mount,
    Block,
}

/// A publish call, as the CSI layer hands it over. Its `Debug` hides the tokens in the volume
/// context and the `secrets`.
#[derive(Clone)]
pub struct PublishRequest {
    pub volume_id: String,
    pub target_path: String,
    pub access: Option<AccessType>,
    pub readonly: bool,
    pub volume_context: BTreeMap<String, String>,
    pub secrets: Redacted<BTreeMap<String, String>>,
}

impl std::fmt::Debug for PublishRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishRequest")
            .field("volume_id", &self.volume_id)
            .field("target_path", &self.target_path)
            .field("access", &self.access)
            .field("readonly", &self.readonly)
            .field("volume_context", &RedactedContext(&self.volume_context))
            .field("secrets", &self.secrets)
            .finish()
    }
}

/// What a successful publish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishOutcome {
    /// First mount: tmpfs mounted and files written.
    Mounted,
    /// Republish inside the interval: nothing asked, nothing written.
    Skipped,
    /// Republish that asked the provider; `changed` tells whether files were swapped.
    Rotated { changed: bool },
    /// Republish whose fetch failed: the old content stays (kubelet would otherwise remove it).
    RotationFailed,
}

/// The validated parts of a request.
struct Validated {
    target: PathBuf,
    context: VolumeContext,
    tokens: ServiceAccountTokens,
}

fn validate(req: &PublishRequest) -> Result<Validated, PublishError> {
    if req.volume_id.is_empty() {
        return Err(PublishError::MissingField("volume_id"));
    }
    if req.target_path.is_empty() {
        return Err(PublishError::MissingField("target_path"));
    }
    match req.access {
        None => return Err(PublishError::MissingField("volume_capability")),
        Some(AccessType::Block) => return Err(PublishError::BlockVolume),
        Some(AccessType::Mount) => {}
    }
    if !req.readonly {
        return Err(PublishError::NotReadonly);
    }
    let target = PathBuf::from(&req.target_path);
    let clean = target.is_absolute()
        && target
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        && target.parent().is_some();
    if !clean {
        return Err(PublishError::BadTarget(req.target_path.clone()));
    }
    if req.volume_context.is_empty() {
        return Err(PublishError::MissingField("volume_context"));
    }
    let context = VolumeContext::parse(&req.volume_context)?;
    // KEP-5538: kubelet may send the tokens in `secrets`; read there first.
    let raw_tokens = req
        .secrets
        .expose()
        .get(TOKENS_KEY)
        .or_else(|| req.volume_context.get(TOKENS_KEY))
        .map(String::as_str)
        .unwrap_or_default();
    let tokens = ServiceAccountTokens::parse(raw_tokens)?;
    Ok(Validated {
        target,
        context,
        tokens,
    })
}

impl VolumeService {
    /// Publishes one volume. See the module docs for the steps.
    #[tracing::instrument(skip_all, fields(volume.id = %req.volume_id))]
    pub async fn publish(&self, req: PublishRequest) -> Result<PublishOutcome, PublishError> {
        let started = Instant::now();
        let mut provider_name = String::from("unknown");
        let result = self.publish_inner(&req, &mut provider_name).await;
        let seconds = started.elapsed().as_secs_f64();
        match &result {
            Ok(outcome) => {
                self.metrics.publish(&provider_name, None, seconds);
                tracing::debug!(?outcome, seconds, "publish done");
            }
            Err(error) => {
                self.metrics
                    .publish(&provider_name, Some(error.reason()), seconds);
                tracing::warn!(%error, "publish failed");
            }
        }
        result
    }

    async fn publish_inner(
        &self,
        req: &PublishRequest,
        provider_name: &mut String,
    ) -> Result<PublishOutcome, PublishError> {
        let v = validate(req)?;
        let _guard = self
            .locks
            .try_lock(&req.volume_id)
            .ok_or_else(|| PublishError::Busy(req.volume_id.clone()))?;

        let mounted =
            mount::is_mount_point(&v.target).map_err(|source| PublishError::CheckMount {
                path: v.target.clone(),
                source,
            })?;
        let record = self.states.get(&req.volume_id).filter(|_| mounted);
        if let Some(record) = &record {
            *provider_name = record.provider.clone();
            if self.config.rotation_interval.is_none() {
                return Ok(PublishOutcome::Skipped);
            }
        }

        let class_id = format!("{}/{}", v.context.pod_namespace, v.context.class);
        let class = self
            .classes
            .get(&v.context.pod_namespace, &v.context.class)
            .await?;
        if let Some(record) = &record
            && !self.rotation_due(record, &class)
        {
            return Ok(PublishOutcome::Skipped);
        }
        let name = class
            .spec
            .provider
            .clone()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| PublishError::ClassWithoutProvider {
                class: class_id.clone(),
            })?;
        *provider_name = name.clone();
        let parameters = class
            .spec
            .parameters
            .clone()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| PublishError::ClassWithoutParameters {
                class: class_id.clone(),
            })?;
        let provider =
            self.providers
                .resolve(&name)
                .map_err(|source| PublishError::ResolveProvider {
                    class: class_id.clone(),
                    source,
                })?;

        let attributes = mount_attributes(parameters, &req.volume_context);
        let input = MountInput {
            class: class_id.clone(),
            attributes,
            tokens: v.tokens,
            secrets: req.secrets.clone(),
            target_path: v.target.clone(),
            permission: DEFAULT_PERMISSION,
            current_versions: record
                .as_ref()
                .map(|r| r.versions.clone())
                .unwrap_or_default(),
        };
        let work = Work {
            req,
            target: &v.target,
            context: &v.context,
            class: &class,
            class_id: &class_id,
            provider_name: &name,
            provider: provider.as_ref(),
            input: &input,
        };
        match record {
            Some(record) => Ok(self.rotate(&work, &record).await),
            None => self.first_mount(&work, mounted).await,
        }
    }

    /// True when a mounted volume's content should be fetched again.
    fn rotation_due(&self, record: &VolumeRecord, class: &SecretProviderClass) -> bool {
        let now = Utc::now();
        let annotations = class.metadata.annotations.as_ref();
        let stamp = annotations.and_then(|a| a.get(REFRESH_ANNOTATION)).cloned();
        if stamp != record.refresh_stamp {
            return true;
        }
        if record.refresh_before.is_some_and(|t| t <= now) {
            return true;
        }
        let interval = annotations
            .and_then(|a| a.get(ROTATION_INTERVAL_ANNOTATION))
            .and_then(|v| humantime::parse_duration(v).ok())
            .or(self.config.rotation_interval)
            .unwrap_or_default();
        let interval = chrono::Duration::from_std(interval).unwrap_or(chrono::TimeDelta::MAX);
        record.fetched_at + interval <= now
    }

    async fn fetch(&self, work: &Work<'_>) -> Result<MountOutput, PublishError> {
        fetch_checked(
            work.provider,
            work.input,
            work.provider_name,
            self.config.provider_timeout,
            &self.config.limits,
        )
        .await
    }

    /// Fetch, write, sync and record; only what must happen after the tmpfs is mounted.
    /// `first` is true for a first mount (every step's failure fails it).
    async fn fill(&self, work: &Work<'_>, first: bool) -> Result<bool, PublishError> {
        let output = self.fetch(work).await?;
        let changed = if output.files.is_empty() {
            // The provider wrote its files itself (upstream's legacy mode).
            true
        } else {
            // On the worker: the writes go to the volume's tmpfs, memory only.
            atomic_writer::write(work.target, &output.files)? == Outcome::Written
        };
        self.sync_secrets(work, &output, first).await?;
        if changed || first {
            self.record_pod_status(work, &output).await?;
        }
        let annotations = work.class.metadata.annotations.as_ref();
        self.states.put(VolumeRecord {
            volume_id: work.req.volume_id.clone(),
            target_path: work.target.to_owned(),
            pod_namespace: work.context.pod_namespace.clone(),
            pod_name: work.context.pod_name.clone(),
            pod_uid: work.context.pod_uid.clone(),
            class: work.context.class.clone(),
            provider: work.provider_name.to_owned(),
            versions: output.versions,
            fetched_at: Utc::now(),
            refresh_before: output.refresh_before,
            refresh_stamp: annotations.and_then(|a| a.get(REFRESH_ANNOTATION)).cloned(),
        });
        Ok(changed)
    }

    async fn first_mount(
        &self,
        work: &Work<'_>,
        already_mounted: bool,
    ) -> Result<PublishOutcome, PublishError> {
        let target = work.target;
        if !already_mounted {
            let (path, size) = (target.to_owned(), self.config.tmpfs_size);
            off_runtime(move || mount_fresh(path, size)).await?;
        }
        match self.fill(work, true).await {
            Ok(_) => {
                tracing::info!(
                    pod = %format!("{}/{}", work.context.pod_namespace, work.context.pod_name.as_deref().unwrap_or("?")),
                    class = %work.class_id,
                    provider = %work.provider_name,
                    "volume published"
                );
                Ok(PublishOutcome::Mounted)
            }
            Err(error) => {
                // Nothing half-mounted stays behind.
                let path = target.to_owned();
                if let Err(cleanup) = off_runtime(move || remove_target(&path)).await {
                    tracing::error!(%cleanup, "cleanup after a failed publish failed");
                }
                Err(error)
            }
        }
    }

    async fn rotate(&self, work: &Work<'_>, record: &VolumeRecord) -> PublishOutcome {
        let started = Instant::now();
        let result = self.fill(work, false).await;
        let seconds = started.elapsed().as_secs_f64();
        match result {
            Ok(changed) => {
                self.metrics
                    .rotation(work.provider_name, changed, None, seconds);
                if changed {
                    tracing::info!(class = %work.class_id, "rotated: new content swapped in");
                }
                self.rotation_event(work, Ok(changed));
                PublishOutcome::Rotated { changed }
            }
            Err(error) => {
                self.metrics
                    .rotation(work.provider_name, false, Some(error.reason()), seconds);
                tracing::warn!(%error, versions = record.versions.len(), "rotation failed; old content kept");
                self.rotation_event(work, Err(&error));
                PublishOutcome::RotationFailed
            }
        }
    }

    async fn record_pod_status(
        &self,
        work: &Work<'_>,
        output: &MountOutput,
    ) -> Result<(), PublishError> {
        let (Some(client), Some(pod_name), Some(pod_uid)) = (
            self.kube.as_ref(),
            work.context.pod_name.as_deref(),
            work.context.pod_uid.as_deref(),
        ) else {
            return Ok(());
        };
        let input = PodStatusInput {
            node_id: &self.config.node_id,
            namespace: &work.context.pod_namespace,
            pod_name,
            pod_uid,
            class: &work.context.class,
            target_path: &work.target.to_string_lossy(),
            versions: &output.versions,
        };
        pod_status::apply(client, &input)
            .await
            .map_err(|source| PublishError::UpdatePodStatus {
                name: pod_status::object_name(
                    pod_name,
                    &work.context.pod_namespace,
                    &work.context.class,
                ),
                source,
            })
    }
}

/// Creates the target directory and mounts a fresh tmpfs on it; a failed mount removes the
/// directory again.
fn mount_fresh(target: PathBuf, size: Option<u64>) -> Result<(), PublishError> {
    std::fs::create_dir_all(&target).map_err(|source| PublishError::CreateDir {
        path: target.clone(),
        source,
    })?;
    if let Err(source) = mount::mount_tmpfs(&target, size) {
        let _ = std::fs::remove_dir(&target);
        return Err(PublishError::Mount {
            path: target,
            source,
        });
    }
    Ok(())
}

/// Everything one publish works with, resolved.
pub(super) struct Work<'a> {
    pub(super) req: &'a PublishRequest,
    pub(super) target: &'a Path,
    pub(super) context: &'a VolumeContext,
    pub(super) class: &'a Arc<SecretProviderClass>,
    pub(super) class_id: &'a str,
    pub(super) provider_name: &'a str,
    pub(super) provider: &'a dyn Provider,
    pub(super) input: &'a MountInput,
}

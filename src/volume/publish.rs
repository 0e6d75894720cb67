//! NodePublishVolume: validate (the target under the kubelet root), find the class and
//! provider, then mount, fill and record (`fill.rs`). A republish of a mounted volume goes
//! through the rotation gate instead.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use jiff::{SignedDuration, Timestamp};

use super::VolumeService;
use super::blocking::off_runtime;
use super::context::{RedactedContext, VolumeContext};
use super::pod_status::{self, PodStatusInput};
use super::service::{MIN_ROTATION_INTERVAL, REFRESH_ANNOTATION, ROTATION_INTERVAL_ANNOTATION};
use super::state::VolumeRecord;
use crate::class::SecretProviderClass;
use crate::fs::group::FsGroup;
use crate::mount::{Found, KubeletRoot, Target, owned};
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
    /// The CSI `volume_capability.mount.volume_mount_group` as sent: the pod's fsGroup from
    /// a kubelet that delegates it (VOLUME_MOUNT_GROUP), empty otherwise.
    pub mount_group: String,
}

impl std::fmt::Debug for PublishRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishRequest")
            .field("volume_id", &self.volume_id)
            .field("target_path", &self.target_path)
            .field("access", &self.access)
            .field("readonly", &self.readonly)
            .field("mount_group", &self.mount_group)
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
    /// Republish that asked the provider and wrote the files (swapped when `changed`), but
    /// whose SecretProviderClassPodStatus or state record could not be written: the status
    /// is stale until the next fetch, which writes it again even if nothing changed.
    RotatedStatusStale { changed: bool },
    /// Republish whose fetch failed: the old content stays (kubelet would otherwise remove it).
    RotationFailed,
}

/// The validated parts of a request.
struct Validated {
    target: Target,
    context: VolumeContext,
    tokens: ServiceAccountTokens,
    /// The pod's fsGroup, when kubelet sent one.
    group: Option<FsGroup>,
}

fn validate(req: &PublishRequest, root: &KubeletRoot) -> Result<Validated, PublishError> {
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
    let target = root.parse(&req.target_path)?;
    let group = match req.mount_group.as_str() {
        "" => None,
        text => Some(FsGroup::parse(text)?),
    };
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
        group,
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
        let v = validate(req, &self.config.kubelet_root)?;
        let _guard = self
            .locks
            .try_lock(&req.volume_id)
            .ok_or_else(|| PublishError::Busy(req.volume_id.clone()))?;

        // What is at the target decides: a mount keymount may not take is refused here. A
        // volume keymount recorded at this target (a republish) is checked without reading the
        // whole mount table while it is still a read-write tmpfs.
        let target = v.target.clone();
        let record = self.states.get(&req.volume_id);
        let known = record
            .as_ref()
            .filter(|r| r.target_path == v.target.path())
            .and_then(|r| r.device);
        let found = off_runtime(move || match known {
            Some(device) => owned::inspect_recorded(&target, device),
            None => owned::inspect(&target),
        })
        .await?;
        let mounted = matches!(found, Found::Tmpfs { .. });
        let record = record.filter(|_| mounted);
        // The group the files belong to: the one sent, else the one the volume has (an older
        // kubelet never sends it, and a republish must not take it away).
        let recorded = record.as_ref().and_then(|r| r.fs_group);
        if let (Some(sent), Some(had)) = (v.group, recorded)
            && sent != had
        {
            return Err(PublishError::FsGroupChanged {
                volume: req.volume_id.clone(),
                had,
                sent,
            });
        }
        // A volume published before its group was known gets it at this republish.
        let regroup = record.is_some() && v.group.is_some() && recorded.is_none();
        if let Some(record) = &record {
            *provider_name = record.provider.clone();
            if self.config.rotation_interval.is_none() && !regroup {
                return Ok(PublishOutcome::Skipped);
            }
        }

        let class_id = format!("{}/{}", v.context.pod_namespace, v.context.class);
        let class = self
            .classes
            .get(&v.context.pod_namespace, &v.context.class)
            .await?;
        if let Some(record) = &record
            && !regroup
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
        // The metrics label: only a provider that exists (built in, or a socket the admin
        // installed), never whatever a class names.
        *provider_name = name.clone();

        let attributes = mount_attributes(
            parameters,
            &req.volume_context,
            (&name, provider.as_ref()),
            &self.config.overrides,
        )
        .map_err(|source| PublishError::VolumeAttribute {
            class: class_id.clone(),
            source,
        })?;
        let input = MountInput {
            class: class_id.clone(),
            attributes,
            tokens: v.tokens,
            secrets: req.secrets.clone(),
            target_path: v.target.path().to_owned(),
            permission: DEFAULT_PERMISSION,
            current_versions: record
                .as_ref()
                .map(|r| r.versions.clone())
                .unwrap_or_default(),
        };
        let group = match (v.group.or(recorded), &record) {
            (Some(group), _) => Some(group),
            (None, Some(_)) => None,
            (None, None) => self.group_from_pod(&v.context).await?,
        };
        let work = Work {
            req,
            target: v.target.path(),
            group,
            context: &v.context,
            class: &class,
            class_id: &class_id,
            provider_name: &name,
            provider: provider.as_ref(),
            input: &input,
        };
        match record {
            Some(record) => Ok(self.rotate(&work, &record).await),
            None => self.first_mount(&work, &v.target, found).await,
        }
    }

    /// True when a mounted volume's content should be fetched again (also when its pod
    /// status could not be written at the last fetch: the fetch writes it again). Neither a
    /// class's interval nor a store's lease brings fetches closer than
    /// [`MIN_ROTATION_INTERVAL`]; only a new refresh stamp (an explicit, on-demand refresh)
    /// does.
    fn rotation_due(&self, record: &VolumeRecord, class: &SecretProviderClass) -> bool {
        if record.status_stale {
            return true;
        }
        let now = Timestamp::now();
        let annotations = class.metadata.annotations.as_ref();
        let stamp = annotations.and_then(|a| a.get(REFRESH_ANNOTATION)).cloned();
        if stamp != record.refresh_stamp {
            return true;
        }
        let floor = SignedDuration::try_from(MIN_ROTATION_INTERVAL).expect("a second fits");
        if record.fetched_at + floor > now {
            return false;
        }
        if record.refresh_before.is_some_and(|t| t <= now) {
            return true;
        }
        let class_interval = annotations
            .and_then(|a| a.get(ROTATION_INTERVAL_ANNOTATION))
            .and_then(|v| humantime::parse_duration(v).ok());
        if class_interval.is_some_and(|i| i < MIN_ROTATION_INTERVAL) {
            tracing::warn!(
                class = %format!("{}/{}", record.pod_namespace, record.class),
                annotation = ROTATION_INTERVAL_ANNOTATION,
                floor = ?MIN_ROTATION_INTERVAL,
                "the class's rotation interval is below the floor; the floor applies"
            );
        }
        let interval = class_interval
            .or(self.config.rotation_interval)
            .unwrap_or_default()
            .max(MIN_ROTATION_INTERVAL);
        // An interval past the end of time is never due.
        SignedDuration::try_from(interval)
            .ok()
            .and_then(|interval| record.fetched_at.checked_add(interval).ok())
            .is_some_and(|due| due <= now)
    }

    pub(super) async fn fetch(&self, work: &Work<'_>) -> Result<MountOutput, PublishError> {
        fetch_checked(
            work.provider,
            work.input,
            work.provider_name,
            self.config.provider_timeout,
            &self.config.limits,
        )
        .await
    }

    pub(super) async fn record_pod_status(
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
                source: source.into(),
            })
    }
}

/// Everything one publish works with, resolved.
pub(super) struct Work<'a> {
    pub(super) req: &'a PublishRequest,
    pub(super) target: &'a Path,
    /// The group the volume's files belong to (the pod's fsGroup).
    pub(super) group: Option<FsGroup>,
    pub(super) context: &'a VolumeContext,
    pub(super) class: &'a Arc<SecretProviderClass>,
    pub(super) class_id: &'a str,
    pub(super) provider_name: &'a str,
    pub(super) provider: &'a dyn Provider,
    pub(super) input: &'a MountInput,
}

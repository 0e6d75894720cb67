//! NodePublishVolume, the steps before anything is fetched: validate the request, take the
//! volume's lock, find out what is at the target, then either skip (a republish the rotation
//! gate holds back) or resolve the class and provider and hand over to `fill.rs` (a first
//! mount or a rotation). The provider label of the call's metrics is returned with its
//! result: how far the call got decides it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use jiff::Timestamp;

use super::VolumeService;
use super::fill::Fill;
use crate::class::SecretProviderClass;
use crate::fs::group::FsGroup;
use crate::mount::{Found, Target};
use crate::provider::{MountInput, Provider, ServiceAccountTokens};
use crate::volume::blocking::off_runtime;
use crate::volume::context::VolumeContext;
use crate::volume::locks::VolumeGuard;
use crate::volume::pod_group::pod_fs_group;
use crate::volume::publish::{
    DEFAULT_PERMISSION, ProviderLabel, PublishError, PublishOutcome, PublishRequest,
    mount_attributes, validate,
};
use crate::volume::report::PodVolume;
use crate::volume::rotation;
use crate::volume::state::VolumeRecord;

/// A request checked against what is at its target, holding the volume's lock.
struct Checked {
    _lock: VolumeGuard,
    target: Target,
    context: VolumeContext,
    tokens: ServiceAccountTokens,
    /// What the target holds.
    found: Found,
    /// The record of the volume mounted there (a republish).
    record: Option<Arc<VolumeRecord>>,
    /// The group the files belong to: the one sent, else the one the volume has (an older
    /// kubelet never sends it, and a republish must not take it away).
    group: Option<FsGroup>,
    /// A volume published before its group was known gets it at this republish.
    regroup: bool,
}

/// The class and provider a fetch goes to.
struct Source {
    class: Arc<SecretProviderClass>,
    class_id: String,
    /// The provider's name: it resolved, so it exists (the metrics label from here on).
    name: String,
    provider: Arc<dyn Provider>,
    parameters: BTreeMap<String, String>,
}

impl VolumeService {
    /// Publishes one volume. See the module docs for the steps.
    #[tracing::instrument(skip_all, fields(volume.id = %req.volume_id))]
    pub async fn publish(&self, req: PublishRequest) -> Result<PublishOutcome, PublishError> {
        let started = Instant::now();
        let (provider, result) = self.attempt(&req).await;
        let seconds = started.elapsed().as_secs_f64();
        match &result {
            Ok(outcome) => {
                self.metrics.publish(provider.as_label(), None, seconds);
                tracing::debug!(?outcome, seconds, "publish done");
            }
            Err(error) => {
                self.metrics
                    .publish(provider.as_label(), Some(error.reason()), seconds);
                tracing::warn!(%error, "publish failed");
            }
        }
        result
    }

    /// The publish, and the provider its metrics are labelled with: unknown until the
    /// volume's record or its class names one that exists.
    async fn attempt(
        &self,
        req: &PublishRequest,
    ) -> (ProviderLabel, Result<PublishOutcome, PublishError>) {
        let checked = match self.check(req).await {
            Ok(checked) => checked,
            Err(error) => return (ProviderLabel::Unknown, Err(error)),
        };
        let label = ProviderLabel::of_record(checked.record.as_deref());
        let source = match self.resolve(&checked).await {
            Ok(Some(source)) => source,
            Ok(None) => return (label, Ok(PublishOutcome::Skipped)),
            Err(error) => return (label, Err(error)),
        };
        let label = ProviderLabel::Known(source.name.clone());
        (label, self.fill_checked(req, checked, source).await)
    }

    /// Validates, locks and checks the target. What is at the target decides: a mount
    /// keymount may not take is refused here. A volume keymount recorded at this target (a
    /// republish) is checked without reading the whole mount table while it is still a
    /// read-write tmpfs.
    async fn check(&self, req: &PublishRequest) -> Result<Checked, PublishError> {
        let v = validate(req, &self.config.kubelet_root)?;
        let lock = self
            .locks
            .try_lock(&req.volume_id)
            .ok_or_else(|| PublishError::Busy(req.volume_id.clone()))?;
        let record = self.states.get(&req.volume_id);
        let device = record.as_ref().and_then(|r| r.device_at(v.target.path()));
        let (mounter, target) = (Arc::clone(&self.mounter), v.target.clone());
        let found = off_runtime(move || mounter.inspect(&target, device)).await?;
        let mounted = matches!(found, Found::Tmpfs { .. });
        let record = record.filter(|_| mounted);
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
        Ok(Checked {
            _lock: lock,
            regroup: record.is_some() && v.group.is_some() && recorded.is_none(),
            group: v.group.or(recorded),
            target: v.target,
            context: v.context,
            tokens: v.tokens,
            found,
            record,
        })
    }

    /// The class and provider to fetch from, or `None` when a republish is not due (the
    /// rotation is off, or its gate holds it back).
    async fn resolve(&self, checked: &Checked) -> Result<Option<Source>, PublishError> {
        let rotating = checked.record.as_ref().filter(|_| !checked.regroup);
        if rotating.is_some() && self.config.rotation_interval.is_none() {
            return Ok(None);
        }
        let context = &checked.context;
        let class_id = format!("{}/{}", context.pod_namespace, context.class);
        let class = self
            .classes
            .get(&context.pod_namespace, &context.class)
            .await?;
        if let Some(record) = rotating
            && !rotation::due(
                record,
                &class,
                self.config.rotation_interval,
                Timestamp::now(),
            )
        {
            return Ok(None);
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
        Ok(Some(Source {
            class,
            class_id,
            name,
            provider,
            parameters,
        }))
    }

    /// Builds the provider's input and the volume's group, then rotates a mounted volume or
    /// mounts a new one.
    async fn fill_checked(
        &self,
        req: &PublishRequest,
        checked: Checked,
        source: Source,
    ) -> Result<PublishOutcome, PublishError> {
        let attributes = mount_attributes(
            source.parameters,
            &req.volume_context,
            (&source.name, source.provider.as_ref()),
            &self.config.overrides,
        )
        .map_err(|error| PublishError::VolumeAttribute {
            class: source.class_id.clone(),
            source: error,
        })?;
        let context = checked.context;
        let input = MountInput {
            class: source.class_id,
            attributes,
            tokens: checked.tokens,
            secrets: req.secrets.clone(),
            target_path: checked.target.path().to_owned(),
            permission: DEFAULT_PERMISSION,
            current_versions: checked
                .record
                .as_ref()
                .map(|r| r.versions.clone())
                .unwrap_or_default(),
        };
        let group = match (checked.group, &checked.record) {
            (Some(group), _) => Some(group),
            (None, Some(_)) => None,
            (None, None) => self.group_from_pod(&context).await?,
        };
        let fill = Fill {
            volume: PodVolume {
                volume_id: req.volume_id.clone(),
                target: checked.target.path().to_owned(),
                namespace: context.pod_namespace,
                pod_name: context.pod_name,
                pod_uid: context.pod_uid,
                class: context.class,
                provider: source.name,
            },
            class: source.class,
            provider: source.provider,
            input,
            group,
        };
        match checked.record {
            Some(record) => Ok(self.rotate(&fill, &record).await),
            None => {
                self.first_mount(&fill, &checked.target, checked.found)
                    .await
            }
        }
    }

    /// The fsGroup of the volume's pod, when `--fs-group-from-pod` asks for it and there is
    /// an API server to ask (`pod_group.rs`).
    async fn group_from_pod(
        &self,
        context: &VolumeContext,
    ) -> Result<Option<FsGroup>, PublishError> {
        match &self.pods {
            Some(client) if self.config.fs_group_from_pod => pod_fs_group(client, context).await,
            _ => Ok(None),
        }
    }
}

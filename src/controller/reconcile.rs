//! One SecretSync, end to end: check it, read its class, get its ServiceAccount's tokens,
//! fetch through the same provider code as a mount, write the Secret only if it changed, and
//! say what happened in the status. Also when: a SecretSync whose spec, class and due time
//! have not moved is not fetched again (its own status writes come back as watch events).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;

use super::crd::{SecretSync, SecretSyncStatus};
use super::desired::{self, sync_id};
use super::identity::TokenSource;
use super::metrics::ControllerMetrics;
use super::outcome::{self, Failure, Outcome, Reason, Written};
use super::secret;
use crate::class::SecretProviderClass;
use crate::fs::atomic_writer::Payload;
use crate::fs::paths::Limits;
use crate::provider::access::OverridePolicy;
use crate::provider::version_key::VersionKey;
use crate::provider::{MountInput, Providers};
use crate::redact::Redacted;
use crate::restart::{self, Restarter, Setting};
use crate::volume::publish::{DEFAULT_PERMISSION, PublishError, fetch_for_class, mount_attributes};

/// Annotation of a SecretSync that sets its own refresh interval (`30m`, `0s` for never).
pub const REFRESH_ANNOTATION: &str = "keymount.io/refresh-interval";
/// Where a provider is told the files would go; nothing is written there.
const TARGET_PATH: &str = "/mnt/secrets-store";
/// Shortest refresh interval a SecretSync may ask for: its author is not trusted to make the
/// controller read a store in a tight loop.
pub(crate) const MIN_REFRESH: Duration = Duration::from_secs(10);
/// First wait after a failure; it doubles per failure up to the configured maximum.
const FIRST_BACKOFF: Duration = Duration::from_secs(5);

/// Settings of every sync.
#[derive(Debug, Clone)]
pub(crate) struct SyncSettings {
    pub(crate) controller_name: String,
    pub(crate) default_interval: Duration,
    pub(crate) plugin_audiences: Vec<String>,
    pub(crate) provider_timeout: Duration,
    pub(crate) limits: Limits,
    pub(crate) max_backoff: Duration,
    /// The controller's pod name and uid, told to providers as the pod (as upstream).
    pub(crate) pod: (String, String),
}

/// What was last seen of one SecretSync and when it is due again (`None`: only when its
/// fingerprint changes, for a `0s` interval).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    fingerprint: Vec<String>,
    due: Option<Instant>,
    failures: u32,
}

/// The shared state of every reconcile.
pub(crate) struct Syncer {
    pub(crate) client: kube::Client,
    pub(crate) providers: Arc<Providers>,
    pub(crate) tokens: TokenSource,
    pub(crate) key: VersionKey,
    pub(crate) settings: SyncSettings,
    pub(crate) metrics: Arc<ControllerMetrics>,
    seen: Mutex<HashMap<(String, String), Seen>>,
    /// Restart on change, when enabled.
    restarter: Option<Arc<Restarter>>,
}

/// An error of the reconcile itself (only its own status write); retried soon.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ReconcileError(String);

impl std::fmt::Debug for Syncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syncer")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Syncer {
    pub(crate) fn new(
        client: kube::Client,
        providers: Arc<Providers>,
        tokens: TokenSource,
        key: VersionKey,
        settings: SyncSettings,
        metrics: Arc<ControllerMetrics>,
    ) -> Self {
        Self {
            client,
            providers,
            tokens,
            key,
            settings,
            metrics,
            seen: Mutex::new(HashMap::new()),
            restarter: None,
        }
    }

    /// Turns on restart on change (`--enable-restart-on-change`).
    pub(crate) fn with_restarter(mut self, restarter: Arc<Restarter>) -> Self {
        self.restarter = Some(restarter);
        self
    }

    /// Forgets SecretSyncs that no longer exist (`keep` says which do).
    pub(crate) fn forget_except(&self, keep: impl Fn(&(String, String)) -> bool) {
        self.seen.lock().expect("seen lock").retain(|k, _| keep(k));
    }

    fn interval(&self, sync: &SecretSync) -> Result<Duration, Failure> {
        match sync
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REFRESH_ANNOTATION))
        {
            None => Ok(self.settings.default_interval),
            Some(text) => refresh_interval(text).map_err(|reason| Failure {
                reason: Reason::UserInputValidationFailed,
                message: format!(
                    "SecretSync {}: annotation {REFRESH_ANNOTATION} {:?} {reason}",
                    sync_id(sync),
                    crate::text::shorten(text, 64)
                ),
            }),
        }
    }

    fn backoff(&self, failures: u32) -> Duration {
        let doubled = FIRST_BACKOFF.saturating_mul(1 << failures.saturating_sub(1).min(16));
        let capped = doubled.min(self.settings.max_backoff);
        // Up to a fifth less, so SecretSyncs that failed together do not retry together.
        let jitter = rand::random_range(0.8..=1.0);
        capped.mul_f64(jitter)
    }
}

/// Parses the refresh annotation: `0s` (only on change) or at least [`MIN_REFRESH`].
pub(crate) fn refresh_interval(text: &str) -> Result<Duration, String> {
    let interval = humantime::parse_duration(text.trim())
        .map_err(|e| format!("is not a duration like 30m: {e}"))?;
    if !interval.is_zero() && interval < MIN_REFRESH {
        return Err(format!(
            "is shorter than {}s (use 0s to sync only on change)",
            MIN_REFRESH.as_secs()
        ));
    }
    Ok(interval)
}

/// Reconciles one SecretSync.
pub(crate) async fn reconcile(
    sync: Arc<SecretSync>,
    ctx: Arc<Syncer>,
) -> Result<Action, ReconcileError> {
    if sync.spec.secret_sync_controller_name != ctx.settings.controller_name
        || sync.metadata.deletion_timestamp.is_some()
    {
        return Ok(Action::await_change());
    }
    let namespace = sync.metadata.namespace.clone().unwrap_or_default();
    let name = sync.metadata.name.clone().unwrap_or_default();
    let classes: Api<SecretProviderClass> = Api::namespaced(ctx.client.clone(), &namespace);
    let class_name = &sync.spec.secret_provider_class_name;
    let class = match crate::names::subdomain("spec.secretProviderClassName", class_name) {
        Ok(()) => classes.get_opt(class_name).await.map_err(|e| Failure {
            reason: Reason::ControllerInternalError,
            message: format!(
                "get SecretProviderClass {namespace}/{class_name}: {}",
                crate::kube_errors::describe(&e)
            ),
        }),
        Err(_) => Ok(None),
    };
    let fingerprint = fingerprint(&sync, class.as_ref().ok().and_then(Option::as_ref));
    let key = (namespace.clone(), name.clone());
    let now = Instant::now();
    if let Some(seen) = ctx.seen.lock().expect("seen lock").get(&key)
        && seen.fingerprint == fingerprint
    {
        match seen.due {
            None => return Ok(Action::await_change()),
            Some(due) if due > now => return Ok(Action::requeue(due - now)),
            Some(_) => {}
        }
    }

    let started = Instant::now();
    let live = Api::<Secret>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(&name)
        .await;
    let existed = matches!(live, Ok(Some(_)));
    let (outcome, hash) = match (class, live) {
        (Err(failure), _) => (Err(failure), None),
        (_, Err(e)) => (
            Err(Failure {
                reason: Reason::ControllerInternalError,
                message: format!(
                    "get Secret {namespace}/{name}: {}",
                    crate::kube_errors::describe(&e)
                ),
            }),
            None,
        ),
        (Ok(class), Ok(live)) => {
            match sync_once(&ctx, &sync, class.as_ref(), live.as_ref()).await {
                Ok((written, hash)) => (Ok(written), Some(hash)),
                Err(failure) => (Err(failure), None),
            }
        }
    };
    ctx.metrics.record(&outcome, started.elapsed());
    let interval = ctx.interval(&sync);
    write_status(&ctx, &sync, &outcome, existed, hash).await?;

    let mut seen = ctx.seen.lock().expect("seen lock");
    let failures = match &outcome {
        Ok(_) => 0,
        Err(_) => seen.get(&key).map_or(0, |s| s.failures) + 1,
    };
    let wait = match (&outcome, &interval) {
        (Ok(_), Ok(interval)) => *interval,
        _ => ctx.backoff(failures),
    };
    if let Err(failure) = &outcome {
        tracing::warn!(secretsync = %sync_id(&sync), reason = failure.reason.as_str(), error = %failure.message, retry_in = ?wait, "sync failed");
    } else {
        tracing::info!(secretsync = %sync_id(&sync), result = ?outcome.as_ref().ok(), "synced");
    }
    let due = (!wait.is_zero()).then(|| now + wait);
    seen.insert(
        key,
        Seen {
            fingerprint,
            due,
            failures,
        },
    );
    Ok(due.map_or_else(Action::await_change, |_| Action::requeue(wait)))
}

/// What, besides time, makes a SecretSync due at once: its spec, its force value, its class.
fn fingerprint(sync: &SecretSync, class: Option<&SecretProviderClass>) -> Vec<String> {
    let generation = |g: Option<i64>| g.map(|g| g.to_string()).unwrap_or_default();
    vec![
        sync.metadata.uid.clone().unwrap_or_default(),
        generation(sync.metadata.generation),
        sync.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REFRESH_ANNOTATION).cloned())
            .unwrap_or_default(),
        class
            .and_then(|c| c.metadata.uid.clone())
            .unwrap_or_default(),
        class
            .and_then(|c| c.metadata.resource_version.clone())
            .unwrap_or_default(),
    ]
}

/// One fetch and, if needed, one write. Returns what was written and the new sync hash.
async fn sync_once(
    ctx: &Syncer,
    sync: &SecretSync,
    class: Option<&SecretProviderClass>,
    live: Option<&Secret>,
) -> Result<(Written, String), Failure> {
    let id = sync_id(sync);
    let namespace = sync.metadata.namespace.as_deref().unwrap_or_default();
    if let Some(live) = live
        && !secret::owned_by(live, sync)
    {
        return Err(Failure {
            reason: Reason::SecretNotManaged,
            message: format!(
                "SecretSync {id}: Secret {id} exists and is not this SecretSync's (no owner reference to it); it is left untouched"
            ),
        });
    }
    desired::check_spec(sync)?;
    ctx.interval(sync)?;
    let restart_target = restart_target(sync)?;
    let class_name = &sync.spec.secret_provider_class_name;
    let class_id = format!("{namespace}/{class_name}");
    let class = class.ok_or_else(|| Failure {
        reason: Reason::ControllerSPCError,
        message: format!("SecretSync {id}: SecretProviderClass {class_id} not found (it must be in the SecretSync's namespace)"),
    })?;
    let files = fetch(ctx, sync, class, &class_id).await?;
    let want = desired::build(sync, &class_id, &files)?;
    let hash = sync_hash(&ctx.key, sync, class, &want);
    if let Some(live) = live {
        let asked = &want.type_;
        let have = live.type_.as_deref().unwrap_or("Opaque");
        if have != asked {
            return Err(Failure {
                reason: Reason::UserInputValidationFailed,
                message: format!(
                    "SecretSync {id}: Secret {id} has type {have} and a Secret's type cannot change; delete the Secret to have it made as {asked}"
                ),
            });
        }
        let same_hash =
            sync.status.as_ref().and_then(|s| s.sync_hash.as_deref()) == Some(hash.as_str());
        if same_hash && secret::holds(live, &want) {
            return Ok((Written::Unchanged, hash));
        }
    }
    secret::apply(&ctx.client, sync, &want, live).await?;
    if live.is_some()
        && let (Some(restarter), Some((kind, name))) = (ctx.restarter.clone(), restart_target)
    {
        let (namespace, token) = (namespace.to_owned(), hash.clone());
        let cause = format!("new content of Secret {id} (SecretSync)");
        tokio::spawn(async move {
            match restarter
                .restart(&namespace, kind, &name, &token, &cause)
                .await
            {
                Ok(done) => {
                    tracing::info!(workload = %format!("{} {namespace}/{name}", kind.as_str()), result = ?done, "restart on change")
                }
                Err(error) => tracing::warn!(%error, "restart on change failed"),
            }
        });
    }
    Ok((
        if live.is_some() {
            Written::Updated
        } else {
            Written::Created
        },
        hash,
    ))
}

/// The class's files for this SecretSync: its provider asked with a token of the SecretSync's
/// ServiceAccount, then the class's extract and templates.
async fn fetch(
    ctx: &Syncer,
    sync: &SecretSync,
    class: &SecretProviderClass,
    class_id: &str,
) -> Result<Vec<Payload>, Failure> {
    let id = sync_id(sync);
    let namespace = sync.metadata.namespace.as_deref().unwrap_or_default();
    let class_name = &sync.spec.secret_provider_class_name;
    let spc_error = |message: String| Failure {
        reason: Reason::ControllerSPCError,
        message: format!("SecretSync {id}: SecretProviderClass {class_id}: {message}"),
    };
    let provider_name = class
        .spec
        .provider
        .clone()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| spc_error("no spec.provider".into()))?;
    let provider = ctx
        .providers
        .resolve(&provider_name)
        .map_err(|e| spc_error(e.to_string()))?;
    let parameters = class.spec.parameters.clone().unwrap_or_default();
    let mut audiences = provider.token_audiences(&parameters);
    if audiences.is_empty() {
        audiences = ctx.settings.plugin_audiences.clone();
    }
    let service_account = &sync.spec.service_account_name;
    let tokens = ctx
        .tokens
        .tokens(namespace, service_account, &audiences)
        .await?;
    let context: BTreeMap<String, String> = [
        ("secretProviderClass", class_name.as_str()),
        ("csi.storage.k8s.io/pod.name", ctx.settings.pod.0.as_str()),
        ("csi.storage.k8s.io/pod.uid", ctx.settings.pod.1.as_str()),
        ("csi.storage.k8s.io/pod.namespace", namespace),
        ("csi.storage.k8s.io/serviceAccount.name", service_account),
        ("csi.storage.k8s.io/ephemeral", "false"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let attributes = mount_attributes(
        parameters,
        &context,
        (&provider_name, provider.as_ref()),
        &OverridePolicy::default(),
    )
    .map_err(|e| spc_error(e.to_string()))?;
    let input = MountInput {
        class: class_id.to_owned(),
        attributes,
        tokens,
        secrets: Redacted::new(BTreeMap::new()),
        target_path: PathBuf::from(TARGET_PATH),
        permission: DEFAULT_PERMISSION,
        current_versions: Vec::new(),
    };
    let output = fetch_for_class(
        provider.as_ref(),
        &input,
        &provider_name,
        ctx.settings.provider_timeout,
        &ctx.settings.limits,
        class.metadata.annotations.as_ref(),
    )
    .await
    .map_err(|e| Failure {
        // The class's extract or templates are the class author's: the class is misconfigured.
        reason: match e {
            PublishError::Transform(_) | PublishError::InvalidTransform { .. } => {
                Reason::ControllerSPCError
            }
            _ => Reason::ProviderError,
        },
        message: format!(
            "SecretSync {id} (ServiceAccount {namespace}/{service_account}): {}",
            crate::text::error_chain(&e)
        ),
    })?;
    if output.files.is_empty() {
        return Err(Failure {
            reason: Reason::ProviderError,
            message: format!(
                "SecretSync {id}: provider {provider_name} of class {class_id} returned no files (a plugin that writes files itself cannot fill a Secret)"
            ),
        });
    }
    Ok(output.files)
}

/// The workload a SecretSync asks to restart when its Secret changes: a named one only (a
/// SecretSync has no pod, so no owner).
fn restart_target(sync: &SecretSync) -> Result<Option<(restart::Kind, String)>, Failure> {
    let refuse = |message: String| Failure {
        reason: Reason::UserInputValidationFailed,
        message: format!("SecretSync {}: {message}", sync_id(sync)),
    };
    match restart::setting(sync.metadata.annotations.as_ref()).map_err(refuse)? {
        None => Ok(None),
        Some(Setting::Named(kind, name)) => Ok(Some((kind, name))),
        Some(Setting::Owner) => Err(refuse(format!(
            "annotation {}: owner means the pod's own workload, and a SecretSync has no pod; name it, e.g. Deployment/web",
            restart::RESTART_ANNOTATION
        ))),
    }
}

/// `v1:` and an HMAC-SHA256, under the controller's key, of the data and of the class and
/// SecretSync versions: equal when nothing that would change the Secret changed.
fn sync_hash(
    key: &VersionKey,
    sync: &SecretSync,
    class: &SecretProviderClass,
    want: &desired::DesiredSecret,
) -> String {
    let text = |v: Option<&str>| v.unwrap_or_default().as_bytes().to_vec();
    let mut parts: Vec<Vec<u8>> = vec![
        b"keymount secretsync v1".to_vec(),
        text(sync.metadata.uid.as_deref()),
        sync.metadata
            .generation
            .unwrap_or_default()
            .to_be_bytes()
            .to_vec(),
        text(class.metadata.uid.as_deref()),
        class
            .metadata
            .generation
            .unwrap_or_default()
            .to_be_bytes()
            .to_vec(),
        text(sync.spec.force_synchronization.as_deref()),
        want.type_.as_bytes().to_vec(),
    ];
    for (k, v) in &want.data {
        parts.push(k.as_bytes().to_vec());
        parts.push(v.expose().clone());
    }
    for map in [&want.labels, &want.annotations] {
        for (k, v) in map {
            parts.push(k.as_bytes().to_vec());
            parts.push(v.as_bytes().to_vec());
        }
    }
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    format!("v1:{}", key.sign(&refs))
}

/// Writes the status when it changed: conditions, observed generation, and on success the
/// hash and the time.
async fn write_status(
    ctx: &Syncer,
    sync: &SecretSync,
    outcome: &Outcome,
    existed: bool,
    hash: Option<String>,
) -> Result<(), ReconcileError> {
    let previous = sync.status.clone().unwrap_or_default();
    let generation = sync.metadata.generation;
    let status = SecretSyncStatus {
        sync_hash: hash.or(previous.sync_hash.clone()),
        last_successful_sync_time: if outcome.is_ok() {
            Some(
                jiff::Timestamp::now()
                    .round(jiff::Unit::Second)
                    .unwrap_or_else(|_| jiff::Timestamp::now())
                    .to_string(),
            )
        } else {
            previous.last_successful_sync_time.clone()
        },
        observed_generation: generation,
        conditions: outcome::conditions(outcome, existed, &previous.conditions, generation),
    };
    if status == previous {
        return Ok(());
    }
    let namespace = sync.metadata.namespace.as_deref().unwrap_or_default();
    let name = sync.metadata.name.as_deref().unwrap_or_default();
    let api: Api<SecretSync> = Api::namespaced(ctx.client.clone(), namespace);
    let body = serde_json::json!({"status": status});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .map(drop)
        .map_err(|e| {
            ReconcileError(format!(
                "write status of SecretSync {namespace}/{name}: {}",
                crate::kube_errors::describe(&e)
            ))
        })
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;

/// After a failed status write: try again soon.
pub(crate) fn on_error(sync: Arc<SecretSync>, error: &ReconcileError, _ctx: Arc<Syncer>) -> Action {
    tracing::warn!(secretsync = %sync_id(&sync), %error, "reconcile failed");
    Action::requeue(FIRST_BACKOFF)
}

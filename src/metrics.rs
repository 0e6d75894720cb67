//! Prometheus metrics with the upstream names and labels (counters get `_total` on exposition),
//! plus keymount's publish-duration histogram. Every label value comes from a closed set:
//! `provider` is a resolved provider (a built-in one or a plugin socket that exists, else
//! `unknown`), `error_type` a `&'static str` of keymount's code; never a pod, volume or secret
//! name, a class's `spec.provider`, or a plugin's error text.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

const OS_TYPE: &str = "linux";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OsLabels {
    os_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ProviderLabels {
    provider: String,
    os_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ProviderErrorLabels {
    provider: String,
    error_type: String,
    os_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RotationLabels {
    provider: String,
    os_type: String,
    rotated: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RotationErrorLabels {
    provider: String,
    error_type: String,
    os_type: String,
    rotated: String,
}

type Hist<L> = Family<L, Histogram, fn() -> Histogram>;

fn seconds_buckets() -> Histogram {
    // 0.5 ms .. ~16 s: publishes are milliseconds, provider calls can take seconds.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every metric keymount exposes.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    node_publish: Family<ProviderLabels, Counter>,
    node_publish_error: Family<ProviderErrorLabels, Counter>,
    node_unpublish: Family<OsLabels, Counter>,
    node_unpublish_error: Family<OsLabels, Counter>,
    publish_duration: Hist<ProviderLabels>,
    rotation_reconcile: Family<RotationLabels, Counter>,
    rotation_reconcile_error: Family<RotationErrorLabels, Counter>,
    rotation_duration: Hist<OsLabels>,
    sync_secret: Family<ProviderLabels, Counter>,
    sync_secret_error: Family<ProviderErrorLabels, Counter>,
    sync_duration: Hist<OsLabels>,
    state_journal_writable: Gauge,
    kubelet_registered: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut m = Self {
            registry: Registry::default(),
            node_publish: Family::default(),
            node_publish_error: Family::default(),
            node_unpublish: Family::default(),
            node_unpublish_error: Family::default(),
            publish_duration: Family::new_with_constructor(seconds_buckets),
            rotation_reconcile: Family::default(),
            rotation_reconcile_error: Family::default(),
            rotation_duration: Family::new_with_constructor(seconds_buckets),
            sync_secret: Family::default(),
            sync_secret_error: Family::default(),
            sync_duration: Family::new_with_constructor(seconds_buckets),
            state_journal_writable: Gauge::default(),
            kubelet_registered: Gauge::default(),
        };
        let r = &mut m.registry;
        r.register_collector(Box::new(crate::process_metrics::ProcessCollector));
        r.register(
            "node_publish",
            "Successful NodePublishVolume calls",
            m.node_publish.clone(),
        );
        r.register(
            "node_publish_error",
            "Failed NodePublishVolume calls",
            m.node_publish_error.clone(),
        );
        r.register(
            "node_unpublish",
            "Successful NodeUnpublishVolume calls",
            m.node_unpublish.clone(),
        );
        r.register(
            "node_unpublish_error",
            "Failed NodeUnpublishVolume calls",
            m.node_unpublish_error.clone(),
        );
        r.register(
            "node_publish_duration_seconds",
            "NodePublishVolume latency",
            m.publish_duration.clone(),
        );
        r.register(
            "rotation_reconcile",
            "Republishes that asked the provider",
            m.rotation_reconcile.clone(),
        );
        r.register(
            "rotation_reconcile_error",
            "Failed rotations (old content kept)",
            m.rotation_reconcile_error.clone(),
        );
        r.register(
            "rotation_reconcile_duration_sec",
            "Rotation latency",
            m.rotation_duration.clone(),
        );
        r.register(
            "sync_k8s_secret",
            "Kubernetes Secrets written by the sync",
            m.sync_secret.clone(),
        );
        r.register(
            "sync_k8s_secret_error",
            "Failed Kubernetes Secret syncs",
            m.sync_secret_error.clone(),
        );
        r.register(
            "sync_k8s_secret_duration_sec",
            "Kubernetes Secret sync latency",
            m.sync_duration.clone(),
        );
        r.register(
            "keymount_state_journal_writable",
            "1 while the volume state journal can be written; 0 while the state is kept in memory only (e.g. a full disk)",
            m.state_journal_writable.clone(),
        );
        r.register(
            "keymount_kubelet_registered",
            "1 while kubelet has confirmed keymount's own registration (--register-with-kubelet); 0 before, after a refusal, and without --register-with-kubelet",
            m.kubelet_registered.clone(),
        );
        m
    }

    /// Whether kubelet confirmed the registration keymount serves.
    pub(crate) fn kubelet_registered(&self, registered: bool) {
        self.kubelet_registered.set(i64::from(registered));
    }

    /// Whether the volume state journal can be written (set before each scrape).
    pub(crate) fn state_journal_writable(&self, writable: bool) {
        self.state_journal_writable.set(i64::from(writable));
    }

    fn provider(provider: &str) -> ProviderLabels {
        ProviderLabels {
            provider: provider.to_owned(),
            os_type: OS_TYPE.into(),
        }
    }

    fn os() -> OsLabels {
        OsLabels {
            os_type: OS_TYPE.into(),
        }
    }

    /// A publish ended; `error_type` is `None` on success.
    pub fn publish(&self, provider: &str, error_type: Option<&'static str>, seconds: f64) {
        match error_type {
            None => {
                self.node_publish
                    .get_or_create(&Self::provider(provider))
                    .inc();
            }
            Some(error_type) => {
                self.node_publish_error
                    .get_or_create(&ProviderErrorLabels {
                        provider: provider.to_owned(),
                        error_type: error_type.to_owned(),
                        os_type: OS_TYPE.into(),
                    })
                    .inc();
            }
        }
        self.publish_duration
            .get_or_create(&Self::provider(provider))
            .observe(seconds);
    }

    /// An unpublish ended.
    pub fn unpublish(&self, ok: bool) {
        let family = if ok {
            &self.node_unpublish
        } else {
            &self.node_unpublish_error
        };
        family.get_or_create(&Self::os()).inc();
    }

    /// A rotation asked the provider; `rotated` tells whether content changed.
    pub fn rotation(
        &self,
        provider: &str,
        rotated: bool,
        error_type: Option<&'static str>,
        seconds: f64,
    ) {
        match error_type {
            None => {
                self.rotation_reconcile
                    .get_or_create(&RotationLabels {
                        provider: provider.to_owned(),
                        os_type: OS_TYPE.into(),
                        rotated: rotated.to_string(),
                    })
                    .inc();
            }
            Some(error_type) => {
                self.rotation_reconcile_error
                    .get_or_create(&RotationErrorLabels {
                        provider: provider.to_owned(),
                        error_type: error_type.to_owned(),
                        os_type: OS_TYPE.into(),
                        rotated: rotated.to_string(),
                    })
                    .inc();
            }
        }
        self.rotation_duration
            .get_or_create(&Self::os())
            .observe(seconds);
    }

    /// A Kubernetes Secret sync ended.
    pub fn sync(&self, provider: &str, error_type: Option<&'static str>, seconds: f64) {
        match error_type {
            None => {
                self.sync_secret
                    .get_or_create(&Self::provider(provider))
                    .inc();
            }
            Some(error_type) => {
                self.sync_secret_error
                    .get_or_create(&ProviderErrorLabels {
                        provider: provider.to_owned(),
                        error_type: error_type.to_owned(),
                        os_type: OS_TYPE.into(),
                    })
                    .inc();
            }
        }
        self.sync_duration
            .get_or_create(&Self::os())
            .observe(seconds);
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_has_the_standard_names_and_the_split() {
        let text = Metrics::new().encode();
        for name in [
            "process_cpu_seconds_total ",
            "keymount_process_cpu_seconds_total{mode=\"user\"} ",
            "keymount_process_cpu_seconds_total{mode=\"system\"} ",
            "process_resident_memory_bytes ",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }

    #[test]
    fn exposes_upstream_names_with_total_suffix() {
        let m = Metrics::new();
        m.publish("vault", None, 0.002);
        m.publish("vault", Some("SecretProviderClassNotFound"), 0.001);
        m.unpublish(true);
        m.rotation("vault", true, None, 0.01);
        let text = m.encode();
        for needle in [
            "node_publish_total{provider=\"vault\",os_type=\"linux\"} 1",
            "node_publish_error_total{provider=\"vault\",error_type=\"SecretProviderClassNotFound\",os_type=\"linux\"} 1",
            "node_unpublish_total{os_type=\"linux\"} 1",
            "rotation_reconcile_total{provider=\"vault\",os_type=\"linux\",rotated=\"true\"} 1",
            "node_publish_duration_seconds_bucket",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}

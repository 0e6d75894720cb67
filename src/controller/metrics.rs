//! The controller's metrics: syncs by result and reason (closed sets, never a name), their
//! duration, whether this replica leads, and the process's own CPU and memory.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::outcome::{Outcome, Written};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SyncLabels {
    result: &'static str,
    reason: &'static str,
}

/// Every metric of `keymount controller`.
#[derive(Debug)]
pub(crate) struct ControllerMetrics {
    registry: Registry,
    syncs: Family<SyncLabels, Counter>,
    duration: Histogram,
    leader: Gauge,
}

impl ControllerMetrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::default();
        let syncs = Family::<SyncLabels, Counter>::default();
        // 1 ms .. ~33 s: a sync is a token, a store read and an API write.
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let leader = Gauge::default();
        registry.register(
            "keymount_secretsync_syncs",
            "SecretSync syncs by result (created, updated, unchanged, failed) and failure reason",
            syncs.clone(),
        );
        registry.register(
            "keymount_secretsync_sync_duration_seconds",
            "Duration of one SecretSync sync (token, store read, Secret write)",
            duration.clone(),
        );
        registry.register(
            "keymount_controller_leader",
            "1 while this replica holds the Lease and writes, else 0",
            leader.clone(),
        );
        registry.register_collector(Box::new(crate::process_metrics::ProcessCollector));
        Self {
            registry,
            syncs,
            duration,
            leader,
        }
    }

    pub(crate) fn record(&self, outcome: &Outcome, took: Duration) {
        let labels = match outcome {
            Ok(Written::Created) => SyncLabels {
                result: "created",
                reason: "",
            },
            Ok(Written::Updated) => SyncLabels {
                result: "updated",
                reason: "",
            },
            Ok(Written::Unchanged) => SyncLabels {
                result: "unchanged",
                reason: "",
            },
            Err(f) => SyncLabels {
                result: "failed",
                reason: f.reason.as_str(),
            },
        };
        self.syncs.get_or_create(&labels).inc();
        self.duration.observe(took.as_secs_f64());
    }

    pub(crate) fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The Prometheus text exposition.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

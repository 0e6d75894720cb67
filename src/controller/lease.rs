//! Leader election on a `coordination.k8s.io` Lease, so one replica writes at a time. A Lease
//! is taken when it is free, ours, or unchanged for longer than its duration as seen by this
//! replica's own clock (the holder's clock is never trusted); every write carries the
//! resourceVersion read, so two replicas can never both win.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use tokio_util::sync::CancellationToken;

/// Which Lease, and who we are.
#[derive(Debug, Clone)]
pub(crate) struct LeaseSettings {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) identity: String,
    pub(crate) duration: Duration,
}

impl LeaseSettings {
    /// How often the holder renews and a standby looks again.
    fn retry(&self) -> Duration {
        self.duration / 3
    }
}

/// The Lease's record as last seen, and when it was first seen so.
#[derive(Debug, Default)]
struct Observed {
    version: Option<String>,
    since: Option<Instant>,
}

/// A Lease of this replica (or a waiting one).
#[derive(Debug)]
pub(crate) struct Elector {
    api: Api<Lease>,
    settings: LeaseSettings,
    observed: Observed,
}

fn now() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

impl Elector {
    pub(crate) fn new(client: kube::Client, settings: LeaseSettings) -> Self {
        Self {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            observed: Observed::default(),
        }
    }

    /// Waits until this replica holds the Lease (true) or `stop` fires (false).
    pub(crate) async fn acquire(&mut self, stop: &CancellationToken) -> bool {
        loop {
            match self.try_take().await {
                Ok(true) => return true,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(lease = %self.settings.name, error = %crate::kube_errors::describe(&e), "Lease not read or written; trying again")
                }
            }
            tokio::select! {
                () = stop.cancelled() => return false,
                () = tokio::time::sleep(self.settings.retry()) => {}
            }
        }
    }

    /// Renews every third of the duration until `stop`; returns early (false) when the Lease
    /// could not be renewed within its duration or another replica holds it.
    pub(crate) async fn hold(&mut self, stop: &CancellationToken) -> bool {
        let mut renewed = Instant::now();
        loop {
            tokio::select! {
                () = stop.cancelled() => return true,
                () = tokio::time::sleep(self.settings.retry()) => {}
            }
            match self.try_take().await {
                Ok(true) => renewed = Instant::now(),
                Ok(false) => return false,
                Err(e) => {
                    tracing::warn!(lease = %self.settings.name, error = %crate::kube_errors::describe(&e), "Lease not renewed");
                    if renewed.elapsed() >= self.settings.duration {
                        return false;
                    }
                }
            }
        }
    }

    /// Gives the Lease up at shutdown, so a standby takes over at once.
    pub(crate) async fn release(&mut self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.settings.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now());
        if let Err(e) = self
            .api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(lease = %self.settings.name, error = %crate::kube_errors::describe(&e), "Lease not released; it expires on its own");
        }
    }

    /// One attempt: true when this replica holds the Lease afterwards.
    async fn try_take(&mut self) -> Result<bool, kube::Error> {
        let me = self.settings.identity.clone();
        let seconds = i32::try_from(self.settings.duration.as_secs().max(1)).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.settings.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.name.clone()),
                    namespace: Some(self.settings.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(now()),
                    renew_time: Some(now()),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let version = lease.metadata.resource_version.clone();
        if self.observed.version != version {
            self.observed = Observed {
                version,
                since: Some(Instant::now()),
            };
        }
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let held_for =
            Duration::from_secs(spec.lease_duration_seconds.unwrap_or(seconds).max(0) as u64);
        let expired = self.observed.since.is_some_and(|t| t.elapsed() >= held_for);
        let ours = holder.as_deref() == Some(me.as_str());
        if !(ours || holder.is_none() || expired) {
            return Ok(false);
        }
        if !ours {
            spec.acquire_time = Some(now());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            tracing::info!(lease = %self.settings.name, previous = holder.as_deref().unwrap_or(""), "taking the Lease");
        }
        spec.holder_identity = Some(me);
        spec.lease_duration_seconds = Some(seconds);
        spec.renew_time = Some(now());
        match self
            .api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => {
                self.observed = Observed {
                    version: written.metadata.resource_version,
                    since: Some(Instant::now()),
                };
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}

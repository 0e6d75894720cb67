//! `keymount controller`: wires the API client, the providers, the key of the sync hashes,
//! leader election and the HTTP server, and syncs SecretSyncs while this replica leads.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::node::kube_client;
use crate::cli::ControllerArgs;
use crate::controller::http::{self, HttpState};
use crate::controller::identity::TokenSource;
use crate::controller::lease::{Elector, LeaseSettings};
use crate::controller::metrics::ControllerMetrics;
use crate::controller::reconcile::{SyncSettings, Syncer};
use crate::fs::paths::Limits;
use crate::provider::plugin::PluginClients;
use crate::provider::version_key::VersionKey;
use crate::provider::{Providers, aws, builtin};
use crate::restart::Restarter;

/// The name providers are told in place of a node.
const CONTROLLER_NODE: &str = "keymount-controller";

fn identity(args: &ControllerArgs) -> String {
    args.identity
        .clone()
        .filter(|i| !i.is_empty())
        .unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        })
}

/// Runs the controller until SIGTERM/SIGINT (or, with leader election, until the Lease is
/// lost: the process exits with an error and its pod restarts as a standby).
pub async fn run(args: ControllerArgs) -> anyhow::Result<()> {
    let shutdown = crate::shutdown::on_signals()?;
    let client = kube_client(args.kubeconfig.as_ref()).await?;
    let namespace = args
        .leader_election_namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let metrics = Arc::new(ControllerMetrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let addr = crate::http::parse_addr(&args.metrics_addr)
        .with_context(|| format!("--metrics-addr {:?}", args.metrics_addr))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind metrics address {addr}"))?;
    let http_stop = CancellationToken::new();
    let http_task = tokio::spawn(http::serve(
        listener,
        HttpState {
            metrics: metrics.clone(),
            ready: ready.clone(),
        },
        http_stop.clone(),
    ));

    let key = match &args.providers.hmac_key_file {
        Some(path) => VersionKey::from_file(path)?,
        None => VersionKey::from_secret(&client, &namespace).await?,
    };
    let plugins = PluginClients::new(args.providers.plugin_settings());
    let settings = args
        .providers
        .builtin_settings(CONTROLLER_NODE, aws::DEFAULT_LOOKUP_TTL);
    let providers = builtin::register(
        Providers::new(plugins),
        &settings,
        Some(client.clone()),
        Some(key.clone()),
    )?;
    tracing::info!(builtin = ?providers.builtin_names().collect::<Vec<_>>(), "providers ready");
    let limits = Limits {
        max_total_bytes: args.providers.tmpfs_size,
        ..Limits::default()
    };
    let sync_settings = SyncSettings {
        controller_name: args.secret_sync_controller_name.clone(),
        default_interval: args.rotation_poll_interval,
        plugin_audiences: args.token_request_audience.clone(),
        provider_timeout: args.providers.provider_timeout,
        limits,
        max_backoff: args.max_backoff,
        pod: (
            args.identity
                .clone()
                .unwrap_or_else(|| CONTROLLER_NODE.to_owned()),
            args.pod_uid.clone().unwrap_or_default(),
        ),
    };
    let mut syncer = Syncer::new(
        client.clone(),
        Arc::new(providers),
        TokenSource::new(client.clone(), args.token_expiration),
        key.clone(),
        sync_settings,
        metrics.clone(),
    );
    if args.restart.enable_restart_on_change {
        tracing::info!("restart on change on: SecretSyncs may ask for a workload's restart");
        syncer = syncer.with_restarter(Arc::new(Restarter::new(
            client.clone(),
            key,
            args.restart.restart_min_interval,
            "keymount-controller",
        )));
    }
    let syncer = Arc::new(syncer);
    ready.store(true, Ordering::Release);

    let mut elector = args.leader_elect.then(|| {
        Elector::new(
            client.clone(),
            LeaseSettings {
                namespace: namespace.clone(),
                name: args.leader_election_id.clone(),
                identity: identity(&args),
                duration: args.leader_election_lease_duration,
            },
        )
    });
    if let Some(elector) = elector.as_mut() {
        tracing::info!(lease = %format!("{namespace}/{}", args.leader_election_id), "waiting for the Lease");
        if !elector.acquire(&shutdown).await {
            http_stop.cancel();
            http_task.await??;
            return Ok(());
        }
    }
    metrics.set_leader(true);
    tracing::info!(interval = ?args.rotation_poll_interval, "leading: syncing SecretSyncs");
    let work_stop = CancellationToken::new();
    let work = tokio::spawn(crate::controller::run(
        syncer,
        args.concurrency,
        work_stop.clone(),
    ));
    let kept = match elector.as_mut() {
        Some(elector) => elector.hold(&shutdown).await,
        None => {
            shutdown.cancelled().await;
            true
        }
    };
    // Stop taking new syncs; those in flight finish within the grace period.
    work_stop.cancel();
    if tokio::time::timeout(args.shutdown_grace_period, work)
        .await
        .is_err()
    {
        tracing::warn!(grace = ?args.shutdown_grace_period, "syncs still in flight after the grace period");
    }
    metrics.set_leader(false);
    if let Some(elector) = elector.as_mut()
        && kept
    {
        elector.release().await;
    }
    http_stop.cancel();
    http_task.await??;
    if !kept {
        anyhow::bail!(
            "lost the Lease {namespace}/{}: another replica writes now",
            args.leader_election_id
        );
    }
    tracing::info!("stopped");
    Ok(())
}

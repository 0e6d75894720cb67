//! `keymount node`: wires the class source, providers, volume service, CSI socket and HTTP
//! server, and runs them until a signal.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::class::{ApiClasses, ClassSource, DirectoryClasses};
use crate::cli::NodeArgs;
use crate::csi::registration::{self, KubeletRegistration, RegistrationSettings};
use crate::csi::server::{self, SocketId};
use crate::csi::{IdentityService, NodeService};
use crate::fs::paths::Limits;
use crate::http::{self, HttpState};
use crate::metrics::Metrics;
use crate::provider::access::OverridePolicy;
use crate::provider::plugin::PluginClients;
use crate::provider::version_key::{KeyError, VersionKey};
use crate::provider::{Providers, builtin};
use crate::restart::Restarter;
use crate::shutdown::Background;
use crate::sync::SecretSync;
use crate::volume::state::VolumeStates;
use crate::volume::{KubeReporter, NodeConfig, VolumeService};

/// A client for the API server: from `--kubeconfig`, else in-cluster/inferred.
pub(crate) async fn kube_client(kubeconfig: Option<&PathBuf>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &Default::default()).await?
        }
        None => kube::Config::infer()
            .await
            .context("no kubeconfig given and no in-cluster configuration found")?,
    };
    Ok(kube::Client::try_from(config)?)
}

/// The key of the object versions: `--hmac-key-file`, else the shared Secret in keymount's
/// namespace (created on first use), else (local mode) a file in the state directory.
async fn version_key(
    args: &NodeArgs,
    kube: Option<&kube::Client>,
    state_dir: &std::path::Path,
) -> anyhow::Result<VersionKey> {
    Ok(match (&args.providers.hmac_key_file, kube) {
        (Some(path), _) => VersionKey::from_file(path)?,
        (None, Some(client)) => VersionKey::from_secret(client, client.default_namespace()).await?,
        // Local mode. A state directory that cannot take the key (a full or read-only disk)
        // must not stop the node, as the journal does not: a key for this process only, whose
        // versions change at the next start (one extra pod-status write per volume then).
        (None, None) => match VersionKey::from_state_dir(state_dir) {
            Ok(key) => key,
            Err(error @ KeyError::Create { .. }) => {
                tracing::warn!(%error, "HMAC key of object versions not stored; using one for this process only");
                VersionKey::ephemeral()
            }
            Err(error) => return Err(error.into()),
        },
    })
}

/// How long shutdown waits for background work (event writes, the journal retry, the
/// registration check) after the calls.
const BACKGROUND_DEADLINE: Duration = Duration::from_secs(10);

/// How often a volume state journal that could not be written is tried again.
const JOURNAL_RETRY: Duration = Duration::from_secs(10);

/// Writes the volume state journal again while it cannot be written (a full disk), until
/// `stop`; a change of state tries too.
async fn retry_journal(volumes: Arc<VolumeService>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(JOURNAL_RETRY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {
                volumes.states().retry_journal().await;
            }
        }
    }
}

/// Runs the node plugin until SIGTERM/SIGINT.
pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    let shutdown = crate::shutdown::on_signals()?;
    let metrics = Arc::new(Metrics::new());
    let socket = server::socket_path(&args.endpoint)?;

    let background = Background::default();
    let (classes, kube): (Arc<dyn ClassSource>, _) = match &args.class_dir {
        Some(dir) => {
            tracing::info!(dir = %dir.display(), "local mode: classes from a directory, no API server");
            (Arc::new(DirectoryClasses::new(dir)), None)
        }
        None => {
            let client = kube_client(args.kubeconfig.as_ref()).await?;
            let classes = ApiClasses::new(client.clone(), args.api_cache_ttl);
            (Arc::new(classes), Some(client))
        }
    };

    let plugins = PluginClients::new(args.providers.plugin_settings());
    let state_dir = args.state_dir.clone().unwrap_or_else(|| {
        socket
            .parent()
            .map(|p| p.join("state"))
            .unwrap_or_else(|| PathBuf::from("/var/run/keymount/state"))
    });
    let builtin = args.builtin_settings();
    let version_key = if builtin.vault_enabled() || args.restart.enable_restart_on_change {
        Some(version_key(&args, kube.as_ref(), &state_dir).await?)
    } else {
        None
    };
    let restarter = match (&kube, args.restart.enable_restart_on_change, &version_key) {
        (Some(client), true, Some(key)) => Some(Arc::new(Restarter::new(
            client.clone(),
            key.clone(),
            args.restart.restart_min_interval,
            format!("keymount-node/{}", args.node_id),
        ))),
        (None, true, _) => {
            anyhow::bail!("--enable-restart-on-change needs the API server (not --class-dir)")
        }
        _ => None,
    };
    let providers =
        builtin::register(Providers::new(plugins), &builtin, kube.clone(), version_key)?;
    tracing::info!(builtin = ?providers.builtin_names().collect::<Vec<_>>(), "providers ready");
    let states = VolumeStates::load(Some(state_dir)).await?;
    // --tmpfs-size bounds a volume's set; the tmpfs holds two of them (old and new).
    let limits = Limits {
        max_total_bytes: args.providers.tmpfs_size,
        ..Limits::default()
    };
    let config = NodeConfig {
        node_id: args.node_id.clone(),
        kubelet_root: args.kubelet_root_dir.clone(),
        tmpfs_size: Some(limits.tmpfs_size()),
        limits,
        provider_timeout: args.providers.provider_timeout,
        rotation_interval: args
            .enable_secret_rotation
            .then_some(args.rotation_poll_interval),
        overrides: OverridePolicy::new(&args.providers.access.allow_volume_attribute_overrides),
        fs_group_from_pod: args.fs_group_from_pod,
    };
    if args.fs_group_from_pod && kube.is_none() {
        anyhow::bail!("--fs-group-from-pod needs the API server (not --class-dir)");
    }
    let sync = match (&kube, args.enable_secret_sync) {
        (Some(client), true) => Some(SecretSync::new(client.clone(), metrics.clone())),
        (None, true) => {
            anyhow::bail!("--enable-secret-sync needs the API server (not --class-dir)")
        }
        (_, false) => None,
    };
    let mut volumes = VolumeService::new(
        config,
        classes,
        Arc::new(providers),
        states,
        metrics.clone(),
    );
    if let Some(client) = kube {
        let mut reporter =
            KubeReporter::new(client.clone(), &args.node_id).in_background(background.clone());
        if let Some(sync) = sync {
            tracing::info!("Secret sync on: secretObjects are mirrored into Kubernetes Secrets");
            reporter = reporter.with_secret_sync(sync);
        }
        if let Some(restarter) = restarter {
            tracing::info!("restart on change on: classes may ask for their workloads' restart");
            reporter = reporter.with_restarter(restarter);
        }
        volumes = volumes
            .with_reporter(Arc::new(reporter))
            .with_pod_reads(client);
    }
    let volumes = Arc::new(volumes);
    volumes.recover().await;
    background.spawn(retry_journal(volumes.clone(), shutdown.clone()));

    let serving = Arc::new(AtomicBool::new(false));
    let addr = http::parse_addr(&args.metrics_addr)
        .with_context(|| format!("--metrics-addr {:?}", args.metrics_addr))?;
    let http_listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind metrics address {addr}"))?;
    let registration = args
        .register_with_kubelet
        .then(|| Arc::new(KubeletRegistration::new(metrics.clone())));
    let http_state = HttpState {
        metrics,
        volumes: volumes.clone(),
        serving: serving.clone(),
        registration: registration.clone(),
    };
    // The HTTP server outlives the CSI drain, so /readyz can say 503 while calls finish.
    let http_stop = CancellationToken::new();
    let http_task = tokio::spawn(http::serve(http_listener, http_state, http_stop.clone()));

    let listener = server::bind(&socket)?;
    let socket_id = SocketId::of(&socket);
    serving.store(true, Ordering::Release);
    tracing::info!(
        endpoint = %args.endpoint,
        driver = %args.driver_name,
        node = %args.node_id,
        metrics = %addr,
        "serving CSI node plugin"
    );
    // Registered only once the CSI socket is served: kubelet dials it right after GetInfo.
    let registering = registration.map(|state| {
        let root = args.kubelet_root_dir.path();
        let settings = RegistrationSettings {
            socket: RegistrationSettings::socket_path(root, &args.driver_name),
            driver_name: args.driver_name.clone(),
            endpoint: args
                .kubelet_registration_path
                .clone()
                .unwrap_or_else(|| RegistrationSettings::default_endpoint(root, &socket)),
            check_interval: args.registration_check_interval,
        };
        tokio::spawn(registration::run(settings, state, shutdown.clone()))
    });
    let identity = IdentityService::new(&args.driver_name, volumes.clone());
    let node = NodeService::new(&args.node_id, volumes);
    let serve = server::serve(listener, identity, node, shutdown.clone());
    tokio::pin!(serve);
    let grace = args.shutdown_grace_period;
    let drain_deadline = async {
        shutdown.cancelled().await;
        serving.store(false, Ordering::Release);
        // New connections now fail at once instead of waiting in the backlog.
        socket_id.remove_if_same(&socket);
        tracing::info!(grace = ?grace, "no new calls; waiting for calls in flight");
        tokio::time::sleep(grace).await;
    };
    let served = tokio::select! {
        result = &mut serve => result,
        () = drain_deadline => {
            tracing::warn!(
                grace = ?grace,
                "calls still in flight after the shutdown grace period; exiting without them"
            );
            Ok(())
        }
    };
    shutdown.cancel();
    socket_id.remove_if_same(&socket);
    if let Some(registering) = registering {
        // Removes the registration socket, so kubelet forgets the driver until the next start.
        registering.await?;
    }
    http_stop.cancel();
    http_task.await??;
    background.join(BACKGROUND_DEADLINE).await;
    served?;
    tracing::info!("stopped");
    Ok(())
}

//! Load driver: publishes and unpublishes N volumes over the real CSI socket at concurrency C
//! against an in-process provider plugin, and reports NodePublishVolume latency (p50/p99),
//! the republish fast path, and the node process's peak RSS with 110 volumes mounted.
//!
//! `cargo bench --bench publish -- [--volumes N] [--concurrency C] [--disk fresh-ext4|here] [--api]`
//!
//! Local mode (the default) reads the class from a directory and writes no pod status. With
//! `--api`, the path production takes: the class comes from a kube-apiserver (the test bed's,
//! `KEYMOUNT_TEST_KUBECONFIG`, or one started for the run), each publish carries a real
//! ServiceAccount token as kubelet sends it, and the pod's SecretProviderClassPodStatus is
//! applied through the API server.
//!
//! The kubelet's pods directory and keymount's state live on a freshly made ext4 (a loop
//! device, as a node's disk) unless `--disk here` puts them in `$TMPDIR`: the figures then
//! depend on the machine's own disk and on how many files it has seen created and deleted.

#[path = "../tests/harness/mod.rs"]
mod harness;
#[path = "../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use harness::node::{
    NodeOptions, NodeProcess, kubelet_target, pod_uid, publish_request, unpublish_request,
    write_class,
};
use harness::plugin::{FakePlugin, Reply};
use keymount::proto::csi::NodePublishVolumeRequest;

#[path = "common/args.rs"]
mod args;
#[path = "common/fresh_disk.rs"]
mod fresh_disk;
use fresh_disk::FreshDisk;

struct Settings {
    volumes: usize,
    concurrency: usize,
    fresh_disk: bool,
    api: bool,
}

fn settings() -> Settings {
    let argv: Vec<String> = std::env::args().collect();
    Settings {
        volumes: args::number("--volumes", 1000),
        concurrency: args::number("--concurrency", 32),
        fresh_disk: !argv.windows(2).any(|w| w[0] == "--disk" && w[1] == "here"),
        api: argv.iter().any(|a| a == "--api"),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

/// CPU time used so far, user and system, in seconds, to the microsecond: the node's from its
/// own `keymount_process_cpu_seconds_total{mode}` (getrusage of every thread, those that ended
/// included), the load driver's from getrusage. `/proc/<pid>/stat` counts in 10 ms ticks, too
/// coarse for a figure of tens of microseconds per publish.
#[derive(Debug, Default, Clone, Copy)]
struct Cpu {
    user: f64,
    system: f64,
}

impl Cpu {
    async fn of_node(node: &NodeProcess) -> Self {
        let (code, body) = node
            .get("/metrics")
            .await
            .expect("scrape the node's /metrics");
        assert_eq!(code, 200, "/metrics: {body}");
        let mode = |m: &str| {
            let prefix = format!("keymount_process_cpu_seconds_total{{mode=\"{m}\"}} ");
            body.lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {prefix} in the node's /metrics"))
        };
        Self {
            user: mode("user"),
            system: mode("system"),
        }
    }

    fn of_self() -> Self {
        use nix::sys::resource::{UsageWho, getrusage};
        use nix::sys::time::TimeValLike as _;
        let usage = getrusage(UsageWho::RUSAGE_SELF).unwrap();
        Self {
            user: usage.user_time().num_microseconds() as f64 / 1e6,
            system: usage.system_time().num_microseconds() as f64 / 1e6,
        }
    }

    fn add_since(&mut self, before: Self, after: Self) {
        self.user += after.user - before.user;
        self.system += after.system - before.system;
    }

    /// Microseconds per call.
    fn per_call(self, calls: usize) -> (f64, f64) {
        let us = |seconds: f64| seconds * 1e6 / calls as f64;
        (us(self.user), us(self.system))
    }
}

/// Idle and total clock ticks of all CPUs so far (`/proc/stat`).
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    (ticks[3] + ticks[4], ticks.iter().take(8).sum())
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name:<28} n={:<6} p50={:>8.3} ms  p99={:>8.3} ms  max={:>8.3} ms",
        samples.len(),
        percentile(&samples, 0.50).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.last().unwrap().as_secs_f64() * 1e3,
    );
}

/// What every publish of the run carries: the class's namespace and, in API mode, the pod's
/// ServiceAccount tokens as kubelet sends them.
struct Workload {
    namespace: String,
    tokens: Option<String>,
}

impl Workload {
    /// Volume `n`, of a pod of its own.
    fn request(&self, kubelet: &Path, n: usize) -> NodePublishVolumeRequest {
        let target = kubelet_target(kubelet, &pod_uid(n), "secrets");
        let mut req = publish_request(&format!("v{n}"), &target, "db", &self.namespace);
        let context = &mut req.volume_context;
        context.insert("csi.storage.k8s.io/pod.uid".into(), pod_uid(n));
        context.insert("csi.storage.k8s.io/pod.name".into(), format!("app-{n}"));
        if let Some(tokens) = &self.tokens {
            context.insert(
                "csi.storage.k8s.io/serviceAccount.tokens".into(),
                tokens.clone(),
            );
        }
        req
    }
}

/// Runs `count` publishes (or republishes) `concurrency` at a time; returns each call's latency.
async fn publish_all(
    node: &NodeProcess,
    work: &Workload,
    kubelet: &Path,
    range: std::ops::Range<usize>,
    concurrency: usize,
) -> Vec<Duration> {
    let client = node.node_client().await;
    futures::stream::iter(range)
        .map(|n| {
            let req = work.request(kubelet, n);
            let mut client = client.clone();
            async move {
                let start = Instant::now();
                client.node_publish_volume(req).await.expect("publish");
                start.elapsed()
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await
}

async fn unpublish_all(
    node: &NodeProcess,
    work: &Workload,
    kubelet: &Path,
    range: std::ops::Range<usize>,
    concurrency: usize,
) {
    let client = node.node_client().await;
    futures::stream::iter(range)
        .map(|n| {
            let target = work.request(kubelet, n).target_path;
            let mut client = client.clone();
            async move {
                client
                    .node_unpublish_volume(unpublish_request(&format!("v{n}"), Path::new(&target)))
                    .await
                    .expect("unpublish");
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;
}

#[tokio::main]
async fn main() {
    let s = settings();
    let disk = s.fresh_disk.then(FreshDisk::make);
    let tmp = match &disk {
        Some(disk) => tempfile::tempdir_in(disk.root()).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    // The kubelet root: targets are `<root>/pods/<uid>/volumes/kubernetes.io~csi/<name>/mount`.
    let (classes, providers, kubelet) = (
        tmp.path().join("classes"),
        tmp.path().join("providers"),
        tmp.path().to_owned(),
    );
    let objects = [("objects", "- a\n- b\n- c")];
    let (work, kubeconfig) = if s.api {
        api_workload(&objects).await
    } else {
        write_class(&classes, "bench", "db", "fake", &objects);
        let local = Workload {
            namespace: "bench".into(),
            tokens: None,
        };
        (local, None)
    };
    let reply = Reply::files(&[("user", "app"), ("password", "bench-pw"), ("tls.key", "k")]);
    let _plugin = FakePlugin::start(&providers, "fake", reply).await;
    let work_dir = tmp.path().join("node");
    std::fs::create_dir(&work_dir).unwrap();
    let node = NodeProcess::start(NodeOptions {
        class_dir: kubeconfig.is_none().then(|| classes.clone()),
        kubeconfig,
        provider_dir: Some(providers.clone()),
        args: vec![
            "--enable-secret-rotation".into(),
            "--rotation-poll-interval=1h".into(),
            // The production default (the test harness shortens it).
            "--api-cache-ttl=30s".into(),
        ],
        env: vec![("RUST_LOG".into(), "warn".into())],
        work_dir: Some(work_dir),
        kubelet_root: Some(kubelet.clone()),
    })
    .await;
    println!(
        "keymount publish benchmark, {}: {} volumes, concurrency {}, 3 files per volume, release build, pods and state on {}",
        if s.api {
            "API mode (class from the API server, real tokens, pod status applied)"
        } else {
            "local mode (class from a directory, no pod status)"
        },
        s.volumes,
        s.concurrency,
        if s.fresh_disk {
            "a fresh ext4"
        } else {
            "$TMPDIR"
        }
    );

    // kubelet creates each volume's parent directory (and writes its vol_data.json there)
    // before NodePublishVolume; keymount creates and removes only the target itself.
    for n in 0..s.volumes.max(110) {
        let target = kubelet_target(&kubelet, &pod_uid(n), "secrets");
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    }

    // 1. First publishes (mount tmpfs, call the plugin, validate, write, record state).
    let mut first = Vec::new();
    let (mut node_cpu, mut driver_cpu, mut wall) = (Cpu::default(), Cpu::default(), Duration::ZERO);
    let mut node_unpublish_cpu = Cpu::default();
    let (mut idle, mut total) = (0, 0);
    let mut done = 0;
    while done < s.volumes {
        let batch = (s.volumes - done).min(110);
        let (node_before, driver_before) = (Cpu::of_node(&node).await, Cpu::of_self());
        let machine_before = machine_ticks();
        let started = Instant::now();
        first.extend(publish_all(&node, &work, &kubelet, done..done + batch, s.concurrency).await);
        wall += started.elapsed();
        let machine_after = machine_ticks();
        idle += machine_after.0 - machine_before.0;
        total += machine_after.1 - machine_before.1;
        node_cpu.add_since(node_before, Cpu::of_node(&node).await);
        driver_cpu.add_since(driver_before, Cpu::of_self());
        let node_before = Cpu::of_node(&node).await;
        unpublish_all(&node, &work, &kubelet, done..done + batch, s.concurrency).await;
        node_unpublish_cpu.add_since(node_before, Cpu::of_node(&node).await);
        done += batch;
    }
    report("NodePublishVolume (mount)", first);
    let ((node_user, node_system), (driver_user, driver_system)) =
        (node_cpu.per_call(s.volumes), driver_cpu.per_call(s.volumes));
    println!(
        "  CPUs idle {:.0} % of the time while publishing",
        idle as f64 * 100.0 / total.max(1) as f64
    );
    println!(
        "  throughput {:.0}/s; CPU per publish: node {node_user:.0} µs user + {node_system:.0} µs system, \
         load driver and plugin {driver_user:.0} µs user + {driver_system:.0} µs system",
        s.volumes as f64 / wall.as_secs_f64()
    );
    let (unpublish_user, unpublish_system) = node_unpublish_cpu.per_call(s.volumes);
    println!(
        "  CPU per unpublish: node {unpublish_user:.0} µs user + {unpublish_system:.0} µs system"
    );

    // 2. 110 volumes mounted (kubelet's default max pods), then kubelet-style republishes.
    publish_all(&node, &work, &kubelet, 0..110, s.concurrency).await;
    let mut republish = Vec::new();
    for _ in 0..(s.volumes / 110).max(1) {
        republish.extend(publish_all(&node, &work, &kubelet, 0..110, s.concurrency).await);
    }
    report("republish inside interval", republish);
    // The same, one call at a time: the gate's own cost without queueing behind 31 others.
    let mut sequential = Vec::new();
    for _ in 0..(s.volumes / 110).max(1) {
        sequential.extend(publish_all(&node, &work, &kubelet, 0..110, 1).await);
    }
    report("republish, one at a time", sequential);
    if !s.api {
        gate_in_process(&classes, &providers, &kubelet).await;
    }
    let pid = node.pid();
    println!(
        "peak RSS of keymount node with 110 volumes mounted: {:.1} MiB",
        support::proc::memory_kib(pid, "VmHWM") as f64 / 1024.0
    );
    unpublish_all(&node, &work, &kubelet, 0..110, s.concurrency).await;
    assert!(
        harness::mounts::mounts_under(tmp.path()).is_empty(),
        "mount leaked"
    );
}

/// API mode: the class `db` in a fresh namespace of the API server, a ServiceAccount `app`
/// and a token for it (audience `vault`) in kubelet's JSON; returns the workload and the
/// kubeconfig the node uses.
async fn api_workload(parameters: &[(&str, &str)]) -> (Workload, Option<PathBuf>) {
    use keymount::class::{SecretProviderClass, SecretProviderClassSpec};
    use kube::api::{Api, PostParams};

    let kube = support::kube::TestKube::get();
    kube.install_keymount_crds().await;
    let namespace = kube.namespace("bench").await;
    kube.create_service_account(&namespace, "app", &[]).await;
    let class = SecretProviderClass::new(
        "db",
        SecretProviderClassSpec {
            provider: Some("fake".into()),
            parameters: Some(
                parameters
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            secret_objects: None,
        },
    );
    Api::<SecretProviderClass>::namespaced(kube.client(), &namespace)
        .create(&PostParams::default(), &class)
        .await
        .expect("create the class");
    let token = kube
        .request_token(&namespace, "app", &["vault"], None)
        .await;
    let tokens = serde_json::json!({
        "vault": {"token": token, "expirationTimestamp": "2099-01-01T00:00:00Z"}
    });
    let work = Workload {
        namespace,
        tokens: Some(tokens.to_string()),
    };
    (work, Some(kube.kubeconfig_path().to_owned()))
}

/// The rotation gate itself, without gRPC: a `VolumeService` in this process publishes 110
/// volumes, then each republish inside the interval is timed around `publish()` alone.
async fn gate_in_process(classes: &Path, providers: &Path, kubelet: &Path) {
    use std::sync::Arc;

    use keymount::class::DirectoryClasses;
    use keymount::fs::paths::Limits;
    use keymount::metrics::Metrics;
    use keymount::mount::KubeletRoot;
    use keymount::provider::Providers;
    use keymount::provider::plugin::{PluginClients, PluginSettings};
    use keymount::redact::Redacted;
    use keymount::volume::state::VolumeStates;
    use keymount::volume::{
        AccessType, NodeConfig, PublishRequest, UnpublishRequest, VolumeService,
    };

    let service = VolumeService::new(
        NodeConfig {
            node_id: "bench".into(),
            kubelet_root: KubeletRoot::new(kubelet).unwrap(),
            tmpfs_size: Some(1 << 20),
            limits: Limits::default(),
            provider_timeout: Duration::from_secs(10),
            rotation_interval: Some(Duration::from_secs(3600)),
            overrides: Default::default(),
            fs_group_from_pod: false,
        },
        Arc::new(DirectoryClasses::new(classes)),
        Arc::new(Providers::new(PluginClients::new(PluginSettings {
            dirs: vec![providers.to_owned()],
            ..PluginSettings::default()
        }))),
        VolumeStates::load(None).await.unwrap(),
        Arc::new(Metrics::new()),
    );
    let request = |n: usize| {
        let grpc = publish_request(
            &format!("g{n}"),
            &kubelet_target(kubelet, &pod_uid(n), "gate"),
            "db",
            "bench",
        );
        PublishRequest {
            volume_id: grpc.volume_id,
            target_path: grpc.target_path,
            access: Some(AccessType::Mount),
            readonly: true,
            volume_context: grpc.volume_context.into_iter().collect(),
            secrets: Redacted::new(Default::default()),
            mount_group: String::new(),
        }
    };
    for n in 0..110 {
        service.publish(request(n)).await.expect("publish");
    }
    let mut samples = Vec::new();
    for _ in 0..10 {
        for n in 0..110 {
            let req = request(n);
            let start = Instant::now();
            service.publish(req).await.expect("republish");
            samples.push(start.elapsed());
        }
    }
    report("rotation gate, in process", samples);
    for n in 0..110 {
        let target_path = kubelet_target(kubelet, &pod_uid(n), "gate")
            .display()
            .to_string();
        service
            .unpublish(UnpublishRequest {
                volume_id: format!("g{n}"),
                target_path,
            })
            .await
            .expect("unpublish");
    }
}

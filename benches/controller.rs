//! Load driver of `keymount controller`: N SecretSyncs over S ServiceAccounts (each its own
//! class and Vault path, each ServiceAccount its own Vault role), synced by the release binary
//! against the test bed's kube-apiserver and OpenBao. Reports the time until every one is
//! Ready from a cold start, the store calls of the first sync and of one refresh interval
//! (logins per ServiceAccount, reads per object), and the controller's peak RSS.
//!
//! `cargo bench --bench controller -- [--syncs N] [--accounts S] [--interval SECONDS]`

#[path = "common/args.rs"]
mod args;
#[path = "../tests/controller_support/mod.rs"]
mod controller_support;
#[path = "../tests/harness/mod.rs"]
mod harness;
#[path = "../tests/support/mod.rs"]
mod support;
#[path = "../tests/sync_support/mod.rs"]
mod sync_support;
#[path = "../tests/vault_support/mod.rs"]
mod vault_support;

use std::time::{Duration, Instant};

use controller_support::{Bed, ControllerProcess};
use futures::StreamExt as _;
use kube::api::ListParams;
use serde_json::json;

struct Settings {
    syncs: usize,
    accounts: usize,
    interval: u64,
}

fn settings() -> Settings {
    Settings {
        syncs: args::number("--syncs", 1000),
        accounts: args::number("--accounts", 50),
        interval: args::number("--interval", 60) as u64,
    }
}

/// How many SecretSyncs of the namespace are Ready=True for their current generation, and
/// how many have been refreshed since `since` (their lastSuccessfulSyncTime is later).
async fn ready(bed: &Bed, since: Option<jiff::Timestamp>) -> usize {
    let list = bed.syncs().list(&ListParams::default()).await.unwrap();
    list.items
        .iter()
        .filter(|s| {
            let Some(status) = &s.status else {
                return false;
            };
            let ready = status.observed_generation == s.metadata.generation
                && status
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
            let fresh = since.is_none_or(|t| {
                status
                    .last_successful_sync_time
                    .as_deref()
                    .and_then(|v| v.parse::<jiff::Timestamp>().ok())
                    .is_some_and(|v| v > t)
            });
            ready && fresh
        })
        .count()
}

/// (logins, reads of the SecretSyncs' paths) in OpenBao's audit log so far.
fn store_calls(bed: &Bed) -> (usize, usize) {
    let requests = bed.bao.audited_requests();
    let logins = requests
        .iter()
        .filter(|(_, p)| p == "auth/jwt/login")
        .count();
    let reads = requests
        .iter()
        .filter(|(op, p)| op == "read" && p.starts_with("secret/data/obj-"))
        .count();
    (logins, reads)
}

async fn wait_all(
    bed: &Bed,
    n: usize,
    since: Option<jiff::Timestamp>,
    limit: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let done = ready(bed, since).await;
        if done >= n {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "only {done} of {n} synced after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::main]
async fn main() {
    let s = settings();
    let bed = Bed::new("bench-ctl").await;
    println!(
        "{} SecretSyncs over {} ServiceAccounts (one class and one Vault path each), refresh every {}s",
        s.syncs, s.accounts, s.interval
    );
    // Roles and ServiceAccounts: one each.
    for a in 0..s.accounts {
        let sa = format!("sa-{a:02}");
        bed.kube.create_service_account(&bed.ns, &sa, &[]).await;
        bed.bao
            .jwt_role(
                "jwt",
                &sa,
                &["vault"],
                &format!("system:serviceaccount:{}:{sa}", bed.ns),
                &[controller_support::ROLE],
            )
            .await;
    }
    let setup = Instant::now();
    futures::stream::iter(0..s.syncs)
        .for_each_concurrent(16, |i| {
            let bed = &bed;
            let accounts = s.accounts;
            async move {
                let sa = format!("sa-{:02}", i % accounts);
                bed.bao
                    .kv2_put("secret", &format!("obj-{i}"), json!({"username": format!("u{i}"), "password": format!("p{i}")}))
                    .await;
                let class = format!("c-{i:04}");
                let body = json!({
                    "apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
                    "metadata": {"name": class, "namespace": bed.ns},
                    "spec": {"provider": "vault", "parameters": {
                        "vaultAddress": bed.bao.addr(), "roleName": sa, "vaultAuthMountPath": "jwt",
                        "objects": format!("- {{objectName: password, secretPath: secret/data/obj-{i}, secretKey: password}}"),
                    }},
                });
                support::kube::apply_object(&bed.client, &body, "keymount-bench").await.unwrap();
                let mut sync = bed.secret_sync(&format!("ss-{i:04}"));
                sync["spec"]["secretProviderClassName"] = class.into();
                sync["spec"]["serviceAccountName"] = sa.into();
                sync["spec"]["secretObject"]["data"] = json!([{"sourcePath": "password", "targetKey": "password"}]);
                bed.apply(&sync).await;
            }
        })
        .await;
    println!(
        "set-up (not measured): {:.1}s",
        setup.elapsed().as_secs_f64()
    );

    let before = store_calls(&bed);
    let started = Instant::now();
    let interval = format!("--rotation-poll-interval={}s", s.interval);
    let controller = ControllerProcess::start(
        &bed,
        bed.kube.kubeconfig_path(),
        &[&interval, "--concurrency=16"],
    )
    .await;
    wait_all(&bed, s.syncs, None, Duration::from_secs(600)).await;
    // From the process's start: its list of every SecretSync and class is part of it.
    let took = started.elapsed();
    let first = store_calls(&bed);
    let hwm_first = support::proc::memory_kib(controller.pid(), "VmHWM");
    println!(
        "cold start to all Ready: {:.1}s ({:.0} SecretSyncs/s), store calls: {} logins, {} reads",
        took.as_secs_f64(),
        s.syncs as f64 / took.as_secs_f64(),
        first.0 - before.0,
        first.1 - before.1,
    );

    // One refresh interval: every SecretSync read again, nothing changed.
    let mark = jiff::Timestamp::now();
    let round = wait_all(
        &bed,
        s.syncs,
        Some(mark),
        Duration::from_secs(s.interval * 3 + 600),
    )
    .await;
    let second = store_calls(&bed);
    let rv = bed
        .secrets()
        .list(&ListParams::default().labels("secrets-store.sync.x-k8s.io/secretsync"))
        .await
        .unwrap();
    println!(
        "one refresh (all {} re-read within {:.1}s): {} logins, {} reads; Secrets written: {} created, {} updated",
        s.syncs,
        round.as_secs_f64(),
        second.0 - first.0,
        second.1 - first.1,
        controller.syncs("result=\"created\"").await,
        controller.syncs("result=\"updated\"").await,
    );
    assert_eq!(rv.items.len(), s.syncs);
    let hwm = support::proc::memory_kib(controller.pid(), "VmHWM");
    let rss = support::proc::memory_kib(controller.pid(), "VmRSS");
    println!(
        "controller memory: peak RSS {:.1} MiB (after the first sync {:.1} MiB), RSS now {:.1} MiB",
        hwm as f64 / 1024.0,
        hwm_first as f64 / 1024.0,
        rss as f64 / 1024.0
    );
}

//! Helpers of the `keymount controller` tests: the SecretSync CRD in the test API server, an
//! OpenBao whose JWT auth trusts the API server's own ServiceAccount tokens, a Vault class,
//! SecretSyncs, and the real controller binary as a child process.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use keymount::controller::crd::SecretSync;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use crate::harness::node::free_port;
use crate::support::kube::{FIELD_MANAGER, TestKube};
use crate::support::openbao::OpenBao;
use crate::support::proc::wait_until;

static CRD: OnceCell<()> = OnceCell::const_new();

/// Vault role and policy name of the trusted ServiceAccount.
pub(crate) const ROLE: &str = "web";

/// A namespace with ServiceAccounts `web` (trusted by the store) and `stranger` (not), an
/// OpenBao trusting the API server's tokens for `web` only, and a Vault class `vault-db`.
pub(crate) struct Bed {
    pub(crate) kube: &'static TestKube,
    pub(crate) client: kube::Client,
    pub(crate) ns: String,
    pub(crate) bao: OpenBao,
    /// `spec.secretSyncControllerName` of this test's SecretSyncs and its controllers' flag:
    /// tests run at once against one API server, each controller handles only its own.
    pub(crate) controller_name: String,
}

impl Bed {
    pub(crate) async fn new(prefix: &str) -> Bed {
        let kube = TestKube::get();
        crate::sync_support::install_crds(kube).await;
        CRD.get_or_init(|| async {
            kube.install_crds(&keymount::controller::crd::to_yaml())
                .await;
        })
        .await;
        let ns = kube.namespace(prefix).await;
        for sa in ["web", "stranger"] {
            kube.create_service_account(&ns, sa, &[]).await;
        }
        let bao = OpenBao::start().await;
        bao.enable_jwt_auth("jwt", &[&kube.sa_public_key_pem()])
            .await;
        bao.put_policy(
            ROLE,
            "path \"secret/data/*\" { capabilities = [\"read\"] }\n",
        )
        .await;
        bao.jwt_role(
            "jwt",
            ROLE,
            &["vault"],
            &format!("system:serviceaccount:{ns}:web"),
            &[ROLE],
        )
        .await;
        let bed = Bed {
            kube,
            client: kube.client(),
            controller_name: format!("test-{ns}"),
            ns,
            bao,
        };
        bed.apply_class(&bed.ns, "vault-db", "secret/data/db").await;
        bed
    }

    /// Class `name` in `ns`: the vault provider reading `username` and `password` of `path`.
    pub(crate) async fn apply_class(&self, ns: &str, name: &str, path: &str) {
        let objects = format!(
            "- {{objectName: username, secretPath: {path}, secretKey: username}}\n\
             - {{objectName: password, secretPath: {path}, secretKey: password}}"
        );
        let body = json!({
            "apiVersion": "secrets-store.csi.x-k8s.io/v1",
            "kind": "SecretProviderClass",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"provider": "vault", "parameters": {
                "vaultAddress": self.bao.addr(), "roleName": ROLE,
                "vaultAuthMountPath": "jwt", "objects": objects,
            }},
        });
        Api::<keymount::class::SecretProviderClass>::namespaced(self.client.clone(), ns)
            .patch(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await
            .unwrap_or_else(|e| panic!("apply class {ns}/{name}: {e}"));
    }

    /// The SecretSync `name` as JSON: class `vault-db`, ServiceAccount `web`, keys
    /// `user`/`password` from the class's two files, type `kubernetes.io/basic-auth`.
    pub(crate) fn secret_sync(&self, name: &str) -> Value {
        json!({
            "apiVersion": "secret-sync.x-k8s.io/v1alpha1",
            "kind": "SecretSync",
            "metadata": {"name": name, "namespace": self.ns},
            "spec": {
                "secretSyncControllerName": self.controller_name,
                "secretProviderClassName": "vault-db",
                "serviceAccountName": "web",
                "secretObject": {
                    "type": "Opaque",
                    "labels": {"team": "shop"},
                    "annotations": {"owner": "db-team"},
                    "data": [
                        {"sourcePath": "username", "targetKey": "user"},
                        {"sourcePath": "password", "targetKey": "password"},
                    ],
                },
            },
        })
    }

    /// Applies a SecretSync (JSON) with the test's field manager.
    pub(crate) async fn apply(&self, body: &Value) {
        let name = body["metadata"]["name"].as_str().unwrap().to_owned();
        self.syncs()
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(body),
            )
            .await
            .unwrap_or_else(|e| panic!("apply SecretSync {name}: {e}"));
    }

    pub(crate) fn syncs(&self) -> Api<SecretSync> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub(crate) fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// The SecretSync as the API server returns it (JSON), for the health check.
    pub(crate) async fn sync_json(&self, name: &str) -> Value {
        serde_json::to_value(self.syncs().get(name).await.unwrap()).unwrap()
    }

    /// The Ready condition's (status, reason, message), once the status describes the current
    /// generation.
    pub(crate) async fn ready(&self, name: &str) -> Option<(String, String, String)> {
        let sync = self.syncs().get_opt(name).await.ok()??;
        let status = sync.status?;
        if status.observed_generation != sync.metadata.generation {
            return None;
        }
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
        Some((
            ready.status.clone(),
            ready.reason.clone(),
            ready.message.clone(),
        ))
    }

    /// Waits until the Ready condition has `status` and returns (reason, message).
    pub(crate) async fn wait_ready(&self, name: &str, status: &str) -> (String, String) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let last = self.ready(name).await;
            if let Some((s, reason, message)) = &last
                && s == status
            {
                return (reason.clone(), message.clone());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "SecretSync {}/{name}: Ready never {status}; last {last:?}",
                self.ns
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The value of `key` in Secret `name`, if both exist.
    pub(crate) async fn secret_value(&self, name: &str, key: &str) -> Option<String> {
        let secret = self.secrets().get_opt(name).await.ok()??;
        let bytes = secret.data?.get(key)?.0.clone();
        Some(String::from_utf8(bytes).unwrap())
    }

    /// `keymount controller` for this test's SecretSyncs, with `args` added.
    pub(crate) async fn controller(&self, args: &[&str]) -> ControllerProcess {
        ControllerProcess::start(self, self.kube.kubeconfig_path(), args).await
    }

    /// A kubeconfig in `dir` that authenticates with a real token of ServiceAccount
    /// `namespace/name` (as a pod of it would), defaulting to `namespace`.
    pub(crate) async fn kubeconfig_of(
        &self,
        dir: &std::path::Path,
        namespace: &str,
        name: &str,
    ) -> PathBuf {
        let token = self.kube.request_token(namespace, name, &[], None).await;
        let config = self.kube.token_kubeconfig(&token, Some(namespace));
        let path = dir.join(format!("{name}.kubeconfig"));
        std::fs::write(&path, config).unwrap();
        path
    }
}

/// A running `keymount controller`; killed when dropped.
#[derive(Debug)]
pub(crate) struct ControllerProcess {
    child: Option<Child>,
    pub(crate) metrics: SocketAddr,
    pub(crate) log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ControllerProcess {
    /// Starts the controller with `kubeconfig` (Lease `lease-<namespace>` in the test namespace
    /// unless `args` name another; `--no-key`: no key file, the key Secret is used) and waits
    /// until `/readyz` answers 200.
    pub(crate) async fn start(bed: &Bed, kubeconfig: &std::path::Path, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = dir.path().join("controller.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let key = dir.path().join("hmac.key");
        std::fs::write(&key, "controller-test-hmac-key-0123456789abcdef").unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keymount"));
        cmd.arg("controller")
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--metrics-addr={metrics}"))
            .arg(format!("--leader-election-namespace={}", bed.ns))
            .arg("--allowed-store-addresses=127.0.0.1")
            .arg("--builtin-providers=vault,aws");
        if !args
            .iter()
            .any(|a| a.starts_with("--secret-sync-controller-name"))
        {
            cmd.arg(format!(
                "--secret-sync-controller-name={}",
                bed.controller_name
            ));
        }
        if !args.contains(&"--no-key") {
            cmd.arg(format!("--hmac-key-file={}", key.display()));
        }
        if !args.iter().any(|a| a.starts_with("--leader-election-id")) {
            cmd.arg(format!("--leader-election-id=lease-{}", bed.ns));
        }
        cmd.args(args.iter().filter(|a| **a != "--no-key"))
            .env(
                "RUST_LOG",
                "debug,hyper=info,h2=info,tower=info,kube=info,rustls=info",
            )
            .env_remove("KUBECONFIG")
            .env_remove("POD_NAME")
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file);
        let child = cmd.spawn().expect("start keymount controller");
        let process = ControllerProcess {
            child: Some(child),
            metrics,
            log,
            _dir: dir,
        };
        let url = format!("http://{metrics}/readyz");
        let ready = wait_until(Duration::from_secs(30), || {
            let url = url.clone();
            async move {
                reqwest::get(&url)
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        })
        .await;
        assert!(ready, "controller not ready; log:\n{}", process.log_text());
        process
    }

    /// The process id (for its memory figures).
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The controller's log so far.
    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The `/metrics` text.
    pub(crate) async fn metrics_text(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.metrics))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The sum of `keymount_secretsync_syncs_total` samples whose labels contain `labels`.
    pub(crate) async fn syncs(&self, labels: &str) -> u64 {
        self.metrics_text()
            .await
            .lines()
            .filter(|l| l.starts_with("keymount_secretsync_syncs_total{") && l.contains(labels))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// SIGKILL: no Lease release, no cleanup.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the exit; returns whether it exited successfully.
    pub(crate) fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill").arg(child.id().to_string()).status();
        child.wait().is_ok_and(|s| s.success())
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

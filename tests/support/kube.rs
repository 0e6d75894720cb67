//! The test Kubernetes API: one real kube-apiserver v1.20.2 (+ etcd, kube-controller-manager)
//! per test run, shared by all tests of a binary; a fresh namespace per test.
//!
//! `./scripts/test` starts the server and sets `KEYMOUNT_TEST_KUBECONFIG` (and
//! `KEYMOUNT_TEST_KUBE_DIR`). Without it, the first `TestKube::get()` starts a private instance
//! with `scripts/testbed/kube-up.sh` in a temp dir; a watchdog stops it when this process exits.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{
    BoundObjectReference, TokenRequest, TokenRequestSpec, TokenReview, TokenReviewSpec,
    TokenReviewStatus,
};
use k8s_openapi::api::core::v1::{Container, Namespace, Pod, PodSpec, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, GroupVersionKind, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use super::proc::{install_crypto_provider, repo_root, wait_until};

/// Field manager used for server-side apply by the harness.
pub(crate) const FIELD_MANAGER: &str = "keymount-testbed";

/// Handle on the shared test API server. Cheap to share; make a client per test with `client()`.
#[derive(Debug)]
pub(crate) struct TestKube {
    kubeconfig: PathBuf,
    dir: PathBuf,
    config: kube::Config,
    api_url: String,
    ca_pem: String,
}

static KUBE: OnceLock<TestKube> = OnceLock::new();
static REVIEWER_TOKEN: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();

impl TestKube {
    /// The shared instance (started on first use if the test runner did not start one).
    pub(crate) fn get() -> &'static TestKube {
        KUBE.get_or_init(|| {
            let (kubeconfig, dir) = match std::env::var_os("KEYMOUNT_TEST_KUBECONFIG") {
                Some(path) => {
                    let path = PathBuf::from(path);
                    let dir = std::env::var_os("KEYMOUNT_TEST_KUBE_DIR")
                        .map(PathBuf::from)
                        .unwrap_or_else(|| {
                            path.parent()
                                .expect("kubeconfig has a parent dir")
                                .to_path_buf()
                        });
                    (path, dir)
                }
                None => start_private_instance(),
            };
            TestKube::load(kubeconfig, dir)
        })
    }

    fn load(kubeconfig: PathBuf, dir: PathBuf) -> TestKube {
        // Config loading is async; do it on a throwaway runtime in its own thread so that
        // `get()` works from any context (inside or outside a tokio runtime).
        let path = kubeconfig.clone();
        let config = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let kc = Kubeconfig::read_from(&path)
                    .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
                kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                    .await
                    .unwrap_or_else(|e| panic!("kubeconfig {}: {e}", path.display()))
            })
        })
        .join()
        .expect("kubeconfig loader thread");
        let api_url = config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_string();
        let ca_path = dir.join("pki/ca.crt");
        let ca_pem = std::fs::read_to_string(&ca_path)
            .unwrap_or_else(|e| panic!("read {}: {e}", ca_path.display()));
        TestKube {
            kubeconfig,
            dir,
            config,
            api_url,
            ca_pem,
        }
    }

    /// A new client (make one per test: a client is bound to the tokio runtime that made it).
    pub(crate) fn client(&self) -> kube::Client {
        install_crypto_provider();
        kube::Client::try_from(self.config.clone()).expect("kube client from test kubeconfig")
    }

    /// A client that impersonates `user` (e.g. `system:serviceaccount:NS:NAME`): requests are
    /// authorized by RBAC as that user.
    pub(crate) fn client_as(&self, user: &str) -> kube::Client {
        install_crypto_provider();
        let mut config = self.config.clone();
        config.auth_info.impersonate = Some(user.into());
        kube::Client::try_from(config).expect("impersonating kube client")
    }

    /// Installs keymount's SecretProviderClass and SecretProviderClassPodStatus CRDs from the
    /// checked-in `deploy/crds.yaml` (the output of `keymount crd`).
    pub(crate) async fn install_keymount_crds(&self) {
        let path = repo_root().join("deploy/crds.yaml");
        let yaml = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        self.install_crds(&yaml).await;
    }

    /// The admin kubeconfig (system:masters).
    pub(crate) fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The directory holding the instance's certs, logs and pid files.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// `https://127.0.0.1:PORT`, without a trailing slash.
    pub(crate) fn api_url(&self) -> &str {
        &self.api_url
    }

    /// A kubeconfig (JSON, which kubeconfig readers take as YAML) that authenticates with
    /// `token`, defaulting to `namespace` when one is given.
    pub(crate) fn token_kubeconfig(&self, token: &str, namespace: Option<&str>) -> String {
        use base64::Engine as _;
        let ca = base64::engine::general_purpose::STANDARD.encode(self.ca_pem());
        let mut context = serde_json::json!({"cluster": "test", "user": "token"});
        if let Some(ns) = namespace {
            context["namespace"] = ns.into();
        }
        serde_json::json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "test", "cluster": {"server": self.api_url(), "certificate-authority-data": ca}}],
            "users": [{"name": "token", "user": {"token": token}}],
            "contexts": [{"name": "test", "context": context}],
            "current-context": "test",
        })
        .to_string()
    }

    /// PEM of the CA that signed the API server's serving certificate.
    pub(crate) fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// PEM of the public key that verifies ServiceAccount tokens (for `auth/jwt`).
    pub(crate) fn sa_public_key_pem(&self) -> String {
        let path = self.dir.join("pki/sa.pub");
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    /// The issuer of ServiceAccount tokens.
    pub(crate) fn issuer(&self) -> &'static str {
        "https://kubernetes.default.svc"
    }

    /// Creates a fresh namespace `PREFIX-<unique>` and returns its name.
    pub(crate) async fn namespace(&self, prefix: &str) -> String {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let suffix = format!("{:x}{:x}{n}", std::process::id(), nanos % 0xfffff);
        let prefix: String = prefix
            .to_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(63 - suffix.len() - 1)
            .collect();
        let name = format!("{}-{suffix}", prefix.trim_matches('-'));
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(self.client())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
        name
    }

    /// Creates a ServiceAccount with the given annotations.
    pub(crate) async fn create_service_account(
        &self,
        ns: &str,
        name: &str,
        annotations: &[(&str, &str)],
    ) -> ServiceAccount {
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                annotations: (!annotations.is_empty()).then(|| {
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect::<BTreeMap<_, _>>()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<ServiceAccount>::namespaced(self.client(), ns)
            .create(&PostParams::default(), &sa)
            .await
            .unwrap_or_else(|e| panic!("create serviceaccount {ns}/{name}: {e}"))
    }

    /// Creates a bare Pod running as `sa` (no kubelet: it only exists in the API). Its UID is
    /// in `metadata.uid`.
    pub(crate) async fn create_pod(&self, ns: &str, name: &str, sa: &str) -> Pod {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                service_account_name: Some(sa.into()),
                automount_service_account_token: Some(false),
                containers: vec![Container {
                    name: "app".into(),
                    image: Some("registry.invalid/keymount-test:never-pulled".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        Api::<Pod>::namespaced(self.client(), ns)
            .create(&PostParams::default(), &pod)
            .await
            .unwrap_or_else(|e| panic!("create pod {ns}/{name}: {e}"))
    }

    /// A ServiceAccount token from the TokenRequest API, for `audiences` (empty: the API
    /// server's own audience), optionally bound to a pod given as (name, uid). Valid 1 hour.
    pub(crate) async fn request_token(
        &self,
        ns: &str,
        sa: &str,
        audiences: &[&str],
        bound_pod: Option<(&str, &str)>,
    ) -> String {
        let request = TokenRequest {
            metadata: ObjectMeta::default(),
            spec: Some(TokenRequestSpec {
                audiences: (!audiences.is_empty())
                    .then(|| audiences.iter().map(|a| a.to_string()).collect()),
                expiration_seconds: Some(3600),
                bound_object_ref: bound_pod.map(|(name, uid)| BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(name.into()),
                    uid: Some(uid.into()),
                }),
                ..Default::default()
            }),
            status: None,
        };
        let response: TokenRequest = Api::<ServiceAccount>::namespaced(self.client(), ns)
            .create_subresource("token", sa, &PostParams::default(), &request)
            .await
            .unwrap_or_else(|e| panic!("token request for {ns}/{sa}: {e}"));
        response
            .status
            .and_then(|s| s.token)
            .unwrap_or_else(|| panic!("TokenRequest for {ns}/{sa} returned no token"))
    }

    /// Runs a TokenReview of `token` for `audiences` (empty: the API server's own audience).
    pub(crate) async fn token_review(&self, token: &str, audiences: &[&str]) -> TokenReviewStatus {
        let review = TokenReview {
            metadata: ObjectMeta::default(),
            spec: TokenReviewSpec {
                token: token.into(),
                audiences: (!audiences.is_empty())
                    .then(|| audiences.iter().map(|a| a.to_string()).collect()),
            },
            status: None,
        };
        Api::<TokenReview>::all(self.client())
            .create(&PostParams::default(), &review)
            .await
            .expect("create TokenReview")
            .status
            .expect("TokenReview has a status")
    }

    /// Applies every CustomResourceDefinition in `yaml` (multi-document allowed) by server-side
    /// apply and waits until each is Established.
    pub(crate) async fn install_crds(&self, yaml: &str) {
        let api = Api::<CustomResourceDefinition>::all(self.client());
        let mut names = Vec::new();
        for doc in yaml
            .split("\n---")
            .map(str::trim)
            .filter(|d| !d.is_empty() && *d != "---")
        {
            let value: serde_json::Value =
                serde_yaml::from_str(doc).unwrap_or_else(|e| panic!("CRD YAML: {e}"));
            if value.is_null() {
                continue;
            }
            let crd: CustomResourceDefinition =
                serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("not a CRD: {e}"));
            let name = crd.metadata.name.clone().expect("CRD has metadata.name");
            api.patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&value),
            )
            .await
            .unwrap_or_else(|e| panic!("apply CRD {name}: {e}"));
            names.push(name);
        }
        for name in names {
            let established = wait_until(Duration::from_secs(30), || {
                let api = api.clone();
                let name = name.clone();
                async move {
                    let Ok(crd) = api.get(&name).await else {
                        return false;
                    };
                    crd.status
                        .and_then(|s| s.conditions)
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                }
            })
            .await;
            assert!(established, "CRD {name} not Established within 30 s");
        }
    }

    /// A token of ServiceAccount `keymount-testbed/token-reviewer`, bound to ClusterRole
    /// `system:auth-delegator`: what OpenBao's `auth/kubernetes` uses for TokenReview.
    pub(crate) async fn reviewer_token(&self) -> String {
        REVIEWER_TOKEN
            .get_or_init(|| async {
                let client = self.client();
                let ns = "keymount-testbed";
                let pp = PatchParams::apply(FIELD_MANAGER).force();
                let namespace = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
                Api::<Namespace>::all(client.clone())
                    .patch(ns, &pp, &Patch::Apply(&namespace))
                    .await
                    .expect("apply namespace keymount-testbed");
                let sa = serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": {"name": "token-reviewer", "namespace": ns}});
                Api::<ServiceAccount>::namespaced(client.clone(), ns)
                    .patch("token-reviewer", &pp, &Patch::Apply(&sa))
                    .await
                    .expect("apply serviceaccount token-reviewer");
                let binding = ClusterRoleBinding {
                    metadata: ObjectMeta { name: Some("keymount-testbed-token-reviewer".into()), ..Default::default() },
                    role_ref: RoleRef {
                        api_group: Some("rbac.authorization.k8s.io".into()),
                        kind: "ClusterRole".into(),
                        name: "system:auth-delegator".into(),
                    },
                    subjects: Some(vec![Subject {
                        kind: "ServiceAccount".into(),
                        name: "token-reviewer".into(),
                        namespace: Some(ns.into()),
                        ..Default::default()
                    }]),
                };
                let mut binding = serde_json::to_value(&binding).expect("binding json");
                binding["apiVersion"] = "rbac.authorization.k8s.io/v1".into();
                binding["kind"] = "ClusterRoleBinding".into();
                Api::<ClusterRoleBinding>::all(client)
                    .patch("keymount-testbed-token-reviewer", &pp, &Patch::Apply(&binding))
                    .await
                    .expect("apply clusterrolebinding keymount-testbed-token-reviewer");
                self.request_token(ns, "token-reviewer", &[], None).await
            })
            .await
            .clone()
    }
}

/// Starts a private API server for this test process (no `KEYMOUNT_TEST_KUBECONFIG`): builds
/// kube if needed, runs kube-up.sh in a temp dir, and leaves a watchdog that stops the servers
/// and removes the dir once this process exits.
fn start_private_instance() -> (PathBuf, PathBuf) {
    let root = repo_root();
    let dir = std::env::temp_dir().join(format!("keymount-kube-{}", std::process::id()));
    // Straight to stderr (not eprintln!, which the test harness captures).
    let _ = writeln!(
        std::io::stderr(),
        "\n*** KEYMOUNT_TEST_KUBECONFIG is not set: starting a private kube-apiserver in {} \
         (stopped when this test process exits; ./scripts/test shares one per run) ***\n",
        dir.display()
    );
    let build = Command::new(root.join("scripts/testbed/build-kube.sh"))
        .status()
        .expect("run scripts/testbed/build-kube.sh");
    assert!(
        build.success(),
        "scripts/testbed/build-kube.sh failed ({build})"
    );
    let out = Command::new(root.join("scripts/testbed/kube-up.sh"))
        .arg(&dir)
        .env("KEYMOUNT_TESTBED_OWNER_PID", std::process::id().to_string())
        .env("KEYMOUNT_TESTBED_REMOVE_DIR", "1")
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run scripts/testbed/kube-up.sh");
    assert!(
        out.status.success(),
        "scripts/testbed/kube-up.sh {} failed ({})",
        dir.display(),
        out.status
    );
    let kubeconfig = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    assert!(
        !kubeconfig.is_empty(),
        "kube-up.sh printed no kubeconfig path"
    );
    (PathBuf::from(kubeconfig), dir)
}

/// Server-side applies `obj` (any kind, found through discovery) as field manager `manager`,
/// forcing conflicts; returns the server's object.
pub(crate) async fn apply_object(
    client: &kube::Client,
    obj: &serde_json::Value,
    manager: &str,
) -> Result<DynamicObject, kube::Error> {
    let api_version = obj["apiVersion"].as_str().expect("apiVersion");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, obj["kind"].as_str().expect("kind"));
    let (resource, caps) = kube::discovery::pinned_kind(client, &gvk).await?;
    let api: Api<DynamicObject> = match obj["metadata"]["namespace"].as_str() {
        Some(ns) if caps.scope == kube::discovery::Scope::Namespaced => {
            Api::namespaced_with(client.clone(), ns, &resource)
        }
        _ => Api::all_with(client.clone(), &resource),
    };
    let name = obj["metadata"]["name"].as_str().expect("metadata.name");
    api.patch(
        name,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(obj),
    )
    .await
}

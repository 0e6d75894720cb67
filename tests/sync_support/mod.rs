//! Helpers of the rotation and Secret sync tests: the two CSI CRDs in the test API server,
//! an OpenBao with JWT auth for ServiceAccount `web`, SecretProviderClasses applied through
//! the API, `keymount node` in API server mode, and publishes made the way kubelet makes
//! them for a given pod.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Pod};
use keymount::class::SecretProviderClass;
use keymount::proto::csi::NodePublishVolumeRequest;
use keymount::provider::tokens::TOKENS_KEY;
use kube::CustomResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use crate::harness::node::{NodeOptions, NodeProcess, publish_request};
use crate::support::kube::{FIELD_MANAGER, TestKube};
use crate::support::openbao::OpenBao;
use crate::support::proc::wait_until;
use crate::vault_support::{Signer, jwt_setup, tokens_json};

static CRDS: OnceCell<()> = OnceCell::const_new();

/// SecretProviderClass (from the Rust type) and SecretProviderClassPodStatus (status only,
/// as upstream) CRDs, installed once per test binary.
pub(crate) async fn install_crds(kube: &TestKube) {
    CRDS.get_or_init(|| async {
        let spc = serde_json::to_string(&SecretProviderClass::crd()).unwrap();
        let spcps = json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "secretproviderclasspodstatuses.secrets-store.csi.x-k8s.io"},
            "spec": {
                "group": "secrets-store.csi.x-k8s.io",
                "scope": "Namespaced",
                "names": {"kind": "SecretProviderClassPodStatus", "plural": "secretproviderclasspodstatuses",
                          "singular": "secretproviderclasspodstatus", "listKind": "SecretProviderClassPodStatusList"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}],
            },
        });
        kube.install_crds(&format!("{spc}\n---\n{spcps}")).await;
    })
    .await;
}

/// A pod that exists in the API (no kubelet runs it).
#[derive(Debug, Clone)]
pub(crate) struct PodInfo {
    pub(crate) name: String,
    pub(crate) uid: String,
}

impl From<&Pod> for PodInfo {
    fn from(pod: &Pod) -> Self {
        Self {
            name: pod.metadata.name.clone().unwrap(),
            uid: pod.metadata.uid.clone().unwrap(),
        }
    }
}

/// A namespace, OpenBao and a work dir for one test.
pub(crate) struct Bed {
    pub(crate) kube: &'static TestKube,
    pub(crate) client: kube::Client,
    pub(crate) ns: String,
    pub(crate) bao: OpenBao,
    pub(crate) signer: Signer,
    pub(crate) work: tempfile::TempDir,
}

impl Drop for Bed {
    /// A test that failed half-way leaves no tmpfs mounted behind (the tests that pass
    /// unpublish everything and check it).
    fn drop(&mut self) {
        for point in crate::harness::mounts::mounts_under(self.work.path()) {
            let _ = keymount::mount::unmount(std::path::Path::new(&point));
        }
    }
}

/// The HMAC key of object versions `restricted_node` gives the node (in a file).
pub(crate) const RESTRICTED_HMAC_KEY: &str = "restricted-node-test-hmac-key-0123456789";

/// Vault paths the `web` role may read.
pub(crate) const PATHS: &[&str] = &["secret/data/*", "kv/*"];

impl Bed {
    pub(crate) async fn new(prefix: &str) -> Bed {
        let kube = TestKube::get();
        install_crds(kube).await;
        let ns = kube.namespace(prefix).await;
        let bao = OpenBao::start().await;
        bao.enable_kv1("kv").await;
        let signer = Signer::new();
        jwt_setup(&bao, "", &signer, "web", &ns, "web", PATHS).await;
        Bed {
            kube,
            client: kube.client(),
            ns,
            bao,
            signer,
            work: tempfile::tempdir().unwrap(),
        }
    }

    /// `keymount node` against the test API server, with `args` added.
    pub(crate) async fn node(&self, args: &[&str]) -> NodeProcess {
        NodeProcess::start(NodeOptions {
            kubeconfig: Some(self.kube.kubeconfig_path().to_owned()),
            kubelet_root: Some(self.work.path().to_owned()),
            args: args.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        })
        .await
    }

    /// Applies class `name`: the vault provider reading `objects`, with `annotations` and
    /// `secret_objects` (JSON, `Value::Null` for none).
    pub(crate) async fn apply_class(
        &self,
        name: &str,
        annotations: &[(&str, &str)],
        objects: &str,
        secret_objects: Value,
    ) {
        self.apply_class_in(&self.ns, name, annotations, objects, secret_objects)
            .await;
    }

    pub(crate) async fn apply_class_in(
        &self,
        ns: &str,
        name: &str,
        annotations: &[(&str, &str)],
        objects: &str,
        secret_objects: Value,
    ) {
        let annotations: serde_json::Map<String, Value> = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(*v)))
            .collect();
        let mut spec = json!({
            "provider": "vault",
            "parameters": {
                "vaultAddress": self.bao.addr(),
                "roleName": "web",
                "vaultAuthMountPath": "jwt",
                "objects": objects,
            },
        });
        if !secret_objects.is_null() {
            spec["secretObjects"] = secret_objects;
        }
        let body = json!({
            "apiVersion": "secrets-store.csi.x-k8s.io/v1",
            "kind": "SecretProviderClass",
            "metadata": {"name": name, "namespace": ns, "annotations": annotations},
            "spec": spec,
        });
        Api::<SecretProviderClass>::namespaced(self.client.clone(), ns)
            .patch(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await
            .unwrap_or_else(|e| panic!("apply class {ns}/{name}: {e}"));
    }

    /// A pod of ServiceAccount `web` in the API.
    pub(crate) async fn pod(&self, name: &str) -> PodInfo {
        PodInfo::from(&self.kube.create_pod(&self.ns, name, "web").await)
    }

    /// Where kubelet would mount `volume` of `pod`.
    pub(crate) fn target(&self, pod: &PodInfo, volume: &str) -> PathBuf {
        self.work.path().join(format!(
            "pods/{}/volumes/kubernetes.io~csi/{volume}/mount",
            pod.uid
        ))
    }

    /// Kubelet's publish for `volume` of `pod` using `class`, with a fresh `vault` token.
    pub(crate) fn publish(
        &self,
        pod: &PodInfo,
        volume: &str,
        class: &str,
    ) -> NodePublishVolumeRequest {
        let id = format!("csi-{}-{volume}", pod.uid);
        let mut req = publish_request(&id, &self.target(pod, volume), class, &self.ns);
        let token = self.signer.token(&self.ns, "web", "vault");
        for (k, v) in [
            ("csi.storage.k8s.io/pod.name", pod.name.clone()),
            ("csi.storage.k8s.io/pod.uid", pod.uid.clone()),
            ("csi.storage.k8s.io/serviceAccount.name", "web".into()),
            (TOKENS_KEY, tokens_json("vault", &token)),
        ] {
            req.volume_context.insert(k.into(), v);
        }
        req
    }

    /// The core/v1 events of pod `name`.
    pub(crate) async fn events(&self, pod: &str) -> Vec<Event> {
        Api::<Event>::namespaced(self.client.clone(), &self.ns)
            .list(&ListParams::default().fields(&format!("involvedObject.name={pod}")))
            .await
            .unwrap()
            .items
    }

    /// Waits (up to 20 s) for an event of pod `name` with `reason`, and returns it.
    pub(crate) async fn wait_event(&self, pod: &str, reason: &str) -> Event {
        let found = wait_until(Duration::from_secs(20), || async move {
            self.events(pod)
                .await
                .iter()
                .any(|e| e.reason.as_deref() == Some(reason))
        })
        .await;
        let events = self.events(pod).await;
        assert!(found, "no {reason} event for pod {pod}: {events:#?}");
        events
            .into_iter()
            .find(|e| e.reason.as_deref() == Some(reason))
            .unwrap()
    }
}

/// The ClusterRole of `deploy/rbac-secret-sync.yaml`, as shipped.
fn sync_cluster_role() -> Value {
    let path = crate::support::proc::repo_root().join("deploy/rbac-secret-sync.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    text.split("\n---")
        .map(|doc| serde_yaml::from_str::<Value>(doc).unwrap())
        .find(|doc| doc["kind"] == "ClusterRole")
        .expect("deploy/rbac-secret-sync.yaml has a ClusterRole")
}

/// The node's base permissions (class lookup, pod status, events), which the Secret sync's
/// ClusterRole comes on top of.
fn base_cluster_role() -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "keymount-test-node-base"},
        "rules": [
            {"apiGroups": ["secrets-store.csi.x-k8s.io"], "resources": ["secretproviderclasses"],
             "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["secrets-store.csi.x-k8s.io"], "resources": ["secretproviderclasspodstatuses"],
             "verbs": ["create", "patch"]},
            {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
        ],
    })
}

impl Bed {
    /// A kubeconfig for ServiceAccount `keymount-node` of this namespace holding only the
    /// node's base permissions cluster-wide and the shipped sync ClusterRole, bound with a
    /// RoleBinding in this namespace only.
    pub(crate) async fn restricted_kubeconfig(&self) -> PathBuf {
        use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        let roles: Api<ClusterRole> = Api::all(self.client.clone());
        for role in [base_cluster_role(), sync_cluster_role()] {
            let name = role["metadata"]["name"].as_str().unwrap().to_owned();
            roles.patch(&name, &pp, &Patch::Apply(&role)).await.unwrap();
        }
        self.kube
            .create_service_account(&self.ns, "keymount-node", &[])
            .await;
        let subject =
            json!([{"kind": "ServiceAccount", "name": "keymount-node", "namespace": self.ns}]);
        let base_binding = format!("keymount-test-node-base-{}", self.ns);
        let binding = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": base_binding},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "keymount-test-node-base"},
            "subjects": subject,
        });
        Api::<ClusterRoleBinding>::all(self.client.clone())
            .patch(&base_binding, &pp, &Patch::Apply(&binding))
            .await
            .unwrap();
        let binding = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "keymount-sync", "namespace": self.ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "keymount-sync"},
            "subjects": subject,
        });
        Api::<RoleBinding>::namespaced(self.client.clone(), &self.ns)
            .patch("keymount-sync", &pp, &Patch::Apply(&binding))
            .await
            .unwrap();
        let token = self
            .kube
            .request_token(&self.ns, "keymount-node", &[], None)
            .await;
        let kubeconfig = self.kube.token_kubeconfig(&token, None);
        let path = self.work.path().join("node.kubeconfig");
        std::fs::write(&path, kubeconfig).unwrap();
        path
    }

    /// `keymount node` as ServiceAccount `keymount-node` (see `restricted_kubeconfig`), with
    /// the HMAC key of object versions from a file (that ServiceAccount may not read Secrets
    /// outside this namespace, where the node would otherwise keep its key).
    pub(crate) async fn restricted_node(&self, args: &[&str]) -> NodeProcess {
        self.restricted_node_with(args, &[]).await
    }

    /// `restricted_node` with extra environment (e.g. `RUST_LOG`).
    pub(crate) async fn restricted_node_with(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> NodeProcess {
        let kubeconfig = self.restricted_kubeconfig().await;
        let key = self.work.path().join("hmac.key");
        std::fs::write(&key, RESTRICTED_HMAC_KEY).unwrap();
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.push(format!("--hmac-key-file={}", key.display()));
        NodeProcess::start(NodeOptions {
            kubeconfig: Some(kubeconfig),
            kubelet_root: Some(self.work.path().to_owned()),
            args,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        })
        .await
    }
}

/// The value of metric line `prefix` (e.g. `rotation_reconcile_total{...}`), 0 if absent.
pub(crate) fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

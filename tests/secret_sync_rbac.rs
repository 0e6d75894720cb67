//! The chart's RBAC for `keymount controller`, on the real API server: the controller runs
//! with a real token of a ServiceAccount bound to exactly the chart's rules and syncs; the
//! same ServiceAccount may do nothing else asked of it here.

mod controller_support;
mod harness;
#[path = "chart/render.rs"]
mod render;
mod support;
mod sync_support;
mod vault_support;

use controller_support::Bed;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use support::kube::apply_object;

/// The chart's controller RBAC objects, renamed to be this test's and bound to `account` in
/// `namespace` (the chart's Lease Role keeps its resource name: the controller's default).
fn chart_rbac(namespace: &str, account: &str) -> Vec<Value> {
    let yaml = render::render_in(
        &json!({"controller": {"enabled": true}}),
        "v1.20.2",
        namespace,
        false,
    );
    let objs = render::objects(&yaml);
    let mut out = Vec::new();
    for mut obj in objs {
        let kind = obj["kind"].as_str().unwrap_or_default().to_owned();
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if !name.contains("controller") {
            continue;
        }
        match kind.as_str() {
            "ClusterRole" => obj["metadata"]["name"] = format!("{name}-{namespace}").into(),
            "ClusterRoleBinding" => {
                obj["metadata"]["name"] = format!("{name}-{namespace}").into();
                obj["roleRef"]["name"] =
                    format!("{}-{namespace}", obj["roleRef"]["name"].as_str().unwrap()).into();
                obj["subjects"] =
                    json!([{"kind": "ServiceAccount", "name": account, "namespace": namespace}]);
            }
            "Role" => {}
            "RoleBinding" => {
                obj["subjects"] =
                    json!([{"kind": "ServiceAccount", "name": account, "namespace": namespace}]);
            }
            _ => continue,
        }
        out.push(obj);
    }
    assert_eq!(
        out.len(),
        4,
        "ClusterRole, ClusterRoleBinding, Role, RoleBinding: {out:#?}"
    );
    out
}

fn forbidden<T: std::fmt::Debug>(what: &str, result: Result<T, kube::Error>) {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

#[tokio::test]
async fn the_chart_rbac_is_enough_to_sync_and_allows_nothing_else_tried() {
    let bed = Bed::new("ctl-rbac").await;
    let account = "keymount-controller";
    bed.kube.create_service_account(&bed.ns, account, &[]).await;
    for obj in chart_rbac(&bed.ns, account) {
        apply_object(&bed.client, &obj, "keymount-test")
            .await
            .unwrap_or_else(|e| panic!("apply {}: {e}", obj["kind"]));
    }
    bed.bao
        .kv2_put(
            "secret",
            "db",
            json!({"username": "admin", "password": "pw-rbac"}),
        )
        .await;

    // Enough: the controller, with the chart's rights only, takes the chart's Lease, makes
    // its HMAC key Secret and syncs.
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = bed.kubeconfig_of(dir.path(), &bed.ns, account).await;
    let controller = controller_support::ControllerProcess::start(
        &bed,
        &kubeconfig,
        &["--no-key", "--leader-election-id=keymount-controller"],
    )
    .await;
    bed.apply(&bed.secret_sync("db")).await;
    let (reason, message) = bed.wait_ready("db", "True").await;
    assert_eq!(
        reason,
        "Synced",
        "{message}; log:\n{}",
        controller.log_text()
    );
    assert_eq!(
        bed.secret_value("db", "password").await.as_deref(),
        Some("pw-rbac")
    );

    // Nothing else: reading all Secrets, deleting one, reading pods or ConfigMaps, creating
    // a pod, changing a SecretSync's spec, taking another Lease.
    let user = format!("system:serviceaccount:{}:{account}", bed.ns);
    let as_controller = bed.kube.client_as(&user);
    let secrets: Api<Secret> = Api::namespaced(as_controller.clone(), &bed.ns);
    forbidden("list Secrets", secrets.list(&ListParams::default()).await);
    forbidden(
        "watch-list all Secrets",
        Api::<Secret>::all(as_controller.clone())
            .list(&ListParams::default())
            .await,
    );
    forbidden(
        "delete a Secret",
        secrets.delete("db", &DeleteParams::default()).await,
    );
    forbidden(
        "list pods",
        Api::<Pod>::namespaced(as_controller.clone(), &bed.ns)
            .list(&ListParams::default())
            .await,
    );
    forbidden(
        "get a ConfigMap",
        Api::<ConfigMap>::namespaced(as_controller.clone(), &bed.ns)
            .get("kube-root-ca.crt")
            .await,
    );
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    }))
    .unwrap();
    forbidden(
        "create a pod",
        Api::<Pod>::namespaced(as_controller.clone(), &bed.ns)
            .create(&Default::default(), &pod)
            .await,
    );
    let syncs: Api<keymount::controller::crd::SecretSync> =
        Api::namespaced(as_controller.clone(), &bed.ns);
    forbidden(
        "patch a SecretSync's spec",
        syncs
            .patch(
                "db",
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": {"serviceAccountName": "stranger"}})),
            )
            .await,
    );
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "someone-elses", "namespace": bed.ns},
        "spec": {"holderIdentity": "x"},
    });
    forbidden(
        "take another Lease",
        apply_object(&as_controller, &lease, "keymount-test").await,
    );
}

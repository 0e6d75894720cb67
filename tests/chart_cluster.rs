//! The chart against the real test API server (kube-apiserver v1.20.2): the rendered CRDs,
//! RBAC, ServiceAccount, CSIDriver and DaemonSet are accepted; the RBAC rules let keymount's own
//! code do its calls and refuse everything else; the documentation's manifests are accepted
//! by the generated CRDs without a field pruned.

#[path = "chart/render.rs"]
mod render;
mod support;

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use k8s_openapi::api::storage::v1::CSIDriver;
use keymount::class::{SecretProviderClass, SecretProviderClassPodStatus};
use keymount::provider::ObjectVersion;
use keymount::provider::version_key::{self, VersionKey};
use keymount::volume::events;
use keymount::volume::pod_status::{self, PodStatusInput};
use kube::api::{
    Api, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams, WatchParams,
};
use render::{TEST_SERVER_VERSION, objects, one, render_in, root};
use serde_json::{Value, json};
use support::kube::TestKube;
use support::proc::wait_until;

const MANAGER: &str = "keymount-chart-test";

/// Server-side applies `obj` through discovery of its kind; returns the server's object.
async fn apply(client: &kube::Client, obj: &Value) -> Result<DynamicObject, kube::Error> {
    support::kube::apply_object(client, obj, MANAGER).await
}

/// Applies every object of `kinds` in the render; panics naming the object the server refused.
async fn apply_all(client: &kube::Client, objs: &[Value], kinds: &[&str]) -> usize {
    let mut applied = 0;
    for obj in objs
        .iter()
        .filter(|o| kinds.contains(&o["kind"].as_str().unwrap()))
    {
        apply(client, obj).await.unwrap_or_else(|e| {
            panic!(
                "the API server refused {} {}: {e}",
                obj["kind"], obj["metadata"]["name"]
            )
        });
        applied += 1;
    }
    applied
}

fn crds_yaml() -> String {
    std::fs::read_to_string(root().join("charts/keymount/crds/secrets-store.csi.x-k8s.io.yaml"))
        .unwrap()
}

/// HTTP status of a failed call, 200 for success.
fn code<T>(result: &Result<T, kube::Error>) -> u16 {
    match result {
        Ok(_) => 200,
        Err(kube::Error::Api(status)) => status.code,
        Err(other) => panic!("not an API answer: {other}"),
    }
}

#[tokio::test]
async fn the_rendered_objects_are_accepted_by_the_api_server() {
    let kube = TestKube::get();
    let client = kube.client();
    kube.install_crds(&crds_yaml()).await;
    let ns = kube.namespace("chart").await;
    let name = format!("km-{ns}");

    let default = objects(&render_in(
        &json!({"fullnameOverride": name}),
        TEST_SERVER_VERSION,
        &ns,
        false,
    ));
    let kinds = [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "CSIDriver",
        "DaemonSet",
    ];
    assert_eq!(apply_all(&client, &default, &kinds).await, 5);

    let drivers: Api<CSIDriver> = Api::all(client.clone());
    let driver = drivers.get("secrets-store.csi.k8s.io").await.unwrap();
    let spec = serde_json::to_value(&driver.spec).unwrap();
    let rendered = &one(&default, "CSIDriver")["spec"];
    for field in [
        "podInfoOnMount",
        "attachRequired",
        "volumeLifecycleModes",
        "requiresRepublish",
        "tokenRequests",
    ] {
        assert_eq!(
            spec[field], rendered[field],
            "CSIDriver spec.{field} as stored"
        );
    }
    assert_eq!(spec["tokenRequests"].as_array().unwrap().len(), 3);
    assert_eq!(
        spec["fsGroupPolicy"], "ReadWriteOnceWithFSType",
        "an unset policy is stored as the API server's default"
    );
    // CSIDriver specs are immutable on 1.20: replace it for the next value set.
    drivers
        .delete("secrets-store.csi.k8s.io", &DeleteParams::default())
        .await
        .unwrap();
    let gone = wait_until(Duration::from_secs(10), || {
        let drivers = drivers.clone();
        async move {
            drivers
                .get_opt("secrets-store.csi.k8s.io")
                .await
                .unwrap()
                .is_none()
        }
    })
    .await;
    assert!(gone);

    // Rotation, sync, a PodDisruptionBudget (policy/v1beta1 on 1.20) and a metrics Service.
    let other = objects(&render_in(
        &json!({
            "fullnameOverride": name,
            "enableSecretRotation": true,
            "syncSecret": {"enabled": true},
            "tokenRequests": [{"audience": "api://custom", "expirationSeconds": 3600}],
            "podDisruptionBudget": {"enabled": true},
            "metrics": {"serviceMonitor": {"enabled": true}},
        }),
        TEST_SERVER_VERSION,
        &ns,
        false,
    ));
    assert_eq!(
        one(&other, "PodDisruptionBudget")["apiVersion"],
        "policy/v1beta1"
    );
    let kinds = [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "CSIDriver",
        "DaemonSet",
        "PodDisruptionBudget",
        "Service",
    ];
    assert_eq!(apply_all(&client, &other, &kinds).await, 9);
    let driver = drivers.get("secrets-store.csi.k8s.io").await.unwrap();
    assert_eq!(driver.spec.requires_republish, Some(true));
    let token = &driver.spec.token_requests.unwrap()[0];
    assert_eq!(
        (token.audience.as_str(), token.expiration_seconds),
        ("api://custom", Some(3600))
    );
    drivers
        .delete("secrets-store.csi.k8s.io", &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn rbac_lets_keymount_make_its_calls_and_nothing_else() {
    let kube = TestKube::get();
    let admin = kube.client();
    kube.install_crds(&crds_yaml()).await;
    let sys = kube.namespace("km-sys").await;
    let app = kube.namespace("km-app").await;
    let name = format!("km-{sys}");
    let render = |values: Value| {
        let mut values = values;
        values["fullnameOverride"] = json!(name);
        objects(&render_in(&values, TEST_SERVER_VERSION, &sys, false))
    };
    let rbac = [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    ];
    apply_all(&admin, &render(json!({})), &rbac).await;

    kube.create_service_account(&app, "app", &[]).await;
    let pod: Pod = kube.create_pod(&app, "web", "app").await;
    let class: SecretProviderClass = serde_json::from_value(json!({
        "apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
        "metadata": {"name": "db", "namespace": app},
        "spec": {"provider": "vault", "parameters": {"roleName": "app"}},
    }))
    .unwrap();
    Api::<SecretProviderClass>::namespaced(admin.clone(), &app)
        .create(&PostParams::default(), &class)
        .await
        .unwrap();

    let me = kube.client_as(&format!("system:serviceaccount:{sys}:{name}"));
    let classes: Api<SecretProviderClass> = Api::namespaced(me.clone(), &app);
    let bound = wait_until(Duration::from_secs(20), || {
        let api = classes.clone();
        async move { api.get("db").await.is_ok() }
    })
    .await;
    assert!(bound, "the ClusterRoleBinding never took effect");

    // What keymount does: GET the class a volume names, write a pod status with its own code
    // (server-side apply creates it), read the pod's ServiceAccount, record an Event. It never
    // lists or watches classes or ServiceAccounts (a node holds only what its pods use).
    assert_eq!(code(&classes.get("db").await), 200);
    let classes_everywhere: Api<SecretProviderClass> = Api::all(me.clone());
    assert_eq!(
        code(&classes_everywhere.list(&ListParams::default()).await),
        403
    );
    let watch = classes_everywhere
        .watch(&WatchParams::default().timeout(1), "0")
        .await;
    assert_eq!(code(&watch), 403);
    let uid = pod.metadata.uid.clone().unwrap();
    let versions = [ObjectVersion {
        id: "pw".into(),
        version: "1".into(),
    }];
    let input = PodStatusInput {
        node_id: "node-1",
        namespace: &app,
        pod_name: "web",
        pod_uid: &uid,
        class: "db",
        target_path: "/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/secrets/mount",
        versions: &versions,
    };
    pod_status::apply(&me, &input)
        .await
        .expect("create pod status");
    pod_status::apply(&me, &input)
        .await
        .expect("update pod status");
    let status_name = pod_status::object_name("web", &app, "db");
    let stored = Api::<SecretProviderClassPodStatus>::namespaced(admin.clone(), &app)
        .get(&status_name)
        .await
        .unwrap();
    assert_eq!(stored.status.unwrap().objects.unwrap()[0].version, "1");
    let sas: Api<ServiceAccount> = Api::namespaced(me.clone(), &app);
    assert_eq!(code(&sas.get("app").await), 200);
    assert_eq!(code(&sas.list(&ListParams::default()).await), 403);
    let pod_ref = events::PodRef {
        namespace: app.clone(),
        name: "web".into(),
        uid: uid.clone(),
    };
    let event = events::warn(&me, &pod_ref, events::ROTATION_FAILED, "test", "node-1")
        .await
        .expect("record an Event on the pod");
    assert_eq!(event.involved_object.uid.as_deref(), Some(uid.as_str()));

    // The HMAC key of object versions: the one Secret of keymount's namespace it may read, and
    // create when missing; two nodes end up with the same key.
    let keyed = wait_until(Duration::from_secs(20), || {
        let (me, sys) = (me.clone(), sys.clone());
        async move { VersionKey::from_secret(&me, &sys).await.is_ok() }
    })
    .await;
    assert!(keyed, "the HMAC key Role never took effect");
    let a = VersionKey::from_secret(&me, &sys).await.unwrap();
    let b = VersionKey::from_secret(&me, &sys).await.unwrap();
    assert_eq!(a.sign(&[b"v"]), b.sign(&[b"v"]));
    let own: Api<Secret> = Api::namespaced(me.clone(), &sys);
    assert_eq!(code(&own.get("other").await), 403, "only the key Secret");
    assert_eq!(code(&own.list(&ListParams::default()).await), 403);
    assert_eq!(
        code(
            &own.delete(version_key::SECRET_NAME, &DeleteParams::default())
                .await
        ),
        403
    );

    // And nothing else.
    let secrets: Api<Secret> = Api::namespaced(me.clone(), &app);
    assert_eq!(code(&secrets.get("any").await), 403, "Secrets without sync");
    assert_eq!(code(&secrets.list(&ListParams::default()).await), 403);
    let pods: Api<Pod> = Api::namespaced(me.clone(), &app);
    assert_eq!(code(&pods.list(&ListParams::default()).await), 403);
    assert_eq!(
        code(&classes.delete("db", &DeleteParams::default()).await),
        403
    );
    let statuses: Api<SecretProviderClassPodStatus> = Api::namespaced(me.clone(), &app);
    assert_eq!(code(&statuses.get(&status_name).await), 403);
    assert_eq!(
        code(
            &statuses
                .delete(&status_name, &DeleteParams::default())
                .await
        ),
        403
    );
    let token = sas
        .create_subresource::<Value, Value>(
            "token",
            "app",
            &PostParams::default(),
            &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}),
        )
        .await;
    assert_eq!(code(&token), 403, "keymount never mints tokens");

    // fsGroupFromPod adds one GET of a pod, nothing else on pods.
    assert_eq!(
        code(&pods.get("web").await),
        403,
        "no pod access by default"
    );
    apply_all(&admin, &render(json!({"fsGroupFromPod": true})), &rbac).await;
    let granted = wait_until(Duration::from_secs(20), || {
        let pods = pods.clone();
        async move { code(&pods.get("web").await) == 200 }
    })
    .await;
    assert!(granted, "fsGroupFromPod did not grant get on pods");
    assert_eq!(code(&pods.list(&ListParams::default()).await), 403);

    // syncSecret.enabled adds Secret access; builtinProviders.aws.enabled=false drops SAs.
    apply_all(
        &admin,
        &render(json!({"syncSecret": {"enabled": true}, "builtinProviders": {"aws": {"enabled": false}}})),
        &rbac,
    )
    .await;
    let changed = wait_until(Duration::from_secs(20), || {
        let (secrets, sas) = (secrets.clone(), sas.clone());
        async move { code(&secrets.get("any").await) == 404 && code(&sas.get("app").await) == 403 }
    })
    .await;
    assert!(
        changed,
        "sync role not granted or ServiceAccount rule not dropped"
    );
    assert_eq!(
        code(&pods.get("web").await),
        200,
        "sync reads the pod's owners"
    );
}

#[tokio::test]
async fn documented_manifests_are_accepted_by_the_crds_without_a_field_dropped() {
    let fixtures: Vec<_> = std::fs::read_dir(root().join("tests/fixtures/secretproviderclasses"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    assert!(fixtures.len() >= 5);

    // Strict schema check (a field the CRD does not name is an error), and proof it can fail.
    let check = |files: &[std::path::PathBuf]| {
        Command::new(render::python())
            .arg(root().join("tests/chart/render.py"))
            .arg("check-crs")
            .arg(root().join("deploy/crds.yaml"))
            .args(files)
            .output()
            .unwrap()
    };
    let out = check(&fixtures);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(" 0 failed"), "{text}");
    let tmp = tempfile::tempdir().unwrap();
    let typo = render::write_temp(
        tmp.path(),
        "typo.yaml",
        "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata: {name: x}\n\
         spec:\n  provider: vault\n  parameter: {roleName: app}\n",
    );
    let out = check(&[typo]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("'parameter' was unexpected"));

    // The real API server: both versions served, v1 preferred; every manifest stored as written.
    let kube = TestKube::get();
    kube.install_keymount_crds().await;
    let client = kube.client();
    let group = kube::discovery::group(&client, "secrets-store.csi.x-k8s.io")
        .await
        .unwrap();
    assert_eq!(group.preferred_version_or_latest(), "v1");
    assert!(group.versions().any(|v| v == "v1alpha1"));
    let ns = kube.namespace("fixtures").await;
    let mut stored = 0;
    for path in &fixtures {
        for mut obj in objects(&std::fs::read_to_string(path).unwrap()) {
            obj["metadata"]["namespace"] = json!(ns);
            let (group, version) = obj["apiVersion"].as_str().unwrap().split_once('/').unwrap();
            let gvk = GroupVersionKind::gvk(group, version, obj["kind"].as_str().unwrap());
            let (resource, _) = kube::discovery::pinned_kind(&client, &gvk).await.unwrap();
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource);
            let object: DynamicObject = serde_json::from_value(obj.clone()).unwrap();
            let created = api
                .create(&PostParams::default(), &object)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let back = serde_json::to_value(&created).unwrap();
            for key in ["spec", "status"] {
                assert_eq!(
                    back[key],
                    obj[key],
                    "{}: {key} of {} changed when stored",
                    path.display(),
                    obj["metadata"]["name"]
                );
            }
            stored += 1;
        }
    }
    assert_eq!(stored, 9);
}

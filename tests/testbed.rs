//! Smoke tests of the test bed itself: the API server, OpenBao and moto are real and behave.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ObjectMeta, Patch,
    PatchParams, PostParams,
};
use serde_json::json;
use support::kube::TestKube;
use support::moto::Moto;
use support::openbao::OpenBao;
use support::proc::wait_until;

const WIDGET_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.testbed.keymount.dev
spec:
  group: testbed.keymount.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer, minimum: 1}
              colour: {type: string, enum: [red, blue]}
"#;

fn widget(ns: &str, name: &str, spec: serde_json::Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "testbed.keymount.dev/v1",
        "kind": "Widget",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }))
    .unwrap()
}

#[tokio::test]
async fn crd_structural_schema_rejects_invalid_and_accepts_valid_objects() {
    let kube = TestKube::get();
    kube.install_crds(WIDGET_CRD).await;
    let ns = kube.namespace("crd").await;
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("testbed.keymount.dev", "v1", "Widget"),
        "widgets",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(kube.client(), &ns, &resource);

    for (name, bad) in [
        ("too-small", json!({"size": 0})),
        ("wrong-enum", json!({"size": 2, "colour": "green"})),
        ("missing", json!({})),
    ] {
        let err = api
            .create(&PostParams::default(), &widget(&ns, name, bad.clone()))
            .await
            .unwrap_err();
        match err {
            kube::Error::Api(status) => assert_eq!(status.code, 422, "{name} {bad}: {status:?}"),
            other => panic!("{name}: expected HTTP 422, got {other}"),
        }
    }

    let created = api
        .create(
            &PostParams::default(),
            &widget(&ns, "good", json!({"size": 3, "colour": "red"})),
        )
        .await
        .unwrap();
    assert_eq!(created.data["spec"]["size"], 3);
    let fetched = api.get("good").await.unwrap();
    assert_eq!(fetched.data["spec"]["colour"], "red");
    assert!(fetched.metadata.uid.is_some());
}

#[tokio::test]
async fn server_side_apply_records_the_field_manager() {
    let kube = TestKube::get();
    let ns = kube.namespace("ssa").await;
    let api: Api<ConfigMap> = Api::namespaced(kube.client(), &ns);
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"k": "v"}});
    let applied = api
        .patch(
            "applied",
            &PatchParams::apply("keymount-smoke"),
            &Patch::Apply(&cm),
        )
        .await
        .unwrap();
    let managers = applied.metadata.managed_fields.unwrap_or_default();
    let entry = managers
        .iter()
        .find(|m| m.manager.as_deref() == Some("keymount-smoke"))
        .unwrap_or_else(|| panic!("no managedFields entry for keymount-smoke: {managers:?}"));
    assert_eq!(entry.operation.as_deref(), Some("Apply"));
    let owned = serde_json::to_string(&entry.fields_v1).unwrap();
    assert!(
        owned.contains("f:k"),
        "field k not owned by the applier: {owned}"
    );
}

#[tokio::test]
async fn token_for_audience_vault_passes_review_only_for_vault() {
    let kube = TestKube::get();
    let ns = kube.namespace("tokenreview").await;
    kube.create_service_account(&ns, "app", &[]).await;
    let pod = kube.create_pod(&ns, "app-0", "app").await;
    let uid = pod.metadata.uid.clone().unwrap();
    let token = kube
        .request_token(&ns, "app", &["vault"], Some(("app-0", &uid)))
        .await;

    let ok = kube.token_review(&token, &["vault"]).await;
    assert_eq!(ok.authenticated, Some(true), "{ok:?}");
    let user = ok.user.unwrap();
    assert_eq!(
        user.username.as_deref(),
        Some(format!("system:serviceaccount:{ns}:app").as_str())
    );
    let extra = user.extra.unwrap_or_default();
    assert_eq!(
        extra.get("authentication.kubernetes.io/pod-name"),
        Some(&vec!["app-0".to_string()])
    );
    assert_eq!(
        extra.get("authentication.kubernetes.io/pod-uid"),
        Some(&vec![uid])
    );

    let wrong = kube.token_review(&token, &["other"]).await;
    assert_ne!(
        wrong.authenticated,
        Some(true),
        "token for 'vault' accepted for 'other': {wrong:?}"
    );
}

#[tokio::test]
async fn openbao_kubernetes_login_accepts_the_bound_service_account_only() {
    let kube = TestKube::get();
    let ns = kube.namespace("baologin").await;
    kube.create_service_account(&ns, "app", &[]).await;
    kube.create_service_account(&ns, "intruder", &[]).await;
    let pod = kube.create_pod(&ns, "app-0", "app").await;
    let other_pod = kube.create_pod(&ns, "intruder-0", "intruder").await;

    let bao = OpenBao::start().await;
    bao.enable_kubernetes_auth("kubernetes", kube).await;
    bao.put_policy(
        "read-app",
        r#"path "secret/data/app" { capabilities = ["read"] }"#,
    )
    .await;
    bao.kubernetes_role(
        "kubernetes",
        "app",
        &["app"],
        &[&ns],
        &["read-app"],
        Some("vault"),
    )
    .await;
    bao.kv2_put("secret", "app", json!({"password": "hunter2"}))
        .await;

    let token = kube
        .request_token(
            &ns,
            "app",
            &["vault"],
            Some(("app-0", pod.metadata.uid.as_deref().unwrap())),
        )
        .await;
    let (status, body) = bao
        .request(
            "POST",
            "auth/kubernetes/login",
            json!({"role": "app", "jwt": token}),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let client_token = body["auth"]["client_token"].as_str().unwrap().to_string();
    assert_eq!(
        body["auth"]["metadata"]["service_account_namespace"],
        ns.as_str()
    );
    let (status, secret) = bao
        .request(
            "GET",
            "secret/data/app",
            serde_json::Value::Null,
            Some(&client_token),
        )
        .await;
    assert_eq!(status, 200, "{secret}");
    assert_eq!(secret["data"]["data"]["password"], "hunter2");

    let other = kube
        .request_token(
            &ns,
            "intruder",
            &["vault"],
            Some(("intruder-0", other_pod.metadata.uid.as_deref().unwrap())),
        )
        .await;
    let (status, body) = bao
        .request(
            "POST",
            "auth/kubernetes/login",
            json!({"role": "app", "jwt": other}),
            None,
        )
        .await;
    assert!(
        status == 403 || status == 400,
        "unbound ServiceAccount got {status}: {body}"
    );
    assert!(body["auth"].is_null(), "{body}");

    // The audit log sees both logins and the one read.
    assert!(
        wait_until(Duration::from_secs(5), || async {
            bao.count_logins("kubernetes") == 2
        })
        .await,
        "{:?}",
        bao.audited_requests()
    );
    assert_eq!(
        bao.count_requests_op("read", "secret/data/app"),
        1,
        "{:?}",
        bao.audited_requests()
    );
}

#[tokio::test]
async fn openbao_tls_dev_server_is_reachable_with_its_ca() {
    let bao = OpenBao::start_tls().await;
    assert!(bao.addr().starts_with("https://127.0.0.1:"));
    let ca = bao.ca_cert_path().unwrap();
    assert!(
        std::fs::read_to_string(ca)
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    bao.enable_kv1("kv1").await;
    bao.kv1_put("kv1", "db", json!({"user": "u"})).await;
    let read = bao.api("GET", "kv1/db", serde_json::Value::Null).await;
    assert_eq!(read["data"]["user"], "u");
}

#[tokio::test]
async fn moto_returns_a_secret_created_through_the_aws_sdk() {
    let moto = Moto::start().await;
    let sm = moto.secretsmanager();
    let created = sm
        .create_secret()
        .name("app/db")
        .secret_string("s3cret")
        .send()
        .await
        .unwrap();
    assert!(
        created
            .arn()
            .unwrap()
            .starts_with("arn:aws:secretsmanager:us-east-1:")
    );
    let got = sm
        .get_secret_value()
        .secret_id("app/db")
        .send()
        .await
        .unwrap();
    assert_eq!(got.secret_string(), Some("s3cret"));
    assert_eq!(got.version_stages(), ["AWSCURRENT".to_string()]);
}

#[tokio::test]
async fn controller_manager_garbage_collects_owned_objects() {
    let kube = TestKube::get();
    let ns = kube.namespace("gc").await;
    let cms: Api<ConfigMap> = Api::namespaced(kube.client(), &ns);
    let secrets: Api<Secret> = Api::namespaced(kube.client(), &ns);
    let owner = cms
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("owner".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let dependent: Secret = serde_json::from_value(json!({
        "metadata": {"name": "dependent", "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid.unwrap(),
        }]},
        "stringData": {"k": "v"},
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &dependent)
        .await
        .unwrap();
    cms.delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    let gone = wait_until(Duration::from_secs(90), || {
        let secrets = secrets.clone();
        async move { matches!(secrets.get_opt("dependent").await, Ok(None)) }
    })
    .await;
    assert!(
        gone,
        "Secret with ownerReference to a deleted ConfigMap was not garbage-collected in 90 s"
    );
}

//! `keymount controller` end to end, with no pod and no mount anywhere: the real binary
//! against the test kube-apiserver (and its controller-manager's garbage collector), OpenBao
//! trusting the API server's own ServiceAccount tokens, SecretSyncs applied through the API.

mod controller_support;
mod harness;
mod support;
mod sync_support;
mod vault_support;

use std::time::Duration;

use controller_support::Bed;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::argocd::health;
use support::proc::wait_until;

/// Keys of kube's field manager used for the test's own edits.
const EDITOR: &str = "keymount-test-editor";

#[tokio::test]
async fn a_secret_sync_makes_its_secret_keeps_it_fresh_and_writes_nothing_when_nothing_changed() {
    let bed = Bed::new("ctl-sync").await;
    bed.bao
        .kv2_put(
            "secret",
            "db",
            json!({"username": "admin", "password": "pw-ctl-v1"}),
        )
        .await;
    let controller = bed.controller(&["--rotation-poll-interval=2s"]).await;
    bed.apply(&bed.secret_sync("db")).await;

    let (reason, _) = bed.wait_ready("db", "True").await;
    assert_eq!(reason, "Synced");
    let sync = bed.syncs().get("db").await.unwrap();
    let secret = bed.secrets().get("db").await.unwrap();
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    let labels = secret.metadata.labels.clone().unwrap();
    assert_eq!(labels["team"], "shop");
    assert_eq!(labels["secrets-store.sync.x-k8s.io/secretsync"], "db");
    assert_eq!(
        secret.metadata.annotations.clone().unwrap()["owner"],
        "db-team"
    );
    assert_eq!(
        bed.secret_value("db", "user").await.as_deref(),
        Some("admin")
    );
    assert_eq!(
        bed.secret_value("db", "password").await.as_deref(),
        Some("pw-ctl-v1")
    );
    let owner = &secret.metadata.owner_references.clone().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("SecretSync", Some(true))
    );
    assert_eq!(Some(&owner.uid), sync.metadata.uid.as_ref());
    let status = sync.status.clone().unwrap();
    assert!(status.sync_hash.as_deref().unwrap().starts_with("v1:"));
    assert!(status.last_successful_sync_time.is_some());
    let create = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Create")
        .unwrap();
    assert_eq!(
        (create.status.as_str(), create.reason.as_str()),
        ("True", "CreateSucceeded")
    );
    let argo = health(&bed.sync_json("db").await);
    assert_eq!(argo.status, "Healthy", "{argo:?}");

    // Nothing changed: the store is read every interval, the Secret is never written.
    let version = secret.metadata.resource_version.clone();
    let unchanged_before = controller.syncs("result=\"unchanged\"").await;
    assert!(
        wait_until(Duration::from_secs(30), || async {
            controller.syncs("result=\"unchanged\"").await >= unchanged_before + 2
        })
        .await,
        "no refresh after two intervals; log:\n{}",
        controller.log_text()
    );
    let again = bed.secrets().get("db").await.unwrap();
    assert_eq!(
        again.metadata.resource_version, version,
        "an unchanged refresh wrote the Secret"
    );
    let update = bed.syncs().get("db").await.unwrap().status.unwrap();
    let update = update
        .conditions
        .iter()
        .find(|c| c.type_ == "Update")
        .unwrap();
    assert_eq!(
        (update.status.as_str(), update.reason.as_str()),
        ("True", "NoValueChange")
    );

    // A new value in the store reaches the Secret within an interval.
    bed.bao
        .kv2_put(
            "secret",
            "db",
            json!({"username": "admin", "password": "pw-ctl-v2"}),
        )
        .await;
    assert!(
        wait_until(Duration::from_secs(30), || async {
            bed.secret_value("db", "password").await.as_deref() == Some("pw-ctl-v2")
        })
        .await,
        "rotation not synced; log:\n{}",
        controller.log_text()
    );

    // No secret value, Vault token or ServiceAccount token in the controller's whole log.
    let log = controller.log_text();
    for value in ["pw-ctl-v1", "pw-ctl-v2"] {
        assert!(!log.contains(value), "value {value} in the log");
    }
    for token in bed.bao.client_tokens() {
        assert!(!log.contains(&token), "a Vault token in the log");
    }
    assert!(!log.contains("eyJ"), "a JWT in the log");

    // Deleting the SecretSync deletes its Secret (garbage collector, owner reference).
    bed.syncs()
        .delete("db", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || async {
            bed.secrets().get_opt("db").await.unwrap().is_none()
        })
        .await,
        "Secret not garbage-collected"
    );
}

#[tokio::test]
async fn force_synchronization_syncs_at_once_and_a_failure_keeps_the_previous_secret() {
    let bed = Bed::new("ctl-force").await;
    bed.bao
        .kv2_put(
            "secret",
            "db",
            json!({"username": "admin", "password": "pw-force-v1"}),
        )
        .await;
    let _controller = bed.controller(&["--rotation-poll-interval=1h"]).await;
    let mut body = bed.secret_sync("app");
    bed.apply(&body).await;
    bed.wait_ready("app", "True").await;

    bed.bao
        .kv2_put(
            "secret",
            "db",
            json!({"username": "admin", "password": "pw-force-v2"}),
        )
        .await;
    body["spec"]["forceSynchronization"] = "1".into();
    bed.apply(&body).await;
    assert!(
        wait_until(Duration::from_secs(20), || async {
            bed.secret_value("app", "password").await.as_deref() == Some("pw-force-v2")
        })
        .await,
        "forceSynchronization did not sync at once (the interval is 1h)"
    );
    let status = bed.syncs().get("app").await.unwrap().status.unwrap();
    let update = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Update")
        .unwrap();
    assert_eq!(update.reason, "ValueChangeOrForceUpdateDetected");

    // The class now points at a path the role's policy does not grant: Ready False, Secret kept.
    bed.apply_class(&bed.ns, "vault-db", "denied/data/db").await;
    let (reason, message) = bed.wait_ready("app", "False").await;
    assert_eq!(reason, "ProviderError", "{message}");
    assert_eq!(
        bed.secret_value("app", "password").await.as_deref(),
        Some("pw-force-v2")
    );
    assert_eq!(health(&bed.sync_json("app").await).status, "Degraded");
}

#[tokio::test]
async fn bad_input_gets_a_clear_condition_and_no_secret() {
    let bed = Bed::new("ctl-bad").await;
    bed.bao
        .kv2_put(
            "secret",
            "db",
            json!({"username": "admin", "password": "pw-bad"}),
        )
        .await;
    // A class of the same name in another namespace is never used.
    let other = bed.kube.namespace("ctl-other").await;
    bed.apply_class(&other, "elsewhere", "secret/data/db").await;
    // A Secret of the same name that the controller does not manage.
    let foreign: Secret = serde_json::from_value(json!({
        "metadata": {"name": "foreign"}, "stringData": {"k": "mine"}
    }))
    .unwrap();
    let foreign = bed
        .secrets()
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    let _controller = bed
        .controller(&["--rotation-poll-interval=1h", "--max-backoff=2s"])
        .await;

    type Edit = fn(&mut serde_json::Value);
    let cases: [(&str, Edit, &str, &str); 11] = [
        (
            "untrusted",
            |b| b["spec"]["serviceAccountName"] = "stranger".into(),
            "ProviderError",
            "stranger",
        ),
        (
            "no-class",
            |b| b["spec"]["secretProviderClassName"] = "absent".into(),
            "ControllerSPCError",
            "not found",
        ),
        (
            "other-ns-class",
            |b| b["spec"]["secretProviderClassName"] = "elsewhere".into(),
            "ControllerSPCError",
            "not found",
        ),
        (
            "no-sa",
            |b| b["spec"]["serviceAccountName"] = "nobody".into(),
            "UserInputValidationFailed",
            "ServiceAccount",
        ),
        (
            "no-path",
            |b| b["spec"]["secretObject"]["data"][0]["sourcePath"] = "absent".into(),
            "UserInputValidationFailed",
            "\"absent\"",
        ),
        (
            "sa-token",
            |b| b["spec"]["secretObject"]["type"] = "kubernetes.io/service-account-token".into(),
            "UserInputValidationFailed",
            "refused",
        ),
        (
            "reserved",
            |b| b["spec"]["secretObject"]["labels"]["secrets-store.sync.x-k8s.io/x"] = "y".into(),
            "InvalidClusterSecretLabelError",
            "reserved",
        ),
        (
            "foreign",
            |_| {},
            "SecretNotManaged",
            "not this SecretSync's",
        ),
        (
            "too-often",
            |b| b["metadata"]["annotations"] = json!({"keymount.io/refresh-interval": "1ms"}),
            "UserInputValidationFailed",
            "shorter than 10s",
        ),
        (
            "bad-type",
            |b| b["spec"]["secretObject"]["type"] = "not a type".into(),
            "UserInputValidationFailed",
            "is not a Secret type",
        ),
        (
            "no-provider",
            |b| b["spec"]["secretProviderClassName"] = "no-provider".into(),
            "ControllerSPCError",
            "absent-plugin",
        ),
    ];
    let no_provider = json!({
        "apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
        "metadata": {"name": "no-provider", "namespace": bed.ns},
        "spec": {"provider": "absent-plugin", "parameters": {}},
    });
    support::kube::apply_object(&bed.client, &no_provider, EDITOR)
        .await
        .unwrap();
    for (name, edit, _, _) in &cases {
        let mut body = bed.secret_sync(name);
        edit(&mut body);
        bed.apply(&body).await;
    }
    for (name, _, want_reason, want_text) in &cases {
        let (reason, message) = bed.wait_ready(name, "False").await;
        assert_eq!(&reason, want_reason, "{name}: {message}");
        assert!(message.contains(want_text), "{name}: {message}");
        assert!(
            !message.contains("pw-bad"),
            "{name}: a value in the message"
        );
        if *name != "foreign" {
            assert!(
                bed.secrets().get_opt(name).await.unwrap().is_none(),
                "{name}: a Secret was written"
            );
        }
        let argo = health(&bed.sync_json(name).await);
        assert_eq!(argo.status, "Degraded", "{name}: {argo:?}");
        assert!(argo.message.contains(want_reason), "{name}: {argo:?}");
    }
    let after = bed.secrets().get("foreign").await.unwrap();
    assert_eq!(
        after.metadata.resource_version, foreign.metadata.resource_version,
        "foreign Secret touched"
    );

    // Fixing the input heals the SecretSync.
    bed.syncs()
        .patch(
            "no-path",
            &PatchParams::apply(EDITOR).force(),
            &Patch::Apply(&bed.secret_sync("no-path")),
        )
        .await
        .unwrap();
    bed.wait_ready("no-path", "True").await;
}

#[tokio::test]
async fn of_two_controllers_one_writes_and_the_other_takes_over_when_it_dies() {
    let bed = Bed::new("ctl-lease").await;
    bed.bao
        .kv2_put(
            "secret",
            "db",
            json!({"username": "admin", "password": "pw-lease"}),
        )
        .await;
    let lease = [
        "--leader-election-lease-duration=3s",
        "--rotation-poll-interval=1h",
    ];
    let mut first = bed.controller(&lease).await;
    // The first one leads before the second starts.
    assert!(
        wait_until(Duration::from_secs(20), || async {
            first
                .metrics_text()
                .await
                .contains("keymount_controller_leader 1")
        })
        .await
    );
    let second = bed.controller(&lease).await;
    bed.apply(&bed.secret_sync("one")).await;
    bed.wait_ready("one", "True").await;
    assert!(
        second
            .metrics_text()
            .await
            .contains("keymount_controller_leader 0")
    );
    assert_eq!(second.syncs("").await, 0, "the standby synced");
    assert!(first.syncs("").await >= 1);

    first.kill();
    bed.apply(&bed.secret_sync("two")).await;
    bed.wait_ready("two", "True").await;
    assert!(
        second
            .metrics_text()
            .await
            .contains("keymount_controller_leader 1")
    );
    assert!(second.syncs("result=\"created\"").await >= 1);

    // SIGTERM: the leader finishes, gives the Lease up and exits cleanly; a standby leads.
    let third = bed.controller(&lease).await;
    assert!(
        third
            .metrics_text()
            .await
            .contains("keymount_controller_leader 0")
    );
    let mut second = second;
    assert!(
        second.terminate(),
        "SIGTERM did not end the controller cleanly"
    );
    assert!(
        wait_until(Duration::from_secs(10), || async {
            third
                .metrics_text()
                .await
                .contains("keymount_controller_leader 1")
        })
        .await,
        "the standby did not lead after a clean shutdown; log:\n{}",
        third.log_text()
    );
}

#[tokio::test]
async fn upstreams_readme_secret_sync_applies_unchanged_and_is_synced() {
    let bed = Bed::new("ctl-upstream").await;
    bed.bao
        .kv2_put(
            "secret",
            "db",
            json!({"username": "admin", "password": "pw-upstream"}),
        )
        .await;
    let path = support::proc::repo_root().join("tests/fixtures/secretsync/upstream-readme.yaml");
    let mut manifest: serde_json::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    manifest["metadata"]["namespace"] = bed.ns.clone().into();
    bed.apply(&manifest).await;
    // The Secret as upstream's sync controller leaves it: owned by the SecretSync, without
    // `controller: true`, holding an old value. keymount adopts it when it takes over.
    let uid = bed
        .syncs()
        .get("sse2esecret")
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    let upstream: Secret = serde_json::from_value(json!({
        "metadata": {
            "name": "sse2esecret",
            "labels": {"secrets-store.sync.x-k8s.io": ""},
            "ownerReferences": [{"apiVersion": "secret-sync.x-k8s.io/v1alpha1", "kind": "SecretSync",
                                 "name": "sse2esecret", "uid": uid}],
        },
        "type": "Opaque",
        "stringData": {"bar": "old-upstream-value"},
    }))
    .unwrap();
    bed.secrets()
        .create(&PostParams::default(), &upstream)
        .await
        .unwrap();
    // The manifest names no controller: this test's controller is the unnamed one.
    let _controller = bed
        .controller(&[
            "--secret-sync-controller-name=",
            "--rotation-poll-interval=1h",
        ])
        .await;
    bed.wait_ready("sse2esecret", "True").await;
    assert_eq!(
        bed.secret_value("sse2esecret", "bar").await.as_deref(),
        Some("pw-upstream")
    );
}

#[tokio::test]
async fn an_external_plugin_gets_a_token_of_the_secret_syncs_service_account_for_the_configured_audience()
 {
    let bed = Bed::new("ctl-plugin").await;
    let providers = tempfile::tempdir().unwrap();
    let plugin = harness::plugin::FakePlugin::start(
        providers.path(),
        "e2e-plugin",
        harness::plugin::Reply::files(&[("foo", "plugin-value")]),
    )
    .await;
    let class = json!({
        "apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
        "metadata": {"name": "plugin-class", "namespace": bed.ns},
        "spec": {"provider": "e2e-plugin", "parameters": {"objects": "foo"}},
    });
    support::kube::apply_object(&bed.client, &class, EDITOR)
        .await
        .unwrap();
    let dir = format!("--provider-volume={}", providers.path().display());
    let extra = format!(
        "--additional-provider-volume-paths={}",
        providers.path().display()
    );
    let _controller = bed
        .controller(&[&dir, &extra, "--token-request-audience=plugin-aud"])
        .await;
    let mut body = bed.secret_sync("from-plugin");
    body["spec"]["secretProviderClassName"] = "plugin-class".into();
    body["spec"]["secretObject"]["data"] = json!([{"sourcePath": "foo", "targetKey": "bar"}]);
    bed.apply(&body).await;
    bed.wait_ready("from-plugin", "True").await;
    assert_eq!(
        bed.secret_value("from-plugin", "bar").await.as_deref(),
        Some("plugin-value")
    );

    // The plugin was handed a token of ServiceAccount `web` for `plugin-aud`, nothing else.
    let request = plugin.last_request().expect("the plugin was called");
    let attributes: serde_json::Value = serde_json::from_str(&request.attributes).unwrap();
    assert_eq!(attributes["csi.storage.k8s.io/serviceAccount.name"], "web");
    assert_eq!(
        attributes["csi.storage.k8s.io/pod.namespace"],
        bed.ns.as_str()
    );
    let tokens: serde_json::Value = serde_json::from_str(
        attributes["csi.storage.k8s.io/serviceAccount.tokens"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let audiences: Vec<&String> = tokens.as_object().unwrap().keys().collect();
    assert_eq!(audiences, ["plugin-aud"]);
    let token = tokens["plugin-aud"]["token"].as_str().unwrap();
    let review = bed.kube.token_review(token, &["plugin-aud"]).await;
    assert_eq!(review.authenticated, Some(true));
    assert_eq!(
        review.user.unwrap().username.as_deref(),
        Some(format!("system:serviceaccount:{}:web", bed.ns).as_str())
    );
}

#[tokio::test]
async fn extract_fills_every_key_from_vault_and_from_aws_secrets_manager() {
    let bed = Bed::new("ctl-extract").await;
    bed.bao
        .kv2_put(
            "secret",
            "app",
            json!({"DB_USER": "shop", "DB_PASSWORD": "pw-extract-vault", "DB_PORT": 5432}),
        )
        .await;
    let vault_class = json!({
        "apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
        "metadata": {"name": "vault-app", "namespace": bed.ns,
                     "annotations": {"keymount.io/extract": "app"}},
        "spec": {"provider": "vault", "parameters": {
            "vaultAddress": bed.bao.addr(), "roleName": controller_support::ROLE,
            "vaultAuthMountPath": "jwt", "objects": "- {objectName: app, secretPath: secret/data/app}",
        }},
    });
    support::kube::apply_object(&bed.client, &vault_class, EDITOR)
        .await
        .unwrap();
    // AWS: IRSA with the ServiceAccount's own token, against moto.
    let moto = support::moto::Moto::start().await;
    moto.secretsmanager()
        .create_secret()
        .name("prod/app")
        .secret_string(r#"{"API_KEY":"key-extract-aws","API_URL":"https://api.shop"}"#)
        .send()
        .await
        .unwrap();
    let aws_class = json!({
        "apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
        "metadata": {"name": "aws-app", "namespace": bed.ns,
                     "annotations": {"keymount.io/extract": "app.json"}},
        "spec": {"provider": "aws", "parameters": {
            "region": support::moto::REGION,
            "objects": "- {objectName: prod/app, objectType: secretsmanager, objectAlias: app.json}",
        }},
    });
    support::kube::apply_object(&bed.client, &aws_class, EDITOR)
        .await
        .unwrap();
    // IRSA: the role is the ServiceAccount's annotation, as on EKS.
    bed.kube
        .create_service_account(
            &bed.ns,
            "aws-app",
            &[(
                "eks.amazonaws.com/role-arn",
                "arn:aws:iam::123456789012:role/ctl",
            )],
        )
        .await;
    let endpoint = moto.endpoint().to_owned();
    let _controller = bed
        .controller(&[
            &format!("--aws-sts-endpoint={endpoint}"),
            &format!("--aws-secretsmanager-endpoint={endpoint}"),
            &format!("--aws-ssm-endpoint={endpoint}"),
        ])
        .await;
    for (name, class, account, keys) in [
        (
            "from-vault",
            "vault-app",
            "web",
            vec!["DB_USER", "DB_PASSWORD", "DB_PORT"],
        ),
        ("from-aws", "aws-app", "aws-app", vec!["API_KEY", "API_URL"]),
    ] {
        let mut body = bed.secret_sync(name);
        body["spec"]["secretProviderClassName"] = class.into();
        body["spec"]["serviceAccountName"] = account.into();
        body["spec"]["secretObject"]["data"] = keys
            .iter()
            .map(|k| json!({"sourcePath": k, "targetKey": k}))
            .collect();
        bed.apply(&body).await;
    }
    bed.wait_ready("from-vault", "True").await;
    bed.wait_ready("from-aws", "True").await;
    assert_eq!(
        bed.secret_value("from-vault", "DB_PASSWORD")
            .await
            .as_deref(),
        Some("pw-extract-vault")
    );
    assert_eq!(
        bed.secret_value("from-vault", "DB_PORT").await.as_deref(),
        Some("5432")
    );
    assert_eq!(
        bed.secret_value("from-aws", "API_KEY").await.as_deref(),
        Some("key-extract-aws")
    );
    assert_eq!(
        bed.secret_value("from-aws", "API_URL").await.as_deref(),
        Some("https://api.shop")
    );
}

#[tokio::test]
async fn a_zero_refresh_interval_syncs_only_on_change_despite_its_own_status_writes() {
    let bed = Bed::new("ctl-zero").await;
    bed.bao
        .kv2_put(
            "secret",
            "db",
            json!({"username": "admin", "password": "pw-zero-1"}),
        )
        .await;
    let controller = bed.controller(&["--rotation-poll-interval=1h"]).await;
    let mut body = bed.secret_sync("quiet");
    body["metadata"]["annotations"] = json!({"keymount.io/refresh-interval": "0s"});
    bed.apply(&body).await;
    bed.wait_ready("quiet", "True").await;
    // Each status write comes back as a watch event; none of them may fetch again.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        controller.syncs("").await,
        1,
        "synced again without a change"
    );
    body["spec"]["forceSynchronization"] = "1".into();
    bed.apply(&body).await;
    assert!(
        wait_until(Duration::from_secs(20), || async {
            controller.syncs("").await == 2
        })
        .await,
        "a spec change did not sync"
    );
}

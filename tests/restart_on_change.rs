//! Restart on change end to end: a real Deployment of 3 replicas (kube-controller-manager
//! makes its ReplicaSets and pods; no kubelet runs them), their volumes published to one
//! `keymount node` as kubelet would, and rotations: one content change patches the
//! Deployment's pod template exactly once, an unchanged republish never does. Also through
//! `keymount controller`: a SecretSync whose Secret changes restarts the Deployment it names.

mod controller_support;
mod harness;
mod support;
mod sync_support;
mod vault_support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::json;
use support::proc::wait_until;
use sync_support::{Bed, PodInfo};

const OBJECTS: &str = "- {objectName: password, secretPath: secret/data/db, secretKey: password}";

/// Deployment `name` of `replicas` pods of ServiceAccount `web`; returns its pods.
async fn deployment(client: &kube::Client, ns: &str, name: &str, replicas: i32) -> Vec<PodInfo> {
    let body: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"serviceAccountName": "web", "automountServiceAccountToken": false,
                         "containers": [{"name": "app", "image": "registry.invalid/never-pulled"}]},
            },
        },
    }))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &body)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let selector = ListParams::default().labels(&format!("app={name}"));
    let made = wait_until(Duration::from_secs(60), || {
        let (pods, selector) = (pods.clone(), selector.clone());
        async move {
            pods.list(&selector)
                .await
                .is_ok_and(|l| l.items.len() == replicas as usize)
        }
    })
    .await;
    assert!(
        made,
        "the controllers made no {replicas} pods for Deployment {name}"
    );
    pods.list(&selector)
        .await
        .unwrap()
        .items
        .iter()
        .map(PodInfo::from)
        .collect()
}

/// (generation, the template's restarted-for token) of Deployment `name`.
async fn restarts(client: &kube::Client, ns: &str, name: &str) -> (i64, Option<String>) {
    let d = Api::<Deployment>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap();
    let token = d
        .spec
        .template
        .metadata
        .and_then(|m| m.annotations)
        .and_then(|a| a.get("keymount.io/restarted-for").cloned());
    (d.metadata.generation.unwrap_or_default(), token)
}

#[tokio::test]
async fn one_content_change_restarts_the_owning_deployment_once_across_its_three_pods() {
    let bed = Bed::new("restart").await;
    bed.bao
        .kv2_put("secret", "db", json!({"password": "pw-restart-1"}))
        .await;
    bed.apply_class(
        "app",
        &[("keymount.io/restart-on-change", "owner")],
        OBJECTS,
        serde_json::Value::Null,
    )
    .await;
    let node = bed
        .node(&[
            "--enable-secret-rotation",
            "--rotation-poll-interval=1s",
            "--enable-restart-on-change",
            "--restart-min-interval=1s",
        ])
        .await;
    let mut csi = node.node_client().await;
    let pods = deployment(&bed.client, &bed.ns, "web", 3).await;
    for pod in &pods {
        csi.node_publish_volume(bed.publish(pod, "secrets", "app"))
            .await
            .expect("publish");
    }
    let (generation, token) = restarts(&bed.client, &bed.ns, "web").await;
    assert_eq!(token, None, "a first mount is not a change");

    // Nothing changed: republishes past the interval fetch, find the same content, restart nothing.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for pod in &pods {
        csi.node_publish_volume(bed.publish(pod, "secrets", "app"))
            .await
            .expect("republish");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        restarts(&bed.client, &bed.ns, "web").await,
        (generation, None),
        "restarted without a change"
    );

    // One change, seen by all three pods' volumes: exactly one template patch.
    bed.bao
        .kv2_put("secret", "db", json!({"password": "pw-restart-2"}))
        .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for pod in &pods {
        let _ = csi
            .node_publish_volume(bed.publish(pod, "secrets", "app"))
            .await;
    }
    let patched = wait_until(Duration::from_secs(20), || async {
        restarts(&bed.client, &bed.ns, "web").await.1.is_some()
    })
    .await;
    assert!(
        patched,
        "no restart; log:\n{}",
        std::fs::read_to_string(&node.log).unwrap_or_default()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (after, token) = restarts(&bed.client, &bed.ns, "web").await;
    assert_eq!(
        after,
        generation + 1,
        "one content change, one template patch"
    );
    let token = token.unwrap();
    assert!(!token.contains("pw-restart"));

    // The Event on the Deployment says why, without a value.
    let events: Vec<Event> = Api::<Event>::namespaced(bed.client.clone(), &bed.ns)
        .list(&ListParams::default().fields("involvedObject.name=web"))
        .await
        .unwrap()
        .items;
    let restarted: Vec<_> = events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("RestartedOnSecretChange"))
        .collect();
    assert_eq!(restarted.len(), 1, "{events:#?}");
    let message = restarted[0].message.clone().unwrap_or_default();
    assert!(
        message.contains(&format!("{}/app", bed.ns)) && !message.contains("pw-restart"),
        "{message}"
    );
    let log = std::fs::read_to_string(&node.log).unwrap();
    assert!(
        !log.contains("pw-restart") && !log.contains(&token),
        "a value or the token in the log"
    );
}

#[tokio::test]
async fn a_secret_sync_restarts_the_deployment_it_names_when_its_secret_changes() {
    let bed = controller_support::Bed::new("restart-ctl").await;
    bed.bao
        .kv2_put(
            "secret",
            "db",
            json!({"username": "u", "password": "pw-ctl-restart-1"}),
        )
        .await;
    let _controller = bed
        .controller(&[
            "--rotation-poll-interval=1h",
            "--enable-restart-on-change",
            "--restart-min-interval=1s",
        ])
        .await;
    deployment(&bed.client, &bed.ns, "api", 1).await;
    let mut body = bed.secret_sync("db");
    body["metadata"]["annotations"] = json!({"keymount.io/restart-on-change": "Deployment/api"});
    bed.apply(&body).await;
    bed.wait_ready("db", "True").await;
    let (generation, token) = restarts(&bed.client, &bed.ns, "api").await;
    assert_eq!(token, None, "creating the Secret is not a change");

    bed.bao
        .kv2_put(
            "secret",
            "db",
            json!({"username": "u", "password": "pw-ctl-restart-2"}),
        )
        .await;
    body["spec"]["forceSynchronization"] = "1".into();
    bed.apply(&body).await;
    let patched = wait_until(Duration::from_secs(20), || async {
        restarts(&bed.client, &bed.ns, "api").await.1.is_some()
    })
    .await;
    assert!(patched, "no restart");
    assert_eq!(
        restarts(&bed.client, &bed.ns, "api").await.0,
        generation + 1
    );

    // `owner` has no meaning without a pod: refused with a clear condition.
    let mut owner = bed.secret_sync("owner");
    owner["metadata"]["annotations"] = json!({"keymount.io/restart-on-change": "owner"});
    bed.apply(&owner).await;
    let (reason, message) = bed.wait_ready("owner", "False").await;
    assert_eq!(reason, "UserInputValidationFailed");
    assert!(
        message.contains("keymount.io/restart-on-change"),
        "{message}"
    );
}

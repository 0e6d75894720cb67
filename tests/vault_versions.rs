//! Object versions leave the volume only keyed: the real `keymount node` against the test
//! kube-apiserver and OpenBao writes versions into SecretProviderClassPodStatus objects (etcd)
//! and its state journal; neither holds an unkeyed SHA-256 of any value (plain, or the
//! configuration-plus-content digest versions used to be), the key is the shared Secret
//! `keymount-hmac-key` (created on first use), and a restarted node computes the same versions.

mod harness;
mod support;
mod sync_support;
mod vault_support;

use k8s_openapi::api::core::v1::Secret;
use keymount::class::crd::SecretProviderClassPodStatus;
use keymount::provider::vault::params::parse_objects;
use keymount::provider::version_key::{SECRET_KEY, SECRET_NAME, VersionKey};
use kube::Api;
use serde_json::{Value, json};
use sync_support::Bed;
use vault_support::unkeyed_digests;

const OBJECTS: &str = "- {objectName: pin, secretPath: secret/data/app, secretKey: pin}\n- {objectName: word, secretPath: secret/data/app, secretKey: word}";
const VALUES: [&str; 2] = ["pin4711", "sunshine"];

async fn pod_status(bed: &Bed, pod: &str) -> Value {
    let api: Api<SecretProviderClassPodStatus> = Api::namespaced(bed.client.clone(), &bed.ns);
    let status = api.get(&format!("{pod}-{}-app", bed.ns)).await.unwrap();
    serde_json::to_value(status).unwrap()
}

fn versions(status: &Value) -> Vec<(String, String)> {
    let mut v: Vec<_> = status["status"]["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["id"].as_str().unwrap().to_owned(),
                o["version"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn versions_in_pod_status_and_journal_are_keyed_and_stable_across_restarts() {
    let bed = Bed::new("versions").await;
    bed.bao
        .kv2_put(
            "secret",
            "app",
            json!({"pin": VALUES[0], "word": VALUES[1]}),
        )
        .await;
    bed.apply_class("app", &[], OBJECTS, Value::Null).await;

    let mut node = bed.node(&[]).await;
    let mut csi = node.node_client().await;
    let first = bed.pod("web-0").await;
    csi.node_publish_volume(bed.publish(&first, "secrets", "app"))
        .await
        .expect("publish");
    let status = pod_status(&bed, "web-0").await;
    let journal = std::fs::read_to_string(node.work_dir.join("state/volumes.jsonl")).unwrap();
    let text = format!("{status}\n{journal}");
    let found = versions(&status);
    assert_eq!(found.len(), 2, "{status}");
    for value in VALUES {
        assert!(
            !text.contains(value),
            "a value reached the API or the journal"
        );
        for digest in unkeyed_digests(value, OBJECTS) {
            assert!(
                !text.contains(&digest),
                "an unkeyed SHA-256 of {value:?} is readable: {digest}"
            );
        }
    }

    // The key is the shared Secret in the node's namespace; the versions are its HMACs.
    let secret = Api::<Secret>::namespaced(bed.client.clone(), bed.client.default_namespace())
        .get(SECRET_NAME)
        .await
        .expect("the HMAC key Secret was created on first use");
    let key = secret.data.unwrap()[SECRET_KEY].0.clone();
    let key = VersionKey::from_bytes(&key, "test").unwrap();
    let objects = parse_objects(OBJECTS).unwrap();
    let pin = &objects[0];
    let expected = key.sign(&[&serde_json::to_vec(pin).unwrap(), VALUES[0].as_bytes()]);
    assert_eq!(found[0], ("pin".into(), expected));

    // A restarted node reads the same key: the same content has the same versions.
    csi.node_unpublish_volume(harness::node::unpublish_request(
        &format!("csi-{}-secrets", first.uid),
        &bed.target(&first, "secrets"),
    ))
    .await
    .unwrap();
    node.terminate();
    let node = bed.node(&[]).await;
    let mut csi = node.node_client().await;
    let second = bed.pod("web-1").await;
    csi.node_publish_volume(bed.publish(&second, "secrets", "app"))
        .await
        .expect("publish after restart");
    assert_eq!(versions(&pod_status(&bed, "web-1").await), found);
    csi.node_unpublish_volume(harness::node::unpublish_request(
        &format!("csi-{}-secrets", second.uid),
        &bed.target(&second, "secrets"),
    ))
    .await
    .unwrap();
    assert!(harness::mounts::mounts_under(bed.work.path()).is_empty());
}

//! No secret value, token, or unkeyed hash of one leaves the volume, checked over a whole run:
//! the real `keymount node` (RUST_LOG=trace, Secret sync and rotation on) against the test
//! kube-apiserver and OpenBao mounts several pods, rotates a changed value, fails a rotation,
//! refuses bad inputs and fails provider calls. Then its log, a /metrics scrape, every
//! SecretProviderClassPodStatus and Event of the namespace, its state journal and every gRPC
//! error it answered are searched for every value (old and new, plain and base64), every
//! token it was given or obtained, its HMAC key, and the plain SHA-256 of every value. The
//! synced Secrets are where values belong: they are checked to hold them, not searched.

mod harness;
mod support;
mod sync_support;
mod vault_support;

use std::time::Duration;

use base64::Engine as _;
use harness::node::unpublish_request;
use k8s_openapi::api::core::v1::{Event, Secret};
use keymount::class::crd::SecretProviderClassPodStatus;
use keymount::proto::csi::NodePublishVolumeRequest;
use keymount::proto::csi::node_client::NodeClient;
use keymount::provider::tokens::TOKENS_KEY;
use kube::Api;
use kube::api::ListParams;
use serde_json::{Value, json};
use sync_support::{Bed, PodInfo, RESTRICTED_HMAC_KEY};
use tonic::Code;
use tonic::transport::Channel;
use vault_support::{tokens_json, unkeyed_digests};

const APP: &str = "\
- {objectName: pin, secretPath: secret/data/app, secretKey: pin}
- {objectName: word, secretPath: secret/data/app, secretKey: word}
- {objectName: password, secretPath: secret/data/db, secretKey: password}";
const OTHER: &str = "- {objectName: note, secretPath: secret/data/other, secretKey: note}";
/// The secret exists, the key does not: the answer carries the values, the error must not.
const NO_KEY: &str = "- {objectName: absent, secretPath: secret/data/app, secretKey: absent}";
/// Outside the `web` policy: OpenBao answers 403.
const DENIED: &str = "- {objectName: meta, secretPath: secret/metadata/app, secretKey: pin}";

/// A distinct, recognisable value for this run.
fn value(label: &str) -> String {
    format!("{label}-{}", hex::encode(rand::random::<[u8; 12]>()))
}

/// What must not appear, by kind (the kind alone is ever printed).
#[derive(Default)]
struct Needles(Vec<(&'static str, String)>);

impl Needles {
    fn add(&mut self, kind: &'static str, text: &str) {
        assert!(text.len() >= 8, "{kind} too short to search for");
        self.0.push((kind, text.to_owned()));
    }

    /// A secret value, its base64 (a Secret's `data`, a logged API body), and every unkeyed
    /// SHA-256 of it.
    fn value(&mut self, value: &str) {
        self.add("a secret value", value);
        let b64 = base64::engine::general_purpose::STANDARD.encode(value);
        self.add("a secret value in base64", &b64);
        for digest in unkeyed_digests(value, &format!("{APP}\n{OTHER}\n{NO_KEY}")) {
            self.add("an unkeyed SHA-256 of a secret value", &digest);
        }
    }

    /// A JWT, and its signature on its own (what makes it a credential).
    fn jwt(&mut self, kind: &'static str, token: &str) {
        self.add(kind, token);
        self.add(kind, token.rsplit('.').next().unwrap());
    }
}

/// The node's CSI client, recording every token sent and every gRPC error answered.
struct Kubelet<'a> {
    bed: &'a Bed,
    csi: NodeClient<Channel>,
    needles: Needles,
    errors: Vec<tonic::Status>,
}

impl Kubelet<'_> {
    async fn send(&mut self, req: NodePublishVolumeRequest) -> Result<(), Code> {
        if let Some(tokens) = req.volume_context.get(TOKENS_KEY) {
            match serde_json::from_str::<Value>(tokens) {
                Ok(v) => self.needles.jwt(
                    "a ServiceAccount token",
                    v["vault"]["token"].as_str().unwrap(),
                ),
                Err(_) => self.needles.add("the malformed tokens JSON", tokens),
            }
        }
        match self.csi.node_publish_volume(req).await {
            Ok(_) => Ok(()),
            Err(status) => {
                let code = status.code();
                self.errors.push(status);
                Err(code)
            }
        }
    }

    async fn publish(&mut self, pod: &PodInfo, class: &str) -> Result<(), Code> {
        let req = self.bed.publish(pod, class, class);
        self.send(req).await
    }

    async fn unpublish(&mut self, pod: &PodInfo, class: &str) {
        let id = format!("csi-{}-{class}", pod.uid);
        self.csi
            .node_unpublish_volume(unpublish_request(&id, &self.bed.target(pod, class)))
            .await
            .expect("unpublish");
    }
}

fn file(bed: &Bed, pod: &PodInfo, class: &str, name: &str) -> String {
    std::fs::read_to_string(bed.target(pod, class).join(name)).unwrap()
}

async fn secret_value(bed: &Bed, name: &str, key: &str) -> String {
    let secret = Api::<Secret>::namespaced(bed.client.clone(), &bed.ns)
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("synced Secret {name}: {e}"));
    String::from_utf8(secret.data.unwrap()[key].0.clone()).unwrap()
}

#[tokio::test]
async fn no_value_token_or_unkeyed_hash_in_logs_metrics_api_objects_journal_or_errors() {
    let bed = Bed::new("leaks").await;
    let (pin1, word1, password, note) = (value("pin"), value("word"), value("pw"), value("note"));
    let (pin2, word2) = (value("pin"), value("word"));
    bed.bao
        .kv2_put("secret", "app", json!({"pin": pin1, "word": word1}))
        .await;
    bed.bao
        .kv2_put("secret", "db", json!({"password": password}))
        .await;
    bed.bao
        .kv2_put("secret", "other", json!({"note": note}))
        .await;
    let sync = json!([{"secretName": "app-sync", "type": "Opaque",
        "data": [{"objectName": "pin", "key": "pin"}, {"objectName": "password", "key": "password"}]}]);
    bed.apply_class("app", &[], APP, sync).await;
    bed.apply_class("other", &[], OTHER, Value::Null).await;
    bed.apply_class("nokey", &[], NO_KEY, Value::Null).await;
    bed.apply_class("denied", &[], DENIED, Value::Null).await;
    let mut node = bed
        .restricted_node_with(
            &[
                "--enable-secret-sync",
                "--enable-secret-rotation",
                "--rotation-poll-interval=1s",
            ],
            &[("RUST_LOG", "trace")],
        )
        .await;
    let mut kubelet = Kubelet {
        bed: &bed,
        csi: node.node_client().await,
        needles: Needles::default(),
        errors: Vec::new(),
    };

    // Mounts of three pods; the class of two syncs a Secret.
    let pods = [
        bed.pod("web-0").await,
        bed.pod("web-1").await,
        bed.pod("web-2").await,
    ];
    let classes = ["app", "app", "other"];
    for (pod, class) in pods.iter().zip(classes) {
        kubelet.publish(pod, class).await.expect("first mount");
    }
    assert_eq!(file(&bed, &pods[0], "app", "pin"), pin1);
    assert_eq!(file(&bed, &pods[2], "other", "note"), note);
    assert_eq!(secret_value(&bed, "app-sync", "pin").await, pin1);

    // A value changed in OpenBao, a path deleted: after the interval, one rotation picks the
    // change up and one fails (the old content stays).
    bed.bao
        .kv2_put("secret", "app", json!({"pin": pin2, "word": word2}))
        .await;
    bed.bao
        .api("DELETE", "secret/metadata/other", Value::Null)
        .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for (pod, class) in pods.iter().zip(classes) {
        kubelet
            .publish(pod, class)
            .await
            .expect("a republish answers OK, failed rotation or not");
    }
    assert_eq!(file(&bed, &pods[1], "app", "word"), word2);
    assert_eq!(file(&bed, &pods[2], "other", "note"), note);
    assert_eq!(secret_value(&bed, "app-sync", "pin").await, pin2);
    assert_eq!(secret_value(&bed, "app-sync", "password").await, password);
    bed.wait_event("web-0", "MountRotationComplete").await;
    bed.wait_event("web-2", "MountRotationFailed").await;

    // Publishes refused for a bad input: a class name that is no DNS name, and tokens JSON
    // cut short after the token.
    let stranger = bed.pod("web-3").await;
    let mut req = bed.publish(&stranger, "bad", "app");
    req.volume_context
        .insert("secretProviderClass".into(), "../app?x=1".into());
    assert_eq!(kubelet.send(req).await, Err(Code::InvalidArgument));
    let mut req = bed.publish(&stranger, "cut", "app");
    let token = bed.signer.token(&bed.ns, "web", "vault");
    let cut = format!(r#"{{"vault": {{"token": "{token}", "expirationTimestamp": "2099-"#);
    req.volume_context.insert(TOKENS_KEY.into(), cut);
    kubelet.needles.jwt("a ServiceAccount token", &token);
    assert_eq!(kubelet.send(req).await, Err(Code::InvalidArgument));

    // Publishes whose provider call fails: a key the secret lacks, a path the policy denies,
    // and a login with a token OpenBao's role does not accept.
    for class in ["nokey", "denied"] {
        assert!(kubelet.publish(&stranger, class).await.is_err(), "{class}");
    }
    let mut req = bed.publish(&stranger, "app", "app");
    let intruder = bed.signer.token(&bed.ns, "intruder", "vault");
    req.volume_context
        .insert(TOKENS_KEY.into(), tokens_json("vault", &intruder));
    assert!(kubelet.send(req).await.is_err(), "login of another account");
    assert_eq!(kubelet.errors.len(), 5);

    // The API objects, while the volumes are mounted.
    let lp = ListParams::default();
    let statuses = Api::<SecretProviderClassPodStatus>::namespaced(bed.client.clone(), &bed.ns)
        .list(&lp)
        .await
        .unwrap()
        .items;
    let events = Api::<Event>::namespaced(bed.client.clone(), &bed.ns)
        .list(&lp)
        .await
        .unwrap()
        .items;
    for (pod, class) in pods.iter().zip(classes) {
        kubelet.unpublish(pod, class).await;
    }
    assert!(harness::mounts::mounts_under(bed.work.path()).is_empty());
    let (_, metrics) = node.get("/metrics").await.expect("metrics");
    assert!(node.terminate().success(), "clean exit");
    let log = node.logs();
    let journal = std::fs::read_to_string(node.work_dir.join("state/volumes.jsonl")).unwrap();

    // The collection is not empty.
    let reasons: Vec<&str> = events.iter().filter_map(|e| e.reason.as_deref()).collect();
    for reason in ["MountRotationComplete", "MountRotationFailed"] {
        assert!(reasons.contains(&reason), "no {reason} in {reasons:?}");
    }
    assert!(statuses.len() >= 3, "{} pod statuses", statuses.len());
    assert!(
        log.lines().count() > 200,
        "{} log lines",
        log.lines().count()
    );
    assert!(log.contains("TRACE"), "the node logged at trace level");
    assert!(journal.lines().count() >= 3, "journal:\n{journal}");
    assert!(metrics.contains("node_publish_total"), "{metrics}");
    let client_tokens = bed.bao.client_tokens();
    assert!(!client_tokens.is_empty(), "OpenBao issued no client token");

    // What must not appear.
    let mut needles = kubelet.needles;
    for v in [&pin1, &word1, &password, &note, &pin2, &word2] {
        needles.value(v);
    }
    for token in &client_tokens {
        needles.add("an OpenBao client token", token);
    }
    let kubeconfig = std::fs::read_to_string(bed.work.path().join("node.kubeconfig")).unwrap();
    let kubeconfig: serde_json::Value = serde_yaml::from_str(&kubeconfig).unwrap();
    let api_token = kubeconfig["users"][0]["user"]["token"]
        .as_str()
        .expect("the node's kubeconfig has a token");
    needles.jwt("the node's own API token", api_token);
    needles.add("the HMAC key of object versions", RESTRICTED_HMAC_KEY);

    let errors: String = kubelet
        .errors
        .iter()
        .map(|s| {
            format!(
                "{s:?}\n{}\n{}\n",
                s.message(),
                String::from_utf8_lossy(s.details())
            )
        })
        .collect();
    let artefacts = [
        ("the node's log", log),
        ("the /metrics scrape", metrics),
        (
            "the SecretProviderClassPodStatus objects",
            serde_json::to_string(&statuses).unwrap(),
        ),
        ("the Events", serde_json::to_string(&events).unwrap()),
        ("the state journal", journal),
        ("the gRPC errors", errors),
    ];
    let mut found: Vec<String> = Vec::new();
    for (artefact, text) in &artefacts {
        for (kind, needle) in &needles.0 {
            let finding = format!("found {kind} in {artefact}");
            if text.contains(needle.as_str()) && !found.contains(&finding) {
                found.push(finding);
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

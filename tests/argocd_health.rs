//! Argo CD's health check for SecretSync (`deploy/argocd/secretsync-health.lua`) on hand-made
//! objects, run by lua5.4: Progressing until the status describes the current generation, then
//! Healthy or Degraded from the Ready condition; and the argocd-cm patch carries the same script.

mod support;

use serde_json::{Value, json};
use support::argocd::{HEALTH_LUA, Health, health};
use support::proc::repo_root;

const HEALTH_KEY: &str = "resource.customizations.health.secret-sync.x-k8s.io_SecretSync";
const WAITING: &str = "Waiting for the controller to sync this SecretSync";

/// A SecretSync at generation 3 with `status` (none when null).
fn secret_sync(status: Value) -> Value {
    let mut object = json!({
        "apiVersion": "secret-sync.x-k8s.io/v1alpha1",
        "kind": "SecretSync",
        "metadata": {"name": "db", "namespace": "shop", "generation": 3, "uid": "0d6c"},
        "spec": {
            "secretProviderClassName": "vault-db",
            "serviceAccountName": "db",
            "secretObject": {"type": "Opaque", "data": [{"sourcePath": "pw", "targetKey": "pw"}]}
        }
    });
    if !status.is_null() {
        object["status"] = status;
    }
    object
}

/// A status for generation `observed` whose conditions are Create and then `ready`.
fn status(observed: i64, ready: Option<Value>) -> Value {
    let mut conditions = vec![json!({
        "type": "Create", "status": "True", "reason": "CreateSucceeded", "message": "created",
        "lastTransitionTime": "2026-12-03T10:00:00Z", "observedGeneration": observed
    })];
    conditions.extend(ready);
    json!({
        "observedGeneration": observed,
        "syncHash": "v1:ab12",
        "lastSuccessfulSyncTime": "2026-12-03T10:00:00Z",
        "conditions": conditions
    })
}

/// A Ready condition for generation 3.
fn ready(status: &str, reason: &str, message: &str) -> Value {
    json!({
        "type": "Ready", "status": status, "reason": reason, "message": message,
        "lastTransitionTime": "2026-12-03T10:00:00Z", "observedGeneration": 3
    })
}

/// The Health the script should return.
fn outcome(status: &str, message: &str) -> Health {
    Health {
        status: status.to_owned(),
        message: message.to_owned(),
    }
}

#[test]
fn the_argocd_cm_patch_holds_the_script_verbatim() {
    let path = repo_root().join("deploy/argocd/argocd-cm-patch.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let patch: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(patch["kind"].as_str(), Some("ConfigMap"));
    assert_eq!(patch["metadata"]["name"].as_str(), Some("argocd-cm"));
    let script = patch["data"][HEALTH_KEY]
        .as_str()
        .unwrap_or_else(|| panic!("{}: no data.{HEALTH_KEY}", path.display()));
    assert_eq!(
        script.trim_end_matches('\n'),
        HEALTH_LUA.trim_end_matches('\n')
    );
}

#[test]
fn progressing_until_the_status_describes_this_generation() {
    let waiting = outcome("Progressing", WAITING);
    let synced = ready("True", "Synced", "synced");
    assert_eq!(health(&secret_sync(Value::Null)), waiting, "no status");
    assert_eq!(health(&secret_sync(json!({}))), waiting, "empty status");
    assert_eq!(
        health(&secret_sync(status(2, Some(synced.clone())))),
        waiting,
        "status.observedGeneration behind"
    );
    assert_eq!(health(&secret_sync(status(3, None))), waiting, "no Ready");
    let mut ready_behind = synced;
    ready_behind["observedGeneration"] = json!(2);
    assert_eq!(
        health(&secret_sync(status(3, Some(ready_behind)))),
        waiting,
        "Ready.observedGeneration behind"
    );
}

#[test]
fn ready_unknown_is_progressing_with_its_message() {
    let object = secret_sync(status(3, Some(ready("Unknown", "Syncing", "fetching"))));
    assert_eq!(health(&object), outcome("Progressing", "fetching"));
}

#[test]
fn ready_true_is_healthy_with_its_message() {
    let message = "SecretSync shop/db: class shop/vault-db (provider vault): synced 1 key";
    let object = secret_sync(status(3, Some(ready("True", "Synced", message))));
    assert_eq!(health(&object), outcome("Healthy", message));
    let object = secret_sync(status(3, Some(ready("True", "Synced", ""))));
    assert_eq!(health(&object), outcome("Healthy", "Secret synced"));
}

#[test]
fn ready_false_is_degraded_with_reason_and_message() {
    let message = "SecretSync shop/db: class shop/vault-db (provider vault): permission denied";
    let object = secret_sync(status(3, Some(ready("False", "ProviderError", message))));
    assert_eq!(
        health(&object),
        outcome("Degraded", &format!("ProviderError: {message}"))
    );
}

#[test]
fn strings_reach_lua_unchanged() {
    // Quotes, backslashes, line ends, a control byte followed by a digit (a short `\1` escape
    // would swallow it), and UTF-8.
    let message = "say \"hi\" \\ back\\slash\nline two\r\n\ttab \u{1}7 é ✓ end]]";
    let mut object = secret_sync(status(3, Some(ready("True", "Synced", message))));
    object["metadata"]["annotations"] = json!({"odd \"key\"\n": "v", "null": null});
    assert_eq!(health(&object), outcome("Healthy", message));
}

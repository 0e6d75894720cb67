//! Reading a class's objects: distinct requests read concurrently (bounded) and once each,
//! KV v2 `data.data` unwrapped, `secretKey` extracted (non-strings JSON-encoded) or the whole
//! response written, values decoded, versions keyed (HMAC), lease ends turned into
//! `refresh_before`.
//!
//! Identical concurrent reads of one identity are joined only when they are static: a `GET`
//! whose answer carries no lease. Anything that mints (PKI `issue`, database `creds`, any other
//! method, any answer with a lease) is read for each mount, so every pod gets its own
//! certificate or lease, as with vault-csi-provider.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use futures::StreamExt as _;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::Shared;
use super::cache::Identity;
use super::client::{VaultRequest, strip_query};
use super::error::{VaultError, detail_of};
use super::params::{MountParameters, SecretObject};
use crate::fs::atomic_writer::Payload;
use crate::provider::version_key::VersionKey;
use crate::provider::{MountOutput, ObjectVersion};
use crate::redact::Redacted;

/// Vault's response, field for field as Vault's Go client serializes `api.Secret` (the file
/// content when an object has no `secretKey`).
#[derive(Clone, Default, Serialize, Deserialize)]
pub(crate) struct Secret {
    #[serde(default)]
    request_id: String,
    #[serde(default)]
    lease_id: String,
    #[serde(default)]
    lease_duration: i64,
    #[serde(default)]
    renewable: bool,
    #[serde(default)]
    data: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    warnings: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auth: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wrap_info: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    mount_type: String,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("lease_duration", &self.lease_duration)
            .field("data", &"[redacted]")
            .finish()
    }
}

/// What identifies one Vault request of a mount: path (with query), method and arguments.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct RequestKey {
    pub path: String,
    pub method: String,
    pub args: Option<String>,
}

impl RequestKey {
    /// A read that may be shared with other mounts of the identity: a `GET` (Vault's read).
    /// Every other method may create something (PKI `issue`, `sign`, transit, ...).
    pub(crate) fn may_join(&self) -> bool {
        self.method == "GET"
    }

    fn of(object: &SecretObject) -> Self {
        let method = object
            .method
            .as_deref()
            .filter(|m| !m.is_empty())
            .unwrap_or("GET")
            .to_ascii_uppercase();
        let args = object
            .secret_args
            .as_ref()
            .map(|a| serde_json::to_string(a).unwrap_or_default());
        Self {
            path: v1_path(&object.secret_path),
            method,
            args,
        }
    }
}

/// Vault's `/v1/` prefix added as vault-csi-provider does.
pub(crate) fn v1_path(path: &str) -> String {
    if path.starts_with("/v1/") {
        path.to_owned()
    } else if path.starts_with("v1/") {
        format!("/{path}")
    } else if path.starts_with('/') {
        format!("/v1{path}")
    } else {
        format!("/v1/{path}")
    }
}

type ReadResult = Result<Arc<Secret>, VaultError>;

/// One read with the identity's token; a 403 with a cached token logs in again once.
async fn read_once(
    shared: Arc<Shared>,
    id: Identity,
    jwt: Redacted<String>,
    key: RequestKey,
) -> ReadResult {
    let login = || super::auth::login(&shared.http, &id.connection, &id.auth_mount, &id.role, &jwt);
    let (mut token, mut fresh) = shared.tokens.get(&id, login).await?;
    let method = reqwest::Method::from_bytes(key.method.as_bytes()).map_err(|_| {
        VaultError::InvalidParameter {
            name: "method".into(),
            reason: format!("{:?} is not an HTTP method", key.method),
        }
    })?;
    let body: Option<serde_json::Value> = key
        .args
        .as_deref()
        .and_then(|a| serde_json::from_str(a).ok());
    loop {
        let response = shared
            .http
            .send(
                &id.connection,
                VaultRequest {
                    method: method.clone(),
                    path: &key.path,
                    body: body.as_ref(),
                    token: Some(&token),
                },
            )
            .await?;
        if response.status == 403 && !fresh {
            shared.tokens.invalidate(&id, &token).await;
            (token, fresh) = shared.tokens.get(&id, login).await?;
            continue;
        }
        let path = strip_query(&key.path).to_owned();
        let method = key.method.clone();
        let detail = || detail_of(response.body.expose());
        return match response.status {
            200..=299 => {
                let body = response.body.expose();
                if body.is_empty() {
                    return Ok(Arc::new(Secret::default()));
                }
                serde_json::from_slice(body)
                    .map(Arc::new)
                    .map_err(|e| VaultError::Unexpected {
                        method,
                        path,
                        status: response.status,
                        detail: format!(
                            "response is not a Vault secret: {}",
                            crate::redact::describe_json_error(&e)
                        ),
                    })
            }
            403 => Err(VaultError::ReadDenied {
                method,
                path,
                detail: detail(),
            }),
            404 => Err(VaultError::ReadNotFound { method, path }),
            400 | 405 | 422 => Err(VaultError::ReadRejected {
                method,
                path,
                status: response.status,
                detail: detail(),
            }),
            429 | 500..=599 => Err(VaultError::Unavailable {
                target: format!("{method} {}{path}", id.connection.address),
                detail: format!("HTTP {}: {}", response.status, detail()),
            }),
            status => Err(VaultError::Unexpected {
                method,
                path,
                status,
                detail: detail(),
            }),
        };
    }
}

/// Reads every object of a mount and builds the files, versions and refresh time.
pub(crate) async fn fetch_all(
    shared: &Arc<Shared>,
    id: &Identity,
    jwt: &Redacted<String>,
    params: &MountParameters,
    default_mode: u32,
) -> Result<MountOutput, VaultError> {
    let mut keys: Vec<RequestKey> = params.objects.iter().map(RequestKey::of).collect();
    keys.sort_by(|a, b| (&a.path, &a.method, &a.args).cmp(&(&b.path, &b.method, &b.args)));
    keys.dedup();
    let reads = futures::stream::iter(keys)
        .map(|key| async move {
            let own = || read_once(shared.clone(), id.clone(), jwt.clone(), key.clone());
            if !key.may_join() {
                return (key.clone(), own().await);
            }
            let flight_key = (id.clone(), key.clone());
            let (result, led) = shared.reads.run(flight_key, own).await;
            // A leased answer (database `creds`, ...) was minted for the mount that asked: a
            // mount that joined it reads its own.
            let minted = matches!(&result, Ok(secret) if !secret.lease_id.is_empty());
            if minted && !led {
                return (key.clone(), own().await);
            }
            (key.clone(), result)
        })
        .buffer_unordered(shared.concurrency.max(1));
    let responses: HashMap<RequestKey, ReadResult> = reads.collect().await;

    let now = Timestamp::now();
    let mut output = MountOutput::default();
    for object in &params.objects {
        let key = RequestKey::of(object);
        let secret = responses
            .get(&key)
            .cloned()
            .expect("every request key was read")?;
        let contents = contents(object, &key, &secret)?;
        output.versions.push(ObjectVersion {
            id: object.object_name.clone(),
            version: version(&shared.version_key, object, &contents),
        });
        if let Some(end) = refresh_time(now, secret.lease_duration) {
            output.refresh_before = Some(output.refresh_before.map_or(end, |t| t.min(end)));
        }
        output.files.push(Payload {
            path: object.object_name.clone(),
            mode: object
                .file_permission
                .as_ref()
                .and_then(|p| p.mode())
                .unwrap_or(default_mode),
            contents: Redacted::new(contents),
        });
    }
    Ok(output)
}

/// Fetch again after four fifths of a lease, before it ends.
fn refresh_time(now: Timestamp, lease_seconds: i64) -> Option<Timestamp> {
    (lease_seconds > 0).then(|| now + SignedDuration::from_millis(lease_seconds * 800))
}

/// The file content of `object` from its response.
fn contents(
    object: &SecretObject,
    key: &RequestKey,
    secret: &Secret,
) -> Result<Vec<u8>, VaultError> {
    let path = strip_query(&key.path).to_owned();
    let Some(data) = &secret.data else {
        return Err(VaultError::EmptyResponse {
            object: object.object_name.clone(),
            path,
            warnings: secret.warnings.clone().unwrap_or_default().join("; "),
        });
    };
    let Some(secret_key) = object.secret_key.as_deref().filter(|k| !k.is_empty()) else {
        return Ok(serde_json::to_vec(secret).unwrap_or_default());
    };
    let root = match data.get("data") {
        Some(serde_json::Value::Object(inner)) => inner,
        _ => data,
    };
    let value = root.get(secret_key).ok_or_else(|| VaultError::MissingKey {
        object: object.object_name.clone(),
        key: secret_key.to_owned(),
        path: path.clone(),
    })?;
    let raw = match value {
        serde_json::Value::String(s) => s.clone().into_bytes(),
        other => serde_json::to_vec(other).unwrap_or_default(),
    };
    decode(object, raw)
}

fn decode(object: &SecretObject, raw: Vec<u8>) -> Result<Vec<u8>, VaultError> {
    let encoding = object
        .encoding
        .as_deref()
        .unwrap_or("")
        .to_ascii_lowercase();
    let failed = || VaultError::DecodeValue {
        object: object.object_name.clone(),
        encoding: encoding.clone(),
    };
    match encoding.as_str() {
        "" | "utf-8" => Ok(raw),
        "base64" => base64::engine::general_purpose::STANDARD
            .decode(&raw)
            .map_err(|_| failed()),
        "hex" => hex::decode(&raw).map_err(|_| failed()),
        _ => Err(failed()),
    }
}

/// A stable version: HMAC-SHA256 under the admin's key over the object's configuration and its
/// content, so it is the same on every node, changes when either changes, and (unlike a plain
/// hash) cannot be used to test guesses of the value by anyone who reads it from the API.
fn version(key: &VersionKey, object: &SecretObject, contents: &[u8]) -> String {
    key.sign(&[&serde_json::to_vec(object).unwrap_or_default(), contents])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::vault::params::parse_objects;

    fn secret(json: &str) -> Secret {
        serde_json::from_str(json).unwrap()
    }

    fn object(yaml: &str) -> SecretObject {
        parse_objects(yaml).unwrap().remove(0)
    }

    fn content(yaml: &str, json: &str) -> Result<Vec<u8>, VaultError> {
        let o = object(yaml);
        contents(&o, &RequestKey::of(&o), &secret(json))
    }

    const KV2: &str = r#"{"request_id":"r","lease_id":"","lease_duration":0,"renewable":false,"data":{"data":{"password":"s3cr3t","n":5,"nested":{"a":[1,2]},"b64":"aGVsbG8=","hex":"6869"},"metadata":{"version":3}},"warnings":null}"#;

    #[test]
    fn kv2_values_are_unwrapped_and_encoded() {
        let c = |key: &str, enc: &str| {
            content(
                &format!(
                    "- {{objectName: o, secretPath: secret/data/x, secretKey: {key}, encoding: {enc}}}"
                ),
                KV2,
            )
        };
        assert_eq!(c("password", "utf-8").unwrap(), b"s3cr3t");
        assert_eq!(c("n", "utf-8").unwrap(), b"5");
        assert_eq!(c("nested", "utf-8").unwrap(), br#"{"a":[1,2]}"#);
        assert_eq!(c("b64", "base64").unwrap(), b"hello");
        assert_eq!(c("hex", "HEX").unwrap(), b"hi");
        assert!(matches!(
            c("password", "hex"),
            Err(VaultError::DecodeValue { .. })
        ));
        let e = c("nope", "utf-8").unwrap_err().to_string();
        assert!(
            e.contains(r#"key "nope" does not exist"#) && e.contains("/v1/secret/data/x"),
            "{e}"
        );
    }

    #[test]
    fn whole_response_without_secret_key_and_kv1() {
        let whole = content("- {objectName: o, secretPath: secret/data/x}", KV2).unwrap();
        let text = String::from_utf8(whole).unwrap();
        assert!(text.starts_with(r#"{"request_id":"r","lease_id":"","lease_duration":0,"renewable":false,"data":{"data":"#), "{text}");
        assert!(text.ends_with(r#""warnings":null}"#), "{text}");
        let kv1 = r#"{"data":{"user":"admin"},"lease_duration":2764800}"#;
        let v = content("- {objectName: o, secretPath: kv/x, secretKey: user}", kv1).unwrap();
        assert_eq!(v, b"admin");
        let e = content(
            "- {objectName: o, secretPath: kv/x}",
            r#"{"warnings":["gone"]}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("empty response") && e.to_string().contains("gone"));
    }

    #[test]
    fn paths_versions_and_refresh() {
        assert_eq!(v1_path("secret/data/x"), "/v1/secret/data/x");
        assert_eq!(v1_path("/secret/x"), "/v1/secret/x");
        assert_eq!(v1_path("v1/secret/x"), "/v1/secret/x");
        assert_eq!(v1_path("/v1/secret/x?version=2"), "/v1/secret/x?version=2");
        let o = object("- {objectName: o, secretPath: a}");
        let p = object("- {objectName: p, secretPath: a}");
        let k = VersionKey::from_bytes(&[7; 32], "test").unwrap();
        let other = VersionKey::from_bytes(&[8; 32], "test").unwrap();
        assert_eq!(version(&k, &o, b"x"), version(&k, &o, b"x"));
        assert_ne!(version(&k, &o, b"x"), version(&k, &o, b"y"));
        assert_ne!(version(&k, &o, b"x"), version(&k, &p, b"x"));
        assert_ne!(version(&k, &o, b"x"), version(&other, &o, b"x"));
        let now = Timestamp::now();
        assert_eq!(refresh_time(now, 0), None);
        assert_eq!(
            refresh_time(now, 100),
            Some(now + SignedDuration::from_secs(80))
        );
        let post = object(
            "- {objectName: c, secretPath: pki/issue/web, method: post, secretArgs: {common_name: a}}",
        );
        let key = RequestKey::of(&post);
        assert_eq!(key.method, "POST");
        assert!(!key.may_join(), "a POST may mint: never joined");
        assert!(RequestKey::of(&o).may_join());
        assert_eq!(key.args.as_deref(), Some(r#"{"common_name":"a"}"#));
    }
}

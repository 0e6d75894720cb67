//! What one SecretSync asks for: its spec checked before anything is fetched, then the Secret
//! built from the provider's files. Pure: no API call, so every refusal is unit-tested.

use std::collections::BTreeMap;

use super::crd::SecretSync;
use super::outcome::{Failure, Reason};
use crate::fs::atomic_writer::Payload;
use crate::names;
use crate::redact::Redacted;

/// Label of every Secret the controller writes: the SecretSync's name (upstream's label).
pub(crate) const SECRET_SYNC_LABEL: &str = "secrets-store.sync.x-k8s.io/secretsync";
/// Label and annotation prefix reserved for the controller (upstream's rule).
pub(crate) const RESERVED_PREFIX: &str = "secrets-store.sync.x-k8s.io";
/// A Secret type that would let a SecretSync mint ServiceAccount tokens; always refused.
const TOKEN_TYPE: &str = "kubernetes.io/service-account-token";
/// The API server's limit on a Secret's data (1 MiB), less room for its metadata.
pub(crate) const MAX_DATA_BYTES: usize = 1024 * 1024 - 64 * 1024;
/// Longest text of one field checked here (upstream's schema limit).
const MAX_FIELD: usize = 253;

/// The Secret a SecretSync asks for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DesiredSecret {
    pub(crate) type_: String,
    pub(crate) data: BTreeMap<String, Redacted<Vec<u8>>>,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) annotations: BTreeMap<String, String>,
}

fn invalid(reason: Reason, message: String) -> Failure {
    Failure { reason, message }
}

fn user(message: String) -> Failure {
    invalid(Reason::UserInputValidationFailed, message)
}

/// A Secret data key: `[-._a-zA-Z0-9]+`, at most 253 characters, not `.` or `..`.
fn secret_key_ok(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_FIELD
        && key != "."
        && key != ".."
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
}

/// A label value: at most 63 of `[-._a-zA-Z0-9]`, alphanumeric at both ends (or empty).
fn label_value_ok(value: &str) -> bool {
    let bytes = value.as_bytes();
    value.is_empty()
        || (value.len() <= names::MAX_LABEL
            && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
            && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(b)))
}

/// A label or annotation key: an optional DNS subdomain prefix and `/`, then a name of at most
/// 63 characters as a label value, non-empty.
fn qualified_key_ok(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    !name.is_empty()
        && label_value_ok(name)
        && prefix.is_none_or(|p| names::subdomain("prefix", p).is_ok())
}

/// Checks what can be checked before the store is asked: names, type, keys, labels and
/// annotations. The message names the SecretSync and the field, never a value of the store.
pub(crate) fn check_spec(sync: &SecretSync) -> Result<(), Failure> {
    let id = sync_id(sync);
    let spec = &sync.spec;
    let name = sync.metadata.name.as_deref().unwrap_or_default();
    if !label_value_ok(name) {
        return Err(user(format!(
            "SecretSync {id}: a name longer than 63 characters cannot be the value of label {SECRET_SYNC_LABEL}"
        )));
    }
    for (field, value) in [
        (
            "spec.secretProviderClassName",
            &spec.secret_provider_class_name,
        ),
        ("spec.serviceAccountName", &spec.service_account_name),
    ] {
        names::subdomain(field, value).map_err(|e| user(format!("SecretSync {id}: {e}")))?;
    }
    let type_ = secret_type(sync);
    if type_.is_empty() || type_.len() > MAX_FIELD || type_.chars().any(char::is_whitespace) {
        return Err(user(format!(
            "SecretSync {id}: spec.secretObject.type {:?} is not a Secret type",
            crate::text::shorten(type_, 64)
        )));
    }
    if type_ == TOKEN_TYPE {
        return Err(user(format!(
            "SecretSync {id}: spec.secretObject.type {TOKEN_TYPE} is refused: the API server would fill it with a token of any ServiceAccount it names"
        )));
    }
    if let Some(force) = &spec.force_synchronization
        && force.len() > MAX_FIELD
    {
        return Err(user(format!(
            "SecretSync {id}: spec.forceSynchronization is longer than {MAX_FIELD} characters"
        )));
    }
    let data = &spec.secret_object.data;
    if data.is_empty() {
        return Err(user(format!(
            "SecretSync {id}: spec.secretObject.data is empty"
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (index, item) in data.iter().enumerate() {
        if !secret_key_ok(&item.target_key) {
            return Err(user(format!(
                "SecretSync {id}: spec.secretObject.data[{index}].targetKey {:?} is not a valid Secret key ([-._a-zA-Z0-9]+, at most 253)",
                crate::text::shorten(&item.target_key, 64)
            )));
        }
        if !seen.insert(item.target_key.as_str()) {
            return Err(user(format!(
                "SecretSync {id}: targetKey {:?} is listed twice in spec.secretObject.data",
                item.target_key
            )));
        }
        if item.source_path.is_empty() || item.source_path.len() > MAX_FIELD {
            return Err(user(format!(
                "SecretSync {id}: spec.secretObject.data[{index}].sourcePath must have 1 to {MAX_FIELD} characters"
            )));
        }
    }
    let object = &spec.secret_object;
    check_keys(
        &id,
        "labels",
        object.labels.as_ref(),
        Reason::InvalidClusterSecretLabelError,
        true,
    )?;
    check_keys(
        &id,
        "annotations",
        object.annotations.as_ref(),
        Reason::InvalidClusterSecretAnnotationError,
        false,
    )?;
    Ok(())
}

fn check_keys(
    id: &str,
    field: &str,
    map: Option<&BTreeMap<String, String>>,
    reserved: Reason,
    values_are_labels: bool,
) -> Result<(), Failure> {
    for (key, value) in map.into_iter().flatten() {
        if key.starts_with(RESERVED_PREFIX) {
            return Err(invalid(
                reserved,
                format!(
                    "SecretSync {id}: spec.secretObject.{field} key {key:?} uses the prefix {RESERVED_PREFIX}, reserved for the controller"
                ),
            ));
        }
        if !qualified_key_ok(key) {
            return Err(user(format!(
                "SecretSync {id}: spec.secretObject.{field} key {:?} is not a valid key",
                crate::text::shorten(key, 64)
            )));
        }
        if values_are_labels && !label_value_ok(value) {
            return Err(user(format!(
                "SecretSync {id}: the value of label {key:?} is not a valid label value (at most 63 of [-._a-zA-Z0-9])"
            )));
        }
    }
    let total: usize = map
        .into_iter()
        .flatten()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    if total > 256 * 1024 {
        return Err(user(format!(
            "SecretSync {id}: spec.secretObject.{field} total more than 256 KiB"
        )));
    }
    Ok(())
}

/// `namespace/name` of a SecretSync, for messages.
pub(crate) fn sync_id(sync: &SecretSync) -> String {
    format!(
        "{}/{}",
        sync.metadata.namespace.as_deref().unwrap_or_default(),
        sync.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The Secret type asked for (`Opaque` when unset).
pub(crate) fn secret_type(sync: &SecretSync) -> &str {
    sync.spec
        .secret_object
        .type_
        .as_deref()
        .filter(|t| !t.is_empty())
        .unwrap_or("Opaque")
}

/// Builds the Secret from the provider's files: each `sourcePath` must be one of them.
pub(crate) fn build(
    sync: &SecretSync,
    class: &str,
    files: &[Payload],
) -> Result<DesiredSecret, Failure> {
    let id = sync_id(sync);
    let object = &sync.spec.secret_object;
    let mut data = BTreeMap::new();
    let mut total = 0;
    for item in &object.data {
        let file = files
            .iter()
            .find(|f| f.path == item.source_path)
            .ok_or_else(|| {
                let present: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
                user(format!(
                    "SecretSync {id}: sourcePath {:?} is not among the files class {class} returns ({})",
                    item.source_path,
                    crate::text::shorten(&present.join(", "), 512)
                ))
            })?;
        total += item.target_key.len() + file.contents.expose().len();
        data.insert(item.target_key.clone(), file.contents.clone());
    }
    if total > MAX_DATA_BYTES {
        return Err(user(format!(
            "SecretSync {id}: the data would take {total} bytes, more than a Secret may hold ({MAX_DATA_BYTES})"
        )));
    }
    let mut labels = object.labels.clone().unwrap_or_default();
    labels.insert(
        SECRET_SYNC_LABEL.to_owned(),
        sync.metadata.name.clone().unwrap_or_default(),
    );
    Ok(DesiredSecret {
        type_: secret_type(sync).to_owned(),
        data,
        labels,
        annotations: object.annotations.clone().unwrap_or_default(),
    })
}

#[cfg(test)]
#[path = "desired_tests.rs"]
mod tests;

//! `extract`: an object whose content is a JSON object becomes one file per top-level key.
//! A string value is written as its text, anything else as its JSON form (nested objects and
//! arrays as JSON text, `5432`, `true`, `null`). A Vault object without `secretKey` is the
//! whole API response (as upstream writes it); its secret's data is what is extracted: KV v1
//! `data`, KV v2 `data.data`.

use super::TransformError;
use crate::fs::atomic_writer::Payload;
use crate::redact::Redacted;

/// Replaces each named object's file by the files of its keys, in the object's mode.
pub(super) fn extract(
    class: &str,
    objects: &[String],
    mut files: Vec<Payload>,
) -> Result<Vec<Payload>, TransformError> {
    for object in objects {
        let index = files
            .iter()
            .position(|f| f.path == *object)
            .ok_or_else(|| TransformError::ExtractMissing {
                class: class.to_owned(),
                object: object.clone(),
            })?;
        let file = files.remove(index);
        let not_object = |reason: String| TransformError::ExtractNotObject {
            class: class.to_owned(),
            object: object.clone(),
            reason,
        };
        let value: serde_json::Value = serde_json::from_slice(file.contents.expose())
            .map_err(|e| not_object(crate::redact::describe_json_error(&e)))?;
        let value = vault_data(value);
        let serde_json::Value::Object(map) = value else {
            let kind = match value {
                serde_json::Value::Array(_) => "an array",
                serde_json::Value::String(_) => "a string",
                serde_json::Value::Number(_) => "a number",
                serde_json::Value::Bool(_) => "a boolean",
                _ => "null",
            };
            return Err(not_object(format!("it is {kind}")));
        };
        for (key, value) in map {
            let contents = match value {
                serde_json::Value::String(text) => text.into_bytes(),
                other => other.to_string().into_bytes(),
            };
            files.push(Payload {
                path: key,
                mode: file.mode,
                contents: Redacted::new(contents),
            });
        }
    }
    Ok(files)
}

/// The secret data of a Vault API response (`lease_id` and an object `data` at the top; KV
/// v2's `data` holding `data` and `metadata`), else the value itself.
fn vault_data(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    let Value::Object(mut top) = value else {
        return value;
    };
    if !(top.contains_key("lease_id") && top.get("data").is_some_and(Value::is_object)) {
        return Value::Object(top);
    }
    let Some(Value::Object(mut data)) = top.remove("data") else {
        unreachable!("checked above")
    };
    if data.len() == 2
        && data.get("metadata").is_some_and(Value::is_object)
        && data.get("data").is_some_and(Value::is_object)
    {
        return data.remove("data").expect("checked above");
    }
    Value::Object(data)
}

//! From values to files: each object's file (alias or translated name, its mode, the value's
//! bytes), the `jmesPath` files extracted from a JSON value, and one version per file (the
//! AWS version id, so an unchanged secret keeps its version across rotations).

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt as _;
use tonic::Code;

use super::error::AwsError;
use super::params::{AwsObject, Target};
use crate::fs::atomic_writer::Payload;
use crate::provider::{MountOutput, ObjectVersion};
use crate::redact::Redacted;

/// What one request turned into.
pub(crate) type Outcome = Result<Arc<Value>, AwsError>;

/// Runs `calls` (each answering some requests by index) `concurrency` at a time and returns one
/// outcome per request, in request order.
pub(crate) async fn gather<F>(calls: Vec<F>, requests: usize, concurrency: usize) -> Vec<Outcome>
where
    F: Future<Output = Vec<(usize, Outcome)>>,
{
    let mut outcomes: Vec<Option<Outcome>> = (0..requests).map(|_| None).collect();
    let mut results = futures::stream::iter(calls).buffer_unordered(concurrency.max(1));
    while let Some(done) = results.next().await {
        for (i, outcome) in done {
            outcomes[i] = Some(outcome);
        }
    }
    outcomes
        .into_iter()
        .map(|o| o.expect("every request has an outcome"))
        .collect()
}

/// One read: what to read and which object asked (for messages).
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub target: Target,
    pub object: String,
}

/// One value read from AWS.
#[derive(Debug)]
pub(crate) struct Value {
    pub bytes: Redacted<Vec<u8>>,
    /// Secrets Manager `VersionId` or the SSM parameter version number.
    pub version: String,
}

/// Adds the files of `object` read as `value` to `out`.
pub(crate) fn add_files(
    object: &AwsObject,
    value: &Value,
    out: &mut MountOutput,
) -> Result<(), AwsError> {
    out.files.push(Payload {
        path: object.file_name.clone(),
        mode: object.mode,
        contents: value.bytes.clone(),
    });
    out.versions.push(ObjectVersion {
        id: object.file_name.clone(),
        version: value.version.clone(),
    });
    if object.jmes.is_empty() {
        return Ok(());
    }
    let label = format!("{} ({})", object.at, object.primary.name);
    let fail = |path: &str, code: Code, reason: String| AwsError::JmesPath {
        object: label.clone(),
        path: path.to_owned(),
        code,
        reason,
    };
    let json: serde_json::Value = serde_json::from_slice(value.bytes.expose()).map_err(|_| {
        fail(
            &object.jmes[0].path,
            Code::InvalidArgument,
            "the value is not JSON, so jmesPath cannot be applied".into(),
        )
    })?;
    for entry in &object.jmes {
        let found = entry.expression.search(&json).map_err(|e| {
            fail(
                &entry.path,
                Code::InvalidArgument,
                format!("evaluation failed at offset {}", e.offset),
            )
        })?;
        if found.is_null() {
            return Err(fail(
                &entry.path,
                Code::NotFound,
                "matches nothing in the value".into(),
            ));
        }
        let Some(text) = found.as_string() else {
            return Err(fail(
                &entry.path,
                Code::InvalidArgument,
                format!("selects a {}, but must select a string", found.get_type()),
            ));
        };
        out.files.push(Payload {
            path: entry.file_name.clone(),
            mode: entry.mode,
            contents: Redacted::new(text.as_bytes().to_vec()),
        });
        out.versions.push(ObjectVersion {
            id: entry.file_name.clone(),
            version: value.version.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::ProviderFailure as _;
    use crate::provider::aws::params::parse_objects;

    fn value(text: &str) -> Value {
        Value {
            bytes: Redacted::new(text.as_bytes().to_vec()),
            version: "v1".into(),
        }
    }

    #[test]
    fn jmes_paths_extract_strings_into_their_own_files() {
        let objects = parse_objects(
            "- objectName: db\n  objectType: secretsmanager\n  jmesPath:\n    - {path: user, objectAlias: user}\n    - {path: 'hosts[1].name', objectAlias: host, filePermission: '0600'}\n    - {path: nested.deep.key, objectAlias: key}\n",
            Some('_'),
            false,
            0o644,
        )
        .unwrap();
        let mut out = MountOutput::default();
        let v = value(
            r#"{"user":"admin","hosts":[{"name":"a"},{"name":"b"}],"nested":{"deep":{"key":"k1"}}}"#,
        );
        add_files(&objects[0], &v, &mut out).unwrap();
        let names: Vec<_> = out
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.mode))
            .collect();
        assert_eq!(
            names,
            [
                ("db", 0o644),
                ("user", 0o644),
                ("host", 0o600),
                ("key", 0o644)
            ]
        );
        assert_eq!(out.files[2].contents.expose(), b"b");
        assert!(out.versions.iter().all(|v| v.version == "v1"));
    }

    #[test]
    fn jmes_failures_are_named_and_coded() {
        let objects = parse_objects(
            "- {objectName: db, objectType: secretsmanager, jmesPath: [{path: missing.key, objectAlias: x}]}\n- {objectName: n, objectType: secretsmanager, jmesPath: [{path: n, objectAlias: y}]}",
            Some('_'),
            false,
            0o644,
        )
        .unwrap();
        let err = add_files(
            &objects[0],
            &value(r#"{"user":"top-secret-value"}"#),
            &mut MountOutput::default(),
        )
        .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        let msg = err.to_string();
        assert!(
            msg.contains("missing.key") && msg.contains("objects[0] (db)"),
            "{msg}"
        );
        assert!(!msg.contains("top-secret-value"));
        let err = add_files(
            &objects[1],
            &value(r#"{"n": 5}"#),
            &mut MountOutput::default(),
        )
        .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.to_string().contains("number"), "{err}");
        let err = add_files(
            &objects[1],
            &value("not json at all"),
            &mut MountOutput::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("not JSON"), "{err}");
        assert!(!err.to_string().contains("not json at all"));
    }
}

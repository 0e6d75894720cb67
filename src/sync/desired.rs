//! What a class's `secretObjects` ask for, built from the files just mounted: one
//! [`DesiredSecret`] per entry, validated and named in every error.

use std::collections::BTreeMap;

use crate::class::crd::SecretObject;
use crate::names::{self, NameError};
use crate::redact::Redacted;

use super::tls;
use crate::parse::trimmed;

/// Label every Secret keymount writes carries; a Secret without it is never touched.
pub(crate) const MANAGED_LABEL: &str = "secrets-store.csi.k8s.io/managed";

/// The Secret type for TLS key pairs.
pub(crate) const TLS_TYPE: &str = "kubernetes.io/tls";

/// One Secret as the class describes it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DesiredSecret {
    pub(crate) name: String,
    pub(crate) type_: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) annotations: BTreeMap<String, String>,
    pub(crate) data: Redacted<BTreeMap<String, Vec<u8>>>,
}

/// Why a `secretObjects` entry cannot be built. Names the class, the entry and the field.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("SecretProviderClass {class}: secretObjects[{index}].{field} is empty")]
    MissingField {
        class: String,
        index: usize,
        field: String,
    },
    #[error("SecretProviderClass {class}: {source}")]
    InvalidName {
        class: String,
        #[source]
        source: NameError,
    },
    #[error(
        "SecretProviderClass {class}: Secret {secret} key {key:?}: object {object:?} is not among the mounted files"
    )]
    MissingObject {
        class: String,
        secret: String,
        key: String,
        object: String,
    },
    #[error(
        "SecretProviderClass {class}: Secret {secret} key {key:?} from object {object:?}: {source}"
    )]
    Tls {
        class: String,
        secret: String,
        key: String,
        object: String,
        #[source]
        source: tls::TlsError,
    },
}

/// Builds every Secret of `objects`; `file` gives a mounted file's bytes by its relative path.
pub(crate) fn build(
    class: &str,
    objects: &[SecretObject],
    file: super::FileLookup<'_>,
) -> Result<Vec<DesiredSecret>, BuildError> {
    objects
        .iter()
        .enumerate()
        .map(|(index, object)| build_one(class, index, object, file))
        .collect()
}

fn build_one(
    class: &str,
    index: usize,
    object: &SecretObject,
    file: super::FileLookup<'_>,
) -> Result<DesiredSecret, BuildError> {
    let missing = |field: &str| BuildError::MissingField {
        class: class.to_owned(),
        index,
        field: field.to_owned(),
    };
    let name = trimmed(object.secret_name.as_deref()).ok_or_else(|| missing("secretName"))?;
    // The name goes into the path of the GET and the apply: only a valid name may.
    names::subdomain(&format!("secretObjects[{index}].secretName"), &name).map_err(|source| {
        BuildError::InvalidName {
            class: class.to_owned(),
            source,
        }
    })?;
    let type_ = trimmed(object.type_.as_deref()).ok_or_else(|| missing("type"))?;
    let entries = object
        .data
        .as_deref()
        .filter(|d| !d.is_empty())
        .ok_or_else(|| missing("data"))?;
    let mut data = BTreeMap::new();
    for (i, entry) in entries.iter().enumerate() {
        let object_name = trimmed(entry.object_name.as_deref())
            .ok_or_else(|| missing(&format!("data[{i}].objectName")))?;
        let key =
            trimmed(entry.key.as_deref()).ok_or_else(|| missing(&format!("data[{i}].key")))?;
        let bytes = file(&object_name).ok_or_else(|| BuildError::MissingObject {
            class: class.to_owned(),
            secret: name.clone(),
            key: key.clone(),
            object: object_name.clone(),
        })?;
        let value = if type_ == TLS_TYPE {
            tls::part(&key, &bytes).map_err(|source| BuildError::Tls {
                class: class.to_owned(),
                secret: name.clone(),
                key: key.clone(),
                object: object_name.clone(),
                source,
            })?
        } else {
            bytes
        };
        data.insert(key, value);
    }
    let mut labels = object.labels.clone().unwrap_or_default();
    labels.insert(MANAGED_LABEL.to_owned(), "true".to_owned());
    Ok(DesiredSecret {
        name,
        type_,
        labels,
        annotations: object.annotations.clone().unwrap_or_default(),
        data: Redacted::new(data),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::class::crd::SecretObjectData;

    fn object(name: &str, type_: &str, data: &[(&str, &str)]) -> SecretObject {
        SecretObject {
            secret_name: Some(name.into()),
            type_: Some(type_.into()),
            labels: Some([("app".to_string(), "web".to_string())].into()),
            annotations: Some([("note".to_string(), "x".to_string())].into()),
            data: Some(
                data.iter()
                    .map(|(o, k)| SecretObjectData {
                        object_name: Some(o.to_string()),
                        key: Some(k.to_string()),
                    })
                    .collect(),
            ),
        }
    }

    fn files(name: &str) -> Option<Vec<u8>> {
        match name {
            "pw" => Some(b"hunter2".to_vec()),
            "nested/user" => Some(b"admin".to_vec()),
            _ => None,
        }
    }

    #[test]
    fn builds_data_labels_and_annotations() {
        let built = build(
            "ns/c",
            &[object(
                "db",
                "Opaque",
                &[("pw", "password"), ("nested/user", "username")],
            )],
            &files,
        )
        .unwrap();
        let s = &built[0];
        assert_eq!((s.name.as_str(), s.type_.as_str()), ("db", "Opaque"));
        assert_eq!(
            s.labels.get(MANAGED_LABEL).map(String::as_str),
            Some("true")
        );
        assert_eq!(s.labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(s.annotations.get("note").map(String::as_str), Some("x"));
        assert_eq!(s.data.expose()["password"], b"hunter2");
        assert_eq!(s.data.expose()["username"], b"admin");
    }

    #[test]
    fn secret_names_that_are_not_dns_subdomains_are_refused_before_any_secret_is_built() {
        let long = "a".repeat(254);
        for bad in [
            "../kube-system/x",
            "db?dryRun=All",
            "a/b",
            "DB",
            "..",
            long.as_str(),
        ] {
            let good = object("fine", "Opaque", &[("pw", "password")]);
            let e = build(
                "ns/c",
                &[good, object(bad, "Opaque", &[("pw", "password")])],
                &files,
            )
            .unwrap_err();
            assert!(matches!(e, BuildError::InvalidName { .. }), "{bad}: {e}");
            assert!(
                e.to_string()
                    .starts_with("SecretProviderClass ns/c: secretObjects[1].secretName "),
                "{e}"
            );
        }
    }

    #[test]
    fn errors_name_class_entry_and_object_but_no_value() {
        let mut bad = object("db", "Opaque", &[("pw", "password")]);
        bad.type_ = Some(" ".into());
        let e = build("ns/c", &[bad], &files).unwrap_err().to_string();
        assert_eq!(
            e,
            "SecretProviderClass ns/c: secretObjects[0].type is empty"
        );

        let e = build("ns/c", &[object("db", "Opaque", &[("nope", "k")])], &files)
            .unwrap_err()
            .to_string();
        assert!(e.contains("Secret db key \"k\": object \"nope\""), "{e}");

        let e = build(
            "ns/c",
            &[object("t", TLS_TYPE, &[("pw", "tls.crt")])],
            &files,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("Secret t key \"tls.crt\" from object \"pw\": not PEM"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
    }
}

//! Kubernetes object names as the API server defines them (RFC 1123 DNS subdomains for object
//! names, RFC 1123 DNS labels for namespaces), checked wherever a tenant's name is parsed so
//! that nothing but a valid name ever goes into the path of an API request made with
//! keymount's own token (a name like `../x` or `a?b` would otherwise change the request).
//! Also the name keymount itself writes under.

/// Field manager of every object keymount writes with server-side apply (pod status objects,
/// synced Secrets): one manager, so keymount's writes never conflict with each other.
pub(crate) const FIELD_MANAGER: &str = "keymount";

/// Longest object name (RFC 1123 subdomain).
pub(crate) const MAX_SUBDOMAIN: usize = 253;
/// Longest namespace (RFC 1123 label).
pub(crate) const MAX_LABEL: usize = 63;

/// A name that is not what the API server accepts. Names the field; shows the value quoted
/// and cut short (names are not secret, but they are tenant input of any length).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {value:?} is not a valid {kind}: {reason}")]
pub struct NameError {
    /// The attribute or field the name came from (e.g. `secretProviderClass`).
    pub(crate) field: String,
    value: String,
    kind: &'static str,
    reason: String,
}

fn error(field: &str, value: &str, kind: &'static str, reason: impl Into<String>) -> NameError {
    NameError {
        field: field.to_owned(),
        value: crate::text::shorten(value, 64),
        kind,
        reason: reason.into(),
    }
}

/// Checks one RFC 1123 label: lowercase alphanumerics and '-', starting and ending with an
/// alphanumeric, at most 63 characters.
fn label_reason(label: &str) -> Option<String> {
    if label.is_empty() {
        return Some("empty label".into());
    }
    if label.len() > MAX_LABEL {
        return Some(format!("a label is longer than {MAX_LABEL} characters"));
    }
    if let Some(bad) = label
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Some(format!(
            "{bad:?} is not allowed (lowercase letters, digits, '-' and '.' only)"
        ));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Some("must start and end with a letter or digit".into());
    }
    None
}

/// An object name (SecretProviderClass, Pod, Secret, ServiceAccount): an RFC 1123 subdomain.
pub(crate) fn subdomain(field: &str, value: &str) -> Result<(), NameError> {
    const KIND: &str = "Kubernetes object name (RFC 1123 subdomain)";
    if value.is_empty() {
        return Err(error(field, value, KIND, "empty"));
    }
    if value.len() > MAX_SUBDOMAIN {
        return Err(error(
            field,
            value,
            KIND,
            format!("longer than {MAX_SUBDOMAIN} characters"),
        ));
    }
    match value.split('.').find_map(label_reason) {
        Some(reason) => Err(error(field, value, KIND, reason)),
        None => Ok(()),
    }
}

/// A namespace: an RFC 1123 label.
pub(crate) fn label(field: &str, value: &str) -> Result<(), NameError> {
    const KIND: &str = "Kubernetes namespace (RFC 1123 label)";
    if value.contains('.') {
        return Err(error(field, value, KIND, "'.' is not allowed"));
    }
    match label_reason(value) {
        Some(reason) => Err(error(field, value, KIND, reason)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names_pass() {
        for name in ["db", "a", "my-class.v2", "0abc", "x-1.y-2.z"] {
            subdomain("secretProviderClass", name).unwrap();
        }
        let long_ok = format!("{}.{}.{}", "a".repeat(63), "b".repeat(63), "c".repeat(63));
        subdomain("n", &long_ok).unwrap();
        for ns in [
            "default".to_owned(),
            "kube-system".into(),
            "a".into(),
            "n".repeat(63),
        ] {
            label("namespace", &ns).unwrap();
        }
    }

    #[test]
    fn names_that_would_change_a_request_path_are_refused() {
        for bad in [
            "../x", "..", ".", "a/b", "a?b", "a#b", "a%2Fb", "A", "Db", "a b", "", "-a", "a-",
            "a..b", ".a", "a.", "é", "a\nb", "a_b", "a:b",
        ] {
            let e = subdomain("secretProviderClass", bad).unwrap_err();
            assert_eq!(e.field, "secretProviderClass");
            assert!(
                e.to_string().starts_with("secretProviderClass "),
                "{bad:?}: {e}"
            );
        }
        assert!(subdomain("n", &"a".repeat(254)).is_err());
        assert!(subdomain("n", &"a".repeat(64)).is_err(), "a label over 63");
        for bad in [
            "a.b".to_owned(),
            "A".into(),
            "../x".into(),
            "".into(),
            "n".repeat(64),
            "ns?x".into(),
            "-ns".into(),
        ] {
            assert!(label("namespace", &bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_message_names_field_and_cuts_the_value() {
        let e = subdomain("secretObjects[0].secretName", &"X".repeat(1000)).unwrap_err();
        let shown = e.to_string();
        assert!(
            shown.starts_with("secretObjects[0].secretName \"XXXX"),
            "{shown}"
        );
        assert!(shown.len() < 300, "{}", shown.len());
    }
}

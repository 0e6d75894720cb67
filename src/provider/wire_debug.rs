//! `Debug` of the provider API's `MountRequest`, written by hand (build.rs turns the generated
//! one off): its `attributes` JSON carries the pod's ServiceAccount tokens and its `secrets`
//! JSON the nodePublishSecretRef data, so both are shown by size only.

use std::fmt;

use crate::proto::provider::MountRequest;

/// A string shown by its length only.
struct Hidden(usize);

impl fmt::Debug for Hidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[redacted: {} bytes]", self.0)
    }
}

impl fmt::Debug for MountRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MountRequest")
            .field("attributes", &Hidden(self.attributes.len()))
            .field("secrets", &Hidden(self.secrets.len()))
            .field("target_path", &self.target_path)
            .field("permission", &self.permission)
            .field("current_object_version", &self.current_object_version)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_neither_tokens_nor_secrets() {
        let request = MountRequest {
            attributes:
                r#"{"csi.storage.k8s.io/serviceAccount.tokens":"{\"v\":{\"token\":\"eyJtoken\"}}"}"#
                    .into(),
            secrets: r#"{"password":"publish-secret-value"}"#.into(),
            target_path: "/t".into(),
            permission: "420".into(),
            current_object_version: Vec::new(),
        };
        let shown = format!("{request:?}");
        assert!(
            !shown.contains("eyJ") && !shown.contains("publish-secret-value"),
            "{shown}"
        );
        assert!(
            shown.contains("[redacted: ") && shown.contains("\"/t\""),
            "{shown}"
        );
    }
}

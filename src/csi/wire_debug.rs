//! `Debug` of the CSI requests that carry secrets (`secrets`: nodePublishSecretRef data) and
//! tokens (the volume context's `csi.storage.k8s.io/serviceAccount.tokens`), written by hand
//! so that formatting one never shows them (build.rs turns the generated `Debug` off).

use std::collections::HashMap;
use std::fmt;

use crate::proto::csi::{NodePublishVolumeRequest, NodeStageVolumeRequest};
use crate::volume::context::RedactedContext;

/// A map shown as its keys only.
struct KeysOnly<'a>(&'a HashMap<String, String>);

impl fmt::Debug for KeysOnly<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<&String> = self.0.keys().collect();
        keys.sort();
        f.debug_map()
            .entries(keys.into_iter().map(|k| (k, "[redacted]")))
            .finish()
    }
}

impl fmt::Debug for NodePublishVolumeRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodePublishVolumeRequest")
            .field("volume_id", &self.volume_id)
            .field("publish_context", &RedactedContext(&self.publish_context))
            .field("staging_target_path", &self.staging_target_path)
            .field("target_path", &self.target_path)
            .field("volume_capability", &self.volume_capability)
            .field("readonly", &self.readonly)
            .field("secrets", &KeysOnly(&self.secrets))
            .field("volume_context", &RedactedContext(&self.volume_context))
            .finish()
    }
}

impl fmt::Debug for NodeStageVolumeRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeStageVolumeRequest")
            .field("volume_id", &self.volume_id)
            .field("publish_context", &RedactedContext(&self.publish_context))
            .field("staging_target_path", &self.staging_target_path)
            .field("volume_capability", &self.volume_capability)
            .field("secrets", &KeysOnly(&self.secrets))
            .field("volume_context", &RedactedContext(&self.volume_context))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::tokens::TOKENS_KEY;

    #[test]
    fn debug_of_the_wire_requests_shows_no_token_or_secret() {
        let token = "eyJhbGciOiJSUzI1NiJ9.dG9rZW4tdmFsdWU.sig";
        let context: HashMap<String, String> = [
            ("secretProviderClass".to_string(), "db".to_string()),
            (
                TOKENS_KEY.to_string(),
                format!(r#"{{"v":{{"token":"{token}"}}}}"#),
            ),
        ]
        .into();
        let secrets: HashMap<String, String> = [(
            "clientSecret".to_string(),
            "publish-secret-value".to_string(),
        )]
        .into();
        let publish = NodePublishVolumeRequest {
            volume_id: "vol-1".into(),
            volume_context: context.clone(),
            secrets: secrets.clone(),
            ..Default::default()
        };
        let stage = NodeStageVolumeRequest {
            volume_context: context,
            secrets,
            ..Default::default()
        };
        for shown in [
            format!("{publish:?}"),
            format!("{publish:#?}"),
            format!("{stage:?}"),
        ] {
            assert!(!shown.contains("eyJ") && !shown.contains("dG9r"), "{shown}");
            assert!(!shown.contains("publish-secret-value"), "{shown}");
            assert!(
                shown.contains("clientSecret") && shown.contains("\"db\""),
                "{shown}"
            );
        }
    }
}

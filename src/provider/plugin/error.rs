//! `PluginError`: why a call to an external plugin failed. The plugin's own texts (a status
//! message, a mount error code) go into the message and nowhere else: the code comes from
//! gRPC's closed set and the metrics kind from keymount's.

use std::path::PathBuf;

use tonic::Code;

use super::API_VERSION;
use crate::provider::{ErrorKind, ProviderFailure};

/// One failure of an external plugin.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PluginError {
    #[error("provider {name:?} ({}) {call} failed: {message}", .socket.display())]
    Call {
        name: String,
        socket: PathBuf,
        call: &'static str,
        code: Code,
        message: String,
    },
    #[error(
        "provider {name:?} ({}) {call} failed: {message} (the answer is over the limit of \
         {limit} bytes: raise --max-call-recv-msg-size if the secrets are this large)",
        .socket.display()
    )]
    TooLarge {
        name: String,
        socket: PathBuf,
        call: &'static str,
        message: String,
        limit: usize,
    },
    #[error("provider {name:?} speaks API {version:?}, keymount speaks {API_VERSION}")]
    Version { name: String, version: String },
    #[error("encode request: {0}")]
    Encode(#[source] serde_json::Error),
    /// The plugin answered with an error code (its own text, shortened).
    #[error("provider {name:?} failed to mount: {code}")]
    Mount { name: String, code: String },
    #[error("provider {name:?} returned no object versions")]
    NoVersions { name: String },
}

impl PluginError {
    /// A mount error the plugin reported with `code`, shown cut to 100 characters without
    /// control characters.
    pub(crate) fn mount(name: &str, code: &str) -> Self {
        Self::Mount {
            name: name.to_owned(),
            code: crate::text::one_line(code, 100),
        }
    }
}

impl ProviderFailure for PluginError {
    fn code(&self) -> Code {
        match self {
            Self::Call { code, .. } => *code,
            Self::TooLarge { .. } => Code::ResourceExhausted,
            Self::Version { .. } => Code::FailedPrecondition,
            Self::Encode(_) | Self::Mount { .. } | Self::NoVersions { .. } => Code::Internal,
        }
    }

    fn kind(&self) -> ErrorKind {
        match self {
            Self::Call { .. } | Self::Mount { .. } => ErrorKind::PluginCall,
            Self::TooLarge { .. } => ErrorKind::PluginTooLarge,
            Self::Version { .. } => ErrorKind::PluginVersion,
            Self::Encode(_) | Self::NoVersions { .. } => ErrorKind::PluginProtocol,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::ProviderError;

    #[test]
    fn a_plugin_error_code_never_becomes_a_label() {
        let labels: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.label()).collect();
        for code in [
            "PluginCode-1234",
            "VaultSecretNotFound",
            "a\nmulti-line\tcode",
            &"x".repeat(500),
        ] {
            let error = ProviderError::from(PluginError::mount("fake", code));
            assert_eq!(error.reason(), "GRPCProviderError", "{code:?}");
            assert_eq!(error.kind(), ErrorKind::PluginCall);
            assert_eq!(error.code(), Code::Internal);
            assert!(labels.contains(&error.reason()));
            let message = error.to_string();
            assert!(message.starts_with("provider \"fake\" failed to mount: "));
            assert!(
                !message.contains('\n') && message.chars().count() < 150,
                "{message}"
            );
        }
        let shown = ProviderError::from(PluginError::mount("fake", "PluginCode-1234"));
        assert!(shown.to_string().ends_with("PluginCode-1234"), "{shown}");
    }

    #[test]
    fn a_plugin_status_keeps_its_code_and_message() {
        let error = ProviderError::from(PluginError::Call {
            name: "fake".into(),
            socket: "/run/p/fake.sock".into(),
            call: "Mount",
            code: Code::PermissionDenied,
            message: "PermissionDeniedByPlugin".into(),
        });
        assert_eq!(error.code(), Code::PermissionDenied);
        assert_eq!(error.reason(), "GRPCProviderError");
        assert_eq!(
            error.to_string(),
            "provider \"fake\" (/run/p/fake.sock) Mount failed: PermissionDeniedByPlugin"
        );
    }
}

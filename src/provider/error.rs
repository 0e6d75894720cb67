//! [`ProviderError`]: a provider's own typed error, kept whole as the source, with what keymount
//! needs from it: the gRPC code kubelet retries by, and the [`ErrorKind`] a metric label is
//! made of.

use std::error::Error;

/// Why a provider failed, in keymount's words: a closed set, and the only thing the metrics
/// `error_type` label of a provider failure is made from. A plugin's error code, a store's
/// message or a class's text never becomes a label value (each distinct value would be a new
/// metric series).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A class parameter is malformed or not allowed.
    InvalidParameter,
    /// kubelet sent no ServiceAccount token for the provider's audience.
    MissingToken,
    /// The TLS settings of a store cannot be used.
    TlsConfiguration,
    /// A fetched value is not in the encoding the class names.
    DecodeFailed,
    /// Vault refused the pod's login, or answered it without a token.
    VaultLogin,
    /// Vault refused a read.
    VaultPermissionDenied,
    /// A Vault path, or a key in it, does not exist.
    VaultNotFound,
    /// Vault rejected a request or answered unexpectedly.
    VaultRequest,
    /// Vault could not be reached or answered 5xx.
    VaultUnavailable,
    /// A Vault answer was over the size limit.
    VaultTooLarge,
    /// No AWS region from the class, the flags or the node.
    NoRegion,
    /// kubelet sent no pod information (`podInfoOnMount`).
    MissingPodInfo,
    /// No IAM role for the pod's ServiceAccount.
    MissingIamRole,
    /// Reading a ServiceAccount or the node from the API server failed.
    KubernetesLookup,
    /// No AWS credentials for the pod's identity (STS or the Pod Identity agent).
    AwsCredentials,
    /// An AWS secret or parameter does not exist.
    AwsNotFound,
    /// AWS refused a read.
    AwsPermissionDenied,
    /// AWS could not be reached, throttled or answered 5xx after retries.
    AwsUnavailable,
    /// Any other failure of an AWS call.
    AwsRequest,
    /// A `jmesPath` entry did not select a string.
    JmesPath,
    /// A call to an external plugin failed, or the plugin reported a mount error.
    PluginCall,
    /// A plugin's answer was over the size limit.
    PluginTooLarge,
    /// A plugin speaks another API version.
    PluginVersion,
    /// A request to a plugin could not be encoded, or its answer is unusable.
    PluginProtocol,
}

impl ErrorKind {
    /// Every kind, for checks that the label set is closed.
    #[cfg(test)]
    pub(crate) const ALL: [ErrorKind; 24] = [
        Self::InvalidParameter,
        Self::MissingToken,
        Self::TlsConfiguration,
        Self::DecodeFailed,
        Self::VaultLogin,
        Self::VaultPermissionDenied,
        Self::VaultNotFound,
        Self::VaultRequest,
        Self::VaultUnavailable,
        Self::VaultTooLarge,
        Self::NoRegion,
        Self::MissingPodInfo,
        Self::MissingIamRole,
        Self::KubernetesLookup,
        Self::AwsCredentials,
        Self::AwsNotFound,
        Self::AwsPermissionDenied,
        Self::AwsUnavailable,
        Self::AwsRequest,
        Self::JmesPath,
        Self::PluginCall,
        Self::PluginTooLarge,
        Self::PluginVersion,
        Self::PluginProtocol,
    ];

    /// The metrics `error_type` value (upstream's `GRPCProviderError` for plugin calls).
    pub fn label(self) -> &'static str {
        match self {
            Self::InvalidParameter => "InvalidParameter",
            Self::MissingToken => "MissingServiceAccountToken",
            Self::TlsConfiguration => "TLSConfiguration",
            Self::DecodeFailed => "DecodeFailed",
            Self::VaultLogin => "VaultLoginFailed",
            Self::VaultPermissionDenied => "VaultPermissionDenied",
            Self::VaultNotFound => "VaultSecretNotFound",
            Self::VaultRequest => "VaultRequestFailed",
            Self::VaultUnavailable => "VaultUnavailable",
            Self::VaultTooLarge => "VaultResponseTooLarge",
            Self::NoRegion => "NoRegion",
            Self::MissingPodInfo => "MissingPodInfo",
            Self::MissingIamRole => "MissingIAMRole",
            Self::KubernetesLookup => "KubernetesLookupFailed",
            Self::AwsCredentials => "AWSCredentialsFailed",
            Self::AwsNotFound => "AWSSecretNotFound",
            Self::AwsPermissionDenied => "AWSPermissionDenied",
            Self::AwsUnavailable => "AWSUnavailable",
            Self::AwsRequest => "AWSRequestFailed",
            Self::JmesPath => "JmesPathFailed",
            Self::PluginCall => "GRPCProviderError",
            Self::PluginTooLarge => "ProviderResponseTooLarge",
            Self::PluginVersion => "IncompatibleProviderVersion",
            Self::PluginProtocol => "ProviderError",
        }
    }
}

/// What each provider's error type tells keymount about itself. Its `Display` is the message
/// kubelet and the pod's events show, so it never holds a secret value or a token.
pub(crate) trait ProviderFailure: Error + Send + Sync + 'static {
    /// The gRPC code that fits the failure (kubelet and sidecars retry by code).
    fn code(&self) -> tonic::Code;
    /// The kind the metrics label is made of.
    fn kind(&self) -> ErrorKind;
}

/// A provider failure: the provider's typed error as the source, its code and its kind. Shows
/// the source's message.
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct ProviderError {
    code: tonic::Code,
    kind: ErrorKind,
    #[source]
    source: Box<dyn Error + Send + Sync + 'static>,
}

impl<E: ProviderFailure> From<E> for ProviderError {
    fn from(error: E) -> Self {
        Self {
            code: error.code(),
            kind: error.kind(),
            source: Box::new(error),
        }
    }
}

impl ProviderError {
    /// The gRPC code that fits the failure.
    pub fn code(&self) -> tonic::Code {
        self.code
    }

    /// Why the provider failed, as a closed kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The metrics `error_type` label: the kind's, never text from the failure.
    pub fn reason(&self) -> &'static str {
        self.kind.label()
    }

    /// The provider's own error, if it is a `T`.
    #[cfg(test)]
    pub(crate) fn downcast_ref<T: Error + 'static>(&self) -> Option<&T> {
        self.source.downcast_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("store says {0}")]
    struct StoreError(String);

    impl ProviderFailure for StoreError {
        fn code(&self) -> tonic::Code {
            tonic::Code::NotFound
        }
        fn kind(&self) -> ErrorKind {
            ErrorKind::VaultNotFound
        }
    }

    #[test]
    fn the_typed_error_is_the_source_and_the_message() {
        let error = ProviderError::from(StoreError("no such path".into()));
        assert_eq!(error.to_string(), "store says no such path");
        assert_eq!(error.code(), tonic::Code::NotFound);
        assert_eq!(error.reason(), "VaultSecretNotFound");
        let source = Error::source(&error).unwrap();
        assert_eq!(source.to_string(), "store says no such path");
        assert!(source.downcast_ref::<StoreError>().is_some());
        assert_eq!(
            error.downcast_ref::<StoreError>().unwrap().0,
            "no such path"
        );
    }

    #[test]
    fn labels_are_distinct_constants() {
        let labels: std::collections::BTreeSet<_> =
            ErrorKind::ALL.iter().map(|k| k.label()).collect();
        assert_eq!(labels.len(), ErrorKind::ALL.len());
        for label in labels {
            assert!(
                !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric()),
                "{label}"
            );
        }
    }
}

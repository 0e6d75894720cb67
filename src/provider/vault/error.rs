//! `VaultError`: why a Vault mount failed, with the gRPC code kubelet retries by. Messages
//! name the parameter, object, path, role or mount; never a token or a secret value.

use tonic::Code;

use crate::provider::{ErrorKind, ProviderFailure};

/// One failure of the Vault provider. `Clone` so single-flighted reads can share it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum VaultError {
    #[error("invalid parameter {name}: {reason}")]
    InvalidParameter { name: String, reason: String },
    #[error(
        "no ServiceAccount token for audience {audience:?} in csi.storage.k8s.io/serviceAccount.tokens \
         (present: [{present}]); add `- audience: {audience}` to spec.tokenRequests of the \
         CSIDriver secrets-store.csi.k8s.io (keymount never creates tokens itself)"
    )]
    MissingToken { audience: String, present: String },
    #[error("TLS settings for {address}: {reason}")]
    ConfigureTls { address: String, reason: String },
    #[error(
        "login at {address}/v1/auth/{mount}/login as role {role:?} was denied ({status}): {detail}"
    )]
    LoginDenied {
        address: String,
        mount: String,
        role: String,
        status: u16,
        detail: String,
    },
    #[error("login at {address}/v1/auth/{mount}/login returned no client token")]
    LoginEmpty { address: String, mount: String },
    #[error("{method} {path}: permission denied: {detail}")]
    ReadDenied {
        method: String,
        path: String,
        detail: String,
    },
    #[error("{method} {path}: not found in Vault")]
    ReadNotFound { method: String, path: String },
    #[error("{method} {path}: Vault rejected the request ({status}): {detail}")]
    ReadRejected {
        method: String,
        path: String,
        status: u16,
        detail: String,
    },
    #[error("{target}: Vault is unavailable: {detail}")]
    Unavailable { target: String, detail: String },
    #[error(
        "{target}: the answer is larger than {limit} bytes; reading stopped (raise \
         --max-call-recv-msg-size if the secrets are this large)"
    )]
    ResponseTooLarge { target: String, limit: usize },
    #[error("{method} {path}: unexpected answer ({status}): {detail}")]
    Unexpected {
        method: String,
        path: String,
        status: u16,
        detail: String,
    },
    #[error("object {object}: empty response from {path} (warnings: {warnings})")]
    EmptyResponse {
        object: String,
        path: String,
        warnings: String,
    },
    #[error("object {object}: key {key:?} does not exist at the secret path {path}")]
    MissingKey {
        object: String,
        key: String,
        path: String,
    },
    #[error("object {object}: the value is not valid {encoding}")]
    DecodeValue { object: String, encoding: String },
}

impl ProviderFailure for VaultError {
    fn code(&self) -> Code {
        match self {
            Self::InvalidParameter { .. } | Self::ReadRejected { .. } => Code::InvalidArgument,
            Self::MissingToken { .. } | Self::ConfigureTls { .. } => Code::FailedPrecondition,
            Self::LoginDenied { .. } | Self::ReadDenied { .. } => Code::PermissionDenied,
            Self::ReadNotFound { .. } | Self::MissingKey { .. } => Code::NotFound,
            Self::Unavailable { .. } => Code::Unavailable,
            Self::ResponseTooLarge { .. } => Code::ResourceExhausted,
            Self::LoginEmpty { .. } | Self::Unexpected { .. } => Code::Unknown,
            Self::EmptyResponse { .. } => Code::NotFound,
            Self::DecodeValue { .. } => Code::InvalidArgument,
        }
    }

    fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidParameter { .. } => ErrorKind::InvalidParameter,
            Self::MissingToken { .. } => ErrorKind::MissingToken,
            Self::ConfigureTls { .. } => ErrorKind::TlsConfiguration,
            Self::LoginDenied { .. } | Self::LoginEmpty { .. } => ErrorKind::VaultLogin,
            Self::ReadDenied { .. } => ErrorKind::VaultPermissionDenied,
            Self::ReadNotFound { .. } | Self::EmptyResponse { .. } | Self::MissingKey { .. } => {
                ErrorKind::VaultNotFound
            }
            Self::ReadRejected { .. } | Self::Unexpected { .. } => ErrorKind::VaultRequest,
            Self::Unavailable { .. } => ErrorKind::VaultUnavailable,
            Self::ResponseTooLarge { .. } => ErrorKind::VaultTooLarge,
            Self::DecodeValue { .. } => ErrorKind::DecodeFailed,
        }
    }
}

/// Vault's `{"errors": [...]}` list, shortened; Vault's error texts hold no secret values.
/// Any other body is never quoted (it could be a secret, or a proxy's page): only its size.
pub(crate) fn detail_of(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        #[serde(default)]
        errors: Vec<String>,
    }
    let text = match serde_json::from_slice::<Errors>(body) {
        Ok(e) if !e.errors.is_empty() => e.errors.join("; "),
        _ if body.is_empty() => String::new(),
        _ => format!(
            "a body of {} bytes that is not Vault's error list (not shown)",
            body.len()
        ),
    };
    crate::text::detail(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_failure() {
        let denied = VaultError::ReadDenied {
            method: "GET".into(),
            path: "/v1/secret/data/db".into(),
            detail: "permission denied".into(),
        };
        let e = crate::provider::ProviderError::from(denied);
        assert_eq!(e.code(), Code::PermissionDenied);
        assert!(e.to_string().contains("/v1/secret/data/db"));
        let missing = VaultError::MissingToken {
            audience: "vault".into(),
            present: String::new(),
        };
        assert_eq!(missing.code(), Code::FailedPrecondition);
        assert!(missing.to_string().contains("tokenRequests"));
        let down = VaultError::Unavailable {
            target: "http://127.0.0.1:1".into(),
            detail: "connection refused".into(),
        };
        assert_eq!(down.code(), Code::Unavailable);
    }

    #[test]
    fn details_come_from_the_errors_list() {
        assert_eq!(
            detail_of(br#"{"errors":["permission denied"]}"#),
            "permission denied"
        );
        assert_eq!(detail_of(b""), "no details");
        let long = format!(r#"{{"errors":["{}"]}}"#, "e".repeat(1000));
        assert!(detail_of(long.as_bytes()).ends_with('…'));
        let page = detail_of(b"<html>password=hunter2-in-a-proxy-page</html>");
        assert!(!page.contains("hunter2"), "{page}");
        assert!(page.contains("45 bytes"), "{page}");
    }
}

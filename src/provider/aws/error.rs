//! `AwsError`: why an AWS mount failed, with the gRPC code kubelet retries by, and the
//! classification of AWS SDK failures. Messages name the parameter, object, region, role or
//! ServiceAccount; never a token, a credential or a secret value.

use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use tonic::Code;

use crate::provider::{ErrorKind, ProviderFailure};
use crate::text::{detail, error_chain};

/// One failure of the AWS provider. `Clone` so one fetch can answer several objects.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum AwsError {
    #[error("invalid parameter {name}: {reason}")]
    InvalidParameter { name: String, reason: String },
    #[error(
        "no AWS region: set `region` in the SecretProviderClass, --aws-region / AWS_REGION on \
         the node, or the label topology.kubernetes.io/region on node {node:?}"
    )]
    NoRegion { node: String },
    #[error(
        "{field} is not in the volume context; set podInfoOnMount: true on the CSIDriver \
         secrets-store.csi.k8s.io"
    )]
    MissingPodInfo { field: &'static str },
    #[error(
        "no ServiceAccount token for audience {audience:?} in csi.storage.k8s.io/serviceAccount.tokens \
         (present: [{present}]); add `- audience: {audience}` to spec.tokenRequests of the \
         CSIDriver secrets-store.csi.k8s.io (keymount never creates tokens itself)"
    )]
    MissingToken { audience: String, present: String },
    #[error(
        "an IAM role must be associated with ServiceAccount {namespace}/{service_account}: add the \
         annotation `eks.amazonaws.com/role-arn: arn:aws:iam::<account-id>:role/<role-name>` to it \
         (IRSA), or set usePodIdentity: \"true\" in the SecretProviderClass (EKS Pod Identity)"
    )]
    MissingRoleAnnotation {
        namespace: String,
        service_account: String,
    },
    #[error(
        "no IAM role for IRSA: without an API server (local mode) set the SecretProviderClass \
         parameter roleArn: arn:aws:iam::<account-id>:role/<role-name>, or usePodIdentity: \"true\""
    )]
    MissingRoleParameter,
    #[error("ServiceAccount {namespace}/{service_account} not found")]
    ServiceAccountNotFound {
        namespace: String,
        service_account: String,
    },
    #[error("looking up {what}: {detail}")]
    Kubernetes { what: String, detail: String },
    #[error("AssumeRoleWithWebIdentity for {role} in {region}: {failure}")]
    AssumeRole {
        role: String,
        region: String,
        failure: Box<Failure>,
    },
    #[error("EKS Pod Identity agent at {endpoint}: {detail}")]
    PodIdentity {
        endpoint: String,
        code: Code,
        detail: String,
    },
    #[error("{object}: {service} {name:?} in {region}: {failure}")]
    Fetch {
        object: String,
        service: &'static str,
        name: String,
        region: String,
        failure: Box<Failure>,
    },
    #[error("{object}: jmesPath {path:?}: {reason}")]
    JmesPath {
        object: String,
        path: String,
        code: Code,
        reason: String,
    },
}

/// A classified failure of one AWS call: the gRPC code, AWS's error code and its message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{aws_code}: {detail}")]
pub(crate) struct Failure {
    pub code: Code,
    pub(crate) aws_code: String,
    pub(crate) detail: String,
}

impl ProviderFailure for AwsError {
    fn code(&self) -> Code {
        match self {
            Self::InvalidParameter { .. } | Self::MissingPodInfo { .. } => Code::InvalidArgument,
            Self::NoRegion { .. }
            | Self::MissingToken { .. }
            | Self::MissingRoleAnnotation { .. }
            | Self::MissingRoleParameter
            | Self::ServiceAccountNotFound { .. } => Code::FailedPrecondition,
            Self::Kubernetes { .. } => Code::Unavailable,
            Self::AssumeRole { failure, .. } | Self::Fetch { failure, .. } => failure.code,
            Self::PodIdentity { code, .. } | Self::JmesPath { code, .. } => *code,
        }
    }

    fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidParameter { .. } => ErrorKind::InvalidParameter,
            Self::NoRegion { .. } => ErrorKind::NoRegion,
            Self::MissingPodInfo { .. } => ErrorKind::MissingPodInfo,
            Self::MissingToken { .. } => ErrorKind::MissingToken,
            Self::MissingRoleAnnotation { .. }
            | Self::MissingRoleParameter
            | Self::ServiceAccountNotFound { .. } => ErrorKind::MissingIamRole,
            Self::Kubernetes { .. } => ErrorKind::KubernetesLookup,
            Self::AssumeRole { .. } | Self::PodIdentity { .. } => ErrorKind::AwsCredentials,
            Self::Fetch { failure, .. } => match failure.code {
                Code::NotFound => ErrorKind::AwsNotFound,
                Code::PermissionDenied => ErrorKind::AwsPermissionDenied,
                Code::Unavailable => ErrorKind::AwsUnavailable,
                _ => ErrorKind::AwsRequest,
            },
            Self::JmesPath { .. } => ErrorKind::JmesPath,
        }
    }
}

impl AwsError {
    /// True when another region may succeed where this one failed (5xx, throttling after
    /// retries, timeouts, connection failures).
    pub(crate) fn is_unavailable(&self) -> bool {
        self.code() == Code::Unavailable
    }
}

/// The gRPC code of an AWS error code (from a response or a batch entry).
pub(crate) fn code_of(aws_code: &str, status: Option<u16>) -> Code {
    match aws_code {
        "ResourceNotFoundException"
        | "ParameterNotFound"
        | "ParameterVersionNotFound"
        | "ParameterVersionLabelNotFound" => Code::NotFound,
        "AccessDeniedException"
        | "AccessDenied"
        | "UnrecognizedClientException"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "InvalidSignatureException"
        | "IncompleteSignature"
        | "MissingAuthenticationToken"
        | "ExpiredTokenException"
        | "ExpiredToken"
        | "InvalidIdentityToken"
        | "InvalidIdentityTokenException"
        | "NotAuthorized"
        | "RegionDisabledException"
        | "KMSAccessDeniedException" => Code::PermissionDenied,
        "ThrottlingException"
        | "Throttling"
        | "TooManyRequestsException"
        | "RequestLimitExceeded"
        | "ThrottledException"
        | "InternalServiceError"
        | "InternalServerError"
        | "InternalFailure"
        | "ServiceUnavailable"
        | "ServiceUnavailableException"
        | "IDPCommunicationError"
        | "IDPCommunicationErrorException" => Code::Unavailable,
        "ValidationException"
        | "InvalidParameterException"
        | "InvalidParameterValue"
        | "InvalidKeyId"
        | "MalformedPolicyDocument" => Code::InvalidArgument,
        "InvalidRequestException" | "DecryptionFailure" | "KMSDisabledException" => {
            Code::FailedPrecondition
        }
        _ => match status {
            Some(s) if s >= 500 || s == 429 => Code::Unavailable,
            Some(401 | 403) => Code::PermissionDenied,
            Some(404) => Code::NotFound,
            _ => Code::Unknown,
        },
    }
}

/// Classifies any AWS SDK failure. Transport problems and timeouts are `Unavailable`.
pub(crate) fn classify<E>(error: &SdkError<E, HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let transport = |kind: &str| Failure {
        code: Code::Unavailable,
        aws_code: kind.to_owned(),
        detail: detail(&error_chain(error)),
    };
    match error {
        SdkError::ServiceError(service) => {
            let err = service.err();
            let aws_code = err.code().unwrap_or("Unknown").to_owned();
            let status = Some(service.raw().status().as_u16());
            Failure {
                code: code_of(&aws_code, status),
                detail: detail(err.message().unwrap_or("no details")),
                aws_code,
            }
        }
        SdkError::TimeoutError(_) => transport("Timeout"),
        SdkError::DispatchFailure(_) => transport("ConnectionFailed"),
        SdkError::ResponseError(_) => transport("BadResponse"),
        SdkError::ConstructionFailure(_) => Failure {
            code: Code::Internal,
            aws_code: "ConstructionFailure".into(),
            detail: detail(&error_chain(error)),
        },
        _ => Failure {
            code: Code::Unknown,
            aws_code: "Unknown".into(),
            detail: detail(&error_chain(error)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_codes_map_to_grpc_codes() {
        assert_eq!(
            code_of("ResourceNotFoundException", Some(400)),
            Code::NotFound
        );
        assert_eq!(code_of("ParameterNotFound", Some(400)), Code::NotFound);
        assert_eq!(
            code_of("AccessDeniedException", Some(400)),
            Code::PermissionDenied
        );
        assert_eq!(code_of("ThrottlingException", Some(400)), Code::Unavailable);
        assert_eq!(code_of("Whatever", Some(503)), Code::Unavailable);
        assert_eq!(code_of("Whatever", Some(400)), Code::Unknown);
        assert_eq!(
            code_of("ValidationException", Some(400)),
            Code::InvalidArgument
        );
    }

    #[test]
    fn errors_carry_codes_and_name_what_failed() {
        let e = AwsError::Fetch {
            object: "objects[2]".into(),
            service: "secretsmanager",
            name: "prod/db".into(),
            region: "eu-west-1".into(),
            failure: Box::new(Failure {
                code: Code::NotFound,
                aws_code: "ResourceNotFoundException".into(),
                detail: "Secrets Manager can't find the specified secret.".into(),
            }),
        };
        let p = crate::provider::ProviderError::from(e);
        assert_eq!(p.code(), Code::NotFound);
        assert_eq!(p.reason(), "AWSSecretNotFound");
        assert!(p.to_string().contains("prod/db") && p.to_string().contains("eu-west-1"));
        let missing = AwsError::MissingRoleAnnotation {
            namespace: "shop".into(),
            service_account: "web".into(),
        };
        assert_eq!(missing.code(), Code::FailedPrecondition);
        assert!(missing.to_string().contains("eks.amazonaws.com/role-arn"));
        assert!(detail(&"x".repeat(1000)).ends_with('…'));
    }
}

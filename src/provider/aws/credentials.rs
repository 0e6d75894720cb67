//! AWS credentials from the pod's own identity: IRSA (the pod's `sts.amazonaws.com` token in
//! `AssumeRoleWithWebIdentity`) or EKS Pod Identity (the pod's `pods.eks.amazonaws.com` token
//! sent to the Pod Identity agent). Cached per identity until shortly before they expire, with
//! one fetch per identity at a time.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sdk_secretsmanager::config::Credentials;
use serde::Deserialize;
use tonic::Code;

use super::error::{AwsError, classify};
use super::sdk::SdkSettings;
use crate::provider::slots::Slots;
use crate::redact::Redacted;
use crate::text::{detail, error_chain};

/// Pod Identity agent endpoints (as ASCP and the AWS SDKs).
pub(crate) const POD_IDENTITY_IPV4: &str = "http://169.254.170.23/v1/credentials";
pub(crate) const POD_IDENTITY_IPV6: &str = "http://[fd00:ec2::23]/v1/credentials";

/// How long credentials are trusted before they expire.
const EARLY: Duration = Duration::from_secs(300);

/// Where one mount's credentials come from.
#[derive(Debug)]
pub(crate) enum Source<'a> {
    Irsa {
        role_arn: &'a str,
        region: &'a str,
        session_name: String,
        token: &'a Redacted<String>,
    },
    PodIdentity {
        endpoints: Vec<String>,
        token: &'a Redacted<String>,
    },
}

#[derive(Debug)]
struct Cached {
    credentials: Credentials,
    valid_until: SystemTime,
}

/// Credentials per identity. `capacity` 0 fetches for every mount.
#[derive(Debug)]
pub(crate) struct CredentialCache {
    slots: Slots<String, Cached>,
    agent: reqwest::Client,
}

/// When credentials that expire at `expiry` should no longer be used.
fn valid_until(now: SystemTime, expiry: Option<SystemTime>) -> SystemTime {
    match expiry {
        Some(expiry) => {
            let lifetime = expiry.duration_since(now).unwrap_or_default();
            expiry - EARLY.min(lifetime / 10)
        }
        None => now + Duration::from_secs(900),
    }
}

/// An HTTP client for the Pod Identity agent (plain HTTP on a link-local or loopback address).
fn agent_client(timeout: Duration) -> reqwest::Client {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .connect_timeout(timeout)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("keymount/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("HTTP client for the Pod Identity agent")
}

impl CredentialCache {
    /// A cache of at most `capacity` identities; `agent_timeout` bounds Pod Identity calls.
    pub(crate) fn new(capacity: usize, agent_timeout: Duration) -> Self {
        Self {
            slots: Slots::new(capacity),
            agent: agent_client(agent_timeout),
        }
    }

    /// Credentials for `identity` (a key naming the source and the pod's ServiceAccount),
    /// fetched from `source` only when none are cached.
    pub(crate) async fn get(
        &self,
        identity: &str,
        source: &Source<'_>,
        sdk: &SdkSettings,
    ) -> Result<Credentials, AwsError> {
        if self.slots.capacity() == 0 {
            return self.fetch(source, sdk).await;
        }
        let now = SystemTime::now();
        let slot = self
            .slots
            .get_or_create(&identity.to_owned(), |c| c.valid_until > now);
        let mut cached = slot.lock().await;
        if let Some(c) = cached.as_ref()
            && c.valid_until > SystemTime::now()
        {
            return Ok(c.credentials.clone());
        }
        let now = SystemTime::now();
        let credentials = self.fetch(source, sdk).await?;
        *cached = Some(Cached {
            credentials: credentials.clone(),
            valid_until: valid_until(now, credentials.expiry()),
        });
        Ok(credentials)
    }

    /// Number of identities with a slot.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    async fn fetch(&self, source: &Source<'_>, sdk: &SdkSettings) -> Result<Credentials, AwsError> {
        match source {
            Source::Irsa {
                role_arn,
                region,
                session_name,
                token,
            } => assume_role(sdk, role_arn, region, session_name, token).await,
            Source::PodIdentity { endpoints, token } => {
                let mut last = None;
                for endpoint in endpoints {
                    match self.pod_identity(endpoint, token).await {
                        Ok(credentials) => return Ok(credentials),
                        // Auto: an unreachable IPv4 agent is followed by the IPv6 one.
                        Err(e) if e.is_unavailable() => last = Some(e),
                        Err(e) => return Err(e),
                    }
                }
                Err(last.unwrap_or_else(|| AwsError::PodIdentity {
                    endpoint: "(none)".into(),
                    code: Code::Internal,
                    detail: "no endpoint".into(),
                }))
            }
        }
    }

    async fn pod_identity(
        &self,
        endpoint: &str,
        token: &Redacted<String>,
    ) -> Result<Credentials, AwsError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Answer {
            access_key_id: String,
            secret_access_key: String,
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            expiration: Option<String>,
        }
        let failed = |code: Code, detail: String| AwsError::PodIdentity {
            endpoint: endpoint.to_owned(),
            code,
            detail,
        };
        let response = self
            .agent
            .get(endpoint)
            .header(http::header::AUTHORIZATION, token.expose())
            .send()
            .await
            .map_err(|e| {
                failed(
                    Code::Unavailable,
                    format!("cannot reach the agent: {}", detail(&error_chain(&e))),
                )
            })?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| failed(Code::Unavailable, detail(&error_chain(&e))))?;
        if !status.is_success() {
            let code = if status.is_server_error() || status.as_u16() == 429 {
                Code::Unavailable
            } else {
                Code::PermissionDenied
            };
            let text = String::from_utf8_lossy(&body);
            let detail = if text.contains(token.expose().as_str()) {
                "details withheld".to_owned()
            } else {
                detail(&text)
            };
            return Err(failed(code, format!("HTTP {status}: {detail}")));
        }
        let answer: Answer = serde_json::from_slice(&body).map_err(|e| {
            failed(
                Code::Unknown,
                format!(
                    "the answer is not a credentials document ({} error)",
                    category(&e)
                ),
            )
        })?;
        let expiry = answer
            .expiration
            .as_deref()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map(SystemTime::from);
        Ok(Credentials::new(
            answer.access_key_id,
            answer.secret_access_key,
            answer.token,
            expiry,
            "keymount-pod-identity",
        ))
    }
}

/// IRSA: `AssumeRoleWithWebIdentity` (unsigned) with the pod's token.
async fn assume_role(
    sdk: &SdkSettings,
    role_arn: &str,
    region: &str,
    session_name: &str,
    token: &Redacted<String>,
) -> Result<Credentials, AwsError> {
    let client = aws_sdk_sts::Client::from_conf(sdk.sts(region));
    let answer = client
        .assume_role_with_web_identity()
        .role_arn(role_arn)
        .role_session_name(session_name)
        .web_identity_token(token.expose())
        .send()
        .await
        .map_err(|e| AwsError::AssumeRole {
            role: role_arn.to_owned(),
            region: region.to_owned(),
            failure: Box::new(classify(&e)),
        })?;
    let c = answer.credentials().ok_or_else(|| AwsError::AssumeRole {
        role: role_arn.to_owned(),
        region: region.to_owned(),
        failure: Box::new(super::error::Failure {
            code: Code::Unknown,
            aws_code: "NoCredentials".into(),
            detail: "the answer holds no credentials".into(),
        }),
    })?;
    let expiry = SystemTime::try_from(*c.expiration()).ok();
    Ok(Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_owned()),
        expiry,
        "keymount-irsa",
    ))
}

/// A RoleSessionName for the pod's ServiceAccount: `[\w+=,.@-]`, 2 to 64 characters.
pub(crate) fn session_name(namespace: Option<&str>, service_account: Option<&str>) -> String {
    let raw = match (namespace, service_account) {
        (Some(ns), Some(sa)) => format!("keymount-{ns}-{sa}"),
        _ => "keymount".to_owned(),
    };
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect()
}

fn category(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "read",
        serde_json::error::Category::Syntax => "syntax",
        serde_json::error::Category::Data => "shape",
        serde_json::error::Category::Eof => "truncation",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_trusted_until_shortly_before_expiry() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hour = now + Duration::from_secs(3600);
        assert_eq!(
            valid_until(now, Some(hour)),
            hour - Duration::from_secs(300)
        );
        let minute = now + Duration::from_secs(60);
        assert_eq!(
            valid_until(now, Some(minute)),
            minute - Duration::from_secs(6)
        );
        assert_eq!(valid_until(now, None), now + Duration::from_secs(900));
    }

    #[test]
    fn session_names_are_valid_for_sts() {
        assert_eq!(session_name(Some("shop"), Some("web")), "keymount-shop-web");
        assert_eq!(session_name(None, Some("web")), "keymount");
        let long = session_name(Some(&"n".repeat(63)), Some("sa:x"));
        assert_eq!(long.len(), 64);
        assert!(
            long.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c))
        );
    }
}

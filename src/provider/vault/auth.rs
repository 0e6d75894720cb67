//! Logging in with the pod's own ServiceAccount token: `POST /v1/auth/<mount>/login` with
//! `{"jwt", "role"}`, the body both the Kubernetes and the JWT auth methods take. The token
//! is the one kubelet requested for the class's audience; keymount never mints tokens.

use std::time::Duration;

use serde::Deserialize;

use super::client::{VaultHttp, VaultRequest};
use super::error::{VaultError, detail_of};
use super::params::Connection;
use crate::provider::ServiceAccountTokens;
use crate::redact::Redacted;

/// A Vault token and how long Vault lets it live (`None`: no expiry).
#[derive(Debug, Clone)]
pub struct LoginToken {
    pub token: Redacted<String>,
    pub lease: Option<Duration>,
}

/// The pod's token for `audience`, or an error saying how to get kubelet to send it.
pub fn pod_token<'a>(
    tokens: &'a ServiceAccountTokens,
    audience: &str,
) -> Result<&'a Redacted<String>, VaultError> {
    tokens
        .for_audience(audience)
        .map(|t| &t.token)
        .filter(|t| !t.expose().is_empty())
        .ok_or_else(|| VaultError::MissingToken {
            audience: audience.to_owned(),
            present: tokens.audiences().collect::<Vec<_>>().join(", "),
        })
}

/// Who a JWT says it is, read without verification: only used to keep cache entries of
/// different ServiceAccounts apart (Vault verifies the token itself at login).
pub fn token_subject(jwt: &Redacted<String>) -> Option<String> {
    use base64::Engine as _;
    #[derive(Deserialize)]
    struct Claims {
        #[serde(default)]
        iss: Option<String>,
        #[serde(default)]
        sub: Option<String>,
        #[serde(rename = "kubernetes.io", default)]
        kubernetes: Option<KubernetesClaims>,
    }
    #[derive(Deserialize)]
    struct KubernetesClaims {
        #[serde(default)]
        serviceaccount: Option<Named>,
    }
    #[derive(Deserialize)]
    struct Named {
        #[serde(default)]
        uid: Option<String>,
    }
    let payload = jwt.expose().split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Claims = serde_json::from_slice(&bytes).ok()?;
    let uid = claims
        .kubernetes
        .and_then(|k| k.serviceaccount)
        .and_then(|s| s.uid);
    Some(format!(
        "{}|{}|{}",
        claims.iss.unwrap_or_default(),
        claims.sub.unwrap_or_default(),
        uid.unwrap_or_default()
    ))
}

/// Logs in at `auth/<mount>/login` as `role` with the pod's `jwt`.
pub async fn login(
    http: &VaultHttp,
    conn: &Connection,
    mount: &str,
    role: &str,
    jwt: &Redacted<String>,
) -> Result<LoginToken, VaultError> {
    #[derive(Deserialize)]
    struct Answer {
        auth: Option<Auth>,
    }
    #[derive(Deserialize)]
    struct Auth {
        client_token: Redacted<String>,
        #[serde(default)]
        lease_duration: u64,
    }
    let body = serde_json::json!({ "jwt": jwt.expose(), "role": role });
    let path = format!("/v1/auth/{mount}/login");
    let response = http
        .send(
            conn,
            VaultRequest {
                method: reqwest::Method::POST,
                path: &path,
                body: Some(&body),
                token: None,
            },
        )
        .await?;
    let body = response.body.expose();
    match response.status {
        200..=299 => {}
        400 | 401 | 403 => {
            return Err(VaultError::LoginDenied {
                address: conn.address.clone(),
                mount: mount.to_owned(),
                role: role.to_owned(),
                status: response.status,
                detail: detail_of(body),
            });
        }
        status => {
            return Err(VaultError::Unavailable {
                target: format!("login at {}{path}", conn.address),
                detail: format!("HTTP {status}: {}", detail_of(body)),
            });
        }
    }
    let auth = serde_json::from_slice::<Answer>(body)
        .ok()
        .and_then(|a| a.auth)
        .filter(|a| !a.client_token.expose().is_empty())
        .ok_or_else(|| VaultError::LoginEmpty {
            address: conn.address.clone(),
            mount: mount.to_owned(),
        })?;
    Ok(LoginToken {
        token: auth.client_token,
        lease: (auth.lease_duration > 0).then(|| Duration::from_secs(auth.lease_duration)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_audience_says_what_to_add() {
        let tokens = ServiceAccountTokens::parse(r#"{"aws":{"token":"eyJx"}}"#).unwrap();
        let err = pod_token(&tokens, "vault").unwrap_err().to_string();
        assert!(
            err.contains("tokenRequests") && err.contains("audience: vault"),
            "{err}"
        );
        assert!(
            err.contains("present: [aws]") && !err.contains("eyJx"),
            "{err}"
        );
    }

    #[test]
    fn subject_separates_service_accounts() {
        use base64::Engine as _;
        let jwt = |claims: &str| {
            let b = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims);
            Redacted::new(format!("eyJhbGciOiJSUzI1NiJ9.{b}.sig"))
        };
        let a = token_subject(&jwt(
            r#"{"iss":"k","sub":"system:serviceaccount:a:web","kubernetes.io":{"serviceaccount":{"name":"web","uid":"u1"}}}"#,
        ));
        let b = token_subject(&jwt(r#"{"iss":"k","sub":"system:serviceaccount:b:web"}"#));
        assert_eq!(a.as_deref(), Some("k|system:serviceaccount:a:web|u1"));
        assert_ne!(a, b);
        assert_eq!(token_subject(&Redacted::new("opaque".into())), None);
    }
}

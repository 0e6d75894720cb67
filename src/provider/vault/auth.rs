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
pub(crate) struct LoginToken {
    pub token: Redacted<String>,
    pub lease: Option<Duration>,
}

/// The pod's token for `audience`, or an error saying how to get kubelet to send it.
pub(crate) fn pod_token<'a>(
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

/// Logs in at `auth/<mount>/login` as `role` with the pod's `jwt`.
pub(crate) async fn login(
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
}

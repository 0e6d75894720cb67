//! The pod's ServiceAccount tokens that kubelet hands over in
//! `csi.storage.k8s.io/serviceAccount.tokens`: `{"<audience>": {"token", "expirationTimestamp"}}`,
//! and who a token stands for (every provider keys its caches by it).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::version_key::token_digest;
use crate::redact::Redacted;

/// The volume context (or `secrets`) key that carries the tokens.
pub const TOKENS_KEY: &str = "csi.storage.k8s.io/serviceAccount.tokens";

/// One audience's token.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AudienceToken {
    pub token: Redacted<String>,
}

/// All tokens kubelet requested for the pod, plus the raw JSON for external plugins.
#[derive(Debug, Clone, Default)]
pub struct ServiceAccountTokens {
    raw: Option<Redacted<String>>,
    by_audience: BTreeMap<String, AudienceToken>,
}

/// The tokens JSON did not parse. Says where, never what (the text holds tokens).
#[derive(Debug, thiserror::Error)]
#[error("malformed JSON in {TOKENS_KEY}: {category} error at line {line} column {column}")]
pub struct TokensError {
    category: &'static str,
    line: usize,
    column: usize,
}

impl ServiceAccountTokens {
    /// Parses kubelet's JSON. An empty string means no tokens.
    pub fn parse(raw: &str) -> Result<Self, TokensError> {
        if raw.trim().is_empty() {
            return Ok(Self::default());
        }
        let by_audience: BTreeMap<String, AudienceToken> =
            serde_json::from_str(raw).map_err(|e| TokensError {
                category: match e.classify() {
                    serde_json::error::Category::Io => "read",
                    serde_json::error::Category::Syntax => "syntax",
                    serde_json::error::Category::Data => "shape",
                    serde_json::error::Category::Eof => "truncation",
                },
                line: e.line(),
                column: e.column(),
            })?;
        Ok(Self {
            raw: Some(Redacted::new(raw.to_owned())),
            by_audience,
        })
    }

    /// The token for `audience`, if kubelet requested one.
    pub(crate) fn for_audience(&self, audience: &str) -> Option<&AudienceToken> {
        self.by_audience.get(audience)
    }

    /// The audiences present (not secret).
    pub fn audiences(&self) -> impl Iterator<Item = &str> {
        self.by_audience.keys().map(String::as_str)
    }

    /// The JSON as received, for passing on to an external plugin.
    pub fn raw(&self) -> Option<&Redacted<String>> {
        self.raw.as_ref()
    }
}

/// Who a JWT says it is, read without verification: only used to keep cache entries of
/// different ServiceAccounts apart (Vault verifies the token itself at login).
pub(crate) fn token_subject(jwt: &Redacted<String>) -> Option<String> {
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

/// What tells apart the identities behind tokens in a cache key: the token's subject when it
/// has one, else a keyed digest of the whole token (never the token itself).
pub(crate) fn subject_key(jwt: &Redacted<String>) -> String {
    token_subject(jwt).unwrap_or_else(|| token_digest(jwt.expose().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubelet_tokens_and_never_shows_them() {
        let raw = r#"{"vault":{"token":"eyJhbGciOiJSUzI1NiJ9.secret","expirationTimestamp":"2026-11-22T10:00:00Z"}}"#;
        let tokens = ServiceAccountTokens::parse(raw).unwrap();
        let vault = tokens.for_audience("vault").unwrap();
        assert_eq!(vault.token.expose(), "eyJhbGciOiJSUzI1NiJ9.secret");
        assert!(tokens.for_audience("sts.amazonaws.com").is_none());
        assert!(!format!("{tokens:?}").contains("eyJ"));
    }

    #[test]
    fn malformed_json_names_the_key_but_not_the_content() {
        let err = ServiceAccountTokens::parse(r#"{"vault": "eyJsecret-token"}"#).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(TOKENS_KEY), "{msg}");
        assert!(!msg.contains("eyJ"), "{msg}");
        assert!(ServiceAccountTokens::parse("{not json").is_err());
        assert!(ServiceAccountTokens::parse("").unwrap().raw().is_none());
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
        let opaque = Redacted::new("opaque".to_owned());
        assert_eq!(subject_key(&opaque), subject_key(&opaque));
        assert!(!subject_key(&opaque).contains("opaque"));
        assert_ne!(
            subject_key(&opaque),
            subject_key(&Redacted::new("other".into()))
        );
    }
}

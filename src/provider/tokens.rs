//! The pod's ServiceAccount tokens that kubelet hands over in
//! `csi.storage.k8s.io/serviceAccount.tokens`: `{"<audience>": {"token", "expirationTimestamp"}}`.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::redact::Redacted;

/// The volume context (or `secrets`) key that carries the tokens.
pub const TOKENS_KEY: &str = "csi.storage.k8s.io/serviceAccount.tokens";

/// One audience's token.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AudienceToken {
    pub token: Redacted<String>,
    #[serde(default)]
    pub expiration_timestamp: Option<String>,
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
    pub fn for_audience(&self, audience: &str) -> Option<&AudienceToken> {
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
}

//! The identity a SecretSync fetches with: a short-lived token of its own ServiceAccount, one
//! per audience the class's provider needs, requested through TokenRequest and reused until
//! 80 % of its life. The controller's own token never reaches a store.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use kube::api::PostParams;

use super::outcome::{Failure, Reason};
use crate::provider::ServiceAccountTokens;
use crate::redact::Redacted;

/// Shortest token lifetime the API server grants (10 minutes).
const MIN_EXPIRATION: Duration = Duration::from_secs(600);

#[derive(Debug)]
struct Cached {
    token: Redacted<String>,
    expires: String,
    refresh_at: Instant,
}

/// Tokens by namespace, ServiceAccount and audience.
pub(crate) struct TokenSource {
    client: kube::Client,
    expiration: Duration,
    cache: Mutex<HashMap<(String, String, String), Cached>>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("expiration", &self.expiration)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    pub(crate) fn new(client: kube::Client, expiration: Duration) -> Self {
        Self {
            client,
            expiration: expiration.max(MIN_EXPIRATION),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The tokens of `namespace/service_account` for `audiences`, in kubelet's shape.
    pub(crate) async fn tokens(
        &self,
        namespace: &str,
        service_account: &str,
        audiences: &[String],
    ) -> Result<ServiceAccountTokens, Failure> {
        let mut by_audience = BTreeMap::new();
        for audience in audiences {
            let (token, expires) = self.one(namespace, service_account, audience).await?;
            by_audience.insert(
                audience.clone(),
                serde_json::json!({"token": token.expose(), "expirationTimestamp": expires}),
            );
        }
        let json = Redacted::new(
            serde_json::Value::from(serde_json::Map::from_iter(by_audience)).to_string(),
        );
        ServiceAccountTokens::parse(json.expose()).map_err(|e| Failure {
            reason: Reason::ControllerInternalError,
            message: format!("tokens of ServiceAccount {namespace}/{service_account}: {e}"),
        })
    }

    async fn one(
        &self,
        namespace: &str,
        service_account: &str,
        audience: &str,
    ) -> Result<(Redacted<String>, String), Failure> {
        let key = (
            namespace.to_owned(),
            service_account.to_owned(),
            audience.to_owned(),
        );
        let now = Instant::now();
        {
            let mut cache = self.cache.lock().expect("token cache lock");
            cache.retain(|_, c| c.refresh_at > now);
            if let Some(c) = cache.get(&key) {
                return Ok((c.token.clone(), c.expires.clone()));
            }
        }
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(vec![audience.to_owned()]),
                expiration_seconds: Some(self.expiration.as_secs() as i64),
                ..Default::default()
            }),
            ..Default::default()
        };
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        let answer = api
            .create_token_request(service_account, &PostParams::default(), &request)
            .await
            .map_err(|e| token_failure(namespace, service_account, &e))?;
        let status = answer.status.ok_or_else(|| Failure {
            reason: Reason::ControllerInternalError,
            message: format!("TokenRequest of ServiceAccount {namespace}/{service_account}: no status in the answer"),
        })?;
        let (Some(token), Some(expires)) = (status.token, status.expiration_timestamp) else {
            return Err(Failure {
                reason: Reason::ControllerInternalError,
                message: format!(
                    "TokenRequest of ServiceAccount {namespace}/{service_account}: no token in the answer"
                ),
            });
        };
        let expires = expires.0;
        let life = Duration::from_secs(
            (expires.as_second() - jiff::Timestamp::now().as_second()).max(0) as u64,
        );
        let cached = Cached {
            token: Redacted::new(token),
            expires: expires.to_string(),
            refresh_at: now + life * 4 / 5,
        };
        let out = (cached.token.clone(), cached.expires.clone());
        self.cache
            .lock()
            .expect("token cache lock")
            .insert(key, cached);
        Ok(out)
    }
}

fn token_failure(namespace: &str, service_account: &str, error: &kube::Error) -> Failure {
    let sa = format!("{namespace}/{service_account}");
    match error {
        kube::Error::Api(status) if status.code == 404 => Failure {
            reason: Reason::UserInputValidationFailed,
            message: format!("ServiceAccount {sa} not found"),
        },
        _ => Failure {
            reason: Reason::ControllerInternalError,
            message: format!(
                "TokenRequest of ServiceAccount {sa}: {}",
                crate::kube_errors::describe(error)
            ),
        },
    }
}

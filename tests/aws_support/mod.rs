//! Helpers of the AWS tests: a counting, fault-injecting proxy in front of moto (`proxy.rs`),
//! a stand-in EKS Pod Identity agent, SDK clients for seeding moto, and mount inputs built
//! like publish builds them.
#![allow(dead_code)]

pub(crate) mod proxy;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use keymount::provider::MountOutput;
use keymount::provider::aws::{AwsArgs, AwsProvider};
use serde_json::json;

pub(crate) use self::proxy::AwsProxy;
use crate::support::moto::{Moto, REGION};

/// The IRSA role of local-mode classes.
pub(crate) const ROLE: &str = "arn:aws:iam::123456789012:role/keymount-test";
/// The IRSA token audience.
pub(crate) const STS: &str = "sts.amazonaws.com";
/// moto does not verify web identity tokens; the IRSA test uses a real one.
pub(crate) const FAKE_JWT: &str = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ0ZXN0In0.sig";

/// A moto server and a counting proxy in front of it.
pub(crate) async fn bed() -> (Moto, AwsProxy) {
    let moto = Moto::start().await;
    let proxy = AwsProxy::start(moto.endpoint()).await;
    (moto, proxy)
}

/// A provider without an API server (local mode: the class names the role).
pub(crate) fn local_provider(proxy: &AwsProxy) -> AwsProvider {
    AwsProvider::new(args(&proxy.endpoint), None, "test-node")
}

/// Kubelet's tokens JSON with an IRSA token.
pub(crate) fn irsa_tokens() -> String {
    tokens_json(&[(STS, FAKE_JWT)])
}

/// Class parameters: region, roleArn, objects and `extra`.
pub(crate) fn params<'a>(
    objects: &'a str,
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut p = vec![("region", REGION), ("roleArn", ROLE), ("objects", objects)];
    p.extend_from_slice(extra);
    p
}

/// The text between `start` and `end` (an element of an STS XML answer).
pub(crate) fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let from = text
        .find(start)
        .unwrap_or_else(|| panic!("{start} in {text}"))
        + start.len();
    &text[from..from + text[from..].find(end).unwrap()]
}

/// Node settings pointing every AWS endpoint at `endpoint`, with fast retries.
pub(crate) fn args(endpoint: &str) -> AwsArgs {
    AwsArgs {
        aws_sts_endpoint: Some(endpoint.into()),
        aws_secretsmanager_endpoint: Some(endpoint.into()),
        aws_ssm_endpoint: Some(endpoint.into()),
        aws_retry_initial_backoff: Duration::from_millis(5),
        aws_retry_max_backoff: Duration::from_millis(50),
        aws_attempt_timeout: Duration::from_secs(10),
        ..AwsArgs::default()
    }
}

/// A stand-in EKS Pod Identity agent: answers tokens it knows with credentials and records
/// the Authorization headers it received.
#[derive(Debug)]
pub(crate) struct PodIdentityAgent {
    pub(crate) endpoint: String,
    pub(crate) seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PodIdentityAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PodIdentityAgent {
    /// Answers `token` with credentials whose access key id is `access_key`.
    pub(crate) async fn start(token: &str, access_key: &str) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (token, key, log) = (token.to_owned(), access_key.to_owned(), seen.clone());
        let app = axum::Router::new().route(
            "/v1/credentials",
            axum::routing::get(move |headers: http::HeaderMap| {
                let (token, key, log) = (token.clone(), key.clone(), log.clone());
                async move {
                    let auth = headers
                        .get(http::header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    log.lock().unwrap().push(auth.clone());
                    if auth != token {
                        return Response::builder()
                            .status(400)
                            .body(Body::from(r#"{"Message":"invalid token"}"#))
                            .unwrap();
                    }
                    let expiry = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(6);
                    let body = json!({
                        "AccessKeyId": key, "SecretAccessKey": "pod-identity-secret-access-key",
                        "Token": "pod-identity-session-token", "AccountId": "123456789012",
                        "Expiration": expiry.to_string(),
                    });
                    Response::builder()
                        .status(200)
                        .body(Body::from(body.to_string()))
                        .unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            endpoint: format!("http://{addr}/v1/credentials"),
            seen,
            task,
        }
    }
}

/// A Secrets Manager client for moto in `region`.
pub(crate) fn sm(moto: &Moto, region: &str) -> aws_sdk_secretsmanager::Client {
    let config = moto
        .sdk_config()
        .to_builder()
        .region(aws_sdk_secretsmanager::config::Region::new(
            region.to_owned(),
        ))
        .build();
    aws_sdk_secretsmanager::Client::new(&config)
}

/// An SSM client for moto in us-east-1.
pub(crate) fn ssm(moto: &Moto) -> aws_sdk_ssm::Client {
    aws_sdk_ssm::Client::new(&moto.sdk_config())
}

/// Kubelet's tokens JSON for some audiences.
pub(crate) fn tokens_json(pairs: &[(&str, &str)]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = pairs
        .iter()
        .map(|(aud, token)| {
            (
                aud.to_string(),
                json!({"token": token, "expirationTimestamp": "2099-01-01T00:00:00Z"}),
            )
        })
        .collect();
    serde_json::Value::Object(map).to_string()
}

#[allow(unused_imports)]
pub(crate) use crate::support::mount_input::{bytes, input, mode, text};

/// The version reported for file `name`.
pub(crate) fn version(output: &MountOutput, name: &str) -> String {
    output
        .versions
        .iter()
        .find(|v| v.id == name)
        .unwrap_or_else(|| panic!("no version for {name}"))
        .version
        .clone()
}

//! Helpers of the AWS tests: a loopback HTTP proxy in front of moto that counts AWS calls
//! (by `X-Amz-Target` or the query `Action`) per region and can answer chosen calls with
//! AWS's own throttling, 5xx or AccessDenied replies; a stand-in EKS Pod Identity agent;
//! SDK clients for seeding moto; mount inputs built like publish builds them.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use keymount::provider::aws::AwsArgs;
use keymount::provider::{MountInput, MountOutput, ServiceAccountTokens};
use keymount::redact::Redacted;
use serde_json::json;

use crate::support::moto::{Moto, REGION};

/// What the proxy answers instead of forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Throttle,
    ServerError,
    AccessDenied,
}

/// Which calls a fault hits, and how many more times (None: always).
#[derive(Debug, Clone)]
pub struct Rule {
    pub action: Option<&'static str>,
    pub region: Option<String>,
    pub remaining: Option<usize>,
    pub fault: Fault,
}

/// One call the proxy saw.
#[derive(Debug, Clone)]
pub struct Call {
    pub action: String,
    pub region: String,
    pub access_key: String,
    pub faulted: bool,
    /// Form fields of query-protocol calls (STS).
    pub form: BTreeMap<String, String>,
    /// Response body of query-protocol calls (STS answers).
    pub answer: String,
}

#[derive(Debug)]
struct ProxyState {
    upstream: String,
    http: reqwest::Client,
    calls: Mutex<Vec<Call>>,
    rules: Mutex<Vec<Rule>>,
}

/// The proxy; stops when dropped.
#[derive(Debug)]
pub struct AwsProxy {
    pub endpoint: String,
    state: Arc<ProxyState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AwsProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `Credential=AKID/date/REGION/service/aws4_request` of a SigV4 Authorization header.
fn credential_scope(headers: &http::HeaderMap) -> (String, String) {
    let auth = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let Some(scope) = auth.split("Credential=").nth(1) else {
        return (String::new(), String::new());
    };
    let parts: Vec<&str> = scope.split(['/', ',']).collect();
    (
        parts.first().copied().unwrap_or_default().to_owned(),
        parts.get(2).copied().unwrap_or_default().to_owned(),
    )
}

fn fault_response(fault: Fault) -> Response {
    let (status, kind, message) = match fault {
        Fault::Throttle => (400, "ThrottlingException", "Rate exceeded"),
        Fault::ServerError => (500, "InternalServiceError", "injected server error"),
        Fault::AccessDenied => (
            400,
            "AccessDeniedException",
            "User is not authorized to perform this operation",
        ),
    };
    Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amzn-errortype", kind)
        .body(Body::from(
            json!({"__type": kind, "message": message}).to_string(),
        ))
        .unwrap()
}

async fn handle(State(state): State<Arc<ProxyState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20).await.unwrap();
    let (access_key, region) = credential_scope(&parts.headers);
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(|t| t.rsplit('.').next().unwrap_or(t).to_owned());
    let form: BTreeMap<String, String> = if target.is_none() {
        form_urlencoded::parse(&body).into_owned().collect()
    } else {
        BTreeMap::new()
    };
    let action = target
        .or_else(|| form.get("Action").cloned())
        .unwrap_or_default();
    let fault = {
        let mut rules = state.rules.lock().unwrap();
        rules
            .iter_mut()
            .find(|r| {
                r.action.is_none_or(|a| a == action)
                    && r.region.as_ref().is_none_or(|g| *g == region)
                    && r.remaining != Some(0)
            })
            .map(|r| {
                if let Some(n) = r.remaining.as_mut() {
                    *n -= 1;
                }
                r.fault
            })
    };
    let mut call = Call {
        action,
        region,
        access_key,
        faulted: fault.is_some(),
        form,
        answer: String::new(),
    };
    if let Some(fault) = fault {
        state.calls.lock().unwrap().push(call);
        return fault_response(fault);
    }
    let url = format!(
        "{}{}",
        state.upstream,
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let mut forward = state
        .http
        .request(parts.method.clone(), url)
        .body(body.to_vec());
    for (name, value) in &parts.headers {
        if name != http::header::HOST && name != http::header::CONTENT_LENGTH {
            forward = forward.header(name, value);
        }
    }
    let answer = forward.send().await.expect("moto answers the proxy");
    let status = answer.status();
    let headers = answer.headers().clone();
    let bytes = answer.bytes().await.unwrap();
    if !call.form.is_empty() {
        call.answer = String::from_utf8_lossy(&bytes).into_owned();
    }
    state.calls.lock().unwrap().push(call);
    let mut response = Response::builder().status(status.as_u16());
    for (name, value) in &headers {
        if name != http::header::CONTENT_LENGTH && name != http::header::TRANSFER_ENCODING {
            response = response.header(name, value);
        }
    }
    response.body(Body::from(bytes)).unwrap()
}

impl AwsProxy {
    /// A proxy on 127.0.0.1 forwarding to `upstream`.
    pub async fn start(upstream: &str) -> Self {
        crate::support::proc::install_crypto_provider();
        let state = Arc::new(ProxyState {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            calls: Mutex::new(Vec::new()),
            rules: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            endpoint: format!("http://{addr}"),
            state,
            task,
        }
    }

    /// Adds a fault rule (rules are tried in order).
    pub fn fault(&self, rule: Rule) {
        self.state.rules.lock().unwrap().push(rule);
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.state.rules.lock().unwrap().clear();
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.state.calls.lock().unwrap().clone()
    }

    /// Forgets the calls seen so far.
    pub fn reset(&self) {
        self.state.calls.lock().unwrap().clear();
    }

    /// Calls of `action` (in any region).
    pub fn count(&self, action: &str) -> usize {
        self.calls().iter().filter(|c| c.action == action).count()
    }

    /// Calls signed for `region`.
    pub fn count_region(&self, region: &str) -> usize {
        self.calls().iter().filter(|c| c.region == region).count()
    }
}

/// Node settings pointing every AWS endpoint at `endpoint`, with fast retries.
pub fn args(endpoint: &str) -> AwsArgs {
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
pub struct PodIdentityAgent {
    pub endpoint: String,
    pub seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PodIdentityAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PodIdentityAgent {
    /// Answers `token` with credentials whose access key id is `access_key`.
    pub async fn start(token: &str, access_key: &str) -> Self {
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
                    let expiry = chrono::Utc::now() + chrono::Duration::hours(6);
                    let body = json!({
                        "AccessKeyId": key, "SecretAccessKey": "pod-identity-secret-access-key",
                        "Token": "pod-identity-session-token", "AccountId": "123456789012",
                        "Expiration": expiry.to_rfc3339(),
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
pub fn sm(moto: &Moto, region: &str) -> aws_sdk_secretsmanager::Client {
    let config = moto
        .secretsmanager()
        .config()
        .to_builder()
        .region(aws_sdk_secretsmanager::config::Region::new(
            region.to_owned(),
        ))
        .build();
    aws_sdk_secretsmanager::Client::from_conf(config)
}

/// An SSM client for moto in us-east-1.
pub fn ssm(moto: &Moto) -> aws_sdk_ssm::Client {
    let config = aws_sdk_ssm::Config::builder()
        .behavior_version(aws_sdk_ssm::config::BehaviorVersion::latest())
        .region(aws_sdk_ssm::config::Region::new(REGION))
        .endpoint_url(moto.endpoint())
        .credentials_provider(Moto::credentials())
        .http_client(Moto::http_client())
        .build();
    aws_sdk_ssm::Client::from_conf(config)
}

/// Kubelet's tokens JSON for some audiences.
pub fn tokens_json(pairs: &[(&str, &str)]) -> String {
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

/// A mount input as publish builds it: class parameters plus the pod's volume context.
pub fn input(ns: &str, sa: &str, tokens: &str, params: &[(&str, &str)]) -> MountInput {
    let mut attributes: BTreeMap<String, String> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (k, v) in [
        ("csi.storage.k8s.io/pod.name", "app-0"),
        ("csi.storage.k8s.io/pod.namespace", ns),
        (
            "csi.storage.k8s.io/pod.uid",
            "0b2e1f4c-0000-4000-8000-000000000001",
        ),
        ("csi.storage.k8s.io/serviceAccount.name", sa),
        ("secretProviderClass", "test"),
    ] {
        attributes.insert(k.into(), v.into());
    }
    MountInput {
        class: format!("{ns}/test"),
        attributes,
        tokens: ServiceAccountTokens::parse(tokens).unwrap(),
        secrets: Redacted::new(BTreeMap::new()),
        target_path: PathBuf::from("/nonexistent/target"),
        permission: 0o644,
        current_versions: Vec::new(),
    }
}

/// The bytes of file `name` in `output`.
pub fn bytes(output: &MountOutput, name: &str) -> Vec<u8> {
    output
        .files
        .iter()
        .find(|f| f.path == name)
        .unwrap_or_else(|| {
            panic!(
                "no file {name} in {:?}",
                output.files.iter().map(|f| &f.path).collect::<Vec<_>>()
            )
        })
        .contents
        .expose()
        .clone()
}

/// The text of file `name` in `output`.
pub fn text(output: &MountOutput, name: &str) -> String {
    String::from_utf8(bytes(output, name)).unwrap()
}

/// The mode of file `name` in `output`.
pub fn mode(output: &MountOutput, name: &str) -> u32 {
    output.files.iter().find(|f| f.path == name).unwrap().mode
}

/// The version reported for file `name`.
pub fn version(output: &MountOutput, name: &str) -> String {
    output
        .versions
        .iter()
        .find(|v| v.id == name)
        .unwrap_or_else(|| panic!("no version for {name}"))
        .version
        .clone()
}

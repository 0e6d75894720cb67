//! A loopback HTTP proxy in front of moto that counts AWS calls (by `X-Amz-Target` or the
//! query `Action`) per region and signing key, and can answer chosen calls with AWS's own
//! throttling, 5xx or AccessDenied replies instead of forwarding them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use serde_json::json;

/// What the proxy answers instead of forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    Throttle,
    ServerError,
    AccessDenied,
}

/// Which calls a fault hits, and how many more times (None: always).
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub(crate) action: Option<&'static str>,
    pub(crate) region: Option<String>,
    pub(crate) remaining: Option<usize>,
    pub(crate) fault: Fault,
}

/// One call the proxy saw.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub(crate) action: String,
    pub(crate) region: String,
    pub(crate) access_key: String,
    pub(crate) faulted: bool,
    /// Form fields of query-protocol calls (STS).
    pub(crate) form: BTreeMap<String, String>,
    /// Response body of query-protocol calls (STS answers).
    pub(crate) answer: String,
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
pub(crate) struct AwsProxy {
    pub(crate) endpoint: String,
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
    pub(crate) async fn start(upstream: &str) -> Self {
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
    pub(crate) fn fault(&self, rule: Rule) {
        self.state.rules.lock().unwrap().push(rule);
    }

    /// Removes every fault rule.
    pub(crate) fn clear_faults(&self) {
        self.state.rules.lock().unwrap().clear();
    }

    /// Every call so far.
    pub(crate) fn calls(&self) -> Vec<Call> {
        self.state.calls.lock().unwrap().clone()
    }

    /// Forgets the calls seen so far.
    pub(crate) fn reset(&self) {
        self.state.calls.lock().unwrap().clear();
    }

    /// Calls of `action` (in any region).
    pub(crate) fn count(&self, action: &str) -> usize {
        self.calls().iter().filter(|c| c.action == action).count()
    }

    /// Calls signed for `region`.
    pub(crate) fn count_region(&self, region: &str) -> usize {
        self.calls().iter().filter(|c| c.region == region).count()
    }
}

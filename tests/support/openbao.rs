//! A real OpenBao dev server per test (`bao server -dev`), killed when dropped.
//!
//! Root token `root`. Every instance writes a file audit log (declared in a config file, as
//! OpenBao allows no audit devices through the API), so tests can count requests at the server
//! and read the client tokens it issued. The log is raw (`log_raw`): a test server's secrets
//! are the tests' to see.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::kube::TestKube;
use super::proc::{KillOnDrop, find_exe, free_port, install_crypto_provider, tail, wait_until};

pub(crate) const ROOT_TOKEN: &str = "root";

/// A running OpenBao dev server; stopped (SIGKILL + reap) on drop.
#[derive(Debug)]
pub(crate) struct OpenBao {
    process: KillOnDrop,
    addr: String,
    ca_cert: Option<PathBuf>,
    audit_log: PathBuf,
    log: PathBuf,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl OpenBao {
    /// Plain HTTP on a free 127.0.0.1 port.
    pub(crate) async fn start() -> OpenBao {
        Self::launch(false).await
    }

    /// HTTPS (`-dev-tls`); the CA that signed its certificate is at `ca_cert_path()`.
    pub(crate) async fn start_tls() -> OpenBao {
        Self::launch(true).await
    }

    async fn launch(tls: bool) -> OpenBao {
        install_crypto_provider();
        let bao = find_exe("bao");
        let dir = tempfile::Builder::new()
            .prefix("keymount-bao-")
            .tempdir()
            .expect("temp dir");
        let audit_log = dir.path().join("audit.log");
        let config = dir.path().join("audit.hcl");
        std::fs::write(
            &config,
            format!(
                "audit \"file\" \"test\" {{\n  options {{\n    file_path = \"{}\"\n    log_raw = \"true\"\n  }}\n}}\n",
                audit_log.display()
            ),
        )
        .expect("write audit config");
        let log = dir.path().join("bao.log");
        let port = free_port();
        let mut cmd = Command::new(&bao);
        cmd.args(["server", "-dev", "-dev-root-token-id=root"])
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .arg(format!("-config={}", config.display()))
            .env("HOME", dir.path())
            .env_remove("BAO_ADDR")
            .env_remove("VAULT_ADDR")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("bao log"))
            .stderr(std::fs::File::create(dir.path().join("bao.stderr")).expect("bao stderr"));
        let ca_cert = if tls {
            let certs = dir.path().join("tls");
            std::fs::create_dir_all(&certs).expect("tls dir");
            cmd.arg("-dev-tls")
                .arg(format!("-dev-tls-cert-dir={}", certs.display()));
            Some(certs.join("vault-ca.pem"))
        } else {
            None
        };
        let mut process = KillOnDrop {
            child: cmd
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", bao.display())),
            name: "bao",
        };
        let scheme = if tls { "https" } else { "http" };
        let addr = format!("{scheme}://127.0.0.1:{port}");

        // With TLS the CA file appears only once the server is up.
        if let Some(ca) = &ca_cert {
            let ok = wait_until(Duration::from_secs(30), || async { ca.exists() }).await;
            process.assert_running(&log);
            assert!(ok, "bao -dev-tls wrote no {} in 30 s", ca.display());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
        if let Some(ca) = &ca_cert {
            let pem = std::fs::read(ca).expect("read bao CA");
            builder = builder
                .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("bao CA pem"));
        }
        let http = builder.build().expect("reqwest client");
        let health = format!("{addr}/v1/sys/health");
        let ready = wait_until(Duration::from_secs(30), || {
            let http = http.clone();
            let health = health.clone();
            async move {
                matches!(http.get(&health).send().await, Ok(r) if r.status() == StatusCode::OK)
            }
        })
        .await;
        process.assert_running(&log);
        assert!(
            ready,
            "OpenBao at {addr} not healthy in 30 s; log:\n{}",
            tail(&log, 30)
        );
        OpenBao {
            process,
            addr,
            ca_cert,
            audit_log,
            log,
            http,
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:PORT` (or https for `start_tls`), without a trailing slash.
    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    pub(crate) fn root_token(&self) -> &'static str {
        ROOT_TOKEN
    }

    /// The CA certificate (PEM file) of a `start_tls()` server.
    pub(crate) fn ca_cert_path(&self) -> Option<&Path> {
        self.ca_cert.as_deref()
    }

    pub(crate) fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The server's own log (stdout).
    pub(crate) fn log_path(&self) -> &Path {
        &self.log
    }

    /// An HTTP client that trusts this server's CA.
    pub(crate) fn http(&self) -> reqwest::Client {
        self.http.clone()
    }

    /// A raw request: `method` may be any verb incl. `LIST`; `body` `Value::Null` sends none.
    /// Returns the status and the JSON body (`Value::Null` if empty or not JSON).
    pub(crate) async fn request(
        &self,
        method: &str,
        path: &str,
        body: Value,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        let method = Method::from_bytes(method.as_bytes()).expect("HTTP method");
        let url = format!("{}/v1/{}", self.addr, path.trim_start_matches('/'));
        let mut req = self.http.request(method.clone(), &url);
        if let Some(token) = token {
            req = req.header("X-Vault-Token", token);
        }
        if !body.is_null() {
            req = req.json(&body);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A request with the root token; panics (with the server's errors) unless 2xx.
    pub(crate) async fn api(&self, method: &str, path: &str, body: Value) -> Value {
        let (status, value) = self.request(method, path, body, Some(ROOT_TOKEN)).await;
        assert!(
            status.is_success(),
            "OpenBao {method} {path}: {status} {value}"
        );
        value
    }

    /// Mounts a KV version 2 engine at `mount` (`secret/` already exists in dev mode).
    pub(crate) async fn enable_kv2(&self, mount: &str) {
        self.api(
            "POST",
            &format!("sys/mounts/{mount}"),
            json!({"type": "kv", "options": {"version": "2"}}),
        )
        .await;
    }

    /// Mounts a KV version 1 engine at `mount`.
    pub(crate) async fn enable_kv1(&self, mount: &str) {
        self.api(
            "POST",
            &format!("sys/mounts/{mount}"),
            json!({"type": "kv", "options": {"version": "1"}}),
        )
        .await;
    }

    /// Writes `data` (a JSON object) at `path` of KV v2 mount `mount`; returns the new version.
    pub(crate) async fn kv2_put(&self, mount: &str, path: &str, data: Value) -> u64 {
        let resp = self
            .api(
                "POST",
                &format!("{mount}/data/{path}"),
                json!({"data": data}),
            )
            .await;
        resp["data"]["version"]
            .as_u64()
            .expect("kv2 write returns a version")
    }

    /// Writes `data` (a JSON object) at `path` of KV v1 mount `mount`.
    pub(crate) async fn kv1_put(&self, mount: &str, path: &str, data: Value) {
        self.api("POST", &format!("{mount}/{path}"), data).await;
    }

    /// Creates or replaces ACL policy `name` from HCL text.
    pub(crate) async fn put_policy(&self, name: &str, hcl: &str) {
        self.api(
            "PUT",
            &format!("sys/policies/acl/{name}"),
            json!({"policy": hcl}),
        )
        .await;
    }

    /// Enables `auth/kubernetes` at `mount` (e.g. "kubernetes") and points it at the test
    /// API server, with the test bed's TokenReview token.
    pub(crate) async fn enable_kubernetes_auth(&self, mount: &str, kube: &TestKube) {
        self.api(
            "POST",
            &format!("sys/auth/{mount}"),
            json!({"type": "kubernetes"}),
        )
        .await;
        let reviewer = kube.reviewer_token().await;
        self.api(
            "POST",
            &format!("auth/{mount}/config"),
            json!({
                "kubernetes_host": kube.api_url(),
                "kubernetes_ca_cert": kube.ca_pem(),
                "token_reviewer_jwt": reviewer,
                "disable_local_ca_jwt": true,
            }),
        )
        .await;
    }

    /// A role of `auth/<mount>` for ServiceAccounts `sa_names` in `namespaces`, granting
    /// `policies`; `audience` (if any) is what the login token must be issued for.
    pub(crate) async fn kubernetes_role(
        &self,
        mount: &str,
        role: &str,
        sa_names: &[&str],
        namespaces: &[&str],
        policies: &[&str],
        audience: Option<&str>,
    ) {
        let mut body = json!({
            "bound_service_account_names": sa_names,
            "bound_service_account_namespaces": namespaces,
            "token_policies": policies,
            "token_ttl": "1h",
        });
        if let Some(aud) = audience {
            body["audience"] = aud.into();
        }
        self.api("POST", &format!("auth/{mount}/role/{role}"), body)
            .await;
    }

    /// Enables `auth/jwt` at `mount`, validating JWTs offline with `pubkeys_pem`.
    pub(crate) async fn enable_jwt_auth(&self, mount: &str, pubkeys_pem: &[&str]) {
        self.api("POST", &format!("sys/auth/{mount}"), json!({"type": "jwt"}))
            .await;
        self.api(
            "POST",
            &format!("auth/{mount}/config"),
            json!({"jwt_validation_pubkeys": pubkeys_pem}),
        )
        .await;
    }

    /// A `jwt` role of `auth/<mount>`: audiences and subject that must match, `sub` as user.
    pub(crate) async fn jwt_role(
        &self,
        mount: &str,
        role: &str,
        bound_audiences: &[&str],
        bound_subject: &str,
        policies: &[&str],
    ) {
        self.api(
            "POST",
            &format!("auth/{mount}/role/{role}"),
            json!({
                "role_type": "jwt",
                "bound_audiences": bound_audiences,
                "bound_subject": bound_subject,
                "user_claim": "sub",
                "token_policies": policies,
                "token_ttl": "1h",
            }),
        )
        .await;
    }

    /// The file audit log (JSON lines, raw: secrets and tokens appear as they are).
    pub(crate) fn audit_log_path(&self) -> &Path {
        &self.audit_log
    }

    /// Audit entries of type "request" so far, as (operation, path) pairs.
    pub(crate) fn audited_requests(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(&self.audit_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["type"] == "request")
            .map(|v| {
                let op = v["request"]["operation"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let path = v["request"]["path"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                (op, path)
            })
            .collect()
    }

    /// How many requests reached `path` (e.g. "auth/kubernetes/login", "secret/data/app").
    pub(crate) fn count_requests(&self, path: &str) -> usize {
        self.audited_requests()
            .iter()
            .filter(|(_, p)| p == path)
            .count()
    }

    /// How many `operation` ("read", "update", "create", "list", ...) requests reached `path`.
    pub(crate) fn count_requests_op(&self, operation: &str, path: &str) -> usize {
        self.audited_requests()
            .iter()
            .filter(|(o, p)| o == operation && p == path)
            .count()
    }

    /// Logins at `auth/<mount>/login`.
    pub(crate) fn count_logins(&self, mount: &str) -> usize {
        self.count_requests(&format!("auth/{mount}/login"))
    }

    /// Every client token this server issued at a login (`auth/<mount>/login`) so far, from
    /// the audit log.
    pub(crate) fn client_tokens(&self) -> Vec<String> {
        let mut tokens: Vec<String> = std::fs::read_to_string(&self.audit_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| {
                v["type"] == "response"
                    && v["request"]["path"]
                        .as_str()
                        .is_some_and(|p| p.ends_with("/login"))
            })
            .filter_map(|v| {
                v["response"]["auth"]["client_token"]
                    .as_str()
                    .map(str::to_owned)
            })
            .filter(|t| !t.is_empty())
            .collect();
        tokens.sort();
        tokens.dedup();
        tokens
    }
}

//! What a secret store (any address a class names) can make the vault provider do: answer a
//! body without end (cut at the limit), return secrets in bodies that fail to decode (never
//! quoted), choose TLS settings without end (HTTP clients bounded), and mint secrets (read once
//! per mount, never shared between pods). A tiny local HTTP server plays the store; minting in
//! OpenBao itself (PKI) is in tests/vault_kv.rs.

mod store_support;
mod support;
mod vault_support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keymount::provider::Provider;
use keymount::provider::vault::{VaultArgs, VaultOptions, VaultProvider};
use store_support::{Answer, Store, login_ok, unsigned_jwt};
use tonic::Code;
use vault_support::{input, options, text, tokens_json};

const LOGIN: &str = "/v1/auth/jwt/login";

fn params<'a>(store: &'a Store, objects: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("vaultAddress", store.addr.as_str()),
        ("vaultAuthMountPath", "jwt"),
        ("roleName", "web"),
        ("objects", objects),
    ]
}

fn tokens() -> String {
    tokens_json("vault", &unsigned_jwt("shop", "web"))
}

/// A `MakeWriter` that keeps every log line in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every log line of this test binary at TRACE (one global subscriber).
fn captured_logs() -> &'static Captured {
    static LOGS: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .init();
        logs
    })
}

#[tokio::test]
async fn a_store_streaming_a_gigabyte_is_cut_off_at_the_limit() {
    const GIB: u64 = 1 << 30;
    const LIMIT: usize = 1 << 20;
    let store = Store::start(|_, path, _| match path {
        LOGIN => login_ok(),
        _ => Answer::Stream(GIB),
    })
    .await;
    let provider = VaultProvider::new(
        VaultArgs::default(),
        vault_support::access(&[], &["127.0.0.1"]),
        VaultOptions {
            max_response_bytes: LIMIT,
            ..options()
        },
    );
    let objects = "- {objectName: v, secretPath: secret/data/big, secretKey: v}";
    let started = Instant::now();
    let err = provider
        .mount(&input("shop", "web", &tokens(), &params(&store, objects)))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    let message = err.to_string();
    assert!(
        message.contains("--max-call-recv-msg-size") && message.contains(&LIMIT.to_string()),
        "{message}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // The server notices the closed connection at its next write.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = store.sent_bytes();
    assert!(
        sent < LIMIT as u64 + (32 << 20),
        "the client read {sent} bytes for a limit of {LIMIT}"
    );
}

#[tokio::test]
async fn store_bodies_never_reach_errors_or_logs() {
    let logs = captured_logs();
    let store = Store::start(|_, path, _| match path {
        LOGIN => login_ok(),
        // A 2xx that is not a Vault secret: serde would quote the value in its error.
        "/v1/secret/data/undecodable" => {
            Answer::Body(200, r#"{"data": "s3cr3t-undecodable-1111"}"#.into())
        }
        "/v1/secret/data/typed" => {
            Answer::Body(200, r#"{"lease_duration": "s3cr3t-typed-2222"}"#.into())
        }
        // Error statuses whose bodies are not Vault's error list (a proxy, a hostile store).
        "/v1/secret/data/denied" => {
            Answer::Body(403, "<html>password=s3cr3t-denied-3333</html>".into())
        }
        "/v1/secret/data/rejected" => Answer::Body(400, "s3cr3t-rejected-4444".into()),
        _ => Answer::Body(502, "upstream said s3cr3t-bad-gateway-5555".into()),
    })
    .await;
    let provider = vault_support::provider();
    let mut messages = Vec::new();
    for path in ["undecodable", "typed", "denied", "rejected", "down"] {
        let objects = format!("- {{objectName: v, secretPath: secret/data/{path}, secretKey: v}}");
        let err = provider
            .mount(&input("shop", "web", &tokens(), &params(&store, &objects)))
            .await
            .unwrap_err();
        tracing::warn!(error = %err, "mount failed");
        messages.push(err.to_string());
    }
    assert!(messages[0].contains("not a Vault secret"), "{messages:?}");
    assert!(
        messages[2].contains("not Vault's error list"),
        "{messages:?}"
    );
    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logged.contains("mount failed"), "logs were captured");
    // Every body above holds `s3cr3t`, which nothing else of this binary logs (short digit
    // runs would also match ports and timestamps of the other tests' lines).
    for secret in ["s3cr3t", "hvs.fake-store-token"] {
        for (n, message) in messages.iter().enumerate() {
            assert!(
                !message.contains(secret),
                "error {n} quotes the body: {message}"
            );
        }
        assert!(
            !logged.contains(secret),
            "a body reached the logs: {secret}"
        );
    }
}

#[tokio::test]
async fn http_clients_per_tls_setting_are_bounded() {
    let store = Store::start(|_, path, _| match path {
        LOGIN => login_ok(),
        _ => Answer::Body(200, r#"{"data":{"v":"same"}}"#.into()),
    })
    .await;
    let provider = vault_support::provider();
    let objects = "- {objectName: v, secretPath: secret/data/x, secretKey: v}";
    for n in 0..40 {
        let name = format!("s{n}.example.com");
        let mut p = params(&store, objects);
        p.push(("vaultTLSServerName", &name));
        let out = provider
            .mount(&input("shop", "web", &tokens(), &p))
            .await
            .unwrap();
        assert_eq!(text(&out, "v"), "same");
    }
    assert_eq!(
        provider.cached_http_clients(),
        keymount::provider::vault::client::CLIENT_CACHE_SIZE,
        "40 TLS settings keep only the most recent clients"
    );
}

#[tokio::test]
async fn minted_secrets_are_read_per_mount_static_ones_are_joined() {
    // `database/creds` is a GET that mints: a new user and a lease per call. KV is static.
    let store = Store::start(|_, path, nth| {
        let slow = |a: Answer| Answer::Delay(Duration::from_millis(300), Box::new(a));
        match path {
            LOGIN => login_ok(),
            "/v1/database/creds/app" => slow(Answer::Body(
                200,
                format!(
                    r#"{{"lease_id":"database/creds/app/lease-{nth}","lease_duration":600,"renewable":true,"data":{{"username":"user-{nth}","password":"pw-{nth}"}}}}"#
                ),
            )),
            _ => slow(Answer::Body(200, r#"{"data":{"data":{"v":"static-value"}}}"#.into())),
        }
    })
    .await;
    let provider = Arc::new(vault_support::provider());
    let objects = "- {objectName: user, secretPath: database/creds/app, secretKey: username}\n- {objectName: pw, secretPath: database/creds/app, secretKey: password}\n- {objectName: v, secretPath: secret/data/static, secretKey: v}";
    let replica = input("shop", "web", &tokens(), &params(&store, objects));
    let mounts: Vec<_> = (0..3)
        .map(|_| {
            let (p, i) = (provider.clone(), replica.clone());
            tokio::spawn(async move { p.mount(&i).await.unwrap() })
        })
        .collect();
    let outs: Vec<_> = futures::future::join_all(mounts)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let mut users: Vec<String> = outs.iter().map(|o| text(o, "user")).collect();
    for out in &outs {
        let user = text(out, "user");
        let n = user.trim_start_matches("user-");
        assert_eq!(
            text(out, "pw"),
            format!("pw-{n}"),
            "user and password of one lease"
        );
        assert_eq!(text(out, "v"), "static-value");
    }
    users.sort();
    users.dedup();
    assert_eq!(
        users.len(),
        3,
        "every replica has its own credentials: {users:?}"
    );
    assert_eq!(store.requests("/v1/database/creds/app"), 3);
    assert_eq!(
        store.requests("/v1/secret/data/static"),
        1,
        "static reads of one identity are still joined"
    );
    assert_eq!(store.requests(LOGIN), 1);
}

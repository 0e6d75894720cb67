//! Identity, TLS and efficiency of the vault provider against real servers: Kubernetes auth
//! with pod-bound tokens reviewed by the real API server, TLS settings against `-dev-tls`,
//! one login and one read for 50 concurrent mounts (counted in OpenBao's audit log), tokens
//! never shared between ServiceAccounts, and no secret or token in the logs.

mod support;
mod vault_support;

use std::sync::{Arc, Mutex};

use keymount::provider::Provider;
use serde_json::json;
use support::kube::TestKube;
use support::openbao::OpenBao;
use tonic::Code;
use vault_support::{Signer, input, jwt_setup, provider, provider_with, text, tokens_json};

#[tokio::test]
async fn kubernetes_auth_with_a_pod_bound_token() {
    let kube = TestKube::get();
    let ns = kube.namespace("vault-k8s").await;
    kube.create_service_account(&ns, "web", &[]).await;
    kube.create_service_account(&ns, "intruder", &[]).await;
    let pod = kube.create_pod(&ns, "web-0", "web").await;
    let uid = pod.metadata.uid.clone().unwrap();
    let token = kube
        .request_token(&ns, "web", &["vault"], Some(("web-0", &uid)))
        .await;
    let intruder = kube.request_token(&ns, "intruder", &["vault"], None).await;

    let bao = OpenBao::start().await;
    bao.enable_kubernetes_auth("kubernetes", kube).await;
    bao.put_policy(
        "web",
        "path \"secret/data/web\" { capabilities = [\"read\"] }",
    )
    .await;
    bao.kubernetes_role(
        "kubernetes",
        "web",
        &["web"],
        &[&ns],
        &["web"],
        Some("vault"),
    )
    .await;
    bao.kv2_put("secret", "web", json!({"password": "k8s-pass"}))
        .await;
    bao.kv2_put("secret", "admin", json!({"password": "admin-pass"}))
        .await;

    let objects = "- {objectName: p, secretPath: secret/data/web, secretKey: password}";
    let params = [
        ("vaultAddress", bao.addr()),
        ("roleName", "web"),
        ("objects", objects),
    ];
    let p = provider();
    let out = p
        .mount(&input(&ns, "web", &tokens_json("vault", &token), &params))
        .await
        .unwrap();
    assert_eq!(text(&out, "p"), "k8s-pass");
    assert_eq!(bao.count_logins("kubernetes"), 1);

    let err = p
        .mount(&input(
            &ns,
            "intruder",
            &tokens_json("vault", &intruder),
            &params,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::PermissionDenied,
        "unbound ServiceAccount: {err}"
    );
    let admin = "- {objectName: p, secretPath: secret/data/admin, secretKey: password}";
    let err = p
        .mount(&input(
            &ns,
            "web",
            &tokens_json("vault", &token),
            &[
                ("vaultAddress", bao.addr()),
                ("roleName", "web"),
                ("objects", admin),
            ],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "policy denial: {err}");
    assert!(err.to_string().contains("/v1/secret/data/admin"), "{err}");
    let err = p
        .mount(&input(
            &ns,
            "web",
            &tokens_json("vault", &token),
            &[
                ("vaultAddress", bao.addr()),
                ("roleName", "nope"),
                ("objects", objects),
            ],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "wrong role: {err}");
}

async fn tls_mount(
    bao: &OpenBao,
    tokens: &str,
    extra: &[(&str, &str)],
) -> Result<String, keymount::provider::ProviderError> {
    tls_mount_with(bao, tokens, extra, &[]).await
}

/// A mount over TLS whose class may name files beneath `dirs`.
async fn tls_mount_with(
    bao: &OpenBao,
    tokens: &str,
    extra: &[(&str, &str)],
    dirs: &[&std::path::Path],
) -> Result<String, keymount::provider::ProviderError> {
    let objects = "- {objectName: p, secretPath: secret/data/app, secretKey: password}";
    let mut params = vec![
        ("vaultAddress", bao.addr()),
        ("roleName", "web"),
        ("vaultAuthMountPath", "jwt"),
        ("objects", objects),
    ];
    params.extend_from_slice(extra);
    provider_with(dirs, &["127.0.0.1"])
        .mount(&input("shop", "web", tokens, &params))
        .await
        .map(|o| text(&o, "p"))
}

#[tokio::test]
async fn tls_ca_path_ca_dir_server_name_and_skip_verify() {
    let bao = OpenBao::start_tls().await;
    let signer = Signer::new();
    jwt_setup(
        &bao,
        "",
        &signer,
        "web",
        "shop",
        "web",
        &["secret/data/app"],
    )
    .await;
    bao.kv2_put("secret", "app", json!({"password": "over-tls"}))
        .await;
    let tokens = tokens_json("vault", &signer.token("shop", "web", "vault"));
    let ca_path = bao.ca_cert_path().unwrap();
    let ca = ca_path.display().to_string();
    let ca_tmp = tempfile::tempdir().unwrap();
    std::fs::copy(&ca, ca_tmp.path().join("bao-ca.pem")).unwrap();
    let ca_dir = ca_tmp.path().display().to_string();
    let allowed = [ca_path.parent().unwrap(), ca_tmp.path()];

    assert_eq!(
        tls_mount_with(&bao, &tokens, &[("vaultCACertPath", &ca)], &allowed)
            .await
            .unwrap(),
        "over-tls"
    );
    assert_eq!(
        tls_mount_with(&bao, &tokens, &[("vaultCADirectory", &ca_dir)], &allowed)
            .await
            .unwrap(),
        "over-tls"
    );
    assert_eq!(
        tls_mount(&bao, &tokens, &[("vaultSkipTLSVerify", "true")])
            .await
            .unwrap(),
        "over-tls"
    );
    let named = [
        ("vaultCACertPath", ca.as_str()),
        ("vaultTLSServerName", "localhost"),
    ];
    assert_eq!(
        tls_mount_with(&bao, &tokens, &named, &allowed)
            .await
            .unwrap(),
        "over-tls"
    );

    let err = tls_mount(&bao, &tokens, &[]).await.unwrap_err();
    assert_eq!(
        err.code(),
        Code::Unavailable,
        "untrusted CA must fail: {err}"
    );
    let wrong = [
        ("vaultCACertPath", ca.as_str()),
        ("vaultTLSServerName", "wrong.example.com"),
    ];
    let err = tls_mount_with(&bao, &tokens, &wrong, &allowed)
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::Unavailable,
        "wrong server name must fail: {err}"
    );
    let missing = format!("{ca_dir}/missing.pem");
    let err = tls_mount_with(&bao, &tokens, &[("vaultCACertPath", &missing)], &allowed)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(
        err.to_string().contains("vaultCACertPath") && err.to_string().contains(&missing),
        "{err}"
    );
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

/// Every log line of this test binary at TRACE, from all tests and threads. A global
/// subscriber, because a thread-local one misses events whose callsite another test thread
/// registered first.
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
async fn fifty_concurrent_mounts_one_login_one_read_no_sharing_no_leaks() {
    let logs = captured_logs();
    let bao = OpenBao::start().await;
    let signer = Signer::new();
    jwt_setup(
        &bao,
        "",
        &signer,
        "web",
        "shop",
        "web",
        &["secret/data/web", "secret/data/web2"],
    )
    .await;
    jwt_setup(
        &bao,
        "",
        &signer,
        "admin",
        "shop",
        "admin",
        &["secret/data/admin"],
    )
    .await;
    // One role for two ServiceAccounts whose policy differs by ServiceAccount (templated).
    let accessor = bao
        .api("GET", "sys/auth/jwt", serde_json::Value::Null)
        .await["data"]["accessor"]
        .as_str()
        .unwrap()
        .to_owned();
    bao.put_policy("per-sa", &format!("path \"secret/data/sa/{{{{identity.entity.aliases.{accessor}.name}}}}\" {{ capabilities = [\"read\"] }}")).await;
    bao.api(
        "POST",
        "auth/jwt/role/shared",
        json!({"role_type": "jwt", "bound_audiences": ["vault"], "user_claim": "sub",
               "bound_claims": {"sub": ["system:serviceaccount:shop:a", "system:serviceaccount:shop:b"]},
               "token_policies": ["per-sa"], "token_ttl": "1h"}),
    )
    .await;
    bao.kv2_put("secret", "web", json!({"password": "web-secret-value-123"}))
        .await;
    bao.kv2_put("secret", "web2", json!({"api": "web2-secret-value-456"}))
        .await;
    bao.kv2_put(
        "secret",
        "sa/system:serviceaccount:shop:a",
        json!({"v": "only-for-a-789"}),
    )
    .await;

    let web_token = signer.token("shop", "web", "vault");
    let objects = "- {objectName: p, secretPath: secret/data/web, secretKey: password}\n- {objectName: k, secretPath: secret/data/web2, secretKey: api}";
    let params = [
        ("vaultAddress", bao.addr()),
        ("roleName", "web"),
        ("vaultAuthMountPath", "jwt"),
        ("objects", objects),
    ];
    let p = Arc::new(provider());
    let inputs: Vec<_> = (0..50)
        .map(|_| input("shop", "web", &tokens_json("vault", &web_token), &params))
        .collect();
    // One task per mount, as the node serves each NodePublishVolume: every mount has asked
    // before the server has answered anything.
    let tasks: Vec<_> = inputs
        .iter()
        .map(|i| {
            let (p, i) = (p.clone(), i.clone());
            tokio::spawn(async move { p.mount(&i).await })
        })
        .collect();
    let results: Vec<_> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("mount task"))
        .collect();
    for result in &results {
        let out = result.as_ref().unwrap();
        assert_eq!(text(out, "p"), "web-secret-value-123");
        assert_eq!(text(out, "k"), "web2-secret-value-456");
    }
    assert_eq!(
        bao.count_logins("jwt"),
        1,
        "50 concurrent mounts of one identity log in once"
    );
    assert_eq!(
        bao.count_requests_op("read", "secret/data/web"),
        1,
        "one read of secret/data/web; audited: {:?}",
        bao.audited_requests()
    );
    assert_eq!(bao.count_requests_op("read", "secret/data/web2"), 1);

    // A later mount reuses the cached token (a read, no login).
    p.mount(&inputs[0]).await.unwrap();
    assert_eq!(bao.count_logins("jwt"), 1);
    assert_eq!(bao.count_requests_op("read", "secret/data/web"), 2);

    // A revoked token: 403, one new login, success.
    bao.api("POST", "sys/leases/revoke-prefix/auth/jwt", json!({}))
        .await;
    p.mount(&inputs[0]).await.unwrap();
    assert_eq!(bao.count_logins("jwt"), 2, "re-login after 403");

    // Same role, other ServiceAccount: its own login, and no access to a's path via the cache.
    let a_path = "- {objectName: v, secretPath: \"secret/data/sa/system:serviceaccount:shop:a\", secretKey: v}";
    let shared = [
        ("vaultAddress", bao.addr()),
        ("roleName", "shared"),
        ("vaultAuthMountPath", "jwt"),
        ("objects", a_path),
    ];
    let a_token = tokens_json("vault", &signer.token("shop", "a", "vault"));
    let b_token = tokens_json("vault", &signer.token("shop", "b", "vault"));
    let out = p
        .mount(&input("shop", "a", &a_token, &shared))
        .await
        .unwrap();
    assert_eq!(text(&out, "v"), "only-for-a-789");
    let err = p
        .mount(&input("shop", "b", &b_token, &shared))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::PermissionDenied,
        "b must not use a's token: {err}"
    );
    assert_eq!(bao.count_logins("jwt"), 4);

    let admin = [
        ("vaultAddress", bao.addr()),
        ("roleName", "admin"),
        ("vaultAuthMountPath", "jwt"),
        (
            "objects",
            "- {objectName: x, secretPath: secret/data/missing}",
        ),
    ];
    let admin_token = signer.token("shop", "admin", "vault");
    let _ = p
        .mount(&input(
            "shop",
            "admin",
            &tokens_json("vault", &admin_token),
            &admin,
        ))
        .await;

    let captured = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        captured.contains("logged in to Vault"),
        "debug logs were captured:\n{captured}"
    );
    for secret in [
        "web-secret-value-123",
        "web2-secret-value-456",
        "only-for-a-789",
        &web_token,
        &admin_token,
    ] {
        assert!(
            !captured.contains(secret),
            "a secret or token reached the logs"
        );
    }
}

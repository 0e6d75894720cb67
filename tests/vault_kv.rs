//! The vault provider against a real OpenBao dev server, through the `Provider` trait: KV v1
//! and v2, encodings, permissions, versions, PKI issue and database credentials (one per
//! replica), namespaces, and the failure codes.

mod support;
mod vault_support;

use keymount::provider::Provider;
use serde_json::json;
use support::openbao::OpenBao;
use support::postgres::Postgres;
use tonic::Code;
use vault_support::{Signer, input, jwt_setup, mode, provider, text, tokens_json};

const NS: &str = "shop";
const SA: &str = "web";

async fn server() -> (OpenBao, Signer, String) {
    let bao = OpenBao::start().await;
    let signer = Signer::new();
    jwt_setup(
        &bao,
        "",
        &signer,
        "web",
        NS,
        SA,
        &["secret/data/app", "kv1/app", "pki/issue/web"],
    )
    .await;
    let tokens = tokens_json("vault", &signer.token(NS, SA, "vault"));
    (bao, signer, tokens)
}

fn params<'a>(bao: &'a OpenBao, objects: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("vaultAddress", bao.addr()),
        ("vaultAuthMountPath", "jwt"),
        ("roleName", "web"),
        ("objects", objects),
    ]
}

#[tokio::test]
async fn kv2_and_kv1_keys_whole_responses_encodings_permissions_versions() {
    let (bao, _signer, tokens) = server().await;
    bao.kv2_put(
        "secret",
        "app",
        json!({"password": "kv2-pass-one", "n": 7, "nested": {"a": [1, 2]}}),
    )
    .await;
    bao.kv2_put(
        "secret",
        "app",
        json!({"password": "kv2-pass-two", "n": 7, "nested": {"a": [1, 2]}, "b64": "aGVsbG8gYjY0", "hex": "68657821"}),
    )
    .await;
    bao.enable_kv1("kv1").await;
    bao.kv1_put("kv1", "app", json!({"user": "kv1-admin"}))
        .await;

    let objects = r#"
- {objectName: password, secretPath: secret/data/app, secretKey: password, filePermission: 0600}
- {objectName: old-password, secretPath: "secret/data/app?version=1", secretKey: password}
- {objectName: n, secretPath: secret/data/app, secretKey: n}
- {objectName: nested.json, secretPath: secret/data/app, secretKey: nested}
- {objectName: b64, secretPath: secret/data/app, secretKey: b64, encoding: base64}
- {objectName: hex, secretPath: /v1/secret/data/app, secretKey: hex, encoding: hex, filePermission: 256}
- {objectName: whole.json, secretPath: secret/data/app}
- {objectName: kv1-user, secretPath: kv1/app, secretKey: user}
"#;
    let p = provider();
    let out = p
        .mount(&input(NS, SA, &tokens, &params(&bao, objects)))
        .await
        .unwrap();
    assert_eq!(text(&out, "password"), "kv2-pass-two");
    assert_eq!(mode(&out, "password"), 0o600);
    assert_eq!(text(&out, "old-password"), "kv2-pass-one");
    assert_eq!(text(&out, "n"), "7");
    assert_eq!(text(&out, "nested.json"), r#"{"a":[1,2]}"#);
    assert_eq!(text(&out, "b64"), "hello b64");
    assert_eq!(text(&out, "hex"), "hex!");
    assert_eq!(mode(&out, "hex"), 0o400);
    assert_eq!(mode(&out, "n"), 0o644);
    assert_eq!(text(&out, "kv1-user"), "kv1-admin");
    let whole: serde_json::Value = serde_json::from_str(&text(&out, "whole.json")).unwrap();
    assert_eq!(whole["data"]["data"]["password"], "kv2-pass-two");
    assert_eq!(whole["data"]["metadata"]["version"], 2);
    assert!(whole.get("request_id").is_some() && whole.get("lease_duration").is_some());
    // KV v1 hands out a 32-day lease hint: the refresh time is before it ends.
    let refresh = out
        .refresh_before
        .expect("KV v1 lease gives a refresh time");
    assert!(refresh > jiff::Timestamp::now() + jiff::SignedDuration::from_hours(20 * 24));
    assert_eq!(out.versions.len(), 8);

    // Versions are stable across mounts (and providers) and change with the content.
    let again = provider()
        .mount(&input(NS, SA, &tokens, &params(&bao, objects)))
        .await
        .unwrap();
    // (whole responses carry Vault's request_id, so they differ per read, as upstream)
    let stable = |v: &[keymount::provider::ObjectVersion]| {
        v.iter()
            .filter(|v| v.id != "whole.json")
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(stable(&out.versions), stable(&again.versions));
    bao.kv2_put(
        "secret",
        "app",
        json!({"password": "kv2-pass-three", "n": 7, "nested": {}, "b64": "", "hex": ""}),
    )
    .await;
    let third = p
        .mount(&input(NS, SA, &tokens, &params(&bao, objects)))
        .await
        .unwrap();
    let changed: Vec<_> = out
        .versions
        .iter()
        .zip(&third.versions)
        .filter(|(a, b)| a != b)
        .map(|(a, _)| a.id.as_str())
        .collect();
    assert!(
        changed.contains(&"password")
            && !changed.contains(&"kv1-user")
            && !changed.contains(&"old-password"),
        "{changed:?}"
    );
}

#[tokio::test]
async fn pki_issue_via_post_reads_once_and_sets_refresh() {
    let (bao, _signer, tokens) = server().await;
    bao.api(
        "POST",
        "sys/mounts/pki",
        json!({"type": "pki", "config": {"max_lease_ttl": "24h"}}),
    )
    .await;
    bao.api(
        "POST",
        "pki/root/generate/internal",
        json!({"common_name": "keymount test CA", "ttl": "24h"}),
    )
    .await;
    bao.api(
        "POST",
        "pki/roles/web",
        json!({"allowed_domains": "example.com", "allow_subdomains": true, "max_ttl": "1h", "generate_lease": true}),
    )
    .await;
    let objects = r#"
- objectName: tls.crt
  secretPath: pki/issue/web
  method: POST
  secretKey: certificate
  secretArgs: {common_name: shop.example.com, ttl: 10m}
- objectName: tls.key
  secretPath: pki/issue/web
  method: POST
  secretKey: private_key
  secretArgs: {common_name: shop.example.com, ttl: 10m}
  filePermission: 0400
"#;
    let before = bao.count_requests_op("update", "pki/issue/web");
    let out = provider()
        .mount(&input(NS, SA, &tokens, &params(&bao, objects)))
        .await
        .unwrap();
    assert!(text(&out, "tls.crt").starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(text(&out, "tls.key").contains("PRIVATE KEY-----"));
    assert_eq!(mode(&out, "tls.key"), 0o400);
    assert_eq!(
        bao.count_requests_op("update", "pki/issue/web") - before,
        1,
        "one issue for both objects"
    );
    let refresh = out
        .refresh_before
        .expect("leased certificate gives a refresh time");
    let now = jiff::Timestamp::now();
    assert!(
        refresh > now + jiff::SignedDuration::from_mins(6)
            && refresh < now + jiff::SignedDuration::from_mins(10),
        "{refresh}"
    );

    let bad = "- {objectName: c, secretPath: pki/issue/web, method: POST, secretKey: certificate, secretArgs: {common_name: evil.invalid}}";
    let err = provider()
        .mount(&input(NS, SA, &tokens, &params(&bao, bad)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.to_string().contains("/v1/pki/issue/web"), "{err}");
}

#[tokio::test]
async fn pki_issue_for_three_replicas_of_one_service_account_gives_three_certificates() {
    let (bao, _signer, tokens) = server().await;
    bao.api(
        "POST",
        "sys/mounts/pki",
        json!({"type": "pki", "config": {"max_lease_ttl": "24h"}}),
    )
    .await;
    bao.api(
        "POST",
        "pki/root/generate/internal",
        json!({"common_name": "keymount test CA", "ttl": "24h"}),
    )
    .await;
    bao.api(
        "POST",
        "pki/roles/web",
        json!({"allowed_domains": "example.com", "allow_subdomains": true, "max_ttl": "1h"}),
    )
    .await;
    let objects = r#"
- {objectName: tls.crt, secretPath: pki/issue/web, method: POST, secretKey: certificate, secretArgs: {common_name: shop.example.com}}
- {objectName: tls.key, secretPath: pki/issue/web, method: POST, secretKey: private_key, secretArgs: {common_name: shop.example.com}}
- {objectName: serial, secretPath: pki/issue/web, method: POST, secretKey: serial_number, secretArgs: {common_name: shop.example.com}}
"#;
    // Three pods of one Deployment: the same ServiceAccount, class and token identity, at once.
    let p = std::sync::Arc::new(provider());
    let replica = input(NS, SA, &tokens, &params(&bao, objects));
    let before = bao.count_requests_op("update", "pki/issue/web");
    let mounts: Vec<_> = (0..3)
        .map(|_| {
            let (p, i) = (p.clone(), replica.clone());
            tokio::spawn(async move { p.mount(&i).await.unwrap() })
        })
        .collect();
    let outs: Vec<_> = futures::future::join_all(mounts)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let mut serials: Vec<String> = outs.iter().map(|o| text(o, "serial")).collect();
    let mut keys: Vec<String> = outs.iter().map(|o| text(o, "tls.key")).collect();
    serials.sort();
    serials.dedup();
    keys.sort();
    keys.dedup();
    assert_eq!(serials.len(), 3, "three certificates: {serials:?}");
    assert_eq!(keys.len(), 3, "three private keys");
    assert_eq!(
        bao.count_requests_op("update", "pki/issue/web") - before,
        3,
        "one issue per replica (each replica's files from its own issue)"
    );
}

#[tokio::test]
async fn database_creds_for_three_replicas_are_three_users_and_leases() {
    let pg = Postgres::start().await;
    let bao = OpenBao::start().await;
    let signer = Signer::new();
    jwt_setup(&bao, "", &signer, "web", NS, SA, &["database/creds/app"]).await;
    let tokens = tokens_json("vault", &signer.token(NS, SA, "vault"));
    bao.api("POST", "sys/mounts/database", json!({"type": "database"}))
        .await;
    bao.api(
        "POST",
        "database/config/pg",
        json!({
            "plugin_name": "postgresql-database-plugin",
            "connection_url": pg.connection_url(),
            "username": "admin", "password": "trust-auth-ignores-it",
            "allowed_roles": ["app"],
        }),
    )
    .await;
    bao.api(
        "POST",
        "database/roles/app",
        json!({
            "db_name": "pg",
            "creation_statements": ["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"],
            "default_ttl": "1h", "max_ttl": "2h",
        }),
    )
    .await;
    // `database/creds` is a GET, like a static read, but every answer is a new user and lease.
    let objects = "- {objectName: user, secretPath: database/creds/app, secretKey: username}\n- {objectName: password, secretPath: database/creds/app, secretKey: password}";
    let p = std::sync::Arc::new(provider());
    let replica = input(NS, SA, &tokens, &params(&bao, objects));
    let mounts: Vec<_> = (0..3)
        .map(|_| {
            let (p, i) = (p.clone(), replica.clone());
            tokio::spawn(async move { p.mount(&i).await.unwrap() })
        })
        .collect();
    let outs: Vec<_> = futures::future::join_all(mounts)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let mut users: Vec<String> = outs.iter().map(|o| text(o, "user")).collect();
    for user in &users {
        assert_eq!(
            pg.query(&format!(
                "SELECT count(*) FROM pg_roles WHERE rolname = '{user}'"
            ))
            .trim(),
            "1",
            "{user} exists in PostgreSQL"
        );
    }
    users.sort();
    users.dedup();
    assert_eq!(users.len(), 3, "three database users: {users:?}");
    assert_eq!(bao.count_requests_op("read", "database/creds/app"), 3);
    assert!(
        outs.iter().all(|o| o.refresh_before.is_some()),
        "each lease sets its refresh time"
    );
}

#[tokio::test]
async fn failures_map_to_codes_and_name_the_path() {
    let (bao, signer, tokens) = server().await;
    bao.kv2_put("secret", "app", json!({"password": "p"})).await;
    bao.kv2_put("secret", "other", json!({"password": "p"}))
        .await;
    let p = provider();
    let mount =
        |objects: &'static str, tokens: String, extra: Vec<(&'static str, &'static str)>| {
            let mut params = params(&bao, objects);
            params.extend(extra);
            let input = input(NS, SA, &tokens, &params);
            let p = &p;
            async move { p.mount(&input).await.unwrap_err() }
        };
    let err = mount(
        "- {objectName: a, secretPath: secret/data/other, secretKey: password}",
        tokens.clone(),
        vec![],
    )
    .await;
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    assert!(err.to_string().contains("/v1/secret/data/other"), "{err}");

    bao.put_policy(
        "web",
        "path \"secret/data/*\" { capabilities = [\"read\"] }",
    )
    .await;
    let err = mount(
        "- {objectName: a, secretPath: secret/data/missing, secretKey: password}",
        tokens.clone(),
        vec![],
    )
    .await;
    assert_eq!(err.code(), Code::NotFound, "{err}");
    assert!(err.to_string().contains("/v1/secret/data/missing"), "{err}");
    let err = mount(
        "- {objectName: a, secretPath: secret/data/app, secretKey: nope}",
        tokens.clone(),
        vec![],
    )
    .await;
    assert_eq!(err.code(), Code::NotFound, "{err}");
    assert!(
        err.to_string().contains(r#"key "nope" does not exist"#),
        "{err}"
    );

    let wrong_role = vec![("roleName", "nobody")];
    let mut params_wrong = params(&bao, "- {objectName: a, secretPath: secret/data/app}");
    params_wrong.retain(|(k, _)| *k != "roleName");
    params_wrong.extend(wrong_role);
    let err = p
        .mount(&input(NS, SA, &tokens, &params_wrong))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    assert!(
        err.to_string().contains("auth/jwt/login") && err.to_string().contains("nobody"),
        "{err}"
    );

    let stranger = tokens_json("vault", &signer.token(NS, "stranger", "vault"));
    let err = mount(
        "- {objectName: a, secretPath: secret/data/app}",
        stranger,
        vec![],
    )
    .await;
    assert_eq!(
        err.code(),
        Code::PermissionDenied,
        "unbound ServiceAccount: {err}"
    );

    let aws_only = tokens_json(
        "sts.amazonaws.com",
        &signer.token(NS, SA, "sts.amazonaws.com"),
    );
    let err = mount(
        "- {objectName: a, secretPath: secret/data/app}",
        aws_only,
        vec![],
    )
    .await;
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(
        err.to_string().contains("tokenRequests") && err.to_string().contains("\"vault\""),
        "{err}"
    );
    let custom = mount(
        "- {objectName: a, secretPath: secret/data/app}",
        tokens.clone(),
        vec![("audience", "custom-aud")],
    )
    .await;
    assert!(custom.to_string().contains("\"custom-aud\""), "{custom}");

    let err = mount(
        "- {objectName: a, secretPath: secret/data/app}",
        tokens.clone(),
        vec![("vaultSkipTLSVerify", "maybe")],
    )
    .await;
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.to_string().contains("vaultSkipTLSVerify"), "{err}");

    // Sealed: 503 from Vault.
    bao.api("PUT", "sys/seal", serde_json::Value::Null).await;
    let err = provider()
        .mount(&input(
            NS,
            SA,
            &tokens,
            &params(&bao, "- {objectName: a, secretPath: secret/data/app}"),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "sealed: {err}");
    // Down: nothing listens.
    drop(bao);
    let port = support::proc::free_port();
    let addr = format!("http://127.0.0.1:{port}");
    let down = vec![
        ("vaultAddress", addr.as_str()),
        ("roleName", "web"),
        ("vaultAuthMountPath", "jwt"),
        ("objects", "- {objectName: a, secretPath: secret/data/app}"),
    ];
    let err = provider()
        .mount(&input(NS, SA, &tokens, &down))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "down: {err}");
    assert!(err.to_string().contains(&addr), "{err}");
}

#[tokio::test]
async fn vault_namespaces_are_sent_as_header() {
    let bao = OpenBao::start().await;
    let (status, body) = bao
        .request("POST", "sys/namespaces/team1", json!({}), Some("root"))
        .await;
    assert!(
        status.is_success(),
        "this OpenBao build must support namespaces: {status} {body}"
    );
    bao.api(
        "POST",
        "team1/sys/mounts/kv",
        json!({"type": "kv", "options": {"version": "2"}}),
    )
    .await;
    bao.api(
        "POST",
        "team1/kv/data/app",
        json!({"data": {"password": "in-namespace"}}),
    )
    .await;
    let signer = Signer::new();
    jwt_setup(&bao, "team1/", &signer, "web", NS, SA, &["kv/data/app"]).await;
    let tokens = tokens_json("vault", &signer.token(NS, SA, "vault"));
    let objects = "- {objectName: p, secretPath: kv/data/app, secretKey: password}";
    let mut with_ns = params(&bao, objects);
    with_ns.push(("vaultNamespace", "team1"));
    let out = provider()
        .mount(&input(NS, SA, &tokens, &with_ns))
        .await
        .unwrap();
    assert_eq!(text(&out, "p"), "in-namespace");
    let err = provider()
        .mount(&input(NS, SA, &tokens, &params(&bao, objects)))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::PermissionDenied,
        "without the namespace the role does not exist: {err}"
    );
}

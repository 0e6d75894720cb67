//! Helpers of the Vault tests: an offline RSA key pair that signs ServiceAccount-like JWTs,
//! JWT auth set up on an OpenBao server, and mount inputs built like publish builds them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use keymount::provider::access::{Access, AccessArgs};
use keymount::provider::vault::{VaultArgs, VaultOptions, VaultProvider};
use keymount::provider::version_key::VersionKey;
use serde_json::{Value, json};

use crate::support::openbao::OpenBao;

/// The issuer the signed tokens carry.
pub(crate) const ISSUER: &str = "https://kubernetes.keymount.test";

/// An RSA key pair made with openssl; signs RS256 JWTs.
#[derive(Debug)]
pub(crate) struct Signer {
    key: PathBuf,
    pub(crate) public_pem: String,
    _dir: tempfile::TempDir,
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().expect("run openssl");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

impl Signer {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("sa.key");
        run(Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
            ])
            .arg(&key));
        let public = run(Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&key));
        Self {
            key,
            public_pem: String::from_utf8(public).unwrap(),
            _dir: dir,
        }
    }

    /// A token for ServiceAccount `ns/sa` and `audience`, valid for an hour.
    pub(crate) fn token(&self, ns: &str, sa: &str, audience: &str) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = json!({
            "iss": ISSUER, "sub": format!("system:serviceaccount:{ns}:{sa}"), "aud": [audience],
            "iat": now, "nbf": now - 5, "exp": now + 3600,
            "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": sa, "uid": format!("uid-{ns}-{sa}")}},
        });
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let input = format!(
            "{}.{}",
            b64(br#"{"alg":"RS256","typ":"JWT"}"#),
            b64(claims.to_string().as_bytes())
        );
        let mut child = Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&self.key)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        format!("{input}.{}", b64(&out.stdout))
    }
}

/// Enables `auth/jwt` (path prefix `prefix`, e.g. "" or "team1/") trusting `signer`, a policy
/// reading `paths`, and role `role` for ServiceAccount `ns/sa` with audience `vault`.
pub(crate) async fn jwt_setup(
    bao: &OpenBao,
    prefix: &str,
    signer: &Signer,
    role: &str,
    ns: &str,
    sa: &str,
    paths: &[&str],
) {
    let (status, _) = bao
        .request(
            "GET",
            &format!("{prefix}sys/auth/jwt"),
            Value::Null,
            Some("root"),
        )
        .await;
    if !status.is_success() {
        bao.api(
            "POST",
            &format!("{prefix}sys/auth/jwt"),
            json!({"type": "jwt"}),
        )
        .await;
        bao.api(
            "POST",
            &format!("{prefix}auth/jwt/config"),
            json!({"jwt_validation_pubkeys": [signer.public_pem], "bound_issuer": ISSUER}),
        )
        .await;
    }
    let hcl: String = paths
        .iter()
        .map(|p| format!("path \"{p}\" {{ capabilities = [\"read\", \"update\"] }}\n"))
        .collect();
    bao.api(
        "PUT",
        &format!("{prefix}sys/policies/acl/{role}"),
        json!({"policy": hcl}),
    )
    .await;
    bao.api(
        "POST",
        &format!("{prefix}auth/jwt/role/{role}"),
        json!({
            "role_type": "jwt", "bound_audiences": ["vault"], "user_claim": "sub",
            "bound_subject": format!("system:serviceaccount:{ns}:{sa}"),
            "token_policies": [role], "token_ttl": "1h",
        }),
    )
    .await;
}

/// The HMAC key of the tests' object versions.
pub(crate) const TEST_HMAC_KEY: &[u8] = b"keymount-test-hmac-key-0123456789abcdef";

/// Node options as the node sets them by default, with the test key.
pub(crate) fn options() -> VaultOptions {
    VaultOptions {
        max_response_bytes: 4 * 1024 * 1024,
        version_key: VersionKey::from_bytes(TEST_HMAC_KEY, "test").unwrap(),
    }
}

/// A provider with default node flags, allowed to reach OpenBao on loopback (as
/// `--allowed-store-addresses=127.0.0.1`) and no node file.
pub(crate) fn provider() -> VaultProvider {
    provider_with(&[], &["127.0.0.1"])
}

/// A provider whose classes may name files beneath `dirs` and the store `addresses`
/// (`--allowed-file-dirs`, `--allowed-store-addresses`).
pub(crate) fn provider_with(dirs: &[&Path], addresses: &[&str]) -> VaultProvider {
    VaultProvider::new(VaultArgs::default(), access(dirs, addresses), options())
}

/// What `--allowed-file-dirs=dirs` and `--allowed-store-addresses=addresses` allow.
pub(crate) fn access(dirs: &[&Path], addresses: &[&str]) -> Access {
    Access::from_args(&AccessArgs {
        allowed_file_dirs: dirs.iter().map(|d| d.to_path_buf()).collect(),
        allowed_store_addresses: addresses.iter().map(|a| a.to_string()).collect(),
        allow_volume_attribute_overrides: Vec::new(),
    })
    .unwrap()
}

/// Kubelet's tokens JSON for one audience.
pub(crate) fn tokens_json(audience: &str, token: &str) -> String {
    json!({ audience: {"token": token, "expirationTimestamp": "2099-01-01T00:00:00Z"} }).to_string()
}

/// Every unkeyed digest of `value` that could stand in an object version: SHA-256 of the
/// value, and of each of `objects`' configuration followed by the value (the construction
/// versions used before they were keyed), in hex, base64 and base64url.
pub(crate) fn unkeyed_digests(value: &str, objects: &str) -> Vec<String> {
    let mut inputs = vec![value.as_bytes().to_vec()];
    for object in keymount::provider::vault::params::parse_objects(objects).unwrap() {
        let mut input = serde_json::to_vec(&object).unwrap();
        input.extend_from_slice(value.as_bytes());
        inputs.push(input);
    }
    let mut out = Vec::new();
    for input in inputs {
        let digest = ring::digest::digest(&ring::digest::SHA256, &input);
        let bytes = digest.as_ref();
        out.push(hex::encode(bytes));
        out.push(base64::engine::general_purpose::STANDARD.encode(bytes));
        out.push(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
    }
    out
}

#[allow(unused_imports)]
pub(crate) use crate::support::mount_input::{input, mode, text};

//! Tenant input never names a node resource: files a class or pod names are read only
//! beneath `--allowed-file-dirs` (no link or `..` out, no FIFO, no content in errors), store
//! addresses only as `--allowed-store-addresses` allows (link-local, loopback and node
//! sockets refused before any connection, also when a DNS name resolves to them), and a
//! pod's volumeAttributes cannot override the class's security-relevant parameters unless
//! the admin opts in. Against a real OpenBao over TLS, and end to end through the real
//! `keymount node` binary over its CSI socket.

#[path = "../harness/mod.rs"]
mod harness;
#[path = "../support/mod.rs"]
mod support;
#[path = "../vault_support/mod.rs"]
mod vault_support;

mod addresses;
mod files;
mod node;

use std::path::Path;
use std::time::Duration;

use keymount::provider::Provider;
use serde_json::json;
use support::openbao::OpenBao;
use tonic::Code;
use vault_support::{Signer, input, jwt_setup, provider_with, text, tokens_json};

pub(crate) const OBJECTS: &str =
    "- {objectName: p, secretPath: secret/data/app, secretKey: password}";
pub(crate) const MARKER: &str = "NODE-FILE-CONTENT-MARKER-7731";

/// A TLS OpenBao with role `web` for ServiceAccount shop/web reading `secret/data/app`.
pub(crate) async fn tls_vault() -> (OpenBao, String) {
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
    bao.kv2_put("secret", "app", json!({"password": "tenant-secret-1"}))
        .await;
    let tokens = tokens_json("vault", &signer.token("shop", "web", "vault"));
    (bao, tokens)
}

/// A node layout: `allowed/` (the admin's directory, holding a good CA), and another pod's
/// volume outside it holding a valid CA certificate too, so that a read that escaped would
/// succeed instead of failing for another reason.
#[derive(Debug)]
pub(crate) struct Layout {
    pub(crate) tmp: tempfile::TempDir,
}

impl Layout {
    pub(crate) fn new(bao: &OpenBao) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let ca = std::fs::read(bao.ca_cert_path().unwrap()).unwrap();
        let allowed = tmp.path().join("allowed");
        std::fs::create_dir_all(allowed.join("cadir")).unwrap();
        std::fs::write(allowed.join("ca.pem"), &ca).unwrap();
        std::fs::write(allowed.join("cadir/ca.pem"), &ca).unwrap();
        let other = tmp.path().join("pods/other/volumes/tls");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("ca.pem"), &ca).unwrap();
        Self { tmp }
    }

    pub(crate) fn allowed(&self) -> std::path::PathBuf {
        self.tmp.path().join("allowed")
    }

    pub(crate) fn other_pod(&self) -> std::path::PathBuf {
        self.tmp.path().join("pods/other/volumes/tls/ca.pem")
    }

    pub(crate) fn path(&self, rel: &str) -> String {
        self.tmp.path().join(rel).display().to_string()
    }
}

pub(crate) async fn mount_with(
    bao: &OpenBao,
    tokens: &str,
    dirs: &[&Path],
    extra: &[(&str, &str)],
) -> Result<String, keymount::provider::ProviderError> {
    mount_at_addr(bao.addr(), tokens, dirs, extra).await
}

pub(crate) async fn mount_at_addr(
    addr: &str,
    tokens: &str,
    dirs: &[&Path],
    extra: &[(&str, &str)],
) -> Result<String, keymount::provider::ProviderError> {
    let mut params = vec![
        ("vaultAddress", addr),
        ("roleName", "web"),
        ("vaultAuthMountPath", "jwt"),
        ("objects", OBJECTS),
    ];
    params.extend_from_slice(extra);
    let p = provider_with(dirs, &["127.0.0.1"]);
    tokio::time::timeout(
        Duration::from_secs(20),
        p.mount(&input("shop", "web", tokens, &params)),
    )
    .await
    .expect("a mount never hangs on a node file")
    .map(|o| text(&o, "p"))
}

pub(crate) fn assert_refused(
    result: Result<String, keymount::provider::ProviderError>,
    parameter: &str,
    why: &str,
) {
    let err = result.expect_err("must be refused");
    let message = err.to_string();
    assert_eq!(err.code(), Code::InvalidArgument, "{message}");
    assert!(message.contains(parameter), "names {parameter}: {message}");
    assert!(message.contains(why), "says {why:?}: {message}");
    // Not as text, nor as the byte list a parser's `Debug` of a line would print.
    let as_bytes = format!("{:?}", &MARKER.as_bytes()[..8]);
    let as_bytes = as_bytes.trim_matches(['[', ']']);
    assert!(
        !message.contains(MARKER)
            && !message.contains(as_bytes)
            && !message.contains("BEGIN CERTIFICATE"),
        "no file content in errors: {message}"
    );
}

//! A real moto server per test (`moto_server`, AWS APIs on plain HTTP), killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
use aws_types::sdk_config::SharedCredentialsProvider;

use super::proc::{KillOnDrop, find_exe, free_port, install_crypto_provider, tail, wait_until};

pub(crate) const REGION: &str = "us-east-1";
pub(crate) const ACCESS_KEY_ID: &str = "testing";
pub(crate) const SECRET_ACCESS_KEY: &str = "testing";

/// A running moto server; stopped (SIGKILL + reap) on drop.
#[derive(Debug)]
pub(crate) struct Moto {
    process: KillOnDrop,
    endpoint: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Moto {
    /// Starts `moto_server -H 127.0.0.1 -p <free port>` and waits until it answers.
    pub(crate) async fn start() -> Moto {
        install_crypto_provider();
        let exe = find_exe("moto_server");
        let dir = tempfile::Builder::new()
            .prefix("keymount-moto-")
            .tempdir()
            .expect("temp dir");
        let log = dir.path().join("moto.log");
        let port = free_port();
        let child = Command::new(&exe)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
            .env("AWS_DEFAULT_REGION", REGION)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("moto log"))
            .stderr(std::fs::File::create(dir.path().join("moto.stderr")).expect("moto stderr"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", exe.display()));
        let mut process = KillOnDrop {
            child,
            name: "moto_server",
        };
        let endpoint = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("reqwest client");
        let probe = format!("{endpoint}/moto-api/");
        let ready = wait_until(Duration::from_secs(60), || {
            let http = http.clone();
            let probe = probe.clone();
            async move { matches!(http.get(&probe).send().await, Ok(r) if r.status().is_success()) }
        })
        .await;
        process.assert_running(&dir.path().join("moto.stderr"));
        assert!(
            ready,
            "moto at {endpoint} not answering in 60 s:\n{}",
            tail(&dir.path().join("moto.stderr"), 30)
        );
        Moto {
            process,
            endpoint,
            log,
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub(crate) fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub(crate) fn log_path(&self) -> &Path {
        &self.log
    }

    /// Static test credentials (moto accepts any).
    pub(crate) fn credentials() -> Credentials {
        Credentials::new(
            ACCESS_KEY_ID,
            SECRET_ACCESS_KEY,
            None,
            None,
            "keymount-test",
        )
    }

    /// An AWS SDK HTTP client using rustls with ring (plain HTTP is all moto needs).
    pub(crate) fn http_client() -> aws_sdk_secretsmanager::config::SharedHttpClient {
        use aws_smithy_http_client::tls;
        aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https()
    }

    /// The SDK configuration of a client of this moto: region us-east-1, static credentials.
    pub(crate) fn sdk_config(&self) -> aws_types::SdkConfig {
        aws_types::SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&self.endpoint)
            .credentials_provider(SharedCredentialsProvider::new(Self::credentials()))
            .http_client(Self::http_client())
            .build()
    }

    /// A Secrets Manager client pointed at this moto.
    pub(crate) fn secretsmanager(&self) -> aws_sdk_secretsmanager::Client {
        aws_sdk_secretsmanager::Client::new(&self.sdk_config())
    }
}

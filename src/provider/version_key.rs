//! The key of the object versions keymount derives from content: HMAC-SHA256 under a key the
//! cluster admin controls, so a version in a SecretProviderClassPodStatus (etcd) or in the state
//! journal cannot be used to guess a low-entropy secret. The key must be the same on every node
//! and across restarts (rotation compares versions), so it persists: a file the admin mounts
//! (`--hmac-key-file`), else a Secret shared by all nodes (`keymount-hmac-key` in keymount's own
//! namespace, created on first use if absent), else in local mode a file in the state directory.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::PostParams;
use ring::rand::SecureRandom as _;

/// Name of the Secret that holds the key when no key file is given.
pub const SECRET_NAME: &str = "keymount-hmac-key";
/// The Secret's data key.
pub const SECRET_KEY: &str = "key";
/// Name of the generated key file in the state directory (local mode).
pub(crate) const STATE_FILE: &str = "hmac.key";
/// Shortest key accepted, in bytes.
pub(crate) const MIN_KEY_BYTES: usize = 32;

/// Why no key could be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read.
    #[error("read HMAC key {path}: {source}")]
    Read {
        /// The key file.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// A new key file could not be written.
    #[error("create HMAC key {path}: {source}")]
    Create {
        /// The key file.
        path: PathBuf,
        /// Why it could not be written.
        #[source]
        source: std::io::Error,
    },
    /// A key too short to sign with (an HMAC key weaker than its hash).
    #[error("HMAC key from {origin} is {len} bytes; at least {MIN_KEY_BYTES} are needed")]
    TooShort {
        /// Where the key came from.
        origin: String,
        /// Its length in bytes.
        len: usize,
    },
    /// The key Secret could not be read or created.
    #[error("HMAC key Secret {namespace}/{SECRET_NAME}: {detail}")]
    Secret {
        /// The Secret's namespace.
        namespace: String,
        /// What went wrong.
        detail: String,
    },
}

/// The key. `Debug` never shows it.
#[derive(Clone)]
pub struct VersionKey(ring::hmac::Key);

impl std::fmt::Debug for VersionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VersionKey([redacted])")
    }
}

fn random_hex() -> Vec<u8> {
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random source works");
    hex::encode(bytes).into_bytes()
}

impl VersionKey {
    /// A key from these bytes (trailing whitespace, e.g. a file's newline, is ignored).
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Self, KeyError> {
        let end = bytes
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |i| i + 1);
        let bytes = &bytes[..end];
        if bytes.len() < MIN_KEY_BYTES {
            return Err(KeyError::TooShort {
                origin: origin.to_owned(),
                len: bytes.len(),
            });
        }
        Ok(Self(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, bytes)))
    }

    /// A fresh random key, for one-shot uses whose versions need not outlive the process.
    pub fn ephemeral() -> Self {
        Self::from_bytes(&random_hex(), "random").expect("64 hex characters")
    }

    /// The key in `path` (`--hmac-key-file`).
    pub(crate) fn from_file(path: &Path) -> Result<Self, KeyError> {
        let bytes = std::fs::read(path).map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// The key in `<dir>/hmac.key`, generated (mode 0600) on first use. The file appears
    /// complete or not at all: written beside it, then hard-linked into place, which fails if
    /// another process got there first (its key is then used).
    pub(crate) fn from_state_dir(dir: &Path) -> Result<Self, KeyError> {
        let path = dir.join(STATE_FILE);
        if !path.exists() {
            let create = |source| KeyError::Create {
                path: path.clone(),
                source,
            };
            std::fs::create_dir_all(dir).map_err(create)?;
            let tmp = dir.join(format!(".{STATE_FILE}.{}", std::process::id()));
            let _ = std::fs::remove_file(&tmp);
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(create)?;
            file.write_all(&random_hex())
                .and_then(|()| file.sync_all())
                .map_err(create)?;
            let linked = std::fs::hard_link(&tmp, &path);
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "generated the HMAC key of object versions")
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(create(e)),
            }
        }
        Self::from_file(&path)
    }

    /// The key in Secret `keymount-hmac-key` of `namespace`, created with a random key if it
    /// does not exist. A create that loses a race to another node reads the winner's key, so
    /// every node uses the same one.
    pub async fn from_secret(client: &kube::Client, namespace: &str) -> Result<Self, KeyError> {
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let failed = |detail: String| KeyError::Secret {
            namespace: namespace.to_owned(),
            detail,
        };
        for _ in 0..3 {
            match api.get_opt(SECRET_NAME).await {
                Ok(Some(secret)) => {
                    let data = secret.data.unwrap_or_default();
                    let key = data
                        .get(SECRET_KEY)
                        .ok_or_else(|| failed(format!("has no data key {SECRET_KEY:?}")))?;
                    return Self::from_bytes(&key.0, &format!("Secret {namespace}/{SECRET_NAME}"));
                }
                Ok(None) => {}
                Err(e) => return Err(failed(crate::kube_errors::describe(&e))),
            }
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(SECRET_NAME.to_owned()),
                    namespace: Some(namespace.to_owned()),
                    labels: Some(
                        [(
                            "app.kubernetes.io/managed-by".to_owned(),
                            "keymount".to_owned(),
                        )]
                        .into(),
                    ),
                    ..Default::default()
                },
                data: Some([(SECRET_KEY.to_owned(), ByteString(random_hex()))].into()),
                immutable: Some(true),
                ..Default::default()
            };
            match api.create(&PostParams::default(), &secret).await {
                Ok(created) => {
                    tracing::info!(
                        namespace,
                        name = SECRET_NAME,
                        "created the HMAC key Secret of object versions"
                    );
                    let key = created
                        .data
                        .and_then(|d| d.get(SECRET_KEY).cloned())
                        .ok_or_else(|| failed("created without its key".into()))?;
                    return Self::from_bytes(&key.0, &format!("Secret {namespace}/{SECRET_NAME}"));
                }
                // Another node created it first: read that one.
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(e) => return Err(failed(crate::kube_errors::describe(&e))),
            }
        }
        Err(failed("neither found nor created after 3 attempts".into()))
    }

    /// HMAC-SHA256 over the parts (each length-prefixed), URL-safe base64 without padding.
    pub fn sign(&self, parts: &[&[u8]]) -> String {
        let mut context = ring::hmac::Context::with_key(&self.0);
        for part in parts {
            context.update(&(part.len() as u64).to_be_bytes());
            context.update(part);
        }
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(context.sign().as_ref())
    }
}

/// A keyed digest of a token, for in-memory cache keys: HMAC-SHA256 under a random key made
/// once per process and never stored, so not even a heap dump holds a plain hash of a token.
pub(crate) fn token_digest(token: &[u8]) -> String {
    static KEY: std::sync::OnceLock<VersionKey> = std::sync::OnceLock::new();
    KEY.get_or_init(VersionKey::ephemeral).sign(&[token])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_and_sign_deterministically() {
        let a = VersionKey::from_bytes(&[b'a'; 32], "test").unwrap();
        let a2 = VersionKey::from_bytes(b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n", "test").unwrap();
        let b = VersionKey::from_bytes(&[b'b'; 32], "test").unwrap();
        assert_eq!(a.sign(&[b"x", b"y"]), a2.sign(&[b"x", b"y"]));
        assert_ne!(a.sign(&[b"x", b"y"]), b.sign(&[b"x", b"y"]));
        assert_ne!(a.sign(&[b"xy", b""]), a.sign(&[b"x", b"y"]));
        let short = VersionKey::from_bytes(b"short\n", "f").unwrap_err();
        assert!(short.to_string().contains("5 bytes"), "{short}");
        assert_eq!(format!("{a:?}"), "VersionKey([redacted])");
    }

    #[test]
    fn state_dir_key_is_made_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let first = VersionKey::from_state_dir(dir.path()).unwrap();
        let again = VersionKey::from_state_dir(dir.path()).unwrap();
        assert_eq!(first.sign(&[b"v"]), again.sign(&[b"v"]));
        let meta = std::fs::metadata(dir.path().join(STATE_FILE)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}

//! HTTP to Vault: reqwest over rustls (ring), one client per connection settings, honouring
//! the CA file/directory, TLS server name, skip-verify, client certificate and the
//! `X-Vault-Namespace` header. Returns raw status and body; callers classify them. Bodies are
//! read as a stream and refused once they pass the size limit; the clients are kept in a
//! small LRU ([`CLIENT_CACHE_SIZE`]).
//! An address a class names is reached through a resolver that drops refused addresses
//! (`--allowed-store-addresses`), without proxies or redirects; the files a class names are
//! read beneath `--allowed-file-dirs` (`crate::provider::access`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::client_cache::Lru;
use super::error::VaultError;
use super::params::{Connection, NodeFile, TlsSettings};
use crate::provider::access::{Access, CheckedResolver, addresses, files};
use crate::redact::Redacted;
use crate::text::error_chain;

/// One request to Vault.
#[derive(Debug)]
pub(crate) struct VaultRequest<'a> {
    pub method: reqwest::Method,
    /// Path with the `/v1/` prefix and any query, e.g. `/v1/secret/data/db?version=2`.
    pub path: &'a str,
    pub body: Option<&'a serde_json::Value>,
    pub token: Option<&'a Redacted<String>>,
}

/// Vault's answer: status and body (the body may hold secrets; it is never logged).
#[derive(Debug)]
pub(crate) struct VaultResponse {
    pub status: u16,
    pub body: Redacted<Vec<u8>>,
}

/// HTTP clients kept, one per TLS settings and transport; the least recently used goes first.
pub const CLIENT_CACHE_SIZE: usize = 16;

/// What one HTTP client is built for: the unix socket (if any), the TLS settings, and
/// whether the address came from a class (checked resolver).
type ClientKey = (String, TlsSettings, bool);

/// Builds and reuses HTTP clients per TLS settings and transport.
#[derive(Debug)]
pub(crate) struct VaultHttp {
    clients: Mutex<Lru<ClientKey, reqwest::Client>>,
    access: Access,
    max_response_bytes: usize,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl VaultHttp {
    /// Clients that read class-named files and reach class-named addresses only as `access`
    /// allows, and read at most `max_response_bytes` of any response body.
    pub(crate) fn new(access: Access, max_response_bytes: usize) -> Self {
        Self {
            clients: Mutex::new(Lru::new(CLIENT_CACHE_SIZE)),
            access,
            max_response_bytes,
        }
    }

    /// Number of HTTP clients kept.
    pub(crate) fn cached_clients(&self) -> usize {
        self.clients.lock().unwrap().len()
    }

    /// Sends one request. Transport failures are `Unavailable`; HTTP statuses are returned.
    pub(crate) async fn send(
        &self,
        conn: &Connection,
        req: VaultRequest<'_>,
    ) -> Result<VaultResponse, VaultError> {
        let (client, base) = self.client(conn)?;
        let url = format!("{base}{}", req.path);
        let mut builder = client.request(req.method.clone(), &url);
        if let Some(ns) = &conn.namespace {
            builder = builder.header("X-Vault-Namespace", ns);
        }
        if let Some(token) = req.token {
            builder = builder.header("X-Vault-Token", token.expose());
        }
        if let Some(body) = req.body {
            builder = builder.json(body);
        }
        let unavailable = |e: reqwest::Error| match addresses::refusal_in(&e) {
            Some(refused) => VaultError::InvalidParameter {
                name: "vaultAddress".into(),
                reason: refused.to_string(),
            },
            None => VaultError::Unavailable {
                target: format!("{} {}{}", req.method, conn.address, strip_query(req.path)),
                detail: error_chain(&e),
            },
        };
        let mut response = builder.send().await.map_err(unavailable)?;
        let status = response.status().as_u16();
        let too_large = || VaultError::ResponseTooLarge {
            target: format!("{} {}{}", req.method, conn.address, strip_query(req.path)),
            limit: self.max_response_bytes,
        };
        if response
            .content_length()
            .is_some_and(|n| n > self.max_response_bytes as u64)
        {
            return Err(too_large());
        }
        // Chunk by chunk, so a store that streams without end costs at most the limit.
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unavailable)? {
            if body.len() + chunk.len() > self.max_response_bytes {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(VaultResponse {
            status,
            body: Redacted::new(body),
        })
    }

    /// The client for `conn` and the URL base to put before paths.
    fn client(&self, conn: &Connection) -> Result<(reqwest::Client, String), VaultError> {
        let (base, socket) = match conn.address.strip_prefix("unix://") {
            Some(path) => ("http://localhost".to_owned(), Some(path.to_owned())),
            None => (conn.address.clone(), None),
        };
        let key = (
            socket.clone().unwrap_or_default(),
            conn.tls.clone(),
            conn.from_class,
        );
        let mut clients = self.clients.lock().unwrap();
        if let Some(client) = clients.get(&key) {
            return Ok((client, base));
        }
        let tls_error = |reason: String| VaultError::ConfigureTls {
            address: conn.address.clone(),
            reason,
        };
        let tls = tls_config(&conn.tls, &self.access.files, &conn.address)?;
        let mut builder = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            // A redirect could carry the token to another host; Vault forwards internally.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("keymount/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = socket {
            builder = builder.unix_socket(path);
        } else if conn.from_class {
            // The connection goes to exactly the addresses the resolver let through: no
            // proxy in between (a proxy would resolve the name itself).
            builder = builder
                .dns_resolver(Arc::new(CheckedResolver::new(
                    self.access.addresses.clone(),
                )))
                .no_proxy();
        }
        let client = builder.build().map_err(|e| tls_error(error_chain(&e)))?;
        clients.insert(key, client.clone());
        Ok((client, base))
    }
}

/// A request path without its query (queries may carry arguments).
pub(crate) fn strip_query(path: &str) -> &str {
    path.split('?').next().unwrap_or(path)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls configuration for `tls`. A CA file or directory replaces the system roots, as
/// in Vault's own client.
fn tls_config(
    tls: &TlsSettings,
    files: &files::AllowedDirs,
    address: &str,
) -> Result<rustls::ClientConfig, VaultError> {
    let general = |reason: String| VaultError::ConfigureTls {
        address: address.to_owned(),
        reason,
    };
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| general(e.to_string()))?;
    let verifier: Arc<dyn ServerCertVerifier> = if tls.skip_verify {
        Arc::new(AcceptAnyCertificate(
            provider.signature_verification_algorithms,
        ))
    } else {
        let roots = Arc::new(roots(tls, files, address)?);
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| general(e.to_string()))?;
        match &tls.server_name {
            Some(name) => Arc::new(FixedServerName {
                inner: webpki,
                name: ServerName::try_from(name.clone()).map_err(|_| {
                    general(format!(
                        "vaultTLSServerName {name:?} is not a DNS name or IP"
                    ))
                })?,
            }),
            None => webpki,
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            let certs = certificates(cert, &read(cert, files, address)?, address)?;
            let key_bytes = Redacted::new(read(key, files, address)?);
            let key_der = PrivateKeyDer::from_pem_slice(key_bytes.expose())
                .map_err(|_| file_error(key, "holds no PEM private key".into(), address))?;
            builder
                .with_client_auth_cert(certs, key_der)
                .map_err(|e| file_error(cert, format!("does not fit the key: {e}"), address))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// A problem with a file: an invalid parameter when a class named it, a TLS configuration
/// error when the admin did. `reason` never quotes the file's content.
fn file_error(file: &NodeFile, reason: String, address: &str) -> VaultError {
    let text = format!("{}: {reason}", file.path.display());
    match file.parameter {
        Some(name) => VaultError::InvalidParameter {
            name: name.to_owned(),
            reason: text,
        },
        None => VaultError::ConfigureTls {
            address: address.to_owned(),
            reason: text,
        },
    }
}

/// Reads `file`: beneath the allowed directories when a class named it.
fn read(file: &NodeFile, files: &files::AllowedDirs, address: &str) -> Result<Vec<u8>, VaultError> {
    let read = match file.parameter {
        Some(_) => files.read_file(&file.path),
        None => files::read_admin_file(&file.path),
    };
    read.map_err(|e| file_error(file, e.to_string(), address))
}

/// The PEM certificates in `bytes` (from `file`); an error never quotes them.
fn certificates(
    file: &NodeFile,
    bytes: &[u8],
    address: &str,
) -> Result<Vec<CertificateDer<'static>>, VaultError> {
    parse_certs(bytes).ok_or_else(|| file_error(file, "holds no PEM certificate".into(), address))
}

fn parse_certs(bytes: &[u8]) -> Option<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    (!certs.is_empty()).then_some(certs)
}

fn roots(
    tls: &TlsSettings,
    files: &files::AllowedDirs,
    address: &str,
) -> Result<RootCertStore, VaultError> {
    let mut store = RootCertStore::empty();
    if tls.ca_cert.is_none() && tls.ca_directory.is_none() {
        let native = rustls_native_certs::load_native_certs();
        let (added, _) = store.add_parsable_certificates(native.certs);
        if added == 0 {
            tracing::warn!("no system CA certificates found; set vaultCACertPath");
        }
        return Ok(store);
    }
    if let Some(file) = &tls.ca_cert {
        for cert in certificates(file, &read(file, files, address)?, address)? {
            store.add(cert).map_err(|e| {
                file_error(file, format!("not a usable CA certificate: {e}"), address)
            })?;
        }
    }
    if let Some(dir) = &tls.ca_directory {
        let entries = match dir.parameter {
            Some(_) => files.read_dir(&dir.path),
            None => files::read_admin_dir(&dir.path),
        }
        .map_err(|e| file_error(dir, e.to_string(), address))?;
        for (_, bytes) in entries {
            if let Some(certs) = parse_certs(&bytes) {
                store.add_parsable_certificates(certs);
            }
        }
    }
    if store.is_empty() {
        let file = tls.ca_cert.as_ref().or(tls.ca_directory.as_ref());
        let reason = "no CA certificate found in vaultCACertPath / vaultCADirectory";
        return Err(match file {
            Some(f) => file_error(f, reason.into(), address),
            None => VaultError::ConfigureTls {
                address: address.to_owned(),
                reason: reason.into(),
            },
        });
    }
    Ok(store)
}

/// Verifies the chain against a configured name instead of the address host
/// (`vaultTLSServerName`).
#[derive(Debug)]
struct FixedServerName {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for FixedServerName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `vaultSkipTLSVerify: "true"`: any certificate is accepted (handshake signatures are
/// still checked, so the connection is at least to the key holder).
#[derive(Debug)]
struct AcceptAnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

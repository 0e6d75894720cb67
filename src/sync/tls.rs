//! The `kubernetes.io/tls` split: `tls.crt` gets every certificate of a PEM bundle and
//! `tls.key` its private key, whatever order the provider returned them in.
//!
//! Upstream re-encodes the key as PKCS#1 (`RSA PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`);
//! keymount keeps the key block as the provider returned it (PKCS#1, SEC1 or PKCS#8
//! `PRIVATE KEY`), which every TLS consumer of Kubernetes Secrets reads (Go's
//! `tls.X509KeyPair`, OpenSSL, rustls). Encrypted keys and PKCS#12 bundles are refused.

use pem::{EncodeConfig, LineEnding, Pem};

/// Key of the certificate chain in a TLS Secret.
pub(crate) const CERT_KEY: &str = "tls.crt";
/// Key of the private key in a TLS Secret.
pub(crate) const KEY_KEY: &str = "tls.key";

const KEY_TAGS: [&str; 3] = ["RSA PRIVATE KEY", "EC PRIVATE KEY", "PRIVATE KEY"];

/// Why a file could not be split. Never carries any of the file's bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error("not PEM ({0})")]
    NotPem(String),
    #[error("no CERTIFICATE block")]
    NoCertificate,
    #[error("no private key block (RSA PRIVATE KEY, EC PRIVATE KEY or PRIVATE KEY)")]
    NoKey,
    #[error("the private key is encrypted; mount an unencrypted key")]
    EncryptedKey,
    #[error("more than one private key block")]
    SeveralKeys,
}

/// What `key` of a TLS Secret holds, taken from `pem_bundle`. Keys other than `tls.crt`
/// and `tls.key` (e.g. `ca.crt`) are copied as they are.
pub(crate) fn part(key: &str, pem_bundle: &[u8]) -> Result<Vec<u8>, TlsError> {
    match key {
        CERT_KEY => certificates(pem_bundle),
        KEY_KEY => private_key(pem_bundle),
        _ => Ok(pem_bundle.to_vec()),
    }
}

fn blocks(pem_bundle: &[u8]) -> Result<Vec<Pem>, TlsError> {
    let blocks = pem::parse_many(pem_bundle).map_err(|e| TlsError::NotPem(describe(&e).into()))?;
    if blocks.is_empty() {
        return Err(TlsError::NotPem("no PEM block found".into()));
    }
    Ok(blocks)
}

/// The kind of a PEM error without what it quotes (a header or byte of the file).
fn describe(error: &pem::PemError) -> &'static str {
    use pem::PemError::*;
    match error {
        MismatchedTags(..) => "BEGIN and END tags differ",
        MalformedFraming => "malformed framing",
        MissingBeginTag => "missing BEGIN line",
        MissingEndTag => "missing END line",
        MissingData => "empty block",
        InvalidData(_) => "invalid base64",
        InvalidHeader(_) => "invalid header",
        NotUtf8(_) => "not UTF-8",
    }
}

/// Blocks one after the other, LF line ends, no blank line between them (as Go's
/// `pem.Encode` writes them).
fn encode(blocks: &[Pem]) -> Vec<u8> {
    let config = EncodeConfig::new().set_line_ending(LineEnding::LF);
    blocks
        .iter()
        .map(|b| pem::encode_config(b, config))
        .collect::<String>()
        .into_bytes()
}

/// Every `CERTIFICATE` block, in the order given (leaf first, as the provider returned it).
pub(crate) fn certificates(pem_bundle: &[u8]) -> Result<Vec<u8>, TlsError> {
    let certs: Vec<Pem> = blocks(pem_bundle)?
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    Ok(encode(&certs))
}

/// The one private key block.
pub(crate) fn private_key(pem_bundle: &[u8]) -> Result<Vec<u8>, TlsError> {
    let all = blocks(pem_bundle)?;
    if all.iter().any(|b| b.tag() == "ENCRYPTED PRIVATE KEY") {
        return Err(TlsError::EncryptedKey);
    }
    let mut keys = all.into_iter().filter(|b| KEY_TAGS.contains(&b.tag()));
    let key = keys.next().ok_or(TlsError::NoKey)?;
    if keys.next().is_some() {
        return Err(TlsError::SeveralKeys);
    }
    Ok(encode(&[key]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(tag: &str, body: &[u8]) -> String {
        pem::encode_config(
            &Pem::new(tag, body),
            EncodeConfig::new().set_line_ending(LineEnding::LF),
        )
    }

    #[test]
    fn splits_a_bundle_in_any_order() {
        let leaf = block("CERTIFICATE", b"leaf-der");
        let ca = block("CERTIFICATE", b"ca-der");
        let key = block("PRIVATE KEY", b"key-der");
        let bundle = format!("{key}{leaf}\n{ca}");
        let crt = String::from_utf8(certificates(bundle.as_bytes()).unwrap()).unwrap();
        assert_eq!(crt, format!("{leaf}{ca}"));
        assert!(!crt.contains("PRIVATE KEY"));
        let k = String::from_utf8(private_key(bundle.as_bytes()).unwrap()).unwrap();
        assert_eq!(k, key);
        assert!(!k.contains("CERTIFICATE"));
    }

    #[test]
    fn keeps_pkcs1_and_sec1_tags() {
        for tag in ["RSA PRIVATE KEY", "EC PRIVATE KEY"] {
            let bundle = format!("{}{}", block("CERTIFICATE", b"c"), block(tag, b"k"));
            let k = String::from_utf8(part(KEY_KEY, bundle.as_bytes()).unwrap()).unwrap();
            assert!(k.starts_with(&format!("-----BEGIN {tag}-----\n")), "{k}");
        }
    }

    #[test]
    fn refuses_what_it_cannot_split() {
        let cert_only = block("CERTIFICATE", b"c");
        assert_eq!(private_key(cert_only.as_bytes()), Err(TlsError::NoKey));
        let key_only = block("EC PRIVATE KEY", b"k");
        assert_eq!(
            certificates(key_only.as_bytes()),
            Err(TlsError::NoCertificate)
        );
        let encrypted = block("ENCRYPTED PRIVATE KEY", b"k");
        assert_eq!(
            private_key(encrypted.as_bytes()),
            Err(TlsError::EncryptedKey)
        );
        let two = format!("{key_only}{key_only}");
        assert_eq!(private_key(two.as_bytes()), Err(TlsError::SeveralKeys));
        assert!(matches!(
            certificates(b"\x30\x82binary-pfx"),
            Err(TlsError::NotPem(_))
        ));
    }

    #[test]
    fn other_keys_pass_through() {
        assert_eq!(part("ca.crt", b"anything").unwrap(), b"anything");
    }
}

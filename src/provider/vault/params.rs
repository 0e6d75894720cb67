//! The SecretProviderClass parameters of the `vault` provider (same names and meaning as
//! vault-csi-provider) and the `objects` YAML list, parsed with serde and merged with the
//! node-level defaults (env < flags < class parameters).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::VaultArgs;
use super::error::VaultError;
use crate::parse::non_blank;
use crate::provider::access::Access;

/// Audience of the kubelet token used when the class names none.
pub(crate) const DEFAULT_AUDIENCE: &str = "vault";

/// The parameters a pod's `volumeAttributes` may not override unless the admin allows it:
/// every parameter read here but `objects` (which only chooses paths the pod's own Vault role
/// may read) and kubelet's `csi.storage.k8s.io/*` keys.
pub(crate) const CLASS_ONLY: &[&str] = &[
    "roleName",
    "vaultAddress",
    "vaultNamespace",
    "vaultKubernetesMountPath",
    "vaultAuthMountPath",
    "vaultSkipTLSVerify",
    "vaultCACertPath",
    "vaultCADirectory",
    "vaultTLSServerName",
    "vaultTLSClientCertPath",
    "vaultTLSClientKeyPath",
    "audience",
];

/// The class parameters the provider reads; every other attribute is ignored.
#[derive(Debug, Default, Deserialize)]
struct RawParameters {
    #[serde(rename = "roleName")]
    role_name: Option<String>,
    #[serde(rename = "vaultAddress")]
    address: Option<String>,
    #[serde(rename = "vaultNamespace")]
    namespace: Option<String>,
    #[serde(rename = "vaultKubernetesMountPath")]
    kubernetes_mount_path: Option<String>,
    #[serde(rename = "vaultAuthMountPath")]
    auth_mount_path: Option<String>,
    #[serde(rename = "vaultSkipTLSVerify")]
    skip_tls_verify: Option<String>,
    #[serde(rename = "vaultCACertPath")]
    ca_cert_path: Option<String>,
    #[serde(rename = "vaultCADirectory")]
    ca_directory: Option<String>,
    #[serde(rename = "vaultTLSServerName")]
    tls_server_name: Option<String>,
    #[serde(rename = "vaultTLSClientCertPath")]
    client_cert_path: Option<String>,
    #[serde(rename = "vaultTLSClientKeyPath")]
    client_key_path: Option<String>,
    audience: Option<String>,
    objects: Option<String>,
    #[serde(rename = "csi.storage.k8s.io/pod.namespace")]
    pod_namespace: Option<String>,
    #[serde(rename = "csi.storage.k8s.io/serviceAccount.name")]
    service_account: Option<String>,
}

/// A node file a TLS setting names, and who named it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct NodeFile {
    pub path: PathBuf,
    /// The class parameter that named it (opened only beneath `--allowed-file-dirs`), or
    /// `None` for the admin's own flag.
    pub parameter: Option<&'static str>,
}

impl NodeFile {
    fn from_class(parameter: &'static str, path: String) -> Self {
        Self {
            path: PathBuf::from(path),
            parameter: Some(parameter),
        }
    }

    fn from_admin(path: &Option<PathBuf>) -> Option<Self> {
        path.clone().map(|path| Self {
            path,
            parameter: None,
        })
    }
}

/// How to reach Vault over TLS. Files are read on the node (the provider runs in-process).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct TlsSettings {
    pub ca_cert: Option<NodeFile>,
    pub(crate) ca_directory: Option<NodeFile>,
    pub(crate) server_name: Option<String>,
    pub(crate) skip_verify: bool,
    pub(crate) client_cert: Option<NodeFile>,
    pub(crate) client_key: Option<NodeFile>,
}

/// Where Vault is and how to talk to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Connection {
    /// Base address without a trailing slash, e.g. `https://vault:8200` or `unix:///agent.sock`.
    pub address: String,
    /// The class named the address: it was checked against `--allowed-store-addresses` and
    /// every name it resolves to is checked again when connecting. `false`: the admin's
    /// `--vault-addr`.
    pub(crate) from_class: bool,
    /// `X-Vault-Namespace` header, if any.
    pub namespace: Option<String>,
    pub tls: TlsSettings,
}

/// One entry of `objects`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretObject {
    /// The file name the value is written to.
    pub object_name: String,
    pub(crate) secret_path: String,
    /// The key within the secret's data; the whole data as JSON when absent.
    #[serde(default)]
    pub secret_key: Option<String>,
    #[serde(default)]
    pub(crate) secret_args: Option<BTreeMap<String, serde_json::Value>>,
    /// The HTTP method of the request (GET when absent).
    #[serde(default)]
    pub method: Option<String>,
    /// How the value is decoded before it is written (`utf-8`, `hex`, `base64`).
    #[serde(default)]
    pub encoding: Option<String>,
    #[serde(default)]
    pub(crate) file_permission: Option<FilePermission>,
}

/// `filePermission` as YAML gives it: an integer (`420`, `0o644`) or a Go-style octal
/// literal (`0644`), which YAML 1.2 parsers hand over as a string.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub(crate) enum FilePermission {
    Number(u32),
    Text(String),
}

impl FilePermission {
    /// The mode bits, read the way Go's `strconv.ParseInt(s, 0, 32)` reads them.
    pub(crate) fn mode(&self) -> Option<u32> {
        let mode = match self {
            Self::Number(n) => *n,
            Self::Text(t) => {
                let t = t.trim();
                if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                    u32::from_str_radix(hex, 16).ok()?
                } else if let Some(oct) = t.strip_prefix("0o").or_else(|| t.strip_prefix("0O")) {
                    u32::from_str_radix(oct, 8).ok()?
                } else if t.len() > 1 && t.starts_with('0') {
                    u32::from_str_radix(&t[1..], 8).ok()?
                } else {
                    t.parse().ok()?
                }
            }
        };
        (mode <= 0o777).then_some(mode)
    }
}

/// Everything one mount needs, merged and validated.
#[derive(Debug, Clone)]
pub(crate) struct MountParameters {
    pub connection: Connection,
    pub role: String,
    pub(crate) auth_mount: String,
    pub audience: String,
    pub objects: Vec<SecretObject>,
    /// ServiceAccount `namespace/name` from the volume context (part of the cache identity).
    pub(crate) service_account: Option<String>,
}

fn invalid(name: &str, reason: impl Into<String>) -> VaultError {
    VaultError::InvalidParameter {
        name: name.to_owned(),
        reason: reason.into(),
    }
}

impl MountParameters {
    /// Parses the attributes of a mount and overlays them on the node defaults; an address
    /// the class names must be one `access` allows.
    pub(crate) fn parse(
        attributes: &BTreeMap<String, String>,
        defaults: &VaultArgs,
        access: &Access,
    ) -> Result<Self, VaultError> {
        let raw: RawParameters = crate::parse::from_string_map(attributes)
            .map_err(|e| invalid("parameters", e.to_string()))?;

        let role = non_blank(raw.role_name).ok_or_else(|| invalid("roleName", "is required"))?;
        let class_address = non_blank(raw.address);
        let from_class = class_address.is_some();
        let address = class_address
            .or_else(|| defaults.vault_addr.clone())
            .ok_or_else(|| {
                invalid(
                    "vaultAddress",
                    "is not set and the node has no --vault-addr / VAULT_ADDR",
                )
            })?;
        let address = address.trim().trim_end_matches('/').to_owned();
        if !["http://", "https://", "unix://"]
            .iter()
            .any(|s| address.starts_with(s))
        {
            return Err(invalid(
                "vaultAddress",
                format!("{address:?} must start with http://, https:// or unix://"),
            ));
        }
        if from_class {
            access
                .addresses
                .check(&address)
                .map_err(|e| invalid("vaultAddress", e.to_string()))?;
        }
        let auth_mount = match (
            non_blank(raw.kubernetes_mount_path),
            non_blank(raw.auth_mount_path),
        ) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "vaultAuthMountPath",
                    "cannot be set together with vaultKubernetesMountPath",
                ));
            }
            (Some(m), None) | (None, Some(m)) => m,
            (None, None) => defaults.vault_mount.clone(),
        };
        let auth_mount = auth_mount.trim_matches('/').to_owned();
        let skip_verify = match non_blank(raw.skip_tls_verify) {
            Some(text) => {
                crate::parse::go_bool(text.trim()).map_err(|e| invalid("vaultSkipTLSVerify", e))?
            }
            None => defaults.vault_tls_skip_verify,
        };
        let file = |name: &'static str, value: Option<String>, default: &Option<PathBuf>| {
            non_blank(value)
                .map(|path| NodeFile::from_class(name, path))
                .or_else(|| NodeFile::from_admin(default))
        };
        let tls = TlsSettings {
            ca_cert: file(
                "vaultCACertPath",
                raw.ca_cert_path,
                &defaults.vault_tls_ca_cert,
            ),
            ca_directory: file(
                "vaultCADirectory",
                raw.ca_directory,
                &defaults.vault_tls_ca_directory,
            ),
            server_name: non_blank(raw.tls_server_name)
                .or_else(|| defaults.vault_tls_server_name.clone()),
            skip_verify,
            // The admin's client identity goes only to the admin's address: a class that names
            // its own store gets no client certificate unless it names one itself.
            client_cert: file(
                "vaultTLSClientCertPath",
                raw.client_cert_path,
                if from_class {
                    &None
                } else {
                    &defaults.vault_tls_client_cert
                },
            ),
            client_key: file(
                "vaultTLSClientKeyPath",
                raw.client_key_path,
                if from_class {
                    &None
                } else {
                    &defaults.vault_tls_client_key
                },
            ),
        };
        if tls.client_cert.is_some() != tls.client_key.is_some() {
            return Err(invalid(
                "vaultTLSClientCertPath",
                "client certificate and key must be set together",
            ));
        }
        let objects = parse_objects(raw.objects.as_deref().unwrap_or_default())?;
        let service_account = match (raw.pod_namespace, raw.service_account) {
            (Some(ns), Some(sa)) => Some(format!("{ns}/{sa}")),
            _ => None,
        };
        Ok(Self {
            connection: Connection {
                address,
                from_class,
                namespace: non_blank(raw.namespace).or_else(|| defaults.vault_namespace.clone()),
                tls,
            },
            role,
            auth_mount,
            audience: non_blank(raw.audience).unwrap_or_else(|| DEFAULT_AUDIENCE.to_owned()),
            objects,
            service_account,
        })
    }
}

/// Parses and checks the `objects` YAML list.
pub fn parse_objects(text: &str) -> Result<Vec<SecretObject>, VaultError> {
    if text.trim().is_empty() {
        return Err(invalid(
            "objects",
            "is required and must list at least one object",
        ));
    }
    let objects: Vec<SecretObject> =
        serde_yaml::from_str(text).map_err(|e| invalid("objects", e.to_string()))?;
    if objects.is_empty() {
        return Err(invalid("objects", "must list at least one object"));
    }
    let mut names = BTreeSet::new();
    for (i, object) in objects.iter().enumerate() {
        let at = |field: &str| format!("objects[{i}].{field}");
        if object.object_name.trim().is_empty() {
            return Err(invalid(&at("objectName"), "is empty"));
        }
        if !names.insert(object.object_name.as_str()) {
            return Err(invalid(
                &at("objectName"),
                format!(
                    "each objectName must be unique; {:?} appears twice",
                    object.object_name
                ),
            ));
        }
        if object.secret_path.trim().is_empty() {
            return Err(invalid(&at("secretPath"), "is empty"));
        }
        if let Some(encoding) = &object.encoding
            && !["", "utf-8", "base64", "hex"].contains(&encoding.to_ascii_lowercase().as_str())
        {
            return Err(invalid(
                &at("encoding"),
                format!("{encoding:?} is not one of utf-8, base64, hex"),
            ));
        }
        if let Some(permission) = &object.file_permission
            && permission.mode().is_none()
        {
            return Err(invalid(
                &at("filePermission"),
                format!("{permission:?} is not a file mode like 0644"),
            ));
        }
        if let Some(method) = &object.method
            && !method.is_empty()
            && reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).is_err()
        {
            return Err(invalid(
                &at("method"),
                format!("{method:?} is not an HTTP method"),
            ));
        }
    }
    Ok(objects)
}

#[cfg(test)]
#[path = "params_tests.rs"]
mod tests;

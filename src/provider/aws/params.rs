//! The SecretProviderClass parameters of the `aws` provider (same names and meaning as
//! secrets-store-csi-driver-provider-aws), parsed with serde and checked up front (the
//! `objects` list in `objects.rs`): every mistake is an `InvalidParameter` naming it.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::error::AwsError;
pub(crate) use super::objects::parse_objects;

/// Which service holds an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum ObjectType {
    SecretsManager,
    SsmParameter,
}

impl ObjectType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::SecretsManager => "secretsmanager",
            Self::SsmParameter => "ssmparameter",
        }
    }
}

/// `preferredAddressType`: which Pod Identity agent address to call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum AddressType {
    Ipv4,
    Ipv6,
    /// IPv4 first, then IPv6.
    Auto,
}

/// What to read in one region: a name or ARN with an optional version id and label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Target {
    pub kind: ObjectType,
    pub name: String,
    pub version_id: Option<String>,
    pub(crate) version_label: Option<String>,
}

/// One `jmesPath` entry: a compiled expression and the file it fills.
#[derive(Debug, Clone)]
pub(crate) struct JmesFile {
    pub path: String,
    pub(crate) expression: jmespath::Expression<'static>,
    pub file_name: String,
    pub mode: u32,
}

/// One entry of `objects`, validated.
#[derive(Debug, Clone)]
pub(crate) struct AwsObject {
    /// `objects[i]`, for messages.
    pub at: String,
    pub primary: Target,
    /// What to read in the failover region (`failoverObject`, else the same target).
    pub failover: Target,
    pub file_name: String,
    pub mode: u32,
    pub(crate) jmes: Vec<JmesFile>,
}

/// Everything one mount needs, parsed and checked.
#[derive(Debug, Clone)]
pub(crate) struct MountParameters {
    /// `region`, if the class sets one (else the node default or label decides).
    pub region: Option<String>,
    pub(crate) failover_region: Option<String>,
    pub use_pod_identity: bool,
    pub(crate) address_type: AddressType,
    /// `roleArn`: keymount's own parameter, used in local mode (no API server) only.
    pub(crate) role_arn: Option<String>,
    pub objects: Vec<AwsObject>,
    pub(crate) pod_namespace: Option<String>,
    pub(crate) service_account: Option<String>,
}

/// The parameters a pod's `volumeAttributes` may not override unless the admin allows it:
/// where and as whom keymount asks AWS. `objects` and `pathTranslation` (what to read with
/// the pod's own role, and how to name the files) stay overridable, as upstream.
pub(crate) const CLASS_ONLY: &[&str] = &[
    "region",
    "failoverRegion",
    "usePodIdentity",
    "preferredAddressType",
    "roleArn",
];

/// The class parameters the provider reads; every other attribute is ignored.
#[derive(Debug, Default, Deserialize)]
struct RawParameters {
    region: Option<String>,
    #[serde(rename = "failoverRegion")]
    failover_region: Option<String>,
    #[serde(rename = "pathTranslation")]
    path_translation: Option<String>,
    #[serde(rename = "usePodIdentity")]
    use_pod_identity: Option<String>,
    #[serde(rename = "preferredAddressType")]
    preferred_address_type: Option<String>,
    #[serde(rename = "roleArn")]
    role_arn: Option<String>,
    objects: Option<String>,
    #[serde(rename = "csi.storage.k8s.io/pod.namespace")]
    pod_namespace: Option<String>,
    #[serde(rename = "csi.storage.k8s.io/serviceAccount.name")]
    service_account: Option<String>,
}

pub(super) fn invalid(name: &str, reason: impl Into<String>) -> AwsError {
    AwsError::InvalidParameter {
        name: name.to_owned(),
        reason: reason.into(),
    }
}

/// The value trimmed, or `None` when blank.
pub(super) fn non_empty(value: Option<String>) -> Option<String> {
    crate::parse::trimmed(value.as_deref())
}

/// `pathTranslation`: `None` keeps `/` (files in subdirectories).
fn parse_translation(text: Option<String>) -> Result<Option<char>, AwsError> {
    let Some(text) = text.filter(|t| !t.is_empty()) else {
        return Ok(Some('_'));
    };
    if text.eq_ignore_ascii_case("false") {
        return Ok(None);
    }
    if text.eq_ignore_ascii_case("true") {
        return Ok(Some('_'));
    }
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => Ok(Some(c)),
        _ => Err(invalid(
            "pathTranslation",
            format!("{text:?} must be True, False or a single character"),
        )),
    }
}

/// The parts of an ARN `arn:partition:service:region:account:resource`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Arn<'a> {
    pub service: &'a str,
    pub region: &'a str,
}

/// Splits `name` as an ARN, if it is one.
pub(crate) fn parse_arn(name: &str) -> Option<Arn<'_>> {
    let mut parts = name.splitn(6, ':');
    let (arn, _partition, service, region, _account, resource) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    (arn == "arn" && !resource.is_empty()).then_some(Arn { service, region })
}

impl MountParameters {
    /// Parses the attributes of a mount. `permission` is the driver's default file mode.
    pub(crate) fn parse(
        attributes: &BTreeMap<String, String>,
        permission: u32,
    ) -> Result<Self, AwsError> {
        let raw: RawParameters = crate::parse::from_string_map(attributes)
            .map_err(|e| invalid("parameters", e.to_string()))?;
        let region = non_empty(raw.region);
        let failover_region = non_empty(raw.failover_region);
        if let (Some(primary), Some(failover)) = (&region, &failover_region)
            && primary == failover
        {
            return Err(invalid(
                "failoverRegion",
                format!("must differ from region ({primary})"),
            ));
        }
        let use_pod_identity = match non_empty(raw.use_pod_identity) {
            Some(text) => crate::parse::go_bool(&text).map_err(|e| invalid("usePodIdentity", e))?,
            None => false,
        };
        let address_type = match non_empty(raw.preferred_address_type)
            .map(|t| t.to_ascii_lowercase())
            .as_deref()
        {
            Some("ipv4") => AddressType::Ipv4,
            Some("ipv6") => AddressType::Ipv6,
            Some("auto") | None => AddressType::Auto,
            Some(other) => {
                tracing::warn!(
                    value = other,
                    "preferredAddressType is not ipv4, ipv6 or auto; using auto"
                );
                AddressType::Auto
            }
        };
        let translation = parse_translation(raw.path_translation)?;
        let objects = parse_objects(
            raw.objects.as_deref().unwrap_or_default(),
            translation,
            failover_region.is_some(),
            permission,
        )?;
        Ok(Self {
            region,
            failover_region,
            use_pod_identity,
            address_type,
            role_arn: non_empty(raw.role_arn),
            objects,
            pod_namespace: non_empty(raw.pod_namespace),
            service_account: non_empty(raw.service_account),
        })
    }

    /// ASCP's rule: an ARN must name the region it is read from.
    pub(crate) fn check_arn_regions(&self, region: &str) -> Result<(), AwsError> {
        for object in &self.objects {
            if let Some(arn) = parse_arn(&object.primary.name)
                && arn.region != region
            {
                return Err(invalid(
                    &format!("{}.objectName", object.at),
                    format!(
                        "the ARN is in region {:?} but the mount reads from region {region:?}",
                        arn.region
                    ),
                ));
            }
            if let (Some(failover), Some(arn)) =
                (&self.failover_region, parse_arn(&object.failover.name))
                && object.failover.name != object.primary.name
                && arn.region != failover
            {
                return Err(invalid(
                    &format!("{}.failoverObject.objectName", object.at),
                    format!(
                        "the ARN is in region {:?} but failoverRegion is {failover:?}",
                        arn.region
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "params_tests.rs"]
mod tests;

//! The SecretProviderClass parameters of the `aws` provider (same names and meaning as
//! secrets-store-csi-driver-provider-aws) and its `objects` YAML list, parsed with serde and
//! checked up front: every mistake is an `InvalidParameter` naming the parameter or object.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::error::AwsError;

/// Which service holds an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectType {
    SecretsManager,
    SsmParameter,
}

impl ObjectType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SecretsManager => "secretsmanager",
            Self::SsmParameter => "ssmparameter",
        }
    }
}

/// `preferredAddressType`: which Pod Identity agent address to call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressType {
    Ipv4,
    Ipv6,
    /// IPv4 first, then IPv6.
    Auto,
}

/// What to read in one region: a name or ARN with an optional version id and label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    pub kind: ObjectType,
    pub name: String,
    pub version_id: Option<String>,
    pub version_label: Option<String>,
}

/// One `jmesPath` entry: a compiled expression and the file it fills.
#[derive(Debug, Clone)]
pub struct JmesFile {
    pub path: String,
    pub expression: jmespath::Expression<'static>,
    pub file_name: String,
    pub mode: u32,
}

/// One entry of `objects`, validated.
#[derive(Debug, Clone)]
pub struct AwsObject {
    /// `objects[i]`, for messages.
    pub at: String,
    pub primary: Target,
    /// What to read in the failover region (`failoverObject`, else the same target).
    pub failover: Target,
    pub file_name: String,
    pub mode: u32,
    pub jmes: Vec<JmesFile>,
}

/// Everything one mount needs, parsed and checked.
#[derive(Debug, Clone)]
pub struct MountParameters {
    /// `region`, if the class sets one (else the node default or label decides).
    pub region: Option<String>,
    pub failover_region: Option<String>,
    pub use_pod_identity: bool,
    pub address_type: AddressType,
    /// `roleArn`: keymount's own parameter, used in local mode (no API server) only.
    pub role_arn: Option<String>,
    pub objects: Vec<AwsObject>,
    pub pod_namespace: Option<String>,
    pub service_account: Option<String>,
}

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

/// A YAML scalar that may be written as a string or a number (`objectVersion: 3`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Int(u64),
}

impl Scalar {
    fn text(self) -> String {
        match self {
            Self::Text(t) => t,
            Self::Int(n) => n.to_string(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawObject {
    object_name: String,
    #[serde(default)]
    object_type: Option<String>,
    #[serde(default)]
    object_alias: Option<String>,
    #[serde(default)]
    object_version: Option<Scalar>,
    #[serde(default)]
    object_version_label: Option<String>,
    #[serde(default)]
    file_permission: Option<Scalar>,
    #[serde(default)]
    jmes_path: Option<Vec<RawJmes>>,
    #[serde(default)]
    failover_object: Option<RawFailover>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawJmes {
    path: String,
    object_alias: String,
    #[serde(default)]
    file_permission: Option<Scalar>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawFailover {
    object_name: String,
    #[serde(default)]
    object_version: Option<Scalar>,
    #[serde(default)]
    object_version_label: Option<String>,
}

pub(super) fn invalid(name: &str, reason: impl Into<String>) -> AwsError {
    AwsError::InvalidParameter {
        name: name.to_owned(),
        reason: reason.into(),
    }
}

fn non_empty(value: Option<String>) -> Option<String> {
    value
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Go's `strconv.ParseBool`.
fn parse_bool(name: &str, text: &str) -> Result<bool, AwsError> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(invalid(name, format!("{text:?} is not a boolean"))),
    }
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

/// `filePermission` as ASCP takes it: four octal digits (`"0600"`). An unquoted YAML
/// `0600` arrives as the number 600 and is read the same way.
fn parse_mode(at: &str, value: Option<Scalar>, default: u32) -> Result<u32, AwsError> {
    let Some(value) = value else {
        return Ok(default);
    };
    let text = value.text();
    let digits = format!("{text:0>4}");
    let valid = digits.len() == 4 && digits.bytes().all(|b| (b'0'..=b'7').contains(&b));
    let mode = valid
        .then(|| u32::from_str_radix(&digits, 8).ok())
        .flatten()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| {
            invalid(
                at,
                format!("{text:?} is not a file mode of four octal digits like \"0644\""),
            )
        })?;
    Ok(mode)
}

/// The parts of an ARN `arn:partition:service:region:account:resource`.
#[derive(Debug, PartialEq, Eq)]
pub struct Arn<'a> {
    pub service: &'a str,
    pub region: &'a str,
}

/// Splits `name` as an ARN, if it is one.
pub fn parse_arn(name: &str) -> Option<Arn<'_>> {
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
    pub fn parse(
        attributes: &BTreeMap<String, String>,
        permission: u32,
    ) -> Result<Self, AwsError> {
        let object = attributes
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        let raw = RawParameters::deserialize(serde_json::Value::Object(object))
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
            Some(text) => parse_bool("usePodIdentity", &text)?,
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
    pub fn check_arn_regions(&self, region: &str) -> Result<(), AwsError> {
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

/// The file name of `name` after `pathTranslation`.
fn file_name(at: &str, name: &str, translation: Option<char>) -> Result<String, AwsError> {
    let name = match translation {
        Some(c) => name.replace('/', &c.to_string()),
        None => name.trim_start_matches('/').to_owned(),
    };
    if name.is_empty() || name.split('/').any(|part| part == ".." || part == ".") {
        return Err(invalid(
            at,
            format!("{name:?} is not a usable file name (empty, `.` or `..` parts)"),
        ));
    }
    Ok(name)
}

/// The service an object's name or `objectType` selects.
fn object_type(at: &str, name: &str, given: Option<&str>) -> Result<ObjectType, AwsError> {
    let from_arn = match parse_arn(name) {
        Some(arn) => Some(match arn.service {
            "secretsmanager" => ObjectType::SecretsManager,
            "ssm" => ObjectType::SsmParameter,
            other => {
                return Err(invalid(
                    &format!("{at}.objectName"),
                    format!("the ARN names service {other:?}, not secretsmanager or ssm"),
                ));
            }
        }),
        None => None,
    };
    let given = match given.map(str::trim).filter(|t| !t.is_empty()) {
        Some("secretsmanager") => Some(ObjectType::SecretsManager),
        Some("ssmparameter") => Some(ObjectType::SsmParameter),
        Some(other) => {
            return Err(invalid(
                &format!("{at}.objectType"),
                format!("{other:?} is not secretsmanager or ssmparameter"),
            ));
        }
        None => None,
    };
    match (given, from_arn) {
        (Some(g), Some(a)) if g != a => Err(invalid(
            &format!("{at}.objectType"),
            format!("is {} but the ARN is of {}", g.as_str(), a.as_str()),
        )),
        (Some(t), _) | (None, Some(t)) => Ok(t),
        (None, None) => Err(invalid(
            &format!("{at}.objectType"),
            "is required (secretsmanager or ssmparameter) unless objectName is an ARN",
        )),
    }
}

fn check_version(at: &str, target: &Target) -> Result<(), AwsError> {
    if target.kind == ObjectType::SsmParameter {
        if target.version_id.is_some() && target.version_label.is_some() {
            return Err(invalid(
                &format!("{at}.objectVersionLabel"),
                "an SSM parameter takes objectVersion or objectVersionLabel, not both",
            ));
        }
        if let Some(v) = &target.version_id
            && (v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(invalid(
                &format!("{at}.objectVersion"),
                format!("{v:?} is not an SSM parameter version number"),
            ));
        }
    }
    Ok(())
}

/// Parses and checks the `objects` YAML list.
pub fn parse_objects(
    text: &str,
    translation: Option<char>,
    has_failover_region: bool,
    permission: u32,
) -> Result<Vec<AwsObject>, AwsError> {
    if text.trim().is_empty() {
        return Err(invalid(
            "objects",
            "is required and must list at least one object",
        ));
    }
    let raw: Vec<RawObject> =
        serde_yaml::from_str(text).map_err(|e| invalid("objects", e.to_string()))?;
    if raw.is_empty() {
        return Err(invalid("objects", "must list at least one object"));
    }
    let mut files = BTreeSet::new();
    let mut claim = |at: String, name: &str| {
        if files.insert(name.to_owned()) {
            Ok(())
        } else {
            Err(invalid(
                &at,
                format!(
                    "file name {name:?} is used twice; give each object a distinct objectAlias"
                ),
            ))
        }
    };
    let mut objects = Vec::with_capacity(raw.len());
    for (i, object) in raw.into_iter().enumerate() {
        let at = format!("objects[{i}]");
        let name = object.object_name.trim().to_owned();
        if name.is_empty() {
            return Err(invalid(&format!("{at}.objectName"), "is empty"));
        }
        let kind = object_type(&at, &name, object.object_type.as_deref())?;
        let primary = Target {
            kind,
            name: name.clone(),
            version_id: object.object_version.map(Scalar::text).and_then(|v| non_empty(Some(v))),
            version_label: non_empty(object.object_version_label),
        };
        check_version(&at, &primary)?;
        let alias = non_empty(object.object_alias);
        let failover = match object.failover_object {
            None => primary.clone(),
            Some(f) => {
                let fat = format!("{at}.failoverObject");
                if !has_failover_region {
                    return Err(invalid(&fat, "needs the failoverRegion parameter"));
                }
                if alias.is_none() {
                    return Err(invalid(
                        &format!("{at}.objectAlias"),
                        "is required when failoverObject is set",
                    ));
                }
                let fname = f.object_name.trim().to_owned();
                if fname.is_empty() {
                    return Err(invalid(&format!("{fat}.objectName"), "is empty"));
                }
                let fkind = object_type(&fat, &fname, Some(kind.as_str()))?;
                let target = Target {
                    kind: fkind,
                    name: fname,
                    version_id: f.object_version.map(Scalar::text).and_then(|v| non_empty(Some(v))),
                    version_label: non_empty(f.object_version_label),
                };
                if target.version_id.is_some() && target.version_id != primary.version_id {
                    return Err(invalid(
                        &format!("{fat}.objectVersion"),
                        "must equal the object's own objectVersion",
                    ));
                }
                check_version(&fat, &target)?;
                target
            }
        };
        let file = file_name(
            &format!("{at}.objectAlias"),
            alias.as_deref().unwrap_or(&name),
            translation,
        )?;
        claim(format!("{at}.objectAlias"), &file)?;
        let mode = parse_mode(&format!("{at}.filePermission"), object.file_permission, permission)?;
        let mut jmes = Vec::new();
        for (j, entry) in object.jmes_path.unwrap_or_default().into_iter().enumerate() {
            let jat = format!("{at}.jmesPath[{j}]");
            let path = entry.path.trim().to_owned();
            if path.is_empty() {
                return Err(invalid(&format!("{jat}.path"), "is empty"));
            }
            let expression = jmespath::compile(&path)
                .map_err(|e| invalid(&format!("{jat}.path"), e.to_string()))?;
            let alias = entry.object_alias.trim();
            if alias.is_empty() {
                return Err(invalid(&format!("{jat}.objectAlias"), "is empty"));
            }
            let jfile = file_name(&format!("{jat}.objectAlias"), alias, translation)?;
            claim(format!("{jat}.objectAlias"), &jfile)?;
            jmes.push(JmesFile {
                path,
                expression,
                file_name: jfile,
                mode: parse_mode(&format!("{jat}.filePermission"), entry.file_permission, mode)?,
            });
        }
        objects.push(AwsObject {
            at,
            primary,
            failover,
            file_name: file,
            mode,
            jmes,
        });
    }
    Ok(objects)
}

#[cfg(test)]
#[path = "params_tests.rs"]
mod tests;

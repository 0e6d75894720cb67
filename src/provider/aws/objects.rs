//! The `objects` YAML list of an `aws` class: each entry's service (given or read from its
//! ARN), versions, file name after `pathTranslation`, file mode, `jmesPath` files and
//! `failoverObject`, checked with the same rules as ASCP and errors naming `objects[i].field`.

use std::collections::BTreeSet;

use serde::Deserialize;

use super::error::AwsError;
use super::params::{AwsObject, JmesFile, ObjectType, Target, invalid, non_empty, parse_arn};

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
pub(crate) fn parse_objects(
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
            version_id: object
                .object_version
                .map(Scalar::text)
                .and_then(|v| non_empty(Some(v))),
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
                    version_id: f
                        .object_version
                        .map(Scalar::text)
                        .and_then(|v| non_empty(Some(v))),
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
        let mode = parse_mode(
            &format!("{at}.filePermission"),
            object.file_permission,
            permission,
        )?;
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
                mode: parse_mode(
                    &format!("{jat}.filePermission"),
                    entry.file_permission,
                    mode,
                )?,
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
mod tests {
    use super::*;

    #[test]
    fn file_permissions_are_four_octal_digits() {
        let mode = |v: Scalar| parse_mode("p", Some(v), 0o644);
        assert_eq!(mode(Scalar::Text("0600".into())).unwrap(), 0o600);
        assert_eq!(mode(Scalar::Int(600)).unwrap(), 0o600, "unquoted YAML 0600");
        assert_eq!(mode(Scalar::Text("0640".into())).unwrap(), 0o640);
        assert!(mode(Scalar::Text("rw-r--r--".into())).is_err());
        assert!(mode(Scalar::Text("4755".into())).is_err(), "no setuid bits");
        assert_eq!(parse_mode("p", None, 0o644).unwrap(), 0o644);
    }
}

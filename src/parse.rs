//! Reading the string maps and string values kubelet and class authors hand over (the volume
//! context, provider parameters): into a serde struct, and the small value forms they use.

use serde::de::DeserializeOwned;

/// A serde struct from a map of strings (every value a JSON string, so a field of another
/// type is a shape error naming it). Keys the struct does not name are ignored unless it
/// denies unknown fields.
pub(crate) fn from_string_map<'a, T: DeserializeOwned>(
    map: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<T, serde_json::Error> {
    let object = map
        .into_iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    T::deserialize(serde_json::Value::Object(object))
}

/// Go's `strconv.ParseBool`, as upstream providers read their boolean parameters: `1 t T TRUE
/// true True` and `0 f F FALSE false False`.
pub(crate) fn go_bool(text: &str) -> Result<bool, String> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("{text:?} is not a boolean")),
    }
}

/// The value without surrounding white space, or `None` when nothing is left.
pub(crate) fn trimmed(value: Option<&str>) -> Option<String> {
    value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// The value as given, or `None` when it is empty or only white space.
pub(crate) fn non_blank(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Params {
        #[serde(rename = "roleName")]
        role: String,
        region: Option<String>,
    }

    #[test]
    fn a_string_map_becomes_a_struct() {
        let map: BTreeMap<String, String> = [("roleName", "web"), ("other", "x")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let params: Params = from_string_map(&map).unwrap();
        assert_eq!((params.role.as_str(), params.region), ("web", None));
        let missing = from_string_map::<Params>(map.iter().filter(|(k, _)| *k != "roleName"));
        assert!(missing.unwrap_err().to_string().contains("roleName"));
    }

    #[test]
    fn booleans_as_go_reads_them() {
        for yes in ["1", "t", "T", "true", "TRUE", "True"] {
            assert_eq!(go_bool(yes), Ok(true));
        }
        for no in ["0", "f", "F", "false", "FALSE", "False"] {
            assert_eq!(go_bool(no), Ok(false));
        }
        for bad in ["yes", "tRUE", "", " true", "2"] {
            assert_eq!(go_bool(bad), Err(format!("{bad:?} is not a boolean")));
        }
    }

    #[test]
    fn blank_values_are_absent() {
        assert_eq!(trimmed(Some("  eu-west-1 ")).as_deref(), Some("eu-west-1"));
        assert_eq!(trimmed(Some("  ")), None);
        assert_eq!(trimmed(None), None);
        assert_eq!(non_blank(Some(" web ".into())).as_deref(), Some(" web "));
        assert_eq!(non_blank(Some(" \t".into())), None);
    }
}

//! Where extract and templates are set: annotations of the SecretProviderClass, which the
//! driver never passes to a provider (only `spec.parameters` reach one), so an upstream
//! plugin never sees them and a class without them works as before. Read and bounded here.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::TransformError;
use super::template::Template;

/// Comma-separated object names to extract.
pub(crate) const EXTRACT_ANNOTATION: &str = "keymount.io/extract";
/// A YAML list of `{name, template, mode}`.
pub(crate) const TEMPLATES_ANNOTATION: &str = "keymount.io/templates";
/// `keep` (default): the fetched files stay beside the templated ones; `drop`: only the
/// templates' files are written.
pub(crate) const SOURCES_ANNOTATION: &str = "keymount.io/template-sources";

/// Most templates (and extracted objects) one class may set.
const MAX_ENTRIES: usize = 64;
/// Largest templates annotation.
const MAX_TEMPLATES_BYTES: usize = 64 * 1024;

/// A file mode as Kubernetes manifests write it: `"0600"` (octal text) or `384` (a number,
/// which is what YAML makes of an unquoted `0600`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawMode {
    Number(u32),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTemplate {
    name: String,
    template: String,
    #[serde(default)]
    mode: Option<RawMode>,
}

/// One template and where its output goes.
#[derive(Debug)]
pub(super) struct TemplateSpec {
    pub(super) name: String,
    pub(super) template: Template,
    pub(super) mode: Option<u32>,
}

/// A class's transformation.
#[derive(Debug, Default)]
pub(super) struct Settings {
    pub(super) extract: Vec<String>,
    pub(super) templates: Vec<TemplateSpec>,
    pub(super) drop_sources: bool,
}

impl Settings {
    pub(super) fn read(
        class: &str,
        annotations: &BTreeMap<String, String>,
    ) -> Result<Self, TransformError> {
        let fail = |annotation: &'static str, reason: String| TransformError::Settings {
            class: class.to_owned(),
            annotation,
            reason,
        };
        let mut settings = Settings::default();
        if let Some(list) = annotations.get(EXTRACT_ANNOTATION) {
            settings.extract = list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            if settings.extract.len() > MAX_ENTRIES {
                return Err(fail(
                    EXTRACT_ANNOTATION,
                    format!("more than {MAX_ENTRIES} objects"),
                ));
            }
        }
        if let Some(text) = annotations.get(SOURCES_ANNOTATION) {
            settings.drop_sources = match text.trim() {
                "keep" => false,
                "drop" => true,
                other => {
                    return Err(fail(
                        SOURCES_ANNOTATION,
                        format!(
                            "{:?} is neither keep nor drop",
                            crate::text::shorten(other, 32)
                        ),
                    ));
                }
            };
        }
        let Some(text) = annotations.get(TEMPLATES_ANNOTATION) else {
            return Ok(settings);
        };
        if text.len() > MAX_TEMPLATES_BYTES {
            return Err(fail(
                TEMPLATES_ANNOTATION,
                format!("longer than {MAX_TEMPLATES_BYTES} bytes"),
            ));
        }
        let raw: Vec<RawTemplate> = serde_yaml::from_str(text).map_err(|e| {
            fail(
                TEMPLATES_ANNOTATION,
                format!("not a list of {{name, template, mode}}: {e}"),
            )
        })?;
        if raw.len() > MAX_ENTRIES {
            return Err(fail(
                TEMPLATES_ANNOTATION,
                format!("more than {MAX_ENTRIES} templates"),
            ));
        }
        for entry in raw {
            let mode = match entry.mode {
                None => None,
                Some(RawMode::Number(n)) => Some(n),
                Some(RawMode::Text(t)) => Some(u32::from_str_radix(t.trim(), 8).map_err(|_| {
                    fail(
                        TEMPLATES_ANNOTATION,
                        format!(
                            "template {:?}: mode {t:?} is not octal like \"0600\"",
                            entry.name
                        ),
                    )
                })?),
            };
            if mode.is_some_and(|m| m > 0o777) {
                return Err(fail(
                    TEMPLATES_ANNOTATION,
                    format!("template {:?}: mode above 0777", entry.name),
                ));
            }
            let template =
                Template::parse(&entry.template).map_err(|source| TransformError::Template {
                    class: class.to_owned(),
                    template: entry.name.clone(),
                    source,
                })?;
            settings.templates.push(TemplateSpec {
                name: entry.name,
                template,
                mode,
            });
        }
        Ok(settings)
    }
}

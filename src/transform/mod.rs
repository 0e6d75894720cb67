//! Files in the application's own format: `extract` (one file per top-level key of a JSON
//! object) and `templates` (new files rendered from the fetched ones), set by a
//! SecretProviderClass's annotations so that no provider plugin ever sees them and a class
//! without them is unchanged. One step between the provider's answer and the write, shared by
//! the node's mounts, its Secret sync, `keymount controller` and `keymount fetch`.

mod extract;
mod settings;
pub(crate) mod template;

use std::collections::BTreeMap;

use crate::fs::atomic_writer::Payload;

pub(crate) use settings::{EXTRACT_ANNOTATION, SOURCES_ANNOTATION, TEMPLATES_ANNOTATION};

/// Why a class's files could not be transformed. Names the class, annotation, object or
/// template and a position; never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransformError {
    /// An annotation could not be read.
    #[error("SecretProviderClass {class}: annotation {annotation}: {reason}")]
    Settings {
        /// `namespace/name` of the class.
        class: String,
        /// The annotation.
        annotation: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// `extract` names an object the provider did not return.
    #[error(
        "SecretProviderClass {class}: {EXTRACT_ANNOTATION} names object {object:?}, which the provider did not return"
    )]
    ExtractMissing {
        /// `namespace/name` of the class.
        class: String,
        /// The object (file) name.
        object: String,
    },
    /// `extract` names an object that is not a JSON object.
    #[error(
        "SecretProviderClass {class}: {EXTRACT_ANNOTATION}: object {object:?} is not a JSON object ({reason})"
    )]
    ExtractNotObject {
        /// `namespace/name` of the class.
        class: String,
        /// The object (file) name.
        object: String,
        /// Why (a JSON error position, or the JSON type found), never the content.
        reason: String,
    },
    /// A template could not be parsed or rendered.
    #[error("SecretProviderClass {class}: template {template:?}: {source}")]
    Template {
        /// `namespace/name` of the class.
        class: String,
        /// The template's output name.
        template: String,
        /// Where and what.
        #[source]
        source: template::TemplateError,
    },
    /// Two outputs would have the same name.
    #[error(
        "SecretProviderClass {class}: two files would be named {name:?} (from extract, a template or the provider)"
    )]
    Duplicate {
        /// `namespace/name` of the class.
        class: String,
        /// The name.
        name: String,
    },
    /// The provider wrote its files itself, so there is nothing to transform.
    #[error(
        "SecretProviderClass {class}: extract and templates need a provider that returns its files; this one wrote them itself"
    )]
    NoFiles {
        /// `namespace/name` of the class.
        class: String,
    },
}

/// True when the class asks for any transformation.
pub(crate) fn wanted(annotations: Option<&BTreeMap<String, String>>) -> bool {
    annotations.is_some_and(|a| {
        [EXTRACT_ANNOTATION, TEMPLATES_ANNOTATION, SOURCES_ANNOTATION]
            .iter()
            .any(|k| a.contains_key(*k))
    })
}

/// Applies the class's extract and templates to the provider's `files`. Template outputs get
/// `default_mode` unless they set one; each is at most `max_bytes`.
pub(crate) fn apply(
    class: &str,
    annotations: Option<&BTreeMap<String, String>>,
    files: Vec<Payload>,
    default_mode: u32,
    max_bytes: usize,
) -> Result<Vec<Payload>, TransformError> {
    let empty = BTreeMap::new();
    let annotations = annotations.unwrap_or(&empty);
    let settings = settings::Settings::read(class, annotations)?;
    if files.is_empty() {
        return Err(TransformError::NoFiles {
            class: class.to_owned(),
        });
    }
    let files = extract::extract(class, &settings.extract, files)?;
    let data: BTreeMap<String, crate::redact::Redacted<Vec<u8>>> = files
        .iter()
        .map(|f| (f.path.clone(), f.contents.clone()))
        .collect();
    let mut out = if settings.drop_sources {
        Vec::new()
    } else {
        files
    };
    for spec in &settings.templates {
        let contents =
            spec.template
                .render(&data, max_bytes)
                .map_err(|source| TransformError::Template {
                    class: class.to_owned(),
                    template: spec.name.clone(),
                    source,
                })?;
        out.push(Payload {
            path: spec.name.clone(),
            mode: spec.mode.unwrap_or(default_mode),
            contents,
        });
    }
    let mut seen = std::collections::BTreeSet::new();
    for file in &out {
        if !seen.insert(file.path.as_str()) {
            return Err(TransformError::Duplicate {
                class: class.to_owned(),
                name: file.path.clone(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;

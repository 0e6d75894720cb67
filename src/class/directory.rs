//! Local mode (`--class-dir`): SecretProviderClass manifests (YAML or JSON, several documents
//! per file allowed) in a directory. Edits take effect at the next lookup: the parsed set is
//! kept until a manifest's name, type, size or mtime changes. A manifest without a namespace
//! belongs to `default`.
//!
//! One bad file fails only its own classes: a document that names its class but does not
//! parse (wrong types, an invalid name) fails that class with the file and the reason; a file
//! that cannot be read at all (malformed YAML, not UTF-8, larger than [`MAX_MANIFEST_BYTES`])
//! is named in the answer for any class that is then not found. Non-regular files (a FIFO, a
//! device, a directory named `x.yaml`, a link to one of them) are skipped without being
//! opened, and every file is opened with `O_NONBLOCK` on the blocking pool, so nothing in the
//! directory can stall the runtime, other publishes or `/healthz`.

use std::collections::HashMap;
use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use serde::Deserialize as _;

use super::SecretProviderClass;
use super::lookup::{ClassSource, LookupError};
use crate::names;

/// The largest manifest file read; a larger one is refused, not read in part.
pub(crate) const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;

/// Classes served from a directory of manifests.
#[derive(Debug)]
pub struct DirectoryClasses {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    cache: Mutex<Option<(Fingerprint, Arc<Parsed>)>>,
}

/// Name, and (when it could be read) type, size and mtime of every manifest entry.
type Fingerprint = Vec<(PathBuf, Option<(bool, u64, SystemTime)>)>;

/// `(namespace, name)` of a class.
type Key = (String, String);

/// Why one manifest (or one document of it) could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Problem {
    file: PathBuf,
    reason: String,
}

/// What the directory held at the last parse.
#[derive(Debug, Default)]
struct Parsed {
    classes: HashMap<Key, Arc<SecretProviderClass>>,
    /// Classes whose document names them but does not parse.
    broken: HashMap<Key, Problem>,
    /// Files (or documents) that name no class one could look up.
    unreadable: Vec<Problem>,
}

impl DirectoryClasses {
    /// Serves the classes found in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            inner: Arc::new(Inner {
                dir: dir.into(),
                cache: Mutex::new(None),
            }),
        }
    }
}

fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

fn kind_of(file_type: std::fs::FileType) -> &'static str {
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_block_device() || file_type.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

/// Reads one manifest: only a regular file, opened without waiting (`O_NONBLOCK`: a FIFO put
/// there after the check does not block the open), at most [`MAX_MANIFEST_BYTES`], UTF-8.
/// `Ok(None)` for an entry that is not a regular file (skipped).
fn read_manifest(path: &Path) -> Result<Option<String>, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Ok(None);
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC | nix::libc::O_NOCTTY)
        .open(path)
        .map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Ok(None);
    }
    let too_big =
        || format!("larger than {MAX_MANIFEST_BYTES} bytes (1 MiB), the limit of a manifest");
    if meta.len() > MAX_MANIFEST_BYTES {
        return Err(too_big());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_MANIFEST_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(too_big());
    }
    String::from_utf8(bytes).map(Some).map_err(|e| {
        format!(
            "not UTF-8 (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

impl Parsed {
    /// Adds what one manifest file holds.
    fn add_file(&mut self, file: &Path) {
        let problem = |reason: String| Problem {
            file: file.to_owned(),
            reason,
        };
        let text = match read_manifest(file) {
            Ok(Some(text)) => text,
            Ok(None) => {
                let kind = std::fs::metadata(file)
                    .map_or("not a regular file", |m| kind_of(m.file_type()));
                tracing::warn!(file = %file.display(), kind, "skipping a class manifest that is not a regular file");
                return;
            }
            Err(reason) => {
                tracing::warn!(file = %file.display(), %reason, "skipping an unreadable class manifest");
                self.unreadable.push(problem(reason));
                return;
            }
        };
        for (index, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let value = match serde_yaml::Value::deserialize(doc) {
                Ok(value) => value,
                Err(error) => {
                    // The stream cannot be followed past a syntax error.
                    let reason = format!("document {}: {error}", index + 1);
                    tracing::warn!(file = %file.display(), %reason, "skipping the rest of a malformed class manifest");
                    self.unreadable.push(problem(reason));
                    return;
                }
            };
            if let Err(reason) = self.add_document(file, value) {
                let reason = format!("document {}: {reason}", index + 1);
                tracing::warn!(file = %file.display(), %reason, "skipping a class manifest document");
                self.unreadable.push(problem(reason));
            }
        }
    }

    /// Adds one document; `Err` when it names no class that could be looked up.
    fn add_document(&mut self, file: &Path, value: serde_yaml::Value) -> Result<(), String> {
        if value.get("kind").and_then(|k| k.as_str()) != Some("SecretProviderClass") {
            return Ok(());
        }
        let metadata = value.get("metadata");
        let name = metadata
            .and_then(|m| m.get("name"))
            .and_then(|n| n.as_str())
            .ok_or("a SecretProviderClass without a string metadata.name")?
            .to_owned();
        let namespace = match metadata.and_then(|m| m.get("namespace")) {
            None => "default".to_owned(),
            Some(ns) => ns
                .as_str()
                .ok_or("metadata.namespace is not a string")?
                .to_owned(),
        };
        // As the API server would: a class with such a name could never be asked for.
        names::subdomain("metadata.name", &name).map_err(|e| e.to_string())?;
        names::label("metadata.namespace", &namespace).map_err(|e| e.to_string())?;
        let key = (namespace, name);
        if self.classes.contains_key(&key) || self.broken.contains_key(&key) {
            tracing::warn!(file = %file.display(), class = %format!("{}/{}", key.0, key.1), "SecretProviderClass defined twice; the first definition is used");
            return Ok(());
        }
        match serde_yaml::from_value::<SecretProviderClass>(value) {
            Ok(mut class) => {
                class.metadata.namespace = Some(key.0.clone());
                self.classes.insert(key, Arc::new(class));
            }
            Err(error) => {
                tracing::warn!(file = %file.display(), class = %format!("{}/{}", key.0, key.1), %error, "invalid SecretProviderClass manifest");
                self.broken.insert(
                    key,
                    Problem {
                        file: file.to_owned(),
                        reason: error.to_string(),
                    },
                );
            }
        }
        Ok(())
    }
}

impl Inner {
    fn fingerprint(&self) -> Result<Fingerprint, LookupError> {
        let read_err = |source| LookupError::ReadDir {
            dir: self.dir.clone(),
            source,
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(read_err)? {
            let path = entry.map_err(read_err)?.path();
            if is_manifest(&path) {
                // stat(2), which follows links but never opens: a FIFO is only looked at.
                let seen = std::fs::metadata(&path).ok().map(|m| {
                    let mtime = m.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                    (m.is_file(), m.len(), mtime)
                });
                files.push((path, seen));
            }
        }
        files.sort();
        Ok(files)
    }

    /// The parsed directory, parsed again only when its fingerprint changed. Blocking.
    fn parsed(&self) -> Result<Arc<Parsed>, LookupError> {
        let fingerprint = self.fingerprint()?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((seen, parsed)) = cache.as_ref()
            && *seen == fingerprint
        {
            return Ok(parsed.clone());
        }
        let mut parsed = Parsed::default();
        for (file, _) in &fingerprint {
            parsed.add_file(file);
        }
        let parsed = Arc::new(parsed);
        *cache = Some((fingerprint, parsed.clone()));
        Ok(parsed)
    }
}

/// At most this many unreadable files are named in one answer.
const NAMED_PROBLEMS: usize = 5;

#[async_trait]
impl ClassSource for DirectoryClasses {
    async fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Arc<SecretProviderClass>, LookupError> {
        let inner = self.inner.clone();
        let parsed = match tokio::task::spawn_blocking(move || inner.parsed()).await {
            Ok(parsed) => parsed?,
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        };
        let key = (namespace.to_owned(), name.to_owned());
        if let Some(class) = parsed.classes.get(&key) {
            return Ok(class.clone());
        }
        if let Some(problem) = parsed.broken.get(&key) {
            return Err(LookupError::Manifest {
                namespace: namespace.into(),
                name: name.into(),
                file: problem.file.clone(),
                reason: problem.reason.clone(),
            });
        }
        if parsed.unreadable.is_empty() {
            return Err(LookupError::NotFound {
                namespace: namespace.into(),
                name: name.into(),
            });
        }
        let mut skipped: Vec<String> = parsed
            .unreadable
            .iter()
            .take(NAMED_PROBLEMS)
            .map(|p| format!("{}: {}", p.file.display(), p.reason))
            .collect();
        if parsed.unreadable.len() > NAMED_PROBLEMS {
            skipped.push(format!(
                "and {} more",
                parsed.unreadable.len() - NAMED_PROBLEMS
            ));
        }
        Err(LookupError::NotFoundSkipped {
            namespace: namespace.into(),
            name: name.into(),
            skipped: skipped.join("; "),
        })
    }

    fn is_synced(&self) -> bool {
        true
    }
}

#[cfg(test)]
#[path = "directory_tests.rs"]
mod tests;

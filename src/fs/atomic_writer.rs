//! The kubelet-style atomic writer: files land in a fresh `..<timestamp>` directory, a
//! `..data` symlink is swapped to it with one `rename(2)`, and each top-level name is a
//! symlink through `..data`. A reader never sees a half-written set, and an unchanged set
//! is not touched at all (no inotify noise for applications).

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use crate::redact::Redacted;

const DATA_LINK: &str = "..data";
const DATA_TMP_LINK: &str = "..data_tmp";

/// One file to write: a validated relative path, its mode and its secret contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    pub path: String,
    pub mode: u32,
    pub contents: Redacted<Vec<u8>>,
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The files on disk already matched byte for byte; nothing was touched.
    Unchanged,
    /// A new generation was written and swapped in.
    Written,
}

/// A write failure, naming the path involved (never the contents).
#[derive(Debug, thiserror::Error)]
#[error("{action} {path}: {source}")]
pub struct WriteError {
    action: &'static str,
    path: PathBuf,
    #[source]
    source: io::Error,
}

fn at<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> WriteError + 'a {
    move |source| WriteError {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Writes `files` into `target` atomically. Paths must already be validated
/// (see [`crate::fs::paths`]).
pub fn write(target: &Path, files: &[Payload]) -> Result<Outcome, WriteError> {
    let old_dir = current_generation(target)?;
    if let Some(old) = &old_dir
        && matches_on_disk(&target.join(old), files)
    {
        return Ok(Outcome::Unchanged);
    }

    let generation = new_generation_name();
    let gen_path = target.join(&generation);
    fs::DirBuilder::new()
        .mode(0o755)
        .create(&gen_path)
        .map_err(at("create directory", &gen_path))?;
    // The umask may have narrowed the mode; set it explicitly.
    fs::set_permissions(&gen_path, fs::Permissions::from_mode(0o755))
        .map_err(at("chmod", &gen_path))?;
    for file in files {
        write_file(&gen_path, file)?;
    }

    let tmp_link = target.join(DATA_TMP_LINK);
    let data_link = target.join(DATA_LINK);
    remove_if_exists(&tmp_link)?;
    symlink(&generation, &tmp_link).map_err(at("create symlink", &tmp_link))?;
    fs::rename(&tmp_link, &data_link).map_err(at("swap", &data_link))?;

    let new_names = top_level_names(files.iter().map(|f| f.path.as_str()));
    for name in &new_names {
        let link = target.join(name);
        // A name kept from the previous generation already points through `..data`.
        match symlink(Path::new(DATA_LINK).join(name), &link) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(at("create symlink", &link)(e));
            }
            _ => {}
        }
    }
    if let Some(old) = old_dir {
        let old_names = top_level_names_on_disk(&target.join(&old))?;
        for stale in old_names.difference(&new_names) {
            remove_if_exists(&target.join(stale))?;
        }
        let old_path = target.join(old);
        fs::remove_dir_all(&old_path).map_err(at("remove old generation", &old_path))?;
    }
    Ok(Outcome::Written)
}

/// Reads the files of the current generation back: `relative path -> absolute path`,
/// following the layout this writer makes (used by the Secret sync).
pub fn current_files(target: &Path) -> Result<Vec<(String, PathBuf)>, WriteError> {
    let Some(generation) = current_generation(target)? else {
        return Ok(Vec::new());
    };
    let root = target.join(generation);
    let mut out = Vec::new();
    collect_files(&root, &root, &mut out).map_err(at("read", &root))?;
    Ok(out)
}

fn current_generation(target: &Path) -> Result<Option<String>, WriteError> {
    let link = target.join(DATA_LINK);
    match fs::read_link(&link) {
        Ok(dest) => Ok(Some(dest.to_string_lossy().into_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(at("read symlink", &link)(e)),
    }
}

fn new_generation_name() -> String {
    let now = chrono::Utc::now().format("%Y_%m_%d_%H_%M_%S");
    format!("..{now}.{:010}", rand::random::<u32>())
}

fn write_file(root: &Path, file: &Payload) -> Result<(), WriteError> {
    let path = root.join(&file.path);
    if let Some(parent) = path.parent().filter(|p| *p != root) {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(at("create directory", parent))?;
    }
    // The generation directory is new: a name that exists already is an error, never followed.
    let mut out = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(at("write", &path))?;
    out.write_all(file.contents.expose())
        .map_err(at("write", &path))?;
    // The umask may have narrowed the mode; set it on the open file.
    out.set_permissions(fs::Permissions::from_mode(file.mode))
        .map_err(at("chmod", &path))?;
    Ok(())
}

fn matches_on_disk(generation: &Path, files: &[Payload]) -> bool {
    let mut on_disk = Vec::new();
    if collect_files(generation, generation, &mut on_disk).is_err() || on_disk.len() != files.len()
    {
        return false;
    }
    files.iter().all(|f| {
        let path = generation.join(&f.path);
        let same_mode = fs::metadata(&path)
            .map(|m| m.permissions().mode() & 0o777 == f.mode)
            .unwrap_or(false);
        same_mode && fs::read(&path).is_ok_and(|c| c == *f.contents.expose())
    })
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect_files(root, &path, out)?;
        } else {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            out.push((rel.to_string_lossy().into_owned(), path.clone()));
        }
    }
    Ok(())
}

fn top_level_names<'a>(paths: impl Iterator<Item = &'a str>) -> BTreeSet<String> {
    paths
        .filter_map(|p| p.split('/').next())
        .map(str::to_owned)
        .collect()
}

fn top_level_names_on_disk(generation: &Path) -> Result<BTreeSet<String>, WriteError> {
    let entries = fs::read_dir(generation).map_err(at("read", generation))?;
    Ok(entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect())
}

fn remove_if_exists(path: &Path) -> Result<(), WriteError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(at("remove", path)(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn payload(path: &str, mode: u32, contents: &str) -> Payload {
        Payload {
            path: path.into(),
            mode,
            contents: Redacted::new(contents.as_bytes().to_vec()),
        }
    }

    #[test]
    fn writes_the_kubelet_layout() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        let files = [
            payload("user", 0o600, "admin"),
            payload("db/pass", 0o640, "pw"),
        ];
        assert_eq!(write(t, &files).unwrap(), Outcome::Written);

        assert_eq!(fs::read_to_string(t.join("user")).unwrap(), "admin");
        assert_eq!(fs::read_to_string(t.join("db/pass")).unwrap(), "pw");
        assert_eq!(
            fs::read_link(t.join("user")).unwrap(),
            Path::new("..data/user")
        );
        assert_eq!(fs::read_link(t.join("db")).unwrap(), Path::new("..data/db"));
        let generation = fs::read_link(t.join("..data")).unwrap();
        assert!(generation.to_string_lossy().starts_with("..20"));
        let gen_mode = fs::metadata(t.join(&generation)).unwrap().mode() & 0o777;
        assert_eq!(gen_mode, 0o755);
        assert_eq!(fs::metadata(t.join("user")).unwrap().mode() & 0o777, 0o600);
        assert_eq!(
            fs::metadata(t.join("db/pass")).unwrap().mode() & 0o777,
            0o640
        );
    }

    #[test]
    fn unchanged_content_is_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        let files = [payload("a", 0o644, "1")];
        write(t, &files).unwrap();
        let before = fs::metadata(t.join("a")).unwrap();
        assert_eq!(write(t, &files).unwrap(), Outcome::Unchanged);
        let after = fs::metadata(t.join("a")).unwrap();
        assert_eq!(
            (before.ino(), before.mtime_nsec()),
            (after.ino(), after.mtime_nsec())
        );
        // A mode change alone is a change.
        assert_eq!(
            write(t, &[payload("a", 0o600, "1")]).unwrap(),
            Outcome::Written
        );
    }

    #[test]
    fn a_new_generation_replaces_the_old_and_drops_stale_names() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        write(t, &[payload("a", 0o644, "1"), payload("b", 0o644, "2")]).unwrap();
        let old = fs::read_link(t.join("..data")).unwrap();
        write(t, &[payload("a", 0o644, "3")]).unwrap();
        assert_eq!(fs::read_to_string(t.join("a")).unwrap(), "3");
        assert!(
            fs::symlink_metadata(t.join("b")).is_err(),
            "stale link removed"
        );
        assert!(!t.join(&old).exists(), "old generation removed");
        let names: BTreeSet<_> = fs::read_dir(t)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}"); // a, ..data, one generation
        let read_back = current_files(t).unwrap();
        assert_eq!(read_back.len(), 1);
        assert_eq!(read_back[0].0, "a");
    }
}

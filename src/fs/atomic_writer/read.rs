//! Reading a generation back, through the volume's directory fd and without following a
//! link: the comparison that decides whether a fetched set is unchanged.

use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::dirfd::{DirFd, Kind};
use super::{Payload, file_mode};
use crate::fs::group::FsGroup;

/// True when the generation holds exactly `files`: same paths, regular files only, same
/// modes and contents, and (with a group) the generation and its files of that group.
pub(super) fn matches_on_disk(
    vol: &DirFd,
    generation: &str,
    files: &[Payload],
    group: Option<FsGroup>,
) -> bool {
    let Ok(gen_dir) = vol.child(generation) else {
        return false;
    };
    if let Some(group) = group
        && gen_dir.group().ok() != Some(group.gid())
    {
        return false;
    }
    let mut on_disk = Vec::new();
    if collect_files(&gen_dir, "", &mut on_disk).is_err()
        || on_disk.len() != files.len()
        || on_disk.iter().any(|(_, kind)| *kind != Kind::File)
    {
        return false;
    }
    files
        .iter()
        .all(|f| same_file(&gen_dir, f, group).unwrap_or(false))
}

fn same_file(gen_dir: &DirFd, file: &Payload, group: Option<FsGroup>) -> io::Result<bool> {
    let (dir, base) = match file.path.rsplit_once('/') {
        Some((parent, base)) => (Some(gen_dir.descend(parent)?), base),
        None => (None, file.path.as_str()),
    };
    let mut handle = dir.as_ref().unwrap_or(gen_dir).open_file(base)?;
    let meta = handle.metadata()?;
    let expected = file.contents.expose();
    if meta.permissions().mode() & 0o7777 != file_mode(file, group)
        || meta.len() != expected.len() as u64
        || group.is_some_and(|g| meta.gid() != g.gid())
    {
        return Ok(false);
    }
    let mut contents = Vec::with_capacity(expected.len());
    handle.read_to_end(&mut contents)?;
    Ok(contents == *expected)
}

/// Every non-directory below `dir`, as (relative path, kind); directories are entered only
/// when they are real directories of the same file system.
pub(super) fn collect_files(
    dir: &DirFd,
    prefix: &str,
    out: &mut Vec<(String, Kind)>,
) -> io::Result<()> {
    for (name, kind) in dir.list()? {
        let name = name
            .into_string()
            .map_err(|_| io::Error::other("a file name that is not UTF-8"))?;
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        if kind == Kind::Dir {
            collect_files(&dir.child(name.as_str())?, &rel, out)?;
        } else {
            out.push((rel, kind));
        }
    }
    Ok(())
}

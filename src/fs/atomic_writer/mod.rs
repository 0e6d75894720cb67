//! The kubelet-style atomic writer: files land in a fresh `..<timestamp>` directory, a
//! `..data` symlink is swapped to it with one `rename(2)`, and each top-level name is a
//! symlink through `..data`. A reader sees the old set or the new set, never a mix; an
//! unchanged set whose layout is intact is not touched at all (no inotify noise).
//!
//! Crash safety: new top-level links are made before the swap (they dangle only until it),
//! stale ones are removed after it, and every write or [`repair`] first puts the visible
//! layout back in line with the generation `..data` names and sweeps leftover generations, so
//! a crash at any instant leaves the old set or the new set once repaired.
//!
//! Containment: every operation is relative to the volume's directory fd and never follows a
//! symlink or enters another mount; `..data` is trusted only when it names one generation
//! directory of the volume.
//!
//! Ownership: with the pod's fsGroup ([`FsGroup`]), the volume's root, each generation and
//! its directories, its files, `..data` and the top-level links belong to that group, and a
//! file gets group read where its owner can read. Every change goes through the open
//! directory or file (fchown, or fchownat with `AT_SYMLINK_NOFOLLOW` for a link), so the
//! group is never applied to anything outside the volume.

mod dirfd;
mod generation;
mod layout;
mod read;
pub(crate) mod room;
#[cfg(test)]
mod tests;
#[cfg(not(test))]
mod tests {
    /// Only the unit tests skip the room check (to reach a real ENOSPC in the middle of a write).
    pub(crate) fn skip_room_check() -> bool {
        false
    }
}

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use dirfd::DirFd;
use generation::{DATA_LINK, DATA_TMP_LINK, link_target};
use layout::{DataLink, Policy};

use read::matches_on_disk;

use crate::fs::group::FsGroup;
use crate::redact::Redacted;

/// One file to write: a validated relative path, its mode and its secret contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    pub path: String,
    pub mode: u32,
    pub contents: Redacted<Vec<u8>>,
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The files and the layout already matched; nothing was touched.
    Unchanged,
    /// The files matched but the layout did not (a crash mid-write, a foreign entry): links
    /// and leftovers were repaired, the file contents were not rewritten.
    Repaired,
    /// A new generation was written and swapped in.
    Written,
}

/// A write failure, naming the path involved (never the contents).
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "volume {target}: no room for the new files on its file system: they need {needed} bytes \
         and {inodes_needed} inodes, {available} of {total} bytes and {inodes_free} inodes are \
         free; the old files are kept"
    )]
    NoRoom {
        target: PathBuf,
        needed: u64,
        available: u64,
        total: u64,
        inodes_needed: u64,
        inodes_free: u64,
    },
    #[error(
        "{target}: {name:?} is in the way of a new file and was not made by keymount; not replaced"
    )]
    InTheWay { target: PathBuf, name: String },
    #[error("volume {target}: ..data is {what}; refused (never followed)")]
    BadDataLink { target: PathBuf, what: String },
}

fn at<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> WriteError + 'a {
    move |source| WriteError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// [`write_as`] without a group (the tests' writer).
#[cfg(test)]
pub(crate) fn write(target: &Path, files: &[Payload]) -> Result<Outcome, WriteError> {
    write_as(target, files, None)
}

/// Writes `files` into the volume `target`, which keymount owns: whatever else sits at its top
/// level (plain files left by a self-writing provider or the upstream driver) is replaced or
/// removed. Paths must already be validated (see [`crate::fs::paths`]). With a `group` (the
/// pod's fsGroup, see the module docs) the files belong to it; a set whose content, modes or
/// group differ from what is there is written afresh, and the volume's root is given to the
/// group in any case.
pub(crate) fn write_as(
    target: &Path,
    files: &[Payload],
    group: Option<FsGroup>,
) -> Result<Outcome, WriteError> {
    write_with(target, files, Policy::Owned, group)
}

/// Writes `files` into a directory the user owns (`keymount fetch --out`): only the writer's
/// own entries are ever removed, and a foreign entry in the way of a new name is an error.
pub(crate) fn write_shared(target: &Path, files: &[Payload]) -> Result<Outcome, WriteError> {
    write_with(target, files, Policy::Shared, None)
}

fn write_with(
    target: &Path,
    files: &[Payload],
    policy: Policy,
    group: Option<FsGroup>,
) -> Result<Outcome, WriteError> {
    let vol = DirFd::open(target).map_err(at("open", target))?;
    if let Some(group) = group {
        // The root first: the pod traverses it to reach anything (its mode stays 0755).
        vol.set_group(group.gid()).map_err(at("chown", target))?;
    }
    let names = top_level_names(files.iter().map(|f| f.path.as_str()));
    let current = match layout::data_link(&vol)? {
        DataLink::Valid(generation) => Some(generation),
        DataLink::Missing => None,
        DataLink::Invalid(what) => {
            // Removed as an entry of the volume, never followed; a fresh generation follows.
            tracing::warn!(target = %target.display(), %what, "..data is not a generation link; replacing it");
            let path = target.join(DATA_LINK);
            vol.remove_tree(DATA_LINK).map_err(at("remove", &path))?;
            None
        }
    };

    if let Some(generation) = &current
        && matches_on_disk(&vol, generation, files, group)
    {
        let plan = layout::plan(&layout::entries(&vol)?, Some(generation), &names, policy);
        if plan.is_empty() {
            return Ok(Outcome::Unchanged);
        }
        tracing::info!(
            target = %target.display(),
            missing = plan.missing.len(),
            occupied = plan.occupied.len(),
            removed = plan.remove.len(),
            "content unchanged; layout repaired"
        );
        layout::apply(&vol, &plan, policy)?;
        own_links(&vol, group)?;
        return Ok(Outcome::Repaired);
    }

    // Leftovers of an interrupted write go first: they would only take room.
    let entries = layout::entries(&vol)?;
    for entry in &entries {
        let Some(name) = entry.name.to_str() else {
            continue;
        };
        let leftover = name == DATA_TMP_LINK
            || (generation::is_generation_name(name) && Some(name) != current.as_deref());
        if leftover {
            vol.remove_tree(name)
                .map_err(at("remove leftover", &target.join(name)))?;
        }
    }

    // Names free now get their link before the swap; held names are replaced after it.
    let by_name: BTreeMap<&str, &layout::Entry> = entries
        .iter()
        .filter_map(|e| Some((e.name.to_str()?, e)))
        .collect();
    let mut free = Vec::new();
    for name in &names {
        match by_name.get(name.as_str()) {
            None => free.push(name.as_str()),
            Some(e) if layout::is_our_link(e, name) => {}
            Some(_) if policy == Policy::Shared => return Err(layout::in_the_way(&vol, name)),
            Some(_) => {}
        }
    }

    let space = vol.space().map_err(at("statfs", target))?;
    let needed = room::footprint(
        files.iter().map(|f| f.contents.expose().len() as u64),
        free.iter().copied(),
        space.block,
    );
    let inodes_needed = inodes(files, &free);
    let no_room = || WriteError::NoRoom {
        target: target.to_owned(),
        needed,
        available: space.available,
        total: space.total,
        inodes_needed,
        inodes_free: space.inodes_free,
    };
    let short_of_bytes = space.total > 0 && needed > space.available;
    let short_of_inodes = space.inodes_total > 0 && inodes_needed > space.inodes_free;
    if (short_of_bytes || short_of_inodes) && !tests::skip_room_check() {
        return Err(no_room());
    }

    let generation = generation::new_name();
    let mut made = Vec::new();
    let swapped = stage(&vol, &generation, files, &free, &mut made, group).and_then(|()| {
        let tmp = target.join(DATA_TMP_LINK);
        vol.symlink(&generation, DATA_TMP_LINK)
            .map_err(at("create symlink", &tmp))?;
        if let Some(group) = group {
            vol.set_entry_group(DATA_TMP_LINK, group.gid())
                .map_err(at("chown", &tmp))?;
        }
        vol.rename(DATA_TMP_LINK, DATA_LINK)
            .map_err(at("swap", &target.join(DATA_LINK)))
    });
    if let Err(error) = swapped {
        // Nothing of the failed write stays: the partial generation and its links go.
        let _ = vol.remove_tree(DATA_TMP_LINK);
        for name in made.iter().rev() {
            let _ = vol.remove_tree(name.as_str());
        }
        let _ = vol.remove_tree(generation.as_str());
        return Err(if is_enospc(&error) { no_room() } else { error });
    }

    // Now held names are replaced, stale links and the old generation removed.
    let plan = layout::plan(&layout::entries(&vol)?, Some(&generation), &names, policy);
    layout::apply(&vol, &plan, policy)?;
    own_links(&vol, group)?;
    Ok(Outcome::Written)
}

/// Gives `..data` and the top-level links to `group` where they have another group (links
/// made by a repair, or a volume written before it had a group). Links only: their group
/// grants nothing, but the whole layout then reads as the pod's, as kubelet leaves it.
fn own_links(vol: &DirFd, group: Option<FsGroup>) -> Result<(), WriteError> {
    let Some(group) = group else {
        return Ok(());
    };
    for entry in layout::entries(vol)? {
        if entry.kind != dirfd::Kind::Symlink {
            continue;
        }
        let name = entry.name.as_os_str();
        let path = vol.path.join(name);
        if vol.entry_group(name).map_err(at("inspect", &path))? != group.gid() {
            vol.set_entry_group(name, group.gid())
                .map_err(at("chown", &path))?;
        }
    }
    Ok(())
}

/// Writes the generation directory and the links of the free names; `made` collects the
/// links made, for the clean-up of a failure.
fn stage(
    vol: &DirFd,
    generation: &str,
    files: &[Payload],
    free: &[&str],
    made: &mut Vec<String>,
    group: Option<FsGroup>,
) -> Result<(), WriteError> {
    let gen_path = vol.path.join(generation);
    let gen_dir = vol
        .mkdir(generation, 0o755)
        .map_err(at("create directory", &gen_path))?;
    if let Some(group) = group {
        gen_dir
            .set_group(group.gid())
            .map_err(at("chown", &gen_path))?;
    }
    for file in files {
        write_file(&gen_dir, file, group)?;
    }
    for name in free {
        let link = vol.path.join(name);
        vol.symlink(&link_target(name), name)
            .map_err(at("create symlink", &link))?;
        made.push((*name).to_owned());
        if let Some(group) = group {
            vol.set_entry_group(*name, group.gid())
                .map_err(at("chown", &link))?;
        }
    }
    Ok(())
}

/// Inodes a new generation takes: its directory and `..data_tmp`, each file, each nested
/// directory, and the links of the free names.
fn inodes(files: &[Payload], free: &[&str]) -> u64 {
    let dirs: BTreeSet<&str> = files
        .iter()
        .filter_map(|f| f.path.rsplit_once('/').map(|(parent, _)| parent))
        .flat_map(|parent| {
            parent
                .match_indices('/')
                .map(|(i, _)| &parent[..i])
                .chain([parent])
        })
        .collect();
    (2 + files.len() + dirs.len() + free.len()) as u64
}

fn is_enospc(error: &WriteError) -> bool {
    matches!(error, WriteError::Io { source, .. } if source.raw_os_error() == Some(nix::errno::Errno::ENOSPC as i32))
}

/// Puts the visible layout of a volume back in line with the generation `..data` names
/// (links made or removed, leftover generations and `..data_tmp` swept), without a new file
/// set: what start-up does for each volume it finds mounted, as a crash may have interrupted
/// a write. Entries not made by the writer are left alone. Returns true when anything changed.
pub(crate) fn repair(target: &Path) -> Result<bool, WriteError> {
    let vol = DirFd::open(target).map_err(at("open", target))?;
    let (generation, names) = match layout::data_link(&vol)? {
        DataLink::Valid(generation) => {
            let gen_dir = vol
                .child(generation.as_str())
                .map_err(at("open", &target.join(&generation)))?;
            let listed = gen_dir
                .list()
                .map_err(at("read directory", &gen_dir.path))?;
            let names = listed
                .into_iter()
                .filter_map(|(name, _)| name.into_string().ok())
                .collect();
            (Some(generation), names)
        }
        DataLink::Missing => (None, BTreeSet::new()),
        DataLink::Invalid(what) => {
            return Err(WriteError::BadDataLink {
                target: target.to_owned(),
                what,
            });
        }
    };
    let plan = layout::plan(
        &layout::entries(&vol)?,
        generation.as_deref(),
        &names,
        Policy::Repair,
    );
    if plan.is_empty() {
        return Ok(false);
    }
    tracing::info!(
        target = %target.display(),
        missing = plan.missing.len(),
        removed = plan.remove.len(),
        "volume layout repaired"
    );
    layout::apply(&vol, &plan, Policy::Repair)?;
    Ok(true)
}

fn write_file(root: &DirFd, file: &Payload, group: Option<FsGroup>) -> Result<(), WriteError> {
    let path = root.path.join(&file.path);
    let (parent, base) = match file.path.rsplit_once('/') {
        Some((parent, base)) => (Some(parent), base),
        None => (None, file.path.as_str()),
    };
    let nested;
    let dir = match parent {
        None => root,
        Some(parent) => {
            nested = make_dirs(root, parent, group).map_err(at("create directory", &path))?;
            &nested
        }
    };
    // The generation directory is new: a name that exists already is an error, never followed.
    let mut out = dir.create_file(base).map_err(at("write", &path))?;
    out.write_all(file.contents.expose())
        .map_err(at("write", &path))?;
    // The group before the mode: chown(2) clears set-id bits, and the mode is the last word.
    if let Some(group) = group {
        nix::unistd::fchown(&out, None, Some(nix::unistd::Gid::from_raw(group.gid())))
            .map_err(|e| at("chown", &path)(e.into()))?;
    }
    // The umask may have narrowed the mode; set it on the open file.
    out.set_permissions(std::fs::Permissions::from_mode(file_mode(file, group)))
        .map_err(at("chmod", &path))?;
    Ok(())
}

/// The mode `file` has on disk: as requested, plus group read with a group.
fn file_mode(file: &Payload, group: Option<FsGroup>) -> u32 {
    group.map_or(file.mode, |g| g.file_mode(file.mode))
}

fn make_dirs(root: &DirFd, rel: &str, group: Option<FsGroup>) -> io::Result<DirFd> {
    let mut parts = rel.split('/');
    let mut dir = step(root, parts.next().unwrap_or_default(), group)?;
    for part in parts {
        dir = step(&dir, part, group)?;
    }
    Ok(dir)
}

/// Opens or makes (0755, the group's) one directory of a new generation.
fn step(dir: &DirFd, name: &str, group: Option<FsGroup>) -> io::Result<DirFd> {
    match dir.child(name) {
        Ok(child) => Ok(child),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let made = dir.mkdir(name, 0o755)?;
            if let Some(group) = group {
                made.set_group(group.gid())?;
            }
            Ok(made)
        }
        Err(e) => Err(e),
    }
}

fn top_level_names<'a>(paths: impl Iterator<Item = &'a str>) -> BTreeSet<String> {
    paths
        .filter_map(|p| p.split('/').next())
        .map(str::to_owned)
        .collect()
}

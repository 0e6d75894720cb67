//! The visible layout of a volume and its repair: `..data` -> one generation directory, and
//! each top-level name of that generation a link `name -> ..data/name`. What differs (a missing
//! or stale link, an entry in the way of a name, a leftover generation or `..data_tmp`) is
//! planned here and fixed without following any link.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io;

use super::dirfd::{DirFd, Kind};
use super::generation::{DATA_LINK, DATA_TMP_LINK, is_generation_name, link_target};
use super::{WriteError, at};

/// Who owns the directory, and so what may be removed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    /// A volume keymount mounted or adopted: everything at top level that is not part of the
    /// layout goes (plain files left by a self-writing provider or the upstream driver).
    Owned,
    /// A directory the user owns (`keymount fetch --out`): only the writer's own leftovers
    /// go; a foreign entry in the way of a new name is an error.
    Shared,
    /// Start-up repair, without a new set: like `Shared`, but an entry in the way of a name
    /// is left for the next write.
    Repair,
}

/// What `..data` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DataLink {
    Missing,
    /// A link to a generation directory of this volume.
    Valid(String),
    /// Anything else (a link outside, a path, a plain directory): never followed.
    Invalid(String),
}

/// Reads `..data` without following it and checks that its target is one generation name
/// naming a real directory of the same file system.
pub(crate) fn data_link(vol: &DirFd) -> Result<DataLink, WriteError> {
    let path = vol.path.join(DATA_LINK);
    match vol.kind(DATA_LINK).map_err(at("inspect", &path))? {
        None => Ok(DataLink::Missing),
        Some(Kind::Symlink) => {
            let dest = vol
                .read_link(DATA_LINK)
                .map_err(at("read symlink", &path))?;
            let shown = describe(&dest);
            let Some(name) = dest.to_str().filter(|d| is_generation_name(d)) else {
                return Ok(DataLink::Invalid(format!("a link to {shown}")));
            };
            match vol.kind(name).map_err(at("inspect", &path))? {
                Some(Kind::Dir) if vol.child(name).is_ok() => Ok(DataLink::Valid(name.to_owned())),
                _ => Ok(DataLink::Invalid(format!(
                    "a link to {shown}, which is not a generation directory of the volume"
                ))),
            }
        }
        Some(kind) => Ok(DataLink::Invalid(format!("a {kind:?}, not a link"))),
    }
}

fn describe(dest: &std::ffi::OsStr) -> String {
    format!("{:?}", crate::text::shorten(&dest.to_string_lossy(), 200))
}

/// One top-level entry, read without following it.
#[derive(Debug)]
pub(crate) struct Entry {
    pub name: OsString,
    pub kind: Kind,
    /// A symlink's target.
    pub link: Option<OsString>,
}

/// The top-level entries of the volume.
pub(super) fn entries(vol: &DirFd) -> Result<Vec<Entry>, WriteError> {
    let listed = vol.list().map_err(at("read directory", &vol.path))?;
    let mut out = Vec::with_capacity(listed.len());
    for (name, kind) in listed {
        let link = if kind == Kind::Symlink {
            match vol.read_link(name.as_os_str()) {
                Ok(dest) => Some(dest),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(at("read symlink", &vol.path.join(&name))(e)),
            }
        } else {
            None
        };
        out.push(Entry { name, kind, link });
    }
    Ok(out)
}

/// True when `entry` is the link this layout makes for `name`: `name -> ..data/name`.
pub(crate) fn is_our_link(entry: &Entry, name: &str) -> bool {
    entry.kind == Kind::Symlink
        && entry.link.as_deref().and_then(|l| l.to_str()) == Some(link_target(name).as_str())
}

/// What must change for the layout to match `generation` with top-level `names`.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Names with no entry: a link is created.
    pub missing: Vec<String>,
    /// Names held by something else (a plain file or directory, another link).
    pub(crate) occupied: Vec<String>,
    /// Entries to remove: stale links, leftover generations and `..data_tmp`, and (when the
    /// volume is owned) anything foreign.
    pub remove: Vec<OsString>,
}

impl Plan {
    pub(super) fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.occupied.is_empty() && self.remove.is_empty()
    }
}

/// Compares the entries with the layout of `generation` (`None`: no generation yet).
pub(crate) fn plan(
    entries: &[Entry],
    generation: Option<&str>,
    names: &BTreeSet<String>,
    policy: Policy,
) -> Plan {
    let mut plan = Plan::default();
    let mut present = BTreeSet::new();
    for entry in entries {
        let Some(name) = entry.name.to_str() else {
            if policy == Policy::Owned {
                plan.remove.push(entry.name.clone());
            }
            continue;
        };
        if name == DATA_LINK || Some(name) == generation {
            continue;
        }
        let ours = is_our_link(entry, name);
        if names.contains(name) {
            present.insert(name);
            if !ours {
                plan.occupied.push(name.to_owned());
            }
        } else {
            // The writer's own leftovers go whoever owns the directory; anything else only
            // from a volume keymount owns.
            let leftover = ours || name == DATA_TMP_LINK || is_generation_name(name);
            if leftover || policy == Policy::Owned {
                plan.remove.push(entry.name.clone());
            }
        }
    }
    plan.missing = names
        .iter()
        .filter(|n| !present.contains(n.as_str()))
        .cloned()
        .collect();
    plan
}

/// Carries out `plan`: missing links made, occupied names replaced (owned) or refused
/// (shared), then stale and foreign entries removed. `..data` must already name the
/// generation the names belong to, so no link made here dangles.
pub(super) fn apply(vol: &DirFd, plan: &Plan, policy: Policy) -> Result<(), WriteError> {
    for name in &plan.missing {
        match vol.symlink(&link_target(name), name) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(at("create symlink", &vol.path.join(name))(e));
            }
            _ => {}
        }
    }
    for name in &plan.occupied {
        match policy {
            Policy::Owned => replace(vol, name)?,
            Policy::Shared => return Err(in_the_way(vol, name)),
            Policy::Repair => {}
        }
    }
    for name in &plan.remove {
        vol.remove_tree(name.as_os_str())
            .map_err(at("remove", &vol.path.join(name)))?;
    }
    Ok(())
}

pub(crate) fn in_the_way(vol: &DirFd, name: &str) -> WriteError {
    WriteError::InTheWay {
        target: vol.path.clone(),
        name: name.to_owned(),
    }
}

/// Replaces whatever holds `name` by the link `name -> ..data/name` in one step: the link is
/// made as `..data_tmp` and exchanged with the entry, which is then removed. A reader sees the
/// old entry or the new link, never neither.
fn replace(vol: &DirFd, name: &str) -> Result<(), WriteError> {
    let tmp = vol.path.join(DATA_TMP_LINK);
    let path = vol.path.join(name);
    vol.remove_tree(DATA_TMP_LINK).map_err(at("remove", &tmp))?;
    vol.symlink(&link_target(name), DATA_TMP_LINK)
        .map_err(at("create symlink", &tmp))?;
    match vol.exchange(DATA_TMP_LINK, name) {
        Ok(()) => {}
        // A file system without RENAME_EXCHANGE: a non-directory is replaced by rename(2)
        // just as atomically; a directory goes first.
        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EINVAL as i32) => {
            if vol.kind(name).map_err(at("inspect", &path))? == Some(Kind::Dir) {
                vol.remove_tree(name).map_err(at("remove", &path))?;
            }
            vol.rename(DATA_TMP_LINK, name)
                .map_err(at("replace", &path))?;
            return Ok(());
        }
        Err(e) => return Err(at("replace", &path)(e)),
    }
    vol.remove_tree(DATA_TMP_LINK)
        .map_err(at("remove the replaced entry", &path))
}

//! Unit tests of the writer, on real directories and real small tmpfs mounts: the helpers
//! here, the tests by subject in the submodules.

mod containment;
mod layout;
mod ownership;
mod room;

use std::cell::Cell;
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use super::dirfd::{DirFd, Kind};
use super::layout::DataLink;
use super::*;

thread_local! {
    pub(super) static SKIP_ROOM_CHECK: Cell<bool> = const { Cell::new(false) };
}

/// True while a test wants the write to run into the file system's own ENOSPC.
pub(crate) fn skip_room_check() -> bool {
    SKIP_ROOM_CHECK.with(Cell::get)
}

pub(super) fn payload(path: &str, mode: u32, contents: &str) -> Payload {
    bytes(path, mode, contents.as_bytes().to_vec())
}

pub(super) fn bytes(path: &str, mode: u32, contents: Vec<u8>) -> Payload {
    Payload {
        path: path.into(),
        mode,
        contents: Redacted::new(contents),
    }
}

/// Reads the files of the current generation back: `relative path -> absolute path`,
/// following the layout this writer makes (what a test checks a write with).
pub(super) fn current_files(target: &Path) -> Result<Vec<(String, PathBuf)>, WriteError> {
    let vol = DirFd::open(target).map_err(at("open", target))?;
    let DataLink::Valid(generation) = super::layout::data_link(&vol)? else {
        return Ok(Vec::new());
    };
    let gen_dir = vol
        .child(generation.as_str())
        .map_err(at("open", &target.join(&generation)))?;
    let mut out = Vec::new();
    read::collect_files(&gen_dir, "", &mut out).map_err(at("read", &gen_dir.path))?;
    let root = target.join(generation);
    Ok(out
        .into_iter()
        .filter(|(_, kind)| *kind == Kind::File)
        .map(|(rel, _)| {
            let path = root.join(&rel);
            (rel, path)
        })
        .collect())
}

pub(super) fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

pub(super) fn data(t: &Path) -> String {
    fs::read_link(t.join("..data"))
        .unwrap()
        .into_os_string()
        .into_string()
        .unwrap()
}

/// Exactly the layout of `files`: `..data`, one generation, one link per top-level name,
/// each file readable through its link with the given contents.
pub(super) fn assert_exact(t: &Path, files: &[(&str, &str)]) {
    let generation = data(t);
    let mut expected: BTreeSet<String> = files
        .iter()
        .map(|(p, _)| p.split('/').next().unwrap().to_owned())
        .collect();
    for name in &expected {
        assert_eq!(
            fs::read_link(t.join(name)).unwrap(),
            Path::new("..data").join(name),
            "{name}"
        );
    }
    expected.insert("..data".into());
    expected.insert(generation);
    assert_eq!(names(t), expected);
    for (path, contents) in files {
        assert_eq!(
            fs::read_to_string(t.join(path)).unwrap(),
            *contents,
            "{path}"
        );
    }
}

/// A real tmpfs of `options` on a temp dir, unmounted when dropped.
pub(super) struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    pub(super) fn new(options: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(options),
        )
        .expect("mount tmpfs (tests run as root)");
        Self { dir }
    }

    pub(super) fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Another test of this process may be starting a child (a fork briefly holds copies
        // of every descriptor, this volume's too): EBUSY then, so detach the mount instead.
        nix::mount::umount2(self.dir.path(), nix::mount::MntFlags::MNT_DETACH)
            .expect("unmount the test tmpfs");
    }
}

/// A directory outside the volume with a sentinel file, and the volume at `<base>/one/two/vol`
/// so that `../../x` from the volume lands in `<base>/one/x`.
pub(super) struct Planted {
    _base: tempfile::TempDir,
    pub(super) vol: std::path::PathBuf,
    pub(super) outside: std::path::PathBuf,
}

impl Planted {
    pub(super) fn new() -> Self {
        let base = tempfile::tempdir().unwrap();
        let vol = base.path().join("one/two/vol");
        fs::create_dir_all(&vol).unwrap();
        let outside = base.path().join("one/x");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("sentinel"), "keep me").unwrap();
        Self {
            _base: base,
            vol,
            outside,
        }
    }

    pub(super) fn assert_outside_intact(&self) {
        assert_eq!(
            fs::read_to_string(self.outside.join("sentinel")).unwrap(),
            "keep me"
        );
        assert_eq!(
            names(&self.outside),
            BTreeSet::from(["sentinel".to_owned()])
        );
    }
}

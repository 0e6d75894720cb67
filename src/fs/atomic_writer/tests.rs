//! Unit tests of the writer, on real directories and real small tmpfs mounts.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::Path;

use super::*;

thread_local! {
    static SKIP_ROOM_CHECK: Cell<bool> = const { Cell::new(false) };
}

/// True while a test wants the write to run into the file system's own ENOSPC.
pub fn skip_room_check() -> bool {
    SKIP_ROOM_CHECK.with(Cell::get)
}

fn payload(path: &str, mode: u32, contents: &str) -> Payload {
    bytes(path, mode, contents.as_bytes().to_vec())
}

fn bytes(path: &str, mode: u32, contents: Vec<u8>) -> Payload {
    Payload {
        path: path.into(),
        mode,
        contents: Redacted::new(contents),
    }
}

fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

fn data(t: &Path) -> String {
    fs::read_link(t.join("..data"))
        .unwrap()
        .into_os_string()
        .into_string()
        .unwrap()
}

/// Exactly the layout of `files`: `..data`, one generation, one link per top-level name,
/// each file readable through its link with the given contents.
fn assert_exact(t: &Path, files: &[(&str, &str)]) {
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
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn new(options: &str) -> Self {
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

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        crate::mount::unmount(self.dir.path()).unwrap();
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

    assert_exact(t, &[("user", "admin"), ("db/pass", "pw")]);
    let generation = data(t);
    assert!(generation.starts_with("..20"));
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
    let old = data(t);
    write(t, &[payload("a", 0o644, "3")]).unwrap();
    assert_exact(t, &[("a", "3")]);
    assert!(!t.join(&old).exists(), "old generation removed");
    let read_back = current_files(t).unwrap();
    assert_eq!(read_back.len(), 1);
    assert_eq!(read_back[0].0, "a");
}

#[test]
fn unchanged_content_still_repairs_missing_dangling_and_stale_links() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path();
    let files = [
        payload("a", 0o644, "1"),
        payload("b", 0o644, "2"),
        payload("d/c", 0o644, "3"),
    ];
    write(t, &files).unwrap();
    let generation = data(t);
    let ino = fs::metadata(t.join("a")).unwrap().ino();
    // What a crash leaves: a link missing, a stale link of an older set (dangling), a link
    // made for the next set before its swap (dangling), a leftover generation and ..data_tmp.
    fs::remove_file(t.join("b")).unwrap();
    fs::remove_file(t.join("d")).unwrap();
    symlink("..data/gone", t.join("gone")).unwrap();
    symlink("..data/next", t.join("next")).unwrap();
    fs::create_dir(t.join("..2020_01_01_00_00_00.1")).unwrap();
    fs::write(t.join("..2020_01_01_00_00_00.1/a"), "old").unwrap();
    symlink("..2020_01_01_00_00_00.1", t.join("..data_tmp")).unwrap();

    assert_eq!(write(t, &files).unwrap(), Outcome::Repaired);
    assert_exact(t, &[("a", "1"), ("b", "2"), ("d/c", "3")]);
    assert_eq!(
        data(t),
        generation,
        "no new generation for unchanged content"
    );
    assert_eq!(
        fs::metadata(t.join("a")).unwrap().ino(),
        ino,
        "files not rewritten"
    );
    assert_eq!(write(t, &files).unwrap(), Outcome::Unchanged);
}

#[test]
fn repair_sweeps_orphan_generations_and_data_tmp_and_fixes_links() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path();
    write(t, &[payload("a", 0o644, "1"), payload("b", 0o644, "2")]).unwrap();
    assert!(!repair(t).unwrap(), "an intact volume is left alone");

    // A crash before the swap: the next generation written, its new link made.
    let next = "..2099_01_01_00_00_00.42";
    fs::create_dir(t.join(next)).unwrap();
    fs::write(t.join(next).join("c"), "3").unwrap();
    symlink("..data/c", t.join("c")).unwrap();
    symlink(next, t.join("..data_tmp")).unwrap();
    // A file someone else put there is not the repair's to remove.
    fs::write(t.join("other"), "x").unwrap();
    fs::remove_file(t.join("b")).unwrap();

    assert!(repair(t).unwrap());
    let mut expected = names(t);
    expected.remove("other");
    fs::remove_file(t.join("other")).unwrap();
    assert_exact(t, &[("a", "1"), ("b", "2")]);
    assert!(!expected.contains(next) && !expected.contains("..data_tmp"));
}

#[test]
fn a_crash_after_the_swap_repairs_to_the_new_set() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path();
    write(t, &[payload("a", 0o644, "1"), payload("b", 0o644, "2")]).unwrap();
    let old = data(t);
    // The swap to a generation without "b" and with "c" happened, nothing after it.
    let next = "..2099_01_01_00_00_00.7";
    fs::create_dir(t.join(next)).unwrap();
    fs::write(t.join(next).join("a"), "10").unwrap();
    fs::write(t.join(next).join("c"), "30").unwrap();
    symlink("..data/c", t.join("c")).unwrap();
    symlink(next, t.join("..data_tmp")).unwrap();
    fs::rename(t.join("..data_tmp"), t.join("..data")).unwrap();

    assert!(repair(t).unwrap());
    assert_exact(t, &[("a", "10"), ("c", "30")]);
    assert!(!t.join(old).exists());
}

/// A directory outside the volume with a sentinel file, and the volume at `<base>/one/two/vol`
/// so that `../../x` from the volume lands in `<base>/one/x`.
struct Planted {
    _base: tempfile::TempDir,
    vol: std::path::PathBuf,
    outside: std::path::PathBuf,
}

impl Planted {
    fn new() -> Self {
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

    fn assert_outside_intact(&self) {
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

#[test]
fn a_planted_data_link_outside_the_volume_is_never_followed() {
    for planted in ["absolute", "../../x"] {
        let bed = Planted::new();
        let t = &bed.vol;
        // The set is exactly what the outside directory holds: followed, it would "match".
        let files = [payload("sentinel", 0o644, "keep me")];
        write(t, &files).unwrap();
        let dest = if planted == "absolute" {
            bed.outside.clone()
        } else {
            Path::new(planted).to_owned()
        };
        // A self-writing provider (or a previous tenant of the mount) plants ..data.
        fs::remove_file(t.join("..data")).unwrap();
        symlink(&dest, t.join("..data")).unwrap();

        let error = repair(t).unwrap_err();
        assert!(
            error.to_string().contains("..data is a link to"),
            "{planted}: {error}"
        );
        bed.assert_outside_intact();

        // Never compared through the link: a fresh generation inside the volume.
        assert_eq!(write(t, &files).unwrap(), Outcome::Written, "{planted}");
        bed.assert_outside_intact();
        assert_exact(t, &[("sentinel", "keep me")]);
        assert!(generation::is_generation_name(&data(t)));

        // Planted again, then a changed set: the old "generation" (outside) is not removed.
        fs::remove_file(t.join("..data")).unwrap();
        symlink(&dest, t.join("..data")).unwrap();
        write(t, &[payload("c", 0o644, "3")]).unwrap();
        bed.assert_outside_intact();
        assert_exact(t, &[("c", "3")]);
    }
}

#[test]
fn a_generation_name_that_is_a_link_outside_is_removed_as_a_link() {
    let bed = Planted::new();
    let t = &bed.vol;
    write(t, &[payload("a", 0o644, "1")]).unwrap();
    // ..data names a generation-shaped entry that is itself a link out of the volume.
    let fake = "..2020_01_01_00_00_00.1";
    symlink(&bed.outside, t.join(fake)).unwrap();
    fs::remove_file(t.join("..data")).unwrap();
    symlink(fake, t.join("..data")).unwrap();
    assert!(matches!(repair(t), Err(WriteError::BadDataLink { .. })));
    assert_eq!(
        write(t, &[payload("b", 0o644, "2")]).unwrap(),
        Outcome::Written
    );
    bed.assert_outside_intact();
    assert_exact(t, &[("b", "2")]);
}

#[test]
fn plain_files_and_dirs_at_top_level_are_replaced_by_the_new_set() {
    let bed = Planted::new();
    let t = &bed.vol;
    // What a self-writing provider or the upstream driver left: plain files and directories,
    // a foreign link pointing outside (never followed), and a link in the way of a name.
    fs::write(t.join("a"), "old plain").unwrap();
    fs::create_dir_all(t.join("db/deeper")).unwrap();
    fs::write(t.join("db/pass"), "old pass").unwrap();
    fs::write(t.join("junk"), "x").unwrap();
    fs::create_dir(t.join("junkdir")).unwrap();
    fs::write(t.join("junkdir/f"), "x").unwrap();
    symlink(&bed.outside, t.join("escape")).unwrap();
    symlink(&bed.outside, t.join("c")).unwrap();

    let files = [
        payload("a", 0o644, "new a"),
        payload("db/pass", 0o600, "new pass"),
        payload("c", 0o644, "new c"),
    ];
    assert_eq!(write(t, &files).unwrap(), Outcome::Written);
    assert_exact(
        t,
        &[("a", "new a"), ("db/pass", "new pass"), ("c", "new c")],
    );
    bed.assert_outside_intact();

    // A plain file that shows up again later (the provider wrote it) is replaced even when
    // the set itself did not change.
    fs::remove_file(t.join("a")).unwrap();
    fs::write(t.join("a"), "stale plain").unwrap();
    assert_eq!(write(t, &files).unwrap(), Outcome::Repaired);
    assert_exact(
        t,
        &[("a", "new a"), ("db/pass", "new pass"), ("c", "new c")],
    );
}

#[test]
fn a_shared_directory_keeps_foreign_entries_and_refuses_one_in_the_way() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path();
    fs::write(t.join("notes"), "mine").unwrap();
    write_shared(t, &[payload("a", 0o644, "1")]).unwrap();
    assert_eq!(fs::read_to_string(t.join("notes")).unwrap(), "mine");
    let error = write_shared(t, &[payload("notes", 0o644, "2")]).unwrap_err();
    assert!(matches!(error, WriteError::InTheWay { .. }), "{error}");
    assert_eq!(fs::read_to_string(t.join("notes")).unwrap(), "mine");
    assert_eq!(fs::read_to_string(t.join("a")).unwrap(), "1");
}

/// Rotations on a real tmpfs sized the way a publish sizes it for `limits`.
fn rotate_on_sized_tmpfs(limits: &crate::fs::paths::Limits, set: impl Fn(u8) -> Vec<Payload>) {
    let fs_ = Tmpfs::new(&format!("size={},mode=0755", limits.tmpfs_size()));
    let t = fs_.path();
    for round in 0..4u8 {
        let files = set(round);
        let sizes = files
            .iter()
            .map(|f| (f.path.as_str(), 0o644, f.contents.expose().len() as u64));
        crate::fs::paths::validate_set(sizes, limits).expect("a set the limits accept");
        assert_eq!(write(t, &files).unwrap(), Outcome::Written, "round {round}");
        let generations = names(t).iter().filter(|n| n.starts_with("..20")).count();
        assert_eq!(generations, 1, "round {round}: {:?}", names(t));
        let first = &files[0];
        assert_eq!(
            fs::read(t.join(&first.path)).unwrap(),
            *first.contents.expose()
        );
    }
}

#[test]
fn a_set_using_sixty_percent_of_its_tmpfs_rotates() {
    // --tmpfs-size 1 MiB: a set of 60 % of it (15 files of 40 KiB) rotates again and again.
    let limits = crate::fs::paths::Limits {
        max_total_bytes: 1024 * 1024,
        ..Default::default()
    };
    rotate_on_sized_tmpfs(&limits, |tag| {
        (0..15)
            .map(|i| bytes(&format!("f{i}"), 0o644, vec![tag; 41 * 1024]))
            .collect()
    });
}

#[test]
fn two_generations_of_the_largest_accepted_set_fit() {
    // The worst case of the limits: every file one byte past a page, long top-level names
    // (a link page each), and names that change on every rotation (old and new links both).
    // Each file takes 20 KiB, each link 4 KiB: the set takes exactly the limit.
    assert_eq!(
        room::page_size(),
        4096,
        "the numbers below assume 4 KiB pages"
    );
    let limits = crate::fs::paths::Limits {
        max_files: 16,
        max_total_bytes: 16 * (20 + 4) * 1024,
        ..Default::default()
    };
    rotate_on_sized_tmpfs(&limits, |tag| {
        (0..16)
            .map(|i| {
                let name = format!("{tag}-{i}-{}", "n".repeat(200));
                bytes(&name, 0o644, vec![tag; 16 * 1024 + 1])
            })
            .collect()
    });
}

#[test]
fn a_full_tmpfs_is_an_error_naming_the_sizes_and_leaves_no_partial_generation() {
    let fs_ = Tmpfs::new("size=256k,mode=0755");
    let t = fs_.path();
    let set = |tag: u8, files: usize| -> Vec<Payload> {
        (0..files)
            .map(|i| bytes(&format!("f{i}"), 0o644, vec![tag; 16 * 1024]))
            .collect()
    };
    write(t, &set(1, 6)).unwrap(); // 96 KiB
    let before = names(t);

    // (A tmpfs smaller than keymount sizes its own: an adopted one, or plain files beside.)
    // Found before writing anything: 176 KiB needed, 160 KiB free.
    let error = write(t, &set(2, 11)).unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(
            error,
            WriteError::NoRoom {
                needed: 180224,
                available: 163840,
                total: 262144,
                ..
            }
        ),
        "{message}"
    );
    assert!(message.contains(&t.display().to_string()), "{message}");
    assert!(message.contains("they need 180224 bytes"), "{message}");
    assert!(message.contains("163840 of 262144 bytes"), "{message}");
    assert_eq!(names(t), before, "nothing was changed");

    // The kernel's own ENOSPC in the middle of the write: the partial generation goes.
    SKIP_ROOM_CHECK.with(|s| s.set(true));
    let error = write(t, &set(3, 11)).unwrap_err();
    SKIP_ROOM_CHECK.with(|s| s.set(false));
    assert!(matches!(error, WriteError::NoRoom { .. }), "{error}");
    assert_eq!(names(t), before, "no partial generation or link left");
    assert_eq!(fs::read(t.join("f0")).unwrap(), vec![1; 16 * 1024]);

    // Still rotates to a set that fits.
    assert_eq!(write(t, &set(4, 6)).unwrap(), Outcome::Written);
    assert_eq!(fs::read(t.join("f5")).unwrap(), vec![4; 16 * 1024]);
}

#[test]
fn running_out_of_inodes_is_found_before_writing() {
    let fs_ = Tmpfs::new("size=1m,nr_inodes=16,mode=0755");
    let t = fs_.path();
    let set = |files: usize| -> Vec<Payload> {
        (0..files)
            .map(|i| payload(&format!("f{i}"), 0o644, "x"))
            .collect()
    };
    write(t, &set(3)).unwrap();
    let before = names(t);
    let error = write(t, &set(12)).unwrap_err();
    assert!(
        matches!(
            error,
            WriteError::NoRoom {
                inodes_needed: 23,
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(names(t), before);
}

#[test]
fn a_mount_inside_the_volume_is_never_entered() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path();
    write(t, &[payload("a", 0o644, "1")]).unwrap();
    // Something else mounted at a top-level name of the volume: its files are not ours.
    fs::create_dir(t.join("mnt")).unwrap();
    let inner = Tmpfs::new("size=64k,mode=0755");
    nix::mount::mount(
        Some(inner.path()),
        &t.join("mnt"),
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    fs::write(inner.path().join("sentinel"), "keep me").unwrap();

    let error = write(t, &[payload("b", 0o644, "2")]).unwrap_err();
    crate::mount::unmount(&t.join("mnt")).unwrap();
    assert!(error.to_string().contains("another file system"), "{error}");
    assert_eq!(
        fs::read_to_string(inner.path().join("sentinel")).unwrap(),
        "keep me"
    );
}

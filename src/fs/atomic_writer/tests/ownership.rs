//! The pod's fsGroup: every entry of the volume belongs to it, files get group read where the
//! owner can read, rewrites keep or change it, and nothing outside the volume is touched.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;

use super::*;

fn group(gid: &str) -> Option<FsGroup> {
    Some(FsGroup::parse(gid).unwrap())
}

fn gid_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().gid()
}

/// The mode of what `path` names, through the volume's links.
fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Every entry below `t` (links not followed), the root included, has group `gid`.
fn assert_all_of_group(t: &Path, gid: u32) {
    assert_eq!(gid_of(t), gid, "root");
    let mut stack = vec![t.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            assert_eq!(gid_of(&path), gid, "{}", path.display());
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            }
        }
    }
}

#[test]
fn a_grouped_write_gives_every_entry_to_the_group_and_adds_group_read() {
    let vol = Tmpfs::new("size=1m,mode=0755");
    let t = vol.path();
    let files = [
        payload("key", 0o600, "k"),
        payload("ro", 0o400, "r"),
        payload("pub", 0o644, "p"),
        payload("nested/deep/cert", 0o600, "c"),
    ];
    assert_eq!(
        write_as(t, &files, group("2000")).unwrap(),
        Outcome::Written
    );
    assert_all_of_group(t, 2000);
    assert_eq!(mode_of(&t.join("key")), 0o640);
    assert_eq!(mode_of(&t.join("ro")), 0o440);
    assert_eq!(mode_of(&t.join("pub")), 0o644);
    assert_eq!(mode_of(&t.join("nested/deep/cert")), 0o640);
    assert_eq!(mode_of(&t.join(data(t))), 0o755, "generation directory");
    assert_eq!(mode_of(&t.join(data(t)).join("nested")), 0o755);
    assert_eq!(mode_of(t), 0o755, "the root keeps its mode");
    assert_eq!(
        fs::metadata(t.join("key")).unwrap().uid(),
        0,
        "the owner stays root"
    );

    // The same set again: nothing is touched.
    assert_eq!(
        write_as(t, &files, group("2000")).unwrap(),
        Outcome::Unchanged
    );
    // Another group (kubelet never sends one for the same volume; the caller decides):
    // a fresh generation of that group, the old one gone.
    let before = data(t);
    assert_eq!(
        write_as(t, &files, group("3000")).unwrap(),
        Outcome::Written
    );
    assert_ne!(data(t), before);
    assert_all_of_group(t, 3000);
    assert_eq!(mode_of(&t.join("key")), 0o640);
}

#[test]
fn a_set_written_without_a_group_is_rewritten_with_one_and_the_plain_write_leaves_modes() {
    let vol = Tmpfs::new("size=1m,mode=0755");
    let t = vol.path();
    let files = [payload("key", 0o600, "k")];
    assert_eq!(write(t, &files).unwrap(), Outcome::Written);
    assert_eq!(mode_of(&t.join("key")), 0o600);
    assert_eq!(gid_of(&t.join("key")), 0);

    assert_eq!(
        write_as(t, &files, group("2000")).unwrap(),
        Outcome::Written
    );
    assert_all_of_group(t, 2000);
    assert_eq!(mode_of(&t.join("key")), 0o640);

    // Group 0 is a group like any other: root's group gets read where the owner can read.
    assert_eq!(write_as(t, &files, group("0")).unwrap(), Outcome::Written);
    assert_all_of_group(t, 0);
    assert_eq!(mode_of(&t.join("key")), 0o640);
}

#[test]
fn a_repaired_layout_gives_the_new_links_to_the_group() {
    let vol = Tmpfs::new("size=1m,mode=0755");
    let t = vol.path();
    let files = [payload("a", 0o600, "1"), payload("b", 0o600, "2")];
    write_as(t, &files, group("2000")).unwrap();
    fs::remove_file(t.join("b")).unwrap();
    fs::write(t.join("stray"), "x").unwrap();
    assert_eq!(
        write_as(t, &files, group("2000")).unwrap(),
        Outcome::Repaired
    );
    assert_exact(t, &[("a", "1"), ("b", "2")]);
    assert_all_of_group(t, 2000);
}

#[test]
fn the_group_never_reaches_outside_the_volume() {
    let bed = Planted::new();
    let t = &bed.vol;
    let sentinel = bed.outside.join("sentinel");
    let outside_gid = gid_of(&sentinel);
    let outside_dir_gid = gid_of(&bed.outside);
    let sentinel_mode = mode_of(&sentinel);
    assert_ne!(outside_gid, 4242);
    // Links planted at the names of the set, at `..data_tmp` and as a stray entry, each
    // pointing outside: the writer replaces or removes them, never chowns through them.
    symlink(&sentinel, t.join("a")).unwrap();
    symlink(&bed.outside, t.join("dir")).unwrap();
    symlink(&sentinel, t.join("..data_tmp")).unwrap();
    symlink("../../x/sentinel", t.join("stray")).unwrap();
    let files = [payload("a", 0o600, "1"), payload("dir/f", 0o600, "2")];
    assert_eq!(
        write_as(t, &files, group("4242")).unwrap(),
        Outcome::Written
    );
    assert_exact(t, &[("a", "1"), ("dir/f", "2")]);
    assert_all_of_group(t, 4242);
    bed.assert_outside_intact();
    assert_eq!(gid_of(&sentinel), outside_gid);
    assert_eq!(gid_of(&bed.outside), outside_dir_gid);
    assert_eq!(mode_of(&sentinel), sentinel_mode);

    // `..data` planted to point outside: replaced, the outside keeps its group.
    fs::remove_file(t.join("..data")).unwrap();
    symlink(&bed.outside, t.join("..data")).unwrap();
    assert_eq!(
        write_as(t, &[payload("sentinel", 0o644, "keep me")], group("4242")).unwrap(),
        Outcome::Written
    );
    bed.assert_outside_intact();
    assert_eq!(gid_of(&sentinel), outside_gid);
    assert_eq!(gid_of(&bed.outside), outside_dir_gid);
}

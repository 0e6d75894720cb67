//! The layout: writing, unchanged sets, and repair after a crash at each step.

use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};

use super::*;

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

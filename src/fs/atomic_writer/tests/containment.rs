//! Containment: planted `..data` links, foreign entries and mounts, shared directories.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use super::*;

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

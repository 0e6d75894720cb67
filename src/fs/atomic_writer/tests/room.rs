//! Room: two generations of the largest accepted set fit; a full file system fails cleanly.

use std::fs;

use super::*;

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
        crate::fs::atomic_writer::room::page_size(),
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

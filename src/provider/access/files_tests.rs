//! Unit tests of reading node files beneath the allowed directories.

use super::*;
use std::os::unix::fs::symlink;

fn setup() -> (tempfile::TempDir, AllowedDirs) {
    let tmp = tempfile::tempdir().unwrap();
    let allowed = tmp.path().join("allowed");
    std::fs::create_dir_all(allowed.join("certs")).unwrap();
    std::fs::write(allowed.join("ca.pem"), "CA").unwrap();
    std::fs::write(allowed.join("certs/a.pem"), "A").unwrap();
    std::fs::write(tmp.path().join("outside.key"), "OUTSIDE SECRET").unwrap();
    let dirs = AllowedDirs::new(&[allowed]).unwrap();
    (tmp, dirs)
}

#[test]
fn reads_beneath_and_refuses_the_rest() {
    let (tmp, dirs) = setup();
    let allowed = tmp.path().join("allowed");
    assert_eq!(dirs.read_file(&allowed.join("ca.pem")).unwrap(), b"CA");
    // Inside links and `..` that stay inside are fine.
    symlink("certs/a.pem", allowed.join("link.pem")).unwrap();
    assert_eq!(dirs.read_file(&allowed.join("link.pem")).unwrap(), b"A");
    assert_eq!(
        dirs.read_file(&allowed.join("certs/../ca.pem")).unwrap(),
        b"CA"
    );

    let outside = tmp.path().join("outside.key");
    assert!(matches!(
        dirs.read_file(&outside),
        Err(FileError::NotAllowed(_))
    ));
    assert!(matches!(
        dirs.read_file(Path::new("ca.pem")),
        Err(FileError::NotAbsolute(_))
    ));
    assert!(matches!(
        dirs.read_file(&allowed.join("../outside.key")),
        Err(FileError::Escapes(_))
    ));
    symlink(&outside, allowed.join("abs.key")).unwrap();
    symlink("../outside.key", allowed.join("rel.key")).unwrap();
    for name in ["abs.key", "rel.key"] {
        let err = dirs.read_file(&allowed.join(name)).unwrap_err();
        assert!(matches!(err, FileError::Escapes(_)), "{name}: {err}");
        assert!(!err.to_string().contains("OUTSIDE SECRET"));
    }
    symlink("/proc/self/root/etc/hostname", allowed.join("magic")).unwrap();
    assert!(matches!(
        dirs.read_file(&allowed.join("magic")),
        Err(FileError::Escapes(_))
    ));
    // A sibling whose name starts like the allowed one is not beneath it.
    std::fs::create_dir(tmp.path().join("allowed2")).unwrap();
    std::fs::write(tmp.path().join("allowed2/x"), "X").unwrap();
    assert!(matches!(
        dirs.read_file(&tmp.path().join("allowed2/x")),
        Err(FileError::NotAllowed(_))
    ));
}

#[test]
fn nothing_is_allowed_by_default() {
    let dirs = AllowedDirs::new(&[]).unwrap();
    assert!(dirs.is_empty());
    assert!(matches!(
        dirs.read_file(Path::new("/etc/hostname")),
        Err(FileError::NotAllowed(_))
    ));
    assert!(AllowedDirs::new(&[PathBuf::from("rel")]).is_err());
}

#[test]
fn only_regular_files_of_bounded_size() {
    let (tmp, dirs) = setup();
    let allowed = tmp.path().join("allowed");
    let fifo = allowed.join("fifo");
    nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
    // Would block forever without O_NONBLOCK: no writer ever opens the FIFO.
    assert!(matches!(
        dirs.read_file(&fifo),
        Err(FileError::NotRegular(_))
    ));
    assert!(matches!(
        dirs.read_file(&allowed.join("certs")),
        Err(FileError::NotRegular(_))
    ));
    let big = allowed.join("big.pem");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(MAX_FILE_BYTES + 1)
        .unwrap();
    assert!(matches!(
        dirs.read_file(&big),
        Err(FileError::TooLarge { .. })
    ));
}

#[test]
fn directories_skip_what_leads_out() {
    let (tmp, dirs) = setup();
    let allowed = tmp.path().join("allowed");
    let certs = allowed.join("certs");
    symlink(tmp.path().join("outside.key"), certs.join("b.pem")).unwrap();
    nix::unistd::mkfifo(&certs.join("c.pem"), Mode::from_bits_truncate(0o600)).unwrap();
    symlink("../ca.pem", certs.join("d.pem")).unwrap();
    let files = dirs.read_dir(&certs).unwrap();
    let names: Vec<_> = files
        .iter()
        .map(|(p, b)| (p.file_name().unwrap().to_owned(), b.clone()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("a.pem".into(), b"A".to_vec()),
            ("d.pem".into(), b"CA".to_vec())
        ]
    );
    assert!(matches!(
        dirs.read_dir(&allowed.join("ca.pem")),
        Err(FileError::NotDirectory(_))
    ));
    // The admin's own directory follows its links.
    let admin = read_admin_dir(&certs).unwrap();
    assert_eq!(admin.len(), 3, "a.pem, b.pem (outside) and d.pem");
    for i in 0..=MAX_DIR_ENTRIES {
        std::fs::write(certs.join(format!("{i}.pem")), "").unwrap();
    }
    assert!(matches!(
        dirs.read_dir(&certs),
        Err(FileError::TooManyEntries { .. })
    ));
}

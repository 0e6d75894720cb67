//! Tests of the volume state: the journal's round trip and rewrite, and what disks do to it
//! (unreadable lines, torn and failed appends, a full disk at start and mid-run, on real tmpfs).

use super::*;
use crate::mount;
use crate::volume::journal;

fn record(id: &str) -> VolumeRecord {
    VolumeRecord {
        volume_id: id.into(),
        target_path: "/t".into(),
        pod_namespace: "ns".into(),
        pod_name: Some("p".into()),
        pod_uid: None,
        class: "c".into(),
        provider: "vault".into(),
        versions: vec![ObjectVersion {
            id: "a".into(),
            version: "1".into(),
        }],
        fetched_at: jiff::Timestamp::now(),
        refresh_before: None,
        refresh_stamp: None,
        status_stale: false,
        device: None,
        fs_group: None,
    }
}

fn journal_path(dir: &Path) -> PathBuf {
    dir.join(journal::JOURNAL_FILE)
}

/// A tmpfs of `bytes` at a fresh temp dir, unmounted when dropped.
struct TinyFs {
    dir: tempfile::TempDir,
}

impl TinyFs {
    fn new(bytes: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        mount::mount_tmpfs(dir.path(), Some(bytes)).expect("mount tmpfs (the tests run as root)");
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the file system up to the last byte with `filler`.
    fn fill(&self) -> PathBuf {
        use std::io::Write as _;
        let filler = self.path().join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 512];
        loop {
            if let Err(e) = file.write_all(&chunk) {
                assert_eq!(e.raw_os_error(), Some(nix::libc::ENOSPC), "{e}");
                break;
            }
        }
        // Whatever fits byte by byte (a partly used page).
        while file.write_all(&[0]).is_ok() {}
        filler
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        // Detached: a child being forked by another test may hold a copy of a descriptor here.
        let _ = nix::mount::umount2(self.dir.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

#[tokio::test]
async fn records_survive_a_reload_and_removal_sticks() {
    let dir = tempfile::tempdir().unwrap();
    let states = VolumeStates::load(Some(dir.path().into())).await.unwrap();
    states.put(record("csi-1/../x")).await;
    states.put(record("csi-2")).await;
    states.remove("csi-2").await;
    states.remove("never-published").await;

    let reloaded = VolumeStates::load(Some(dir.path().into())).await.unwrap();
    assert_eq!(reloaded.len(), 1);
    assert_eq!(
        reloaded.get("csi-1/../x").unwrap(),
        states.get("csi-1/../x").unwrap()
    );
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        [journal::JOURNAL_FILE],
        "one file, inside the state dir"
    );
}

#[tokio::test]
async fn the_fs_group_survives_a_reload_and_journals_without_it_stay_readable() {
    let dir = tempfile::tempdir().unwrap();
    // A line written before records had a group (an older keymount).
    let old = r#"{"put":{"volumeId":"csi-old","targetPath":"/t","podNamespace":"ns","class":"c","provider":"vault","versions":[],"fetchedAt":"2026-01-01T00:00:00Z"}}"#;
    std::fs::write(journal_path(dir.path()), format!("{old}\n")).unwrap();
    let states = VolumeStates::load(Some(dir.path().into())).await.unwrap();
    assert_eq!(states.get("csi-old").unwrap().fs_group, None);
    let mut grouped = record("csi-2000");
    grouped.fs_group = Some(crate::fs::group::FsGroup::parse("2000").unwrap());
    states.put(grouped).await;

    let text = std::fs::read_to_string(journal_path(dir.path())).unwrap();
    assert!(text.contains(r#""fsGroup":2000"#), "{text}");
    assert!(!text.contains(r#""fsGroup":null"#), "{text}");
    let reloaded = VolumeStates::load(Some(dir.path().into())).await.unwrap();
    assert_eq!(
        reloaded.get("csi-2000").unwrap().fs_group.map(|g| g.gid()),
        Some(2000)
    );
    assert_eq!(reloaded.get("csi-old").unwrap().fs_group, None);
    // A group out of range in a journal line is not a record (skipped, never used).
    for gid in ["-1", "4294967295", "2147483648", "\"2000\""] {
        let bad = old
            .replace("csi-old", "csi-bad")
            .replace(r#""class""#, &format!(r#""fsGroup":{gid},"class""#));
        std::fs::write(journal_path(dir.path()), format!("{bad}\n")).unwrap();
        let reloaded = VolumeStates::load(Some(dir.path().into())).await.unwrap();
        assert!(reloaded.get("csi-bad").is_none(), "{gid}");
    }
}

#[tokio::test]
async fn the_journal_is_rewritten_once_dead_lines_pile_up() {
    let dir = tempfile::tempdir().unwrap();
    let states = VolumeStates::load(Some(dir.path().into())).await.unwrap();
    states.put(record("kept")).await;
    for n in 0..1000 {
        states.put(record(&format!("v{n}"))).await;
        states.remove(&format!("v{n}")).await;
    }
    let text = std::fs::read_to_string(journal_path(dir.path())).unwrap();
    let lines = text.lines().count();
    assert!(lines <= 2 + 256 + 1, "{lines} lines for one live record");
    let read = journal::read_journal(dir.path()).unwrap();
    assert_eq!(read.records.keys().collect::<Vec<_>>(), ["kept"]);
}

#[tokio::test]
async fn a_line_cut_short_by_a_crash_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let states = VolumeStates::load(Some(dir.path().into())).await.unwrap();
    states.put(record("a")).await;
    states.put(record("b")).await;
    drop(states);
    let path = journal_path(dir.path());
    let text = std::fs::read_to_string(&path).unwrap();
    // The process died in the middle of appending b's removal.
    std::fs::write(&path, format!("{text}{{\"remove\":\"b")).unwrap();

    let reloaded = VolumeStates::load(Some(dir.path().into())).await.unwrap();
    assert_eq!(reloaded.len(), 2);
    let rewritten = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        rewritten.lines().count(),
        2,
        "the torn line is gone: {rewritten}"
    );
}

#[tokio::test]
async fn invalid_utf8_garbage_and_torn_lines_anywhere_are_skipped_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let states = VolumeStates::load(Some(dir.path().into())).await.unwrap();
    for id in ["a", "b", "c", "d"] {
        states.put(record(id)).await;
    }
    drop(states);
    let path = journal_path(dir.path());
    let text = std::fs::read_to_string(&path).unwrap();
    let good: Vec<&str> = text.lines().collect();
    let mut bytes = Vec::new();
    bytes.extend_from_slice(good[0].as_bytes());
    bytes.extend_from_slice(b"\n\xff\xfe\x00garbage \xc3\x28 not utf-8\n");
    bytes.extend_from_slice(good[1].as_bytes());
    // A torn append followed by a good line on the same line cannot be saved; the good
    // line after the next newline must be.
    bytes.extend_from_slice(b"\n{\"put\":{\"volumeId\":\"x\",\"tar\n");
    bytes.extend_from_slice(good[2].as_bytes());
    bytes.extend_from_slice(b"\n[1,2,3]\n{\"remove\":42}\n\x00\x00\x00\n");
    // A record line with one byte turned into invalid UTF-8, then the good line again.
    let mut bad_value = good[3].as_bytes().to_vec();
    let at = bad_value.iter().position(|b| *b == b'd').unwrap();
    bad_value[at] = 0xff;
    bytes.extend_from_slice(&bad_value);
    bytes.push(b'\n');
    bytes.extend_from_slice(good[3].as_bytes());
    bytes.push(b'\n');
    std::fs::write(&path, &bytes).unwrap();

    let read = journal::read_journal(dir.path()).unwrap();
    assert_eq!(read.skipped, 6, "every bad line counted");
    let reloaded = VolumeStates::load(Some(dir.path().into())).await.unwrap();
    let mut ids: Vec<_> = reloaded.all().iter().map(|r| r.volume_id.clone()).collect();
    ids.sort();
    assert_eq!(ids, ["a", "b", "c", "d"]);
    assert!(reloaded.journal_writable());
    let rewritten = std::fs::read(&path).unwrap();
    assert!(
        String::from_utf8(rewritten).unwrap().lines().count() == 4,
        "the rewrite keeps only the good lines"
    );
}

#[tokio::test]
async fn a_failed_append_on_a_full_disk_leaves_only_whole_lines_and_is_retried() {
    let fs = TinyFs::new(64 * 1024);
    let dir = fs.path().join("state");
    let states = VolumeStates::load(Some(dir.clone())).await.unwrap();
    states.put(record("before")).await;
    let filler = fs.fill();

    // Append until the disk refuses: the publish goes on, in memory.
    let mut n = 0;
    while states.journal_writable() {
        states
            .put(record(&format!("while-full-{n:04}-{}", "x".repeat(200))))
            .await;
        n += 1;
        assert!(n < 100, "a full 64 KiB tmpfs took 100 appends");
    }
    assert_eq!(states.len(), n + 1, "every record kept in memory");
    let bytes = std::fs::read(journal_path(&dir)).unwrap();
    assert_eq!(
        bytes.last(),
        Some(&b'\n'),
        "the failed append was cut off: no partial line left to swallow the next"
    );
    let read = journal::read_journal(&dir).unwrap();
    assert_eq!(read.skipped, 0);
    assert_eq!(
        read.records.len(),
        n,
        "the appends that fit, and no torn one"
    );

    // Room again: the next change writes the journal afresh from memory.
    std::fs::remove_file(filler).unwrap();
    states.put(record("after")).await;
    assert!(states.journal_writable());
    let read = journal::read_journal(&dir).unwrap();
    assert_eq!(read.skipped, 0);
    assert_eq!(read.records.len(), n + 2);
}

#[tokio::test]
async fn a_full_disk_at_start_still_serves_from_memory_and_writes_the_journal_later() {
    let fs = TinyFs::new(64 * 1024);
    let dir = fs.path().join("state");
    let states = VolumeStates::load(Some(dir.clone())).await.unwrap();
    states.put(record("old-1")).await;
    states.put(record("old-2")).await;
    drop(states);
    let filler = fs.fill();

    let states = VolumeStates::load(Some(dir.clone()))
        .await
        .expect("a full disk does not stop the start");
    assert!(!states.journal_writable());
    assert_eq!(states.len(), 2, "the records were read");
    assert!(
        !dir.join("volumes.jsonl.tmp").exists(),
        "no partial rewrite left"
    );
    states.put(record("new")).await;
    states.remove("old-1").await;
    assert!(!states.retry_journal().await);
    let on_disk = journal::read_journal(&dir).unwrap();
    assert_eq!(on_disk.records.len(), 2, "the old journal is intact");

    std::fs::remove_file(filler).unwrap();
    assert!(states.retry_journal().await);
    assert!(states.journal_writable());
    let mut ids: Vec<_> = journal::read_journal(&dir)
        .unwrap()
        .records
        .into_keys()
        .collect();
    ids.sort();
    assert_eq!(ids, ["new", "old-2"]);
}

#[tokio::test]
async fn a_state_dir_that_cannot_be_created_still_serves() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, "").unwrap();
    let states = VolumeStates::load(Some(file.join("state"))).await.unwrap();
    assert!(!states.journal_writable());
    states.put(record("a")).await;
    assert_eq!(states.len(), 1);
    assert!(!states.retry_journal().await);
}

//! The mount table (`/proc/self/mountinfo`): what is mounted at exactly one path, and
//! whether keymount may take it as a volume's tmpfs.
//!
//! keymount adopts (writes into, unmounts) only a mount that is the whole of a tmpfs
//! (mount root `/`, so not a bind mount of some directory of `/run` or `/dev/shm`),
//! read-write, and not also mounted outside the kubelet's pods directory. That is what
//! keymount itself mounts, what the upstream driver mounts (a tmpfs without options), and
//! what a keymount that lost its state left behind. Anything else at a target (another
//! filesystem, a bind mount, a ramfs, a read-only or shared tmpfs) is refused and left alone.

use std::io;
use std::path::{Path, PathBuf};

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    id: u64,
    parent: u64,
    device: String,
    root: String,
    point: PathBuf,
    options: Vec<String>,
    fs_type: String,
}

/// What is mounted at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AtPath {
    /// Nothing: the path belongs to its parent's filesystem.
    NotMounted,
    /// A tmpfs keymount may take. `hardened` tells whether it already has
    /// nodev, nosuid and noexec.
    Tmpfs { hardened: bool },
    /// Anything else; never written into or unmounted.
    Foreign { fs_type: String, why: &'static str },
}

/// The top mount at exactly `point` (a path as the mount table shows it, symlinks resolved)
/// and what keymount may do with it. `pods` is the kubelet's pods directory, resolved.
pub(crate) fn at_path(point: &Path, pods: &Path) -> io::Result<AtPath> {
    use std::io::BufRead;
    let table = io::BufReader::new(std::fs::File::open(MOUNTINFO)?);
    let mut entries = Vec::new();
    for line in table.lines() {
        if let Some(entry) = relevant(&line?, point, pods) {
            entries.push(entry);
        }
    }
    Ok(classify(&entries, point, pods))
}

/// What [`classify`] needs of one line: the mounts at `point`, and the mounts outside the
/// pods directory (the host's own, a few dozen). The volumes' mounts, as many as the node
/// has pods, are dropped as they are read, so concurrent publishes on a busy node do not
/// each hold a copy of the whole table.
fn relevant(line: &str, point: &Path, pods: &Path) -> Option<Entry> {
    let entry = parse_line(line)?;
    (entry.point == point || !entry.point.starts_with(pods)).then_some(entry)
}

fn classify(entries: &[Entry], point: &Path, pods: &Path) -> AtPath {
    let here: Vec<&Entry> = entries.iter().filter(|e| e.point == point).collect();
    // The top of a stack is the mount no other mount at the same path sits on.
    let Some(top) = here
        .iter()
        .rev()
        .find(|e| !here.iter().any(|o| o.parent == e.id))
    else {
        return AtPath::NotMounted;
    };
    let foreign = |why| AtPath::Foreign {
        fs_type: top.fs_type.clone(),
        why,
    };
    if top.fs_type != "tmpfs" {
        return foreign("not a tmpfs");
    }
    if top.root != "/" {
        return foreign("a bind mount of a directory, not a whole tmpfs");
    }
    if top.options.iter().any(|o| o == "ro") {
        return foreign("mounted read-only");
    }
    let shared = entries
        .iter()
        .any(|e| e.device == top.device && e.point != point && !e.point.starts_with(pods));
    if shared {
        return foreign("the same tmpfs is also mounted outside the kubelet's pods directory");
    }
    let has = |flag: &str| top.options.iter().any(|o| o == flag);
    AtPath::Tmpfs {
        hardened: has("nodev") && has("nosuid") && has("noexec"),
    }
}

/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`
fn parse_line(line: &str) -> Option<Entry> {
    let fields: Vec<&str> = line.split(' ').collect();
    let dash = fields.iter().position(|f| *f == "-")?;
    Some(Entry {
        id: fields.first()?.parse().ok()?,
        parent: fields.get(1)?.parse().ok()?,
        device: (*fields.get(2)?).to_owned(),
        root: decode(fields.get(3)?),
        point: PathBuf::from(decode(fields.get(4)?)),
        options: fields.get(5)?.split(',').map(str::to_owned).collect(),
        fs_type: (*fields.get(dash + 1)?).to_owned(),
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn decode(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = (bytes[i] == b'\\')
            .then(|| field.get(i + 1..i + 4))
            .flatten()
            .and_then(|digits| u8::from_str_radix(digits, 8).ok());
        match octal {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PODS: &str = "/var/lib/kubelet/pods";
    const T: &str = "/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/s/mount";

    fn table(lines: &[&str]) -> Vec<Entry> {
        lines
            .iter()
            .filter_map(|l| relevant(l, Path::new(T), Path::new(PODS)))
            .collect()
    }

    fn at(lines: &[&str]) -> AtPath {
        classify(&table(lines), Path::new(T), Path::new(PODS))
    }

    const ROOT: &str = "1 0 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw";
    const SHM: &str = "5 1 0:25 / /dev/shm rw,nosuid,nodev shared:3 - tmpfs tmpfs rw";

    #[test]
    fn keymounts_and_upstreams_tmpfs_are_taken() {
        let ours = format!(
            "40 1 0:50 / {T} rw,nosuid,nodev,noexec,relatime - tmpfs tmpfs rw,size=1024k,mode=755"
        );
        assert_eq!(at(&[ROOT, &ours]), AtPath::Tmpfs { hardened: true });
        let upstream = format!("41 1 0:51 / {T} rw,relatime - tmpfs tmpfs rw");
        assert_eq!(at(&[ROOT, &upstream]), AtPath::Tmpfs { hardened: false });
        assert_eq!(at(&[ROOT, SHM]), AtPath::NotMounted);
    }

    #[test]
    fn the_top_of_a_stack_decides() {
        let tmpfs = format!("40 1 0:50 / {T} rw,nosuid,nodev,noexec - tmpfs tmpfs rw");
        let bind = format!("41 40 8:1 /srv {T} rw - ext4 /dev/sda1 rw");
        assert!(matches!(at(&[ROOT, &tmpfs, &bind]), AtPath::Foreign { .. }));
        let under = format!("39 1 8:1 /srv {T} rw - ext4 /dev/sda1 rw");
        let over = format!("40 39 0:50 / {T} rw,nosuid,nodev,noexec - tmpfs tmpfs rw");
        assert_eq!(at(&[ROOT, &over, &under]), AtPath::Tmpfs { hardened: true });
    }

    #[test]
    fn anything_else_is_foreign() {
        let cases = [
            format!("40 1 8:1 /srv/x {T} rw - ext4 /dev/sda1 rw"),
            format!("40 1 0:60 / {T} rw - ramfs ramfs rw"),
            format!("40 1 0:25 /sub {T} rw,nosuid,nodev - tmpfs tmpfs rw"),
            format!("40 1 0:50 / {T} ro,nosuid,nodev,noexec - tmpfs tmpfs rw"),
            format!("40 1 0:25 / {T} rw,nosuid,nodev - tmpfs tmpfs rw"),
            format!("40 1 0:3 / {T} rw - proc proc rw"),
        ];
        for line in &cases {
            assert!(
                matches!(at(&[ROOT, SHM, line]), AtPath::Foreign { .. }),
                "{line}"
            );
        }
    }

    #[test]
    fn the_same_tmpfs_elsewhere_in_the_pods_directory_is_fine() {
        let line = format!("40 1 0:50 / {T} rw,nosuid,nodev,noexec - tmpfs tmpfs rw");
        let propagated = "41 1 0:50 / /var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/s/mount/sub rw - tmpfs tmpfs rw";
        assert_eq!(
            at(&[ROOT, &line, propagated]),
            AtPath::Tmpfs { hardened: true }
        );
    }

    #[test]
    fn escaped_paths_are_decoded() {
        assert_eq!(decode(r"/a\040b\134c"), "/a b\\c");
        assert_eq!(decode(r"/tail\04"), r"/tail\04");
    }
}

//! Unit tests of target path checks: the shapes refused, and symlinks below the root.

use super::*;

const UID: &str = "0b2e1f4c-0000-4000-8000-000000000001";

fn root() -> KubeletRoot {
    KubeletRoot::new("/var/lib/kubelet").unwrap()
}

#[test]
fn the_kubelet_layout_is_accepted() {
    let path = format!("/var/lib/kubelet/pods/{UID}/volumes/kubernetes.io~csi/secrets/mount");
    let target = root().parse(&path).unwrap();
    assert_eq!(target.path(), Path::new(&path));
    assert_eq!(root().target_of(UID, "secrets"), Path::new(&path));
    let static_pod = "/var/lib/kubelet/pods/6f1d0c8e2b7a4c1d9e3f5a7b8c9d0e1f/volumes/kubernetes.io~csi/pv-0.db/mount";
    root().parse(static_pod).unwrap();
    let trailing = KubeletRoot::new("/data/kubelet/").unwrap();
    assert_eq!(trailing.path(), Path::new("/data/kubelet"));
}

#[test]
fn other_shapes_are_refused() {
    let ok = format!("pods/{UID}/volumes/kubernetes.io~csi/secrets/mount");
    let cases = [
        format!("var/lib/kubelet/{ok}"),
        format!("/var/lib/kubelet/{ok}/"),
        format!("/var/lib/kubelet//{ok}"),
        format!("/var/lib/kubelet/./{ok}"),
        format!("/var/lib/kubelet/{ok}/.."),
        format!("/var/lib/kubelet/pods/{UID}/volumes/kubernetes.io~csi/secrets/../x/mount"),
        format!("/var/lib/kubelet/pods/{UID}/volumes/kubernetes.io~csi/../../../../etc/mount"),
        format!("/var/lib/kubelet/pods/{UID}/volumes/kubernetes.io~empty-dir/secrets/mount"),
        format!("/var/lib/kubelet/pods/{UID}/volumes/kubernetes.io~csi/secrets/mnt"),
        format!("/var/lib/kubelet/pods/{UID}/volumes/kubernetes.io~csi/secrets"),
        format!("/var/lib/kubeletx/{ok}"),
        format!("/var/lib/{ok}"),
        "/proc/sys".into(),
        "/var/lib/kubelet".into(),
        String::new(),
    ];
    for case in cases {
        let error = root().parse(&case).unwrap_err();
        assert!(
            matches!(error, TargetError::Shape { .. }),
            "{case}: {error}"
        );
        assert!(error.is_invalid_path());
    }
}

#[test]
fn pod_uids_and_volume_names_have_kubelets_shapes() {
    let long = "a".repeat(65);
    for uid in ["..", ".", "pod-1", "ABC-xyz", long.as_str(), ""] {
        let path = format!("/var/lib/kubelet/pods/{uid}/volumes/kubernetes.io~csi/s/mount");
        let error = root().parse(&path).unwrap_err();
        assert!(
            matches!(
                error,
                TargetError::PodUid { .. } | TargetError::Shape { .. }
            ),
            "{uid}: {error}"
        );
    }
    let long = "a".repeat(64);
    for name in ["..", ".", "-a", "a-", "A", "a_b", "a..b", long.as_str(), ""] {
        let path = format!("/var/lib/kubelet/pods/{UID}/volumes/kubernetes.io~csi/{name}/mount");
        let error = root().parse(&path).unwrap_err();
        assert!(
            matches!(
                error,
                TargetError::VolumeName { .. } | TargetError::Shape { .. }
            ),
            "{name}: {error}"
        );
    }
}

#[test]
fn roots_must_be_absolute_and_clean() {
    for bad in ["var/lib/kubelet", "/var/../kubelet", "/var//kubelet", ""] {
        assert!(KubeletRoot::new(bad).is_err(), "{bad}");
    }
    assert_eq!(KubeletRoot::new("/").unwrap().path(), Path::new("/"));
}

#[test]
fn symlinks_below_the_root_are_refused_and_nothing_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    // The root itself may be a symlink (the admin's choice).
    let root_link = dir.path().join("kubelet");
    std::os::unix::fs::symlink(&real, &root_link).unwrap();
    let root = KubeletRoot::new(&root_link).unwrap();

    let good = root
        .parse(root.target_of(UID, "a").to_str().unwrap())
        .unwrap();
    assert!(good.open().unwrap().is_none(), "missing: nothing to open");
    let pinned = good.create().unwrap();
    let real = std::fs::canonicalize(&real).unwrap();
    assert_eq!(
        pinned.resolved(),
        real.join(format!("pods/{UID}/volumes/kubernetes.io~csi/a/mount"))
    );
    assert!(std::fs::symlink_metadata(pinned.via_fd()).unwrap().is_dir());

    // A symlinked volume directory and a symlinked target.
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let volumes = real.join(format!("pods/{UID}/volumes/kubernetes.io~csi"));
    std::os::unix::fs::symlink(&outside, volumes.join("b")).unwrap();
    std::fs::create_dir(volumes.join("c")).unwrap();
    std::os::unix::fs::symlink(&outside, volumes.join("c/mount")).unwrap();
    for name in ["b", "c"] {
        let target = root
            .parse(root.target_of(UID, name).to_str().unwrap())
            .unwrap();
        for result in [target.open().map(|_| ()), target.create().map(|_| ())] {
            let error = result.unwrap_err();
            assert!(
                matches!(error, TargetError::Symlink { .. }),
                "{name}: {error}"
            );
        }
    }
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing made outside"
    );
}

/// statx's mount-root attribute, which lets a first publish skip the mount table, sees a bind
/// mount of a directory of the same filesystem (same device number as the parent) as a mount.
#[test]
fn a_bind_mount_of_the_same_filesystem_is_a_mount_root() {
    use nix::mount::{MntFlags, MsFlags, mount, umount2};
    let dir = tempfile::tempdir().unwrap();
    let root = KubeletRoot::new(dir.path()).unwrap();
    let target = root
        .parse(root.target_of(UID, "a").to_str().unwrap())
        .unwrap();
    let pinned = target.create().unwrap();
    assert_eq!(
        pinned.is_mount_root().unwrap(),
        Some(false),
        "a bare directory"
    );

    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    mount(
        Some(&elsewhere),
        pinned.resolved(),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .expect("bind mount (needs root)");
    let seen = pinned.is_mount_root();
    umount2(pinned.resolved(), MntFlags::MNT_DETACH).unwrap();
    assert_eq!(seen.unwrap(), Some(true), "a same-filesystem bind mount");
}

//! The group a volume's files belong to: the pod's `fsGroup`, as kubelet hands it over in
//! the CSI `volume_mount_group` (or as read from the pod on an older kubelet). It is the pod
//! author's input: parsed strictly, and used only through the volume's directory fds.

use serde::{Deserialize, Serialize};

/// The largest group id Kubernetes accepts for `fsGroup` (`IsValidGroupID`: 0 to 2^31 - 1).
/// Above it, `4294967295` would even mean "leave the group alone" to chown(2).
pub(crate) const MAX_GID: u32 = i32::MAX as u32;

/// A validated group id for a volume's files and directories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct FsGroup(u32);

impl TryFrom<u32> for FsGroup {
    type Error = String;

    /// Read back from the state journal: the same range as [`FsGroup::parse`].
    fn try_from(gid: u32) -> Result<Self, Self::Error> {
        Self::from_id(i64::from(gid)).ok_or_else(|| format!("group id {gid} is above {MAX_GID}"))
    }
}

impl From<FsGroup> for u32 {
    fn from(group: FsGroup) -> Self {
        group.0
    }
}

/// The group given is not a group id keymount will use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "volume_capability.mount.volume_mount_group {shown}: must be a decimal group id from 0 to {MAX_GID} (the pod's fsGroup)"
)]
pub struct FsGroupError {
    /// The value as given, cut short and quoted (it is the pod author's text).
    shown: String,
}

impl FsGroup {
    /// Parses the CSI `volume_mount_group`: ASCII digits only (no sign, space or leading
    /// zero, as kubelet formats an int64), at most [`MAX_GID`].
    pub fn parse(text: &str) -> Result<Self, FsGroupError> {
        let bad = || FsGroupError {
            shown: format!("{:?}", text.chars().take(24).collect::<String>()),
        };
        let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
        let canonical = text == "0" || !text.starts_with('0');
        if !digits || !canonical || text.len() > 10 {
            return Err(bad());
        }
        match text.parse::<u64>() {
            Ok(gid) if gid <= u64::from(MAX_GID) => Ok(Self(gid as u32)),
            _ => Err(bad()),
        }
    }

    /// A group from a number already checked elsewhere (the pod's `fsGroup` read from the
    /// API server); `None` outside 0 to [`MAX_GID`].
    pub(crate) fn from_id(gid: i64) -> Option<Self> {
        u32::try_from(gid).ok().filter(|g| *g <= MAX_GID).map(Self)
    }

    /// The numeric group id.
    pub fn gid(self) -> u32 {
        self.0
    }

    /// The mode a file of requested `mode` gets when group-owned: group read is added where
    /// the owner can read (0600 -> 0640, 0400 -> 0440), as kubelet does for a Secret volume
    /// with an fsGroup. Group write, execute and the bits of others are never added.
    pub fn file_mode(self, mode: u32) -> u32 {
        if mode & 0o400 != 0 {
            mode | 0o040
        } else {
            mode
        }
    }
}

impl std::fmt::Display for FsGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_decimal_group_ids_in_kubernetes_range_are_accepted() {
        assert_eq!(FsGroup::parse("2000").unwrap().gid(), 2000);
        assert_eq!(FsGroup::parse("0").unwrap().gid(), 0);
        assert_eq!(FsGroup::parse("2147483647").unwrap().gid(), MAX_GID);
        for bad in [
            "",
            " 2000",
            "2000 ",
            "+2000",
            "-1",
            "02000",
            "00",
            "2000.0",
            "0x7d0",
            "2147483648",
            "4294967295",
            "4294967296",
            "99999999999999999999",
            "２０００",
            "root",
        ] {
            let error = FsGroup::parse(bad).unwrap_err().to_string();
            assert!(
                error.starts_with("volume_capability.mount.volume_mount_group "),
                "{bad:?}: {error}"
            );
        }
        let long = "9".repeat(1000);
        assert!(FsGroup::parse(&long).unwrap_err().to_string().len() < 200);
    }

    #[test]
    fn from_id_keeps_to_the_same_range() {
        assert_eq!(FsGroup::from_id(0).map(FsGroup::gid), Some(0));
        assert_eq!(FsGroup::from_id(2000).map(FsGroup::gid), Some(2000));
        assert_eq!(FsGroup::from_id(-1), None);
        assert_eq!(FsGroup::from_id(i64::from(MAX_GID) + 1), None);
    }

    #[test]
    fn group_read_follows_owner_read_and_nothing_else_is_added() {
        let g = FsGroup::parse("2000").unwrap();
        assert_eq!(g.file_mode(0o600), 0o640);
        assert_eq!(g.file_mode(0o400), 0o440);
        assert_eq!(g.file_mode(0o644), 0o644);
        assert_eq!(g.file_mode(0o660), 0o660);
        assert_eq!(g.file_mode(0o700), 0o740);
        assert_eq!(g.file_mode(0o200), 0o200);
        assert_eq!(g.file_mode(0o004), 0o004);
        assert_eq!(g.file_mode(0), 0);
    }
}

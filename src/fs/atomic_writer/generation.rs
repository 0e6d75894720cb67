//! Generation directory names: `..YYYY_MM_DD_HH_MM_SS.<digits>`, as kubelet's AtomicWriter
//! (and so the upstream driver) makes them. Only such a name is ever trusted as the target of
//! `..data`: one component, inside the volume, never a path.

/// The link that names the current generation.
pub(crate) const DATA_LINK: &str = "..data";
/// The link made beside `..data` and renamed over it; also the parking name of an entry
/// being replaced. Never part of a finished layout.
pub(crate) const DATA_TMP_LINK: &str = "..data_tmp";

/// A fresh generation name (the random suffix keeps two writes in one second apart).
pub(crate) fn new_name() -> String {
    let now = jiff::Timestamp::now().strftime("%Y_%m_%d_%H_%M_%S");
    format!("..{now}.{:010}", rand::random::<u32>())
}

/// True when `name` is a generation name: `..`, a UTC timestamp `YYYY_MM_DD_HH_MM_SS`, `.`,
/// then 1 to 20 digits. No `/`, so a link with such a target stays in the volume.
pub(crate) fn is_generation_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("..") else {
        return false;
    };
    let Some((stamp, suffix)) = rest.split_once('.') else {
        return false;
    };
    let stamp_ok = stamp.len() == 19
        && stamp.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 | 10 | 13 | 16 => b == b'_',
            _ => b.is_ascii_digit(),
        });
    let suffix_ok = (1..=20).contains(&suffix.len()) && suffix.bytes().all(|b| b.is_ascii_digit());
    stamp_ok && suffix_ok
}

/// The target a top-level link of `name` has in this layout.
pub(super) fn link_target(name: &str) -> String {
    format!("{DATA_LINK}/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_names_are_one_component_of_a_fixed_shape() {
        assert!(is_generation_name(&new_name()));
        assert!(is_generation_name("..2024_01_31_23_59_59.1234567890"));
        assert!(is_generation_name("..2024_01_31_23_59_59.7"));
        for bad in [
            "..data",
            "..data_tmp",
            "..",
            "...",
            "/tmp/x",
            "../../x",
            "..2024_01_31_23_59_59.12/../../x",
            "..2024_01_31_23_59_59./x",
            "..2024_01_31_23_59_59.",
            "..2024-01-31_23_59_59.1",
            "2024_01_31_23_59_59.1",
            "..2024_01_31_23_59_59.1 ",
            "..2024_01_31_23_59_59.123456789012345678901",
        ] {
            assert!(!is_generation_name(bad), "{bad}");
        }
    }
}

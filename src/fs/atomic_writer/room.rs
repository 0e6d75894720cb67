//! Room on the volume's tmpfs: what one generation of a file set takes (tmpfs counts whole
//! pages per file, and a page for a long symlink), checked against the free space before a
//! new generation is written, so a rotation either fits or fails early and clearly.

/// A symlink target this long or longer takes a page of its own on tmpfs (shorter ones live
/// in the inode). Kept a little below the kernel's 128 to stay on the safe side.
const INLINE_LINK_MAX: usize = 120;

/// Bytes one generation of files takes on tmpfs: each file's size rounded up to `block`,
/// plus a block for each top-level link whose target (`..data/<name>`) does not fit inline.
pub(crate) fn footprint<'a>(
    sizes: impl IntoIterator<Item = u64>,
    top_level_names: impl IntoIterator<Item = &'a str>,
    block: u64,
) -> u64 {
    let block = block.max(1);
    let files: u64 = sizes
        .into_iter()
        .map(|size| size.div_ceil(block).saturating_mul(block))
        .fold(0, u64::saturating_add);
    files.saturating_add(long_links(top_level_names).saturating_mul(block))
}

/// How many of these top-level names need a block for their link.
pub(crate) fn long_links<'a>(names: impl IntoIterator<Item = &'a str>) -> u64 {
    names
        .into_iter()
        .filter(|name| super::generation::link_target(name).len() >= INLINE_LINK_MAX)
        .count() as u64
}

/// The page size tmpfs allocates in.
pub(crate) fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| u64::try_from(p).ok())
        .filter(|p| *p > 0)
        .unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_count_whole_pages_and_long_links_a_page() {
        assert_eq!(footprint([0, 1, 4096, 4097], ["a"], 4096), 4096 * 4);
        let long = "x".repeat(200);
        assert_eq!(footprint([1], [long.as_str()], 4096), 4096 * 2);
    }
}

//! Reads the real mount table, so tests can prove nothing stays mounted.

use std::path::Path;

/// Mount points (decoded) at or below `dir`, from /proc/self/mountinfo.
pub(crate) fn mounts_under(dir: &Path) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    let prefix = dir.to_string_lossy().into_owned();
    table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(decode)
        .filter(|point| point == &prefix || point.starts_with(&format!("{prefix}/")))
        .collect()
}

/// The mount options and filesystem type of the mount at exactly `point`.
pub(crate) fn mount_entry(point: &Path) -> Option<(String, String)> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let wanted = point.to_string_lossy();
    table.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        if decode(fields.get(4)?) != wanted {
            return None;
        }
        let sep = fields.iter().position(|f| *f == "-")?;
        let fstype = fields.get(sep + 1)?.to_string();
        let options = format!("{},{}", fields.get(5)?, fields.get(sep + 3)?);
        Some((fstype, options))
    })
}

fn decode(field: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Ok(v) = u8::from_str_radix(&field[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

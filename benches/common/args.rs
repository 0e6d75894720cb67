//! The load drivers' command line: `--name N` numbers after `cargo bench --bench X --`.

/// The number after `flag`, or `default` when it is absent or not a number.
pub(crate) fn number(flag: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

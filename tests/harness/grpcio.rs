//! Calls with Python grpcio (gRPC core) through `tests/grpcio/call.py`: raw request and
//! response bytes, decoded by the test with the generated prost types.

use std::path::Path;
use std::process::Command;

/// The Python with grpcio.
fn grpcio_python() -> String {
    std::env::var("GRPCIO_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into())
}

/// One call's outcome: the response bytes, or (code, details).
pub(crate) type Outcome = Result<Vec<u8>, (String, String)>;

/// Calls each method `rounds` times on one grpcio channel to `socket` with `authority` as
/// `:authority` (`None`: grpcio's default).
pub(crate) fn grpcio_calls(
    socket: &Path,
    rounds: usize,
    authority: Option<&str>,
    methods: &[&str],
) -> Vec<(String, Outcome)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/grpcio/call.py");
    let out = Command::new(grpcio_python())
        .arg(script)
        .arg(socket)
        .arg(rounds.to_string())
        .arg(authority.unwrap_or("-"))
        .args(methods)
        .output()
        .expect("run python3 (apt-get install python3-grpcio, or scripts/deps.sh)");
    assert!(
        out.status.success(),
        "grpcio script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    results
        .into_iter()
        .map(|r| {
            let method = r["method"].as_str().unwrap().to_owned();
            let outcome = match r["response"].as_str() {
                Some(hex_bytes) => Ok(hex::decode(hex_bytes).unwrap()),
                None => Err((
                    r["code"].as_str().unwrap_or_default().to_owned(),
                    r["details"].as_str().unwrap_or_default().to_owned(),
                )),
            };
            (method, outcome)
        })
        .collect()
}

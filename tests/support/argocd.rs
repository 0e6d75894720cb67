//! Argo CD's health check for SecretSync (`deploy/argocd/secretsync-health.lua`), run on a
//! JSON object with Debian's `lua5.4` as Argo CD runs it: the object as the Lua table `obj`.

use std::io::Write;
use std::process::Command;

use serde_json::Value;

/// The health check script, as installed in argocd-cm.
pub(crate) const HEALTH_LUA: &str = include_str!("../../deploy/argocd/secretsync-health.lua");

/// What the script returned: Argo CD's health status and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Health {
    /// `Healthy`, `Progressing` or `Degraded`.
    pub(crate) status: String,
    /// The message Argo CD shows next to the status.
    pub(crate) message: String,
}

/// Runs the health check on `object` (a SecretSync as the API server returns it). Panics with
/// lua's stderr when the script fails.
pub(crate) fn health(object: &Value) -> Health {
    let mut program = String::from("local obj = ");
    lua_literal(object, &mut program);
    program.push_str("\nlocal function check(obj)\n");
    program.push_str(HEALTH_LUA);
    program.push_str("\nend\nlocal hs = check(obj)\n");
    program.push_str("io.write(hs.status, \"\\n\", hs.message or \"\")\n");
    let mut file = tempfile::Builder::new()
        .suffix(".lua")
        .tempfile()
        .expect("temp file for the Lua program");
    file.write_all(program.as_bytes())
        .expect("write the Lua program");
    let out = Command::new("lua5.4")
        .arg(file.path())
        .output()
        .expect("run lua5.4 (apt-get install lua5.4; see scripts/deps.sh)");
    assert!(
        out.status.success(),
        "lua5.4 failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("the health check writes UTF-8");
    let (status, message) = stdout.split_once('\n').unwrap_or((stdout.as_str(), ""));
    Health {
        status: status.to_owned(),
        message: message.to_owned(),
    }
}

/// Appends `value` as a Lua table constructor expression: null becomes nil, as in Argo CD.
fn lua_literal(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("nil"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => lua_string(s, out),
        Value::Array(items) => {
            out.push('{');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                lua_literal(item, out);
            }
            out.push('}');
        }
        Value::Object(fields) => {
            out.push('{');
            for (i, (key, field)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push('[');
                lua_string(key, out);
                out.push_str("] = ");
                lua_literal(field, out);
            }
            out.push('}');
        }
    }
}

/// Appends `s` as a quoted Lua string. Every byte outside printable ASCII becomes a three-digit
/// `\ddd` escape (always three digits, so a digit that follows is not read as part of it); Lua
/// strings are bytes, so UTF-8 passes through unchanged.
fn lua_string(s: &str, out: &mut String) {
    out.push('"');
    for &byte in s.as_bytes() {
        match byte {
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            0x20..=0x7e => out.push(char::from(byte)),
            _ => out.push_str(&format!("\\{byte:03}")),
        }
    }
    out.push('"');
}

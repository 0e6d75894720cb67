//! `Redacted<T>`: a wrapper for secret values (tokens, secret contents, credentials) whose
//! `Debug` and `Display` never print the value, and the safe description of a JSON decoding
//! failure.

use std::fmt;

/// A value that must never reach a log line, an error message or a panic.
///
/// The only way to read it is [`Redacted::expose`], which makes every use greppable.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Redacted<T>(T);

impl<T> Redacted<T> {
    /// Wraps a secret value.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// Borrows the secret value. Callers must not log or format it.
    pub fn expose(&self) -> &T {
        &self.0
    }

    /// Takes the secret value out of the wrapper.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Redacted<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

impl<T> fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T> fmt::Display for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Redacted<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(Self)
    }
}

/// What may be said about a JSON decoding failure without quoting its input: serde_json's own
/// message quotes the offending value (`invalid type: string "hunter2", expected ...`).
pub(crate) fn describe_json_error(error: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let kind = match error.classify() {
        Category::Io => "read",
        Category::Syntax => "syntax",
        Category::Data => "shape",
        Category::Eof => "truncated",
    };
    format!(
        "{kind} error at line {} column {} (content not shown)",
        error.line(),
        error.column()
    )
}

#[cfg(test)]
mod tests {
    use super::Redacted;

    #[test]
    fn debug_and_display_hide_the_value() {
        let secret = Redacted::new(String::from("hunter2-s3cr3t"));
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(format!("{secret}"), "[redacted]");
        assert_eq!(format!("{:#?}", Some(&secret)), "Some(\n    [redacted],\n)");
        assert_eq!(secret.expose(), "hunter2-s3cr3t");
    }

    #[test]
    fn nested_in_a_struct_debug_stays_hidden() {
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Login {
            role: &'static str,
            jwt: Redacted<Vec<u8>>,
        }
        let login = Login {
            role: "app",
            jwt: Redacted::new(b"eyJhbGciOi".to_vec()),
        };
        let shown = format!("{login:?}");
        assert!(shown.contains("app"));
        assert!(!shown.contains("101") && !shown.contains("eyJ"), "{shown}");
    }
}

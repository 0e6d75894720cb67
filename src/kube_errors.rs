//! API server errors made safe to log and to return to kubelet: never a response body. kube
//! quotes the whole body in two places: an error answer that is not a `Status` becomes one
//! whose message is the raw body, and a serde failure's message may quote a value of the body
//! (a Secret's `data` included). [`ApiError`] keeps the typed error for codes and shows
//! neither.

use std::fmt;

/// kube's reason of a `Status` it built from an error body that was not one.
const UNPARSED_REASON: &str = "Failed to parse error data";

/// A `kube::Error` whose `Display` names the HTTP code, the API server's own `Status` message
/// and reason, or the class of a decode failure, but never body content. It has no `source`,
/// so an error chain cannot print the inner error either.
pub struct ApiError(pub kube::Error);

impl fmt::Debug for ApiError {
    /// The same text as `Display`: the inner error's `Debug` would print the raw body.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiError({:?})", describe(&self.0))
    }
}

impl ApiError {
    /// The typed error, for deciding codes.
    pub(crate) fn inner(&self) -> &kube::Error {
        &self.0
    }
}

impl From<kube::Error> for ApiError {
    fn from(error: kube::Error) -> Self {
        Self(error)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&describe(&self.0))
    }
}

impl std::error::Error for ApiError {}

/// A `kube::Error` in one line, without any response body content.
pub(crate) fn describe(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if status.reason == UNPARSED_REASON => format!(
            "the API server answered HTTP {} with a body that is not a Status (not shown)",
            status.code
        ),
        kube::Error::Api(status) => format!(
            "the API server answered HTTP {} {}: {}",
            status.code, status.reason, status.message
        ),
        kube::Error::SerdeError(e) => format!(
            "the API server's answer could not be decoded: {}",
            crate::redact::describe_json_error(e)
        ),
        // The chain stops before a decoding error, whose message may quote the body.
        other => crate::text::join(
            crate::text::causes(other).take_while(|e| !e.is::<serde_json::Error>()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_and_decoded_values_are_never_shown() {
        let body = r#"<html>{"data":{"password":"aHVudGVyMi1ib2R5"}}</html>"#;
        let unparsed = kube::Error::Api(Box::new(
            kube::core::Status::failure(body, UNPARSED_REASON).with_code(502),
        ));
        let text = ApiError(unparsed).to_string();
        assert!(
            text.contains("HTTP 502") && !text.contains("aHVudGVy"),
            "{text}"
        );

        let serde = serde_json::from_str::<std::collections::BTreeMap<String, u32>>(
            r#"{"password": "hunter2-in-body"}"#,
        )
        .unwrap_err();
        assert!(
            serde.to_string().contains("hunter2-in-body"),
            "serde quotes input"
        );
        let error = ApiError(kube::Error::SerdeError(serde));
        let text = error.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("line 1"), "{text}");
        assert!(std::error::Error::source(&error).is_none());

        let denied = kube::Error::Api(Box::new(
            kube::core::Status::failure("secrets is forbidden", "Forbidden").with_code(403),
        ));
        assert!(describe(&denied).contains("403 Forbidden: secrets is forbidden"));
    }
}

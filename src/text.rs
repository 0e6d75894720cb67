//! Text keymount shows people from things it does not control: an error with its causes on
//! one line, and input (names, store messages, plugin codes) cut to a bounded length.

use std::error::Error;

/// `error`, then its source, then that one's, and so on.
pub(crate) fn causes<'a>(
    error: &'a (dyn Error + 'static),
) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(Some(error), |&e| e.source())
}

/// `error` and its sources on one line, joined with ": ".
pub fn error_chain(error: &(dyn Error + 'static)) -> String {
    join(causes(error))
}

/// These errors' messages joined with ": ". A message the text already ends with is not
/// repeated (an error that shows its source in its own message and also returns it).
pub fn join<'a>(errors: impl Iterator<Item = &'a (dyn Error + 'static)>) -> String {
    let mut text = String::new();
    for error in errors {
        let message = error.to_string();
        if text.is_empty() {
            text = message;
        } else if !text.ends_with(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
    }
    text
}

/// The first `max_chars` characters of `text`, with `…` when something was cut.
pub(crate) fn shorten(text: &str, max_chars: usize) -> String {
    let mut shown: String = text.chars().take(max_chars).collect();
    if shown.len() < text.len() {
        shown.push('…');
    }
    shown
}

/// `text` on one line (control characters such as newlines and tabs become spaces), cut to
/// `max_chars` characters.
pub(crate) fn one_line(text: &str, max_chars: usize) -> String {
    shorten(&text.replace(char::is_control, " "), max_chars)
}

/// A store's error detail as shown in a message: one line of at most 300 characters, or
/// `no details` when there is none.
pub(crate) fn detail(text: &str) -> String {
    let shown = one_line(text, 300);
    if shown.is_empty() {
        "no details".to_owned()
    } else {
        shown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Layer(&'static str, #[source] Option<Box<Layer>>);

    #[test]
    fn a_chain_is_one_line_outermost_first() {
        let inner = Layer("connection refused", None);
        let outer = Layer("send request", Some(Box::new(inner)));
        assert_eq!(error_chain(&outer), "send request: connection refused");
        assert_eq!(error_chain(&Layer("alone", None)), "alone");
        assert_eq!(causes(&outer).count(), 2);
        let shown = Layer(
            "provider failed: no such path",
            Some(Box::new(Layer("no such path", None))),
        );
        assert_eq!(error_chain(&shown), "provider failed: no such path");
    }

    #[test]
    fn text_is_cut_by_characters_and_marked() {
        assert_eq!(shorten("abc", 3), "abc");
        assert_eq!(shorten("abcd", 3), "abc…");
        assert_eq!(shorten("ééé", 2), "éé…");
        assert_eq!(shorten("éé", 2), "éé", "characters, not bytes");
        assert_eq!(one_line("a\nb\tc\r", 10), "a b c ");
        assert_eq!(one_line(&"x".repeat(500), 100).chars().count(), 101);
        assert_eq!(detail(""), "no details");
        assert_eq!(detail("denied\n"), "denied ");
        assert!(detail(&"y".repeat(1000)).ends_with('…'));
    }
}

//! Caller-supplied text (an audit reason, an actor or user id, a device summary) made
//! safe to show: control characters and the Unicode bidi and invisible format
//! characters become visible `\u{…}` escapes, so a reason cannot fake a new line or
//! table row, reorder what follows it (`U+202E`), or hide text. HTML escaping is the
//! page's job (the console's templates escape every value); this is what comes before
//! it, for every place such text is shown.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must not be shown as is.
fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200B}'..='\u{200F}' // zero-width space/joiners, LRM/RLM
            | '\u{2028}' | '\u{2029}' // line and paragraph separators
            | '\u{202A}'..='\u{202E}' // bidi embeddings and overrides
            | '\u{2060}'..='\u{2064}' // word joiner, invisible operators
            | '\u{2066}'..='\u{2069}' // bidi isolates
            | '\u{FEFF}' // zero-width no-break space
        )
}

/// `text` with every hidden character as a `\u{XXXX}` escape (a backslash as `\\`, so an
/// escape cannot be forged); borrowed when nothing needed escaping.
pub fn visible(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| is_hidden(c) || c == '\\') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c == '\\' {
            out.push_str("\\\\");
        } else if is_hidden(c) {
            let _ = write!(out, "\\u{{{:04X}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_untouched_and_borrowed() {
        assert!(matches!(
            visible("lost phone — ticket 42"),
            Cow::Borrowed(_)
        ));
        assert_eq!(visible("auth0|5f7c"), "auth0|5f7c");
    }

    #[test]
    fn control_bidi_and_invisible_characters_become_escapes() {
        assert_eq!(visible("a\nb\r\tc"), "a\\u{000A}b\\u{000D}\\u{0009}c");
        assert_eq!(visible("\u{1b}[31mred"), "\\u{001B}[31mred");
        assert_eq!(visible("abc\u{202E}fed"), "abc\\u{202E}fed");
        assert_eq!(visible("x\u{200B}y"), "x\\u{200B}y");
        // A backslash is doubled, so `\u{000A}` typed by a caller stays distinguishable.
        assert_eq!(visible("\\u{000A}"), "\\\\u{000A}");
    }
}

//! Caller-supplied text made safe to show: every place that displays an audit reason,
//! an actor, an id or a server's message to a person (the CLI's tables and sentences,
//! and the console's pages) goes through [`escape_control`].
//!
//! Stored and answered as given (the audit chain hashes what was sent, `--json` shows
//! it as JSON); only the display is escaped, so a reason cannot clear a terminal, move
//! its cursor, forge a table row or reorder what an admin reads.

use std::borrow::Cow;
use std::fmt::Write;

/// Whether `c` must not reach a display as itself: control characters (C0, DEL, C1) and
/// the format characters that hide or reorder text (bidirectional embeddings, overrides
/// and isolates, zero-width characters, the byte-order mark).
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// `s` with `\` doubled and every hidden character written as `\n`, `\r`, `\t` or
/// `\u{XXXX}`, so the escaped form is unambiguous. Borrowed when nothing needs escaping.
pub fn escape_control(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c == '\\' || hidden(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if hidden(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_reordering_characters_are_escaped() {
        assert!(matches!(escape_control("lost phone"), Cow::Borrowed(_)));
        assert_eq!(escape_control("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(escape_control("x\ny\tz\r"), "x\\ny\\tz\\r");
        assert_eq!(escape_control("\u{202e}gnp.exe"), "\\u{202e}gnp.exe");
        assert_eq!(
            escape_control("\u{7f}\u{85}\u{200b}\u{feff}"),
            "\\u{7f}\\u{85}\\u{200b}\\u{feff}"
        );
        assert_eq!(
            escape_control(r"C:\x \u{1b}"),
            r"C:\\x \\u{1b}",
            "unambiguous"
        );
        assert_eq!(escape_control("Zoë 東京 🙂"), "Zoë 東京 🙂");
    }
}

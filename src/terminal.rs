//! Text from a model, a tool or a server, made safe to show on a terminal:
//! control characters become visible escapes, so a reply cannot set the
//! window title, clear the screen or fake agentform's own colours.
//!
//! A leaf: imports nothing of the crate. It only changes how text is shown;
//! what is recorded (transcripts, the state) keeps the bytes as received.

use std::borrow::Cow;

/// Whether `c` is shown escaped: C0 controls except newline and tab, DEL,
/// and C1 controls.
fn is_hidden_control(c: char) -> bool {
    match c {
        '\n' | '\t' => false,
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' => true,
        _ => false,
    }
}

/// `text` with every control character except `\n` and `\t` written as a
/// visible escape (`ESC` as `\u001b`, `CR` as `\r`); borrowed when there is
/// nothing to escape. The escapes are JSON's, so JSON stays valid JSON
/// with the same meaning.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_hidden_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\r' => out.push_str("\\r"),
            c if is_hidden_control(c) => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::escape_controls;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        let text = "line one\n\tline two — ünïcode ✓";
        assert!(matches!(
            escape_controls(text),
            std::borrow::Cow::Borrowed(t) if t == text
        ));
    }

    #[test]
    fn terminal_sequences_become_visible() {
        let hostile = "\x1b]0;pwned\x07\x1b[2J\x1b[31mred\x1b[0m";
        let shown = escape_controls(hostile);
        assert_eq!(
            shown,
            "\\u001b]0;pwned\\u0007\\u001b[2J\\u001b[31mred\\u001b[0m"
        );
        assert!(!shown.chars().any(|c| c.is_control()));
    }

    #[test]
    fn escaped_json_is_the_same_json() {
        let value = serde_json::json!({"text": "a\u{7f}\u{9b}\u{1b}[2J\r\n"});
        let shown = escape_controls(&value.to_string()).into_owned();
        assert!(!shown.chars().any(|c| c.is_control()));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&shown).unwrap(),
            value
        );
    }

    #[test]
    fn carriage_return_del_and_c1_controls_are_escaped() {
        assert_eq!(escape_controls("a\rb"), "a\\rb");
        assert_eq!(escape_controls("a\u{7f}b"), "a\\u007fb");
        // CSI as a single C1 character.
        assert_eq!(escape_controls("a\u{9b}2Jb"), "a\\u009b2Jb");
        assert_eq!(escape_controls("\0"), "\\u0000");
        // Just past C1: printable.
        assert_eq!(escape_controls("\u{a0}"), "\u{a0}");
    }
}

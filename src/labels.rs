//! Hygiene for strings that come from the sandbox (file names, types, YARA rules, detections,
//! error messages): they are chosen by malware, so before they are stored they lose control
//! and bidirectional-override characters and are cut to a bounded length.
//!
//! Escaping for a particular output (exposition text, HTML, logfmt) happens where that output
//! is written; this module only makes the value safe to keep and to show.

/// Replacement for characters that must not survive into labels, pages or logs.
pub const REPLACEMENT: char = '\u{FFFD}';

/// Label value for everything past a cardinality cap.
pub const OTHER: &str = "__other__";

/// Returns `value` with control and bidi-formatting characters replaced by U+FFFD, cut to at
/// most `max_chars` characters (on a character boundary).
pub fn clean(value: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(value.len().min(max_chars * 4));
    for c in value.chars().take(max_chars) {
        out.push(if is_unsafe(c) { REPLACEMENT } else { c });
    }
    out
}

/// Control characters (C0, DEL, C1) and the Unicode formatting characters that reorder or hide
/// text (bidi embeddings, overrides and isolates, zero-width marks, line/paragraph separators).
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
                | '\u{FEFF}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_and_bidi_overrides_are_replaced() {
        assert_eq!(
            clean("a\nb\rc\u{0}d\u{1b}[31m", 100),
            "a\u{FFFD}b\u{FFFD}c\u{FFFD}d\u{FFFD}[31m"
        );
        assert_eq!(clean("exe.\u{202E}fdp", 100), "exe.\u{FFFD}fdp");
        assert_eq!(clean("\u{85}x", 100), "\u{FFFD}x");
    }

    #[test]
    fn values_are_cut_on_a_character_boundary() {
        assert_eq!(clean("ééééé", 3), "ééé");
        assert_eq!(clean("abc", 3), "abc");
        assert_eq!(clean(&"x".repeat(1 << 20), 128).len(), 128);
    }

    #[test]
    fn ordinary_text_quotes_and_markup_pass_unchanged() {
        let s = r#"setup "v2" <script>\x.exe"#;
        assert_eq!(clean(s, 200), s);
    }
}

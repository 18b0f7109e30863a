//! Repairs of one record's text that JSON parsers refuse but an NTFS name or a sloppy
//! appliance produces: lone UTF-16 surrogate escapes, bad escapes, raw control characters,
//! and numbers a float cannot hold (`1e400`, `NaN`, `Infinity`).
//!
//! Only a record the strict parse rejected is repaired, so well-formed bodies pay nothing. The
//! repair is one pass over the text, linear in its length, and keeps every value that was
//! already valid byte for byte.

/// What a repair changed, by kind (the `reason` label of `krs_api_repaired_values_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RepairKind {
    /// Bytes that were not UTF-8, replaced by U+FFFD.
    InvalidUtf8,
    /// A lone surrogate, a malformed escape or a raw control character in a string.
    InvalidEscape,
    /// A number no float holds, or a non-JSON token (`NaN`), replaced by 0.
    InvalidNumber,
}

impl RepairKind {
    pub const ALL: [RepairKind; 3] = [
        RepairKind::InvalidUtf8,
        RepairKind::InvalidEscape,
        RepairKind::InvalidNumber,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            RepairKind::InvalidUtf8 => "invalid_utf8",
            RepairKind::InvalidEscape => "invalid_escape",
            RepairKind::InvalidNumber => "invalid_number",
        }
    }

    pub const fn index(self) -> usize {
        self as usize
    }
}

/// `text` with every string escape, control character and scalar token made valid JSON;
/// `count` is called once per value changed.
pub(super) fn repair(text: &str, mut count: impl FnMut(RepairKind)) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len() + 16);
    let mut i = 0;
    // Runs of bytes that need no change are copied as slices; `i` only ever stops on ASCII,
    // so every slice boundary is a char boundary.
    while i < b.len() {
        match b[i] {
            b'"' => i = string(text, i, &mut out, &mut count),
            byte if is_token_byte(byte) => {
                let start = i;
                while i < b.len() && is_token_byte(b[i]) {
                    i += 1;
                }
                let token = &text[start..i];
                if matches!(token, "true" | "false" | "null") || is_finite_number(token) {
                    out.push_str(token);
                } else {
                    count(RepairKind::InvalidNumber);
                    out.push('0');
                }
            }
            _ => {
                let start = i;
                i += 1;
                while i < b.len() && b[i] != b'"' && !is_token_byte(b[i]) {
                    i += 1;
                }
                out.push_str(&text[start..i]);
            }
        }
    }
    out
}

/// Copies the string starting at the quote at `start`, repairing it; returns the index after
/// its closing quote (or the end of the text).
fn string(text: &str, start: usize, out: &mut String, count: &mut impl FnMut(RepairKind)) -> usize {
    let b = text.as_bytes();
    out.push('"');
    let mut i = start + 1;
    let mut run = i;
    while i < b.len() {
        match b[i] {
            b'"' => {
                out.push_str(&text[run..i]);
                out.push('"');
                return i + 1;
            }
            b'\\' => {
                out.push_str(&text[run..i]);
                i = escape(text, i, out, count);
                run = i;
            }
            byte if byte < 0x20 => {
                out.push_str(&text[run..i]);
                count(RepairKind::InvalidEscape);
                out.push_str(&format!("\\u{byte:04x}"));
                i += 1;
                run = i;
            }
            _ => i += 1,
        }
    }
    out.push_str(&text[run..]);
    b.len()
}

/// Copies the escape at `i` (a backslash) if valid, else writes U+FFFD for it; returns the
/// index after what was consumed.
fn escape(text: &str, i: usize, out: &mut String, count: &mut impl FnMut(RepairKind)) -> usize {
    let b = text.as_bytes();
    match b.get(i + 1) {
        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
            out.push_str(&text[i..i + 2]);
            i + 2
        }
        Some(b'u') => match hex4(b, i + 2) {
            Some(0xD800..=0xDBFF) => {
                let low = (b.get(i + 6) == Some(&b'\\') && b.get(i + 7) == Some(&b'u'))
                    .then(|| hex4(b, i + 8))
                    .flatten();
                if matches!(low, Some(0xDC00..=0xDFFF)) {
                    out.push_str(&text[i..i + 12]);
                    i + 12
                } else {
                    count(RepairKind::InvalidEscape);
                    out.push_str("\\ufffd");
                    i + 6
                }
            }
            Some(0xDC00..=0xDFFF) => {
                count(RepairKind::InvalidEscape);
                out.push_str("\\ufffd");
                i + 6
            }
            Some(_) => {
                out.push_str(&text[i..i + 6]);
                i + 6
            }
            None => {
                count(RepairKind::InvalidEscape);
                out.push_str("\\ufffd");
                i + 2
            }
        },
        // A backslash before anything else (or at the end): the backslash becomes U+FFFD and
        // what followed it is kept as ordinary text.
        _ => {
            count(RepairKind::InvalidEscape);
            out.push_str("\\ufffd");
            i + 1
        }
    }
}

fn hex4(b: &[u8], at: usize) -> Option<u16> {
    let digits = b.get(at..at + 4)?;
    if !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u16::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

/// Bytes of a bare token: what JSON numbers and literals are made of, plus what broken ones
/// (`NaN`, `-Infinity`, `+1`, `0x1F`) are made of.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'.')
}

/// A JSON number that parses to a finite float (serde_json refuses `1e400`).
fn is_finite_number(token: &str) -> bool {
    serde_json::from_str::<f64>(token).is_ok_and(f64::is_finite)
        && token
            .bytes()
            .next()
            .is_some_and(|b| b == b'-' || b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(text: &str) -> (String, Vec<RepairKind>) {
        let mut kinds = Vec::new();
        let out = repair(text, |k| kinds.push(k));
        (out, kinds)
    }

    #[test]
    fn a_lone_surrogate_becomes_a_replacement_character_and_a_pair_is_kept() {
        let (out, kinds) = fixed(r#"{"Name":"x\ud800y.txt","Type":"\ud83d\ude00"}"#);
        assert_eq!(out, r#"{"Name":"x\ufffdy.txt","Type":"\ud83d\ude00"}"#);
        assert_eq!(kinds, [RepairKind::InvalidEscape]);
        let (out, _) = fixed(r#"["\udc00","\ud800\u0041","\uZZ","a\qb"]"#);
        assert_eq!(out, r#"["\ufffd","\ufffd\u0041","\ufffdZZ","a\ufffdqb"]"#);
    }

    #[test]
    fn numbers_no_float_holds_become_zero_and_valid_ones_are_kept() {
        let (out, kinds) =
            fixed(r#"{"Size":1e400,"A":NaN,"B":-Infinity,"C":12,"D":-1.5e3,"E":true}"#);
        assert_eq!(out, r#"{"Size":0,"A":0,"B":0,"C":12,"D":-1.5e3,"E":true}"#);
        assert_eq!(kinds, [RepairKind::InvalidNumber; 3]);
    }

    #[test]
    fn raw_control_characters_in_strings_are_escaped() {
        let (out, kinds) = fixed("{\"Name\":\"a\nb\u{1}\"}");
        assert_eq!(out, r#"{"Name":"a\u000ab\u0001"}"#);
        assert_eq!(kinds.len(), 2);
    }

    #[test]
    fn text_outside_strings_and_non_ascii_inside_are_copied_unchanged() {
        let text = "{ \"Näme\" : [ \"€\" , 1 ] }";
        assert_eq!(fixed(text), (text.to_owned(), vec![]));
    }
}

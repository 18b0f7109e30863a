//! A structural scan of a downloads body: where the records array is, and where each of its
//! elements starts and ends, without building a document tree.
//!
//! The scan only follows strings and brackets, so it never recurses (any nesting depth costs
//! one counter), reads each byte a bounded number of times, and allocates nothing. What an
//! element holds is the record decoder's business: a scalar token the scan does not understand
//! (`NaN`, `1e400`) or a string with a lone surrogate escape only stops that one element, never
//! the records around it. The structure between elements (brackets, commas, keys) must be JSON:
//! a body broken there is not JSON, and guessing where its records are could invent some.

/// Wrapper objects are searched this deep for a records array (`{"Result":{"Downloads":[…]}}`
/// is two levels).
const MAX_WRAPPER_DEPTH: usize = 4;

/// Where a body's records are.
#[derive(Debug, PartialEq)]
pub(super) enum Located<'a> {
    /// No records: empty body, `null`, `{}`, or a wrapper whose only arrays are empty.
    Empty,
    /// The bytes of an array, `[` to `]`, whose elements are the records.
    Array(&'a [u8]),
    /// The bytes of one object that is itself a record.
    Record(&'a [u8]),
    /// Valid structure, but nothing that holds records; the text says what was found.
    Shape(&'static str),
}

/// The structure around the records is not JSON: what was expected, at which byte.
#[derive(Debug, PartialEq)]
pub(super) struct SyntaxError {
    pub at: usize,
    pub expected: &'static str,
}

/// Finds the records in `body` (a leading BOM already removed) and checks that the whole body
/// is one value with nothing after it. An object is a record when it carries one of `keys`
/// (matched ASCII case-insensitively).
pub(super) fn locate<'a>(body: &'a [u8], keys: &[&str]) -> Result<Located<'a>, SyntaxError> {
    let mut s = Scanner {
        b: body,
        pos: 0,
        keys,
    };
    s.ws();
    let located = match s.peek() {
        None => return Ok(Located::Empty),
        Some(b'[') => {
            let start = s.pos;
            s.skip_value()?;
            Located::Array(&body[start..s.pos])
        }
        Some(b'{') => s.wrapper(0)?.into_located(),
        Some(_) => {
            let kind = s.scalar_kind();
            let start = s.pos;
            s.skip_value()?;
            // A body that is one scalar has no records to protect: it must be valid JSON.
            if serde_json::from_slice::<serde::de::IgnoredAny>(&body[start..s.pos]).is_err() {
                return Err(SyntaxError {
                    at: start,
                    expected: "a JSON value",
                });
            }
            if kind == "null" {
                Located::Empty
            } else {
                Located::Shape(match kind {
                    "a string" => "the body is a string, not an array or object of records",
                    "a boolean" => "the body is a boolean, not an array or object of records",
                    _ => "the body is a number, not an array or object of records",
                })
            }
        }
    };
    s.ws();
    if s.pos < body.len() {
        return Err(s.error("the end of the body"));
    }
    Ok(located)
}

/// The elements of an array located by [`locate`], in order, each as its exact bytes.
pub(super) fn elements(array: &[u8]) -> Elements<'_> {
    Elements {
        s: Scanner {
            b: array,
            pos: 1,
            keys: &[],
        },
        done: false,
    }
}

/// Whether `element` is an object with at least one of `keys` at its top level.
pub(super) fn has_record_key(element: &[u8], keys: &[&str]) -> bool {
    let mut s = Scanner {
        b: element,
        pos: 0,
        keys,
    };
    s.object_has_record_key().unwrap_or(false)
}

/// Iterator over the elements of an array; yields an error once and stops if the array's
/// structure is broken (never the case for an array [`locate`] returned).
pub(super) struct Elements<'a> {
    s: Scanner<'a, 'static>,
    done: bool,
}

impl<'a> Iterator for Elements<'a> {
    type Item = Result<&'a [u8], SyntaxError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let s = &mut self.s;
        s.ws();
        if s.peek() == Some(b']') {
            self.done = true;
            return None;
        }
        let start = s.pos;
        let item = s.skip_value().map(|()| &s.b[start..s.pos]);
        if item.is_ok() {
            s.ws();
            match s.peek() {
                Some(b',') => s.pos += 1,
                Some(b']') => {}
                _ => {
                    self.done = true;
                    return Some(Err(s.error("`,` or `]` after an array element")));
                }
            }
        } else {
            self.done = true;
        }
        Some(item)
    }
}

struct Scanner<'a, 'k> {
    b: &'a [u8],
    pos: usize,
    /// What makes an object a record.
    keys: &'k [&'k str],
}

/// What a wrapper object (or one nested in it) offers.
#[derive(Default)]
struct Candidates<'a> {
    /// The first array with an element that carries a record key, or a nested record.
    records: Option<Located<'a>>,
    /// Whether an empty array (or one of nulls only) was seen: "no files" if nothing better.
    empty_array: bool,
    /// Whether the object had any member at all.
    members: bool,
}

impl<'a> Candidates<'a> {
    fn into_located(self) -> Located<'a> {
        match self.records {
            Some(found) => found,
            None if self.empty_array || !self.members => Located::Empty,
            None => Located::Shape("an object with no record keys and no array of records"),
        }
    }
}

impl<'a> Scanner<'a, '_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn error(&self, expected: &'static str) -> SyntaxError {
        SyntaxError {
            at: self.pos,
            expected,
        }
    }

    fn scalar_kind(&self) -> &'static str {
        match self.peek() {
            Some(b'"') => "a string",
            Some(b't' | b'f') => "a boolean",
            Some(b'n') => "null",
            _ => "a number",
        }
    }

    /// Skips one value: a string, a bracketed compound (any depth, without recursion) or a
    /// scalar token. Tokens are not checked here; the record decoder judges them.
    fn skip_value(&mut self) -> Result<(), SyntaxError> {
        match self.peek() {
            Some(b'"') => self.skip_string(),
            Some(b'{' | b'[') => {
                let mut depth = 0usize;
                while let Some(byte) = self.peek() {
                    match byte {
                        b'"' => {
                            self.skip_string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.pos += 1;
                                return Ok(());
                            }
                        }
                        _ => {}
                    }
                    self.pos += 1;
                }
                Err(self.error("a closing bracket before the end of the body"))
            }
            _ => {
                let start = self.pos;
                while let Some(byte) = self.peek() {
                    if matches!(
                        byte,
                        b',' | b']'
                            | b'}'
                            | b':'
                            | b'"'
                            | b'['
                            | b'{'
                            | b' '
                            | b'\t'
                            | b'\n'
                            | b'\r'
                    ) {
                        break;
                    }
                    self.pos += 1;
                }
                if self.pos == start {
                    Err(self.error("a value"))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Skips a string starting at its opening quote; escapes are skipped, not checked.
    fn skip_string(&mut self) -> Result<(), SyntaxError> {
        self.pos += 1;
        while let Some(byte) = self.peek() {
            match byte {
                b'"' => {
                    self.pos += 1;
                    return Ok(());
                }
                b'\\' => self.pos += 2,
                _ => self.pos += 1,
            }
        }
        self.pos = self.b.len();
        Err(self.error("the end of a string"))
    }

    /// Reads an object key and the `:` after it; whether it is a record key.
    fn key(&mut self) -> Result<bool, SyntaxError> {
        if self.peek() != Some(b'"') {
            return Err(self.error("a quoted object key"));
        }
        let start = self.pos + 1;
        self.skip_string()?;
        let raw = &self.b[start..self.pos - 1];
        self.ws();
        if self.peek() != Some(b':') {
            return Err(self.error("`:` after an object key"));
        }
        self.pos += 1;
        self.ws();
        Ok(is_key(raw, self.keys))
    }

    /// Walks an object's members, calling `member` with each key at the start of its value;
    /// `member` must consume the value. Ends after the closing brace.
    fn members(
        &mut self,
        mut member: impl FnMut(&mut Self, bool) -> Result<(), SyntaxError>,
    ) -> Result<(), SyntaxError> {
        self.pos += 1;
        self.ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            let key = self.key()?;
            member(self, key)?;
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.ws();
                }
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(self.error("`,` or `}` after an object member")),
            }
        }
    }

    /// An object in wrapper position: a record itself if it has a record key, else the
    /// records array it (or an object nested in it) holds.
    fn wrapper(&mut self, depth: usize) -> Result<Candidates<'a>, SyntaxError> {
        let start = self.pos;
        let mut found = Candidates::default();
        let mut is_record = false;
        self.members(|s, key| {
            found.members = true;
            if key {
                is_record = true;
            }
            if is_record || found.records.is_some() {
                return s.skip_value();
            }
            match s.peek() {
                Some(b'[') => {
                    let array_start = s.pos;
                    s.skip_value()?;
                    let array = &s.b[array_start..s.pos];
                    match array_holds(array, s.keys) {
                        ArrayKind::Records => found.records = Some(Located::Array(array)),
                        ArrayKind::Empty => found.empty_array = true,
                        ArrayKind::Other => {}
                    }
                    Ok(())
                }
                Some(b'{') if depth + 1 < MAX_WRAPPER_DEPTH => {
                    let inner = s.wrapper(depth + 1)?;
                    found.empty_array |= inner.empty_array;
                    found.records = inner.records;
                    Ok(())
                }
                _ => s.skip_value(),
            }
        })?;
        if is_record {
            found.records = Some(Located::Record(&self.b[start..self.pos]));
        }
        Ok(found)
    }

    fn object_has_record_key(&mut self) -> Result<bool, SyntaxError> {
        if self.peek() != Some(b'{') {
            return Ok(false);
        }
        let mut found = false;
        self.members(|s, key| {
            found |= key;
            s.skip_value()
        })?;
        Ok(found)
    }
}

enum ArrayKind {
    /// An element carries a record key.
    Records,
    /// No elements but nulls.
    Empty,
    Other,
}

fn array_holds(array: &[u8], keys: &[&str]) -> ArrayKind {
    let mut kind = ArrayKind::Empty;
    for element in elements(array) {
        let Ok(element) = element else {
            return ArrayKind::Other;
        };
        if has_record_key(element, keys) {
            return ArrayKind::Records;
        }
        if element != b"null" {
            kind = ArrayKind::Other;
        }
    }
    kind
}

/// Whether a raw key (as it appears between the quotes) is one of `keys`, ASCII
/// case-insensitively. A key spelled with escapes is decoded first.
fn is_key(raw: &[u8], keys: &[&str]) -> bool {
    let decoded;
    let key: &[u8] = if raw.contains(&b'\\') {
        let quoted = [b"\"", raw, b"\""].concat();
        match serde_json::from_slice::<String>(&quoted) {
            Ok(text) => decoded = text,
            Err(_) => return false,
        }
        decoded.as_bytes()
    } else {
        raw
    };
    keys.iter()
        .any(|name| name.as_bytes().eq_ignore_ascii_case(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: &[&str] = &["Zone", "Sha256"];

    fn array_of(body: &str) -> Vec<String> {
        let Ok(Located::Array(array)) = locate(body.as_bytes(), KEYS) else {
            panic!("no array in {body}");
        };
        elements(array)
            .map(|e| String::from_utf8_lossy(e.expect("element")).into_owned())
            .collect()
    }

    #[test]
    fn elements_are_cut_exactly_whatever_they_hold() {
        assert_eq!(
            array_of(r#" [ {"a":"]}\""} , NaN,1e400 ,[[[]]], "x" ] "#),
            [r#"{"a":"]}\""}"#, "NaN", "1e400", "[[[]]]", r#""x""#]
        );
    }

    #[test]
    fn nesting_a_million_deep_is_scanned_without_recursion() {
        let body = format!("[{}{}]", "[".repeat(1 << 20), "]".repeat(1 << 20));
        assert_eq!(array_of(&body).len(), 1);
    }

    #[test]
    fn a_wrapper_is_searched_for_the_array_of_records_not_the_first_array() {
        let body = br#"{"Errors":[],"Meta":[{"page":1}],"Downloads":[{"Zone":"Red"}]}"#;
        assert_eq!(
            locate(body, KEYS),
            Ok(Located::Array(br#"[{"Zone":"Red"}]"#.as_slice()))
        );
    }

    #[test]
    fn a_nested_wrapper_is_searched_too() {
        let body = br#"{"Result":{"Count":1,"Items":[{"zone":"Red"}]}}"#;
        assert_eq!(
            locate(body, KEYS),
            Ok(Located::Array(br#"[{"zone":"Red"}]"#.as_slice()))
        );
    }

    #[test]
    fn a_wrapper_with_only_empty_arrays_holds_no_files() {
        assert_eq!(
            locate(br#"{"Errors":[],"Downloads":[]}"#, KEYS),
            Ok(Located::Empty)
        );
        assert_eq!(
            locate(br#"{"Meta":[{"page":1}]}"#, KEYS),
            Ok(Located::Shape(
                "an object with no record keys and no array of records"
            ))
        );
    }

    #[test]
    fn structure_broken_between_elements_is_a_syntax_error() {
        let scan = |body: &str| -> Result<(), SyntaxError> {
            if let Located::Array(array) = locate(body.as_bytes(), KEYS)? {
                for element in elements(array) {
                    element?;
                }
            }
            Ok(())
        };
        assert_eq!(scan(r#"[{"Zone":"Red"},null]"#), Ok(()));
        for body in [
            r#"[{"Zone":"Red"} {"Zone":"Red"}]"#,
            r#"[{"Zone":"Red"}"#,
            r#"[{"Zone":"Red"}] x"#,
            r#"{"Zone" "Red"}"#,
            r#"["unterminated]"#,
        ] {
            assert!(scan(body).is_err(), "{body}");
        }
    }
}

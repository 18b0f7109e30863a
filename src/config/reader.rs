//! The mechanics of reading a YAML tree into raw fields: checked mappings, typed leaves,
//! `${VAR}` expansion, and the wording of structural problems.
//!
//! [`super::raw`] says *which* keys and types the file has; this file says *how* a key is looked
//! up, how a leaf of each type is converted, and how a mismatch is reported.

use std::cell::RefCell;

use super::expand::{expand, Env, ExpandError};
use super::problem::{escape, Problem, Problems, MAX_SHOWN_CHARS};
use super::raw::{Field, Slot};
use krs_yaml::Value;

/// Whether `s` is `[A-Za-z_][A-Za-z0-9_]*`: a Prometheus label name, and a key printable bare
/// in a field path.
pub(super) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The path of `key` under `parent`: `parent.key`, or `parent["we ird"]` (escaped, truncated)
/// when the key is not an identifier.
pub(super) fn key_path(parent: &str, key: &str) -> String {
    if is_identifier(key) && key.len() <= MAX_SHOWN_CHARS {
        if parent.is_empty() {
            key.to_owned()
        } else {
            format!("{parent}.{key}")
        }
    } else {
        let shown: String = key.chars().take(MAX_SHOWN_CHARS).collect();
        format!("{parent}[\"{}\"]", escape(&shown))
    }
}

/// Whether a field's value may appear in problems. The password's never does.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Reveal {
    Yes,
    No,
}

pub(super) struct Reader<'a> {
    env: Env<'a>,
    pub(super) problems: &'a mut Problems,
}

/// A mapping being read. The keys it allows are the ones its reader asks for: each lookup
/// records its key, and [`Reader::close`] reports every other key of the mapping against that
/// list, so a section's keys are written once, where they are read.
pub(super) struct Section<'v> {
    path: String,
    entries: Vec<(&'v str, &'v Value)>,
    /// Not a mapping (reported); every field read from it is [`Slot::Invalid`].
    pub(super) invalid: bool,
    /// The keys looked up so far, in the order first asked for: the "expected one of" list.
    known: RefCell<Vec<&'static str>>,
    /// Where this section's unknown keys go among the problems: where they would have been
    /// found had they been checked when the section was opened (before its fields' problems).
    mark: usize,
    /// Whether [`Reader::close`] has reported the unknown keys.
    closed: bool,
}

impl<'v> Section<'v> {
    /// The value under `key`; `null` counts as absent. Makes `key` one the section allows.
    pub(super) fn get(&self, key: &'static str) -> Option<&'v Value> {
        let mut known = self.known.borrow_mut();
        if !known.contains(&key) {
            known.push(key);
        }
        self.entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .filter(|v| !matches!(v, Value::Null))
    }

    pub(super) fn child(&self, key: &str) -> String {
        key_path(&self.path, key)
    }
}

impl Drop for Section<'_> {
    fn drop(&mut self) {
        // A section dropped unclosed would accept any key silently.
        debug_assert!(
            self.closed || std::thread::panicking(),
            "section `{}` was not closed",
            self.path
        );
    }
}

impl<'a> Reader<'a> {
    pub(super) fn new(env: Env<'a>, problems: &'a mut Problems) -> Reader<'a> {
        Reader { env, problems }
    }

    /// Opens a mapping, reporting non-string keys; unknown keys are reported by
    /// [`Reader::close`]. `None` and `null` are empty.
    pub(super) fn section<'v>(&mut self, path: String, value: Option<&'v Value>) -> Section<'v> {
        let mut section = Section {
            path,
            entries: Vec::new(),
            invalid: false,
            known: RefCell::new(Vec::new()),
            mark: self.problems.mark(),
            closed: false,
        };
        match value {
            None | Some(Value::Null) => {}
            Some(Value::Map(entries)) => {
                for (key, value) in entries {
                    let Value::String(key) = key else {
                        self.wrong_type(&section.path, "string keys", key, Reveal::Yes);
                        continue;
                    };
                    section.entries.push((key, value));
                }
            }
            Some(other) => {
                self.wrong_type(&section.path, "a mapping", other, Reveal::Yes);
                section.invalid = true;
            }
        }
        section
    }

    pub(super) fn subsection<'v>(
        &mut self,
        parent: &Section<'v>,
        key: &'static str,
    ) -> Section<'v> {
        let path = parent.child(key);
        if parent.invalid {
            let mut section = self.section(path, None);
            section.invalid = true;
            return section;
        }
        self.section(path, parent.get(key))
    }

    /// Ends reading `section`: every key it has that was never looked up is reported, with the
    /// looked-up keys as the expected ones. Sections close innermost first.
    pub(super) fn close(&mut self, mut section: Section<'_>) {
        section.closed = true;
        let known = section.known.borrow();
        let unknown = section
            .entries
            .iter()
            .filter(|(key, _)| !known.contains(key))
            .map(|(key, _)| unknown_key(&section.path, key, &known));
        self.problems.insert_at(section.mark, unknown);
    }

    /// Reads `key` of `section` with `convert`, which reports its own problems.
    pub(super) fn field<T>(
        &mut self,
        section: &Section<'_>,
        key: &'static str,
        convert: impl FnOnce(&mut Self, &str, &Value) -> Option<T>,
    ) -> Field<T> {
        let path = section.child(key);
        let slot = if section.invalid {
            Slot::Invalid
        } else {
            match section.get(key) {
                None => Slot::Absent,
                Some(value) => match convert(self, &path, value) {
                    Some(v) => Slot::Given(v),
                    None => Slot::Invalid,
                },
            }
        };
        Field { path, slot }
    }

    pub(super) fn string(
        &mut self,
        section: &Section<'_>,
        key: &'static str,
        reveal: Reveal,
    ) -> Field<String> {
        self.field(section, key, |r, path, value| match value {
            Value::String(s) => r.expand_as(path, s, reveal),
            other => {
                r.wrong_type(path, "a string", other, reveal);
                None
            }
        })
    }

    /// A duration stays text; a bare number is rejected because its unit would be a guess.
    pub(super) fn duration(&mut self, section: &Section<'_>, key: &'static str) -> Field<String> {
        self.field(section, key, |r, path, value| match value {
            Value::String(s) => r.expand(path, s),
            Value::Int(_) | Value::Float(_) => {
                let shown = value.scalar_text().unwrap_or_default();
                r.problems.report_value(
                    path,
                    &shown,
                    "a duration needs a unit, like 500ms, 10s or 1m30s",
                );
                None
            }
            other => {
                r.wrong_type(path, "a duration like 10s", other, Reveal::Yes);
                None
            }
        })
    }

    pub(super) fn unsigned(&mut self, section: &Section<'_>, key: &'static str) -> Field<u64> {
        self.field(section, key, |r, path, value| match value {
            Value::Int(i) => match u64::try_from(*i) {
                Ok(n) => Some(n),
                Err(_) => {
                    r.problems
                        .report_value(path, &i.to_string(), "must not be negative");
                    None
                }
            },
            Value::Float(f) => {
                r.problems.report_value(
                    path,
                    &f.to_string(),
                    "expected a whole number, without fraction or exponent",
                );
                None
            }
            Value::String(s) => {
                let text = r.expanded_scalar(path, s, "an integer")?;
                match text.trim().parse::<u64>() {
                    Ok(n) => Some(n),
                    Err(_) => {
                        let why = if text.trim().starts_with('-') {
                            "must not be negative"
                        } else {
                            "expected a whole number that fits in 64 bits"
                        };
                        r.problems.report_value(path, &text, why);
                        None
                    }
                }
            }
            other => {
                r.wrong_type(path, "an integer", other, Reveal::Yes);
                None
            }
        })
    }

    /// Range and finiteness are `validate`'s business.
    pub(super) fn float(&mut self, section: &Section<'_>, key: &'static str) -> Field<f64> {
        self.field(section, key, |r, path, value| match value {
            // Precision loss is irrelevant at the magnitudes where it starts.
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            Value::String(s) => {
                let text = r.expanded_scalar(path, s, "a number")?;
                let parsed = text.trim().parse::<f64>();
                if parsed.is_err() {
                    r.problems.report_value(path, &text, "expected a number");
                }
                parsed.ok()
            }
            other => {
                r.wrong_type(path, "a number", other, Reveal::Yes);
                None
            }
        })
    }

    pub(super) fn boolean(&mut self, section: &Section<'_>, key: &'static str) -> Field<bool> {
        self.field(section, key, |r, path, value| match value {
            Value::Bool(b) => Some(*b),
            Value::String(s) => {
                let text = r.expanded_scalar(path, s, "true or false")?;
                match text.trim() {
                    "true" => Some(true),
                    "false" => Some(false),
                    _ => {
                        r.problems
                            .report_value(path, &text, "expected true or false");
                        None
                    }
                }
            }
            other => {
                r.wrong_type(path, "true or false", other, Reveal::Yes);
                None
            }
        })
    }

    /// A label value or task name: a string, or an integer or boolean taken as written. Numbers
    /// with a fraction are refused because YAML would have rewritten them (`1.10` → `1.1`).
    pub(super) fn label_text(&mut self, path: &str, value: &Value) -> Option<String> {
        match value {
            Value::String(s) => self.expand(path, s),
            Value::Int(i) => Some(i.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Float(f) => {
                self.problems.report_value(
                    path,
                    &f.to_string(),
                    "quote this value: YAML reads it as a number and may change it (1.10 becomes 1.1)",
                );
                None
            }
            other => {
                self.wrong_type(path, "a string", other, Reveal::Yes);
                None
            }
        }
    }

    /// Expands a string value, reporting every unset variable or bad reference.
    pub(super) fn expand(&mut self, path: &str, s: &str) -> Option<String> {
        self.expand_as(path, s, Reveal::Yes)
    }

    /// [`Reader::expand`] for a field whose value must not be shown: an unset variable is
    /// still named (it is a valid variable name, most likely a real reference), but the text of
    /// an invalid reference, which may be a fragment of the password, is not.
    fn expand_as(&mut self, path: &str, s: &str, reveal: Reveal) -> Option<String> {
        match expand(s, self.env) {
            Ok(expanded) => Some(expanded.text),
            Err(errors) => {
                for error in errors {
                    let message = match error {
                        ExpandError::BadName(_) if reveal == Reveal::No => {
                            "a `${` is not followed by a variable name and `}`; write `$${` for \
                             a literal `${`"
                                .to_owned()
                        }
                        error => error.to_string(),
                    };
                    self.problems.report(path, message);
                }
                None
            }
        }
    }

    /// A string where a number or boolean is expected: accepted only when it holds a `${VAR}`
    /// reference (environment values are always text); a quoted literal is a type error.
    pub(super) fn expanded_scalar(
        &mut self,
        path: &str,
        s: &str,
        expected: &str,
    ) -> Option<String> {
        match expand(s, self.env) {
            Ok(expanded) if expanded.had_reference => Some(expanded.text),
            Ok(_) => {
                self.problems.report_value(
                    path,
                    s,
                    format!("expected {expected}, got a string (remove the quotes)"),
                );
                None
            }
            // Expanding again reports each error.
            Err(_) => self.expand(path, s),
        }
    }

    pub(super) fn wrong_type(&mut self, path: &str, expected: &str, value: &Value, reveal: Reveal) {
        let mut problem = match value {
            Value::Tagged(tag, _) => Problem::new(
                path,
                format!(
                    "YAML tags such as `{}` are not supported; expected {expected}",
                    escape(tag)
                ),
            ),
            _ => Problem::new(path, format!("expected {expected}, got {}", value.kind())),
        };
        if reveal == Reveal::Yes && !matches!(value, Value::Tagged(..) | Value::Null) {
            if let Some(text) = value.scalar_text() {
                problem = problem.with_value(&text);
            }
        }
        self.problems.push(problem);
    }
}

fn unknown_key(parent: &str, key: &str, allowed: &[&str]) -> Problem {
    let lower = key.to_ascii_lowercase();
    // Close enough to be a typo (or a case slip), not just another short word.
    let suggestion = allowed
        .iter()
        .filter(|_| key.len() <= 64)
        .map(|candidate| (edit_distance(&lower, candidate), candidate))
        .filter(|(distance, candidate)| *distance <= (candidate.len() / 3).max(1))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| format!(" (did you mean `{candidate}`?)"))
        .unwrap_or_default();
    let shown: String = key.chars().take(MAX_SHOWN_CHARS).collect();
    Problem::new(
        key_path(parent, key),
        format!(
            "unknown key `{}`{suggestion}; expected one of {}",
            escape(&shown),
            allowed.join(", ")
        ),
    )
}

/// Levenshtein distance, for "did you mean" on short keys.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

//! What is wrong with a configuration, one [`Problem`] per mistake, collected rather than
//! returned at the first so the operator fixes everything in one edit.
//!
//! Values in problems come from the file or the environment and may be garbage (binary, huge,
//! terminal escapes), so they are truncated when recorded and escaped when displayed. Secrets are
//! never recorded: callers pass no value for the password.

use std::fmt;

/// One mistake in the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Where: a field path such as `tasks[3].id`, `sandbox.timeout`; empty for the whole file
    /// (a YAML syntax error, whose message carries the line and column).
    pub field: String,
    /// The offending value as written (after `${VAR}` expansion), truncated to
    /// [`MAX_SHOWN_CHARS`] characters; `None` when not meaningful or secret.
    pub value: Option<String>,
    /// What is wrong and, where useful, what is expected.
    pub message: String,
}

/// Longest value, in characters, kept in a [`Problem`]; longer ones end with `…`.
pub const MAX_SHOWN_CHARS: usize = 80;

impl Problem {
    /// A problem without a value.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            field: field.into(),
            value: None,
            message: message.into(),
        }
    }

    /// Attaches the offending value, truncated to [`MAX_SHOWN_CHARS`].
    pub fn with_value(mut self, value: &str) -> Problem {
        self.value = Some(truncate(value));
        self
    }
}

/// `<field>: <message> (got "<value>")`, the value escaped so that control characters and quotes
/// cannot forge lines or hide text.
impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)?;
        if let Some(value) = &self.value {
            write!(f, " (got \"{}\")", escape(value))?;
        }
        Ok(())
    }
}

/// The problems found so far, in the order found.
#[derive(Debug, Default)]
pub(super) struct Problems(Vec<Problem>);

impl Problems {
    pub(super) fn push(&mut self, problem: Problem) {
        self.0.push(problem);
    }

    pub(super) fn report(&mut self, field: &str, message: impl Into<String>) {
        self.push(Problem::new(field, message));
    }

    pub(super) fn report_value(&mut self, field: &str, value: &str, message: impl Into<String>) {
        self.push(Problem::new(field, message).with_value(value));
    }

    /// Where the next problem found will go: for [`Problems::insert_at`].
    pub(super) fn mark(&self) -> usize {
        self.0.len()
    }

    /// Puts `problems` at `mark`, before those found since, as if they had been found then.
    pub(super) fn insert_at(&mut self, mark: usize, problems: impl IntoIterator<Item = Problem>) {
        let mark = mark.min(self.0.len());
        self.0.splice(mark..mark, problems);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn into_vec(self) -> Vec<Problem> {
        self.0
    }
}

/// Escapes backslashes, double quotes and control characters (`\n`, `\u{1b}`) so a value prints
/// on one line exactly as it is; other characters are kept.
pub(super) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            // Also the Unicode line and paragraph separators, which some terminals honour.
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                out.extend(c.escape_default());
            }
            c => out.push(c),
        }
    }
    out
}

fn truncate(s: &str) -> String {
    match s.char_indices().nth(MAX_SHOWN_CHARS) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_displays_field_message_and_quoted_value() {
        let p = Problem::new("sandbox.timeout", "not a duration").with_value("ten");
        assert_eq!(
            p.to_string(),
            "sandbox.timeout: not a duration (got \"ten\")"
        );
    }

    #[test]
    fn a_problem_without_value_or_field_omits_them() {
        assert_eq!(
            Problem::new("sandbox", "required").to_string(),
            "sandbox: required"
        );
        assert_eq!(Problem::new("", "invalid YAML").to_string(), "invalid YAML");
    }

    #[test]
    fn control_characters_and_quotes_in_values_are_escaped() {
        let p = Problem::new("f", "bad").with_value("a\nb\"c\\d\u{1b}[31m\té");
        assert_eq!(p.to_string(), r#"f: bad (got "a\nb\"c\\d\u{1b}[31m\té")"#);
        assert_eq!(p.to_string().lines().count(), 1);
    }

    #[test]
    fn long_values_are_truncated_to_eighty_characters() {
        let long = "é".repeat(200);
        let p = Problem::new("f", "bad").with_value(&long);
        let kept = p.value.unwrap();
        assert_eq!(kept.chars().count(), MAX_SHOWN_CHARS + 1);
        assert!(kept.ends_with('…'));
        let short = Problem::new("f", "bad").with_value(&"x".repeat(80));
        assert_eq!(short.value.unwrap(), "x".repeat(80));
    }
}

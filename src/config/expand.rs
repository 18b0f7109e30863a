//! `${VAR}` expansion of configuration strings from the environment.
//!
//! Rules, applied to every string *value* after YAML parsing (never to keys, and never to text
//! read from `password_file`), so a variable cannot inject YAML structure:
//! - `${NAME}` is replaced by the variable's value; `NAME` is `[A-Za-z_][A-Za-z0-9_]*`. Several
//!   references may appear anywhere in one string. A set-but-empty variable expands to `""`.
//! - `$${` is the escape: it produces a literal `${`. That is the only escape; every other `$`
//!   stays as written, so a password such as `pa$$word` or `co$t` needs no escaping.
//! - Expanded values are not expanded again.
//! - An unset variable, an invalid name and a `${` without `}` are errors; all of them in one
//!   string are reported.

use std::fmt;

/// Looks up an environment variable; `None` when unset.
pub(super) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// A string after expansion.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Expanded {
    pub text: String,
    /// Whether the string contained at least one `${NAME}`; such strings may stand for numbers
    /// and booleans (`concurrency: ${KRS_CONCURRENCY}`).
    pub had_reference: bool,
}

/// Why a string could not be expanded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum ExpandError {
    Unset(String),
    BadName(String),
    Unterminated,
}

/// Expands `${NAME}` references in `s`; see the module documentation for the rules.
pub(super) fn expand(s: &str, env: Env<'_>) -> Result<Expanded, Vec<ExpandError>> {
    let mut text = String::with_capacity(s.len());
    let mut errors = Vec::new();
    let mut had_reference = false;
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        text.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$${") {
            text.push_str("${");
            rest = after;
        } else if let Some(body) = tail.strip_prefix("${") {
            had_reference = true;
            let Some(end) = body.find('}') else {
                errors.push(ExpandError::Unterminated);
                rest = "";
                break;
            };
            let name = &body[..end];
            if !is_variable_name(name) {
                errors.push(ExpandError::BadName(name.to_owned()));
            } else if let Some(value) = env(name) {
                text.push_str(&value);
            } else {
                errors.push(ExpandError::Unset(name.to_owned()));
            }
            rest = &body[end + 1..];
        } else {
            text.push('$');
            rest = &tail[1..];
        }
    }
    text.push_str(rest);
    if errors.is_empty() {
        Ok(Expanded {
            text,
            had_reference,
        })
    } else {
        Err(errors)
    }
}

impl fmt::Display for ExpandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpandError::Unset(name) => write!(f, "environment variable `{name}` is not set"),
            ExpandError::BadName(name) => write!(
                f,
                "`${{{}}}` is not a variable reference: names are letters, digits and `_`; \
                 write `$${{` for a literal `${{`",
                super::problem::escape(name)
            ),
            ExpandError::Unterminated => {
                f.write_str("`${` has no closing `}`; write `$${` for a literal `${`")
            }
        }
    }
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("sandbox.example.com".into()),
            "PORT" => Some("8443".into()),
            "EMPTY" => Some(String::new()),
            "NESTED" => Some("${HOST}".into()),
            _ => None,
        }
    }

    fn ok(s: &str) -> String {
        expand(s, &env).unwrap().text
    }

    #[test]
    fn references_expand_anywhere_in_a_string_and_several_times() {
        assert_eq!(ok("${HOST}"), "sandbox.example.com");
        assert_eq!(
            ok("https://${HOST}:${PORT}/x"),
            "https://sandbox.example.com:8443/x"
        );
        assert_eq!(ok("a${EMPTY}b"), "ab");
        assert!(expand("${PORT}", &env).unwrap().had_reference);
    }

    #[test]
    fn a_string_without_references_is_unchanged() {
        let e = expand("plain text", &env).unwrap();
        assert_eq!(e.text, "plain text");
        assert!(!e.had_reference);
    }

    #[test]
    fn dollar_dollar_brace_is_a_literal_dollar_brace() {
        assert_eq!(ok("$${HOST}"), "${HOST}");
        assert_eq!(ok("$$${HOST}"), "$${HOST}");
        assert!(!expand("$${HOST}", &env).unwrap().had_reference);
    }

    #[test]
    fn other_dollars_are_kept_as_written() {
        assert_eq!(ok("pa$$word"), "pa$$word");
        assert_eq!(ok("co$t $HOST $"), "co$t $HOST $");
        assert_eq!(ok("€$€"), "€$€");
    }

    #[test]
    fn expanded_values_are_not_expanded_again() {
        assert_eq!(ok("${NESTED}"), "${HOST}");
    }

    #[test]
    fn every_unset_variable_in_a_string_is_reported() {
        let errs = expand("${A}-${HOST}-${B}", &env).unwrap_err();
        assert_eq!(
            errs,
            vec![
                ExpandError::Unset("A".into()),
                ExpandError::Unset("B".into())
            ]
        );
        assert_eq!(errs[0].to_string(), "environment variable `A` is not set");
    }

    #[test]
    fn bad_names_and_unterminated_references_are_errors() {
        assert_eq!(
            expand("${FOO-bar}", &env).unwrap_err(),
            vec![ExpandError::BadName("FOO-bar".into())]
        );
        assert_eq!(
            expand("${}", &env).unwrap_err(),
            vec![ExpandError::BadName(String::new())]
        );
        assert_eq!(
            expand("x${HOST", &env).unwrap_err(),
            vec![ExpandError::Unterminated]
        );
    }
}

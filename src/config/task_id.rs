//! Task ids: the sandbox's GUIDs, parsed leniently and kept in one canonical form.
//!
//! Operators paste ids from the sandbox UI, from logs and from Windows tools, so parsing accepts
//! any hex case, one pair of surrounding braces and surrounding whitespace. Everything else is
//! rejected with a reason. The canonical form (lowercase `8-4-4-4-12`) is what URLs and metric
//! labels carry, so two spellings of one id are one task.

use std::fmt;
use std::str::FromStr;

/// A sandbox task id in canonical form: lowercase hex, `8-4-4-4-12`, no braces.
///
/// Stored inline (36 ASCII bytes): ids are copied into the state, the scheduler's queue and
/// every poll, and a heap allocation per copy would cost more than the id itself.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId([u8; GUID_LEN]);

impl TaskId {
    /// Parses a GUID, returning a one-line reason when `s` is not one.
    pub fn parse(s: &str) -> Result<TaskId, String> {
        let trimmed = s.trim();
        if trimmed.is_empty() {
            return Err("the task id is empty".to_owned());
        }
        let inner = match (trimmed.strip_prefix('{'), trimmed.ends_with('}')) {
            (Some(rest), true) => &rest[..rest.len() - 1],
            (None, false) => trimmed,
            _ => return Err("unbalanced braces around the GUID".to_owned()),
        };
        let count = inner.chars().count();
        if count != GUID_LEN {
            return Err(format!(
                "a GUID has {GUID_LEN} characters (8-4-4-4-12 hex digits), this has {count}"
            ));
        }
        let mut canonical = [0u8; GUID_LEN];
        for (i, c) in inner.chars().enumerate() {
            if HYPHENS.contains(&i) {
                if c != '-' {
                    return Err(format!(
                        "expected '-' at position {}, found {c:?} (a GUID is 8-4-4-4-12 hex digits)",
                        i + 1
                    ));
                }
                canonical[i] = b'-';
            } else if c.is_ascii_hexdigit() {
                // An ASCII hex digit: one byte.
                canonical[i] = c.to_ascii_lowercase() as u8;
            } else {
                return Err(format!("{c:?} at position {} is not a hex digit", i + 1));
            }
        }
        Ok(TaskId(canonical))
    }

    /// The canonical form, as used in URLs and labels.
    pub fn as_str(&self) -> &str {
        // Only `parse` builds a TaskId, from ASCII hex digits and hyphens.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TaskId").field(&self.as_str()).finish()
    }
}

impl FromStr for TaskId {
    type Err = String;

    fn from_str(s: &str) -> Result<TaskId, String> {
        TaskId::parse(s)
    }
}

/// Length of the canonical form.
const GUID_LEN: usize = 36;

/// Zero-based positions of the hyphens in `8-4-4-4-12`.
const HYPHENS: [usize; 4] = [8, 13, 18, 23];

#[cfg(test)]
mod tests {
    use super::*;

    const CANONICAL: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";

    #[test]
    fn a_canonical_guid_parses_to_itself() {
        let id = TaskId::parse(CANONICAL).unwrap();
        assert_eq!(id.as_str(), CANONICAL);
        assert_eq!(id.to_string(), CANONICAL);
    }

    #[test]
    fn uppercase_braces_and_surrounding_whitespace_are_canonicalised() {
        for s in [
            "7C9E6679-7425-40DE-944B-E07FC1F90AE7",
            "{7c9e6679-7425-40de-944b-e07fc1f90ae7}",
            "  {7C9e6679-7425-40DE-944b-e07fc1f90ae7}\t",
        ] {
            assert_eq!(TaskId::parse(s).unwrap().as_str(), CANONICAL, "{s}");
        }
    }

    #[test]
    fn spellings_of_one_guid_are_equal_ids() {
        let a: TaskId = "{7C9E6679-7425-40DE-944B-E07FC1F90AE7}".parse().unwrap();
        let b: TaskId = CANONICAL.parse().unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn malformed_ids_are_rejected_with_a_reason() {
        let cases = [
            ("", "empty"),
            ("   ", "empty"),
            ("{7c9e6679-7425-40de-944b-e07fc1f90ae7", "unbalanced"),
            ("7c9e6679-7425-40de-944b-e07fc1f90ae7}", "unbalanced"),
            ("{{7c9e6679-7425-40de-944b-e07fc1f90ae7}}", "this has 38"),
            ("7c9e6679-7425-40de-944b-e07fc1f90ae", "this has 35"),
            (
                "7c9e667947425-40de-944b-e07fc1f90ae7",
                "expected '-' at position 9",
            ),
            ("7c9e6679-7425-40de-944b-e07fc1f90aeg", "'g' at position 36"),
            ("7c9e6679-7425-40de-944b-e07fc1f90aé7", "not a hex digit"),
            ("7c9e6679742540de944be07fc1f90ae7", "this has 32"),
            (
                "7c9e6679-7425-40de-944b e07fc1f90ae7",
                "expected '-' at position 24",
            ),
            ("{ 7c9e6679-7425-40de-944b-e07fc1f90ae7 }", "this has 38"),
        ];
        for (input, reason) in cases {
            let err = TaskId::parse(input).unwrap_err();
            assert!(err.contains(reason), "{input:?}: {err}");
        }
    }

    #[test]
    fn ids_order_by_their_canonical_form() {
        let a = TaskId::parse("0D5B4E44-4C0E-4F0B-9A57-3F2D1B9E6C71").unwrap();
        let b = TaskId::parse(CANONICAL).unwrap();
        assert!(a < b);
    }
}

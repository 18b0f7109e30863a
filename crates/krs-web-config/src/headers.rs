//! `http_server_config.headers`: the response headers an operator may add, checked against the
//! exporter-toolkit allow-list.
//!
//! Only security headers can be configured; anything that would change how a response is framed
//! or authenticated (`Content-Type`, `Authorization`, `Set-Cookie`, `Content-Length`, …) is
//! refused so that a web-config file cannot break scrapes. Names match case-insensitively and
//! are stored in their canonical spelling; a blank value means "not set" as in exporter-toolkit.

use std::collections::BTreeMap;

/// Header name (canonical spelling) and the values it may take; `None` means any value that is
/// a valid header value.
const ALLOWED: &[(&str, Option<&[&str]>)] = &[
    ("Content-Security-Policy", None),
    ("Strict-Transport-Security", None),
    ("X-Content-Type-Options", Some(&["nosniff"])),
    ("X-Frame-Options", Some(&["deny", "sameorigin"])),
    ("X-XSS-Protection", None),
];

/// Longest header value accepted; a security header is never legitimately longer.
const MAX_VALUE_LEN: usize = 4096;

/// A header that cannot be configured; `key` is the YAML key as written.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct HeaderProblem {
    pub key: String,
    pub problem: String,
}

/// Validates the configured headers, returning `(canonical name, value)` pairs sorted by name.
pub(super) fn validate(
    raw: &BTreeMap<String, Option<String>>,
) -> Result<Vec<(String, String)>, HeaderProblem> {
    let mut out: Vec<(String, String)> = Vec::with_capacity(raw.len());
    for (name, value) in raw {
        let problem = |problem: String| HeaderProblem {
            key: name.clone(),
            problem,
        };
        let Some((canonical, values)) = ALLOWED
            .iter()
            .find(|(allowed, _)| allowed.eq_ignore_ascii_case(name))
        else {
            return Err(problem(format!(
                "this header cannot be configured; allowed headers: {}",
                allowed_names()
            )));
        };
        if out.iter().any(|(n, _)| n == canonical) {
            return Err(problem(format!(
                "{canonical} is configured twice (header names are case-insensitive)"
            )));
        }
        let value = value.as_deref().map(str::trim).unwrap_or_default();
        if value.is_empty() {
            continue;
        }
        if let Some(values) = values {
            // exporter-toolkit compares exactly; so do we, to keep files portable.
            if !values.contains(&value) {
                return Err(problem(format!(
                    "expected one of {values:?}, found {value:?}"
                )));
            }
        }
        if value.len() > MAX_VALUE_LEN {
            return Err(problem(format!(
                "the value is {} bytes long; at most {MAX_VALUE_LEN} are accepted",
                value.len()
            )));
        }
        // Visible ASCII, space and tab only: no CR/LF (header injection), no other controls,
        // and nothing that hyper's `HeaderValue` would refuse later.
        if let Some(bad) = value.chars().find(|c| !matches!(c, ' ' | '\t' | '!'..='~')) {
            return Err(problem(format!(
                "the value contains the character {bad:?}, which is not allowed in a header \
                 value (printable ASCII only)"
            )));
        }
        out.push(((*canonical).to_owned(), value.to_owned()));
    }
    out.sort();
    Ok(out)
}

fn allowed_names() -> String {
    ALLOWED
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, Option<&str>)]) -> BTreeMap<String, Option<String>> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned)))
            .collect()
    }

    #[test]
    fn every_allowed_header_is_accepted_with_its_canonical_name() {
        let raw = headers(&[
            ("content-security-policy", Some("default-src 'none'")),
            ("Strict-Transport-Security", Some("max-age=31536000")),
            ("X-Content-Type-Options", Some("nosniff")),
            ("x-frame-options", Some("deny")),
            ("X-XSS-Protection", Some("1; mode=block")),
        ]);
        let out = validate(&raw).expect("all allowed");
        let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "Content-Security-Policy",
                "Strict-Transport-Security",
                "X-Content-Type-Options",
                "X-Frame-Options",
                "X-XSS-Protection"
            ]
        );
    }

    #[test]
    fn headers_outside_the_allow_list_are_refused_by_name() {
        for name in [
            "Authorization",
            "Content-Type",
            "Set-Cookie",
            "Content-Length",
            "Server",
        ] {
            let err = validate(&headers(&[(name, Some("x"))])).expect_err(name);
            assert_eq!(err.key, name);
            assert!(err.problem.contains("cannot be configured"), "{err:?}");
            assert!(err.problem.contains("Strict-Transport-Security"), "{err:?}");
        }
    }

    #[test]
    fn enumerated_headers_accept_only_their_documented_values() {
        let err = validate(&headers(&[("X-Frame-Options", Some("allow-from x"))])).unwrap_err();
        assert!(err.problem.contains("\"deny\", \"sameorigin\""), "{err:?}");
        let err = validate(&headers(&[("X-Content-Type-Options", Some("sniff"))])).unwrap_err();
        assert!(err.problem.contains("nosniff"), "{err:?}");
    }

    #[test]
    fn blank_values_mean_the_header_is_not_set() {
        let out = validate(&headers(&[
            ("X-Frame-Options", Some("")),
            ("X-XSS-Protection", None),
        ]))
        .expect("blank is allowed");
        assert!(out.is_empty());
    }

    #[test]
    fn line_breaks_and_control_characters_in_values_are_refused() {
        for value in ["a\r\nSet-Cookie: x=1", "a\u{0}b", "caf\u{e9}"] {
            let err =
                validate(&headers(&[("Content-Security-Policy", Some(value))])).expect_err(value);
            assert!(err.problem.contains("not allowed"), "{err:?}");
        }
    }

    #[test]
    fn the_same_header_in_two_spellings_is_refused() {
        let err = validate(&headers(&[
            ("X-XSS-Protection", Some("0")),
            ("x-xss-protection", Some("1")),
        ]))
        .unwrap_err();
        assert!(err.problem.contains("twice"), "{err:?}");
    }
}

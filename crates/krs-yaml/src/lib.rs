//! The YAML boundary of the krs-exporter workspace: the only code that names the YAML library.
//!
//! `serde_yaml` is archived upstream; every YAML reader of the workspace (the exporter's
//! configuration, the web configuration, the simulator's scenarios) goes through this crate, so
//! swapping it for a fork such as `serde_yaml_ng` touches this file alone.
//!
//! - [`parse`] turns text into our own [`Value`] tree, for a reader that walks the document itself
//!   to report every problem at once with its field path (the exporter's configuration). Merge
//!   keys (`<<: *defaults`) are applied here. The tree carries no source positions; only syntax
//!   errors do, as [`YamlError::line`] and [`YamlError::column`].
//! - [`from_str`] deserialises straight into a `serde` type, for readers that derive their raw
//!   types (`deny_unknown_fields` and friends); its [`DeError`] keeps the library's message and
//!   position.

use std::fmt;

/// A parsed YAML node. Mappings keep the file's order and may have non-string keys, which the
/// caller reports.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    /// Every YAML integer fits: the parser rejects those outside `i64`/`u64`.
    Int(i128),
    Float(f64),
    String(String),
    Seq(Vec<Value>),
    Map(Vec<(Value, Value)>),
    /// A node with a non-standard tag (`!Foo x`); standard ones (`!!str`) are resolved.
    Tagged(String, Box<Value>),
}

/// A document that is not valid YAML (or is several documents).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct YamlError {
    /// One-based line of the error, when the parser knows it.
    pub line: Option<usize>,
    /// One-based column of the error, when the parser knows it.
    pub column: Option<usize>,
    /// What went wrong, without the position.
    pub message: String,
}

/// Why [`from_str`] failed: the library's message, which names the position when it knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeError {
    message: String,
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}
impl std::error::Error for YamlError {}

/// Deserialises one YAML document into `T`.
pub fn from_str<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, DeError> {
    serde_yaml::from_str(text).map_err(|e| DeError {
        message: e.to_string(),
    })
}

/// Parses one YAML document. An empty document (or one of only comments) is [`Value::Null`].
pub fn parse(text: &str) -> Result<Value, YamlError> {
    let mut value: serde_yaml::Value = serde_yaml::from_str(text).map_err(from_library)?;
    value.apply_merge().map_err(from_library)?;
    Ok(convert(value))
}

impl Value {
    /// What kind of node this is, for "expected a string, got a list" messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "nothing (null)",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number with a fraction",
            Value::String(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
            Value::Tagged(..) => "a tagged value",
        }
    }

    /// A short rendering of a scalar for problem messages; `None` for collections.
    pub fn scalar_text(&self) -> Option<String> {
        match self {
            Value::Null => Some("null".to_owned()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::String(s) => Some(s.clone()),
            Value::Tagged(tag, _) => Some(tag.clone()),
            Value::Seq(_) | Value::Map(_) => None,
        }
    }
}

impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(column)) => write!(
                f,
                "invalid YAML at line {line}, column {column}: {}",
                self.message
            ),
            _ => write!(f, "invalid YAML: {}", self.message),
        }
    }
}

fn from_library(err: serde_yaml::Error) -> YamlError {
    let location = err.location();
    let mut message = err.to_string();
    if let Some(loc) = &location {
        // The library appends the position to its message; we report it separately.
        let suffix = format!(" at line {} column {}", loc.line(), loc.column());
        if let Some(at) = message.find(&suffix) {
            message.replace_range(at..at + suffix.len(), "");
        }
    }
    // An integer beyond 64 bits surfaces as a type error naming the parser's internals.
    if let Some(rest) = message
        .find("invalid type: integer `")
        .map(|at| &message[at + "invalid type: integer `".len()..])
    {
        if let Some(end) = rest.find('`') {
            message = format!("the number {} is too large", &rest[..end]);
        }
    }
    YamlError {
        line: location.as_ref().map(|l| l.line()),
        column: location.as_ref().map(|l| l.column()),
        message,
    }
}

fn convert(value: serde_yaml::Value) -> Value {
    match value {
        serde_yaml::Value::Null => Value::Null,
        serde_yaml::Value::Bool(b) => Value::Bool(b),
        serde_yaml::Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::Int(i128::from(u))
            } else if let Some(i) = n.as_i64() {
                Value::Int(i128::from(i))
            } else {
                // Neither integer form: the number has a fraction, an exponent or is inf/NaN.
                Value::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_yaml::Value::String(s) => Value::String(s),
        serde_yaml::Value::Sequence(items) => Value::Seq(items.into_iter().map(convert).collect()),
        serde_yaml::Value::Mapping(map) => Value::Map(
            map.into_iter()
                .map(|(k, v)| (convert(k), convert(v)))
                .collect(),
        ),
        serde_yaml::Value::Tagged(tagged) => {
            Value::Tagged(tagged.tag.to_string(), Box::new(convert(tagged.value)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[(&str, Value)]) -> Value {
        Value::Map(
            entries
                .iter()
                .map(|(k, v)| (Value::String((*k).to_owned()), v.clone()))
                .collect(),
        )
    }

    #[test]
    fn scalars_and_collections_convert_in_file_order() {
        let v = parse("b: 1\na: [x, -2, 1.5, true, ~]\n").unwrap();
        let expected = map(&[
            ("b", Value::Int(1)),
            (
                "a",
                Value::Seq(vec![
                    Value::String("x".into()),
                    Value::Int(-2),
                    Value::Float(1.5),
                    Value::Bool(true),
                    Value::Null,
                ]),
            ),
        ]);
        assert_eq!(v, expected);
    }

    #[test]
    fn the_largest_unsigned_integer_is_kept_exactly() {
        let v = parse("n: 18446744073709551615\n").unwrap();
        assert_eq!(v, map(&[("n", Value::Int(i128::from(u64::MAX)))]));
    }

    #[test]
    fn an_integer_beyond_64_bits_is_a_too_large_error_with_its_line() {
        let err = parse("a: 1\nn: 99999999999999999999999\n").unwrap_err();
        assert_eq!(err.line, Some(2));
        assert_eq!(
            err.message,
            "the number 99999999999999999999999 is too large"
        );
    }

    #[test]
    fn a_syntax_error_has_line_and_column_and_no_duplicated_position() {
        let err = parse("a:\n  b: 1\n c: 2\n").unwrap_err();
        assert_eq!(err.line, Some(3));
        assert_eq!(err.column, Some(2));
        assert!(
            !err.message.contains("at line 3 column 2"),
            "{}",
            err.message
        );
        assert!(err
            .to_string()
            .starts_with("invalid YAML at line 3, column 2: "));
    }

    #[test]
    fn duplicate_keys_are_a_yaml_error() {
        let err = parse("a: 1\na: 2\n").unwrap_err();
        assert!(err.message.contains("duplicate"), "{}", err.message);
    }

    #[test]
    fn several_documents_are_rejected() {
        let err = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert!(err.to_string().contains("more than one document"), "{err}");
    }

    #[test]
    fn an_empty_document_is_null() {
        assert_eq!(parse("").unwrap(), Value::Null);
        assert_eq!(parse("# nothing here\n").unwrap(), Value::Null);
    }

    #[test]
    fn merge_keys_are_applied() {
        let v = parse("base: &b {x: 1}\nuse:\n  <<: *b\n  y: 2\n").unwrap();
        let Value::Map(top) = v else {
            panic!("not a map")
        };
        assert_eq!(top[1].1, map(&[("y", Value::Int(2)), ("x", Value::Int(1))]));
    }

    #[test]
    fn custom_tags_are_kept_and_standard_ones_resolved() {
        let v = parse("a: !Foo x\nb: !!str 123\n").unwrap();
        assert_eq!(
            v,
            map(&[
                (
                    "a",
                    Value::Tagged("!Foo".into(), Box::new(Value::String("x".into())))
                ),
                ("b", Value::String("123".into())),
            ])
        );
    }
}

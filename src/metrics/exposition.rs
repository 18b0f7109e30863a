//! Writing Prometheus text format 0.0.4 by hand for the per-task families, whose label values
//! come from the sandbox. Every label value passes through [`escape_label_value`], so no input
//! can end a quoted value or start a new line.

use std::fmt::Write;

/// Appends a `# HELP` and `# TYPE` header.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Appends one sample line: `name{l1="v1",...} value`.
pub fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl Value) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (key, val)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(key);
            out.push_str("=\"");
            escape_label_value(out, val);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    value.write(out);
    out.push('\n');
}

/// Escapes per the text format: backslash, double quote and line feed. Other characters are
/// kept (they were cleaned when stored); a stray carriage return is escaped too, defensively.
pub fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

/// A sample value.
pub trait Value {
    fn write(self, out: &mut String);
}

impl Value for u64 {
    fn write(self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

impl Value for f64 {
    fn write(self, out: &mut String) {
        if self.is_nan() {
            out.push_str("NaN");
        } else if self.is_infinite() {
            out.push_str(if self > 0.0 { "+Inf" } else { "-Inf" });
        } else {
            let _ = write!(out, "{self}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_label_values_stay_inside_their_quotes() {
        let mut out = String::new();
        sample(&mut out, "m", &[("file_name", "a\"}\nm{x=\"1\\")], 1u64);
        assert_eq!(out, "m{file_name=\"a\\\"}\\nm{x=\\\"1\\\\\"} 1\n");
        assert_eq!(out.lines().count(), 1);
    }

    #[test]
    fn samples_without_labels_have_no_braces() {
        let mut out = String::new();
        sample(&mut out, "m", &[], 2.5f64);
        assert_eq!(out, "m 2.5\n");
    }
}

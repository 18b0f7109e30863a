//! Writing the exposition by hand for the per-task families, whose label values come from the
//! sandbox. Every label value passes through [`escape_label_value`], so no input can end a
//! quoted value or start a new line.
//!
//! Two formats share the writer ([`Format`]): Prometheus text 0.0.4 and OpenMetrics 1.0. The
//! per-task families are all gauges, whose sample lines are the same in both; only the headers
//! differ (OpenMetrics escapes `"` in `# HELP` and adds `# UNIT`) and OpenMetrics ends with
//! `# EOF`, which [`Chunks::finish`] writes.

use std::fmt::Write;

/// An exposition format the telemetry path serves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4: the default, for every client that does not ask for
    /// OpenMetrics.
    #[default]
    Text,
    /// OpenMetrics 1.0 (`application/openmetrics-text`), with exemplars.
    OpenMetrics,
}

impl Format {
    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Appends a text-format `# HELP` and `# TYPE` header.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Appends a family's header in `format`: for OpenMetrics the help escaped its way and a
/// `# UNIT` line when the name ends in a base unit. `name` is the family's name (for a counter,
/// without `_total`).
pub fn header_as(out: &mut String, format: Format, name: &str, kind: &str, help: &str) {
    match format {
        Format::Text => header(out, name, kind, help),
        Format::OpenMetrics => {
            let _ = write!(out, "# HELP {name} ");
            escape_openmetrics_help(out, help);
            let _ = writeln!(out, "\n# TYPE {name} {kind}");
            if let Some(unit) = unit_of(name) {
                let _ = writeln!(out, "# UNIT {name} {unit}");
            }
        }
    }
}

/// The OpenMetrics unit a family name ends in (`_seconds`, `_bytes`), if any.
pub fn unit_of(name: &str) -> Option<&'static str> {
    ["seconds", "bytes"].into_iter().find(|unit| {
        name.strip_suffix(unit)
            .is_some_and(|stem| stem.len() > 1 && stem.ends_with('_'))
    })
}

/// Escapes a help text per OpenMetrics: backslash, double quote and line feed.
pub fn escape_openmetrics_help(out: &mut String, help: &str) {
    escape_label_value(out, help);
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

/// Escapes per the text format: backslash, double quote and line feed, the only escapes it
/// defines (a parser rejects any other, so a `\r` escape would fail the whole scrape). Other
/// characters are kept: they were cleaned when stored, and the format allows them raw.
pub fn escape_label_value(out: &mut String, value: &str) {
    // The escaped characters are ASCII, so every index here is a char boundary; the runs
    // between them are copied whole instead of one char at a time.
    let mut start = 0;
    for (i, b) in value.bytes().enumerate() {
        let escaped = match b {
            b'\\' => "\\\\",
            b'"' => "\\\"",
            b'\n' => "\\n",
            _ => continue,
        };
        out.push_str(&value[start..i]);
        out.push_str(escaped);
        start = i + 1;
    }
    out.push_str(&value[start..]);
}

/// Exposition text handed on in chunks, so a scrape of any size holds about one chunk.
///
/// Renderers write into [`Chunks::text`] and call [`Chunks::boundary`] between series groups;
/// a chunk is emitted once it reaches the target size. When the consumer goes away (`emit`
/// returns `false`) [`Chunks::boundary`] says so and the renderer stops.
pub struct Chunks<'a> {
    buf: String,
    target: usize,
    emit: &'a mut dyn FnMut(String) -> bool,
    open: bool,
    format: Format,
}

impl<'a> Chunks<'a> {
    /// Chunks of text format 0.0.4.
    pub fn new(target: usize, emit: &'a mut dyn FnMut(String) -> bool) -> Self {
        Chunks::with_format(Format::Text, target, emit)
    }

    pub fn with_format(
        format: Format,
        target: usize,
        emit: &'a mut dyn FnMut(String) -> bool,
    ) -> Self {
        Chunks {
            buf: String::with_capacity(target + target / 4),
            target,
            emit,
            open: true,
            format,
        }
    }

    /// Where to write.
    pub fn text(&mut self) -> &mut String {
        &mut self.buf
    }

    /// The format being written.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Appends a family's header in the format being written ([`header_as`]).
    pub fn header(&mut self, name: &str, kind: &str, help: &str) {
        header_as(&mut self.buf, self.format, name, kind, help);
    }

    /// Emits the buffer if it is full; `false` once the consumer is gone.
    pub fn boundary(&mut self) -> bool {
        if self.buf.len() >= self.target {
            self.emit_buffer();
        }
        self.open
    }

    /// Emits what is left (in OpenMetrics ending with `# EOF`); `false` if the consumer went
    /// away at any point.
    pub fn finish(mut self) -> bool {
        if self.format == Format::OpenMetrics {
            self.buf.push_str("# EOF\n");
        }
        if !self.buf.is_empty() {
            self.emit_buffer();
        }
        self.open
    }

    fn emit_buffer(&mut self) {
        if self.open {
            let chunk = std::mem::replace(
                &mut self.buf,
                String::with_capacity(self.target + self.target / 4),
            );
            self.open = (self.emit)(chunk);
        } else {
            self.buf.clear();
        }
    }
}

/// A sample value.
pub trait Value {
    fn write(self, out: &mut String);
}

impl Value for u64 {
    fn write(self, out: &mut String) {
        write_u64(out, self);
    }
}

/// A point in time as Unix seconds with millisecond resolution (`1764135791.25`), written
/// exactly as `f64` `Display` writes `millis / 1000.0`, without float formatting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnixMillis(pub u64);

impl Value for UnixMillis {
    fn write(self, out: &mut String) {
        write_u64(out, self.0 / 1000);
        let frac = self.0 % 1000;
        if frac != 0 {
            let digits = [
                b'.',
                b'0' + (frac / 100) as u8,
                b'0' + (frac / 10 % 10) as u8,
                b'0' + (frac % 10) as u8,
            ];
            // Leading zeros of the fraction stay ("0.05"), trailing ones go ("0.5").
            let mut end = digits.len();
            while digits[end - 1] == b'0' {
                end -= 1;
            }
            out.push_str(std::str::from_utf8(&digits[..end]).unwrap_or_default());
        }
    }
}

/// Decimal digits of `n` without going through `fmt` (this runs once per sample).
fn write_u64(out: &mut String, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&buf[i..]).unwrap_or_default());
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
    fn integers_are_written_in_plain_decimal() {
        for n in [0u64, 7, 10, 1_000_000, u64::MAX] {
            let mut out = String::new();
            n.write(&mut out);
            assert_eq!(out, n.to_string());
        }
    }

    #[test]
    fn millisecond_timestamps_read_like_float_seconds() {
        for ms in [
            0u64,
            5,
            50,
            500,
            1_000,
            1_001,
            1_010,
            1_100,
            1_764_135_791_000,
            1_764_135_791_250,
            1_764_135_791_007,
            1_764_135_791_999,
        ] {
            let mut out = String::new();
            UnixMillis(ms).write(&mut out);
            assert_eq!(out, format!("{}", ms as f64 / 1000.0), "{ms} ms");
        }
    }

    #[test]
    fn escaping_copies_the_text_between_escapes_unchanged() {
        let mut out = String::new();
        escape_label_value(&mut out, "ä\\ö\"ü\n\u{202e}\r€");
        assert_eq!(out, "ä\\\\ö\\\"ü\\n\u{202e}\r€");
        let mut out = String::new();
        escape_label_value(&mut out, "\"\"");
        assert_eq!(out, "\\\"\\\"");
    }

    #[test]
    fn samples_without_labels_have_no_braces() {
        let mut out = String::new();
        sample(&mut out, "m", &[], 2.5f64);
        assert_eq!(out, "m 2.5\n");
    }
}

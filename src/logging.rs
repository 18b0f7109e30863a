//! Log output: `logfmt` (the default, as Prometheus' own exporters) or `json`, to stderr.
//!
//! Values can quote the sandbox (error messages, ids), so the logfmt writer quotes and escapes
//! every value that is not a plain token: a hostile string cannot end its field, start a new
//! line or inject terminal escapes. JSON output relies on serde_json's escaping.
//!
//! Only this crate logs at the chosen level; dependencies log at `warn` and above, which keeps
//! transport internals (and anything they might print) out of debug output.

use std::fmt::{self, Write as _};
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// `--log.level`
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// `--log.format`
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Logfmt,
    Json,
}

impl LogLevel {
    fn filter(self) -> LevelFilter {
        match self {
            LogLevel::Debug => LevelFilter::DEBUG,
            LogLevel::Info => LevelFilter::INFO,
            LogLevel::Warn => LevelFilter::WARN,
            LogLevel::Error => LevelFilter::ERROR,
        }
    }
}

/// Installs the global subscriber. Call once, from the binary.
pub fn init(level: LogLevel, format: LogFormat) {
    let filter = Targets::new()
        .with_target("krs_exporter", level.filter())
        .with_default(LevelFilter::WARN.min(level.filter()));
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Logfmt => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .event_format(Logfmt),
            )
            .init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .init(),
    }
}

/// The logfmt event formatter: `ts=… level=… target=… msg="…" key=value …`.
pub struct Logfmt;

impl<S, N> FormatEvent<S, N> for Logfmt
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut line = String::with_capacity(160);
        let _ = write!(
            line,
            "ts={} level={}",
            humantime::format_rfc3339_millis(SystemTime::now()),
            level_name(*meta.level())
        );
        line.push_str(" target=");
        push_value(&mut line, meta.target());
        let mut visitor = FieldWriter { line: &mut line };
        event.record(&mut visitor);
        line.push('\n');
        writer.write_str(&line)
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        Level::ERROR => "error",
    }
}

struct FieldWriter<'a> {
    line: &'a mut String,
}

impl Visit for FieldWriter<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, &format!("{value:?}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, &value.to_string());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, &value.to_string());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, if value { "true" } else { "false" });
    }
}

impl FieldWriter<'_> {
    fn field(&mut self, field: &Field, value: &str) {
        let key = match field.name() {
            "message" => "msg",
            name => name,
        };
        self.line.push(' ');
        self.line.push_str(key);
        self.line.push('=');
        push_value(self.line, value);
    }
}

/// Appends `value` bare if it is a plain token, otherwise quoted with every quote, backslash,
/// control and bidi-formatting character escaped.
pub fn push_value(out: &mut String, value: &str) {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '=' && c != '\\');
    if plain {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if crate::labels::is_unsafe(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quoted(v: &str) -> String {
        let mut s = String::new();
        push_value(&mut s, v);
        s
    }

    #[test]
    fn plain_tokens_are_written_bare() {
        assert_eq!(quoted("0d5b4e44-4c0e"), "0d5b4e44-4c0e");
    }

    #[test]
    fn a_hostile_value_cannot_forge_a_second_log_line_or_field() {
        let v = "x\" level=error msg=\"forged\nts=1 level=error \u{1b}[2J\u{202e}";
        let q = quoted(v);
        assert!(!q.contains('\n'));
        assert!(!q.contains('\u{1b}'));
        assert!(!q.contains('\u{202e}'));
        assert_eq!(q.matches('"').count() - q.matches("\\\"").count(), 2);
    }

    #[test]
    fn empty_values_and_spaces_are_quoted() {
        assert_eq!(quoted(""), "\"\"");
        assert_eq!(quoted("a b"), "\"a b\"");
    }
}

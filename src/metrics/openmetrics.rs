//! OpenMetrics 1.0 for the registry's families (`prometheus::proto::MetricFamily`), which the
//! `prometheus` crate only encodes as text 0.0.4, with exemplars.
//!
//! What differs from the text format:
//! - a counter's family is named without `_total` in `# HELP`/`# TYPE`; its sample keeps the
//!   suffix (a counter registered without one gains it, as client_golang does);
//! - `# UNIT` for families whose name ends in a base unit (`_seconds`, `_bytes`);
//! - `# HELP` escapes `"` too;
//! - a counter's sample may carry an exemplar: ` # {labels} value timestamp`, its labels at
//!   most [`Exemplar::MAX_CHARS`] characters, as the format allows.
//!
//! `le` and `quantile` are written as the text format writes them (`1`, not client_golang's
//! `1.0`; the format requires canonical spelling only of `+Inf`): Prometheus 2 keeps label
//! values as scraped, so a scrape that switches format keeps its bucket series.
//!
//! `_created` series are left out (the format makes them optional, and the crate does not
//! keep creation times). `# EOF` is the caller's: the per-task families follow these.

use std::time::SystemTime;

use prometheus::proto::{Metric, MetricFamily, MetricType};

use super::exposition::{escape_label_value, header_as, Format, UnixMillis, Value};
use crate::labels;

/// One exemplar: the labels of the event a counter last counted, and when.
#[derive(Clone, Debug, PartialEq)]
pub struct Exemplar {
    labels: Vec<(&'static str, String)>,
    at: UnixMillis,
}

impl Exemplar {
    /// The most characters an exemplar's label names and values may hold together.
    pub const MAX_CHARS: usize = 128;

    /// An exemplar of `labels` at `at`. Values are cleaned like every label value, and `"`,
    /// `\` and `}` become U+FFFD too: the format allows them escaped, but the reference parser
    /// (`prometheus_client.openmetrics.parser`) reads an exemplar by counting quotes, escaped or
    /// not, and ends its labels at the first `}`; it would reject the whole scrape. (The values
    /// are a task id and a hash, which hold none of them.) The last values are cut (or left
    /// out) so the whole set stays within [`Exemplar::MAX_CHARS`].
    pub fn new(labels: &[(&'static str, &str)], at: SystemTime) -> Exemplar {
        let mut room = Exemplar::MAX_CHARS;
        let mut kept = Vec::with_capacity(labels.len());
        for (name, value) in labels {
            let name_chars = name.chars().count();
            if name_chars >= room {
                break;
            }
            room -= name_chars;
            let value: String = labels::clean(value, room)
                .chars()
                .map(|c| match c {
                    '"' | '\\' | '}' => labels::REPLACEMENT,
                    c => c,
                })
                .collect();
            room -= value.chars().count();
            kept.push((*name, value));
        }
        let millis = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        Exemplar {
            labels: kept,
            at: UnixMillis(u64::try_from(millis).unwrap_or(u64::MAX)),
        }
    }

    /// The value of label `name`, if kept.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Appends ` # {labels} 1 timestamp`: each exemplar stands for one counted event.
    fn write(&self, out: &mut String) {
        out.push_str(" # {");
        for (i, (name, value)) in self.labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(name);
            out.push_str("=\"");
            escape_label_value(out, value);
            out.push('"');
        }
        out.push_str("} 1 ");
        self.at.write(out);
    }
}

/// Appends `families` in OpenMetrics; `exemplar` gives a counter sample's exemplar by the
/// sample's name and its metric.
pub fn encode<'e>(
    out: &mut String,
    families: &[MetricFamily],
    exemplar: &dyn Fn(&str, &Metric) -> Option<&'e Exemplar>,
) {
    for family in families {
        let name = family.name();
        let kind = family.get_field_type();
        let (family_name, kind_name) = match kind {
            MetricType::COUNTER => (name.strip_suffix("_total").unwrap_or(name), "counter"),
            MetricType::GAUGE => (name, "gauge"),
            MetricType::HISTOGRAM => (name, "histogram"),
            MetricType::SUMMARY => (name, "summary"),
            MetricType::UNTYPED => (name, "unknown"),
        };
        header_as(
            out,
            Format::OpenMetrics,
            family_name,
            kind_name,
            family.help(),
        );
        for metric in family.get_metric() {
            match kind {
                MetricType::COUNTER => {
                    let sample_name = format!("{family_name}_total");
                    sample(
                        out,
                        &sample_name,
                        metric,
                        None,
                        metric.get_counter().get_value(),
                    );
                    if let Some(e) = exemplar(&sample_name, metric) {
                        out.pop();
                        e.write(out);
                        out.push('\n');
                    }
                }
                MetricType::GAUGE => {
                    sample(out, name, metric, None, metric.get_gauge().get_value())
                }
                MetricType::HISTOGRAM => {
                    let h = metric.get_histogram();
                    let bucket = format!("{name}_bucket");
                    let mut inf_seen = false;
                    for b in h.get_bucket() {
                        let bound = b.upper_bound();
                        inf_seen |= bound == f64::INFINITY;
                        let le = float_label(bound);
                        let count = b.cumulative_count() as f64;
                        sample(out, &bucket, metric, Some(("le", &le)), count);
                    }
                    let count = h.get_sample_count() as f64;
                    if !inf_seen {
                        sample(out, &bucket, metric, Some(("le", "+Inf")), count);
                    }
                    sample(
                        out,
                        &format!("{name}_sum"),
                        metric,
                        None,
                        h.get_sample_sum(),
                    );
                    sample(out, &format!("{name}_count"), metric, None, count);
                }
                MetricType::SUMMARY => {
                    let s = metric.get_summary();
                    for q in s.get_quantile() {
                        let quantile = float_label(q.quantile());
                        let pair = Some(("quantile", quantile.as_str()));
                        sample(out, name, metric, pair, q.value());
                    }
                    sample(out, &format!("{name}_sum"), metric, None, s.sample_sum());
                    let count = s.sample_count() as f64;
                    sample(out, &format!("{name}_count"), metric, None, count);
                }
                // The registry holds no untyped metrics; their value is not readable without
                // a deprecated accessor, so the family is announced and left empty.
                MetricType::UNTYPED => {}
            }
        }
    }
}

/// One sample line: the metric's labels, then `extra` (`le`, `quantile`).
fn sample(out: &mut String, name: &str, metric: &Metric, extra: Option<(&str, &str)>, value: f64) {
    out.push_str(name);
    let labels = metric
        .get_label()
        .iter()
        .map(|l| (l.name(), l.value()))
        .chain(extra);
    let mut first = true;
    for (key, val) in labels {
        out.push(if first { '{' } else { ',' });
        first = false;
        out.push_str(key);
        out.push_str("=\"");
        escape_label_value(out, val);
        out.push('"');
    }
    if !first {
        out.push('}');
    }
    out.push(' ');
    value.write(out);
    let timestamp = metric.timestamp_ms();
    if timestamp > 0 {
        out.push(' ');
        UnixMillis(timestamp.unsigned_abs()).write(out);
    }
    out.push('\n');
}

/// A float label value (`le`, `quantile`) as the text format writes it: `1`, `0.005`, `+Inf`.
fn float_label(v: f64) -> String {
    let mut s = String::new();
    v.write(&mut s);
    s
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

    use super::*;

    fn registry() -> Registry {
        let r = Registry::new();
        let c = IntCounterVec::new(Opts::new("app_hits_total", "Hits \"seen\".\\"), &["zone"])
            .expect("valid");
        c.with_label_values(&["Red"]).inc_by(3);
        r.register(Box::new(c)).expect("unique");
        let g = IntGauge::new("app_size_bytes", "Size.").expect("valid");
        g.set(7);
        r.register(Box::new(g)).expect("unique");
        let h = Histogram::with_opts(
            HistogramOpts::new("app_duration_seconds", "Duration.").buckets(vec![0.5, 1.0]),
        )
        .expect("valid");
        h.observe(0.75);
        r.register(Box::new(h)).expect("unique");
        r
    }

    fn encoded(exemplar: Option<&Exemplar>) -> String {
        let mut out = String::new();
        encode(&mut out, &registry().gather(), &|name, _| {
            exemplar.filter(|_| name == "app_hits_total")
        });
        out
    }

    #[test]
    fn counters_gauges_and_histograms_are_written_as_openmetrics_families() {
        assert_eq!(
            encoded(None),
            "# HELP app_duration_seconds Duration.\n\
             # TYPE app_duration_seconds histogram\n\
             # UNIT app_duration_seconds seconds\n\
             app_duration_seconds_bucket{le=\"0.5\"} 0\n\
             app_duration_seconds_bucket{le=\"1\"} 1\n\
             app_duration_seconds_bucket{le=\"+Inf\"} 1\n\
             app_duration_seconds_sum 0.75\n\
             app_duration_seconds_count 1\n\
             # HELP app_hits Hits \\\"seen\\\".\\\\\n\
             # TYPE app_hits counter\n\
             app_hits_total{zone=\"Red\"} 3\n\
             # HELP app_size_bytes Size.\n\
             # TYPE app_size_bytes gauge\n\
             # UNIT app_size_bytes bytes\n\
             app_size_bytes 7\n"
        );
    }

    #[test]
    fn a_counter_sample_carries_its_exemplar_after_the_value() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_135_791_250);
        let e = Exemplar::new(&[("task_id", "t1"), ("sha256", "ab\"\n}")], at);
        let text = encoded(Some(&e));
        assert!(
            text.contains(
                "app_hits_total{zone=\"Red\"} 3 # {task_id=\"t1\",sha256=\"ab\u{FFFD}\u{FFFD}\u{FFFD}\"} 1 1764135791.25\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn exemplar_labels_are_cut_to_128_characters() {
        let long = "é".repeat(300);
        let e = Exemplar::new(&[("task_id", &long), ("sha256", "x")], SystemTime::now());
        let chars: usize = e
            .labels
            .iter()
            .map(|(n, v)| n.chars().count() + v.chars().count())
            .sum();
        assert_eq!(chars, Exemplar::MAX_CHARS);
        assert_eq!(e.label("sha256"), None, "no room left for it");
        let guid = "0d5b4e44-4c0e-4f0b-9a57-3f2d1b9e6c71";
        let sha = "a".repeat(64);
        let e = Exemplar::new(&[("task_id", guid), ("sha256", &sha)], SystemTime::now());
        assert_eq!(
            e.label("sha256"),
            Some(sha.as_str()),
            "a GUID and a hash fit"
        );
    }

    #[test]
    fn float_labels_are_spelled_as_in_the_text_format() {
        assert_eq!(float_label(1.0), "1");
        assert_eq!(float_label(0.005), "0.005");
        assert_eq!(float_label(f64::INFINITY), "+Inf");
    }
}

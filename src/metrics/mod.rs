//! The metrics contract (`spec/metrics.md`) and its rendering for `/metrics`.
//!
//! Two sources make one exposition:
//! - a `prometheus` crate [`Registry`] owned by [`Metrics`] for what the exporter counts itself
//!   (API traffic, polls, fleet counters, config state, build info, process metrics);
//! - the per-task families, written straight from [`State`] at scrape time by
//!   [`exposition`]: their series come and go with the watch list and their label values come
//!   from the sandbox, which suits a writer that escapes every value and keeps no registry
//!   entries to clean up.

pub mod appliance;
pub mod exposition;
pub mod web;

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::labels::OTHER;
use crate::sandbox::decode::{RepairKind, SkipReason};
use crate::sandbox::{Attempt, AttemptError, Downloads, FailureReason};
use crate::shard::Shard;
use crate::state::{NewActivity, Parts, Snapshot, State, TaskRow};
use crate::zone::DangerZone;
use exposition::{header, sample, Chunks, UnixMillis};

/// Distinct sandbox error codes kept as label values; the rest become [`OTHER`].
const MAX_ERROR_CODES: usize = 32;

/// Content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The exporter's own metrics: a registry and typed handles into it.
pub struct Metrics {
    registry: Registry,
    api_requests: IntCounterVec,
    api_errors: IntCounterVec,
    api_failures: IntCounterVec,
    api_retries: IntCounter,
    api_duration: Histogram,
    api_up: IntGauge,
    polls: IntCounter,
    poll_failures: IntCounter,
    poll_duration: Histogram,
    poll_panics: IntCounter,
    downloads: IntCounterVec,
    yara_hits: IntCounterVec,
    skipped_records: IntCounterVec,
    repaired_values: IntCounterVec,
    reload_ok: IntGauge,
    reload_ok_time: Gauge,
    /// `error_code` values seen so far: the body's code is sandbox data, so its cardinality is
    /// capped like any other.
    error_codes: Mutex<HashSet<String>>,
    /// The HTTP server's connection metrics ([`web`]).
    pub web: web::WebMetrics,
    /// The fleet-wide pause and retry budget ([`appliance`]).
    pub appliance: appliance::ApplianceMetrics,
}

impl Metrics {
    pub fn new(shard: Shard) -> Self {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)
                .expect("static metric definition is valid");
            registry
                .register(Box::new(c.clone()))
                .expect("metric names are unique");
            c
        };
        let api_requests = counter_vec(
            "krs_api_requests_total",
            "HTTP responses received from the sandbox, every attempt, by status code.",
            &["code"],
        );
        let api_errors = counter_vec(
            "krs_api_errors_total",
            "Sandbox responses with status >= 400, by status and the sandbox's error code.",
            &["code", "error_code"],
        );
        let api_failures = counter_vec(
            "krs_api_request_failures_total",
            "Attempts that got no usable response, by reason.",
            &["reason"],
        );
        let downloads = counter_vec(
            "krs_downloads_total",
            "Newly observed downloaded files (after each task's baseline poll), by danger zone.",
            &["danger_zone"],
        );
        let yara_hits = counter_vec(
            "krs_yara_hits_total",
            "Newly observed (file, YARA rule) matches, by rule.",
            &["rule"],
        );
        let skipped_records = counter_vec(
            "krs_api_skipped_records_total",
            "Records of decoded responses that were not exported, by reason (each distinct body counted once).",
            &["reason"],
        );
        let repaired_values = counter_vec(
            "krs_api_repaired_values_total",
            "Values of decoded responses mended to keep their record: bad UTF-8 or escapes, numbers no float holds.",
            &["reason"],
        );
        for reason in FailureReason::ALL {
            api_failures.with_label_values(&[reason.as_str()]);
        }
        for reason in SkipReason::ALL {
            skipped_records.with_label_values(&[reason.as_str()]);
        }
        for kind in RepairKind::ALL {
            repaired_values.with_label_values(&[kind.as_str()]);
        }
        for zone in DangerZone::DOCUMENTED {
            downloads.with_label_values(&[zone.as_str()]);
        }
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("static metric definition is valid");
            registry
                .register(Box::new(c.clone()))
                .expect("metric names are unique");
            c
        };
        let api_retries = counter("krs_api_retries_total", "Attempts beyond the first.");
        let polls = counter(
            "krs_polls_total",
            "Finished task polls (all attempts for one task in one cycle).",
        );
        let poll_failures = counter(
            "krs_poll_failures_total",
            "Polls that ended without a successful response.",
        );
        let poll_panics = counter(
            "krs_poll_panics_total",
            "Polls that panicked while processing a response (contained; the task is polled again).",
        );
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("static metric definition is valid");
            registry
                .register(Box::new(h.clone()))
                .expect("metric names are unique");
            h
        };
        let api_duration = histogram(
            "krs_api_request_duration_seconds",
            "Duration of one attempt, request to full body.",
            vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ],
        );
        let poll_duration = histogram(
            "krs_poll_duration_seconds",
            "Duration of one poll, retries and backoff included.",
            vec![
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
            ],
        );
        let int_gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("static metric definition is valid");
            registry
                .register(Box::new(g.clone()))
                .expect("metric names are unique");
            g
        };
        let api_up = int_gauge(
            "krs_api_up",
            "1 if the latest attempt got an HTTP response other than 401, 403 or 5xx.",
        );
        let reload_ok = int_gauge(
            "krs_config_last_reload_successful",
            "1 if the latest configuration load or reload succeeded.",
        );
        let reload_ok_time = Gauge::new(
            "krs_config_last_reload_success_timestamp_seconds",
            "Time of the latest successful configuration load.",
        )
        .expect("static metric definition is valid");
        registry
            .register(Box::new(reload_ok_time.clone()))
            .expect("metric names are unique");
        let build_info = IntGauge::with_opts(
            Opts::new(
                "krs_exporter_build_info",
                "Build information of the running exporter.",
            )
            .const_label("version", env!("CARGO_PKG_VERSION"))
            .const_label("revision", env!("KRS_BUILD_REVISION")),
        )
        .expect("static metric definition is valid");
        build_info.set(1);
        registry
            .register(Box::new(build_info))
            .expect("metric names are unique");
        int_gauge(
            "krs_shard_index",
            "This replica's shard (0 when the watch list is not sharded).",
        )
        .set(i64::from(shard.index()));
        int_gauge(
            "krs_shards",
            "Number of shards the watch list is split into (1 when not sharded).",
        )
        .set(i64::from(shard.total()));
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("process metric names are unique");
        let web = web::WebMetrics::register(&registry);
        let appliance = appliance::ApplianceMetrics::register(&registry);
        Metrics {
            registry,
            api_requests,
            api_errors,
            api_failures,
            api_retries,
            api_duration,
            api_up,
            polls,
            poll_failures,
            poll_duration,
            poll_panics,
            downloads,
            yara_hits,
            skipped_records,
            repaired_values,
            reload_ok,
            reload_ok_time,
            error_codes: Mutex::new(HashSet::new()),
            web,
            appliance,
        }
    }

    /// Counts one attempt: its status or failure reason, its duration, and API health.
    pub fn record_attempt(&self, attempt: &Attempt) {
        self.api_duration.observe(attempt.duration.as_secs_f64());
        if let Some(status) = attempt.status {
            let code = status.to_string();
            self.api_requests.with_label_values(&[&code]).inc();
            if status >= 400 {
                let error_code = attempt
                    .result
                    .as_ref()
                    .err()
                    .and_then(AttemptError::api_code)
                    .map(|c| self.error_code_label(c))
                    .unwrap_or_default();
                self.api_errors
                    .with_label_values(&[&code, &error_code])
                    .inc();
            }
            let healthy = !matches!(status, 401 | 403 | 500..=599);
            self.api_up.set(i64::from(healthy));
        }
        if let Ok(Downloads::Changed { decoded, .. }) = &attempt.result {
            let report = &decoded.report;
            for reason in SkipReason::ALL {
                let n = report.skipped[reason.index()];
                if n > 0 {
                    self.skipped_records
                        .with_label_values(&[reason.as_str()])
                        .inc_by(n);
                }
            }
            for kind in RepairKind::ALL {
                let n = report.repaired[kind.index()];
                if n > 0 {
                    self.repaired_values
                        .with_label_values(&[kind.as_str()])
                        .inc_by(n);
                }
            }
        }
        if let Err(AttemptError::Transport { reason, .. }) = &attempt.result {
            self.api_failures
                .with_label_values(&[reason.as_str()])
                .inc();
            if matches!(reason, FailureReason::Timeout | FailureReason::Connect) {
                self.api_up.set(0);
            }
        }
    }

    pub fn record_retry(&self) {
        self.api_retries.inc();
    }

    /// Marks the API down without an attempt (polling paused after a 401 or an outage).
    pub fn set_api_down(&self) {
        self.api_up.set(0);
    }

    pub fn record_poll(&self, duration: Duration, success: bool) {
        self.polls.inc();
        if !success {
            self.poll_failures.inc();
        }
        self.poll_duration.observe(duration.as_secs_f64());
    }

    pub fn record_panic(&self) {
        self.poll_panics.inc();
    }

    /// Polls that panicked so far.
    #[cfg(test)]
    pub fn poll_panics(&self) -> u64 {
        self.poll_panics.get()
    }

    /// Counts a poll's new files and rule hits. The hits go first: the registry is gathered in
    /// name order (`krs_downloads_total` before `krs_yara_hits_total`), so a scrape that sees a
    /// new download also sees the YARA hits that came with it.
    pub fn record_activity(&self, activity: &NewActivity) {
        for rule in &activity.known_rules {
            self.yara_hits.with_label_values(&[rule]);
        }
        for rule in &activity.yara_hits {
            self.yara_hits.with_label_values(&[rule]).inc();
        }
        for zone in &activity.downloads {
            self.downloads.with_label_values(&[zone.as_str()]).inc();
        }
    }

    /// Records the outcome of a configuration load or reload.
    pub fn record_reload(&self, success: bool) {
        self.reload_ok.set(i64::from(success));
        if success {
            self.reload_ok_time.set(unix_seconds(SystemTime::now()));
        }
    }

    /// The whole exposition: the registry's families, then the per-task families.
    pub fn render(&self, state: &State) -> String {
        let mut all = String::new();
        self.render_chunked(state, 1 << 20, &mut |chunk| {
            all.push_str(&chunk);
            true
        });
        all
    }

    /// The whole exposition handed to `emit` in chunks of about `chunk_bytes`, so a scrape
    /// holds one chunk rather than the whole body (113 MB at 100k tasks). Stops early and
    /// returns `false` when `emit` does (the client went away).
    pub fn render_chunked(
        &self,
        state: &State,
        chunk_bytes: usize,
        emit: &mut dyn FnMut(String) -> bool,
    ) -> bool {
        let mut out = Chunks::new(chunk_bytes, emit);
        let families = self.registry.gather();
        let mut buf = Vec::with_capacity(16 * 1024);
        // Encoding our own registry into a Vec cannot fail: every family is well-formed.
        if TextEncoder::new().encode(&families, &mut buf).is_ok() {
            out.text().push_str(&String::from_utf8_lossy(&buf));
        }
        render_tasks(&mut out, state);
        out.finish()
    }

    fn error_code_label(&self, code: &str) -> String {
        let valid = !code.is_empty()
            && code.len() <= 16
            && code
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return OTHER.to_string();
        }
        let mut seen = self.error_codes.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains(code) {
            code.to_string()
        } else if seen.len() < MAX_ERROR_CODES {
            seen.insert(code.to_string());
            code.to_string()
        } else {
            OTHER.to_string()
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(Shard::ALL)
    }
}

/// Writes the per-task families from one consistent copy of the state, taken in a few
/// milliseconds; the formatting runs without the state lock.
fn render_tasks(out: &mut Chunks<'_>, state: &State) {
    let view = state.read();
    let watch = view.watch_list();

    // From the same view as the task series, so a scrape during a reload is never torn.
    header(
        out.text(),
        "krs_watched_tasks",
        "gauge",
        "Tasks in the active watch list.",
    );
    sample(
        out.text(),
        "krs_watched_tasks",
        &[],
        watch.tasks.len() as u64,
    );

    header(
        out.text(),
        "krs_task_info",
        "gauge",
        "Watch-list metadata of a task (always 1), for joins.",
    );
    let mut labels: Vec<(&str, &str)> = Vec::with_capacity(2 + watch.label_keys.len());
    for (spec, _) in view.tasks() {
        labels.clear();
        labels.push(("task_id", spec.id.as_str()));
        labels.push(("name", &spec.name));
        for key in &watch.label_keys {
            let value = spec.labels.get(key).unwrap_or("");
            labels.push((key, value));
        }
        sample(out.text(), "krs_task_info", &labels, 1u64);
        if !out.boundary() {
            return;
        }
    }

    let polled: Vec<(&str, &TaskRow)> = view
        .tasks()
        .filter(|(_, t)| t.last_poll.is_some())
        .map(|(spec, t)| (spec.id.as_str(), t))
        .collect();
    let complete = poll_family(
        out,
        &polled,
        "krs_task_up",
        "1 if the latest poll of the task succeeded, else 0.",
        |t| Some(u64::from(t.up)),
    ) && poll_family(
        out,
        &polled,
        "krs_task_last_poll_timestamp_seconds",
        "End of the latest poll of the task (Unix seconds).",
        |t| t.last_poll.map(unix_millis),
    ) && poll_family(
        out,
        &polled,
        "krs_task_last_success_timestamp_seconds",
        "End of the latest successful poll of the task (Unix seconds).",
        |t| t.last_success.map(unix_millis),
    ) && poll_family(
        out,
        &polled,
        "krs_task_last_status_code",
        "HTTP status of the latest poll's final attempt; 0 when no response arrived.",
        |t| Some(u64::from(t.last_status.unwrap_or(0))),
    );
    if !complete {
        return;
    }

    // The families drawn from a snapshot change only when a poll brings a different body, so
    // each snapshot's lines are written once and copied by every later scrape.
    let parts: Vec<(&Parts, &Snapshot)> = view
        .tasks()
        .filter_map(|(spec, t)| {
            let snap = t.snapshot.as_deref()?;
            let parts = snap
                .rendered
                .get_or_init(|| snapshot_parts(spec.id.as_str(), snap));
            Some((parts, snap))
        })
        .collect();
    // Info series of the whole scrape are capped too: the first tasks of the watch list keep
    // theirs, the rest are counted in `krs_download_info_dropped_series`.
    let mut room = watch.limits.max_file_info_series_total;
    let mut dropped = 0u64;
    for (i, (name, help)) in SNAPSHOT_FAMILIES.iter().enumerate() {
        header(out.text(), name, "gauge", help);
        for (p, snap) in &parts {
            let text = p.get(i);
            if i == INFO_FAMILY {
                dropped += snap.files_dropped;
                let lines = snap.files.len();
                if lines > room {
                    dropped += (lines - room) as u64;
                    out.text().push_str(first_lines(text, room));
                    room = 0;
                } else {
                    room -= lines;
                    out.text().push_str(text);
                }
            } else {
                out.text().push_str(text);
            }
            if !out.boundary() {
                return;
            }
        }
    }
    header(
        out.text(),
        "krs_download_info_dropped_series",
        "gauge",
        "Files in the configured zones left without a krs_download_info series by the per-task or fleet cap.",
    );
    sample(out.text(), "krs_download_info_dropped_series", &[], dropped);
}

/// The first `n` lines of `text` (each ending in a newline).
fn first_lines(text: &str, n: usize) -> &str {
    if n == 0 {
        return "";
    }
    let end = text
        .match_indices('\n')
        .nth(n - 1)
        .map_or(text.len(), |(i, _)| i + 1);
    &text[..end]
}

/// One gauge family of the polled tasks, one sample per task for which `value` has one;
/// `false` once the client is gone.
fn poll_family<V: exposition::Value>(
    out: &mut Chunks<'_>,
    polled: &[(&str, &TaskRow)],
    name: &str,
    help: &str,
    value: impl Fn(&TaskRow) -> Option<V>,
) -> bool {
    header(out.text(), name, "gauge", help);
    for (id, t) in polled {
        if let Some(v) = value(t) {
            sample(out.text(), name, &[("task_id", id)], v);
            if !out.boundary() {
                return false;
            }
        }
    }
    true
}

/// Position of `krs_download_info` in [`SNAPSHOT_FAMILIES`].
const INFO_FAMILY: usize = 5;

/// The families rendered from a task's [`Snapshot`], in exposition order: (name, help).
const SNAPSHOT_FAMILIES: [(&str, &str); 8] = [
    (
        "krs_task_downloads",
        "Files the task downloaded, by danger zone, from the latest successful poll.",
    ),
    (
        "krs_task_download_bytes",
        "Sum of the sizes of the task's downloaded files.",
    ),
    (
        "krs_task_https_downloads",
        "Files the task downloaded over HTTPS.",
    ),
    (
        "krs_task_yara_matches",
        "Files of the task that triggered the YARA rule.",
    ),
    (
        "krs_task_detections",
        "Files of the task carrying the detection name.",
    ),
    (
        "krs_download_info",
        "One series per downloaded file in the configured zones (always 1).",
    ),
    (
        "krs_task_skipped_records",
        "Records of the task's latest decoded response that were not exported.",
    ),
    (
        "krs_task_download_info_dropped",
        "Files of the task in the configured zones without a krs_download_info series (per-task cap).",
    ),
];

/// One task's lines of each of [`SNAPSHOT_FAMILIES`], in that order.
fn snapshot_parts(id: &str, snap: &Snapshot) -> Parts {
    let mut out = String::with_capacity(1024);
    let mut ends = Vec::with_capacity(SNAPSHOT_FAMILIES.len());
    let mut end = |out: &String| ends.push(u32::try_from(out.len()).unwrap_or(u32::MAX));
    let [downloads, bytes, https, yara, detections, info, skipped, info_dropped] =
        SNAPSHOT_FAMILIES.map(|(name, _)| name);
    for zone in DangerZone::ALL {
        let n = snap.zones[zone.index()];
        if n > 0 || zone != DangerZone::Unknown {
            sample(
                &mut out,
                downloads,
                &[("task_id", id), ("danger_zone", zone.as_str())],
                n,
            );
        }
    }
    end(&out);
    sample(&mut out, bytes, &[("task_id", id)], snap.bytes);
    end(&out);
    sample(&mut out, https, &[("task_id", id)], snap.https);
    end(&out);
    for (rule, n) in &snap.yara {
        sample(&mut out, yara, &[("task_id", id), ("rule", rule)], *n);
    }
    end(&out);
    for (detection, n) in &snap.detections {
        sample(
            &mut out,
            detections,
            &[("task_id", id), ("detection", detection)],
            *n,
        );
    }
    end(&out);
    for file in &snap.files {
        sample(
            &mut out,
            info,
            &[
                ("task_id", id),
                ("danger_zone", file.zone.as_str()),
                ("sha256", &file.sha256),
                ("file_name", &file.name),
                ("file_type", &file.file_type),
            ],
            1u64,
        );
    }
    end(&out);
    sample(&mut out, skipped, &[("task_id", id)], snap.skipped_records);
    end(&out);
    sample(
        &mut out,
        info_dropped,
        &[("task_id", id)],
        snap.files_dropped,
    );
    end(&out);
    Parts::new(out, ends)
}

/// A timestamp for the exposition: Unix seconds with millisecond resolution.
fn unix_millis(t: SystemTime) -> UnixMillis {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    UnixMillis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Seconds since the Unix epoch, with millisecond resolution.
pub fn unix_seconds(t: SystemTime) -> f64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    (d.as_millis() as f64) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{TaskId, TaskLabels, TaskSpec};
    use crate::sandbox::Download;
    use crate::state::{Limits, PollReport, WatchList};
    use proptest::prelude::*;

    const TASK: &str = "0d5b4e44-4c0e-4f0b-9a57-3f2d1b9e6c71";

    /// Strings as malware would choose them: quotes, escapes, control and bidi characters,
    /// markup, and long runs.
    fn hostile() -> impl Strategy<Value = String> {
        const PIECES: &[&str] = &[
            "\"",
            "\\",
            "\n",
            "\r",
            "\u{0}",
            "\u{1b}[2J",
            "\u{202e}",
            "}",
            "# HELP x\n",
            "<script>",
            "é",
            "Trojan.Win32",
            "a",
            "\u{85}",
            "\u{2028}",
            "=",
            ",",
        ];
        let piece = prop_oneof![
            3 => prop::sample::select(PIECES).prop_map(String::from),
            1 => any::<char>().prop_map(String::from),
        ];
        prop::collection::vec(piece, 0..40).prop_map(|p| p.concat())
    }

    fn download() -> impl Strategy<Value = Download> {
        (
            prop::sample::select(DangerZone::ALL.to_vec()),
            hostile(),
            hostile(),
            hostile(),
            prop::collection::vec(hostile(), 0..4),
            prop::collection::vec(hostile(), 0..4),
            any::<u64>(),
            any::<bool>(),
        )
            .prop_map(
                |(zone, name, sha256, file_type, detection_names, yara_rules, size, is_https)| {
                    Download {
                        zone,
                        name,
                        sha256,
                        file_type,
                        detection_names,
                        yara_rules,
                        size,
                        is_https,
                        ..Download::default()
                    }
                },
            )
    }

    /// A strict check of one exposition line (text format 0.0.4).
    fn valid_line(line: &str) -> Result<(), String> {
        if let Some(rest) = line.strip_prefix("# ") {
            return if rest.starts_with("HELP ") || rest.starts_with("TYPE ") {
                Ok(())
            } else {
                Err("unknown comment".into())
            };
        }
        let name_end = line.find(['{', ' ']).ok_or("no value")?;
        let name = &line[..name_end];
        let mut chars = name.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
        if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            return Err(format!("bad metric name {name:?}"));
        }
        let mut rest = &line[name_end..];
        if let Some(labels) = rest.strip_prefix('{') {
            let mut it = labels.char_indices();
            loop {
                let key_start = it.clone().next().map(|(i, _)| i).ok_or("eof")?;
                let eq = loop {
                    match it.next() {
                        Some((i, '=')) => break i,
                        Some((_, c)) if c.is_ascii_alphanumeric() || c == '_' => {}
                        other => return Err(format!("bad label name char {other:?}")),
                    }
                };
                if eq == key_start {
                    return Err("empty label name".into());
                }
                if it.next().map(|(_, c)| c) != Some('"') {
                    return Err("unquoted value".into());
                }
                loop {
                    match it.next().map(|(_, c)| c) {
                        Some('\\') => match it.next().map(|(_, c)| c) {
                            Some('\\' | '"' | 'n') => {}
                            other => return Err(format!("bad escape {other:?}")),
                        },
                        Some('"') => break,
                        Some(_) => {}
                        None => return Err("unterminated value".into()),
                    }
                }
                match it.next() {
                    Some((_, ',')) => {}
                    Some((i, '}')) => {
                        rest = &labels[i + 1..];
                        break;
                    }
                    other => return Err(format!("unexpected {other:?}")),
                }
            }
        }
        let value = rest.strip_prefix(' ').ok_or("no space before value")?;
        match value {
            "+Inf" | "-Inf" | "NaN" => Ok(()),
            v => v
                .parse::<f64>()
                .map(|_| ())
                .map_err(|e| format!("value {v:?}: {e}")),
        }
    }

    proptest! {
        // Whatever the sandbox sends, the exposition stays well-formed: 10,000 cases in CI.
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        #[test]
        fn any_decoded_downloads_render_to_valid_exposition_text(
            baseline in prop::collection::vec(download(), 0..4),
            later in prop::collection::vec(download(), 0..4),
        ) {
            let mut file_info_zones = [true; 6];
            file_info_zones[DangerZone::Green.index()] = false;
            let state = State::new(WatchList {
                tasks: vec![TaskSpec {
                    id: TaskId::parse(TASK).expect("valid id"),
                    name: "n\"ame\n".into(),
                    labels: TaskLabels::from([("team".to_string(), "s\\oc".to_string())]),
                }].into(),
                label_keys: vec!["team".into()],
                limits: Limits { max_label_length: 64, max_label_values: 3, file_info_zones, ..Limits::default() },
            });
            for files in [baseline, later] {
                state.apply(PollReport {
                    task: TaskId::parse(TASK).expect("valid id"),
                    finished: SystemTime::now(),
                    status: Some(200),
                    result: Ok(files.into()),
                });
            }
            // The per-task families carry the sandbox's strings; the registry part (with the
            // fleet counters' rule labels) is checked by the test below, once, since gathering
            // the process metrics on every case would dominate the run.
            let text = tasks_text(&state);
            for line in text.lines() {
                prop_assert!(valid_line(line).is_ok(), "{:?}: {:?}", line, valid_line(line));
            }
            prop_assert_eq!(text.lines().filter(|l| l.starts_with("krs_task_up{")).count(), 1);
            prop_assert!(text.ends_with('\n'));
        }
    }

    /// The per-task families alone, in small chunks so that chunk boundaries are exercised.
    fn tasks_text(state: &State) -> String {
        let mut all = String::new();
        let mut emit = |chunk: String| {
            all.push_str(&chunk);
            true
        };
        let mut out = Chunks::new(64, &mut emit);
        render_tasks(&mut out, state);
        assert!(out.finish());
        all
    }

    #[test]
    fn a_chunked_render_is_the_whole_exposition_and_stops_when_the_client_leaves() {
        let tasks: Vec<TaskSpec> = (0..200u32)
            .map(|i| TaskSpec {
                id: TaskId::parse(&format!("{i:08x}-0000-4000-8000-000000000000")).unwrap(),
                name: format!("task {i}"),
                labels: TaskLabels::default(),
            })
            .collect();
        let state = State::new(WatchList {
            tasks: tasks.clone().into(),
            label_keys: Vec::new(),
            limits: Limits {
                max_label_length: 64,
                max_label_values: 100,
                file_info_zones: [true; 6],
                ..Limits::default()
            },
        });
        for spec in &tasks {
            state.apply(PollReport {
                task: spec.id.clone(),
                finished: SystemTime::now(),
                status: Some(200),
                result: Ok(vec![Download {
                    zone: DangerZone::Red,
                    sha256: "aa".into(),
                    ..Download::default()
                }]
                .into()),
            });
        }
        let metrics = Metrics::new(Shard::ALL);
        let mut chunks = Vec::new();
        assert!(metrics.render_chunked(&state, 4096, &mut |c| {
            chunks.push(c);
            true
        }));
        assert!(chunks.len() > 10, "{} chunks", chunks.len());
        assert!(
            chunks.iter().all(|c| c.ends_with('\n')),
            "chunks end on a line"
        );
        let whole = chunks.concat();
        assert!(whole.contains("# TYPE krs_polls_total counter\n"));
        assert_eq!(
            whole
                .lines()
                .filter(|l| l.starts_with("krs_download_info{"))
                .count(),
            200
        );
        assert_eq!(
            tasks_text(&state),
            whole[whole.find("# HELP krs_watched_tasks").unwrap()..]
        );

        let mut calls = 0;
        assert!(!metrics.render_chunked(&state, 4096, &mut |_| {
            calls += 1;
            calls < 3
        }));
        assert_eq!(calls, 3, "rendering stops once the consumer is gone");
    }

    #[test]
    fn a_repeated_scrape_reuses_snapshot_lines_until_a_poll_brings_new_files() {
        const OTHER_TASK: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
        let spec = |id: &str| TaskSpec {
            id: TaskId::parse(id).expect("valid id"),
            name: String::new(),
            labels: TaskLabels::default(),
        };
        let state = State::new(WatchList {
            tasks: vec![spec(TASK), spec(OTHER_TASK)].into(),
            label_keys: Vec::new(),
            limits: Limits {
                max_label_length: 64,
                max_label_values: 100,
                file_info_zones: [true; 6],
                ..Limits::default()
            },
        });
        let red = |sha: &str| Download {
            zone: DangerZone::Red,
            sha256: sha.into(),
            yara_rules: vec![format!("rule_{sha}")],
            ..Download::default()
        };
        let poll = |id: &str, files: Vec<Download>| {
            state.apply(PollReport {
                task: TaskId::parse(id).expect("valid id"),
                finished: UNIX_EPOCH + Duration::from_millis(1_764_135_791_250),
                status: Some(200),
                result: Ok(files.into()),
            });
        };
        poll(TASK, vec![red("aa")]);
        poll(OTHER_TASK, vec![red("bb")]);
        let render = || tasks_text(&state);
        let first = render();
        assert!(state.read().tasks().all(|(_, t)| t
            .snapshot
            .as_ref()
            .unwrap()
            .rendered
            .get()
            .is_some()));
        assert_eq!(render(), first);

        // Each family is one block: header, then the samples of both tasks.
        let names: Vec<&str> = first
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| &l[..l.find(['{', ' ']).unwrap()])
            .collect();
        let mut blocks = names.clone();
        blocks.dedup();
        let mut distinct = blocks.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(
            blocks.len(),
            distinct.len(),
            "a family is split: {blocks:?}"
        );
        assert!(first.contains(
            "krs_task_last_poll_timestamp_seconds{task_id=\"0d5b4e44-4c0e-4f0b-9a57-3f2d1b9e6c71\"} 1764135791.25\n"
        ));

        poll(TASK, vec![red("aa"), red("cc")]);
        let second = render();
        let red_line =
            |id: &str| format!("krs_task_downloads{{task_id=\"{id}\",danger_zone=\"Red\"}}");
        assert!(second.contains(&format!("{} 2\n", red_line(TASK))));
        assert!(!second.contains(&format!("{} 1\n", red_line(TASK))));
        assert!(second.contains(&format!("{} 1\n", red_line(OTHER_TASK))));
        assert!(second.contains("rule=\"rule_cc\""));
    }

    #[test]
    fn hostile_rule_names_in_the_fleet_counters_render_valid_exposition_text() {
        let task = TaskSpec {
            id: TaskId::parse(TASK).expect("valid id"),
            name: String::new(),
            labels: TaskLabels::default(),
        };
        let state = State::new(WatchList {
            tasks: vec![task].into(),
            label_keys: Vec::new(),
            limits: Limits {
                max_label_length: 64,
                max_label_values: 100,
                file_info_zones: [true; 6],
                ..Limits::default()
            },
        });
        let metrics = Metrics::new(Shard::ALL);
        let hostile = ["r\"}\nforged 1", "\\", "\u{202e}x", "é\r", "# HELP x"];
        for (i, files) in [
            Vec::new(),
            vec![Download {
                zone: DangerZone::Red,
                sha256: "aa".into(),
                yara_rules: hostile.iter().map(|s| s.to_string()).collect(),
                ..Download::default()
            }],
        ]
        .into_iter()
        .enumerate()
        {
            let applied = state.apply(PollReport {
                task: TaskId::parse(TASK).expect("valid id"),
                finished: SystemTime::now(),
                status: Some(200),
                result: Ok(files.into()),
            });
            assert_eq!(
                applied.activity.yara_hits.len(),
                if i == 0 { 0 } else { hostile.len() }
            );
            metrics.record_activity(&applied.activity);
        }
        let text = metrics.render(&state);
        for line in text.lines() {
            assert!(valid_line(line).is_ok(), "{line:?}: {:?}", valid_line(line));
        }
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("krs_yara_hits_total{"))
                .count(),
            5
        );
        assert!(!text.lines().any(|l| l.starts_with("forged")));
    }

    #[test]
    fn info_series_past_the_fleet_cap_are_left_out_and_counted() {
        const OTHER_TASK: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
        let spec = |id: &str| TaskSpec {
            id: TaskId::parse(id).expect("valid id"),
            name: String::new(),
            labels: TaskLabels::default(),
        };
        let state = State::new(WatchList {
            tasks: vec![spec(TASK), spec(OTHER_TASK)].into(),
            label_keys: Vec::new(),
            limits: Limits {
                max_file_info_series: 2,
                max_file_info_series_total: 3,
                ..Limits::default()
            },
        });
        let red = |sha: &str| Download {
            zone: DangerZone::Red,
            sha256: sha.into(),
            ..Download::default()
        };
        for id in [TASK, OTHER_TASK] {
            state.apply(PollReport {
                task: TaskId::parse(id).expect("valid id"),
                finished: UNIX_EPOCH + Duration::from_millis(1_764_135_791_250),
                status: Some(200),
                result: Ok(vec![red("aa"), red("bb"), red("cc")].into()),
            });
        }
        let text = tasks_text(&state);
        let info = text
            .lines()
            .filter(|l| l.starts_with("krs_download_info{"))
            .count();
        assert_eq!(info, 3);
        // One file per task over the per-task cap of 2, one more over the fleet cap of 3.
        assert!(
            text.contains("\nkrs_download_info_dropped_series 3\n"),
            "{text}"
        );
        assert!(text.contains(&format!(
            "krs_task_download_info_dropped{{task_id=\"{TASK}\"}} 1\n"
        )));
        assert!(text.contains(&format!(
            "krs_task_downloads{{task_id=\"{TASK}\",danger_zone=\"Red\"}} 3\n"
        )));
    }
}

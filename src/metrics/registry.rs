//! The exporter's own metrics: a `prometheus` registry owned by [`Metrics`] and typed handles
//! into it, with the methods the scheduler, the state's consumers and reloads record through.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry,
};

use super::family::{register, unix_seconds};
use super::openmetrics::Exemplar;
use super::{appliance, discovery, sandbox, storage, tasks, web};
use crate::labels::OTHER;
use crate::sandbox::decode::{RepairKind, SkipReason};
use crate::sandbox::{Attempt, AttemptError, Decoded, Endpoint, FailureReason};
use crate::shard::Shard;
use crate::state::NewActivity;
use crate::zone::DangerZone;

/// The fleet counters that carry exemplars.
const DOWNLOADS: &str = "krs_downloads_total";
const YARA_HITS: &str = "krs_yara_hits_total";

/// Distinct sandbox error codes kept as label values; the rest become [`OTHER`].
const MAX_ERROR_CODES: usize = 32;

/// The latest exemplar of each fleet counter series: sample name → the series' one label value
/// (zone or rule) → exemplar.
pub(super) type Exemplars = HashMap<&'static str, HashMap<String, Exemplar>>;

/// The latest configuration load or reload, as the console shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct ReloadStatus {
    pub ok: bool,
    pub at: SystemTime,
    /// Why a failed reload kept the previous configuration.
    pub problems: Option<String>,
}

/// The exporter's own metrics: a registry and typed handles into it.
pub struct Metrics {
    registry: Registry,
    api_requests: IntCounterVec,
    api_errors: IntCounterVec,
    api_failures: IntCounterVec,
    api_retries: IntCounterVec,
    api_duration: HistogramVec,
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
    /// The latest load or reload, for the console.
    last_reload: Mutex<Option<ReloadStatus>>,
    /// `error_code` values seen so far: the body's code is sandbox data, so its cardinality is
    /// capped like any other.
    error_codes: Mutex<HashSet<String>>,
    /// The file each `krs_downloads_total` and `krs_yara_hits_total` series last counted, for
    /// OpenMetrics scrapes: a spike leads to a file without making hashes series labels. As
    /// many entries as those series, whose rules are capped fleet-wide.
    exemplars: Mutex<Exemplars>,
    /// The HTTP server's connection metrics ([`web`]).
    pub web: web::WebMetrics,
    /// The fleet-wide pause and retry budget ([`appliance`]).
    pub appliance: appliance::ApplianceMetrics,
    /// The task list's reads ([`discovery`]).
    pub discovery: discovery::DiscoveryMetrics,
    /// The appliance's own health and version ([`sandbox`]).
    pub sandbox: sandbox::SandboxMetrics,
    /// The store of observed state ([`storage`]).
    pub storage: storage::StorageMetrics,
    /// The per-task families' renderer and its cache ([`tasks`]).
    pub(super) tasks: tasks::TaskFamilies,
}

impl Metrics {
    pub fn new(shard: Shard) -> Self {
        let registry = Registry::new();
        let r = &registry;
        let counters = |name: &str, help: &str, labels: &[&str]| {
            register(r, IntCounterVec::new(Opts::new(name, help), labels))
        };
        let counter = |name: &str, help: &str| register(r, IntCounter::new(name, help));
        let int_gauge = |name: &str, help: &str| register(r, IntGauge::new(name, help));
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            register(
                r,
                Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)),
            )
        };
        let api_requests = counters(
            "krs_api_requests_total",
            "HTTP responses received from the sandbox, every attempt, by endpoint and status code.",
            &["endpoint", "code"],
        );
        let api_errors = counters(
            "krs_api_errors_total",
            "Sandbox responses with status >= 400, by endpoint, status and the sandbox's error code.",
            &["endpoint", "code", "error_code"],
        );
        let api_failures = counters(
            "krs_api_request_failures_total",
            "Attempts that got no usable response, by endpoint and reason.",
            &["endpoint", "reason"],
        );
        let downloads = counters(
            DOWNLOADS,
            "Newly observed downloaded files (after each task's baseline poll), by danger zone.",
            &["danger_zone"],
        );
        let yara_hits = counters(
            YARA_HITS,
            "Newly observed (file, YARA rule) matches, by rule.",
            &["rule"],
        );
        let skipped_records = counters(
            "krs_api_skipped_records_total",
            "Records of decoded responses that were not exported, by endpoint and reason (each distinct body counted once).",
            &["endpoint", "reason"],
        );
        let repaired_values = counters(
            "krs_api_repaired_values_total",
            "Values of decoded responses mended to keep their record (bad UTF-8 or escapes, numbers no float holds), by endpoint.",
            &["endpoint", "reason"],
        );
        for endpoint in Endpoint::ALL.map(Endpoint::as_str) {
            for reason in FailureReason::ALL {
                api_failures.with_label_values(&[endpoint, reason.as_str()]);
            }
        }
        // Only downloads and the task list hold records.
        for endpoint in [Endpoint::Downloads, Endpoint::Tasks].map(Endpoint::as_str) {
            for reason in SkipReason::ALL {
                skipped_records.with_label_values(&[endpoint, reason.as_str()]);
            }
            for kind in RepairKind::ALL {
                repaired_values.with_label_values(&[endpoint, kind.as_str()]);
            }
        }
        for zone in DangerZone::DOCUMENTED {
            downloads.with_label_values(&[zone.as_str()]);
        }
        let api_retries = counters(
            "krs_api_retries_total",
            "Attempts beyond the first, by endpoint.",
            &["endpoint"],
        );
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
        let api_duration = register(
            r,
            HistogramVec::new(
                HistogramOpts::new(
                    "krs_api_request_duration_seconds",
                    "Duration of one attempt, request to full body, by endpoint.",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ]),
                &["endpoint"],
            ),
        );
        let poll_duration = histogram(
            "krs_poll_duration_seconds",
            "Duration of one poll, retries and backoff included.",
            vec![
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
            ],
        );
        let api_up = int_gauge(
            "krs_api_up",
            "1 if the latest attempt got an HTTP response other than 401, 403 or 5xx.",
        );
        let reload_ok = int_gauge(
            "krs_config_last_reload_successful",
            "1 if the latest configuration load or reload succeeded.",
        );
        let reload_ok_time = register(
            r,
            Gauge::new(
                "krs_config_last_reload_success_timestamp_seconds",
                "Time of the latest successful configuration load.",
            ),
        );
        register(
            r,
            IntGauge::with_opts(
                Opts::new(
                    "krs_exporter_build_info",
                    "Build information of the running exporter.",
                )
                .const_label("version", env!("CARGO_PKG_VERSION"))
                .const_label("revision", env!("KRS_BUILD_REVISION")),
            ),
        )
        .set(1);
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
        let discovery = discovery::DiscoveryMetrics::register(&registry);
        let sandbox = sandbox::SandboxMetrics::register(&registry);
        let storage = storage::StorageMetrics::register(&registry);
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
            last_reload: Mutex::new(None),
            error_codes: Mutex::new(HashSet::new()),
            exemplars: Mutex::new(HashMap::new()),
            web,
            appliance,
            discovery,
            sandbox,
            storage,
            tasks: tasks::TaskFamilies::default(),
        }
    }

    /// Counts one attempt: its status or failure reason, its duration, what decoding skipped or
    /// mended, and API health.
    pub fn record_attempt<T: Decoded>(&self, attempt: &Attempt<T>) {
        let endpoint = attempt.endpoint.as_str();
        self.api_duration
            .with_label_values(&[endpoint])
            .observe(attempt.duration.as_secs_f64());
        if let Some(status) = attempt.status {
            let code = status.to_string();
            self.api_requests
                .with_label_values(&[endpoint, &code])
                .inc();
            if status >= 400 {
                let error_code = attempt
                    .result
                    .as_ref()
                    .err()
                    .and_then(AttemptError::api_code)
                    .map(|c| self.error_code_label(c))
                    .unwrap_or_default();
                self.api_errors
                    .with_label_values(&[endpoint, &code, &error_code])
                    .inc();
            }
            let healthy = !matches!(status, 401 | 403 | 500..=599);
            self.api_up.set(i64::from(healthy));
        }
        if let Some(report) = attempt.result.as_ref().ok().and_then(Decoded::report) {
            for reason in SkipReason::ALL {
                let n = report.skipped[reason.index()];
                if n > 0 {
                    self.skipped_records
                        .with_label_values(&[endpoint, reason.as_str()])
                        .inc_by(n);
                }
            }
            for kind in RepairKind::ALL {
                let n = report.repaired[kind.index()];
                if n > 0 {
                    self.repaired_values
                        .with_label_values(&[endpoint, kind.as_str()])
                        .inc_by(n);
                }
            }
        }
        if let Err(AttemptError::Transport { reason, .. }) = &attempt.result {
            self.api_failures
                .with_label_values(&[endpoint, reason.as_str()])
                .inc();
            if matches!(reason, FailureReason::Timeout | FailureReason::Connect) {
                self.api_up.set(0);
            }
        }
    }

    pub fn record_retry(&self, endpoint: Endpoint) {
        self.api_retries
            .with_label_values(&[endpoint.as_str()])
            .inc();
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
        let Some((task, at)) = &activity.polled else {
            return;
        };
        let exemplar =
            |sha256: &str| Exemplar::new(&[("task_id", task.as_str()), ("sha256", sha256)], *at);
        let mut exemplars = self.exemplars.lock().unwrap_or_else(|e| e.into_inner());
        let downloads = exemplars.entry(DOWNLOADS).or_default();
        for (zone, sha256) in activity.downloads.iter().zip(&activity.download_files) {
            downloads.insert(zone.as_str().to_string(), exemplar(sha256));
        }
        let hits = exemplars.entry(YARA_HITS).or_default();
        for (rule, sha256) in activity.yara_hits.iter().zip(&activity.yara_files) {
            hits.insert(rule.clone(), exemplar(sha256));
        }
    }

    /// Continues the fleet counters from the values the store kept. Counters only rise: this
    /// is for start-up, before any poll.
    pub fn restore_counters<'a>(
        &self,
        downloads: impl IntoIterator<Item = (DangerZone, u64)>,
        yara_hits: impl IntoIterator<Item = (&'a str, u64)>,
    ) {
        for (zone, value) in downloads {
            self.downloads
                .with_label_values(&[zone.as_str()])
                .inc_by(value);
        }
        for (rule, value) in yara_hits {
            self.yara_hits.with_label_values(&[rule]).inc_by(value);
        }
    }

    /// A copy of the fleet counters' exemplars, taken for one scrape.
    pub(super) fn exemplars(&self) -> Exemplars {
        self.exemplars
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records the outcome of a configuration load or reload.
    pub fn record_reload(&self, success: bool) {
        let now = SystemTime::now();
        self.reload_ok.set(i64::from(success));
        if success {
            self.reload_ok_time.set(unix_seconds(now));
        }
        *self.reload_lock() = Some(ReloadStatus {
            ok: success,
            at: now,
            problems: None,
        });
    }

    /// Records why the reload just recorded as failed kept the previous configuration.
    pub fn record_reload_problems(&self, problems: &str) {
        if let Some(last) = self.reload_lock().as_mut() {
            last.problems = Some(problems.to_owned());
        }
    }

    /// The latest load or reload; `None` before the first.
    pub fn last_reload(&self) -> Option<ReloadStatus> {
        self.reload_lock().clone()
    }

    fn reload_lock(&self) -> std::sync::MutexGuard<'_, Option<ReloadStatus>> {
        self.last_reload.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The registry, for the exposition.
    pub(super) fn registry(&self) -> &Registry {
        &self.registry
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

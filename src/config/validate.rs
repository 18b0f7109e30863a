//! Raw fields to a [`Config`] whose invariants hold. This file owns the whole-file rules
//! (which sections exist, `timeout < interval`), the `polling` and `metrics` sections and the
//! leaf checks every section uses (defaults, ranges, durations); the `sandbox` section and the
//! task list are in [`sandbox`] and [`tasks`].
//!
//! Fields that [`super::raw`] already found unusable are skipped silently, so each mistake is
//! reported once; every other problem is collected before giving up.

mod discovery;
mod sandbox;
mod tasks;

use std::path::Path;
use std::time::Duration;

use super::problem::Problems;
use super::raw::{Field, RawConfig, RawMetrics, RawPolling, Slot};
use super::{Config, MetricsConfig, PollingConfig, RetryConfig};
use crate::zone::DangerZone;

/// Upper bound for every duration: far beyond any sensible setting, and far from the
/// `Instant + Duration` overflow that absurd values would cause in the scheduler.
const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);
const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// The least a duration that must be positive may be.
const MIN_POSITIVE: Duration = Duration::from_millis(1);
const CONCURRENCY: (u64, u64) = (1, 1024);
const MULTIPLIER: (f64, f64) = (1.0, 100.0);
const LABEL_LENGTH: (u64, u64) = (1, 4096);
const LABEL_VALUES: (u64, u64) = (1, 10_000);
const FILE_INFO_SERIES: (u64, u64) = (0, 100_000);
const FILE_INFO_SERIES_TOTAL: (u64, u64) = (0, 1_000_000);

/// Validates `raw`, read from `source`. Returns the config only when no problem was found
/// (including the ones `raw` reported before).
pub(super) fn validate(raw: RawConfig, source: &Path, problems: &mut Problems) -> Option<Config> {
    let base = source.parent().unwrap_or(Path::new(""));
    let timeout_defaulted = matches!(&raw.sandbox, Slot::Given(s) if s.timeout.is_absent());
    let (mut sandbox, timeout) = match raw.sandbox {
        Slot::Given(s) => sandbox::sandbox(&s, base, problems),
        Slot::Absent => {
            problems.report(
                "sandbox",
                "required section is missing (it needs at least url, username and password or password_file)",
            );
            (None, None)
        }
        Slot::Invalid => (None, None),
    };
    let discovery = match &raw.discovery {
        Slot::Given(d) => discovery::discovery(d, problems).map(Some),
        Slot::Absent => Some(None),
        Slot::Invalid => None,
    };
    let polling = polling(
        &raw.polling,
        matches!(raw.discovery, Slot::Given(_)),
        problems,
    );
    if let (Some(timeout), Some(p)) = (timeout, &polling) {
        // Every attempt must end before its task's next turn at the fastest pace.
        let (fastest, name) = if p.lifecycle && p.active_interval < p.interval {
            (p.active_interval, "active_interval")
        } else {
            (p.interval, "interval")
        };
        if timeout >= fastest && timeout_defaulted && name == "active_interval" {
            // The default timeout (10s) yields to the lifecycle's active pace (10s by default)
            // rather than making a plain `discovery:` section invalid.
            if let Some(s) = sandbox.as_mut() {
                s.timeout = fastest / 2;
            }
        } else if timeout >= fastest {
            problems.report(
                "sandbox.timeout",
                format!(
                    "must be shorter than polling.{name} (timeout {}{}, {name} {})",
                    humantime::format_duration(timeout),
                    if timeout_defaulted { " by default" } else { "" },
                    humantime::format_duration(fastest)
                ),
            );
        }
    }
    let tasks = tasks::tasks(&raw.tasks, problems);
    let metrics = metrics(&raw.metrics, problems);
    if !problems.is_empty() {
        return None;
    }
    Some(Config {
        source: source.to_path_buf(),
        sandbox: sandbox?,
        polling: polling?,
        discovery: discovery?,
        tasks: tasks.into(),
        metrics: metrics?,
    })
}

/// `polling:`. `lifecycle` defaults to on when the file has a `discovery:` section; the
/// lifecycle paces default to 10s and 1h, bounded by `interval` so that a short `interval`
/// alone stays valid.
fn polling(raw: &RawPolling, discovery: bool, problems: &mut Problems) -> Option<PollingConfig> {
    let defaults = PollingConfig::default();
    let interval = duration(problems, &raw.interval, defaults.interval, MIN_INTERVAL);
    let lifecycle = optional(&raw.lifecycle, discovery);
    let active_default = interval.map_or(defaults.active_interval, |i| {
        i.min(defaults.active_interval)
    });
    let active_interval = duration(problems, &raw.active_interval, active_default, MIN_INTERVAL);
    let settled_default = defaults
        .settled_interval
        .map(|s| interval.map_or(s, |i| i.max(s)));
    let settled_interval = switchable_duration(
        problems,
        &raw.settled_interval,
        settled_default,
        MIN_INTERVAL,
    );
    let health_interval = switchable_duration(
        problems,
        &raw.health_interval,
        defaults.health_interval,
        MIN_INTERVAL,
    );
    if let (Some(active), Some(i)) = (active_interval, interval) {
        if active > i {
            problems.report(
                &raw.active_interval.path,
                format!(
                    "must not exceed polling.interval (active_interval {}, interval {})",
                    humantime::format_duration(active),
                    humantime::format_duration(i)
                ),
            );
        }
    }
    if let (Some(Some(settled)), Some(i)) = (settled_interval, interval) {
        if settled < i {
            problems.report(
                &raw.settled_interval.path,
                format!(
                    "must be at least polling.interval, or 0s for never (settled_interval {}, interval {})",
                    humantime::format_duration(settled),
                    humantime::format_duration(i)
                ),
            );
        }
    }
    let concurrency = unsigned(
        problems,
        &raw.concurrency,
        defaults.concurrency as u64,
        CONCURRENCY,
    );
    let r = &raw.retry;
    let d = defaults.retry;
    let initial_interval = duration(
        problems,
        &r.initial_interval,
        d.initial_interval,
        MIN_POSITIVE,
    );
    let max_interval = duration(problems, &r.max_interval, d.max_interval, MIN_POSITIVE);
    let multiplier = float(problems, &r.multiplier, d.multiplier, MULTIPLIER);
    let randomization_factor = float(
        problems,
        &r.randomization_factor,
        d.randomization_factor,
        (0.0, 1.0),
    );
    let max_elapsed_time = duration(
        problems,
        &r.max_elapsed_time,
        d.max_elapsed_time,
        Duration::ZERO,
    );
    if let (Some(initial), Some(max)) = (initial_interval, max_interval) {
        if initial > max {
            problems.report(
                &r.initial_interval.path,
                format!(
                    "must not exceed polling.retry.max_interval (initial_interval {}, max_interval {})",
                    humantime::format_duration(initial),
                    humantime::format_duration(max)
                ),
            );
            return None;
        }
    }
    Some(PollingConfig {
        interval: interval?,
        active_interval: active_interval?,
        settled_interval: settled_interval?,
        lifecycle: lifecycle?,
        health_interval: health_interval?,
        // Bounded to 1024 above, so it fits any usize.
        concurrency: usize::try_from(concurrency?).ok()?,
        retry: RetryConfig {
            initial_interval: initial_interval?,
            max_interval: max_interval?,
            multiplier: multiplier?,
            randomization_factor: randomization_factor?,
            max_elapsed_time: max_elapsed_time?,
        },
    })
}

/// A list of zone names, each known and kept once, in file order.
pub(super) fn zone_list(
    problems: &mut Problems,
    field: &Field<Vec<Field<String>>>,
    default: Vec<DangerZone>,
) -> Option<Vec<DangerZone>> {
    match &field.slot {
        Slot::Absent => Some(default),
        Slot::Invalid => None,
        Slot::Given(items) => {
            let mut zones = Vec::with_capacity(items.len());
            let mut ok = true;
            for item in items {
                let Some(text) = item.given() else {
                    ok = false;
                    continue;
                };
                match DangerZone::parse_strict(text) {
                    Some(zone) if !zones.contains(&zone) => zones.push(zone),
                    Some(_) => {}
                    None => {
                        problems.report_value(
                            &item.path,
                            text,
                            "unknown zone; expected one of Red, Orange, Yellow, Grey (or Gray), Green, Unknown",
                        );
                        ok = false;
                    }
                }
            }
            ok.then_some(zones)
        }
    }
}

fn metrics(raw: &RawMetrics, problems: &mut Problems) -> Option<MetricsConfig> {
    let defaults = MetricsConfig::default();
    let zones = zone_list(problems, &raw.file_info_zones, defaults.file_info_zones);
    let length = unsigned(
        problems,
        &raw.max_label_length,
        defaults.max_label_length as u64,
        LABEL_LENGTH,
    );
    let values = unsigned(
        problems,
        &raw.max_label_values,
        defaults.max_label_values as u64,
        LABEL_VALUES,
    );
    let per_task = unsigned(
        problems,
        &raw.max_file_info_series,
        defaults.max_file_info_series as u64,
        FILE_INFO_SERIES,
    );
    let total = unsigned(
        problems,
        &raw.max_file_info_series_total,
        defaults.max_file_info_series_total as u64,
        FILE_INFO_SERIES_TOTAL,
    );
    Some(MetricsConfig {
        file_info_zones: zones?,
        max_file_info_series: usize::try_from(per_task?).ok()?,
        max_file_info_series_total: usize::try_from(total?).ok()?,
        // Both bounded to 10000 above, so they fit any usize.
        max_label_length: usize::try_from(length?).ok()?,
        max_label_values: usize::try_from(values?).ok()?,
    })
}

pub(super) fn required<'f>(
    problems: &mut Problems,
    field: &'f Field<String>,
) -> Option<&'f String> {
    if field.is_absent() {
        problems.report(&field.path, "required");
    }
    field.given()
}

pub(super) fn optional<T: Clone>(field: &Field<T>, default: T) -> Option<T> {
    match &field.slot {
        Slot::Given(value) => Some(value.clone()),
        Slot::Absent => Some(default),
        Slot::Invalid => None,
    }
}

/// A humantime duration of at least `min`, at most [`MAX_DURATION`].
pub(super) fn duration(
    problems: &mut Problems,
    field: &Field<String>,
    default: Duration,
    min: Duration,
) -> Option<Duration> {
    duration_within(problems, field, default, min, MAX_DURATION)
}

/// A duration where `0s` means "off" (`Some(None)`); otherwise at least `min`.
fn switchable_duration(
    problems: &mut Problems,
    field: &Field<String>,
    default: Option<Duration>,
    min: Duration,
) -> Option<Option<Duration>> {
    let zero = matches!(&field.slot, Slot::Given(text)
        if humantime::parse_duration(text.trim()).is_ok_and(|d| d.is_zero()));
    if zero {
        return Some(None);
    }
    match default {
        Some(default) => duration(problems, field, default, min).map(Some),
        None if field.is_absent() => Some(None),
        None => duration(problems, field, min, min).map(Some),
    }
}

/// A humantime duration of at least `min`, at most `max`.
pub(super) fn duration_within(
    problems: &mut Problems,
    field: &Field<String>,
    default: Duration,
    min: Duration,
    max: Duration,
) -> Option<Duration> {
    let text = match &field.slot {
        Slot::Given(text) => text,
        Slot::Absent => return Some(default),
        Slot::Invalid => return None,
    };
    let why = match humantime::parse_duration(text.trim()) {
        Ok(d) if d >= min && d <= max => return Some(d),
        Ok(d) if d < min && d.is_zero() => "must be greater than zero".to_owned(),
        Ok(d) if d < min => format!("must be at least {}", humantime::format_duration(min)),
        Ok(_) => format!("must be at most {}", humantime::format_duration(max)),
        Err(e) => format!("not a duration ({e}); write it like 500ms, 10s or 1m30s"),
    };
    problems.report_value(&field.path, text, why);
    None
}

pub(super) fn unsigned(
    problems: &mut Problems,
    field: &Field<u64>,
    default: u64,
    (min, max): (u64, u64),
) -> Option<u64> {
    match &field.slot {
        Slot::Given(n) if (min..=max).contains(n) => Some(*n),
        Slot::Given(n) => {
            problems.report_value(
                &field.path,
                &n.to_string(),
                format!("must be between {min} and {max}"),
            );
            None
        }
        Slot::Absent => Some(default),
        Slot::Invalid => None,
    }
}

pub(super) fn float(
    problems: &mut Problems,
    field: &Field<f64>,
    default: f64,
    (min, max): (f64, f64),
) -> Option<f64> {
    match &field.slot {
        Slot::Given(x) if x.is_finite() && (min..=max).contains(x) => Some(*x),
        Slot::Given(x) => {
            problems.report_value(
                &field.path,
                &x.to_string(),
                format!("must be a finite number between {min:?} and {max:?}"),
            );
            None
        }
        Slot::Absent => Some(default),
        Slot::Invalid => None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::testing::*;
    use crate::zone::DangerZone;

    #[test]
    fn timeout_not_shorter_than_interval_is_an_error_naming_both() {
        assert_eq!(
            one_problem(&format!(
                "{MINIMAL}  timeout: 1m\npolling:\n  interval: 60s\n"
            )),
            "sandbox.timeout: must be shorter than polling.interval (timeout 1m, interval 1m)"
        );
        assert_eq!(
            one_problem(&format!("{MINIMAL}polling:\n  interval: 5s\n")),
            "sandbox.timeout: must be shorter than polling.interval (timeout 10s by default, interval 5s)"
        );
    }

    #[test]
    fn bad_durations_are_rejected_with_their_value() {
        let lines = problems(&format!(
        "{MINIMAL}  timeout: 0s\npolling:\n  interval: 500ms\n  retry:\n    initial_interval: 10\n    max_interval: ten\n    max_elapsed_time: 2d\n"
    ));
        assert_eq!(
        lines,
        [
            "sandbox.timeout: must be greater than zero (got \"0s\")",
            "polling.retry.initial_interval: a duration needs a unit, like 500ms, 10s or 1m30s (got \"10\")",
            "polling.interval: must be at least 1s (got \"500ms\")",
            "polling.retry.max_interval: not a duration (expected number at 0); write it like 500ms, 10s or 1m30s (got \"ten\")",
            "polling.retry.max_elapsed_time: must be at most 1day (got \"2d\")",
        ]
    );
    }

    #[test]
    fn zero_max_elapsed_time_is_allowed_and_disables_retrying() {
        let config = ok(&format!(
            "{MINIMAL}polling:\n  retry:\n    max_elapsed_time: 0s\n"
        ));
        assert_eq!(config.polling.retry.max_elapsed_time, Duration::ZERO);
    }

    #[test]
    fn an_initial_interval_above_the_max_interval_is_an_error() {
        assert_eq!(
        one_problem(&format!(
            "{MINIMAL}polling:\n  retry:\n    initial_interval: 1m\n    max_interval: 30s\n"
        )),
        "polling.retry.initial_interval: must not exceed polling.retry.max_interval (initial_interval 1m, max_interval 30s)"
    );
    }

    #[test]
    fn integers_out_of_range_negative_or_fractional_are_rejected() {
        let lines = problems(&format!(
        "{MINIMAL}  max_response_bytes: 1023\npolling:\n  concurrency: 1.5\nmetrics:\n  max_label_length: -3\n  max_label_values: 10001\n"
    ));
        assert_eq!(
        lines,
        [
            "sandbox.max_response_bytes: must be between 1024 and 1073741824 (got \"1023\")",
            "polling.concurrency: expected a whole number, without fraction or exponent (got \"1.5\")",
            "metrics.max_label_length: must not be negative (got \"-3\")",
            "metrics.max_label_values: must be between 1 and 10000 (got \"10001\")",
        ]
    );
        let huge = one_problem(&format!(
            "{MINIMAL}polling:\n  concurrency: 123456789012345678901234\n"
        ));
        assert!(
            huge.contains("line 6") && huge.contains("is too large"),
            "{huge}"
        );
    }

    #[test]
    fn retry_factors_must_be_finite_and_in_range() {
        let lines = problems(&format!(
            "{MINIMAL}polling:\n  retry:\n    multiplier: 0.5\n    randomization_factor: .nan\n"
        ));
        assert_eq!(
        lines,
        [
            "polling.retry.multiplier: must be a finite number between 1.0 and 100.0 (got \"0.5\")",
            "polling.retry.randomization_factor: must be a finite number between 0.0 and 1.0 (got \"NaN\")",
        ]
    );
        let config = ok(&format!("{MINIMAL}polling:\n  retry:\n    multiplier: 3\n"));
        assert_eq!(config.polling.retry.multiplier, 3.0);
    }

    #[test]
    fn file_info_zones_accept_gray_and_unknown_reject_purple_and_deduplicate() {
        let config = ok(&format!(
            "{MINIMAL}metrics:\n  file_info_zones: [gray, RED, Grey, red, unknown]\n"
        ));
        assert_eq!(
            config.metrics.file_info_zones,
            [DangerZone::Grey, DangerZone::Red, DangerZone::Unknown]
        );
        assert_eq!(
        one_problem(&format!("{MINIMAL}metrics:\n  file_info_zones: [Red, purple]\n")),
        "metrics.file_info_zones[1]: unknown zone; expected one of Red, Orange, Yellow, Grey (or Gray), Green, Unknown (got \"purple\")"
    );
        assert!(ok(&format!("{MINIMAL}metrics:\n  file_info_zones: []\n"))
            .metrics
            .file_info_zones
            .is_empty());
    }
}

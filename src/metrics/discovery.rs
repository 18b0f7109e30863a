//! Discovery's series: `krs_discovery_tasks`, `krs_discovery_truncated_tasks`,
//! `krs_discovery_last_success_timestamp_seconds` and `krs_discovery_interval_seconds`. None of
//! them is present while discovery is off; the last-success time appears with the first
//! complete read of the task list.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use prometheus::{GaugeVec, IntGaugeVec, Opts, Registry};

use super::family::register;
use super::family::unix_seconds;

/// The label values of a family without labels.
const NONE: &[&str] = &[];

/// Handles for discovery's gauges (each a family without labels, so it can be absent).
pub struct DiscoveryMetrics {
    tasks: IntGaugeVec,
    truncated: IntGaugeVec,
    last_success: GaugeVec,
    interval: GaugeVec,
    /// The same values for the console, which reads them back.
    status: Mutex<DiscoveryStatus>,
}

/// Discovery as the console shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DiscoveryStatus {
    /// The interval while discovery is on; `None` while it is off.
    pub interval: Option<Duration>,
    pub tasks: usize,
    pub truncated: usize,
    pub last_success: Option<SystemTime>,
}

impl DiscoveryMetrics {
    pub fn register(registry: &Registry) -> Self {
        let int_gauge = |name: &str, help: &str| {
            register(registry, IntGaugeVec::new(Opts::new(name, help), &[]))
        };
        let gauge =
            |name: &str, help: &str| register(registry, GaugeVec::new(Opts::new(name, help), &[]));
        DiscoveryMetrics {
            tasks: int_gauge(
                "krs_discovery_tasks",
                "Discovered tasks in the watch list (beside the configured ones).",
            ),
            truncated: int_gauge(
                "krs_discovery_truncated_tasks",
                "Listed tasks left out by discovery.max_tasks in the latest read.",
            ),
            last_success: gauge(
                "krs_discovery_last_success_timestamp_seconds",
                "End of the latest complete read of the task list (Unix seconds).",
            ),
            interval: gauge(
                "krs_discovery_interval_seconds",
                "The configured discovery interval, for alert thresholds.",
            ),
            status: Mutex::new(DiscoveryStatus::default()),
        }
    }

    /// Discovery on (with its interval) or off (every series removed).
    pub fn set_enabled(&self, interval: Option<Duration>) {
        {
            let mut status = self.lock();
            status.interval = interval;
            if interval.is_none() {
                *status = DiscoveryStatus::default();
            }
        }
        match interval {
            Some(interval) => {
                self.interval
                    .with_label_values(NONE)
                    .set(interval.as_secs_f64());
                self.tasks.with_label_values(NONE);
                self.truncated.with_label_values(NONE);
            }
            None => {
                let _ = self.interval.remove_label_values(NONE);
                let _ = self.tasks.remove_label_values(NONE);
                let _ = self.truncated.remove_label_values(NONE);
                let _ = self.last_success.remove_label_values(NONE);
            }
        }
    }

    /// A complete read: `tasks` discovered, `truncated` left out, at `now`.
    pub fn record_read(&self, tasks: usize, truncated: usize, now: SystemTime) {
        self.set_tasks(tasks);
        self.truncated
            .with_label_values(NONE)
            .set(i64::try_from(truncated).unwrap_or(i64::MAX));
        self.last_success
            .with_label_values(NONE)
            .set(unix_seconds(now));
        let mut status = self.lock();
        status.truncated = truncated;
        status.last_success = Some(now);
    }

    /// The discovered tasks still watched after a failed read (aged ones leave).
    pub fn set_tasks(&self, tasks: usize) {
        self.tasks
            .with_label_values(NONE)
            .set(i64::try_from(tasks).unwrap_or(i64::MAX));
        self.lock().tasks = tasks;
    }

    /// The latest values, for the console.
    pub fn status(&self) -> DiscoveryStatus {
        *self.lock()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DiscoveryStatus> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }
}

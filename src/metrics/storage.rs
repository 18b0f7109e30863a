//! The store's series: `krs_storage_writes_total`, `krs_storage_write_failures_total`,
//! `krs_storage_restored_tasks` and `krs_storage_size_bytes`. None of them is present when
//! state is kept in memory only (`--storage.path=` empty), so the storage alert cannot fire
//! without a store.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

use super::family::register;

/// The label values of a family without labels.
const NONE: &[&str] = &[];

/// Handles for the store's series (each a family without labels, so it can be absent).
pub struct StorageMetrics {
    writes: IntCounterVec,
    failures: IntCounterVec,
    restored: IntGaugeVec,
    size: IntGaugeVec,
}

impl StorageMetrics {
    pub fn register(registry: &Registry) -> Self {
        let counter = |name: &str, help: &str| {
            register(registry, IntCounterVec::new(Opts::new(name, help), &[]))
        };
        let gauge = |name: &str, help: &str| {
            register(registry, IntGaugeVec::new(Opts::new(name, help), &[]))
        };
        StorageMetrics {
            writes: counter(
                "krs_storage_writes_total",
                "Durable commits of observed state to --storage.path.",
            ),
            failures: counter(
                "krs_storage_write_failures_total",
                "Commits or re-opens of the store that failed; the exporter serves from memory meanwhile.",
            ),
            restored: gauge(
                "krs_storage_restored_tasks",
                "Tasks whose state was restored from the store at start (0 when nothing was).",
            ),
            size: gauge(
                "krs_storage_size_bytes",
                "Size of the store's database file after the latest commit.",
            ),
        }
    }

    /// A store is in use: its series appear, at 0.
    pub fn enable(&self, restored: usize) {
        self.writes.with_label_values(NONE);
        self.failures.with_label_values(NONE);
        self.restored.with_label_values(NONE).set(restored as i64);
    }

    pub fn record_write(&self, size_bytes: u64) {
        self.writes.with_label_values(NONE).inc();
        self.size.with_label_values(NONE).set(size_bytes as i64);
    }

    pub fn record_failure(&self) {
        self.failures.with_label_values(NONE).inc();
    }

    /// Commits so far (tests and the console).
    pub fn writes(&self) -> u64 {
        self.writes.with_label_values(NONE).get()
    }

    pub fn failures(&self) -> u64 {
        self.failures.with_label_values(NONE).get()
    }
}

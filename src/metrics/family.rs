//! Helpers every metrics module registers and formats with: one place for the registry's
//! "a static definition cannot fail" rule and for the timestamp format.

use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::core::Collector;
use prometheus::Registry;

/// Registers a metric built from a static definition and returns it (a handle sharing the
/// registered one). Panics only on a programming error: an invalid definition or a name
/// registered twice, which every test run would show.
pub(super) fn register<M>(registry: &Registry, metric: prometheus::Result<M>) -> M
where
    M: Collector + Clone + 'static,
{
    let metric = metric.expect("static metric definition is valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

/// Seconds since the Unix epoch, with millisecond resolution.
pub fn unix_seconds(t: SystemTime) -> f64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    (d.as_millis() as f64) / 1000.0
}

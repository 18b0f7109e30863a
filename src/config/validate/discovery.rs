//! The `discovery:` section and the lifecycle settings of `polling:` that depend on it.

use std::time::Duration;

use super::tasks::label_map;
use super::{duration_within, unsigned, zone_list, MIN_INTERVAL};
use crate::config::problem::Problems;
use crate::config::raw::RawDiscovery;
use crate::config::{DiscoveryConfig, TaskLabels};

/// The longest `lookback`: a month of tasks.
const MAX_LOOKBACK: Duration = Duration::from_secs(31 * 24 * 60 * 60);
const MAX_TASKS: (u64, u64) = (1, 1_000_000);
/// The task list's own bounds for `count`.
const PAGE_SIZE: (u64, u64) = (1, 1500);

pub(super) fn discovery(raw: &RawDiscovery, problems: &mut Problems) -> Option<DiscoveryConfig> {
    let day = Duration::from_secs(24 * 60 * 60);
    let interval = duration_within(
        problems,
        &raw.interval,
        Duration::from_secs(60),
        MIN_INTERVAL,
        day,
    );
    let lookback = duration_within(problems, &raw.lookback, day, MIN_INTERVAL, MAX_LOOKBACK);
    let zones = zone_list(problems, &raw.zones, Vec::new());
    let max_tasks = unsigned(problems, &raw.max_tasks, 10_000, MAX_TASKS);
    let page_size = unsigned(problems, &raw.page_size, 500, PAGE_SIZE);
    let labels = label_map(&raw.labels, problems);
    Some(DiscoveryConfig {
        interval: interval?,
        lookback: lookback?,
        zones: zones?,
        // Both bounded above, so they fit any usize.
        max_tasks: usize::try_from(max_tasks?).ok()?,
        page_size: usize::try_from(page_size?).ok()?,
        labels: TaskLabels::from(labels?),
    })
}

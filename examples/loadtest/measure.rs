//! What one phase measured, and the arithmetic over the simulator's request log.

use std::time::Duration;

use krs_sandbox_sim::RequestRecord;
use serde::Serialize;

use crate::fleet;
use crate::proc::Rss;

/// Everything measured about one process's phase (exporter or floor).
#[derive(Debug, Default, Serialize)]
pub struct Phase {
    pub name: String,
    /// Seconds from spawn to `/-/healthy` answering (exporter only).
    pub startup_s: Option<f64>,
    /// Seconds from spawn to `/-/ready` answering 200 (exporter only).
    pub ready_s: Option<f64>,
    pub window_s: f64,
    /// Requests the simulator received within the window.
    pub requests: u64,
    /// Non-200 answers at the simulator over the whole phase, plus the floor's own errors.
    pub non_200: u64,
    pub polls_per_s: f64,
    /// From the exporter's `krs_polls_total`, scrape to scrape.
    pub polls_per_s_self: Option<f64>,
    pub cpu_s: f64,
    /// The kernel's share of `cpu_s`.
    pub cpu_system_s: f64,
    /// Context switches of the process's threads per poll.
    pub switches_per_poll: f64,
    pub cpu_us_per_poll: f64,
    pub cpu_s_per_1000_polls: f64,
    /// Right after `/-/healthy` first answered: the configuration is loaded, polling just began.
    pub rss_at_healthy: Option<Rss>,
    /// After warm-up and the window, before any scrape (exporter only).
    pub rss_before_scrapes: Option<Rss>,
    /// At the end of the phase, after the timed scrapes.
    pub rss_end: Rss,
    /// Share of all CPUs busy during the window (everything on the machine).
    pub machine_busy: f64,
    /// The simulator (the harness process) per request within the window.
    pub sim_cpu_us_per_request: f64,
    pub scrape_plain: Option<ScrapeStats>,
    pub scrape_gzip: Option<ScrapeStats>,
    pub series: Option<SeriesStats>,
    pub health: Option<HealthStats>,
    pub reload: Option<ReloadStats>,
    pub stalls: Option<StallStats>,
    pub spread: Vec<Spread>,
    pub exporter_warnings: Option<usize>,
    /// With `--discovery`.
    pub life: Option<crate::life::LifeStats>,
    /// The exporter's `/proc/PID/io` over the window.
    pub io: Option<crate::storage::IoStats>,
    /// With `--storage temp|DIR`.
    pub store: Option<crate::storage::StoreStats>,
    /// With `--restart`.
    pub restart: Option<crate::storage::RestartStats>,
}

#[derive(Debug, Serialize)]
pub struct ScrapeStats {
    pub median_ms: f64,
    pub max_ms: f64,
    pub bytes: usize,
    pub content_encoding: String,
}

#[derive(Debug, Serialize)]
pub struct SeriesStats {
    pub total: usize,
    pub families: usize,
    /// Series carrying a `task_id` label, and their bytes in the body.
    pub task_series: usize,
    pub task_bytes: usize,
    pub per_task: f64,
    pub bytes_per_task: f64,
    /// Series of the first task of each profile of the fleet mix.
    pub typical: Vec<(String, usize)>,
}

#[derive(Debug, Default, Serialize)]
pub struct HealthStats {
    pub probes: usize,
    pub failures: usize,
    pub median_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct ReloadStats {
    /// Seconds after the exporter was spawned.
    pub at_s: f64,
    pub status: u16,
    pub latency_ms: f64,
}

/// Whether polling stops while `/metrics` is being served.
#[derive(Debug, Serialize)]
pub struct StallStats {
    /// Longest time without any request at the simulator, first to last request of the phase.
    pub longest_gap_ms: f64,
    /// The same, among gaps that overlap no scrape.
    pub longest_gap_outside_scrapes_ms: f64,
    /// Requests per second while a scrape was in progress, and the rest of the time.
    pub rate_during_scrapes: f64,
    pub rate_outside_scrapes: f64,
}

#[derive(Debug, Serialize)]
pub struct Spread {
    pub window: String,
    pub from_s: f64,
    pub to_s: f64,
    pub bucket_ms: u64,
    pub buckets: usize,
    pub mean: f64,
    pub max: u64,
    pub min: u64,
    pub max_over_mean: f64,
}

/// Requests with `from <= at < to`.
pub fn count(log: &[RequestRecord], from: Duration, to: Duration) -> u64 {
    log.iter().filter(|r| r.at >= from && r.at < to).count() as u64
}

/// Requests per `bucket` over the whole buckets of `[from, to)`.
pub fn spread(
    log: &[RequestRecord],
    window: &str,
    from: Duration,
    to: Duration,
    bucket: Duration,
) -> Option<Spread> {
    let n = usize::try_from(to.saturating_sub(from).as_nanos() / bucket.as_nanos()).ok()?;
    if n == 0 {
        return None;
    }
    let mut counts = vec![0u64; n];
    for r in log.iter().filter(|r| r.at >= from) {
        let i = ((r.at - from).as_nanos() / bucket.as_nanos()) as usize;
        if i < n {
            counts[i] += 1;
        }
    }
    let mean = counts.iter().sum::<u64>() as f64 / n as f64;
    let max = counts.iter().copied().max().unwrap_or(0);
    Some(Spread {
        window: window.to_string(),
        from_s: from.as_secs_f64(),
        to_s: (from + bucket * u32::try_from(n).unwrap_or(u32::MAX)).as_secs_f64(),
        bucket_ms: bucket.as_millis() as u64,
        buckets: n,
        mean,
        max,
        min: counts.iter().copied().min().unwrap_or(0),
        max_over_mean: if mean > 0.0 { max as f64 / mean } else { 0.0 },
    })
}

/// Gaps between consecutive requests, and request rates inside and outside `scrapes`.
pub fn stalls(log: &[RequestRecord], scrapes: &[(Duration, Duration)]) -> Option<StallStats> {
    let mut times: Vec<Duration> = log.iter().map(|r| r.at).collect();
    times.sort_unstable();
    let (first, last) = (*times.first()?, *times.last()?);
    let overlaps = |a: Duration, b: Duration| scrapes.iter().any(|&(s, e)| a < e && s < b);
    let mut longest = Duration::ZERO;
    let mut longest_outside = Duration::ZERO;
    for pair in times.windows(2) {
        let gap = pair[1] - pair[0];
        longest = longest.max(gap);
        if !overlaps(pair[0], pair[1]) {
            longest_outside = longest_outside.max(gap);
        }
    }
    let clipped: Vec<(Duration, Duration)> = scrapes
        .iter()
        .map(|&(s, e)| (s.max(first), e.min(last)))
        .filter(|(s, e)| s < e)
        .collect();
    let during_time: f64 = clipped.iter().map(|(s, e)| (*e - *s).as_secs_f64()).sum();
    let during: u64 = clipped.iter().map(|&(s, e)| count(log, s, e)).sum();
    let total_time = (last - first).as_secs_f64();
    let rate = |n: u64, t: f64| if t > 0.0 { n as f64 / t } else { 0.0 };
    Some(StallStats {
        longest_gap_ms: longest.as_secs_f64() * 1e3,
        longest_gap_outside_scrapes_ms: longest_outside.as_secs_f64() * 1e3,
        rate_during_scrapes: rate(during, during_time),
        rate_outside_scrapes: rate(
            (times.len() as u64).saturating_sub(during),
            total_time - during_time,
        ),
    })
}

/// Counts families, series and the per-task share of an exposition body.
pub fn series(body: &str, tasks: u64) -> SeriesStats {
    let mut total = 0;
    let mut families = 0;
    let mut task_series = 0;
    let mut task_bytes = 0;
    for line in body.lines() {
        if line.starts_with("# TYPE ") {
            families += 1;
        } else if !line.starts_with('#') && !line.is_empty() {
            total += 1;
            if line.contains("task_id=\"") {
                task_series += 1;
                task_bytes += line.len() + 1;
            }
        }
    }
    let mut typical = Vec::new();
    for (label, zones) in [
        ("clean", ["Green", "Green", "Grey"]),
        ("adware", ["Green", "Yellow", "Grey"]),
        ("suspicious", ["Grey", "Orange", "Green"]),
        ("malicious", ["Grey", "Grey", "Red"]),
    ] {
        let first = (0..tasks.min(10_000)).find(|&n| {
            fleet::files(n)
                .iter()
                .map(|f| f.zone)
                .eq(zones.iter().copied())
        });
        if let Some(n) = first {
            let needle = format!("task_id=\"{}\"", fleet::task_id(n));
            let count = body.lines().filter(|l| l.contains(&needle)).count();
            typical.push((label.to_string(), count));
        }
    }
    SeriesStats {
        total,
        families,
        task_series,
        task_bytes,
        per_task: task_series as f64 / tasks.max(1) as f64,
        bytes_per_task: task_bytes as f64 / tasks.max(1) as f64,
        typical,
    }
}

pub fn per_poll_us(cpu_s: f64, polls: u64) -> f64 {
    if polls == 0 {
        0.0
    } else {
        cpu_s * 1e6 / polls as f64
    }
}

/// The median (the mean of the middle two for an even count); 0 for none.
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

pub fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(0.0, f64::max)
}

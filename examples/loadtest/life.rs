//! What a lifecycle run (`--discovery`) measures beside a phase's common figures: requests per
//! endpoint in the window, the first interval's rate (the backfill of every completed task),
//! the detonating tasks' poll gaps meanwhile, and with `--freshness-every` how long each of
//! their files takes from its appearance at the simulator to the first scrape showing it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use krs_sandbox_sim::{Endpoint, RequestRecord, SimHandle};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::fleet;
use crate::measure;
use crate::mix::{self, MixArgs};

#[derive(Debug, Serialize)]
pub struct LifeStats {
    /// Requests per second in the window, by endpoint (`Downloads`, `List`, ...).
    pub window_per_s: Vec<(String, f64)>,
    pub window_total_per_s: f64,
    /// What fixed polling of every task at `interval` asks: tasks / interval.
    pub fixed_per_s: f64,
    pub first_interval: FirstInterval,
    pub detonating: DetonatingPolls,
    pub freshness: Option<Freshness>,
}

/// From the first request of the phase to one `interval` later.
#[derive(Debug, Serialize)]
pub struct FirstInterval {
    pub from_s: f64,
    pub to_s: f64,
    pub requests: u64,
    pub mean_per_s: f64,
    /// Busiest 1 s bucket, and busiest 100 ms bucket scaled to a second.
    pub max_per_s: u64,
    pub max_per_100ms_as_per_s: u64,
}

/// `GET downloads` of the tasks detonating at start, while they detonate.
#[derive(Debug, Serialize)]
pub struct DetonatingPolls {
    pub tasks: usize,
    /// Latest first poll, seconds after the phase's first request.
    pub first_poll_max_s: f64,
    /// Longest gap between two polls of one task, within the first interval and overall.
    pub max_gap_first_interval_s: f64,
    pub max_gap_s: f64,
    pub active_interval_s: f64,
}

#[derive(Debug, Serialize)]
pub struct Freshness {
    /// Files that appeared while the watcher ran, and those among them never seen.
    pub files: usize,
    pub unseen: usize,
    pub p50_s: f64,
    pub p99_s: f64,
    pub max_s: f64,
    /// The target: 2 × active_interval.
    pub bound_s: f64,
    pub scrape_every_s: f64,
}

/// When the watcher first saw each count of files per detonating task (index k: k + 1 files).
pub type Seen = Arc<Mutex<HashMap<String, Vec<Duration>>>>;

/// The ids of the tasks detonating at start, lowercased.
pub fn detonating_ids(mix: &MixArgs) -> Vec<String> {
    (0..mix.detonating.min(mix.tasks))
        .map(|n| fleet::task_id(n).to_lowercase())
        .collect()
}

/// Scrapes `/metrics` every `every` until `stop`, noting (simulator clock, end of the scrape)
/// when each detonating task's `krs_task_downloads` sum first reached each count.
pub async fn watch(
    http: reqwest::Client,
    url: String,
    sim: SimHandle,
    ids: Vec<String>,
    every: Duration,
    seen: Seen,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let Ok(response) = http.get(&url).timeout(Duration::from_secs(30)).send().await else {
            continue;
        };
        let Ok(body) = response.text().await else {
            continue;
        };
        let at = sim.elapsed();
        let counts = downloads_per_task(&body);
        let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        for id in &ids {
            let count = counts.get(id.as_str()).copied().unwrap_or(0);
            let times = seen.entry(id.clone()).or_default();
            while times.len() < count {
                times.push(at);
            }
        }
    }
}

/// Sums `krs_task_downloads` per `task_id` (lowercased, braces dropped).
fn downloads_per_task(body: &str) -> HashMap<String, usize> {
    let mut out: HashMap<String, usize> = HashMap::new();
    for line in body.lines() {
        let Some(rest) = line.strip_prefix("krs_task_downloads{") else {
            continue;
        };
        let Some(start) = rest.find("task_id=\"") else {
            continue;
        };
        let id = &rest[start + 9..];
        let Some(end) = id.find('"') else { continue };
        let id = id[..end].trim_matches(['{', '}']).to_lowercase();
        let value = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        *out.entry(id).or_default() += value as usize;
    }
    out
}

/// The lifecycle figures of one phase, from the simulator's log `[first request, t1)`.
#[allow(clippy::too_many_arguments)]
pub fn stats(
    log: &[RequestRecord],
    mix: &MixArgs,
    interval: Duration,
    active_interval: Duration,
    (t0, t1): (Duration, Duration),
    seen: Option<(&Seen, Duration, Duration)>,
) -> LifeStats {
    let window = (t1 - t0).as_secs_f64();
    let mut by_endpoint: HashMap<String, u64> = HashMap::new();
    for r in log.iter().filter(|r| r.at >= t0 && r.at < t1) {
        *by_endpoint.entry(format!("{:?}", r.endpoint)).or_default() += 1;
    }
    let mut window_per_s: Vec<(String, f64)> = by_endpoint
        .into_iter()
        .map(|(e, n)| (e, n as f64 / window))
        .collect();
    window_per_s.sort_by(|a, b| a.0.cmp(&b.0));
    let window_total_per_s = window_per_s.iter().map(|(_, r)| r).sum();

    let first = log.first().map_or(Duration::ZERO, |r| r.at);
    let first_end = first + interval;
    let buckets = |bucket: Duration| {
        measure::spread(log, "first interval", first, first_end, bucket)
            .into_iter()
            .map(|s| s.max)
            .max()
            .unwrap_or(0)
    };
    let requests = measure::count(log, first, first_end);
    let first_interval = FirstInterval {
        from_s: first.as_secs_f64(),
        to_s: first_end.as_secs_f64(),
        requests,
        mean_per_s: requests as f64 / interval.as_secs_f64(),
        max_per_s: buckets(Duration::from_secs(1)),
        max_per_100ms_as_per_s: buckets(Duration::from_millis(100)) * 10,
    };

    let ids = detonating_ids(mix);
    let index: HashMap<&str, u64> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| (id.as_str(), n as u64))
        .collect();
    let mut polls: HashMap<u64, Vec<Duration>> = HashMap::new();
    for r in log.iter().filter(|r| r.endpoint == Endpoint::Downloads) {
        if let Some(&n) = index.get(r.task.as_str()) {
            if r.at < mix::detonation_ends(n, mix) {
                polls.entry(n).or_default().push(r.at);
            }
        }
    }
    let (mut first_poll_max, mut gap_first, mut gap_all) = (0.0f64, 0.0f64, 0.0f64);
    for times in polls.values() {
        first_poll_max = first_poll_max.max((times[0] - first).as_secs_f64());
        for w in times.windows(2) {
            let gap = (w[1] - w[0]).as_secs_f64();
            gap_all = gap_all.max(gap);
            if w[1] <= first_end {
                gap_first = gap_first.max(gap);
            }
        }
    }
    let detonating = DetonatingPolls {
        tasks: polls.len(),
        first_poll_max_s: first_poll_max,
        max_gap_first_interval_s: gap_first,
        max_gap_s: gap_all,
        active_interval_s: active_interval.as_secs_f64(),
    };

    let freshness = seen.map(|(seen, from, to)| {
        let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        let mut latencies = Vec::new();
        let mut files = 0;
        for n in 0..mix.detonating.min(mix.tasks) {
            let id = fleet::task_id(n).to_lowercase();
            let times = seen.get(&id);
            let count = fleet::files(n).len();
            for (k, appeared) in mix::appearances(n, count, mix).into_iter().enumerate() {
                // Only files that appeared while the watcher ran, with time left to see them.
                if appeared < from || appeared + active_interval * 2 > to {
                    continue;
                }
                files += 1;
                if let Some(at) = times.and_then(|t| t.get(k)) {
                    latencies.push(at.saturating_sub(appeared).as_secs_f64());
                }
            }
        }
        let unseen = files - latencies.len();
        latencies.sort_by(f64::total_cmp);
        Freshness {
            files,
            unseen,
            p50_s: quantile(&latencies, 0.50),
            p99_s: quantile(&latencies, 0.99),
            max_s: latencies.last().copied().unwrap_or(f64::NAN),
            bound_s: (active_interval * 2).as_secs_f64(),
            scrape_every_s: 0.0,
        }
    });
    LifeStats {
        window_per_s,
        window_total_per_s,
        fixed_per_s: mix.tasks as f64 / interval.as_secs_f64(),
        first_interval,
        detonating,
        freshness,
    }
}

/// The nearest-rank quantile of sorted values; NaN when empty.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The lifecycle section of the Markdown report.
pub fn markdown(out: &mut String, l: &LifeStats) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "\nLifecycle (discovery):\n");
    let _ = writeln!(out, "| measure | value |");
    let _ = writeln!(out, "|---|---|");
    let _ = writeln!(
        out,
        "| requests/s in the window, all endpoints | {:.2} (fixed polling: {:.0}) |",
        l.window_total_per_s, l.fixed_per_s
    );
    for (e, r) in &l.window_per_s {
        let _ = writeln!(out, "| … `{e}` | {r:.2} |");
    }
    let f = &l.first_interval;
    let _ = writeln!(
        out,
        "| first interval ({:.0}–{:.0} s): requests, mean/s, busiest 1 s, busiest 100 ms ×10 | {}, {:.1}, {}, {} |",
        f.from_s, f.to_s, f.requests, f.mean_per_s, f.max_per_s, f.max_per_100ms_as_per_s
    );
    let d = &l.detonating;
    let _ = writeln!(
        out,
        "| detonating tasks polled: count, latest first poll, longest gap in the first interval, longest gap (active_interval {:.0} s) | {}, {:.1} s, {:.1} s, {:.1} s |",
        d.active_interval_s, d.tasks, d.first_poll_max_s, d.max_gap_first_interval_s, d.max_gap_s
    );
    if let Some(fr) = &l.freshness {
        let _ = writeln!(
            out,
            "| freshness (scrape every {:.1} s): files, unseen, p50, p99, max (bound {:.0} s) | {}, {}, {:.1} s, {:.1} s, {:.1} s |",
            fr.scrape_every_s, fr.bound_s, fr.files, fr.unseen, fr.p50_s, fr.p99_s, fr.max_s
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_the_zones_of_each_task() {
        let body = "krs_task_downloads{task_id=\"AB\",danger_zone=\"Red\"} 2\nkrs_task_downloads{task_id=\"ab\",danger_zone=\"Green\"} 1\nkrs_task_up{task_id=\"ab\"} 1\n";
        assert_eq!(downloads_per_task(body).get("ab"), Some(&3));
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
    }
}

//! The report: Markdown tables for people, the same data as JSON for scripts.

use std::fmt::Write as _;

use serde::Serialize;

use crate::measure::Phase;
use crate::proc::Rss;

#[derive(Debug, Serialize)]
pub struct Report {
    pub tasks: u64,
    /// Every response differed (`--changing-bodies`).
    pub changing_bodies: bool,
    pub interval_s: f64,
    pub demanded_polls_per_s: f64,
    pub concurrency: usize,
    pub warmup_s: f64,
    pub window_s: f64,
    pub cpus: usize,
    pub clk_tck: u64,
    pub exporter_binary: String,
    /// `--storage`: `memory` or the store's directory.
    pub storage: String,
    pub rounds: Vec<Round>,
    /// Medians over the rounds of exporter / floor.
    pub median_rate_ratio: Option<f64>,
    pub median_cpu_ratio: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Round {
    pub floor_first: bool,
    pub exporter: Phase,
    pub floor: Option<Phase>,
}

pub fn markdown(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## loadtest: {} tasks, interval {}s (demand {:.0} polls/s), concurrency {}{}\n",
        r.tasks,
        r.interval_s,
        r.demanded_polls_per_s,
        r.concurrency,
        if r.changing_bodies {
            ", every body different"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "Window {:.0}s after {:.0}s of warm-up; {} CPUs, CLK_TCK {}; exporter `{}`; storage {}.\n",
        r.window_s, r.warmup_s, r.cpus, r.clk_tck, r.exporter_binary, r.storage
    );
    for (i, round) in r.rounds.iter().enumerate() {
        if r.rounds.len() > 1 {
            let first = if round.floor_first {
                "floor"
            } else {
                "exporter"
            };
            let _ = writeln!(out, "### round {} ({first} first)\n", i + 1);
        }
        round_markdown(&mut out, r, round);
    }
    if r.rounds.len() > 1 {
        summary(&mut out, r);
    }
    out
}

fn summary(out: &mut String, r: &Report) {
    let _ = writeln!(out, "### summary over {} rounds\n", r.rounds.len());
    let _ = writeln!(
        out,
        "| round | first | exporter polls/s | floor polls/s | rate ratio | exporter CPU µs/poll | floor CPU µs/poll | CPU ratio |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for (i, round) in r.rounds.iter().enumerate() {
        let (e, f) = (&round.exporter, round.floor.as_ref());
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {} | {} | {:.1} | {} | {} |",
            i + 1,
            if round.floor_first {
                "floor"
            } else {
                "exporter"
            },
            e.polls_per_s,
            opt(f.map(|f| f.polls_per_s), 0),
            opt(f.map(|f| e.polls_per_s / f.polls_per_s), 2),
            e.cpu_us_per_poll,
            opt(f.map(|f| f.cpu_us_per_poll), 1),
            opt(f.map(|f| e.cpu_us_per_poll / f.cpu_us_per_poll), 2),
        );
    }
    let _ = writeln!(
        out,
        "| median | | | | {} | | | {} |\n",
        opt(r.median_rate_ratio, 2),
        opt(r.median_cpu_ratio, 2),
    );
}

fn round_markdown(out: &mut String, r: &Report, round: &Round) {
    let e = &round.exporter;
    let f = round.floor.as_ref();
    let ratio = |a: f64, b: Option<f64>| opt(b.filter(|b| *b > 0.0).map(|b| a / b), 2);
    let _ = writeln!(out, "| measure | exporter | floor | exporter / floor |");
    let _ = writeln!(out, "|---|---|---|---|");
    let mut row = |name: String, ev: String, fv: String, rv: String| {
        let _ = writeln!(out, "| {name} | {ev} | {fv} | {rv} |");
    };
    row(
        format!(
            "polls/s at the simulator (demanded {:.0})",
            r.demanded_polls_per_s
        ),
        format!("{:.0}", e.polls_per_s),
        opt(f.map(|f| f.polls_per_s), 0),
        ratio(e.polls_per_s, f.map(|f| f.polls_per_s)),
    );
    row(
        "polls/s from `krs_polls_total`".into(),
        opt(e.polls_per_s_self, 0),
        "–".into(),
        String::new(),
    );
    row(
        "CPU µs per poll".into(),
        format!("{:.1}", e.cpu_us_per_poll),
        opt(f.map(|f| f.cpu_us_per_poll), 1),
        ratio(e.cpu_us_per_poll, f.map(|f| f.cpu_us_per_poll)),
    );
    row(
        "CPU s per 1,000 polls".into(),
        format!("{:.4}", e.cpu_s_per_1000_polls),
        opt(f.map(|f| f.cpu_s_per_1000_polls), 4),
        ratio(e.cpu_s_per_1000_polls, f.map(|f| f.cpu_s_per_1000_polls)),
    );
    row(
        "CPU s in the window (of which system)".into(),
        format!("{:.2} ({:.2})", e.cpu_s, e.cpu_system_s),
        f.map_or("–".into(), |f| {
            format!("{:.2} ({:.2})", f.cpu_s, f.cpu_system_s)
        }),
        String::new(),
    );
    row(
        "context switches per poll".into(),
        format!("{:.2}", e.switches_per_poll),
        opt(f.map(|f| f.switches_per_poll), 2),
        ratio(e.switches_per_poll, f.map(|f| f.switches_per_poll)),
    );
    row(
        "RSS MiB after start-up (peak / now)".into(),
        rss(e.rss_at_healthy),
        "–".into(),
        String::new(),
    );
    row(
        "RSS MiB before any scrape (peak / now)".into(),
        rss(e.rss_before_scrapes),
        "–".into(),
        String::new(),
    );
    row(
        "RSS MiB at the end (peak / now)".into(),
        rss(Some(e.rss_end)),
        rss(f.map(|f| f.rss_end)),
        String::new(),
    );
    if let Some(io) = &e.io {
        row(
            "exporter disk writes per hour: `write_bytes` (`wchar`, sockets included)".into(),
            format!("{} ({})", bytes(io.disk_bytes_per_h), bytes(io.wchar_per_h)),
            "–".into(),
            String::new(),
        );
    }
    if let Some(st) = &e.store {
        row(
            "store commits/s (`krs_storage_writes_total`; failures)".into(),
            format!("{:.2} ({:.0})", st.commits_per_s, st.write_failures),
            "–".into(),
            String::new(),
        );
        row(
            "store size at the end: `krs_storage_size_bytes` (per task; file after stop)".into(),
            format!(
                "{} ({:.0} B; {})",
                bytes(st.size_bytes),
                st.bytes_per_task,
                st.file_bytes.map_or("–".into(), |b| bytes(b as f64))
            ),
            "–".into(),
            String::new(),
        );
    }
    row(
        "non-200 answers / errors".into(),
        e.non_200.to_string(),
        f.map_or("–".into(), |f| f.non_200.to_string()),
        String::new(),
    );
    row(
        "machine CPU busy in the window".into(),
        format!("{:.0} %", e.machine_busy * 100.0),
        f.map_or("–".into(), |f| format!("{:.0} %", f.machine_busy * 100.0)),
        String::new(),
    );
    row(
        "simulator CPU µs per request".into(),
        format!("{:.1}", e.sim_cpu_us_per_request),
        opt(f.map(|f| f.sim_cpu_us_per_request), 1),
        String::new(),
    );
    if let Some(s) = &e.stalls {
        row(
            "longest gap between requests, ms (outside scrapes)".into(),
            format!(
                "{:.1} ({:.1})",
                s.longest_gap_ms, s.longest_gap_outside_scrapes_ms
            ),
            opt(
                f.and_then(|f| f.stalls.as_ref()).map(|s| s.longest_gap_ms),
                1,
            ),
            String::new(),
        );
        row(
            "requests/s during scrapes vs outside".into(),
            format!(
                "{:.0} vs {:.0}",
                s.rate_during_scrapes, s.rate_outside_scrapes
            ),
            "–".into(),
            String::new(),
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Exporter: healthy {:.2}s after spawn, ready (every task polled) after {}; {} warn/error log lines.\n",
        e.startup_s.unwrap_or(0.0),
        e.ready_s.map_or("never".into(), |s| format!("{s:.2}s")),
        e.exporter_warnings.unwrap_or(0)
    );
    if let (Some(p), Some(g)) = (&e.scrape_plain, &e.scrape_gzip) {
        let _ = writeln!(
            out,
            "| /metrics GET | median ms | max ms | body bytes | Content-Encoding |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|");
        for (name, s) in [("plain", p), ("`Accept-Encoding: gzip`", g)] {
            let _ = writeln!(
                out,
                "| {name} | {:.1} | {:.1} | {} | {} |",
                s.median_ms, s.max_ms, s.bytes, s.content_encoding
            );
        }
        let _ = writeln!(out);
    }
    if let Some(s) = &e.series {
        let typical: Vec<String> = s.typical.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(
            out,
            "Series: {} in {} families; {} carry a task_id ({:.1} per task, {:.0} bytes per task); one task of each profile: {}.\n",
            s.total,
            s.families,
            s.task_series,
            s.per_task,
            s.bytes_per_task,
            typical.join(", ")
        );
    }
    if let Some(h) = &e.health {
        let _ = writeln!(
            out,
            "Health probes (every 250 ms, 2 s timeout): {} sent, {} failed, median {:.1} ms, max {:.1} ms.\n",
            h.probes, h.failures, h.median_ms, h.max_ms
        );
    }
    if let Some(rl) = &e.reload {
        let _ = writeln!(
            out,
            "Reload {:.1}s after spawn: HTTP {} in {:.1} ms.\n",
            rl.at_s, rl.status, rl.latency_ms
        );
    }
    let _ = writeln!(
        out,
        "| requests at the simulator | process | bucket | buckets | mean | min | max | max / mean |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for phase in [Some(e), f].into_iter().flatten() {
        for s in &phase.spread {
            let _ = writeln!(
                out,
                "| {} ({:.1}–{:.1}s) | {} | {} ms | {} | {:.1} | {} | {} | {:.2} |",
                s.window,
                s.from_s,
                s.to_s,
                phase.name,
                s.bucket_ms,
                s.buckets,
                s.mean,
                s.min,
                s.max,
                s.max_over_mean
            );
        }
    }
    let _ = writeln!(out);
    if let Some(l) = &e.life {
        crate::life::markdown(out, l);
    }
    if let Some(rs) = &e.restart {
        restart_markdown(out, rs);
    }
    let _ = writeln!(out);
}

fn opt(v: Option<f64>, precision: usize) -> String {
    v.filter(|v| v.is_finite())
        .map_or("–".into(), |v| format!("{v:.precision$}"))
}

fn rss(v: Option<Rss>) -> String {
    v.map_or("–".into(), |r| {
        format!(
            "{:.1} / {:.1}",
            r.peak_kib as f64 / 1024.0,
            r.now_kib as f64 / 1024.0
        )
    })
}

fn restart_markdown(out: &mut String, r: &crate::storage::RestartStats) {
    let (off, on) = (&r.offline, &r.online);
    let secs = |v: Option<f64>| v.map_or("never".into(), |s| format!("{s:.2}s"));
    let _ = writeln!(out, "### restart on the same store\n");
    let _ = writeln!(out, "| measure | sandbox unreachable | sandbox up |");
    let _ = writeln!(out, "|---|---|---|");
    let _ = writeln!(
        out,
        "| spawn to `/-/healthy` | {:.2}s | {:.2}s |",
        off.healthy_s, on.healthy_s
    );
    let _ = writeln!(
        out,
        "| spawn to `/-/ready` 200 | {} | {} |",
        secs(off.ready_s),
        secs(on.ready_s)
    );
    let _ = writeln!(
        out,
        "| spawn to a `/metrics` with `krs_task_downloads` for every task shown before the stop | {} ({} of {} tasks, {} scrapes; `krs_storage_restored_tasks` {}) | – |",
        secs(off.all_tasks_s),
        off.tasks_shown,
        off.tasks_expected,
        off.scrapes,
        opt(off.restored_tasks, 0)
    );
    let _ = writeln!(
        out,
        "| RSS MiB at healthy (peak / now) | {} | {} |",
        rss(Some(off.rss_at_healthy)),
        rss(Some(on.rss_at_healthy))
    );
    let _ = writeln!(
        out,
        "| RSS MiB after that scrape / at the end | {} | {} |",
        rss(Some(off.rss_after_scrape)),
        rss(Some(on.rss_end))
    );
    let _ = writeln!(
        out,
        "| requests/s at the simulator: first 10 s / later | – | {:.1} / {:.1} |\n",
        on.first_rate, on.later_rate
    );
    let _ = writeln!(
        out,
        "| requests at the simulator | bucket | buckets | mean | min | max | max / mean |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for s in &on.spread {
        let _ = writeln!(
            out,
            "| {} ({:.1}–{:.1}s) | {} ms | {} | {:.1} | {} | {} | {:.2} |",
            s.window,
            s.from_s,
            s.to_s,
            s.bucket_ms,
            s.buckets,
            s.mean,
            s.min,
            s.max,
            s.max_over_mean
        );
    }
    let _ = writeln!(out);
}

/// Bytes with a binary unit.
fn bytes(v: f64) -> String {
    if v >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", v / 1024.0 / 1024.0)
    } else if v >= 1024.0 {
        format!("{:.1} KiB", v / 1024.0)
    } else {
        format!("{v:.0} B")
    }
}

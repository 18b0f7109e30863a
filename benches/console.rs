//! Criterion benchmarks of the triage console's renders, at the fleet sizes the issue names:
//!
//! - `console_overview/{10000,100000}`: the overview (`/`) with the default order (most
//!   dangerous first: one sort of every task), a full feed of 10,000 events and a day of
//!   hourly buckets; what an analyst opening the console costs;
//! - `console_overview_filtered/100000`: `/?q=invoice&sort=name&dir=asc&page=3`, a text
//!   filter over every task, then a sort of the matches;
//! - `console_api_tasks/100000`: `/api/v1/tasks?limit=1000`, the largest JSON page;
//! - `console_task/1000_files`: one task page with the 1,000 files the state keeps at most.
//!
//! The fleet is `support/fleet.rs`'s (three files per task, 10 % of tasks with a Red file), in
//! the state `support/polled.rs` builds, every task polled once.
//! Budget: the overview at 100k tasks within 100 ms on the 2-core reference machine; method
//! and results are in `BENCHMARKS.md` (section "Console").

#[path = "support/fleet.rs"]
mod fleet;
#[path = "support/polled.rs"]
mod polled;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use krs_exporter::journal::{EventKind, Journal, MAX_EVENTS};
use krs_exporter::sandbox::Download;
use krs_exporter::server::console::{Console, Request, Status};
use krs_exporter::state::State;
use krs_exporter::zone::DangerZone;

use polled::{fleet_state, fleet_task_id, quick, report};

fn overview(c: &mut Criterion) {
    let mut group = c.benchmark_group("console_overview");
    for n in [10_000u64, 100_000] {
        let console = console(n);
        let request = Request::parse("/", "").expect("a console path");
        group.bench_with_input(BenchmarkId::from_parameter(n), &request, |b, request| {
            b.iter(|| black_box(console.render(request).body.len()));
        });
    }
    group.finish();

    let console = console(100_000);
    let mut group = c.benchmark_group("console_overview_filtered");
    let request =
        Request::parse("/", "q=invoice&sort=name&dir=asc&page=3").expect("a console path");
    group.bench_function("100000", |b| {
        b.iter(|| black_box(console.render(&request).body.len()));
    });
    group.finish();

    let mut group = c.benchmark_group("console_api_tasks");
    let request = Request::parse("/api/v1/tasks", "limit=1000").expect("a console path");
    group.bench_function("100000", |b| {
        b.iter(|| black_box(console.render(&request).body.len()));
    });
    group.finish();
}

fn task_page(c: &mut Criterion) {
    let id = fleet_task_id(0);
    let state = fleet_state(1, false);
    let files: Vec<Download> = (0..1_000u64)
        .map(|i| Download {
            zone: DangerZone::ALL[(i % 6) as usize],
            name: format!("dropped_{i}.exe"),
            sha256: fleet::fake_hex(id.as_str(), &i.to_string(), 3, 64),
            file_type: "PE32 executable".into(),
            size: 40_000 + i,
            is_https: i % 2 == 0,
            detection_names: vec!["HEUR:Trojan.Win32.Generic".into()],
            yara_rules: vec!["Cobalt_Strike_Beacon".into(), format!("Rule_{}", i % 7)],
            ..Download::default()
        })
        .collect();
    state.apply(report(&id, files));
    let console = console_over(state);
    let request = Request::parse(&format!("/tasks/{id}"), "").expect("a console path");
    let mut group = c.benchmark_group("console_task");
    group.bench_function("1000_files", |b| {
        b.iter(|| black_box(console.render(&request).body.len()));
    });
    group.finish();
}

/// A console over `n` polled fleet tasks with a full feed.
fn console(n: u64) -> Console {
    console_over(fleet_state(n, true))
}

fn console_over(state: State) -> Console {
    let journal = Journal::default();
    let now = SystemTime::now();
    for hour in 0..24u64 {
        let at = now - Duration::from_secs(hour * 3600);
        journal.record(
            at,
            (0..(MAX_EVENTS as u64 / 24)).map(|i| {
                (
                    Some(fleet_task_id(i)),
                    EventKind::NewFile {
                        zone: DangerZone::ALL[(i % 5) as usize],
                        sha256: fleet::fake_hex("event", &i.to_string(), 3, 64).into(),
                        name: format!("file_{i}.bin").into(),
                        rules: Box::default(),
                    },
                )
            }),
        );
    }
    Console {
        state: Arc::new(state),
        journal: Arc::new(journal),
        status: Status::default(),
        banner: None,
        telemetry_path: "/metrics".into(),
        ui_task_url: None,
        now,
    }
}

criterion_group! {
    name = benches;
    config = quick();
    targets = overview, task_page
}
criterion_main!(benches);

//! Criterion benchmarks of the exporter's per-poll and per-scrape hot paths:
//!
//! - `decode_downloads/{1,10,100}`: one downloads body of that many realistic records;
//! - `state_apply/baseline_1000_tasks`: the first poll (which builds the baseline) of each of
//!   the 1,000 tasks of a fresh state, three files each; divide by 1,000 for one apply;
//! - `state_apply/steady_3_files`: a repeat poll with the same three files (the common case)
//!   in a state of 1,000 polled tasks;
//! - `render/{100,1000,10000}`: `Metrics::render` for that many polled tasks with three files
//!   each in the fleet mix of `support/fleet.rs`;
//! - `render_openmetrics/{100,1000,10000}`: the same scrape negotiated as OpenMetrics 1.0.
//!
//! Sampling is kept small (10 samples, 2 s each) so `cargo bench --bench hot_paths` finishes in
//! about a minute; method and results are in `BENCHMARKS.md`.

#[path = "support/fleet.rs"]
mod fleet;
#[path = "support/polled.rs"]
mod polled;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use krs_exporter::config::TaskId;
use krs_exporter::metrics::{Format, Metrics};
use krs_exporter::sandbox::decode::decode_downloads;
use krs_exporter::sandbox::Download;
use krs_exporter::shard::Shard;
use krs_exporter::state::PollReport;
use serde_json::{json, Value};

use polled::{downloads, fleet_state, fleet_task_id, quick, report};

/// Tasks in the state that `state_apply` runs against.
const APPLY_FLEET: u64 = 1_000;

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_downloads");
    for n in [1usize, 10, 100] {
        let body = downloads_body(n);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &body, |b, body| {
            b.iter(|| decode_downloads(black_box(body), 10_000).expect("the bench body decodes"));
        });
    }
    group.finish();
}

fn apply(c: &mut Criterion) {
    let mut group = c.benchmark_group("state_apply");

    // Every task of a fresh state gets its first poll: per-apply time is the reported time
    // divided by APPLY_FLEET (criterion prints it as elements/s). Building the state per task
    // would make the untimed setup dominate the run.
    let reports: Vec<(TaskId, Vec<Download>)> = (0..APPLY_FLEET)
        .map(|i| (fleet_task_id(i), downloads(i)))
        .collect();
    group.throughput(Throughput::Elements(APPLY_FLEET));
    group.bench_function("baseline_1000_tasks", |b| {
        b.iter_batched(
            || {
                let batch: Vec<PollReport> = reports
                    .iter()
                    .map(|(id, files)| report(id, files.clone()))
                    .collect();
                (fleet_state(APPLY_FLEET, false), batch)
            },
            |(state, batch)| {
                for report in batch {
                    black_box(state.apply(report));
                }
                // Returned so the state is dropped outside the timed section.
                state
            },
            BatchSize::LargeInput,
        );
    });

    group.throughput(Throughput::Elements(1));
    let state = fleet_state(APPLY_FLEET, true);
    let task = fleet_task_id(7);
    let files = downloads(7);
    group.bench_function("steady_3_files", |b| {
        b.iter_batched(
            || report(&task, files.clone()),
            |report| state.apply(report),
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

fn render(c: &mut Criterion) {
    let mut group = c.benchmark_group("render");
    for n in [100u64, 1_000, 10_000] {
        let state = fleet_state(n, true);
        let metrics = Metrics::new(Shard::ALL);
        let bytes = metrics.render(&state).len();
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &state, |b, state| {
            b.iter(|| metrics.render(black_box(state)));
        });
    }
    group.finish();

    // The same scrape negotiated as OpenMetrics: the registry through our own encoder, the
    // per-task families with `# UNIT` lines and `# EOF`.
    let mut group = c.benchmark_group("render_openmetrics");
    for n in [100u64, 1_000, 10_000] {
        let state = fleet_state(n, true);
        let metrics = Metrics::new(Shard::ALL);
        let bytes = metrics.render_as(Format::OpenMetrics, &state).len();
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &state, |b, state| {
            b.iter(|| metrics.render_as(Format::OpenMetrics, black_box(state)));
        });
    }
    group.finish();

    // The first scrape after every task's snapshot changed: no snapshot lines to reuse.
    let mut group = c.benchmark_group("render_first_scrape");
    for n in [1_000u64, 10_000] {
        let metrics = Metrics::new(Shard::ALL);
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_batched(
                || fleet_state(n, true),
                |state| metrics.render(&state),
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

/// Compressing the 10k-task exposition as a scrape with `Accept-Encoding: gzip` does: in the
/// renderer's chunks, through one gzip stream, at the level the server uses.
fn gzip(c: &mut Criterion) {
    use std::io::Write;
    let state = fleet_state(10_000, true);
    let metrics = Metrics::new(Shard::ALL);
    let mut chunks = Vec::new();
    metrics.render_chunked(&state, 256 * 1024, &mut |chunk| {
        chunks.push(chunk);
        true
    });
    let plain: usize = chunks.iter().map(String::len).sum();
    let mut group = c.benchmark_group("gzip");
    group.throughput(Throughput::Bytes(plain as u64));
    group.bench_function("10000_tasks", |b| {
        b.iter(|| {
            // flate2::Compression::fast(), as in src/server/scrape.rs.
            let mut encoder = flate2::write::GzEncoder::new(
                Vec::with_capacity(plain / 4),
                flate2::Compression::fast(),
            );
            for chunk in &chunks {
                encoder
                    .write_all(chunk.as_bytes())
                    .expect("writing to a Vec");
            }
            encoder.finish().expect("writing to a Vec")
        })
    });
    group.finish();
}

/// A downloads body of `n` records, written as the vendor documents them (PascalCase keys, an
/// array), taken from consecutive fleet tasks.
fn downloads_body(n: usize) -> Vec<u8> {
    let records: Vec<Value> = (0u64..)
        .flat_map(|t| {
            let id = fleet::task_id(t);
            fleet::files(t).into_iter().map(move |f| (id.clone(), f))
        })
        .take(n)
        .map(|(id, f)| {
            json!({
                "Zone": f.zone,
                "Md5": fleet::fake_hex(&id, &f.name, 1, 32),
                "Sha1": fleet::fake_hex(&id, &f.name, 2, 40),
                "Sha256": fleet::fake_hex(&id, &f.name, 3, 64),
                "DetectionNames": f.detections,
                "Name": f.name,
                "Size": f.size,
                "Type": f.file_type,
                "IsHttpsTraffic": f.https,
                "TriggeredYaraRules": f.yara,
            })
        })
        .collect();
    serde_json::to_vec(&records).expect("serialising JSON values cannot fail")
}

criterion_group! {
    name = benches;
    config = quick();
    targets = decode, apply, render, gzip
}
criterion_main!(benches);

//! How hard the exporter hits an appliance in trouble: the library's exporter against the
//! in-process simulator, with the figures quoted in `docs/reliability.md`.
//!
//! ```text
//! cargo run --release --example appliance -- 503
//! cargo run --release --example appliance -- quarter-500
//! cargo run --release --example appliance -- retry-after-120
//! ```
//!
//! One run: `TASKS` tasks (default 100) polled every 10 s with the default retry settings and
//! concurrency and a 5 s attempt timeout; healthy for the first two intervals, then the fault for `FAULT_SECS` (default
//! 40 s) on every task (`503`, `reset`, `retry-after-120`: a 503 with `Retry-After: 120`) or on
//! every fourth task (`quarter-500`: a 500, the rest healthy). It prints the request rate at the
//! simulator per second (healthy mean, fault mean, fault peak), the exporter's retries over its
//! first attempts during the fault, and how long until every `krs_task_up` read 0.

// A harness's output is its report.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use krs_exporter::app::{self, ConfigSource, Options};
use krs_exporter::shard::Shard;
use krs_sandbox_sim::{self as simulator, Fault, Scenario, SimFile, SimTask};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const USER: &str = "exporter";
const PASSWORD: &str = "appliance-password";
const INTERVAL_SECS: u64 = 10;
const HEALTHY_SECS: u64 = 2 * INTERVAL_SECS;

#[tokio::main]
async fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "503".into());
    let tasks: u32 = env_or("TASKS", 100);
    let fault_secs: u64 = env_or("FAULT_SECS", 40);
    let ids: Vec<String> = (0..tasks)
        .map(|n| format!("00000000-0000-4000-8000-{n:012x}"))
        .collect();
    let healthy = |id: &str| SimTask::new(id).file(SimFile::new("a.exe", "Red"));
    let scenario = Scenario::builder()
        .credentials(USER, PASSWORD)
        .tasks(ids.iter().map(|id| healthy(id)))
        .build()
        .expect("valid scenario");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let token = CancellationToken::new();
    let sim = simulator::start(scenario, listener, token.clone())
        .await
        .expect("simulator starts");

    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("krs-exporter.yml");
    let mut yaml = format!(
        "sandbox:\n  url: {}\n  username: {USER}\n  password: {PASSWORD}\n  timeout: 5s\npolling:\n  interval: {INTERVAL_SECS}s\ntasks:\n",
        sim.base_url()
    );
    for id in &ids {
        yaml.push_str(&format!("  - {id}\n"));
    }
    std::fs::write(&config_path, yaml).expect("write config");
    let source = ConfigSource::File(config_path);
    let active = app::load(&source, Shard::ALL).expect("valid config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let metrics_url = format!("http://{}/metrics", listener.local_addr().expect("addr"));
    let options = Options {
        telemetry_path: "/metrics".into(),
        banner: None,
        shard: Shard::ALL,
        max_requests: 0,
        web: Default::default(),
        hangups: krs_exporter::signals::Hangups::none(),
        connection_limits: Default::default(),
        shutdown_grace: app::DEFAULT_SHUTDOWN_GRACE,
        storage: None,
    };
    let exporter = tokio::spawn(app::run(source, active, listener, options, token.clone()));
    let http = reqwest::Client::new();

    tokio::time::sleep(Duration::from_secs(HEALTHY_SECS)).await;
    let before = scrape(&http, &metrics_url).await;
    let fault_at = sim.elapsed();
    for (n, id) in ids.iter().enumerate() {
        let fault = match mode.as_str() {
            "503" => Some(Fault::status(503)),
            "reset" => Some(Fault::reset()),
            "retry-after-120" => Some(Fault::status(503).retry_after("120")),
            "quarter-500" => (n % 4 == 0).then(|| Fault::status(500)),
            other => panic!("unknown mode {other}"),
        };
        if let Some(fault) = fault {
            sim.add_task(healthy(id).fault(fault).faults_repeat(true));
        }
    }
    let started = Instant::now();
    let mut all_down_after = None;
    while started.elapsed() < Duration::from_secs(fault_secs) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let s = scrape(&http, &metrics_url).await;
        if all_down_after.is_none() && !s.contains("\nkrs_task_up{") {
            continue;
        }
        let any_up = s
            .lines()
            .any(|l| l.starts_with("krs_task_up{") && l.ends_with(" 1"));
        if all_down_after.is_none() && !any_up {
            all_down_after = Some(started.elapsed());
        }
    }
    let after = scrape(&http, &metrics_url).await;
    token.cancel();
    let _ = exporter.await;

    let log = sim.request_log();
    let per_second = |from: Duration, to: Duration| -> Vec<u64> {
        let secs = (to - from).as_secs();
        let mut counts = vec![0u64; secs as usize];
        for r in log.iter().filter(|r| r.at >= from && r.at < to) {
            let i = (r.at - from).as_secs() as usize;
            if i < counts.len() {
                counts[i] += 1;
            }
        }
        counts
    };
    let warm = per_second(Duration::from_secs(INTERVAL_SECS), fault_at);
    let fault = per_second(fault_at, fault_at + Duration::from_secs(fault_secs));
    let mean = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len().max(1) as f64;
    let counter = |s: &str, name: &str| -> f64 {
        s.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let retries =
        counter(&after, "krs_api_retries_total") - counter(&before, "krs_api_retries_total");
    let attempts = counter(&after, "krs_api_requests_total{")
        + counter(&after, "krs_api_request_failures_total{")
        - counter(&before, "krs_api_requests_total{")
        - counter(&before, "krs_api_request_failures_total{");
    let exhausted = counter(&after, "krs_api_retry_budget_exhausted_total")
        - counter(&before, "krs_api_retry_budget_exhausted_total");
    println!("mode: {mode}, {tasks} tasks every {INTERVAL_SECS}s, fault for {fault_secs}s");
    println!("healthy: {:.1} req/s mean", mean(&warm));
    println!(
        "fault: {:.1} req/s mean, {} req/s peak; per second: {:?}",
        mean(&fault),
        fault.iter().max().copied().unwrap_or(0),
        fault
    );
    println!(
        "fault: {retries} retries for {} first attempts ({:.0}%), {exhausted} refused by the budget",
        attempts - retries,
        100.0 * retries / (attempts - retries).max(1.0)
    );
    match all_down_after {
        Some(t) => println!("every krs_task_up 0 after {:.1}s", t.as_secs_f64()),
        None => println!("some krs_task_up still 1 at the end"),
    }
    for line in after.lines().filter(|l| l.starts_with("krs_api_paused")) {
        println!("{line}");
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn scrape(http: &reqwest::Client, url: &str) -> String {
    match http.get(url).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

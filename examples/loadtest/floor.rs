//! The floor: what polling costs with the same crates and nothing else. `loadtest floor ...`
//! runs it as its own process so its CPU is measured apart from the simulator's.
//!
//! Same as the exporter: reqwest with Basic auth and a per-request timeout, serde_json into a
//! `Vec` of records, each task once per interval with the polls evenly paced, at most
//! `concurrency` requests in flight with the permit taken before spawning. Nothing else: no
//! retries, no metrics, no state.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::fleet;

/// `loadtest floor`: the bare polling loop (the harness starts it).
#[derive(Debug, Parser)]
#[command(name = "loadtest floor")]
pub struct FloorArgs {
    #[arg(long)]
    url: String,
    #[arg(long)]
    username: String,
    #[arg(long)]
    password_file: PathBuf,
    #[arg(long)]
    tasks: u64,
    #[arg(long, value_parser = humantime::parse_duration)]
    interval: Duration,
    #[arg(long)]
    concurrency: usize,
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Stop issuing requests after this long.
    #[arg(long, value_parser = humantime::parse_duration)]
    run_for: Duration,
}

/// What the floor prints (one JSON line) when it ends.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct FloorOutcome {
    pub polls: u64,
    pub errors: u64,
    pub files: u64,
}

/// A record as documented; the floor is not liberal in what it accepts.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(dead_code)] // decoded to pay the cost, not read
struct Record {
    zone: String,
    md5: String,
    sha1: String,
    sha256: String,
    detection_names: Vec<String>,
    name: String,
    size: u64,
    #[serde(rename = "Type")]
    file_type: String,
    is_https_traffic: bool,
    triggered_yara_rules: Vec<String>,
}

#[derive(Default)]
struct Counters {
    polls: AtomicU64,
    errors: AtomicU64,
    files: AtomicU64,
}

/// Polls until `run_for` has passed, then prints a [`FloorOutcome`].
pub async fn run(args: FloorArgs) -> ExitCode {
    let password = match std::fs::read_to_string(&args.password_file) {
        Ok(p) => p.trim_end_matches(['\r', '\n']).to_string(),
        Err(e) => {
            eprintln!("floor: {}: {e}", args.password_file.display());
            return ExitCode::FAILURE;
        }
    };
    let client = match reqwest::Client::builder()
        .no_proxy()
        .timeout(args.timeout)
        .pool_max_idle_per_host(args.concurrency)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("floor: {e}");
            return ExitCode::FAILURE;
        }
    };
    let urls: Arc<Vec<String>> = Arc::new(
        (0..args.tasks.max(1))
            .map(|i| {
                format!(
                    "{}/api/v1/sandbox/tasks/{}/downloads",
                    args.url,
                    fleet::task_id(i)
                )
            })
            .collect(),
    );
    let credentials: Arc<(String, String)> = Arc::new((args.username, password));
    let permits = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let counters = Arc::new(Counters::default());
    let period_ns = args.interval.as_nanos() / u128::from(args.tasks.max(1));
    let start = tokio::time::Instant::now();
    let end = start + args.run_for;
    for k in 0u64.. {
        let offset = u64::try_from(period_ns * u128::from(k)).unwrap_or(u64::MAX);
        let due = start + Duration::from_nanos(offset);
        if due >= end {
            break;
        }
        tokio::time::sleep_until(due).await;
        let permit = tokio::select! {
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = tokio::time::sleep_until(end) => break,
        };
        let (client, urls, credentials, counters) = (
            client.clone(),
            Arc::clone(&urls),
            Arc::clone(&credentials),
            Arc::clone(&counters),
        );
        tokio::spawn(async move {
            let url = &urls[(k % urls.len() as u64) as usize];
            match poll(&client, url, &credentials.0, &credentials.1).await {
                Some(files) => {
                    counters.polls.fetch_add(1, Ordering::Relaxed);
                    counters.files.fetch_add(files as u64, Ordering::Relaxed);
                }
                None => {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            drop(permit);
        });
    }
    let all = u32::try_from(args.concurrency).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(args.timeout * 2, permits.acquire_many(all)).await;
    let outcome = FloorOutcome {
        polls: counters.polls.load(Ordering::Relaxed),
        errors: counters.errors.load(Ordering::Relaxed),
        files: counters.files.load(Ordering::Relaxed),
    };
    match serde_json::to_string(&outcome) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("floor: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One poll: the number of records, or `None` on any failure.
async fn poll(client: &reqwest::Client, url: &str, user: &str, password: &str) -> Option<usize> {
    let response = client
        .get(url)
        .basic_auth(user, Some(password))
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    let body = response.bytes().await.ok()?;
    let records: Vec<Record> = serde_json::from_slice(&body).ok()?;
    Some(std::hint::black_box(records).len())
}

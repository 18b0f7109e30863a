//! Peak memory and CPU per hostile downloads body: each class is decoded and digested into a
//! snapshot exactly as a poll does it (`decode_downloads`, then `State::apply`), and the peak
//! resident set above the process's level before the poll is reported as a multiple of the body.
//!
//! ```text
//! cargo run --release --example hostile_bodies
//! ```
//!
//! Linux only: each class runs in a fresh child process (so memory the allocator kept from an
//! earlier class cannot hide a peak), which generates its body, then polls once while a thread
//! samples `VmRSS` from `/proc/self/status` every 0.5 ms. `CPU` is the poll's duration on one
//! thread.

#![allow(clippy::print_stdout)] // a report for a person

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use krs_exporter::config::{TaskId, TaskLabels, TaskSpec};
use krs_exporter::sandbox::decode::decode_downloads;
use krs_exporter::sandbox::Downloads;
use krs_exporter::state::{Limits, PollReport, State, WatchList};

/// The default `sandbox.max_response_bytes`.
const BODY: usize = 16 << 20;
/// The default `sandbox.max_records`.
const MAX_RECORDS: usize = 10_000;

fn main() {
    if let Some(class) = std::env::args()
        .nth(1)
        .and_then(|a| a.parse::<usize>().ok())
    {
        let (name, make) = classes().swap_remove(class);
        measure(name, &make());
        return;
    }
    println!("| body (16 MiB) | records kept | skipped | CPU | peak RSS above start | × body |");
    println!("|---|---|---|---|---|---|");
    let me = std::env::current_exe().expect("the example knows its path");
    for class in 0..classes().len() {
        let status = std::process::Command::new(&me)
            .arg(class.to_string())
            .status()
            .expect("the example can run itself");
        assert!(status.success(), "class {class} failed");
    }
}

/// Each class with the function that generates its body (only the class measured is generated,
/// so nothing freed before the poll is there for the poll to reuse).
type Class = (&'static str, Box<dyn Fn() -> Vec<u8>>);

fn classes() -> Vec<Class> {
    fn fill(open: &[u8], item: &[u8], sep: &[u8], close: &[u8]) -> Vec<u8> {
        let mut body = open.to_vec();
        while body.len() + item.len() + sep.len() + close.len() < BODY {
            body.extend_from_slice(item);
            body.extend_from_slice(sep);
        }
        body.extend_from_slice(item);
        body.extend_from_slice(close);
        body
    }
    fn rules(n: usize) -> Vec<u8> {
        let mut body = br#"[{"Zone":"Red","Sha256":"aa","TriggeredYaraRules":["#.to_vec();
        for i in 0..n {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(format!("\"rule_{i:07}\"").as_bytes());
        }
        body.extend_from_slice(b"]}]");
        body
    }
    vec![
        (
            "`[{},{},…]` (5.6 M empty records)",
            Box::new(|| fill(b"[", b"{}", b",", b"]")),
        ),
        (
            "realistic Red records (~56 k)",
            Box::new(|| {
                fill(
                b"[",
                br#"{"Zone":"Red","Md5":"0123456789abcdef0123456789abcdef","Sha1":"0123456789abcdef0123456789abcdef01234567","Sha256":"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef","DetectionNames":["HEUR:Trojan.Win32.Generic"],"Name":"payload.exe","Size":1024,"Type":"PE32","IsHttpsTraffic":true}"#,
                b",",
                b"]",
            )
            }),
        ),
        (
            "one record, 1 M distinct YARA rules",
            Box::new(|| rules(1_000_000)),
        ),
        (
            "lone surrogates in every name (~600 k records)",
            Box::new(|| fill(b"[", br#"{"Name":"\ud800"}"#, b",", b"]")),
        ),
        (
            "invalid UTF-8 names (~1 M records)",
            Box::new(|| fill(b"[", b"{\"Name\":\"\xff\xfe\"}", b",", b"]")),
        ),
        (
            "`NaN` sizes (~1 M records)",
            Box::new(|| fill(b"[", br#"{"Size":NaN}"#, b",", b"]")),
        ),
        (
            "non-object elements (8 M)",
            Box::new(|| fill(b"[", b"1", b",", b"]")),
        ),
    ]
}

fn measure(name: &str, body: &[u8]) {
    let id = TaskId::parse("0d5b4e44-4c0e-4f0b-9a57-3f2d1b9e6c71").expect("valid id");
    let state = State::new(WatchList {
        tasks: vec![TaskSpec {
            id: id.clone(),
            name: String::new(),
            labels: TaskLabels::default(),
        }]
        .into(),
        label_keys: Vec::new(),
        limits: Limits::default(),
        discovered: 0,
    });
    let before = rss_kib("VmRSS");
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = Arc::clone(&sampling);
        std::thread::spawn(move || {
            let mut peak = 0;
            while sampling.load(Ordering::Relaxed) {
                peak = peak.max(rss_kib("VmRSS"));
                std::thread::sleep(Duration::from_micros(500));
            }
            peak
        })
    };
    let started = Instant::now();
    let decoded = decode_downloads(body, MAX_RECORDS).expect("every class is JSON");
    let (kept, skipped) = (decoded.files.len(), decoded.report.skipped_total());
    state.apply(PollReport {
        task: id,
        finished: SystemTime::now(),
        status: Some(200),
        result: Ok(Downloads::Changed {
            decoded,
            digest: None,
        }),
        life: None,
    });
    let cpu = started.elapsed();
    sampling.store(false, Ordering::Relaxed);
    let peak = sampler
        .join()
        .expect("the sampler does not panic")
        .saturating_sub(before);
    println!(
        "| {name} | {kept} | {skipped} | {:.0} ms | {:.1} MiB | {:.2} |",
        cpu.as_secs_f64() * 1000.0,
        peak as f64 / 1024.0,
        (peak * 1024) as f64 / body.len() as f64
    );
}

fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim_start_matches(':')
                .trim()
                .strip_suffix(" kB")?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

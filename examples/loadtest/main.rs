//! Load harness: the real `krs-exporter` binary against the simulator, measured beside a bare
//! reqwest + serde_json loop (the floor) in the same run. Method and results: `BENCHMARKS.md`.
//!
//! ```text
//! cargo build --release
//! cargo run --release --example loadtest -- --tasks 1000 --interval 1s --duration 30s
//! ```
//!
//! One run, all on 127.0.0.1:
//! 1. starts the simulator in this process with `--tasks` tasks, three files each in the mix of
//!    `benches/support/fleet.rs`; each task answers the same body every time (a finished
//!    task), or with `--changing-bodies` a body stamped with the time of the response;
//! 2. writes an exporter configuration (password in a file, `--interval`, `--concurrency`,
//!    retry defaults) and spawns the exporter binary on a free port;
//! 3. after `--warmup`, measures for `--duration`: requests at the simulator and the exporter's
//!    own `krs_polls_total`, the exporter's CPU (utime+stime from `/proc`) and the machine's;
//!    then times `--scrapes` GETs of `/metrics`, plain and with `Accept-Encoding: gzip`, and
//!    reads RSS (`VmHWM`, `VmRSS`) after start-up, before the first scrape and at the end.
//!    `/-/healthy` is probed every 250 ms throughout; `--reload-at` rewrites the same
//!    configuration and POSTs `/-/reload`;
//! 4. the floor ([`floor`]): this binary again as its own process (`loadtest floor ...`), polling
//!    the same tasks at the same demanded rate and concurrency, measured the same way;
//!    `--rounds N` repeats both phases, alternating which goes first;
//! 5. prints a Markdown report (`--json` for JSON): the table of both phases and their ratios,
//!    the scrape times and sizes, series per task, health, and the per-second and per-100 ms
//!    spread of requests at the simulator over the start (first 3 intervals), the window and
//!    around the reload.
//!
//! With `--discovery` the exporter finds the fleet through the task list instead of a `tasks:`
//! list, lifecycle on (`--mix realistic` gives it states to follow), and the report adds
//! requests per endpoint, the first interval's rate, the detonating tasks' poll gaps and, with
//! `--freshness-every`, the files' freshness ([`life`]).
//!
//! `--storage temp|DIR` gives the exporter a store (`--storage.path`; the default `memory`
//! passes `--storage.path=`), and the report adds its disk writes over the window
//! (`/proc/PID/io`), commits per second and the file's size; `--restart` then starts the
//! exporter twice more on the same directory ([`storage`]).
//!
//! Children are stopped on drop (errors and panics included) and on SIGINT/SIGTERM, and run
//! under `timeout(1)`, so nothing outlives the harness for long ([`proc`]).

// A harness's output is its report.
#![allow(clippy::print_stdout)]

#[path = "../../benches/support/fleet.rs"]
mod fleet;
mod floor;
mod life;
mod measure;
mod mix;
mod phases;
mod proc;
mod report;
mod storage;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use krs_sandbox_sim::{self as simulator, Scenario, SimFile, SimTask};
use tokio_util::sync::CancellationToken;

use report::{Report, Round};

const USER: &str = "exporter";
const PASSWORD: &str = "loadtest-password";

/// Run the exporter and the floor against the simulator, and report.
#[derive(Debug, Parser)]
#[command(name = "loadtest")]
pub struct RunArgs {
    /// Watched tasks (three files each).
    #[arg(long, default_value_t = 1000)]
    tasks: u64,
    /// `polling.interval`: each task is polled once per interval.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// `polling.concurrency`, and the floor's.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Length of the measurement window.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// From `/-/healthy` answering to the window's start [default: the interval, at least 2s].
    #[arg(long, value_parser = humantime::parse_duration)]
    warmup: Option<Duration>,
    /// Rewrite the same configuration and POST /-/reload this long after the exporter started.
    #[arg(long, value_parser = humantime::parse_duration)]
    reload_at: Option<Duration>,
    /// `sandbox.timeout` [default: half the interval (with `--discovery`, of the active
    /// interval), at most 10s].
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// The exporter binary [default: `krs-exporter` beside this example's directory, i.e.
    /// `target/release/krs-exporter`].
    #[arg(long)]
    exporter: Option<PathBuf>,
    /// Run the exporter under this command (split on whitespace), e.g. "valgrind
    /// --tool=callgrind --callgrind-out-file=/tmp/cg.out".
    /// Under valgrind's callgrind, the counters are zeroed at the window's start and dumped at
    /// its end (`callgrind_control`), so the dump holds the window alone.
    #[arg(long)]
    wrap: Option<String>,
    /// Run the floor under this command, like `--wrap`.
    #[arg(long)]
    wrap_floor: Option<String>,
    /// `--log.level` of the exporter.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Timed GETs of /metrics after the window, each plain and gzip.
    #[arg(long, default_value_t = 5)]
    scrapes: usize,
    /// Write the last plain /metrics body of the exporter to this file.
    #[arg(long)]
    save_scrape: Option<PathBuf>,
    /// Skip the floor.
    #[arg(long)]
    no_floor: bool,
    /// Make every response differ (the simulator's `served_at` stamp), so the exporter must
    /// decode and recount every poll instead of recognising an unchanged body: its worst case.
    #[arg(long)]
    changing_bodies: bool,
    /// Run both phases this many times, alternating which goes first (E F, F E, ...); the
    /// summary gives the median ratios.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Print JSON instead of Markdown.
    #[arg(long)]
    json: bool,
    /// The tasks' lifecycle: `finished` (all completed from start) or `realistic` (created over
    /// `--history`, the newest `--detonating` still detonating).
    #[arg(long, value_enum, default_value = "finished")]
    mix: mix::Mix,
    /// With `--mix realistic`: tasks detonating at start.
    #[arg(long, default_value_t = 40)]
    detonating: u64,
    /// With `--mix realistic`: tasks were created over this long before start.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    history: Duration,
    /// With `--mix realistic`: the detonating tasks complete within this long after start.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    detonation: Duration,
    /// With `--mix realistic`: a new sample arrives this often during the run (found through the
    /// task list only).
    #[arg(long, value_parser = humantime::parse_duration)]
    arrival_every: Option<Duration>,
    /// Watch the tasks through a `discovery:` section (lifecycle on) instead of a `tasks:`
    /// list; the report then gives requests per endpoint, the first interval's rate, the
    /// detonating tasks' poll gaps and, with `--freshness-every`, the files' freshness.
    #[arg(long)]
    discovery: bool,
    /// With `--discovery`: `discovery.interval`.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    discovery_interval: Duration,
    /// With `--discovery`: `discovery.page_size`.
    #[arg(long, default_value_t = 500)]
    page_size: usize,
    /// With `--discovery`: `polling.active_interval`.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    active_interval: Duration,
    /// With `--discovery`: `polling.settled_interval` (`0s`: never).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    settled_interval: Duration,
    /// Scrape /metrics this often throughout the phase and time each detonating task's files
    /// from their appearance at the simulator to the first scrape that shows them.
    #[arg(long, value_parser = humantime::parse_duration)]
    freshness_every: Option<Duration>,
    /// The exporter's store: `memory` (`--storage.path=`, nothing written), `temp` (a fresh
    /// directory, removed at the end) or a directory (used as found, and kept). With a store
    /// the report adds the disk bytes written, the commits and the file's size.
    #[arg(long, default_value = "memory")]
    storage: storage::Storage,
    /// With a store: after the phase, start the exporter again on the same directory, first
    /// against a closed port (time to healthy, ready, and a /metrics holding every task, all
    /// from the store), then against the simulator (requests over the first 10 s and the next
    /// `--duration`). Use with `--no-floor` and one round.
    #[arg(long)]
    restart: bool,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadtest: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.get(1).map(String::as_str) == Some("floor") {
        let floor_args = floor::FloorArgs::parse_from(
            std::iter::once("loadtest floor".to_string()).chain(args.into_iter().skip(2)),
        );
        return runtime.block_on(floor::run(floor_args));
    }
    let run_args = RunArgs::parse_from(args);
    // Dropping `run` on a signal drops its process guards, which stop the children.
    let outcome = runtime.block_on(async {
        tokio::select! {
            r = Box::pin(run(run_args)) => r,
            () = stop_signal() => Err("interrupted; children stopped".to_string()),
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadtest: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn run(args: RunArgs) -> Result<(), String> {
    if args.tasks == 0 || args.concurrency == 0 {
        return Err("--tasks and --concurrency must be at least 1".into());
    }
    let exporter_bin = match &args.exporter {
        Some(p) => p.clone(),
        None => default_exporter()?,
    };
    if !exporter_bin.is_file() {
        return Err(format!(
            "exporter binary {} not found: run `cargo build --release` first or pass --exporter",
            exporter_bin.display()
        ));
    }
    let warmup = args
        .warmup
        .unwrap_or_else(|| args.interval.max(Duration::from_secs(2)));
    let timeout = args.timeout.unwrap_or_else(|| {
        let fastest = if args.discovery {
            args.active_interval.min(args.interval)
        } else {
            args.interval
        };
        (fastest / 2).min(Duration::from_secs(10))
    });

    eprintln!("loadtest: building a scenario of {} tasks", args.tasks);
    let mix = mix::MixArgs {
        mix: args.mix,
        tasks: args.tasks,
        detonating: args.detonating.min(args.tasks),
        history: args.history,
        detonation: args.detonation,
        arrival_every: args
            .arrival_every
            .filter(|_| args.mix == mix::Mix::Realistic),
    };
    let mut scenario = Scenario::builder()
        .credentials(USER, PASSWORD)
        .tasks((0..args.tasks).map(|n| sim_task(n, &mix).served_at(args.changing_bodies)));
    if let Some(generator) = mix::arrivals(&mix) {
        scenario = scenario.generator(generator);
    }
    let scenario = scenario.build().map_err(|e| format!("scenario: {e}"))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("binding the simulator: {e}"))?;
    let sim_token = CancellationToken::new();
    let _stop_sim = sim_token.clone().drop_guard();
    let sim = simulator::start(scenario, listener, sim_token.clone())
        .await
        .map_err(|e| format!("starting the simulator: {e}"))?;

    let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let store_dir = storage::StorageDir::new(&args.storage)?;
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).map_err(|e| e.to_string())?;
    let config_path = dir.path().join("krs-exporter.yml");
    let config = exporter_config(&sim.base_url(), &password_file, &args, timeout);
    std::fs::write(&config_path, &config).map_err(|e| e.to_string())?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    let setup = phases::Setup {
        args: &args,
        mix,
        sim: &sim,
        http: &http,
        exporter_bin: &exporter_bin,
        config_path: &config_path,
        config: &config,
        password_file: &password_file,
        dir: dir.path(),
        warmup,
        timeout,
        clk_tck: proc::clk_tck(),
        storage: &store_dir,
    };

    let mut rounds = Vec::new();
    for round in 0..args.rounds.max(1) {
        // Alternate the order so a drift in the machine's load favours neither side.
        let floor_first = round % 2 == 1 && !args.no_floor;
        let mut floor = None;
        if floor_first {
            floor = Some(phases::floor(&setup).await?);
        }
        let exporter = Box::pin(phases::exporter(&setup)).await?;
        if !floor_first && !args.no_floor {
            floor = Some(phases::floor(&setup).await?);
        }
        rounds.push(Round {
            floor_first,
            exporter,
            floor,
        });
    }
    let ratios = |f: fn(&measure::Phase) -> f64| {
        let mut v: Vec<f64> = rounds
            .iter()
            .filter_map(|r| r.floor.as_ref().map(|fl| f(&r.exporter) / f(fl)))
            .filter(|x| x.is_finite())
            .collect();
        (!v.is_empty()).then(|| measure::median(&mut v))
    };
    let median_rate_ratio = ratios(|p| p.polls_per_s);
    let median_cpu_ratio = ratios(|p| p.cpu_us_per_poll);
    let report = Report {
        tasks: args.tasks,
        changing_bodies: args.changing_bodies,
        interval_s: args.interval.as_secs_f64(),
        demanded_polls_per_s: args.tasks as f64 / args.interval.as_secs_f64(),
        concurrency: args.concurrency,
        warmup_s: warmup.as_secs_f64(),
        window_s: args.duration.as_secs_f64(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        clk_tck: setup.clk_tck,
        exporter_binary: exporter_bin.display().to_string(),
        storage: store_dir
            .path
            .as_ref()
            .map_or("memory".into(), |p| format!("`{}`", p.display())),
        rounds,
        median_rate_ratio,
        median_cpu_ratio,
    };
    if args.json {
        let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        println!("{json}");
    } else {
        println!("{}", report::markdown(&report));
    }
    Ok(())
}

fn sim_task(n: u64, mix: &mix::MixArgs) -> SimTask {
    let files = fleet::files(n).into_iter().map(|f| {
        let mut file = SimFile::new(&f.name, f.zone)
            .size(f.size)
            .file_type(f.file_type)
            .https(f.https);
        for d in &f.detections {
            file = file.detection(d);
        }
        for r in &f.yara {
            file = file.yara(r);
        }
        file
    });
    mix::task(n, files.collect(), mix)
}

/// The exporter's configuration: defaults except the sandbox, timing and the watch list (each
/// task named and labelled, as a SOC would write it).
fn exporter_config(url: &str, password_file: &Path, args: &RunArgs, timeout: Duration) -> String {
    let mut yaml = format!(
        "sandbox:\n  url: {url}\n  username: {USER}\n  password_file: {}\n  timeout: {}\npolling:\n  interval: {}\n  concurrency: {}\n",
        password_file.display(),
        humantime::format_duration(timeout),
        humantime::format_duration(args.interval),
        args.concurrency,
    );
    if args.discovery {
        // Everything the simulator holds fits the lookback and the cap: the fleet is watched
        // whole, as a `tasks:` list would watch it.
        let _ = write!(
            yaml,
            "  lifecycle: true\n  active_interval: {}\n  settled_interval: {}\ndiscovery:\n  interval: {}\n  lookback: {}\n  max_tasks: {}\n  page_size: {}\n  labels: {{team: discovered}}\n",
            humantime::format_duration(args.active_interval),
            humantime::format_duration(args.settled_interval),
            humantime::format_duration(args.discovery_interval),
            humantime::format_duration(args.history + Duration::from_secs(24 * 3600)),
            (args.tasks * 2).clamp(1, 1_000_000),
            args.page_size,
        );
        return yaml;
    }
    yaml.push_str("tasks:\n");
    for n in 0..args.tasks {
        let _ = writeln!(
            yaml,
            "  - {{id: {}, name: {}, labels: {{team: {}}}}}",
            fleet::task_id(n),
            fleet::task_name(n),
            fleet::team(n)
        );
    }
    yaml
}

fn default_exporter() -> Result<PathBuf, String> {
    // target/<profile>/examples/loadtest → target/<profile>/krs-exporter
    let me = std::env::current_exe().map_err(|e| format!("locating this binary: {e}"))?;
    me.parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("krs-exporter"))
        .ok_or_else(|| "cannot derive the exporter's path; pass --exporter".into())
}

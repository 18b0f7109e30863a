//! The two phases of a round: the exporter binary, then (or before) the floor, each against
//! the same simulator and measured the same way.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use krs_sandbox_sim::SimHandle;
use tokio_util::sync::CancellationToken;

use crate::floor::FloorOutcome;
use crate::life;
use crate::measure::{self, HealthStats, Phase, ReloadStats, ScrapeStats};
use crate::proc::{self, CpuSample, Proc};
use crate::storage::{self, StorageDir};
use crate::{mix, RunArgs, USER};

/// What both phases share.
pub struct Setup<'a> {
    pub args: &'a RunArgs,
    pub mix: mix::MixArgs,
    pub sim: &'a SimHandle,
    pub http: &'a reqwest::Client,
    pub exporter_bin: &'a Path,
    pub config_path: &'a Path,
    pub config: &'a str,
    pub password_file: &'a Path,
    pub dir: &'a Path,
    pub warmup: Duration,
    pub timeout: Duration,
    pub clk_tck: u64,
    pub storage: &'a StorageDir,
}

/// Health probes and the moment `/-/ready` first answered 200, filled in by [`probe_health`].
#[derive(Default)]
struct Probes {
    /// Latency in ms, or `None` for a failed probe.
    healthy: Vec<Option<f64>>,
    ready_at: Option<Duration>,
}

pub async fn exporter(s: &Setup<'_>) -> Result<Phase, String> {
    let (args, sim, http) = (s.args, s.sim, s.http);
    let port = proc::free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let stderr_path = s.dir.join("exporter.stderr");
    let mut command = wrapper(args.wrap.as_deref());
    command.extend([
        s.exporter_bin.display().to_string(),
        "--config.file".into(),
        s.config_path.display().to_string(),
        "--web.listen-address".into(),
        format!("127.0.0.1:{port}"),
        "--log.level".into(),
        args.log_level.clone(),
        s.storage.flag(),
    ]);
    let budget = s.warmup + args.duration + args.interval * 3 + Duration::from_secs(300);
    sim.reset_stats();
    let spawned_at = sim.elapsed();
    let mut exporter = Proc::spawn("exporter", &command, budget, Some(&stderr_path))?;
    eprintln!(
        "loadtest: exporter pid {} on {base}: {} tasks, interval {}, concurrency {}",
        exporter.pid,
        args.tasks,
        humantime::format_duration(args.interval),
        args.concurrency
    );

    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Some(status) = exporter.exited() {
            return Err(format!(
                "the exporter exited early ({status}):\n{}",
                proc::tail(&stderr_path)
            ));
        }
        if get_status(http, &format!("{base}/-/healthy")).await == Some(200) {
            break;
        }
        if Instant::now() > deadline {
            return Err("the exporter did not answer /-/healthy within 300s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let healthy_at = sim.elapsed();
    let rss_at_healthy = exporter.rss()?;

    let background = CancellationToken::new();
    let _stop_background = background.clone().drop_guard();
    let probes: Arc<Mutex<Probes>> = Arc::default();
    tokio::spawn(probe_health(
        http.clone(),
        base.clone(),
        sim.clone(),
        Arc::clone(&probes),
        background.clone(),
    ));
    let reload: Arc<Mutex<Option<ReloadStats>>> = Arc::default();
    if let Some(at) = args.reload_at {
        tokio::spawn(reload_at(
            http.clone(),
            format!("{base}/-/reload"),
            sim.clone(),
            spawned_at + at,
            spawned_at,
            (s.config_path.to_path_buf(), s.config.to_string()),
            Arc::clone(&reload),
            background.clone(),
        ));
    }

    let seen: life::Seen = Arc::default();
    let watch_from = sim.elapsed();
    if let (true, Some(every)) = (args.discovery, args.freshness_every) {
        tokio::spawn(life::watch(
            http.clone(),
            format!("{base}/metrics"),
            sim.clone(),
            life::detonating_ids(&s.mix),
            every,
            Arc::clone(&seen),
            background.clone(),
        ));
    }

    tokio::time::sleep((healthy_at + s.warmup).saturating_sub(sim.elapsed())).await;
    let rss_before_scrapes = exporter.rss()?;
    let mut scrapes: Vec<(Duration, Duration)> = Vec::new();
    let (polls0, writes0) = timed(sim, &mut scrapes, scrape_polls(http, &base)).await?;
    let polls0_at = Instant::now();
    let io0 = storage::io(exporter.pid);
    let (cpu0, t0, cpu1, t1) =
        measurement_window(&exporter, args.wrap.as_deref(), sim, args.duration).await?;
    let io1 = storage::io(exporter.pid);
    let (polls1, writes1) = timed(sim, &mut scrapes, scrape_polls(http, &base)).await?;
    let polls1_at = Instant::now();

    let mut plain = Vec::new();
    let mut gzip = Vec::new();
    let mut body = Vec::new();
    let mut gzip_bytes = (0, String::new());
    for _ in 0..args.scrapes.max(1) {
        let (ms, b, _) = timed(sim, &mut scrapes, scrape(http, &base, false)).await?;
        plain.push(ms);
        body = b;
        let (ms, b, encoding) = timed(sim, &mut scrapes, scrape(http, &base, true)).await?;
        gzip.push(ms);
        gzip_bytes = (b.len(), encoding);
    }
    let rss_end = exporter.rss()?;
    if let Some(path) = &args.save_scrape {
        std::fs::write(path, &body).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let watch_to = sim.elapsed();
    background.cancel();
    exporter.stop(Duration::from_secs(10));
    let io = storage::per_hour(io0, io1, (t1 - t0).as_secs_f64());
    let store = s.storage.path.as_ref().map(|dir| {
        let text = String::from_utf8_lossy(&body);
        let size = storage::value(&text, "krs_storage_size_bytes").unwrap_or(0.0);
        storage::StoreStats {
            dir: dir.display().to_string(),
            disk_bytes_per_h: io.disk_bytes_per_h,
            wchar_per_h: io.wchar_per_h,
            commits_per_s: (writes1.0 - writes0.0) / (t1 - t0).as_secs_f64(),
            write_failures: writes1.1,
            size_bytes: size,
            file_bytes: s.storage.file_bytes(),
            bytes_per_task: size / args.tasks as f64,
        }
    });

    let log = sim.request_log();
    if (log.len() as u64) < sim.total_requests() {
        eprintln!("loadtest: the simulator's request log overflowed; spreads cover its tail only");
    }
    let requests = measure::count(&log, t0, t1);
    let window = (t1 - t0).as_secs_f64();
    let life = args.discovery.then(|| {
        let watched = args.freshness_every.map(|_| (&seen, watch_from, watch_to));
        let mut stats = life::stats(
            &log,
            &s.mix,
            args.interval,
            args.active_interval,
            (t0, t1),
            watched,
        );
        if let (Some(f), Some(every)) = (stats.freshness.as_mut(), args.freshness_every) {
            f.scrape_every_s = every.as_secs_f64();
        }
        stats
    });
    let reload = lock(&reload).take();
    let mut spread = Vec::new();
    if let Some(first) = log.first().map(|r| r.at) {
        let start_end = (first + args.interval * 3).min(t1);
        for bucket in [Duration::from_secs(1), Duration::from_millis(100)] {
            let start = measure::spread(&log, "start: first 3 intervals", first, start_end, bucket);
            spread.extend(start);
            spread.extend(measure::spread(&log, "measurement window", t0, t1, bucket));
            if let Some(r) = &reload {
                let at = spawned_at + Duration::from_secs_f64(r.at_s);
                let from = at.saturating_sub(args.interval).max(first);
                let to = (at + args.interval * 2).min(t1.max(at));
                spread.extend(measure::spread(&log, "around the reload", from, to, bucket));
            }
        }
    }
    let cpu_s = (cpu1.process - cpu0.process) as f64 / s.clk_tck as f64;
    let cpu_system_s = (cpu1.process_system - cpu0.process_system) as f64 / s.clk_tck as f64;
    let switches_per_poll =
        cpu1.switches.saturating_sub(cpu0.switches) as f64 / requests.max(1) as f64;
    let health = {
        let probes = lock(&probes);
        let mut ok: Vec<f64> = probes.healthy.iter().flatten().copied().collect();
        HealthStats {
            probes: probes.healthy.len(),
            failures: probes.healthy.iter().filter(|p| p.is_none()).count(),
            median_ms: measure::median(&mut ok),
            max_ms: measure::max(&ok),
        }
    };
    let ready_s = lock(&probes)
        .ready_at
        .map(|at| (at - spawned_at).as_secs_f64());
    let restart = match (args.restart, s.storage.path.is_some()) {
        (true, true) => {
            let shown = storage::tasks_with_downloads(&String::from_utf8_lossy(&body));
            Some(storage::restart(s, s.storage, shown).await?)
        }
        _ => None,
    };
    let warnings = std::fs::read_to_string(&stderr_path).ok().map(|text| {
        text.lines()
            .filter(|l| l.contains("level=warn") || l.contains("level=error"))
            .count()
    });
    Ok(Phase {
        name: "exporter".into(),
        startup_s: Some((healthy_at - spawned_at).as_secs_f64()),
        ready_s,
        window_s: window,
        requests,
        non_200: log.iter().filter(|r| r.status != 200).count() as u64,
        polls_per_s: requests as f64 / window,
        polls_per_s_self: Some((polls1 - polls0) / (polls1_at - polls0_at).as_secs_f64()),
        cpu_s,
        cpu_system_s,
        switches_per_poll,
        cpu_us_per_poll: measure::per_poll_us(cpu_s, requests),
        cpu_s_per_1000_polls: measure::per_poll_us(cpu_s, requests) / 1000.0,
        rss_at_healthy: Some(rss_at_healthy),
        rss_before_scrapes: Some(rss_before_scrapes),
        rss_end,
        machine_busy: proc::machine_busy(&cpu0, &cpu1),
        sim_cpu_us_per_request: sim_cpu(&cpu0, &cpu1, s.clk_tck, requests),
        scrape_plain: Some(ScrapeStats {
            median_ms: measure::median(&mut plain.clone()),
            max_ms: measure::max(&plain),
            bytes: body.len(),
            content_encoding: "identity".into(),
        }),
        scrape_gzip: Some(ScrapeStats {
            median_ms: measure::median(&mut gzip.clone()),
            max_ms: measure::max(&gzip),
            bytes: gzip_bytes.0,
            content_encoding: gzip_bytes.1,
        }),
        series: Some(measure::series(&String::from_utf8_lossy(&body), args.tasks)),
        health: Some(health),
        reload,
        stalls: measure::stalls(&log, &scrapes),
        spread,
        exporter_warnings: warnings,
        life,
        io: Some(io),
        store,
        restart,
    })
}

pub async fn floor(s: &Setup<'_>) -> Result<Phase, String> {
    let (args, sim) = (s.args, s.sim);
    let me = std::env::current_exe().map_err(|e| format!("locating this binary: {e}"))?;
    let run_for = s.warmup + args.duration + Duration::from_secs(1);
    let mut command = wrapper(args.wrap_floor.as_deref());
    command.extend([
        me.display().to_string(),
        "floor".into(),
        "--url".into(),
        sim.base_url(),
        "--username".into(),
        USER.into(),
        "--password-file".into(),
        s.password_file.display().to_string(),
        "--tasks".into(),
        args.tasks.to_string(),
        "--interval".into(),
        humantime::format_duration(args.interval).to_string(),
        "--concurrency".into(),
        args.concurrency.to_string(),
        "--timeout".into(),
        humantime::format_duration(s.timeout).to_string(),
        "--run-for".into(),
        humantime::format_duration(run_for).to_string(),
    ]);
    sim.reset_stats();
    let floor = Proc::spawn("floor", &command, run_for + Duration::from_secs(120), None)?;
    eprintln!("loadtest: floor pid {}", floor.pid);
    tokio::time::sleep(s.warmup).await;
    let (cpu0, t0, cpu1, t1) =
        measurement_window(&floor, args.wrap_floor.as_deref(), sim, args.duration).await?;
    let rss_end = floor.rss()?;
    let output = tokio::task::spawn_blocking(move || floor.wait_output(Duration::from_secs(60)))
        .await
        .map_err(|e| e.to_string())??;
    let outcome: FloorOutcome =
        serde_json::from_str(output.trim()).map_err(|e| format!("floor output {output:?}: {e}"))?;
    let log = sim.request_log();
    let requests = measure::count(&log, t0, t1);
    let window = (t1 - t0).as_secs_f64();
    let cpu_s = (cpu1.process - cpu0.process) as f64 / s.clk_tck as f64;
    let cpu_system_s = (cpu1.process_system - cpu0.process_system) as f64 / s.clk_tck as f64;
    let switches_per_poll =
        cpu1.switches.saturating_sub(cpu0.switches) as f64 / requests.max(1) as f64;
    let mut spread = Vec::new();
    for bucket in [Duration::from_secs(1), Duration::from_millis(100)] {
        spread.extend(measure::spread(&log, "measurement window", t0, t1, bucket));
    }
    Ok(Phase {
        name: "floor".into(),
        window_s: window,
        requests,
        non_200: log.iter().filter(|r| r.status != 200).count() as u64 + outcome.errors,
        polls_per_s: requests as f64 / window,
        cpu_s,
        cpu_system_s,
        switches_per_poll,
        cpu_us_per_poll: measure::per_poll_us(cpu_s, requests),
        cpu_s_per_1000_polls: measure::per_poll_us(cpu_s, requests) / 1000.0,
        rss_end,
        machine_busy: proc::machine_busy(&cpu0, &cpu1),
        sim_cpu_us_per_request: sim_cpu(&cpu0, &cpu1, s.clk_tck, requests),
        stalls: measure::stalls(&log, &[]),
        spread,
        ..Phase::default()
    })
}

/// Waits out the measurement window of `p`: its CPU and the simulator's clock at the start
/// and the end. Under callgrind (`wrap`) the counters are zeroed at the start and dumped at
/// the end, so the dump holds the window alone.
async fn measurement_window(
    p: &Proc,
    wrap: Option<&str>,
    sim: &SimHandle,
    duration: Duration,
) -> Result<(CpuSample, Duration, CpuSample, Duration), String> {
    let profiled = callgrind(wrap, p.pid, "--zero");
    let (cpu0, t0) = (p.cpu()?, sim.elapsed());
    tokio::time::sleep(duration).await;
    let (cpu1, t1) = (p.cpu()?, sim.elapsed());
    if profiled {
        callgrind(wrap, p.pid, "--dump=measurement-window");
    }
    Ok((cpu0, t0, cpu1, t1))
}

/// The `--wrap` command, split on whitespace.
fn wrapper(wrap: Option<&str>) -> Vec<String> {
    wrap.map(|w| w.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// `callgrind_control <action> <pid>` when the process runs under callgrind; whether it does.
fn callgrind(wrap: Option<&str>, pid: u32, action: &str) -> bool {
    if !wrap.is_some_and(|w| w.contains("callgrind")) {
        return false;
    }
    let done = std::process::Command::new("callgrind_control")
        .args([action, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !done {
        eprintln!("loadtest: callgrind_control {action} {pid} failed");
    }
    true
}

fn sim_cpu(a: &CpuSample, b: &CpuSample, clk_tck: u64, requests: u64) -> f64 {
    measure::per_poll_us((b.harness - a.harness) as f64 / clk_tck as f64, requests)
}

/// Runs `f`, recording its start and end on the simulator's clock into `windows`.
async fn timed<T>(
    sim: &SimHandle,
    windows: &mut Vec<(Duration, Duration)>,
    f: impl std::future::Future<Output = T>,
) -> T {
    let start = sim.elapsed();
    let out = f.await;
    windows.push((start, sim.elapsed()));
    out
}

/// Probes `/-/healthy` every 250 ms (2 s timeout), and `/-/ready` until it first answers 200.
async fn probe_health(
    http: reqwest::Client,
    base: String,
    sim: SimHandle,
    probes: Arc<Mutex<Probes>>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let started = Instant::now();
        let ok = get_status(&http, &format!("{base}/-/healthy")).await == Some(200);
        lock(&probes)
            .healthy
            .push(ok.then(|| started.elapsed().as_secs_f64() * 1e3));
        if lock(&probes).ready_at.is_none()
            && get_status(&http, &format!("{base}/-/ready")).await == Some(200)
        {
            lock(&probes).ready_at = Some(sim.elapsed());
        }
    }
}

/// At `at` on the simulator's clock, rewrites the same configuration and POSTs `/-/reload`.
#[allow(clippy::too_many_arguments)]
async fn reload_at(
    http: reqwest::Client,
    url: String,
    sim: SimHandle,
    at: Duration,
    spawned_at: Duration,
    (path, config): (PathBuf, String),
    out: Arc<Mutex<Option<ReloadStats>>>,
    stop: CancellationToken,
) {
    tokio::select! {
        () = tokio::time::sleep(at.saturating_sub(sim.elapsed())) => {}
        () = stop.cancelled() => return,
    }
    if let Err(e) = std::fs::write(&path, config) {
        eprintln!("loadtest: rewriting {}: {e}", path.display());
    }
    let sent = sim.elapsed();
    let started = Instant::now();
    let status = http
        .post(&url)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16());
    *lock(&out) = Some(ReloadStats {
        at_s: (sent - spawned_at).as_secs_f64(),
        status,
        latency_ms: started.elapsed().as_secs_f64() * 1e3,
    });
}

pub async fn get_status(http: &reqwest::Client, url: &str) -> Option<u16> {
    http.get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

/// One GET of /metrics: wall milliseconds to the last byte, the body as sent, its
/// `Content-Encoding`.
pub async fn scrape(
    http: &reqwest::Client,
    base: &str,
    gzip: bool,
) -> Result<(f64, Vec<u8>, String), String> {
    let mut request = http
        .get(format!("{base}/metrics"))
        .timeout(Duration::from_secs(120));
    if gzip {
        // What Prometheus sends.
        request = request.header(
            reqwest::header::ACCEPT_ENCODING,
            "gzip, deflate;q=0.5, identity;q=0.1",
        );
    }
    let started = Instant::now();
    let response = request
        .send()
        .await
        .map_err(|e| format!("GET /metrics: {e}"))?;
    let status = response.status();
    let encoding = response
        .headers()
        .get(reqwest::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .to_string();
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("GET /metrics body: {e}"))?;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    if status != 200 {
        return Err(format!("GET /metrics answered {status}"));
    }
    Ok((ms, body.to_vec(), encoding))
}

/// `krs_polls_total`, and the store's writes and failures (0 without a store).
async fn scrape_polls(http: &reqwest::Client, base: &str) -> Result<(f64, (f64, f64)), String> {
    let (_, body, _) = scrape(http, base, false).await?;
    let text = String::from_utf8_lossy(&body);
    let polls = storage::value(&text, "krs_polls_total")
        .ok_or_else(|| "krs_polls_total missing from /metrics".to_string())?;
    let writes = storage::value(&text, "krs_storage_writes_total").unwrap_or(0.0);
    let failures = storage::value(&text, "krs_storage_write_failures_total").unwrap_or(0.0);
    Ok((polls, (writes, failures)))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

//! `--storage`: where the exporter keeps its state, what writing it costs (`/proc/PID/io`,
//! `krs_storage_*`), and `--restart`: the same directory read back by a second and a third
//! exporter, first against a closed port (what the store alone shows), then against the
//! simulator (whether the restored tasks are re-polled in a burst).

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::measure::{self, Spread};
use crate::phases::{self, Setup};
use crate::proc::{self, Proc, Rss};

/// `--storage memory|temp|DIR`.
#[derive(Clone, Debug)]
pub enum Storage {
    /// `--storage.path=`: nothing written.
    Memory,
    /// A fresh temporary directory, removed at the end.
    Temp,
    /// This directory, used as found and kept.
    Dir(PathBuf),
}

impl std::str::FromStr for Storage {
    type Err = String;

    fn from_str(s: &str) -> Result<Storage, String> {
        Ok(match s {
            "memory" => Storage::Memory,
            "temp" => Storage::Temp,
            "" => return Err("an empty directory; say `memory` for no store".into()),
            dir => Storage::Dir(PathBuf::from(dir)),
        })
    }
}

/// The directory a run's exporters share, `None` in memory; a `temp` one lives as long as this.
pub struct StorageDir {
    pub path: Option<PathBuf>,
    _temp: Option<tempfile::TempDir>,
}

impl StorageDir {
    pub fn new(storage: &Storage) -> Result<StorageDir, String> {
        let (path, temp) = match storage {
            Storage::Memory => (None, None),
            Storage::Temp => {
                let temp = tempfile::Builder::new()
                    .prefix("loadtest-store")
                    .tempdir()
                    .map_err(|e| format!("storage tempdir: {e}"))?;
                (Some(temp.path().to_path_buf()), Some(temp))
            }
            Storage::Dir(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                (Some(dir.clone()), None)
            }
        };
        Ok(StorageDir { path, _temp: temp })
    }

    /// The exporter's flag.
    pub fn flag(&self) -> String {
        format!(
            "--storage.path={}",
            self.path
                .as_ref()
                .map_or(String::new(), |p| p.display().to_string())
        )
    }

    pub fn file_bytes(&self) -> Option<u64> {
        let path = self.path.as_ref()?.join("krs-exporter.redb");
        std::fs::metadata(path).ok().map(|m| m.len())
    }
}

/// `/proc/PID/io`: bytes handed to `write(2)` and friends (sockets included), and bytes the
/// process caused to be written to the disk.
#[derive(Clone, Copy, Debug, Default)]
pub struct Io {
    pub wchar: u64,
    pub write_bytes: u64,
}

pub fn io(pid: u32) -> Io {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    Io {
        wchar: field("wchar:"),
        write_bytes: field("write_bytes:"),
    }
}

/// What the store cost over the measurement window, and its size at the end.
#[derive(Debug, Default, Serialize)]
pub struct StoreStats {
    pub dir: String,
    /// `write_bytes` of the exporter over the window, per hour.
    pub disk_bytes_per_h: f64,
    /// `wchar` over the window, per hour (the HTTP traffic included).
    pub wchar_per_h: f64,
    /// `krs_storage_writes_total` over the window, per second.
    pub commits_per_s: f64,
    pub write_failures: f64,
    /// `krs_storage_size_bytes` at the end.
    pub size_bytes: f64,
    /// The file's size after the exporter stopped.
    pub file_bytes: Option<u64>,
    pub bytes_per_task: f64,
}

/// The exporter's `/proc/PID/io` over the window, whatever the storage (the memory figure is
/// the baseline of `wchar`).
#[derive(Debug, Default, Serialize)]
pub struct IoStats {
    pub disk_bytes_per_h: f64,
    pub wchar_per_h: f64,
}

pub fn per_hour(a: Io, b: Io, window_s: f64) -> IoStats {
    let h = 3600.0 / window_s;
    IoStats {
        disk_bytes_per_h: b.write_bytes.saturating_sub(a.write_bytes) as f64 * h,
        wchar_per_h: b.wchar.saturating_sub(a.wchar) as f64 * h,
    }
}

/// The first value of `name` (a sample without labels) in a text exposition.
pub fn value(body: &str, name: &str) -> Option<f64> {
    body.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// Tasks with at least one `krs_task_downloads` series.
pub fn tasks_with_downloads(body: &str) -> usize {
    let mut tasks = HashSet::new();
    for line in body.lines() {
        let Some(labels) = line.strip_prefix("krs_task_downloads{") else {
            continue;
        };
        if let Some(at) = labels.find("task_id=\"") {
            let id = &labels[at + 9..];
            if let Some(end) = id.find('"') {
                tasks.insert(&id[..end]);
            }
        }
    }
    tasks.len()
}

/// `--restart`: the store read back with the sandbox unreachable, then with it up.
#[derive(Debug, Default, Serialize)]
pub struct RestartStats {
    /// Sandbox unreachable (a closed port): everything shown comes from the store.
    pub offline: Offline,
    /// Against the simulator again.
    pub online: Online,
}

#[derive(Debug, Default, Serialize)]
pub struct Offline {
    pub healthy_s: f64,
    pub ready_s: Option<f64>,
    /// The first `/metrics` with `krs_task_downloads` for as many tasks as the last scrape
    /// before the stop (every task with a fixed list; with discovery, the tasks never polled,
    /// failed ones, have none).
    pub all_tasks_s: Option<f64>,
    pub tasks_expected: usize,
    pub tasks_shown: usize,
    pub restored_tasks: Option<f64>,
    pub rss_at_healthy: Rss,
    pub rss_after_scrape: Rss,
    pub scrapes: usize,
}

#[derive(Debug, Default, Serialize)]
pub struct Online {
    pub healthy_s: f64,
    pub ready_s: Option<f64>,
    pub rss_at_healthy: Rss,
    pub rss_end: Rss,
    /// Requests at the simulator per second over the first `FIRST` after spawn.
    pub first_rate: f64,
    /// The same over the following `--duration`.
    pub later_rate: f64,
    pub spread: Vec<Spread>,
}

const FIRST: Duration = Duration::from_secs(10);

/// `expected`: tasks with `krs_task_downloads` in the last scrape before the stop.
pub async fn restart(
    s: &Setup<'_>,
    storage: &StorageDir,
    expected: usize,
) -> Result<RestartStats, String> {
    let http = s.http;
    // A port nobody listens on: the store alone feeds /metrics.
    let dead = format!("http://127.0.0.1:{}", proc::free_port()?);
    let offline_config = s.dir.join("krs-exporter-offline.yml");
    std::fs::write(&offline_config, s.config.replace(&s.sim.base_url(), &dead))
        .map_err(|e| e.to_string())?;
    let mut offline = Offline {
        tasks_expected: expected,
        ..Offline::default()
    };
    {
        let (exporter, base, spawned) = spawn(s, storage, &offline_config, "offline").await?;
        offline.healthy_s = spawned.elapsed().as_secs_f64();
        offline.rss_at_healthy = exporter.rss()?;
        let limit = Instant::now() + Duration::from_secs(60);
        while Instant::now() < limit {
            if offline.ready_s.is_none()
                && phases::get_status(http, &format!("{base}/-/ready")).await == Some(200)
            {
                offline.ready_s = Some(spawned.elapsed().as_secs_f64());
            }
            if offline.all_tasks_s.is_none() {
                let (_, body, _) = phases::scrape(http, &base, false).await?;
                let at = spawned.elapsed().as_secs_f64();
                offline.scrapes += 1;
                let body = String::from_utf8_lossy(&body);
                offline.tasks_shown = tasks_with_downloads(&body);
                offline.restored_tasks = value(&body, "krs_storage_restored_tasks");
                if offline.tasks_shown >= expected {
                    offline.all_tasks_s = Some(at);
                    offline.rss_after_scrape = exporter.rss()?;
                }
            }
            // Ready may need polls the closed port never answers: give it 5 s more.
            let done = offline.all_tasks_s.is_some_and(|at| {
                offline.ready_s.is_some() || spawned.elapsed().as_secs_f64() > at + 5.0
            });
            if done {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if offline.all_tasks_s.is_none() {
            offline.rss_after_scrape = exporter.rss()?;
        }
        stop(exporter);
    }

    let mut online = Online::default();
    s.sim.reset_stats();
    let from = s.sim.elapsed();
    let (exporter, base, spawned) = spawn(s, storage, s.config_path, "online").await?;
    online.healthy_s = spawned.elapsed().as_secs_f64();
    online.rss_at_healthy = exporter.rss()?;
    let end = spawned + FIRST + s.args.duration;
    while Instant::now() < end {
        if online.ready_s.is_none()
            && phases::get_status(http, &format!("{base}/-/ready")).await == Some(200)
        {
            online.ready_s = Some(spawned.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    online.rss_end = exporter.rss()?;
    stop(exporter);
    let log = s.sim.request_log();
    let mid = from + FIRST;
    let to = mid + s.args.duration;
    online.first_rate = measure::count(&log, from, mid) as f64 / FIRST.as_secs_f64();
    online.later_rate = measure::count(&log, mid, to) as f64 / s.args.duration.as_secs_f64();
    for bucket in [Duration::from_secs(1), Duration::from_millis(100)] {
        online.spread.extend(measure::spread(
            &log,
            "after the restart: first 10 s",
            from,
            mid,
            bucket,
        ));
        online.spread.extend(measure::spread(
            &log,
            "after the restart: later",
            mid,
            to,
            bucket,
        ));
    }
    Ok(RestartStats { offline, online })
}

/// Spawns the exporter on `config` and the run's store; returns once `/-/healthy` answers.
async fn spawn(
    s: &Setup<'_>,
    storage: &StorageDir,
    config: &std::path::Path,
    what: &str,
) -> Result<(Proc, String, Instant), String> {
    let port = proc::free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let stderr_path = s.dir.join(format!("exporter-restart-{what}.stderr"));
    let command = vec![
        s.exporter_bin.display().to_string(),
        "--config.file".into(),
        config.display().to_string(),
        "--web.listen-address".into(),
        format!("127.0.0.1:{port}"),
        "--log.level".into(),
        s.args.log_level.clone(),
        storage.flag(),
    ];
    let budget = FIRST + s.args.duration + Duration::from_secs(300);
    let spawned = Instant::now();
    let mut exporter = Proc::spawn("exporter", &command, budget, Some(&stderr_path))?;
    eprintln!(
        "loadtest: restart ({what}): exporter pid {} on {base}",
        exporter.pid
    );
    let deadline = spawned + Duration::from_secs(300);
    loop {
        if let Some(status) = exporter.exited() {
            return Err(format!(
                "the restarted exporter exited early ({status}):\n{}",
                proc::tail(&stderr_path)
            ));
        }
        if phases::get_status(s.http, &format!("{base}/-/healthy")).await == Some(200) {
            return Ok((exporter, base, spawned));
        }
        if Instant::now() > deadline {
            return Err("the restarted exporter did not answer /-/healthy within 300s".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn stop(mut exporter: Proc) {
    exporter.stop(Duration::from_secs(30));
}

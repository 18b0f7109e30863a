//! Test support: an in-process simulated sandbox, an exporter spawner on `127.0.0.1:0` (in
//! process, or as the real binary for signal and exit-code tests), and a scrape-and-parse
//! helper.

pub mod exposition;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use krs_exporter::app::{self, ConfigSource, Options};
use krs_exporter::shard::Shard;
use krs_exporter::signals::Hangups;
use krs_exporter::store::StorageDir;
use krs_sandbox_sim::{self as simulator, Scenario, SimHandle, SimTask};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use exposition::Scrape;

pub const USER: &str = "exporter";
/// Distinctive so a test can search every output for it.
pub const PASSWORD: &str = "Pw-7f3a9c1e-never-print-me";

/// How long any single condition may take to become true.
const DEADLINE: Duration = Duration::from_secs(20);

/// A deterministic task id for test number `n`.
pub fn id(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

/// Runs a test body under a timeout, so a hang fails instead of blocking CI.
pub async fn within<F: Future>(body: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), body)
        .await
        .expect("test did not finish within 60 s")
}

/// Polls `check` every 25 ms until it returns `Some`, failing the test after the deadline.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The simulated sandbox, stopped when dropped.
pub struct Sandbox {
    pub sim: SimHandle,
    token: CancellationToken,
    scenario: Scenario,
}

impl Sandbox {
    pub async fn start(tasks: Vec<SimTask>) -> Sandbox {
        let scenario = Scenario::builder()
            .credentials(USER, PASSWORD)
            .tasks(tasks)
            .build()
            .expect("valid test scenario");
        Sandbox::with_scenario(scenario).await
    }

    pub async fn with_scenario(scenario: Scenario) -> Sandbox {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let token = CancellationToken::new();
        let sim = simulator::start(scenario.clone(), listener, token.clone())
            .await
            .expect("simulator starts");
        Sandbox {
            sim,
            token,
            scenario,
        }
    }

    /// Stops the simulator: connections to its port are refused until [`Sandbox::restart`].
    pub async fn stop(&self) {
        self.token.cancel();
        self.sim.closed().await;
    }

    /// Starts the simulator again on the same address with the original scenario.
    pub async fn restart(&mut self) {
        let addr = self.sim.addr();
        let listener = eventually("the old port can be bound again", || async {
            TcpListener::bind(addr).await.ok()
        })
        .await;
        self.token = CancellationToken::new();
        self.sim = simulator::start(self.scenario.clone(), listener, self.token.clone())
            .await
            .expect("simulator restarts");
    }

    pub fn url(&self) -> String {
        self.sim.base_url()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// A configuration file for tests: fast polling, short retries, no health checks (their
/// requests would change the counts other tests assert on; the health tests turn them on).
pub struct ConfigYaml {
    pub url: String,
    pub password: String,
    pub tasks: Vec<String>,
    pub interval: &'static str,
    /// `polling.health_interval`; `0s` (off) unless a test sets it.
    pub health_interval: &'static str,
    pub timeout: &'static str,
    pub retry: &'static str,
    pub max_response_bytes: u64,
    /// `polling.active_interval`, `polling.settled_interval`, `polling.lifecycle`: the file
    /// leaves them out (their defaults apply) unless a test sets them.
    pub active_interval: Option<&'static str>,
    pub settled_interval: Option<&'static str>,
    pub lifecycle: Option<bool>,
    /// The `discovery:` section; none unless a test adds one.
    pub discovery: Option<DiscoveryYaml>,
    pub extra: String,
}

/// A `discovery:` section for tests: the list read every second unless a test says otherwise;
/// the other keys are left out (their defaults apply) unless set.
pub struct DiscoveryYaml {
    pub interval: &'static str,
    pub lookback: Option<&'static str>,
    pub zones: Vec<&'static str>,
    pub max_tasks: Option<u64>,
    pub page_size: Option<u64>,
    pub labels: Vec<(&'static str, &'static str)>,
}

impl Default for DiscoveryYaml {
    fn default() -> Self {
        DiscoveryYaml {
            interval: "1s",
            lookback: None,
            zones: Vec::new(),
            max_tasks: None,
            page_size: None,
            labels: Vec::new(),
        }
    }
}

impl DiscoveryYaml {
    fn render(&self) -> String {
        let mut out = format!("discovery:\n  interval: {}\n", self.interval);
        if let Some(lookback) = self.lookback {
            out.push_str(&format!("  lookback: {lookback}\n"));
        }
        if !self.zones.is_empty() {
            out.push_str(&format!("  zones: [{}]\n", self.zones.join(", ")));
        }
        if let Some(n) = self.max_tasks {
            out.push_str(&format!("  max_tasks: {n}\n"));
        }
        if let Some(n) = self.page_size {
            out.push_str(&format!("  page_size: {n}\n"));
        }
        if !self.labels.is_empty() {
            out.push_str("  labels:\n");
            for (k, v) in &self.labels {
                out.push_str(&format!("    {k}: \"{v}\"\n"));
            }
        }
        out
    }
}

impl ConfigYaml {
    pub fn new(url: &str, tasks: &[&str]) -> Self {
        ConfigYaml {
            url: url.to_string(),
            password: PASSWORD.to_string(),
            tasks: tasks.iter().map(|t| t.to_string()).collect(),
            interval: "1s",
            health_interval: "0s",
            timeout: "500ms",
            retry: "{initial_interval: 50ms, max_interval: 200ms, randomization_factor: 0.1, max_elapsed_time: 900ms}",
            max_response_bytes: 65536,
            active_interval: None,
            settled_interval: None,
            lifecycle: None,
            discovery: None,
            extra: String::new(),
        }
    }

    /// With a `discovery:` section (which turns the lifecycle on unless `lifecycle` says not).
    pub fn discover(mut self, discovery: DiscoveryYaml) -> Self {
        self.discovery = Some(discovery);
        self
    }

    pub fn render(&self) -> String {
        let mut tasks = String::new();
        for t in &self.tasks {
            tasks.push_str(&format!("  - {t}\n"));
        }
        if tasks.is_empty() {
            tasks.push_str("  []\n");
        }
        let mut lifecycle = String::new();
        if let Some(active) = self.active_interval {
            lifecycle.push_str(&format!("  active_interval: {active}\n"));
        }
        if let Some(settled) = self.settled_interval {
            lifecycle.push_str(&format!("  settled_interval: {settled}\n"));
        }
        if let Some(on) = self.lifecycle {
            lifecycle.push_str(&format!("  lifecycle: {on}\n"));
        }
        let discovery = self
            .discovery
            .as_ref()
            .map(DiscoveryYaml::render)
            .unwrap_or_default();
        format!(
            "sandbox:\n  url: {url}\n  username: {USER}\n  password: \"{pw}\"\n  timeout: {timeout}\n  max_response_bytes: {max}\npolling:\n  interval: {interval}\n  health_interval: {health}\n  concurrency: 4\n{lifecycle}  retry: {retry}\n{discovery}tasks:\n{tasks}{extra}",
            url = self.url,
            pw = self.password,
            timeout = self.timeout,
            interval = self.interval,
            health = self.health_interval,
            retry = self.retry,
            max = self.max_response_bytes,
            extra = self.extra,
        )
    }
}

/// An exporter running in this process, stopped when dropped.
pub struct Exporter {
    pub addr: SocketAddr,
    pub config_path: PathBuf,
    _dir: tempfile::TempDir,
    token: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    http: reqwest::Client,
}

impl Exporter {
    /// Writes `yaml` to a file, loads it as the binary would, and serves on `127.0.0.1:0`.
    pub async fn start(yaml: &str) -> Exporter {
        Exporter::start_shard(yaml, Shard::ALL).await
    }

    /// Like [`Exporter::start`], polling only the tasks of `shard`.
    pub async fn start_shard(yaml: &str, shard: Shard) -> Exporter {
        Exporter::start_with(yaml, shard, None).await
    }

    /// Like [`Exporter::start`], keeping its state in `storage` (`--storage.path`).
    pub async fn start_stateful(yaml: &str, storage: &Path) -> Exporter {
        let dir = StorageDir::acquire(storage.to_path_buf()).expect("the directory is free");
        Exporter::start_with(yaml, Shard::ALL, Some(dir)).await
    }

    async fn start_with(yaml: &str, shard: Shard, storage: Option<StorageDir>) -> Exporter {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("krs-exporter.yml");
        std::fs::write(&config_path, yaml).expect("write config");
        let source = ConfigSource::File(config_path.clone());
        let active =
            app::load(&source, shard).unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let token = CancellationToken::new();
        let options = Options {
            telemetry_path: "/metrics".into(),
            banner: None,
            shard,
            max_requests: 40,
            web: Default::default(),
            hangups: Hangups::none(),
            connection_limits: Default::default(),
            shutdown_grace: app::DEFAULT_SHUTDOWN_GRACE,
            storage,
        };
        let run = app::run(source, active, listener, options, token.clone());
        let task = tokio::spawn(async move {
            run.await.expect("the exporter runs");
        });
        Exporter {
            addr,
            config_path,
            _dir: dir,
            token,
            task: Some(task),
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = self.http.get(self.url(path)).send().await.expect("GET");
        (r.status().as_u16(), r.text().await.expect("body"))
    }

    pub async fn post(&self, path: &str) -> (u16, String) {
        let r = self.http.post(self.url(path)).send().await.expect("POST");
        (r.status().as_u16(), r.text().await.expect("body"))
    }

    pub async fn scrape(&self) -> Scrape {
        let (status, body) = self.get("/metrics").await;
        assert_eq!(status, 200, "/metrics answered {status}");
        Scrape::parse(&body)
    }

    /// Scrapes until `check` holds, returning that scrape.
    pub async fn scrape_until(&self, what: &str, check: impl Fn(&Scrape) -> bool) -> Scrape {
        eventually(what, || async {
            let s = self.scrape().await;
            check(&s).then_some(s)
        })
        .await
    }

    pub fn write_config(&self, yaml: &str) {
        std::fs::write(&self.config_path, yaml).expect("rewrite config");
    }

    /// Cancels and waits for a clean stop, returning how long it took.
    pub async fn stop(mut self) -> Duration {
        let start = Instant::now();
        self.token.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("exporter task ends without panicking");
        }
        start.elapsed()
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// The exporter binary, for tests of flags, signals and exit codes; its state in memory (tests
/// run side by side, and the default `data/` would be one directory for all of them).
pub fn binary() -> Command {
    let mut command = stateful_binary();
    command.arg("--storage.path=");
    command
}

/// The exporter binary without a `--storage.path`: the caller names one.
pub fn stateful_binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_krs-exporter"))
}

/// What a finished run of the binary printed.
pub struct Finished {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Runs `command` to completion, killing it and failing the test if it takes longer than `limit`
/// (`Command::output` would wait forever on a hung process).
pub fn run_within(command: &mut Command, limit: Duration) -> Finished {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let start = Instant::now();
    let mut child = command
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("spawn");
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "still running after {limit:?}; stderr:\n{}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Finished {
        status,
        stdout: std::fs::read_to_string(&out).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err).unwrap_or_default(),
        elapsed: start.elapsed(),
    }
}

/// Makes a FIFO at `path`: opening it for reading blocks until a writer appears, which none will.
pub fn mkfifo(path: &Path) -> PathBuf {
    let status = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("run mkfifo");
    assert!(status.success(), "mkfifo {}", path.display());
    path.to_path_buf()
}

/// A configuration watching `count` generated tasks, polled once an hour (start-up and reload
/// cost grow with the count; polling stays light). Nothing listens at its sandbox URL.
pub fn large_config(count: u32) -> String {
    let mut yaml = String::from(
        "sandbox:\n  url: http://127.0.0.1:9\n  username: u\n  password: p\n  timeout: 5s\npolling:\n  interval: 1h\ntasks:\n",
    );
    for n in 0..count {
        yaml.push_str("  - ");
        yaml.push_str(&id(n));
        yaml.push('\n');
    }
    yaml
}

/// A free loopback port (bound and released; good enough for a test's own process).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The exporter binary running with `config`, its stderr captured into a file.
pub struct Process {
    pub child: Child,
    pub port: u16,
    pub stderr_path: PathBuf,
    pub config_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Process {
    pub fn spawn(yaml: &str, extra_args: &[&str]) -> Process {
        Process::spawn_command(binary(), yaml, extra_args)
    }

    /// Like [`Process::spawn`], keeping its state in `storage` (`--storage.path`).
    pub fn spawn_stateful(yaml: &str, storage: &Path, extra_args: &[&str]) -> Process {
        let mut command = stateful_binary();
        command.arg(format!("--storage.path={}", storage.display()));
        Process::spawn_command(command, yaml, extra_args)
    }

    fn spawn_command(mut command: Command, yaml: &str, extra_args: &[&str]) -> Process {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("krs-exporter.yml");
        std::fs::write(&config_path, yaml).expect("write config");
        let stderr_path = dir.path().join("stderr.log");
        let port = free_port();
        let child = command
            .arg("--config.file")
            .arg(&config_path)
            .arg("--web.listen-address")
            .arg(format!("127.0.0.1:{port}"))
            .args(extra_args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
            .spawn()
            .expect("spawn krs-exporter");
        Process {
            child,
            port,
            stderr_path,
            config_path,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Waits for the process to exit, failing after `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "process still running after {limit:?}; stderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until the log contains `needle`.
    pub async fn wait_log(&self, needle: &str) {
        eventually(&format!("the log says {needle:?}"), || async {
            self.stderr().contains(needle).then_some(())
        })
        .await;
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Waits until `/-/healthy` answers.
    pub async fn wait_healthy(&self) {
        let url = self.url("/-/healthy");
        eventually("the exporter process answers /-/healthy", || async {
            reqwest::get(&url)
                .await
                .ok()
                .filter(|r| r.status() == 200)
                .map(|_| ())
        })
        .await;
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `promtool check metrics` on `text`: `Ok` when it reports nothing.
pub fn promtool_check_metrics(text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run promtool (scripts/test.sh installs it): {e}"))?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(text.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && report.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("promtool exit {:?}: {report}", out.status.code()))
    }
}

/// Writes `contents` to `name` inside `dir`.
pub fn write_file(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write file");
    path
}

//! Command-line flags (Prometheus exporter conventions) and the daemon's top-level flow:
//! parse → register signals → load and validate the configuration → bind → run until a
//! termination signal.
//!
//! The configuration is fully checked before any port is bound; `--config.check` stops there.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use clap::Parser;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::app::{self, ConfigSource, LoadError, Options};
use crate::logging::{LogFormat, LogLevel};
use crate::scheduler::Active;
use crate::server;
use crate::shard::{Shard, ShardError};
use crate::signals::Signals;
use crate::store::{StorageDir, StoreError};
use krs_web_config::{WebConfig, WebConfigError};

/// Prometheus exporter for Kaspersky Research Sandbox.
#[derive(Debug, Parser)]
#[command(
    name = "krs-exporter",
    version = concat!(env!("CARGO_PKG_VERSION"), " (revision ", env!("KRS_BUILD_REVISION"), ")"),
    about,
    long_about = None
)]
pub struct Flags {
    /// The YAML configuration file.
    #[arg(
        long = "config.file",
        value_name = "PATH",
        default_value = "krs-exporter.yml"
    )]
    pub config_file: PathBuf,
    /// Validate the configuration, print a summary or the problems, and exit.
    #[arg(long = "config.check")]
    pub config_check: bool,
    /// Address to serve on: `:PORT`, `HOST:PORT` or `[::1]:PORT`. Repeat it to serve on
    /// several; every address gets the same routes and web configuration.
    #[arg(
        long = "web.listen-address",
        value_name = "ADDR",
        default_value = ":10130",
        action = clap::ArgAction::Append
    )]
    pub listen_address: Vec<String>,
    /// Serve on the sockets systemd hands over (`LISTEN_FDS`, socket activation) instead of
    /// binding `--web.listen-address`.
    #[arg(long = "web.systemd-socket")]
    pub systemd_socket: bool,
    /// TLS, basic auth and headers for the exporter's endpoints, in the exporter-toolkit
    /// web-config.yml format.
    #[arg(long = "web.config.file", value_name = "PATH")]
    pub web_config_file: Option<PathBuf>,
    /// Requests served at once; more get 503. 0 means no limit.
    #[arg(long = "web.max-requests", value_name = "N", default_value_t = 40)]
    pub max_requests: usize,
    /// Open connections at most; when full, an idle one is closed to make room for a new one.
    #[arg(
        long = "web.max-connections",
        value_name = "N",
        default_value_t = server::DEFAULT_MAX_CONNECTIONS as u32,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_connections: u32,
    /// Open connections from one IP address at most; more are closed at once.
    #[arg(
        long = "web.max-connections-per-peer",
        value_name = "N",
        default_value_t = server::DEFAULT_MAX_CONNECTIONS_PER_PEER as u32,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_connections_per_peer: u32,
    /// Path under which metrics are served.
    #[arg(
        long = "web.telemetry-path",
        value_name = "PATH",
        default_value = "/metrics"
    )]
    pub telemetry_path: String,
    /// Only log messages at or above this level.
    #[arg(long = "log.level", value_enum, default_value = "info")]
    pub log_level: LogLevel,
    /// Log line format.
    #[arg(long = "log.format", value_enum, default_value = "logfmt")]
    pub log_format: LogFormat,
    /// Run against the built-in simulated sandbox with its bundled scenario.
    #[arg(long)]
    pub demo: bool,
    /// Directory where observed state is kept across restarts (created if missing, locked
    /// against a second process) [default: data/; with --demo a temporary directory]. Empty
    /// keeps it in memory only.
    #[arg(long = "storage.path", value_name = "DIR", value_parser = any_path)]
    pub storage_path: Option<PathBuf>,
    /// This replica's shard: a number, or a StatefulSet pod name ending in -N.
    #[arg(long = "shard.index", value_name = "I", default_value = "0")]
    pub shard_index: String,
    /// Split the watch list into this many shards, one per replica.
    #[arg(long = "shard.total", value_name = "N", default_value_t = 1)]
    pub shard_total: u32,
}

/// Why the daemon stopped with an error.
#[derive(Debug, Error)]
pub enum CliError {
    #[error("{0}")]
    Load(#[from] LoadError),
    #[error("--web.telemetry-path {0:?}: must start with '/' and not be '/' or under '/-/'")]
    TelemetryPath(String),
    #[error("--web.listen-address {address:?}: {why}")]
    ListenAddress { address: String, why: String },
    #[error("--web.listen-address {address:?}: {source}")]
    Listen { address: String, source: io::Error },
    #[error("--web.systemd-socket: {source}")]
    SystemdSocket { source: io::Error },
    #[error("{0}")]
    Shard(#[from] ShardError),
    #[error("{0}")]
    WebConfig(#[from] WebConfigError),
    #[error("demo mode: {0}")]
    Demo(String),
    #[error("--storage.path: {0}")]
    Storage(#[from] StoreError),
    #[error("starting the runtime: {0}")]
    Runtime(io::Error),
}

impl CliError {
    /// 2 for a bad configuration or flag (nothing was started), 1 for anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Load(_)
            | CliError::TelemetryPath(_)
            | CliError::ListenAddress { .. }
            | CliError::Shard(_)
            | CliError::Storage(_)
            | CliError::WebConfig(_) => 2,
            _ => 1,
        }
    }
}

/// What a successful run did, for the binary to print.
pub enum Outcome {
    /// `--config.check` passed: the summary line.
    Checked(String),
    /// The daemon ran and stopped on a signal.
    Stopped,
}

/// Runs the daemon as the flags say.
pub fn run(flags: Flags) -> Result<Outcome, CliError> {
    let path = &flags.telemetry_path;
    if !path.starts_with('/') || path == "/" || path.starts_with("/-/") {
        return Err(CliError::TelemetryPath(path.clone()));
    }
    for address in &flags.listen_address {
        check_listen_address(address)?;
    }
    let shard = Shard::parse(&flags.shard_index, flags.shard_total)?;
    if flags.config_check && !flags.demo {
        if let Some(path) = &flags.web_config_file {
            WebConfig::load(path)?;
        }
        let active = app::load(&ConfigSource::File(flags.config_file.clone()), shard)?;
        let sharding = if shard == Shard::ALL {
            String::new()
        } else {
            format!(" (shard {shard})")
        };
        return Ok(Outcome::Checked(format!(
            "{}: OK: {}{sharding}",
            flags.config_file.display(),
            active.config.summary()
        )));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    let grace = app::DEFAULT_SHUTDOWN_GRACE;
    let stopping = Arc::new(OnceLock::new());
    let outcome = runtime.block_on(daemon(flags, shard, grace, Arc::clone(&stopping)));
    // What is left of the grace period since the termination signal bounds the runtime's wait
    // for its blocking work (loads run on threads of their own and are not waited for).
    let left = stopping.get().map_or(grace, |at: &std::time::Instant| {
        grace.saturating_sub(at.elapsed())
    });
    runtime.shutdown_timeout(left);
    outcome
}

/// Everything start-up prepares before [`app::run`].
struct Started {
    source: ConfigSource,
    active: Active,
    listeners: Vec<TcpListener>,
    web: WebConfig,
    banner: Option<String>,
    /// The locked storage directory; `None` in memory.
    storage: Option<StorageDir>,
    /// Kept alive while the daemon runs: the simulator of `--demo`.
    _demo: Option<DemoGuard>,
    /// `--demo`'s temporary storage directory, removed at exit.
    _demo_storage: Option<TempStorage>,
}

/// A temporary storage directory, removed when dropped.
struct TempStorage(PathBuf);

impl Drop for TempStorage {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The storage directory the flags name: `--storage.path` as given (empty: none), else a
/// fresh temporary directory for `--demo`, else `data/`.
fn storage_dir(flags: &Flags) -> (Option<PathBuf>, Option<TempStorage>) {
    match &flags.storage_path {
        Some(path) if path.as_os_str().is_empty() => (None, None),
        Some(path) => (Some(path.clone()), None),
        None if flags.demo => {
            let dir =
                std::env::temp_dir().join(format!("krs-exporter-demo-{}", std::process::id()));
            // A directory left by an earlier process with this pid holds nothing of ours.
            let _ = std::fs::remove_dir_all(&dir);
            (Some(dir.clone()), Some(TempStorage(dir)))
        }
        None => (Some(PathBuf::from(DEFAULT_STORAGE_PATH)), None),
    }
}

/// A path that may be empty (`--storage.path=` means "none"), which clap's own parser refuses.
fn any_path(value: &str) -> Result<PathBuf, std::convert::Infallible> {
    Ok(PathBuf::from(value))
}

/// `--storage.path`'s default, as Prometheus and Alertmanager have it.
pub const DEFAULT_STORAGE_PATH: &str = "data/";

/// Registers signals, then starts up and runs until SIGTERM/SIGINT. A SIGTERM during start-up
/// stops it there (exit 0); a SIGHUP then is held and becomes a reload after start.
async fn daemon(
    flags: Flags,
    shard: Shard,
    grace: Duration,
    stopping: Arc<OnceLock<std::time::Instant>>,
) -> Result<Outcome, CliError> {
    let Signals {
        mut termination,
        hangups,
    } = Signals::install();
    info!(config = %flags.config_file.display(), "starting");
    let shutdown = CancellationToken::new();
    let started = tokio::select! {
        biased;
        () = termination.recv() => {
            let _ = stopping.set(std::time::Instant::now());
            shutdown.cancel();
            info!("stopped during start-up");
            return Ok(Outcome::Stopped);
        }
        started = start(&flags, shard, shutdown.clone()) => started?,
    };
    let Started {
        source,
        active,
        listeners,
        web,
        banner,
        storage,
        _demo,
        _demo_storage,
    } = started;
    let stop = shutdown.clone();
    tokio::spawn(async move {
        termination.recv().await;
        let _ = stopping.set(std::time::Instant::now());
        stop.cancel();
    });
    let options = Options {
        telemetry_path: flags.telemetry_path.clone(),
        banner,
        shard,
        max_requests: flags.max_requests,
        web,
        hangups,
        connection_limits: server::ConnectionLimits {
            total: flags.max_connections as usize,
            per_peer: flags.max_connections_per_peer as usize,
            ..server::ConnectionLimits::default()
        },
        shutdown_grace: grace,
        storage,
    };
    app::run(source, active, listeners, options, shutdown).await?;
    Ok(Outcome::Stopped)
}

#[cfg(feature = "demo")]
type DemoGuard = crate::demo::Demo;
#[cfg(not(feature = "demo"))]
type DemoGuard = std::convert::Infallible;

/// `--demo`: the simulated sandbox in-process and the configuration that watches it.
#[cfg(feature = "demo")]
async fn start_demo(
    shutdown: CancellationToken,
) -> Result<(ConfigSource, String, DemoGuard), CliError> {
    let demo = crate::demo::start(shutdown)
        .await
        .map_err(|e| CliError::Demo(e.to_string()))?;
    let banner = format!(
        "Demo mode: polling the built-in simulated sandbox at {}",
        demo.base_url()
    );
    let source = ConfigSource::Fixed(Box::new(demo.config.clone()));
    Ok((source, banner, demo))
}

#[cfg(not(feature = "demo"))]
async fn start_demo(
    _shutdown: CancellationToken,
) -> Result<(ConfigSource, String, DemoGuard), CliError> {
    Err(CliError::Demo(
        "this build has no demo: it was built without the `demo` feature".to_owned(),
    ))
}

/// Loads the web configuration and the configuration (on blocking threads) and binds.
async fn start(
    flags: &Flags,
    shard: Shard,
    shutdown: CancellationToken,
) -> Result<Started, CliError> {
    let web = match flags.web_config_file.clone() {
        Some(path) => app::off_thread(move || WebConfig::load(&path)).await?,
        None => WebConfig::default(),
    };
    let (source, banner, demo) = if flags.demo {
        let (source, banner, demo) = start_demo(shutdown).await?;
        (source, Some(banner), Some(demo))
    } else {
        (ConfigSource::File(flags.config_file.clone()), None, None)
    };
    let active = app::load_off_thread(source.clone(), shard).await?;
    let (dir, demo_storage) = storage_dir(flags);
    let storage = match dir {
        Some(dir) => Some(app::off_thread(move || StorageDir::acquire(dir)).await?),
        None => None,
    };
    let listeners = if flags.systemd_socket {
        systemd_listeners()?
    } else {
        let mut listeners = Vec::with_capacity(flags.listen_address.len());
        for address in &flags.listen_address {
            listeners.push(bind(address).await?);
        }
        listeners
    };
    Ok(Started {
        source,
        active,
        listeners,
        web,
        banner,
        storage,
        _demo: demo,
        _demo_storage: demo_storage,
    })
}

/// Connections the kernel queues for the accept loop. A flood's reconnecting sockets arrive in
/// waves; a wave that overflows the queue makes the kernel drop SYNs, and a scraper whose SYN
/// is dropped waits a 1 s retransmit. Go servers (Prometheus among them) ask for the same; the
/// kernel caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

/// Checks the form of `address` without resolving or binding it: `:PORT`, `HOST:PORT` or
/// `[IPV6]:PORT`, the port a number up to 65535. A bare port is the likely slip, so it gets
/// the `:PORT` form as a hint.
pub fn check_listen_address(address: &str) -> Result<(), CliError> {
    let err = |why: String| CliError::ListenAddress {
        address: address.to_string(),
        why,
    };
    if address.parse::<u16>().is_ok() {
        return Err(err(format!(
            "a port needs a host or a leading colon; did you mean :{address}?"
        )));
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(err(
            "expected :PORT, HOST:PORT or [IPV6]:PORT, for example :10130".to_string(),
        ));
    };
    if port.parse::<u16>().is_err() {
        return Err(err(format!("{port:?} is not a port (0 to 65535)")));
    }
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(inner) if inner.parse::<std::net::Ipv6Addr>().is_err() => {
            Err(err(format!("{host} is not an IPv6 address")))
        }
        None if host.contains(':') => Err(err(format!(
            "an IPv6 address goes in brackets: [{host}]:{port}"
        ))),
        _ => Ok(()),
    }
}

/// Binds `address`. `:PORT` means every interface (IPv6 and IPv4 where the host allows).
pub async fn bind(address: &str) -> Result<TcpListener, CliError> {
    check_listen_address(address)?;
    let err = |source| CliError::Listen {
        address: address.to_string(),
        source,
    };
    if let Some(port) = address.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| err(io::Error::new(io::ErrorKind::InvalidInput, "invalid port")))?;
        let any6 = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port));
        return match listen(any6) {
            Ok(l) => Ok(l),
            Err(_) => listen(SocketAddr::from(([0, 0, 0, 0], port))).map_err(err),
        };
    }
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no address to bind");
    for addr in tokio::net::lookup_host(address).await.map_err(err)? {
        match listen(addr) {
            Ok(l) => return Ok(l),
            Err(e) => last = e,
        }
    }
    Err(err(last))
}

/// The TCP sockets systemd passed (`LISTEN_FDS`, `LISTEN_PID`), in order. Taking a file
/// descriptor over needs `unsafe`, which this crate forbids; `listenfd` does it, checking that
/// the variables are meant for this process and that each descriptor is a TCP socket.
fn systemd_listeners() -> Result<Vec<TcpListener>, CliError> {
    let mut fds = listenfd::ListenFd::from_env();
    let err = |source| CliError::SystemdSocket { source };
    let mut listeners = Vec::new();
    for i in 0..fds.len() {
        let Some(listener) = fds.take_tcp_listener(i).map_err(err)? else {
            continue;
        };
        listener.set_nonblocking(true).map_err(err)?;
        listeners.push(TcpListener::from_std(listener).map_err(err)?);
    }
    if listeners.is_empty() {
        return Err(err(io::Error::new(
            io::ErrorKind::NotFound,
            "no listening TCP socket was passed (LISTEN_FDS unset or 0, or LISTEN_PID is another process)",
        )));
    }
    Ok(listeners)
}

/// Listens on `addr` with [`LISTEN_BACKLOG`], reusing the address as `TcpListener::bind` does.
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

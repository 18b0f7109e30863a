//! Wiring of the daemon: configuration → scheduler → state → metrics and HTTP server, plus
//! reloads and the one shutdown path.
//!
//! [`run`] takes an already bound listener and a cancellation token, so tests start the whole
//! exporter on `127.0.0.1:0` and stop it at will.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::sandbox::client::ClientBuildError;
use crate::sandbox::SandboxClient;
use crate::scheduler::{self, Active};
use crate::server::{self, ReloadRequest, Routes};
use crate::shard::Shard;
use crate::state::{State, WatchList};
use crate::web_config::{TlsAcceptorCache, WebConfig, WebConfigError};

/// How long shutdown waits for the scheduler after the server has drained.
const SCHEDULER_STOP_TIMEOUT: Duration = Duration::from_secs(4);

/// Where the configuration comes from, and comes again on reload.
#[derive(Clone, Debug)]
pub enum ConfigSource {
    File(PathBuf),
    /// A configuration built in code (demo mode): reloading it changes nothing.
    Fixed(Box<Config>),
}

/// Why a configuration could not be made active.
#[derive(Debug, Error)]
pub enum LoadError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Client(#[from] ClientBuildError),
}

/// Options that do not live in the configuration file.
#[derive(Clone, Debug)]
pub struct Options {
    pub telemetry_path: String,
    /// A line shown on the landing page (demo mode says so).
    pub banner: Option<String>,
    /// Which part of the watch list this replica polls.
    pub shard: Shard,
    /// HTTP requests served at once (`--web.max-requests`); 0 means no cap.
    pub max_requests: usize,
    /// TLS, basic auth and headers for the exporter's own endpoints (`--web.config.file`).
    pub web: WebConfig,
    /// Open connections in all and per peer (`--web.max-connections`,
    /// `--web.max-connections-per-peer`), and their deadlines.
    pub connection_limits: server::ConnectionLimits,
}

/// Loads and validates the configuration, keeps the tasks of `shard`, and builds the client:
/// everything that can fail before a port is bound or a request is sent.
pub fn load(source: &ConfigSource, shard: Shard) -> Result<Active, LoadError> {
    let mut config = match source {
        ConfigSource::File(path) => Config::load(path)?,
        ConfigSource::Fixed(config) => (**config).clone(),
    };
    if config.tasks.iter().any(|task| !shard.owns(&task.id)) {
        config.tasks = config
            .tasks
            .iter()
            .filter(|task| shard.owns(&task.id))
            .cloned()
            .collect();
    }
    let client = SandboxClient::new(&config.sandbox, config.polling.concurrency)?;
    if config.sandbox.insecure_skip_verify {
        warn!("sandbox.insecure_skip_verify is on: the sandbox's TLS certificate is not verified");
    }
    Ok(Active { config, client })
}

/// Runs the exporter until `shutdown` is cancelled, then drains within a few seconds.
///
/// Fails only if the web configuration's certificates cannot be loaded; nothing is started then.
pub async fn run(
    source: ConfigSource,
    active: Active,
    listener: TcpListener,
    options: Options,
    shutdown: CancellationToken,
) -> Result<(), WebConfigError> {
    let tls = match options.web.tls() {
        Some(settings) => Some(Arc::new(TlsAcceptorCache::new(settings.clone())?)),
        None => None,
    };
    let metrics = Arc::new(Metrics::new(options.shard));
    let state = Arc::new(State::new(WatchList::from_config(&active.config)));
    metrics.record_reload(true);
    info!(
        config = %active.config.source.display(),
        summary = %active.config.summary(),
        shard = %options.shard,
        "configuration loaded"
    );

    let (active_tx, active_rx) = watch::channel(Arc::new(active));
    let scheduler = tokio::spawn(scheduler::run(
        active_rx,
        Arc::clone(&state),
        Arc::clone(&metrics),
        shutdown.clone(),
    ));

    let (reload_tx, reload_rx) = mpsc::channel::<ReloadRequest>(8);
    let reloader = Reloader {
        source,
        shard: options.shard,
        state: Arc::clone(&state),
        metrics: Arc::clone(&metrics),
        active: active_tx,
    };
    let reloads = tokio::spawn(reloader.run(reload_rx, shutdown.clone()));

    if let Ok(addr) = listener.local_addr() {
        info!(
            address = %addr,
            telemetry_path = %options.telemetry_path,
            web = %options.web.summary(),
            "listening"
        );
    }
    let (basic_auth, headers) = Routes::web_parts(&options.web);
    let routes = Arc::new(Routes {
        state,
        metrics,
        telemetry_path: options.telemetry_path,
        reload: reload_tx,
        banner: options.banner,
        max_requests: (options.max_requests > 0)
            .then(|| server::RequestCaps::new(options.max_requests)),
        basic_auth,
        headers,
        page_renders: tokio::sync::Semaphore::new(1),
    });
    server::serve(
        listener,
        routes,
        tls,
        options.connection_limits,
        shutdown.clone(),
    )
    .await;

    shutdown.cancel();
    if tokio::time::timeout(SCHEDULER_STOP_TIMEOUT, scheduler)
        .await
        .is_err()
    {
        warn!("scheduler did not stop in time");
    }
    reloads.abort();
    info!("stopped");
    Ok(())
}

/// Applies reloads asked for by `SIGHUP` or `POST /-/reload`, one at a time.
struct Reloader {
    source: ConfigSource,
    shard: Shard,
    state: Arc<State>,
    metrics: Arc<Metrics>,
    active: watch::Sender<Arc<Active>>,
}

impl Reloader {
    async fn run(self, mut requests: mpsc::Receiver<ReloadRequest>, shutdown: CancellationToken) {
        let mut hangups = hangup_signals();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                request = requests.recv() => match request {
                    Some(reply) => {
                        let _ = reply.send(self.reload("http"));
                    }
                    None => break,
                },
                () = next_hangup(&mut hangups) => {
                    let _ = self.reload("SIGHUP");
                }
            }
        }
    }

    /// Validates the whole new configuration, then swaps it in; on failure nothing changes but
    /// `krs_config_last_reload_successful`.
    fn reload(&self, trigger: &str) -> Result<String, String> {
        match load(&self.source, self.shard) {
            Ok(active) => {
                let summary = active.config.summary();
                self.state
                    .replace_watch_list(WatchList::from_config(&active.config));
                self.metrics.record_reload(true);
                self.active.send_replace(Arc::new(active));
                info!(trigger, summary = %summary, "configuration reloaded");
                Ok(summary)
            }
            Err(e) => {
                self.metrics.record_reload(false);
                let problems = e.to_string();
                error!(trigger, errors = %problems, "reload failed; keeping the previous configuration");
                Err(problems)
            }
        }
    }
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = Option<()>;

#[cfg(unix)]
fn hangup_signals() -> Hangups {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGHUP; reload with POST /-/reload");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangup_signals() -> Hangups {
    None
}

async fn next_hangup(signals: &mut Hangups) {
    #[cfg(unix)]
    if let Some(s) = signals {
        if s.recv().await.is_some() {
            return;
        }
    }
    let _ = signals;
    std::future::pending::<()>().await;
}

/// Resolves on SIGTERM or SIGINT: the process's one request to stop.
pub async fn termination_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => info!(signal = "SIGTERM", "stopping"),
            _ = tokio::signal::ctrl_c() => info!(signal = "SIGINT", "stopping"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

//! Wiring of the daemon: configuration → scheduler (and the health checks beside it) → state →
//! metrics and HTTP server, plus reloads and the one shutdown path.
//!
//! [`run`] takes an already bound listener and a cancellation token, so tests start the whole
//! exporter on `127.0.0.1:0` and stop it at will.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::TaskId;
use crate::config::{Config, ConfigError};
use crate::discovery::{Discovery, Fleet};
use crate::health;
use crate::journal::{EventKind, Journal};
use crate::metrics::Metrics;
use crate::sandbox::client::ClientBuildError;
use crate::sandbox::SandboxClient;
use crate::scheduler::{self, Active};
use crate::server::{self, ReloadRequest, Routes};
use crate::shard::Shard;
use crate::signals::Hangups;
use crate::state::{Save, State};
use crate::store::{split_counters, Opened, StorageDir, Store};
use krs_web_config::{TlsAcceptorCache, WebConfig, WebConfigError};

/// How long shutdown may take, from the termination signal to exit: the HTTP drain, the
/// scheduler's and the runtime's all fit in it.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

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
#[derive(Debug)]
pub struct Options {
    pub telemetry_path: String,
    /// A line shown atop every console page (demo mode says so).
    pub banner: Option<String>,
    /// Which part of the watch list this replica polls.
    pub shard: Shard,
    /// HTTP requests served at once (`--web.max-requests`); 0 means no cap.
    pub max_requests: usize,
    /// TLS, basic auth and headers for the exporter's own endpoints (`--web.config.file`).
    pub web: WebConfig,
    /// SIGHUPs, registered at start-up so that one sent before [`run`] is a reload, not a kill.
    pub hangups: Hangups,
    /// Open connections in all and per peer (`--web.max-connections`,
    /// `--web.max-connections-per-peer`), and their deadlines.
    pub connection_limits: server::ConnectionLimits,
    /// The one bound on shutdown ([`DEFAULT_SHUTDOWN_GRACE`]): open connections and running
    /// polls get this long from cancellation; whatever is left then is abandoned.
    pub shutdown_grace: Duration,
    /// The locked storage directory (`--storage.path`); `None` keeps state in memory only.
    pub storage: Option<StorageDir>,
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

/// [`load`] on a blocking thread: reading and validating a 100k-task file takes about a second,
/// which must not stall the async workers, and a caller that stops waiting (shutdown) leaves the
/// thread to finish on its own.
pub async fn load_off_thread(source: ConfigSource, shard: Shard) -> Result<Active, LoadError> {
    off_thread(move || load(&source, shard)).await
}

/// Runs `f` on a thread of its own, outside the runtime's blocking pool: dropping the future
/// abandons the thread, and the runtime's shutdown has nothing to wait for, so no file (a FIFO,
/// a 300k-task list) can hold up an exit. The process ends the thread at exit.
pub async fn off_thread<T, F>(f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let slot = Arc::new(std::sync::Mutex::new(Some(f)));
    let theirs = Arc::clone(&slot);
    let job = move || {
        if let Some(f) = take(&theirs) {
            let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
        }
    };
    let spawned = std::thread::Builder::new()
        .name("krs-load".into())
        .spawn(job);
    if spawned.is_ok() {
        return match rx.await {
            Ok(Ok(value)) => value,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            // The thread ended without an answer: only an abort does that.
            Err(_) => std::future::pending().await,
        };
    }
    // No thread to be had (a process limit): the runtime's blocking pool instead.
    let Some(f) = take(&slot) else {
        return std::future::pending().await;
    };
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => value,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Cancelled: the runtime is shutting down, and whoever awaits this is about to be dropped.
        Err(_) => std::future::pending().await,
    }
}

fn take<F>(slot: &std::sync::Mutex<Option<F>>) -> Option<F> {
    slot.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// The sockets the exporter serves on, already bound (or handed over by systemd): every one gets
/// the same routes, web configuration and connection limits.
pub struct Listeners(pub Vec<TcpListener>);

impl From<TcpListener> for Listeners {
    fn from(listener: TcpListener) -> Self {
        Listeners(vec![listener])
    }
}

impl From<Vec<TcpListener>> for Listeners {
    fn from(listeners: Vec<TcpListener>) -> Self {
        Listeners(listeners)
    }
}

/// Runs the exporter until `shutdown` is cancelled, then drains within `options.shutdown_grace`.
///
/// Fails only if the web configuration's certificates cannot be loaded; nothing is started then.
pub async fn run(
    source: ConfigSource,
    active: Active,
    listeners: impl Into<Listeners>,
    options: Options,
    shutdown: CancellationToken,
) -> Result<(), WebConfigError> {
    let Listeners(listeners) = listeners.into();
    let tls = match options.web.tls() {
        Some(settings) => Some(Arc::new(TlsAcceptorCache::new(settings.clone())?)),
        None => None,
    };
    let metrics = Arc::new(Metrics::new(options.shard));
    let mut fleet = Fleet::new(Arc::new(active.config.clone()), options.shard);
    let (state, store) = restore(options.storage, &mut fleet, &metrics).await;
    let fleet = Arc::new(Mutex::new(fleet));
    let (watch_list_tx, watch_list_rx) = watch::channel(0u64);
    metrics.record_reload(true);
    info!(
        config = %active.config.source.display(),
        summary = %active.config.summary(),
        shard = %options.shard,
        "configuration loaded"
    );

    let (ui_task_url_tx, ui_task_url_rx) =
        watch::channel(active.config.sandbox.ui_task_url.clone());
    let (active_tx, active_rx) = watch::channel(Arc::new(active));
    let grace = options.shutdown_grace;
    // The discovery and health loops pass the polls' pause gate, published by the scheduler.
    let (gate_tx, gate_rx) = watch::channel(None);
    let health = tokio::spawn(health::run(
        active_rx.clone(),
        gate_rx.clone(),
        Arc::clone(&metrics),
        shutdown.clone(),
    ));
    let discovery = Discovery {
        fleet: Arc::clone(&fleet),
        state: Arc::clone(&state),
        metrics: Arc::clone(&metrics),
        store: Arc::clone(&store),
        changed: watch_list_tx.clone(),
    };
    let discovering = tokio::spawn(discovery.run(active_rx.clone(), gate_rx, shutdown.clone()));
    let scheduler = tokio::spawn(scheduler::run(
        active_rx,
        scheduler::Inputs {
            watch_list: watch_list_rx,
            gates: gate_tx,
            store: Arc::clone(&store),
        },
        Arc::clone(&state),
        Arc::clone(&metrics),
        shutdown.clone(),
        grace,
    ));

    let (reload_tx, reload_rx) = mpsc::channel::<ReloadRequest>(8);
    let reloader = Reloader {
        source,
        shard: options.shard,
        state: Arc::clone(&state),
        metrics: Arc::clone(&metrics),
        store: Arc::clone(&store),
        active: active_tx,
        ui_task_url: ui_task_url_tx,
        fleet,
        watch_list: watch_list_tx,
    };
    let reloads = tokio::spawn(reloader.run(reload_rx, options.hangups, shutdown.clone()));

    for addr in listeners.iter().filter_map(|l| l.local_addr().ok()) {
        info!(
            address = %addr,
            telemetry_path = %options.telemetry_path,
            web = %options.web.summary(),
            "listening"
        );
    }
    let (basic_auth, headers) = Routes::web_parts(&options.web);
    let routes = Arc::new(Routes {
        telemetry_path: options.telemetry_path,
        banner: options.banner,
        max_requests: (options.max_requests > 0)
            .then(|| server::RequestCaps::new(options.max_requests)),
        basic_auth,
        headers,
        store: Arc::clone(&store),
        ui_task_url: ui_task_url_rx,
        ..Routes::new(state, metrics, reload_tx)
    });
    let serving = server::serve(
        listeners,
        routes,
        tls,
        options.connection_limits,
        shutdown.clone(),
        grace,
    );
    let mut serving = std::pin::pin!(serving);
    let served = tokio::select! {
        () = &mut serving => true,
        () = shutdown.cancelled() => false,
    };
    // The server and the scheduler drain at once, each within the grace; this bounds both.
    let deadline = tokio::time::Instant::now() + grace;
    shutdown.cancel();
    if !served && tokio::time::timeout_at(deadline, serving).await.is_err() {
        warn!("HTTP server did not stop within the grace period");
    }
    if tokio::time::timeout_at(deadline, scheduler).await.is_err() {
        warn!("scheduler did not stop within the grace period");
    }
    if tokio::time::timeout_at(deadline, health).await.is_err() {
        warn!("sandbox health checks did not stop within the grace period");
    }
    // The polls are done: what they left pending is written within what is left of the grace.
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    let closing = tokio::task::spawn_blocking(move || store.close(left));
    if tokio::time::timeout_at(deadline, closing).await.is_err() {
        warn!("the store did not close within the grace period");
    }
    // The reloader stops at cancellation; a load it started is left to its blocking thread.
    reloads.abort();
    discovering.abort();
    info!("stopped");
    Ok(())
}

/// Opens the store (if any) and restores what it kept: discovery's view into `fleet`, the
/// task records into the state built from it, and the fleet counters. Returns the state and
/// the store the daemon writes through.
async fn restore(
    storage: Option<StorageDir>,
    fleet: &mut Fleet,
    metrics: &Arc<Metrics>,
) -> (Arc<State>, Arc<Store>) {
    let Some(lock) = storage else {
        let state = Arc::new(State::new(fleet.watch_list()));
        let store = Store::memory(Arc::clone(metrics), Arc::new(Journal::default()));
        return (state, Arc::new(store));
    };
    let dir = lock.dir().display().to_string();
    // Reading 100k tasks takes a while: off the async workers.
    let mut opened = off_thread(move || Opened::open(lock)).await;
    let restored = std::mem::take(&mut opened.restored);
    let kept_discovered = restored.discovered.clone();
    fleet.restore(restored.discovered, SystemTime::now());
    let state = Arc::new(State::new(fleet.watch_list()));
    let kept_ids: Vec<TaskId> = restored.tasks.iter().map(|(id, _)| id.clone()).collect();
    let tasks = state.restore(restored.tasks);
    let (downloads, rules) = split_counters(&restored.counters);
    state.restore_rules(rules.iter().map(|(rule, _)| *rule));
    metrics.restore_counters(downloads, rules.iter().copied());
    opened.status.restored = tasks;
    info!(
        storage = %dir,
        tasks,
        discovered = fleet.discovered_count(),
        events = restored.events.len(),
        "state restored"
    );
    let journal = Arc::new(Journal::restored(restored.events, restored.hours));
    let store = Store::start(
        opened,
        &restored.counters,
        &kept_discovered,
        Arc::clone(&state),
        Arc::clone(metrics),
        journal,
    );
    // What the store kept of tasks no longer watched (the configuration changed while the
    // exporter was down, discovered tasks aged out) leaves it now: its size stays bounded by
    // the watch list.
    let watched = state.watch_list();
    let watched: std::collections::HashSet<&TaskId> = watched.tasks.iter().map(|t| &t.id).collect();
    store.save(
        kept_ids
            .into_iter()
            .filter(|id| !watched.contains(id))
            .map(|task| Save {
                task,
                seq: 0,
                record: None,
            }),
    );
    if fleet.discovered().len() != kept_discovered.len() {
        store.discovered(fleet.discovered().to_vec());
    }
    (state, Arc::new(store))
}

/// Applies reloads asked for by `SIGHUP` or `POST /-/reload`, one at a time.
struct Reloader {
    source: ConfigSource,
    shard: Shard,
    state: Arc<State>,
    metrics: Arc<Metrics>,
    store: Arc<Store>,
    active: watch::Sender<Arc<Active>>,
    /// `sandbox.ui_task_url` for the console, which reads no other part of the config.
    ui_task_url: watch::Sender<Option<crate::config::UiTaskUrl>>,
    /// The configured and discovered tasks, merged into the state's watch list.
    fleet: Arc<Mutex<Fleet>>,
    watch_list: watch::Sender<u64>,
}

impl Reloader {
    async fn run(
        self,
        mut requests: mpsc::Receiver<ReloadRequest>,
        mut hangups: Hangups,
        shutdown: CancellationToken,
    ) {
        loop {
            let (trigger, reply) = tokio::select! {
                () = shutdown.cancelled() => break,
                request = requests.recv() => match request {
                    Some(reply) => ("http", Some(reply)),
                    None => break,
                },
                () = hangups.recv() => ("SIGHUP", None),
            };
            // Shutdown does not wait for a reload: dropping `reply` answers 503 "shutting down".
            let outcome = tokio::select! {
                () = shutdown.cancelled() => break,
                outcome = self.reload(trigger) => outcome,
            };
            if let Some(reply) = reply {
                let _ = reply.send(outcome);
            }
        }
    }

    /// Validates the whole new configuration, then swaps it in; on failure nothing changes but
    /// `krs_config_last_reload_successful`.
    async fn reload(&self, trigger: &str) -> Result<String, String> {
        info!(trigger, "reloading configuration");
        match load_off_thread(self.source.clone(), self.shard).await {
            Ok(active) => {
                let summary = active.config.summary();
                {
                    let mut fleet = self.fleet.lock().unwrap_or_else(|e| e.into_inner());
                    fleet.set_config(Arc::new(active.config.clone()));
                    Discovery::publish(&fleet, &self.state, &self.store, &self.watch_list);
                }
                self.metrics.record_reload(true);
                self.ui_task_url
                    .send_replace(active.config.sandbox.ui_task_url.clone());
                self.active.send_replace(Arc::new(active));
                info!(trigger, summary = %summary, "configuration reloaded");
                self.store.event(
                    None,
                    EventKind::Reloaded {
                        ok: true,
                        detail: summary.clone().into(),
                    },
                );
                Ok(summary)
            }
            Err(e) => {
                self.metrics.record_reload(false);
                let problems = e.to_string();
                self.metrics.record_reload_problems(&problems);
                self.store.event(
                    None,
                    EventKind::Reloaded {
                        ok: false,
                        detail: crate::labels::clean(&problems, 1024).into(),
                    },
                );
                error!(trigger, errors = %problems, "reload failed; keeping the previous configuration");
                Err(problems)
            }
        }
    }
}

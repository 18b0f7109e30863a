//! Discovery: the watch list becomes the configured `tasks:` plus the tasks the sandbox lists.
//!
//! - [`read`] pages through `GET tasks/` newest first (`count` = `page_size`), until a page
//!   reaches past `lookback`, ends short, or the page limit is hit; offsets shift while paging
//!   (tasks created meanwhile push older ones down), so records are de-duplicated by id.
//! - [`Fleet`] merges the configured tasks and the discovered ones into the state's watch list:
//!   a task in both is one task with the configured entry's name and labels; discovered tasks
//!   are named from their sample (`OriginalFileName`, else `FileName`: chosen by whoever
//!   submitted it, so cleaned and cut like any label value), filtered by zone, kept within
//!   `max_tasks` (the newest; the cut is counted), and only this replica's shard is kept.
//! - [`Discovery::run`] reads the list every `discovery.interval`. A read that fails keeps the previous
//!   discovered set (and says so in a log line and in the age of
//!   `krs_discovery_last_success_timestamp_seconds`) rather than dropping every task.
//!
//! The loop sends nothing while the fleet-wide pause holds, and each page is one attempt
//! through the same gate as the polls: the appliance's trouble is never amplified.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{Config, DiscoveryConfig, TaskId, TaskSpec};
use crate::journal::EventKind;
use crate::labels;
use crate::lifecycle::TaskLife;
use crate::metrics::Metrics;
use crate::sandbox::decode::lifecycle::TaskRecord;
use crate::sandbox::{AttemptError, SandboxClient};
use crate::scheduler::gate::{Admission, Gate};
use crate::scheduler::SharedGate;
use crate::shard::Shard;
use crate::state::{State, WatchList};
use crate::store::Store;

/// Pages read per cycle at most, beyond those `max_tasks` needs: a list that never ends or
/// repeats itself costs a bounded number of requests.
const EXTRA_PAGES: usize = 4;

/// The configured tasks and the discovered ones, merged into watch lists.
pub struct Fleet {
    config: Arc<Config>,
    shard: Shard,
    /// The latest complete read, newest first, already filtered and capped.
    discovered: Vec<Listed>,
}

/// One listed task.
#[derive(Clone, Debug)]
pub struct Listed {
    pub id: TaskId,
    /// Cleaned sample name.
    pub name: String,
    pub life: TaskLife,
}

/// What one read of the task list found.
#[derive(Debug, Default)]
pub struct Read {
    /// Every listed task within `lookback`, newest first, de-duplicated, before zones, shard
    /// and `max_tasks` apply (static tasks among them included).
    pub tasks: Vec<Listed>,
    /// Requests the read took.
    pub pages: usize,
}

/// Why a read of the task list did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the sandbox is paused: {0}")]
    Paused(String),
    #[error("{0}")]
    Attempt(#[from] AttemptError),
}

impl Fleet {
    pub fn new(config: Arc<Config>, shard: Shard) -> Self {
        Fleet {
            config,
            shard,
            discovered: Vec::new(),
        }
    }

    /// A reload: new configured tasks and settings; discovery's view is kept until next read.
    pub fn set_config(&mut self, config: Arc<Config>) {
        self.config = config;
    }

    /// The latest complete read. Returns how many listed tasks `max_tasks` left out.
    pub fn set_discovered(&mut self, read: &Read, now: SystemTime) -> usize {
        let Some(discovery) = &self.config.discovery else {
            self.discovered.clear();
            return 0;
        };
        let configured: HashSet<&TaskId> = self.config.tasks.iter().map(|t| &t.id).collect();
        let mut kept = Vec::new();
        let mut truncated = 0;
        for task in &read.tasks {
            let in_window = task.life.created.is_none_or(|created| {
                now.duration_since(created)
                    .is_ok_and(|age| age <= discovery.lookback)
                    || created > now
            });
            let zone_ok = discovery.zones.is_empty() || discovery.zones.contains(&task.life.zone);
            if !in_window || !zone_ok || configured.contains(&task.id) || !self.shard.owns(&task.id)
            {
                continue;
            }
            if kept.len() < discovery.max_tasks {
                kept.push(task.clone());
            } else {
                truncated += 1;
            }
        }
        self.discovered = kept;
        truncated
    }

    /// Discovered tasks that have aged past `lookback` since the last read leave.
    pub fn expire(&mut self, now: SystemTime) {
        if let Some(discovery) = &self.config.discovery {
            let lookback = discovery.lookback;
            self.discovered.retain(|t| {
                t.life
                    .created
                    .is_none_or(|c| now.duration_since(c).map_or(true, |age| age <= lookback))
            });
        }
    }

    /// Discovery's view as the store kept it, before the first read: the watch list at start
    /// includes these tasks (aged ones leave at once).
    pub fn restore(&mut self, discovered: Vec<Listed>, now: SystemTime) {
        if self.config.discovery.is_some() {
            let configured: HashSet<&TaskId> = self.config.tasks.iter().map(|t| &t.id).collect();
            self.discovered = discovered
                .into_iter()
                .filter(|t| self.shard.owns(&t.id) && !configured.contains(&t.id))
                .collect();
            self.discovered
                .sort_by_key(|t| std::cmp::Reverse(t.life.created));
            if let Some(max) = self.config.discovery.as_ref().map(|d| d.max_tasks) {
                self.discovered.truncate(max);
            }
            self.expire(now);
        }
    }

    /// The discovered tasks, newest first.
    pub fn discovered(&self) -> &[Listed] {
        &self.discovered
    }

    pub fn discovered_count(&self) -> usize {
        self.discovered.len()
    }

    /// The watch list: the configured tasks, then the discovered ones.
    pub fn watch_list(&self) -> WatchList {
        let config = &self.config;
        let mut watch = WatchList::from_config(config);
        let Some(discovery) = &config.discovery else {
            return watch;
        };
        if self.discovered.is_empty() {
            return watch;
        }
        let max = config.metrics.max_label_length;
        let mut tasks: Vec<TaskSpec> =
            Vec::with_capacity(config.tasks.len() + self.discovered.len());
        tasks.extend(config.tasks.iter().cloned());
        tasks.extend(self.discovered.iter().map(|t| TaskSpec {
            id: t.id.clone(),
            name: labels::clean(&t.name, max),
            labels: discovery.labels.clone(),
        }));
        watch.discovered = self.discovered.len();
        watch.tasks = tasks.into();
        if !discovery.labels.is_empty() {
            let mut keys: Vec<String> = watch.label_keys.clone();
            keys.extend(discovery.labels.keys().map(str::to_owned));
            keys.sort_unstable();
            keys.dedup();
            watch.label_keys = keys;
        }
        watch
    }
}

impl Read {
    /// The state of every listed task (the state keeps those it watches).
    pub fn lives(&self) -> impl Iterator<Item = (TaskId, TaskLife)> + '_ {
        self.tasks.iter().map(|t| (t.id.clone(), t.life.clone()))
    }
}

/// Reads the task list within `discovery`'s window and limits.
pub async fn read(
    client: &SandboxClient,
    gate: &Gate,
    metrics: &Metrics,
    discovery: &DiscoveryConfig,
    max_label_length: usize,
    now: SystemTime,
) -> Result<Read, ReadError> {
    let page_size = discovery.page_size;
    let max_pages = discovery.max_tasks.div_ceil(page_size) + EXTRA_PAGES;
    let mut seen: HashSet<TaskId> = HashSet::new();
    let mut read = Read::default();
    let oldest = now.checked_sub(discovery.lookback);
    while read.pages < max_pages {
        let probe = match gate.admit() {
            Admission::Open => false,
            Admission::Probe => true,
            Admission::Paused { reason, .. } => {
                return Err(ReadError::Paused(reason.describe().to_owned()))
            }
        };
        let attempt = client
            .fetch_task_page(read.pages * page_size, page_size)
            .await;
        metrics.record_attempt(&attempt);
        gate.report(&attempt, probe);
        read.pages += 1;
        let page = attempt.result?;
        let listed = page.tasks.len() + page.report.skipped_total() as usize;
        let mut past_window = false;
        for record in &page.tasks {
            let Ok(id) = TaskId::parse(&record.id) else {
                continue;
            };
            if record
                .created
                .zip(oldest)
                .is_some_and(|(created, oldest)| created < oldest)
            {
                past_window = true;
                continue;
            }
            if seen.insert(id.clone()) {
                read.tasks.push(listed_task(id, record, max_label_length));
            }
        }
        if listed < page_size || past_window {
            break;
        }
    }
    Ok(read)
}

fn listed_task(id: TaskId, record: &TaskRecord, max_label_length: usize) -> Listed {
    Listed {
        id,
        name: labels::clean(&record.sample_name, max_label_length),
        life: TaskLife::from_record(record, max_label_length),
    }
}

/// Everything the discovery loop works with.
pub struct Discovery {
    pub fleet: Arc<Mutex<Fleet>>,
    pub state: Arc<State>,
    pub metrics: Arc<Metrics>,
    /// Where the discovered view, removals and task state changes are kept.
    pub store: Arc<Store>,
    /// Bumped whenever the watch list changed, for the scheduler.
    pub changed: watch::Sender<u64>,
}

impl Discovery {
    /// Publishes `fleet`'s watch list to the state and tells the scheduler; removed tasks
    /// leave the store.
    pub fn publish(fleet: &Fleet, state: &State, store: &Store, changed: &watch::Sender<u64>) {
        Self::publish_with(fleet, None, state, store, changed);
    }

    /// [`Discovery::publish`], with the states a read of the task list found recorded before
    /// the scheduler hears of the change, so that it sets every pace from them at once. The
    /// changed states are kept, and each change of a task already known is an event.
    fn publish_with(
        fleet: &Fleet,
        read: Option<&Read>,
        state: &State,
        store: &Store,
        changed: &watch::Sender<u64>,
    ) {
        store.save(state.replace_watch_list(fleet.watch_list()));
        if let Some(read) = read {
            let changes = state.set_lives(read.lives());
            for (save, change) in &changes {
                if let Some(before) = change.before {
                    store.event(
                        Some(save.task.clone()),
                        EventKind::StateChanged {
                            from: Some(before),
                            to: change.after,
                        },
                    );
                }
            }
            store.save(changes.into_iter().map(|(save, _)| save));
            store.discovered(fleet.discovered.clone());
        }
        changed.send_modify(|n| *n += 1);
    }

    /// Reads the task list every `discovery.interval` of the current configuration, until
    /// `shutdown`. A reload (a new value on `configs`) reads at once with its settings.
    pub async fn run(
        self,
        mut configs: watch::Receiver<Arc<crate::scheduler::Active>>,
        mut gates: SharedGate,
        shutdown: CancellationToken,
    ) {
        loop {
            // The scheduler publishes the gate of the sandbox settings as it starts.
            let gate = loop {
                if let Some(gate) = gates.borrow_and_update().clone() {
                    break gate;
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    changed = gates.changed() => if changed.is_err() { return },
                }
            };
            let active = Arc::clone(&configs.borrow_and_update());
            let config = &active.config;
            let Some(discovery) = config.discovery.clone() else {
                self.metrics.discovery.set_enabled(None);
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    changed = configs.changed() => if changed.is_err() { return } else { continue },
                }
            };
            self.metrics.discovery.set_enabled(Some(discovery.interval));
            let now = SystemTime::now();
            let read = tokio::select! {
                () = shutdown.cancelled() => return,
                read = read(&active.client, &gate, &self.metrics, &discovery, config.metrics.max_label_length, now) => read,
            };
            match read {
                Ok(read) => {
                    let (truncated, count) = {
                        let mut fleet = self.fleet.lock().unwrap_or_else(|e| e.into_inner());
                        let truncated = fleet.set_discovered(&read, now);
                        Self::publish_with(
                            &fleet,
                            Some(&read),
                            &self.state,
                            &self.store,
                            &self.changed,
                        );
                        (truncated, fleet.discovered_count())
                    };
                    self.metrics.discovery.record_read(count, truncated, now);
                    debug!(
                        listed = read.tasks.len(),
                        discovered = count,
                        truncated,
                        pages = read.pages,
                        "task list read"
                    );
                }
                Err(e) => {
                    let count = {
                        let mut fleet = self.fleet.lock().unwrap_or_else(|e| e.into_inner());
                        fleet.expire(now);
                        Self::publish(&fleet, &self.state, &self.store, &self.changed);
                        fleet.discovered_count()
                    };
                    self.metrics.discovery.set_tasks(count);
                    warn!(error = %e, discovered = count, "reading the task list failed; keeping the tasks discovered before");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(discovery.interval) => {}
                changed = configs.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    info!("configuration changed; reading the task list with the new settings");
                }
            }
        }
    }
}

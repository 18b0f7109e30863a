//! What the polls have produced: one record per watched task, plus the baseline bookkeeping
//! behind the fleet counters.
//!
//! Writers are the scheduler's polls ([`State::apply`]) and reloads
//! ([`State::replace_watch_list`]); readers are the `/metrics` renderer and the landing page
//! ([`State::read`]). The lock is a plain `RwLock` held only for in-memory work, never across
//! an `.await`; the expensive part of a poll (counting, cleaning strings) happens before the
//! lock is taken, and a reader only copies out each task's small record and the `Arc` of its
//! snapshot, then formats without the lock, so a scrape of 100k tasks never stalls polling.
//! The watch list and the task records change under one lock, so a reader sees either the
//! old or the new watch list, never a mix.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::{Duration, SystemTime};

use thiserror::Error;

use crate::config::{Config, MetricsConfig, TaskId, TaskSpec};
use crate::labels;
use crate::lifecycle::TaskLife;
use crate::sandbox::decode::lifecycle::TaskState as SandboxState;
use crate::sandbox::{ApiFailure, AttemptError, BodyDigest, Downloads, FailureReason, PauseReason};
use crate::zone::DangerZone;

/// Cap on the length of a stored error message (they can quote the sandbox).
const MAX_ERROR_CHARS: usize = 512;

/// The fleet counters keep at most this many times `max_label_values` distinct rules.
const FLEET_RULES_FACTOR: usize = 10;

/// All task records and the active watch list.
pub struct State {
    inner: RwLock<Inner>,
}

/// The active watch list with the limits that shape the exported data.
#[derive(Clone, Debug)]
pub struct WatchList {
    /// The configured tasks first, then the discovered ones. The configured part is shared with
    /// the configuration it came from.
    pub tasks: Arc<[TaskSpec]>,
    /// How many of `tasks`, at the end, were discovered (`source="discovered"`); the others come
    /// from the configuration (`source="static"`).
    pub discovered: usize,
    /// Union of the `labels:` keys of every task, sorted: extra labels of `krs_task_info`.
    pub label_keys: Vec<String>,
    pub limits: Limits,
}

/// Bounds applied to sandbox strings and label cardinality.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    pub max_label_length: usize,
    pub max_label_values: usize,
    /// Indexed by [`DangerZone::index`]: whether files of that zone get `krs_download_info`.
    pub file_info_zones: [bool; 6],
    /// `krs_download_info` series per task at most.
    pub max_file_info_series: usize,
    /// `krs_download_info` series per scrape at most, all tasks together.
    pub max_file_info_series_total: usize,
}

/// The outcome of one poll, as the scheduler hands it over.
#[derive(Debug)]
pub struct PollReport {
    pub task: TaskId,
    pub finished: SystemTime,
    /// HTTP status of the final attempt; `None` when no response arrived.
    pub status: Option<u16>,
    /// The downloads, or why there are none.
    pub result: Result<Downloads, PollError>,
    /// The task's state, when the poll asked for it (`GET tasks/{id}`).
    pub life: Option<TaskLife>,
}

/// Why a poll ended without downloads. The `Display` text is what the status page and the logs
/// show.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum PollError {
    /// The final attempt's answer was an error status.
    #[error("sandbox answered HTTP {status}: {}", .failure.describe())]
    Api {
        status: u16,
        failure: ApiFailure,
        /// The sandbox's own error `code`, if the body carried one.
        code: Option<String>,
    },
    /// The final attempt got no usable response: connection, timeout, size cap or an
    /// undecodable body.
    #[error("{reason}: {detail}")]
    Transport {
        reason: FailureReason,
        detail: String,
    },
    /// No attempt was sent: the whole fleet is holding back from the appliance.
    #[error(
        "polling paused: {} ({}); next try in {}s",
        .reason.as_str(),
        .reason.describe(),
        .remaining.as_secs().max(1)
    )]
    Paused {
        reason: PauseReason,
        remaining: Duration,
    },
}

/// What a poll added to the fleet counters.
#[derive(Debug, Default, PartialEq)]
pub struct NewActivity {
    /// One entry per newly observed file (or zone change), in its zone.
    pub downloads: Vec<DangerZone>,
    /// One entry per newly observed (file, rule) match; the rule already capped and cleaned.
    pub yara_hits: Vec<String>,
    /// Rules present at a baseline poll: their `krs_yara_hits_total` series start at 0 so that
    /// `increase()` sees the first new hit (a series born at 1 hides it).
    pub known_rules: Vec<String>,
    /// The sha256 of the file behind each entry of `downloads`, in the same order (cleaned;
    /// empty for a file without one): the exemplars of `krs_downloads_total`.
    pub download_files: Vec<String>,
    /// The file's zone before, for each entry of `downloads` whose zone changed; `None` for a
    /// new file.
    pub previous_zones: Vec<Option<DangerZone>>,
    /// The name of the file behind each entry of `downloads` (cleaned, cut to
    /// [`MAX_NAME_CHARS`]).
    pub download_names: Vec<String>,
    /// The sha256 of the file behind each entry of `yara_hits`, in the same order.
    pub yara_files: Vec<String>,
    /// The polled task and the end of its poll, when anything was counted.
    pub polled: Option<(TaskId, SystemTime)>,
}

/// What the scheduler knows of one watched task.
#[derive(Debug)]
pub struct Life {
    pub id: TaskId,
    /// What the sandbox last said of its state.
    pub life: Option<Arc<TaskLife>>,
    /// Whether it has been polled.
    pub polled: bool,
    /// From the configuration (`tasks:`), not discovered.
    pub configured: bool,
    /// Covered by the latest read of the task list.
    pub listed: bool,
    /// The `ResultId` for which a poll succeeded once completion was seen.
    pub settled_for: Option<Box<str>>,
}

/// What the scheduler paces one task by (a [`Life`] without the watch-list facts).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Known {
    pub life: Option<Arc<TaskLife>>,
    pub polled: bool,
    pub settled_for: Option<Box<str>>,
}

/// What applying a poll changed.
#[derive(Debug, Default, PartialEq)]
pub struct Applied {
    pub activity: NewActivity,
    /// Whether the task was up before this poll; `None` if it had never been polled.
    pub was_up: Option<bool>,
    /// The task's record to keep, when the poll changed it; the activity may be counted only
    /// once this is durable.
    pub save: Option<Save>,
}

/// A task's record as it should now be kept, or its removal (`record: None`). `seq` orders
/// saves of one task made under the lock: a store keeps the highest.
#[derive(Clone, Debug, PartialEq)]
pub struct Save {
    pub task: TaskId,
    pub seq: u64,
    pub record: Option<Record>,
}

/// What is kept of one task across restarts: its row (what its gauges show), the files
/// already counted, and the run it settled for. Cheap to clone: the parts are shared.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub row: TaskRow,
    pub seen: Option<Arc<Seen>>,
    pub settled_for: Option<Box<str>>,
}

/// The files of a task's latest successful poll, by identity.
pub type Seen = HashMap<u64, SeenFile>;

/// One poll in a task's recent history (the task page).
#[derive(Clone, Debug, PartialEq)]
pub struct PollEntry {
    pub at: SystemTime,
    pub status: Option<u16>,
    /// `None` for a success.
    pub error: Option<Arc<str>>,
    /// The body differed from the previous one.
    pub changed: bool,
}

/// Polls kept per task for the task page.
pub const POLL_HISTORY: usize = 8;
const _: () = assert!(POLL_HISTORY.is_power_of_two());

/// A consistent copy of the state for renderers, taken under the lock and read without it:
/// the watch list and one [`TaskRow`] per watched task, in watch-list order.
pub struct View {
    watch: Arc<WatchList>,
    rows: Vec<TaskRow>,
}

/// What renderers see of one watched task. Cheap to clone: the snapshot and error are shared.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskRow {
    pub last_poll: Option<SystemTime>,
    pub last_success: Option<SystemTime>,
    pub up: bool,
    /// HTTP status of the latest poll's final attempt; `None` when no response arrived.
    pub last_status: Option<u16>,
    pub last_error: Option<Arc<str>>,
    /// From the latest successful poll; kept while later polls fail, dropped when the task is
    /// deleted or disposed.
    pub snapshot: Option<Arc<Snapshot>>,
    /// What the sandbox last said of the task's state; `None` until known.
    pub life: Option<Arc<TaskLife>>,
}

/// Everything known about one watched task.
#[derive(Debug, Default)]
struct TaskState {
    row: TaskRow,
    /// Files seen in the latest successful poll; `None` until the baseline poll.
    seen: Option<Arc<Seen>>,
    /// See [`Life::settled_for`].
    settled_for: Option<Box<str>>,
    /// The latest polls, oldest first, at most [`POLL_HISTORY`].
    history: std::collections::VecDeque<PollEntry>,
    /// Digest of the body behind `row.snapshot` and `seen`; cleared when the limits that shaped
    /// them change, so the next poll digests the body again.
    digest: Option<BodyDigest>,
}

/// The per-task counts derived from one successful response. Strings are already cleaned.
/// Immutable once stored: renderers may cache what they derive from it per `Arc`.
#[derive(Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Files per zone, indexed by [`DangerZone::index`].
    pub zones: [u64; 6],
    pub bytes: u64,
    pub https: u64,
    /// (rule, files) sorted by rule, capped with [`OTHER`].
    pub yara: Vec<(String, u64)>,
    /// (detection, files) sorted by name, capped with [`OTHER`].
    pub detections: Vec<(String, u64)>,
    /// Files in the configured `file_info_zones`, most dangerous first, at most
    /// `max_file_info_series`.
    pub files: Vec<FileInfo>,
    /// Files in the configured zones left without a `krs_download_info` series by the cap.
    pub files_dropped: u64,
    /// Records of the response that were not exported (see the decoder's `SkipReason`).
    pub skipped_records: u64,
    /// Every file of the response for the task page, most dangerous first, at most
    /// [`MAX_DETAILS`]; each file once.
    pub details: Vec<FileDetail>,
}

/// One downloaded file as the task page shows it. Strings are cleaned and cut.
#[derive(Clone, Debug, PartialEq)]
pub struct FileDetail {
    /// The file's identity within its task.
    pub key: u64,
    pub zone: DangerZone,
    pub sha256: Box<str>,
    pub name: Box<str>,
    pub size: u64,
    pub file_type: Box<str>,
    pub https: bool,
    pub detections: Box<[Box<str>]>,
    pub rules: Box<[Box<str>]>,
    /// When the exporter first saw the file in this task (Unix seconds).
    pub first_seen: u64,
}

/// A file named in `krs_download_info`.
#[derive(Debug, PartialEq)]
pub struct FileInfo {
    pub zone: DangerZone,
    pub sha256: String,
    pub name: String,
    pub file_type: String,
}

struct Inner {
    watch: Arc<WatchList>,
    tasks: HashMap<TaskId, TaskState>,
    /// Whether every task of the first watch list has been polled once (a latch).
    ready: bool,
    /// Tasks of the first watch list, still watched, not yet polled nor known never to be:
    /// readiness is this set running empty. O(1) per poll, where scanning every task was
    /// O(n) per poll until ready (10^10 steps for a 100k backfill).
    pending: HashSet<TaskId>,
    /// Distinct rule values already used in `krs_yara_hits_total`.
    fleet_rules: HashSet<String>,
    /// Watched tasks the latest read of the task list covered.
    listed: HashSet<TaskId>,
    /// Orders [`Save`]s.
    seq: u64,
}

/// A file already counted.
#[derive(Clone, Debug, PartialEq)]
pub struct SeenFile {
    pub zone: DangerZone,
    /// Hashes of the file's YARA rules, sorted and distinct.
    pub rules: Vec<u64>,
    /// When it was first seen (Unix seconds).
    pub first_seen: u64,
}

impl From<AttemptError> for PollError {
    fn from(error: AttemptError) -> Self {
        match error {
            AttemptError::Api {
                status,
                failure,
                body,
            } => PollError::Api {
                status,
                failure,
                code: body.and_then(|b| b.code),
            },
            AttemptError::Transport { reason, detail } => PollError::Transport { reason, detail },
        }
    }
}

impl Default for Limits {
    /// The configuration's defaults.
    fn default() -> Self {
        Limits::from(&MetricsConfig::default())
    }
}

impl From<&MetricsConfig> for Limits {
    fn from(metrics: &MetricsConfig) -> Self {
        let mut file_info_zones = [false; 6];
        for zone in &metrics.file_info_zones {
            file_info_zones[zone.index()] = true;
        }
        Limits {
            max_label_length: metrics.max_label_length,
            max_label_values: metrics.max_label_values,
            file_info_zones,
            max_file_info_series: metrics.max_file_info_series,
            max_file_info_series_total: metrics.max_file_info_series_total,
        }
    }
}

impl WatchList {
    pub fn from_config(config: &Config) -> Self {
        WatchList {
            tasks: Arc::clone(&config.tasks),
            label_keys: config.label_keys(),
            limits: Limits::from(&config.metrics),
            discovered: 0,
        }
    }
}

impl State {
    pub fn new(watch: WatchList) -> Self {
        let mut inner = Inner {
            watch: Arc::new(WatchList {
                tasks: Arc::new([]),
                label_keys: Vec::new(),
                limits: watch.limits.clone(),
                discovered: 0,
            }),
            tasks: HashMap::new(),
            ready: false,
            pending: watch.tasks.iter().map(|t| t.id.clone()).collect(),
            fleet_rules: HashSet::new(),
            listed: HashSet::new(),
            seq: 0,
        };
        inner.set_watch(watch);
        State {
            inner: RwLock::new(inner),
        }
    }

    /// Makes `watch` the active list: records of removed tasks are dropped (their series
    /// vanish), added tasks start without a baseline. Returns the removals to keep.
    pub fn replace_watch_list(&self, watch: WatchList) -> Vec<Save> {
        self.write().set_watch(watch)
    }

    /// Restores kept records at start, before any poll: each watched task among them gets
    /// its row, files and settled run back, and counts as polled for readiness. Returns how
    /// many were restored; records of tasks not watched are ignored.
    pub fn restore(&self, records: impl IntoIterator<Item = (TaskId, Record)>) -> usize {
        let mut inner = self.write();
        let mut restored = 0;
        for (id, record) in records {
            let Some(task) = inner.tasks.get_mut(&id) else {
                continue;
            };
            task.row = record.row;
            task.seen = record.seen;
            task.settled_for = record.settled_for;
            // Polled before, or never to be polled (failed, deleted): ready either way.
            let never = task.row.life.as_ref().is_some_and(|l| l.state.is_gone());
            if task.row.last_poll.is_some() || never {
                inner.done(&id);
            }
            restored += 1;
        }
        restored
    }

    /// Rules the fleet counters already carry (restored from the store): they keep their
    /// label values within the fleet cap.
    pub fn restore_rules<'a>(&self, rules: impl IntoIterator<Item = &'a str>) {
        let mut inner = self.write();
        let cap = inner.watch.limits.max_label_values * FLEET_RULES_FACTOR;
        for rule in rules {
            if inner.fleet_rules.len() >= cap {
                break;
            }
            inner.fleet_rules.insert(rule.to_string());
        }
    }

    /// A successful poll of `task` once it was known completed in run `result_id`: it is
    /// settled for that run. Returns the save to keep, if this changed anything.
    pub fn settle(&self, task: &TaskId, result_id: &str) -> Option<Save> {
        let mut inner = self.write();
        let seq = inner.next_seq();
        let state = inner.tasks.get_mut(task)?;
        if state.settled_for.as_deref() == Some(result_id) {
            return None;
        }
        state.settled_for = Some(result_id.into());
        Some(state.save(task, seq))
    }

    /// Every watched task's record, for a store that must be written afresh.
    pub fn records(&self) -> Vec<Save> {
        let mut inner = self.write();
        let seq = inner.next_seq();
        let Inner { watch, tasks, .. } = &*inner;
        watch
            .tasks
            .iter()
            .filter_map(|spec| {
                let task = tasks.get(&spec.id)?;
                (task.row.last_poll.is_some() || task.row.life.is_some())
                    .then(|| task.save(&spec.id, seq))
            })
            .collect()
    }

    /// One task's row, files and recent polls, for the task page; `None` if not watched.
    pub fn task(&self, id: &TaskId) -> Option<(TaskSpec, TaskRow, Vec<PollEntry>)> {
        let inner = self.read_inner();
        let spec = inner.watch.tasks.iter().find(|t| &t.id == id)?.clone();
        let task = inner.tasks.get(id)?;
        Some((
            spec,
            task.row.clone(),
            task.history.iter().cloned().collect(),
        ))
    }

    /// The active watch list.
    pub fn watch_list(&self) -> Arc<WatchList> {
        Arc::clone(&self.read_inner().watch)
    }

    /// Records a finished poll and returns what it adds to the fleet counters. A report for a
    /// task that has left the watch list is dropped, and so is an "unchanged body" report whose
    /// body is no longer the one on record (a reload re-added the task or changed the limits).
    pub fn apply(&self, report: PollReport) -> Applied {
        let limits = self.read_inner().watch.limits.clone();
        self.apply_with(report, limits)
    }

    /// [`State::apply`] with the limits read before the lock was dropped: a reload may have
    /// replaced them since, so the store step compares them with the current ones.
    fn apply_with(&self, report: PollReport, limits: Limits) -> Applied {
        let outcome = match report.result {
            Ok(Downloads::Changed { decoded, digest }) => {
                let mut prepared = prepare(&decoded, &limits);
                prepared.files = decoded.files;
                Outcome::Changed(Box::new(prepared), digest)
            }
            Ok(Downloads::Unchanged(digest)) => Outcome::Unchanged(digest),
            Err(error) => Outcome::Failed(labels::clean(
                &error_or_default(error.to_string()),
                MAX_ERROR_CHARS,
            )),
        };
        // Files behind new counts, resolved to their hashes once the lock is released.
        let mut counted = Counted::default();
        let mut inner = self.write();
        // A reload between reading the limits and taking the lock has cleared the digests; a
        // snapshot shaped by the old limits must not get a live one, or every later "unchanged"
        // poll would keep it.
        let stale = inner.watch.limits != limits;
        let seq = inner.next_seq();
        let Inner {
            tasks, fleet_rules, ..
        } = &mut *inner;
        let Some(task) = tasks.get_mut(&report.task) else {
            return Applied::default();
        };
        let mut changed = false;
        if let Some(life) = report.life {
            changed |= task.set_life(life);
        }
        if let Outcome::Unchanged(digest) = outcome {
            if task.digest != Some(digest) {
                return Applied::default();
            }
        }
        let error_before = task.row.last_error.clone();
        let row = &mut task.row;
        let was_up = row.last_poll.map(|_| row.up);
        row.last_poll = Some(report.finished);
        row.last_status = report.status;
        let now = unix(report.finished);
        let succeeded = |row: &mut TaskRow| {
            row.up = true;
            row.last_success = Some(report.finished);
            row.last_error = None;
        };
        let activity = match outcome {
            Outcome::Unchanged(_) => {
                succeeded(row);
                NewActivity::default()
            }
            Outcome::Changed(prepared, digest) => {
                let mut prepared = *prepared;
                succeeded(row);
                task.digest = if stale { None } else { digest };
                let cap = limits.max_label_values * FLEET_RULES_FACTOR;
                let activity = match &task.seen {
                    None => baseline_rules(&prepared.rule_labels, fleet_rules, cap),
                    Some(previous) => {
                        let (activity, keys) = new_activity(
                            &prepared.seen,
                            &prepared.rule_labels,
                            previous,
                            fleet_rules,
                            cap,
                        );
                        counted = keys;
                        activity
                    }
                };
                // A file keeps the time it was first seen; a new one was first seen now.
                let first_seen = |key: &u64| {
                    task.seen
                        .as_ref()
                        .and_then(|s| s.get(key))
                        .map_or(now, |f| f.first_seen)
                };
                for (key, file) in prepared.seen.iter_mut() {
                    file.first_seen = first_seen(key);
                }
                for detail in &mut prepared.snapshot.details {
                    detail.first_seen =
                        prepared.seen.get(&detail.key).map_or(now, |f| f.first_seen);
                }
                // A body can differ in bytes only (a time stamp the decoder does not read):
                // then nothing the task shows or remembers changed, and nothing is kept anew.
                let same = task.row.snapshot.as_deref() == Some(&prepared.snapshot)
                    && task.seen.as_deref() == Some(&prepared.seen);
                if !same {
                    task.row.snapshot = Some(Arc::new(prepared.snapshot));
                    task.seen = Some(Arc::new(prepared.seen));
                    changed = true;
                }
                counted.files = prepared.files;
                activity
            }
            Outcome::Failed(error) => {
                row.up = false;
                row.last_error = Some(error.into());
                NewActivity::default()
            }
        };
        let row = &task.row;
        // A failing poll is kept when it changes what the task shows (up, or the error);
        // the same failure again writes nothing.
        changed |= was_up != Some(row.up) || error_before != row.last_error;
        task.remember(PollEntry {
            at: report.finished,
            status: report.status,
            error: task.row.last_error.clone(),
            changed: changed && task.row.up,
        });
        let save = changed.then(|| task.save(&report.task, seq));
        inner.done(&report.task);
        drop(inner);
        let mut activity = activity;
        if !activity.downloads.is_empty() || !activity.yara_hits.is_empty() {
            counted.resolve(&mut activity, limits.max_label_length);
            activity.polled = Some((report.task, report.finished));
        }
        Applied {
            activity,
            was_up,
            save,
        }
    }

    /// Records what a read of the task list says of the listed tasks' states; tasks not
    /// watched are ignored, and the listed set becomes exactly these tasks. A deleted or
    /// disposed task's downloads are forgotten: its download series vanish while
    /// `krs_task_state` says why.
    /// Returns the saves of the tasks whose state changed, with each change.
    pub fn set_lives(
        &self,
        lives: impl IntoIterator<Item = (TaskId, TaskLife)>,
    ) -> Vec<(Save, LifeChange)> {
        let mut inner = self.write();
        let seq = inner.next_seq();
        let mut listed = HashSet::new();
        let mut saves = Vec::new();
        for (id, life) in lives {
            if let Some(task) = inner.tasks.get_mut(&id) {
                let gone = life.state.is_gone();
                let before = task.row.life.as_ref().map(|l| l.state);
                let after = life.state;
                if task.set_life(life) {
                    saves.push((task.save(&id, seq), LifeChange { before, after }));
                }
                if gone {
                    inner.done(&id);
                }
                listed.insert(id);
            }
        }
        inner.listed = listed;
        saves
    }

    /// Each watched task's known state, in watch-list order: what the scheduler sets paces
    /// from.
    pub fn lives(&self) -> Vec<Life> {
        let inner = self.read_inner();
        let configured = inner.watch.tasks.len() - inner.watch.discovered;
        inner
            .watch
            .tasks
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                let task = inner.tasks.get(&spec.id);
                Life {
                    id: spec.id.clone(),
                    life: task.and_then(|t| t.row.life.clone()),
                    polled: task.is_some_and(|t| t.row.last_poll.is_some()),
                    configured: i < configured,
                    listed: inner.listed.contains(&spec.id),
                    settled_for: task.and_then(|t| t.settled_for.clone()),
                }
            })
            .collect()
    }

    /// One watched task's known state; `None` if not watched.
    pub fn life(&self, id: &TaskId) -> Option<Known> {
        let inner = self.read_inner();
        let t = inner.tasks.get(id)?;
        Some(Known {
            life: t.row.life.clone(),
            polled: t.row.last_poll.is_some(),
            settled_for: t.settled_for.clone(),
        })
    }

    /// The digest of the body behind `task`'s current snapshot, for the next poll to compare.
    pub fn digest(&self, task: &TaskId) -> Option<BodyDigest> {
        self.read_inner().tasks.get(task).and_then(|t| t.digest)
    }

    /// Whether every task of the watch list has been polled at least once. Once true it stays
    /// true: a reload adding tasks does not take a serving exporter out of rotation.
    pub fn ready(&self) -> bool {
        self.read_inner().ready
    }

    /// A consistent copy for rendering. Under the lock it only clones each task's small record
    /// (the snapshot is shared), so a scrape holds the lock for milliseconds even at 100k tasks.
    pub fn read(&self) -> View {
        let inner = self.read_inner();
        let rows = inner
            .watch
            .tasks
            .iter()
            .map(|spec| {
                inner
                    .tasks
                    .get(&spec.id)
                    .map(|t| t.row.clone())
                    .unwrap_or_default()
            })
            .collect();
        View {
            watch: Arc::clone(&inner.watch),
            rows,
        }
    }

    fn read_inner(&self) -> RwLockReadGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data that is still consistent per field;
        // serving it beats taking the exporter down.
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl View {
    pub fn watch_list(&self) -> &WatchList {
        &self.watch
    }

    /// Watched tasks in watch-list order with their records.
    pub fn tasks(&self) -> impl Iterator<Item = (&TaskSpec, &TaskRow)> + '_ {
        self.watch.tasks.iter().zip(&self.rows)
    }
}

/// A task's state as a read of the task list changed it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LifeChange {
    pub before: Option<SandboxState>,
    pub after: SandboxState,
}

impl TaskState {
    /// Returns whether anything changed.
    fn set_life(&mut self, life: TaskLife) -> bool {
        if self.row.life.as_deref() == Some(&life) {
            return false;
        }
        if matches!(life.state, SandboxState::Deleted | SandboxState::Disposed) {
            self.row.snapshot = None;
            self.seen = None;
            self.digest = None;
        }
        self.row.life = Some(Arc::new(life));
        true
    }

    fn save(&self, id: &TaskId, seq: u64) -> Save {
        Save {
            task: id.clone(),
            seq,
            record: Some(Record {
                row: self.row.clone(),
                seen: self.seen.clone(),
                settled_for: self.settled_for.clone(),
            }),
        }
    }

    fn remember(&mut self, entry: PollEntry) {
        // Growth doubles from 4: a power of two as the bound never allocates past it.
        if self.history.len() == POLL_HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(entry);
    }
}

fn unix(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Inner {
    /// The readiness latch: `task` was polled, or will never be (failed, deleted, disposed).
    /// Ready once every task of the first watch list (still watched) is; then it stays ready.
    fn done(&mut self, task: &TaskId) {
        if !self.ready && self.pending.remove(task) && self.pending.is_empty() {
            self.ready = true;
            self.pending = HashSet::new();
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn set_watch(&mut self, watch: WatchList) -> Vec<Save> {
        let keep: HashSet<&TaskId> = watch.tasks.iter().map(|t| &t.id).collect();
        let seq = self.next_seq();
        let mut removed = Vec::new();
        self.tasks.retain(|id, _| {
            let kept = keep.contains(id);
            if !kept {
                removed.push(Save {
                    task: id.clone(),
                    seq,
                    record: None,
                });
            }
            kept
        });
        for spec in watch.tasks.iter() {
            self.tasks.entry(spec.id.clone()).or_default();
        }
        if !self.ready {
            self.pending.retain(|id| keep.contains(id));
            if self.pending.is_empty() {
                self.ready = true;
            }
        }
        if watch.limits != self.watch.limits {
            // Snapshots were cleaned and capped with the old limits: digest the next bodies anew.
            for task in self.tasks.values_mut() {
                task.digest = None;
            }
        }
        self.watch = Arc::new(watch);
        removed
    }
}

fn error_or_default(error: String) -> String {
    if error.is_empty() {
        "poll failed".to_string()
    } else {
        error
    }
}

/// A poll's result, digested outside the lock.
enum Outcome {
    Changed(Box<Prepared>, Option<BodyDigest>),
    Unchanged(BodyDigest),
    /// The cleaned error message.
    Failed(String),
}

mod snapshot;

use snapshot::{baseline_rules, new_activity, prepare, Counted, Prepared};
pub use snapshot::{identity_key, set_identity_key, MAX_DETAILS, MAX_NAME_CHARS};

#[cfg(test)]
mod tests {
    use super::snapshot::cap_values;
    use super::*;
    use crate::config::TaskLabels;
    use crate::labels::OTHER;
    use crate::sandbox::decode::Decoded;
    use crate::sandbox::Download;

    fn task(id: &str) -> TaskSpec {
        TaskSpec {
            id: TaskId::parse(id).unwrap(),
            name: String::new(),
            labels: TaskLabels::default(),
        }
    }

    const T1: &str = "0d5b4e44-4c0e-4f0b-9a57-3f2d1b9e6c71";
    const T2: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";

    fn limits() -> Limits {
        let mut file_info_zones = [false; 6];
        file_info_zones[DangerZone::Red.index()] = true;
        Limits {
            max_label_length: 128,
            max_label_values: 100,
            file_info_zones,
            ..Limits::default()
        }
    }

    fn state(ids: &[&str]) -> State {
        State::new(WatchList {
            tasks: ids.iter().map(|id| task(id)).collect(),
            label_keys: Vec::new(),
            limits: limits(),
            discovered: 0,
        })
    }

    fn file(sha: &str, zone: DangerZone, rules: &[&str]) -> Download {
        Download {
            zone,
            sha256: sha.to_string(),
            name: format!("{sha}.bin"),
            size: 10,
            yara_rules: rules.iter().map(|r| r.to_string()).collect(),
            ..Download::default()
        }
    }

    fn ok(id: &str, files: Vec<Download>) -> PollReport {
        PollReport {
            task: TaskId::parse(id).unwrap(),
            finished: SystemTime::now(),
            status: Some(200),
            result: Ok(files.into()),
            life: None,
        }
    }

    fn with_body(id: &str, files: Vec<Download>, body: &[u8]) -> PollReport {
        PollReport {
            result: Ok(Downloads::Changed {
                decoded: Decoded {
                    files,
                    report: Default::default(),
                },
                digest: Some(BodyDigest::of(body)),
            }),
            ..ok(id, Vec::new())
        }
    }

    fn unchanged(id: &str, body: &[u8]) -> PollReport {
        PollReport {
            result: Ok(Downloads::Unchanged(BodyDigest::of(body))),
            ..ok(id, Vec::new())
        }
    }

    #[test]
    fn an_unchanged_body_refreshes_the_poll_and_keeps_the_same_snapshot() {
        let s = state(&[T1]);
        let body = b"[red file]";
        s.apply(with_body(T1, vec![file("aa", DangerZone::Red, &[])], body));
        assert_eq!(
            s.digest(&TaskId::parse(T1).unwrap()),
            Some(BodyDigest::of(body))
        );
        let before = s.read().tasks().next().unwrap().1.clone();
        s.apply(PollReport {
            status: Some(503),
            result: Err(PollError::Transport {
                reason: FailureReason::Connect,
                detail: "down".into(),
            }),
            ..ok(T1, Vec::new())
        });
        let mut report = unchanged(T1, body);
        report.finished = before.last_poll.unwrap() + std::time::Duration::from_secs(60);
        let applied = s.apply(report);
        assert_eq!(applied.activity, NewActivity::default());
        assert_eq!(applied.was_up, Some(false));
        let view = s.read();
        let after = view.tasks().next().unwrap().1;
        assert!(after.up && after.last_error.is_none());
        assert_eq!(after.last_status, Some(200));
        assert_eq!(after.last_success, after.last_poll);
        assert!(after.last_poll > before.last_poll);
        assert!(Arc::ptr_eq(
            after.snapshot.as_ref().unwrap(),
            before.snapshot.as_ref().unwrap()
        ));
    }

    #[test]
    fn an_unchanged_report_for_a_body_no_longer_on_record_is_dropped() {
        let s = state(&[T1]);
        s.apply(with_body(
            T1,
            vec![file("aa", DangerZone::Red, &[])],
            b"one",
        ));
        let applied = s.apply(unchanged(T1, b"two"));
        assert_eq!(applied, Applied::default());
        // A reload that changes the limits forgets the digest: the next body is digested anew.
        let mut narrower = limits();
        narrower.max_label_length = 8;
        s.replace_watch_list(WatchList {
            tasks: vec![task(T1)].into(),
            label_keys: Vec::new(),
            limits: narrower,
            discovered: 0,
        });
        assert_eq!(s.digest(&TaskId::parse(T1).unwrap()), None);
        assert_eq!(s.apply(unchanged(T1, b"one")), Applied::default());
    }

    #[test]
    fn a_poll_prepared_under_limits_a_reload_replaced_is_digested_again_next_time() {
        let s = state(&[T1]);
        let id = TaskId::parse(T1).unwrap();
        let body = b"[long name]";
        let mut narrower = limits();
        narrower.max_label_length = 4;
        // The poll read the old limits, then a reload narrowed them before it took the lock.
        s.replace_watch_list(WatchList {
            tasks: vec![task(T1)].into(),
            label_keys: Vec::new(),
            limits: narrower,
            discovered: 0,
        });
        let mut long = file("aa", DangerZone::Red, &[]);
        long.name = "a-long-file-name.exe".into();
        s.apply_with(with_body(T1, vec![long.clone()], body), limits());
        assert_eq!(s.digest(&id), None, "the snapshot has the old shape");
        assert_eq!(s.apply(unchanged(T1, body)), Applied::default());
        s.apply(with_body(T1, vec![long], body));
        assert_eq!(s.digest(&id), Some(BodyDigest::of(body)));
        assert_eq!(snapshot_of(&s).files[0].name, "a-lo");
    }

    #[test]
    fn a_view_taken_for_rendering_does_not_hold_up_polls() {
        let s = state(&[T1]);
        let view = s.read();
        // With the view alive, a poll applies at once (a held lock would deadlock this test).
        s.apply(ok(T1, vec![file("aa", DangerZone::Red, &[])]));
        assert!(
            view.tasks().next().unwrap().1.snapshot.is_none(),
            "the view is a copy"
        );
        assert!(s.read().tasks().next().unwrap().1.snapshot.is_some());
    }

    #[test]
    fn files_present_at_the_baseline_poll_are_not_counted() {
        let s = state(&[T1]);
        let activity = s
            .apply(ok(T1, vec![file("aa", DangerZone::Red, &["R1"])]))
            .activity;
        assert!(activity.downloads.is_empty() && activity.yara_hits.is_empty());
        assert_eq!(
            activity.known_rules,
            vec!["R1".to_string()],
            "R1's series starts at 0"
        );
        let view = s.read();
        let (_, t) = view.tasks().next().unwrap();
        assert_eq!(
            t.snapshot.as_ref().unwrap().zones[DangerZone::Red.index()],
            1
        );
    }

    #[test]
    fn a_new_file_is_counted_once_in_its_zone_with_its_rules() {
        let s = state(&[T1]);
        s.apply(ok(T1, vec![file("aa", DangerZone::Green, &[])]));
        let two = vec![
            file("aa", DangerZone::Green, &[]),
            file("bb", DangerZone::Red, &["R1", "R2"]),
        ];
        let activity = s.apply(ok(T1, two)).activity;
        assert_eq!(activity.downloads, vec![DangerZone::Red]);
        assert_eq!(activity.yara_hits, vec!["R1".to_string(), "R2".to_string()]);
        let again = s
            .apply(ok(
                T1,
                vec![
                    file("aa", DangerZone::Green, &[]),
                    file("bb", DangerZone::Red, &["R1", "R2"]),
                ],
            ))
            .activity;
        assert_eq!(again, NewActivity::default());
    }

    #[test]
    fn a_zone_change_counts_once_more_in_the_new_zone() {
        let s = state(&[T1]);
        s.apply(ok(T1, vec![file("aa", DangerZone::Grey, &[])]));
        let activity = s
            .apply(ok(T1, vec![file("aa", DangerZone::Red, &["R9"])]))
            .activity;
        assert_eq!(activity.downloads, vec![DangerZone::Red]);
        assert_eq!(activity.yara_hits, vec!["R9".to_string()]);
    }

    #[test]
    fn a_failed_poll_keeps_the_last_good_snapshot() {
        let s = state(&[T1]);
        s.apply(ok(T1, vec![file("aa", DangerZone::Red, &[])]));
        s.apply(PollReport {
            task: TaskId::parse(T1).unwrap(),
            finished: SystemTime::now(),
            status: Some(500),
            result: Err(PollError::Transport {
                reason: FailureReason::InvalidResponse,
                detail: "body said\nforged=1".into(),
            }),
            life: None,
        });
        let view = s.read();
        let (_, t) = view.tasks().next().unwrap();
        assert!(!t.up);
        assert_eq!(t.last_status, Some(500));
        assert!(t.snapshot.is_some());
        assert!(!t.last_error.as_ref().unwrap().contains('\n'));
    }

    #[test]
    fn a_typed_poll_error_reads_on_the_record_as_the_same_one_line_text() {
        let s = state(&[T1]);
        let api = AttemptError::Api {
            status: 404,
            failure: ApiFailure::TaskNotFound,
            body: None,
        };
        let text = api.to_string();
        s.apply(PollReport {
            status: Some(404),
            result: Err(api.into()),
            ..ok(T1, Vec::new())
        });
        assert_eq!(
            s.read().tasks().next().unwrap().1.last_error.as_deref(),
            Some(text.as_str())
        );
        s.apply(PollReport {
            status: None,
            result: Err(PollError::Paused {
                reason: PauseReason::RetryAfter,
                remaining: Duration::from_millis(200),
            }),
            ..ok(T1, Vec::new())
        });
        let view = s.read();
        let row = view.tasks().next().unwrap().1;
        assert_eq!(row.last_status, None);
        assert_eq!(
            row.last_error.as_deref(),
            Some("polling paused: retry_after (the sandbox asked to retry later (Retry-After)); next try in 1s")
        );
    }

    #[test]
    fn removing_a_task_drops_its_record_and_reports_for_it_are_ignored() {
        let s = state(&[T1, T2]);
        s.apply(ok(T2, vec![file("aa", DangerZone::Red, &[])]));
        s.replace_watch_list(WatchList {
            tasks: vec![task(T1)].into(),
            label_keys: Vec::new(),
            limits: limits(),
            discovered: 0,
        });
        assert_eq!(s.read().tasks().count(), 1);
        s.apply(ok(T2, vec![file("bb", DangerZone::Red, &[])]));
        assert_eq!(s.read().tasks().count(), 1);
    }

    #[test]
    fn readiness_latches_once_every_task_was_polled() {
        let s = state(&[T1, T2]);
        assert!(!s.ready());
        s.apply(ok(T1, vec![]));
        assert!(!s.ready());
        s.apply(PollReport {
            task: TaskId::parse(T2).unwrap(),
            finished: SystemTime::now(),
            status: Some(404),
            result: Err(PollError::Api {
                status: 404,
                failure: ApiFailure::TaskNotFound,
                code: Some("6".into()),
            }),
            life: None,
        });
        assert!(s.ready());
    }

    #[test]
    fn distinct_rules_beyond_the_cap_are_summed_under_other() {
        let mut values = HashMap::new();
        for i in 0..10 {
            values.insert(format!("rule{i}"), 1 + i as u64);
        }
        let capped = cap_values(values, 3);
        assert_eq!(capped.len(), 4);
        let other = capped.iter().find(|(v, _)| v == OTHER).unwrap().1;
        assert_eq!(other, (1..=7).sum::<u64>());
        assert!(capped.iter().any(|(v, n)| v == "rule9" && *n == 10));
    }

    #[test]
    fn a_file_with_ten_thousand_rules_keeps_the_cap_and_sums_the_rest_under_other() {
        let s = state(&[T1]);
        let rules: Vec<String> = (0..10_000).map(|i| format!("r{i}")).collect();
        let refs: Vec<&str> = rules.iter().map(String::as_str).collect();
        s.apply(ok(T1, vec![file("aa", DangerZone::Red, &refs)]));
        let view = s.read();
        let (_, t) = view.tasks().next().unwrap();
        let snap = t.snapshot.as_ref().unwrap();
        // 100 rules and `__other__` for the rest, each matched by the one file.
        assert!(snap.yara.len() <= 101);
        assert_eq!(snap.yara.iter().map(|(_, n)| n).sum::<u64>(), 101);
        assert!(snap.yara.iter().any(|(rule, _)| rule == OTHER));
    }

    #[test]
    fn files_without_a_hash_are_identified_by_name_and_size() {
        let s = state(&[T1]);
        let mut f = file("", DangerZone::Grey, &[]);
        f.name = "a.exe".into();
        s.apply(ok(T1, vec![f.clone()]));
        let mut g = f.clone();
        g.size = 11;
        let activity = s.apply(ok(T1, vec![f, g])).activity;
        assert_eq!(activity.downloads, vec![DangerZone::Grey]);
    }

    #[test]
    fn only_files_in_the_configured_zones_get_info_series() {
        let s = state(&[T1]);
        s.apply(ok(
            T1,
            vec![
                file("aa", DangerZone::Red, &[]),
                file("bb", DangerZone::Green, &[]),
            ],
        ));
        let view = s.read();
        let (_, t) = view.tasks().next().unwrap();
        let files = &t.snapshot.as_ref().unwrap().files;
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].sha256, "aa");
    }

    fn snapshot_of(s: &State) -> Arc<Snapshot> {
        let view = s.read();
        let (_, t) = view.tasks().next().unwrap();
        Arc::clone(t.snapshot.as_ref().unwrap())
    }

    #[test]
    fn info_series_beyond_the_per_task_cap_are_dropped_and_counted_while_zone_counts_stay_exact() {
        let s = state(&[T1]);
        let files: Vec<Download> = (0..150)
            .map(|i| file(&format!("{i:03}"), DangerZone::Red, &[]))
            .collect();
        s.apply(ok(T1, files));
        let snap = snapshot_of(&s);
        assert_eq!(snap.files.len(), 100);
        assert_eq!(snap.files_dropped, 50);
        assert_eq!(snap.zones[DangerZone::Red.index()], 150);
    }

    #[test]
    fn a_file_listed_twice_in_one_body_counts_once() {
        let s = state(&[T1]);
        s.apply(ok(T1, vec![]));
        let twice = vec![
            file("aa", DangerZone::Red, &["r1"]),
            file("aa", DangerZone::Red, &["r1"]),
        ];
        let applied = s.apply(ok(T1, twice));
        assert_eq!(applied.activity.downloads, [DangerZone::Red]);
        assert_eq!(applied.activity.yara_hits, ["r1"]);
    }

    #[test]
    fn records_cut_by_the_decoder_still_count_in_the_zones_and_skips_are_kept() {
        let s = state(&[T1]);
        let mut decoded = Decoded {
            files: vec![file("aa", DangerZone::Red, &[])],
            report: Default::default(),
        };
        decoded.report.cut_zones[DangerZone::Green.index()] = 7;
        decoded.report.skipped[crate::sandbox::decode::SkipReason::OverLimit.index()] = 7;
        decoded.report.skipped[crate::sandbox::decode::SkipReason::Unreadable.index()] = 1;
        s.apply(PollReport {
            result: Ok(Downloads::Changed {
                decoded,
                digest: None,
            }),
            ..ok(T1, Vec::new())
        });
        let snap = snapshot_of(&s);
        assert_eq!(snap.zones[DangerZone::Green.index()], 7);
        assert_eq!(snap.zones[DangerZone::Red.index()], 1);
        assert_eq!(snap.skipped_records, 8);
    }
}

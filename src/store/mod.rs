//! Observed state kept across restarts (`--storage.path`): each task's record (what its gauges
//! show, its lifecycle state and settled run), the files already counted, the fleet counters'
//! values, discovery's view and the activity feed, in one embedded database file.
//!
//! **Exactly once.** A poll's new counts reach `/metrics` only through [`Store::commit`]: the
//! writer thread makes the task's new record (its "seen" files) and the counters' new values
//! durable in one transaction, and only then increments the counters. A `kill -9` before the
//! commit loses nothing that was shown (the files are counted again after the restart, against
//! the older record); after it, the restart continues from the committed values. So counters
//! never go down and no file counts twice.
//!
//! **Group commit.** Saves wait in [`Pending`], the latest per task; the writer takes all of
//! them at once, so a burst of polls costs one fsync. A poll that changed nothing saves
//! nothing.
//!
//! **Trouble.** A file that is damaged, truncated or from a newer build is moved aside
//! (`<file>.corrupt-<UTC time>`) and the exporter starts with baseline semantics. A store that
//! cannot be written keeps the exporter serving from memory: counts are shown at once (as
//! without a store), the failure is logged, counted and shown, and the writer re-opens the file
//! with backoff, then writes the whole state afresh.
//!
//! Without a path ([`Store::memory`]) counts are shown at once and nothing is written.

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use thiserror::Error;
use tracing::{error, info, warn};

use crate::config::TaskId;
use crate::discovery::Listed;
use crate::journal::{self, Event, EventKind, Hour, Journal};
use crate::metrics::Metrics;
use crate::state::{self, NewActivity, Record, Save, State};
use crate::zone::DangerZone;

mod db;
pub mod record;

pub use db::SCHEMA;
use db::{Db, OpenError};

/// The database file inside the storage directory.
pub const FILE_NAME: &str = "krs-exporter.redb";

/// The lock file inside the storage directory.
pub const LOCK_NAME: &str = "lock";

/// How long the writer lets saves gather before committing them together: it bounds how late a
/// new count is shown, and how often the disk is flushed.
const GROUP_WINDOW: Duration = Duration::from_millis(25);

/// Re-opening a store that failed waits this long at first, doubling up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(300);

/// Why the store could not be used.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("cannot create the storage directory {path}: {error}")]
    CreateDir {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot open the lock file {path}: {error}")]
    LockFile {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "the storage directory {path} is in use by another krs-exporter process (its lock file is held); give each process its own --storage.path"
    )]
    Locked { path: PathBuf },
    #[error("writing the store failed: {0}")]
    Write(String),
}

/// The storage directory, locked for this process for as long as the value lives.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// The storage directory the daemon was given: locked, or not (yet) usable. Another process
/// holding the lock stops the start (exit 2); any other trouble (the directory cannot be made,
/// a read-only file system) leaves the exporter serving from memory while it retries, rather
/// than failing its start over and over.
#[derive(Debug)]
pub struct StorageDir {
    dir: PathBuf,
    lock: Result<DirLock, String>,
}

impl StorageDir {
    pub fn acquire(dir: PathBuf) -> Result<StorageDir, StoreError> {
        let lock = match DirLock::acquire(&dir) {
            Ok(lock) => Ok(lock),
            Err(e @ StoreError::Locked { .. }) => return Err(e),
            Err(e) => Err(e.to_string()),
        };
        Ok(StorageDir { dir, lock })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// Takes the lock if not held yet.
    fn lock(&mut self) -> Result<(), String> {
        if self.lock.is_err() {
            self.lock = DirLock::acquire(&self.dir).map_err(|e| e.to_string());
        }
        self.lock.as_ref().map(|_| ()).map_err(String::clone)
    }
}

impl DirLock {
    /// Creates `dir` if missing and takes its lock; a second process gets [`StoreError::Locked`].
    pub fn acquire(dir: &Path) -> Result<DirLock, StoreError> {
        fs::create_dir_all(dir).map_err(|error| StoreError::CreateDir {
            path: dir.to_path_buf(),
            error,
        })?;
        let path = dir.join(LOCK_NAME);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|error| StoreError::LockFile {
                path: path.clone(),
                error,
            })?;
        match file.try_lock() {
            Ok(()) => Ok(DirLock { _file: file }),
            Err(fs::TryLockError::WouldBlock) => Err(StoreError::Locked {
                path: dir.to_path_buf(),
            }),
            Err(fs::TryLockError::Error(error)) => Err(StoreError::LockFile { path, error }),
        }
    }
}

/// A fleet counter series the store keeps.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Counter {
    Downloads(DangerZone),
    YaraHits(String),
}

impl Counter {
    fn key(&self) -> String {
        match self {
            Counter::Downloads(zone) => format!("downloads/{}", zone.as_str()),
            Counter::YaraHits(rule) => format!("yara/{rule}"),
        }
    }

    fn parse(key: &str) -> Option<Counter> {
        if let Some(zone) = key.strip_prefix("downloads/") {
            return DangerZone::ALL
                .into_iter()
                .find(|z| z.as_str() == zone)
                .map(Counter::Downloads);
        }
        key.strip_prefix("yara/")
            .map(|rule| Counter::YaraHits(rule.to_string()))
    }
}

/// Everything read back at start.
#[derive(Default)]
pub struct Restored {
    pub tasks: Vec<(TaskId, Record)>,
    pub counters: Vec<(Counter, u64)>,
    pub discovered: Vec<Listed>,
    pub events: Vec<Event>,
    pub hours: Vec<Hour>,
    /// Values that did not decode (their tasks start from a new baseline).
    pub skipped: usize,
}

/// `krs_yara_hits_total`'s kept values, by rule.
pub type RuleValues<'a> = Vec<(&'a str, u64)>;

/// Kept counter values as the two fleet counters take them: by zone, and by rule.
pub fn split_counters(counters: &[(Counter, u64)]) -> (Vec<(DangerZone, u64)>, RuleValues<'_>) {
    let mut downloads = Vec::new();
    let mut rules = Vec::new();
    for (counter, value) in counters {
        match counter {
            Counter::Downloads(zone) => downloads.push((*zone, *value)),
            Counter::YaraHits(rule) => rules.push((rule.as_str(), *value)),
        }
    }
    (downloads, rules)
}

/// What the status page says of the store.
#[derive(Clone, Debug, Default)]
pub struct Status {
    /// The database file; `None` in memory.
    pub path: Option<PathBuf>,
    /// Tasks restored at start.
    pub restored: usize,
    /// Where a damaged file was moved at start, and why.
    pub moved_aside: Option<(PathBuf, String)>,
    /// The latest failure while it lasts: since when, and what.
    pub failing: Option<(SystemTime, String)>,
    pub last_write: Option<SystemTime>,
    pub size_bytes: u64,
    pub writes: u64,
}

/// The store opened at start: what it held, and the file to go on writing.
pub struct Opened {
    dir: StorageDir,
    db: Option<Db>,
    pub restored: Restored,
    pub status: Status,
}

impl Opened {
    /// Opens the file in the locked directory and reads it whole. Never fails: a damaged file
    /// is moved aside and a fresh one made; a file that cannot be opened at all leaves the
    /// store failing (serving from memory) until the writer re-opens it.
    pub fn open(mut dir: StorageDir) -> Opened {
        let path = dir.file();
        let mut status = Status {
            path: Some(path.clone()),
            ..Status::default()
        };
        if let Err(e) = dir.lock() {
            error!(error = %e, "the storage directory cannot be used; serving from memory and retrying");
            status.failing = Some((SystemTime::now(), e));
            return Opened {
                dir,
                db: None,
                restored: Restored::default(),
                status,
            };
        }
        let attempt = Db::open(&path, state::identity_key)
            .and_then(|(db, key)| db.read_all().map(|r| (db, key, r)));
        let opened = match attempt {
            Ok(opened) => Ok(opened),
            Err(OpenError::Io(e)) => Err(e),
            Err(damaged) => {
                let why = match damaged {
                    OpenError::NewerSchema(v) => {
                        format!("schema version {v} is newer than this build's {SCHEMA}")
                    }
                    OpenError::Unusable(e) | OpenError::Io(e) => e,
                };
                match move_aside(&path) {
                    Ok(aside) => {
                        error!(
                            file = %path.display(),
                            moved_to = %aside.display(),
                            error = %why,
                            "the store could not be read; it was moved aside and the exporter starts from a new baseline"
                        );
                        status.moved_aside = Some((aside, why));
                        Db::open(&path, state::identity_key)
                            .and_then(|(db, key)| db.read_all().map(|r| (db, key, r)))
                            .map_err(|e| format!("{e:?}"))
                    }
                    Err(e) => Err(format!("{why}; moving it aside failed: {e}")),
                }
            }
        };
        match opened {
            Ok((db, key, restored)) => {
                let used = state::set_identity_key(key);
                let mut restored = restored;
                if used != key {
                    // Files were identified with another key in this process already (only
                    // in tests that open several stores): the kept sets cannot be compared.
                    warn!("the store's file identities do not match this process; files start from a new baseline");
                    for (_, record) in &mut restored.tasks {
                        record.seen = None;
                    }
                }
                Opened {
                    dir,
                    db: Some(db),
                    restored,
                    status,
                }
            }
            Err(e) => {
                error!(file = %path.display(), error = %e, "the store cannot be opened; serving from memory and retrying");
                status.failing = Some((SystemTime::now(), e));
                Opened {
                    dir,
                    db: None,
                    restored: Restored::default(),
                    status,
                }
            }
        }
    }
}

fn move_aside(path: &Path) -> std::io::Result<PathBuf> {
    let stamp = utc_stamp(SystemTime::now());
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".corrupt-{stamp}"));
    let aside = PathBuf::from(aside);
    fs::rename(path, &aside)?;
    Ok(aside)
}

/// `20261201T183000Z`: RFC 3339 in its basic form, safe in a file name.
fn utc_stamp(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at)
        .to_string()
        .replace(['-', ':'], "")
}

/// Where observed state goes: a database file through the writer thread, or nowhere.
pub struct Store {
    shared: Arc<Shared>,
    writer: Mutex<Option<WriterThread>>,
}

/// The writer thread, and the channel that disconnects when it ends (a panic included).
struct WriterThread {
    handle: std::thread::JoinHandle<()>,
    ended: std::sync::mpsc::Receiver<()>,
}

struct Shared {
    metrics: Arc<Metrics>,
    journal: Arc<Journal>,
    /// `false` in memory: counts are shown at once.
    kept: bool,
    pending: Mutex<Pending>,
    wake: Condvar,
    status: Mutex<Status>,
    /// Commits to fail on purpose, as a full disk would (tests only).
    #[cfg(test)]
    fail_commits: std::sync::atomic::AtomicUsize,
}

/// What waits for the next commit. Bounded by the watch list: one save per task, the
/// discovered list once, and the activity of polls since the last commit.
#[derive(Default)]
struct Pending {
    saves: HashMap<TaskId, Save>,
    activity: Vec<NewActivity>,
    events: Vec<(Option<TaskId>, EventKind)>,
    discovered: Option<Vec<Listed>>,
    stop: bool,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.saves.is_empty()
            && self.activity.is_empty()
            && self.events.is_empty()
            && self.discovered.is_none()
    }

    fn save(&mut self, save: Save) {
        match self.saves.get(&save.task) {
            Some(kept) if kept.seq > save.seq => {}
            _ => {
                self.saves.insert(save.task.clone(), save);
            }
        }
    }
}

/// A task's record and its counted files, encoded.
type EncodedTask = (Vec<u8>, Option<Vec<u8>>);

/// One commit's worth of encoded writes.
#[derive(Default)]
pub struct Batch {
    /// Task id → (record, counted files) or removal.
    tasks: Vec<(TaskId, Option<EncodedTask>)>,
    discovery: Vec<(TaskId, Option<Vec<u8>>)>,
    events: Vec<(u64, Vec<u8>)>,
    hours: Vec<(u64, Vec<u8>)>,
    counters: Vec<(String, u64)>,
}

impl Store {
    /// No store: counts are shown at once, nothing is kept.
    pub fn memory(metrics: Arc<Metrics>, journal: Arc<Journal>) -> Store {
        Store {
            shared: Arc::new(Shared {
                metrics,
                journal,
                kept: false,
                pending: Mutex::new(Pending::default()),
                wake: Condvar::new(),
                status: Mutex::new(Status::default()),
                #[cfg(test)]
                fail_commits: Default::default(),
            }),
            writer: Mutex::new(None),
        }
    }

    /// Starts the writer thread on an opened store. `state` is what a store written afresh
    /// (after a failure) is filled from.
    pub fn start(
        opened: Opened,
        counters: &[(Counter, u64)],
        discovered: &[Listed],
        state: Arc<State>,
        metrics: Arc<Metrics>,
        journal: Arc<Journal>,
    ) -> Store {
        let Opened {
            dir, db, status, ..
        } = opened;
        metrics.storage.enable(status.restored);
        if status.failing.is_some() {
            // Failing from the start counts like any failed commit (the alert reads it).
            metrics.storage.record_failure();
        }
        let shared = Arc::new(Shared {
            metrics,
            journal,
            kept: true,
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            status: Mutex::new(status),
            #[cfg(test)]
            fail_commits: Default::default(),
        });
        let writer = Writer {
            shared: Arc::clone(&shared),
            resync: db.is_none(),
            db,
            dir,
            state,
            totals: counters.iter().cloned().collect(),
            discovered: discovered
                .iter()
                .map(|l| (l.id.clone(), record::encode_listed(l)))
                .collect(),
            retry: RETRY_MIN,
            retry_at: Instant::now() + RETRY_MIN,
        };
        let (ends, ended) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("krs-store".into())
            .spawn(move || {
                let _ends = ends;
                writer.run();
            })
            .map(|handle| WriterThread { handle, ended })
            .ok();
        if thread.is_none() {
            error!("could not start the store's writer thread; serving from memory");
        }
        Store {
            shared,
            writer: Mutex::new(thread),
        }
    }

    /// A finished poll: its save (if it changed the task) and its new counts, shown once the
    /// save is durable.
    pub fn commit(&self, save: Option<Save>, activity: NewActivity) {
        let counts = !activity.downloads.is_empty()
            || !activity.yara_hits.is_empty()
            || !activity.known_rules.is_empty();
        if !self.durable() {
            if counts {
                self.shared
                    .journal
                    .record(SystemTime::now(), journal::activity_events(&activity));
                self.shared.metrics.record_activity(&activity);
            }
            return;
        }
        if save.is_none() && !counts {
            // Nothing to keep: the writer sleeps on (most polls of a quiet fleet).
            return;
        }
        let mut pending = self.shared.lock_pending();
        if let Some(save) = save {
            pending.save(save);
        }
        if counts {
            pending.activity.push(activity);
        }
        drop(pending);
        self.shared.wake.notify_one();
    }

    /// Saves that change no counter: task states read from the list, removals, settled runs.
    pub fn save(&self, saves: impl IntoIterator<Item = Save>) {
        if !self.durable() {
            return;
        }
        let mut pending = self.shared.lock_pending();
        let mut any = false;
        for save in saves {
            pending.save(save);
            any = true;
        }
        drop(pending);
        if any {
            self.shared.wake.notify_one();
        }
    }

    /// Something for the activity feed.
    pub fn event(&self, task: Option<TaskId>, kind: EventKind) {
        if !self.durable() {
            self.shared
                .journal
                .record(SystemTime::now(), [(task, kind)]);
            return;
        }
        self.shared.lock_pending().events.push((task, kind));
        self.shared.wake.notify_one();
    }

    /// Discovery's latest view.
    pub fn discovered(&self, listed: Vec<Listed>) {
        if !self.durable() {
            return;
        }
        self.shared.lock_pending().discovered = Some(listed);
        self.shared.wake.notify_one();
    }

    /// The journal the store feeds.
    pub fn journal(&self) -> &Arc<Journal> {
        &self.shared.journal
    }

    pub fn status(&self) -> Status {
        self.shared
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Writes what is pending and stops the writer; waits for it at most `grace`.
    pub fn close(&self, grace: Duration) {
        self.shared.lock_pending().stop = true;
        self.shared.wake.notify_one();
        let thread = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(WriterThread { handle, ended }) = thread {
            match ended.recv_timeout(grace) {
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    warn!("the store's last commit did not finish within the grace period");
                }
                _ => {
                    let _ = handle.join();
                }
            }
        }
    }

    /// Makes the next `n` commits fail as a full disk would.
    #[cfg(test)]
    fn fail_next_commits(&self, n: usize) {
        self.shared
            .fail_commits
            .store(n, std::sync::atomic::Ordering::SeqCst);
    }

    fn durable(&self) -> bool {
        self.shared.kept
            && self
                .writer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some()
    }
}

impl Shared {
    fn lock_pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_status(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// The writer thread's own state.
struct Writer {
    shared: Arc<Shared>,
    db: Option<Db>,
    dir: StorageDir,
    state: Arc<State>,
    /// The fleet counters' values as kept (restored plus everything committed since).
    totals: HashMap<Counter, u64>,
    /// Discovery's view as kept, encoded.
    discovered: HashMap<TaskId, Vec<u8>>,
    /// The next commit writes everything afresh (the file was re-opened after a failure).
    resync: bool,
    retry: Duration,
    retry_at: Instant,
}

impl Writer {
    fn run(mut self) {
        loop {
            let taken = self.wait();
            let stop = taken.stop;
            self.commit(taken);
            if stop {
                break;
            }
        }
        info!("store closed");
    }

    /// Waits until something is pending, a re-open is due, or the store is closing.
    fn wait(&self) -> Pending {
        let mut pending = self.shared.lock_pending();
        loop {
            if pending.stop {
                return std::mem::take(&mut *pending);
            }
            if !pending.is_empty() {
                // Group commit: what else finishes within a moment shares this commit's fsync
                // (a busy fleet's polls, a read of the task list's state changes).
                drop(pending);
                std::thread::sleep(GROUP_WINDOW);
                return std::mem::take(&mut *self.shared.lock_pending());
            }
            if self.db.is_none() {
                let now = Instant::now();
                if now >= self.retry_at {
                    return Pending::default();
                }
                pending = self
                    .shared
                    .wake
                    .wait_timeout(pending, self.retry_at - now)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0);
            } else {
                pending = self
                    .shared
                    .wake
                    .wait(pending)
                    .unwrap_or_else(|e| e.into_inner());
            }
        }
    }

    fn commit(&mut self, taken: Pending) {
        let now = SystemTime::now();
        if self.db.is_none() && Instant::now() >= self.retry_at {
            self.reopen();
        }
        // Events are numbered (and shown in the feed) now; what matters to counters waits.
        let mut kinds: Vec<(Option<TaskId>, EventKind)> = taken
            .activity
            .iter()
            .flat_map(journal::activity_events)
            .collect();
        kinds.extend(taken.events);
        let events = self.shared.journal.record(now, kinds);
        let mut changed: HashMap<Counter, u64> = HashMap::new();
        for activity in &taken.activity {
            for (counter, by) in deltas(activity) {
                let total = self.totals.entry(counter.clone()).or_default();
                *total += by;
                changed.insert(counter, *total);
            }
        }
        let mut batch = Batch::default();
        if self.resync {
            self.fill_afresh(&mut batch, taken.discovered);
        } else {
            for save in taken.saves.into_values() {
                batch.tasks.push(encode_save(save));
            }
            if let Some(listed) = taken.discovered {
                self.diff_discovered(&mut batch, listed);
            }
            batch.counters = changed.iter().map(|(c, v)| (c.key(), *v)).collect();
            batch.events = events
                .iter()
                .map(|e| (e.id, record::encode_event(e)))
                .collect();
            batch.hours = self.current_hours(&events);
        }
        let written = match &self.db {
            Some(_) if self.injected_failure() => Some(Err(StoreError::Write(
                "No space left on device (injected)".into(),
            ))),
            Some(db) => Some(db.write(&batch, self.resync)),
            None => None,
        };
        match written {
            Some(Ok(())) => self.written(now),
            Some(Err(e)) => self.failed(now, e.to_string()),
            // Still failing: shown from memory; everything is written afresh once it opens.
            None => self.resync = true,
        }
        for activity in &taken.activity {
            self.shared.metrics.record_activity(activity);
        }
    }

    #[cfg(test)]
    fn injected_failure(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.shared
            .fail_commits
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    #[cfg(not(test))]
    fn injected_failure(&self) -> bool {
        false
    }

    fn written(&mut self, now: SystemTime) {
        let size = fs::metadata(self.dir.file()).map_or(0, |m| m.len());
        self.shared.metrics.storage.record_write(size);
        let recovered = self.resync;
        self.resync = false;
        self.retry = RETRY_MIN;
        let mut was_failing = false;
        self.shared.set_status(|s| {
            was_failing = s.failing.take().is_some();
            s.last_write = Some(now);
            s.size_bytes = size;
            s.writes += 1;
        });
        if was_failing || recovered {
            info!("the store is written again; it holds the whole state");
            self.shared.journal.record(
                now,
                [(
                    None,
                    EventKind::Storage {
                        ok: true,
                        detail: "the store is written again".into(),
                    },
                )],
            );
        }
    }

    fn failed(&mut self, now: SystemTime, error: String) {
        self.shared.metrics.storage.record_failure();
        let mut first = false;
        self.shared.set_status(|s| {
            first = s.failing.is_none();
            if first {
                s.failing = Some((now, error.clone()));
            } else if let Some((_, e)) = &mut s.failing {
                e.clone_from(&error);
            }
        });
        if first {
            error!(error = %error, retry_s = self.retry.as_secs(), "the store cannot be written; serving from memory, a restart now would count recent files again");
            self.shared.journal.record(
                now,
                [(
                    None,
                    EventKind::Storage {
                        ok: false,
                        detail: crate::labels::clean(&error, 256).into(),
                    },
                )],
            );
        } else {
            warn!(error = %error, "the store still cannot be written");
        }
        // Drop the file (a failed commit can leave it needing repair) and re-open later.
        self.db = None;
        self.resync = true;
        self.retry_at = Instant::now() + self.retry;
        self.retry = (self.retry * 2).min(RETRY_MAX);
    }

    fn reopen(&mut self) {
        if let Err(e) = self.dir.lock() {
            self.failed(SystemTime::now(), e);
            return;
        }
        match Db::open(&self.dir.file(), state::identity_key) {
            Ok((db, key)) if state::set_identity_key(key) == key => {
                self.db = Some(db);
                self.resync = true;
            }
            Ok(_) => {
                // A file made meanwhile with other identities: start it over with ours.
                let _ = fs::remove_file(self.dir.file());
                self.failed(
                    SystemTime::now(),
                    "the store's file identities changed; it will be written afresh".into(),
                );
            }
            Err(e) => self.failed(SystemTime::now(), format!("{e:?}")),
        }
    }

    /// Everything, for a file re-opened after a failure.
    fn fill_afresh(&mut self, batch: &mut Batch, listed: Option<Vec<Listed>>) {
        for save in self.state.records() {
            batch.tasks.push(encode_save(save));
        }
        if let Some(listed) = listed {
            self.discovered = listed
                .iter()
                .map(|l| (l.id.clone(), record::encode_listed(l)))
                .collect();
        }
        batch.discovery = self
            .discovered
            .iter()
            .map(|(id, bytes)| (id.clone(), Some(bytes.clone())))
            .collect();
        batch.counters = self.totals.iter().map(|(c, v)| (c.key(), *v)).collect();
        let journal = &self.shared.journal;
        batch.events = journal
            .recent(&journal::Filter::default(), journal::MAX_EVENTS)
            .iter()
            .rev()
            .map(|e| (e.id, record::encode_event(e)))
            .collect();
        batch.hours = journal
            .hours()
            .iter()
            .map(|h| (h.hour, record::encode_hour(h)))
            .collect();
    }

    fn diff_discovered(&mut self, batch: &mut Batch, listed: Vec<Listed>) {
        let mut now: HashMap<TaskId, Vec<u8>> = listed
            .iter()
            .map(|l| (l.id.clone(), record::encode_listed(l)))
            .collect();
        for id in self.discovered.keys() {
            if !now.contains_key(id) {
                batch.discovery.push((id.clone(), None));
            }
        }
        for (id, bytes) in &now {
            if self.discovered.get(id) != Some(bytes) {
                batch.discovery.push((id.clone(), Some(bytes.clone())));
            }
        }
        std::mem::swap(&mut self.discovered, &mut now);
    }

    /// The hourly buckets the new events touched.
    fn current_hours(&self, events: &[Event]) -> Vec<(u64, Vec<u8>)> {
        let touched: std::collections::HashSet<u64> = events
            .iter()
            .filter(|e| e.kind.zone().is_some())
            .map(|e| e.at / 3600)
            .collect();
        self.shared
            .journal
            .hours()
            .iter()
            .filter(|h| touched.contains(&h.hour))
            .map(|h| (h.hour, record::encode_hour(h)))
            .collect()
    }
}

fn encode_save(save: Save) -> (TaskId, Option<EncodedTask>) {
    let encoded = save.record.map(|record| {
        (
            record::encode_task(&record),
            record.seen.as_deref().map(record::encode_seen),
        )
    });
    (save.task, encoded)
}

/// What a poll's activity adds to each counter series (known rules add 0: the series exists).
fn deltas(activity: &NewActivity) -> Vec<(Counter, u64)> {
    let mut out: Vec<(Counter, u64)> = Vec::new();
    for rule in &activity.known_rules {
        out.push((Counter::YaraHits(rule.clone()), 0));
    }
    for rule in &activity.yara_hits {
        out.push((Counter::YaraHits(rule.clone()), 1));
    }
    for zone in &activity.downloads {
        out.push((Counter::Downloads(*zone), 1));
    }
    out
}

#[cfg(test)]
mod tests;

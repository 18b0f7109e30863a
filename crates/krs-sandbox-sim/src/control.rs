//! Live simulator state and [`SimHandle`], the test's remote control over it.
//!
//! One `Mutex<State>` holds the task table, the per-path counters and the request log; every
//! request takes it once, for a hash lookup and a few counter updates, never across an `.await`.
//! Concurrency gauges are atomics so that finishing a response needs no lock.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use super::scenario::{
    canonical_task_id, validate_task, Credentials, Fault, FaultAction, ResponseFormat, SimFile,
    SimTask, TaskState,
};

/// The request log keeps this many most recent entries.
pub const REQUEST_LOG_CAPACITY: usize = 1_000_000;

/// Longest task path segment kept in counters and the log (hostile paths stay bounded).
const MAX_LOGGED_SEGMENT: usize = 64;

/// Controls and observes a running simulator. Cheap to clone; dropping it does not stop the
/// simulator (cancel the token given to [`super::start`]).
#[derive(Clone)]
pub struct SimHandle {
    pub(super) shared: Arc<Shared>,
}

/// One request as the simulator answered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// Arrival time since simulator start.
    pub at: Duration,
    /// The task segment of the path, lowercased and cut to 64 bytes; empty for other paths.
    pub task: String,
    /// Status sent; 0 when the connection was closed without an answer (`reset` fault).
    pub status: u16,
}

/// What the connection tasks and the handle share.
pub(super) struct Shared {
    pub(super) addr: SocketAddr,
    /// Origin of every `after`; `tokio::time` so tests with paused time control it.
    pub(super) started: Instant,
    /// While set, connections are closed without an answer.
    pub(super) down: AtomicBool,
    pub(super) state: Mutex<State>,
    /// Requests being answered now (body not yet fully produced).
    pub(super) in_flight: AtomicU64,
    pub(super) in_flight_max: AtomicU64,
    /// Highest `PathCounters::in_flight` ever seen, over all task paths.
    pub(super) in_flight_max_per_task: AtomicU64,
    pub(super) total: AtomicU64,
    /// The accept loop and every connection task, so `closed` can wait for all of them.
    pub(super) tracker: TaskTracker,
}

/// Everything a request reads or updates under the one lock.
pub(super) struct State {
    /// `username:password` as the `Authorization: Basic` header must decode to.
    pub(super) expected_auth: Vec<u8>,
    pub(super) not_found_status: u16,
    /// Keyed by canonical (lowercase) task id.
    pub(super) tasks: HashMap<String, TaskEntry>,
    /// Keyed by the path's task segment (lowercased, bounded), whether or not the task exists,
    /// so requests for unknown ids and auth failures are counted too.
    pub(super) paths: HashMap<Arc<str>, Arc<PathCounters>>,
    pub(super) log: VecDeque<LogEntry>,
}

pub(super) struct TaskEntry {
    pub(super) state: TaskState,
    pub(super) format: ResponseFormat,
    /// Shared with responses being rendered; replaced (not mutated in place) on change.
    pub(super) files: Arc<Vec<SimFile>>,
    pub(super) faults: FaultQueue,
}

#[derive(Default)]
pub(super) struct PathCounters {
    pub(super) requests: AtomicU64,
    pub(super) in_flight: AtomicU64,
}

pub(super) struct LogEntry {
    pub(super) at: Duration,
    pub(super) task: Arc<str>,
    pub(super) status: u16,
}

/// A task's scripted faults and how far they have been consumed.
pub(super) struct FaultQueue {
    list: Vec<Fault>,
    /// Index of the fault answering the next request.
    pos: usize,
    /// Requests already answered by `list[pos]`.
    used: u32,
    repeat: bool,
}

/// Counts a request as in flight until dropped (the response body drops it when its last byte
/// has been produced).
pub(super) struct InFlight {
    shared: Arc<Shared>,
    path: Option<Arc<PathCounters>>,
}

impl SimHandle {
    /// The address the simulator listens on.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `http://IP:PORT`, with an unspecified listen address replaced by loopback.
    pub fn base_url(&self) -> String {
        let mut addr = self.shared.addr;
        match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => addr.set_ip(Ipv4Addr::LOCALHOST.into()),
            IpAddr::V6(ip) if ip.is_unspecified() => addr.set_ip(Ipv6Addr::LOCALHOST.into()),
            _ => {}
        }
        format!("http://{addr}")
    }

    /// Time since the simulator started: the clock every `after` is measured on.
    pub fn elapsed(&self) -> Duration {
        self.shared.started.elapsed()
    }

    /// Replace a task's files (visible to the next request). Creates the task if unknown.
    ///
    /// Missing hashes are derived as in a scenario. Panics if `task` is not a GUID.
    pub fn set_files(&self, task: &str, files: Vec<SimFile>) {
        let id = canonical_or_panic(task);
        let files = files
            .into_iter()
            .map(|mut f| {
                f.resolve_hashes(&id);
                f
            })
            .collect();
        self.lock().entry(id).files = Arc::new(files);
    }

    /// Add one file to a task. Creates the task if unknown. Panics if `task` is not a GUID.
    pub fn add_file(&self, task: &str, mut file: SimFile) {
        let id = canonical_or_panic(task);
        file.resolve_hashes(&id);
        let mut state = self.lock();
        let entry = state.entry(id);
        Arc::make_mut(&mut entry.files).push(file);
    }

    /// Append faults to a task's queue. Creates the task if unknown. Panics if `task` is not a
    /// GUID or a fault is invalid (`times: 0`, a status outside 100–599, a zero trickle rate).
    pub fn push_faults(&self, task: &str, faults: Vec<Fault>) {
        let id = canonical_or_panic(task);
        let checked = SimTask::new(&id).faults(faults);
        let checked = validate_task(checked, "push_faults")
            .unwrap_or_else(|e| panic!("invalid fault pushed to {id}: {e}"));
        self.lock().entry(id).faults.push(checked.faults);
    }

    /// Mark a task deleted (404, code 7). Creates it, deleted, if unknown.
    /// Panics if `task` is not a GUID.
    pub fn delete_task(&self, task: &str) {
        let id = canonical_or_panic(task);
        self.lock().entry(id).state = TaskState::Deleted;
    }

    /// Add a task, replacing any task with the same id (its fault queue starts afresh).
    /// Panics if the task's id is not a GUID or a fault is invalid.
    pub fn add_task(&self, task: SimTask) {
        let field = format!("add_task({})", task.id);
        let task = validate_task(task, &field).unwrap_or_else(|e| panic!("{e}"));
        let id = task.id.clone();
        self.lock().tasks.insert(id, TaskEntry::from_task(task));
    }

    /// Forget a task: it answers "task not found" (code 6) from now on.
    /// Panics if `task` is not a GUID.
    pub fn remove_task(&self, task: &str) {
        let id = canonical_or_panic(task);
        self.lock().tasks.remove(&id);
    }

    /// Accept only these credentials from now on.
    pub fn set_credentials(&self, username: &str, password: &str) {
        self.lock().expected_auth = Credentials::new(username, password).basic_bytes();
    }

    /// While down, every new connection is accepted and closed at once, and a request arriving
    /// on an open keep-alive connection closes it without an answer (neither is counted): what
    /// a client sees of a dead backend behind a proxy. Up again answers normally.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// Requests whose path named this task (any status, auth failures included, unknown ids
    /// too). `task` is matched case-insensitively.
    pub fn requests(&self, task: &str) -> u64 {
        let key = path_key(task.trim());
        self.lock()
            .paths
            .get(key.as_str())
            .map_or(0, |c| c.requests.load(Ordering::SeqCst))
    }

    /// Requests answered (or reset) since start, any path.
    pub fn total_requests(&self) -> u64 {
        self.shared.total.load(Ordering::SeqCst)
    }

    /// The most recent requests (at most [`REQUEST_LOG_CAPACITY`]), oldest first.
    pub fn request_log(&self) -> Vec<RequestRecord> {
        self.lock()
            .log
            .iter()
            .map(|e| RequestRecord {
                at: e.at,
                task: e.task.to_string(),
                status: e.status,
            })
            .collect()
    }

    /// Requests being answered right now.
    pub fn in_flight(&self) -> u64 {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// The most requests ever answered at once.
    pub fn in_flight_max(&self) -> u64 {
        self.shared.in_flight_max.load(Ordering::SeqCst)
    }

    /// The most requests ever answered at once for a single task path.
    pub fn in_flight_max_per_task(&self) -> u64 {
        self.shared.in_flight_max_per_task.load(Ordering::SeqCst)
    }

    /// Zero the request counters, the in-flight maxima and the request log; tasks, fault
    /// queues and the current in-flight count are kept.
    pub fn reset_stats(&self) {
        let mut state = self.lock();
        state.paths.clear();
        state.log.clear();
        self.shared.total.store(0, Ordering::SeqCst);
        self.shared.in_flight_max.store(0, Ordering::SeqCst);
        self.shared
            .in_flight_max_per_task
            .store(0, Ordering::SeqCst);
    }

    /// Wait until the simulator has stopped: the token was cancelled, the listener is closed
    /// and every connection has ended.
    pub async fn closed(&self) {
        self.shared.tracker.wait().await;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave `State` half-updated in a way that
        // matters to a simulator, so a poisoned lock is simply taken over.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    pub(super) fn new(
        credentials: &Credentials,
        not_found_status: u16,
        tasks: Vec<SimTask>,
    ) -> Self {
        State {
            expected_auth: credentials.basic_bytes(),
            not_found_status,
            tasks: tasks
                .into_iter()
                .map(|t| (t.id.clone(), TaskEntry::from_task(t)))
                .collect(),
            paths: HashMap::new(),
            log: VecDeque::new(),
        }
    }

    /// Counters for a task path segment, created on first sight.
    pub(super) fn path_counters(&mut self, segment: &str) -> (Arc<str>, Arc<PathCounters>) {
        let key = path_key(segment);
        if let Some((k, c)) = self.paths.get_key_value(key.as_str()) {
            return (k.clone(), c.clone());
        }
        let k: Arc<str> = key.into();
        let c = Arc::new(PathCounters::default());
        self.paths.insert(k.clone(), c.clone());
        (k, c)
    }

    pub(super) fn record(&mut self, at: Duration, task: Arc<str>, status: u16) {
        if self.log.len() >= REQUEST_LOG_CAPACITY {
            self.log.pop_front();
        }
        self.log.push_back(LogEntry { at, task, status });
    }

    /// The task with this canonical id, created active and empty if unknown.
    fn entry(&mut self, id: String) -> &mut TaskEntry {
        self.tasks
            .entry(id.clone())
            .or_insert_with(|| TaskEntry::from_task(SimTask::new(&id)))
    }
}

impl TaskEntry {
    fn from_task(task: SimTask) -> Self {
        TaskEntry {
            state: task.state,
            format: task.format,
            files: Arc::new(task.files),
            faults: FaultQueue {
                list: task.faults,
                pos: 0,
                used: 0,
                repeat: task.faults_repeat,
            },
        }
    }
}

impl FaultQueue {
    /// The action for the next request, if a fault is due.
    pub(super) fn next(&mut self) -> Option<FaultAction> {
        if self.pos >= self.list.len() {
            if !self.repeat || self.list.is_empty() {
                return None;
            }
            self.pos = 0;
        }
        let fault = &self.list[self.pos];
        let action = fault.action.clone();
        self.used += 1;
        if self.used >= fault.times {
            self.pos += 1;
            self.used = 0;
        }
        Some(action)
    }

    fn push(&mut self, faults: Vec<Fault>) {
        if !self.repeat {
            // Consumed faults never come back; drop them so a long test doesn't accumulate.
            self.list.drain(..self.pos);
            self.pos = 0;
        }
        self.list.extend(faults);
    }
}

impl InFlight {
    /// Count a request as in flight (globally, and for `path` if it names a task).
    pub(super) fn enter(shared: &Arc<Shared>) -> Self {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.in_flight_max.fetch_max(now, Ordering::SeqCst);
        InFlight {
            shared: shared.clone(),
            path: None,
        }
    }

    pub(super) fn enter_path(&mut self, path: Arc<PathCounters>) {
        let now = path.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.shared
            .in_flight_max_per_task
            .fetch_max(now, Ordering::SeqCst);
        self.path = Some(path);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        if let Some(path) = &self.path {
            path.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Credentials {
    fn basic_bytes(&self) -> Vec<u8> {
        format!("{}:{}", self.username, self.password).into_bytes()
    }
}

/// Counter key for a task path segment: lowercased, cut to a bounded length on a char boundary.
fn path_key(segment: &str) -> String {
    let mut end = segment.len().min(MAX_LOGGED_SEGMENT);
    while !segment.is_char_boundary(end) {
        end -= 1;
    }
    segment[..end].to_lowercase()
}

fn canonical_or_panic(task: &str) -> String {
    canonical_task_id(task.trim())
        .unwrap_or_else(|| panic!("simulator control: {task:?} is not a task GUID"))
}

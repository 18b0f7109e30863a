//! Live simulator state and [`SimHandle`], the test's remote control over it.
//!
//! One `Mutex<State>` holds the task table, the per-path counters and the request log; every
//! request takes it once, for a hash lookup and a few counter updates, never across an `.await`.
//! Concurrency gauges are atomics so that finishing a response needs no lock.
//!
//! Generated tasks are made here, lazily: every request (and every handle call) first catches
//! the table up with the clock ([`State::catch_up`]), so no background task is needed and a
//! paused test clock sees exactly what a real one would.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use super::appliance::{Appliance, EndpointFaults, Health, Version};
use super::generator::Generator;
use super::lifecycle::{Events, Offset, Sample, StateName, TaskError};
use super::scenario::{
    canonical_task_id, validate_endpoint_faults, validate_task, Credentials, Fault, FaultAction,
    ParamsShape, Parts, ResponseFormat, SimFile, SimTask, TaskState,
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

/// Which endpoint a request named (for counters, the log and per-endpoint faults).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `GET /api/v1/sandbox/tasks/{id}/downloads`
    Downloads,
    /// `GET /api/v1/sandbox/tasks/{id}`
    Task,
    /// `GET /api/v1/sandbox/tasks/`
    List,
    /// `GET /api/v1/sandbox/health`
    Health,
    /// `GET /api/v1/sandbox/version`
    Version,
    /// Any other path.
    Other,
}

/// One request as the simulator answered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// Arrival time since simulator start.
    pub at: Duration,
    pub endpoint: Endpoint,
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
    /// Requests per [`Endpoint`], indexed by [`Endpoint::index`].
    pub(super) per_endpoint: [AtomicU64; 6],
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
    /// Wall-clock time of simulator start: `Created`, `Processed` and bases are read on it.
    pub(super) start_wall: SystemTime,
    pub(super) health: Health,
    pub(super) version: Version,
    pub(super) appliance: Appliance,
    pub(super) list_faults: FaultQueue,
    pub(super) health_faults: FaultQueue,
    pub(super) version_faults: FaultQueue,
    /// Every task by creation time then id: the task list walks it newest first, so a page
    /// costs its offset plus its length, not a sort of the whole table.
    pub(super) by_created: BTreeSet<(Offset, String)>,
    pub(super) generator: Option<Generator>,
    /// Ids of the generated tasks that exist, oldest first (dropped beyond `keep`).
    generated: VecDeque<String>,
    /// Number of the next task the generator will make.
    next_generated: u64,
}

pub(super) struct TaskEntry {
    pub(super) state: TaskState,
    pub(super) format: ResponseFormat,
    /// Shared with responses being rendered; replaced (not mutated in place) on change.
    pub(super) files: Arc<Vec<SimFile>>,
    pub(super) faults: FaultQueue,
    pub(super) params_faults: FaultQueue,
    /// Shared with responses being rendered; copied on write (live state changes).
    pub(super) life: Arc<Life>,
}

/// What a task-parameter record is made of, beside the files.
#[derive(Clone)]
pub(super) struct Life {
    pub(super) created: Offset,
    /// Empty: the state is derived from the files, as before lifecycles existed.
    pub(super) events: Events,
    pub(super) sample: Sample,
    pub(super) verdict: Option<String>,
    pub(super) sample_zone: Option<String>,
    pub(super) error: Option<TaskError>,
    pub(super) params_shape: ParamsShape,
}

#[derive(Default)]
pub(super) struct PathCounters {
    pub(super) requests: AtomicU64,
    pub(super) in_flight: AtomicU64,
}

pub(super) struct LogEntry {
    pub(super) at: Duration,
    pub(super) endpoint: Endpoint,
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
        let mut state = self.lock();
        state.remove(&task.id);
        state.insert(task);
    }

    /// Forget a task: it answers "task not found" (code 6) from now on.
    /// Panics if `task` is not a GUID.
    pub fn remove_task(&self, task: &str) {
        let id = canonical_or_panic(task);
        self.lock().remove(&id);
    }

    /// From now on the task is in this state (any spelling: `deleted`, `disposed`,
    /// `Processing failed`, …); whatever its timeline still had in store is cancelled.
    /// Panics if `task` is not a GUID or not a known task.
    pub fn set_state(&self, task: &str, state: &str) {
        let now = Offset::after(self.elapsed());
        self.with_life(task, |life| {
            life.events.set_state(now, StateName::new(state))
        });
    }

    /// Someone repeats the task now: a new `ResultId`, `processing` for `processing`, then
    /// `completed` with a new `Processed`. Panics if `task` is not a GUID or not a known task.
    pub fn repeat_task(&self, task: &str, processing: Duration) {
        let now = Offset::after(self.elapsed());
        self.with_life(task, |life| life.events.repeat(now, processing));
    }

    /// Replace the health checks and incidents (incident times stay relative to start).
    pub fn set_health(&self, health: Health) {
        self.lock().health = health;
    }

    /// Replace what `GET /version` answers.
    pub fn set_version(&self, version: Version) {
        self.lock().version = version;
    }

    /// Append faults to the queue of the task list, health or version endpoint. Panics for
    /// another endpoint (task endpoints have per-task queues) or an invalid fault.
    pub fn push_endpoint_faults(&self, endpoint: Endpoint, faults: Vec<Fault>) {
        let list = EndpointFaults {
            faults,
            repeat: false,
        };
        validate_endpoint_faults(&list, &format!("push_endpoint_faults({endpoint:?})"))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut state = self.lock();
        let queue = match endpoint {
            Endpoint::List => &mut state.list_faults,
            Endpoint::Health => &mut state.health_faults,
            Endpoint::Version => &mut state.version_faults,
            other => {
                panic!("{other:?} has per-task fault queues: use push_faults or push_params_faults")
            }
        };
        queue.push(list.faults);
    }

    /// Append faults to a task's `GET /tasks/{id}` queue. Creates the task if unknown. Panics
    /// if `task` is not a GUID or a fault is invalid.
    pub fn push_params_faults(&self, task: &str, faults: Vec<Fault>) {
        let id = canonical_or_panic(task);
        let checked = SimTask::new(&id).faults(faults);
        let checked = validate_task(checked, "push_params_faults")
            .unwrap_or_else(|e| panic!("invalid fault pushed to {id}: {e}"));
        self.lock().entry(id).params_faults.push(checked.faults);
    }

    /// Requests to this endpoint (any status, auth failures included).
    pub fn requests_to(&self, endpoint: Endpoint) -> u64 {
        self.shared.per_endpoint[endpoint.index()].load(Ordering::SeqCst)
    }

    /// Tasks the simulator holds now, generated ones included (those not created yet too).
    pub fn task_count(&self) -> usize {
        let now = Offset::after(self.elapsed());
        let mut state = self.lock();
        state.catch_up(now);
        state.tasks.len()
    }

    /// Wall-clock time of simulator start: `Created` is this plus the task's `created`.
    pub fn start_time(&self) -> SystemTime {
        self.lock().start_wall
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
                endpoint: e.endpoint,
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
        for counter in &self.shared.per_endpoint {
            counter.store(0, Ordering::SeqCst);
        }
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

    fn with_life(&self, task: &str, change: impl FnOnce(&mut Life)) {
        let id = canonical_or_panic(task);
        let now = Offset::after(self.elapsed());
        let mut state = self.lock();
        state.catch_up(now);
        let entry = state
            .tasks
            .get_mut(&id)
            .unwrap_or_else(|| panic!("simulator control: no task {id}"));
        change(Arc::make_mut(&mut entry.life));
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
    pub(super) fn new(parts: Parts, start_wall: SystemTime) -> Self {
        let Parts {
            credentials,
            not_found_status,
            tasks,
            appliance,
            generator,
        } = parts;
        let mut state = State {
            expected_auth: credentials.basic_bytes(),
            not_found_status,
            tasks: HashMap::with_capacity(tasks.len()),
            paths: HashMap::new(),
            log: VecDeque::new(),
            start_wall: appliance.start_time.unwrap_or(start_wall),
            health: appliance.health.clone(),
            version: appliance.version.clone(),
            list_faults: FaultQueue::new(&appliance.list_faults),
            health_faults: FaultQueue::new(&appliance.health_faults),
            version_faults: FaultQueue::new(&appliance.version_faults),
            appliance,
            by_created: BTreeSet::new(),
            generator,
            generated: VecDeque::new(),
            next_generated: 0,
        };
        for task in tasks {
            state.insert(task);
        }
        state
    }

    /// Make the generated tasks the clock has reached, dropping those beyond `keep`.
    pub(super) fn catch_up(&mut self, now: Offset) {
        let Some(generator) = &self.generator else {
            return;
        };
        let alive = generator.alive(now);
        if alive.end <= self.next_generated {
            return;
        }
        let new: Vec<SimTask> = (alive.start.max(self.next_generated)..alive.end)
            .map(|k| generator.task(k))
            .collect();
        let keep = generator.keep;
        self.next_generated = alive.end;
        for task in new {
            let task = validate_task(task, "generator")
                .expect("generated tasks are valid: ordered steps, GUID ids");
            self.generated.push_back(task.id.clone());
            self.remove(&task.id);
            self.insert(task);
        }
        while self.generated.len() > keep {
            if let Some(old) = self.generated.pop_front() {
                self.remove(&old);
                self.paths.remove(old.as_str());
            }
        }
    }

    /// Add a validated task (replacing none: the caller removed any with its id).
    fn insert(&mut self, task: SimTask) {
        self.by_created.insert((task.created, task.id.clone()));
        self.tasks
            .insert(task.id.clone(), TaskEntry::from_task(task));
    }

    fn remove(&mut self, id: &str) {
        if let Some(old) = self.tasks.remove(id) {
            self.by_created.remove(&(old.life.created, id.to_owned()));
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

    pub(super) fn record(&mut self, at: Duration, endpoint: Endpoint, task: Arc<str>, status: u16) {
        if self.log.len() >= REQUEST_LOG_CAPACITY {
            self.log.pop_front();
        }
        self.log.push_back(LogEntry {
            at,
            endpoint,
            task,
            status,
        });
    }

    /// The task with this canonical id, created active and empty if unknown.
    fn entry(&mut self, id: String) -> &mut TaskEntry {
        if !self.tasks.contains_key(&id) {
            let task = validate_task(SimTask::new(&id), "entry")
                .expect("a canonical id makes a valid empty task");
            self.insert(task);
        }
        self.tasks
            .get_mut(&id)
            .expect("the task was inserted just above")
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
            params_faults: FaultQueue {
                list: task.params_faults,
                pos: 0,
                used: 0,
                repeat: task.params_faults_repeat,
            },
            life: Arc::new(Life {
                created: task.created,
                events: Events::build(&task.timeline, &task.repeats),
                sample: task.sample,
                verdict: task.verdict,
                sample_zone: task.sample_zone,
                error: task.error,
                params_shape: task.params_shape,
            }),
        }
    }
}

impl Endpoint {
    pub(super) fn index(self) -> usize {
        match self {
            Endpoint::Downloads => 0,
            Endpoint::Task => 1,
            Endpoint::List => 2,
            Endpoint::Health => 3,
            Endpoint::Version => 4,
            Endpoint::Other => 5,
        }
    }
}

impl FaultQueue {
    fn new(list: &EndpointFaults) -> Self {
        FaultQueue {
            list: list.faults.clone(),
            pos: 0,
            used: 0,
            repeat: list.repeat,
        }
    }

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

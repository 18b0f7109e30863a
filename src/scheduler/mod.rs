//! The poll scheduler: decides when each watched task is polled and runs the polls.
//!
//! - Each task has a stable phase within `interval` ([`plan`]), so requests are spread evenly.
//! - At most `concurrency` attempts are in flight (a semaphore); the dispatcher takes a slot
//!   before spawning a poll, so the number of spawned polls is bounded too.
//! - A task never has two polls at once: a poll still running when its next turn comes skips
//!   that turn.
//! - Every attempt passes the fleet-wide pause [`gate`] (401, `Retry-After`, or a sandbox
//!   unreachable or failing), and every retry the fleet-wide retry [`budget`].
//! - A reload ([`Active`] sent over a watch channel) keeps the phase of tasks that stay, polls
//!   added tasks promptly (spread over a few seconds) and forgets removed ones; running polls
//!   finish with the settings they started with.
//! - A panic inside one poll is contained: it is logged and counted, and the task is polled
//!   again at its next turn.

pub mod budget;
pub mod gate;
mod paces;
pub mod plan;
pub mod poll;
mod ring;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::blocking;
use crate::config::{Config, TaskId};
use crate::journal::EventKind;
use crate::lifecycle::{self, Pace, TaskLife};
use crate::metrics::Metrics;
use crate::sandbox::decode::lifecycle::TaskState;
use crate::sandbox::{Downloads, SandboxClient};
use crate::state::{Life, PollError, State};
use crate::store::Store;
use budget::RetryBudget;
use gate::{Gate, PauseChange};
use paces::{Intervals, Move, Paces};
use poll::{PollContext, PollEnd, PollPlan};

/// Tasks added by a reload are polled within this window (or the interval, if shorter).
const NEW_TASK_WINDOW: Duration = Duration::from_secs(5);

/// Pace changes are applied in batches, at least this often…
const MOVE_BATCH_PERIOD: Duration = Duration::from_millis(100);
/// …or once this many are waiting.
const MAX_PENDING_MOVES: usize = 4096;

/// A validated configuration with the client built from it: what the scheduler runs on.
pub struct Active {
    pub config: Config,
    pub client: SandboxClient,
}

/// The pause gate the polls pass now, for the other requests to the same appliance (the
/// task list, the health checks): `None` until the scheduler has started, replaced when a
/// reload replaces it.
pub type SharedGate = watch::Receiver<Option<Arc<Gate>>>;

/// What the scheduler listens to besides its configuration.
pub struct Inputs {
    /// Bumped whenever the state's watch list changed (a reload, a read of the task list).
    pub watch_list: watch::Receiver<u64>,
    /// Where the scheduler publishes its pause gate ([`SharedGate`]).
    pub gates: watch::Sender<Option<Arc<Gate>>>,
    /// Where finished polls' records and new counts go: kept first, then shown.
    pub store: Arc<Store>,
}

/// Runs until `shutdown` is cancelled or the configuration channel closes, then waits at most
/// `drain` (the shutdown grace period) for running polls, which cancellation has already cut
/// short. Publishes its pause gate on `gates` (see [`SharedGate`]).
pub async fn run(
    mut active: watch::Receiver<Arc<Active>>,
    mut inputs: Inputs,
    state: Arc<State>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let tracker = TaskTracker::new();
    let first = Arc::clone(&active.borrow_and_update());
    let store = Arc::clone(&inputs.store);
    let mut dispatcher = Dispatcher::new(
        &first,
        Arc::clone(&metrics),
        Arc::clone(&state),
        Arc::clone(&store),
    );
    inputs
        .gates
        .send_replace(Some(Arc::clone(&dispatcher.ctx.gate)));
    inputs.watch_list.borrow_and_update();
    dispatcher.start(Instant::now());
    let (done_tx, mut done) = mpsc::unbounded_channel::<Finished>();
    let mut batches = tokio::time::interval(MOVE_BATCH_PERIOD);
    batches.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        let next_due = dispatcher.paces.next_due();
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            changed = active.changed() => {
                if changed.is_err() {
                    break;
                }
                let next = Arc::clone(&active.borrow_and_update());
                dispatcher.reconfigure(&next);
                inputs.gates.send_replace(Some(Arc::clone(&dispatcher.ctx.gate)));
            }
            changed = inputs.watch_list.changed() => {
                if changed.is_err() {
                    break;
                }
                inputs.watch_list.borrow_and_update();
                dispatcher.reconcile(Instant::now());
            }
            Some(finished) = done.recv() => dispatcher.finished(finished),
            _ = batches.tick(), if !dispatcher.moves.is_empty() => {
                dispatcher.flush_moves(Instant::now());
            }
            () = sleep_until(next_due) => {
                let Some((task, busy)) = dispatcher.paces.pop(Instant::now()) else {
                    continue;
                };
                if busy.load(Ordering::Acquire) {
                    debug!(task_id = %task, "previous poll still running; skipping this turn");
                    continue;
                }
                if !dispatcher.paces.may_start(&task, next_due.unwrap_or_else(Instant::now)) {
                    debug!(task_id = %task, "polled less than an active interval ago; skipping this turn");
                    continue;
                }
                let ctx = Arc::clone(&dispatcher.ctx);
                let permit = tokio::select! {
                    p = Arc::clone(&ctx.permits).acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    () = shutdown.cancelled() => break,
                };
                let plan = dispatcher.plan(&task);
                let completed = dispatcher.completed_run(&task);
                let (state, metrics, store, shutdown) =
                    (Arc::clone(&state), Arc::clone(&metrics), Arc::clone(&store), shutdown.clone());
                let id = task.clone();
                let guard_shutdown = shutdown.clone();
                let done = done_tx.clone();
                spawn_contained(&tracker, Arc::clone(&dispatcher.metrics), id, busy, guard_shutdown, async move {
                    if let Some(end) = poll::poll(&ctx, &task, plan, permit, &shutdown).await {
                        let ok = end.report.result.is_ok();
                        // The parameters this poll read first are newer than what was known.
                        let settles = match &end.report.life {
                            Some(life) => (life.state == TaskState::Completed)
                                .then(|| life.result_id.clone()),
                            None => completed,
                        };
                        // Digesting a large response is CPU work: off the async workers.
                        blocking::run(move || finish(end, &state, &metrics, &store)).await;
                        let _ = done.send(Finished { task, ok, settles });
                    }
                });
            }
        }
    }
    tracker.close();
    if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
        warn!("polls still running after the grace period; abandoning them");
    }
}

/// A poll that ended, for the dispatcher to set the task's next pace.
struct Finished {
    task: TaskId,
    ok: bool,
    /// The `ResultId` of the completed run known before the poll asked for the downloads: only
    /// such a poll can be the final one. A poll that was already running when completion was
    /// seen may have read the downloads before the last files appeared.
    settles: Option<Box<str>>,
}

/// Runs one poll as its own task with the task's busy flag set, so that a panic inside it
/// (say, on a response nobody foresaw) is contained: it is logged and counted, the flag is
/// cleared, and the task is polled again at its next turn while every other task carries on.
fn spawn_contained(
    tracker: &TaskTracker,
    metrics: Arc<Metrics>,
    task: TaskId,
    busy: Arc<AtomicBool>,
    shutdown: CancellationToken,
    poll: impl std::future::Future<Output = ()> + Send + 'static,
) {
    busy.store(true, Ordering::Release);
    let guard = PollGuard {
        busy,
        metrics,
        task,
        shutdown,
        finished: false,
    };
    tracker.spawn(async move {
        // Moved in whole (a closure would capture only the field it writes).
        let mut guard = guard;
        poll.await;
        guard.finished = true;
    });
}

/// Travels with a poll's task: clears the busy flag when the task ends, and reports a task
/// that ended without finishing. Tokio catches a panic in a task and drops the task's future,
/// so a guard dropped unfinished means the poll panicked, unless shutdown abandoned it.
struct PollGuard {
    busy: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    task: TaskId,
    shutdown: CancellationToken,
    finished: bool,
}

impl Drop for PollGuard {
    fn drop(&mut self) {
        self.busy.store(false, Ordering::Release);
        if !self.finished && !self.shutdown.is_cancelled() {
            self.metrics.record_panic();
            error!(task_id = %self.task, "a poll panicked; the task will be polled again at its next turn");
        }
    }
}

/// Hands a finished poll to the state, its record and new counts to the store (which shows the
/// counts once they are kept), and logs and records transitions.
fn finish(end: PollEnd, state: &State, metrics: &Metrics, store: &Store) {
    for change in &end.pause_changes {
        match change {
            PauseChange::Paused { reason, delay } => {
                info!(
                    reason = reason.as_str(),
                    why = reason.describe(),
                    delay_s = delay.as_secs_f64(),
                    "polling paused"
                );
                store.event(
                    None,
                    EventKind::Paused {
                        reason: reason.as_str().into(),
                    },
                );
            }
            PauseChange::Resumed { after } => {
                info!(after = after.as_str(), "polling resumed");
                store.event(None, EventKind::Resumed);
            }
        }
    }
    let task = end.report.task.clone();
    // Logged as 0 when no response arrived, like `krs_task_last_status_code`.
    let status = end.report.status.unwrap_or(0);
    let error = end.report.result.as_ref().err().cloned();
    let files = end.report.result.as_ref().ok().and_then(Downloads::files);
    let applied = state.apply(end.report);
    let was_up = applied.was_up;
    store.commit(applied.save, applied.activity);
    metrics.record_poll(end.duration, error.is_none());
    debug!(
        task_id = %task,
        status,
        attempts = end.attempts,
        files,
        duration_ms = end.duration.as_millis() as u64,
        "poll finished"
    );
    match (&error, was_up) {
        (None, Some(false)) => {
            info!(task_id = %task, "task poll recovered");
            store.event(Some(task), EventKind::PollRecovered);
        }
        // A pause is one appliance-wide event, logged once as it starts, not once per task.
        (Some(e @ PollError::Paused { .. }), _) => {
            debug!(task_id = %task, error = %e, "task poll held back by the pause")
        }
        (Some(e), None | Some(true)) => {
            warn!(task_id = %task, status, error = %e, "task poll failed");
            let error = crate::labels::clean(&e.to_string(), 256);
            store.event(
                Some(task),
                EventKind::PollFailed {
                    error: error.into(),
                },
            );
        }
        _ => {}
    }
}

/// The turn order and the settings polls are started with.
struct Dispatcher {
    ctx: Arc<PollContext>,
    metrics: Arc<Metrics>,
    state: Arc<State>,
    /// Where a task's settled run is kept.
    store: Arc<Store>,
    paces: Paces,
    /// Configured tasks the latest read of the task list did not cover: they are asked for
    /// their parameters.
    unlisted: HashSet<TaskId>,
    /// Pace changes finished polls asked for, applied in a batch ([`MOVE_BATCH_PERIOD`]).
    moves: Vec<Move>,
}

impl Dispatcher {
    fn new(active: &Active, metrics: Arc<Metrics>, state: Arc<State>, store: Arc<Store>) -> Self {
        let config = &active.config;
        Dispatcher {
            ctx: Arc::new(context(active, None, Arc::clone(&metrics))),
            metrics,
            state,
            store,
            paces: Paces::new(intervals(config), Instant::now()),
            unlisted: HashSet::new(),
            moves: Vec::new(),
        }
    }

    /// The first schedule: every task's first poll spread over one interval.
    fn start(&mut self, now: Instant) {
        let lives = self.state.lives();
        // Without discovery no read of the task list ever reconciles: the configured tasks
        // must be known as unlisted from the start, or their states would never be asked for.
        self.unlisted = unlisted(&lives);
        let moves = lives
            .iter()
            .map(|l| Move {
                task: l.id.clone(),
                pace: self.pace_of(l.life.as_deref(), l.polled, l.settled_for.as_deref()),
            })
            .collect();
        self.paces
            .place(moves, self.ctx.interval, NEW_TASK_WINDOW, now);
    }

    fn reconfigure(&mut self, active: &Active) {
        let config = &active.config;
        self.ctx = Arc::new(context(active, Some(&self.ctx), Arc::clone(&self.metrics)));
        let now = Instant::now();
        self.paces.set_intervals(intervals(config), now);
        let added = self.reconcile(now);
        info!(
            tasks = self.paces.len(),
            added,
            interval_s = config.polling.interval.as_secs_f64(),
            lifecycle = config.polling.lifecycle,
            "scheduler reconfigured"
        );
    }

    /// Brings the paces in line with the state's watch list and what is known of each task:
    /// removed tasks are forgotten, and tasks whose state calls for another pace move now.
    /// New configured tasks are first polled within a few seconds (an operator just added
    /// them); new discovered ones spread over a whole interval, so a backfill of thousands of
    /// finished tasks is never faster than fixed polling. Returns how many joined.
    fn reconcile(&mut self, now: Instant) -> usize {
        // Every pace is set afresh from the state below, pending moves included.
        self.moves.clear();
        let lives = self.state.lives();
        let wanted: HashSet<&TaskId> = lives.iter().map(|l| &l.id).collect();
        self.paces.retain(|id| wanted.contains(id));
        self.unlisted = unlisted(&lives);
        let mut added = 0;
        let (mut configured, mut discovered) = (Vec::new(), Vec::new());
        for l in &lives {
            let new = self.paces.pace(&l.id).is_none();
            added += usize::from(new);
            let pace = self.pace_of(l.life.as_deref(), l.polled, l.settled_for.as_deref());
            let moved = Move {
                task: l.id.clone(),
                pace,
            };
            if l.configured {
                configured.push(moved);
            } else {
                discovered.push(moved);
            }
        }
        let interval = self.ctx.interval;
        self.paces.place(
            configured,
            NEW_TASK_WINDOW.min(interval),
            NEW_TASK_WINDOW,
            now,
        );
        self.paces.place(discovered, interval, NEW_TASK_WINDOW, now);
        added
    }

    /// A poll ended: a successful poll that started once the task was known to be completed
    /// settles it for its `ResultId`; the task then moves to the pace its state deserves.
    fn finished(&mut self, finished: Finished) {
        let Some(current) = self.paces.pace(&finished.task) else {
            return;
        };
        let Some(mut life) = self.state.life(&finished.task) else {
            return;
        };
        if let Some(known) = &life.life {
            if finished.ok
                && known.state == TaskState::Completed
                && finished.settles.as_deref() == Some(&*known.result_id)
                && life.settled_for.as_deref() != Some(&*known.result_id)
            {
                let save = self.state.settle(&finished.task, &known.result_id);
                self.store.save(save);
                life.settled_for = Some(known.result_id.clone());
            }
        }
        let pace = self.pace_of(
            life.life.as_deref(),
            life.polled,
            life.settled_for.as_deref(),
        );
        if pace != current {
            debug!(task_id = %finished.task, ?pace, "task changes pace");
            self.moves.push(Move {
                task: finished.task,
                pace,
            });
            if self.moves.len() >= MAX_PENDING_MOVES {
                self.flush_moves(Instant::now());
            }
        }
    }

    /// Applies the moves finished polls asked for, as one batch: joining a ring merges into
    /// it in one pass, so a backfill's tens of thousands of moves cost a pass per batch, not
    /// one each.
    fn flush_moves(&mut self, now: Instant) {
        if !self.moves.is_empty() {
            let moves = std::mem::take(&mut self.moves);
            self.paces
                .place(moves, self.ctx.interval, NEW_TASK_WINDOW, now);
        }
    }

    fn pace_of(&self, life: Option<&TaskLife>, polled: bool, settled_for: Option<&str>) -> Pace {
        lifecycle::pace(self.ctx.lifecycle, life, polled, settled_for)
    }

    /// The `ResultId` of `task`'s run if it is known to be completed now.
    fn completed_run(&self, task: &TaskId) -> Option<Box<str>> {
        self.state
            .life(task)
            .and_then(|l| l.life)
            .filter(|l| l.state == TaskState::Completed)
            .map(|l| l.result_id.clone())
    }

    /// What the next poll of `task` asks for.
    fn plan(&self, task: &TaskId) -> PollPlan {
        let paces = self.paces.intervals();
        let interval = match self.paces.pace(task) {
            Some(Pace::Active | Pace::Prompt) => paces.active,
            Some(Pace::Settled) => paces.settled.unwrap_or(self.ctx.interval),
            _ => self.ctx.interval,
        };
        PollPlan {
            known: self.state.digest(task),
            params: self.ctx.lifecycle && self.unlisted.contains(task),
            interval,
        }
    }
}

/// Configured tasks the latest read of the task list did not cover.
fn unlisted(lives: &[Life]) -> HashSet<TaskId> {
    lives
        .iter()
        .filter(|l| l.configured && !l.listed)
        .map(|l| l.id.clone())
        .collect()
}

/// The rings' intervals of `config`.
fn intervals(config: &Config) -> Intervals {
    let polling = &config.polling;
    Intervals {
        active: polling.active_interval,
        default: polling.interval,
        settled: polling.settled_interval,
    }
}

/// Builds the poll context for `active`, keeping the concurrency semaphore, the pause gate and
/// the retry budget of `previous` when the settings they depend on did not change.
fn context(
    active: &Active,
    previous: Option<&Arc<PollContext>>,
    metrics: Arc<Metrics>,
) -> PollContext {
    let config = &active.config;
    let retry = config.polling.retry.clone();
    let concurrency = config.polling.concurrency;
    let permits = match previous {
        Some(p) if p.concurrency == concurrency => Arc::clone(&p.permits),
        _ => Arc::new(Semaphore::new(concurrency)),
    };
    // New sandbox settings (say, a rotated password) deserve a fresh try at once.
    let (gate, budget) = match previous {
        Some(p) if p.sandbox == config.sandbox => (Arc::clone(&p.gate), Arc::clone(&p.budget)),
        _ => (
            Arc::new(Gate::new(
                retry.initial_interval,
                retry.max_interval,
                Arc::clone(&metrics),
            )),
            Arc::new(RetryBudget::new()),
        ),
    };
    PollContext {
        client: active.client.clone(),
        retry,
        gate,
        budget,
        interval: config.polling.interval,
        permits,
        metrics,
        concurrency,
        sandbox: config.sandbox.clone(),
        lifecycle: config.polling.lifecycle,
        serves_params: match previous {
            Some(p) if p.sandbox == config.sandbox => Arc::clone(&p.serves_params),
            _ => Arc::new(AtomicBool::new(true)),
        },
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::Shard;

    #[test]
    fn a_poll_abandoned_at_shutdown_is_not_counted_as_a_panic() {
        let metrics = Arc::new(Metrics::new(Shard::ALL));
        let busy = Arc::new(AtomicBool::new(false));
        let shutdown = CancellationToken::new();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let tracker = TaskTracker::new();
        runtime.block_on(async {
            spawn_contained(
                &tracker,
                Arc::clone(&metrics),
                TaskId::parse("0d5b4e44-4c0e-4f0b-9a57-3f2d1b9e6c71").unwrap(),
                Arc::clone(&busy),
                shutdown.clone(),
                std::future::pending(),
            );
            tokio::task::yield_now().await;
        });
        assert!(busy.load(Ordering::Acquire), "the poll is running");
        shutdown.cancel();
        drop(runtime);
        assert!(!busy.load(Ordering::Acquire));
        assert_eq!(metrics.poll_panics(), 0);
    }

    #[tokio::test]
    async fn a_panicking_poll_is_counted_and_frees_its_task_for_the_next_turn() {
        let tracker = TaskTracker::new();
        let metrics = Arc::new(Metrics::new(Shard::ALL));
        let busy = Arc::new(AtomicBool::new(false));
        let task = TaskId::parse("0d5b4e44-4c0e-4f0b-9a57-3f2d1b9e6c71").unwrap();
        spawn_contained(
            &tracker,
            Arc::clone(&metrics),
            task,
            Arc::clone(&busy),
            CancellationToken::new(),
            async {
                panic!("a response nobody foresaw");
            },
        );
        tracker.close();
        tokio::time::timeout(Duration::from_secs(5), tracker.wait())
            .await
            .expect("the watcher finishes");
        assert!(
            !busy.load(Ordering::Acquire),
            "the task can be polled again"
        );
        let state = State::new(crate::state::WatchList {
            discovered: 0,
            tasks: Vec::new().into(),
            label_keys: Vec::new(),
            limits: crate::state::Limits {
                max_label_length: 128,
                max_label_values: 100,
                file_info_zones: [false; 6],
                ..crate::state::Limits::default()
            },
        });
        assert!(metrics
            .render(&state)
            .contains("\nkrs_poll_panics_total 1\n"));
    }
}

//! One poll of one task: attempts with retries and backoff, through the pause gate and the
//! retry budget, ending in a [`PollReport`] for the state.
//!
//! - Every attempt asks the [`Gate`] first; a poll refused by it fails at once with
//!   "polling paused: …", so its task reads down and its age keeps growing.
//! - A retry is sent only if the error is retryable, the fleet-wide [`RetryBudget`] has room,
//!   and no pause would still hold when the retry is due (a poll that waits out its own
//!   `Retry-After` may then be the probe that ends the hold).
//! - Retries never start later than the interval less the attempt timeout ([`RetrySchedule`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::budget::RetryBudget;
use super::gate::{Admission, Gate, PauseChange};
use crate::config::{RetryConfig, TaskId};
use crate::lifecycle::TaskLife;
use crate::metrics::Metrics;
use crate::retry::RetrySchedule;
use crate::sandbox::decode::lifecycle::{TaskRecord, TaskState};
use crate::sandbox::{Attempt, AttemptError, BodyDigest, Downloads, PauseReason, SandboxClient};
use crate::state::{PollError, PollReport};
use crate::zone::DangerZone;

/// Everything a poll needs; replaced as a whole on reload, so running polls finish with the
/// settings they started with.
pub struct PollContext {
    pub client: SandboxClient,
    pub retry: RetryConfig,
    pub gate: Arc<Gate>,
    pub budget: Arc<RetryBudget>,
    /// The polling interval: no poll's retries outlast it.
    pub interval: Duration,
    pub permits: Arc<Semaphore>,
    pub metrics: Arc<Metrics>,
    /// The settings the semaphore and gate were made for, to tell on reload whether to keep them.
    pub concurrency: usize,
    pub sandbox: crate::config::SandboxConfig,
    /// Whether tasks' states set their paces (`polling.lifecycle`).
    pub lifecycle: bool,
    /// Cleared when the sandbox answers `GET tasks/{id}` as an endpoint it does not have (404
    /// without an error code, or 405): task parameters are then not asked for again until the
    /// sandbox settings change.
    pub serves_params: Arc<AtomicBool>,
}

/// How a poll ended, beyond its report.
pub struct PollEnd {
    pub report: PollReport,
    pub duration: Duration,
    pub attempts: u32,
    pub pause_changes: Vec<PauseChange>,
}

/// What the dispatcher asks of one poll.
pub struct PollPlan {
    /// The digest of the body the state last digested for this task.
    pub known: Option<BodyDigest>,
    /// Ask for the task's parameters first (a configured task the task list does not cover).
    pub params: bool,
    /// The task's current pace: its retries end before its next turn.
    pub interval: Duration,
}

/// Polls `task` until success, a permanent failure, the retry budget, or shutdown (`None`).
/// `first_permit` is the concurrency slot the dispatcher already holds for the first attempt.
pub async fn poll(
    ctx: &PollContext,
    task: &TaskId,
    plan: PollPlan,
    first_permit: OwnedSemaphorePermit,
    shutdown: &CancellationToken,
) -> Option<PollEnd> {
    let started = Instant::now();
    let mut schedule = RetrySchedule::new(&ctx.retry, plan.interval, ctx.sandbox.timeout);
    let known = plan.known;
    let mut permit = Some(first_permit);
    let mut attempts = 0u32;
    let mut pause_changes = Vec::new();
    let mut life = None;
    if plan.params && ctx.serves_params.load(Ordering::Relaxed) {
        if let Admission::Open | Admission::Probe = ctx.gate.admit() {
            let attempt = tokio::select! {
                a = ctx.client.fetch_task(task) => a,
                () = shutdown.cancelled() => return None,
            };
            ctx.metrics.record_attempt(&attempt);
            if let Some(change) = ctx.gate.report(&attempt, false) {
                pause_changes.push(change);
            }
            life = task_life(ctx, attempt.result);
        }
    }
    let (status, result) = loop {
        let probe = match ctx.gate.admit() {
            Admission::Open => false,
            Admission::Probe => true,
            Admission::Paused { reason, remaining } => {
                ctx.metrics.set_api_down();
                break paused(reason, remaining);
            }
        };
        let slot = match permit.take() {
            Some(p) => p,
            None => tokio::select! {
                p = Arc::clone(&ctx.permits).acquire_owned() => p.ok()?,
                () = shutdown.cancelled() => return None,
            },
        };
        if attempts > 0 {
            ctx.metrics
                .record_retry(crate::sandbox::Endpoint::Downloads);
        } else {
            ctx.budget.record_first();
        }
        attempts += 1;
        let attempt: Attempt = tokio::select! {
            a = ctx.client.fetch_downloads(task, known) => a,
            () = shutdown.cancelled() => return None,
        };
        drop(slot);
        ctx.metrics.record_attempt(&attempt);
        if let Some(change) = ctx.gate.report(&attempt, probe) {
            pause_changes.push(change);
        }
        debug!(
            task_id = %task,
            attempt = attempts,
            status = attempt.status.unwrap_or(0),
            duration_ms = attempt.duration.as_millis() as u64,
            "attempt finished"
        );
        let status = attempt.status;
        match attempt.result {
            Ok(downloads) => break (status, Ok(downloads)),
            Err(e) => {
                let delay = if e.retryable() {
                    schedule
                        .next_delay(attempt.retry_after)
                        .filter(|delay| ctx.gate.current().is_none_or(|(_, left)| left <= *delay))
                } else {
                    None
                };
                let delay = match delay {
                    Some(_) if !ctx.budget.try_retry() => {
                        ctx.metrics.appliance.record_retry_budget_exhausted();
                        debug!(task_id = %task, error = %e, "retry budget spent; giving up");
                        None
                    }
                    delay => delay,
                };
                match delay {
                    Some(delay) => {
                        debug!(task_id = %task, delay_ms = delay.as_millis() as u64, error = %e, "retrying");
                        tokio::select! {
                            () = tokio::time::sleep(delay) => {}
                            () = shutdown.cancelled() => return None,
                        }
                    }
                    None => break (status, Err(PollError::from(e))),
                }
            }
        }
    };
    Some(PollEnd {
        report: PollReport {
            task: task.clone(),
            finished: SystemTime::now(),
            status,
            result,
            life,
        },
        duration: started.elapsed(),
        attempts,
        pause_changes,
    })
}

/// What a task-parameters answer says of the task's state.
fn task_life(
    ctx: &PollContext,
    result: Result<Option<TaskRecord>, AttemptError>,
) -> Option<TaskLife> {
    let max = 128;
    match result {
        Ok(record) => record.map(|r| TaskLife::from_record(&r, max)),
        Err(AttemptError::Api { status, body, .. }) => {
            let code = body.as_ref().and_then(|b| b.code.as_deref());
            match (status, code) {
                // The sandbox's own "task deleted".
                (404, Some("7")) => Some(TaskLife {
                    state: TaskState::Deleted,
                    result_id: "".into(),
                    created: None,
                    processed: None,
                    zone: DangerZone::Unknown,
                    verdict: "Unknown".into(),
                }),
                (404, None) | (405, _) => {
                    if ctx.serves_params.swap(false, Ordering::Relaxed) {
                        info!(
                            status,
                            "the sandbox does not serve task parameters; configured tasks keep the fixed interval"
                        );
                    }
                    None
                }
                _ => None,
            }
        }
        Err(AttemptError::Transport { .. }) => None,
    }
}

/// A poll refused by the gate. A 401 pause reports the 401 that caused it, so the task reads
/// as unauthorized rather than unreachable.
fn paused(reason: PauseReason, remaining: Duration) -> (Option<u16>, Result<Downloads, PollError>) {
    let status = match reason {
        PauseReason::Unauthorized => Some(401),
        PauseReason::Unavailable | PauseReason::RetryAfter => None,
    };
    (status, Err(PollError::Paused { reason, remaining }))
}

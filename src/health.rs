//! The appliance's own health: every `polling.health_interval`, one `GET health` then one
//! `GET version`, recorded as the `krs_sandbox_*` families ([`crate::metrics::sandbox`]).
//!
//! - The first check goes out at start, and again at once when a reload turns checks on,
//!   changes their period or points the exporter at another sandbox; later ones follow evenly,
//!   one period apart. A check still running when its turn comes delays the next, never stacks.
//! - Both requests pass the pause gate the polls pass ([`SharedGate`]): while polling is paused
//!   nothing is sent (`krs_sandbox_up` reads 0), so a health check never adds to an appliance's
//!   trouble, and its answer counts towards opening the pause like a poll's. It never takes the
//!   probe that would end a pause: `/health` answering says nothing certain about credentials or
//!   the task endpoints, so the polls' own probe decides.
//! - No retries: the next period is the retry, and `krs_api_*{endpoint="health"}` count each
//!   attempt.
//! - An appliance without `/health` (a 404: older releases) reads `krs_sandbox_up 0`, logged
//!   once at info rather than every period.
//! - Turning checks off (`0s`) or changing `sandbox` removes every series: they would describe
//!   the wrong thing.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::metrics::Metrics;
use crate::sandbox::{Attempt, Decoded, SandboxClient};
use crate::scheduler::gate::{Admission, Gate, PauseChange};
use crate::scheduler::{Active, SharedGate};

/// What the latest `GET health` said, to log changes rather than every period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Heard {
    /// No check since start or since the sandbox changed.
    Nothing,
    /// 200, with this `healthy` flag.
    Answered(Option<bool>),
    /// A 404: this appliance has no health endpoint.
    NoEndpoint,
    /// Any other failure, or none sent because polling is paused.
    Failed,
}

/// Runs until `shutdown` is cancelled or the configuration channel closes. `gates` is the
/// scheduler's pause gate; a check waits for the scheduler to publish it.
pub async fn run(
    mut active: watch::Receiver<Arc<Active>>,
    mut gates: SharedGate,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut current = Arc::clone(&active.borrow_and_update());
    let mut ticker = current.config.polling.health_interval.map(every);
    let mut heard = Heard::Nothing;
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            changed = active.changed() => {
                if changed.is_err() {
                    break;
                }
                let next = Arc::clone(&active.borrow_and_update());
                let period = next.config.polling.health_interval;
                let moved = next.config.sandbox != current.config.sandbox;
                if moved || period.is_none() {
                    metrics.sandbox.clear();
                    heard = Heard::Nothing;
                }
                if moved || period != current.config.polling.health_interval {
                    ticker = period.map(every);
                    match period {
                        Some(p) => info!(interval_s = p.as_secs_f64(), "sandbox health checks on"),
                        None => info!("sandbox health checks off"),
                    }
                }
                current = next;
            }
            () = tick(&mut ticker) => {
                let Some(gate) = shared(&mut gates, &shutdown).await else {
                    break;
                };
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    next = check(&current.client, &gate, &metrics, heard) => heard = next,
                }
            }
        }
    }
}

/// One health check: `GET health`, then `GET version`. Returns what the first said.
async fn check(client: &SandboxClient, gate: &Gate, metrics: &Metrics, before: Heard) -> Heard {
    let heard = match send(gate, metrics, || client.fetch_health()).await {
        None => Heard::Failed,
        Some(attempt) => match attempt.result {
            Ok(health) => {
                metrics.sandbox.record_health(&health);
                Heard::Answered(health.healthy)
            }
            Err(_) if attempt.status == Some(404) => Heard::NoEndpoint,
            Err(e) => {
                debug!(status = attempt.status.unwrap_or(0), error = %e, "sandbox health check failed");
                Heard::Failed
            }
        },
    };
    if !matches!(heard, Heard::Answered(_)) {
        metrics.sandbox.set_down();
    }
    log_change(before, heard);
    if let Some(attempt) = send(gate, metrics, || client.fetch_version()).await {
        match attempt.result {
            Ok(version) => metrics.sandbox.record_version(&version),
            Err(e) => debug!(
                status = attempt.status.unwrap_or(0),
                error = %e,
                "sandbox version check failed"
            ),
        }
    }
    heard
}

/// Sends one attempt if the gate is open, and records it; `None` while polling is paused.
async fn send<T, F, Fut>(gate: &Gate, metrics: &Metrics, fetch: F) -> Option<Attempt<T>>
where
    T: Decoded,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Attempt<T>>,
{
    // Any pause, even one whose delay has run out, leaves the probe to a poll.
    if let Some((reason, _)) = gate.current() {
        debug!(
            reason = reason.as_str(),
            "polling paused; sandbox health check not sent"
        );
        return None;
    }
    let probe = match gate.admit() {
        Admission::Open => false,
        // A pause opened and ran out since `current`: this one is the probe after all.
        Admission::Probe => true,
        Admission::Paused { .. } => return None,
    };
    let attempt = fetch().await;
    metrics.record_attempt(&attempt);
    match gate.report(&attempt, probe) {
        Some(PauseChange::Paused { reason, delay }) => info!(
            reason = reason.as_str(),
            why = reason.describe(),
            delay_s = delay.as_secs_f64(),
            "polling paused"
        ),
        Some(PauseChange::Resumed { after }) => info!(after = after.as_str(), "polling resumed"),
        None => {}
    }
    Some(attempt)
}

/// Logs what changed since the previous check: lifecycle and trouble at info and warn, the
/// rest (the same answer again) not at all.
fn log_change(before: Heard, now: Heard) {
    if before == now {
        return;
    }
    match now {
        Heard::Answered(Some(false)) => warn!("the sandbox reports itself unhealthy"),
        Heard::Answered(_) if matches!(before, Heard::Answered(Some(false))) => {
            info!("the sandbox reports itself healthy again")
        }
        Heard::Answered(_) if matches!(before, Heard::NoEndpoint | Heard::Failed) => {
            info!("sandbox health check recovered")
        }
        Heard::Answered(_) => {}
        Heard::NoEndpoint => info!(
            status = 404,
            "the sandbox has no health endpoint (an older appliance); krs_sandbox_up stays 0"
        ),
        Heard::Failed => warn!("sandbox health check failed; krs_sandbox_up is 0"),
        Heard::Nothing => {}
    }
}

/// The scheduler's gate, once it has published one; `None` at shutdown or when the scheduler
/// has gone.
async fn shared(gates: &mut SharedGate, shutdown: &CancellationToken) -> Option<Arc<Gate>> {
    tokio::select! {
        () = shutdown.cancelled() => None,
        gate = gates.wait_for(Option::is_some) => gate.ok().and_then(|g| g.clone()),
    }
}

/// Ticks at once, then every `period`; a late tick delays the next rather than bunching.
fn every(period: Duration) -> Interval {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker
}

async fn tick(ticker: &mut Option<Interval>) {
    match ticker {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

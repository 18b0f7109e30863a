//! The pause gate: one switch in front of every attempt that stops the whole fleet of polls
//! from hammering a sandbox in trouble. One appliance serves every task, so its trouble is
//! fleet-wide and so is the pause.
//!
//! Three conditions open it:
//! - **`unauthorized`**: a 401. Bad credentials repeated by hundreds of tasks can lock the
//!   account, so all polling pauses at once with a growing delay (30 s doubling to 15 min).
//! - **`retry_after`**: a 429 or 503 carrying `Retry-After` (already capped at 5 min by the
//!   client). The appliance asked everyone to wait, not just the task that heard it, so every
//!   task holds back until that time.
//! - **`unavailable`**: failures that are not about a single task (connection refused or reset,
//!   TLS, timeout, 429, 5xx), once sustained: at least [`TRIP_FAILURES`] of the last
//!   [`WINDOW`] attempts fleet-wide. A connection failure (refused, DNS, TLS handshake) opens
//!   it at once: it cannot concern one task. The delay is the retry settings' initial interval,
//!   doubling after each failed probe up to their max interval.
//!
//! Why a count of the last attempts and 80%: under a partial failure the healthy tasks keep
//! answering, and with the retry budget (at most 20% of first attempts are retried) a quarter
//! of the tasks always failing makes about 40% of the attempts fail, far from 80%. A full outage
//! reaches it within 20 attempts, whatever the fleet size, so the requests an outage costs
//! before the pause do not grow with the number of tasks.
//!
//! When the delay has passed, exactly one attempt is let through as a probe; every other poll
//! keeps failing fast until the probe answers. A probe that gets any answer not about the
//! appliance (a 200, but also a 404 or an oversized body) ends the pause; a probe that fails
//! again starts the next, longer pause. Attempts that were already in flight when a pause began
//! change nothing, except that a later `Retry-After` extends a hold.
//!
//! Every transition is published to [`Metrics`] (the `krs_api_paused` gauge and the status
//! page) under the gate's lock, so the published state is never older than the gate's.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::sandbox::{ApiFailure, Attempt, AttemptError, FailureReason, PauseReason};

const AUTH_INITIAL_PAUSE: Duration = Duration::from_secs(30);
const AUTH_MAX_PAUSE: Duration = Duration::from_secs(15 * 60);

/// Attempts remembered fleet-wide for the sustained-failure rule.
pub const WINDOW: usize = 20;
/// Failures among the last [`WINDOW`] attempts that open the `unavailable` pause (80%).
pub const TRIP_FAILURES: usize = 16;

/// What the gate says to a poll about to send an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead.
    Open,
    /// Go ahead: this attempt is the probe that decides whether the pause ends.
    Probe,
    /// Do not send anything.
    Paused {
        reason: PauseReason,
        remaining: Duration,
    },
}

/// Shared by every poll of one scheduler.
pub struct Gate {
    inner: Mutex<Inner>,
    unavailable_initial: Duration,
    unavailable_max: Duration,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct Inner {
    paused: Option<Pause>,
    /// The last [`WINDOW`] attempts while open: `true` for a failure about the appliance.
    recent: VecDeque<bool>,
}

struct Pause {
    reason: PauseReason,
    until: Instant,
    /// Consecutive pauses of this reason: the delay doubles with each.
    strikes: u32,
    probing: bool,
}

/// What one attempt says about the appliance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// It answered, and the answer is about the task (success, 404, bad body, …).
    Healthy,
    /// A 401.
    Unauthorized,
    /// A 429 or 503 with `Retry-After`: wait this long.
    RetryAfter(Duration),
    /// A failure of the appliance that is certain from one attempt (the connection failed).
    Down,
    /// A failure that may be about one task or the appliance (reset, timeout, 429, 5xx).
    Failing,
}

/// A change of the gate worth a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PauseChange {
    Paused {
        reason: PauseReason,
        delay: Duration,
    },
    Resumed {
        after: PauseReason,
    },
}

impl Gate {
    /// `unavailable_initial`/`unavailable_max` bound the probe period during an outage.
    pub fn new(
        unavailable_initial: Duration,
        unavailable_max: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        metrics.appliance.set_paused(None);
        Gate {
            inner: Mutex::new(Inner::default()),
            unavailable_initial,
            unavailable_max: unavailable_max.max(unavailable_initial),
            metrics,
        }
    }

    pub fn admit(&self) -> Admission {
        self.admit_at(Instant::now())
    }

    /// Feeds an attempt's outcome back. `probe` says whether it was admitted as the probe.
    pub fn report<T>(&self, attempt: &Attempt<T>, probe: bool) -> Option<PauseChange> {
        self.report_at(attempt, probe, Instant::now())
    }

    /// The current pause, if any, and how long it has left.
    pub fn current(&self) -> Option<(PauseReason, Duration)> {
        let now = Instant::now();
        self.lock()
            .paused
            .as_ref()
            .map(|p| (p.reason, p.until.saturating_duration_since(now)))
    }

    fn admit_at(&self, now: Instant) -> Admission {
        let mut inner = self.lock();
        let Some(pause) = inner.paused.as_mut() else {
            return Admission::Open;
        };
        if now < pause.until || pause.probing {
            return Admission::Paused {
                reason: pause.reason,
                remaining: pause.until.saturating_duration_since(now),
            };
        }
        pause.probing = true;
        Admission::Probe
    }

    fn report_at<T>(&self, attempt: &Attempt<T>, probe: bool, now: Instant) -> Option<PauseChange> {
        let verdict = verdict(attempt);
        let mut inner = self.lock();
        let change = match (inner.paused.as_ref(), probe) {
            (Some(_), true) => self.after_probe(&mut inner, verdict, now),
            // In flight when the pause began: it says nothing new, unless it asks for longer.
            (Some(pause), false) => match verdict {
                Verdict::RetryAfter(wait) if now + wait > pause.until => {
                    let strikes = pause.strikes;
                    self.pause(&mut inner, PauseReason::RetryAfter, wait, strikes, now)
                }
                _ => None,
            },
            (None, _) => self.while_open(&mut inner, verdict, now),
        };
        if change.is_some() {
            let shown = inner.paused.as_ref().map(|p| {
                let left = p.until.saturating_duration_since(now);
                (p.reason, SystemTime::now() + left)
            });
            self.metrics.appliance.set_paused(shown);
        }
        change
    }

    fn while_open(&self, inner: &mut Inner, verdict: Verdict, now: Instant) -> Option<PauseChange> {
        if inner.recent.len() == WINDOW {
            inner.recent.pop_front();
        }
        inner
            .recent
            .push_back(matches!(verdict, Verdict::Down | Verdict::Failing));
        let failures = inner.recent.iter().filter(|failed| **failed).count();
        match verdict {
            Verdict::Unauthorized => {
                self.pause_backing_off(inner, PauseReason::Unauthorized, 1, now)
            }
            Verdict::RetryAfter(wait) => self.pause(inner, PauseReason::RetryAfter, wait, 0, now),
            Verdict::Down => self.pause_backing_off(inner, PauseReason::Unavailable, 1, now),
            Verdict::Failing if failures >= TRIP_FAILURES => {
                self.pause_backing_off(inner, PauseReason::Unavailable, 1, now)
            }
            Verdict::Failing | Verdict::Healthy => None,
        }
    }

    fn after_probe(
        &self,
        inner: &mut Inner,
        verdict: Verdict,
        now: Instant,
    ) -> Option<PauseChange> {
        let previous = inner.paused.as_ref()?;
        let strikes = |reason| {
            if previous.reason == reason {
                previous.strikes + 1
            } else {
                1
            }
        };
        match verdict {
            Verdict::Healthy => {
                let after = previous.reason;
                inner.paused = None;
                inner.recent.clear();
                Some(PauseChange::Resumed { after })
            }
            Verdict::Unauthorized => {
                let strikes = strikes(PauseReason::Unauthorized);
                self.pause_backing_off(inner, PauseReason::Unauthorized, strikes, now)
            }
            Verdict::RetryAfter(wait) => {
                let strikes = previous.strikes;
                self.pause(inner, PauseReason::RetryAfter, wait, strikes, now)
            }
            Verdict::Down | Verdict::Failing => {
                // A hold that ends in failure continues as an outage, with its strikes.
                let strikes = match previous.reason {
                    PauseReason::Unauthorized => 1,
                    PauseReason::Unavailable | PauseReason::RetryAfter => previous.strikes + 1,
                };
                self.pause_backing_off(inner, PauseReason::Unavailable, strikes, now)
            }
        }
    }

    fn pause_backing_off(
        &self,
        inner: &mut Inner,
        reason: PauseReason,
        strikes: u32,
        now: Instant,
    ) -> Option<PauseChange> {
        let (initial, max) = match reason {
            PauseReason::Unauthorized => (AUTH_INITIAL_PAUSE, AUTH_MAX_PAUSE),
            PauseReason::Unavailable | PauseReason::RetryAfter => {
                (self.unavailable_initial, self.unavailable_max)
            }
        };
        let factor = 2u32.saturating_pow(strikes.saturating_sub(1).min(20));
        let delay = initial.saturating_mul(factor).min(max);
        self.pause(inner, reason, delay, strikes, now)
    }

    fn pause(
        &self,
        inner: &mut Inner,
        reason: PauseReason,
        delay: Duration,
        strikes: u32,
        now: Instant,
    ) -> Option<PauseChange> {
        inner.paused = Some(Pause {
            reason,
            until: now + delay,
            strikes,
            probing: false,
        });
        Some(PauseChange::Paused { reason, delay })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn verdict<T>(attempt: &Attempt<T>) -> Verdict {
    match &attempt.result {
        Ok(_) => Verdict::Healthy,
        Err(AttemptError::Api {
            status, failure, ..
        }) => match failure {
            ApiFailure::Unauthorized => Verdict::Unauthorized,
            ApiFailure::RateLimited | ApiFailure::ServerError => match attempt.retry_after {
                Some(wait) if !wait.is_zero() && matches!(status, 429 | 503) => {
                    Verdict::RetryAfter(wait)
                }
                _ => Verdict::Failing,
            },
            _ => Verdict::Healthy,
        },
        Err(AttemptError::Transport { reason, .. }) => match reason {
            FailureReason::Connect => Verdict::Down,
            FailureReason::Timeout | FailureReason::Other => Verdict::Failing,
            // The appliance answered; the answer is wrong for this one task.
            FailureReason::BodyTooLarge | FailureReason::InvalidResponse => Verdict::Healthy,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::decode::ApiError;
    use crate::shard::Shard;

    fn ok() -> Attempt {
        attempt(Some(200), Ok(Vec::new().into()), None)
    }

    fn status(code: u16) -> Attempt {
        let failure = crate::sandbox::classify::classify(code, None::<&ApiError>);
        let error = AttemptError::Api {
            status: code,
            failure,
            body: None,
        };
        attempt(Some(code), Err(error), None)
    }

    fn retry_after(code: u16, secs: u64) -> Attempt {
        let mut a = status(code);
        a.retry_after = Some(Duration::from_secs(secs));
        a
    }

    fn transport(reason: FailureReason) -> Attempt {
        let error = AttemptError::Transport {
            reason,
            detail: String::new(),
        };
        attempt(None, Err(error), None)
    }

    fn attempt(
        status: Option<u16>,
        result: Result<crate::sandbox::Downloads, AttemptError>,
        retry_after: Option<Duration>,
    ) -> Attempt {
        Attempt {
            endpoint: crate::sandbox::Endpoint::Downloads,
            status,
            duration: Duration::ZERO,
            retry_after,
            result,
        }
    }

    fn gate() -> Gate {
        Gate::new(
            Duration::from_secs(1),
            Duration::from_secs(8),
            Arc::new(Metrics::new(Shard::ALL)),
        )
    }

    fn paused_gauge(g: &Gate, reason: PauseReason) -> i64 {
        g.metrics.appliance.paused_gauge(reason)
    }

    #[tokio::test(start_paused = true)]
    async fn a_401_pauses_everything_until_one_probe_is_let_through() {
        let g = gate();
        let t0 = Instant::now();
        assert_eq!(g.admit_at(t0), Admission::Open);
        let change = g.report_at(&status(401), false, t0);
        assert_eq!(
            change,
            Some(PauseChange::Paused {
                reason: PauseReason::Unauthorized,
                delay: AUTH_INITIAL_PAUSE
            })
        );
        assert_eq!(paused_gauge(&g, PauseReason::Unauthorized), 1);
        assert!(matches!(g.admit_at(t0), Admission::Paused { .. }));
        let later = t0 + AUTH_INITIAL_PAUSE;
        assert_eq!(g.admit_at(later), Admission::Probe);
        assert!(matches!(g.admit_at(later), Admission::Paused { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn repeated_401s_double_the_pause_up_to_the_cap() {
        let g = gate();
        let mut now = Instant::now();
        g.report_at(&status(401), false, now);
        let mut delays = Vec::new();
        for _ in 0..8 {
            now += AUTH_MAX_PAUSE;
            assert_eq!(g.admit_at(now), Admission::Probe);
            if let Some(PauseChange::Paused { delay, .. }) = g.report_at(&status(401), true, now) {
                delays.push(delay.as_secs());
            }
        }
        assert_eq!(delays, vec![60, 120, 240, 480, 900, 900, 900, 900]);
    }

    #[tokio::test(start_paused = true)]
    async fn sustained_5xx_fleet_wide_opens_the_unavailable_pause() {
        let g = gate();
        let t0 = Instant::now();
        for n in 1..TRIP_FAILURES {
            assert_eq!(g.report_at(&status(503), false, t0), None, "failure {n}");
        }
        assert_eq!(
            g.report_at(&status(500), false, t0),
            Some(PauseChange::Paused {
                reason: PauseReason::Unavailable,
                delay: Duration::from_secs(1)
            })
        );
        assert_eq!(paused_gauge(&g, PauseReason::Unavailable), 1);
        assert_eq!(paused_gauge(&g, PauseReason::Unauthorized), 0);
        assert!(matches!(
            g.admit_at(t0),
            Admission::Paused {
                reason: PauseReason::Unavailable,
                ..
            }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn resets_timeouts_and_429s_count_as_the_appliance_failing() {
        let g = gate();
        let t0 = Instant::now();
        let kinds = [
            transport(FailureReason::Other),
            transport(FailureReason::Timeout),
            status(429),
            status(502),
        ];
        let changes: Vec<_> = (0..TRIP_FAILURES)
            .filter_map(|n| g.report_at(&kinds[n % kinds.len()], false, t0))
            .collect();
        assert_eq!(changes.len(), 1, "{changes:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_quarter_of_the_tasks_always_failing_never_trips_the_pause() {
        let g = gate();
        let t0 = Instant::now();
        // 100 tasks, every fourth failing, each failure retried once (more than the budget
        // allows): 125 attempts a cycle, 40% of them failures, clustered as badly as phases can.
        for _cycle in 0..20 {
            for task in 0..100 {
                if task % 4 == 0 {
                    assert_eq!(g.report_at(&status(500), false, t0), None);
                    assert_eq!(g.report_at(&status(500), false, t0), None);
                } else {
                    assert_eq!(g.report_at(&ok(), false, t0), None);
                }
            }
        }
        assert_eq!(g.admit_at(t0), Admission::Open);
        assert_eq!(paused_gauge(&g, PauseReason::Unavailable), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_failure_opens_the_pause_at_once() {
        let g = gate();
        let t0 = Instant::now();
        assert_eq!(
            g.report_at(&transport(FailureReason::Connect), false, t0),
            Some(PauseChange::Paused {
                reason: PauseReason::Unavailable,
                delay: Duration::from_secs(1)
            })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_holds_every_task_until_that_time_then_probes() {
        let g = gate();
        let t0 = Instant::now();
        assert_eq!(
            g.report_at(&retry_after(503, 120), false, t0),
            Some(PauseChange::Paused {
                reason: PauseReason::RetryAfter,
                delay: Duration::from_secs(120)
            })
        );
        assert_eq!(paused_gauge(&g, PauseReason::RetryAfter), 1);
        let almost = t0 + Duration::from_secs(119);
        assert_eq!(
            g.admit_at(almost),
            Admission::Paused {
                reason: PauseReason::RetryAfter,
                remaining: Duration::from_secs(1)
            }
        );
        let then = t0 + Duration::from_secs(120);
        assert_eq!(g.admit_at(then), Admission::Probe);
        assert!(matches!(g.admit_at(then), Admission::Paused { .. }));
        assert_eq!(
            g.report_at(&ok(), true, then),
            Some(PauseChange::Resumed {
                after: PauseReason::RetryAfter
            })
        );
        assert_eq!(paused_gauge(&g, PauseReason::RetryAfter), 0);
        assert_eq!(g.admit_at(then), Admission::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_retry_after_holds_too_and_a_later_one_extends_the_hold() {
        let g = gate();
        let t0 = Instant::now();
        g.report_at(&retry_after(429, 5), false, t0);
        // Another task's attempt, in flight meanwhile, hears a longer wait: that one counts.
        g.report_at(&retry_after(429, 30), false, t0 + Duration::from_secs(1));
        assert!(matches!(
            g.admit_at(t0 + Duration::from_secs(10)),
            Admission::Paused {
                reason: PauseReason::RetryAfter,
                ..
            }
        ));
        // A shorter one does not shorten it.
        g.report_at(&retry_after(429, 1), false, t0 + Duration::from_secs(2));
        assert_eq!(g.admit_at(t0 + Duration::from_secs(31)), Admission::Probe);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_on_a_500_or_of_zero_is_only_a_failure() {
        let g = gate();
        let t0 = Instant::now();
        assert_eq!(g.report_at(&retry_after(500, 60), false, t0), None);
        assert_eq!(g.report_at(&retry_after(503, 0), false, t0), None);
        assert_eq!(g.admit_at(t0), Admission::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn one_probe_per_backoff_period_while_the_outage_lasts() {
        let g = gate();
        let mut now = Instant::now();
        g.report_at(&transport(FailureReason::Connect), false, now);
        let mut probes = Vec::new();
        let start = now;
        // Every poll of a large fleet asks every 100 ms for 40 s.
        while now < start + Duration::from_secs(40) {
            now += Duration::from_millis(100);
            if g.admit_at(now) == Admission::Probe {
                probes.push((now - start).as_secs_f64());
                g.report_at(&status(503), true, now);
            }
        }
        // Pauses of 1, 2, 4, 8, 8, … s: a probe at 1, 3, 7, 15, 23, 31, 39 s.
        let expected = [1.0, 3.0, 7.0, 15.0, 23.0, 31.0, 39.0];
        assert_eq!(probes.len(), expected.len(), "{probes:?}");
        for (got, want) in probes.iter().zip(expected) {
            assert!((got - want).abs() < 0.15, "{probes:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_successful_probe_resumes_everything_at_once() {
        let g = gate();
        let t0 = Instant::now();
        g.report_at(&transport(FailureReason::Connect), false, t0);
        let later = t0 + Duration::from_secs(1);
        assert_eq!(g.admit_at(later), Admission::Probe);
        assert_eq!(
            g.report_at(&ok(), true, later),
            Some(PauseChange::Resumed {
                after: PauseReason::Unavailable
            })
        );
        assert_eq!(g.admit_at(later), Admission::Open);
        assert_eq!(paused_gauge(&g, PauseReason::Unavailable), 0);
        // The evidence that opened it is forgotten: the next failures start from zero.
        assert_eq!(g.report_at(&status(503), false, later), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_answered_with_a_task_error_also_resumes() {
        let g = gate();
        let t0 = Instant::now();
        g.report_at(&transport(FailureReason::Connect), false, t0);
        let later = t0 + Duration::from_secs(1);
        assert_eq!(g.admit_at(later), Admission::Probe);
        assert!(matches!(
            g.report_at(&status(404), true, later),
            Some(PauseChange::Resumed { .. })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_failures_do_not_stack_strikes() {
        let g = gate();
        let t0 = Instant::now();
        g.report_at(&transport(FailureReason::Connect), false, t0);
        assert_eq!(
            g.report_at(&transport(FailureReason::Connect), false, t0),
            None
        );
        assert_eq!(
            g.report_at(&ok(), false, t0),
            None,
            "nor does a success end it"
        );
        let probe_at = t0 + Duration::from_secs(1);
        assert_eq!(g.admit_at(probe_at), Admission::Probe);
        assert_eq!(
            g.report_at(&transport(FailureReason::Timeout), true, probe_at),
            Some(PauseChange::Paused {
                reason: PauseReason::Unavailable,
                delay: Duration::from_secs(2)
            })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_after_a_hold_continues_as_an_outage() {
        let g = gate();
        let t0 = Instant::now();
        g.report_at(&retry_after(503, 10), false, t0);
        let then = t0 + Duration::from_secs(10);
        assert_eq!(g.admit_at(then), Admission::Probe);
        assert_eq!(
            g.report_at(&status(503), true, then),
            Some(PauseChange::Paused {
                reason: PauseReason::Unavailable,
                delay: Duration::from_secs(1)
            })
        );
        assert_eq!(paused_gauge(&g, PauseReason::RetryAfter), 0);
        assert_eq!(paused_gauge(&g, PauseReason::Unavailable), 1);
    }
}

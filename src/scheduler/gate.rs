//! The pause gate: one switch in front of every attempt that stops the whole fleet of polls
//! from hammering a sandbox that has said "no".
//!
//! Two conditions open it:
//! - **401**: bad credentials repeated by hundreds of tasks can lock the account, so all
//!   polling pauses with a growing delay (30 s doubling to 15 min);
//! - **connection refused / unreachable**: every task would fail the same way, so polling
//!   collapses to one probe per backoff period (the retry settings' initial to max interval).
//!
//! When the delay has passed, exactly one attempt is let through as a probe; every other poll
//! keeps failing fast until the probe answers. Any HTTP response other than a 401 closes the
//! gate.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sandbox::{Attempt, AttemptError, FailureReason};

const AUTH_INITIAL_PAUSE: Duration = Duration::from_secs(30);
const AUTH_MAX_PAUSE: Duration = Duration::from_secs(15 * 60);

/// Why polling is paused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PauseReason {
    Unauthorized,
    Unreachable,
}

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
    unreachable_initial: Duration,
    unreachable_max: Duration,
}

#[derive(Default)]
struct Inner {
    paused: Option<Pause>,
}

struct Pause {
    reason: PauseReason,
    until: Instant,
    /// Consecutive pauses of this reason: the delay doubles with each.
    strikes: u32,
    probing: bool,
}

impl PauseReason {
    pub const fn describe(self) -> &'static str {
        match self {
            PauseReason::Unauthorized => "the sandbox rejected the credentials (HTTP 401)",
            PauseReason::Unreachable => "the sandbox is unreachable",
        }
    }
}

impl Gate {
    /// `unreachable_initial`/`unreachable_max` bound the probe period during an outage.
    pub fn new(unreachable_initial: Duration, unreachable_max: Duration) -> Self {
        Gate {
            inner: Mutex::new(Inner::default()),
            unreachable_initial,
            unreachable_max: unreachable_max.max(unreachable_initial),
        }
    }

    pub fn admit(&self) -> Admission {
        self.admit_at(Instant::now())
    }

    /// Feeds an attempt's outcome back. `probe` says whether it was admitted as the probe.
    pub fn report(&self, attempt: &Attempt, probe: bool) -> Option<PauseChange> {
        self.report_at(attempt, probe, Instant::now())
    }

    /// The current pause, if any, for the status page and logs.
    pub fn current(&self) -> Option<PauseReason> {
        self.lock().paused.as_ref().map(|p| p.reason)
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

    fn report_at(&self, attempt: &Attempt, probe: bool, now: Instant) -> Option<PauseChange> {
        let trigger = match (&attempt.status, &attempt.result) {
            (Some(401), _) => Some(PauseReason::Unauthorized),
            (
                None,
                Err(AttemptError::Transport {
                    reason: FailureReason::Connect,
                    ..
                }),
            ) => Some(PauseReason::Unreachable),
            (Some(_), _) => None,
            // Timeouts and other transport trouble may concern one task only: no verdict.
            (None, _) => return self.release_probe(probe),
        };
        let mut inner = self.lock();
        match trigger {
            Some(reason) => {
                let strikes = match &inner.paused {
                    // Attempts that were already in flight when the pause began add nothing.
                    Some(p) if !probe && p.reason == reason => return None,
                    Some(p) if p.reason == reason => p.strikes + 1,
                    _ => 1,
                };
                let delay = self.delay(reason, strikes);
                inner.paused = Some(Pause {
                    reason,
                    until: now + delay,
                    strikes,
                    probing: false,
                });
                Some(PauseChange::Paused { reason, delay })
            }
            None => inner
                .paused
                .take()
                .map(|p| PauseChange::Resumed { after: p.reason }),
        }
    }

    fn release_probe(&self, probe: bool) -> Option<PauseChange> {
        if probe {
            if let Some(p) = self.lock().paused.as_mut() {
                p.probing = false;
            }
        }
        None
    }

    fn delay(&self, reason: PauseReason, strikes: u32) -> Duration {
        let (initial, max) = match reason {
            PauseReason::Unauthorized => (AUTH_INITIAL_PAUSE, AUTH_MAX_PAUSE),
            PauseReason::Unreachable => (self.unreachable_initial, self.unreachable_max),
        };
        let factor = 2u32.saturating_pow(strikes.saturating_sub(1).min(20));
        initial.saturating_mul(factor).min(max)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(status: Option<u16>, reason: Option<FailureReason>) -> Attempt {
        Attempt {
            status,
            duration: Duration::ZERO,
            retry_after: None,
            result: match reason {
                Some(reason) => Err(AttemptError::Transport {
                    reason,
                    detail: String::new(),
                }),
                None => Ok(Vec::new().into()),
            },
        }
    }

    fn gate() -> Gate {
        Gate::new(Duration::from_secs(1), Duration::from_secs(8))
    }

    #[test]
    fn a_401_pauses_everything_until_one_probe_is_let_through() {
        let g = gate();
        let t0 = Instant::now();
        assert_eq!(g.admit_at(t0), Admission::Open);
        let change = g.report_at(&attempt(Some(401), None), false, t0);
        assert_eq!(
            change,
            Some(PauseChange::Paused {
                reason: PauseReason::Unauthorized,
                delay: AUTH_INITIAL_PAUSE
            })
        );
        assert!(matches!(g.admit_at(t0), Admission::Paused { .. }));
        let later = t0 + AUTH_INITIAL_PAUSE;
        assert_eq!(g.admit_at(later), Admission::Probe);
        assert!(matches!(g.admit_at(later), Admission::Paused { .. }));
    }

    #[test]
    fn repeated_401s_double_the_pause_up_to_the_cap() {
        let g = gate();
        let mut now = Instant::now();
        g.report_at(&attempt(Some(401), None), false, now);
        let mut delays = Vec::new();
        for _ in 0..8 {
            now += AUTH_MAX_PAUSE;
            assert_eq!(g.admit_at(now), Admission::Probe);
            if let Some(PauseChange::Paused { delay, .. }) =
                g.report_at(&attempt(Some(401), None), true, now)
            {
                delays.push(delay.as_secs());
            }
        }
        assert_eq!(delays, vec![60, 120, 240, 480, 900, 900, 900, 900]);
    }

    #[test]
    fn a_successful_probe_closes_the_gate() {
        let g = gate();
        let t0 = Instant::now();
        g.report_at(&attempt(None, Some(FailureReason::Connect)), false, t0);
        let later = t0 + Duration::from_secs(1);
        assert_eq!(g.admit_at(later), Admission::Probe);
        assert_eq!(
            g.report_at(&attempt(Some(200), None), true, later),
            Some(PauseChange::Resumed {
                after: PauseReason::Unreachable
            })
        );
        assert_eq!(g.admit_at(later), Admission::Open);
    }

    #[test]
    fn in_flight_failures_do_not_stack_strikes() {
        let g = gate();
        let t0 = Instant::now();
        g.report_at(&attempt(None, Some(FailureReason::Connect)), false, t0);
        assert_eq!(
            g.report_at(&attempt(None, Some(FailureReason::Connect)), false, t0),
            None
        );
        let probe_at = t0 + Duration::from_secs(1);
        assert_eq!(g.admit_at(probe_at), Admission::Probe);
        assert_eq!(
            g.report_at(&attempt(None, Some(FailureReason::Connect)), true, probe_at),
            Some(PauseChange::Paused {
                reason: PauseReason::Unreachable,
                delay: Duration::from_secs(2)
            })
        );
    }

    #[test]
    fn a_probe_that_times_out_lets_the_next_probe_through() {
        let g = gate();
        let t0 = Instant::now();
        g.report_at(&attempt(None, Some(FailureReason::Connect)), false, t0);
        let later = t0 + Duration::from_secs(1);
        assert_eq!(g.admit_at(later), Admission::Probe);
        g.report_at(&attempt(None, Some(FailureReason::Timeout)), true, later);
        assert_eq!(g.admit_at(later), Admission::Probe);
    }
}

//! Retry timing for one poll: exponential backoff with jitter, bounded by elapsed time.
//!
//! This is the only module that names the `backoff` crate (unmaintained upstream), so
//! replacing it with another implementation touches this file alone.

use std::time::{Duration, Instant};

use backoff::backoff::Backoff;

use crate::config::RetryConfig;

/// Delays between the attempts of one poll.
pub struct RetrySchedule {
    inner: backoff::ExponentialBackoff,
    started: Instant,
    max_elapsed: Duration,
}

impl RetrySchedule {
    pub fn new(config: &RetryConfig) -> Self {
        let inner = backoff::ExponentialBackoff {
            current_interval: config.initial_interval,
            initial_interval: config.initial_interval,
            randomization_factor: config.randomization_factor,
            multiplier: config.multiplier,
            max_interval: config.max_interval,
            // Elapsed time is enforced here, including server-requested delays.
            max_elapsed_time: None,
            ..backoff::ExponentialBackoff::default()
        };
        RetrySchedule {
            inner,
            started: Instant::now(),
            max_elapsed: config.max_elapsed_time,
        }
    }

    /// The delay before the next attempt, or `None` when the poll must give up.
    ///
    /// A server's `Retry-After` (already capped by the client) wins when it is longer than our
    /// own backoff. No retry starts after `max_elapsed_time`.
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Option<Duration> {
        let ours = self.inner.next_backoff()?;
        let delay = retry_after.map_or(ours, |theirs| theirs.max(ours));
        let elapsed = self.started.elapsed();
        (elapsed + delay <= self.max_elapsed).then_some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_elapsed: Duration) -> RetryConfig {
        RetryConfig {
            initial_interval: Duration::from_millis(100),
            max_interval: Duration::from_millis(400),
            multiplier: 2.0,
            randomization_factor: 0.0,
            max_elapsed_time: max_elapsed,
        }
    }

    #[test]
    fn delays_grow_exponentially_up_to_the_maximum() {
        let mut schedule = RetrySchedule::new(&config(Duration::from_secs(60)));
        let delays: Vec<_> = (0..5).map(|_| schedule.next_delay(None).unwrap()).collect();
        let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, vec![100, 200, 400, 400, 400]);
    }

    #[test]
    fn a_longer_retry_after_wins_over_the_backoff() {
        let mut schedule = RetrySchedule::new(&config(Duration::from_secs(60)));
        assert_eq!(
            schedule.next_delay(Some(Duration::from_secs(3))),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            schedule.next_delay(Some(Duration::from_millis(1))),
            Some(Duration::from_millis(200))
        );
    }

    #[test]
    fn no_retry_is_scheduled_past_the_elapsed_budget() {
        let mut schedule = RetrySchedule::new(&config(Duration::from_millis(250)));
        assert!(schedule.next_delay(None).is_some());
        assert_eq!(schedule.next_delay(Some(Duration::from_secs(1))), None);
    }

    #[test]
    fn jitter_stays_within_the_randomization_factor() {
        let mut cfg = config(Duration::from_secs(60));
        cfg.randomization_factor = 0.5;
        for _ in 0..100 {
            let mut schedule = RetrySchedule::new(&cfg);
            let d = schedule.next_delay(None).unwrap().as_millis();
            assert!((50..=150).contains(&d), "delay {d}ms outside 100ms ± 50%");
        }
    }
}

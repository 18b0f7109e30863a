//! Retry timing for one poll: exponential backoff with jitter, bounded by elapsed time.
//!
//! The elapsed bound is the configured `max_elapsed_time`, but never more than the task's
//! interval less the attempt timeout: the last retry then ends before the task's next turn, so
//! a failing task shows as failing within one interval instead of up for the whole budget.
//!
//! This is the only module that names the `backoff` crate (unmaintained upstream), so
//! replacing it with another implementation touches this file alone.

use std::time::Duration;

use tokio::time::Instant;

use backoff::backoff::Backoff;

use crate::config::RetryConfig;

/// Delays between the attempts of one poll.
pub struct RetrySchedule {
    inner: backoff::ExponentialBackoff,
    started: Instant,
    max_elapsed: Duration,
}

impl RetrySchedule {
    /// `interval` and `timeout` are the task's polling interval and the attempt timeout.
    pub fn new(config: &RetryConfig, interval: Duration, timeout: Duration) -> Self {
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
            max_elapsed: max_elapsed(config, interval, timeout),
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

/// The elapsed bound of one poll's retries (see the module doc).
pub fn max_elapsed(config: &RetryConfig, interval: Duration, timeout: Duration) -> Duration {
    config
        .max_elapsed_time
        .min(interval.saturating_sub(timeout))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);
    const SECOND: Duration = Duration::from_secs(1);

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
        let mut schedule = RetrySchedule::new(&config(Duration::from_secs(60)), HOUR, SECOND);
        let delays: Vec<_> = (0..5).map(|_| schedule.next_delay(None).unwrap()).collect();
        let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, vec![100, 200, 400, 400, 400]);
    }

    #[test]
    fn a_longer_retry_after_wins_over_the_backoff() {
        let mut schedule = RetrySchedule::new(&config(Duration::from_secs(60)), HOUR, SECOND);
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
        let mut schedule = RetrySchedule::new(&config(Duration::from_millis(250)), HOUR, SECOND);
        assert!(schedule.next_delay(None).is_some());
        assert_eq!(schedule.next_delay(Some(Duration::from_secs(1))), None);
    }

    #[test]
    fn the_elapsed_bound_never_outlasts_the_interval() {
        let cfg = config(Duration::from_secs(120));
        let ten = Duration::from_secs(10);
        assert_eq!(
            max_elapsed(&cfg, Duration::from_secs(60), ten),
            Duration::from_secs(50)
        );
        assert_eq!(max_elapsed(&cfg, HOUR, ten), Duration::from_secs(120));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_before_the_next_turn() {
        // 100 ms doubling to 400 ms, interval 1 s, timeout 200 ms: retries may start until 800 ms.
        let mut schedule = RetrySchedule::new(
            &config(Duration::from_secs(120)),
            SECOND,
            Duration::from_millis(200),
        );
        let mut starts = Vec::new();
        while let Some(delay) = schedule.next_delay(None) {
            tokio::time::advance(delay).await;
            starts.push(schedule.started.elapsed().as_millis());
        }
        assert_eq!(starts, vec![100, 300, 700]);
    }

    #[test]
    fn jitter_stays_within_the_randomization_factor() {
        let mut cfg = config(Duration::from_secs(60));
        cfg.randomization_factor = 0.5;
        for _ in 0..100 {
            let mut schedule = RetrySchedule::new(&cfg, HOUR, SECOND);
            let d = schedule.next_delay(None).unwrap().as_millis();
            assert!((50..=150).contains(&d), "delay {d}ms outside 100ms ± 50%");
        }
    }
}

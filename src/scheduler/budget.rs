//! The fleet-wide retry budget: retries stay a small share of the load, so a partial failure
//! cannot multiply the requests the appliance sees.
//!
//! A retry is allowed while the retries of the last [`WINDOW`] stay below the larger of
//! [`RATIO`] of the first attempts in that window and a floor of [`FLOOR_PER_SECOND`] a second
//! (Envoy's model: a percentage of the traffic, with a minimum so that a small fleet can still
//! retry). The window slides in one-second buckets. A retry refused here ends its poll as failed
//! with its last error, and is counted in `krs_api_retry_budget_exhausted_total`.
//!
//! Measured with 100 tasks every 10 s and every fourth task answering 500, over 40 s: retries
//! were 45% of first attempts without the budget, 20% with it (`docs/reliability.md`).

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The sliding window the shares are counted over.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Retries allowed per first attempt in the window.
pub const RATIO: f64 = 0.2;
/// Retries allowed per second of the window whatever the traffic.
pub const FLOOR_PER_SECOND: u32 = 1;

const BUCKETS: usize = 10;

/// Shared by every poll of one scheduler.
pub struct RetryBudget {
    origin: Instant,
    buckets: Mutex<[Bucket; BUCKETS]>,
}

#[derive(Clone, Copy, Default)]
struct Bucket {
    /// Whole seconds since `origin` this bucket counts; older contents are stale.
    second: u64,
    firsts: u32,
    retries: u32,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget::new()
    }
}

impl RetryBudget {
    pub fn new() -> Self {
        RetryBudget {
            origin: Instant::now(),
            buckets: Mutex::new([Bucket::default(); BUCKETS]),
        }
    }

    /// Counts a first attempt (a probe included) as it is sent.
    pub fn record_first(&self) {
        self.record_first_at(Instant::now());
    }

    /// Takes a retry from the budget: `true` if it may be sent (and is now counted).
    pub fn try_retry(&self) -> bool {
        self.try_retry_at(Instant::now())
    }

    fn record_first_at(&self, now: Instant) {
        let second = self.second(now);
        let mut buckets = self.lock();
        bucket(&mut buckets, second).firsts += 1;
    }

    fn try_retry_at(&self, now: Instant) -> bool {
        let second = self.second(now);
        let mut buckets = self.lock();
        let live = buckets
            .iter()
            .filter(|b| b.second + BUCKETS as u64 > second && b.second <= second);
        let (firsts, retries) = live.fold((0u64, 0u64), |(f, r), b| {
            (f + u64::from(b.firsts), r + u64::from(b.retries))
        });
        let floor = u64::from(FLOOR_PER_SECOND) * WINDOW.as_secs();
        let allowed = ((firsts as f64 * RATIO) as u64).max(floor);
        if retries >= allowed {
            return false;
        }
        bucket(&mut buckets, second).retries += 1;
        true
    }

    fn second(&self, now: Instant) -> u64 {
        // Buckets of WINDOW / BUCKETS = one second.
        now.saturating_duration_since(self.origin).as_secs()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, [Bucket; BUCKETS]> {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The bucket for `second`, emptied first if it still holds an older second.
fn bucket(buckets: &mut [Bucket; BUCKETS], second: u64) -> &mut Bucket {
    let b = &mut buckets[(second % BUCKETS as u64) as usize];
    if b.second != second {
        *b = Bucket {
            second,
            ..Bucket::default()
        };
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retries_allowed(budget: &RetryBudget, now: Instant, asked: u32) -> u32 {
        (0..asked).filter(|_| budget.try_retry_at(now)).count() as u32
    }

    #[tokio::test(start_paused = true)]
    async fn a_large_fleet_may_retry_a_fifth_of_its_first_attempts() {
        let budget = RetryBudget::new();
        let t0 = Instant::now();
        for _ in 0..1000 {
            budget.record_first_at(t0);
        }
        assert_eq!(retries_allowed(&budget, t0, 1000), 200);
    }

    #[tokio::test(start_paused = true)]
    async fn a_small_fleet_still_gets_one_retry_a_second() {
        let budget = RetryBudget::new();
        let t0 = Instant::now();
        for _ in 0..5 {
            budget.record_first_at(t0);
        }
        assert_eq!(
            retries_allowed(&budget, t0, 50),
            10,
            "the floor: 1/s over 10 s"
        );
        assert_eq!(retries_allowed(&budget, t0 + Duration::from_secs(5), 5), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_slides_so_spent_retries_come_back() {
        let budget = RetryBudget::new();
        let t0 = Instant::now();
        assert_eq!(retries_allowed(&budget, t0, 20), 10);
        assert_eq!(retries_allowed(&budget, t0 + Duration::from_secs(9), 1), 0);
        assert_eq!(
            retries_allowed(&budget, t0 + Duration::from_secs(10), 20),
            10,
            "the retries of second 0 left the window"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn first_attempts_older_than_the_window_stop_counting() {
        let budget = RetryBudget::new();
        let t0 = Instant::now();
        for _ in 0..500 {
            budget.record_first_at(t0);
        }
        assert_eq!(
            retries_allowed(&budget, t0 + Duration::from_secs(9), 200),
            100
        );
        assert_eq!(
            retries_allowed(&budget, t0 + Duration::from_secs(20), 200),
            10,
            "only the floor is left"
        );
    }
}

//! CPU-heavy work on tokio's blocking threads, a bounded number at a time.
//!
//! Decoding a response and digesting it into a snapshot cost time in proportion to what the
//! sandbox sent (16 MiB of records is a fraction of a second; a million YARA rules used to be
//! seconds). On the async workers that time would stall every other poll, `/-/healthy` and
//! `/metrics`. Here it runs on blocking threads, at most one per core at once, so a burst of
//! large responses queues instead of spawning a thread each, and the async workers stay free.

use std::sync::OnceLock;

use tokio::sync::Semaphore;

/// Runs `work` on a blocking thread once one of the pool's slots is free. A panic inside
/// `work` resumes on the caller, so it is contained exactly as if it had happened inline.
pub async fn run<T, F>(work: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    // The semaphore is never closed, so acquiring cannot fail.
    let _slot = slots().acquire().await.expect("the pool is never closed");
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only a runtime shutting down cancels a blocking task; the caller is going too.
        Err(e) => panic!("blocking work cancelled: {e}"),
    }
}

/// One slot per core the process may use (at least one).
fn slots() -> &'static Semaphore {
    static SLOTS: OnceLock<Semaphore> = OnceLock::new();
    SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Semaphore::new(cores)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn work_runs_off_the_async_thread_and_returns_its_value() {
        let caller = std::thread::current().id();
        let (value, worker) = run(|| (6 * 7, std::thread::current().id())).await;
        assert_eq!(value, 42);
        assert_ne!(worker, caller);
    }

    #[tokio::test]
    async fn a_panic_in_the_work_reaches_the_caller() {
        let caught = tokio::spawn(run(|| -> u8 { panic!("boom") })).await;
        assert!(caught.expect_err("the panic propagates").is_panic());
    }
}

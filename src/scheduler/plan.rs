//! When each task is polled: a stable, evenly spread phase within the interval.
//!
//! Tasks are ordered by a fixed hash of their id and given phases `interval × rank / n`, so
//! polls are spaced evenly (no burst at start or at each tick) and an unchanged watch list
//! always yields the same phases. The hash is [`stable_hash`], the one sharding uses.

use std::time::Duration;

use crate::config::TaskId;
use crate::shard::stable_hash;

/// Phases for `tasks` spread over `window`, returned in the input order.
pub fn phases<'a>(tasks: impl IntoIterator<Item = &'a TaskId>, window: Duration) -> Vec<Duration> {
    let tasks: Vec<&TaskId> = tasks.into_iter().collect();
    let n = tasks.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (stable_hash(tasks[i].as_str().as_bytes()), i));
    let mut phases = vec![Duration::ZERO; n];
    for (rank, &i) in order.iter().enumerate() {
        phases[i] = window.mul_f64(rank as f64 / n as f64);
    }
    phases
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<TaskId> {
        (0..n)
            .map(|i| TaskId::parse(&format!("00000000-0000-0000-0000-{i:012x}")).unwrap())
            .collect()
    }

    #[test]
    fn phases_are_evenly_spaced_over_the_window() {
        let tasks = ids(4);
        let mut p = phases(&tasks, Duration::from_secs(60));
        p.sort();
        let secs: Vec<u64> = p.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, vec![0, 15, 30, 45]);
    }

    #[test]
    fn the_same_watch_list_always_gets_the_same_phases() {
        let tasks = ids(50);
        let mut reversed = tasks.clone();
        reversed.reverse();
        let a = phases(&tasks, Duration::from_secs(60));
        let mut b = phases(&reversed, Duration::from_secs(60));
        b.reverse();
        assert_eq!(a, b);
    }

    #[test]
    fn no_second_of_the_interval_carries_more_than_its_share() {
        let tasks = ids(1000);
        let p = phases(&tasks, Duration::from_secs(60));
        let mut per_second = [0u32; 60];
        for d in p {
            per_second[d.as_secs() as usize] += 1;
        }
        let max = per_second.iter().max().copied().unwrap();
        assert!(max <= 17, "busiest second has {max} polls, mean is 16.7");
    }
}

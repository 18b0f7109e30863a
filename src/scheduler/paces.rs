//! Several paces at once: one [`Ring`] per interval (active, default, settled), each keeping its
//! tasks evenly spread with O(1) turns, and a map saying which ring holds each task.
//!
//! - The next turn is the earliest of the three rings' next turns: three comparisons.
//! - A task changing pace joins its new ring at once and leaves the old one lazily: each
//!   placement carries a ticket, a turn whose ticket is no longer the task's is skipped, and a
//!   ring is compacted once its stale entries outnumber its live ones. A move costs O(log n)
//!   (the merge into the new ring aside), where removing from a 100k-entry ring at every move
//!   cost a pass over it: the backfill of 100,000 tasks, each moving once after its first
//!   poll, spent half a millisecond per poll there. The busy flag moves with the task, so a
//!   poll still running is never doubled by the move.
//! - [`Pace::Prompt`] is the active ring with a first turn within a few seconds: after its
//!   poll the task moves on to the pace its state then deserves. [`Pace::Never`], and
//!   [`Pace::Settled`] when `settled_interval` is 0, are in no ring.
//! - Where a task joins a ring decides its first turn: spread evenly over a window
//!   (stable offsets from its id), so neither a start, a reload nor 10,000 tasks discovered at
//!   once is a burst.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::plan;
use super::ring::Ring;
use crate::config::TaskId;
use crate::lifecycle::Pace;

/// The intervals of the rings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intervals {
    pub active: Duration,
    pub default: Duration,
    /// `None`: settled tasks are not polled again.
    pub settled: Option<Duration>,
}

/// Which ring holds a task, the flag set while its poll runs, and when its latest turn taken
/// was due.
struct Placed {
    pace: Pace,
    busy: Arc<AtomicBool>,
    last_turn: Option<Instant>,
    /// The ticket of the task's entry in its ring; other entries of it are stale.
    ticket: u64,
}

/// The schedule of every watched task at its pace.
pub struct Paces {
    intervals: Intervals,
    /// Active (prompt included), default, settled.
    rings: [Ring; 3],
    placed: HashMap<TaskId, Placed>,
    /// Stale entries per ring (tasks that moved away), for compaction.
    stale: [usize; 3],
    next_ticket: u64,
}

/// A task to place: its pace, and the window its first turn is spread over.
pub struct Move {
    pub task: TaskId,
    pub pace: Pace,
}

impl Paces {
    pub fn new(intervals: Intervals, now: Instant) -> Self {
        Paces {
            intervals,
            rings: [
                Ring::new(intervals.active, now),
                Ring::new(intervals.default, now),
                Ring::new(intervals.settled.unwrap_or(intervals.default), now),
            ],
            placed: HashMap::new(),
            stale: [0; 3],
            next_ticket: 1,
        }
    }

    pub fn len(&self) -> usize {
        self.placed.len()
    }

    pub fn intervals(&self) -> Intervals {
        self.intervals
    }

    /// The pace a task is at; `None` when not watched.
    pub fn pace(&self, task: &TaskId) -> Option<Pace> {
        self.placed.get(task).map(|p| p.pace)
    }

    /// New intervals: every ring rescales in proportion (see [`Ring::set_interval`]). Settled
    /// tasks whose pace becomes "never" stay placed and are simply not in a ring's turns.
    pub fn set_intervals(&mut self, intervals: Intervals, now: Instant) {
        let was_never = self.intervals.settled.is_none();
        self.intervals = intervals;
        self.rings[0].set_interval(intervals.active);
        self.rings[1].set_interval(intervals.default);
        match (intervals.settled, was_never) {
            (Some(settled), false) => self.rings[2].set_interval(settled),
            (Some(settled), true) => {
                // Settled tasks were in no ring: they join it now, spread over the interval.
                self.rings[2] = Ring::new(settled, now);
                let settled_tasks: Vec<TaskId> = self
                    .placed
                    .iter()
                    .filter(|(_, p)| p.pace == Pace::Settled)
                    .map(|(id, _)| id.clone())
                    .collect();
                self.join(2, settled_tasks, settled, now);
            }
            (None, _) => {
                self.rings[2].retain(|_, _| false);
                self.stale[2] = 0;
            }
        }
    }

    /// When the next turn is due; `None` when no ring holds a task.
    pub fn next_due(&self) -> Option<Instant> {
        self.rings.iter().filter_map(Ring::next_due).min()
    }

    /// Takes the earliest due turn, if it is due at `now`; stale entries met on the way are
    /// skipped.
    pub fn pop(&mut self, now: Instant) -> Option<(TaskId, Arc<AtomicBool>)> {
        loop {
            let ring = self
                .rings
                .iter()
                .enumerate()
                .filter_map(|(i, r)| r.next_due().map(|d| (d, i)))
                .min()?
                .1;
            let (id, busy, ticket) = self.rings[ring].pop(now)?;
            if self.placed.get(&id).is_some_and(|p| p.ticket == ticket) {
                return Some((id, busy));
            }
        }
    }

    /// Places tasks at new paces (tasks not yet watched join; others move when their pace
    /// changed). Tasks joining the default ring have their first turn spread over
    /// `new_window`; the active ring over a few seconds (`prompt_window`); the settled ring
    /// over a settled interval, at the stable offsets that keep it evenly spread.
    pub fn place(
        &mut self,
        moves: Vec<Move>,
        new_window: Duration,
        prompt_window: Duration,
        now: Instant,
    ) {
        let mut joining: [Vec<TaskId>; 3] = Default::default();
        for Move { task, pace } in moves {
            let old = self.placed.get(&task).map(|p| p.pace);
            if old == Some(pace) {
                continue;
            }
            if let Some(ring) = old.and_then(|p| self.ring_of(p)) {
                self.stale[ring] += 1;
            }
            let ticket = self.next_ticket;
            self.next_ticket += 1;
            match self.placed.get_mut(&task) {
                Some(placed) => {
                    placed.pace = pace;
                    placed.ticket = ticket;
                }
                None => {
                    self.placed.insert(
                        task.clone(),
                        Placed {
                            pace,
                            busy: Arc::new(AtomicBool::new(false)),
                            last_turn: None,
                            ticket,
                        },
                    );
                }
            }
            if let Some(ring) = self.ring_of(pace) {
                joining[ring].push(task);
            }
        }
        self.compact();
        let [active, default, settled] = joining;
        self.join(0, active, prompt_window.min(self.intervals.active), now);
        self.join(1, default, new_window, now);
        if let Some(interval) = self.intervals.settled {
            self.join(2, settled, interval, now);
        }
    }

    /// Whether the turn of `task` due at `due` may be taken, and if so records it: however a
    /// task's state flaps between paces (each move gives it a prompt first turn), its turns
    /// stay at least nine tenths of the active interval apart. Turns are compared by due time,
    /// so a ring's own rhythm is never mistaken for a flap.
    pub fn may_start(&mut self, task: &TaskId, due: Instant) -> bool {
        let gap = self.intervals.active.mul_f64(0.9);
        let Some(placed) = self.placed.get_mut(task) else {
            return true;
        };
        match placed.last_turn {
            Some(last) if due.saturating_duration_since(last) < gap => false,
            _ => {
                placed.last_turn = Some(due);
                true
            }
        }
    }

    /// Forgets the tasks for which `keep` does not hold (and drops stale entries).
    pub fn retain(&mut self, keep: impl Fn(&TaskId) -> bool) {
        self.placed.retain(|id, _| keep(id));
        let placed = &self.placed;
        for ring in &mut self.rings {
            ring.retain(|id, ticket| placed.get(id).is_some_and(|p| p.ticket == ticket));
        }
        self.stale = [0; 3];
    }

    /// Drops the stale entries of a ring once they outnumber its live ones: amortised O(1)
    /// per move.
    fn compact(&mut self) {
        for ring in 0..3 {
            let len = self.rings[ring].len();
            if self.stale[ring] > 64 && self.stale[ring] * 2 > len {
                let placed = &self.placed;
                self.rings[ring]
                    .retain(|id, ticket| placed.get(id).is_some_and(|p| p.ticket == ticket));
                self.stale[ring] = 0;
            }
        }
    }

    fn ring_of(&self, pace: Pace) -> Option<usize> {
        match pace {
            Pace::Active | Pace::Prompt => Some(0),
            Pace::Default => Some(1),
            Pace::Settled => self.intervals.settled.map(|_| 2),
            Pace::Never => None,
        }
    }

    /// Adds `tasks` to ring `ring`, their first turns spread over `window` from `now`.
    fn join(&mut self, ring: usize, tasks: Vec<TaskId>, window: Duration, now: Instant) {
        if tasks.is_empty() {
            return;
        }
        let phases = plan::phases(tasks.iter(), window);
        let entries: Vec<(TaskId, Duration, Arc<AtomicBool>, u64)> = tasks
            .into_iter()
            .zip(phases)
            .map(|(id, phase)| {
                let placed = &self.placed[&id];
                let (busy, ticket) = (Arc::clone(&placed.busy), placed.ticket);
                (id, phase, busy, ticket)
            })
            .collect();
        self.rings[ring].insert_with(entries, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn id(n: u32) -> TaskId {
        TaskId::parse(&format!("{n:08x}-0000-4000-8000-000000000000")).unwrap()
    }

    fn n(task: &TaskId) -> u32 {
        u32::from_str_radix(&task.as_str()[..8], 16).unwrap()
    }

    fn intervals() -> Intervals {
        Intervals {
            active: SECOND,
            default: 10 * SECOND,
            settled: Some(100 * SECOND),
        }
    }

    fn moves(tasks: impl IntoIterator<Item = u32>, pace: Pace) -> Vec<Move> {
        tasks
            .into_iter()
            .map(|i| Move { task: id(i), pace })
            .collect()
    }

    /// Every turn due within `until` of `start`, taken at its due time: (task, due - start).
    fn turns(paces: &mut Paces, start: Instant, until: Duration) -> Vec<(u32, Duration)> {
        let mut out = Vec::new();
        while let Some(due) = paces.next_due().filter(|d| *d <= start + until) {
            if let Some((task, _)) = paces.pop(due) {
                out.push((n(&task), due - start));
            }
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn each_pace_recurs_at_its_own_interval() {
        let start = Instant::now();
        let mut paces = Paces::new(intervals(), start);
        paces.place(moves([1], Pace::Active), 10 * SECOND, Duration::ZERO, start);
        paces.place(moves([2], Pace::Default), Duration::ZERO, SECOND, start);
        let taken = turns(&mut paces, start, Duration::from_millis(20_500));
        let count = |task| taken.iter().filter(|(t, _)| *t == task).count();
        assert_eq!(count(1), 21, "active every second: {taken:?}");
        assert_eq!(count(2), 3, "default every ten seconds: {taken:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn ten_thousand_tasks_joining_at_once_are_spread_over_the_window_not_bunched() {
        let start = Instant::now();
        let mut paces = Paces::new(intervals(), start);
        paces.place(moves(0..10_000, Pace::Default), 10 * SECOND, SECOND, start);
        let taken = turns(&mut paces, start, Duration::from_millis(9_999));
        assert_eq!(taken.len(), 10_000);
        // Per second of the window, a tenth of the tasks, give or take one.
        for second in 0..10 {
            let in_second = taken
                .iter()
                .filter(|(_, at)| at.as_secs() == second)
                .count();
            assert!((999..=1001).contains(&in_second), "{second}: {in_second}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_moving_to_prompt_is_polled_within_the_prompt_window_and_keeps_its_flag() {
        let start = Instant::now();
        let mut paces = Paces::new(intervals(), start);
        paces.place(moves([7], Pace::Settled), SECOND, SECOND, start);
        let flag = paces.rings[2]
            .flags()
            .next()
            .map(|(_, f)| Arc::clone(f))
            .unwrap();
        let later = start + 3 * SECOND;
        paces.place(moves([7], Pace::Prompt), SECOND, 2 * SECOND, later);
        assert_eq!(paces.pace(&id(7)), Some(Pace::Prompt));
        // The entry it left in the settled ring may still be due first: it is skipped.
        let mut taken = None;
        while let Some(due) = paces.next_due().filter(|d| *d <= later + 2 * SECOND) {
            if let Some((_, popped)) = paces.pop(due.max(later)) {
                taken = Some((due.max(later), popped));
                break;
            }
        }
        let (due, popped) = taken.expect("a prompt turn within the window");
        assert!(
            due >= later && due <= later + 2 * SECOND,
            "{:?}",
            due - start
        );
        assert!(Arc::ptr_eq(&flag, &popped));
    }

    #[tokio::test(start_paused = true)]
    async fn settled_tasks_recur_once_per_settled_interval_and_never_means_none() {
        let start = Instant::now();
        let mut paces = Paces::new(intervals(), start);
        paces.place(moves([3, 30], Pace::Settled), SECOND, SECOND, start);
        let taken = turns(&mut paces, start, Duration::from_secs(199));
        assert_eq!(taken.len(), 4, "each once per settled interval: {taken:?}");
        let now = start + 200 * SECOND;
        paces.place(moves([3, 30], Pace::Never), SECOND, SECOND, now);
        assert!(turns(&mut paces, now, 1000 * SECOND).is_empty());
        assert_eq!(paces.pace(&id(3)), Some(Pace::Never));
        paces.retain(|_| false);
        assert_eq!(paces.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn settled_interval_zero_keeps_settled_tasks_out_of_every_ring_until_it_changes() {
        let start = Instant::now();
        let mut never = intervals();
        never.settled = None;
        let mut paces = Paces::new(never, start);
        paces.place(moves([4, 5], Pace::Settled), SECOND, SECOND, start);
        assert_eq!(paces.next_due(), None);
        paces.set_intervals(intervals(), start);
        let taken = turns(&mut paces, start, 99 * SECOND);
        assert_eq!(taken.len(), 2, "{taken:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_flapping_between_paces_is_never_polled_faster_than_the_active_interval() {
        let start = Instant::now();
        let mut paces = Paces::new(intervals(), start);
        let mut taken = Vec::new();
        let mut now = start;
        // The state flips every 300 ms, each flip a move with a prompt first turn.
        for flip in 0..20 {
            let pace = if flip % 2 == 0 {
                Pace::Prompt
            } else {
                Pace::Active
            };
            paces.place(moves([9], pace), SECOND, Duration::ZERO, now);
            while let Some(due) = paces.next_due().filter(|d| *d <= now) {
                if let Some((task, _)) = paces.pop(due) {
                    if paces.may_start(&task, due) {
                        taken.push(due - start);
                    }
                }
            }
            now += Duration::from_millis(300);
        }
        for pair in taken.windows(2) {
            assert!(pair[1] - pair[0] >= Duration::from_millis(900), "{taken:?}");
        }
        assert!(
            taken.len() >= 5,
            "still polled at about the active pace: {taken:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_ring_s_own_rhythm_is_not_held_back_by_the_flap_guard() {
        let start = Instant::now();
        let mut paces = Paces::new(intervals(), start);
        paces.place(moves([1], Pace::Active), SECOND, Duration::ZERO, start);
        let mut taken = 0;
        while let Some(due) = paces.next_due().filter(|d| *d <= start + 10 * SECOND) {
            let (task, _) = paces.pop(due).expect("a due turn");
            taken += usize::from(paces.may_start(&task, due));
        }
        assert_eq!(taken, 11);
    }

    #[tokio::test(start_paused = true)]
    async fn moving_ten_thousand_tasks_one_at_a_time_keeps_every_ring_small() {
        let start = Instant::now();
        let mut paces = Paces::new(intervals(), start);
        paces.place(moves(0..10_000, Pace::Default), 10 * SECOND, SECOND, start);
        for i in 0..10_000 {
            paces.place(moves([i], Pace::Settled), SECOND, SECOND, start);
        }
        // Stale entries are compacted away as they come to outnumber the live ones.
        assert!(paces.rings[1].len() <= 200, "{}", paces.rings[1].len());
        assert_eq!(paces.rings[2].len(), 10_000);
        let taken = turns(&mut paces, start, 99 * SECOND);
        assert_eq!(
            taken.len(),
            10_000,
            "each settled task once, none of the stale entries"
        );
    }
}

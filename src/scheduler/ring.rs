//! The turn order: every watched task recurs once per interval at its own offset.
//!
//! Tasks sit in a vector sorted by offset within the interval, with a cursor on the next one
//! due, so taking a turn costs O(1) whatever the fleet size. (A binary heap of due times cost
//! about 5 µs of cache misses per poll at 100k tasks.) The cycle's start moves on by one
//! interval each time the cursor wraps.
//!
//! - A task added by a reload gets the offset of the time it should first be polled, so it is
//!   polled then and every interval after.
//! - A new interval rescales every offset in proportion, keeping the tasks evenly spread, and
//!   keeps the next task's due time where it was.
//! - After a stall longer than a whole interval (a suspended host), the cursor moves to the
//!   present: missed turns are skipped, not fired together.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::TaskId;

/// The schedule of one watch list.
pub struct Ring {
    interval: Duration,
    /// Start of the current cycle: entry `i` is due at `cycle_start + entries[i].offset`.
    cycle_start: Instant,
    /// Sorted by offset; every offset is below `interval`.
    entries: Vec<Entry>,
    /// The next entry due; 0 when empty.
    cursor: usize,
}

struct Entry {
    offset: Duration,
    id: TaskId,
    /// Set while the task's poll runs.
    busy: Arc<AtomicBool>,
    /// The owner's mark of this placement: an entry whose ticket the owner no longer holds
    /// (the task moved to another ring) is skipped, and dropped at the next compaction.
    ticket: u64,
}

/// One turn taken: the task, its busy flag, and the ticket of the placement.
pub type Turn = (TaskId, Arc<AtomicBool>, u64);

impl Ring {
    pub fn new(interval: Duration, now: Instant) -> Self {
        Ring {
            interval: interval.max(Duration::from_millis(1)),
            cycle_start: now,
            entries: Vec::new(),
            cursor: 0,
        }
    }

    /// Entries in the ring, live or not.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// When the next turn is due; `None` when no task is watched.
    pub fn next_due(&self) -> Option<Instant> {
        let entry = self.entries.get(self.cursor)?;
        Some(self.cycle_start + entry.offset)
    }

    /// Takes the turn under the cursor if it is due at `now`, and moves on. After a stall of
    /// a whole interval or more, moves to the present instead and returns `None`.
    pub fn pop(&mut self, now: Instant) -> Option<Turn> {
        let due = self.next_due()?;
        if due > now {
            return None;
        }
        if now.duration_since(due) >= self.interval {
            self.realign(now);
            return None;
        }
        let entry = &self.entries[self.cursor];
        let turn = (entry.id.clone(), Arc::clone(&entry.busy), entry.ticket);
        self.advance();
        Some(turn)
    }

    /// Adds tasks (not already present) whose first turns are `now + first[i]`; their later
    /// turns follow every interval.
    #[cfg(test)]
    pub fn insert(&mut self, tasks: impl IntoIterator<Item = (TaskId, Duration)>, now: Instant) {
        self.insert_with(
            tasks
                .into_iter()
                .map(|(id, first)| (id, first, Arc::new(AtomicBool::new(false)), 0)),
            now,
        );
    }

    /// [`Ring::insert`], each task with its busy flag (kept when a task moves between rings).
    /// One merge of the sorted batch into the ring: inserting 10,000 tasks into 100,000 costs
    /// a sort of the 10,000 and one pass, not 10,000 shifts of the vector.
    pub fn insert_with(
        &mut self,
        tasks: impl IntoIterator<Item = (TaskId, Duration, Arc<AtomicBool>, u64)>,
        now: Instant,
    ) {
        if self.entries.is_empty() {
            // An empty ring's cycle has not moved on: restart it at the present.
            self.cycle_start = now;
            self.cursor = 0;
        }
        let mut new: Vec<(Entry, Instant)> = tasks
            .into_iter()
            .map(|(id, first, busy, ticket)| {
                let at = now + first;
                let offset = self.offset_of(at);
                (
                    Entry {
                        offset,
                        id,
                        busy,
                        ticket,
                    },
                    at,
                )
            })
            .collect();
        if new.is_empty() {
            return;
        }
        new.sort_by_key(|(e, _)| e.offset);
        let old = std::mem::take(&mut self.entries);
        let mut merged = Vec::with_capacity(old.len() + new.len());
        let mut old = old.into_iter().peekable();
        let mut cursor = self.cursor;
        for (entry, at) in new {
            while old.peek().is_some_and(|e| e.offset <= entry.offset) {
                merged.extend(old.next());
            }
            // Entries before the cursor have had this cycle's turn: their next is the next
            // cycle's. At the cursor either is possible; take the one nearer to `at`.
            let index = merged.len();
            let present = merged.len() + old.len();
            let this_cycle = self.cycle_start + entry.offset;
            if index < cursor
                || (index == cursor && present > 0 && this_cycle + self.interval / 2 < at)
            {
                cursor += 1;
            }
            merged.push(entry);
        }
        merged.extend(old);
        self.entries = merged;
        self.cursor = cursor;
    }

    /// The offset within the interval at which a turn falls due at `at`.
    fn offset_of(&self, at: Instant) -> Duration {
        if at >= self.cycle_start {
            rem(at - self.cycle_start, self.interval)
        } else {
            let back = rem(self.cycle_start - at, self.interval);
            if back.is_zero() {
                back
            } else {
                self.interval - back
            }
        }
    }

    /// The busy flag of each task.
    #[cfg(test)]
    pub fn flags(&self) -> impl Iterator<Item = (&TaskId, &Arc<AtomicBool>)> {
        self.entries.iter().map(|e| (&e.id, &e.busy))
    }

    /// Keeps the tasks for which `keep` holds.
    pub fn retain(&mut self, mut keep: impl FnMut(&TaskId, u64) -> bool) {
        let mut index = 0;
        let mut removed_before_cursor = 0;
        let cursor = self.cursor;
        self.entries.retain(|e| {
            let kept = keep(&e.id, e.ticket);
            if !kept && index < cursor {
                removed_before_cursor += 1;
            }
            index += 1;
            kept
        });
        self.cursor -= removed_before_cursor;
        if self.cursor >= self.entries.len() {
            self.wrap();
        }
    }

    /// Switches to a new interval: offsets scale in proportion and the next turn keeps its
    /// due time.
    pub fn set_interval(&mut self, interval: Duration) {
        let interval = interval.max(Duration::from_millis(1));
        if interval == self.interval {
            return;
        }
        let (old, new) = (self.interval.as_nanos(), interval.as_nanos());
        let next_due = self.next_due();
        for entry in &mut self.entries {
            let scaled = entry.offset.as_nanos() * new / old;
            entry.offset = Duration::from_nanos(u64::try_from(scaled).unwrap_or(u64::MAX));
        }
        self.interval = interval;
        if let (Some(due), Some(entry)) = (next_due, self.entries.get(self.cursor)) {
            self.cycle_start = due.checked_sub(entry.offset).unwrap_or(due);
        }
    }

    fn advance(&mut self) {
        self.cursor += 1;
        if self.cursor >= self.entries.len() {
            self.wrap();
        }
    }

    fn wrap(&mut self) {
        self.cursor = 0;
        self.cycle_start += self.interval;
    }

    /// Moves the cycle and cursor to `now`: the next turn is the first task whose offset has
    /// not yet passed.
    fn realign(&mut self, now: Instant) {
        let since = now.saturating_duration_since(self.cycle_start);
        self.cycle_start += since - rem(since, self.interval);
        let position = now.saturating_duration_since(self.cycle_start);
        self.cursor = self.entries.partition_point(|e| e.offset < position);
        if self.cursor >= self.entries.len() {
            self.wrap();
        }
    }
}

/// `d mod m`.
fn rem(d: Duration, m: Duration) -> Duration {
    Duration::from_nanos(u64::try_from(d.as_nanos() % m.as_nanos()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn id(n: u32) -> TaskId {
        TaskId::parse(&format!("{n:08x}-0000-4000-8000-000000000000")).unwrap()
    }

    /// Takes every turn due until `until`, each exactly at its due time: (task, due - start).
    fn turns(ring: &mut Ring, start: Instant, until: Duration) -> Vec<(u32, Duration)> {
        let mut out = Vec::new();
        while let Some(due) = ring.next_due().filter(|d| *d <= start + until) {
            let (task, _, _) = ring.pop(due).expect("a due turn");
            let n = u32::from_str_radix(&task.as_str()[..8], 16).unwrap();
            out.push((n, due - start));
        }
        out
    }

    fn ring_of(n: u32, interval: Duration, start: Instant) -> Ring {
        let mut ring = Ring::new(interval, start);
        let step = interval / n;
        ring.insert((0..n).map(|i| (id(i), step * i)), start);
        ring
    }

    #[test]
    fn every_task_recurs_once_per_interval_at_its_offset() {
        let start = Instant::now();
        let mut ring = ring_of(4, SECOND, start);
        let ms = Duration::from_millis;
        assert_eq!(
            turns(&mut ring, start, ms(2999)),
            [0, 250, 500, 750, 1000, 1250, 1500, 1750, 2000, 2250, 2500, 2750]
                .iter()
                .enumerate()
                .map(|(i, t)| (i as u32 % 4, ms(*t)))
                .collect::<Vec<_>>()
        );
        assert_eq!(ring.len(), 4);
    }

    #[test]
    fn a_turn_is_not_taken_before_it_is_due() {
        let start = Instant::now();
        let mut ring = ring_of(2, SECOND, start);
        ring.pop(start).expect("task 0 is due at once");
        assert!(ring.pop(start + Duration::from_millis(499)).is_none());
        assert!(ring.pop(start + Duration::from_millis(500)).is_some());
    }

    #[test]
    fn after_a_long_stall_missed_turns_are_skipped_not_fired_together() {
        let start = Instant::now();
        let mut ring = ring_of(10, SECOND, start);
        // Suspended for 5.45 intervals: nothing was polled since the start.
        let now = start + Duration::from_millis(5450);
        assert!(ring.pop(now).is_none(), "the ring moves to the present");
        let next = ring.next_due().unwrap();
        assert_eq!(next - start, Duration::from_millis(5500));
        let taken = turns(&mut ring, start, Duration::from_millis(6449));
        assert_eq!(taken.len(), 10, "one turn per task per interval: {taken:?}");
        assert_eq!(taken[0], (5, Duration::from_millis(5500)));
    }

    #[test]
    fn a_task_added_mid_cycle_is_first_polled_when_asked_then_every_interval() {
        let start = Instant::now();
        let mut ring = ring_of(4, SECOND, start);
        turns(&mut ring, start, Duration::from_millis(600)); // tasks 0, 1, 2 had their turn
        let now = start + Duration::from_millis(600);
        // One turn later this cycle, one that falls into the next cycle.
        ring.insert(
            [
                (id(7), Duration::from_millis(100)),
                (id(8), Duration::from_millis(500)),
            ],
            now,
        );
        let ms = Duration::from_millis;
        let taken = turns(&mut ring, start, ms(2200));
        assert_eq!(
            taken,
            [
                (7, ms(700)),
                (3, ms(750)),
                (0, ms(1000)),
                (8, ms(1100)),
                (1, ms(1250)),
                (2, ms(1500)),
                (7, ms(1700)),
                (3, ms(1750)),
                (0, ms(2000)),
                (8, ms(2100)),
            ]
        );
    }

    #[test]
    fn removing_tasks_keeps_the_turns_of_the_others() {
        let start = Instant::now();
        let mut ring = ring_of(4, SECOND, start);
        turns(&mut ring, start, Duration::from_millis(300)); // 0 and 1
        ring.retain(|t, _| *t != id(0) && *t != id(2));
        let ms = Duration::from_millis;
        assert_eq!(
            turns(&mut ring, start, ms(2000)),
            [(3, ms(750)), (1, ms(1250)), (3, ms(1750))]
        );
        ring.retain(|_, _| false);
        assert_eq!(ring.next_due(), None);
    }

    #[test]
    fn a_new_interval_rescales_the_spread_and_keeps_the_next_turn() {
        let start = Instant::now();
        let mut ring = ring_of(4, SECOND, start);
        turns(&mut ring, start, Duration::from_millis(300)); // 0 and 1
        ring.set_interval(SECOND * 2);
        let ms = Duration::from_millis;
        assert_eq!(
            turns(&mut ring, start, ms(3000)),
            [
                (2, ms(500)),
                (3, ms(1000)),
                (0, ms(1500)),
                (1, ms(2000)),
                (2, ms(2500)),
                (3, ms(3000))
            ]
        );
    }
}

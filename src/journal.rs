//! The recent-activity feed the console shows: new files, zone changes, task state changes,
//! polls failing and recovering, reloads, pauses and the store's own trouble; and new files per
//! hour by zone over the last day.
//!
//! Bounded: at most [`MAX_EVENTS`] events (the oldest leave) and [`HOURS`] hourly buckets. The
//! store keeps both, so a restart does not empty the feed. Strings are cleaned and cut before
//! they get here; the console escapes them again for HTML.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use crate::config::TaskId;
use crate::sandbox::decode::lifecycle::TaskState;
use crate::state::NewActivity;
use crate::zone::DangerZone;

/// Events kept at most.
pub const MAX_EVENTS: usize = 10_000;

/// Hourly buckets kept (the chart shows the last 24 hours, the current one included).
pub const HOURS: usize = 25;

/// YARA rules named per new-file event at most.
const MAX_EVENT_RULES: usize = 8;

/// One thing that happened.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Increasing; the feed's cursor.
    pub id: u64,
    /// Unix seconds.
    pub at: u64,
    pub task: Option<TaskId>,
    pub kind: EventKind,
}

/// What happened.
#[derive(Clone, Debug, PartialEq)]
pub enum EventKind {
    /// A file the task had not downloaded before.
    NewFile {
        zone: DangerZone,
        sha256: Box<str>,
        name: Box<str>,
        rules: Box<[Box<str>]>,
    },
    /// A file already seen, graded anew.
    ZoneChanged {
        from: DangerZone,
        to: DangerZone,
        sha256: Box<str>,
        name: Box<str>,
    },
    /// The sandbox reports another state for the task.
    StateChanged {
        from: Option<TaskState>,
        to: TaskState,
    },
    PollFailed {
        error: Arc<str>,
    },
    PollRecovered,
    /// A configuration reload: its summary, or the problems that kept the old one.
    Reloaded {
        ok: bool,
        detail: Box<str>,
    },
    /// The fleet-wide pause started (`reason` as in `krs_api_paused`).
    Paused {
        reason: Box<str>,
    },
    Resumed,
    /// The store failed or recovered.
    Storage {
        ok: bool,
        detail: Box<str>,
    },
}

impl EventKind {
    /// A short name, as the JSON API and the feed's filter use it.
    pub fn as_str(&self) -> &'static str {
        match self {
            EventKind::NewFile { .. } => "new_file",
            EventKind::ZoneChanged { .. } => "zone_changed",
            EventKind::StateChanged { .. } => "state_changed",
            EventKind::PollFailed { .. } => "poll_failed",
            EventKind::PollRecovered => "poll_recovered",
            EventKind::Reloaded { .. } => "reloaded",
            EventKind::Paused { .. } => "paused",
            EventKind::Resumed => "resumed",
            EventKind::Storage { .. } => "storage",
        }
    }

    /// The zone the event is about, for the feed's zone filter.
    pub fn zone(&self) -> Option<DangerZone> {
        match self {
            EventKind::NewFile { zone, .. } => Some(*zone),
            EventKind::ZoneChanged { to, .. } => Some(*to),
            _ => None,
        }
    }
}

/// New files in one hour, per zone (indexed by [`DangerZone::index`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Hour {
    /// Unix seconds / 3600.
    pub hour: u64,
    pub files: [u64; 6],
}

/// The feed and the hourly counts.
#[derive(Default)]
pub struct Journal {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    events: VecDeque<Event>,
    hours: VecDeque<Hour>,
    next_id: u64,
}

/// Which events a reader wants.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Only events about files of this zone.
    pub zone: Option<DangerZone>,
    /// Only events about this task.
    pub task: Option<TaskId>,
    /// Only events older than this id (the next page).
    pub before: Option<u64>,
}

impl Journal {
    /// A journal holding what the store kept.
    pub fn restored(events: Vec<Event>, hours: Vec<Hour>) -> Self {
        let mut inner = Inner {
            next_id: events.iter().map(|e| e.id + 1).max().unwrap_or(1),
            events: events.into(),
            hours: hours.into(),
        };
        inner.trim();
        Journal {
            inner: Mutex::new(inner),
        }
    }

    /// Numbers `kinds` and records them; returns them numbered, for the store to keep.
    pub fn record(
        &self,
        at: SystemTime,
        kinds: impl IntoIterator<Item = (Option<TaskId>, EventKind)>,
    ) -> Vec<Event> {
        let at = unix(at);
        let mut inner = self.lock();
        let mut out = Vec::new();
        for (task, kind) in kinds {
            if let EventKind::NewFile { zone, .. } | EventKind::ZoneChanged { to: zone, .. } = &kind
            {
                inner.count(at, *zone);
            }
            let event = Event {
                id: inner.next_id.max(1),
                at,
                task,
                kind,
            };
            inner.next_id = event.id + 1;
            inner.events.push_back(event.clone());
            out.push(event);
        }
        inner.trim();
        out
    }

    /// The newest events first, at most `limit`, matching `filter`.
    pub fn recent(&self, filter: &Filter, limit: usize) -> Vec<Event> {
        let inner = self.lock();
        inner
            .events
            .iter()
            .rev()
            .filter(|e| filter.before.is_none_or(|b| e.id < b))
            .filter(|e| filter.zone.is_none_or(|z| e.kind.zone() == Some(z)))
            .filter(|e| {
                filter
                    .task
                    .as_ref()
                    .is_none_or(|t| e.task.as_ref() == Some(t))
            })
            .take(limit)
            .cloned()
            .collect()
    }

    /// New files per hour and zone for the [`HOURS`] hours up to `now`, oldest first; hours
    /// without files are zero.
    pub fn hourly(&self, now: SystemTime) -> Vec<Hour> {
        let current = unix(now) / 3600;
        let inner = self.lock();
        (0..HOURS as u64)
            .rev()
            .map(|back| {
                let hour = current.saturating_sub(back);
                inner
                    .hours
                    .iter()
                    .find(|h| h.hour == hour)
                    .copied()
                    .unwrap_or(Hour {
                        hour,
                        files: [0; 6],
                    })
            })
            .collect()
    }

    /// The hourly buckets as kept (for the store).
    pub fn hours(&self) -> Vec<Hour> {
        self.lock().hours.iter().copied().collect()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    fn count(&mut self, at: u64, zone: DangerZone) {
        let hour = at / 3600;
        match self.hours.iter_mut().find(|h| h.hour == hour) {
            Some(h) => h.files[zone.index()] += 1,
            None => {
                let mut h = Hour {
                    hour,
                    files: [0; 6],
                };
                h.files[zone.index()] = 1;
                // Hours arrive in order but for a clock stepping back: keep them sorted.
                let at = self.hours.partition_point(|x| x.hour < hour);
                self.hours.insert(at, h);
            }
        }
    }

    fn trim(&mut self) {
        while self.events.len() > MAX_EVENTS {
            self.events.pop_front();
        }
        if let Some(newest) = self.hours.back().map(|h| h.hour) {
            self.hours.retain(|h| h.hour + HOURS as u64 > newest);
        }
    }
}

/// The events a poll's new activity makes: one per new file (with its rules) or zone change.
pub fn activity_events(activity: &NewActivity) -> Vec<(Option<TaskId>, EventKind)> {
    let Some((task, _)) = &activity.polled else {
        return Vec::new();
    };
    let rules_of = |sha256: &str| -> Box<[Box<str>]> {
        activity
            .yara_hits
            .iter()
            .zip(&activity.yara_files)
            .filter(|(_, file)| file.as_str() == sha256)
            .map(|(rule, _)| rule.as_str().into())
            .take(MAX_EVENT_RULES)
            .collect()
    };
    activity
        .downloads
        .iter()
        .enumerate()
        .map(|(i, zone)| {
            let sha256 = activity.download_files.get(i).map_or("", String::as_str);
            let name: Box<str> = activity
                .download_names
                .get(i)
                .map_or("", String::as_str)
                .into();
            let kind = match activity.previous_zones.get(i).copied().flatten() {
                Some(from) => EventKind::ZoneChanged {
                    from,
                    to: *zone,
                    sha256: sha256.into(),
                    name,
                },
                None => EventKind::NewFile {
                    zone: *zone,
                    sha256: sha256.into(),
                    name,
                    rules: rules_of(sha256),
                },
            };
            (Some(task.clone()), kind)
        })
        .collect()
}

fn unix(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn new_file(zone: DangerZone) -> (Option<TaskId>, EventKind) {
        (
            None,
            EventKind::NewFile {
                zone,
                sha256: "aa".into(),
                name: "x".into(),
                rules: Box::new([]),
            },
        )
    }

    #[test]
    fn the_feed_is_newest_first_filterable_by_zone_and_pages_by_id() {
        let journal = Journal::default();
        journal.record(
            at(7200),
            [new_file(DangerZone::Red), new_file(DangerZone::Green)],
        );
        journal.record(
            at(7300),
            [(None, EventKind::Resumed), new_file(DangerZone::Red)],
        );
        let all = journal.recent(&Filter::default(), 10);
        assert_eq!(
            all.iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![4, 3, 2, 1]
        );
        let red = Filter {
            zone: Some(DangerZone::Red),
            ..Filter::default()
        };
        assert_eq!(
            journal
                .recent(&red, 10)
                .iter()
                .map(|e| e.id)
                .collect::<Vec<_>>(),
            vec![4, 1]
        );
        let older = Filter {
            before: Some(3),
            ..Filter::default()
        };
        assert_eq!(journal.recent(&older, 1)[0].id, 2);
    }

    #[test]
    fn the_feed_keeps_the_newest_events_and_the_last_day_of_hours() {
        let journal = Journal::default();
        for i in 0..(MAX_EVENTS as u64 + 5) {
            journal.record(at(i * 60), [new_file(DangerZone::Yellow)]);
        }
        let all = journal.recent(&Filter::default(), usize::MAX);
        assert_eq!(all.len(), MAX_EVENTS);
        assert_eq!(all.last().map(|e| e.id), Some(6));
        assert!(journal.hours().len() <= HOURS);
        let hourly = journal.hourly(at((MAX_EVENTS as u64 + 4) * 60));
        assert_eq!(hourly.len(), HOURS);
        // 60 files an hour, one a minute; the current hour is partly over.
        assert_eq!(hourly[HOURS - 2].files[DangerZone::Yellow.index()], 60);
        assert!(hourly.windows(2).all(|w| w[0].hour + 1 == w[1].hour));
    }

    #[test]
    fn a_restored_journal_numbers_new_events_after_the_kept_ones() {
        let journal = Journal::default();
        let kept = journal.record(at(10), [new_file(DangerZone::Red)]);
        let restored = Journal::restored(kept, journal.hours());
        let next = restored.record(at(20), [(None, EventKind::PollRecovered)]);
        assert_eq!(next[0].id, 2);
        assert_eq!(restored.hourly(at(20))[HOURS - 1].files[0], 1);
    }
}

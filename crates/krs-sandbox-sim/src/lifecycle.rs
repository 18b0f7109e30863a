//! A task's life on the appliance: when it was created, the states it passes through, its
//! repeats, and what it reports about its sample — and the evaluation of all that at a moment of
//! the simulator's clock.
//!
//! Every time is an [`Offset`] from simulator start, signed so that a task can have been created
//! (and even finished) before the simulator started. A task without a `timeline` keeps the
//! behaviour it had before lifecycles existed: `processing` while a file or a zone change is still
//! to come, `completed` after. A task with a `timeline` is in the state of the latest step that
//! has passed (`uploading` between its creation and its first step); a repeat starts a new run
//! (new `ResultId`, `processing` again) and completes after its `processing` time.

use std::fmt;
use std::time::Duration;

/// A signed time relative to simulator start, in milliseconds: negative is before start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Offset(i64);

/// A task state as the appliance spells it: the spelling is sent verbatim, the kind is what it
/// means (compared case-insensitively, with space, `_` and `-` alike, as a client must).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateName {
    pub kind: StateKind,
    pub spelling: String,
}

/// What a task state means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StateKind {
    Uploading,
    UploadFailed,
    Created,
    Processing,
    Completed,
    Failed,
    Deleted,
    Disposed,
    /// A spelling the contract does not know, sent verbatim (a client must call it `unknown`).
    Unrecognised,
}

/// From `at` on, the task is in `state`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub at: Offset,
    pub state: StateName,
}

/// Someone repeats the task at `at` (`POST /tasks/{id}`): a new `ResultId`, `processing` until
/// `at + processing`, then `completed` with a new `Processed` time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repeat {
    pub at: Offset,
    pub processing: Duration,
}

/// The sample as uploaded: what the task-parameter record says about it. Empty strings are sent
/// empty; `None` hashes are derived from the task id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    /// `None`: the task's `name`, else `sample.bin`.
    pub original_file_name: Option<String>,
    /// `None`: the original file name.
    pub file_name: Option<String>,
    pub archive_name: String,
    /// `None`: from the original file name (`exe` for `a.exe`).
    pub extension: Option<String>,
    pub file_type: String,
    /// Used by `sort_by=size` only (the record carries no size key).
    pub size: u64,
    pub md5: Option<String>,
    pub sha1: Option<String>,
    pub sha256: Option<String>,
    pub ssdeep: String,
}

/// `ErrorCode` and `ErrorMessage` of a failed task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskError {
    pub code: String,
    pub message: String,
}

/// A task's lifecycle as evaluated at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Snapshot {
    /// `None` before the task's creation: it does not exist yet.
    pub(crate) state: Option<StateName>,
    /// 0 for the first run, +1 per repeat that has started.
    pub(crate) run: u32,
    /// End of the current run's analysis, if it has ended.
    pub(crate) processed: Option<Offset>,
}

/// Steps and repeats merged into one ordered list of events (built when a task is validated).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Events(Vec<Event>);

#[derive(Clone, Debug, PartialEq, Eq)]
struct Event {
    at: Offset,
    kind: EventKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum EventKind {
    State(StateName),
    NewRun,
}

impl Offset {
    pub const ZERO: Offset = Offset(0);

    /// This long after start.
    pub fn after(d: Duration) -> Offset {
        Offset(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }

    /// This long before start.
    pub fn before(d: Duration) -> Offset {
        Offset(-i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }

    pub fn from_millis(ms: i64) -> Offset {
        Offset(ms)
    }

    pub fn as_millis(self) -> i64 {
        self.0
    }

    /// `self + d`, saturating.
    pub fn plus(self, d: Duration) -> Offset {
        Offset(self.0.saturating_add(Offset::after(d).0))
    }

    /// Parse `90s`, `-2h`, `1m30s` (humantime with an optional leading minus).
    pub fn parse(text: &str) -> Result<Offset, humantime::DurationError> {
        let text = text.trim();
        match text.strip_prefix('-') {
            Some(rest) => humantime::parse_duration(rest.trim()).map(Offset::before),
            None => humantime::parse_duration(text).map(Offset::after),
        }
    }

    /// The wall-clock time this offset names, given the wall-clock time of simulator start.
    pub(crate) fn wall(self, start: std::time::SystemTime) -> std::time::SystemTime {
        let d = Duration::from_millis(self.0.unsigned_abs());
        if self.0 >= 0 {
            start + d
        } else {
            start.checked_sub(d).unwrap_or(std::time::UNIX_EPOCH)
        }
    }
}

impl From<Duration> for Offset {
    fn from(d: Duration) -> Offset {
        Offset::after(d)
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let d = Duration::from_millis(self.0.unsigned_abs());
        write!(f, "{sign}{}", humantime::format_duration(d))
    }
}

impl StateName {
    /// Any spelling: `Completed`, `processing_failed`, `upload-failed`, …
    pub fn new(spelling: &str) -> StateName {
        StateName {
            kind: StateKind::parse(spelling),
            spelling: spelling.to_owned(),
        }
    }

    /// The contract's own spelling of a kind.
    pub fn of(kind: StateKind) -> StateName {
        StateName {
            kind,
            spelling: kind.as_str().to_owned(),
        }
    }
}

impl From<&str> for StateName {
    fn from(s: &str) -> StateName {
        StateName::new(s)
    }
}

impl From<StateKind> for StateName {
    fn from(kind: StateKind) -> StateName {
        StateName::of(kind)
    }
}

impl StateKind {
    /// Case-insensitive, space, `_` and `-` alike; `processing failed` is `failed`.
    pub fn parse(s: &str) -> StateKind {
        let norm: String = s
            .trim()
            .chars()
            .map(|c| match c {
                '_' | '-' => ' ',
                c => c.to_ascii_lowercase(),
            })
            .collect();
        let norm = norm.split_whitespace().collect::<Vec<_>>().join(" ");
        match norm.as_str() {
            "uploading" => StateKind::Uploading,
            "upload failed" => StateKind::UploadFailed,
            "created" => StateKind::Created,
            "processing" => StateKind::Processing,
            "completed" => StateKind::Completed,
            "failed" | "processing failed" => StateKind::Failed,
            "deleted" => StateKind::Deleted,
            "disposed" => StateKind::Disposed,
            _ => StateKind::Unrecognised,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StateKind::Uploading => "uploading",
            StateKind::UploadFailed => "upload failed",
            StateKind::Created => "created",
            StateKind::Processing => "processing",
            StateKind::Completed => "completed",
            StateKind::Failed => "failed",
            StateKind::Deleted => "deleted",
            StateKind::Disposed => "disposed",
            StateKind::Unrecognised => "unknown",
        }
    }

    /// The end of an analysis: `Processed` is set when a run reaches it.
    pub(crate) fn ends_analysis(self) -> bool {
        matches!(
            self,
            StateKind::Completed | StateKind::Failed | StateKind::UploadFailed
        )
    }

    /// The record remains but the task's downloads are gone (404, code 7).
    pub(crate) fn is_removed(self) -> bool {
        matches!(self, StateKind::Deleted | StateKind::Disposed)
    }

    pub(crate) fn is_failure(self) -> bool {
        matches!(self, StateKind::Failed | StateKind::UploadFailed)
    }
}

impl Events {
    /// Merge `steps` (sorted by the caller's validation) and `repeats` into one timeline.
    pub(crate) fn build(steps: &[Step], repeats: &[Repeat]) -> Events {
        let mut events: Vec<Event> = steps
            .iter()
            .map(|s| Event {
                at: s.at,
                kind: EventKind::State(s.state.clone()),
            })
            .collect();
        for r in repeats {
            events.push(Event {
                at: r.at,
                kind: EventKind::NewRun,
            });
            events.push(Event {
                at: r.at,
                kind: EventKind::State(StateName::of(StateKind::Processing)),
            });
            events.push(Event {
                at: r.at.plus(r.processing),
                kind: EventKind::State(StateName::of(StateKind::Completed)),
            });
        }
        // Stable: at equal times, steps keep their order and a repeat's own events theirs.
        events.sort_by_key(|e| e.at);
        Events(events)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The state `now`, for a task created at `created`.
    pub(crate) fn at(&self, created: Offset, now: Offset) -> Snapshot {
        if now < created {
            return Snapshot {
                state: None,
                run: 0,
                processed: None,
            };
        }
        let mut snap = Snapshot {
            state: Some(StateName::of(StateKind::Uploading)),
            run: 0,
            processed: None,
        };
        for e in self.0.iter().take_while(|e| e.at <= now) {
            match &e.kind {
                EventKind::NewRun => {
                    snap.run += 1;
                    snap.processed = None;
                }
                EventKind::State(s) => {
                    if s.kind.ends_analysis() {
                        snap.processed = Some(e.at);
                    }
                    snap.state = Some(s.clone());
                }
            }
        }
        snap
    }

    /// Live change: drop every scripted event after `now` and set `state` at `now`.
    pub(crate) fn set_state(&mut self, now: Offset, state: StateName) {
        self.0.retain(|e| e.at <= now);
        self.0.push(Event {
            at: now,
            kind: EventKind::State(state),
        });
    }

    /// Live repeat: drop every scripted event after `now`, start a new run now.
    pub(crate) fn repeat(&mut self, now: Offset, processing: Duration) {
        self.0.retain(|e| e.at <= now);
        let mut more = Events::build(
            &[],
            &[Repeat {
                at: now,
                processing,
            }],
        );
        self.0.append(&mut more.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: i64) -> Offset {
        Offset::from_millis(secs * 1000)
    }

    #[test]
    fn offsets_parse_with_an_optional_minus_and_print_back() {
        assert_eq!(Offset::parse("-2h").unwrap(), s(-7200));
        assert_eq!(Offset::parse("1m30s").unwrap(), s(90));
        assert_eq!(Offset::parse(" - 5s").unwrap(), s(-5));
        assert!(Offset::parse("soon").is_err());
        assert_eq!(s(-90).to_string(), "-1m 30s");
    }

    #[test]
    fn state_spellings_are_read_as_a_client_must_read_them() {
        for (spelling, kind) in [
            ("Processing failed", StateKind::Failed),
            ("processing_failed", StateKind::Failed),
            ("FAILED", StateKind::Failed),
            ("Completed", StateKind::Completed),
            ("upload failed", StateKind::UploadFailed),
            ("Upload-Failed", StateKind::UploadFailed),
            ("disposed", StateKind::Disposed),
            ("archived", StateKind::Unrecognised),
        ] {
            assert_eq!(StateKind::parse(spelling), kind, "{spelling}");
        }
        assert_eq!(StateName::new("Completed").spelling, "Completed");
    }

    #[test]
    fn a_timeline_reads_as_uploading_then_each_step_then_a_repeat_with_a_new_run() {
        let steps = [
            Step {
                at: s(10),
                state: "created".into(),
            },
            Step {
                at: s(20),
                state: "processing".into(),
            },
            Step {
                at: s(60),
                state: "Completed".into(),
            },
        ];
        let repeats = [Repeat {
            at: s(100),
            processing: Duration::from_secs(30),
        }];
        let events = Events::build(&steps, &repeats);
        let state = |t| events.at(s(0), s(t));
        assert_eq!(events.at(s(0), s(-1)).state, None, "not created yet");
        assert_eq!(state(5).state.unwrap().kind, StateKind::Uploading);
        assert_eq!(state(15).state.unwrap().kind, StateKind::Created);
        assert_eq!(state(59).processed, None);
        let done = state(60);
        assert_eq!(done.state.unwrap().spelling, "Completed");
        assert_eq!((done.run, done.processed), (0, Some(s(60))));
        let again = state(110);
        assert_eq!(again.state.unwrap().kind, StateKind::Processing);
        assert_eq!((again.run, again.processed), (1, None));
        let redone = state(130);
        assert_eq!(redone.state.unwrap().kind, StateKind::Completed);
        assert_eq!((redone.run, redone.processed), (1, Some(s(130))));
    }

    #[test]
    fn a_live_change_cancels_the_scripted_future() {
        let mut events = Events::build(
            &[Step {
                at: s(60),
                state: "completed".into(),
            }],
            &[],
        );
        events.set_state(s(30), "deleted".into());
        assert_eq!(
            events.at(s(0), s(90)).state.unwrap().kind,
            StateKind::Deleted
        );
    }
}

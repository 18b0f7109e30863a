//! A sandbox task's lifecycle as the exporter follows it: what is known of each task's state
//! ([`TaskLife`]), and the pace its state deserves ([`Pace`], [`pace`]).
//!
//! A task is created, uploads, detonates (30 s to about an hour) and completes; its downloads
//! can only change until then, unless someone repeats it (a new `ResultId`). So:
//!
//! | what is known | pace |
//! |---|---|
//! | lifecycle off, or the state unknown (not listed, or the sandbox does not serve the task endpoints) | [`Pace::Default`]: `polling.interval`, as without lifecycle |
//! | uploading, created, processing | [`Pace::Active`]: `polling.active_interval` |
//! | completed, and polled before while it was not (its downloads may have changed since) | [`Pace::Prompt`]: one final poll at once |
//! | completed, first seen completed (a backfill of finished tasks) | [`Pace::Default`]: its first poll spread over `interval` like any new task |
//! | completed, and polled since completion was seen (for this `ResultId`) | [`Pace::Settled`]: `polling.settled_interval`, or never when 0 |
//! | failed, upload failed, deleted, disposed | [`Pace::Never`] |

use std::time::SystemTime;

use crate::labels;
use crate::sandbox::decode::lifecycle::{TaskRecord, TaskState};
use crate::zone::DangerZone;

/// What the sandbox said of one task, cleaned for display.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskLife {
    pub state: TaskState,
    /// Changes when the task is repeated; bounded, not shown.
    pub result_id: Box<str>,
    pub created: Option<SystemTime>,
    pub processed: Option<SystemTime>,
    /// The sample's own zone.
    pub zone: DangerZone,
    /// The sample's verdict, cleaned and cut like a label value (`Unknown` when empty).
    pub verdict: Box<str>,
}

/// How often a task is polled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pace {
    Active,
    /// Once, at once; then the pace its state deserves.
    Prompt,
    Default,
    Settled,
    Never,
}

/// A verdict is free text from the appliance (its list is short): cut like a label value, and
/// shorter.
const MAX_VERDICT_CHARS: usize = 64;

impl TaskLife {
    /// From a task record; text cut to `max_label_length` characters.
    pub fn from_record(record: &TaskRecord, max_label_length: usize) -> TaskLife {
        let verdict = labels::clean(
            record.verdict.trim(),
            max_label_length.min(MAX_VERDICT_CHARS),
        );
        TaskLife {
            state: record.state,
            result_id: labels::clean(record.result_id.trim(), 128).into(),
            created: record.created,
            processed: record.processed,
            zone: record.zone,
            verdict: if verdict.is_empty() {
                "Unknown".into()
            } else {
                verdict.into()
            },
        }
    }
}

/// The pace of a task given what is known of it.
///
/// - `life`: its latest known state, `None` when unknown;
/// - `polled`: whether it has been polled at all;
/// - `settled_for`: the `ResultId` for which a poll succeeded after completion was seen.
pub fn pace(
    lifecycle: bool,
    life: Option<&TaskLife>,
    polled: bool,
    settled_for: Option<&str>,
) -> Pace {
    let Some(life) = life.filter(|_| lifecycle) else {
        return Pace::Default;
    };
    match life.state {
        s if s.is_gone() => Pace::Never,
        s if s.is_active() => Pace::Active,
        TaskState::Completed if settled_for == Some(&*life.result_id) => Pace::Settled,
        TaskState::Completed if polled => Pace::Prompt,
        _ => Pace::Default,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn life(state: TaskState, result: &str) -> TaskLife {
        TaskLife {
            state,
            result_id: result.into(),
            created: None,
            processed: None,
            zone: DangerZone::Unknown,
            verdict: "Unknown".into(),
        }
    }

    #[test]
    fn without_lifecycle_or_a_known_state_every_task_keeps_the_fixed_pace() {
        let done = life(TaskState::Completed, "r1");
        assert_eq!(pace(false, Some(&done), true, Some("r1")), Pace::Default);
        assert_eq!(pace(true, None, true, None), Pace::Default);
        assert_eq!(
            pace(true, Some(&life(TaskState::Unknown, "")), true, None),
            Pace::Default
        );
    }

    #[test]
    fn a_detonating_task_is_active_and_a_finished_one_never_polled_again_if_it_failed() {
        for state in [
            TaskState::Uploading,
            TaskState::Created,
            TaskState::Processing,
        ] {
            assert_eq!(
                pace(true, Some(&life(state, "r")), true, None),
                Pace::Active
            );
        }
        for state in [
            TaskState::Failed,
            TaskState::UploadFailed,
            TaskState::Deleted,
            TaskState::Disposed,
        ] {
            assert_eq!(pace(true, Some(&life(state, "r")), true, None), Pace::Never);
        }
    }

    #[test]
    fn completion_gets_one_prompt_poll_then_the_settled_pace_until_a_repeat() {
        let done = life(TaskState::Completed, "r1");
        assert_eq!(pace(true, Some(&done), true, None), Pace::Prompt);
        assert_eq!(pace(true, Some(&done), true, Some("r1")), Pace::Settled);
        let repeated = life(TaskState::Completed, "r2");
        assert_eq!(pace(true, Some(&repeated), true, Some("r1")), Pace::Prompt);
    }

    #[test]
    fn a_task_first_seen_completed_is_polled_at_the_fixed_pace_not_promptly() {
        let done = life(TaskState::Completed, "r1");
        assert_eq!(pace(true, Some(&done), false, None), Pace::Default);
    }

    #[test]
    fn a_verdict_is_cleaned_bounded_and_unknown_when_empty() {
        let mut record = TaskRecord {
            id: "a".into(),
            result_id: "r".into(),
            state: TaskState::Completed,
            created: None,
            processed: None,
            verdict: "  ".into(),
            zone: DangerZone::Red,
            av_bases: None,
            error_code: String::new(),
            error_message: String::new(),
            sample_name: String::new(),
            sha256: String::new(),
        };
        assert_eq!(&*TaskLife::from_record(&record, 128).verdict, "Unknown");
        record.verdict = format!("Mal\nware{}", "x".repeat(500));
        let verdict = TaskLife::from_record(&record, 128).verdict;
        assert!(
            !verdict.contains('\n') && verdict.chars().count() <= 64,
            "{verdict}"
        );
    }
}

//! Decoding of the lifecycle endpoints' bodies: task parameters (`GET tasks/{id}`), the task
//! list (`GET tasks/`), the sandbox's health (`GET health`) and version (`GET version`).
//!
//! The vendor publishes no response example for the first two, so they are decoded by the same
//! rules as downloads: an array of records, a single record, or a wrapper object holding the
//! array of records; keys ASCII case-insensitive; unknown keys ignored; one record that cannot
//! be understood skipped and counted, never hiding the others (`scan` finds each
//! element, each is parsed alone and repaired once when the strict parse fails).
//!
//! Every string here is untrusted (`OriginalFileName` is chosen by whoever submitted the
//! sample): strings are kept as received, at most [`MAX_TEXT_CHARS`] characters, and cleaned by
//! whoever renders them.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};

use super::{DecodeError, DecodeReport, SkipReason};
use crate::zone::DangerZone;

/// The longest string kept from a lifecycle record, in characters.
pub const MAX_TEXT_CHARS: usize = 1024;

/// Health checks kept from one `GET health` body at most.
pub const MAX_HEALTH_CHECKS: usize = 64;

/// Keys that make an object a task record.
const TASK_KEYS: &[&str] = &[
    "TaskId",
    "ResultId",
    "TaskState",
    "Created",
    "Processed",
    "OriginalFileName",
    "FileName",
];

/// A task's state, as the sandbox spells it in many ways.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TaskState {
    Uploading,
    UploadFailed,
    Created,
    Processing,
    Completed,
    Failed,
    Deleted,
    Disposed,
    Unknown,
}

/// One task's parameters. Times are `None` when missing, empty or unparsable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskRecord {
    /// The GUID as sent (not validated here).
    pub id: String,
    /// Changes when the task is repeated.
    pub result_id: String,
    pub state: TaskState,
    pub created: Option<SystemTime>,
    /// End of the analysis; `None` until then.
    pub processed: Option<SystemTime>,
    /// The sample's verdict (`Malware`, `Clean`, …), free text.
    pub verdict: String,
    /// The sample's own zone; [`DangerZone::Unknown`] until graded.
    pub zone: DangerZone,
    pub av_bases: Option<SystemTime>,
    pub error_code: String,
    pub error_message: String,
    /// `OriginalFileName`, else `FileName`: chosen by the submitter, untrusted.
    pub sample_name: String,
    pub sha256: String,
}

/// A decoded task list page.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskPage {
    /// Records with a task id, in body order.
    pub tasks: Vec<TaskRecord>,
    pub report: DecodeReport,
}

/// `GET health`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Health {
    /// The `healthy` flag; `None` when missing or not a boolean.
    pub healthy: Option<bool>,
    /// Each `detailed` condition as reported: (name lowercased to `[a-z0-9_]`, value), sorted
    /// by name.
    pub checks: Vec<(String, bool)>,
}

/// `GET version`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Version {
    pub system_version: String,
    /// `bases_version` as sent (an ISO 8601 time, or empty).
    pub bases_version: String,
    /// `bases_version` as a time, when it is one.
    pub bases_time: Option<SystemTime>,
}

impl TaskState {
    pub const ALL: [TaskState; 9] = [
        TaskState::Uploading,
        TaskState::UploadFailed,
        TaskState::Created,
        TaskState::Processing,
        TaskState::Completed,
        TaskState::Failed,
        TaskState::Deleted,
        TaskState::Disposed,
        TaskState::Unknown,
    ];

    /// Case-insensitive; space, `_` and `-` alike (`Upload failed`, `upload_failed`);
    /// `Processing failed` is a failure; anything else is `Unknown`.
    pub fn parse(s: &str) -> TaskState {
        let normal: String = s
            .trim()
            .chars()
            .map(|c| match c {
                ' ' | '_' | '-' => '_',
                c => c.to_ascii_lowercase(),
            })
            .collect();
        match normal.as_str() {
            "uploading" => TaskState::Uploading,
            "upload_failed" => TaskState::UploadFailed,
            "created" => TaskState::Created,
            "processing" => TaskState::Processing,
            "completed" => TaskState::Completed,
            "failed" | "processing_failed" => TaskState::Failed,
            "deleted" => TaskState::Deleted,
            "disposed" => TaskState::Disposed,
            _ => TaskState::Unknown,
        }
    }

    /// The `state` label value of `krs_task_state`.
    pub const fn as_str(self) -> &'static str {
        match self {
            TaskState::Uploading => "uploading",
            TaskState::UploadFailed => "upload_failed",
            TaskState::Created => "created",
            TaskState::Processing => "processing",
            TaskState::Completed => "completed",
            TaskState::Failed => "failed",
            TaskState::Deleted => "deleted",
            TaskState::Disposed => "disposed",
            TaskState::Unknown => "unknown",
        }
    }

    /// Detonation still to come or under way: downloads may still change.
    pub const fn is_active(self) -> bool {
        matches!(
            self,
            TaskState::Uploading | TaskState::Created | TaskState::Processing
        )
    }

    /// Final states in which the task is never polled again.
    pub const fn is_gone(self) -> bool {
        matches!(
            self,
            TaskState::UploadFailed | TaskState::Failed | TaskState::Deleted | TaskState::Disposed
        )
    }
}

/// Decodes a task list page: at most `max` records kept, the rest counted as over the limit.
pub fn decode_task_list(body: &[u8], max: usize) -> Result<TaskPage, DecodeError> {
    let mut page = TaskPage::default();
    for_each_record(body, TASK_KEYS, &mut page.report, |map, report| {
        if page.tasks.len() >= max {
            report.skipped[SkipReason::OverLimit.index()] += 1;
            return;
        }
        match task_record(map) {
            Some(task) => page.tasks.push(task),
            None => report.skipped[SkipReason::Unreadable.index()] += 1,
        }
    })?;
    Ok(page)
}

/// Decodes `GET tasks/{id}`: its one record (the first, if a list came back); `None` when the
/// body holds no record with a task id.
pub fn decode_task(body: &[u8]) -> Result<Option<TaskRecord>, DecodeError> {
    Ok(decode_task_list(body, 1)?.tasks.into_iter().next())
}

/// Decodes `GET health`. `detailed` may be an array of `{"name": …, "value": bool}`-like
/// objects, of single-key objects `{"sb_is_dead": false}`, or an object of booleans.
pub fn decode_health(body: &[u8]) -> Result<Health, DecodeError> {
    let map = object(body)?;
    let mut health = Health {
        healthy: field(&map, "healthy").and_then(boolean),
        checks: Vec::new(),
    };
    let mut add = |name: &str, value: Option<bool>| {
        if let (Some(value), true) = (value, health.checks.len() < MAX_HEALTH_CHECKS) {
            let name = check_name(name);
            if !name.is_empty() && !health.checks.iter().any(|(n, _)| *n == name) {
                health.checks.push((name, value));
            }
        }
    };
    match field(&map, "detailed") {
        Some(Value::Array(items)) => {
            for item in items {
                let Value::Object(item) = item else { continue };
                let named = ["name", "check", "key", "condition"]
                    .iter()
                    .find_map(|k| field(item, k).and_then(Value::as_str));
                match named {
                    Some(name) => {
                        let value = ["value", "status", "state", "result"]
                            .iter()
                            .find_map(|k| field(item, k).and_then(boolean));
                        add(name, value);
                    }
                    None => {
                        for (name, value) in item {
                            add(name, boolean(value));
                        }
                    }
                }
            }
        }
        Some(Value::Object(items)) => {
            for (name, value) in items {
                add(name, boolean(value));
            }
        }
        _ => {}
    }
    health.checks.sort_unstable();
    Ok(health)
}

/// Decodes `GET version`.
pub fn decode_version(body: &[u8]) -> Result<Version, DecodeError> {
    let map = object(body)?;
    let text = |key| field(&map, key).map(scalar_text).unwrap_or_default();
    let bases_version = text("bases_version");
    Ok(Version {
        system_version: text("system_version"),
        bases_time: parse_time(&bases_version),
        bases_version,
    })
}

/// An ISO 8601 date-time (`YYYY-MM-DDThh:mm:ss`, optional fraction, `Z`, `±hh:mm` or no zone,
/// which is taken as UTC), or a date alone; `None` for anything else.
pub fn parse_time(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    if s.is_empty() || s.len() > 64 {
        return None;
    }
    let (main, offset) = split_offset(s);
    let main = if main.len() == 10 {
        Cow::Owned(format!("{main}T00:00:00"))
    } else {
        Cow::Borrowed(main)
    };
    let utc = humantime::parse_rfc3339_weak(&main).ok()?;
    match offset {
        Some(east) if east >= 0 => utc.checked_sub(Duration::from_secs(east.unsigned_abs())),
        Some(west) => utc.checked_add(Duration::from_secs(west.unsigned_abs())),
        None => Some(utc),
    }
}

/// Splits a trailing zone off a date-time: `Z` or none is no offset; `+03:00` is 10800 s east.
fn split_offset(s: &str) -> (&str, Option<i64>) {
    if let Some(main) = s.strip_suffix(['Z', 'z']) {
        return (main, None);
    }
    if s.len() > 19 {
        let (main, zone) = s.split_at(s.len() - 6);
        let sign = match zone.as_bytes()[0] {
            b'+' => 1,
            b'-' => -1,
            _ => return (s, None),
        };
        let hours = zone.get(1..3).and_then(|h| h.parse::<i64>().ok());
        let minutes = zone.get(4..6).and_then(|m| m.parse::<i64>().ok());
        if let (Some(h), Some(m), Some(b':')) = (hours, minutes, zone.as_bytes().get(3)) {
            return (main, Some(sign * (h * 3600 + m * 60)));
        }
    }
    (s, None)
}

/// Runs `each` on every record object of a records body, counting what is skipped.
fn for_each_record(
    body: &[u8],
    keys: &[&str],
    report: &mut DecodeReport,
    mut each: impl FnMut(&Map<String, Value>, &mut DecodeReport),
) -> Result<(), DecodeError> {
    super::for_each_element(body, keys, |bytes| match element(bytes, report) {
        Ok(Some(map)) => each(&map, report),
        Ok(None) => {}
        Err(reason) => report.skipped[reason.index()] += 1,
    })
}

/// One element as an object (see [`super::mend`]).
fn element(
    bytes: &[u8],
    report: &mut DecodeReport,
) -> Result<Option<Map<String, Value>>, SkipReason> {
    super::mend(
        bytes,
        &mut report.repaired,
        |text| match serde_json::from_str(text) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(()),
        },
    )
}

/// A body that must be one object (`health`, `version`).
fn object(body: &[u8]) -> Result<Map<String, Value>, DecodeError> {
    let text = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let mut report = DecodeReport::default();
    match element(text.trim_ascii(), &mut report) {
        Ok(Some(map)) => Ok(map),
        Ok(None) | Err(SkipReason::NotAnObject) => Err(DecodeError::Shape(
            "the body is not a JSON object".to_owned(),
        )),
        Err(_) => Err(DecodeError::Json("the body is not valid JSON".to_owned())),
    }
}

fn task_record(map: &Map<String, Value>) -> Option<TaskRecord> {
    let text = |key: &str| field(map, key).map(scalar_text).unwrap_or_default();
    let id = text("TaskId");
    if id.is_empty() {
        return None;
    }
    let sample_name = Some(text("OriginalFileName"))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| text("FileName"));
    Some(TaskRecord {
        id,
        result_id: text("ResultId"),
        state: TaskState::parse(&text("TaskState")),
        created: parse_time(&text("Created")),
        processed: parse_time(&text("Processed")),
        verdict: text("Status"),
        zone: DangerZone::parse_lenient(&text("Zone")),
        av_bases: parse_time(&text("AvBasesVersion")),
        error_code: text("ErrorCode"),
        error_message: text("ErrorMessage"),
        sample_name,
        sha256: text("Sha256").trim().to_ascii_lowercase(),
    })
}

/// The value of `key` in `map`, matched ASCII case-insensitively (the exact spelling first).
fn field<'m>(map: &'m Map<String, Value>, key: &str) -> Option<&'m Value> {
    map.get(key).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// A scalar as bounded text: strings as sent, numbers and booleans in their JSON spelling;
/// `""` for null and compounds.
fn scalar_text(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null | Value::Array(_) | Value::Object(_) => String::new(),
    };
    match text.char_indices().nth(MAX_TEXT_CHARS) {
        Some((end, _)) => text[..end].to_owned(),
        None => text,
    }
}

/// A boolean, or one spelled `"true"`/`"false"`/`1`/`0`.
fn boolean(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_u64() {
            Some(1) => Some(true),
            Some(0) => Some(false),
            _ => None,
        },
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// A check name as a label value: ASCII letters lowercased, digits and `_` kept, runs of
/// anything else become one `_`; at most 64 characters.
fn check_name(name: &str) -> String {
    let mut out = String::new();
    for c in name.trim().chars() {
        if out.len() >= 64 {
            break;
        }
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') && !out.is_empty() {
            out.push('_');
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> SystemTime {
        parse_time(s).expect("a valid time")
    }

    #[test]
    fn state_spellings_are_normalised_and_anything_else_is_unknown() {
        for (text, state) in [
            ("processing", TaskState::Processing),
            ("Completed", TaskState::Completed),
            (" UPLOAD FAILED ", TaskState::UploadFailed),
            ("upload-failed", TaskState::UploadFailed),
            ("Processing failed", TaskState::Failed),
            ("disposed", TaskState::Disposed),
            ("paused", TaskState::Unknown),
            ("", TaskState::Unknown),
        ] {
            assert_eq!(TaskState::parse(text), state, "{text:?}");
        }
    }

    #[test]
    fn iso_times_with_any_zone_or_none_parse_and_garbage_does_not() {
        let utc = at("2026-11-30T10:00:00Z");
        assert_eq!(at("2026-11-30T10:00:00"), utc);
        assert_eq!(at("2026-11-30T13:00:00+03:00"), utc);
        assert_eq!(at("2026-11-30T05:00:00-05:00"), utc);
        assert_eq!(
            at("2026-11-30 10:00:00.250Z"),
            utc + Duration::from_millis(250)
        );
        assert_eq!(at("2026-11-30"), at("2026-11-30T00:00:00Z"));
        for bad in ["", "yesterday", "2026-13-40T00:00:00Z", &"9".repeat(100)] {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_task_list_in_any_shape_and_key_case_decodes_and_a_bad_record_hides_nothing() {
        let record = r#"{"taskid":"0D5B4E44-4C0E-4F0B-9A57-3F2D1B9E6C71","TASKSTATE":"Completed",
            "Created":"2026-11-30T10:00:00Z","Processed":"","Zone":"red","Status":"Malware",
            "OriginalFileName":"invoice.docm","Extra":[1,2]}"#;
        for body in [
            format!("[{record}]"),
            record.to_owned(),
            format!(r#"{{"Meta":[{{"Total":2}}],"Tasks":[{record},{{"TaskId":"x\ud800"}},7]}}"#),
        ] {
            let page = decode_task_list(body.as_bytes(), 10).expect("decodes");
            let task = &page.tasks[0];
            assert_eq!(task.state, TaskState::Completed);
            assert_eq!(task.zone, DangerZone::Red);
            assert_eq!(task.processed, None);
            assert_eq!(task.created, Some(at("2026-11-30T10:00:00Z")));
            assert_eq!(task.sample_name, "invoice.docm");
        }
    }

    #[test]
    fn a_record_without_a_task_id_is_skipped_and_the_page_cap_is_counted() {
        let body = r#"[{"TaskState":"created"},{"TaskId":"a"},{"TaskId":"b"},{"TaskId":"c"}]"#;
        let page = decode_task_list(body.as_bytes(), 2).expect("decodes");
        let ids: Vec<&str> = page.tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(page.report.skipped[SkipReason::Unreadable.index()], 1);
        assert_eq!(page.report.skipped[SkipReason::OverLimit.index()], 1);
    }

    #[test]
    fn the_sample_name_falls_back_to_file_name_and_long_text_is_cut() {
        let long = "n".repeat(5000);
        let body = format!(r#"{{"TaskId":"a","FileName":"{long}"}}"#);
        let task = decode_task(body.as_bytes())
            .expect("decodes")
            .expect("a task");
        assert_eq!(task.sample_name.chars().count(), MAX_TEXT_CHARS);
    }

    #[test]
    fn health_checks_decode_from_every_documented_shape() {
        let expected = vec![
            ("ksn_connected".to_owned(), true),
            ("sb_is_dead".to_owned(), false),
        ];
        for body in [
            r#"{"healthy":true,"detailed":[{"name":"sb_is_dead","value":false},{"Name":"KSN connected","Value":"true"}]}"#,
            r#"{"Healthy":true,"detailed":[{"sb_is_dead":false},{"ksn_connected":true}]}"#,
            r#"{"healthy":"true","Detailed":{"sb_is_dead":false,"ksn-connected":1,"junk":"maybe"}}"#,
        ] {
            let health = decode_health(body.as_bytes()).expect("decodes");
            assert_eq!(health.healthy, Some(true), "{body}");
            assert_eq!(health.checks, expected, "{body}");
        }
        assert!(decode_health(b"[1]").is_err());
    }

    #[test]
    fn health_checks_are_bounded_in_number_and_name_length() {
        let items: Vec<String> = (0..500)
            .map(|i| format!(r#"{{"check_{i}_{}":true}}"#, "x".repeat(200)))
            .collect();
        let body = format!(r#"{{"healthy":false,"detailed":[{}]}}"#, items.join(","));
        let health = decode_health(body.as_bytes()).expect("decodes");
        assert_eq!(health.checks.len(), MAX_HEALTH_CHECKS);
        assert!(health.checks.iter().all(|(name, _)| name.len() <= 64));
    }

    #[test]
    fn version_decodes_with_bases_as_a_time_or_empty() {
        let v = decode_version(
            br#"{"system_version":"2.1.0.3000","bases_version":"2026-11-29T22:15:00Z"}"#,
        )
        .expect("decodes");
        assert_eq!(v.system_version, "2.1.0.3000");
        assert_eq!(v.bases_time, Some(at("2026-11-29T22:15:00Z")));
        let empty = decode_version(br#"{"System_Version":3,"bases_version":""}"#).expect("decodes");
        assert_eq!(
            (empty.system_version.as_str(), empty.bases_time),
            ("3", None)
        );
    }
}

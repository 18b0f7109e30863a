//! The console's data as JSON for SOAR scripts (`docs/console.md` has the shapes): the task
//! table (`/api/v1/tasks`, same filters as the overview, `limit` ≤ [`query::MAX_API_LIMIT`]),
//! one task with its files and polls (`/api/v1/tasks/{id}`), and the feed (`/api/v1/events`,
//! `limit` ≤ [`super::MAX_API_EVENTS`]). Strings are escaped by serde_json; times are RFC 3339.

use std::time::SystemTime;

use serde_json::{json, Map, Value};

use super::html::{rfc3339, unix};
use super::query::{self, TaskQuery};
use super::{Console, EventQuery};
use crate::config::{TaskId, TaskSpec};
use crate::journal::{Event, EventKind};
use crate::state::{PollEntry, TaskRow};
use crate::zone::DangerZone;

pub fn tasks(console: &Console, q: &TaskQuery) -> Value {
    let view = console.state.read();
    let selection = query::select(&view, q);
    let rows: Vec<_> = view.tasks().collect();
    let tasks: Vec<Value> = selection
        .rows
        .iter()
        .map(|&i| task_summary(rows[i].0, rows[i].1))
        .collect();
    json!({
        "total": selection.total,
        "offset": q.offset,
        "limit": q.limit,
        "tasks": tasks,
    })
}

pub fn task(console: &Console, (spec, row, polls): &(TaskSpec, TaskRow, Vec<PollEntry>)) -> Value {
    let mut task = task_summary(spec, row);
    let files: Vec<Value> = row
        .snapshot
        .iter()
        .flat_map(|s| &s.details)
        .map(|f| {
            json!({
                "zone": f.zone.as_str(),
                "name": &*f.name,
                "sha256": &*f.sha256,
                "size": f.size,
                "type": &*f.file_type,
                "https": f.https,
                "detections": &*f.detections,
                "rules": &*f.rules,
                "first_seen": rfc3339(unix(f.first_seen)),
            })
        })
        .collect();
    let polls: Vec<Value> = polls
        .iter()
        .rev()
        .map(|p| {
            json!({
                "at": rfc3339(p.at),
                "status": p.status,
                "error": p.error.as_deref(),
                "changed": p.changed,
            })
        })
        .collect();
    if let Value::Object(map) = &mut task {
        map.insert("files".into(), Value::Array(files));
        map.insert("polls".into(), Value::Array(polls));
        map.insert(
            "skipped_records".into(),
            json!(row.snapshot.as_ref().map_or(0, |s| s.skipped_records)),
        );
        map.insert(
            "sandbox_url".into(),
            json!(console.ui_task_url.as_ref().map(|u| u.for_task(&spec.id))),
        );
    }
    task
}

pub fn not_watched(id: Option<&TaskId>) -> Value {
    match id {
        Some(id) => json!({"error": "not watched", "id": id.as_str()}),
        None => json!({"error": "not a task id"}),
    }
}

pub fn events(console: &Console, q: &EventQuery) -> Value {
    let events = q.select(&console.journal);
    let next = (events.len() == q.limit)
        .then(|| events.last().map(|e| e.id))
        .flatten();
    json!({
        "events": events.iter().map(event).collect::<Vec<_>>(),
        "next_before": next,
    })
}

fn task_summary(spec: &TaskSpec, row: &TaskRow) -> Value {
    let zones: Map<String, Value> = DangerZone::ALL
        .iter()
        .map(|z| {
            let n = row.snapshot.as_ref().map_or(0, |s| s.zones[z.index()]);
            (z.as_str().to_owned(), json!(n))
        })
        .collect();
    let time = |t: Option<SystemTime>| t.map(rfc3339);
    json!({
        "id": spec.id.as_str(),
        "name": spec.name,
        "labels": spec.labels.iter().map(|(k, v)| (k.to_owned(), json!(v))).collect::<Map<String, Value>>(),
        "state": row.life.as_ref().map(|l| l.state.as_str()),
        "verdict": row.life.as_ref().map(|l| &*l.verdict),
        "sample_zone": row.life.as_ref().map(|l| l.zone.as_str()),
        "created": time(row.life.as_ref().and_then(|l| l.created)),
        "processed": time(row.life.as_ref().and_then(|l| l.processed)),
        "zones": zones,
        "files_known": row.snapshot.is_some(),
        "poll": super::html::poll_word(row),
        "last_poll": time(row.last_poll),
        "last_success": time(row.last_success),
        "last_status": row.last_status,
        "last_error": row.last_error.as_deref(),
    })
}

fn event(e: &Event) -> Value {
    let mut v = json!({
        "id": e.id,
        "at": rfc3339(unix(e.at)),
        "task": e.task.as_ref().map(TaskId::as_str),
        "kind": e.kind.as_str(),
    });
    let extra = match &e.kind {
        EventKind::NewFile {
            zone,
            sha256,
            name,
            rules,
        } => {
            json!({"zone": zone.as_str(), "sha256": &**sha256, "name": &**name, "rules": &**rules})
        }
        EventKind::ZoneChanged {
            from,
            to,
            sha256,
            name,
        } => {
            json!({"from": from.as_str(), "zone": to.as_str(), "sha256": &**sha256, "name": &**name})
        }
        EventKind::StateChanged { from, to } => {
            json!({"from": from.map(|s| s.as_str()), "to": to.as_str()})
        }
        EventKind::PollFailed { error } => json!({"error": &**error}),
        EventKind::Reloaded { ok, detail } | EventKind::Storage { ok, detail } => {
            json!({"ok": ok, "detail": &**detail})
        }
        EventKind::Paused { reason } => json!({"reason": &**reason}),
        EventKind::PollRecovered | EventKind::Resumed => json!({}),
    };
    if let (Value::Object(map), Value::Object(extra)) = (&mut v, extra) {
        map.extend(extra);
    }
    v
}

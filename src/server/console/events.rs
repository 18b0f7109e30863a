//! The activity feed (`/events`): new files with their rule hits, zone changes, task state
//! changes, polls failing and recovering, reloads, pauses and the store's trouble; newest
//! first, [`super::EVENTS_PAGE`] per page, filtered by zone or task, paged by event id. The
//! journal keeps the events in the store, so a restart does not empty the feed.

use std::collections::{HashMap, HashSet};
use std::fmt::Write;
use std::time::SystemTime;

use super::html::{self, escape, push_escaped, Nav};
use super::{query, Console, EventQuery};
use crate::config::TaskId;
use crate::journal::{Event, EventKind};
use crate::state::View;

pub fn render(console: &Console, q: &EventQuery) -> String {
    let events = q.select(&console.journal);
    let view = console.state.read();
    let names = names(&view, &events);
    let mut out = String::with_capacity(32 * 1024);
    let layout = console.layout("Events", Nav::Events);
    layout.open(&mut out);
    out.push_str("<h1>Recent activity</h1>\n<form class=\"filters\" method=\"get\" action=\"/events\" role=\"search\" aria-label=\"Filter events\">\n<label>Zone <select name=\"zone\" id=\"f-zone\">");
    html::zone_options(&mut out, q.zone);
    out.push_str("</select></label>\n");
    if let Some(task) = &q.task {
        let id = escape(task.as_str());
        let _ = write!(
            out,
            "<input type=\"hidden\" name=\"task\" value=\"{id}\"><span>Task <a href=\"/tasks/{id}\">"
        );
        push_escaped(
            &mut out,
            names.get(task).map_or(task.as_str(), String::as_str),
        );
        out.push_str("</a> (<a href=\"/events\">all tasks</a>)</span>\n");
    }
    out.push_str("<button type=\"submit\">Apply</button> <a href=\"/events\">Clear</a>\n</form>\n<div id=\"live-events\" data-live>\n");
    if q.before.is_none() {
        out.push_str("<p class=\"muted\">Newest first; refreshes on its own.</p>\n");
    }
    list(&mut out, &events, &names, console.now, true);
    if events.len() == q.limit {
        if let Some(last) = events.last() {
            let mut next = url::form_urlencoded::Serializer::new(String::new());
            if let Some(zone) = q.zone {
                next.append_pair("zone", zone.as_str());
            }
            if let Some(task) = &q.task {
                next.append_pair("task", task.as_str());
            }
            next.append_pair("before", &last.id.to_string());
            let _ = writeln!(
                out,
                r#"<nav class="pages" aria-label="Pages"><a href="/events?{}" rel="next" id="older">Older events →</a></nav>"#,
                escape(&next.finish())
            );
        }
    }
    out.push_str("</div>\n");
    layout.close(&mut out);
    out
}

/// The names of the tasks `events` mention, in one pass over the watch list.
pub fn names(view: &View, events: &[Event]) -> HashMap<TaskId, String> {
    let wanted: HashSet<&TaskId> = events.iter().filter_map(|e| e.task.as_ref()).collect();
    if wanted.is_empty() {
        return HashMap::new();
    }
    view.tasks()
        .filter(|(spec, _)| wanted.contains(&spec.id))
        .map(|(spec, _)| (spec.id.clone(), query::label(spec).to_owned()))
        .collect()
}

/// The events as a list, newest first; `with_task` names each event's task.
pub fn list(
    out: &mut String,
    events: &[Event],
    names: &HashMap<TaskId, String>,
    now: SystemTime,
    with_task: bool,
) {
    if events.is_empty() {
        out.push_str("<p class=\"empty\" id=\"no-events\">No events match.</p>\n");
        return;
    }
    out.push_str("<ol class=\"events\" id=\"events\">\n");
    for event in events {
        let _ = write!(
            out,
            r#"<li class="event k-{kind}" data-kind="{kind}" data-id="{}"><span class="when">"#,
            event.id,
            kind = event.kind.as_str()
        );
        html::time_ago(out, Some(html::unix(event.at)), now);
        let _ = write!(
            out,
            r#"</span> <span class="kind">{}</span> "#,
            kind_label(&event.kind)
        );
        if with_task {
            if let Some(task) = &event.task {
                let id = escape(task.as_str());
                let _ = write!(out, r#"<a class="task" href="/tasks/{id}">"#);
                push_escaped(out, names.get(task).map_or(task.as_str(), String::as_str));
                out.push_str("</a> ");
            }
        }
        out.push_str("<span class=\"what\">");
        what(out, &event.kind);
        out.push_str("</span></li>\n");
    }
    out.push_str("</ol>\n");
}

fn kind_label(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::NewFile { .. } => "New file",
        EventKind::ZoneChanged { .. } => "Zone changed",
        EventKind::StateChanged { .. } => "State",
        EventKind::PollFailed { .. } => "Poll failing",
        EventKind::PollRecovered => "Poll recovered",
        EventKind::Reloaded { ok: true, .. } => "Reloaded",
        EventKind::Reloaded { ok: false, .. } => "Reload failed",
        EventKind::Paused { .. } => "Paused",
        EventKind::Resumed => "Resumed",
        EventKind::Storage { ok: true, .. } => "Storage recovered",
        EventKind::Storage { ok: false, .. } => "Storage failing",
    }
}

fn what(out: &mut String, kind: &EventKind) {
    match kind {
        EventKind::NewFile {
            zone,
            sha256,
            name,
            rules,
        } => {
            html::zone_badge(out, *zone, None);
            html::file_and_hash(out, name, sha256);
            if !rules.is_empty() {
                out.push_str(" <span class=\"rules\">YARA: ");
                for (i, rule) in rules.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    let _ = write!(out, "<code>{}</code>", escape(rule));
                }
                out.push_str("</span>");
            }
        }
        EventKind::ZoneChanged {
            from,
            to,
            sha256,
            name,
        } => {
            html::zone_badge(out, *from, None);
            out.push_str(" → ");
            html::zone_badge(out, *to, None);
            html::file_and_hash(out, name, sha256);
        }
        EventKind::StateChanged { from, to } => {
            let _ = write!(
                out,
                "{} → <strong>{}</strong>",
                from.map_or("unknown", |s| s.as_str()),
                to.as_str()
            );
        }
        EventKind::PollFailed { error } => push_escaped(out, error),
        EventKind::PollRecovered => out.push_str("polls answer again"),
        EventKind::Reloaded { detail, .. } | EventKind::Storage { detail, .. } => {
            push_escaped(out, detail)
        }
        EventKind::Paused { reason } => {
            out.push_str("polling paused for every task, reason <code>");
            push_escaped(out, reason);
            out.push_str("</code>");
        }
        EventKind::Resumed => out.push_str("polling resumed"),
    }
}

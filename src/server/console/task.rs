//! One task (`/tasks/{id}`): its parameters and state, every downloaded file (zone, name,
//! size, type, full SHA-256 with a copy button, detections, YARA rules, HTTPS, first seen), its
//! recent polls and its events, with a link to the task in the sandbox's web interface when
//! `sandbox.ui_task_url` is set. An id that is not watched gets [`not_watched`] (404).

use std::collections::HashMap;
use std::fmt::Write;

use super::html::{self, escape, push_escaped, Nav};
use super::{query, Console};
use crate::config::{TaskId, TaskSpec};
use crate::journal::Filter;
use crate::state::{PollEntry, TaskRow, MAX_DETAILS};

/// Events of the task shown on its page; the feed has the rest.
const TASK_EVENTS: usize = 20;

pub fn render(
    console: &Console,
    (spec, row, polls): &(TaskSpec, TaskRow, Vec<PollEntry>),
) -> String {
    let mut out = String::with_capacity(32 * 1024);
    let label = query::label(spec);
    let layout = console.layout(label, Nav::Task);
    layout.open(&mut out);
    let id = escape(spec.id.as_str());
    out.push_str(
        "<p class=\"crumbs\"><a href=\"/\">Overview</a> › task</p>\n<h1 id=\"task-title\">",
    );
    push_escaped(&mut out, label);
    out.push(' ');
    html::state_badge(&mut out, row.life.as_deref());
    out.push_str("</h1>\n<div id=\"live-task\" data-live>\n<section aria-labelledby=\"params-h\"><h2 id=\"params-h\">Parameters and state</h2><dl class=\"params\">\n");
    let _ = write!(
        out,
        "<dt>Task ID</dt><dd><code class=\"hash\" id=\"task-id\">{id}</code> <button type=\"button\" class=\"copy\" data-copy=\"{id}\" aria-label=\"Copy task ID\" hidden>Copy</button>"
    );
    if let Some(template) = &console.ui_task_url {
        let _ = write!(
            out,
            " · <a id=\"sandbox-link\" href=\"{}\" rel=\"noreferrer noopener\" target=\"_blank\">Open in the sandbox</a>",
            escape(&template.for_task(&spec.id))
        );
    }
    out.push_str("</dd>\n");
    if !spec.labels.is_empty() {
        out.push_str("<dt>Labels</dt><dd>");
        for (key, value) in spec.labels.iter() {
            let _ = write!(out, "<code>{}={}</code> ", escape(key), escape(value));
        }
        out.push_str("</dd>\n");
    }
    if let Some(life) = &row.life {
        out.push_str("<dt>Verdict</dt><dd id=\"verdict\">");
        push_escaped(&mut out, &life.verdict);
        out.push_str(" · sample ");
        html::zone_badge(&mut out, life.zone, None);
        out.push_str("</dd>\n<dt>Created</dt><dd>");
        html::time_ago(&mut out, life.created, console.now);
        out.push_str("</dd>\n<dt>Processed</dt><dd>");
        match life.processed {
            Some(_) => html::time_ago(&mut out, life.processed, console.now),
            None if life.state.is_active() => out.push_str("detonating"),
            None => out.push_str("<span class=\"muted\">—</span>"),
        }
        out.push_str("</dd>\n");
    }
    let _ = write!(
        out,
        "<dt>Polling</dt><dd><span class=\"poll p-{w}\">{w}</span>, last poll ",
        w = html::poll_word(row)
    );
    html::time_ago(&mut out, row.last_poll, console.now);
    out.push_str(", last success ");
    html::time_ago(&mut out, row.last_success, console.now);
    if let Some(status) = row.last_status {
        let _ = write!(out, ", HTTP {status}");
    }
    out.push_str("</dd>\n");
    if let Some(error) = &row.last_error {
        out.push_str("<dt>Last error</dt><dd class=\"error\" id=\"last-error\">");
        push_escaped(&mut out, error);
        out.push_str("</dd>\n");
    }
    out.push_str("</dl></section>\n");
    files(&mut out, row, console.now);
    history(&mut out, polls, console.now);
    let events = console.journal.recent(
        &Filter {
            task: Some(spec.id.clone()),
            ..Filter::default()
        },
        TASK_EVENTS,
    );
    let _ = writeln!(
        out,
        "<section aria-labelledby=\"ev-h\"><h2 id=\"ev-h\">Events</h2><p><a href=\"/events?task={id}\">All events of this task</a></p>"
    );
    super::events::list(&mut out, &events, &HashMap::new(), console.now, false);
    out.push_str("</section>\n</div>\n");
    layout.close(&mut out);
    out
}

fn files(out: &mut String, row: &TaskRow, now: std::time::SystemTime) {
    out.push_str("<section aria-labelledby=\"files-h\"><h2 id=\"files-h\">Downloaded files</h2>\n");
    let Some(snap) = &row.snapshot else {
        out.push_str("<p class=\"empty\">No successful poll yet: no files known.</p></section>\n");
        return;
    };
    out.push_str("<p>");
    html::zone_badges(out, &snap.zones);
    let _ = writeln!(
        out,
        " · {} in all, {} over HTTPS</p>",
        html::size(snap.bytes),
        snap.https
    );
    if snap.skipped_records > 0 {
        let _ = writeln!(
            out,
            "<p class=\"warn\"><strong>{} records skipped</strong> (unreadable or over <code>sandbox.max_records</code>)</p>",
            snap.skipped_records
        );
    }
    if snap.details.len() >= MAX_DETAILS {
        let _ = writeln!(
            out,
            "<p class=\"warn\">The {MAX_DETAILS} most dangerous files are listed; the counts above cover all.</p>"
        );
    }
    if snap.details.is_empty() {
        out.push_str("<p class=\"empty\">The task downloaded no files.</p></section>\n");
        return;
    }
    out.push_str("<table class=\"files\" id=\"files\"><thead><tr><th scope=\"col\">Zone</th><th scope=\"col\">File</th><th scope=\"col\">SHA-256</th><th scope=\"col\">Detections</th><th scope=\"col\">YARA rules</th><th scope=\"col\">First seen</th></tr></thead><tbody>\n");
    for file in &snap.details {
        out.push_str("<tr><td data-label=\"Zone\">");
        html::zone_badge(out, file.zone, None);
        out.push_str("</td><td data-label=\"File\"><span class=\"file\">");
        push_escaped(out, &file.name);
        let _ = write!(
            out,
            "</span><br><span class=\"muted\">{}",
            html::size(file.size)
        );
        if !file.file_type.is_empty() {
            out.push_str(" · ");
            push_escaped(out, &file.file_type);
        }
        out.push_str(if file.https { " · HTTPS" } else { " · HTTP" });
        out.push_str("</span></td><td data-label=\"SHA-256\">");
        html::hash_cell(out, &file.sha256);
        out.push_str("</td><td data-label=\"Detections\">");
        names(out, &file.detections, "detection");
        out.push_str("</td><td data-label=\"YARA rules\">");
        names(out, &file.rules, "rule");
        out.push_str("</td><td data-label=\"First seen\">");
        html::time_ago(out, Some(html::unix(file.first_seen)), now);
        out.push_str("</td></tr>\n");
    }
    out.push_str("</tbody></table></section>\n");
}

fn names(out: &mut String, names: &[Box<str>], class: &str) {
    if names.is_empty() {
        out.push_str("<span class=\"muted\">none</span>");
    }
    for name in names {
        let _ = write!(out, "<code class=\"{class}\">{}</code> ", escape(name));
    }
}

fn history(out: &mut String, polls: &[PollEntry], now: std::time::SystemTime) {
    out.push_str("<section aria-labelledby=\"polls-h\"><h2 id=\"polls-h\">Recent polls</h2>\n");
    if polls.is_empty() {
        out.push_str("<p class=\"empty\">Not polled yet.</p></section>\n");
        return;
    }
    out.push_str("<table class=\"polls\" id=\"polls\"><thead><tr><th scope=\"col\">When</th><th scope=\"col\">HTTP</th><th scope=\"col\">Result</th></tr></thead><tbody>\n");
    for poll in polls.iter().rev() {
        out.push_str("<tr><td data-label=\"When\">");
        html::time_ago(out, Some(poll.at), now);
        out.push_str("</td><td data-label=\"HTTP\">");
        match poll.status {
            Some(status) => {
                let _ = write!(out, "{status}");
            }
            None => out.push_str("<span class=\"muted\">no answer</span>"),
        }
        out.push_str("</td><td data-label=\"Result\">");
        match &poll.error {
            Some(error) => {
                out.push_str("<span class=\"bad\">failed</span>: ");
                push_escaped(out, error);
            }
            None if poll.changed => {
                out.push_str("<span class=\"good\">ok</span>, downloads changed")
            }
            None => out.push_str("<span class=\"good\">ok</span>, unchanged"),
        }
        out.push_str("</td></tr>\n");
    }
    out.push_str("</tbody></table></section>\n");
}

/// The answer for an id that is not watched (or not a GUID at all).
pub fn not_watched(console: &Console, id: Option<&TaskId>) -> String {
    let mut out = String::with_capacity(2048);
    let layout = console.layout("Task not watched", Nav::Task);
    layout.open(&mut out);
    out.push_str("<h1 id=\"not-watched\">Task not watched</h1>\n<p>");
    match id {
        Some(id) => {
            let _ = write!(
                out,
                "This exporter does not watch task <code>{}</code>. It may have left the watch list (a reload, or discovery aging it out), or belong to another shard.",
                escape(id.as_str())
            );
        }
        None => out.push_str("That is not a task id: task ids are GUIDs such as <code>0d5b4e44-4c0e-4f0b-9a57-3f2d1b9e6c71</code>."),
    }
    out.push_str("</p>\n<p><a href=\"/\">Back to the overview</a></p>\n");
    layout.close(&mut out);
    out
}

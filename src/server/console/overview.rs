//! The overview (`/`): what matters first (Red tasks, detonations in flight, new files, the
//! appliance, polling, discovery, the last reload, the store), the day's new files per hour,
//! then the task table.
//!
//! The summary is one pass over the view; the table is [`query::select`]'s window, so the page
//! stays the same size at 100k tasks. The filter form is a plain GET form outside the live
//! regions console.js swaps, so a refresh never touches what the analyst is typing.

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use super::html::{self, escape, push_escaped, Nav};
use super::query::{self, Sort, StateFilter, TaskQuery};
use super::{chart, Console, Status};
use crate::journal::{EventKind, Filter, Journal};
use crate::state::View;
use crate::zone::DangerZone;

/// Red tasks named in the summary card; the rest are one click away (`?zone=Red`).
pub const MAX_RED_LISTED: usize = 10;

/// Events read per step while counting the last hour's new files.
const HOUR_SCAN_STEP: usize = 500;

/// The summary's counts, from one pass over the view.
#[derive(Debug, Default, PartialEq)]
pub struct Summary {
    pub tasks: usize,
    pub red_tasks: usize,
    /// The first [`MAX_RED_LISTED`] Red tasks: (id, label, Red files).
    pub red_listed: Vec<(String, String, u64)>,
    pub active: usize,
    pub failing: usize,
    pub pending: usize,
    /// Files per zone across the fleet.
    pub files: [u64; 6],
}

impl Summary {
    pub fn of(view: &View) -> Summary {
        let mut s = Summary::default();
        for (spec, row) in view.tasks() {
            s.tasks += 1;
            if let Some(snap) = &row.snapshot {
                for (total, n) in s.files.iter_mut().zip(snap.zones) {
                    *total += n;
                }
                let red = snap.zones[DangerZone::Red.index()];
                if red > 0 {
                    s.red_tasks += 1;
                    if s.red_listed.len() < MAX_RED_LISTED {
                        s.red_listed.push((
                            spec.id.as_str().to_owned(),
                            query::label(spec).to_owned(),
                            red,
                        ));
                    }
                }
            }
            if row.life.as_ref().is_some_and(|l| l.state.is_active()) {
                s.active += 1;
            }
            match (row.last_poll, row.up) {
                (None, _) => s.pending += 1,
                (Some(_), false) => s.failing += 1,
                _ => {}
            }
        }
        s
    }
}

/// New files (per zone) the feed recorded in the hour before `now`.
pub fn last_hour(journal: &Journal, now: SystemTime) -> [u64; 6] {
    let since = html_secs(now).saturating_sub(3600);
    let mut files = [0u64; 6];
    let mut before = None;
    loop {
        let batch = journal.recent(
            &Filter {
                before,
                ..Filter::default()
            },
            HOUR_SCAN_STEP,
        );
        let Some(last) = batch.last() else { break };
        before = Some(last.id);
        let done = last.at < since || batch.len() < HOUR_SCAN_STEP;
        for event in batch.iter().filter(|e| e.at >= since) {
            if let EventKind::NewFile { zone, .. } = &event.kind {
                files[zone.index()] += 1;
            }
        }
        if done {
            break;
        }
    }
    files
}

fn html_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

pub fn render(console: &Console, q: &TaskQuery) -> String {
    let view = console.state.read();
    let summary = Summary::of(&view);
    let mut out = String::with_capacity(64 * 1024);
    let layout = console.layout("Overview", Nav::Overview);
    layout.open(&mut out);
    out.push_str("<h1>Triage overview</h1>\n<div id=\"live-summary\" data-live>\n");
    cards(
        &mut out,
        &summary,
        &last_hour(&console.journal, console.now),
    );
    status(&mut out, &console.status, console.now);
    out.push_str("<section aria-labelledby=\"chart-h\"><h2 id=\"chart-h\">New files per hour, last 24 h</h2>\n");
    chart::new_files(&mut out, &console.journal.hourly(console.now));
    out.push_str("</section>\n</div>\n");
    filter_form(&mut out, q);
    out.push_str("<div id=\"live-tasks\" data-live>\n");
    table(&mut out, console, &view, q);
    out.push_str("</div>\n");
    layout.close(&mut out);
    out
}

fn cards(out: &mut String, s: &Summary, hour: &[u64; 6]) {
    out.push_str("<section class=\"cards\" aria-label=\"Summary\">\n");
    let red_class = if s.red_tasks > 0 { " alert" } else { "" };
    let _ = write!(
        out,
        r#"<div class="card{red_class}" id="card-red"><h2>Tasks with Red files</h2><p class="big"><a href="/?zone=Red" id="red-count">{}</a></p>"#,
        s.red_tasks
    );
    if !s.red_listed.is_empty() {
        out.push_str("<ul class=\"red-list\">");
        for (id, label, red) in &s.red_listed {
            let _ = write!(out, r#"<li><a href="/tasks/{}">"#, escape(id));
            push_escaped(out, label);
            out.push_str("</a> ");
            html::zone_badge(out, DangerZone::Red, Some(*red));
            out.push_str("</li>");
        }
        if s.red_tasks > s.red_listed.len() {
            let _ = write!(
                out,
                r#"<li><a href="/?zone=Red">all {} Red tasks</a></li>"#,
                s.red_tasks
            );
        }
        out.push_str("</ul>");
    }
    out.push_str("</div>\n");
    let _ = writeln!(
        out,
        r#"<div class="card" id="card-active"><h2>Detonations in flight</h2><p class="big"><a href="/?state=active">{}</a></p><p class="muted">uploading, created or processing</p></div>"#,
        s.active
    );
    let new: u64 = hour.iter().sum();
    let _ = write!(
        out,
        r#"<div class="card" id="card-new"><h2>New files, last hour</h2><p class="big"><a href="/events">{new}</a></p><p>"#
    );
    html::zone_badges(out, hour);
    out.push_str("</p></div>\n");
    let fail_class = if s.failing > 0 { " warn" } else { "" };
    let _ = write!(
        out,
        r#"<div class="card{fail_class}" id="card-polls"><h2>Watched tasks</h2><p class="big">{}</p><p><a href="/?state=failing">{} failing</a> · <a href="/?state=pending">{} not yet polled</a></p></div>
</section>
"#,
        s.tasks, s.failing, s.pending
    );
}

fn status(out: &mut String, status: &Status, now: SystemTime) {
    out.push_str("<section aria-labelledby=\"status-h\"><h2 id=\"status-h\">Exporter and sandbox</h2><dl class=\"status\">\n");
    // The appliance.
    out.push_str("<dt>Sandbox</dt><dd id=\"st-sandbox\">");
    let s = &status.sandbox;
    match (s.up, s.healthy) {
        (None, _) => out.push_str("<span class=\"muted\">health checks off or not yet run</span>"),
        (Some(false), _) => out.push_str(
            "<span class=\"bad\">unreachable</span> (the latest health check got no usable answer)",
        ),
        (Some(true), Some(false)) => out.push_str("<span class=\"bad\">unhealthy</span>"),
        (Some(true), _) if !s.failing_checks.is_empty() => {
            out.push_str("<span class=\"bad\">checks failing</span>")
        }
        (Some(true), _) => out.push_str("<span class=\"good\">healthy</span>"),
    }
    if !s.failing_checks.is_empty() {
        out.push_str(": ");
        for (i, check) in s.failing_checks.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            let _ = write!(out, "<code>{}</code>", escape(check));
        }
    }
    if let Some([system, bases]) = &s.version {
        let _ = write!(
            out,
            " · version {} · bases {}",
            escape(system),
            escape(bases)
        );
    }
    out.push_str("</dd>\n");
    // The pause, as krs_api_paused says it.
    out.push_str("<dt>Polling</dt><dd id=\"polling\">");
    pause_line(out, status.pause, now);
    out.push_str("</dd>\n<dt>Discovery</dt><dd id=\"st-discovery\">");
    let d = &status.discovery;
    match d.interval {
        None => out.push_str("off"),
        Some(interval) => {
            let _ = write!(
                out,
                "on (every {}), {} tasks discovered",
                humantime::format_duration(interval),
                d.tasks
            );
            if d.truncated > 0 {
                let _ = write!(
                    out,
                    ", <span class=\"bad\">{} left out by discovery.max_tasks</span>",
                    d.truncated
                );
            }
            out.push_str(", last complete read ");
            html::time_ago(out, d.last_success, now);
        }
    }
    out.push_str("</dd>\n<dt>Last reload</dt><dd id=\"st-reload\">");
    match &status.reload {
        None => out.push_str("<span class=\"muted\">none</span>"),
        Some(r) => {
            out.push_str(if r.ok {
                "<span class=\"good\">succeeded</span> "
            } else {
                "<span class=\"bad\">failed; the previous configuration stays active</span> "
            });
            html::time_ago(out, Some(r.at), now);
            if let Some(problems) = &r.problems {
                let _ = write!(out, "<pre class=\"problems\">{}</pre>", escape(problems));
            }
        }
    }
    out.push_str("</dd>\n<dt>Storage</dt><dd id=\"st-storage\">");
    let st = &status.storage;
    match &st.path {
        None => {
            out.push_str("in memory (<code>--storage.path</code> empty): a restart starts afresh")
        }
        Some(path) => {
            let _ = write!(
                out,
                "<code>{}</code>, {}, {} writes, last ",
                escape(&path.to_string_lossy()),
                html::size(st.size_bytes),
                st.writes
            );
            html::time_ago(out, st.last_write, now);
        }
    }
    if let Some((since, why)) = &st.failing {
        out.push_str(" · <span class=\"bad\">writes failing</span> since ");
        html::time_ago(out, Some(*since), now);
        let _ = write!(out, ": {}", escape(why));
    }
    if let Some((aside, why)) = &st.moved_aside {
        let _ = write!(
            out,
            " · a damaged file was moved to <code>{}</code> at start ({})",
            escape(&aside.to_string_lossy()),
            escape(why)
        );
    }
    out.push_str("</dd>\n</dl></section>\n");
}

/// `krs_api_paused` in words: running, or paused for every task (why, and the next probe).
pub fn pause_line(
    out: &mut String,
    pause: Option<(crate::sandbox::PauseReason, SystemTime)>,
    now: SystemTime,
) {
    match pause {
        None => out.push_str("<span class=\"good\">running</span>"),
        Some((reason, until)) => {
            let left = until.duration_since(now).unwrap_or(Duration::ZERO);
            let _ = write!(
                out,
                "<strong class=\"bad\">Polling paused for every task</strong> (reason <code>{}</code>: {}); \
                 one probe is sent at {} (in {} s), the rest wait for its answer",
                reason.as_str(),
                escape(reason.describe()),
                html::rfc3339(until),
                left.as_secs(),
            );
        }
    }
}

fn filter_form(out: &mut String, q: &TaskQuery) {
    out.push_str(
        "<h2 id=\"tasks-h\">Tasks</h2>\n<form class=\"filters\" method=\"get\" action=\"/\" role=\"search\" aria-label=\"Filter tasks\">\n<label>Zone <select name=\"zone\" id=\"f-zone\">",
    );
    html::zone_options(out, q.zone);
    out.push_str("</select></label>\n<label>State <select name=\"state\" id=\"f-state\"><option value=\"\">any</option>");
    for state in StateFilter::choices() {
        let selected = if q.state == Some(state) {
            " selected"
        } else {
            ""
        };
        let _ = write!(out, "<option{selected}>{}</option>", state.as_str());
    }
    let _ = write!(
        out,
        "</select></label>\n<label>Text <input type=\"search\" name=\"q\" id=\"f-q\" value=\"{}\" placeholder=\"name, id, verdict, error\"></label>\n<label>Sort <select name=\"sort\" id=\"f-sort\">",
        escape(&q.text)
    );
    for sort in Sort::ALL {
        let selected = if q.sort == sort { " selected" } else { "" };
        let _ = write!(out, "<option{selected}>{}</option>", sort.as_str());
    }
    out.push_str("</select></label>\n<label>Order <select name=\"dir\" id=\"f-dir\">");
    for (value, desc) in [("desc", true), ("asc", false)] {
        let selected = if q.desc == desc { " selected" } else { "" };
        let _ = write!(out, "<option{selected}>{value}</option>");
    }
    out.push_str("</select></label>\n<button type=\"submit\">Apply</button> <a href=\"/\">Clear</a>\n</form>\n");
}

fn table(out: &mut String, console: &Console, view: &View, q: &TaskQuery) {
    let selection = query::select(view, q);
    let rows: Vec<_> = view.tasks().collect();
    let first = if selection.rows.is_empty() {
        0
    } else {
        q.offset + 1
    };
    let _ = writeln!(
        out,
        r#"<p class="count" id="task-count" data-total="{total}">Showing {first}–{last} of {total} matching tasks ({all} watched)</p>"#,
        total = selection.total,
        last = q.offset + selection.rows.len(),
        all = rows.len(),
    );
    if selection.rows.is_empty() {
        out.push_str("<p class=\"empty\">No task matches this filter.</p>\n");
        return;
    }
    out.push_str("<table class=\"tasks\" id=\"tasks\"><thead><tr>");
    for (sort, label) in [
        (Sort::Name, "Task"),
        (Sort::State, "State"),
        (Sort::Verdict, "Verdict"),
        (Sort::Danger, "Files by zone"),
        (Sort::LastPoll, "Last poll"),
        (Sort::Error, "Last error"),
    ] {
        let active = q.sort == sort;
        let desc = if active { !q.desc } else { sort.natural_desc() };
        let aria = match (active, q.desc) {
            (false, _) => String::new(),
            (true, true) => " aria-sort=\"descending\"".into(),
            (true, false) => " aria-sort=\"ascending\"".into(),
        };
        let arrow = match (active, q.desc) {
            (false, _) => "",
            (true, true) => " ▼",
            (true, false) => " ▲",
        };
        let _ = write!(
            out,
            r#"<th scope="col"{aria}><a href="/?{}" data-sort="{}">{label}{arrow}</a></th>"#,
            escape(&q.to_query(sort, desc, 1)),
            sort.as_str()
        );
    }
    out.push_str("</tr></thead><tbody>\n");
    for &i in &selection.rows {
        let (spec, row) = rows[i];
        let id = escape(spec.id.as_str());
        let _ = write!(
            out,
            r#"<tr data-task="{id}"><td data-label="Task"><a href="/tasks/{id}" class="task-name">"#
        );
        push_escaped(out, query::label(spec));
        let _ = write!(
            out,
            "</a><br><code class=\"id\">{id}</code></td><td data-label=\"State\">"
        );
        html::state_badge(out, row.life.as_deref());
        out.push_str("</td><td data-label=\"Verdict\">");
        match &row.life {
            Some(life) => push_escaped(out, &life.verdict),
            None => out.push_str("<span class=\"muted\">—</span>"),
        }
        out.push_str("</td><td data-label=\"Files\">");
        match &row.snapshot {
            Some(snap) => html::zone_badges(out, &snap.zones),
            None => out.push_str("<span class=\"muted\">not yet read</span>"),
        }
        let _ = write!(
            out,
            "</td><td data-label=\"Last poll\"><span class=\"poll p-{word}\">{word}</span> ",
            word = html::poll_word(row)
        );
        if row.last_poll.is_some() {
            html::time_ago(out, row.last_poll, console.now);
        }
        out.push_str("</td><td data-label=\"Last error\" class=\"error\">");
        if let Some(error) = &row.last_error {
            push_escaped(out, error);
        }
        out.push_str("</td></tr>\n");
    }
    out.push_str("</tbody></table>\n");
    pagination(out, q, selection.total);
}

fn pagination(out: &mut String, q: &TaskQuery, total: usize) {
    let pages = total.div_ceil(query::PAGE_SIZE).max(1);
    let page = q.page();
    if pages == 1 {
        return;
    }
    out.push_str("<nav class=\"pages\" aria-label=\"Pages\">");
    if page > 1 {
        let _ = write!(
            out,
            r#"<a href="/?{}" rel="prev">← Previous</a> "#,
            escape(&q.to_query(q.sort, q.desc, page - 1))
        );
    }
    let _ = write!(out, "<span>Page {page} of {pages}</span>");
    if page < pages {
        let _ = write!(
            out,
            r#" <a href="/?{}" rel="next" id="next-page">Next →</a>"#,
            escape(&q.to_query(q.sort, q.desc, page + 1))
        );
    }
    out.push_str("</nav>\n");
}

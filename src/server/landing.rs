//! The landing page: what an operator sees when they open the exporter in a browser. It leads
//! with the state of polling: running, or paused for the whole fleet (why, and until when).
//!
//! Every value shown passes through [`escape`]; file names and rule names come from malware.
//! The page carries no script and is served with a CSP that forbids any.

use std::fmt::Write;
use std::sync::Arc;
use std::time::SystemTime;

use super::Routes;
use crate::sandbox::PauseReason;
use crate::state::{State, TaskRow};
use crate::zone::DangerZone;

/// YARA rules and files listed per task on the page (the metrics carry all of them).
const MAX_RULES_SHOWN: usize = 8;
const MAX_FILES_SHOWN: usize = 5;

/// What the page shows, detached from the request so it can render on a blocking thread.
pub struct Page {
    state: Arc<State>,
    telemetry_path: String,
    banner: Option<String>,
    pause: Option<(PauseReason, SystemTime)>,
}

impl From<&Routes> for Page {
    fn from(routes: &Routes) -> Self {
        Page {
            state: Arc::clone(&routes.state),
            telemetry_path: routes.telemetry_path.clone(),
            banner: routes.banner.clone(),
            pause: routes.metrics.appliance.pause(),
        }
    }
}

impl Page {
    pub fn render(&self) -> String {
        render(self)
    }
}

fn render(routes: &Page) -> String {
    let mut page = String::with_capacity(8 * 1024);
    let path = escape(&routes.telemetry_path);
    let _ = write!(
        page,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>KRS Exporter</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}}.down{{color:#b00}}.up{{color:#070}}.red{{color:#b00;font-weight:bold}}</style>
</head><body>
<h1>KRS Exporter</h1>
<p>Prometheus exporter for Kaspersky Research Sandbox, version {version}.</p>
"#,
        version = escape(env!("CARGO_PKG_VERSION")),
    );
    if let Some(banner) = &routes.banner {
        let _ = writeln!(page, "<p><strong>{}</strong></p>", escape(banner));
    }
    let _ = writeln!(
        page,
        r#"<ul><li><a href="{path}">Metrics</a></li><li><a href="/-/healthy">Health</a></li><li><a href="/-/ready">Readiness</a></li></ul>"#
    );
    page.push_str(&pause_line(routes.pause, SystemTime::now()));
    let view = routes.state.read();
    let _ = writeln!(
        page,
        "<h2>Watched tasks ({})</h2>",
        view.watch_list().tasks.len()
    );
    page.push_str("<table><thead><tr><th>Task ID</th><th>Name</th><th>State</th><th>Last poll</th><th>HTTP status</th>");
    for zone in DangerZone::ALL {
        let _ = write!(page, "<th>{}</th>", zone.as_str());
    }
    page.push_str(
        "<th>YARA matches</th><th>Files of note</th><th>Last error</th></tr></thead><tbody>\n",
    );
    for (spec, task) in view.tasks() {
        let _ = write!(
            page,
            "<tr><td><code>{}</code></td><td>{}</td>{}<td>{}</td><td>{}</td>",
            escape(spec.id.as_str()),
            escape(&spec.name),
            state_cell(task),
            task.last_poll.map(timestamp).unwrap_or_default(),
            if task.last_poll.is_some() {
                task.last_status.unwrap_or(0).to_string()
            } else {
                String::new()
            },
        );
        for zone in DangerZone::ALL {
            let n = task.snapshot.as_ref().map(|s| s.zones[zone.index()]);
            let class = if zone == DangerZone::Red && n.unwrap_or(0) > 0 {
                " class=\"red\""
            } else {
                ""
            };
            let _ = write!(
                page,
                "<td{class}>{}</td>",
                n.map(|n| n.to_string()).unwrap_or_default()
            );
        }
        page.push_str("<td>");
        if let Some(snap) = &task.snapshot {
            for (i, (rule, n)) in snap.yara.iter().enumerate() {
                if i == MAX_RULES_SHOWN {
                    let _ = write!(page, "… and {} more", snap.yara.len() - MAX_RULES_SHOWN);
                    break;
                }
                let _ = write!(page, "{} ({n})<br>", escape(rule));
            }
        }
        page.push_str("</td><td>");
        if let Some(snap) = &task.snapshot {
            for (i, file) in snap.files.iter().enumerate() {
                if i == MAX_FILES_SHOWN {
                    let _ = write!(page, "… and {} more", snap.files.len() - MAX_FILES_SHOWN);
                    break;
                }
                let _ = write!(
                    page,
                    "{}: {} <code>{}</code><br>",
                    file.zone.as_str(),
                    escape(&file.name),
                    escape(&file.sha256)
                );
            }
            if snap.files_dropped > 0 {
                let _ = write!(
                    page,
                    "{} more without an info series (cap)<br>",
                    snap.files_dropped
                );
            }
            if snap.skipped_records > 0 {
                let _ = write!(
                    page,
                    "<strong>{} records skipped</strong> (unreadable or over the cap)<br>",
                    snap.skipped_records
                );
            }
        }
        let _ = writeln!(
            page,
            "</td><td>{}</td></tr>",
            escape(task.last_error.as_deref().unwrap_or(""))
        );
    }
    page.push_str("</tbody></table>\n</body></html>\n");
    page
}

/// One paragraph on the fleet-wide pause: `krs_api_paused` in words.
fn pause_line(pause: Option<(PauseReason, SystemTime)>, now: SystemTime) -> String {
    match pause {
        None => "<p id=\"polling\" class=\"up\">Polling: running.</p>\n".to_string(),
        Some((reason, until)) => {
            let left = until.duration_since(now).unwrap_or_default();
            format!(
                "<p id=\"polling\" class=\"down\"><strong>Polling paused for every task</strong> \
                 (reason <code>{}</code>: {}). One probe is sent after {} (in {} s); \
                 the rest wait for its answer.</p>\n",
                reason.as_str(),
                escape(reason.describe()),
                timestamp(until),
                left.as_secs(),
            )
        }
    }
}

fn state_cell(task: &TaskRow) -> &'static str {
    match (task.last_poll, task.up) {
        (None, _) => "<td>pending</td>",
        (Some(_), true) => "<td class=\"up\">up</td>",
        (Some(_), false) => "<td class=\"down\">down</td>",
    }
}

fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_pause_line_names_the_reason_and_the_next_probe() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert!(pause_line(None, now).contains("Polling: running."));
        let held = pause_line(
            Some((PauseReason::RetryAfter, now + Duration::from_secs(120))),
            now,
        );
        assert!(held.contains("Polling paused for every task"), "{held}");
        assert!(held.contains("<code>retry_after</code>"), "{held}");
        assert!(held.contains("(in 120 s)"), "{held}");
    }

    #[test]
    fn markup_in_values_is_escaped() {
        assert_eq!(
            escape(r#"<script>alert("x")</script>&'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"
        );
    }
}

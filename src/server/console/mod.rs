//! The analysts' triage console: server-rendered pages over the state and the activity feed,
//! and the same data as JSON for SOAR scripts.
//!
//! | route | answer |
//! |---|---|
//! | `GET /` | overview: Red tasks, detonations, new files, appliance, discovery, reload and store state; new files per hour (SVG); the task table, filtered, sorted and paged server-side |
//! | `GET /tasks/{id}` | one task: parameters, every file with its full SHA-256, poll history, its events; 404 "not watched" |
//! | `GET /events` | the activity feed, newest first, by zone or task, paged by `before` |
//! | `GET /api/v1/tasks`, `/api/v1/tasks/{id}`, `/api/v1/events` | the same as JSON (`docs/console.md`) |
//! | `GET /static/console.css`, `/static/console.js` | the assets, compiled in |
//!
//! Pages render on a blocking thread, one at a time (`Routes::page_renders`), and count against
//! the non-scrape request budget, so no amount of page views takes a scrape's slot. Each page
//! is bounded whatever the fleet: at most [`query::PAGE_SIZE`] table rows or events, the first
//! [`overview::MAX_RED_LISTED`] Red tasks, a task's files as the state caps them.
//!
//! Every string from the sandbox is escaped ([`html::escape`]) and every answer carries
//! [`CSP`]: no inline script or style, scripts and styles only from this origin. console.js only
//! refreshes the live region, copies hashes and remembers the refresh toggle; without it every
//! page is complete.

pub mod api;
pub mod chart;
pub mod events;
pub mod html;
pub mod overview;
pub mod query;
pub mod task;

use std::sync::Arc;
use std::time::SystemTime;

use hyper::StatusCode;

use crate::config::{TaskId, UiTaskUrl};
use crate::journal::Journal;
use crate::metrics::discovery::DiscoveryStatus;
use crate::metrics::registry::ReloadStatus;
use crate::metrics::sandbox::SandboxStatus;
use crate::sandbox::PauseReason;
use crate::state::State;
use crate::zone::DangerZone;

/// Sent with every console answer: whatever slipped through escaping could not run.
pub const CSP: &str =
    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The stylesheet and the script, compiled in.
pub const ASSETS: [(&str, &str, &str); 2] = [
    (
        "/static/console.css",
        "text/css; charset=utf-8",
        include_str!("assets/console.css"),
    ),
    (
        "/static/console.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/console.js"),
    ),
];

/// Events per feed page, and per JSON answer by default.
pub const EVENTS_PAGE: usize = 100;

/// `limit` of `/api/v1/events` at most.
pub const MAX_API_EVENTS: usize = 1000;

/// What the pages read, detached from the request so they render on a blocking thread.
pub struct Console {
    pub state: Arc<State>,
    pub journal: Arc<Journal>,
    pub status: Status,
    pub banner: Option<String>,
    pub telemetry_path: String,
    pub ui_task_url: Option<UiTaskUrl>,
    /// The time the page is rendered for.
    pub now: SystemTime,
}

/// The exporter's own state as the overview leads with it.
#[derive(Clone, Debug, Default)]
pub struct Status {
    pub pause: Option<(PauseReason, SystemTime)>,
    pub sandbox: SandboxStatus,
    pub discovery: DiscoveryStatus,
    pub reload: Option<ReloadStatus>,
    pub storage: crate::store::Status,
}

/// A console request, parsed from its path and query.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    Overview(query::TaskQuery),
    /// `None`: the id is not a GUID (so not watched either).
    Task(Option<TaskId>),
    Events(EventQuery),
    ApiTasks(query::TaskQuery),
    ApiTask(Option<TaskId>),
    ApiEvents(EventQuery),
}

/// The feed's filter and window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventQuery {
    pub zone: Option<DangerZone>,
    pub task: Option<TaskId>,
    /// Events older than this id (the next page).
    pub before: Option<u64>,
    pub limit: usize,
}

/// A rendered answer.
pub struct Answer {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: String,
}

impl Request {
    /// The console request for `path`, or `None` when the path is not the console's.
    pub fn parse(path: &str, query: &str) -> Option<Request> {
        let task_id = |id: &str| TaskId::parse(id).ok();
        Some(match path {
            "/" => Request::Overview(query::TaskQuery::from_page_query(query)),
            "/events" => Request::Events(EventQuery::parse(query, EVENTS_PAGE)),
            "/api/v1/tasks" => Request::ApiTasks(query::TaskQuery::from_api_query(query)),
            "/api/v1/events" => Request::ApiEvents(EventQuery::parse(query, MAX_API_EVENTS)),
            _ => {
                if let Some(id) = path.strip_prefix("/api/v1/tasks/") {
                    Request::ApiTask(task_id(id))
                } else if let Some(id) = path.strip_prefix("/tasks/") {
                    Request::Task(task_id(id))
                } else {
                    return None;
                }
            }
        })
    }
}

impl EventQuery {
    /// Reads `zone`, `task`, `before` and `limit` (at most `max`, [`EVENTS_PAGE`] by default).
    fn parse(q: &str, max: usize) -> EventQuery {
        EventQuery {
            zone: query::param(q, "zone").and_then(|z| DangerZone::parse_strict(&z)),
            task: query::param(q, "task").and_then(|t| TaskId::parse(&t).ok()),
            before: query::param(q, "before").and_then(|b| b.parse().ok()),
            limit: query::param(q, "limit")
                .and_then(|l| l.parse::<usize>().ok())
                .unwrap_or(EVENTS_PAGE)
                .clamp(1, max),
        }
    }

    /// The events this query selects, newest first.
    pub fn select(&self, journal: &Journal) -> Vec<crate::journal::Event> {
        journal.recent(
            &crate::journal::Filter {
                zone: self.zone,
                task: self.task.clone(),
                before: self.before,
            },
            self.limit,
        )
    }
}

impl Console {
    /// The layout of a page titled `title`.
    pub fn layout<'a>(&'a self, title: &'a str, nav: html::Nav) -> html::Layout<'a> {
        html::Layout {
            title,
            nav,
            banner: self.banner.as_deref(),
            telemetry_path: &self.telemetry_path,
        }
    }

    /// Renders one request.
    pub fn render(&self, request: &Request) -> Answer {
        match request {
            Request::Overview(q) => page(StatusCode::OK, overview::render(self, q)),
            Request::Task(id) => match id.as_ref().and_then(|id| self.state.task(id)) {
                Some(found) => page(StatusCode::OK, task::render(self, &found)),
                None => page(StatusCode::NOT_FOUND, task::not_watched(self, id.as_ref())),
            },
            Request::Events(q) => page(StatusCode::OK, events::render(self, q)),
            Request::ApiTasks(q) => json(StatusCode::OK, api::tasks(self, q)),
            Request::ApiTask(id) => match id.as_ref().and_then(|id| self.state.task(id)) {
                Some(found) => json(StatusCode::OK, api::task(self, &found)),
                None => json(StatusCode::NOT_FOUND, api::not_watched(id.as_ref())),
            },
            Request::ApiEvents(q) => json(StatusCode::OK, api::events(self, q)),
        }
    }
}

fn page(status: StatusCode, body: String) -> Answer {
    Answer {
        status,
        content_type: "text/html; charset=utf-8",
        body,
    }
}

fn json(status: StatusCode, value: serde_json::Value) -> Answer {
    let mut body = value.to_string();
    body.push('\n');
    Answer {
        status,
        content_type: "application/json",
        body,
    }
}

#[cfg(test)]
mod tests;

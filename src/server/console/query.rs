//! The task table's query: which tasks (zone, state, text), in which order, which page. The
//! overview and `/api/v1/tasks` read the same parameters and share [`select`].
//!
//! Bounded at any fleet size: one pass filters the view into a vector of indices, a partial
//! select (O(n)) brings the rows up to the window's end to the front, only those are sorted
//! (O(k log k)), and only the window's rows are rendered. The numbers at 100k tasks are in
//! `BENCHMARKS.md` (section "Console").

use crate::sandbox::decode::lifecycle::TaskState;
use crate::state::{TaskRow, View};
use crate::zone::DangerZone;

/// Rows per overview page.
pub const PAGE_SIZE: usize = 100;

/// `limit` of the JSON API at most.
pub const MAX_API_LIMIT: usize = 1000;

/// The free-text filter is cut to this many characters.
const MAX_TEXT: usize = 200;

/// A state the table filters on: a lifecycle state, or how polling goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateFilter {
    Life(TaskState),
    /// Polls of the task are failing now.
    Failing,
    /// Never polled yet.
    Pending,
    /// Uploading, created or processing.
    Active,
}

impl StateFilter {
    /// Every choice of the state filter, as the form lists them.
    pub fn choices() -> impl Iterator<Item = StateFilter> {
        [
            StateFilter::Active,
            StateFilter::Failing,
            StateFilter::Pending,
        ]
        .into_iter()
        .chain(TaskState::ALL.into_iter().map(StateFilter::Life))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StateFilter::Life(state) => state.as_str(),
            StateFilter::Failing => "failing",
            StateFilter::Pending => "pending",
            StateFilter::Active => "active",
        }
    }

    fn parse(s: &str) -> Option<StateFilter> {
        StateFilter::choices().find(|c| c.as_str() == s)
    }

    fn matches(self, row: &TaskRow) -> bool {
        match self {
            StateFilter::Life(state) => row.life.as_ref().is_some_and(|l| l.state == state),
            StateFilter::Failing => row.last_poll.is_some() && !row.up,
            StateFilter::Pending => row.last_poll.is_none(),
            StateFilter::Active => row.life.as_ref().is_some_and(|l| l.state.is_active()),
        }
    }
}

/// The columns the table sorts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sort {
    /// Most dangerous first: Red files, then Orange, …; the default.
    Danger,
    Name,
    State,
    Verdict,
    Files,
    LastPoll,
    Error,
}

impl Sort {
    pub const ALL: [Sort; 7] = [
        Sort::Danger,
        Sort::Name,
        Sort::State,
        Sort::Verdict,
        Sort::Files,
        Sort::LastPoll,
        Sort::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Sort::Danger => "danger",
            Sort::Name => "name",
            Sort::State => "state",
            Sort::Verdict => "verdict",
            Sort::Files => "files",
            Sort::LastPoll => "last_poll",
            Sort::Error => "error",
        }
    }

    /// The direction a first click on the column sorts in.
    pub fn natural_desc(self) -> bool {
        matches!(self, Sort::Danger | Sort::Files | Sort::LastPoll)
    }
}

/// One request's filter, order and window.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskQuery {
    pub zone: Option<DangerZone>,
    pub state: Option<StateFilter>,
    /// Lowercased; matched against name, id, verdict, error and labels.
    pub text: String,
    pub sort: Sort,
    pub desc: bool,
    /// First row shown (0-based).
    pub offset: usize,
    pub limit: usize,
}

impl Default for TaskQuery {
    fn default() -> Self {
        TaskQuery {
            zone: None,
            state: None,
            text: String::new(),
            sort: Sort::Danger,
            desc: true,
            offset: 0,
            limit: PAGE_SIZE,
        }
    }
}

/// The rows one query selects.
pub struct Selection {
    /// Matching tasks in all.
    pub total: usize,
    /// Indices into the view's tasks, in order, for the window only.
    pub rows: Vec<usize>,
}

/// What one task sorts by under one [`Sort`]; a query's keys are all of one variant.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Key<'a> {
    /// Zone counts, most dangerous first, compared lexicographically.
    Zones([u64; 6]),
    Text(&'a str),
    Count(u64),
    Time(Option<std::time::SystemTime>),
}

impl<'a> Key<'a> {
    fn of(sort: Sort, spec: &'a crate::config::TaskSpec, row: &'a TaskRow) -> Key<'a> {
        let zones = || row.snapshot.as_ref().map(|s| s.zones).unwrap_or_default();
        match sort {
            Sort::Danger => Key::Zones(zones()),
            Sort::Name => Key::Text(label(spec)),
            Sort::State => Key::Text(row.life.as_ref().map_or("", |l| l.state.as_str())),
            Sort::Verdict => Key::Text(row.life.as_ref().map_or("", |l| &*l.verdict)),
            Sort::Files => Key::Count(zones().iter().sum()),
            Sort::LastPoll => Key::Time(row.last_poll),
            Sort::Error => Key::Text(row.last_error.as_deref().unwrap_or("")),
        }
    }
}

impl TaskQuery {
    /// Reads the overview's parameters (`zone`, `state`, `q`, `sort`, `dir`, `page`). Unknown
    /// or malformed values are ignored: a hand-edited URL still shows a page.
    pub fn from_page_query(query: &str) -> TaskQuery {
        let mut q = TaskQuery::parse_common(query);
        let page = param(query, "page")
            .and_then(|p| p.parse::<usize>().ok())
            .unwrap_or(1)
            .max(1);
        q.offset = (page - 1).saturating_mul(PAGE_SIZE);
        q
    }

    /// Reads the API's parameters: the page's, with `limit` (at most [`MAX_API_LIMIT`]) and
    /// `offset` instead of `page`.
    pub fn from_api_query(query: &str) -> TaskQuery {
        let mut q = TaskQuery::parse_common(query);
        q.limit = param(query, "limit")
            .and_then(|p| p.parse::<usize>().ok())
            .unwrap_or(PAGE_SIZE)
            .min(MAX_API_LIMIT);
        q.offset = param(query, "offset")
            .and_then(|p| p.parse::<usize>().ok())
            .unwrap_or(0);
        q
    }

    fn parse_common(query: &str) -> TaskQuery {
        let sort = param(query, "sort")
            .and_then(|s| Sort::ALL.into_iter().find(|k| k.as_str() == s))
            .unwrap_or(Sort::Danger);
        let desc = match param(query, "dir").as_deref() {
            Some("asc") => false,
            Some("desc") => true,
            _ => sort.natural_desc(),
        };
        TaskQuery {
            zone: param(query, "zone").and_then(|z| DangerZone::parse_strict(&z)),
            state: param(query, "state").and_then(|s| StateFilter::parse(&s)),
            text: param(query, "q")
                .map(|t| {
                    t.trim()
                        .chars()
                        .take(MAX_TEXT)
                        .collect::<String>()
                        .to_lowercase()
                })
                .unwrap_or_default(),
            sort,
            desc,
            ..TaskQuery::default()
        }
    }

    /// The 1-based page the offset falls on.
    pub fn page(&self) -> usize {
        self.offset / self.limit.max(1) + 1
    }

    /// The query string of this filter and order, with `page` (1 is left out).
    pub fn to_query(&self, sort: Sort, desc: bool, page: usize) -> String {
        let mut out = url::form_urlencoded::Serializer::new(String::new());
        if let Some(zone) = self.zone {
            out.append_pair("zone", zone.as_str());
        }
        if let Some(state) = self.state {
            out.append_pair("state", state.as_str());
        }
        if !self.text.is_empty() {
            out.append_pair("q", &self.text);
        }
        if sort != Sort::Danger || desc != sort.natural_desc() {
            out.append_pair("sort", sort.as_str());
            out.append_pair("dir", if desc { "desc" } else { "asc" });
        }
        if page > 1 {
            out.append_pair("page", &page.to_string());
        }
        out.finish()
    }

    fn matches(
        &self,
        name: &str,
        id: &str,
        row: &TaskRow,
        labels: &crate::config::TaskLabels,
    ) -> bool {
        if let Some(zone) = self.zone {
            if row
                .snapshot
                .as_ref()
                .is_none_or(|s| s.zones[zone.index()] == 0)
            {
                return false;
            }
        }
        if let Some(state) = self.state {
            if !state.matches(row) {
                return false;
            }
        }
        if self.text.is_empty() {
            return true;
        }
        let hit = |s: &str| contains_lowercase(s, &self.text);
        hit(name)
            || hit(id)
            || row.life.as_ref().is_some_and(|l| hit(&l.verdict))
            || row.last_error.as_deref().is_some_and(hit)
            || labels.iter().any(|(_, v)| hit(v))
    }
}

/// Filters, sorts and windows the view's tasks.
pub fn select(view: &View, query: &TaskQuery) -> Selection {
    // Each match's sort key is read once, beside the filter: at 100k tasks the sort then
    // compares a contiguous vector instead of chasing every task's snapshot again.
    let mut matching: Vec<(Key<'_>, usize)> = view
        .tasks()
        .enumerate()
        .filter(|(_, (spec, row))| query.matches(&spec.name, spec.id.as_str(), row, &spec.labels))
        .map(|(i, (spec, row))| (Key::of(query.sort, spec, row), i))
        .collect();
    let total = matching.len();
    let order = |a: &(Key<'_>, usize), b: &(Key<'_>, usize)| {
        let primary = if query.desc {
            b.0.cmp(&a.0)
        } else {
            a.0.cmp(&b.0)
        };
        // Ties in watch-list order, so pages are stable between refreshes.
        primary.then(a.1.cmp(&b.1))
    };
    // Only the rows up to the window's end need their order: a partial select brings them
    // to the front in O(n), then only those are sorted.
    let end = query.offset.saturating_add(query.limit).min(total);
    if end < total {
        matching.select_nth_unstable_by(end, order);
        matching.truncate(end);
    }
    matching.sort_unstable_by(order);
    let rows = matching
        .into_iter()
        .skip(query.offset)
        .map(|(_, i)| i)
        .collect();
    Selection { total, rows }
}

/// The name shown for a task: its name, else its id.
pub fn label(spec: &crate::config::TaskSpec) -> &str {
    if spec.name.is_empty() {
        spec.id.as_str()
    } else {
        &spec.name
    }
}

/// Whether `haystack` contains `needle` (already lowercase), ignoring case; allocation-free for
/// ASCII haystacks, which names and ids nearly always are.
fn contains_lowercase(haystack: &str, needle: &str) -> bool {
    if haystack.is_ascii() && needle.is_ascii() {
        let (h, n) = (haystack.as_bytes(), needle.as_bytes());
        n.is_empty()
            || h.windows(n.len())
                .any(|w| w.iter().zip(n).all(|(a, b)| a.to_ascii_lowercase() == *b))
    } else {
        haystack.to_lowercase().contains(needle)
    }
}

/// The first value of `key` in a query string, decoded.
pub fn param(query: &str, key: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty())
}

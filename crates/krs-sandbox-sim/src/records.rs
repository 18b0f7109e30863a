//! The lifecycle endpoints' bodies: a task's parameter record as of a moment, the task list
//! (query parsing, filtering, live offset paging), `/health` and `/version`.
//!
//! Everything here runs under the state lock and only reads; it is bounded by the page size
//! (at most 1,500 records) plus the offset walked.

use std::time::Duration;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::{json, Value};

use super::appliance::{iso, HealthShape, ListShape};
use super::control::{State, TaskEntry};
use super::lifecycle::{Offset, StateKind, StateName};
use super::render::Zone;
use super::scenario::{result_id, ErrorBody, KeyCase, ParamsShape, SimFile, TaskState};

/// Largest `count` the task list accepts.
pub(super) const MAX_COUNT: u64 = 1500;
const DEFAULT_COUNT: u64 = 500;

/// A task as seen at one moment.
pub(super) struct View {
    pub(super) state: StateName,
    pub(super) run: u32,
    pub(super) processed: Option<Offset>,
    pub(super) zone: Zone,
}

/// A parsed task-list query.
#[derive(Debug, PartialEq)]
pub(super) struct ListQuery {
    from: u64,
    count: u64,
    status: Option<StateKind>,
    zone: Option<Zone>,
    sort: Sort,
    descending: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sort {
    Created,
    Analyzed,
    Size,
}

/// One task-parameter record, keys in `key_case`.
struct Record<'a> {
    id: &'a str,
    entry: &'a TaskEntry,
    view: View,
    state: &'a State,
    key_case: KeyCase,
}

/// The view of `entry` at `elapsed` after start; `None` before it was created, or when it is
/// gone altogether (`state: deleted`).
pub(super) fn view(entry: &TaskEntry, elapsed: Duration) -> Option<View> {
    let now = Offset::after(elapsed);
    let life = &entry.life;
    if now < life.created {
        return None;
    }
    let zone = worst_zone(&entry.files, elapsed);
    let (state, run, processed) = if life.events.is_empty() {
        // Before lifecycles: processing while a file or a grade is still to come.
        let last = entry
            .files
            .iter()
            .flat_map(|f| std::iter::once(f.after).chain(f.zone_changes.iter().map(|c| c.after)))
            .max()
            .map_or(life.created, Offset::after)
            .max(life.created);
        if last > now {
            (StateName::of(StateKind::Processing), 0, None)
        } else {
            (StateName::of(StateKind::Completed), 0, Some(last))
        }
    } else {
        let snap = life.events.at(life.created, now);
        let state = snap.state?;
        (state, snap.run, snap.processed)
    };
    let zone = life.sample_zone.as_deref().map_or(zone, Zone::parse);
    Some(View {
        state,
        run,
        processed,
        zone,
    })
}

/// `GET /tasks/{id}`: `None` when the task does not exist (yet).
pub(super) fn task_params(state: &State, id: &str, elapsed: Duration) -> Option<Vec<u8>> {
    let entry = state.tasks.get(id)?;
    let view = view(entry, elapsed)?;
    let record = Record {
        id,
        entry,
        view,
        state,
        key_case: entry.format.key_case,
    };
    let json = match entry.life.params_shape {
        ParamsShape::Object => serde_json::to_vec(&record),
        ParamsShape::Array => serde_json::to_vec(&[record]),
        ParamsShape::Wrapped => {
            let mut map = serde_json::Map::new();
            let value = serde_json::to_value(&record).unwrap_or(Value::Null);
            map.insert("Tasks".to_owned(), Value::Array(vec![value]));
            serde_json::to_vec(&map)
        }
    };
    Some(json.expect("serialising strings to a Vec cannot fail"))
}

/// Parse the task list's query string; `Err` is the 400 body.
pub(super) fn parse_query(query: Option<&str>) -> Result<ListQuery, ErrorBody> {
    let mut q = ListQuery {
        from: 0,
        count: DEFAULT_COUNT,
        status: None,
        zone: None,
        sort: Sort::Created,
        descending: true,
    };
    let invalid = |meta: String| ErrorBody::new(2, "invalid request").meta(&meta);
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value);
        match percent_decode(key).as_str() {
            "from" => {
                q.from = value
                    .parse()
                    .map_err(|_| invalid(format!("from: {value:?} is not a number")))?;
            }
            "count" => {
                q.count = value
                    .parse()
                    .ok()
                    .filter(|c| (1..=MAX_COUNT).contains(c))
                    .ok_or_else(|| {
                        invalid(format!("count: {value:?} is not between 1 and {MAX_COUNT}"))
                    })?;
            }
            "status" => match StateKind::parse(&value) {
                StateKind::Unrecognised => {
                    return Err(invalid(format!("status: {value:?} is not a task state")))
                }
                kind => q.status = Some(kind),
            },
            "zone" => q.zone = Some(Zone::parse(&value)),
            "sort_by" => {
                q.sort = match value.to_ascii_lowercase().as_str() {
                    "created" => Sort::Created,
                    "analyzed" => Sort::Analyzed,
                    "size" => Sort::Size,
                    _ => return Err(invalid(format!("sort_by: {value:?} is not supported"))),
                }
            }
            "descending" => {
                q.descending = match value.to_ascii_lowercase().as_str() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(invalid(format!(
                            "descending: {value:?} is neither true nor false"
                        )))
                    }
                }
            }
            // environment, search and the filters whose names are not public: accepted, ignored.
            _ => {}
        }
    }
    Ok(q)
}

/// `GET /tasks/`: the page `query` asks for, computed now (offsets shift as tasks arrive).
pub(super) fn task_list(state: &State, query: &ListQuery, elapsed: Duration) -> Vec<u8> {
    let now = Offset::after(elapsed);
    // Every task created by now, in creation order (ties by id).
    let existing = state
        .by_created
        .range(..=(now, "\u{10ffff}".to_owned()))
        .map(|(_, id)| id.as_str());
    let (from, count) = (
        usize::try_from(query.from).unwrap_or(usize::MAX),
        usize::try_from(query.count).unwrap_or(usize::MAX),
    );
    let page: Vec<(&str, View)> = match (query.sort, query.descending) {
        (Sort::Created, true) => existing
            .rev()
            .filter_map(|id| matching(state, query, elapsed, id))
            .skip(from)
            .take(count)
            .collect(),
        (Sort::Created, false) => existing
            .filter_map(|id| matching(state, query, elapsed, id))
            .skip(from)
            .take(count)
            .collect(),
        (sort, descending) => {
            let mut all: Vec<(&str, View)> = existing
                .filter_map(|id| matching(state, query, elapsed, id))
                .collect();
            all.sort_by(|a, b| {
                let key = |(id, v): &(&str, View)| match sort {
                    // Not yet analysed sorts as the oldest.
                    Sort::Analyzed => v.processed.map_or(i64::MIN, Offset::as_millis),
                    _ => state
                        .tasks
                        .get(*id)
                        .map_or(0, |e| i64::try_from(e.life.sample.size).unwrap_or(i64::MAX)),
                };
                let order = key(a).cmp(&key(b)).then_with(|| a.0.cmp(b.0));
                if descending {
                    order.reverse()
                } else {
                    order
                }
            });
            all.into_iter().skip(from).take(count).collect()
        }
    };
    let key_case = state.appliance.list_format.key_case;
    let records: Vec<Record<'_>> = page
        .into_iter()
        .filter_map(|(id, view)| {
            Some(Record {
                id,
                entry: state.tasks.get(id)?,
                view,
                state,
                key_case,
            })
        })
        .collect();
    let json = match state.appliance.list_format.shape {
        ListShape::Array => serde_json::to_vec(&records),
        ListShape::Wrapped => {
            let mut map = serde_json::Map::new();
            let values = serde_json::to_value(&records).unwrap_or(Value::Null);
            map.insert("Tasks".to_owned(), values);
            serde_json::to_vec(&map)
        }
    };
    json.expect("serialising strings to a Vec cannot fail")
}

/// `Some` when the task with this id is listed and passes the query's filters.
fn matching<'a>(
    state: &'a State,
    query: &ListQuery,
    elapsed: Duration,
    id: &'a str,
) -> Option<(&'a str, View)> {
    let entry = state.tasks.get(id)?;
    if entry.state == TaskState::Deleted {
        return None;
    }
    let view = view(entry, elapsed)?;
    let status_ok = query.status.is_none_or(|k| k == view.state.kind);
    let zone_ok = query.zone.is_none_or(|z| z == view.zone);
    (status_ok && zone_ok).then_some((id, view))
}

/// `GET /health` at `elapsed`.
pub(super) fn health(state: &State, elapsed: Duration) -> Vec<u8> {
    let (healthy, checks) = state.health.at(Offset::after(elapsed));
    let detailed = match state.health.shape {
        HealthShape::NameValue => Value::Array(
            checks
                .iter()
                .map(|c| json!({"name": c.name, "value": c.value}))
                .collect(),
        ),
        HealthShape::SingleKey => Value::Array(
            checks
                .iter()
                .map(|c| {
                    let mut m = serde_json::Map::new();
                    m.insert(c.name.clone(), Value::Bool(c.value));
                    Value::Object(m)
                })
                .collect(),
        ),
        HealthShape::Object => Value::Object(
            checks
                .iter()
                .map(|c| (c.name.clone(), Value::Bool(c.value)))
                .collect(),
        ),
    };
    serde_json::to_vec(&json!({"healthy": healthy, "detailed": detailed}))
        .expect("serialising a JSON value cannot fail")
}

/// `GET /version`.
pub(super) fn version(state: &State) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "system_version": state.version.system_version,
        "bases_version": state.version.bases.render(state.start_wall),
    }))
    .expect("serialising a JSON value cannot fail")
}

impl Serialize for Record<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let life = &self.entry.life;
        let sample = &life.sample;
        let wall = |at: Offset| iso(at.wall(self.state.start_wall));
        let kind = self.view.state.kind;
        let status = if kind == StateKind::Completed {
            life.verdict
                .clone()
                .unwrap_or_else(|| self.view.zone.verdict().to_owned())
        } else {
            "Unknown".to_owned()
        };
        let mut fields: Vec<(&str, String)> = vec![
            ("TaskId", self.id.to_owned()),
            ("ResultId", result_id(self.id, self.view.run)),
            ("TaskState", self.view.state.spelling.clone()),
            ("Created", wall(life.created)),
            (
                "Processed",
                self.view.processed.map(wall).unwrap_or_default(),
            ),
            ("Status", status),
            ("Zone", self.view.zone.as_str().to_owned()),
            (
                "AvBasesVersion",
                self.state.version.bases.render(self.state.start_wall),
            ),
        ];
        if kind.is_failure() {
            let (code, message) = match &life.error {
                Some(e) => (e.code.clone(), e.message.clone()),
                None if kind == StateKind::UploadFailed => {
                    ("UploadFailed".to_owned(), "upload failed".to_owned())
                }
                None => (
                    "ProcessingFailed".to_owned(),
                    "processing failed".to_owned(),
                ),
            };
            fields.push(("ErrorCode", code));
            fields.push(("ErrorMessage", message));
        }
        let text = |o: &Option<String>| o.clone().unwrap_or_default();
        fields.extend([
            ("OriginalFileName", text(&sample.original_file_name)),
            ("FileName", text(&sample.file_name)),
            ("ArchiveName", sample.archive_name.clone()),
            ("Extension", text(&sample.extension)),
            ("Type", sample.file_type.clone()),
            ("Md5", text(&sample.md5)),
            ("Sha1", text(&sample.sha1)),
            ("Sha256", text(&sample.sha256)),
            ("SsDeep", sample.ssdeep.clone()),
        ]);
        let mut map = serializer.serialize_map(Some(fields.len()))?;
        for (key, value) in &fields {
            match self.key_case {
                KeyCase::Pascal => map.serialize_entry(key, value)?,
                KeyCase::Lower => map.serialize_entry(&key.to_ascii_lowercase(), value)?,
                KeyCase::Upper => map.serialize_entry(&key.to_ascii_uppercase(), value)?,
            }
        }
        map.end()
    }
}

fn worst_zone(files: &[SimFile], elapsed: Duration) -> Zone {
    files
        .iter()
        .filter(|f| f.after <= elapsed)
        .map(|f| Zone::parse(f.zone_at(elapsed)))
        .min()
        .unwrap_or(Zone::Green)
}

/// `%XX` and `+` decoded; invalid escapes kept as written.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_with_defaults_and_refuse_a_count_outside_1_to_1500() {
        let q = parse_query(None).unwrap();
        assert_eq!((q.from, q.count, q.descending), (0, 500, true));
        let q = parse_query(Some(
            "from=10&count=1500&status=Processing%20failed&zone=gray&sort_by=created&descending=false&search=x",
        ))
        .unwrap();
        assert_eq!(q.from, 10);
        assert_eq!(q.status, Some(StateKind::Failed));
        assert_eq!(q.zone, Some(Zone::Grey));
        assert!(!q.descending);
        for bad in [
            "count=0",
            "count=1501",
            "count=x",
            "from=-1",
            "status=archived",
            "sort_by=name",
            "descending=yes",
        ] {
            let e = parse_query(Some(bad)).unwrap_err();
            assert_eq!(
                e.code,
                super::super::scenario::ErrorCode::Number(2),
                "{bad}"
            );
        }
    }

    #[test]
    fn percent_decoding_keeps_what_it_cannot_decode() {
        assert_eq!(percent_decode("upload+failed"), "upload failed");
        assert_eq!(percent_decode("a%20b%zz%4"), "a b%zz%4");
    }
}

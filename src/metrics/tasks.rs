//! The per-task families, written straight from [`State`] at scrape time from one consistent
//! view: the watch list (`krs_task_info`), the latest poll of each task (`krs_task_up`, its
//! timestamps and status) and the counts of its latest successful response (zones, rules,
//! detections, `krs_download_info`), the last reused from scrape to scrape until a poll
//! brings a different body.
//!
//! The renderer owns that render cache ([`TaskFamilies`]): the state hands out immutable
//! snapshots behind `Arc`s and knows nothing of their text. The cache is keyed by the snapshot's
//! allocation and holds a `Weak` to it, which keeps the address from being reused while the
//! entry lives; entries of snapshots the state has dropped go at the next scrape.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use super::exposition::{self, sample, Chunks, UnixMillis};
use crate::lifecycle::TaskLife;
use crate::state::{Snapshot, State, TaskRow};
use crate::zone::DangerZone;

/// The per-task families' renderer, with its cache of each snapshot's lines.
#[derive(Default)]
pub struct TaskFamilies {
    /// Keyed by `Arc::as_ptr` of the snapshot. Locked to look up and to store, never while
    /// formatting, so concurrent scrapes only contend for map updates.
    cache: Mutex<HashMap<usize, Cached>>,
}

struct Cached {
    snapshot: Weak<Snapshot>,
    parts: Arc<Parts>,
}

/// Text in consecutive parts (one per metric family), stored as one allocation.
#[derive(Debug)]
pub struct Parts {
    text: Box<str>,
    ends: Box<[u32]>,
}

impl TaskFamilies {
    /// Writes the per-task families of `state` to `out`.
    pub fn render(&self, out: &mut Chunks<'_>, state: &State) {
        render_tasks(out, state, self);
    }

    /// Snapshots whose lines are cached.
    #[cfg(test)]
    pub fn cached(&self) -> usize {
        self.lock().len()
    }

    /// The lines of each snapshot, from the cache or written now (outside the lock). Drops the
    /// entries of snapshots no longer alive.
    fn parts(&self, snapshots: &[(&str, &Arc<Snapshot>)]) -> Vec<Arc<Parts>> {
        let found: Vec<Option<Arc<Parts>>> = {
            let cache = self.lock();
            snapshots
                .iter()
                .map(|(_, snap)| {
                    cache
                        .get(&key(snap))
                        .filter(|c| std::ptr::eq(c.snapshot.as_ptr(), Arc::as_ptr(snap)))
                        .map(|c| Arc::clone(&c.parts))
                })
                .collect()
        };
        let mut written = Vec::new();
        let parts: Vec<Arc<Parts>> = found
            .into_iter()
            .zip(snapshots)
            .map(|(cached, (id, snap))| {
                cached.unwrap_or_else(|| {
                    let parts = Arc::new(snapshot_parts(id, snap));
                    written.push((Arc::downgrade(snap), Arc::clone(&parts)));
                    parts
                })
            })
            .collect();
        let mut cache = self.lock();
        cache.retain(|_, c| c.snapshot.strong_count() > 0);
        for (snapshot, parts) in written {
            cache.insert(snapshot.as_ptr() as usize, Cached { snapshot, parts });
        }
        parts
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<usize, Cached>> {
        // Updates are single inserts and removals: a poisoned map is still a valid cache.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Parts {
    /// `text` cut at `ends`: part `i` is `text[ends[i-1]..ends[i]]`. Ends must ascend within
    /// the text and fall on char boundaries; a part that does not reads as `""`.
    pub fn new(text: String, ends: Vec<u32>) -> Parts {
        Parts {
            text: text.into_boxed_str(),
            ends: ends.into_boxed_slice(),
        }
    }

    /// Part `i`, or `""` past the last one.
    pub fn get(&self, i: usize) -> &str {
        let start = if i == 0 {
            0
        } else {
            self.ends.get(i - 1).copied().unwrap_or(u32::MAX)
        };
        let end = self.ends.get(i).copied().unwrap_or(0);
        self.text
            .get(start as usize..end as usize)
            .unwrap_or_default()
    }
}

fn key(snapshot: &Arc<Snapshot>) -> usize {
    Arc::as_ptr(snapshot) as usize
}

/// Writes the per-task families from one consistent copy of the state, taken in a few
/// milliseconds; the formatting runs without the state lock.
fn render_tasks(out: &mut Chunks<'_>, state: &State, families: &TaskFamilies) {
    let view = state.read();
    let watch = view.watch_list();

    // From the same view as the task series, so a scrape during a reload is never torn.
    out.header(
        "krs_watched_tasks",
        "gauge",
        "Tasks in the active watch list.",
    );
    sample(
        out.text(),
        "krs_watched_tasks",
        &[],
        watch.tasks.len() as u64,
    );

    out.header(
        "krs_task_info",
        "gauge",
        "Watch-list metadata of a task (always 1), for joins.",
    );
    let mut labels: Vec<(&str, &str)> = Vec::with_capacity(3 + watch.label_keys.len());
    let configured = watch.tasks.len() - watch.discovered;
    for (i, (spec, _)) in view.tasks().enumerate() {
        labels.clear();
        labels.push(("task_id", spec.id.as_str()));
        labels.push(("name", &spec.name));
        labels.push((
            "source",
            if i < configured {
                "static"
            } else {
                "discovered"
            },
        ));
        for key in &watch.label_keys {
            let value = spec.labels.get(key).unwrap_or("");
            labels.push((key, value));
        }
        sample(out.text(), "krs_task_info", &labels, 1u64);
        if !out.boundary() {
            return;
        }
    }

    let polled: Vec<(&str, &TaskRow)> = view
        .tasks()
        .filter(|(_, t)| t.last_poll.is_some())
        .map(|(spec, t)| (spec.id.as_str(), t))
        .collect();
    let complete = poll_family(
        out,
        &polled,
        "krs_task_up",
        "1 if the latest poll of the task succeeded, else 0.",
        |t| Some(u64::from(t.up)),
    ) && poll_family(
        out,
        &polled,
        "krs_task_last_poll_timestamp_seconds",
        "End of the latest poll of the task (Unix seconds).",
        |t| t.last_poll.map(unix_millis),
    ) && poll_family(
        out,
        &polled,
        "krs_task_last_success_timestamp_seconds",
        "End of the latest successful poll of the task (Unix seconds).",
        |t| t.last_success.map(unix_millis),
    ) && poll_family(
        out,
        &polled,
        "krs_task_last_status_code",
        "HTTP status of the latest poll's final attempt; 0 when no response arrived.",
        |t| Some(u64::from(t.last_status.unwrap_or(0))),
    );
    if !complete || !lifecycle_families(out, &view) {
        return;
    }

    // The families drawn from a snapshot change only when a poll brings a different body, so
    // each snapshot's lines are written once and copied by every later scrape.
    let snapshots: Vec<(&str, &Arc<Snapshot>)> = view
        .tasks()
        .filter_map(|(spec, t)| Some((spec.id.as_str(), t.snapshot.as_ref()?)))
        .collect();
    let parts = families.parts(&snapshots);
    let parts: Vec<(&Parts, &Snapshot)> = parts
        .iter()
        .zip(&snapshots)
        .map(|(p, (_, snap))| (&**p, &***snap))
        .collect();
    // Info series of the whole scrape are capped too: the first tasks of the watch list keep
    // theirs, the rest are counted in `krs_download_info_dropped_series`.
    let mut room = watch.limits.max_file_info_series_total;
    let mut dropped = 0u64;
    for (i, (name, help)) in SNAPSHOT_FAMILIES.iter().enumerate() {
        out.header(name, "gauge", help);
        for (p, snap) in &parts {
            let text = p.get(i);
            if i == INFO_FAMILY {
                dropped += snap.files_dropped;
                let lines = snap.files.len();
                if lines > room {
                    dropped += (lines - room) as u64;
                    out.text().push_str(first_lines(text, room));
                    room = 0;
                } else {
                    room -= lines;
                    out.text().push_str(text);
                }
            } else {
                out.text().push_str(text);
            }
            if !out.boundary() {
                return;
            }
        }
    }
    out.header(
        "krs_download_info_dropped_series",
        "gauge",
        "Files in the configured zones left without a krs_download_info series by the per-task or fleet cap.",
    );
    sample(out.text(), "krs_download_info_dropped_series", &[], dropped);
}

/// The first `n` lines of `text` (each ending in a newline).
fn first_lines(text: &str, n: usize) -> &str {
    if n == 0 {
        return "";
    }
    let end = text
        .match_indices('\n')
        .nth(n - 1)
        .map_or(text.len(), |(i, _)| i + 1);
    &text[..end]
}

/// The families of what the sandbox says of each task's state, for the tasks whose state is
/// known: `krs_task_state`, `krs_task_zone`, `krs_task_verdict` and the two timestamps.
/// `false` once the client is gone.
fn lifecycle_families(out: &mut Chunks<'_>, view: &crate::state::View) -> bool {
    let lives: Vec<(&str, &TaskLife)> = view
        .tasks()
        .filter_map(|(spec, t)| Some((spec.id.as_str(), t.life.as_deref()?)))
        .collect();
    let families: [(&str, &str, LabelOf); 3] = [
        (
            "krs_task_state",
            "The task's state as the sandbox reports it (always 1; one series per task).",
            |l| ("state", l.state.as_str()),
        ),
        (
            "krs_task_zone",
            "The sample's own danger zone from the task's parameters (always 1; Unknown until graded).",
            |l| ("danger_zone", l.zone.as_str()),
        ),
        (
            "krs_task_verdict",
            "The sample's verdict from the task's parameters (always 1; Unknown until completed).",
            |l| ("verdict", &l.verdict),
        ),
    ];
    for (name, help, label) in families {
        out.header(name, "gauge", help);
        for (id, life) in &lives {
            sample(out.text(), name, &[("task_id", id), label(life)], 1u64);
            if !out.boundary() {
                return false;
            }
        }
    }
    let times: [(&str, &str, TimeOf); 2] = [
        (
            "krs_task_created_timestamp_seconds",
            "When the task was created (Unix seconds).",
            |l| l.created,
        ),
        (
            "krs_task_processed_timestamp_seconds",
            "When the task's analysis ended (Unix seconds); absent until then.",
            |l| l.processed,
        ),
    ];
    for (name, help, time) in times {
        out.header(name, "gauge", help);
        for (id, life) in &lives {
            if let Some(t) = time(life) {
                sample(out.text(), name, &[("task_id", id)], unix_millis(t));
                if !out.boundary() {
                    return false;
                }
            }
        }
    }
    true
}

/// The time a lifecycle family takes from a task's life.
type TimeOf = fn(&TaskLife) -> Option<SystemTime>;

/// The label a lifecycle family takes from a task's life.
type LabelOf = for<'a> fn(&'a TaskLife) -> (&'static str, &'a str);

/// One gauge family of the polled tasks, one sample per task for which `value` has one;
/// `false` once the client is gone.
fn poll_family<V: exposition::Value>(
    out: &mut Chunks<'_>,
    polled: &[(&str, &TaskRow)],
    name: &str,
    help: &str,
    value: impl Fn(&TaskRow) -> Option<V>,
) -> bool {
    out.header(name, "gauge", help);
    for (id, t) in polled {
        if let Some(v) = value(t) {
            sample(out.text(), name, &[("task_id", id)], v);
            if !out.boundary() {
                return false;
            }
        }
    }
    true
}

/// Position of `krs_download_info` in [`SNAPSHOT_FAMILIES`].
const INFO_FAMILY: usize = 5;

/// The families rendered from a task's [`Snapshot`], in exposition order: (name, help).
const SNAPSHOT_FAMILIES: [(&str, &str); 8] = [
    (
        "krs_task_downloads",
        "Files the task downloaded, by danger zone, from the latest successful poll.",
    ),
    (
        "krs_task_download_bytes",
        "Sum of the sizes of the task's downloaded files.",
    ),
    (
        "krs_task_https_downloads",
        "Files the task downloaded over HTTPS.",
    ),
    (
        "krs_task_yara_matches",
        "Files of the task that triggered the YARA rule.",
    ),
    (
        "krs_task_detections",
        "Files of the task carrying the detection name.",
    ),
    (
        "krs_download_info",
        "One series per downloaded file in the configured zones (always 1).",
    ),
    (
        "krs_task_skipped_records",
        "Records of the task's latest decoded response that were not exported.",
    ),
    (
        "krs_task_download_info_dropped",
        "Files of the task in the configured zones without a krs_download_info series (per-task cap).",
    ),
];

/// One task's lines of each of [`SNAPSHOT_FAMILIES`], in that order.
fn snapshot_parts(id: &str, snap: &Snapshot) -> Parts {
    let mut out = String::with_capacity(1024);
    let mut ends = Vec::with_capacity(SNAPSHOT_FAMILIES.len());
    let mut end = |out: &String| ends.push(u32::try_from(out.len()).unwrap_or(u32::MAX));
    let [downloads, bytes, https, yara, detections, info, skipped, info_dropped] =
        SNAPSHOT_FAMILIES.map(|(name, _)| name);
    for zone in DangerZone::ALL {
        let n = snap.zones[zone.index()];
        if n > 0 || zone != DangerZone::Unknown {
            sample(
                &mut out,
                downloads,
                &[("task_id", id), ("danger_zone", zone.as_str())],
                n,
            );
        }
    }
    end(&out);
    sample(&mut out, bytes, &[("task_id", id)], snap.bytes);
    end(&out);
    sample(&mut out, https, &[("task_id", id)], snap.https);
    end(&out);
    for (rule, n) in &snap.yara {
        sample(&mut out, yara, &[("task_id", id), ("rule", rule)], *n);
    }
    end(&out);
    for (detection, n) in &snap.detections {
        sample(
            &mut out,
            detections,
            &[("task_id", id), ("detection", detection)],
            *n,
        );
    }
    end(&out);
    for file in &snap.files {
        sample(
            &mut out,
            info,
            &[
                ("task_id", id),
                ("danger_zone", file.zone.as_str()),
                ("sha256", &file.sha256),
                ("file_name", &file.name),
                ("file_type", &file.file_type),
            ],
            1u64,
        );
    }
    end(&out);
    sample(&mut out, skipped, &[("task_id", id)], snap.skipped_records);
    end(&out);
    sample(
        &mut out,
        info_dropped,
        &[("task_id", id)],
        snap.files_dropped,
    );
    end(&out);
    Parts::new(out, ends)
}

/// A timestamp for the exposition: Unix seconds with millisecond resolution.
fn unix_millis(t: SystemTime) -> UnixMillis {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    UnixMillis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::super::testing::{
        all_zones, download, state_of, tasks_text, valid_line, OTHER_TASK, TASK,
    };
    use super::*;
    use crate::config::{TaskId, TaskLabels, TaskSpec};
    use crate::sandbox::Download;
    use crate::state::{Limits, PollReport, WatchList};
    use proptest::prelude::*;

    proptest! {
        // Whatever the sandbox sends, the exposition stays well-formed: 10,000 cases in CI.
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        #[test]
        fn any_decoded_downloads_render_to_valid_exposition_text(
            baseline in prop::collection::vec(download(), 0..4),
            later in prop::collection::vec(download(), 0..4),
        ) {
            let mut file_info_zones = [true; 6];
            file_info_zones[DangerZone::Green.index()] = false;
            let state = State::new(WatchList { discovered: 0,
                tasks: vec![TaskSpec {
                    id: TaskId::parse(TASK).expect("valid id"),
                    name: "n\"ame\n".into(),
                    labels: TaskLabels::from([("team".to_string(), "s\\oc".to_string())]),
                }].into(),
                label_keys: vec!["team".into()],
                limits: Limits { max_label_length: 64, max_label_values: 3, file_info_zones, ..Limits::default() },
            });
            for files in [baseline, later] {
                state.apply(PollReport {
                    task: TaskId::parse(TASK).expect("valid id"),
                    finished: SystemTime::now(),
                    status: Some(200),
                    result: Ok(files.into()),
                    life: None,
                });
            }
            // The per-task families carry the sandbox's strings; the registry part (with the
            // fleet counters' rule labels) is checked by the test below, once, since gathering
            // the process metrics on every case would dominate the run.
            let text = tasks_text(&TaskFamilies::default(), &state);
            for line in text.lines() {
                prop_assert!(valid_line(line).is_ok(), "{:?}: {:?}", line, valid_line(line));
            }
            prop_assert_eq!(text.lines().filter(|l| l.starts_with("krs_task_up{")).count(), 1);
            prop_assert!(text.ends_with('\n'));
        }
    }

    #[test]
    fn a_repeated_scrape_reuses_snapshot_lines_until_a_poll_brings_new_files() {
        let state = state_of(&[TASK, OTHER_TASK], all_zones());
        let red = |sha: &str| Download {
            zone: DangerZone::Red,
            sha256: sha.into(),
            yara_rules: vec![format!("rule_{sha}")],
            ..Download::default()
        };
        let poll = |id: &str, files: Vec<Download>| {
            state.apply(PollReport {
                task: TaskId::parse(id).expect("valid id"),
                finished: UNIX_EPOCH + Duration::from_millis(1_764_135_791_250),
                status: Some(200),
                result: Ok(files.into()),
                life: None,
            });
        };
        poll(TASK, vec![red("aa")]);
        poll(OTHER_TASK, vec![red("bb")]);
        let families = TaskFamilies::default();
        let render = || tasks_text(&families, &state);
        let first = render();
        assert_eq!(families.cached(), 2);
        assert_eq!(render(), first);

        // Each family is one block: header, then the samples of both tasks.
        let names: Vec<&str> = first
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| &l[..l.find(['{', ' ']).unwrap()])
            .collect();
        let mut blocks = names.clone();
        blocks.dedup();
        let mut distinct = blocks.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(
            blocks.len(),
            distinct.len(),
            "a family is split: {blocks:?}"
        );
        assert!(first.contains(
            "krs_task_last_poll_timestamp_seconds{task_id=\"0d5b4e44-4c0e-4f0b-9a57-3f2d1b9e6c71\"} 1764135791.25\n"
        ));

        poll(TASK, vec![red("aa"), red("cc")]);
        let second = render();
        assert_eq!(
            families.cached(),
            2,
            "the replaced snapshot's lines are dropped"
        );
        let red_line =
            |id: &str| format!("krs_task_downloads{{task_id=\"{id}\",danger_zone=\"Red\"}}");
        assert!(second.contains(&format!("{} 2\n", red_line(TASK))));
        assert!(!second.contains(&format!("{} 1\n", red_line(TASK))));
        assert!(second.contains(&format!("{} 1\n", red_line(OTHER_TASK))));
        assert!(second.contains("rule=\"rule_cc\""));
    }

    #[test]
    fn control_characters_in_task_names_and_labels_render_valid_exposition_text() {
        let state = State::new(WatchList {
            tasks: vec![TaskSpec {
                id: TaskId::parse(TASK).expect("valid id"),
                name: "web\rproxy\n\"x\"\\".into(),
                labels: TaskLabels::from([("team".to_string(), "s\roc\u{0}".to_string())]),
            }]
            .into(),
            label_keys: vec!["team".into()],
            limits: Limits::default(),
            discovered: 0,
        });
        let text = tasks_text(&TaskFamilies::default(), &state);
        let info = text
            .lines()
            .find(|l| l.starts_with("krs_task_info{"))
            .expect("one info series");
        assert_eq!(valid_line(info), Ok(()), "{info:?}");
        assert!(
            info.contains("name=\"web\rproxy\\n\\\"x\\\"\\\\\""),
            "{info:?}"
        );
    }

    #[test]
    fn info_series_past_the_fleet_cap_are_left_out_and_counted() {
        let state = state_of(
            &[TASK, OTHER_TASK],
            Limits {
                max_file_info_series: 2,
                max_file_info_series_total: 3,
                ..Limits::default()
            },
        );
        let red = |sha: &str| Download {
            zone: DangerZone::Red,
            sha256: sha.into(),
            ..Download::default()
        };
        for id in [TASK, OTHER_TASK] {
            state.apply(PollReport {
                task: TaskId::parse(id).expect("valid id"),
                finished: UNIX_EPOCH + Duration::from_millis(1_764_135_791_250),
                status: Some(200),
                result: Ok(vec![red("aa"), red("bb"), red("cc")].into()),
                life: None,
            });
        }
        let text = tasks_text(&TaskFamilies::default(), &state);
        let info = text
            .lines()
            .filter(|l| l.starts_with("krs_download_info{"))
            .count();
        assert_eq!(info, 3);
        // One file per task over the per-task cap of 2, one more over the fleet cap of 3.
        assert!(
            text.contains("\nkrs_download_info_dropped_series 3\n"),
            "{text}"
        );
        assert!(text.contains(&format!(
            "krs_task_download_info_dropped{{task_id=\"{TASK}\"}} 1\n"
        )));
        assert!(text.contains(&format!(
            "krs_task_downloads{{task_id=\"{TASK}\",danger_zone=\"Red\"}} 3\n"
        )));
    }
}

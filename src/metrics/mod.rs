//! The metrics contract (`docs/metrics.md`) and its rendering for `/metrics`.
//!
//! Two sources make one exposition, each in its own module:
//! - [`registry`]: a `prometheus` crate registry owned by [`Metrics`] for what the exporter
//!   counts itself (API traffic, polls, fleet counters, config state, build info, process
//!   metrics), with its connection ([`web`]), appliance ([`appliance`]) and the sandbox's own
//!   health ([`sandbox`]) families;
//! - [`tasks`]: the per-task families, written straight from [`State`] at scrape time: their
//!   series come and go with the watch list and their label values come from the sandbox,
//!   which suits a writer that escapes every value and keeps no registry entries to clean up.
//!
//! [`exposition`] is the hand-written text format and the chunking that lets a scrape of any
//! size stream; [`openmetrics`] writes the registry's families as OpenMetrics 1.0, with the
//! exemplars of the fleet counters. This file joins the two sources into one exposition in
//! either [`Format`].

pub mod appliance;
pub mod discovery;
pub mod exposition;
mod family;
pub mod openmetrics;
pub mod registry;
pub mod sandbox;
pub mod storage;
pub mod tasks;
#[cfg(test)]
pub(crate) mod testing;
pub mod web;

use prometheus::{Encoder, TextEncoder};

use crate::state::State;
use exposition::Chunks;
pub use exposition::Format;
pub use family::unix_seconds;
pub use registry::Metrics;

/// Content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Metrics {
    /// The whole exposition in text format: the registry's families, then the per-task
    /// families.
    pub fn render(&self, state: &State) -> String {
        self.render_as(Format::Text, state)
    }

    /// The whole exposition in `format`.
    pub fn render_as(&self, format: Format, state: &State) -> String {
        let mut all = String::new();
        self.render_chunked_as(format, state, 1 << 20, &mut |chunk| {
            all.push_str(&chunk);
            true
        });
        all
    }

    /// The whole exposition handed to `emit` in chunks of about `chunk_bytes`, so a scrape
    /// holds one chunk rather than the whole body (113 MB at 100k tasks). Stops early and
    /// returns `false` when `emit` does (the client went away).
    pub fn render_chunked(
        &self,
        state: &State,
        chunk_bytes: usize,
        emit: &mut dyn FnMut(String) -> bool,
    ) -> bool {
        self.render_chunked_as(Format::Text, state, chunk_bytes, emit)
    }

    /// [`Metrics::render_chunked`] in `format`.
    pub fn render_chunked_as(
        &self,
        format: Format,
        state: &State,
        chunk_bytes: usize,
        emit: &mut dyn FnMut(String) -> bool,
    ) -> bool {
        let mut out = Chunks::with_format(format, chunk_bytes, emit);
        let families = self.registry().gather();
        match format {
            Format::Text => {
                let mut buf = Vec::with_capacity(16 * 1024);
                // Encoding our own registry into a Vec cannot fail: every family is well-formed.
                if TextEncoder::new().encode(&families, &mut buf).is_ok() {
                    out.text().push_str(&String::from_utf8_lossy(&buf));
                }
            }
            Format::OpenMetrics => {
                let exemplars = self.exemplars();
                openmetrics::encode(out.text(), &families, &|name, metric| {
                    let value = metric.get_label().first()?.value();
                    exemplars.get(name)?.get(value)
                });
            }
        }
        self.tasks.render(&mut out, state);
        out.finish()
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::testing::{tasks_text, valid_line, valid_openmetrics_line, TASK};
    use super::*;
    use crate::config::{TaskId, TaskLabels, TaskSpec};
    use crate::sandbox::Download;
    use crate::shard::Shard;
    use crate::state::{Limits, PollReport, WatchList};
    use crate::zone::DangerZone;

    #[test]
    fn a_chunked_render_is_the_whole_exposition_and_stops_when_the_client_leaves() {
        let tasks: Vec<TaskSpec> = (0..200u32)
            .map(|i| TaskSpec {
                id: TaskId::parse(&format!("{i:08x}-0000-4000-8000-000000000000")).unwrap(),
                name: format!("task {i}"),
                labels: TaskLabels::default(),
            })
            .collect();
        let state = State::new(WatchList {
            discovered: 0,
            tasks: tasks.clone().into(),
            label_keys: Vec::new(),
            limits: Limits {
                max_label_length: 64,
                max_label_values: 100,
                file_info_zones: [true; 6],
                ..Limits::default()
            },
        });
        for spec in &tasks {
            state.apply(PollReport {
                life: None,
                task: spec.id.clone(),
                finished: SystemTime::now(),
                status: Some(200),
                result: Ok(vec![Download {
                    zone: DangerZone::Red,
                    sha256: "aa".into(),
                    ..Download::default()
                }]
                .into()),
            });
        }
        let metrics = Metrics::new(Shard::ALL);
        let mut chunks = Vec::new();
        assert!(metrics.render_chunked(&state, 4096, &mut |c| {
            chunks.push(c);
            true
        }));
        assert!(chunks.len() > 10, "{} chunks", chunks.len());
        assert!(
            chunks.iter().all(|c| c.ends_with('\n')),
            "chunks end on a line"
        );
        let whole = chunks.concat();
        assert!(whole.contains("# TYPE krs_polls_total counter\n"));
        assert_eq!(
            whole
                .lines()
                .filter(|l| l.starts_with("krs_download_info{"))
                .count(),
            200
        );
        assert_eq!(
            tasks_text(&tasks::TaskFamilies::default(), &state),
            whole[whole.find("# HELP krs_watched_tasks").unwrap()..]
        );

        let mut calls = 0;
        assert!(!metrics.render_chunked(&state, 4096, &mut |_| {
            calls += 1;
            calls < 3
        }));
        assert_eq!(calls, 3, "rendering stops once the consumer is gone");
    }

    #[test]
    fn hostile_rule_names_in_the_fleet_counters_render_valid_exposition_text() {
        let state = one_task_state();
        let metrics = Metrics::new(Shard::ALL);
        let hostile = ["r\"}\nforged 1", "\\", "\u{202e}x", "é\r", "# HELP x"];
        for (i, files) in [
            Vec::new(),
            vec![Download {
                zone: DangerZone::Red,
                sha256: "aa".into(),
                yara_rules: hostile.iter().map(|s| s.to_string()).collect(),
                ..Download::default()
            }],
        ]
        .into_iter()
        .enumerate()
        {
            let applied = state.apply(PollReport {
                task: TaskId::parse(TASK).expect("valid id"),
                finished: SystemTime::now(),
                status: Some(200),
                result: Ok(files.into()),
                life: None,
            });
            assert_eq!(
                applied.activity.yara_hits.len(),
                if i == 0 { 0 } else { hostile.len() }
            );
            metrics.record_activity(&applied.activity);
        }
        let text = metrics.render(&state);
        for line in text.lines() {
            assert!(valid_line(line).is_ok(), "{line:?}: {:?}", valid_line(line));
        }
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("krs_yara_hits_total{"))
                .count(),
            5
        );
        assert!(!text.lines().any(|l| l.starts_with("forged")));
    }

    fn one_task_state() -> State {
        testing::state_of(&[TASK], testing::all_zones())
    }

    #[test]
    fn an_openmetrics_render_in_chunks_is_the_whole_one_ending_in_a_single_eof() {
        let state = one_task_state();
        let metrics = Metrics::new(Shard::ALL);
        for _ in 0..2 {
            let applied = state.apply(PollReport {
                life: None,
                task: TaskId::parse(TASK).expect("valid id"),
                finished: SystemTime::now(),
                status: Some(200),
                result: Ok(vec![Download {
                    zone: DangerZone::Red,
                    sha256: "aa".into(),
                    yara_rules: vec!["r1".into()],
                    ..Download::default()
                }]
                .into()),
            });
            metrics.record_activity(&applied.activity);
        }
        let whole = metrics.render_as(Format::OpenMetrics, &state);
        let mut chunks = Vec::new();
        assert!(
            metrics.render_chunked_as(Format::OpenMetrics, &state, 256, &mut |c| {
                chunks.push(c);
                true
            })
        );
        assert!(chunks.len() > 5, "{} chunks", chunks.len());
        // The process's own gauges (memory, descriptors) move between two renders.
        let steady = |s: &str| -> String {
            s.lines()
                .filter(|l| !l.starts_with("process_"))
                .map(|l| format!("{l}\n"))
                .collect()
        };
        assert_eq!(steady(&chunks.concat()), steady(&whole));
        assert!(whole.ends_with("\n# EOF\n"), "{whole}");
        assert_eq!(whole.lines().filter(|l| *l == "# EOF").count(), 1);
        assert!(whole.contains("# TYPE krs_polls counter\nkrs_polls_total 0\n"));
        assert!(whole.contains(
            "# TYPE krs_poll_duration_seconds histogram\n\
             # UNIT krs_poll_duration_seconds seconds\n"
        ));

        // The per-task families are gauges: the same lines as in text, but for `# UNIT`.
        let text = metrics.render(&state);
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"));
        let tasks_of = |s: &str| s[s.find("# HELP krs_watched_tasks").unwrap()..].to_string();
        let om_tasks: String = tasks_of(&whole)
            .lines()
            .filter(|l| !l.starts_with("# UNIT ") && *l != "# EOF")
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(om_tasks, tasks_of(&text));
        assert!(whole.contains(
            "# TYPE krs_task_download_bytes gauge\n# UNIT krs_task_download_bytes bytes\n"
        ));
    }

    #[test]
    fn a_new_red_file_gives_the_red_counter_an_exemplar_naming_it_even_when_hostile() {
        let state = one_task_state();
        let metrics = Metrics::new(Shard::ALL);
        let hostile_sha = "aa\"} 9 # {x=\"1\n\u{202e}\\";
        let polls = [
            Vec::new(),
            vec![Download {
                zone: DangerZone::Red,
                sha256: hostile_sha.into(),
                yara_rules: vec!["r\"} # {".into()],
                ..Download::default()
            }],
        ];
        let finished = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_764_135_791_250);
        for files in polls {
            let applied = state.apply(PollReport {
                life: None,
                task: TaskId::parse(TASK).expect("valid id"),
                finished,
                status: Some(200),
                result: Ok(files.into()),
            });
            metrics.record_activity(&applied.activity);
        }
        let om = metrics.render_as(Format::OpenMetrics, &state);
        let exemplar = format!(
            " # {{task_id=\"{TASK}\",sha256=\"aa\u{FFFD}\u{FFFD} 9 # {{x=\u{FFFD}1\u{FFFD}\u{FFFD}\u{FFFD}\"}} 1 1764135791.25"
        );
        let red = format!("krs_downloads_total{{danger_zone=\"Red\"}} 1{exemplar}");
        let hit = format!("krs_yara_hits_total{{rule=\"r\\\"}} # {{\"}} 1{exemplar}");
        for line in om.lines() {
            let sample_end = [&red, &hit]
                .into_iter()
                .find(|l| line == l.as_str())
                .map(|l| l.len() - exemplar.len());
            assert!(
                valid_openmetrics_line(line, sample_end).is_ok(),
                "{line:?}: {:?}",
                valid_openmetrics_line(line, sample_end)
            );
        }
        assert!(om.lines().any(|l| l == red), "{om}");
        assert!(om.lines().any(|l| l == hit), "{om}");
        assert_eq!(
            om.matches(" # {task_id=").count(),
            2,
            "only the counted series"
        );
        let text = metrics.render(&state);
        assert!(!text.contains("task_id=\"{TASK}\",sha256"));
        assert!(text.contains("krs_downloads_total{danger_zone=\"Red\"} 1\n"));
    }
}

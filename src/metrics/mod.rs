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
//! size stream; this file joins the two sources into one exposition.

pub mod appliance;
pub mod discovery;
pub mod exposition;
mod family;
pub mod registry;
pub mod sandbox;
pub mod tasks;
#[cfg(test)]
mod testing;
pub mod web;

use prometheus::{Encoder, TextEncoder};

use crate::state::State;
use exposition::Chunks;
pub use family::unix_seconds;
pub use registry::Metrics;

/// Content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Metrics {
    /// The whole exposition: the registry's families, then the per-task families.
    pub fn render(&self, state: &State) -> String {
        let mut all = String::new();
        self.render_chunked(state, 1 << 20, &mut |chunk| {
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
        let mut out = Chunks::new(chunk_bytes, emit);
        let families = self.registry().gather();
        let mut buf = Vec::with_capacity(16 * 1024);
        // Encoding our own registry into a Vec cannot fail: every family is well-formed.
        if TextEncoder::new().encode(&families, &mut buf).is_ok() {
            out.text().push_str(&String::from_utf8_lossy(&buf));
        }
        self.tasks.render(&mut out, state);
        out.finish()
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::testing::{tasks_text, valid_line, TASK};
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
        let task = TaskSpec {
            id: TaskId::parse(TASK).expect("valid id"),
            name: String::new(),
            labels: TaskLabels::default(),
        };
        let state = State::new(WatchList {
            discovered: 0,
            tasks: vec![task].into(),
            label_keys: Vec::new(),
            limits: Limits {
                max_label_length: 64,
                max_label_values: 100,
                file_info_zones: [true; 6],
                ..Limits::default()
            },
        });
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
}

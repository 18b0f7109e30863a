//! The synthetic fleet of `fleet.rs` as the exporter's own types, shared by the benches:
//! decoded downloads, task ids, poll reports and a state of named, labelled tasks; and the
//! benches' criterion settings.

#![allow(dead_code)] // each bench uses its own subset

use std::time::{Duration, SystemTime};

use criterion::Criterion;
use krs_exporter::config::{TaskId, TaskLabels, TaskSpec};
use krs_exporter::sandbox::Download;
use krs_exporter::state::{Limits, PollReport, State, WatchList};
use krs_exporter::zone::DangerZone;

use crate::fleet;

/// Task `n`'s files as the decoder would produce them.
pub fn downloads(n: u64) -> Vec<Download> {
    let id = fleet::task_id(n);
    fleet::files(n)
        .into_iter()
        .map(|f| Download {
            zone: DangerZone::parse_lenient(f.zone),
            md5: fleet::fake_hex(&id, &f.name, 1, 32),
            sha1: fleet::fake_hex(&id, &f.name, 2, 40),
            sha256: fleet::fake_hex(&id, &f.name, 3, 64),
            detection_names: f.detections.iter().map(|d| d.to_string()).collect(),
            name: f.name,
            size: f.size,
            file_type: f.file_type.to_string(),
            is_https: f.https,
            yara_rules: f.yara.iter().map(|r| r.to_string()).collect(),
        })
        .collect()
}

pub fn fleet_task_id(n: u64) -> TaskId {
    TaskId::parse(&fleet::task_id(n)).expect("fleet ids are GUIDs")
}

/// A state watching tasks `0..n` (named, with a `team` label, as in the load harness), every
/// task polled once when `polled`.
pub fn fleet_state(n: u64, polled: bool) -> State {
    let tasks: Vec<TaskSpec> = (0..n)
        .map(|i| TaskSpec {
            id: fleet_task_id(i),
            name: fleet::task_name(i),
            labels: TaskLabels::from([("team".to_string(), fleet::team(i).to_string())]),
        })
        .collect();
    let mut file_info_zones = [false; 6];
    file_info_zones[DangerZone::Red.index()] = true;
    let state = State::new(WatchList {
        discovered: 0,
        tasks: tasks.into(),
        label_keys: vec!["team".to_string()],
        // The configuration defaults (docs/configuration.md).
        limits: Limits {
            max_label_length: 128,
            max_label_values: 100,
            file_info_zones,
            ..Limits::default()
        },
    });
    if polled {
        for i in 0..n {
            state.apply(report(&fleet_task_id(i), downloads(i)));
        }
    }
    state
}

pub fn report(task: &TaskId, files: Vec<Download>) -> PollReport {
    PollReport {
        task: task.clone(),
        finished: SystemTime::now(),
        status: Some(200),
        result: Ok(files.into()),
        life: None,
    }
}

/// Few samples (10, 2 s each), so a bench run finishes in about a minute on a noisy machine.
pub fn quick() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

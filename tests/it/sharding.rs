//! Three shard replicas together export exactly what one unsharded exporter does.

use std::collections::BTreeSet;

use krs_exporter::shard::Shard;
use krs_sandbox_sim::{SimFile, SimTask};

use crate::support::{id, within, ConfigYaml, Exporter, Sandbox, Scrape};

/// Per-task series as comparable text, without the time-dependent ones.
fn task_series(s: &Scrape) -> BTreeSet<String> {
    s.samples
        .iter()
        .filter(|x| {
            (x.name.starts_with("krs_task_") || x.name == "krs_download_info")
                && !x.name.ends_with("_timestamp_seconds")
        })
        .map(|x| format!("{}{:?} {}", x.name, x.labels, x.value))
        .collect()
}

fn polled_tasks(s: &Scrape) -> BTreeSet<String> {
    s.matching("krs_task_up", &[])
        .iter()
        .map(|x| x.labels["task_id"].clone())
        .collect()
}

#[tokio::test]
async fn three_shards_poll_every_task_once_and_together_equal_one_unsharded_exporter() {
    within(async {
        let tasks: Vec<String> = (100..130).map(id).collect();
        let sim_tasks = tasks
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let zone = ["Red", "Yellow", "Green"][i % 3];
                SimTask::new(t)
                    .file(SimFile::new(&format!("f{i}.bin"), zone).yara(&format!("R{}", i % 4)))
            })
            .collect();
        let sandbox = Sandbox::start(sim_tasks).await;
        let refs: Vec<&str> = tasks.iter().map(String::as_str).collect();
        let yaml = ConfigYaml::new(&sandbox.url(), &refs).render();

        let mut shards = Vec::new();
        for i in 0..3 {
            let shard = Shard::parse(&format!("krs-exporter-{i}"), 3).unwrap();
            shards.push(Exporter::start_shard(&yaml, shard).await);
        }
        let mut union = BTreeSet::new();
        let mut owned = BTreeSet::new();
        let mut watched = 0.0;
        for (i, exporter) in shards.iter().enumerate() {
            let s = exporter
                .scrape_until("the shard polled all its tasks", |s| {
                    s.value("krs_watched_tasks", &[]).is_some_and(|n| {
                        s.count("krs_task_up", &[]) as f64 == n
                            && s.matching("krs_task_up", &[])
                                .iter()
                                .all(|x| x.value == 1.0)
                    })
                })
                .await;
            assert_eq!(s.value("krs_shard_index", &[]), Some(i as f64));
            assert_eq!(s.value("krs_shards", &[]), Some(3.0));
            watched += s.value_or_zero("krs_watched_tasks", &[]);
            let mine = polled_tasks(&s);
            assert!(!mine.is_empty(), "shard {i} owns no task of 30");
            assert!(owned.is_disjoint(&mine), "a task is polled by two shards");
            owned.extend(mine);
            union.extend(task_series(&s));
        }
        assert_eq!(watched, 30.0);
        assert_eq!(owned.len(), 30, "every task is polled by some shard");

        let whole = Exporter::start(&yaml).await;
        let s = whole
            .scrape_until("the unsharded exporter polled everything", |s| {
                s.count("krs_task_up", &[]) == 30
                    && s.matching("krs_task_up", &[])
                        .iter()
                        .all(|x| x.value == 1.0)
            })
            .await;
        assert_eq!(union, task_series(&s));
    })
    .await;
}

//! `--storage.path`: the real binary restarted, killed with SIGKILL, given a damaged store or
//! a directory another process holds.

use std::collections::BTreeMap;
use std::time::Duration;

use krs_sandbox_sim::{Endpoint, SimFile, SimTask};

use crate::support::exposition::Scrape;
use crate::support::*;

const ZONES: [&str; 5] = ["Red", "Orange", "Yellow", "Grey", "Green"];
const RULES: [&str; 3] = ["Cobalt_Strike_Beacon", "Emotet_Loader", "Generic_Dropper"];

/// What a scrape says of the fleet counters: `krs_downloads_total` by zone and
/// `krs_yara_hits_total` by rule.
fn counters(scrape: &Scrape) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for zone in ZONES {
        out.insert(
            format!("downloads/{zone}"),
            scrape.value_or_zero("krs_downloads_total", &[("danger_zone", zone)]),
        );
    }
    for rule in RULES {
        out.insert(
            format!("yara/{rule}"),
            scrape.value_or_zero("krs_yara_hits_total", &[("rule", rule)]),
        );
    }
    out
}

/// A scrape of `process`, if it answers and is the exporter watching `task`: its port was
/// free when it was picked, but in a busy test run another process may hold it by the time the
/// exporter binds (the exporter then exits, and whatever holds the port is not ours).
async fn scrape_of(process: &Process, task: &str) -> Option<Scrape> {
    let response = reqwest::Client::new()
        .get(process.url("/metrics"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    if response.status() != 200 {
        return None;
    }
    let scrape = Scrape::parse(&response.text().await.ok()?);
    (scrape.count("krs_task_info", &[("task_id", task)]) == 1).then_some(scrape)
}

/// A small deterministic generator: the kill moments vary with the seed, printed on failure.
struct Moments(u64);

impl Moments {
    fn next(&mut self, max: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        max.mul_f64((self.0 % 10_000) as f64 / 10_000.0)
    }
}

#[tokio::test]
async fn a_kill_9_at_random_moments_never_loses_or_double_counts_a_file() {
    within(async {
        // Twelve tasks, empty at their first poll (the baseline), then 60 files appearing
        // from 6 s to about 36 s, some with YARA rules: the ground truth is every file.
        let mut truth: BTreeMap<String, f64> = counters(&Scrape::parse(""));
        let mut tasks = Vec::new();
        let mut ids = Vec::new();
        for t in 0..12u32 {
            let task_id = id(400 + t);
            let mut task = SimTask::new(&task_id);
            for f in 0..5u32 {
                let n = t * 5 + f;
                let zone = ZONES[(n % 5) as usize];
                let mut file = SimFile::new(&format!("file-{n}.bin"), zone)
                    .sha256(&format!("{n:064x}"))
                    .after(Duration::from_millis(6_000 + u64::from(n) * 500));
                *truth.get_mut(&format!("downloads/{zone}")).unwrap() += 1.0;
                if n % 3 == 0 {
                    let rule = RULES[(n / 3 % 3) as usize];
                    file = file.yara(rule);
                    *truth.get_mut(&format!("yara/{rule}")).unwrap() += 1.0;
                }
                task = task.file(file);
            }
            tasks.push(task);
            ids.push(task_id);
        }
        let sandbox = Sandbox::start(tasks).await;
        let started = std::time::Instant::now();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let yaml = ConfigYaml::new(&sandbox.url(), &refs).render();
        let storage = tempfile::tempdir().unwrap();

        // The baseline, kept: every task polled once and the store closed cleanly.
        let mut first = Process::spawn_stateful(&yaml, storage.path(), &[]);
        let ready = first.url("/-/ready");
        eventually("the first run is ready", || async {
            let r = reqwest::get(&ready).await.ok()?;
            (r.status() == 200).then_some(())
        })
        .await;
        first.signal("TERM");
        assert!(first.wait_exit(Duration::from_secs(10)).await.success());
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "the baseline must precede the first file"
        );

        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        let mut moments = Moments(seed);
        let mut highest: BTreeMap<String, f64> = BTreeMap::new();
        let mut kills = 0;
        let mut scrapes = 0;
        // What each killed run said of its store, for a failure's message.
        let mut logs: Vec<String> = Vec::new();
        let store_lines = |log: &str| -> String {
            log.lines()
                .filter(|l| l.contains("store") || l.contains("restored") || l.contains("level=error"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        // Until every file has appeared: up for a random while, killed, down for a random
        // while (files appear meanwhile), again.
        while started.elapsed() < Duration::from_secs(38) {
            let process = Process::spawn_stateful(&yaml, storage.path(), &[]);
            let up_for = Duration::from_millis(200) + moments.next(Duration::from_millis(2_500));
            let until = std::time::Instant::now() + up_for;
            while std::time::Instant::now() < until {
                if let Some(scrape) = scrape_of(&process, &ids[0]).await {
                    scrapes += 1;
                    for (series, value) in counters(&scrape) {
                        let seen = highest.entry(series.clone()).or_insert(0.0);
                        assert!(
                            value >= *seen,
                            "{series} went down from {seen} to {value} (seed {seed}); this run:\n{}\nthe run before:\n{}",
                            store_lines(&process.stderr()),
                            logs.last().map(String::as_str).unwrap_or("")
                        );
                        *seen = value;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            process.signal("KILL");
            logs.push(store_lines(&process.stderr()));
            drop(process);
            kills += 1;
            tokio::time::sleep(moments.next(Duration::from_millis(1_500))).await;
        }

        // Every file has appeared: the last run counts what the killed ones did not.
        let last = Process::spawn_stateful(&yaml, storage.path(), &[]);
        let settled = eventually("the counters reach the ground truth", || async {
            let scrape = scrape_of(&last, &ids[0]).await?;
            let now = counters(&scrape);
            for (series, value) in &now {
                assert!(
                    *value <= truth[series],
                    "{series} is {value}, above the truth {} (seed {seed})",
                    truth[series]
                );
            }
            (now == truth).then_some(scrape)
        })
        .await;
        // Further polls add nothing: no file is counted twice.
        let polls = settled.value_or_zero("krs_polls_total", &[]);
        let later = eventually("a few more rounds of polls", || async {
            let scrape = scrape_of(&last, &ids[0]).await?;
            (scrape.value_or_zero("krs_polls_total", &[]) >= polls + 36.0).then_some(scrape)
        })
        .await;
        assert_eq!(counters(&later), truth, "seed {seed}");
        assert!(kills >= 8, "only {kills} kills");
        assert!(scrapes >= 20, "only {scrapes} scrapes");
    })
    .await;
}

#[tokio::test]
async fn a_restart_serves_the_last_series_at_once_even_while_the_sandbox_is_down() {
    within(async {
        let task = id(420);
        let sandbox = Sandbox::start(vec![SimTask::new(&task)
            .file(SimFile::new("payload.exe", "Red").sha256(&"ab".repeat(32)))
            .file(
                SimFile::new("later.exe", "Red")
                    .sha256(&"cd".repeat(32))
                    .after(Duration::from_millis(1500)),
            )])
        .await;
        let yaml = ConfigYaml::new(&sandbox.url(), &[&task]).render();
        let storage = tempfile::tempdir().unwrap();
        let mut first = Process::spawn_stateful(&yaml, storage.path(), &[]);
        let red = [("task_id", task.as_str()), ("danger_zone", "Red")];
        eventually("the second file is counted", || async {
            let s = scrape_of(&first, &task).await?;
            (s.value_or_zero("krs_downloads_total", &[("danger_zone", "Red")]) == 1.0
                && s.value_or_zero("krs_task_downloads", &red) == 2.0)
                .then_some(())
        })
        .await;
        let last_success = scrape_of(&first, &task)
            .await
            .and_then(|s| {
                s.value(
                    "krs_task_last_success_timestamp_seconds",
                    &[("task_id", &task)],
                )
            })
            .expect("polled");
        first.signal("TERM");
        assert!(first.wait_exit(Duration::from_secs(10)).await.success());
        sandbox.stop().await;

        let second = Process::spawn_stateful(&yaml, storage.path(), &[]);
        second.wait_healthy().await;
        let ready = reqwest::get(second.url("/-/ready")).await.unwrap();
        assert_eq!(ready.status(), 200, "restored, so ready before any poll");
        let scrape = scrape_of(&second, &task).await.expect("a scrape");
        assert_eq!(scrape.value_or_zero("krs_task_downloads", &red), 2.0);
        // The last success is the first run's (a poll of the stopped sandbox may have failed
        // since, which keeps the last snapshot's series and sets only `up` to 0).
        // (A poll between that scrape and the stop may have succeeded once more.)
        let restored = scrape.value(
            "krs_task_last_success_timestamp_seconds",
            &[("task_id", &task)],
        );
        assert!(
            restored >= Some(last_success),
            "{restored:?} < {last_success}"
        );
        assert_eq!(
            scrape.value_or_zero("krs_downloads_total", &[("danger_zone", "Red")]),
            1.0
        );
        assert_eq!(scrape.value("krs_storage_restored_tasks", &[]), Some(1.0));
        assert_eq!(
            scrape.value("krs_storage_write_failures_total", &[]),
            Some(0.0)
        );
    })
    .await;
}

#[tokio::test]
async fn a_second_exporter_on_the_same_storage_directory_exits_2_naming_it() {
    within(async {
        let task = id(421);
        let sandbox = Sandbox::start(vec![SimTask::new(&task)]).await;
        let yaml = ConfigYaml::new(&sandbox.url(), &[&task]).render();
        let storage = tempfile::tempdir().unwrap();
        let first = Process::spawn_stateful(&yaml, storage.path(), &[]);
        first.wait_healthy().await;
        let mut second = Process::spawn_stateful(&yaml, storage.path(), &[]);
        let status = second.wait_exit(Duration::from_secs(10)).await;
        assert_eq!(status.code(), Some(2), "{}", second.stderr());
        let stderr = second.stderr();
        assert!(
            stderr.contains(&storage.path().display().to_string())
                && stderr.contains("in use by another krs-exporter process"),
            "{stderr}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_damaged_store_is_moved_aside_and_the_exporter_starts_from_a_new_baseline() {
    within(async {
        let task = id(422);
        let sandbox =
            Sandbox::start(vec![SimTask::new(&task).file(SimFile::new("a", "Red"))]).await;
        let yaml = ConfigYaml::new(&sandbox.url(), &[&task]).render();
        let storage = tempfile::tempdir().unwrap();
        let file = storage.path().join("krs-exporter.redb");
        std::fs::write(&file, b"\x00garbage, not a database").unwrap();
        let process = Process::spawn_stateful(&yaml, storage.path(), &[]);
        // Polled, and the new baseline kept in the fresh file.
        let scrape = eventually("the task is polled and kept", || async {
            let s = scrape_of(&process, &task).await?;
            (s.value_or_zero(
                "krs_task_downloads",
                &[("task_id", &task), ("danger_zone", "Red")],
            ) == 1.0
                && s.value_or_zero("krs_storage_writes_total", &[]) >= 1.0)
                .then_some(s)
        })
        .await;
        assert_eq!(scrape.value("krs_storage_restored_tasks", &[]), Some(0.0));
        // The baseline: the file present at the first poll is not counted.
        assert_eq!(
            scrape.value_or_zero("krs_downloads_total", &[("danger_zone", "Red")]),
            0.0
        );
        let aside: Vec<String> = std::fs::read_dir(storage.path())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("krs-exporter.redb.corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
        let kept = std::fs::read(storage.path().join(&aside[0])).unwrap();
        assert!(kept.starts_with(b"\x00garbage"));
        let stderr = process.stderr();
        assert!(
            stderr.contains("level=error") && stderr.contains("moved aside"),
            "{stderr}"
        );
    })
    .await;
}

#[tokio::test]
async fn settled_tasks_stay_settled_across_a_restart_instead_of_being_polled_in_a_burst() {
    within(async {
        let ids: Vec<String> = (0..20).map(|n| id(430 + n)).collect();
        let sandbox = Sandbox::start(
            ids.iter()
                .map(|t| {
                    SimTask::new(t)
                        .state_at(Duration::ZERO, "completed")
                        .file(SimFile::new("a.exe", "Red"))
                })
                .collect(),
        )
        .await;
        let mut config = ConfigYaml::new(&sandbox.url(), &[]).discover(DiscoveryYaml::default());
        config.interval = "2s";
        config.settled_interval = Some("1h");
        let yaml = config.render();
        let storage = tempfile::tempdir().unwrap();
        let first = Exporter::start_stateful(&yaml, storage.path()).await;
        first
            .scrape_until("every task polled", |s| s.count("krs_task_up", &[]) == 20)
            .await;
        // Polled once completion was known: settled. Two more reads of the list confirm it.
        let reads = sandbox.sim.requests_to(Endpoint::List);
        eventually("two more reads of the task list", || async {
            (sandbox.sim.requests_to(Endpoint::List) >= reads + 2).then_some(())
        })
        .await;
        first.stop().await;

        let before = sandbox.sim.requests_to(Endpoint::Downloads);
        let second = Exporter::start_stateful(&yaml, storage.path()).await;
        let scrape = second.scrape().await;
        assert_eq!(
            scrape.count("krs_task_up", &[]),
            20,
            "restored before any poll"
        );
        assert_eq!(scrape.value("krs_storage_restored_tasks", &[]), Some(20.0));
        let reads = sandbox.sim.requests_to(Endpoint::List);
        eventually("three reads of the task list after the restart", || async {
            (sandbox.sim.requests_to(Endpoint::List) >= reads + 3).then_some(())
        })
        .await;
        // Without the store all twenty would be polled within an interval (2 s); settled,
        // they spread over the settled interval (1 h).
        let polled = sandbox.sim.requests_to(Endpoint::Downloads) - before;
        assert!(
            polled <= 2,
            "{polled} downloads requests right after the restart"
        );
    })
    .await;
}

#[tokio::test]
async fn a_task_dropped_from_the_configuration_while_down_leaves_the_store() {
    within(async {
        let (kept, dropped) = (id(450), id(451));
        let sandbox = Sandbox::start(vec![SimTask::new(&kept), SimTask::new(&dropped)]).await;
        let both = ConfigYaml::new(&sandbox.url(), &[&kept, &dropped]).render();
        let one = ConfigYaml::new(&sandbox.url(), &[&kept]).render();
        let storage = tempfile::tempdir().unwrap();
        let restored = |s: &Scrape| s.value_or_zero("krs_storage_restored_tasks", &[]);
        let first = Exporter::start_stateful(&both, storage.path()).await;
        first
            .scrape_until("both polled", |s| s.count("krs_task_up", &[]) == 2)
            .await;
        first.stop().await;
        let second = Exporter::start_stateful(&one, storage.path()).await;
        assert_eq!(restored(&second.scrape().await), 1.0);
        second.stop().await;
        let third = Exporter::start_stateful(&both, storage.path()).await;
        let scrape = third.scrape().await;
        // (The re-added task may already be polled anew by now; it was not restored.)
        assert_eq!(
            restored(&scrape),
            1.0,
            "the dropped task's record was removed"
        );
    })
    .await;
}

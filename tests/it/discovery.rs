//! Following the sandbox's task lifecycle: tasks found through the task list, each polled at the
//! pace its state deserves, as a user sees it in the scrape and at the appliance.

use std::collections::BTreeSet;
use std::time::Duration;

use krs_exporter::shard::Shard;
use krs_sandbox_sim::{Appliance, Endpoint, Fault, Offset, Sample, Scenario, SimFile, SimTask};

use crate::support::{
    eventually, id, within, ConfigYaml, DiscoveryYaml, Exporter, Sandbox, Scrape, PASSWORD, USER,
};

/// A configuration that watches only what the task list shows.
fn discovering(sandbox: &Sandbox, discovery: DiscoveryYaml) -> ConfigYaml {
    ConfigYaml::new(&sandbox.url(), &[]).discover(discovery)
}

/// The ids of the tasks in the watch list.
fn watched(s: &Scrape) -> BTreeSet<String> {
    s.matching("krs_task_info", &[])
        .iter()
        .map(|x| x.labels["task_id"].clone())
        .collect()
}

/// A task with the given sample name, otherwise finished and empty.
fn sample_named(task: &str, name: &str) -> SimTask {
    SimTask::new(task).sample(Sample {
        original_file_name: Some(name.to_owned()),
        ..Sample::default()
    })
}

fn state(s: &Scrape, task: &str, state: &str) -> Option<f64> {
    s.value("krs_task_state", &[("task_id", task), ("state", state)])
}

#[tokio::test]
async fn discovered_tasks_carry_the_source_label_their_cleaned_sample_name_and_the_discovery_labels(
) {
    within(async {
        let (plain, hostile) = (id(700), id(701));
        let sandbox = Sandbox::start(vec![
            sample_named(&plain, "invoice.docm"),
            sample_named(&hostile, "a\"b<script>x</script>\nc\\d.exe"),
        ])
        .await;
        let discovery = DiscoveryYaml {
            labels: vec![("team", "soc")],
            ..DiscoveryYaml::default()
        };
        let exporter = Exporter::start(&discovering(&sandbox, discovery).render()).await;
        let s = exporter
            .scrape_until("both listed tasks watched", |s| {
                s.count("krs_task_info", &[]) == 2
                    && s.value("krs_discovery_tasks", &[]) == Some(2.0)
            })
            .await;
        let info = |task: &str| s.matching("krs_task_info", &[("task_id", task)])[0].clone();
        let plain_info = info(&plain);
        assert_eq!(plain_info.labels["name"], "invoice.docm");
        assert_eq!(plain_info.labels["source"], "discovered");
        assert_eq!(plain_info.labels["team"], "soc");
        let name = &info(&hostile).labels["name"];
        assert!(!name.contains('\n'), "{name:?}");
        assert_eq!(name, "a\"b<script>x</script>\u{FFFD}c\\d.exe");
        assert_eq!(s.value("krs_discovery_tasks", &[]), Some(2.0));
        assert_eq!(s.value("krs_discovery_truncated_tasks", &[]), Some(0.0));
        assert_eq!(s.value("krs_discovery_interval_seconds", &[]), Some(1.0));
        assert!(s
            .value("krs_discovery_last_success_timestamp_seconds", &[])
            .is_some());
        assert_eq!(s.value("krs_watched_tasks", &[]), Some(2.0));
    })
    .await;
}

#[tokio::test]
async fn a_configured_task_the_list_also_shows_is_one_task_with_its_configured_name() {
    within(async {
        let (configured, other) = (id(702), id(703));
        let sandbox = Sandbox::start(vec![
            sample_named(&configured, "sample-name.exe"),
            sample_named(&other, "other.exe"),
        ])
        .await;
        let entry = format!("{{id: {configured}, name: configured-name, labels: {{case: IR-7}}}}");
        let config = ConfigYaml::new(&sandbox.url(), &[&entry]).discover(DiscoveryYaml::default());
        let exporter = Exporter::start(&config.render()).await;
        let s = exporter
            .scrape_until("the other task discovered", |s| {
                s.count("krs_task_info", &[("task_id", &other)]) == 1
                    && s.value("krs_discovery_tasks", &[]) == Some(1.0)
            })
            .await;
        let series = s.matching("krs_task_info", &[("task_id", &configured)]);
        assert_eq!(series.len(), 1, "{}", s.text);
        assert_eq!(series[0].labels["name"], "configured-name");
        assert_eq!(series[0].labels["source"], "static");
        assert_eq!(series[0].labels["case"], "IR-7");
        assert_eq!(s.value("krs_watched_tasks", &[]), Some(2.0));
        assert_eq!(s.value("krs_discovery_tasks", &[]), Some(1.0));
    })
    .await;
}

#[tokio::test]
async fn only_tasks_whose_sample_is_in_the_configured_zones_are_discovered() {
    within(async {
        let (red, green) = (id(704), id(705));
        let sandbox = Sandbox::start(vec![
            SimTask::new(&red).sample_zone("Red"),
            SimTask::new(&green).sample_zone("Green"),
        ])
        .await;
        let discovery = DiscoveryYaml {
            zones: vec!["Red"],
            ..DiscoveryYaml::default()
        };
        let exporter = Exporter::start(&discovering(&sandbox, discovery).render()).await;
        let s = exporter
            .scrape_until("the task list read", |s| {
                s.value("krs_discovery_last_success_timestamp_seconds", &[])
                    .is_some()
            })
            .await;
        assert_eq!(watched(&s), BTreeSet::from([red]));
        assert_eq!(s.value("krs_discovery_tasks", &[]), Some(1.0));
    })
    .await;
}

#[tokio::test]
async fn max_tasks_keeps_the_newest_and_counts_the_cut() {
    within(async {
        // Task 710 is the oldest (5 minutes), 714 the newest (1 minute).
        let tasks: Vec<String> = (710..715).map(id).collect();
        let sim = tasks
            .iter()
            .enumerate()
            .map(|(i, t)| {
                SimTask::new(t).created(Offset::before(Duration::from_secs(60 * (5 - i as u64))))
            })
            .collect();
        let sandbox = Sandbox::start(sim).await;
        let discovery = DiscoveryYaml {
            max_tasks: Some(2),
            page_size: Some(2),
            ..DiscoveryYaml::default()
        };
        let exporter = Exporter::start(&discovering(&sandbox, discovery).render()).await;
        let s = exporter
            .scrape_until("the task list read", |s| {
                s.value("krs_discovery_last_success_timestamp_seconds", &[])
                    .is_some()
            })
            .await;
        assert_eq!(
            watched(&s),
            BTreeSet::from([tasks[3].clone(), tasks[4].clone()])
        );
        assert_eq!(s.value("krs_discovery_tasks", &[]), Some(2.0));
        assert_eq!(s.value("krs_discovery_truncated_tasks", &[]), Some(3.0));
    })
    .await;
}

#[tokio::test]
async fn tasks_created_before_the_lookback_are_not_watched() {
    within(async {
        let (recent, old) = (id(720), id(721));
        let sandbox = Sandbox::start(vec![
            SimTask::new(&recent).created(Offset::before(Duration::from_secs(600))),
            SimTask::new(&old).created(Offset::before(Duration::from_secs(7200))),
        ])
        .await;
        let discovery = DiscoveryYaml {
            lookback: Some("1h"),
            ..DiscoveryYaml::default()
        };
        let exporter = Exporter::start(&discovering(&sandbox, discovery).render()).await;
        let s = exporter
            .scrape_until("the task list read", |s| {
                s.value("krs_discovery_last_success_timestamp_seconds", &[])
                    .is_some()
            })
            .await;
        assert_eq!(watched(&s), BTreeSet::from([recent]));
        assert_eq!(sandbox.sim.requests(&old), 0);
    })
    .await;
}

#[tokio::test]
async fn a_failing_read_of_the_task_list_keeps_the_tasks_discovered_before() {
    within(async {
        let (a, b) = (id(730), id(731));
        let sandbox = Sandbox::start(vec![SimTask::new(&a), SimTask::new(&b)]).await;
        let exporter =
            Exporter::start(&discovering(&sandbox, DiscoveryYaml::default()).render()).await;
        let before = exporter
            .scrape_until("both tasks discovered", |s| {
                s.value("krs_discovery_tasks", &[]) == Some(2.0)
            })
            .await;
        let last_success = before.value("krs_discovery_last_success_timestamp_seconds", &[]);
        sandbox
            .sim
            .push_endpoint_faults(Endpoint::List, vec![Fault::status(500).times(1000)]);
        let s = exporter
            .scrape_until("two reads of the list failed", |s| {
                s.value_or_zero(
                    "krs_api_requests_total",
                    &[("endpoint", "tasks"), ("code", "500")],
                ) >= 2.0
            })
            .await;
        assert_eq!(watched(&s), BTreeSet::from([a, b]));
        assert_eq!(s.value("krs_discovery_tasks", &[]), Some(2.0));
        assert_eq!(
            s.value("krs_discovery_last_success_timestamp_seconds", &[]),
            last_success,
            "the age of the last success says the list is failing"
        );
    })
    .await;
}

#[tokio::test]
async fn a_detonating_task_is_polled_at_the_active_pace_while_a_completed_one_settles() {
    within(async {
        let (detonating, done) = (id(740), id(741));
        let sandbox = Sandbox::start(vec![
            SimTask::new(&detonating).state_at(Duration::ZERO, "processing"),
            SimTask::new(&done).state_at(Duration::ZERO, "completed"),
        ])
        .await;
        let mut config = discovering(&sandbox, DiscoveryYaml::default());
        config.interval = "2s";
        config.active_interval = Some("1s");
        config.settled_interval = Some("1h");
        let exporter = Exporter::start(&config.render()).await;
        exporter
            .scrape_until("both tasks polled", |s| {
                s.count("krs_task_up", &[]) == 2
                    && state(s, &detonating, "processing") == Some(1.0)
                    && state(s, &done, "completed") == Some(1.0)
            })
            .await;
        let (active0, settled0) = (
            sandbox.sim.requests(&detonating),
            sandbox.sim.requests(&done),
        );
        eventually("four more polls of the detonating task", || async {
            (sandbox.sim.requests(&detonating) >= active0 + 4).then_some(())
        })
        .await;
        let settled = sandbox.sim.requests(&done) - settled0;
        assert!(
            settled <= 1,
            "the completed task was polled {settled} times"
        );
        assert_eq!(
            sandbox.sim.requests_to(Endpoint::Task),
            0,
            "listed tasks need no parameter requests"
        );
    })
    .await;
}

#[tokio::test]
async fn completion_gets_a_prompt_final_poll_that_exports_the_file_appearing_with_it() {
    within(async {
        let task = id(750);
        let at = Duration::from_secs(3);
        let sandbox = Sandbox::start(vec![SimTask::new(&task)
            .state_at(Duration::ZERO, "processing")
            .state_at(at, "completed")
            .file(SimFile::new("late.exe", "Red").after(at))])
        .await;
        let mut config = discovering(&sandbox, DiscoveryYaml::default());
        config.interval = "1m";
        config.active_interval = Some("1s");
        config.settled_interval = Some("1h");
        let exporter = Exporter::start(&config.render()).await;
        exporter
            .scrape_until("the file appearing at completion", |s| {
                s.value(
                    "krs_task_downloads",
                    &[("task_id", &task), ("danger_zone", "Red")],
                ) == Some(1.0)
            })
            .await;
        let elapsed = sandbox.sim.elapsed();
        assert!(
            elapsed < at + Duration::from_secs(5),
            "exported {elapsed:?} after start, completion at {at:?}"
        );
        exporter
            .scrape_until("the completion seen", |s| {
                state(s, &task, "completed") == Some(1.0)
            })
            .await;
        let polls = sandbox.sim.requests(&task);
        let reads = sandbox.sim.requests_to(Endpoint::List);
        eventually("three more reads of the task list", || async {
            (sandbox.sim.requests_to(Endpoint::List) >= reads + 3).then_some(())
        })
        .await;
        let more = sandbox.sim.requests(&task) - polls;
        assert!(more <= 1, "a settled task was polled {more} more times");
    })
    .await;
}

#[tokio::test]
async fn a_deleted_task_loses_its_download_series_while_its_state_says_deleted() {
    within(async {
        let task = id(760);
        let sandbox = Sandbox::start(vec![
            SimTask::new(&task).file(SimFile::new("drop.exe", "Red"))
        ])
        .await;
        let exporter =
            Exporter::start(&discovering(&sandbox, DiscoveryYaml::default()).render()).await;
        exporter
            .scrape_until("the Red file exported", |s| {
                s.count("krs_download_info", &[("task_id", &task)]) == 1
            })
            .await;
        sandbox.sim.set_state(&task, "deleted");
        let s = exporter
            .scrape_until("the task reads deleted", |s| {
                state(s, &task, "deleted") == Some(1.0)
            })
            .await;
        assert_eq!(s.count("krs_task_state", &[("task_id", &task)]), 1);
        assert_eq!(s.count("krs_task_downloads", &[("task_id", &task)]), 0);
        assert_eq!(s.count("krs_download_info", &[("task_id", &task)]), 0);
        assert_eq!(s.count("krs_task_info", &[("task_id", &task)]), 1);
    })
    .await;
}

#[tokio::test]
async fn failed_tasks_are_not_polled() {
    within(async {
        let (failed, ok) = (id(770), id(771));
        let sandbox = Sandbox::start(vec![
            SimTask::new(&failed).state_at(Duration::ZERO, "Processing failed"),
            SimTask::new(&ok).state_at(Duration::ZERO, "processing"),
        ])
        .await;
        let exporter =
            Exporter::start(&discovering(&sandbox, DiscoveryYaml::default()).render()).await;
        let s = exporter
            .scrape_until("the failed task's state and two polls of the other", |s| {
                state(s, &failed, "failed") == Some(1.0) && s.count("krs_task_up", &[]) == 1
            })
            .await;
        assert_eq!(s.count("krs_task_up", &[("task_id", &failed)]), 0);
        let polls = sandbox.sim.requests(&ok);
        eventually("two more polls of the processing task", || async {
            (sandbox.sim.requests(&ok) >= polls + 2).then_some(())
        })
        .await;
        assert_eq!(sandbox.sim.requests(&failed), 0);
        assert_eq!(exporter.get("/-/ready").await.0, 200);
    })
    .await;
}

#[tokio::test]
async fn a_configured_task_the_list_does_not_cover_gets_its_state_from_its_parameters() {
    within(async {
        let task = id(780);
        let sandbox = Sandbox::start(vec![
            SimTask::new(&task).state_at(Duration::ZERO, "processing")
        ])
        .await;
        let mut config = ConfigYaml::new(&sandbox.url(), &[&task]);
        config.lifecycle = Some(true);
        let exporter = Exporter::start(&config.render()).await;
        let s = exporter
            .scrape_until("the task's state known", |s| {
                state(s, &task, "processing") == Some(1.0)
            })
            .await;
        assert_eq!(s.value("krs_task_up", &[("task_id", &task)]), Some(1.0));
        assert!(sandbox.sim.requests_to(Endpoint::Task) >= 1);
        assert_eq!(sandbox.sim.requests_to(Endpoint::List), 0);
        assert_eq!(s.count("krs_discovery_tasks", &[]), 0);
    })
    .await;
}

#[tokio::test]
async fn a_sandbox_without_task_parameters_is_asked_once_and_keeps_the_fixed_interval() {
    within(async {
        let task = id(781);
        let sandbox = Sandbox::start(vec![SimTask::new(&task)]).await;
        sandbox
            .sim
            .push_params_faults(&task, vec![Fault::status(404).times(1000)]);
        let mut config = ConfigYaml::new(&sandbox.url(), &[&task]);
        config.lifecycle = Some(true);
        let exporter = Exporter::start(&config.render()).await;
        let s = exporter
            .scrape_until("the first poll", |s| {
                s.value_or_zero("krs_polls_total", &[]) >= 1.0
            })
            .await;
        let polls = s.value_or_zero("krs_polls_total", &[]);
        let s = exporter
            .scrape_until("three more polls at the fixed interval", |s| {
                s.value_or_zero("krs_polls_total", &[]) >= polls + 3.0
            })
            .await;
        assert_eq!(sandbox.sim.requests_to(Endpoint::Task), 1);
        assert_eq!(s.count("krs_task_state", &[]), 0);
        assert_eq!(s.value("krs_task_up", &[("task_id", &task)]), Some(1.0));
    })
    .await;
}

#[tokio::test]
async fn a_repeated_task_is_polled_at_the_active_pace_again() {
    within(async {
        let task = id(790);
        let sandbox = Sandbox::start(vec![
            SimTask::new(&task).state_at(Duration::ZERO, "completed")
        ])
        .await;
        let mut config = discovering(&sandbox, DiscoveryYaml::default());
        config.interval = "2s";
        config.active_interval = Some("1s");
        config.settled_interval = Some("1h");
        let exporter = Exporter::start(&config.render()).await;
        exporter
            .scrape_until("the completed task polled", |s| {
                s.count("krs_task_up", &[("task_id", &task)]) == 1
                    && state(s, &task, "completed") == Some(1.0)
            })
            .await;
        let polls = sandbox.sim.requests(&task);
        let reads = sandbox.sim.requests_to(Endpoint::List);
        eventually("two more reads of the task list", || async {
            (sandbox.sim.requests_to(Endpoint::List) >= reads + 2).then_some(())
        })
        .await;
        assert!(sandbox.sim.requests(&task) <= polls + 1, "settled");

        sandbox.sim.repeat_task(&task, Duration::from_secs(60));
        exporter
            .scrape_until("the repeat seen", |s| {
                state(s, &task, "processing") == Some(1.0)
            })
            .await;
        let polls = sandbox.sim.requests(&task);
        eventually("three polls at the active pace", || async {
            (sandbox.sim.requests(&task) >= polls + 3).then_some(())
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn shards_split_the_discovered_tasks_between_them_without_overlap() {
    within(async {
        let tasks: Vec<String> = (800..820).map(id).collect();
        let sandbox = Sandbox::start(tasks.iter().map(|t| SimTask::new(t)).collect()).await;
        let yaml = discovering(&sandbox, DiscoveryYaml::default()).render();
        let mut owned: Vec<BTreeSet<String>> = Vec::new();
        let mut exporters = Vec::new();
        for i in 0..2 {
            let shard = Shard::parse(&format!("krs-exporter-{i}"), 2).expect("a valid shard");
            exporters.push(Exporter::start_shard(&yaml, shard).await);
        }
        for exporter in &exporters {
            let s = exporter
                .scrape_until("the shard's discovered tasks watched", |s| {
                    s.value("krs_discovery_last_success_timestamp_seconds", &[])
                        .is_some()
                        && s.value("krs_discovery_tasks", &[]) == Some(watched(s).len() as f64)
                })
                .await;
            let mine = watched(&s);
            assert!(!mine.is_empty(), "a shard owns none of 20 tasks");
            owned.push(mine);
        }
        assert!(owned[0].is_disjoint(&owned[1]), "a task is watched twice");
        let union: BTreeSet<String> = owned.into_iter().flatten().collect();
        assert_eq!(union, tasks.into_iter().collect());
    })
    .await;
}

/// A scenario whose task list answers 500 before anything else: no task is ever discovered,
/// and nothing else breaks.
#[tokio::test]
async fn a_task_list_that_never_answers_leaves_the_configured_tasks_polled() {
    within(async {
        let task = id(830);
        let scenario = Scenario::builder()
            .credentials(USER, PASSWORD)
            .task(SimTask::new(&task))
            .task(SimTask::new(&id(831)))
            .appliance(Appliance {
                list_faults: krs_sandbox_sim::EndpointFaults {
                    faults: vec![Fault::status(500)],
                    repeat: true,
                },
                ..Appliance::default()
            })
            .build()
            .expect("a valid scenario");
        let sandbox = Sandbox::with_scenario(scenario).await;
        let config = ConfigYaml::new(&sandbox.url(), &[&task]).discover(DiscoveryYaml::default());
        let exporter = Exporter::start(&config.render()).await;
        let s = exporter
            .scrape_until("the configured task polled after a failed read", |s| {
                s.value("krs_task_up", &[("task_id", &task)]) == Some(1.0)
                    && s.value_or_zero(
                        "krs_api_requests_total",
                        &[("endpoint", "tasks"), ("code", "500")],
                    ) >= 1.0
            })
            .await;
        assert_eq!(watched(&s), BTreeSet::from([task]));
        assert_eq!(s.value("krs_discovery_tasks", &[]), Some(0.0));
        assert_eq!(
            s.count("krs_discovery_last_success_timestamp_seconds", &[]),
            0
        );
    })
    .await;
}

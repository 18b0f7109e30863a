//! The lifecycle endpoints seen from an HTTP client (the task list and its paging, task records,
//! health, version, per-endpoint faults, live changes), and the lifecycle and the generator on
//! the simulator's own clock, without a socket.

use std::time::Duration;

use serde_json::Value;

use super::super::control::State;
use super::super::lifecycle::Offset;
use super::super::records;
use super::{within, Sim};
use crate::*;

const START: &str = "2024-05-01T12:00:00Z";

fn id(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

fn min(m: u64) -> Duration {
    Duration::from_secs(60 * m)
}

/// A scenario with a fixed wall clock, so times can be asserted.
fn fixed(tasks: impl IntoIterator<Item = SimTask>) -> ScenarioBuilder {
    Scenario::builder()
        .appliance(Appliance {
            start_time: Some(humantime::parse_rfc3339(START).unwrap()),
            ..Appliance::default()
        })
        .tasks(tasks)
}

/// A task created `ago` minutes before start that completed a minute later.
fn finished(n: u32, ago: u64) -> SimTask {
    SimTask::new(&id(n))
        .created(Offset::before(min(ago)))
        .state_at(Offset::before(min(ago - 1)), "completed")
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("an array of records")
        .iter()
        .map(|r| r["TaskId"].as_str().unwrap_or_default().to_owned())
        .collect()
}

impl Sim {
    async fn list(&self, query: &str) -> Value {
        let reply = self.get(&format!("/api/v1/sandbox/tasks/?{query}")).await;
        assert_eq!(
            reply.status,
            200,
            "{query}: {:?}",
            String::from_utf8_lossy(&reply.body)
        );
        reply.json()
    }

    async fn params(&self, task: &str) -> super::Reply {
        self.get(&format!("/api/v1/sandbox/tasks/{task}")).await
    }
}

// ---- the task list ------------------------------------------------------------------------------

#[tokio::test]
async fn the_list_pages_newest_first_and_a_task_created_mid_paging_shifts_the_offsets() {
    within(async {
        let sim = Sim::start(
            fixed((1..=5).map(|n| finished(n, 60 - u64::from(n) * 10)))
                .build()
                .unwrap(),
        )
        .await;
        let first = sim.list("count=2").await;
        assert_eq!(ids(&first), [id(5), id(4)], "newest first by Created");

        // Someone submits a sample between two page requests.
        sim.handle.add_task(
            SimTask::new(&id(6))
                .created(Offset::after(sim.handle.elapsed()))
                .state_at(Offset::after(sim.handle.elapsed()), "processing"),
        );
        let second = sim.list("from=2&count=2").await;
        assert_eq!(
            ids(&second),
            [id(4), id(3)],
            "the new task pushed every offset by one: id 4 comes again"
        );
        let third = sim.list("from=4&count=2").await;
        assert_eq!(ids(&third), [id(2), id(1)]);
        assert_eq!(sim.list("from=6").await, Value::Array(vec![]));
        assert_eq!(ids(&sim.list("count=1").await), [id(6)]);
        assert_eq!(sim.handle.requests_to(Endpoint::List), 5);
    })
    .await;
}

#[tokio::test]
async fn the_list_refuses_a_count_outside_1_to_1500_and_unknown_states() {
    within(async {
        let sim = Sim::start(fixed([finished(1, 10)]).build().unwrap()).await;
        for bad in [
            "count=0",
            "count=1501",
            "count=many",
            "from=-3",
            "status=archived",
            "sort_by=name",
        ] {
            let reply = sim.get(&format!("/api/v1/sandbox/tasks/?{bad}")).await;
            assert_eq!(reply.status, 400, "{bad}");
            assert_eq!(reply.json()["code"], 2, "{bad}");
        }
        assert_eq!(ids(&sim.list("count=1500").await), [id(1)]);
        assert_eq!(
            ids(&sim.get("/api/v1/sandbox/tasks").await.json()),
            [id(1)],
            "no slash too"
        );
    })
    .await;
}

#[tokio::test]
async fn the_list_filters_by_state_and_zone_and_sorts_as_asked() {
    within(async {
        let sim = Sim::start(
            fixed([
                finished(1, 30).file(SimFile::new("a", "Grey")),
                SimTask::new(&id(2))
                    .created(Offset::before(min(20)))
                    .state_at(Offset::before(min(19)), "Processing failed")
                    .file(SimFile::new("b", "Red")),
                SimTask::new(&id(3))
                    .created(Offset::before(min(10)))
                    .state_at(Offset::before(min(9)), "processing")
                    .state_at(Offset::after(min(60)), "completed"),
            ])
            .build()
            .unwrap(),
        )
        .await;
        assert_eq!(
            ids(&sim.list("status=failed").await),
            [id(2)],
            "spelled Processing failed"
        );
        let failed = &sim.list("status=failed").await[0];
        assert_eq!(failed["TaskState"], "Processing failed", "sent as spelled");
        assert_eq!(failed["ErrorCode"], "ProcessingFailed");
        assert_eq!(ids(&sim.list("status=Processing").await), [id(3)]);
        assert_eq!(ids(&sim.list("zone=Gray").await), [id(1)]);
        assert_eq!(
            ids(&sim.list("descending=false").await),
            [id(1), id(2), id(3)]
        );
        assert_eq!(
            ids(&sim.list("sort_by=analyzed").await),
            [id(2), id(1), id(3)],
            "not analysed yet sorts last when descending"
        );
    })
    .await;
}

#[tokio::test]
async fn the_list_can_be_wrapped_and_spelled_in_lower_case() {
    within(async {
        let appliance = Appliance {
            list_format: ListFormat {
                shape: ListShape::Wrapped,
                key_case: KeyCase::Lower,
            },
            ..Appliance::default()
        };
        let sim = Sim::start(
            Scenario::builder()
                .appliance(appliance)
                .task(finished(1, 5))
                .build()
                .unwrap(),
        )
        .await;
        let body = sim.list("").await;
        assert_eq!(body["Tasks"][0]["taskid"], id(1));
        assert_eq!(body["Tasks"][0]["taskstate"], "completed");
    })
    .await;
}

// ---- task records -------------------------------------------------------------------------------

#[tokio::test]
async fn a_task_record_carries_every_key_of_the_contract_with_wall_clock_times() {
    within(async {
        let task = SimTask::new(&id(1))
            .name("invoice")
            .created(Offset::before(min(120)))
            .state_at(Offset::before(min(119)), "created")
            .state_at(Offset::before(min(118)), "processing")
            .state_at(Offset::before(min(100)), "Completed")
            .sample(Sample {
                original_file_name: Some("Invoice 2291.doc".into()),
                file_type: "Microsoft Word".into(),
                ..Sample::default()
            })
            .file(SimFile::new("payload.exe", "Red"));
        let sim = Sim::start(fixed([task]).build().unwrap()).await;
        let reply = sim.params(&id(1)).await;
        assert_eq!(reply.status, 200);
        let r = reply.json();
        let keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        for key in [
            "TaskId",
            "ResultId",
            "TaskState",
            "Created",
            "Processed",
            "Status",
            "Zone",
            "AvBasesVersion",
            "OriginalFileName",
            "FileName",
            "ArchiveName",
            "Extension",
            "Type",
            "Md5",
            "Sha1",
            "Sha256",
            "SsDeep",
        ] {
            assert!(keys.contains(&key), "{key} in {keys:?}");
        }
        assert!(!keys.contains(&"ErrorCode"), "only failed tasks say why");
        assert_eq!(r["TaskState"], "Completed");
        assert_eq!(r["Created"], "2024-05-01T10:00:00Z");
        assert_eq!(r["Processed"], "2024-05-01T10:20:00Z");
        assert_eq!(
            (r["Status"].as_str(), r["Zone"].as_str()),
            (Some("Malware"), Some("Red"))
        );
        assert_eq!(
            r["AvBasesVersion"], "2024-05-01T06:00:00Z",
            "bases 6 h old by default"
        );
        assert_eq!(r["OriginalFileName"], "Invoice 2291.doc");
        assert_eq!(r["FileName"], "Invoice 2291.doc");
        assert_eq!(r["Extension"], "doc");
        assert_eq!(r["Sha256"].as_str().map(str::len), Some(64));
        let result = r["ResultId"].as_str().unwrap();
        assert!(
            result.len() == 36 && result.matches('-').count() == 4,
            "{result} is a GUID"
        );
    })
    .await;
}

#[tokio::test]
async fn a_deleted_task_keeps_its_record_but_loses_its_downloads() {
    within(async {
        let deleted = finished(1, 30)
            .file(SimFile::new("a", "Red"))
            .state_at(Offset::before(min(5)), "deleted");
        let sim = Sim::start(fixed([deleted, finished(2, 20)]).build().unwrap()).await;
        let r = sim.params(&id(1)).await;
        assert_eq!(
            (r.status, r.json()["TaskState"].clone()),
            (200, "deleted".into())
        );
        let d = sim.downloads(&id(1)).await;
        assert_eq!((d.status, d.json()["code"].clone()), (404, 7.into()));
        assert_eq!(ids(&sim.list("status=deleted").await), [id(1)]);
        assert_eq!(
            ids(&sim.list("").await),
            [id(2), id(1)],
            "listed with its state"
        );
    })
    .await;
}

#[tokio::test]
async fn a_task_not_created_yet_is_not_found_anywhere() {
    within(async {
        let later = SimTask::new(&id(1)).created(Offset::after(min(60)));
        let sim = Sim::start(fixed([later]).build().unwrap()).await;
        assert_eq!(sim.params(&id(1)).await.json()["code"], 6);
        assert_eq!(sim.downloads(&id(1)).await.json()["code"], 6);
        assert_eq!(sim.list("").await, Value::Array(vec![]));
    })
    .await;
}

#[tokio::test]
async fn a_task_without_a_timeline_reads_as_before_and_a_gone_task_is_not_listed() {
    within(async {
        let sim = Sim::start(
            fixed([
                SimTask::new(&id(1)).file(SimFile::new("a", "Green")),
                SimTask::new(&id(2)).deleted(),
            ])
            .build()
            .unwrap(),
        )
        .await;
        let list = sim.list("").await;
        assert_eq!(ids(&list), [id(1)]);
        assert_eq!(list[0]["Created"], START, "created at simulator start");
        assert_eq!(list[0]["Status"], "Clean");
        assert_eq!(sim.params(&id(2)).await.json()["code"], 7);
    })
    .await;
}

#[tokio::test]
async fn live_changes_dispose_and_repeat_a_task() {
    within(async {
        let sim = Sim::start(fixed([finished(1, 30), finished(2, 20)]).build().unwrap()).await;
        let before = sim.params(&id(1)).await.json();
        sim.handle.repeat_task(&id(1), Duration::from_secs(3600));
        let again = sim.params(&id(1)).await.json();
        assert_eq!(again["TaskState"], "processing");
        assert_eq!(again["Processed"], "", "the new run is not analysed yet");
        assert_eq!(again["Status"], "Unknown");
        assert_ne!(
            again["ResultId"], before["ResultId"],
            "a repeat has a new ResultId"
        );

        sim.handle.set_state(&id(2), "disposed");
        assert_eq!(sim.params(&id(2)).await.json()["TaskState"], "disposed");
        assert_eq!(sim.downloads(&id(2)).await.json()["code"], 7);
    })
    .await;
}

// ---- health and version -------------------------------------------------------------------------

#[tokio::test]
async fn health_answers_in_each_shape_and_an_incident_makes_it_unhealthy() {
    within(async {
        let sim = Sim::start(Scenario::builder().build().unwrap()).await;
        let h = sim.get("/api/v1/sandbox/health").await.json();
        assert_eq!(h["healthy"], true);
        assert_eq!(
            h["detailed"][0],
            serde_json::json!({"name": "sb_is_dead", "value": false})
        );

        for (shape, check) in [
            (HealthShape::SingleKey, "/detailed/0/sb_is_dead"),
            (HealthShape::Object, "/detailed/sb_is_dead"),
        ] {
            let mut health = Health {
                shape,
                ..Health::default()
            };
            health
                .incidents
                .push(Incident::from(Offset::before(min(1))).check("sb_is_dead", true));
            sim.handle.set_health(health);
            let h = sim.get("/api/v1/sandbox/health").await.json();
            assert_eq!(h["healthy"], false, "{shape:?}");
            assert_eq!(h.pointer(check), Some(&Value::Bool(true)), "{shape:?}: {h}");
        }
        let mut ended = Health::default();
        ended.incidents.push(
            Incident::from(Offset::before(min(10)))
                .until(Offset::before(min(5)))
                .check("ksn_connected", false),
        );
        sim.handle.set_health(ended);
        assert_eq!(
            sim.get("/api/v1/sandbox/health").await.json()["healthy"],
            true
        );
    })
    .await;
}

#[tokio::test]
async fn version_reports_the_system_and_the_age_of_the_bases() {
    within(async {
        let mut appliance = Appliance {
            start_time: Some(humantime::parse_rfc3339(START).unwrap()),
            ..Appliance::default()
        };
        appliance.version.bases = Bases::Age(Duration::from_secs(3 * 86_400));
        let sim = Sim::start(Scenario::builder().appliance(appliance).build().unwrap()).await;
        let v = sim.get("/api/v1/sandbox/version").await.json();
        assert_eq!(
            v,
            serde_json::json!({"system_version": "2.1.0.3000", "bases_version": "2024-04-28T12:00:00Z"})
        );
        sim.handle.set_version(Version {
            system_version: "2.2.0.100".into(),
            bases: Bases::Empty,
        });
        assert_eq!(sim.get("/api/v1/sandbox/version").await.json()["bases_version"], "");
    })
    .await;
}

// ---- faults and counters ------------------------------------------------------------------------

#[tokio::test]
async fn faults_apply_per_endpoint_and_requests_are_counted_per_endpoint() {
    within(async {
        let mut appliance = Appliance::default();
        appliance.list_faults.faults = vec![Fault::status(503).retry_after("7")];
        appliance.version_faults = EndpointFaults {
            faults: vec![Fault::status(500), Fault::pass()],
            repeat: true,
        };
        let sim = Sim::start(
            Scenario::builder()
                .appliance(appliance)
                .task(finished(1, 10).params_fault(Fault::status(429)))
                .build()
                .unwrap(),
        )
        .await;
        let list = sim.get("/api/v1/sandbox/tasks/").await;
        assert_eq!((list.status, list.header("retry-after")), (503, Some("7")));
        assert_eq!(
            sim.get("/api/v1/sandbox/tasks/").await.status,
            200,
            "recovered"
        );
        let statuses: Vec<u16> = {
            let mut v = Vec::new();
            for _ in 0..4 {
                v.push(sim.get("/api/v1/sandbox/version").await.status);
            }
            v
        };
        assert_eq!(statuses, [500, 200, 500, 200], "a repeating list");
        assert_eq!(sim.params(&id(1)).await.status, 429);
        assert_eq!(sim.params(&id(1)).await.status, 200);
        assert_eq!(
            sim.downloads(&id(1)).await.status,
            200,
            "downloads have their own queue"
        );
        sim.handle
            .push_endpoint_faults(Endpoint::Health, vec![Fault::body_text("{}")]);
        assert_eq!(sim.get("/api/v1/sandbox/health").await.body, b"{}");

        assert_eq!(sim.handle.requests_to(Endpoint::List), 2);
        assert_eq!(sim.handle.requests_to(Endpoint::Version), 4);
        assert_eq!(sim.handle.requests_to(Endpoint::Task), 2);
        assert_eq!(sim.handle.requests_to(Endpoint::Downloads), 1);
        assert_eq!(sim.handle.requests_to(Endpoint::Health), 1);
        assert_eq!(
            sim.handle.requests(&id(1)),
            3,
            "both task endpoints name the task"
        );
        let log = sim.handle.request_log();
        assert_eq!(log[0].endpoint, Endpoint::List);
        sim.handle.reset_stats();
        assert_eq!(sim.handle.requests_to(Endpoint::List), 0);
    })
    .await;
}

// ---- the clock, without a socket ----------------------------------------------------------------

fn state(scenario: Scenario) -> State {
    State::new(
        scenario.into_parts(),
        humantime::parse_rfc3339(START).unwrap(),
    )
}

fn record(state: &State, task: &str, at: Duration) -> Option<Value> {
    records::task_params(state, task, at).map(|b| serde_json::from_slice(&b).unwrap())
}

#[test]
fn a_task_uploads_processes_shows_its_files_completes_and_is_repeated_on_the_simulator_clock() {
    let task = SimTask::new(&id(1))
        .created(Duration::from_secs(10))
        .state_at(Duration::from_secs(15), "created")
        .state_at(Duration::from_secs(20), "processing")
        .state_at(Duration::from_secs(80), "completed")
        .repeat(Duration::from_secs(300), Duration::from_secs(60))
        .file(SimFile::new("dropped.exe", "Red").after(Duration::from_secs(50)));
    let s = state(Scenario::builder().task(task).build().unwrap());
    let at = |secs| record(&s, &id(1), Duration::from_secs(secs));
    let field = |secs, key: &str| at(secs).map(|r| r[key].as_str().unwrap_or("").to_owned());
    assert_eq!(at(9), None, "not created yet");
    assert_eq!(field(10, "TaskState").as_deref(), Some("uploading"));
    assert_eq!(field(15, "TaskState").as_deref(), Some("created"));
    assert_eq!(field(49, "Zone").as_deref(), Some("Green"), "no file yet");
    assert_eq!(
        field(50, "Zone").as_deref(),
        Some("Red"),
        "a file appears while detonating"
    );
    assert_eq!(
        field(50, "Status").as_deref(),
        Some("Unknown"),
        "until completed"
    );
    assert_eq!(field(80, "Status").as_deref(), Some("Malware"));
    assert_eq!(
        field(80, "Processed").as_deref(),
        Some("2024-05-01T12:01:20Z")
    );
    let first = field(80, "ResultId");
    assert_eq!(field(300, "TaskState").as_deref(), Some("processing"));
    assert_ne!(field(300, "ResultId"), first);
    assert_eq!(
        field(360, "Processed").as_deref(),
        Some("2024-05-01T12:06:00Z")
    );
}

#[test]
fn the_generator_keeps_only_the_newest_tasks_however_long_it_runs() {
    let generator = Generator::every(Duration::from_secs(20)).keep(50);
    let mut s = state(
        Scenario::builder()
            .generator(generator.clone())
            .build()
            .unwrap(),
    );
    s.catch_up(Offset::after(Duration::from_secs(100)));
    assert_eq!(s.tasks.len(), 6, "tasks 0..=5 by 100 s");
    s.catch_up(Offset::after(Duration::from_secs(7 * 86_400)));
    assert_eq!(s.tasks.len(), 50, "a week later: the newest 50");
    assert_eq!(s.by_created.len(), 50, "the index is bounded too");

    let mut again = state(Scenario::builder().generator(generator).build().unwrap());
    again.catch_up(Offset::after(Duration::from_secs(7 * 86_400)));
    let mut a: Vec<&String> = s.tasks.keys().collect();
    let mut b: Vec<&String> = again.tasks.keys().collect();
    a.sort();
    b.sort();
    assert_eq!(a, b, "deterministic: the same tasks on every run");
}

#[test]
fn generated_tasks_move_through_every_stage_in_the_configured_mix() {
    let generator = Generator::every(Duration::from_secs(10))
        .start(Offset::before(Duration::from_secs(10_000)))
        .keep(2_000)
        .seed(7);
    let mut s = state(Scenario::builder().generator(generator).build().unwrap());
    let now = Duration::from_secs(0);
    s.catch_up(Offset::after(now));
    let list = records::parse_query(Some("count=1500")).unwrap();
    let body: Value = serde_json::from_slice(&records::task_list(&s, &list, now)).unwrap();
    let records = body.as_array().unwrap();
    assert_eq!(
        records.len(),
        1001,
        "10,000 s of history, one task per 10 s, and one now"
    );
    let count = |kind: StateKind| {
        records
            .iter()
            .filter(|r| StateKind::parse(r["TaskState"].as_str().unwrap()) == kind)
            .count()
    };
    let in_flight =
        count(StateKind::Uploading) + count(StateKind::Created) + count(StateKind::Processing);
    assert!(
        (5..=9).contains(&in_flight),
        "70 s in flight per 10 s: {in_flight}"
    );
    let failed = count(StateKind::Failed) + count(StateKind::UploadFailed);
    assert!((50..=150).contains(&failed), "about 10 % fail: {failed}");
    let red = records.iter().filter(|r| r["Zone"] == "Red").count();
    assert!((200..=400).contains(&red), "about 30 % Red: {red}");
    assert!(records
        .iter()
        .any(|r| r["TaskState"] == "Processing failed"));
    assert!(records.iter().any(|r| r["TaskState"] == "Completed"));
}

#[tokio::test]
async fn a_generated_sandbox_serves_its_tasks_over_http() {
    within(async {
        let sim = Sim::start(
            Scenario::builder()
                .generator(
                    Generator::every(Duration::from_secs(20))
                        .start(Offset::before(min(30)))
                        .shares(1.0, 1.0, 0.0),
                )
                .build()
                .unwrap(),
        )
        .await;
        let list = sim.list("count=100").await;
        assert_eq!(list.as_array().map(Vec::len), Some(91));
        let oldest = list[90]["TaskId"].as_str().unwrap().to_owned();
        let files = sim.downloads(&oldest).await.json();
        let red = files
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["Zone"] == "Red")
            .expect("every task has a Red file at red_share 1");
        assert!(!red["DetectionNames"].as_array().unwrap().is_empty());
        assert!(!red["TriggeredYaraRules"].as_array().unwrap().is_empty());
        assert_eq!(sim.handle.task_count(), 91);
    })
    .await;
}

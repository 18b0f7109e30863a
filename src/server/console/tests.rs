//! The console rendered without a socket: escaping of hostile values on every page, the task
//! table's filters, order and pages, the 404 page, and the JSON API's shapes and caps.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper::StatusCode;

use super::*;
use crate::config::{TaskLabels, TaskSpec};
use crate::journal::EventKind;
use crate::lifecycle::TaskLife;
use crate::sandbox::decode::lifecycle::TaskState;
use crate::sandbox::Download;
use crate::state::{Limits, PollReport, WatchList};

const HOSTILE: &str = "<img src=x onerror=alert(1)>\"><script>alert(1)</script>\u{202e}exe.txt";
const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn id(n: usize) -> TaskId {
    TaskId::parse(&format!("00000000-0000-4000-8000-{n:012x}")).expect("valid id")
}

/// A console over `n` tasks named `task-{i}`: every 10th has a Red file with a hostile name,
/// detections and rules; every 3rd is processing, the rest completed; task 7 fails its polls.
fn console(n: usize) -> Console {
    let tasks: Vec<TaskSpec> = (0..n)
        .map(|i| TaskSpec {
            id: id(i),
            name: if i == 0 {
                HOSTILE.into()
            } else {
                format!("task-{i}")
            },
            labels: TaskLabels::from([("team".to_string(), format!("team-{}", i % 4))]),
        })
        .collect();
    let state = State::new(WatchList {
        tasks: tasks.into(),
        discovered: 0,
        label_keys: vec!["team".into()],
        limits: Limits::default(),
    });
    let now = SystemTime::now();
    for i in 0..n {
        let mut files = vec![Download {
            zone: DangerZone::Green,
            name: format!("page-{i}.html"),
            sha256: format!("{:064x}", i),
            size: 100,
            ..Download::default()
        }];
        if i % 10 == 0 {
            files.push(Download {
                zone: DangerZone::Red,
                name: HOSTILE.into(),
                sha256: SHA.into(),
                file_type: "PE32 executable".into(),
                detection_names: vec!["HEUR:Trojan.Win32.Generic".into(), HOSTILE.into()],
                yara_rules: vec!["Cobalt_Strike_Beacon".into()],
                size: 73_802,
                is_https: true,
                ..Download::default()
            });
        }
        let life = TaskLife {
            state: if i % 3 == 0 {
                TaskState::Processing
            } else {
                TaskState::Completed
            },
            result_id: "r1".into(),
            created: Some(now - Duration::from_secs(600)),
            processed: None,
            zone: DangerZone::Unknown,
            verdict: if i == 0 {
                HOSTILE.into()
            } else {
                "Malware".into()
            },
        };
        state.apply(PollReport {
            task: id(i),
            finished: now - Duration::from_secs(i as u64),
            status: Some(200),
            result: Ok(files.into()),
            life: Some(life),
        });
    }
    if n > 7 {
        state.apply(PollReport {
            task: id(7),
            finished: now,
            status: Some(503),
            result: Err(crate::state::PollError::Transport {
                reason: crate::sandbox::FailureReason::InvalidResponse,
                detail: format!("server error {HOSTILE}"),
            }),
            life: None,
        });
    }
    let journal = Arc::new(Journal::default());
    journal.record(
        now,
        [
            (
                Some(id(0)),
                EventKind::NewFile {
                    zone: DangerZone::Red,
                    sha256: SHA.into(),
                    name: HOSTILE.into(),
                    rules: vec![Box::<str>::from(HOSTILE)].into(),
                },
            ),
            (
                Some(id(1)),
                EventKind::NewFile {
                    zone: DangerZone::Green,
                    sha256: SHA.into(),
                    name: "clean.html".into(),
                    rules: Box::default(),
                },
            ),
            (
                None,
                EventKind::Reloaded {
                    ok: false,
                    detail: HOSTILE.into(),
                },
            ),
        ],
    );
    Console {
        state: Arc::new(state),
        journal,
        status: Status::default(),
        banner: Some(HOSTILE.into()),
        telemetry_path: "/metrics".into(),
        ui_task_url: Some(
            UiTaskUrl::parse("https://sandbox.example.com/tasks/{task_id}").expect("valid"),
        ),
        now,
    }
}

fn get(console: &Console, path_and_query: &str) -> Answer {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let request = Request::parse(path, query).expect("a console path");
    console.render(&request)
}

fn json_of(answer: &Answer) -> serde_json::Value {
    assert_eq!(answer.content_type, "application/json");
    serde_json::from_str(&answer.body).expect("valid JSON")
}

/// The rows of the task table, by task name, in order.
fn table_names(body: &str) -> Vec<String> {
    body.split("class=\"task-name\">")
        .skip(1)
        .map(|s| s.split("</a>").next().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn hostile_values_are_escaped_on_every_page() {
    let console = console(30);
    for path in [
        "/",
        "/?q=%3Cscript%3E",
        "/tasks/00000000-0000-4000-8000-000000000000",
        "/events",
        "/tasks/00000000-0000-4000-8000-000000000007",
    ] {
        let body = get(&console, path).body;
        for raw in ["<img", "<script>alert", "\u{202e}"] {
            assert!(!body.contains(raw), "{path} contains {raw:?} unescaped");
        }
        assert!(
            !body.contains("style="),
            "{path}: the CSP forbids style attributes"
        );
    }
    let task = get(&console, "/tasks/00000000-0000-4000-8000-000000000000").body;
    assert!(
        task.contains("&lt;img src=x onerror=alert(1)&gt;&quot;&gt;&lt;script&gt;"),
        "{task}"
    );
}

#[test]
fn the_overview_leads_with_the_red_tasks_and_lists_the_most_dangerous_first() {
    let console = console(30);
    let answer = get(&console, "/");
    assert_eq!(answer.status, StatusCode::OK);
    let body = answer.body;
    assert!(body.contains(r#"id="red-count">3</a>"#), "{body}");
    assert!(body.contains(r#"<a href="/tasks/00000000-0000-4000-8000-00000000000a">task-10</a>"#));
    let names = table_names(&body);
    assert_eq!(names.len(), 30);
    // Red tasks first, in watch-list order among equals.
    assert_eq!(names[1..3], ["task-10", "task-20"]);
    assert!(body.contains("1 failing"), "{body}");
    assert!(body.contains("<svg id=\"chart\""));
}

#[test]
fn the_table_filters_by_zone_state_and_text_and_sorts_both_ways() {
    let console = console(30);
    let red = table_names(&get(&console, "/?zone=Red").body);
    assert_eq!(red.len(), 3);
    let processing = table_names(&get(&console, "/?state=processing&sort=name&dir=asc").body);
    assert_eq!(processing.len(), 10);
    assert!(
        processing.windows(2).all(|w| w[0] <= w[1]),
        "{processing:?}"
    );
    let failing = table_names(&get(&console, "/?state=failing").body);
    assert_eq!(failing, ["task-7"]);
    let text = table_names(&get(&console, "/?q=TASK-2").body);
    assert_eq!(text.len(), 11, "task-2 and task-20 … task-29: {text:?}");
    let by_label = table_names(&get(&console, "/?q=team-3&zone=Red").body);
    assert!(by_label.is_empty(), "{by_label:?}");
    let desc = table_names(&get(&console, "/?sort=name&dir=desc").body);
    let asc = table_names(&get(&console, "/?sort=name&dir=asc").body);
    assert_eq!(
        desc.iter().rev().collect::<Vec<_>>(),
        asc.iter().collect::<Vec<_>>()
    );
    let body = get(&console, "/?zone=Red&sort=name&dir=asc").body;
    assert!(body.contains(r#"aria-sort="ascending""#), "{body}");
    assert!(body.contains(r#"<option selected>Red</option>"#));
}

#[test]
fn the_table_is_paged_so_a_large_fleet_renders_a_bounded_page() {
    let console = console(1_000);
    let first = get(&console, "/?sort=name&dir=asc");
    assert_eq!(table_names(&first.body).len(), query::PAGE_SIZE);
    assert!(
        first.body.contains("Showing 1–100 of 1000 matching tasks"),
        "{}",
        first.body
    );
    assert!(first
        .body
        .contains(r#"href="/?sort=name&amp;dir=asc&amp;page=2" rel="next""#));
    let third = get(&console, "/?sort=name&dir=asc&page=3");
    assert!(third.body.contains("Showing 201–300 of 1000"));
    assert!(third.body.contains("Page 3 of 10"));
    let beyond = get(&console, "/?page=99");
    assert!(beyond.body.contains("No task matches"));
}

#[test]
fn the_task_page_shows_every_file_with_its_full_hash_detections_rules_and_the_sandbox_link() {
    let console = console(30);
    let answer = get(&console, "/tasks/00000000-0000-4000-8000-00000000000a");
    assert_eq!(answer.status, StatusCode::OK);
    let body = answer.body;
    assert!(
        body.contains(&format!("<code class=\"hash\">{SHA}</code>")),
        "{body}"
    );
    assert!(body.contains(&format!("data-copy=\"{SHA}\"")));
    assert!(body.contains("HEUR:Trojan.Win32.Generic"));
    assert!(body.contains("Cobalt_Strike_Beacon"));
    assert!(
        body.contains("72.1 KiB · PE32 executable · HTTPS"),
        "{body}"
    );
    assert!(body.contains(
        r#"href="https://sandbox.example.com/tasks/00000000-0000-4000-8000-00000000000a""#
    ));
    assert!(body.contains("Recent polls"));
}

#[test]
fn an_unknown_or_malformed_task_id_is_a_not_watched_page_with_404() {
    let console = console(3);
    for path in [
        "/tasks/7c9e6679-7425-40de-944b-e07fc1f90ae7",
        "/tasks/%3Cscript%3E",
        "/tasks/",
    ] {
        let answer = get(&console, path);
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
        assert!(answer.body.contains("Task not watched"), "{path}");
    }
    let api = get(
        &console,
        "/api/v1/tasks/7c9e6679-7425-40de-944b-e07fc1f90ae7",
    );
    assert_eq!(api.status, StatusCode::NOT_FOUND);
    assert_eq!(json_of(&api)["error"], "not watched");
}

#[test]
fn the_events_page_lists_the_newest_first_and_filters_by_zone() {
    let console = console(3);
    let all = get(&console, "/events").body;
    let reload = all.find("Reload failed").expect("the reload is listed");
    let red = all.find("k-new_file").expect("the new file is listed");
    assert!(reload < red, "newest first");
    let only_red = get(&console, "/events?zone=Red").body;
    assert_eq!(
        only_red.matches("<li class=\"event").count(),
        1,
        "{only_red}"
    );
    assert!(only_red.contains("YARA: <code>&lt;img"));
}

#[test]
fn the_api_answers_the_table_one_task_and_the_feed_with_capped_limits() {
    let console = console(1_500);
    let tasks = json_of(&get(&console, "/api/v1/tasks?zone=Red&limit=5&offset=2"));
    assert_eq!(tasks["total"], 150);
    assert_eq!(tasks["limit"], 5);
    assert_eq!(tasks["tasks"].as_array().map(Vec::len), Some(5));
    assert_eq!(tasks["tasks"][0]["zones"]["Red"], 1);
    let capped = json_of(&get(&console, "/api/v1/tasks?limit=999999"));
    assert_eq!(capped["limit"], query::MAX_API_LIMIT);
    assert_eq!(
        capped["tasks"].as_array().map(Vec::len),
        Some(query::MAX_API_LIMIT)
    );

    let task = json_of(&get(
        &console,
        "/api/v1/tasks/00000000-0000-4000-8000-000000000000",
    ));
    assert_eq!(task["name"], HOSTILE, "JSON carries the value itself");
    assert_eq!(task["state"], "processing");
    assert_eq!(task["labels"]["team"], "team-0");
    let files = task["files"].as_array().expect("files");
    assert_eq!(files[0]["sha256"], SHA);
    assert_eq!(files[0]["rules"][0], "Cobalt_Strike_Beacon");
    assert_eq!(task["polls"][0]["status"], 200);

    let events = json_of(&get(&console, "/api/v1/events?limit=2"));
    assert_eq!(events["events"].as_array().map(Vec::len), Some(2));
    assert_eq!(events["events"][0]["kind"], "reloaded");
    let next = events["next_before"].as_u64().expect("a next page");
    let older = json_of(&get(&console, &format!("/api/v1/events?before={next}")));
    assert_eq!(older["events"][0]["name"], HOSTILE);
    assert_eq!(older["events"][0]["zone"], "Red");
    assert_eq!(older["next_before"], serde_json::Value::Null);
}

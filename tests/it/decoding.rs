//! Every response shape and spelling the sandbox may use ends up as the same metrics.

use krs_sandbox_sim::{Fault, KeyCase, Shape, SimFile, SimTask};

use crate::support::{id, within, ConfigYaml, Exporter, Sandbox};

fn files() -> Vec<SimFile> {
    vec![
        SimFile::new("payload.exe", "Red")
            .size(1000)
            .https(true)
            .detection("HEUR:Trojan.Win32.Generic")
            .yara("Cobalt_Strike_Beacon")
            .yara("APT_Loader"),
        SimFile::new("update.msi", "Grey").size(24),
    ]
}

/// Polls one task served with `task`'s spelling and checks the resulting series.
async fn assert_decoded(task: SimTask) {
    let task_id = task.id.clone();
    let sandbox = Sandbox::start(vec![task]).await;
    let exporter = Exporter::start(&ConfigYaml::new(&sandbox.url(), &[&task_id]).render()).await;
    let t = task_id.as_str();
    let s = exporter
        .scrape_until("a successful poll", |s| {
            s.value("krs_task_up", &[("task_id", t)]) == Some(1.0)
        })
        .await;
    assert_eq!(
        s.value(
            "krs_task_downloads",
            &[("task_id", t), ("danger_zone", "Red")]
        ),
        Some(1.0)
    );
    assert_eq!(
        s.value(
            "krs_task_downloads",
            &[("task_id", t), ("danger_zone", "Grey")]
        ),
        Some(1.0)
    );
    assert_eq!(
        s.value(
            "krs_task_downloads",
            &[("task_id", t), ("danger_zone", "Green")]
        ),
        Some(0.0)
    );
    assert_eq!(
        s.value("krs_task_download_bytes", &[("task_id", t)]),
        Some(1024.0)
    );
    assert_eq!(
        s.value("krs_task_https_downloads", &[("task_id", t)]),
        Some(1.0)
    );
    assert_eq!(
        s.value(
            "krs_task_yara_matches",
            &[("task_id", t), ("rule", "Cobalt_Strike_Beacon")]
        ),
        Some(1.0)
    );
    assert_eq!(
        s.value(
            "krs_task_detections",
            &[("task_id", t), ("detection", "HEUR:Trojan.Win32.Generic")]
        ),
        Some(1.0)
    );
    assert_eq!(
        s.value(
            "krs_download_info",
            &[("task_id", t), ("file_name", "payload.exe")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn an_array_of_records_is_decoded() {
    within(assert_decoded(
        SimTask::new(&id(1)).shape(Shape::Array).files(files()),
    ))
    .await;
}

#[tokio::test]
async fn a_wrapper_object_is_decoded() {
    within(assert_decoded(
        SimTask::new(&id(2)).shape(Shape::Wrapped).files(files()),
    ))
    .await;
}

#[tokio::test]
async fn lowercase_and_uppercase_keys_string_sizes_rule_objects_and_gray_are_decoded() {
    within(async {
        assert_decoded(
            SimTask::new(&id(3))
                .key_case(KeyCase::Lower)
                .size_as_string(true)
                .yara_as_objects(true)
                .gray_spelling(true)
                .files(files()),
        )
        .await;
        assert_decoded(SimTask::new(&id(4)).key_case(KeyCase::Upper).files(files())).await;
    })
    .await;
}

#[tokio::test]
async fn a_single_record_object_counts_as_one_file() {
    within(async {
        let t = id(5);
        let task = SimTask::new(&t).shape(Shape::Object).file(
            SimFile::new("only.exe", "Yellow")
                .size(7)
                .detection("not-a-virus:AdWare.Win32.Generic"),
        );
        let sandbox = Sandbox::start(vec![task]).await;
        let exporter = Exporter::start(&ConfigYaml::new(&sandbox.url(), &[&t]).render()).await;
        let s = exporter
            .scrape_until("a successful poll", |s| {
                s.value("krs_task_up", &[("task_id", &t)]) == Some(1.0)
            })
            .await;
        assert_eq!(
            s.value(
                "krs_task_downloads",
                &[("task_id", &t), ("danger_zone", "Yellow")]
            ),
            Some(1.0)
        );
        assert_eq!(
            s.value("krs_task_download_bytes", &[("task_id", &t)]),
            Some(7.0)
        );
        // Yellow is not in the default file_info_zones: no info series for it.
        assert_eq!(s.count("krs_download_info", &[("task_id", &t)]), 0);
    })
    .await;
}

#[tokio::test]
async fn an_empty_task_reports_zero_in_every_documented_zone() {
    within(async {
        let t = id(6);
        let sandbox = Sandbox::start(vec![SimTask::new(&t)]).await;
        let exporter = Exporter::start(&ConfigYaml::new(&sandbox.url(), &[&t]).render()).await;
        let s = exporter
            .scrape_until("a successful poll", |s| {
                s.value("krs_task_up", &[("task_id", &t)]) == Some(1.0)
            })
            .await;
        for zone in ["Red", "Orange", "Yellow", "Grey", "Green"] {
            assert_eq!(
                s.value(
                    "krs_task_downloads",
                    &[("task_id", &t), ("danger_zone", zone)]
                ),
                Some(0.0),
                "zone {zone}"
            );
        }
        assert_eq!(
            s.count("krs_task_downloads", &[("danger_zone", "Unknown")]),
            0
        );
    })
    .await;
}

#[tokio::test]
async fn a_body_identical_to_the_known_one_is_reported_unchanged_and_any_change_is_decoded() {
    use krs_exporter::config::{Config, TaskId};
    use krs_exporter::sandbox::{Downloads, SandboxClient};

    let task = SimTask::new(&id(1)).files(files());
    let sandbox = Sandbox::start(vec![task]).await;
    let yaml = ConfigYaml::new(&sandbox.url(), &[&id(1)]).render();
    let config = Config::from_yaml_str(&yaml, std::path::Path::new("test.yml"), &|_| None)
        .expect("valid config");
    let client = SandboxClient::new(&config.sandbox, 1).expect("client");
    let task = TaskId::parse(&id(1)).expect("valid id");
    let fetch = |known| {
        let (client, task) = (client.clone(), task.clone());
        async move {
            within(client.fetch_downloads(&task, known))
                .await
                .result
                .expect("a 200 answer")
        }
    };

    let Downloads::Changed {
        decoded: first,
        digest: Some(digest),
    } = fetch(None).await
    else {
        panic!("the first answer is decoded and digested");
    };
    assert_eq!(first.files.len(), 2);
    assert!(matches!(fetch(Some(digest)).await, Downloads::Unchanged(d) if d == digest));

    sandbox
        .sim
        .add_file(&id(1), SimFile::new("second-stage.dll", "Red"));
    match fetch(Some(digest)).await {
        Downloads::Changed {
            decoded,
            digest: Some(changed),
        } => {
            assert_eq!(decoded.files.len(), 3);
            assert_ne!(changed, digest);
        }
        other => panic!("a changed body must be decoded, got {other:?}"),
    }
}

#[tokio::test]
async fn a_red_file_beside_records_a_strict_parser_refuses_still_pages() {
    within(async {
        let t = id(6);
        let body = r#"{"Errors":[],"Meta":[{"Page":1}],"Downloads":[
            {"Zone":"Green","Name":"x\ud800y.txt"},
            {"Zone":"Green","Size":1e400},
            {"Zone":"Green","Size":NaN},
            "not a record",
            {"Zone":"Green" "Name":"broken"},
            {"Zone":"Red","Sha256":"5eed","Name":"dropper.exe","TriggeredYaraRules":["Loader"]}
        ]}"#;
        let task = SimTask::new(&t)
            .fault(Fault::body_text(body))
            .faults_repeat(true);
        let sandbox = Sandbox::start(vec![task]).await;
        let exporter = Exporter::start(&ConfigYaml::new(&sandbox.url(), &[&t]).render()).await;
        // The registry is gathered before the state is read, so a scrape can show the poll in
        // the task's series before its counters: wait for both.
        let s = exporter
            .scrape_until("a successful poll and its counters", |s| {
                let counted = |family: &str, reason: &str, at_least: f64| {
                    s.value(family, &[("endpoint", "downloads"), ("reason", reason)])
                        >= Some(at_least)
                };
                s.value("krs_task_up", &[("task_id", &t)]) == Some(1.0)
                    && counted("krs_api_skipped_records_total", "not_an_object", 1.0)
                    && counted("krs_api_skipped_records_total", "unreadable", 1.0)
                    && counted("krs_api_repaired_values_total", "invalid_escape", 1.0)
                    && counted("krs_api_repaired_values_total", "invalid_number", 2.0)
            })
            .await;
        assert_eq!(
            s.value(
                "krs_download_info",
                &[
                    ("task_id", &t),
                    ("sha256", "5eed"),
                    ("file_name", "dropper.exe")
                ]
            ),
            Some(1.0)
        );
        let zone = |z: &str| s.value("krs_task_downloads", &[("task_id", &t), ("danger_zone", z)]);
        assert_eq!((zone("Red"), zone("Green")), (Some(1.0), Some(3.0)));
        assert_eq!(
            s.value("krs_task_skipped_records", &[("task_id", &t)]),
            Some(2.0)
        );
        // The counters each moved by what a decode of this body counts (waited for above: a
        // scrape gathers the families one after another, so one scrape may be torn between
        // them while a poll is being recorded; the exact counts are unit-tested).
    })
    .await;
}

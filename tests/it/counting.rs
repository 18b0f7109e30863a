//! Baseline semantics of the fleet counters: what was there at the first poll is not new.

use krs_sandbox_sim::{SimFile, SimTask};

use crate::support::{id, within, ConfigYaml, Exporter, Sandbox, Scrape};

fn downloads(s: &Scrape, zone: &str) -> f64 {
    s.value_or_zero("krs_downloads_total", &[("danger_zone", zone)])
}

fn hits(s: &Scrape, rule: &str) -> f64 {
    s.value_or_zero("krs_yara_hits_total", &[("rule", rule)])
}

#[tokio::test]
async fn files_present_at_the_first_poll_show_in_gauges_but_are_not_counted_as_new() {
    within(async {
        let t = id(40);
        let task = SimTask::new(&t)
            .file(SimFile::new("old.exe", "Red").yara("Old_Rule"))
            .file(SimFile::new("old.txt", "Green"));
        let sandbox = Sandbox::start(vec![task]).await;
        let exporter = Exporter::start(&ConfigYaml::new(&sandbox.url(), &[&t]).render()).await;
        let s = exporter
            .scrape_until("two successful polls", |s| {
                s.value_or_zero("krs_polls_total", &[]) >= 2.0
            })
            .await;
        assert_eq!(
            s.value(
                "krs_task_downloads",
                &[("task_id", &t), ("danger_zone", "Red")]
            ),
            Some(1.0)
        );
        for zone in ["Red", "Orange", "Yellow", "Grey", "Green"] {
            assert_eq!(
                s.value("krs_downloads_total", &[("danger_zone", zone)]),
                Some(0.0)
            );
        }
        assert_eq!(
            s.value("krs_yara_hits_total", &[("rule", "Old_Rule")]),
            Some(0.0),
            "a rule seen at the baseline has its series at 0, so increase() sees its next hit"
        );
    })
    .await;
}

#[tokio::test]
async fn a_new_file_is_counted_once_and_a_zone_change_once_more_in_the_new_zone() {
    within(async {
        let t = id(41);
        let grey = SimFile::new("stage2.bin", "Grey").sha256(&"ab".repeat(32));
        let sandbox = Sandbox::start(vec![SimTask::new(&t).file(grey.clone())]).await;
        let exporter = Exporter::start(&ConfigYaml::new(&sandbox.url(), &[&t]).render()).await;
        exporter
            .scrape_until("the baseline poll", |s| {
                s.value("krs_task_up", &[("task_id", &t)]) == Some(1.0)
            })
            .await;

        sandbox.sim.add_file(
            &t,
            SimFile::new("payload.exe", "Red")
                .yara("Cobalt_Strike_Beacon")
                .yara("APT_Loader"),
        );
        let s = exporter
            .scrape_until("the new Red file counted", |s| downloads(s, "Red") == 1.0)
            .await;
        assert_eq!(hits(&s, "Cobalt_Strike_Beacon"), 1.0);
        assert_eq!(hits(&s, "APT_Loader"), 1.0);
        let polls_then = s.value_or_zero("krs_polls_total", &[]);
        let s = exporter
            .scrape_until("two more polls", |s| {
                s.value_or_zero("krs_polls_total", &[]) >= polls_then + 2.0
            })
            .await;
        assert_eq!(
            downloads(&s, "Red"),
            1.0,
            "the same file is not counted again"
        );
        assert_eq!(hits(&s, "Cobalt_Strike_Beacon"), 1.0);

        // The Grey file is graded Red: it counts once more, in Red.
        let mut files = vec![grey.clone()];
        files[0].zone = "Red".into();
        files.push(
            SimFile::new("payload.exe", "Red")
                .yara("Cobalt_Strike_Beacon")
                .yara("APT_Loader"),
        );
        sandbox.sim.set_files(&t, files);
        let s = exporter
            .scrape_until("the zone change counted", |s| downloads(s, "Red") == 2.0)
            .await;
        assert_eq!(downloads(&s, "Grey"), 0.0);
        assert_eq!(
            s.value(
                "krs_task_downloads",
                &[("task_id", &t), ("danger_zone", "Red")]
            ),
            Some(2.0)
        );
        assert_eq!(s.count("krs_download_info", &[("task_id", &t)]), 2);
    })
    .await;
}

#[tokio::test]
async fn a_task_added_by_reload_starts_with_its_own_baseline() {
    within(async {
        let (a, b) = (id(42), id(43));
        let tasks = vec![
            SimTask::new(&a),
            SimTask::new(&b).file(SimFile::new("x.exe", "Red")),
        ];
        let sandbox = Sandbox::start(tasks).await;
        let exporter = Exporter::start(&ConfigYaml::new(&sandbox.url(), &[&a]).render()).await;
        exporter
            .scrape_until("task a polled", |s| {
                s.value("krs_task_up", &[("task_id", &a)]) == Some(1.0)
            })
            .await;
        exporter.write_config(&ConfigYaml::new(&sandbox.url(), &[&a, &b]).render());
        assert_eq!(exporter.post("/-/reload").await.0, 200);
        let s = exporter
            .scrape_until("task b polled", |s| {
                s.value("krs_task_up", &[("task_id", &b)]) == Some(1.0)
            })
            .await;
        assert_eq!(
            downloads(&s, "Red"),
            0.0,
            "b's existing file is its baseline"
        );
    })
    .await;
}

//! What `/metrics` and the console show when the sandbox sends hostile strings.

use krs_sandbox_sim::{SimFile, SimTask};

use crate::support::{id, promtool_check_metrics, within, ConfigYaml, Exporter, Sandbox};

const HOSTILE_NAME: &str = "inv\"oice\\.exe\n# HELP forged\r\nkrs_task_up{task_id=\"x\"} 1 <script>alert(1)</script>\u{202e}fdp.exe\u{1b}[2J";

#[tokio::test]
async fn a_hostile_file_name_cannot_forge_a_metric_line_or_markup() {
    within(async {
        let t = id(60);
        let file = SimFile::new(HOSTILE_NAME, "Red")
            .file_type("<b>PE32</b>")
            .detection("HEUR:\"Trojan\"\n")
            .yara("rule\"}\nforged 1")
            .yara(&"x".repeat(1 << 20));
        let sandbox = Sandbox::start(vec![SimTask::new(&t).file(file)]).await;
        let mut config = ConfigYaml::new(&sandbox.url(), &[&t]);
        config.max_response_bytes = 4 << 20;
        let exporter = Exporter::start(&config.render()).await;
        let s = exporter
            .scrape_until("the task polled", |s| {
                s.value("krs_task_up", &[("task_id", &t)]) == Some(1.0)
            })
            .await;

        // The parser is strict: every line parsed, and exactly the expected series exist.
        assert_eq!(s.count("krs_task_up", &[]), 1, "no forged krs_task_up line");
        assert!(!s.text.contains("\n# HELP forged"));
        let info = s.matching("krs_download_info", &[("task_id", &t)]);
        assert_eq!(info.len(), 1);
        let name = &info[0].labels["file_name"];
        assert!(
            name.starts_with("inv\"oice\\.exe\u{FFFD}# HELP forged"),
            "{name:?}"
        );
        assert!(
            !name.contains(['\n', '\r', '\u{1b}', '\u{202e}']),
            "{name:?}"
        );
        assert!(name.chars().count() <= 128);
        let rules = s.matching("krs_task_yara_matches", &[("task_id", &t)]);
        assert_eq!(rules.len(), 2);
        assert!(rules
            .iter()
            .all(|r| r.labels["rule"].chars().count() <= 128));

        promtool_check_metrics(&s.text).expect("promtool accepts the exposition");

        let (status, page) = exporter.get(&format!("/tasks/{t}")).await;
        assert_eq!(status, 200);
        assert!(!page.contains("<script>"), "no markup from the sandbox");
        assert!(!page.contains("<b>PE32"));
        assert!(
            page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "the name is shown, escaped"
        );
        assert!(page.contains("inv&quot;oice"));
        assert!(!page.contains('\u{202e}'));
        let (status, overview) = exporter.get("/").await;
        assert_eq!(status, 200);
        assert!(
            overview.contains(r#"id="red-count">1</a>"#),
            "the Red task is counted"
        );
    })
    .await;
}

#[tokio::test]
async fn the_exposition_is_accepted_by_promtool_with_every_family_present() {
    within(async {
        let (a, b) = (id(61), id(62));
        let tasks = vec![
            SimTask::new(&a).file(SimFile::new("a.exe", "Red").yara("R1").detection("D1")),
            SimTask::new(&b).deleted(),
        ];
        let sandbox = Sandbox::start(tasks).await;
        let config = ConfigYaml::new(&sandbox.url(), &[&a, &b]).render().replace(
            &format!("  - {a}\n"),
            &format!("  - {{id: {a}, name: invoice-macro, labels: {{team: soc}}}}\n"),
        );
        let exporter = Exporter::start(&config).await;
        let s = exporter
            .scrape_until("both tasks polled", |s| s.count("krs_task_up", &[]) == 2)
            .await;
        promtool_check_metrics(&s.text).expect("promtool accepts the exposition");
        assert_eq!(
            s.value(
                "krs_task_info",
                &[("task_id", &a), ("name", "invoice-macro"), ("team", "soc")]
            ),
            Some(1.0)
        );
        assert_eq!(
            s.value(
                "krs_task_info",
                &[("task_id", &b), ("name", ""), ("team", "")]
            ),
            Some(1.0),
            "every task carries every label key"
        );
        for family in [
            "krs_task_up",
            "krs_task_last_poll_timestamp_seconds",
            "krs_task_last_success_timestamp_seconds",
            "krs_task_last_status_code",
            "krs_task_downloads",
            "krs_task_download_bytes",
            "krs_task_https_downloads",
            "krs_task_yara_matches",
            "krs_task_detections",
            "krs_download_info",
            "krs_downloads_total",
            "krs_api_requests_total",
            "krs_api_errors_total",
            "krs_api_request_failures_total",
            "krs_api_request_duration_seconds_count",
            "krs_api_up",
            "krs_polls_total",
            "krs_poll_failures_total",
            "krs_poll_duration_seconds_count",
            "krs_exporter_build_info",
            "krs_watched_tasks",
            "krs_config_last_reload_successful",
            "krs_config_last_reload_success_timestamp_seconds",
            "process_resident_memory_bytes",
        ] {
            assert!(s.count(family, &[]) > 0, "{family} missing");
        }
        let (status, page) = exporter.get("/").await;
        assert_eq!(status, 200);
        assert!(page.contains("invoice-macro"));
    })
    .await;
}

#[tokio::test]
async fn metrics_are_gzipped_when_the_scraper_asks_and_plain_otherwise() {
    within(async {
        use std::io::Read;
        let t = id(63);
        let sandbox = Sandbox::start(vec![SimTask::new(&t)]).await;
        let exporter = Exporter::start(&ConfigYaml::new(&sandbox.url(), &[&t]).render()).await;
        exporter
            .scrape_until("the task polled", |s| s.count("krs_task_up", &[]) == 1)
            .await;
        let client = reqwest::Client::new();
        let r = client
            .get(exporter.url("/metrics"))
            .header("Accept-Encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["content-encoding"], "gzip");
        let compressed = r.bytes().await.unwrap();
        let mut text = String::new();
        flate2::read::GzDecoder::new(&compressed[..])
            .read_to_string(&mut text)
            .expect("a valid gzip stream");
        assert!(text.contains(&format!("krs_task_up{{task_id=\"{t}\"}} 1")));
        assert!(
            compressed.len() * 3 < text.len(),
            "compressed {} of {}",
            compressed.len(),
            text.len()
        );

        let r = client
            .get(exporter.url("/metrics"))
            .header("Accept-Encoding", "gzip;q=0, identity")
            .send()
            .await
            .unwrap();
        assert!(r.headers().get("content-encoding").is_none());
        assert!(r.text().await.unwrap().contains("krs_task_up"));
    })
    .await;
}

//! OpenMetrics on the telemetry path: negotiated from `Accept` as Prometheus sends it, and the
//! fleet counters' exemplars naming the file a new count came from.

use krs_sandbox_sim::{SimFile, SimTask};

use crate::support::{eventually, id, within, ConfigYaml, Exporter, Sandbox};

/// Prometheus 3's default `Accept` header.
const PROMETHEUS_3: &str = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,\
    application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,\
    text/plain;version=0.0.4;q=0.2,*/*;q=0.1";

/// `/metrics` with `accept`: the content type and the body.
async fn scrape(exporter: &Exporter, accept: &str) -> (String, String) {
    let r = reqwest::Client::new()
        .get(exporter.url("/metrics"))
        .header("Accept", accept)
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(r.status(), 200);
    let content_type = r.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_string();
    (content_type, r.text().await.expect("body"))
}

#[tokio::test]
async fn a_new_red_file_leads_from_the_openmetrics_counter_to_its_task_and_hash() {
    within(async {
        let t = id(140);
        let sandbox = Sandbox::start(vec![SimTask::new(&t)]).await;
        let exporter = Exporter::start(&ConfigYaml::new(&sandbox.url(), &[&t]).render()).await;
        exporter
            .scrape_until("the baseline poll", |s| {
                s.value("krs_task_up", &[("task_id", &t)]) == Some(1.0)
            })
            .await;
        let sha = "cd".repeat(32);
        sandbox.sim.add_file(
            &t,
            SimFile::new("payload.exe", "Red")
                .sha256(&sha)
                .yara("Cobalt_Strike_Beacon"),
        );
        let exemplar = format!(" # {{task_id=\"{t}\",sha256=\"{sha}\"}} 1 ");
        let red = format!("krs_downloads_total{{danger_zone=\"Red\"}} 1{exemplar}");
        let body = eventually("the Red counter's exemplar", || {
            let (exporter, red) = (&exporter, &red);
            async move {
                let (content_type, body) = scrape(exporter, PROMETHEUS_3).await;
                assert_eq!(
                    content_type,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8"
                );
                body.lines()
                    .any(|l| l.starts_with(red.as_str()))
                    .then_some(body)
            }
        })
        .await;
        let hit = format!("krs_yara_hits_total{{rule=\"Cobalt_Strike_Beacon\"}} 1{exemplar}");
        assert!(body.lines().any(|l| l.starts_with(&hit)), "{body}");
        assert!(body.contains("# TYPE krs_downloads counter\n"));
        assert!(body.ends_with("\n# EOF\n"));

        let (content_type, text) = scrape(&exporter, "text/plain;version=0.0.4").await;
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
        assert!(text.contains("krs_downloads_total{danger_zone=\"Red\"} 1\n"));
        assert!(!text.contains("# EOF"));
        assert!(!text.contains(" # {"), "no exemplars in text");
    })
    .await;
}

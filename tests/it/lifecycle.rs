//! Readiness, reloads and shutdown of the in-process exporter.

use std::time::Duration;

use krs_sandbox_sim::SimTask;

use crate::support::{id, within, ConfigYaml, Exporter, Sandbox};

#[tokio::test]
async fn readiness_waits_until_every_watched_task_was_polled_once() {
    within(async {
        let (a, b) = (id(50), id(51));
        let sandbox = Sandbox::start(vec![SimTask::new(&a), SimTask::new(&b)]).await;
        let mut config = ConfigYaml::new(&sandbox.url(), &[&a, &b]);
        // Two tasks over 4 s: the second poll comes 2 s after the first.
        config.interval = "4s";
        let exporter = Exporter::start(&config.render()).await;
        let (status, body) = exporter.get("/-/ready").await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("of 2 watched tasks polled"), "{body}");
        assert_eq!(exporter.get("/-/healthy").await.0, 200);
        crate::support::eventually("ready", || async {
            (exporter.get("/-/ready").await.0 == 200).then_some(())
        })
        .await;
        assert_eq!(sandbox.sim.requests(&a), 1);
        assert_eq!(sandbox.sim.requests(&b), 1);
    })
    .await;
}

#[tokio::test]
async fn a_reload_adds_and_removes_tasks_and_removed_series_vanish() {
    within(async {
        let (a, b, c) = (id(52), id(53), id(54));
        let tasks = vec![SimTask::new(&a), SimTask::new(&b), SimTask::new(&c)];
        let sandbox = Sandbox::start(tasks).await;
        let exporter = Exporter::start(&ConfigYaml::new(&sandbox.url(), &[&a, &b]).render()).await;
        exporter
            .scrape_until("a and b polled", |s| {
                s.value("krs_task_up", &[("task_id", &a)]) == Some(1.0)
                    && s.value("krs_task_up", &[("task_id", &b)]) == Some(1.0)
            })
            .await;

        exporter.write_config(&ConfigYaml::new(&sandbox.url(), &[&b, &c]).render());
        let (status, body) = exporter.post("/-/reload").await;
        assert_eq!(status, 200, "{body}");
        let s = exporter.scrape().await;
        assert_eq!(
            s.count("krs_task_info", &[("task_id", &a)]),
            0,
            "a's series vanish at once"
        );
        assert_eq!(s.count("krs_task_up", &[("task_id", &a)]), 0);
        assert_eq!(s.value("krs_watched_tasks", &[]), Some(2.0));
        let s = exporter
            .scrape_until("c polled promptly", |s| {
                s.value("krs_task_up", &[("task_id", &c)]) == Some(1.0)
            })
            .await;
        assert_eq!(s.count("krs_task_downloads", &[("task_id", &a)]), 0);
        let requests_a = sandbox.sim.requests(&a);
        let polls = s.value_or_zero("krs_polls_total", &[]);
        exporter
            .scrape_until("two more polls", |s| {
                s.value_or_zero("krs_polls_total", &[]) >= polls + 2.0
            })
            .await;
        assert_eq!(
            sandbox.sim.requests(&a),
            requests_a,
            "a is no longer polled"
        );
    })
    .await;
}

#[tokio::test]
async fn a_bad_reload_changes_nothing_but_the_reload_gauge() {
    within(async {
        let a = id(55);
        let sandbox = Sandbox::start(vec![SimTask::new(&a)]).await;
        let good = ConfigYaml::new(&sandbox.url(), &[&a]).render();
        let exporter = Exporter::start(&good).await;
        exporter
            .scrape_until("a polled", |s| {
                s.value("krs_task_up", &[("task_id", &a)]) == Some(1.0)
            })
            .await;

        let bad = good.replace("interval: 1s", "interval: soon") + "  - not-a-guid\n";
        exporter.write_config(&bad);
        let (status, body) = exporter.post("/-/reload").await;
        assert_eq!(status, 500);
        assert!(body.contains("polling.interval"), "{body}");
        assert!(body.contains("tasks[1]"), "{body}");
        let s = exporter.scrape().await;
        assert_eq!(s.value("krs_config_last_reload_successful", &[]), Some(0.0));
        assert_eq!(s.value("krs_watched_tasks", &[]), Some(1.0));
        assert_eq!(s.value("krs_task_up", &[("task_id", &a)]), Some(1.0));
        let polls = s.value_or_zero("krs_polls_total", &[]);
        exporter
            .scrape_until("polling goes on", |s| {
                s.value_or_zero("krs_polls_total", &[]) >= polls + 1.0
            })
            .await;

        exporter.write_config(&good);
        assert_eq!(exporter.post("/-/reload").await.0, 200);
        let s = exporter.scrape().await;
        assert_eq!(s.value("krs_config_last_reload_successful", &[]), Some(1.0));
    })
    .await;
}

#[tokio::test]
async fn reload_answers_405_to_anything_but_post() {
    within(async {
        let sandbox = Sandbox::start(vec![]).await;
        let exporter = Exporter::start(&ConfigYaml::new(&sandbox.url(), &[]).render()).await;
        assert_eq!(exporter.get("/-/reload").await.0, 405);
        assert_eq!(exporter.get("/no/such/page").await.0, 404);
        assert_eq!(exporter.post("/metrics").await.0, 405);
    })
    .await;
}

#[tokio::test]
async fn stopping_cancels_slow_polls_and_finishes_within_a_few_seconds() {
    within(async {
        let a = id(56);
        let task = SimTask::new(&a)
            .fault(krs_sandbox_sim::Fault::delay(Duration::from_secs(30)).times(100));
        let sandbox = Sandbox::start(vec![task]).await;
        let mut config = ConfigYaml::new(&sandbox.url(), &[&a]);
        config.interval = "60s";
        config.timeout = "50s";
        let exporter = Exporter::start(&config.render()).await;
        crate::support::eventually("the slow request in flight", || async {
            (sandbox.sim.in_flight() == 1).then_some(())
        })
        .await;
        let took = exporter.stop().await;
        assert!(took < Duration::from_secs(5), "stop took {took:?}");
    })
    .await;
}

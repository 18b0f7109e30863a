//! Each class of sandbox error is classified, counted, retried or not, as the contract says.

use std::time::Duration;

use krs_sandbox_sim::{ErrorBody, Fault, Scenario, SimFile, SimTask};

use crate::support::{id, within, ConfigYaml, Exporter, Sandbox, Scrape, PASSWORD, USER};

fn up(s: &Scrape, t: &str) -> Option<f64> {
    s.value("krs_task_up", &[("task_id", t)])
}

fn polls(s: &Scrape) -> f64 {
    s.value_or_zero("krs_polls_total", &[])
}

/// Starts an exporter watching `tasks` on `sandbox` and waits until `n` polls have finished.
async fn run_polls(sandbox: &Sandbox, tasks: &[&str], n: f64) -> (Exporter, Scrape) {
    let exporter = Exporter::start(&ConfigYaml::new(&sandbox.url(), tasks).render()).await;
    let s = exporter
        .scrape_until(&format!("{n} finished polls"), |s| polls(s) >= n)
        .await;
    (exporter, s)
}

#[tokio::test]
async fn a_bad_task_id_error_is_counted_with_its_code_and_not_retried() {
    within(async {
        let t = id(10);
        let fault = Fault::status(400)
            .error(ErrorBody::new(29, "bad task id"))
            .times(1000);
        let sandbox = Sandbox::start(vec![SimTask::new(&t).fault(fault)]).await;
        let (_e, s) = run_polls(&sandbox, &[&t], 2.0).await;
        assert_eq!(up(&s, &t), Some(0.0));
        assert_eq!(
            s.value("krs_task_last_status_code", &[("task_id", &t)]),
            Some(400.0)
        );
        let errors = s.value(
            "krs_api_errors_total",
            &[
                ("endpoint", "downloads"),
                ("code", "400"),
                ("error_code", "29"),
            ],
        );
        assert!(errors >= Some(2.0), "errors {errors:?}");
        assert_eq!(
            s.value_or_zero("krs_api_retries_total", &[("endpoint", "downloads")]),
            0.0
        );
        assert_eq!(s.value_or_zero("krs_poll_failures_total", &[]), polls(&s));
    })
    .await;
}

#[tokio::test]
async fn an_unknown_task_is_not_found_whether_the_sandbox_says_404_or_400() {
    within(async {
        for status in [404u16, 400] {
            let scenario = Scenario::builder()
                .credentials(USER, PASSWORD)
                .not_found_status(status)
                .build()
                .expect("scenario");
            let sandbox = Sandbox::with_scenario(scenario).await;
            let t = id(11);
            let (_e, s) = run_polls(&sandbox, &[&t], 2.0).await;
            let code = status.to_string();
            assert!(
                s.value_or_zero(
                    "krs_api_errors_total",
                    &[
                        ("endpoint", "downloads"),
                        ("code", &code),
                        ("error_code", "6")
                    ]
                ) >= 2.0,
                "status {status}"
            );
            assert_eq!(up(&s, &t), Some(0.0));
            assert_eq!(
                s.value_or_zero("krs_api_retries_total", &[("endpoint", "downloads")]),
                0.0
            );
        }
    })
    .await;
}

#[tokio::test]
async fn a_deleted_task_reports_code_7_and_keeps_no_counting_series() {
    within(async {
        let t = id(12);
        let sandbox = Sandbox::start(vec![SimTask::new(&t).deleted()]).await;
        let (_e, s) = run_polls(&sandbox, &[&t], 2.0).await;
        assert!(
            s.value_or_zero(
                "krs_api_errors_total",
                &[
                    ("endpoint", "downloads"),
                    ("code", "404"),
                    ("error_code", "7")
                ]
            ) >= 2.0
        );
        assert_eq!(up(&s, &t), Some(0.0));
        assert_eq!(s.count("krs_task_downloads", &[("task_id", &t)]), 0);
        assert_eq!(
            s.value_or_zero("krs_api_retries_total", &[("endpoint", "downloads")]),
            0.0
        );
    })
    .await;
}

#[tokio::test]
async fn a_500_is_retried_and_the_recovered_counts_are_reported() {
    within(async {
        let t = id(13);
        let task = SimTask::new(&t)
            .file(SimFile::new("a.exe", "Red"))
            .fault(Fault::status(500).times(2));
        let sandbox = Sandbox::start(vec![task]).await;
        let exporter = Exporter::start(&ConfigYaml::new(&sandbox.url(), &[&t]).render()).await;
        let s = exporter
            .scrape_until("the task up after retries", |s| up(s, &t) == Some(1.0))
            .await;
        assert_eq!(
            s.value(
                "krs_api_requests_total",
                &[("endpoint", "downloads"), ("code", "500")]
            ),
            Some(2.0)
        );
        assert_eq!(
            s.value("krs_api_retries_total", &[("endpoint", "downloads")]),
            Some(2.0)
        );
        assert_eq!(s.value_or_zero("krs_poll_failures_total", &[]), 0.0);
        assert_eq!(
            s.value(
                "krs_task_downloads",
                &[("task_id", &t), ("danger_zone", "Red")]
            ),
            Some(1.0)
        );
        assert_eq!(s.value("krs_api_up", &[]), Some(1.0));
    })
    .await;
}

#[tokio::test]
async fn a_429_is_retried_no_sooner_than_its_retry_after() {
    within(async {
        let t = id(14);
        let task = SimTask::new(&t).fault(Fault::status(429).retry_after("1"));
        let sandbox = Sandbox::start(vec![task]).await;
        let mut config = ConfigYaml::new(&sandbox.url(), &[&t]);
        config.interval = "5s";
        config.retry = "{initial_interval: 50ms, max_interval: 200ms, max_elapsed_time: 3s}";
        let exporter = Exporter::start(&config.render()).await;
        exporter
            .scrape_until("the task up after the 429", |s| up(s, &t) == Some(1.0))
            .await;
        let log = sandbox.sim.request_log();
        assert_eq!(log.len(), 2, "{log:?}");
        assert_eq!(log[0].status, 429);
        let gap = log[1].at - log[0].at;
        assert!(gap >= Duration::from_millis(950), "retried after {gap:?}");
    })
    .await;
}

#[tokio::test]
async fn a_slow_answer_is_cut_by_the_timeout_and_counted() {
    within(async {
        let t = id(15);
        let task = SimTask::new(&t).fault(Fault::delay(Duration::from_secs(3)).times(1000));
        let sandbox = Sandbox::start(vec![task]).await;
        let exporter = Exporter::start(&ConfigYaml::new(&sandbox.url(), &[&t]).render()).await;
        let s = exporter
            .scrape_until("a timeout", |s| {
                s.value_or_zero(
                    "krs_api_request_failures_total",
                    &[("endpoint", "downloads"), ("reason", "timeout")],
                ) >= 1.0
            })
            .await;
        assert_eq!(up(&s, &t).unwrap_or(0.0), 0.0);
        let s = exporter
            .scrape_until("the poll recorded", |s| up(s, &t) == Some(0.0))
            .await;
        assert_eq!(
            s.value("krs_task_last_status_code", &[("task_id", &t)]),
            Some(0.0)
        );
    })
    .await;
}

#[tokio::test]
async fn an_oversized_body_is_refused_without_retrying() {
    within(async {
        let t = id(16);
        let task = SimTask::new(&t).fault(Fault::oversized(10_000_000).times(1000));
        let sandbox = Sandbox::start(vec![task]).await;
        let (_e, s) = run_polls(&sandbox, &[&t], 2.0).await;
        assert!(
            s.value_or_zero(
                "krs_api_request_failures_total",
                &[("endpoint", "downloads"), ("reason", "body_too_large")]
            ) >= 2.0
        );
        assert_eq!(
            s.value_or_zero("krs_api_retries_total", &[("endpoint", "downloads")]),
            0.0
        );
        assert_eq!(up(&s, &t), Some(0.0));
    })
    .await;
}

#[tokio::test]
async fn a_malformed_body_is_an_invalid_response_and_keeps_the_last_good_counts() {
    within(async {
        let t = id(17);
        let task = SimTask::new(&t).file(SimFile::new("a.exe", "Red"));
        let sandbox = Sandbox::start(vec![task]).await;
        let exporter = Exporter::start(&ConfigYaml::new(&sandbox.url(), &[&t]).render()).await;
        exporter
            .scrape_until("a first success", |s| up(s, &t) == Some(1.0))
            .await;
        sandbox
            .sim
            .push_faults(&t, vec![Fault::malformed().times(1000)]);
        let s = exporter
            .scrape_until("an invalid response", |s| {
                s.value_or_zero(
                    "krs_api_request_failures_total",
                    &[("endpoint", "downloads"), ("reason", "invalid_response")],
                ) >= 1.0
                    && up(s, &t) == Some(0.0)
            })
            .await;
        assert_eq!(
            s.value(
                "krs_task_downloads",
                &[("task_id", &t), ("danger_zone", "Red")]
            ),
            Some(1.0),
            "the last good snapshot stays"
        );
        assert_eq!(
            s.value_or_zero("krs_api_retries_total", &[("endpoint", "downloads")]),
            0.0
        );
    })
    .await;
}

#[tokio::test]
async fn a_reset_connection_is_retried() {
    within(async {
        let t = id(18);
        let task = SimTask::new(&t).fault(Fault::reset());
        let sandbox = Sandbox::start(vec![task]).await;
        let exporter = Exporter::start(&ConfigYaml::new(&sandbox.url(), &[&t]).render()).await;
        let s = exporter
            .scrape_until("recovered", |s| up(s, &t) == Some(1.0))
            .await;
        assert_eq!(
            s.value("krs_api_retries_total", &[("endpoint", "downloads")]),
            Some(1.0)
        );
        let failures: f64 = s
            .matching(
                "krs_api_request_failures_total",
                &[("endpoint", "downloads")],
            )
            .iter()
            .map(|x| x.value)
            .sum();
        assert_eq!(failures, 1.0);
    })
    .await;
}

#[tokio::test]
async fn a_401_pauses_all_polling_instead_of_repeating_the_bad_password() {
    within(async {
        let tasks: Vec<String> = (20..25).map(id).collect();
        let sim_tasks = tasks.iter().map(|t| SimTask::new(t)).collect();
        let sandbox = Sandbox::start(sim_tasks).await;
        sandbox.sim.set_credentials(USER, "a-different-password");
        let refs: Vec<&str> = tasks.iter().map(String::as_str).collect();
        let (exporter, s) = run_polls(&sandbox, &refs, 12.0).await;
        // Twelve polls of five tasks over two intervals, one request (two if a second poll's
        // request was already on the wire when the first 401 came back): the rest were paused.
        assert!(
            sandbox.sim.total_requests() <= 2,
            "{} requests",
            sandbox.sim.total_requests()
        );
        assert_eq!(s.value("krs_api_up", &[]), Some(0.0));
        for t in &tasks {
            assert_eq!(up(&s, t), Some(0.0));
            assert_eq!(
                s.value("krs_task_last_status_code", &[("task_id", t)]),
                Some(401.0)
            );
        }
        let (_, page) = exporter.get("/").await;
        assert!(page.contains("polling paused"), "the status page says why");

        // Fixing the password in the file and reloading resumes at once.
        sandbox.sim.set_credentials(USER, "the-new-password");
        let mut config = ConfigYaml::new(&sandbox.url(), &refs);
        config.password = "the-new-password".into();
        exporter.write_config(&config.render());
        assert_eq!(exporter.post("/-/reload").await.0, 200);
        let s = exporter
            .scrape_until("every task up again", |s| {
                tasks.iter().all(|t| up(s, t) == Some(1.0))
            })
            .await;
        assert_eq!(s.value("krs_api_up", &[]), Some(1.0));
    })
    .await;
}

#[tokio::test]
async fn never_more_requests_in_flight_than_the_concurrency_nor_two_for_one_task() {
    within(async {
        let tasks: Vec<String> = (30..50).map(id).collect();
        let sim_tasks = tasks
            .iter()
            .map(|t| SimTask::new(t).fault(Fault::delay(Duration::from_millis(300)).times(1000)))
            .collect();
        let sandbox = Sandbox::start(sim_tasks).await;
        let refs: Vec<&str> = tasks.iter().map(String::as_str).collect();
        let mut config = ConfigYaml::new(&sandbox.url(), &refs);
        // 20 tasks × 300 ms each per second with 4 slots: more work than slots, so the cap binds.
        config.timeout = "900ms";
        let exporter = Exporter::start(&config.render()).await;
        exporter
            .scrape_until("40 polls", |s| {
                s.value_or_zero("krs_polls_total", &[]) >= 40.0
            })
            .await;
        assert!(
            sandbox.sim.in_flight_max() <= 4,
            "max in flight {}",
            sandbox.sim.in_flight_max()
        );
        assert_eq!(sandbox.sim.in_flight_max(), 4, "the cap was reached");
        assert_eq!(sandbox.sim.in_flight_max_per_task(), 1);
    })
    .await;
}

//! The exporter under sandbox faults: outages, storms, hostile headers, slow or silent peers.
//! Each test here is one row of `docs/reliability.md`.

use std::time::{Duration, Instant};

use krs_sandbox_sim::{Fault, SimFile, SimTask};

use crate::support::{
    eventually, id, within, write_file, ConfigYaml, Exporter, Process, Sandbox, Scrape, PASSWORD,
    USER,
};

fn up(s: &Scrape, t: &str) -> Option<f64> {
    s.value("krs_task_up", &[("task_id", t)])
}

fn polls(s: &Scrape) -> f64 {
    s.value_or_zero("krs_polls_total", &[])
}

fn failures(s: &Scrape, reason: &str) -> f64 {
    s.value_or_zero(
        "krs_api_request_failures_total",
        &[("endpoint", "downloads"), ("reason", reason)],
    )
}

#[tokio::test]
async fn an_outage_collapses_polling_to_one_probe_per_backoff_period_and_recovers_fully() {
    within(async {
        let tasks: Vec<String> = (200..210).map(id).collect();
        let sim_tasks = tasks
            .iter()
            .map(|t| SimTask::new(t).file(SimFile::new("a.exe", "Red")))
            .collect();
        let mut sandbox = Sandbox::start(sim_tasks).await;
        let refs: Vec<&str> = tasks.iter().map(String::as_str).collect();
        let mut config = ConfigYaml::new(&sandbox.url(), &refs);
        config.retry = "{initial_interval: 200ms, max_interval: 1s, max_elapsed_time: 900ms}";
        let exporter = Exporter::start(&config.render()).await;
        let all_up = |s: &Scrape| tasks.iter().all(|t| up(s, t) == Some(1.0));
        exporter.scrape_until("every task up", all_up).await;

        sandbox.stop().await;
        let before = exporter.scrape().await;
        let during = exporter
            .scrape_until("four intervals of polls during the outage", |s| {
                polls(s) >= polls(&before) + 40.0
            })
            .await;
        let attempts = failures(&during, "connect") - failures(&before, "connect");
        let polls_during = polls(&during) - polls(&before);
        eprintln!("measured: outage: {attempts} connection attempts during {polls_during} polls");
        // Without the gate: 10 tasks × 4 intervals × up to 4 attempts each.
        assert!(
            attempts <= 12.0,
            "{attempts} connection attempts for {polls_during} polls: polling did not collapse"
        );
        assert_eq!(during.value("krs_api_up", &[]), Some(0.0));
        for t in &tasks {
            assert_eq!(up(&during, t), Some(0.0));
            assert_eq!(
                during.value(
                    "krs_task_downloads",
                    &[("task_id", t), ("danger_zone", "Red")]
                ),
                Some(1.0),
                "the last good values stay"
            );
        }

        sandbox.restart().await;
        let after = exporter.scrape_until("every task up again", all_up).await;
        assert_eq!(after.value("krs_api_up", &[]), Some(1.0));
    })
    .await;
}

#[tokio::test]
async fn a_hostile_retry_after_holds_polling_no_longer_than_the_cap() {
    within(async {
        let t = id(211);
        let other = id(210);
        let task = SimTask::new(&t).fault(Fault::status(503).retry_after("86400"));
        let sandbox = Sandbox::start(vec![task, SimTask::new(&other)]).await;
        let exporter =
            Exporter::start(&ConfigYaml::new(&sandbox.url(), &[&t, &other]).render()).await;
        let s = exporter
            .scrape_until("the hold reported by both tasks", |s| {
                s.value("krs_api_paused", &[("reason", "retry_after")]) == Some(1.0)
                    && up(s, &other) == Some(0.0)
            })
            .await;
        // A day is cut to the 5-minute cap: the next try is at most 300 s away.
        let (_, page) = exporter.get("/").await;
        let wait: u64 = page
            .split("next try in ")
            .nth(1)
            .and_then(|rest| rest.split('s').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no next try on the page:\n{page}"));
        assert!((1..=300).contains(&wait), "next try in {wait}s");
        assert_eq!(
            sandbox.sim.total_requests(),
            s.value_or_zero(
                "krs_api_requests_total",
                &[("endpoint", "downloads"), ("code", "200")]
            ) as u64
                + 1,
            "one 503, and nothing sent to either task since"
        );
    })
    .await;
}

#[tokio::test]
async fn a_body_trickling_a_byte_per_second_is_cut_by_the_attempt_timeout() {
    within(async {
        let t = id(212);
        let task = SimTask::new(&t)
            .file(SimFile::new("a.exe", "Red"))
            .fault(Fault::trickle(1).times(1000));
        let sandbox = Sandbox::start(vec![task]).await;
        let exporter = Exporter::start(&ConfigYaml::new(&sandbox.url(), &[&t]).render()).await;
        let s = exporter
            .scrape_until("a timeout", |s| failures(s, "timeout") >= 2.0)
            .await;
        let sum = s.value_or_zero(
            "krs_api_request_duration_seconds_sum",
            &[("endpoint", "downloads")],
        );
        let count = s.value_or_zero(
            "krs_api_request_duration_seconds_count",
            &[("endpoint", "downloads")],
        );
        assert!(
            sum / count <= 0.75,
            "attempts took {:.2}s on average",
            sum / count
        );
    })
    .await;
}

#[tokio::test]
async fn a_sandbox_that_accepts_but_never_answers_times_out() {
    within(async {
        // A bound socket that never accepts: the kernel completes the handshake, nobody answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", silent.local_addr().unwrap());
        let t = id(213);
        let exporter = Exporter::start(&ConfigYaml::new(&url, &[&t]).render()).await;
        let s = exporter
            .scrape_until("the poll failed", |s| up(s, &t) == Some(0.0))
            .await;
        assert!(failures(&s, "timeout") >= 1.0);
        assert_eq!(
            s.value("krs_task_last_status_code", &[("task_id", &t)]),
            Some(0.0)
        );
        drop(silent);
    })
    .await;
}

#[tokio::test]
async fn a_name_that_does_not_resolve_is_a_connection_failure() {
    within(async {
        let t = id(214);
        let exporter =
            Exporter::start(&ConfigYaml::new("http://krs-sandbox.invalid", &[&t]).render()).await;
        // The resolver's "no such name" is a connection failure; on a loaded machine it can
        // come later than the attempt timeout, which then reads as a timeout.
        let s = exporter
            .scrape_until("the poll failed for want of a connection", |s| {
                up(s, &t) == Some(0.0) && failures(s, "connect") + failures(s, "timeout") >= 1.0
            })
            .await;
        assert_eq!(failures(&s, "other"), 0.0, "{}", s.text);
        assert_eq!(s.value("krs_api_up", &[]), Some(0.0));
    })
    .await;
}

#[tokio::test]
async fn a_5xx_storm_stays_within_the_request_budget() {
    within(async {
        let tasks: Vec<String> = (215..220).map(id).collect();
        let sim_tasks = tasks
            .iter()
            .map(|t| {
                SimTask::new(t)
                    .fault(Fault::status(500))
                    .faults_repeat(true)
            })
            .collect();
        let sandbox = Sandbox::start(sim_tasks).await;
        let refs: Vec<&str> = tasks.iter().map(String::as_str).collect();
        let exporter = Exporter::start(&ConfigYaml::new(&sandbox.url(), &refs).render()).await;
        let s = exporter
            .scrape_until("fifteen polls", |s| polls(s) >= 15.0)
            .await;
        let requests = sandbox.sim.total_requests() as f64;
        eprintln!(
            "measured: 5xx storm: {requests} requests for {} polls",
            polls(&s)
        );
        // 16 failures of the last 20 attempts pause the fleet; then one probe per period (50 ms
        // doubling to 200 ms). Without pause and budget: up to 6 attempts a poll.
        assert_eq!(
            s.value("krs_api_paused", &[("reason", "unavailable")]),
            Some(1.0)
        );
        let in_flight = 4.0;
        let probes = 10.0;
        assert!(
            requests <= 20.0 + in_flight + probes,
            "{requests} requests for {} polls",
            polls(&s)
        );
        let retries = s.value_or_zero("krs_api_retries_total", &[("endpoint", "downloads")]);
        assert!(retries >= 1.0, "5xx are retried");
        assert!(
            retries <= 10.0,
            "{retries} retries: beyond the budget's floor"
        );
        assert_eq!(sandbox.sim.in_flight_max_per_task(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_scrape_racing_reloads_sees_the_old_or_the_new_watch_list_never_a_mix() {
    within(async {
        let a: Vec<String> = (220..225).map(id).collect();
        let b: Vec<String> = (225..232).map(id).collect();
        let sim_tasks = a.iter().chain(&b).map(|t| SimTask::new(t)).collect();
        let sandbox = Sandbox::start(sim_tasks).await;
        let yaml = |ids: &[String]| {
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            ConfigYaml::new(&sandbox.url(), &refs).render()
        };
        let exporter = Exporter::start(&yaml(&a)).await;
        let reloads = async {
            for i in 0..30 {
                exporter.write_config(&yaml(if i % 2 == 0 { &b } else { &a }));
                assert_eq!(exporter.post("/-/reload").await.0, 200);
            }
        };
        let scrapes = async {
            let mut seen = 0;
            for _ in 0..60 {
                let s = exporter.scrape().await;
                let ids: Vec<String> = s
                    .matching("krs_task_info", &[])
                    .iter()
                    .map(|x| x.labels["task_id"].clone())
                    .collect();
                assert!(ids == a || ids == b, "a torn watch list: {ids:?}");
                assert_eq!(s.value("krs_watched_tasks", &[]), Some(ids.len() as f64));
                seen += 1;
            }
            seen
        };
        let ((), seen) = tokio::join!(reloads, scrapes);
        assert_eq!(seen, 60);
    })
    .await;
}

#[tokio::test]
async fn a_rotated_password_file_takes_effect_on_reload() {
    within(async {
        let t = id(232);
        let sandbox = Sandbox::start(vec![SimTask::new(&t)]).await;
        let dir = tempfile::tempdir().unwrap();
        let password_file = write_file(dir.path(), "password", &format!("{PASSWORD}\n"));
        let config = ConfigYaml::new(&sandbox.url(), &[&t]).render().replace(
            &format!("  password: \"{PASSWORD}\"\n"),
            &format!("  password_file: {}\n", password_file.display()),
        );
        let exporter = Exporter::start(&config).await;
        exporter
            .scrape_until("up", |s| up(s, &t) == Some(1.0))
            .await;

        sandbox.sim.set_credentials(USER, "rotated-password");
        exporter
            .scrape_until("the old password rejected", |s| {
                s.value("krs_task_last_status_code", &[("task_id", &t)]) == Some(401.0)
            })
            .await;
        std::fs::write(&password_file, "rotated-password\n").unwrap();
        assert_eq!(exporter.post("/-/reload").await.0, 200);
        exporter
            .scrape_until("up with the rotated password", |s| up(s, &t) == Some(1.0))
            .await;
    })
    .await;
}

#[tokio::test]
async fn sigterm_during_in_flight_polls_exits_cleanly_and_promptly() {
    within(async {
        let tasks: Vec<String> = (233..237).map(id).collect();
        let sim_tasks = tasks
            .iter()
            .map(|t| SimTask::new(t).fault(Fault::delay(Duration::from_secs(30)).times(10)))
            .collect();
        let sandbox = Sandbox::start(sim_tasks).await;
        let refs: Vec<&str> = tasks.iter().map(String::as_str).collect();
        let mut config = ConfigYaml::new(&sandbox.url(), &refs);
        config.interval = "60s";
        config.timeout = "50s";
        let mut p = Process::spawn(&config.render(), &[]);
        eventually("polls in flight", || async {
            (sandbox.sim.in_flight() >= 2).then_some(())
        })
        .await;
        let started = Instant::now();
        p.signal("TERM");
        let status = p.wait_exit(Duration::from_secs(8)).await;
        assert_eq!(status.code(), Some(0), "{}", p.stderr());
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "took {:?}",
            started.elapsed()
        );
    })
    .await;
}

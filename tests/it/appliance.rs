//! The appliance in trouble is never hammered: each kind of outage, with 5 and with 50 tasks,
//! costs about the same number of requests (the fleet-wide pause caps them, not the fleet
//! size), and polling resumes within one probe period of the fix. Rows of
//! `docs/reliability.md`.

use std::time::{Duration, Instant};

use krs_sandbox_sim::{Fault, SimFile, SimTask};

use crate::support::{id, within, ConfigYaml, Exporter, Sandbox, Scrape};

/// How long each outage lasts: four intervals.
const OUTAGE: Duration = Duration::from_secs(4);
/// The longest pause between probes in these tests (`retry.max_interval`).
const PROBE_PERIOD: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug)]
enum Outage {
    Refused,
    Reset,
    Status503,
    Timeout,
    RetryAfter,
}

struct Measured {
    attempts: f64,
    recovered_in: Duration,
}

fn healthy(t: &str) -> SimTask {
    SimTask::new(t).file(SimFile::new("a.exe", "Red"))
}

fn attempts(s: &Scrape) -> f64 {
    let responses: f64 = s
        .matching("krs_api_requests_total", &[("endpoint", "downloads")])
        .iter()
        .map(|x| x.value)
        .sum();
    let failures: f64 = s
        .matching(
            "krs_api_request_failures_total",
            &[("endpoint", "downloads")],
        )
        .iter()
        .map(|x| x.value)
        .sum();
    responses + failures
}

fn paused(s: &Scrape, reason: &str) -> Option<f64> {
    s.value("krs_api_paused", &[("reason", reason)])
}

/// Runs `outage` against `tasks` tasks for [`OUTAGE`], then fixes it.
async fn through(outage: Outage, tasks: u32, first_id: u32) -> Measured {
    let ids: Vec<String> = (first_id..first_id + tasks).map(id).collect();
    let mut sandbox = Sandbox::start(ids.iter().map(|t| healthy(t)).collect()).await;
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut config = ConfigYaml::new(&sandbox.url(), &refs);
    config.retry = "{initial_interval: 200ms, max_interval: 1s, max_elapsed_time: 900ms}";
    let exporter = Exporter::start(&config.render()).await;
    let all_up = |s: &Scrape| {
        ids.iter()
            .all(|t| s.value("krs_task_up", &[("task_id", t)]) == Some(1.0))
    };
    let before = exporter.scrape_until("every task up", all_up).await;
    let reason = match outage {
        Outage::RetryAfter => "retry_after",
        _ => "unavailable",
    };

    let fault = match outage {
        Outage::Refused => {
            sandbox.stop().await;
            None
        }
        Outage::Reset => {
            sandbox.sim.set_down(true);
            None
        }
        Outage::Status503 => Some(Fault::status(503)),
        Outage::Timeout => Some(Fault::delay(Duration::from_secs(3))),
        Outage::RetryAfter => Some(Fault::status(429).retry_after("1")),
    };
    if let Some(fault) = fault {
        for t in &ids {
            sandbox
                .sim
                .add_task(healthy(t).fault(fault.clone()).faults_repeat(true));
        }
    }
    // The outage's length is the point here, not a wait for a condition.
    tokio::time::sleep(OUTAGE / 2).await;
    let midway = exporter.scrape().await;
    tokio::time::sleep(OUTAGE / 2).await;
    let during = exporter.scrape().await;
    assert_eq!(
        paused(&during, reason),
        Some(1.0),
        "{outage:?}: {}",
        during.text
    );
    for t in &ids {
        assert_eq!(
            during.value("krs_task_up", &[("task_id", t)]),
            Some(0.0),
            "{outage:?}"
        );
        assert_eq!(
            during.value("krs_task_last_success_timestamp_seconds", &[("task_id", t)]),
            midway.value("krs_task_last_success_timestamp_seconds", &[("task_id", t)]),
            "{outage:?}: the task's age keeps growing"
        );
    }
    let (_, page) = exporter.get("/").await;
    assert!(
        page.contains("Polling paused for every task") && page.contains(reason),
        "{outage:?}: the status page shows the pause"
    );

    match outage {
        Outage::Refused => sandbox.restart().await,
        Outage::Reset => sandbox.sim.set_down(false),
        _ => {
            for t in &ids {
                sandbox.sim.add_task(healthy(t));
            }
        }
    }
    let fixed = Instant::now();
    let resumed = exporter
        .scrape_until("polling resumed", |s| paused(s, reason) == Some(0.0))
        .await;
    let recovered_in = fixed.elapsed();
    for other in ["unauthorized", "unavailable", "retry_after"] {
        assert_eq!(paused(&resumed, other), Some(0.0), "{outage:?}");
    }
    exporter.scrape_until("every task up again", all_up).await;
    Measured {
        attempts: attempts(&during) - attempts(&before),
        recovered_in,
    }
}

/// Runs `outage` with 5 and with 50 tasks and checks that both cost about the same.
async fn bounded_and_recovered(outage: Outage, first_id: u32) {
    within(async {
        let (small, large) = tokio::join!(
            through(outage, 5, first_id),
            through(outage, 50, first_id + 5)
        );
        eprintln!(
            "measured: {outage:?} for {OUTAGE:?}: 5 tasks {} attempts, 50 tasks {} attempts; \
             resumed {:?} / {:?} after the fix",
            small.attempts, large.attempts, small.recovered_in, large.recovered_in
        );
        // Without the pause: 50 tasks × 4 intervals, each poll retried, is several hundred.
        for m in [&small, &large] {
            assert!(m.attempts <= 45.0, "{outage:?}: {} attempts", m.attempts);
            // One probe period, plus the next poll to come due and its answer.
            assert!(
                m.recovered_in <= PROBE_PERIOD + Duration::from_millis(1500),
                "{outage:?}: resumed {:?} after the fix",
                m.recovered_in
            );
        }
        assert!(
            large.attempts <= 2.0 * small.attempts + 10.0,
            "{outage:?}: {} attempts for 50 tasks against {} for 5",
            large.attempts,
            small.attempts
        );
    })
    .await;
}

#[tokio::test]
async fn refused_connections_cost_the_same_for_5_or_50_tasks_and_recover_at_the_next_probe() {
    bounded_and_recovered(Outage::Refused, 300).await;
}

#[tokio::test]
async fn reset_connections_cost_the_same_for_5_or_50_tasks_and_recover_at_the_next_probe() {
    bounded_and_recovered(Outage::Reset, 400).await;
}

#[tokio::test]
async fn a_503_on_everything_costs_the_same_for_5_or_50_tasks_and_recovers_at_the_next_probe() {
    bounded_and_recovered(Outage::Status503, 500).await;
}

#[tokio::test]
async fn timeouts_on_everything_cost_the_same_for_5_or_50_tasks_and_recover_at_the_next_probe() {
    bounded_and_recovered(Outage::Timeout, 600).await;
}

#[tokio::test]
async fn a_429_with_retry_after_holds_every_task_and_recovers_when_it_runs_out() {
    bounded_and_recovered(Outage::RetryAfter, 700).await;
}

#[tokio::test]
async fn a_quarter_of_the_tasks_failing_does_not_pause_the_rest_and_retries_stay_in_budget() {
    within(async {
        let ids: Vec<String> = (800..840).map(id).collect();
        let tasks = ids
            .iter()
            .enumerate()
            .map(|(n, t)| {
                let task = healthy(t);
                if n % 4 == 0 {
                    task.fault(Fault::status(500)).faults_repeat(true)
                } else {
                    task
                }
            })
            .collect();
        let sandbox = Sandbox::start(tasks).await;
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let exporter = Exporter::start(&ConfigYaml::new(&sandbox.url(), &refs).render()).await;
        let s = exporter
            .scrape_until("five rounds of polls", |s| {
                s.value_or_zero("krs_polls_total", &[]) >= 200.0
            })
            .await;
        assert_eq!(paused(&s, "unavailable"), Some(0.0), "{}", s.text);
        for (n, t) in ids.iter().enumerate() {
            let up = s.value("krs_task_up", &[("task_id", t)]);
            assert_eq!(up, Some(if n % 4 == 0 { 0.0 } else { 1.0 }), "{t}");
        }
        let retries = s.value_or_zero("krs_api_retries_total", &[("endpoint", "downloads")]);
        let firsts = attempts(&s) - retries;
        eprintln!("measured: a quarter failing: {retries} retries for {firsts} first attempts");
        // 20% of the first attempts, or the floor of 10 per 10 s over the test's few seconds.
        assert!(
            retries <= (0.2 * firsts).max(10.0) + 10.0,
            "{retries} retries for {firsts} first attempts"
        );
        assert!(s.value_or_zero("krs_api_retry_budget_exhausted_total", &[]) > 0.0);
    })
    .await;
}

//! The appliance's own health, as `GET health` and `GET version` report it: the
//! `krs_sandbox_*` families, an appliance without a health endpoint, and no health request
//! while polling is paused.

use std::time::{SystemTime, UNIX_EPOCH};

use krs_sandbox_sim::{Bases, Check, Endpoint, Fault, Health, Incident, Offset, SimTask, Version};

use crate::support::{id, within, ConfigYaml, Exporter, Sandbox, Scrape, USER};

fn config(sandbox: &Sandbox, task: &str, health_interval: &'static str) -> ConfigYaml {
    let mut config = ConfigYaml::new(&sandbox.url(), &[task]);
    config.health_interval = health_interval;
    config
}

fn sandbox_up(s: &Scrape) -> Option<f64> {
    s.value("krs_sandbox_up", &[])
}

fn check(s: &Scrape, name: &str) -> Option<f64> {
    s.value("krs_sandbox_health_check", &[("check", name)])
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

#[tokio::test]
async fn a_healthy_appliance_shows_up_healthy_each_check_and_its_version() {
    within(async {
        let task = id(600);
        let sandbox = Sandbox::start(vec![SimTask::new(&task)]).await;
        let exporter = Exporter::start(&config(&sandbox, &task, "1m").render()).await;
        let s = exporter
            .scrape_until("health and version read", |s| {
                s.count("krs_sandbox_health_check", &[]) > 0
                    && s.count("krs_sandbox_bases_timestamp_seconds", &[]) == 1
            })
            .await;
        assert_eq!(s.value("krs_sandbox_healthy", &[]), Some(1.0));
        assert_eq!(s.count("krs_sandbox_health_check", &[]), 11, "{}", s.text);
        assert_eq!(check(&s, "sb_is_dead"), Some(0.0));
        assert_eq!(check(&s, "ksn_connected"), Some(1.0));
        assert_eq!(
            s.count("krs_sandbox_info", &[("system_version", "2.1.0.3000")]),
            1
        );
        // The simulator's bases were released 6 hours before it started.
        let bases = s
            .value("krs_sandbox_bases_timestamp_seconds", &[])
            .expect("a bases time");
        let expected = unix(sandbox.sim.start_time()) - 6.0 * 3600.0;
        assert!((bases - expected).abs() < 2.0, "{bases} vs {expected}");
        assert_eq!(
            s.value(
                "krs_api_requests_total",
                &[("endpoint", "health"), ("code", "200")]
            ),
            Some(1.0)
        );
        // The first check goes out at start; the next only a period later.
        assert_eq!(sandbox.sim.requests_to(Endpoint::Health), 1);
        assert_eq!(sandbox.sim.requests_to(Endpoint::Version), 1);
    })
    .await;
}

#[tokio::test]
async fn an_incident_shows_unhealthy_with_its_failing_check_until_it_ends() {
    within(async {
        let task = id(601);
        let sandbox = Sandbox::start(vec![SimTask::new(&task)]).await;
        sandbox.sim.set_health(Health {
            incidents: vec![Incident::from(Offset::from_millis(0)).check("sb_is_dead", true)],
            ..Health::default()
        });
        let exporter = Exporter::start(&config(&sandbox, &task, "1s").render()).await;
        let s = exporter
            .scrape_until("the appliance reads unhealthy, sb_is_dead", |s| {
                s.value("krs_sandbox_healthy", &[]) == Some(0.0)
                    && check(s, "sb_is_dead") == Some(1.0)
            })
            .await;
        assert_eq!(sandbox_up(&s), Some(1.0), "it answered");
        assert_eq!(check(&s, "ksn_connected"), Some(1.0));

        // Over, and the appliance now lists a single check: the others' series go.
        sandbox.sim.set_health(Health {
            checks: vec![Check::new("sb_is_dead", false)],
            ..Health::default()
        });
        let s = exporter
            .scrape_until("healthy again, with one check", |s| {
                s.value("krs_sandbox_healthy", &[]) == Some(1.0)
                    && s.count("krs_sandbox_health_check", &[]) == 1
            })
            .await;
        assert_eq!(check(&s, "sb_is_dead"), Some(0.0));
    })
    .await;
}

#[tokio::test]
async fn an_appliance_without_a_health_endpoint_reads_down_and_polling_goes_on() {
    within(async {
        let task = id(602);
        let sandbox = Sandbox::start(vec![SimTask::new(&task)]).await;
        sandbox
            .sim
            .push_endpoint_faults(Endpoint::Health, vec![Fault::status(404).times(1000)]);
        let exporter = Exporter::start(&config(&sandbox, &task, "1s").render()).await;
        let s = exporter
            .scrape_until("two health checks and five polls", |s| {
                s.value_or_zero(
                    "krs_api_requests_total",
                    &[("endpoint", "health"), ("code", "404")],
                ) >= 2.0
                    && s.value_or_zero("krs_polls_total", &[]) >= 5.0
            })
            .await;
        assert_eq!(sandbox_up(&s), Some(0.0));
        assert_eq!(s.count("krs_sandbox_healthy", &[]), 0);
        assert_eq!(s.count("krs_sandbox_health_check", &[]), 0);
        assert_eq!(s.value("krs_task_up", &[("task_id", &task)]), Some(1.0));
        assert_eq!(s.value("krs_poll_failures_total", &[]), Some(0.0));
        assert_eq!(s.value("krs_api_up", &[]), Some(1.0));
        for reason in ["unauthorized", "retry_after", "unavailable"] {
            assert_eq!(s.value("krs_api_paused", &[("reason", reason)]), Some(0.0));
        }
        // Version still answers on its own.
        assert_eq!(s.count("krs_sandbox_info", &[]), 1);
    })
    .await;
}

#[tokio::test]
async fn no_health_request_is_sent_while_a_401_pauses_polling() {
    within(async {
        let task = id(603);
        let sandbox = Sandbox::start(vec![SimTask::new(&task)]).await;
        sandbox.sim.set_credentials(USER, "a-different-password");
        let mut config = config(&sandbox, &task, "1s");
        let exporter = Exporter::start(&config.render()).await;
        let paused = exporter
            .scrape_until("polling paused", |s| {
                s.value("krs_api_paused", &[("reason", "unauthorized")]) == Some(1.0)
                    && s.value_or_zero("krs_polls_total", &[]) >= 1.0
            })
            .await;
        let health_before = sandbox.sim.requests_to(Endpoint::Health);
        let polls = paused.value_or_zero("krs_polls_total", &[]);
        // Three more intervals of paused polls: three more health periods too.
        let s = exporter
            .scrape_until("three more polls", |s| {
                s.value_or_zero("krs_polls_total", &[]) >= polls + 3.0
            })
            .await;
        assert!(health_before <= 1, "{health_before} health requests");
        assert_eq!(sandbox.sim.requests_to(Endpoint::Health), health_before);
        assert_eq!(sandbox.sim.requests_to(Endpoint::Version), 0);
        assert_eq!(sandbox_up(&s), Some(0.0));

        // The fixed password checks the appliance again at once.
        sandbox.sim.set_credentials(USER, "the-new-password");
        config.password = "the-new-password".into();
        exporter.write_config(&config.render());
        assert_eq!(exporter.post("/-/reload").await.0, 200);
        exporter
            .scrape_until("health read again", |s| {
                sandbox_up(s) == Some(1.0) && s.value("krs_sandbox_healthy", &[]) == Some(1.0)
            })
            .await;
    })
    .await;
}

#[tokio::test]
async fn the_bases_release_time_is_shown_and_vanishes_when_the_appliance_reports_none() {
    within(async {
        let task = id(604);
        let sandbox = Sandbox::start(vec![SimTask::new(&task)]).await;
        sandbox.sim.set_version(Version {
            system_version: "2.2.0.100".into(),
            bases: Bases::Text("2024-04-28T00:00:00Z".into()),
        });
        let exporter = Exporter::start(&config(&sandbox, &task, "1s").render()).await;
        let s = exporter
            .scrape_until("the bases time", |s| {
                s.value("krs_sandbox_bases_timestamp_seconds", &[])
                    .is_some()
            })
            .await;
        assert_eq!(
            s.value("krs_sandbox_bases_timestamp_seconds", &[]),
            Some(1_714_262_400.0)
        );
        assert_eq!(
            s.value(
                "krs_sandbox_info",
                &[
                    ("system_version", "2.2.0.100"),
                    ("bases_version", "2024-04-28T00:00:00Z")
                ]
            ),
            Some(1.0)
        );

        sandbox.sim.set_version(Version {
            system_version: "2.2.0.100".into(),
            bases: Bases::Empty,
        });
        let s = exporter
            .scrape_until("the new version read", |s| {
                s.count("krs_sandbox_info", &[("bases_version", "")]) == 1
                    && s.count("krs_sandbox_bases_timestamp_seconds", &[]) == 0
            })
            .await;
        assert_eq!(s.count("krs_sandbox_info", &[]), 1, "one series, replaced");
        assert_eq!(s.count("krs_sandbox_bases_timestamp_seconds", &[]), 0);
    })
    .await;
}

#[tokio::test]
async fn with_health_checks_off_no_request_is_sent_and_no_series_shown() {
    within(async {
        let task = id(605);
        let sandbox = Sandbox::start(vec![SimTask::new(&task)]).await;
        let exporter = Exporter::start(&config(&sandbox, &task, "0s").render()).await;
        let s = exporter
            .scrape_until("three polls", |s| {
                s.value_or_zero("krs_polls_total", &[]) >= 3.0
            })
            .await;
        assert!(!s.text.contains("krs_sandbox_"), "{}", s.text);
        assert_eq!(sandbox.sim.requests_to(Endpoint::Health), 0);
        assert_eq!(sandbox.sim.requests_to(Endpoint::Version), 0);
    })
    .await;
}

//! The binary as an operator runs it: `--config.check`, signals, exit codes, logs.

use std::time::Duration;

use krs_exporter::simulator::{ErrorBody, Fault, SimFile, SimTask};

use crate::support::{
    binary, eventually, id, within, write_file, ConfigYaml, Process, Sandbox, PASSWORD,
};

#[test]
fn config_check_prints_a_summary_and_exits_zero_without_calling_the_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    // Port 9 (discard) on loopback: nothing listens, and nothing must be called anyway.
    let yaml = ConfigYaml::new("http://127.0.0.1:9", &[&id(1), &id(2)]).render();
    let path = write_file(dir.path(), "ok.yml", &yaml);
    let out = binary()
        .args(["--config.check", "--config.file"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("OK"), "{stdout}");
    assert!(stdout.contains("2 tasks"), "{stdout}");
    assert!(!stdout.contains(PASSWORD));
}

#[test]
fn config_check_reports_every_problem_on_its_own_line_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "sandbox:\n  url: ftp://sandbox\n  username: exporter\n  password: {PASSWORD}\n  timeout: 2m\n  colour: red\npolling:\n  interval: 60s\ntasks:\n  - {a}\n  - not-a-guid\n  - {A}\n",
        a = id(1),
        A = id(1).to_uppercase(),
    );
    let path = write_file(dir.path(), "bad.yml", &yaml);
    let out = binary()
        .args(["--config.check", "--config.file"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("bad.yml")).collect();
    for field in [
        "sandbox.url",
        "sandbox.timeout",
        "sandbox.colour",
        "tasks[1]",
        "tasks[2]",
    ] {
        assert!(
            lines.iter().any(|l| l.contains(field)),
            "no line names {field}:\n{stderr}"
        );
    }
    assert!(stderr.contains("first listed at tasks[0]"), "{stderr}");
    assert!(!stderr.contains(PASSWORD));
}

#[test]
fn a_missing_configuration_file_is_named_in_the_error() {
    let out = binary()
        .args(["--config.check", "--config.file", "/nonexistent/krs.yml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/krs.yml"));
}

#[tokio::test]
async fn sigterm_stops_the_daemon_cleanly_within_a_few_seconds() {
    within(async {
        let t = id(70);
        let sandbox = Sandbox::start(vec![SimTask::new(&t)]).await;
        let mut p = Process::spawn(&ConfigYaml::new(&sandbox.url(), &[&t]).render(), &[]);
        p.wait_healthy().await;
        p.signal("TERM");
        let status = p.wait_exit(Duration::from_secs(8)).await;
        assert_eq!(status.code(), Some(0), "stderr:\n{}", p.stderr());
        assert!(p.stderr().contains("msg=stopped"), "{}", p.stderr());
    })
    .await;
}

#[tokio::test]
async fn sighup_reloads_the_watch_list() {
    within(async {
        let (a, b) = (id(71), id(72));
        let sandbox = Sandbox::start(vec![SimTask::new(&a), SimTask::new(&b)]).await;
        let p = Process::spawn(&ConfigYaml::new(&sandbox.url(), &[&a]).render(), &[]);
        p.wait_healthy().await;
        std::fs::write(
            &p.config_path,
            ConfigYaml::new(&sandbox.url(), &[&a, &b]).render(),
        )
        .unwrap();
        p.signal("HUP");
        let url = p.url("/metrics");
        eventually("the second task is watched", || async {
            let body = reqwest::get(&url).await.ok()?.text().await.ok()?;
            body.contains("krs_watched_tasks 2").then_some(())
        })
        .await;
        assert!(
            p.stderr().contains("configuration reloaded"),
            "{}",
            p.stderr()
        );
    })
    .await;
}

#[tokio::test]
async fn the_password_never_appears_in_logs_metrics_or_pages_even_at_debug() {
    within(async {
        let tasks: Vec<String> = (73..78).map(id).collect();
        let sim_tasks = vec![
            SimTask::new(&tasks[0]).fault(Fault::status(500).times(3)),
            SimTask::new(&tasks[1]).fault(Fault::malformed()),
            SimTask::new(&tasks[2])
                .fault(Fault::status(400).error(ErrorBody::new(29, "bad task id"))),
            SimTask::new(&tasks[3]).deleted(),
            SimTask::new(&tasks[4]).file(SimFile::new("a.exe", "Red")),
        ];
        let sandbox = Sandbox::start(sim_tasks).await;
        let refs: Vec<&str> = tasks.iter().map(String::as_str).collect();
        let config = ConfigYaml::new(&sandbox.url(), &refs).render();
        for format in ["logfmt", "json"] {
            let p = Process::spawn(&config, &["--log.level", "debug", "--log.format", format]);
            p.wait_healthy().await;
            let metrics_url = p.url("/metrics");
            let metrics = eventually("every task polled twice", || async {
                let body = reqwest::get(&metrics_url).await.ok()?.text().await.ok()?;
                let polls = body
                    .lines()
                    .find_map(|l| l.strip_prefix("krs_polls_total "))
                    .and_then(|v| v.parse::<f64>().ok())?;
                (polls >= 10.0).then_some(body)
            })
            .await;
            // A bad reload and then a 401 from the sandbox: the remaining error paths.
            std::fs::write(
                &p.config_path,
                config.replace("interval: 1s", "interval: x"),
            )
            .unwrap();
            let client = reqwest::Client::new();
            let reload = client
                .post(p.url("/-/reload"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            sandbox.sim.set_credentials("exporter", "rotated");
            let stderr_url = p.url("/metrics");
            eventually("a 401 seen", || async {
                let body = reqwest::get(&stderr_url).await.ok()?.text().await.ok()?;
                body.contains("krs_api_requests_total{code=\"401\"}")
                    .then_some(())
            })
            .await;
            let page = reqwest::get(p.url("/"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let stderr = p.stderr();
            assert!(
                stderr.to_lowercase().contains("debug"),
                "debug logs present ({format})"
            );
            for (what, text) in [
                ("logs", &stderr),
                ("metrics", &metrics),
                ("page", &page),
                ("reload answer", &reload),
            ] {
                assert!(
                    !text.contains(PASSWORD),
                    "the password appears in the {what} ({format})"
                );
            }
            sandbox.sim.set_credentials("exporter", PASSWORD);
        }
    })
    .await;
}

#[test]
fn the_shipped_example_configuration_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let password = write_file(dir.path(), "password", "example-password\n");
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.yml"))
            .unwrap()
            .replace("/run/secrets/krs_password", &password.to_string_lossy());
    let path = write_file(dir.path(), "example.yml", &example);
    let out = binary()
        .args(["--config.check", "--config.file"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 tasks"));
}

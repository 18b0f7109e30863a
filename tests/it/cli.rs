//! The binary as an operator runs it: `--config.check`, signals, exit codes, logs.

use std::time::Duration;

use krs_exporter::app::DEFAULT_SHUTDOWN_GRACE;
use krs_sandbox_sim::{ErrorBody, Fault, SimFile, SimTask};

use crate::support::{
    binary, eventually, id, large_config, mkfifo, run_within, within, write_file, ConfigYaml,
    Process, Sandbox, PASSWORD,
};

/// SIGTERM to exit: the whole shutdown is bounded by the grace period; the rest is slack for
/// a loaded machine to start and reap the process.
const GRACE: Duration = Duration::from_secs(DEFAULT_SHUTDOWN_GRACE.as_secs() + 3);

/// `yaml` (from [`ConfigYaml`]) with the password read from `path` instead.
fn with_password_file(yaml: &str, path: &std::path::Path) -> String {
    let inline = format!("password: \"{PASSWORD}\"");
    assert!(yaml.contains(&inline));
    yaml.replace(&inline, &format!("password_file: {}", path.display()))
}

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
        let status = p.wait_exit(GRACE).await;
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
                body.contains("krs_api_requests_total{code=\"401\",endpoint=\"downloads\"}")
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
fn a_bare_port_as_listen_address_exits_2_suggesting_the_colon_form_even_under_config_check() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = ConfigYaml::new("http://127.0.0.1:9", &[&id(1)]).render();
    let path = write_file(dir.path(), "ok.yml", &yaml);
    for check in [true, false] {
        let mut cmd = binary();
        if check {
            cmd.arg("--config.check");
        }
        let out = cmd
            .args(["--web.listen-address", "10131", "--config.file"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "check={check}: {stderr}");
        assert!(
            stderr.contains("--web.listen-address \"10131\"")
                && stderr.contains("did you mean :10131?"),
            "{stderr}"
        );
    }
    for bad in ["localhost", "host:http", "::1:80", "[::g]:80"] {
        let out = binary()
            .args([
                "--config.check",
                "--web.listen-address",
                bad,
                "--config.file",
            ])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}: {out:?}");
    }
    let out = binary()
        .args(["--config.check", "--web.listen-address", "[::1]:10131"])
        .arg("--config.file")
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn the_shipped_example_configuration_passes_the_check_its_header_gives() {
    let root = env!("CARGO_MANIFEST_DIR");
    let example = std::fs::read_to_string(format!("{root}/config/example.yml")).unwrap();
    let command = example
        .lines()
        .find_map(|l| l.strip_prefix("# Validate with:"))
        .expect("the header says how to validate");
    let args: Vec<&str> = command.split_whitespace().collect();
    assert_eq!(args[0], "krs-exporter", "{command}");
    // Run as the header says, from the repository root, on the file as shipped.
    let out = binary()
        .current_dir(root)
        .args(&args[1..])
        .env_remove("KRS_PASSWORD")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 tasks"));
}

#[test]
fn config_check_with_a_fifo_as_password_file_exits_at_once_naming_the_field_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = mkfifo(&dir.path().join("password"));
    let yaml = with_password_file(
        &ConfigYaml::new("http://127.0.0.1:9", &[&id(1)]).render(),
        &fifo,
    );
    let path = write_file(dir.path(), "krs.yml", &yaml);
    let run = run_within(
        binary()
            .args(["--config.check", "--config.file"])
            .arg(&path),
        Duration::from_secs(10),
    );
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "sandbox.password_file: cannot read the password file: it is a FIFO, not a regular file (got \"{}\")",
            fifo.display()
        )),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert!(run.elapsed < Duration::from_secs(2), "{:?}", run.elapsed);
}

#[test]
fn config_check_refuses_a_configuration_file_that_is_a_fifo_or_an_endless_device() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = mkfifo(&dir.path().join("krs.yml"));
    for (path, kind) in [
        (fifo.as_path(), "a FIFO"),
        (std::path::Path::new("/dev/zero"), "a character device"),
    ] {
        let run = run_within(
            binary().args(["--config.check", "--config.file"]).arg(path),
            Duration::from_secs(10),
        );
        assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
        assert!(
            run.stderr.contains(&format!(
                "cannot read configuration file {}: it is {kind}, not a regular file",
                path.display()
            )),
            "{}",
            run.stderr
        );
    }
}

#[tokio::test]
async fn a_reload_onto_a_fifo_fails_with_500_and_the_next_reload_and_sigterm_still_work() {
    within(async {
        let (a, b) = (id(80), id(81));
        let sandbox = Sandbox::start(vec![SimTask::new(&a), SimTask::new(&b)]).await;
        let yaml = ConfigYaml::new(&sandbox.url(), &[&a]).render();
        let mut p = Process::spawn(&yaml, &[]);
        p.wait_healthy().await;
        let fifo = mkfifo(&p.config_path.with_file_name("password"));
        std::fs::write(&p.config_path, with_password_file(&yaml, &fifo)).unwrap();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let reload = http.post(p.url("/-/reload")).send().await.unwrap();
        assert_eq!(reload.status(), 500);
        let body = reload.text().await.unwrap();
        assert!(
            body.contains("sandbox.password_file: cannot read the password file: it is a FIFO"),
            "{body}"
        );

        std::fs::write(
            &p.config_path,
            ConfigYaml::new(&sandbox.url(), &[&a, &b]).render(),
        )
        .unwrap();
        let reload = http.post(p.url("/-/reload")).send().await.unwrap();
        assert_eq!(reload.status(), 200, "{}", reload.text().await.unwrap());

        p.signal("TERM");
        let status = p.wait_exit(GRACE).await;
        assert_eq!(status.code(), Some(0), "stderr:\n{}", p.stderr());
    })
    .await;
}

#[tokio::test]
async fn a_sighup_during_start_up_becomes_a_reload_instead_of_killing_the_process() {
    within(async {
        // Loading 100k tasks takes most of a second: the SIGHUP lands while it runs.
        let mut p = Process::spawn(&large_config(100_000), &[]);
        p.wait_log("msg=starting").await;
        p.signal("HUP");
        p.wait_healthy().await;
        p.wait_log("trigger=SIGHUP summary=").await;
        assert!(p.running(), "stderr:\n{}", p.stderr());
        let stderr = p.stderr();
        let loaded = stderr.find("configuration loaded").expect("loaded");
        let reloaded = stderr.find("configuration reloaded").expect("reloaded");
        assert!(loaded < reloaded, "{stderr}");
        assert_eq!(stderr.matches("configuration reloaded").count(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_sigterm_during_start_up_exits_zero_without_finishing_the_load() {
    within(async {
        let mut p = Process::spawn(&large_config(100_000), &[]);
        p.wait_log("msg=starting").await;
        p.signal("TERM");
        let status = p.wait_exit(GRACE).await;
        assert_eq!(status.code(), Some(0), "stderr:\n{}", p.stderr());
    })
    .await;
}

#[tokio::test]
async fn a_sigterm_during_a_slow_reload_exits_within_the_grace_period() {
    within(async {
        let mut p = Process::spawn(&large_config(10), &[]);
        p.wait_healthy().await;
        // Reading and validating 300k tasks takes seconds in a debug build.
        std::fs::write(&p.config_path, large_config(300_000)).unwrap();
        p.signal("HUP");
        p.wait_log("msg=\"reloading configuration\"").await;
        let start = std::time::Instant::now();
        p.signal("TERM");
        let status = p.wait_exit(GRACE).await;
        let took = start.elapsed();
        assert_eq!(status.code(), Some(0), "stderr:\n{}", p.stderr());
        assert!(
            !p.stderr().contains("configuration reloaded"),
            "the reload was not abandoned:\n{}",
            p.stderr()
        );
        eprintln!("exited {took:?} after SIGTERM during a reload");
    })
    .await;
}

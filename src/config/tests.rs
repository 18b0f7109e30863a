//! Tests of the whole loader: YAML text (or a file) in, a `Config` or the problem lines out.
//! Each stage's own rules are tested beside it.

use std::path::Path;
use std::time::Duration;

use super::testing::*;
use super::*;

#[test]
fn the_full_example_of_the_contract_loads_with_every_field() {
    let dir = TempDir::new();
    let password_file = dir.write("krs_password", "from-file\n");
    let ca_file = dir.write("sandbox-ca.pem", PEM);
    let yaml = include_str!("testdata/contract-example.yml")
        .replace(
            "/run/secrets/krs_password",
            &password_file.to_string_lossy(),
        )
        .replace(
            "/etc/krs-exporter/sandbox-ca.pem",
            &ca_file.to_string_lossy(),
        );
    let config_path = dir.write("krs-exporter.yml", &yaml);

    let config = Config::load_with_env(&config_path, &env).unwrap();

    assert_eq!(config.source, config_path);
    let s = &config.sandbox;
    assert_eq!(s.url.as_str(), "https://sandbox.example.com/");
    assert_eq!(s.username, "exporter");
    assert_eq!(s.password.expose(), "from-file");
    assert_eq!(s.password_file.as_deref(), Some(password_file.as_path()));
    assert_eq!(s.ca_file.as_deref(), Some(ca_file.as_path()));
    assert!(!s.insecure_skip_verify);
    assert_eq!(s.timeout, Duration::from_secs(10));
    assert_eq!(s.max_response_bytes, 16_777_216);
    let p = &config.polling;
    assert_eq!(p.interval, Duration::from_secs(60));
    assert_eq!(p.concurrency, 4);
    assert_eq!(p.retry.initial_interval, Duration::from_millis(500));
    assert_eq!(p.retry.max_interval, Duration::from_secs(30));
    assert_eq!(p.retry.multiplier, 2.0);
    assert_eq!(p.retry.randomization_factor, 0.5);
    assert_eq!(p.retry.max_elapsed_time, Duration::from_secs(120));
    assert_eq!(config.tasks.len(), 2);
    assert_eq!(config.tasks[0].id.as_str(), ID_A);
    assert_eq!(config.tasks[0].name, "invoice-macro");
    assert_eq!(
        config.tasks[0].labels,
        TaskLabels::from([
            ("case".to_owned(), "IR-2291".to_owned()),
            ("team".to_owned(), "soc".to_owned())
        ])
    );
    assert_eq!(config.tasks[1].id.as_str(), ID_B);
    assert_eq!(config.tasks[1].name, "");
    assert!(config.tasks[1].labels.is_empty());
    assert_eq!(config.metrics.file_info_zones, vec![DangerZone::Red]);
    assert_eq!(config.metrics.max_label_length, 128);
    assert_eq!(config.metrics.max_label_values, 100);
}

#[test]
fn defaults_apply_when_optional_sections_and_fields_are_absent() {
    let config = ok(MINIMAL);
    assert_eq!(config.sandbox.password.expose(), PASSWORD);
    assert_eq!(config.sandbox.password_file, None);
    assert_eq!(config.sandbox.ca_file, None);
    assert!(!config.sandbox.insecure_skip_verify);
    assert_eq!(config.sandbox.timeout, Duration::from_secs(10));
    assert_eq!(config.sandbox.max_response_bytes, 16 * 1024 * 1024);
    assert_eq!(config.polling, PollingConfig::default());
    assert_eq!(config.metrics, MetricsConfig::default());
    assert!(config.tasks.is_empty());
    assert_eq!(config.source, Path::new(SOURCE));
}

#[test]
fn every_problem_is_reported_at_once() {
    let yaml = "\
sandbx: {}
sandbox:
  username: exporter
  password: x
  timeout: ten
  colour: blue
polling:
  concurrency: -1
tasks:
  - bad-id-1
  - bad-id-2
  - id: 0d5b4e44-4c0e-4f0b-9a57-3f2d1b9e6c71
    labels: {__meta: x}
metrics:
  file_info_zones: [Purple]
";
    let lines = problems(yaml);
    let fields: Vec<&str> = lines
        .iter()
        .map(|l| l.split(": ").next().unwrap_or_default())
        .collect();
    assert_eq!(
        fields,
        [
            "sandbx",
            "sandbox.colour",
            "sandbox.url",
            "sandbox.timeout",
            "polling.concurrency",
            "tasks[0]",
            "tasks[1]",
            "tasks[2].labels.__meta",
            "metrics.file_info_zones[0]",
        ],
        "{lines:#?}"
    );
}

#[test]
fn a_missing_sandbox_section_is_one_problem() {
    assert_eq!(
        one_problem("polling:\n  interval: 30s\n"),
        "sandbox: required section is missing (it needs at least url, username and password or password_file)"
    );
    assert_eq!(problems("").len(), 1);
}

#[test]
fn debug_output_of_a_config_never_shows_the_password() {
    let config = ok(&format!("{MINIMAL}tasks:\n  - {ID_A}\n"));
    let debug = format!("{config:?} {config:#?}");
    assert!(!debug.contains(PASSWORD), "{debug}");
    assert!(debug.contains("<redacted>"));
}

#[test]
fn the_summary_names_counts_interval_and_url_but_never_the_password() {
    let config = ok(&format!("{MINIMAL}tasks:\n  - {ID_A}\n  - {ID_B}\n"));
    assert_eq!(
        config.summary(),
        "2 tasks, interval 1m, concurrency 4, sandbox https://sandbox.example.com/"
    );
    let one = ok(&format!("{MINIMAL}tasks:\n  - {ID_A}\n"));
    assert!(one.summary().starts_with("1 task, "));
    assert!(!config.summary().contains(PASSWORD));
}

#[test]
fn a_yaml_syntax_error_is_one_problem_with_its_line_and_column() {
    let line = one_problem("sandbox:\n  url: https://h\n username: x\n");
    assert!(
        line.starts_with("invalid YAML at line 3, column 2: did not find expected key"),
        "{line}"
    );
}

#[test]
fn garbage_values_are_escaped_and_truncated_in_problems() {
    let garbage = format!("\\e[31m{}", "A".repeat(200));
    let line = one_problem(&format!(
        "{MINIMAL}  timeout: \"{garbage}\\nforged line\"\n"
    ));
    assert!(line.contains(r#"(got "\u{1b}[31mAAAA"#), "{line}");
    assert!(line.ends_with("…\")"), "{line}");
    assert!(!line.contains("forged"), "{line}");
}

#[test]
fn a_configuration_file_that_is_a_fifo_or_a_device_is_refused_at_once() {
    let dir = TempDir::new();
    let fifo = crate::config::testing::mkfifo(&dir.0.join("krs.yml"));
    for path in [fifo.as_path(), Path::new("/dev/zero")] {
        let err = Config::load(path).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
        assert!(err.to_string().ends_with(", not a regular file"), "{err}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }
    assert_eq!(
        Config::load(&fifo).unwrap_err().to_string(),
        format!(
            "cannot read configuration file {}: it is a FIFO, not a regular file",
            fifo.display()
        )
    );
}

#[test]
fn a_configuration_file_over_64_mib_is_refused_unparsed() {
    let dir = TempDir::new();
    let path = dir.0.join("huge.yml");
    let file = std::fs::File::create(&path).unwrap();
    // Sparse: the size is what counts, and the disk stays empty.
    file.set_len(crate::config::MAX_CONFIG_BYTES + 1).unwrap();
    let err = Config::load(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "cannot read configuration file {}: it is larger than 64 MiB (67108864 bytes)",
            path.display()
        )
    );
}

#[test]
fn a_symlinked_configuration_file_is_followed() {
    let dir = TempDir::new();
    let target = dir.write("real.yml", MINIMAL);
    let link = dir.0.join("krs.yml");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let config = Config::load_with_env(&link, &env).unwrap();
    assert_eq!(config.sandbox.username, "exporter");
}

#[test]
fn a_missing_file_is_a_read_error_naming_it() {
    let path = Path::new("/nonexistent/krs-exporter.yml");
    let err = Config::load(path).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(
        err.to_string().starts_with(
            "cannot read configuration file /nonexistent/krs-exporter.yml: No such file"
        ),
        "{err}"
    );
    let source = std::error::Error::source(&err).map(ToString::to_string);
    assert!(source.is_some_and(|s| s.contains("No such file")));
    assert!(err.problems().is_empty());
}

#[test]
fn the_problems_are_available_as_values_too() {
    let err = load(&with_sandbox("")).unwrap_err();
    assert_eq!(
        err.problems(),
        [Problem::new(
            "sandbox",
            "one of password or password_file is required"
        )]
    );
}

#[test]
fn equal_files_give_equal_configs_and_a_changed_setting_does_not() {
    let a = ok(MINIMAL);
    assert_eq!(a, ok(MINIMAL));
    let b = ok(&format!("{MINIMAL}  timeout: 5s\n"));
    assert_ne!(a.sandbox, b.sandbox);
    assert_eq!(a.polling, b.polling);
}

mod fuzz {
    //! The loader never panics, whatever the file holds: 10,000 cases each in CI.

    use super::*;
    use proptest::prelude::*;

    fn load(text: &str) {
        let env = |name: &str| (name == "SET").then(|| "value".to_string());
        let _ = Config::from_yaml_str(text, Path::new("/nonexistent/fuzz.yml"), &env);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            load(&text);
        }

        #[test]
        fn yaml_shaped_token_soup_never_panics(
            tokens in prop::collection::vec(
                prop::sample::select(vec![
                    "sandbox:", "polling:", "tasks:", "metrics:", "retry:", "\n", "\n  ", "\n    ",
                    "- ", "url: ", "username: ", "password: ", "password_file: ", "timeout: ",
                    "interval: ", "concurrency: ", "id: ", "labels: ", "{", "}", "[", "]", ",",
                    "http://h", "${SET}", "${UNSET}", "$${", "10s", "-1", "1e999", "null", "~",
                    "0d5b4e44-4c0e-4f0b-9a57-3f2d1b9e6c71", "{a: b}", "&x ", "*x", "<<: ", "'",
                    "\"", "file_info_zones: ", "Red", "multiplier: ", "NaN", ".inf", "!!binary ",
                ]),
                0..60,
            )
        ) {
            load(&tokens.concat());
        }
    }
}

#[test]
fn task_labels_are_kept_sorted_and_found_by_name() {
    let labels = TaskLabels::from([
        ("team".to_owned(), "soc".to_owned()),
        ("case".to_owned(), "IR-1".to_owned()),
        ("zone".to_owned(), "dmz".to_owned()),
        ("case".to_owned(), "IR-2".to_owned()),
    ]);
    assert_eq!(labels.keys().collect::<Vec<_>>(), ["case", "team", "zone"]);
    assert_eq!(labels.get("case"), Some("IR-2"), "the later value wins");
    assert_eq!(labels.get("zone"), Some("dmz"));
    assert_eq!(labels.get("absent"), None);
    assert_eq!(labels.len(), 3);
    assert!(TaskLabels::default().is_empty());
}

#[test]
fn without_discovery_every_task_keeps_the_fixed_interval_and_the_paces_fit_it() {
    let config = ok(&format!(
        "{MINIMAL}  timeout: 2s\npolling:\n  interval: 5s\n"
    ));
    let p = &config.polling;
    assert!(!p.lifecycle);
    assert!(config.discovery.is_none());
    assert_eq!(p.active_interval, Duration::from_secs(5));
    assert_eq!(p.settled_interval, Some(Duration::from_secs(3600)));
    assert_eq!(p.health_interval, Some(Duration::from_secs(60)));
}

#[test]
fn a_discovery_section_turns_the_lifecycle_on_with_its_defaults() {
    let config = ok(&format!("{MINIMAL}discovery: {{}}\n"));
    assert!(config.polling.lifecycle);
    assert_eq!(config.polling.active_interval, Duration::from_secs(10));
    let d = config.discovery.expect("a discovery section");
    assert_eq!(d.interval, Duration::from_secs(60));
    assert_eq!(d.lookback, Duration::from_secs(24 * 3600));
    assert!(d.zones.is_empty());
    assert_eq!((d.max_tasks, d.page_size), (10_000, 500));
    assert_eq!(d.labels, TaskLabels::default());
}

#[test]
fn discovery_and_lifecycle_settings_are_read_as_written() {
    let config = ok(&format!(
        "{MINIMAL}  timeout: 2s\npolling:\n  interval: 1m\n  active_interval: 5s\n  settled_interval: 0s\n  lifecycle: true\n  health_interval: 0s\ndiscovery:\n  interval: 30s\n  lookback: 7d\n  zones: [Red, orange]\n  max_tasks: 50\n  page_size: 1500\n  labels: {{team: soc}}\n"
    ));
    let p = &config.polling;
    assert_eq!(p.active_interval, Duration::from_secs(5));
    assert_eq!((p.settled_interval, p.health_interval), (None, None));
    let d = config.discovery.expect("a discovery section");
    assert_eq!(d.lookback, Duration::from_secs(7 * 24 * 3600));
    assert_eq!(d.zones, [DangerZone::Red, DangerZone::Orange]);
    assert_eq!((d.max_tasks, d.page_size), (50, 1500));
    assert_eq!(d.labels.get("team"), Some("soc"));
}

#[test]
fn lifecycle_and_discovery_mistakes_are_reported_together_with_their_fields() {
    let lines = problems(&format!(
        "{MINIMAL}polling:\n  interval: 30s\n  active_interval: 1m\n  settled_interval: 10s\ndiscovery:\n  lookback: 90d\n  page_size: 2000\n  zones: [Purple]\n  labels: {{source: mine}}\n  max_task: 3\n"
    ));
    let expect = [
        "discovery.max_task: unknown key",
        "discovery.lookback: must be at most",
        "discovery.zones[0]: unknown zone",
        "discovery.page_size: must be between 1 and 1500",
        "discovery.labels.source: source is a label of krs_task_info already",
        "polling.active_interval: must not exceed polling.interval",
        "polling.settled_interval: must be at least polling.interval",
    ];
    for e in expect {
        assert!(
            lines.iter().any(|l| l.contains(e)),
            "{e:?} not in {lines:#?}"
        );
    }
}

#[test]
fn the_timeout_must_be_shorter_than_the_active_interval_when_the_lifecycle_sets_paces() {
    let line = one_problem(&format!(
        "{MINIMAL}  timeout: 8s\npolling:\n  active_interval: 5s\ndiscovery: {{}}\n"
    ));
    assert!(
        line.contains("sandbox.timeout: must be shorter than polling.active_interval"),
        "{line}"
    );
}

/// The configuration examples of the README and the reference, as the reader copies them:
/// list-item indentation removed; files that exist only on the reader's machine (the password
/// file, the CA bundle) replaced by an inline password.
fn documented_examples() -> Vec<String> {
    let docs = [
        include_str!("../../README.md"),
        include_str!("../../docs/configuration.md"),
    ];
    let mut examples = Vec::new();
    for doc in docs {
        for block in doc
            .split("```yaml\n")
            .skip(1)
            .filter_map(|rest| rest.split("```").next())
        {
            let indent = block
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| l.len() - l.trim_start().len())
                .min()
                .unwrap_or(0);
            let mut yaml = String::new();
            for line in block.lines().map(|l| l.get(indent..).unwrap_or("")) {
                match line.trim_start() {
                    l if l.starts_with("ca_file:") => {}
                    l if l.starts_with("password_file:") => yaml.push_str("  password: example\n"),
                    _ => {
                        yaml.push_str(line);
                        yaml.push('\n');
                    }
                }
            }
            if !yaml.contains("sandbox:") {
                yaml.insert_str(0, MINIMAL);
            }
            examples.push(yaml);
        }
    }
    examples
}

#[test]
fn every_configuration_example_of_the_readme_and_the_reference_loads() {
    let examples = documented_examples();
    assert!(examples.len() >= 5, "{} examples", examples.len());
    let configs: Vec<Config> = examples
        .iter()
        .map(|yaml| load(yaml).unwrap_or_else(|e| panic!("documented example:\n{yaml}\n{e}")))
        .collect();
    let with_discovery: Vec<&Config> = configs.iter().filter(|c| c.discovery.is_some()).collect();
    assert!(
        with_discovery.len() >= 2,
        "the README and the discovery section"
    );
    for config in with_discovery {
        assert!(config.polling.lifecycle, "a discovery section turns it on");
        // The default timeout yielded to the active pace.
        assert!(config.sandbox.timeout < config.polling.active_interval);
    }
}

#[test]
fn the_sandbox_ui_task_url_links_each_task_and_a_template_without_the_placeholder_is_refused() {
    let config = ok(&with_sandbox(
        "  password: x\n  ui_task_url: https://sandbox.example.com/tasks/{task_id}?tab=files\n",
    ));
    let template = config.sandbox.ui_task_url.expect("set");
    let id = TaskId::parse(ID_A).expect("valid id");
    assert_eq!(
        template.for_task(&id),
        format!("https://sandbox.example.com/tasks/{ID_A}?tab=files")
    );
    assert_eq!(ok(MINIMAL).sandbox.ui_task_url, None);
    for (value, why) in [
        (
            "https://sandbox.example.com/tasks/",
            "must contain {task_id}",
        ),
        (
            "ftp://sandbox.example.com/{task_id}",
            "the scheme must be http or https",
        ),
        ("/tasks/{task_id}", "not a valid absolute URL"),
    ] {
        let line = one_problem(&with_sandbox(&format!(
            "  password: x\n  ui_task_url: \"{value}\"\n"
        )));
        assert!(line.starts_with("sandbox.ui_task_url: "), "{line}");
        assert!(line.contains(why), "{line}");
    }
}

//! The reference pages against the binary they describe: every metric family a scrape returns
//! is in `docs/metrics.md`, every flag `--help` lists is in `docs/configuration.md`.

use std::collections::BTreeSet;

use krs_sandbox_sim::{SimFile, SimTask};

use crate::support::{binary, id, within, ConfigYaml, DiscoveryYaml, Exporter, Sandbox};

fn document(name: &str) -> String {
    std::fs::read_to_string(format!("{}/docs/{name}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("docs/{name}: {e}"))
}

/// The names in the first column of the document's tables: `| `name` | …`.
fn table_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`'))
        .map(|(name, _)| name.to_string())
        .collect()
}

#[tokio::test]
async fn every_family_a_scrape_returns_is_in_the_metrics_reference() {
    within(async {
        let (red, missing) = (id(90), id(91));
        let task = SimTask::new(&red).file(
            SimFile::new("dropper.exe", "Red")
                .yara("Rule_A")
                .detection("Trojan.Win32.Agent"),
        );
        let sandbox = Sandbox::start(vec![task]).await;
        // The second task does not exist: its 404 brings the error families. Discovery brings
        // its own families and, through the listed task's state, the lifecycle ones.
        let mut config =
            ConfigYaml::new(&sandbox.url(), &[&red, &missing]).discover(DiscoveryYaml::default());
        config.health_interval = "1m";
        let exporter = Exporter::start(&config.render()).await;
        let scrape = exporter
            .scrape_until(
                "both tasks polled, the list read, the appliance checked",
                |s| {
                    s.count("krs_task_last_poll_timestamp_seconds", &[]) == 2
                        && s.count("krs_sandbox_info", &[]) == 1
                        && s.count("krs_task_processed_timestamp_seconds", &[]) == 1
                        && s.count("krs_discovery_last_success_timestamp_seconds", &[]) == 1
                },
            )
            .await;
        let families: BTreeSet<&str> = scrape
            .text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        for family in ["krs_shards", "krs_task_state", "krs_discovery_tasks"] {
            assert!(families.contains(family), "{family} not in {families:?}");
        }
        let documented = table_names(&document("metrics.md"));
        let missing: Vec<&&str> = families
            .iter()
            .filter(|f| !documented.contains(**f))
            .filter(|f| !(f.starts_with("process_") && documented.contains("process_*")))
            .collect();
        assert!(
            missing.is_empty(),
            "scraped but not in docs/metrics.md: {missing:?}"
        );
    })
    .await;
}

#[test]
fn every_flag_of_the_help_text_is_in_the_configuration_reference() {
    let out = binary().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let flags: BTreeSet<&str> = help
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .filter(|w| !matches!(*w, "--help" | "--version"))
        .collect();
    assert!(flags.contains("--web.max-requests"), "{help}");
    let documented: BTreeSet<String> = table_names(&document("configuration.md"))
        .into_iter()
        .filter_map(|name| name.split(' ').next().map(str::to_string))
        .collect();
    let missing: Vec<&&str> = flags.iter().filter(|f| !documented.contains(**f)).collect();
    assert!(
        missing.is_empty(),
        "in --help but not in docs/configuration.md: {missing:?}"
    );
}

//! The appliance's own account of itself, as the health loop ([`crate::health`]) reads it from
//! `GET health` and `GET version`: `krs_sandbox_up`, `krs_sandbox_healthy`,
//! `krs_sandbox_health_check{check}`, `krs_sandbox_info{system_version, bases_version}` and
//! `krs_sandbox_bases_timestamp_seconds`.
//!
//! Every family is a vector, so that a series exists only while its value is known: nothing at
//! all while health checks are off, no `healthy` from an appliance that does not say, no bases
//! time from one that never updated. Values describe the latest answer that decoded and stay
//! through a failed check (`krs_sandbox_up` 0 says they are stale); a later answer replaces
//! them, and a check it no longer lists loses its series.

use std::collections::BTreeSet;
use std::sync::Mutex;

use prometheus::{GaugeVec, IntGaugeVec, Opts, Registry};

use super::family::{register, unix_seconds};
use crate::labels;
use crate::sandbox::decode::lifecycle::{Health, Version};

/// The longest label value taken from `GET health` or `GET version`, in characters, as for
/// every other string from the sandbox.
const MAX_LABEL_CHARS: usize = 128;

/// The one series of an unlabelled family.
const NO_LABELS: &[&str] = &[];

/// Handles for the appliance's health and version, and which series are shown now.
pub struct SandboxMetrics {
    up: IntGaugeVec,
    healthy: IntGaugeVec,
    checks: IntGaugeVec,
    info: IntGaugeVec,
    bases_time: GaugeVec,
    /// The labelled series shown now, to remove those the next answer no longer has. The one
    /// writer is the health loop; the lock only keeps each update whole.
    shown: Mutex<Shown>,
}

#[derive(Default)]
struct Shown {
    checks: BTreeSet<String>,
    /// `[system_version, bases_version]` of the one `krs_sandbox_info` series.
    info: Option<[String; 2]>,
    /// What the console shows beside the series: `krs_sandbox_up`, `krs_sandbox_healthy` and
    /// the checks reported false.
    up: Option<bool>,
    healthy: Option<bool>,
    failing: Vec<String>,
}

/// The appliance as the console shows it: the series above, read back.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SandboxStatus {
    /// `None` while health checks are off or before the first one.
    pub up: Option<bool>,
    pub healthy: Option<bool>,
    /// Checks of the latest answer that report trouble ([`reports_trouble`]), by name.
    pub failing_checks: Vec<String>,
    /// `[system_version, bases_version]`, once `GET version` answered.
    pub version: Option<[String; 2]>,
}

impl SandboxMetrics {
    pub fn register(registry: &Registry) -> Self {
        let gauges = |name: &str, help: &str, labels: &[&str]| {
            register(registry, IntGaugeVec::new(Opts::new(name, help), labels))
        };
        let up = gauges(
            "krs_sandbox_up",
            "1 if the latest GET health answered 200 with a readable body, else 0; absent while health checks are off.",
            &[],
        );
        let healthy = gauges(
            "krs_sandbox_healthy",
            "The appliance's own healthy flag from GET health (1 true, 0 false); absent until it reports one.",
            &[],
        );
        let checks = gauges(
            "krs_sandbox_health_check",
            "Each detailed condition of GET health (1 true, 0 false), by check name as the appliance reports it.",
            &["check"],
        );
        let info = gauges(
            "krs_sandbox_info",
            "The appliance's version and anti-virus bases version from GET version (always 1).",
            &["system_version", "bases_version"],
        );
        let bases_time = register(
            registry,
            GaugeVec::new(
                Opts::new(
                    "krs_sandbox_bases_timestamp_seconds",
                    "Release time of the appliance's anti-virus bases (bases_version of GET version); absent when it reports none.",
                ),
                &[],
            ),
        );
        SandboxMetrics {
            up,
            healthy,
            checks,
            info,
            bases_time,
            shown: Mutex::new(Shown::default()),
        }
    }

    /// Records a `GET health` that answered 200 and decoded: up, its flag, its checks.
    pub fn record_health(&self, health: &Health) {
        let mut shown = self.lock();
        // Written against the registry's gathering order (by name), as in
        // `Metrics::record_activity`: a scrape that sees the new checks sees the flag and `up`
        // that came with them.
        self.up.with_label_values(NO_LABELS).set(1);
        match health.healthy {
            Some(flag) => self
                .healthy
                .with_label_values(NO_LABELS)
                .set(i64::from(flag)),
            None => {
                let _ = self.healthy.remove_label_values(NO_LABELS);
            }
        }
        let now: BTreeSet<String> = health
            .checks
            .iter()
            .map(|(name, value)| {
                let name = labels::clean(name, MAX_LABEL_CHARS);
                self.checks
                    .with_label_values(&[&name])
                    .set(i64::from(*value));
                name
            })
            .collect();
        for gone in shown.checks.difference(&now) {
            let _ = self.checks.remove_label_values(&[gone]);
        }
        shown.checks = now;
        shown.up = Some(true);
        shown.healthy = health.healthy;
        shown.failing = health
            .checks
            .iter()
            .filter(|(name, value)| reports_trouble(name, *value))
            .map(|(name, _)| labels::clean(name, MAX_LABEL_CHARS))
            .collect();
    }

    /// Records a `GET health` without a usable answer (an error status, a failure, a body that
    /// does not decode, or none sent because polling is paused): the last answer stays.
    pub fn set_down(&self) {
        let mut shown = self.lock();
        self.up.with_label_values(NO_LABELS).set(0);
        shown.up = Some(false);
    }

    /// Records a `GET version` that answered 200 and decoded.
    pub fn record_version(&self, version: &Version) {
        let mut shown = self.lock();
        // The info series before the time, for the same reason as in `record_health`.
        let values = [
            labels::clean(&version.system_version, MAX_LABEL_CHARS),
            labels::clean(&version.bases_version, MAX_LABEL_CHARS),
        ];
        if shown.info.as_ref() != Some(&values) {
            // The old series goes first: two at once would break a join on this one.
            if let Some(old) = shown.info.take() {
                let _ = self.info.remove_label_values(&[&old[0], &old[1]]);
            }
            self.info
                .with_label_values(&[&values[0], &values[1]])
                .set(1);
            shown.info = Some(values);
        }
        match version.bases_time {
            Some(t) => self
                .bases_time
                .with_label_values(NO_LABELS)
                .set(unix_seconds(t)),
            None => {
                let _ = self.bases_time.remove_label_values(NO_LABELS);
            }
        }
    }

    /// Removes every series: health checks were turned off, or now watch another appliance.
    pub fn clear(&self) {
        let mut shown = self.lock();
        self.up.reset();
        self.healthy.reset();
        self.checks.reset();
        self.info.reset();
        self.bases_time.reset();
        *shown = Shown::default();
    }

    /// The appliance's latest account, for the console.
    pub fn status(&self) -> SandboxStatus {
        let shown = self.lock();
        SandboxStatus {
            up: shown.up,
            healthy: shown.healthy,
            failing_checks: shown.failing.clone(),
            version: shown.info.clone(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shown> {
        self.shown.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether a check's value means trouble, as the runbook reads them: a `*_is_dead` or
/// `*_expired` check when true, any other (`enough_free_disk_space`, …) when false.
pub fn reports_trouble(name: &str, value: bool) -> bool {
    let bad_when_true = name.ends_with("_is_dead") || name.ends_with("_expired");
    value == bad_when_true
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn metrics() -> (Registry, SandboxMetrics) {
        let registry = Registry::new();
        let metrics = SandboxMetrics::register(&registry);
        (registry, metrics)
    }

    /// The exposition's sample lines, without HELP and TYPE.
    fn samples(registry: &Registry) -> Vec<String> {
        let mut buf = Vec::new();
        prometheus::Encoder::encode(
            &prometheus::TextEncoder::new(),
            &registry.gather(),
            &mut buf,
        )
        .expect("encodes");
        String::from_utf8(buf)
            .expect("UTF-8")
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_string)
            .collect()
    }

    fn health(healthy: Option<bool>, checks: &[(&str, bool)]) -> Health {
        Health {
            healthy,
            checks: checks.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
        }
    }

    #[test]
    fn nothing_is_shown_before_the_first_check() {
        let (registry, _metrics) = metrics();
        assert_eq!(samples(&registry), Vec::<String>::new());
    }

    #[test]
    fn a_healthy_answer_shows_up_the_flag_and_every_check() {
        let (registry, m) = metrics();
        m.record_health(&health(
            Some(true),
            &[("ksn_connected", true), ("sb_is_dead", false)],
        ));
        assert_eq!(
            samples(&registry),
            [
                "krs_sandbox_health_check{check=\"ksn_connected\"} 1",
                "krs_sandbox_health_check{check=\"sb_is_dead\"} 0",
                "krs_sandbox_healthy 1",
                "krs_sandbox_up 1",
            ]
        );
    }

    #[test]
    fn the_console_reads_back_the_checks_that_report_trouble_either_way_round() {
        let (_, m) = metrics();
        assert_eq!(m.status(), SandboxStatus::default());
        m.record_health(&health(
            Some(true),
            &[
                ("enough_free_disk_space", false),
                ("ksn_connected", true),
                ("sb_is_dead", true),
                ("kpsn_is_dead", false),
            ],
        ));
        let status = m.status();
        assert_eq!((status.up, status.healthy), (Some(true), Some(true)));
        assert_eq!(
            status.failing_checks,
            ["enough_free_disk_space", "sb_is_dead"]
        );
        m.set_down();
        assert_eq!(m.status().up, Some(false));
    }

    #[test]
    fn a_check_no_longer_reported_loses_its_series_and_a_missing_flag_its_own() {
        let (registry, m) = metrics();
        m.record_health(&health(
            Some(false),
            &[("ksn_connected", false), ("sb_is_dead", true)],
        ));
        m.record_health(&health(None, &[("sb_is_dead", false)]));
        assert_eq!(
            samples(&registry),
            [
                "krs_sandbox_health_check{check=\"sb_is_dead\"} 0",
                "krs_sandbox_up 1",
            ]
        );
    }

    #[test]
    fn a_failed_check_marks_the_appliance_down_and_keeps_the_last_answer() {
        let (registry, m) = metrics();
        m.set_down();
        assert_eq!(samples(&registry), ["krs_sandbox_up 0"]);
        m.record_health(&health(Some(false), &[("sb_is_dead", true)]));
        m.set_down();
        assert_eq!(
            samples(&registry),
            [
                "krs_sandbox_health_check{check=\"sb_is_dead\"} 1",
                "krs_sandbox_healthy 0",
                "krs_sandbox_up 0",
            ]
        );
    }

    #[test]
    fn a_new_version_replaces_the_one_info_series() {
        let (registry, m) = metrics();
        let bases = UNIX_EPOCH + Duration::from_secs(1_714_262_400);
        m.record_version(&Version {
            system_version: "2.1.0.3000".into(),
            bases_version: "2024-04-28T00:00:00Z".into(),
            bases_time: Some(bases),
        });
        m.record_version(&Version {
            system_version: "2.1.0.3000".into(),
            bases_version: "2024-04-29T00:00:00Z".into(),
            bases_time: Some(bases + Duration::from_secs(86_400)),
        });
        assert_eq!(
            samples(&registry),
            [
                "krs_sandbox_bases_timestamp_seconds 1714348800",
                "krs_sandbox_info{bases_version=\"2024-04-29T00:00:00Z\",system_version=\"2.1.0.3000\"} 1",
            ]
        );
    }

    #[test]
    fn bases_that_are_not_a_time_leave_no_timestamp_and_hostile_versions_are_cleaned() {
        let (registry, m) = metrics();
        m.record_version(&Version {
            system_version: "2.1\n\u{202e}x".into(),
            bases_version: "2024-04-28".into(),
            bases_time: Some(UNIX_EPOCH),
        });
        m.record_version(&Version {
            system_version: "v".repeat(1000),
            bases_version: String::new(),
            bases_time: None,
        });
        let shown = samples(&registry);
        assert_eq!(shown.len(), 1, "{shown:?}");
        assert_eq!(
            shown[0],
            format!(
                "krs_sandbox_info{{bases_version=\"\",system_version=\"{}\"}} 1",
                "v".repeat(MAX_LABEL_CHARS)
            )
        );
        m.record_version(&Version {
            system_version: "2.1\n\u{202e}x".into(),
            ..Version::default()
        });
        assert_eq!(
            samples(&registry),
            ["krs_sandbox_info{bases_version=\"\",system_version=\"2.1\u{FFFD}\u{FFFD}x\"} 1"]
        );
    }

    #[test]
    fn clearing_removes_every_series() {
        let (registry, m) = metrics();
        m.record_health(&health(Some(true), &[("sb_is_dead", false)]));
        m.record_version(&Version {
            system_version: "2.1.0.3000".into(),
            bases_version: "2024-04-28".into(),
            bases_time: Some(UNIX_EPOCH),
        });
        m.clear();
        assert_eq!(samples(&registry), Vec::<String>::new());
        m.record_health(&health(None, &[("sb_is_dead", true)]));
        assert_eq!(
            samples(&registry),
            [
                "krs_sandbox_health_check{check=\"sb_is_dead\"} 1",
                "krs_sandbox_up 1"
            ]
        );
    }
}

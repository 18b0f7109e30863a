//! The appliance as a whole, beside its tasks: its wall clock, its health checks and their
//! incidents, its version and anti-virus bases, how its task list is spelled, and the faults of
//! the endpoints that name no task.

use std::time::{Duration, SystemTime};

use super::lifecycle::Offset;
use super::scenario::{Fault, KeyCase};

/// The appliance-wide part of a scenario. `Default` is a healthy appliance, version
/// `2.1.0.3000`, bases 6 hours old at start, started at the wall-clock time of `start`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Appliance {
    /// Wall-clock time of simulator start; `None`: the time `start` is called.
    pub start_time: Option<SystemTime>,
    pub health: Health,
    pub version: Version,
    pub list_format: ListFormat,
    pub list_faults: EndpointFaults,
    pub health_faults: EndpointFaults,
    pub version_faults: EndpointFaults,
}

/// `GET /health`: the checks, their shape, and incidents that change them for a while.
#[derive(Clone, Debug, PartialEq)]
pub struct Health {
    pub shape: HealthShape,
    /// In this order; default: every check the contract names, each at its good value.
    pub checks: Vec<Check>,
    pub incidents: Vec<Incident>,
}

/// How `detailed` is spelled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HealthShape {
    /// `[{"name": "sb_is_dead", "value": false}, …]`
    #[default]
    NameValue,
    /// `[{"sb_is_dead": false}, …]`
    SingleKey,
    /// `{"sb_is_dead": false, …}`
    Object,
}

/// One named boolean condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub value: bool,
}

/// From `from` until `until` (open-ended when `None`), these checks take these values (a check
/// not yet listed is appended); `healthy` is derived from the checks unless given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incident {
    pub from: Offset,
    pub until: Option<Offset>,
    pub checks: Vec<Check>,
    pub healthy: Option<bool>,
}

/// `GET /version`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub system_version: String,
    pub bases: Bases,
}

/// `bases_version` (also every task's `AvBasesVersion`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bases {
    /// Released this long before simulator start (so they age as the simulator runs).
    Age(Duration),
    /// Sent verbatim (an ISO 8601 date-time, or anything).
    Text(String),
    /// `""`: an appliance that has never updated.
    Empty,
}

/// How the task list's body is spelled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListFormat {
    pub shape: ListShape,
    pub key_case: KeyCase,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ListShape {
    /// `[record, …]`
    #[default]
    Array,
    /// `{"Total": n, "Tasks": [record, …]}`: the first array-of-objects property holds them.
    Wrapped,
}

/// A fault list for one endpoint, consumed one element per request to it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EndpointFaults {
    pub faults: Vec<Fault>,
    pub repeat: bool,
}

/// Checks that mean trouble when true; every other check means trouble when false.
const BAD_WHEN_TRUE: &[&str] = &["sb_is_dead", "av_components_are_expired", "kpsn_is_dead"];

const GOOD_WHEN_TRUE: &[&str] = &[
    "scanner_detects_available",
    "scanner_types_available",
    "scanner_klmr_available",
    "ksn_enabled",
    "kpsn_enabled",
    "ksn_connected",
    "windows_environment_installed",
    "enough_free_disk_space",
];

impl Default for Health {
    fn default() -> Self {
        let checks = BAD_WHEN_TRUE
            .iter()
            .map(|n| Check::new(n, false))
            .chain(GOOD_WHEN_TRUE.iter().map(|n| Check::new(n, true)))
            .collect();
        Health {
            shape: HealthShape::default(),
            checks,
            incidents: Vec::new(),
        }
    }
}

impl Default for Version {
    fn default() -> Self {
        Version {
            system_version: "2.1.0.3000".to_owned(),
            bases: Bases::Age(Duration::from_secs(6 * 3600)),
        }
    }
}

impl Check {
    pub fn new(name: &str, value: bool) -> Self {
        Check {
            name: name.to_owned(),
            value,
        }
    }

    /// Whether this value means trouble: `true` for `*_is_dead`/`*_expired` names, else `false`.
    pub fn is_bad(&self) -> bool {
        let n = self.name.to_ascii_lowercase();
        let bad_when_true =
            BAD_WHEN_TRUE.contains(&n.as_str()) || n.ends_with("_dead") || n.ends_with("_expired");
        self.value == bad_when_true
    }
}

impl Incident {
    /// An open-ended incident from `from` on.
    pub fn from(from: Offset) -> Self {
        Incident {
            from,
            until: None,
            checks: Vec::new(),
            healthy: None,
        }
    }

    pub fn until(mut self, until: Offset) -> Self {
        self.until = Some(until);
        self
    }

    pub fn check(mut self, name: &str, value: bool) -> Self {
        self.checks.push(Check::new(name, value));
        self
    }

    pub fn healthy(mut self, healthy: bool) -> Self {
        self.healthy = Some(healthy);
        self
    }

    fn covers(&self, now: Offset) -> bool {
        self.from <= now && self.until.is_none_or(|u| now < u)
    }
}

impl Health {
    /// `healthy` and the checks at `now`, incidents applied in order.
    pub(crate) fn at(&self, now: Offset) -> (bool, Vec<Check>) {
        let mut checks = self.checks.clone();
        let mut forced = None;
        for incident in self.incidents.iter().filter(|i| i.covers(now)) {
            for c in &incident.checks {
                match checks.iter_mut().find(|k| k.name == c.name) {
                    Some(k) => k.value = c.value,
                    None => checks.push(c.clone()),
                }
            }
            if incident.healthy.is_some() {
                forced = incident.healthy;
            }
        }
        let healthy = forced.unwrap_or_else(|| !checks.iter().any(Check::is_bad));
        (healthy, checks)
    }
}

impl Bases {
    /// The `bases_version` string, given the wall-clock time of simulator start.
    pub(crate) fn render(&self, start: SystemTime) -> String {
        match self {
            Bases::Age(age) => iso(start.checked_sub(*age).unwrap_or(std::time::UNIX_EPOCH)),
            Bases::Text(t) => t.clone(),
            Bases::Empty => String::new(),
        }
    }
}

/// `YYYY-MM-DDThh:mm:ssZ`.
pub(crate) fn iso(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_appliance_is_healthy_and_an_incident_makes_it_unhealthy_for_a_while() {
        let mut health = Health::default();
        assert_eq!(health.checks.len(), 11);
        assert!(health.at(Offset::ZERO).0);
        health.incidents.push(
            Incident::from(Offset::from_millis(60_000))
                .until(Offset::from_millis(120_000))
                .check("sb_is_dead", true),
        );
        assert!(health.at(Offset::from_millis(59_999)).0);
        let (healthy, checks) = health.at(Offset::from_millis(60_000));
        assert!(!healthy);
        assert!(checks.iter().any(|c| c.name == "sb_is_dead" && c.value));
        assert!(
            health.at(Offset::from_millis(120_000)).0,
            "until is exclusive"
        );
    }

    #[test]
    fn polarity_follows_the_name() {
        assert!(Check::new("sb_is_dead", true).is_bad());
        assert!(!Check::new("sb_is_dead", false).is_bad());
        assert!(Check::new("ksn_connected", false).is_bad());
        assert!(Check::new("custom_thing_expired", true).is_bad());
    }

    #[test]
    fn bases_age_from_the_start_time() {
        let start = humantime::parse_rfc3339("2024-05-01T12:00:00Z").unwrap();
        assert_eq!(
            Bases::Age(Duration::from_secs(3 * 86_400)).render(start),
            "2024-04-28T12:00:00Z"
        );
        assert_eq!(Bases::Empty.render(start), "");
    }
}

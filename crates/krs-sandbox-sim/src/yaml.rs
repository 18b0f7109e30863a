//! The YAML form of a scenario: `Raw*` types that mirror the file (unknown keys rejected) and
//! their conversion, field by field, into the scenario types. Validation proper is shared with
//! the builder in [`super::scenario`].

use std::time::Duration;

use serde::Deserialize;

use super::appliance::{
    Appliance, Bases, Check, EndpointFaults, Health, HealthShape, Incident, ListFormat, ListShape,
    Version,
};
use super::generator::Generator;
use super::lifecycle::{Offset, Repeat, Sample, StateName, Step, TaskError};
use super::scenario::{
    ErrorBody, ErrorCode, Fault, FaultAction, KeyCase, ParamsShape, ResponseFormat, Scenario,
    ScenarioError, Shape, SimFile, SimTask, StatusBody, TaskState, ZoneChange,
};

/// Parse and validate a YAML scenario.
pub(super) fn parse(text: &str) -> Result<Scenario, ScenarioError> {
    let raw: RawScenario =
        krs_yaml::from_str(text).map_err(|source| ScenarioError::Yaml { path: None, source })?;
    raw.into_scenario()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    credentials: RawCredentials,
    #[serde(default = "default_not_found_status")]
    not_found_status: u16,
    #[serde(default)]
    tasks: Vec<RawTask>,
    start_time: Option<String>,
    health: Option<RawHealth>,
    version: Option<RawVersion>,
    task_list: Option<RawListFormat>,
    #[serde(default)]
    list_faults: Vec<RawFault>,
    #[serde(default)]
    list_faults_repeat: bool,
    #[serde(default)]
    health_faults: Vec<RawFault>,
    #[serde(default)]
    health_faults_repeat: bool,
    #[serde(default)]
    version_faults: Vec<RawFault>,
    #[serde(default)]
    version_faults_repeat: bool,
    generator: Option<RawGenerator>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    #[serde(default)]
    shape: RawHealthShape,
    checks: Option<Vec<RawCheck>>,
    #[serde(default)]
    incidents: Vec<RawIncident>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "snake_case")]
enum RawHealthShape {
    #[default]
    NameValue,
    SingleKey,
    Object,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    name: String,
    value: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIncident {
    from: String,
    until: Option<String>,
    #[serde(default)]
    checks: Vec<RawCheck>,
    healthy: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVersion {
    system_version: Option<String>,
    bases_age: Option<String>,
    bases_version: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListFormat {
    #[serde(default)]
    shape: RawListShape,
    #[serde(default)]
    key_case: RawKeyCase,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "snake_case")]
enum RawListShape {
    #[default]
    Array,
    Wrapped,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGenerator {
    every: String,
    start: Option<String>,
    upload: Option<String>,
    queue: Option<String>,
    detonation: Option<String>,
    files: Option<u32>,
    red_share: Option<f64>,
    yara_share: Option<f64>,
    fail_share: Option<f64>,
    keep: Option<usize>,
    seed: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    at: String,
    state: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRepeat {
    at: String,
    processing: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSample {
    original_file_name: Option<String>,
    file_name: Option<String>,
    #[serde(default)]
    archive_name: String,
    extension: Option<String>,
    #[serde(default, rename = "type")]
    file_type: String,
    #[serde(default)]
    size: u64,
    md5: Option<String>,
    sha1: Option<String>,
    sha256: Option<String>,
    #[serde(default)]
    ssdeep: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTaskError {
    code: String,
    message: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "snake_case")]
enum RawParamsShape {
    #[default]
    Object,
    Array,
    Wrapped,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCredentials {
    username: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    id: String,
    name: Option<String>,
    #[serde(default)]
    state: RawState,
    #[serde(default)]
    shape: RawShape,
    #[serde(default)]
    key_case: RawKeyCase,
    #[serde(default)]
    size_as_string: bool,
    #[serde(default)]
    yara_as_objects: bool,
    #[serde(default)]
    gray_spelling: bool,
    #[serde(default)]
    served_at: bool,
    #[serde(default)]
    files: Vec<RawFile>,
    #[serde(default)]
    faults: Vec<RawFault>,
    #[serde(default)]
    faults_repeat: bool,
    created: Option<String>,
    #[serde(default)]
    timeline: Vec<RawStep>,
    #[serde(default)]
    repeats: Vec<RawRepeat>,
    #[serde(default)]
    sample: RawSample,
    verdict: Option<String>,
    sample_zone: Option<String>,
    error: Option<RawTaskError>,
    #[serde(default)]
    params_shape: RawParamsShape,
    #[serde(default)]
    params_faults: Vec<RawFault>,
    #[serde(default)]
    params_faults_repeat: bool,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "snake_case")]
enum RawState {
    #[default]
    Active,
    Deleted,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "snake_case")]
enum RawShape {
    #[default]
    Array,
    Object,
    Wrapped,
    NullWhenEmpty,
    EmptyWhenEmpty,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "snake_case")]
enum RawKeyCase {
    #[default]
    Pascal,
    Lower,
    Upper,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    name: String,
    zone: String,
    #[serde(default)]
    size: u64,
    #[serde(default, rename = "type")]
    file_type: String,
    #[serde(default)]
    https: bool,
    after: Option<String>,
    #[serde(default)]
    detections: Vec<String>,
    #[serde(default)]
    yara: Vec<String>,
    md5: Option<String>,
    sha1: Option<String>,
    sha256: Option<String>,
    #[serde(default)]
    zone_changes: Vec<RawZoneChange>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawZoneChange {
    after: String,
    zone: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    times: Option<u32>,
    pass: Option<bool>,
    status: Option<u16>,
    error: Option<RawError>,
    retry_after: Option<RawScalar>,
    delay: Option<String>,
    body: Option<RawBodyFault>,
    bytes: Option<u64>,
    content_length: Option<bool>,
    reset: Option<bool>,
    trickle: Option<RawTrickle>,
    body_text: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawError {
    code: ErrorCode,
    message: String,
    meta: Option<String>,
}

/// `retry_after: 2` and `retry_after: "2"` both mean the header value `2`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawScalar {
    Number(i64),
    Text(String),
}

#[derive(Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
enum RawBodyFault {
    Malformed,
    Oversized,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrickle {
    bytes_per_second: u64,
}

fn default_not_found_status() -> u16 {
    404
}

impl RawScenario {
    fn into_scenario(self) -> Result<Scenario, ScenarioError> {
        let mut tasks = Vec::with_capacity(self.tasks.len());
        for (i, raw) in self.tasks.into_iter().enumerate() {
            tasks.push(raw.into_task(&format!("tasks[{i}]"))?);
        }
        let mut builder = Scenario::builder()
            .credentials(&self.credentials.username, &self.credentials.password)
            .not_found_status(self.not_found_status)
            .tasks(tasks);
        let mut appliance = Appliance::default();
        if let Some(text) = &self.start_time {
            appliance.start_time = Some(humantime::parse_rfc3339(text.trim()).map_err(|e| {
                ScenarioError::invalid(
                    "start_time",
                    format!("{text:?} is not a date-time like 2024-05-01T12:00:00Z ({e})"),
                )
            })?);
        }
        if let Some(health) = self.health {
            appliance.health = health.into_health()?;
        }
        if let Some(version) = self.version {
            appliance.version = version.into_version()?;
        }
        if let Some(list) = self.task_list {
            appliance.list_format = ListFormat {
                shape: match list.shape {
                    RawListShape::Array => ListShape::Array,
                    RawListShape::Wrapped => ListShape::Wrapped,
                },
                key_case: list.key_case.into(),
            };
        }
        appliance.list_faults =
            endpoint_faults(self.list_faults, self.list_faults_repeat, "list_faults")?;
        appliance.health_faults = endpoint_faults(
            self.health_faults,
            self.health_faults_repeat,
            "health_faults",
        )?;
        appliance.version_faults = endpoint_faults(
            self.version_faults,
            self.version_faults_repeat,
            "version_faults",
        )?;
        builder = builder.appliance(appliance);
        if let Some(generator) = self.generator {
            builder = builder.generator(generator.into_generator()?);
        }
        builder.build()
    }
}

impl From<RawKeyCase> for KeyCase {
    fn from(raw: RawKeyCase) -> KeyCase {
        match raw {
            RawKeyCase::Pascal => KeyCase::Pascal,
            RawKeyCase::Lower => KeyCase::Lower,
            RawKeyCase::Upper => KeyCase::Upper,
        }
    }
}

impl From<RawCheck> for Check {
    fn from(raw: RawCheck) -> Check {
        Check {
            name: raw.name,
            value: raw.value,
        }
    }
}

impl RawHealth {
    fn into_health(self) -> Result<Health, ScenarioError> {
        let mut health = Health {
            shape: match self.shape {
                RawHealthShape::NameValue => HealthShape::NameValue,
                RawHealthShape::SingleKey => HealthShape::SingleKey,
                RawHealthShape::Object => HealthShape::Object,
            },
            ..Health::default()
        };
        if let Some(checks) = self.checks {
            health.checks = checks.into_iter().map(Check::from).collect();
        }
        for (i, raw) in self.incidents.into_iter().enumerate() {
            let field = format!("health.incidents[{i}]");
            health.incidents.push(Incident {
                from: parse_offset(&raw.from, &format!("{field}.from"))?,
                until: raw
                    .until
                    .map(|u| parse_offset(&u, &format!("{field}.until")))
                    .transpose()?,
                checks: raw.checks.into_iter().map(Check::from).collect(),
                healthy: raw.healthy,
            });
        }
        Ok(health)
    }
}

impl RawVersion {
    fn into_version(self) -> Result<Version, ScenarioError> {
        let mut version = Version::default();
        if let Some(v) = self.system_version {
            version.system_version = v;
        }
        version.bases = match (self.bases_age, self.bases_version) {
            (Some(_), Some(_)) => {
                return Err(ScenarioError::invalid(
                    "version.bases_version",
                    "cannot be combined with bases_age",
                ))
            }
            (Some(age), None) => Bases::Age(parse_duration(&age, "version.bases_age")?),
            (None, Some(text)) if text.is_empty() => Bases::Empty,
            (None, Some(text)) => Bases::Text(text),
            (None, None) => version.bases,
        };
        Ok(version)
    }
}

impl RawGenerator {
    fn into_generator(self) -> Result<Generator, ScenarioError> {
        let mut g = Generator::every(parse_duration(&self.every, "generator.every")?);
        if let Some(start) = &self.start {
            g.start = parse_offset(start, "generator.start")?;
        }
        for (raw, slot, key) in [
            (&self.upload, &mut g.upload, "upload"),
            (&self.queue, &mut g.queue, "queue"),
            (&self.detonation, &mut g.detonation, "detonation"),
        ] {
            if let Some(text) = raw {
                *slot = parse_duration(text, &format!("generator.{key}"))?;
            }
        }
        g.files = self.files.unwrap_or(g.files);
        g.red_share = self.red_share.unwrap_or(g.red_share);
        g.yara_share = self.yara_share.unwrap_or(g.yara_share);
        g.fail_share = self.fail_share.unwrap_or(g.fail_share);
        g.keep = self.keep.unwrap_or(g.keep);
        g.seed = self.seed.unwrap_or(g.seed);
        Ok(g)
    }
}

fn endpoint_faults(
    raw: Vec<RawFault>,
    repeat: bool,
    field: &str,
) -> Result<EndpointFaults, ScenarioError> {
    let mut faults = Vec::with_capacity(raw.len());
    for (i, raw) in raw.into_iter().enumerate() {
        faults.push(raw.into_fault(&format!("{field}[{i}]"))?);
    }
    Ok(EndpointFaults { faults, repeat })
}

impl RawTask {
    fn into_task(self, field: &str) -> Result<SimTask, ScenarioError> {
        let mut files = Vec::with_capacity(self.files.len());
        for (i, raw) in self.files.into_iter().enumerate() {
            files.push(raw.into_file(&format!("{field}.files[{i}]"))?);
        }
        let mut faults = Vec::with_capacity(self.faults.len());
        for (i, raw) in self.faults.into_iter().enumerate() {
            faults.push(raw.into_fault(&format!("{field}.faults[{i}]"))?);
        }
        let params = endpoint_faults(
            self.params_faults,
            self.params_faults_repeat,
            &format!("{field}.params_faults"),
        )?;
        let created = match &self.created {
            Some(text) => parse_offset(text, &format!("{field}.created"))?,
            None => Offset::ZERO,
        };
        let mut timeline = Vec::with_capacity(self.timeline.len());
        for (i, step) in self.timeline.into_iter().enumerate() {
            timeline.push(Step {
                at: parse_offset(&step.at, &format!("{field}.timeline[{i}].at"))?,
                state: StateName::new(&step.state),
            });
        }
        let mut repeats = Vec::with_capacity(self.repeats.len());
        for (i, r) in self.repeats.into_iter().enumerate() {
            repeats.push(Repeat {
                at: parse_offset(&r.at, &format!("{field}.repeats[{i}].at"))?,
                processing: parse_duration(
                    &r.processing,
                    &format!("{field}.repeats[{i}].processing"),
                )?,
            });
        }
        let sample = Sample {
            original_file_name: self.sample.original_file_name,
            file_name: self.sample.file_name,
            archive_name: self.sample.archive_name,
            extension: self.sample.extension,
            file_type: self.sample.file_type,
            size: self.sample.size,
            md5: self.sample.md5,
            sha1: self.sample.sha1,
            sha256: self.sample.sha256,
            ssdeep: self.sample.ssdeep,
        };
        Ok(SimTask {
            created,
            timeline,
            repeats,
            sample,
            verdict: self.verdict,
            sample_zone: self.sample_zone,
            error: self.error.map(|e| TaskError {
                code: e.code,
                message: e.message,
            }),
            params_shape: match self.params_shape {
                RawParamsShape::Object => ParamsShape::Object,
                RawParamsShape::Array => ParamsShape::Array,
                RawParamsShape::Wrapped => ParamsShape::Wrapped,
            },
            params_faults: params.faults,
            params_faults_repeat: params.repeat,
            id: self.id,
            name: self.name,
            state: match self.state {
                RawState::Active => TaskState::Active,
                RawState::Deleted => TaskState::Deleted,
            },
            format: ResponseFormat {
                shape: match self.shape {
                    RawShape::Array => Shape::Array,
                    RawShape::Object => Shape::Object,
                    RawShape::Wrapped => Shape::Wrapped,
                    RawShape::NullWhenEmpty => Shape::NullWhenEmpty,
                    RawShape::EmptyWhenEmpty => Shape::EmptyWhenEmpty,
                },
                key_case: self.key_case.into(),
                size_as_string: self.size_as_string,
                yara_as_objects: self.yara_as_objects,
                gray_spelling: self.gray_spelling,
                served_at: self.served_at,
            },
            files,
            faults,
            faults_repeat: self.faults_repeat,
        })
    }
}

impl RawFile {
    fn into_file(self, field: &str) -> Result<SimFile, ScenarioError> {
        let after = match &self.after {
            Some(text) => parse_duration(text, &format!("{field}.after"))?,
            None => Duration::ZERO,
        };
        let mut zone_changes = Vec::with_capacity(self.zone_changes.len());
        for (i, change) in self.zone_changes.into_iter().enumerate() {
            zone_changes.push(ZoneChange {
                after: parse_duration(&change.after, &format!("{field}.zone_changes[{i}].after"))?,
                zone: change.zone,
            });
        }
        Ok(SimFile {
            name: self.name,
            zone: self.zone,
            size: self.size,
            file_type: self.file_type,
            https: self.https,
            after,
            detections: self.detections,
            yara: self.yara,
            md5: self.md5,
            sha1: self.sha1,
            sha256: self.sha256,
            zone_changes,
        })
    }
}

impl RawFault {
    fn into_fault(self, field: &str) -> Result<Fault, ScenarioError> {
        let actions: Vec<&str> = [
            ("pass", self.pass.is_some()),
            ("status", self.status.is_some()),
            ("delay", self.delay.is_some()),
            ("body", self.body.is_some()),
            ("reset", self.reset.is_some()),
            ("trickle", self.trickle.is_some()),
            // With `status`, `body_text` is that answer's body rather than an action of its own.
            (
                "body_text",
                self.body_text.is_some() && self.status.is_none(),
            ),
        ]
        .into_iter()
        .filter_map(|(name, present)| present.then_some(name))
        .collect();
        if actions.len() != 1 {
            return Err(ScenarioError::invalid(
                field,
                format!(
                    "needs exactly one of pass, status, delay, body, reset, trickle, body_text; found {}",
                    if actions.is_empty() { "none".to_owned() } else { actions.join(", ") }
                ),
            ));
        }
        let only_with = |present: bool, key: &str, owner: &str| {
            if present {
                Err(ScenarioError::invalid(
                    format!("{field}.{key}"),
                    format!("is allowed only with {owner}"),
                ))
            } else {
                Ok(())
            }
        };
        if self.status.is_none() {
            only_with(self.error.is_some(), "error", "status")?;
            only_with(self.retry_after.is_some(), "retry_after", "status")?;
        }
        if self.body != Some(RawBodyFault::Oversized) {
            only_with(self.bytes.is_some(), "bytes", "body: oversized")?;
            only_with(
                self.content_length.is_some(),
                "content_length",
                "body: oversized",
            )?;
        }
        let flag_must_be_true = |value: Option<bool>, key: &str| {
            if value == Some(false) {
                Err(ScenarioError::invalid(
                    format!("{field}.{key}"),
                    "false is not an action (remove the fault instead)",
                ))
            } else {
                Ok(())
            }
        };
        flag_must_be_true(self.pass, "pass")?;
        flag_must_be_true(self.reset, "reset")?;

        let action = if self.pass.is_some() {
            FaultAction::Pass
        } else if let Some(status) = self.status {
            let body = match (self.error, self.body_text) {
                (Some(_), Some(_)) => {
                    return Err(ScenarioError::invalid(
                        format!("{field}.body_text"),
                        "cannot be combined with error",
                    ))
                }
                (Some(e), None) => StatusBody::Error(ErrorBody {
                    code: e.code,
                    message: e.message,
                    meta: e.meta,
                }),
                (None, Some(text)) => StatusBody::Text(text),
                (None, None) => StatusBody::Empty,
            };
            let retry_after = self.retry_after.map(|v| match v {
                RawScalar::Number(n) => n.to_string(),
                RawScalar::Text(s) => s,
            });
            FaultAction::Status {
                status,
                body,
                retry_after,
            }
        } else if let Some(delay) = &self.delay {
            FaultAction::Delay(parse_duration(delay, &format!("{field}.delay"))?)
        } else if let Some(body) = self.body {
            match body {
                RawBodyFault::Malformed => FaultAction::Malformed,
                RawBodyFault::Oversized => FaultAction::Oversized {
                    bytes: self.bytes.ok_or_else(|| {
                        ScenarioError::invalid(
                            format!("{field}.bytes"),
                            "is required with body: oversized",
                        )
                    })?,
                    content_length: self.content_length.unwrap_or(false),
                },
            }
        } else if self.reset.is_some() {
            FaultAction::Reset
        } else if let Some(trickle) = self.trickle {
            FaultAction::Trickle {
                bytes_per_second: trickle.bytes_per_second,
            }
        } else if let Some(text) = self.body_text {
            FaultAction::BodyText(text)
        } else {
            unreachable!("exactly one action was checked above")
        };
        Ok(Fault {
            times: self.times.unwrap_or(1),
            action,
        })
    }
}

fn parse_offset(text: &str, field: &str) -> Result<Offset, ScenarioError> {
    Offset::parse(text).map_err(|e| {
        ScenarioError::invalid(
            field,
            format!("{text:?} is not a time like 90s or -2h (before start) ({e})"),
        )
    })
}

fn parse_duration(text: &str, field: &str) -> Result<Duration, ScenarioError> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        ScenarioError::invalid(
            field,
            format!("{text:?} is not a duration like 500ms, 60s or 1m30s ({e})"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0d5b4e44-4c0e-4f0b-9a57-3f2d1b9e6c71";

    fn parse_err(yaml: &str) -> String {
        parse(yaml).unwrap_err().to_string()
    }

    #[test]
    fn a_full_task_parses_with_every_option() {
        let yaml = format!(
            r#"
credentials: {{username: u, password: p}}
not_found_status: 400
tasks:
  - id: {}
    name: invoice-macro
    shape: wrapped
    key_case: upper
    size_as_string: true
    yara_as_objects: true
    gray_spelling: true
    files:
      - {{name: a.doc, zone: Grey, size: 5, type: Word, https: true, after: 1m30s}}
      - name: b.exe
        zone: Grey
        sha256: ABC
        detections: [HEUR:Trojan.Win32.Generic]
        yara: [R1, R2]
        zone_changes: [{{after: 90s, zone: Red}}]
    faults:
      - {{status: 503, retry_after: 2, times: 2, error: {{code: "6", message: m, meta: x}}}}
      - {{status: 502, body_text: "<html>bad gateway</html>"}}
      - {{delay: 3s}}
      - {{body: malformed}}
      - {{body: oversized, bytes: 1000, content_length: true}}
      - {{reset: true}}
      - {{trickle: {{bytes_per_second: 1}}}}
      - {{body_text: "null"}}
      - {{pass: true, times: 4}}
    faults_repeat: true
"#,
            ID.to_uppercase()
        );
        let s = parse(&yaml).unwrap();
        assert_eq!(s.not_found_status(), 400);
        let t = &s.tasks()[0];
        assert_eq!(t.id, ID, "ids are canonicalised to lowercase");
        assert_eq!(t.format.shape, Shape::Wrapped);
        assert_eq!(t.format.key_case, KeyCase::Upper);
        assert!(t.format.size_as_string && t.format.yara_as_objects && t.format.gray_spelling);
        assert_eq!(t.files[0].after, Duration::from_secs(90));
        assert!(t.files[0].https);
        assert_eq!(t.files[0].md5.as_deref().map(str::len), Some(32));
        assert_eq!(
            t.files[1].sha256.as_deref(),
            Some("ABC"),
            "given hashes are kept as given"
        );
        assert_eq!(t.files[1].zone_at(Duration::from_secs(89)), "Grey");
        assert_eq!(t.files[1].zone_at(Duration::from_secs(90)), "Red");
        assert_eq!(
            t.faults[0],
            Fault::status(503)
                .retry_after("2")
                .times(2)
                .error(ErrorBody::new("6", "m").meta("x"))
        );
        assert_eq!(
            t.faults[1],
            Fault::status(502).text("<html>bad gateway</html>")
        );
        assert_eq!(t.faults[2], Fault::delay(Duration::from_secs(3)));
        assert_eq!(t.faults[3], Fault::malformed());
        assert_eq!(t.faults[4], Fault::oversized(1000).with_content_length());
        assert_eq!(t.faults[5], Fault::reset());
        assert_eq!(t.faults[6], Fault::trickle(1));
        assert_eq!(t.faults[7], Fault::body_text("null"));
        assert_eq!(t.faults[8], Fault::pass().times(4));
        assert!(t.faults_repeat);
    }

    #[test]
    fn unknown_keys_are_rejected_naming_the_field() {
        let msg = parse_err(&format!(
            "credentials: {{username: u, password: p}}\ntasks:\n  - id: {ID}\n    files:\n      - {{name: a, zone: Red, colour: blue}}\n"
        ));
        assert!(msg.contains("colour"), "{msg}");
        assert!(msg.contains("tasks[0].files[0]"), "{msg}");
    }

    #[test]
    fn a_fault_needs_exactly_one_action() {
        let base = format!(
            "credentials: {{username: u, password: p}}\ntasks:\n  - id: {ID}\n    faults: "
        );
        let msg = parse_err(&format!("{base}[{{status: 500, reset: true}}]\n"));
        assert!(
            msg.starts_with("tasks[0].faults[0]: needs exactly one of"),
            "{msg}"
        );
        assert!(msg.ends_with("found status, reset"), "{msg}");
        let msg = parse_err(&format!("{base}[{{times: 2}}]\n"));
        assert!(msg.ends_with("found none"), "{msg}");
        let msg = parse_err(&format!("{base}[{{delay: 1s, retry_after: \"2\"}}]\n"));
        assert_eq!(
            msg,
            "tasks[0].faults[0].retry_after: is allowed only with status"
        );
        let msg = parse_err(&format!("{base}[{{body: oversized}}]\n"));
        assert_eq!(
            msg,
            "tasks[0].faults[0].bytes: is required with body: oversized"
        );
        let msg = parse_err(&format!("{base}[{{status: 500, times: 0}}]\n"));
        assert_eq!(msg, "tasks[0].faults[0].times: must be at least 1");
        let msg = parse_err(&format!("{base}[{{delay: soon}}]\n"));
        assert!(
            msg.starts_with("tasks[0].faults[0].delay: \"soon\" is not a duration"),
            "{msg}"
        );
    }

    #[test]
    fn lifecycle_and_appliance_keys_are_checked_with_their_field_paths() {
        let base = "credentials: {username: u, password: p}\n";
        let task = format!("{base}tasks:\n  - id: {ID}\n");
        for (yaml, expected) in [
            (
                format!("{task}    created: -1h\n    timeline: [{{at: -2h, state: created}}]\n"),
                "tasks[0].timeline[0].at: -2h is before the task's creation (-1h)",
            ),
            (
                format!("{task}    timeline: [{{at: 2m, state: created}}, {{at: 1m, state: completed}}]\n"),
                "tasks[0].timeline[1].at: 1m is before the step before it (2m)",
            ),
            (
                format!("{task}    repeats: [{{at: -1s, processing: 1m}}]\n"),
                "tasks[0].repeats[0].at: -1s is before the task's creation (0s)",
            ),
            (
                format!("{task}    params_faults: [{{status: 500, times: 0}}]\n"),
                "tasks[0].params_faults[0].times: must be at least 1",
            ),
            (
                format!("{base}list_faults: [{{status: 700}}]\n"),
                "list_faults[0].status: 700 is not an HTTP status",
            ),
            (
                format!("{base}generator: {{every: 0s}}\n"),
                "generator.every: must be more than 0s",
            ),
            (
                format!("{base}generator: {{every: 1s, red_share: 1.5}}\n"),
                "generator.red_share: 1.5 is not between 0 and 1",
            ),
            (
                format!("{base}generator: {{every: 1s, keep: 0}}\n"),
                "generator.keep: 0 is not between 1 and 1000000",
            ),
            (
                format!("{base}health: {{incidents: [{{from: 2m, until: 1m}}]}}\n"),
                "health.incidents[0].until: 1m is not after from (2m)",
            ),
            (
                format!("{base}version: {{bases_age: 1d, bases_version: x}}\n"),
                "version.bases_version: cannot be combined with bases_age",
            ),
        ] {
            assert_eq!(parse_err(&yaml), expected, "{yaml}");
        }
        let msg = parse_err(&format!("{base}start_time: yesterday\n"));
        assert!(
            msg.starts_with("start_time: \"yesterday\" is not a date-time"),
            "{msg}"
        );
        let msg = parse_err(&format!("{task}    created: soon\n"));
        assert!(
            msg.starts_with("tasks[0].created: \"soon\" is not a time"),
            "{msg}"
        );
        let msg = parse_err(&format!("{base}generator: {{every: 1s, speed: 2}}\n"));
        assert!(msg.contains("speed"), "{msg}");
    }

    #[test]
    fn state_spellings_in_a_timeline_are_kept_as_written() {
        let s = parse(&format!(
            "credentials: {{username: u, password: p}}\ntasks:\n  - id: {ID}\n    timeline: [{{at: 1s, state: Processing failed}}]\n"
        ))
        .unwrap();
        let step = &s.tasks()[0].timeline[0];
        assert_eq!(step.state.spelling, "Processing failed");
        assert_eq!(step.state.kind, super::super::lifecycle::StateKind::Failed);
    }
}

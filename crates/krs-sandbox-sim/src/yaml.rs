//! The YAML form of a scenario: `Raw*` types that mirror the file (unknown keys rejected) and
//! their conversion, field by field, into the scenario types. Validation proper is shared with
//! the builder in [`super::scenario`].

use std::time::Duration;

use serde::Deserialize;

use super::scenario::{
    validate, Credentials, ErrorBody, ErrorCode, Fault, FaultAction, KeyCase, ResponseFormat,
    Scenario, ScenarioError, Shape, SimFile, SimTask, StatusBody, TaskState, ZoneChange,
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
        let credentials = Credentials {
            username: self.credentials.username,
            password: self.credentials.password,
        };
        validate(credentials, self.not_found_status, tasks)
    }
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
        Ok(SimTask {
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
                key_case: match self.key_case {
                    RawKeyCase::Pascal => KeyCase::Pascal,
                    RawKeyCase::Lower => KeyCase::Lower,
                    RawKeyCase::Upper => KeyCase::Upper,
                },
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
}

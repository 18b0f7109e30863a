//! Scenario: what the simulated sandbox knows — credentials, tasks, their files and faults.
//!
//! Two ways in, one way out: a YAML document ([`Scenario::from_yaml_str`],
//! [`Scenario::from_file`]) is parsed into private `Raw*` types that reject unknown keys, and the
//! programmatic [`Scenario::builder`] collects [`SimTask`]s directly; both end in the same
//! validation, which canonicalises task ids to lowercase, rejects duplicates and impossible
//! faults, and fills in missing hashes. A [`Scenario`] therefore always holds valid tasks.
//!
//! Lifecycle types live in [`super::lifecycle`], the appliance-wide settings (health, version,
//! the task list's spelling, per-endpoint faults) in [`super::appliance`], the living-sandbox
//! generator in [`super::generator`].

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::appliance::{Appliance, EndpointFaults};
use super::generator::Generator;
use super::lifecycle::{Offset, Repeat, Sample, StateName, Step, TaskError};

/// Username used by [`Scenario::builder`] when none is given.
pub const DEFAULT_USERNAME: &str = "exporter";
/// Password used by [`Scenario::builder`] when none is given.
pub const DEFAULT_PASSWORD: &str = "secret";

/// A validated scenario: start a simulator with it via [`super::start`].
#[derive(Clone, Debug)]
pub struct Scenario {
    credentials: Credentials,
    not_found_status: u16,
    tasks: Vec<SimTask>,
    appliance: Appliance,
    generator: Option<Generator>,
}

/// Collects a scenario in code; [`ScenarioBuilder::build`] validates it.
#[derive(Clone, Debug)]
pub struct ScenarioBuilder {
    credentials: Credentials,
    not_found_status: u16,
    tasks: Vec<SimTask>,
    appliance: Appliance,
    generator: Option<Generator>,
}

/// A validated scenario taken apart by the server.
pub(crate) struct Parts {
    pub(crate) credentials: Credentials,
    pub(crate) not_found_status: u16,
    pub(crate) tasks: Vec<SimTask>,
    pub(crate) appliance: Appliance,
    pub(crate) generator: Option<Generator>,
}

/// The one username/password pair the simulator accepts (HTTP Basic).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// One sandbox task. Build with [`SimTask::new`] and the chained setters.
#[derive(Clone, Debug, PartialEq)]
pub struct SimTask {
    /// GUID; any case (canonicalised to lowercase when validated).
    pub id: String,
    /// Informational only (logs, docs).
    pub name: Option<String>,
    pub state: TaskState,
    pub format: ResponseFormat,
    pub files: Vec<SimFile>,
    /// Consumed one element per downloads request, in order.
    pub faults: Vec<Fault>,
    /// Loop `faults` forever instead of answering normally once they are used up.
    pub faults_repeat: bool,
    /// Creation time; default: simulator start.
    pub created: Offset,
    /// State changes, in order of `at`, none before `created`. Empty: the state is derived from
    /// the files (`processing` while one is pending, `completed` after).
    pub timeline: Vec<Step>,
    pub repeats: Vec<Repeat>,
    pub sample: Sample,
    /// `Status` once completed; default: from the worst zone among the files.
    pub verdict: Option<String>,
    /// `Zone` of the task; default: the worst zone among the visible files.
    pub sample_zone: Option<String>,
    /// `ErrorCode`/`ErrorMessage` while failed; default: `ProcessingFailed` or `UploadFailed`.
    pub error: Option<TaskError>,
    /// How `GET /tasks/{id}` wraps the record (keys in the task's `key_case`).
    pub params_shape: ParamsShape,
    /// Consumed one per `GET /tasks/{id}` request, like `faults` for downloads.
    pub params_faults: Vec<Fault>,
    pub params_faults_repeat: bool,
}

/// The document around a task-parameter record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ParamsShape {
    /// `{record}`
    #[default]
    Object,
    /// `[record]`
    Array,
    /// `{"Tasks":[record]}`
    Wrapped,
}

/// Whether the task still exists on the appliance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TaskState {
    #[default]
    Active,
    /// Gone from the appliance: every endpoint answers 404 with
    /// `{"code":7,"message":"task deleted",...}` and the list omits it. (A timeline step
    /// `deleted` instead keeps the record, as the appliance's task list does.)
    Deleted,
}

/// How a task's downloads body is spelled: every variant the exporter must accept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResponseFormat {
    pub shape: Shape,
    pub key_case: KeyCase,
    /// `"Size":"48213"` instead of `"Size":48213`.
    pub size_as_string: bool,
    /// YARA rules as `{"Name":"rule"}` objects instead of strings.
    pub yara_as_objects: bool,
    /// Write the zone `Grey` as `Gray`.
    pub gray_spelling: bool,
    /// Add an undocumented `ServedAtMs` key (milliseconds since simulator start) to every
    /// record, so no two responses are alike: what a sandbox adding per-request fields would
    /// do, and the load harness's worst case, where every poll must be decoded.
    pub served_at: bool,
}

/// The JSON document around the file records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Shape {
    /// `[record, ...]`; `[]` when there are no files.
    #[default]
    Array,
    /// The first record alone; `{}` when there are no files.
    Object,
    /// `{"Downloads":[record, ...]}`.
    Wrapped,
    /// Like `Array`, but `null` when there are no files.
    NullWhenEmpty,
    /// Like `Array`, but an empty body (still 200) when there are no files.
    EmptyWhenEmpty,
}

/// Spelling of the record keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyCase {
    /// `Zone`, `Md5`, `IsHttpsTraffic`, … as documented.
    #[default]
    Pascal,
    /// `zone`, `md5`, `ishttpstraffic`, …
    Lower,
    /// `ZONE`, `MD5`, `ISHTTPSTRAFFIC`, …
    Upper,
}

/// One downloaded file. Build with [`SimFile::new`] and the chained setters.
#[derive(Clone, Debug, PartialEq)]
pub struct SimFile {
    pub name: String,
    /// Sent verbatim, so undocumented values (`Purple`, ``) can be simulated.
    pub zone: String,
    pub size: u64,
    pub file_type: String,
    /// `IsHttpsTraffic`.
    pub https: bool,
    /// Time since simulator start when the file appears.
    pub after: Duration,
    pub detections: Vec<String>,
    pub yara: Vec<String>,
    /// `None`: derived from the task id and file name when the task is validated.
    pub md5: Option<String>,
    pub sha1: Option<String>,
    pub sha256: Option<String>,
    /// Later grades, applied in order of `after` (e.g. Grey, then Red when analysis ends).
    pub zone_changes: Vec<ZoneChange>,
}

/// A file's zone from `after` (since simulator start) on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneChange {
    pub after: Duration,
    pub zone: String,
}

/// One scripted misbehaviour, answered to `times` consecutive downloads requests.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    pub times: u32,
    pub action: FaultAction,
}

/// What a fault does to one request.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultAction {
    /// Answer normally (a filler so a repeating fault list can be mostly healthy).
    Pass,
    /// Answer with this status, this body and optionally a raw `Retry-After` value.
    Status {
        status: u16,
        body: StatusBody,
        retry_after: Option<String>,
    },
    /// Sleep, then answer normally.
    Delay(Duration),
    /// 200 with a body that is not JSON.
    Malformed,
    /// 200 with a valid JSON array of `bytes` bytes, streamed in 64 KiB chunks;
    /// `Content-Length` is sent only when `content_length` is true (otherwise chunked).
    Oversized { bytes: u64, content_length: bool },
    /// Close the connection without answering.
    Reset,
    /// The normal answer, its body sent at this rate.
    Trickle { bytes_per_second: u64 },
    /// 200 with exactly this body.
    BodyText(String),
}

/// Body of a [`FaultAction::Status`] answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum StatusBody {
    #[default]
    Empty,
    /// The sandbox's JSON error document.
    Error(ErrorBody),
    /// Raw text (an HTML page from a proxy, …).
    Text(String),
}

/// The sandbox's error document: `{"code":6,"message":"task not found","meta":"..."}`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<String>,
}

/// The docs type `code` as a string but show numbers: both can be simulated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ErrorCode {
    Number(i64),
    Text(String),
}

/// Why a scenario was refused. Messages name the file, the field and the value.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}{source}", in_file(path.as_deref()))]
    Yaml {
        path: Option<PathBuf>,
        #[source]
        source: krs_yaml::DeError,
    },
    #[error("{}{field}: {message}", in_file(path.as_deref()))]
    Invalid {
        path: Option<PathBuf>,
        /// Field path, e.g. `tasks[3].faults[0].status`.
        field: String,
        message: String,
    },
}

impl Scenario {
    /// Parse and validate a YAML scenario (format: `docs/simulator.md`).
    pub fn from_yaml_str(text: &str) -> Result<Scenario, ScenarioError> {
        super::yaml::parse(text)
    }

    /// Read, parse and validate a YAML scenario file; errors name the file.
    pub fn from_file(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.to_owned(),
            source,
        })?;
        Scenario::from_yaml_str(&text).map_err(|e| e.with_path(path))
    }

    /// Start a scenario in code: credentials `exporter`/`secret`, unknown tasks answer 404.
    pub fn builder() -> ScenarioBuilder {
        ScenarioBuilder {
            credentials: Credentials::new(DEFAULT_USERNAME, DEFAULT_PASSWORD),
            not_found_status: 404,
            tasks: Vec::new(),
            appliance: Appliance::default(),
            generator: None,
        }
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// 404 or 400: the status of `{"code":6,"message":"task not found"}`.
    pub fn not_found_status(&self) -> u16 {
        self.not_found_status
    }

    /// The tasks, ids canonical (lowercase) and unique, hashes filled in.
    pub fn tasks(&self) -> &[SimTask] {
        &self.tasks
    }

    /// Health, version, the list's spelling and the per-endpoint faults.
    pub fn appliance(&self) -> &Appliance {
        &self.appliance
    }

    /// The living-sandbox generator, if any (its tasks are not in [`Scenario::tasks`]).
    pub fn generator(&self) -> Option<&Generator> {
        self.generator.as_ref()
    }

    pub(crate) fn into_parts(self) -> Parts {
        Parts {
            credentials: self.credentials,
            not_found_status: self.not_found_status,
            tasks: self.tasks,
            appliance: self.appliance,
            generator: self.generator,
        }
    }
}

impl ScenarioBuilder {
    pub fn credentials(mut self, username: &str, password: &str) -> Self {
        self.credentials = Credentials::new(username, password);
        self
    }

    /// 404 (default) or 400 for unknown tasks; anything else fails [`ScenarioBuilder::build`].
    pub fn not_found_status(mut self, status: u16) -> Self {
        self.not_found_status = status;
        self
    }

    pub fn task(mut self, task: SimTask) -> Self {
        self.tasks.push(task);
        self
    }

    pub fn tasks(mut self, tasks: impl IntoIterator<Item = SimTask>) -> Self {
        self.tasks.extend(tasks);
        self
    }

    /// Health checks, version, list spelling, per-endpoint faults.
    pub fn appliance(mut self, appliance: Appliance) -> Self {
        self.appliance = appliance;
        self
    }

    /// A new task every so often, forever (see [`Generator`]).
    pub fn generator(mut self, generator: Generator) -> Self {
        self.generator = Some(generator);
        self
    }

    pub fn build(self) -> Result<Scenario, ScenarioError> {
        validate(self)
    }
}

impl Credentials {
    pub fn new(username: &str, password: &str) -> Self {
        Credentials {
            username: username.to_owned(),
            password: password.to_owned(),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl SimTask {
    /// An active task with no files, default format and no faults.
    pub fn new(id: &str) -> Self {
        SimTask {
            id: id.to_owned(),
            name: None,
            state: TaskState::Active,
            format: ResponseFormat::default(),
            files: Vec::new(),
            faults: Vec::new(),
            faults_repeat: false,
            created: Offset::ZERO,
            timeline: Vec::new(),
            repeats: Vec::new(),
            sample: Sample::default(),
            verdict: None,
            sample_zone: None,
            error: None,
            params_shape: ParamsShape::Object,
            params_faults: Vec::new(),
            params_faults_repeat: false,
        }
    }

    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    pub fn deleted(mut self) -> Self {
        self.state = TaskState::Deleted;
        self
    }

    pub fn shape(mut self, shape: Shape) -> Self {
        self.format.shape = shape;
        self
    }

    pub fn key_case(mut self, key_case: KeyCase) -> Self {
        self.format.key_case = key_case;
        self
    }

    pub fn size_as_string(mut self, on: bool) -> Self {
        self.format.size_as_string = on;
        self
    }

    pub fn yara_as_objects(mut self, on: bool) -> Self {
        self.format.yara_as_objects = on;
        self
    }

    pub fn gray_spelling(mut self, on: bool) -> Self {
        self.format.gray_spelling = on;
        self
    }

    pub fn served_at(mut self, on: bool) -> Self {
        self.format.served_at = on;
        self
    }

    pub fn file(mut self, file: SimFile) -> Self {
        self.files.push(file);
        self
    }

    pub fn files(mut self, files: impl IntoIterator<Item = SimFile>) -> Self {
        self.files.extend(files);
        self
    }

    pub fn fault(mut self, fault: Fault) -> Self {
        self.faults.push(fault);
        self
    }

    pub fn faults(mut self, faults: impl IntoIterator<Item = Fault>) -> Self {
        self.faults.extend(faults);
        self
    }

    pub fn faults_repeat(mut self, on: bool) -> Self {
        self.faults_repeat = on;
        self
    }

    pub fn created(mut self, at: impl Into<Offset>) -> Self {
        self.created = at.into();
        self
    }

    pub fn step(mut self, step: Step) -> Self {
        self.timeline.push(step);
        self
    }

    /// From `at` on, the task is in this state (any spelling: `Completed`, `Processing failed`).
    pub fn state_at(self, at: impl Into<Offset>, state: &str) -> Self {
        self.step(Step {
            at: at.into(),
            state: StateName::new(state),
        })
    }

    /// Repeated at `at`: processing again for `processing`, with a new `ResultId`.
    pub fn repeat(mut self, at: impl Into<Offset>, processing: Duration) -> Self {
        self.repeats.push(Repeat {
            at: at.into(),
            processing,
        });
        self
    }

    pub fn sample(mut self, sample: Sample) -> Self {
        self.sample = sample;
        self
    }

    pub fn verdict(mut self, verdict: &str) -> Self {
        self.verdict = Some(verdict.to_owned());
        self
    }

    pub fn sample_zone(mut self, zone: &str) -> Self {
        self.sample_zone = Some(zone.to_owned());
        self
    }

    pub fn error(mut self, error: TaskError) -> Self {
        self.error = Some(error);
        self
    }

    pub fn params_shape(mut self, shape: ParamsShape) -> Self {
        self.params_shape = shape;
        self
    }

    pub fn params_fault(mut self, fault: Fault) -> Self {
        self.params_faults.push(fault);
        self
    }

    pub fn params_faults_repeat(mut self, on: bool) -> Self {
        self.params_faults_repeat = on;
        self
    }
}

impl SimFile {
    /// A file present from the start: size 0, empty type, not HTTPS, no verdicts, derived hashes.
    pub fn new(name: &str, zone: &str) -> Self {
        SimFile {
            name: name.to_owned(),
            zone: zone.to_owned(),
            size: 0,
            file_type: String::new(),
            https: false,
            after: Duration::ZERO,
            detections: Vec::new(),
            yara: Vec::new(),
            md5: None,
            sha1: None,
            sha256: None,
            zone_changes: Vec::new(),
        }
    }

    pub fn size(mut self, size: u64) -> Self {
        self.size = size;
        self
    }

    pub fn file_type(mut self, file_type: &str) -> Self {
        self.file_type = file_type.to_owned();
        self
    }

    pub fn https(mut self, on: bool) -> Self {
        self.https = on;
        self
    }

    pub fn after(mut self, after: Duration) -> Self {
        self.after = after;
        self
    }

    pub fn detection(mut self, name: &str) -> Self {
        self.detections.push(name.to_owned());
        self
    }

    pub fn yara(mut self, rule: &str) -> Self {
        self.yara.push(rule.to_owned());
        self
    }

    pub fn md5(mut self, hex: &str) -> Self {
        self.md5 = Some(hex.to_owned());
        self
    }

    pub fn sha1(mut self, hex: &str) -> Self {
        self.sha1 = Some(hex.to_owned());
        self
    }

    pub fn sha256(mut self, hex: &str) -> Self {
        self.sha256 = Some(hex.to_owned());
        self
    }

    pub fn zone_change(mut self, after: Duration, zone: &str) -> Self {
        self.zone_changes.push(ZoneChange {
            after,
            zone: zone.to_owned(),
        });
        self
    }

    /// The zone in force `elapsed` after simulator start.
    pub(crate) fn zone_at(&self, elapsed: Duration) -> &str {
        self.zone_changes
            .iter()
            .filter(|c| c.after <= elapsed)
            .max_by_key(|c| c.after)
            .map_or(self.zone.as_str(), |c| c.zone.as_str())
    }

    /// Fill in missing hashes with values derived from the task id and file name.
    pub(crate) fn resolve_hashes(&mut self, task_id: &str) {
        if self.md5.is_none() {
            self.md5 = Some(fake_hex(task_id, &self.name, 0x6d64_3500, 32));
        }
        if self.sha1.is_none() {
            self.sha1 = Some(fake_hex(task_id, &self.name, 0x7368_6131, 40));
        }
        if self.sha256.is_none() {
            self.sha256 = Some(fake_hex(task_id, &self.name, 0x7368_6132, 64));
        }
    }
}

impl Fault {
    /// Answer normally (use with `times` in a repeating list).
    pub fn pass() -> Self {
        Fault::once(FaultAction::Pass)
    }

    /// Answer with this status and an empty body.
    pub fn status(status: u16) -> Self {
        Fault::once(FaultAction::Status {
            status,
            body: StatusBody::Empty,
            retry_after: None,
        })
    }

    pub fn delay(delay: Duration) -> Self {
        Fault::once(FaultAction::Delay(delay))
    }

    pub fn malformed() -> Self {
        Fault::once(FaultAction::Malformed)
    }

    /// A chunked 200 body of `bytes` bytes (see [`FaultAction::Oversized`]).
    pub fn oversized(bytes: u64) -> Self {
        Fault::once(FaultAction::Oversized {
            bytes,
            content_length: false,
        })
    }

    pub fn reset() -> Self {
        Fault::once(FaultAction::Reset)
    }

    pub fn trickle(bytes_per_second: u64) -> Self {
        Fault::once(FaultAction::Trickle { bytes_per_second })
    }

    pub fn body_text(text: &str) -> Self {
        Fault::once(FaultAction::BodyText(text.to_owned()))
    }

    /// Apply to this many consecutive requests (at least 1).
    pub fn times(mut self, times: u32) -> Self {
        self.times = times;
        self
    }

    /// Add a `Retry-After` header with this raw value.
    ///
    /// # Panics
    /// If the fault is not a [`Fault::status`] fault: a bug in the calling test.
    pub fn retry_after(mut self, value: &str) -> Self {
        match &mut self.action {
            FaultAction::Status { retry_after, .. } => *retry_after = Some(value.to_owned()),
            other => panic!("retry_after applies to status faults only, not {other:?}"),
        }
        self
    }

    /// Send the sandbox's JSON error document as the body.
    ///
    /// # Panics
    /// If the fault is not a [`Fault::status`] fault: a bug in the calling test.
    pub fn error(mut self, error: ErrorBody) -> Self {
        match &mut self.action {
            FaultAction::Status { body, .. } => *body = StatusBody::Error(error),
            other => panic!("error applies to status faults only, not {other:?}"),
        }
        self
    }

    /// Send this raw text as the body.
    ///
    /// # Panics
    /// If the fault is not a [`Fault::status`] fault: a bug in the calling test.
    pub fn text(mut self, text: &str) -> Self {
        match &mut self.action {
            FaultAction::Status { body, .. } => *body = StatusBody::Text(text.to_owned()),
            other => panic!("text applies to status faults only, not {other:?}"),
        }
        self
    }

    /// Announce the size of an oversized body in `Content-Length`.
    ///
    /// # Panics
    /// If the fault is not a [`Fault::oversized`] fault: a bug in the calling test.
    pub fn with_content_length(mut self) -> Self {
        match &mut self.action {
            FaultAction::Oversized { content_length, .. } => *content_length = true,
            other => panic!("with_content_length applies to oversized faults only, not {other:?}"),
        }
        self
    }

    fn once(action: FaultAction) -> Self {
        Fault { times: 1, action }
    }
}

impl ErrorBody {
    pub fn new(code: impl Into<ErrorCode>, message: &str) -> Self {
        ErrorBody {
            code: code.into(),
            message: message.to_owned(),
            meta: None,
        }
    }

    pub fn meta(mut self, meta: &str) -> Self {
        self.meta = Some(meta.to_owned());
        self
    }
}

impl From<i32> for ErrorCode {
    fn from(code: i32) -> Self {
        ErrorCode::Number(code.into())
    }
}

impl From<i64> for ErrorCode {
    fn from(code: i64) -> Self {
        ErrorCode::Number(code)
    }
}

impl From<&str> for ErrorCode {
    fn from(code: &str) -> Self {
        ErrorCode::Text(code.to_owned())
    }
}

impl ScenarioError {
    pub(super) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ScenarioError::Invalid {
            path: None,
            field: field.into(),
            message: message.into(),
        }
    }

    fn with_path(self, file: &Path) -> Self {
        match self {
            ScenarioError::Yaml { source, .. } => ScenarioError::Yaml {
                path: Some(file.to_owned()),
                source,
            },
            ScenarioError::Invalid { field, message, .. } => ScenarioError::Invalid {
                path: Some(file.to_owned()),
                field,
                message,
            },
            read @ ScenarioError::Read { .. } => read,
        }
    }
}

/// `Some(canonical lowercase id)` when `s` is a GUID in `8-4-4-4-12` hex form (any case).
pub(crate) fn canonical_task_id(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    if bytes.len() != 36 {
        return None;
    }
    for (i, b) in bytes.iter().enumerate() {
        let ok = match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        };
        if !ok {
            return None;
        }
    }
    Some(s.to_ascii_lowercase())
}

/// Check a task and bring it to canonical form (lowercase id, hashes filled in).
/// `field` is the task's position for messages, e.g. `tasks[3]`.
pub(crate) fn validate_task(mut task: SimTask, field: &str) -> Result<SimTask, ScenarioError> {
    task.id = canonical_task_id(task.id.trim()).ok_or_else(|| {
        ScenarioError::invalid(
            format!("{field}.id"),
            format!("{:?} is not a GUID (8-4-4-4-12 hex digits)", task.id),
        )
    })?;
    for (i, fault) in task.faults.iter().enumerate() {
        validate_fault(fault, &format!("{field}.faults[{i}]"))?;
    }
    for (i, fault) in task.params_faults.iter().enumerate() {
        validate_fault(fault, &format!("{field}.params_faults[{i}]"))?;
    }
    let mut previous = task.created;
    for (i, step) in task.timeline.iter().enumerate() {
        if step.at < previous {
            let what = if i == 0 {
                format!("the task's creation ({})", task.created)
            } else {
                format!("the step before it ({previous})")
            };
            return Err(ScenarioError::invalid(
                format!("{field}.timeline[{i}].at"),
                format!("{} is before {what}", step.at),
            ));
        }
        previous = step.at;
    }
    for (i, repeat) in task.repeats.iter().enumerate() {
        if repeat.at < task.created {
            return Err(ScenarioError::invalid(
                format!("{field}.repeats[{i}].at"),
                format!(
                    "{} is before the task's creation ({})",
                    repeat.at, task.created
                ),
            ));
        }
    }
    for file in &mut task.files {
        file.resolve_hashes(&task.id);
    }
    resolve_sample(&mut task);
    Ok(task)
}

/// Fill in the sample's names and hashes from the task's name and id.
fn resolve_sample(task: &mut SimTask) {
    let s = &mut task.sample;
    let original = s
        .original_file_name
        .get_or_insert_with(|| task.name.clone().unwrap_or_else(|| "sample.bin".to_owned()))
        .clone();
    s.file_name.get_or_insert_with(|| original.clone());
    s.extension.get_or_insert_with(|| {
        original
            .rsplit_once('.')
            .map(|(_, ext)| ext.to_ascii_lowercase())
            .filter(|ext| !ext.contains('/'))
            .unwrap_or_default()
    });
    s.md5
        .get_or_insert_with(|| fake_hex(&task.id, "\0sample", 0x6d64_3500, 32));
    s.sha1
        .get_or_insert_with(|| fake_hex(&task.id, "\0sample", 0x7368_6131, 40));
    s.sha256
        .get_or_insert_with(|| fake_hex(&task.id, "\0sample", 0x7368_6132, 64));
}

/// A GUID derived from a task id and a run number: the task's `ResultId` for that run.
pub(crate) fn result_id(task_id: &str, run: u32) -> String {
    let hex = fake_hex(task_id, &run.to_string(), 0x7265_7375, 32);
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

pub(super) fn validate(builder: ScenarioBuilder) -> Result<Scenario, ScenarioError> {
    let ScenarioBuilder {
        credentials,
        not_found_status,
        tasks,
        appliance,
        generator,
    } = builder;
    if not_found_status != 400 && not_found_status != 404 {
        return Err(ScenarioError::invalid(
            "not_found_status",
            format!("{not_found_status} is neither 400 nor 404"),
        ));
    }
    let mut seen = HashSet::with_capacity(tasks.len());
    let mut valid = Vec::with_capacity(tasks.len());
    for (i, task) in tasks.into_iter().enumerate() {
        let task = validate_task(task, &format!("tasks[{i}]"))?;
        if !seen.insert(task.id.clone()) {
            return Err(ScenarioError::invalid(
                format!("tasks[{i}].id"),
                format!("{} appears twice", task.id),
            ));
        }
        valid.push(task);
    }
    validate_appliance(&appliance)?;
    if let Some(generator) = &generator {
        validate_generator(generator)?;
    }
    Ok(Scenario {
        credentials,
        not_found_status,
        tasks: valid,
        appliance,
        generator,
    })
}

fn validate_appliance(appliance: &Appliance) -> Result<(), ScenarioError> {
    for (key, list) in [
        ("list_faults", &appliance.list_faults),
        ("health_faults", &appliance.health_faults),
        ("version_faults", &appliance.version_faults),
    ] {
        validate_endpoint_faults(list, key)?;
    }
    for (i, incident) in appliance.health.incidents.iter().enumerate() {
        if incident.until.is_some_and(|u| u <= incident.from) {
            return Err(ScenarioError::invalid(
                format!("health.incidents[{i}].until"),
                format!(
                    "{} is not after from ({})",
                    incident.until.unwrap_or_default(),
                    incident.from
                ),
            ));
        }
    }
    Ok(())
}

pub(crate) fn validate_endpoint_faults(
    list: &EndpointFaults,
    field: &str,
) -> Result<(), ScenarioError> {
    for (i, fault) in list.faults.iter().enumerate() {
        validate_fault(fault, &format!("{field}[{i}]"))?;
    }
    Ok(())
}

fn validate_generator(g: &Generator) -> Result<(), ScenarioError> {
    let bad = |key: &str, message: String| {
        Err(ScenarioError::invalid(format!("generator.{key}"), message))
    };
    if g.every.is_zero() {
        return bad("every", "must be more than 0s".to_owned());
    }
    if g.detonation.is_zero() {
        return bad("detonation", "must be more than 0s".to_owned());
    }
    if !(1..=1_000_000).contains(&g.keep) {
        return bad("keep", format!("{} is not between 1 and 1000000", g.keep));
    }
    if g.files > 100 {
        return bad("files", format!("{} is more than 100", g.files));
    }
    for (key, share) in [
        ("red_share", g.red_share),
        ("yara_share", g.yara_share),
        ("fail_share", g.fail_share),
    ] {
        if !Generator::is_valid_share(share) {
            return bad(key, format!("{share} is not between 0 and 1"));
        }
    }
    Ok(())
}

fn validate_fault(fault: &Fault, field: &str) -> Result<(), ScenarioError> {
    if fault.times == 0 {
        return Err(ScenarioError::invalid(
            format!("{field}.times"),
            "must be at least 1",
        ));
    }
    match &fault.action {
        FaultAction::Status { status, .. } if !(100..=599).contains(status) => {
            Err(ScenarioError::invalid(
                format!("{field}.status"),
                format!("{status} is not an HTTP status"),
            ))
        }
        FaultAction::Trickle {
            bytes_per_second: 0,
        } => Err(ScenarioError::invalid(
            format!("{field}.trickle.bytes_per_second"),
            "must be at least 1",
        )),
        _ => Ok(()),
    }
}

fn in_file(path: Option<&Path>) -> String {
    path.map(|p| format!("{}: ", p.display()))
        .unwrap_or_default()
}

/// Deterministic fake hex digest: FNV-1a over the inputs, stretched with splitmix64.
fn fake_hex(task_id: &str, name: &str, salt: u64, len: usize) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ salt;
    for b in task_id.bytes().chain([0]).chain(name.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut out = String::with_capacity(len + 16);
    while out.len() < len {
        h = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = h;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        out.push_str(&format!("{z:016x}"));
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0d5b4e44-4c0e-4f0b-9a57-3f2d1b9e6c71";

    fn parse_err(yaml: &str) -> String {
        Scenario::from_yaml_str(yaml).unwrap_err().to_string()
    }

    #[test]
    fn a_task_id_that_is_not_a_guid_is_rejected_naming_the_task() {
        let msg =
            parse_err("credentials: {username: u, password: p}\ntasks:\n  - id: not-a-guid\n");
        assert_eq!(
            msg,
            r#"tasks[0].id: "not-a-guid" is not a GUID (8-4-4-4-12 hex digits)"#
        );
    }

    #[test]
    fn duplicate_task_ids_are_rejected_whatever_their_case() {
        let msg = parse_err(&format!(
            "credentials: {{username: u, password: p}}\ntasks:\n  - id: {ID}\n  - id: {}\n",
            ID.to_uppercase()
        ));
        assert_eq!(msg, format!("tasks[1].id: {ID} appears twice"));
    }

    #[test]
    fn not_found_status_must_be_400_or_404() {
        let msg = parse_err("credentials: {username: u, password: p}\nnot_found_status: 410\n");
        assert_eq!(msg, "not_found_status: 410 is neither 400 nor 404");
    }

    #[test]
    fn errors_from_a_file_name_the_file() {
        let path = std::env::temp_dir().join(format!("sim-scenario-{}.yml", std::process::id()));
        std::fs::write(
            &path,
            "credentials: {username: u, password: p}\nnot_found_status: 410\n",
        )
        .unwrap();
        let msg = Scenario::from_file(&path).unwrap_err().to_string();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            msg,
            format!(
                "{}: not_found_status: 410 is neither 400 nor 404",
                path.display()
            )
        );
    }

    #[test]
    fn derived_hashes_are_deterministic_hex_and_differ_per_file() {
        let a = SimTask::new(ID)
            .file(SimFile::new("a.exe", "Red"))
            .file(SimFile::new("b.exe", "Red"));
        let s1 = Scenario::builder().task(a.clone()).build().unwrap();
        let s2 = Scenario::builder().task(a).build().unwrap();
        let f = &s1.tasks()[0].files;
        assert_eq!(f, &s2.tasks()[0].files);
        assert_ne!(f[0].sha256, f[1].sha256);
        let sha = f[0].sha256.as_deref().unwrap();
        assert_eq!(sha.len(), 64);
        assert!(sha
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(f[0].sha1.as_deref().unwrap().len(), 40);
    }

    #[test]
    fn credentials_debug_hides_the_password() {
        let c = Credentials::new("u", "hunter2");
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}

//! Configuration: the YAML file of the interface contract, loaded and checked into [`Config`].
//!
//! The file goes through three stages, each in its own file:
//! 1. `yaml.rs` parses the text into a generic tree (the only file that names the YAML library);
//! 2. `raw.rs` (with the mechanics in `reader.rs`) walks the tree into typed but unchecked
//!    fields: unknown keys, wrong types and `${VAR}` expansion (`expand.rs`) are reported here;
//! 3. `validate.rs` (with `validate/sandbox.rs` and `validate/tasks.rs`) gives the fields
//!    meaning: ranges, GUIDs ([`TaskId`]), the URL, durations, reading `password_file` and
//!    checking `ca_file`, cross-field rules.
//!
//! Every problem is collected, so one load reports all of them, one line each:
//! `<file>: <field path>: <message> (got "<value>")`. The password never appears in a problem,
//! in `Debug` output or in [`Config::summary`].
//!
//! Choices the contract leaves open:
//! - `${NAME}` is expanded in every string value (not in keys); `$${` is a literal `${` and every
//!   other `$` is kept as written. A number or boolean field may be a string made of references
//!   (`concurrency: ${KRS_CONCURRENCY}`); a quoted literal (`"4"`) is still a type error.
//! - `null` (a key with nothing after it) counts as absent: the default applies.
//! - A task's `name` and label values may be YAML integers or booleans, kept as written
//!   (`case: 2291` is `"2291"`); fractional numbers must be quoted (YAML turns `1.10` into `1.1`).
//! - A bare-string task reports id problems at `tasks[i]`, a mapping at `tasks[i].id`.
//! - [`SandboxConfig::url`] is stored as the server base: its path always ends with `/`, and a
//!   trailing `api/v1/sandbox` written by the user is removed, so `url.join("api/v1/sandbox/…")`
//!   yields the API path exactly once. Path prefixes of reverse proxies are kept.
//! - `retry.max_elapsed_time: 0s` disables retrying. Every duration is at most 24h.

mod expand;
mod problem;
mod raw;
mod reader;
mod task_id;
mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use problem::{Problem, MAX_SHOWN_CHARS};
pub use task_id::TaskId;

use crate::secret::Secret;
use crate::zone::DangerZone;
use krs_web_config::file::{read_capped_to_string, ReadError};

/// Configuration files larger than this are refused: 100,000 tasks with names and a label take
/// about 10 MiB, and a file replaced by a link to an endless device must not grow memory without
/// bound.
pub const MAX_CONFIG_BYTES: u64 = 64 * 1024 * 1024;

/// A validated configuration: every invariant of the contract holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The file it was loaded from (`<demo>` for configurations built in code).
    pub source: PathBuf,
    pub sandbox: SandboxConfig,
    pub polling: PollingConfig,
    /// The `discovery:` section; `None` when the file has none (only `tasks:` are watched).
    pub discovery: Option<DiscoveryConfig>,
    /// The watch list in file order; ids are unique. Shared with the state's watch list, so a
    /// fleet of 100k tasks is held once.
    pub tasks: Arc<[TaskSpec]>,
    pub metrics: MetricsConfig,
}

/// How to reach and authenticate to the sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxConfig {
    /// The server base: http or https, with a host, without credentials, query or fragment; the
    /// path ends with `/` and never with `api/v1/sandbox/` (see the module docs).
    pub url: url::Url,
    pub username: String,
    /// From `password`, or the content of `password_file` without trailing CR/LF.
    pub password: Secret,
    /// Kept, resolved against the config file's directory, so a reload re-reads it.
    pub password_file: Option<PathBuf>,
    /// A PEM bundle trusted besides the system roots, resolved against the config file's
    /// directory; it existed, was readable and held a certificate at load time.
    pub ca_file: Option<PathBuf>,
    pub insecure_skip_verify: bool,
    /// One attempt, connect to full body; shorter than `polling.interval`.
    pub timeout: Duration,
    /// Larger bodies are refused; at least 1 KiB, at most 1 GiB.
    pub max_response_bytes: u64,
    /// Records decoded per response at most; 1 to a million. Beyond it the least dangerous
    /// zones are cut first, and the cut is counted.
    pub max_records: usize,
    /// The task's page in the sandbox's web interface (`sandbox.ui_task_url`), linked from the
    /// console; http or https, holding `{task_id}`.
    pub ui_task_url: Option<UiTaskUrl>,
}

/// `sandbox.ui_task_url`: a URL template whose `{task_id}` is replaced by the task's GUID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UiTaskUrl(String);

impl UiTaskUrl {
    /// The placeholder the template must hold.
    pub const PLACEHOLDER: &'static str = "{task_id}";

    /// Checks `template`: an absolute http or https URL holding [`UiTaskUrl::PLACEHOLDER`].
    pub fn parse(template: &str) -> Result<UiTaskUrl, String> {
        if !template.contains(Self::PLACEHOLDER) {
            return Err(format!("must contain {}", Self::PLACEHOLDER));
        }
        let sample = template.replace(Self::PLACEHOLDER, "task");
        match url::Url::parse(&sample) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {
                Ok(UiTaskUrl(template.to_owned()))
            }
            Ok(url) => Err(format!(
                "the scheme must be http or https with a host, not {}",
                url.scheme()
            )),
            Err(e) => Err(format!("not a valid absolute URL: {e}")),
        }
    }

    /// The link for one task; the id is percent-encoded (a GUID needs none).
    pub fn for_task(&self, id: &TaskId) -> String {
        let encoded: String =
            url::form_urlencoded::byte_serialize(id.as_str().as_bytes()).collect();
        self.0.replace(Self::PLACEHOLDER, &encoded)
    }
}

/// When and how hard the sandbox is polled.
#[derive(Clone, Debug, PartialEq)]
pub struct PollingConfig {
    /// Each task is polled once per interval; at least 1s. With `lifecycle`, the pace of tasks
    /// whose state is unknown.
    pub interval: Duration,
    /// Tasks that are uploading, created or processing; at most `interval`.
    pub active_interval: Duration,
    /// Completed tasks, after their final poll; at least `interval`. `None` (`0s`): never again.
    pub settled_interval: Option<Duration>,
    /// Whether each task's state sets its pace; when off, every task goes at `interval`.
    pub lifecycle: bool,
    /// `GET health` and `GET version`; `None` (`0s`): off.
    pub health_interval: Option<Duration>,
    /// Requests in flight at most; 1 to 1024.
    pub concurrency: usize,
    pub retry: RetryConfig,
}

/// Exponential backoff with jitter for one poll.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryConfig {
    /// Greater than zero and at most `max_interval`.
    pub initial_interval: Duration,
    pub max_interval: Duration,
    /// Finite, 1.0 to 100.0.
    pub multiplier: f64,
    /// 0.0 to 1.0.
    pub randomization_factor: f64,
    /// Zero disables retrying.
    pub max_elapsed_time: Duration,
}

/// The `discovery:` section: watch the tasks the sandbox lists, besides the `tasks:` list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// How often the task list is read; at least 1s.
    pub interval: Duration,
    /// Tasks created within this window are watched; older discovered tasks leave.
    pub lookback: Duration,
    /// Only tasks whose own zone is listed; empty: any.
    pub zones: Vec<DangerZone>,
    /// Discovered tasks kept at most (the newest); 1 to 1,000,000.
    pub max_tasks: usize,
    /// `count` per list request; 1 to 1500.
    pub page_size: usize,
    /// Added to `krs_task_info` of discovered tasks.
    pub labels: TaskLabels,
}

/// One watched task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskSpec {
    pub id: TaskId,
    /// `""` when the file gives none.
    pub name: String,
    /// Valid Prometheus label names, none reserved (`__*`) or taken by `krs_task_info` itself
    /// (`task_id`, `name`); at most 32, values at most 1024 characters.
    pub labels: TaskLabels,
}

/// A task's `labels:`, sorted by name, each name once. A sorted slice rather than a map: tasks
/// carry one or two labels, and a B-tree node costs 544 bytes even for one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskLabels(Box<[(String, String)]>);

impl TaskLabels {
    /// The value of label `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(name))
            .ok()
            .map(|i| self.0[i].1.as_str())
    }

    /// Label names in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }

    /// (name, value) pairs in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<BTreeMap<String, String>> for TaskLabels {
    fn from(map: BTreeMap<String, String>) -> Self {
        TaskLabels(map.into_iter().collect())
    }
}

impl<const N: usize> From<[(String, String); N]> for TaskLabels {
    /// A later pair wins over an earlier one with the same name, as in a map.
    fn from(pairs: [(String, String); N]) -> Self {
        BTreeMap::from(pairs).into()
    }
}

/// What the metrics expose and how far they may grow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Zones whose files get a `krs_download_info` series; deduplicated, in file order.
    pub file_info_zones: Vec<DangerZone>,
    /// Longest label value taken from the sandbox; 1 to 4096.
    pub max_label_length: usize,
    /// Most distinct values per label taken from the sandbox; 1 to 10000.
    pub max_label_values: usize,
    /// `krs_download_info` series per task at most; 0 to 100000.
    pub max_file_info_series: usize,
    /// `krs_download_info` series in one scrape at most, all tasks together; 0 to a million.
    pub max_file_info_series_total: usize,
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file itself could not be read. `Display` includes the reason, because callers print
    /// this error with plain `{}`; it is also the `source()`.
    #[error("cannot read configuration file {}: {source}", path.display())]
    Read { path: PathBuf, source: ReadError },
    /// The file was read but is not a valid configuration; `Display` gives one line per problem.
    #[error("{}", render(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

impl Config {
    /// Loads `path`, expanding `${VAR}` from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with_env(path, &|name| std::env::var(name).ok())
    }

    /// Loads `path`, looking variables up with `env` (tests pass a fixed map).
    pub fn load_with_env(
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let text =
            read_capped_to_string(path, MAX_CONFIG_BYTES).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
        Config::from_yaml_str(&text, path, env)
    }

    /// Parses and validates `text` as if read from `source`: relative `password_file` and
    /// `ca_file` paths resolve against `source`'s directory, and problems name `source`.
    pub fn from_yaml_str(
        text: &str,
        source: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let invalid = |problems: Vec<Problem>| ConfigError::Invalid {
            path: source.to_path_buf(),
            problems,
        };
        let root =
            krs_yaml::parse(text).map_err(|e| invalid(vec![Problem::new("", e.to_string())]))?;
        let mut problems = problem::Problems::default();
        let raw = raw::read(&root, env, &mut problems);
        let config = validate::validate(raw, source, &mut problems);
        match config {
            Some(config) if problems.is_empty() => Ok(config),
            _ => {
                let mut problems = problems.into_vec();
                // Every path to `None` reports first; this only keeps a slip from being silent.
                debug_assert!(!problems.is_empty(), "validation failed without a problem");
                if problems.is_empty() {
                    problems.push(Problem::new("", "invalid configuration"));
                }
                problems.sort_by_key(file_order);
                Err(invalid(problems))
            }
        }
    }

    /// Every label name used by any task, sorted: the extra labels of `krs_task_info`.
    pub fn label_keys(&self) -> Vec<String> {
        let keys: BTreeSet<&str> = self.tasks.iter().flat_map(|t| t.labels.keys()).collect();
        keys.into_iter().map(str::to_owned).collect()
    }

    /// One line for logs and `--config.check`, e.g.
    /// `12 tasks, interval 60s, concurrency 4, sandbox https://host/`. Never the password.
    pub fn summary(&self) -> String {
        let count = self.tasks.len();
        format!(
            "{count} task{}, interval {}, concurrency {}, sandbox {}",
            if count == 1 { "" } else { "s" },
            humantime::format_duration(self.polling.interval),
            self.polling.concurrency,
            self.sandbox.url,
        )
    }
}

impl Default for PollingConfig {
    fn default() -> Self {
        PollingConfig {
            interval: Duration::from_secs(60),
            active_interval: Duration::from_secs(10),
            settled_interval: Some(Duration::from_secs(3600)),
            lifecycle: false,
            health_interval: Some(Duration::from_secs(60)),
            concurrency: 4,
            retry: RetryConfig::default(),
        }
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial_interval: Duration::from_millis(500),
            max_interval: Duration::from_secs(30),
            multiplier: 2.0,
            randomization_factor: 0.5,
            max_elapsed_time: Duration::from_secs(120),
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            file_info_zones: vec![DangerZone::Red],
            max_label_length: 128,
            max_label_values: 100,
            max_file_info_series: 100,
            max_file_info_series_total: 10_000,
        }
    }
}

impl ConfigError {
    /// The problems of an invalid file; empty for a read error.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid { problems, .. } => problems,
        }
    }
}

/// Sorts problems by section in file order, and tasks by index, so an operator reads them top
/// down; the stable sort keeps the order found within one section or task.
fn file_order(problem: &Problem) -> (usize, usize) {
    let field = problem.field.as_str();
    let section = ["sandbox", "polling", "tasks", "metrics"]
        .iter()
        .position(|name| {
            field.strip_prefix(name).is_some_and(|rest| {
                rest.is_empty() || rest.starts_with('.') || rest.starts_with('[')
            })
        })
        .map_or(0, |i| i + 1);
    let task = field
        .strip_prefix("tasks[")
        .and_then(|rest| rest.split(']').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    (section, task)
}

fn render(path: &Path, problems: &[Problem]) -> String {
    let lines: Vec<String> = problems
        .iter()
        .map(|p| format!("{}: {p}", path.display()))
        .collect();
    lines.join("\n")
}

#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

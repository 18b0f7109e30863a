//! The raw shape of the file: the YAML tree walked into typed but unchecked fields.
//!
//! This layer owns the *structure*: unknown keys, wrong types, `${VAR}` expansion and YAML
//! numbers that do not fit. It reports every such problem and keeps going, marking the field
//! [`Slot::Invalid`] so that [`super::validate`] neither repeats the complaint nor reports the
//! field as missing. Meaning (ranges, GUIDs, URLs, files) is checked by `validate`.
//!
//! A `null` value (`timeout:` with nothing after it) counts as absent everywhere.

use super::expand::Env;
use super::problem::Problems;
use super::reader::{key_path, Reader, Reveal, Section};
use super::TaskId;
use krs_yaml::Value;

/// What the file says about one field.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Slot<T> {
    /// Not in the file (or `null`): the default applies, or "required" is reported.
    Absent,
    /// Present but unusable; a problem has been reported already.
    Invalid,
    Given(T),
}

/// One field and where it sits in the file, for problem messages.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Field<T> {
    pub path: String,
    pub slot: Slot<T>,
}

#[derive(Debug)]
pub(super) struct RawConfig {
    pub sandbox: Slot<RawSandbox>,
    pub polling: RawPolling,
    pub discovery: Slot<RawDiscovery>,
    pub tasks: Vec<RawTask>,
    pub metrics: RawMetrics,
}

#[derive(Debug)]
pub(super) struct RawDiscovery {
    pub interval: Field<String>,
    pub lookback: Field<String>,
    pub zones: Field<Vec<Field<String>>>,
    pub max_tasks: Field<u64>,
    pub page_size: Field<u64>,
    pub labels: Field<Vec<RawLabel>>,
}

#[derive(Debug)]
pub(super) struct RawSandbox {
    pub url: Field<String>,
    pub username: Field<String>,
    /// Never shown in problems.
    pub password: Field<String>,
    pub password_file: Field<String>,
    pub ca_file: Field<String>,
    pub insecure_skip_verify: Field<bool>,
    /// Durations stay text here; `validate` parses them.
    pub timeout: Field<String>,
    pub max_response_bytes: Field<u64>,
    pub max_records: Field<u64>,
    pub ui_task_url: Field<String>,
}

#[derive(Debug)]
pub(super) struct RawPolling {
    pub interval: Field<String>,
    pub active_interval: Field<String>,
    pub settled_interval: Field<String>,
    pub lifecycle: Field<bool>,
    pub health_interval: Field<String>,
    pub concurrency: Field<u64>,
    pub retry: RawRetry,
}

#[derive(Debug)]
pub(super) struct RawRetry {
    pub initial_interval: Field<String>,
    pub max_interval: Field<String>,
    pub multiplier: Field<f64>,
    pub randomization_factor: Field<f64>,
    pub max_elapsed_time: Field<String>,
}

/// One entry of `tasks:`, a bare id or a mapping.
#[derive(Debug)]
pub(super) struct RawTask {
    /// `tasks[3]`, the entry as a whole (duplicate messages point here).
    pub path: String,
    /// At `tasks[3]` for a bare entry, `tasks[3].id` for a mapping.
    pub id: Field<String>,
    pub name: Field<String>,
    pub labels: Field<Vec<RawLabel>>,
}

#[derive(Debug)]
pub(super) struct RawLabel {
    /// Path of the value, e.g. `tasks[0].labels.team`.
    pub path: String,
    pub key: String,
    pub value: String,
}

#[derive(Debug)]
pub(super) struct RawMetrics {
    pub file_info_zones: Field<Vec<Field<String>>>,
    pub max_label_length: Field<u64>,
    pub max_label_values: Field<u64>,
    pub max_file_info_series: Field<u64>,
    pub max_file_info_series_total: Field<u64>,
}

/// Walks the parsed document, expanding `${VAR}` with `env` and reporting structural problems.
/// A section's allowed keys are the ones read from it here (see [`Section`]).
pub(super) fn read(root: &Value, env: Env<'_>, problems: &mut Problems) -> RawConfig {
    let mut r = Reader::new(env, problems);
    let top = r.section(String::new(), Some(root));

    let sandbox = if top.invalid {
        Slot::Invalid
    } else if top.get("sandbox").is_none() {
        Slot::Absent
    } else {
        let s = r.subsection(&top, "sandbox");
        let sandbox = if s.invalid {
            Slot::Invalid
        } else {
            Slot::Given(RawSandbox {
                url: r.string(&s, "url", Reveal::Yes),
                username: r.string(&s, "username", Reveal::Yes),
                password: r.string(&s, "password", Reveal::No),
                password_file: r.string(&s, "password_file", Reveal::Yes),
                ca_file: r.string(&s, "ca_file", Reveal::Yes),
                insecure_skip_verify: r.boolean(&s, "insecure_skip_verify"),
                timeout: r.duration(&s, "timeout"),
                max_response_bytes: r.unsigned(&s, "max_response_bytes"),
                max_records: r.unsigned(&s, "max_records"),
                ui_task_url: r.string(&s, "ui_task_url", Reveal::Yes),
            })
        };
        r.close(s);
        sandbox
    };

    let p = r.subsection(&top, "polling");
    let interval = r.duration(&p, "interval");
    let active_interval = r.duration(&p, "active_interval");
    let settled_interval = r.duration(&p, "settled_interval");
    let lifecycle = r.boolean(&p, "lifecycle");
    let health_interval = r.duration(&p, "health_interval");
    let concurrency = r.unsigned(&p, "concurrency");
    let q = r.subsection(&p, "retry");
    let retry = RawRetry {
        initial_interval: r.duration(&q, "initial_interval"),
        max_interval: r.duration(&q, "max_interval"),
        multiplier: r.float(&q, "multiplier"),
        randomization_factor: r.float(&q, "randomization_factor"),
        max_elapsed_time: r.duration(&q, "max_elapsed_time"),
    };
    r.close(q);
    r.close(p);
    let polling = RawPolling {
        interval,
        active_interval,
        settled_interval,
        lifecycle,
        health_interval,
        concurrency,
        retry,
    };

    let discovery = if top.invalid || top.get("discovery").is_none() {
        Slot::Absent
    } else {
        let d = r.subsection(&top, "discovery");
        let discovery = if d.invalid {
            Slot::Invalid
        } else {
            Slot::Given(RawDiscovery {
                interval: r.duration(&d, "interval"),
                lookback: r.duration(&d, "lookback"),
                zones: r.zones(&d, "zones"),
                max_tasks: r.unsigned(&d, "max_tasks"),
                page_size: r.unsigned(&d, "page_size"),
                labels: r.labels(&d),
            })
        };
        r.close(d);
        discovery
    };

    let tasks = r.tasks(&top);

    let m = r.subsection(&top, "metrics");
    let metrics = RawMetrics {
        file_info_zones: r.zones(&m, "file_info_zones"),
        max_label_length: r.unsigned(&m, "max_label_length"),
        max_label_values: r.unsigned(&m, "max_label_values"),
        max_file_info_series: r.unsigned(&m, "max_file_info_series"),
        max_file_info_series_total: r.unsigned(&m, "max_file_info_series_total"),
    };
    r.close(m);
    r.close(top);

    RawConfig {
        sandbox,
        polling,
        discovery,
        tasks,
        metrics,
    }
}

impl<T> Field<T> {
    pub(super) fn given(&self) -> Option<&T> {
        match &self.slot {
            Slot::Given(value) => Some(value),
            Slot::Absent | Slot::Invalid => None,
        }
    }

    pub(super) fn is_absent(&self) -> bool {
        matches!(self.slot, Slot::Absent)
    }
}

impl Reader<'_> {
    fn tasks(&mut self, top: &Section<'_>) -> Vec<RawTask> {
        if top.invalid {
            return Vec::new();
        }
        let items = match top.get("tasks") {
            None => return Vec::new(),
            Some(Value::Seq(items)) => items,
            Some(other) => {
                self.wrong_type("tasks", "a list of tasks", other, Reveal::Yes);
                return Vec::new();
            }
        };
        let mut tasks = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let path = format!("tasks[{i}]");
            match item {
                item if braced_guid(item).is_some() => {
                    self.braced_guid(&path, item);
                }
                Value::String(s) => {
                    let slot = match self.expand(&path, s) {
                        Some(id) => Slot::Given(id),
                        None => Slot::Invalid,
                    };
                    tasks.push(RawTask {
                        id: Field {
                            path: path.clone(),
                            slot,
                        },
                        name: Field {
                            path: format!("{path}.name"),
                            slot: Slot::Absent,
                        },
                        labels: Field {
                            path: format!("{path}.labels"),
                            slot: Slot::Absent,
                        },
                        path,
                    });
                }
                Value::Map(_) => {
                    let entry = self.section(path.clone(), Some(item));
                    tasks.push(RawTask {
                        id: self.task_id(&entry),
                        name: self.field(&entry, "name", |r, p, v| r.label_text(p, v)),
                        labels: self.labels(&entry),
                        path,
                    });
                    self.close(entry);
                }
                other => self.wrong_type(
                    &path,
                    "a task id, or a mapping with id, name and labels",
                    other,
                    Reveal::Yes,
                ),
            }
        }
        tasks
    }

    /// The `id` of a mapping entry: a string, as [`Reader::string`] reads it.
    fn task_id(&mut self, entry: &Section<'_>) -> Field<String> {
        self.field(entry, "id", |r, path, value| match value {
            Value::String(s) => r.expand(path, s),
            value if braced_guid(value).is_some() => {
                r.braced_guid(path, value);
                None
            }
            other => {
                r.wrong_type(path, "a string", other, Reveal::Yes);
                None
            }
        })
    }

    /// Reports a GUID written in braces without quotes, which YAML reads as a mapping.
    fn braced_guid(&mut self, path: &str, value: &Value) {
        let guid = braced_guid(value).unwrap_or_default();
        self.problems.report_value(
            path,
            &format!("{{{guid}}}"),
            format!(
                "YAML reads braces without quotes as a mapping; quote the GUID: '{{{guid}}}', \
                 or write it without braces"
            ),
        );
    }

    fn labels(&mut self, entry: &Section<'_>) -> Field<Vec<RawLabel>> {
        self.field(entry, "labels", |r, path, value| {
            let Value::Map(pairs) = value else {
                r.wrong_type(
                    path,
                    "a mapping of label names to values",
                    value,
                    Reveal::Yes,
                );
                return None;
            };
            let mut labels = Vec::with_capacity(pairs.len());
            for (key, value) in pairs {
                let Value::String(key) = key else {
                    r.wrong_type(path, "label names that are strings", key, Reveal::Yes);
                    continue;
                };
                let value_path = key_path(path, key);
                if let Some(value) = r.label_text(&value_path, value) {
                    labels.push(RawLabel {
                        path: value_path,
                        key: key.clone(),
                        value,
                    });
                }
            }
            Some(labels)
        })
    }

    fn zones(&mut self, section: &Section<'_>, key: &'static str) -> Field<Vec<Field<String>>> {
        self.field(section, key, |r, path, value| {
            let Value::Seq(items) = value else {
                r.wrong_type(
                    path,
                    "a list of zones, like [Red, Orange]",
                    value,
                    Reveal::Yes,
                );
                return None;
            };
            let zones = items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let item_path = format!("{path}[{i}]");
                    let value = match item {
                        Value::String(s) => r.expand(&item_path, s),
                        other => {
                            r.wrong_type(&item_path, "a zone name", other, Reveal::Yes);
                            None
                        }
                    };
                    Field {
                        path: item_path,
                        slot: value.map_or(Slot::Invalid, Slot::Given),
                    }
                })
                .collect();
            Some(zones)
        })
    }
}

/// The GUID of `{0D5B…}` written without quotes: a mapping of one GUID-shaped key to nothing.
fn braced_guid(value: &Value) -> Option<&str> {
    match value {
        Value::Map(entries) => match entries.as_slice() {
            [(Value::String(key), Value::Null)] if TaskId::parse(key).is_ok() => Some(key),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::testing::*;
    use crate::config::PollingConfig;

    #[test]
    fn null_sections_and_fields_count_as_absent() {
        let config = ok(&format!(
            "{MINIMAL}  timeout:\npolling:\n  retry:\ntasks:\nmetrics: ~\n"
        ));
        assert_eq!(config.sandbox.timeout, Duration::from_secs(10));
        assert_eq!(config.polling, PollingConfig::default());
        assert!(config.tasks.is_empty());
    }

    #[test]
    fn an_empty_task_list_is_allowed() {
        assert!(ok(&format!("{MINIMAL}tasks: []\n")).tasks.is_empty());
    }

    #[test]
    fn a_task_entry_of_the_wrong_type_names_what_is_expected() {
        let line = one_problem(&format!("{MINIMAL}tasks:\n  - [a, b]\n"));
        assert_eq!(
            line,
            "tasks[0]: expected a task id, or a mapping with id, name and labels, got a list"
        );
    }

    #[test]
    fn unknown_keys_are_reported_at_every_level_with_a_suggestion() {
        let yaml = format!(
        "{MINIMAL}  passwrd: x\nsandbx: {{}}\npolling:\n  retry:\n    multiplyer: 3\ntasks:\n  - id: {ID_A}\n    lables: {{a: b}}\nmetrics:\n  zones: [Red]\n"
    );
        let lines = problems(&yaml);
        assert_eq!(
        lines,
        [
            "sandbx: unknown key `sandbx` (did you mean `sandbox`?); expected one of sandbox, \
             polling, discovery, tasks, metrics",
            "sandbox.passwrd: unknown key `passwrd` (did you mean `password`?); expected one of \
             url, username, password, password_file, ca_file, insecure_skip_verify, timeout, \
             max_response_bytes, max_records, ui_task_url",
            "polling.retry.multiplyer: unknown key `multiplyer` (did you mean `multiplier`?); \
             expected one of initial_interval, max_interval, multiplier, randomization_factor, \
             max_elapsed_time",
            "tasks[0].lables: unknown key `lables` (did you mean `labels`?); expected one of id, \
             name, labels",
            "metrics.zones: unknown key `zones`; expected one of file_info_zones, \
             max_label_length, max_label_values, max_file_info_series, max_file_info_series_total",
        ]
    );
    }

    #[test]
    fn a_guid_in_braces_without_quotes_is_reported_with_the_quoting_that_fixes_it() {
        let lines = problems(&format!(
            "{MINIMAL}tasks:\n  - {{0D5B4E44-4C0E-4F0B-9A57-3F2D1B9E6C71}}\n  - id: {{{ID_B}}}\n"
        ));
        assert_eq!(
            lines,
            [
                "tasks[0]: YAML reads braces without quotes as a mapping; quote the GUID: \
                 '{0D5B4E44-4C0E-4F0B-9A57-3F2D1B9E6C71}', or write it without braces \
                 (got \"{0D5B4E44-4C0E-4F0B-9A57-3F2D1B9E6C71}\")"
                    .to_string(),
                format!(
                    "tasks[1].id: YAML reads braces without quotes as a mapping; quote the GUID: \
                     '{{{ID_B}}}', or write it without braces (got \"{{{ID_B}}}\")"
                ),
            ]
        );
        // Quoted, the same entries load.
        let config = ok(&format!(
            "{MINIMAL}tasks:\n  - '{{0D5B4E44-4C0E-4F0B-9A57-3F2D1B9E6C71}}'\n  - id: '{{{ID_B}}}'\n"
        ));
        assert_eq!(config.tasks.len(), 2);
    }

    #[test]
    fn a_section_s_unknown_keys_come_before_the_problems_of_its_fields() {
        let lines = problems(&format!(
            "{MINIMAL}  timeout: 10\n  url_: x\npolling:\n  concurrency: -1\n  intervall: 1m\n"
        ));
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert!(lines[0].starts_with("sandbox.url_: unknown key `url_` (did you mean `url`?)"));
        assert!(lines[1].starts_with("sandbox.timeout: "), "{}", lines[1]);
        assert!(lines[2].starts_with(
            "polling.intervall: unknown key `intervall` (did you mean \
             `interval`?); expected one of interval, active_interval, settled_interval, lifecycle, health_interval, concurrency, retry"
        ));
        assert!(
            lines[3].starts_with("polling.concurrency: "),
            "{}",
            lines[3]
        );
    }

    #[test]
    fn wrong_types_name_the_expected_type() {
        let lines = problems(&format!(
        "{MINIMAL}  insecure_skip_verify: yes\n  max_response_bytes: [1]\npolling: 5\nmetrics:\n  file_info_zones: Red\n"
    ));
        assert_eq!(
        lines,
        [
            "sandbox.insecure_skip_verify: expected true or false, got a string (remove the quotes) (got \"yes\")",
            "sandbox.max_response_bytes: expected an integer, got a list",
            "polling: expected a mapping, got an integer (got \"5\")",
            "metrics.file_info_zones: expected a list of zones, like [Red, Orange], got a string (got \"Red\")",
        ]
    );
    }

    #[test]
    fn the_top_level_must_be_a_mapping() {
        assert_eq!(one_problem("- a\n- b\n"), "expected a mapping, got a list");
    }

    #[test]
    fn yaml_tags_are_not_supported() {
        let line = one_problem(&with_sandbox("  password: !vault abc\n"));
        assert_eq!(
            line,
            "sandbox.password: YAML tags such as `!vault` are not supported; expected a string"
        );
    }

    #[test]
    fn env_references_expand_in_any_string_value() {
        let config = ok(&format!(
        "sandbox:\n  url: https://${{KRS_HOST}}:${{KRS_PORT}}/prefix\n  username: exporter\n  password: ${{KRS_PASSWORD}}\ntasks:\n  - id: {ID_A}\n    name: ${{KRS_TEAM}}-${{EMPTY}}task\n    labels: {{team: '${{KRS_TEAM}}'}}\n"
    ));
        assert_eq!(
            config.sandbox.url.as_str(),
            "https://sandbox.example.com:8443/prefix/"
        );
        assert_eq!(config.sandbox.password.expose(), "env-s3cret");
        assert_eq!(config.tasks[0].name, "soc-task");
        assert_eq!(config.tasks[0].labels.get("team"), Some("soc"));
    }

    #[test]
    fn an_unset_variable_is_a_problem_naming_the_variable_and_the_field() {
        let lines = problems(&with_sandbox(
            "  password: ${NOPE_PASSWORD}\n  ca_file: /x/${NOPE_A}/${NOPE_B}\n",
        ));
        assert_eq!(
            lines,
            [
                "sandbox.password: environment variable `NOPE_PASSWORD` is not set",
                "sandbox.ca_file: environment variable `NOPE_A` is not set",
                "sandbox.ca_file: environment variable `NOPE_B` is not set",
            ]
        );
    }

    #[test]
    fn a_bad_reference_in_the_password_is_reported_without_its_text() {
        let line = one_problem(&with_sandbox("  password: 'pa${s3cr-t}'\n"));
        assert_eq!(
            line,
            "sandbox.password: a `${` is not followed by a variable name and `}`; write `$${` for \
             a literal `${`"
        );
    }

    #[test]
    fn an_unrelated_short_key_gets_no_suggestion() {
        assert_eq!(
            one_problem(&format!("{MINIMAL}x: 1\n")),
            "x: unknown key `x`; expected one of sandbox, polling, discovery, tasks, metrics"
        );
        assert!(one_problem(&format!("{MINIMAL}Tasks: []\n")).contains("did you mean `tasks`?"));
    }

    #[test]
    fn dollar_dollar_brace_escapes_a_literal_reference_and_other_dollars_stay() {
        let config = ok(&with_sandbox("  password: pa$$word-$${KRS_PASSWORD}\n"));
        assert_eq!(config.sandbox.password.expose(), "pa$$word-${KRS_PASSWORD}");
    }

    #[test]
    fn numbers_and_booleans_may_come_from_environment_variables() {
        let config = ok(&format!(
        "{MINIMAL}  insecure_skip_verify: ${{KRS_INSECURE}}\npolling:\n  concurrency: ${{KRS_CONCURRENCY}}\n  retry:\n    multiplier: '1${{KRS_CONCURRENCY}}'\n"
    ));
        assert!(config.sandbox.insecure_skip_verify);
        assert_eq!(config.polling.concurrency, 8);
        assert_eq!(config.polling.retry.multiplier, 18.0);
    }

    #[test]
    fn a_quoted_number_is_still_a_type_error() {
        assert_eq!(
        one_problem(&format!("{MINIMAL}polling:\n  concurrency: '4'\n")),
        "polling.concurrency: expected an integer, got a string (remove the quotes) (got \"4\")"
    );
    }

    #[test]
    fn label_values_may_be_integers_or_booleans_but_not_fractions() {
        let config = ok(&format!(
        "{MINIMAL}tasks:\n  - id: {ID_A}\n    name: 42\n    labels: {{case: 2291, urgent: true, empty: ''}}\n"
    ));
        let labels = &config.tasks[0].labels;
        assert_eq!(config.tasks[0].name, "42");
        assert_eq!(labels.get("case"), Some("2291"));
        assert_eq!(labels.get("urgent"), Some("true"));
        assert_eq!(labels.get("empty"), Some(""));
        let line = one_problem(&format!(
            "{MINIMAL}tasks:\n  - id: {ID_A}\n    labels: {{version: 1.10}}\n"
        ));
        assert!(
            line.starts_with("tasks[0].labels.version: quote this value"),
            "{line}"
        );
    }
}

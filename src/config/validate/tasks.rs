//! The task list: GUIDs canonical and unique, names and labels fit for `krs_task_info`.

use std::collections::{BTreeMap, HashMap};

use crate::config::problem::Problems;
use crate::config::raw::{Field, RawLabel, RawTask, Slot};
use crate::config::reader::is_identifier;
use crate::config::{TaskId, TaskSpec};
use crate::labels;

/// Most labels on one task: `krs_task_info` carries the union of all of them.
const MAX_LABELS_PER_TASK: usize = 32;
/// Longest label value or task name, in characters.
const MAX_LABEL_VALUE_CHARS: usize = 1024;
/// Longest label name, in characters.
const MAX_LABEL_NAME_CHARS: usize = 128;

pub(super) fn tasks(raw: &[RawTask], problems: &mut Problems) -> Vec<TaskSpec> {
    let mut first_seen: HashMap<TaskId, &str> = HashMap::with_capacity(raw.len());
    let mut specs = Vec::with_capacity(raw.len());
    for task in raw {
        let id = match &task.id.slot {
            Slot::Given(text) => match TaskId::parse(text) {
                Ok(id) => Some(id),
                Err(why) => {
                    problems.report_value(&task.id.path, text, format!("not a task id: {why}"));
                    None
                }
            },
            Slot::Absent => {
                problems.report(&task.id.path, "required: every task needs its GUID");
                None
            }
            Slot::Invalid => None,
        };
        if let Some(id) = &id {
            if let Some(first) = first_seen.get(id) {
                problems.report(
                    &task.id.path,
                    format!("duplicate task id {id}; first listed at {first}"),
                );
            } else {
                first_seen.insert(id.clone(), &task.path);
            }
        }
        let name = match &task.name.slot {
            Slot::Given(name) => check_label_value(problems, &task.name.path, name),
            Slot::Absent => Some(String::new()),
            Slot::Invalid => None,
        };
        let labels = labels(task, problems);
        if let (Some(id), Some(name), Some(labels)) = (id, name, labels) {
            specs.push(TaskSpec {
                id,
                name,
                labels: labels.into(),
            });
        }
    }
    specs
}

fn labels(task: &RawTask, problems: &mut Problems) -> Option<BTreeMap<String, String>> {
    label_map(&task.labels, problems)
}

/// A `labels:` mapping (of a task, or of `discovery:`), checked.
pub(super) fn label_map(
    field: &Field<Vec<RawLabel>>,
    problems: &mut Problems,
) -> Option<BTreeMap<String, String>> {
    let raw = match &field.slot {
        Slot::Given(raw) => raw,
        Slot::Absent => return Some(BTreeMap::new()),
        Slot::Invalid => return None,
    };
    let mut ok = true;
    if raw.len() > MAX_LABELS_PER_TASK {
        problems.report(
            &field.path,
            format!(
                "a task has at most {MAX_LABELS_PER_TASK} labels, this one has {}",
                raw.len()
            ),
        );
        ok = false;
    }
    let mut labels = BTreeMap::new();
    for label in raw {
        if let Err(why) = check_label_name(&label.key) {
            problems.report_value(&label.path, &label.key, why);
            ok = false;
        } else if let Some(value) = check_label_value(problems, &label.path, &label.value) {
            labels.insert(label.key.clone(), value);
        } else {
            ok = false;
        }
    }
    ok.then_some(labels)
}

fn check_label_name(key: &str) -> Result<(), String> {
    if !is_identifier(key) {
        Err("label names must match [a-zA-Z_][a-zA-Z0-9_]* (Prometheus label name rules)".into())
    } else if key.starts_with("__") {
        Err("label names starting with __ are reserved for Prometheus' internal use".into())
    } else if key == "task_id" {
        Err(
            "task_id is a label of krs_task_info already (the task's GUID); choose another name"
                .into(),
        )
    } else if key == "source" {
        Err("source is a label of krs_task_info already (static or discovered); choose another name".into())
    } else if key == "name" {
        Err("name is a label of krs_task_info already; set the task's name with `name:` beside `labels:`".into())
    } else if key.chars().count() > MAX_LABEL_NAME_CHARS {
        Err(format!(
            "label names are limited to {MAX_LABEL_NAME_CHARS} characters"
        ))
    } else {
        Ok(())
    }
}

/// A label value or task name becomes a `krs_task_info` label as written, so it must be fit to
/// show: the characters [`labels::clean`] would replace in a sandbox string are refused here,
/// where the operator can fix them.
fn check_label_value(problems: &mut Problems, path: &str, value: &str) -> Option<String> {
    if let Some((at, c)) = value
        .chars()
        .enumerate()
        .find(|(_, c)| labels::is_unsafe(*c))
    {
        problems.report_value(
            path,
            value,
            format!(
                "control and invisible formatting characters are not allowed in label values \
                 (U+{:04X} at character {})",
                u32::from(c),
                at + 1
            ),
        );
        return None;
    }
    let count = value.chars().count();
    if count > MAX_LABEL_VALUE_CHARS {
        problems.report_value(
            path,
            value,
            format!("at most {MAX_LABEL_VALUE_CHARS} characters, this has {count}"),
        );
        return None;
    }
    Some(value.to_owned())
}

#[cfg(test)]
mod tests {
    use crate::config::testing::*;

    #[test]
    fn a_bare_guid_with_braces_and_uppercase_is_canonicalised() {
        let config = ok(&format!(
        "{MINIMAL}tasks:\n  - '{{7C9E6679-7425-40DE-944B-E07FC1F90AE7}}'\n  - id: ' 0D5B4E44-4C0E-4F0B-9A57-3F2D1B9E6C71 '\n"
    ));
        let ids: Vec<&str> = config.tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, [ID_B, ID_A]);
    }

    #[test]
    fn a_duplicate_task_id_names_both_entries() {
        let line = one_problem(&format!(
        "{MINIMAL}tasks:\n  - {ID_A}\n  - {ID_B}\n  - id: '{{7C9E6679-7425-40DE-944B-E07FC1F90AE7}}'\n"
    ));
        assert_eq!(
            line,
            format!("tasks[2].id: duplicate task id {ID_B}; first listed at tasks[1]")
        );
    }

    #[test]
    fn a_bad_task_id_names_the_entry_the_value_and_the_reason() {
        let lines = problems(&format!(
        "{MINIMAL}tasks:\n  - not-a-guid\n  - id: 7c9e6679-7425-40de-944b-e07fc1f90aeg\n  - name: no id\n"
    ));
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(lines[0].starts_with("tasks[0]: not a task id: a GUID has 36 characters"));
        assert!(lines[0].ends_with("(got \"not-a-guid\")"), "{}", lines[0]);
        assert!(lines[1].starts_with("tasks[1].id: not a task id: 'g' at position 36"));
        assert_eq!(lines[2], "tasks[2].id: required: every task needs its GUID");
    }

    #[test]
    fn bad_label_keys_are_rejected_saying_why() {
        let lines = problems(&format!(
        "{MINIMAL}tasks:\n  - id: {ID_A}\n    labels:\n      'bad key': x\n      __reserved: x\n      task_id: x\n      name: x\n      9lives: x\n      ok_key: x\n"
    ));
        assert_eq!(
        lines,
        [
            "tasks[0].labels[\"bad key\"]: label names must match [a-zA-Z_][a-zA-Z0-9_]* (Prometheus label name rules) (got \"bad key\")",
            "tasks[0].labels.__reserved: label names starting with __ are reserved for Prometheus' internal use (got \"__reserved\")",
            "tasks[0].labels.task_id: task_id is a label of krs_task_info already (the task's GUID); choose another name (got \"task_id\")",
            "tasks[0].labels.name: name is a label of krs_task_info already; set the task's name with `name:` beside `labels:` (got \"name\")",
            "tasks[0].labels[\"9lives\"]: label names must match [a-zA-Z_][a-zA-Z0-9_]* (Prometheus label name rules) (got \"9lives\")",
        ]
    );
    }

    #[test]
    fn label_counts_and_value_lengths_are_bounded() {
        let many: Vec<String> = (0..33).map(|i| format!("k{i}: v")).collect();
        let line = one_problem(&format!(
            "{MINIMAL}tasks:\n  - id: {ID_A}\n    labels: {{{}}}\n",
            many.join(", ")
        ));
        assert_eq!(
            line,
            "tasks[0].labels: a task has at most 32 labels, this one has 33"
        );
        let long = "x".repeat(1025);
        let line = one_problem(&format!(
            "{MINIMAL}tasks:\n  - id: {ID_A}\n    name: {long}\n"
        ));
        assert!(
            line.starts_with("tasks[0].name: at most 1024 characters, this has 1025 (got \"xxx"),
            "{line}"
        );
        assert!(line.len() < 200, "the value is truncated: {line}");
    }

    #[test]
    fn control_and_bidi_characters_in_names_and_label_values_are_rejected_naming_the_field() {
        let lines = problems(&format!(
            "{MINIMAL}tasks:\n  - id: {ID_A}\n    name: \"web\\rproxy\"\n    labels:\n      team: \"s\\u202Eoc\"\n      site: \"${{KRS_TEAM}}\\x1b\"\n"
        ));
        assert_eq!(
            lines,
            [
                "tasks[0].name: control and invisible formatting characters are not allowed in \
                 label values (U+000D at character 4) (got \"web\\rproxy\")",
                "tasks[0].labels.team: control and invisible formatting characters are not \
                 allowed in label values (U+202E at character 2) (got \"s\u{202e}oc\")",
                "tasks[0].labels.site: control and invisible formatting characters are not \
                 allowed in label values (U+001B at character 4) (got \"soc\\u{1b}\")",
            ]
        );
    }

    #[test]
    fn label_keys_is_the_sorted_union_of_every_task_label() {
        let config = ok(&format!(
        "{MINIMAL}tasks:\n  - id: {ID_A}\n    labels: {{team: a, case: b}}\n  - id: {ID_B}\n    labels: {{zone: c, team: d}}\n"
    ));
        assert_eq!(config.label_keys(), ["case", "team", "zone"]);
    }
}

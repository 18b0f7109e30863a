//! Test helpers shared by the metrics tests: hostile strings, a strict line checker, and the
//! per-task families rendered alone.

use proptest::prelude::*;

use super::exposition::Chunks;
use super::tasks::TaskFamilies;
use crate::config::{TaskId, TaskLabels, TaskSpec};
use crate::sandbox::Download;
use crate::state::{Limits, State, WatchList};
use crate::zone::DangerZone;

pub const TASK: &str = "0d5b4e44-4c0e-4f0b-9a57-3f2d1b9e6c71";
pub const OTHER_TASK: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";

/// A state watching `ids` (configured, unnamed, unlabelled) under `limits`.
pub fn state_of(ids: &[&str], limits: Limits) -> State {
    let tasks: Vec<TaskSpec> = ids
        .iter()
        .map(|id| TaskSpec {
            id: TaskId::parse(id).expect("valid id"),
            name: String::new(),
            labels: TaskLabels::default(),
        })
        .collect();
    State::new(WatchList {
        discovered: 0,
        tasks: tasks.into(),
        label_keys: Vec::new(),
        limits,
    })
}

/// Limits that export every zone's files, cut labels at 64 characters.
pub fn all_zones() -> Limits {
    Limits {
        max_label_length: 64,
        max_label_values: 100,
        file_info_zones: [true; 6],
        ..Limits::default()
    }
}

/// Strings as malware would choose them: quotes, escapes, control and bidi characters,
/// markup, and long runs.
pub fn hostile() -> impl Strategy<Value = String> {
    const PIECES: &[&str] = &[
        "\"",
        "\\",
        "\n",
        "\r",
        "\u{0}",
        "\u{1b}[2J",
        "\u{202e}",
        "}",
        "# HELP x\n",
        "<script>",
        "é",
        "Trojan.Win32",
        "a",
        "\u{85}",
        "\u{2028}",
        "=",
        ",",
    ];
    let piece = prop_oneof![
        3 => prop::sample::select(PIECES).prop_map(String::from),
        1 => any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|p| p.concat())
}

pub fn download() -> impl Strategy<Value = Download> {
    (
        prop::sample::select(DangerZone::ALL.to_vec()),
        hostile(),
        hostile(),
        hostile(),
        prop::collection::vec(hostile(), 0..4),
        prop::collection::vec(hostile(), 0..4),
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(
            |(zone, name, sha256, file_type, detection_names, yara_rules, size, is_https)| {
                Download {
                    zone,
                    name,
                    sha256,
                    file_type,
                    detection_names,
                    yara_rules,
                    size,
                    is_https,
                    ..Download::default()
                }
            },
        )
}

/// A strict check of one exposition line (text format 0.0.4).
pub fn valid_line(line: &str) -> Result<(), String> {
    if let Some(rest) = line.strip_prefix("# ") {
        return if rest.starts_with("HELP ") || rest.starts_with("TYPE ") {
            Ok(())
        } else {
            Err("unknown comment".into())
        };
    }
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    if let Some(labels) = rest.strip_prefix('{') {
        let mut it = labels.char_indices();
        loop {
            let key_start = it.clone().next().map(|(i, _)| i).ok_or("eof")?;
            let eq = loop {
                match it.next() {
                    Some((i, '=')) => break i,
                    Some((_, c)) if c.is_ascii_alphanumeric() || c == '_' => {}
                    other => return Err(format!("bad label name char {other:?}")),
                }
            };
            if eq == key_start {
                return Err("empty label name".into());
            }
            if it.next().map(|(_, c)| c) != Some('"') {
                return Err("unquoted value".into());
            }
            loop {
                match it.next().map(|(_, c)| c) {
                    Some('\\') => match it.next().map(|(_, c)| c) {
                        Some('\\' | '"' | 'n') => {}
                        other => return Err(format!("bad escape {other:?}")),
                    },
                    Some('"') => break,
                    Some(_) => {}
                    None => return Err("unterminated value".into()),
                }
            }
            match it.next() {
                Some((_, ',')) => {}
                Some((i, '}')) => {
                    rest = &labels[i + 1..];
                    break;
                }
                other => return Err(format!("unexpected {other:?}")),
            }
        }
    }
    let value = rest.strip_prefix(' ').ok_or("no space before value")?;
    match value {
        "+Inf" | "-Inf" | "NaN" => Ok(()),
        v => v
            .parse::<f64>()
            .map(|_| ())
            .map_err(|e| format!("value {v:?}: {e}")),
    }
}

/// A strict check of one OpenMetrics line: what [`valid_line`] accepts, `# UNIT` and `# EOF`,
/// and a sample followed by ` # {labels} value timestamp`. `sample_end` is where the sample
/// stops when it carries an exemplar (label values may hold ` # {` themselves).
pub fn valid_openmetrics_line(line: &str, sample_end: Option<usize>) -> Result<(), String> {
    if line == "# EOF" || line.starts_with("# UNIT ") {
        return Ok(());
    }
    let Some(end) = sample_end else {
        return valid_line(line);
    };
    valid_line(&line[..end])?;
    let exemplar = line[end..].strip_prefix(" # ").ok_or("no exemplar")?;
    let (labels_value, timestamp) = exemplar.rsplit_once(' ').ok_or("no timestamp")?;
    timestamp
        .parse::<f64>()
        .map_err(|e| format!("timestamp {timestamp:?}: {e}"))?;
    valid_line(&format!("e{labels_value}"))
}

/// The per-task families alone, in small chunks so that chunk boundaries are exercised.
pub fn tasks_text(families: &TaskFamilies, state: &State) -> String {
    let mut all = String::new();
    let mut emit = |chunk: String| {
        all.push_str(&chunk);
        true
    };
    let mut out = Chunks::new(64, &mut emit);
    families.render(&mut out, state);
    assert!(out.finish());
    all
}

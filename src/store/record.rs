//! How kept state is encoded: the store's own types, apart from the in-memory ones, so that
//! a change to the daemon's types cannot silently change the file format (a test pins the
//! encoding of a fixed record). Task records, discovery entries and events are JSON (readable
//! when inspecting a moved-aside file); the sets of counted files, the bulk of the store, are
//! a compact binary.
//!
//! Decoding never trusts the file: a record that does not decode is skipped by the caller.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::config::TaskId;
use crate::discovery::Listed;
use crate::journal::{Event, EventKind, Hour};
use crate::lifecycle::TaskLife;
use crate::sandbox::decode::lifecycle::TaskState;
use crate::state::{FileDetail, FileInfo, Record, Seen, SeenFile, Snapshot, TaskRow};
use crate::zone::DangerZone;

/// Why a kept value could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("the set of counted files is truncated")]
    Truncated,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct StoredTask {
    /// Unix milliseconds.
    last_poll: Option<u64>,
    last_success: Option<u64>,
    up: bool,
    status: Option<u16>,
    error: Option<String>,
    life: Option<StoredLife>,
    snapshot: Option<StoredSnapshot>,
    settled_for: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct StoredLife {
    state: String,
    result_id: String,
    created: Option<u64>,
    processed: Option<u64>,
    zone: String,
    verdict: String,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct StoredSnapshot {
    zones: [u64; 6],
    bytes: u64,
    https: u64,
    yara: Vec<(String, u64)>,
    detections: Vec<(String, u64)>,
    /// (zone, sha256, name, type)
    files: Vec<(String, String, String, String)>,
    files_dropped: u64,
    skipped_records: u64,
    details: Vec<StoredDetail>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct StoredDetail {
    key: u64,
    zone: String,
    sha256: String,
    name: String,
    size: u64,
    file_type: String,
    https: bool,
    detections: Vec<String>,
    rules: Vec<String>,
    first_seen: u64,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct StoredListed {
    name: String,
    life: StoredLife,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct StoredEvent {
    at: u64,
    task: Option<String>,
    #[serde(flatten)]
    kind: StoredKind,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum StoredKind {
    NewFile {
        zone: String,
        sha256: String,
        name: String,
        rules: Vec<String>,
    },
    ZoneChanged {
        from: String,
        to: String,
        sha256: String,
        name: String,
    },
    StateChanged {
        from: Option<String>,
        to: String,
    },
    PollFailed {
        error: String,
    },
    PollRecovered,
    Reloaded {
        ok: bool,
        detail: String,
    },
    Paused {
        reason: String,
    },
    Resumed,
    Storage {
        ok: bool,
        detail: String,
    },
}

/// A task's row, snapshot and settled run (everything but the counted files).
pub fn encode_task(record: &Record) -> Vec<u8> {
    let row = &record.row;
    let stored = StoredTask {
        last_poll: row.last_poll.map(millis),
        last_success: row.last_success.map(millis),
        up: row.up,
        status: row.last_status,
        error: row.last_error.as_deref().map(str::to_string),
        life: row.life.as_deref().map(life_out),
        snapshot: row.snapshot.as_deref().map(snapshot_out),
        settled_for: record.settled_for.as_deref().map(str::to_string),
    };
    serde_json::to_vec(&stored).unwrap_or_default()
}

/// [`encode_task`] read back, with the counted files decoded apart.
pub fn decode_task(bytes: &[u8], seen: Option<Seen>) -> Result<Record, DecodeError> {
    let stored: StoredTask = serde_json::from_slice(bytes)?;
    Ok(Record {
        row: TaskRow {
            last_poll: stored.last_poll.map(from_millis),
            last_success: stored.last_success.map(from_millis),
            up: stored.up,
            last_status: stored.status,
            last_error: stored.error.map(Arc::from),
            snapshot: stored.snapshot.map(|s| Arc::new(snapshot_in(s))),
            life: stored.life.map(|l| Arc::new(life_in(l))),
        },
        seen: seen.map(Arc::new),
        settled_for: stored.settled_for.map(String::into_boxed_str),
    })
}

/// The counted files: per file its identity, zone, first-seen time and rule identities, as
/// little-endian integers.
pub fn encode_seen(seen: &Seen) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + seen.len() * 24);
    out.extend_from_slice(&(seen.len() as u32).to_le_bytes());
    for (key, file) in seen {
        out.extend_from_slice(&key.to_le_bytes());
        out.push(file.zone.index() as u8);
        out.extend_from_slice(&file.first_seen.to_le_bytes());
        out.extend_from_slice(&(file.rules.len() as u32).to_le_bytes());
        for rule in &file.rules {
            out.extend_from_slice(&rule.to_le_bytes());
        }
    }
    out
}

pub fn decode_seen(bytes: &[u8]) -> Result<Seen, DecodeError> {
    let mut r = Reader(bytes);
    let files = r.u32()? as usize;
    // A count is trusted only as far as the bytes behind it go.
    let mut seen = HashMap::with_capacity(files.min(bytes.len() / 21));
    for _ in 0..files {
        let key = r.u64()?;
        let zone = DangerZone::ALL
            .get(usize::from(r.u8()?))
            .copied()
            .unwrap_or(DangerZone::Unknown);
        let first_seen = r.u64()?;
        let n = r.u32()? as usize;
        if n > r.0.len() / 8 {
            return Err(DecodeError::Truncated);
        }
        let rules = (0..n).map(|_| r.u64()).collect::<Result<Vec<_>, _>>()?;
        seen.insert(
            key,
            SeenFile {
                zone,
                rules,
                first_seen,
            },
        );
    }
    Ok(seen)
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(DecodeError::Truncated)?;
        self.0 = rest;
        Ok(*head)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take()?))
    }
}

pub fn encode_listed(listed: &Listed) -> Vec<u8> {
    serde_json::to_vec(&StoredListed {
        name: listed.name.clone(),
        life: life_out(&listed.life),
    })
    .unwrap_or_default()
}

pub fn decode_listed(id: TaskId, bytes: &[u8]) -> Result<Listed, DecodeError> {
    let stored: StoredListed = serde_json::from_slice(bytes)?;
    Ok(Listed {
        id,
        name: stored.name,
        life: life_in(stored.life),
    })
}

pub fn encode_event(event: &Event) -> Vec<u8> {
    let zone = |z: DangerZone| z.as_str().to_string();
    let strings = |v: &[Box<str>]| v.iter().map(|s| s.to_string()).collect();
    let kind = match &event.kind {
        EventKind::NewFile {
            zone: z,
            sha256,
            name,
            rules,
        } => StoredKind::NewFile {
            zone: zone(*z),
            sha256: sha256.to_string(),
            name: name.to_string(),
            rules: strings(rules),
        },
        EventKind::ZoneChanged {
            from,
            to,
            sha256,
            name,
        } => StoredKind::ZoneChanged {
            from: zone(*from),
            to: zone(*to),
            sha256: sha256.to_string(),
            name: name.to_string(),
        },
        EventKind::StateChanged { from, to } => StoredKind::StateChanged {
            from: from.map(|s| s.as_str().to_string()),
            to: to.as_str().to_string(),
        },
        EventKind::PollFailed { error } => StoredKind::PollFailed {
            error: error.to_string(),
        },
        EventKind::PollRecovered => StoredKind::PollRecovered,
        EventKind::Reloaded { ok, detail } => StoredKind::Reloaded {
            ok: *ok,
            detail: detail.to_string(),
        },
        EventKind::Paused { reason } => StoredKind::Paused {
            reason: reason.to_string(),
        },
        EventKind::Resumed => StoredKind::Resumed,
        EventKind::Storage { ok, detail } => StoredKind::Storage {
            ok: *ok,
            detail: detail.to_string(),
        },
    };
    serde_json::to_vec(&StoredEvent {
        at: event.at,
        task: event.task.as_ref().map(|t| t.as_str().to_string()),
        kind,
    })
    .unwrap_or_default()
}

pub fn decode_event(id: u64, bytes: &[u8]) -> Result<Event, DecodeError> {
    let stored: StoredEvent = serde_json::from_slice(bytes)?;
    let zone = |s: &str| DangerZone::parse_lenient(s);
    let boxed = |v: Vec<String>| v.into_iter().map(String::into_boxed_str).collect();
    let kind = match stored.kind {
        StoredKind::NewFile {
            zone: z,
            sha256,
            name,
            rules,
        } => EventKind::NewFile {
            zone: zone(&z),
            sha256: sha256.into(),
            name: name.into(),
            rules: boxed(rules),
        },
        StoredKind::ZoneChanged {
            from,
            to,
            sha256,
            name,
        } => EventKind::ZoneChanged {
            from: zone(&from),
            to: zone(&to),
            sha256: sha256.into(),
            name: name.into(),
        },
        StoredKind::StateChanged { from, to } => EventKind::StateChanged {
            from: from.as_deref().map(TaskState::parse),
            to: TaskState::parse(&to),
        },
        StoredKind::PollFailed { error } => EventKind::PollFailed {
            error: error.into(),
        },
        StoredKind::PollRecovered => EventKind::PollRecovered,
        StoredKind::Reloaded { ok, detail } => EventKind::Reloaded {
            ok,
            detail: detail.into(),
        },
        StoredKind::Paused { reason } => EventKind::Paused {
            reason: reason.into(),
        },
        StoredKind::Resumed => EventKind::Resumed,
        StoredKind::Storage { ok, detail } => EventKind::Storage {
            ok,
            detail: detail.into(),
        },
    };
    Ok(Event {
        id,
        at: stored.at,
        task: stored.task.and_then(|t| TaskId::parse(&t).ok()),
        kind,
    })
}

/// One hour's new files: six little-endian counts.
pub fn encode_hour(hour: &Hour) -> Vec<u8> {
    hour.files.iter().flat_map(|n| n.to_le_bytes()).collect()
}

pub fn decode_hour(hour: u64, bytes: &[u8]) -> Result<Hour, DecodeError> {
    let mut r = Reader(bytes);
    let mut files = [0; 6];
    for n in &mut files {
        *n = r.u64()?;
    }
    Ok(Hour { hour, files })
}

fn life_out(life: &TaskLife) -> StoredLife {
    StoredLife {
        state: life.state.as_str().to_string(),
        result_id: life.result_id.to_string(),
        created: life.created.map(millis),
        processed: life.processed.map(millis),
        zone: life.zone.as_str().to_string(),
        verdict: life.verdict.to_string(),
    }
}

fn life_in(life: StoredLife) -> TaskLife {
    TaskLife {
        state: TaskState::parse(&life.state),
        result_id: life.result_id.into(),
        created: life.created.map(from_millis),
        processed: life.processed.map(from_millis),
        zone: DangerZone::parse_lenient(&life.zone),
        verdict: life.verdict.into(),
    }
}

fn snapshot_out(s: &Snapshot) -> StoredSnapshot {
    StoredSnapshot {
        zones: s.zones,
        bytes: s.bytes,
        https: s.https,
        yara: s.yara.clone(),
        detections: s.detections.clone(),
        files: s
            .files
            .iter()
            .map(|f| {
                (
                    f.zone.as_str().to_string(),
                    f.sha256.clone(),
                    f.name.clone(),
                    f.file_type.clone(),
                )
            })
            .collect(),
        files_dropped: s.files_dropped,
        skipped_records: s.skipped_records,
        details: s
            .details
            .iter()
            .map(|d| StoredDetail {
                key: d.key,
                zone: d.zone.as_str().to_string(),
                sha256: d.sha256.to_string(),
                name: d.name.to_string(),
                size: d.size,
                file_type: d.file_type.to_string(),
                https: d.https,
                detections: d.detections.iter().map(|s| s.to_string()).collect(),
                rules: d.rules.iter().map(|s| s.to_string()).collect(),
                first_seen: d.first_seen,
            })
            .collect(),
    }
}

fn snapshot_in(s: StoredSnapshot) -> Snapshot {
    let boxed = |v: Vec<String>| v.into_iter().map(String::into_boxed_str).collect();
    Snapshot {
        zones: s.zones,
        bytes: s.bytes,
        https: s.https,
        yara: s.yara,
        detections: s.detections,
        files: s
            .files
            .into_iter()
            .map(|(zone, sha256, name, file_type)| FileInfo {
                zone: DangerZone::parse_lenient(&zone),
                sha256,
                name,
                file_type,
            })
            .collect(),
        files_dropped: s.files_dropped,
        skipped_records: s.skipped_records,
        details: s
            .details
            .into_iter()
            .map(|d| FileDetail {
                key: d.key,
                zone: DangerZone::parse_lenient(&d.zone),
                sha256: d.sha256.into(),
                name: d.name.into(),
                size: d.size,
                file_type: d.file_type.into(),
                https: d.https,
                detections: boxed(d.detections),
                rules: boxed(d.rules),
                first_seen: d.first_seen,
            })
            .collect(),
    }
}

fn millis(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn from_millis(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        let mut seen = Seen::new();
        seen.insert(
            7,
            SeenFile {
                zone: DangerZone::Red,
                rules: vec![1, 2],
                first_seen: 1_764_000_000,
            },
        );
        Record {
            row: TaskRow {
                last_poll: Some(from_millis(1_764_000_000_250)),
                last_success: Some(from_millis(1_764_000_000_250)),
                up: true,
                last_status: Some(200),
                last_error: None,
                snapshot: Some(Arc::new(Snapshot {
                    zones: [1, 0, 0, 0, 0, 0],
                    bytes: 10,
                    yara: vec![("r".into(), 1)],
                    details: vec![FileDetail {
                        key: 7,
                        zone: DangerZone::Red,
                        sha256: "ab".into(),
                        name: "<x>".into(),
                        size: 10,
                        file_type: "exe".into(),
                        https: true,
                        detections: Box::new(["HEUR:x".into()]),
                        rules: Box::new(["r".into()]),
                        first_seen: 1_764_000_000,
                    }],
                    ..Snapshot::default()
                })),
                life: Some(Arc::new(TaskLife {
                    state: TaskState::Completed,
                    result_id: "r1".into(),
                    created: Some(from_millis(1_763_999_000_000)),
                    processed: None,
                    zone: DangerZone::Red,
                    verdict: "Malware".into(),
                })),
            },
            seen: Some(Arc::new(seen)),
            settled_for: Some("r1".into()),
        }
    }

    #[test]
    fn a_task_record_reads_back_as_it_was_written() {
        let record = record();
        let seen = decode_seen(&encode_seen(record.seen.as_deref().unwrap())).unwrap();
        let back = decode_task(&encode_task(&record), Some(seen)).unwrap();
        assert_eq!(back, record);
    }

    #[test]
    fn the_encoding_of_a_task_record_is_the_one_schema_2_defines() {
        // Changing this text changes the file format: bump `SCHEMA` and add a migration.
        let text = String::from_utf8(encode_task(&record())).unwrap();
        assert_eq!(
            text,
            r#"{"last_poll":1764000000250,"last_success":1764000000250,"up":true,"status":200,"error":null,"life":{"state":"completed","result_id":"r1","created":1763999000000,"processed":null,"zone":"Red","verdict":"Malware"},"snapshot":{"zones":[1,0,0,0,0,0],"bytes":10,"https":0,"yara":[["r",1]],"detections":[],"files":[],"files_dropped":0,"skipped_records":0,"details":[{"key":7,"zone":"Red","sha256":"ab","name":"<x>","size":10,"file_type":"exe","https":true,"detections":["HEUR:x"],"rules":["r"],"first_seen":1764000000}]},"settled_for":"r1"}"#
        );
    }

    #[test]
    fn a_truncated_or_lying_set_of_counted_files_is_an_error_not_a_huge_allocation() {
        let bytes = encode_seen(record().seen.as_deref().unwrap());
        for cut in 0..bytes.len() {
            assert!(decode_seen(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut lying = u32::MAX.to_le_bytes().to_vec();
        lying.extend_from_slice(&[0; 8]);
        assert!(decode_seen(&lying).is_err());
    }

    #[test]
    fn every_kind_of_event_reads_back_as_it_was_written() {
        let task = TaskId::parse("0d5b4e44-4c0e-4f0b-9a57-3f2d1b9e6c71").ok();
        let kinds = [
            EventKind::NewFile {
                zone: DangerZone::Red,
                sha256: "aa".into(),
                name: "<script>".into(),
                rules: Box::new(["r".into()]),
            },
            EventKind::ZoneChanged {
                from: DangerZone::Grey,
                to: DangerZone::Red,
                sha256: "aa".into(),
                name: "n".into(),
            },
            EventKind::StateChanged {
                from: Some(TaskState::Processing),
                to: TaskState::Completed,
            },
            EventKind::PollFailed {
                error: "HTTP 500".into(),
            },
            EventKind::PollRecovered,
            EventKind::Reloaded {
                ok: false,
                detail: "bad".into(),
            },
            EventKind::Paused {
                reason: "unavailable".into(),
            },
            EventKind::Resumed,
            EventKind::Storage {
                ok: true,
                detail: "written".into(),
            },
        ];
        for (i, kind) in kinds.into_iter().enumerate() {
            let event = Event {
                id: i as u64 + 1,
                at: 1_764_000_000,
                task: task.clone(),
                kind,
            };
            assert_eq!(
                decode_event(event.id, &encode_event(&event)).unwrap(),
                event
            );
        }
        let hour = Hour {
            hour: 490_000,
            files: [1, 2, 3, 4, 5, 6],
        };
        assert_eq!(decode_hour(hour.hour, &encode_hour(&hour)).unwrap(), hour);
    }
}

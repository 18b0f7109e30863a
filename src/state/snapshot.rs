//! Digesting one successful response into a [`Snapshot`] (counted, cleaned, capped), and
//! telling what it adds to the fleet counters against the files seen before. All of it is
//! linear in the records and their values, and runs before the state's lock is taken.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::OnceLock;

use super::{FileDetail, FileInfo, NewActivity, SeenFile, Snapshot};
use crate::labels::{self, OTHER};
use crate::sandbox::decode::Decoded;
use crate::sandbox::Download;
use crate::zone::DangerZone;

use super::Limits;

/// Rules present at a task's baseline poll: their series start at 0 (within the fleet cap).
pub(super) fn baseline_rules(
    rule_labels: &HashMap<u64, String>,
    fleet_rules: &mut HashSet<String>,
    cap: usize,
) -> NewActivity {
    let mut known: Vec<String> = rule_labels.values().cloned().collect();
    known.sort_unstable();
    known.dedup();
    known.retain(|rule| {
        fleet_rules.contains(rule.as_str())
            || (fleet_rules.len() < cap && fleet_rules.insert(rule.clone()))
    });
    NewActivity {
        known_rules: known,
        ..NewActivity::default()
    }
}

/// Which files a poll's new counts came from, by [`file_key`]: found under the lock, turned
/// into hashes after it ([`Counted::resolve`]).
#[derive(Default)]
pub(super) struct Counted {
    /// One per entry of [`NewActivity::downloads`].
    pub downloads: Vec<u64>,
    /// One per entry of [`NewActivity::yara_hits`].
    pub yara_hits: Vec<u64>,
    /// The response's records, moved out of the decoded body (and dropped outside the lock).
    pub files: Vec<Download>,
}

impl Counted {
    /// Fills `activity`'s file hashes, cleaned and cut to `max` characters. One pass over the
    /// response, only for a poll that counted something.
    pub(super) fn resolve(self, activity: &mut NewActivity, max: usize) {
        let wanted: HashSet<u64> = self
            .downloads
            .iter()
            .chain(&self.yara_hits)
            .copied()
            .collect();
        let mut found: HashMap<u64, (String, String)> = HashMap::with_capacity(wanted.len());
        for file in &self.files {
            let key = file_key(file);
            if wanted.contains(&key) {
                found.entry(key).or_insert_with(|| {
                    (
                        labels::clean(&file.sha256, max),
                        labels::clean(&file.name, MAX_NAME_CHARS),
                    )
                });
            }
        }
        let sha = |key: &u64| found.get(key).map(|f| f.0.clone()).unwrap_or_default();
        activity.download_files = self.downloads.iter().map(sha).collect();
        activity.download_names = self
            .downloads
            .iter()
            .map(|key| found.get(key).map(|f| f.1.clone()).unwrap_or_default())
            .collect();
        activity.yara_files = self.yara_hits.iter().map(sha).collect();
    }
}

/// Files and (file, rule) matches of `current` that `previous` did not have, with the keys of
/// the files they came from; rules beyond the fleet cap are counted under [`OTHER`]. Linear
/// in the files and rules of both polls.
pub(super) fn new_activity(
    current: &HashMap<u64, SeenFile>,
    rule_labels: &HashMap<u64, String>,
    previous: &HashMap<u64, SeenFile>,
    fleet_rules: &mut HashSet<String>,
    cap: usize,
) -> (NewActivity, Counted) {
    let mut downloads: Vec<(DangerZone, u64, Option<DangerZone>)> = Vec::new();
    let mut hits: Vec<(String, u64)> = Vec::new();
    let label = |hash: &u64| rule_labels.get(hash).cloned();
    for (key, new) in current {
        match previous.get(key) {
            None => {
                downloads.push((new.zone, *key, None));
                hits.extend(new.rules.iter().filter_map(label).map(|r| (r, *key)));
            }
            Some(old) => {
                if old.zone != new.zone {
                    downloads.push((new.zone, *key, Some(old.zone)));
                }
                for hash in &new.rules {
                    if old.rules.binary_search(hash).is_err() {
                        hits.extend(label(hash).map(|r| (r, *key)));
                    }
                }
            }
        }
    }
    // The files come out of a hash map: a stable order keeps logs and tests repeatable.
    downloads.sort_unstable();
    hits.sort_unstable();
    for (rule, _) in &mut hits {
        if !fleet_rules.contains(rule.as_str()) {
            if fleet_rules.len() < cap {
                fleet_rules.insert(rule.clone());
            } else {
                *rule = OTHER.to_string();
            }
        }
    }
    let mut zones = Vec::with_capacity(downloads.len());
    let mut download_keys = Vec::with_capacity(downloads.len());
    let mut previous_zones = Vec::with_capacity(downloads.len());
    for (zone, key, before) in downloads {
        zones.push(zone);
        download_keys.push(key);
        previous_zones.push(before);
    }
    let (rules, hit_keys) = hits.into_iter().unzip();
    let activity = NewActivity {
        downloads: zones,
        previous_zones,
        yara_hits: rules,
        ..NewActivity::default()
    };
    let counted = Counted {
        downloads: download_keys,
        yara_hits: hit_keys,
        files: Vec::new(),
    };
    (activity, counted)
}

/// A successful response digested outside the lock.
pub(super) struct Prepared {
    pub snapshot: Snapshot,
    /// One entry per distinct file of the response (a file listed twice is one file).
    pub seen: HashMap<u64, SeenFile>,
    /// Hash of a raw rule name → its label value, for every rule of the response.
    pub rule_labels: HashMap<u64, String>,
    /// The records themselves, for the hashes of newly counted files ([`Counted`]).
    pub files: Vec<Download>,
}

/// Counts, cleans and caps one response. Linear in the records and their values: each file
/// keeps at most `max_label_values` distinct rules and detections (the rest as one
/// [`OTHER`]), and at most `max_file_info_series` files get an info series, Red first.
pub(super) fn prepare(decoded: &Decoded, limits: &Limits) -> Prepared {
    let max = limits.max_label_length;
    let per_file = limits.max_label_values;
    let mut snapshot = Snapshot::default();
    let mut yara: HashMap<String, u64> = HashMap::new();
    let mut detections: HashMap<String, u64> = HashMap::new();
    let mut seen: HashMap<u64, SeenFile> = HashMap::with_capacity(decoded.files.len());
    let mut rule_labels: HashMap<u64, String> = HashMap::new();
    let mut labels_of_file: Vec<String> = Vec::new();
    let mut details: Vec<FileDetail> = Vec::new();
    for file in &decoded.files {
        snapshot.zones[file.zone.index()] += 1;
        snapshot.bytes = snapshot.bytes.saturating_add(file.size);
        snapshot.https += u64::from(file.is_https);
        let key = file_key(file);
        let entry = seen.entry(key).or_insert(SeenFile {
            zone: file.zone,
            rules: Vec::new(),
            first_seen: 0,
        });
        entry.zone = file.zone;
        if details.len() < MAX_DETAILS {
            details.push(detail(file, key, max));
        }
        // Distinct rules of this record (the decoder already removed exact duplicates).
        for (i, rule) in file.yara_rules.iter().enumerate() {
            let name = if i < per_file { rule.as_str() } else { OTHER };
            let hash = hash_of(name);
            let label = rule_labels
                .entry(hash)
                .or_insert_with(|| labels::clean(name, max));
            entry.rules.push(hash);
            labels_of_file.push(label.clone());
            if i >= per_file {
                break;
            }
        }
        // Two raw names can clean to one label: count the file once per label.
        labels_of_file.sort_unstable();
        labels_of_file.dedup();
        for label in labels_of_file.drain(..) {
            *yara.entry(label).or_default() += 1;
        }
        let mut file_detections: Vec<String> = file
            .detection_names
            .iter()
            .take(per_file)
            .map(|d| labels::clean(d, max))
            .collect();
        if file.detection_names.len() > per_file {
            file_detections.push(OTHER.to_string());
        }
        file_detections.sort_unstable();
        file_detections.dedup();
        for d in file_detections {
            *detections.entry(d).or_default() += 1;
        }
        if limits.file_info_zones[file.zone.index()] {
            snapshot.files.push(FileInfo {
                zone: file.zone,
                sha256: labels::clean(&file.sha256, max),
                name: labels::clean(&file.name, max),
                file_type: labels::clean(&file.file_type, max),
            });
        }
    }
    for file in seen.values_mut() {
        file.rules.sort_unstable();
        file.rules.dedup();
    }
    for (zone, cut) in decoded.report.cut_zones.iter().enumerate() {
        snapshot.zones[zone] += cut;
    }
    snapshot.skipped_records = decoded.report.skipped_total();
    snapshot.yara = cap_values(yara, limits.max_label_values);
    snapshot.detections = cap_values(detections, limits.max_label_values);
    snapshot
        .files
        .sort_by(|a, b| (a.zone, &a.sha256, &a.name).cmp(&(b.zone, &b.sha256, &b.name)));
    snapshot.files.dedup();
    if snapshot.files.len() > limits.max_file_info_series {
        snapshot.files_dropped = (snapshot.files.len() - limits.max_file_info_series) as u64;
        snapshot.files.truncate(limits.max_file_info_series);
    }
    // A file listed twice is one file; the most dangerous first, then by name.
    details.sort_by(|a, b| (a.zone, &a.name, a.key).cmp(&(b.zone, &b.name, b.key)));
    details.dedup_by_key(|d| d.key);
    snapshot.details = details;
    Prepared {
        snapshot,
        seen,
        rule_labels,
        files: Vec::new(),
    }
}

/// Files listed per task for the task page at most (the decoder already keeps the most
/// dangerous first when a response is cut).
pub const MAX_DETAILS: usize = 1_000;

/// A file name shown on the task page: longer than a label value, still bounded.
pub const MAX_NAME_CHARS: usize = 256;

/// Detections and rules listed per file on the task page.
const MAX_FILE_VALUES: usize = 16;

fn detail(file: &Download, key: u64, max: usize) -> FileDetail {
    let values = |list: &[String]| -> Box<[Box<str>]> {
        list.iter()
            .take(MAX_FILE_VALUES)
            .map(|v| labels::clean(v, max).into_boxed_str())
            .collect()
    };
    FileDetail {
        key,
        zone: file.zone,
        sha256: labels::clean(&file.sha256, 128).into(),
        name: labels::clean(&file.name, MAX_NAME_CHARS).into(),
        size: file.size,
        file_type: labels::clean(&file.file_type, max).into(),
        https: file.is_https,
        detections: values(&file.detection_names),
        rules: values(&file.yara_rules),
        first_seen: 0,
    }
}

/// Keeps the `max` values with the most files (ties by name) and sums the rest under
/// [`OTHER`]; the result is sorted by value for stable output.
pub(super) fn cap_values(values: HashMap<String, u64>, max: usize) -> Vec<(String, u64)> {
    let mut values: Vec<(String, u64)> = values.into_iter().collect();
    if values.len() > max {
        values.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let other: u64 = values[max..].iter().map(|(_, n)| n).sum();
        values.truncate(max);
        match values.iter_mut().find(|(v, _)| v == OTHER) {
            Some(existing) => existing.1 += other,
            None => values.push((OTHER.to_string(), other)),
        }
    }
    values.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    values
}

/// A file's identity within its task: its SHA-256, or its name and size when the hash is empty.
/// Keyed with a secret (random, and kept in the store so that identities survive a restart), so
/// a file name chosen by malware cannot be made to collide with another file's identity and
/// pass as already counted.
pub(super) fn file_key(file: &Download) -> u64 {
    let mut h = hasher();
    if file.sha256.is_empty() {
        1u8.hash(&mut h);
        file.name.hash(&mut h);
        file.size.hash(&mut h);
    } else {
        0u8.hash(&mut h);
        file.sha256.hash(&mut h);
    }
    h.finish()
}

fn hash_of(s: &str) -> u64 {
    let mut h = hasher();
    s.hash(&mut h);
    h.finish()
}

/// The identity key; set once, before any poll (by the store that keeps it), else random.
static KEY: OnceLock<[u64; 2]> = OnceLock::new();

/// Makes `key` the identity key, unless identities were already made with another one.
/// Returns the key in use.
pub fn set_identity_key(key: [u64; 2]) -> [u64; 2] {
    *KEY.get_or_init(|| key)
}

/// The key in use, made at random now if none was set: the key a new store keeps.
pub fn identity_key() -> [u64; 2] {
    *KEY.get_or_init(random_identity_key)
}

/// A fresh random key, from the standard library's own random seeding.
pub fn random_identity_key() -> [u64; 2] {
    use std::hash::{BuildHasher, RandomState};
    let state = RandomState::new();
    [state.hash_one(1u8), state.hash_one(2u8)]
}

// SipHash-2-4 with a chosen key: the standard library's keyed hasher (deprecated only in favour
// of external crates, which would add a dependency for twelve lines).
#[allow(deprecated)]
fn hasher() -> std::hash::SipHasher {
    let [k0, k1] = *KEY.get_or_init(random_identity_key);
    std::hash::SipHasher::new_with_keys(k0, k1)
}

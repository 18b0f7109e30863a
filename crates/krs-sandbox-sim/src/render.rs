//! JSON bodies: download records in every spelling a task's [`ResponseFormat`] asks for and the
//! sandbox's error documents (the lifecycle endpoints' bodies are in `records`).
//!
//! Everything goes through `serde_json`, so hostile file names are escaped correctly.

use std::time::Duration;

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

use super::scenario::{ErrorBody, KeyCase, ResponseFormat, Shape, SimFile};

/// Record keys in the order the vendor's example lists them, per [`KeyCase`].
const PASCAL_KEYS: Keys = [
    "Zone",
    "Md5",
    "Sha1",
    "Sha256",
    "DetectionNames",
    "Name",
    "Size",
    "Type",
    "IsHttpsTraffic",
    "TriggeredYaraRules",
];
const LOWER_KEYS: Keys = [
    "zone",
    "md5",
    "sha1",
    "sha256",
    "detectionnames",
    "name",
    "size",
    "type",
    "ishttpstraffic",
    "triggeredyararules",
];
const UPPER_KEYS: Keys = [
    "ZONE",
    "MD5",
    "SHA1",
    "SHA256",
    "DETECTIONNAMES",
    "NAME",
    "SIZE",
    "TYPE",
    "ISHTTPSTRAFFIC",
    "TRIGGEREDYARARULES",
];

type Keys = [&'static str; 10];

/// One file as the sandbox would write it.
struct Record<'a> {
    file: &'a SimFile,
    zone: &'a str,
    format: ResponseFormat,
    served_at_ms: Option<u128>,
}

/// YARA rule names written as `{"Name": rule}` objects.
struct YaraObjects<'a> {
    rules: &'a [String],
    name_key: &'static str,
}

/// `{"Name": rule}`.
struct NamedRule<'a> {
    key: &'static str,
    rule: &'a str,
}

/// The `wrapped` shape: records under the first (only) array property.
#[derive(Serialize)]
struct Wrapped<'a> {
    #[serde(rename = "Downloads")]
    downloads: &'a [Record<'a>],
}

/// The downloads body for the files visible `elapsed` after start; `None` means an empty body.
pub(super) fn downloads(
    files: &[SimFile],
    format: ResponseFormat,
    elapsed: Duration,
) -> Option<Vec<u8>> {
    let records: Vec<Record<'_>> = files
        .iter()
        .filter(|f| f.after <= elapsed)
        .map(|file| Record {
            file,
            zone: file.zone_at(elapsed),
            format,
            served_at_ms: format.served_at.then_some(elapsed.as_millis()),
        })
        .collect();
    let json = match format.shape {
        Shape::Array => serde_json::to_vec(&records),
        Shape::Object => match records.first() {
            Some(first) => serde_json::to_vec(first),
            None => Ok(b"{}".to_vec()),
        },
        Shape::Wrapped => serde_json::to_vec(&Wrapped {
            downloads: &records,
        }),
        Shape::NullWhenEmpty if records.is_empty() => Ok(b"null".to_vec()),
        Shape::EmptyWhenEmpty if records.is_empty() => return None,
        Shape::NullWhenEmpty | Shape::EmptyWhenEmpty => serde_json::to_vec(&records),
    };
    Some(json.expect("serialising strings, numbers and bools to a Vec cannot fail"))
}

/// `{"code":…,"message":…,"meta":…}`.
pub(super) fn error(body: &ErrorBody) -> Vec<u8> {
    serde_json::to_vec(body).expect("serialising strings and numbers to a Vec cannot fail")
}

impl Serialize for Record<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let keys = match self.format.key_case {
            KeyCase::Pascal => &PASCAL_KEYS,
            KeyCase::Lower => &LOWER_KEYS,
            KeyCase::Upper => &UPPER_KEYS,
        };
        let [zone, md5, sha1, sha256, detections, name, size, file_type, https, yara] = *keys;
        let f = self.file;
        let zone_value = if self.format.gray_spelling && Zone::parse(self.zone) == Zone::Grey {
            "Gray"
        } else {
            self.zone
        };
        let extra = usize::from(self.served_at_ms.is_some());
        let mut map = serializer.serialize_map(Some(keys.len() + extra))?;
        map.serialize_entry(zone, zone_value)?;
        map.serialize_entry(md5, f.md5.as_deref().unwrap_or_default())?;
        map.serialize_entry(sha1, f.sha1.as_deref().unwrap_or_default())?;
        map.serialize_entry(sha256, f.sha256.as_deref().unwrap_or_default())?;
        map.serialize_entry(detections, &f.detections)?;
        map.serialize_entry(name, &f.name)?;
        if self.format.size_as_string {
            map.serialize_entry(size, &f.size.to_string())?;
        } else {
            map.serialize_entry(size, &f.size)?;
        }
        map.serialize_entry(file_type, &f.file_type)?;
        map.serialize_entry(https, &f.https)?;
        if self.format.yara_as_objects {
            map.serialize_entry(
                yara,
                &YaraObjects {
                    rules: &f.yara,
                    name_key: name,
                },
            )?;
        } else {
            map.serialize_entry(yara, &f.yara)?;
        }
        if let Some(ms) = self.served_at_ms {
            map.serialize_entry("ServedAtMs", &ms)?;
        }
        map.end()
    }
}

impl Serialize for YaraObjects<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.rules.len()))?;
        for rule in self.rules {
            seq.serialize_element(&NamedRule {
                key: self.name_key,
                rule,
            })?;
        }
        seq.end()
    }
}

impl Serialize for NamedRule<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(self.key, self.rule)?;
        map.end()
    }
}

/// A file's zone as the sandbox grades it, most dangerous first (the simulator's own reading of
/// its scenario's zone strings: case-insensitive, `Gray` for `Grey`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Zone {
    Red,
    Orange,
    Yellow,
    Grey,
    Green,
    Unknown,
}

impl Zone {
    pub(super) fn parse(s: &str) -> Zone {
        match s.trim().to_ascii_lowercase().as_str() {
            "red" => Zone::Red,
            "orange" => Zone::Orange,
            "yellow" => Zone::Yellow,
            "grey" | "gray" => Zone::Grey,
            "green" => Zone::Green,
            _ => Zone::Unknown,
        }
    }

    /// A completed task's `Status` when its worst file is in this zone.
    pub(super) fn verdict(self) -> &'static str {
        match self {
            Zone::Red => "Malware",
            Zone::Orange => "Not trusted",
            Zone::Yellow => "NotAVirus",
            Zone::Green => "Clean",
            Zone::Grey | Zone::Unknown => "Unknown",
        }
    }

    pub(super) fn as_str(self) -> &'static str {
        match self {
            Zone::Red => "Red",
            Zone::Orange => "Orange",
            Zone::Yellow => "Yellow",
            Zone::Grey => "Grey",
            Zone::Green => "Green",
            Zone::Unknown => "Unknown",
        }
    }
}

//! Decoding of the sandbox's JSON bodies: a task's downloaded-file records and error bodies.
//!
//! The vendor documents neither body precisely, so decoding is liberal about shape and field
//! types. The file names in a body are chosen by the malware being detonated, so the decoder's
//! first rule is that **one record never hides another**: a body is decoded record by record
//! (`scan` finds each element without building a document), a record the decoder cannot
//! understand is skipped and counted, and every other record is exported. Nothing here panics on
//! any input or recurses on the body's nesting, work is linear in the body, and no error message
//! quotes the body.
//!
//! # Downloads bodies
//! A leading UTF-8 BOM is skipped first. Only a body whose structure around the records (the
//! brackets, commas and keys that hold them) is not JSON, or that holds no records array, is an
//! error ([`DecodeError`]); what happens inside one record concerns that record only.
//!
//! | body | result |
//! |---|---|
//! | empty or JSON whitespace only, `null`, `{}` | no files |
//! | an array | its elements are the records; `null` elements are skipped; any other non-object element is skipped and counted ([`SkipReason::NotAnObject`]) |
//! | an object with at least one record key (`Zone`, `Md5`, …, any case, any value) | that one record; its other keys are ignored, arrays included |
//! | an object with no record key | a wrapper: the first array (of its properties, or of objects nested in it up to 4 levels) whose elements carry a record key holds the records, so `{"Errors":[],"Meta":[{…}],"Downloads":[…]}` finds the downloads; failing that, an empty array means no files |
//! | anything else: a scalar, or an object with neither record keys nor such an array | [`DecodeError::Shape`] |
//!
//! # One record
//! Each element is parsed strictly first. If that fails it is repaired (`repair`) and parsed
//! once more: bytes that are not UTF-8 and lone UTF-16 surrogate escapes (`"x\ud800y.txt"`,
//! legal in NTFS names) become U+FFFD, raw control characters are escaped, and numbers no float
//! holds (`1e400`, `NaN`, `Infinity`) become 0; each repair is counted ([`RepairKind`]). A record
//! still unreadable (say, `{"Name" "x"}`) is skipped ([`SkipReason::Unreadable`]).
//!
//! At most `max_records` records are kept (`sandbox.max_records`). Past it, a record of a more
//! dangerous zone replaces a kept one of the least dangerous zone, so a flood of junk records
//! cannot push out a Red file; the records cut are counted ([`SkipReason::OverLimit`]) with their
//! zones, which still count in the task's zone counts. Each list value (`DetectionNames`,
//! `TriggeredYaraRules`) is kept once, at most [`MAX_LIST_VALUES`] distinct ones per record.
//!
//! # Record fields
//! - Keys match ASCII case-insensitively; unknown keys are ignored.
//! - A value that is `null`, missing or of an unusable type gives the field's default. For a key
//!   that appears more than once (in any casing) the first usable value wins.
//! - `Zone` goes through [`DangerZone::parse_lenient`]. Hashes are trimmed and ASCII-lowercased.
//!   `Name` and `Type` are kept as received (after the repairs above): escaping is the
//!   renderers' job.
//! - `Size`: a non-negative integer, a numeric string (`"1024"`, surrounding whitespace allowed)
//!   or an integral float (`1024.0`, `"1e3"`); negative, fractional, non-finite, beyond `u64` or
//!   otherwise garbage gives 0.
//! - `IsHttpsTraffic`: a boolean, the strings `true`/`false`/`1`/`0` (any case, trimmed) or the
//!   numbers 1/0; anything else is false.
//! - `DetectionNames`: the string elements, in order; other elements are skipped; a bare string
//!   is a one-element list.
//! - `TriggeredYaraRules`: a string element is a rule name; an object element gives the string
//!   value of its first key (in object order) named `Name`, `RuleName` or `Rule` (any case);
//!   other elements and objects without such a name are skipped; a bare string is one rule.
//!
//! # Error bodies
//! `{"code": 29, "message": "bad task id", "meta": "..."}`: see [`decode_api_error`].

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::OnceLock;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::labels::OTHER;
use crate::zone::DangerZone;
pub use repair::RepairKind;

pub mod lifecycle;
mod repair;
mod scan;

/// One file that a detonated object downloaded, as the sandbox reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Download {
    /// Danger level; [`DangerZone::Unknown`] when missing or unrecognised.
    pub zone: DangerZone,
    /// Hashes as lowercase hex (not validated: whatever the sandbox sent, trimmed).
    pub md5: String,
    pub sha1: String,
    pub sha256: String,
    /// Verdicts such as `HEUR:Exploit.Script.Blocker`.
    pub detection_names: Vec<String>,
    /// File name chosen by the malware: hostile, kept exactly as received.
    pub name: String,
    /// Size in bytes; 0 when missing, negative or unparsable.
    pub size: u64,
    /// File type, free text (JSON key `Type`).
    pub file_type: String,
    /// The file was extracted from HTTPS traffic (JSON key `IsHttpsTraffic`).
    pub is_https: bool,
    /// Names of the YARA rules that matched (JSON key `TriggeredYaraRules`).
    pub yara_rules: Vec<String>,
}

/// Why a downloads body could not be decoded. Messages never quote the body.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not UTF-8 JSON; carries the parser's fixed description and position.
    #[error("response is not valid JSON: {0}")]
    Json(String),
    /// Valid JSON of a shape that holds no records (see the module docs).
    #[error("unexpected JSON shape: {0}")]
    Shape(String),
}

/// The sandbox's error body, `{"code": ..., "message": ..., "meta": ...}`.
///
/// Every string is trimmed, non-empty and at most [`MAX_API_TEXT_CHARS`] characters; it is still
/// untrusted text to escape before display.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// Error id; numbers are rendered in decimal (`6`, `29`).
    pub code: Option<String>,
    pub message: Option<String>,
    pub meta: Option<String>,
}

/// The longest `ApiError` string kept, in characters; longer ones are cut at a char boundary.
pub const MAX_API_TEXT_CHARS: usize = 1024;

/// A decoded downloads body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    /// The records kept, in body order.
    pub files: Vec<Download>,
    pub report: DecodeReport,
}

/// What decoding a body had to leave out or mend. Indexed by [`SkipReason::index`] and
/// [`RepairKind::index`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecodeReport {
    pub skipped: [u64; SkipReason::ALL.len()],
    pub repaired: [u64; RepairKind::ALL.len()],
    /// Zones of the records cut by the record cap, by [`DangerZone::index`]: not in `files`,
    /// but counted in the task's zone counts so that those stay exact.
    pub cut_zones: [u64; 6],
}

/// Why a record was not exported (the `reason` label of `krs_api_skipped_records_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// An array element that is a string, number, boolean or array.
    NotAnObject,
    /// An object that stayed unreadable after repair (nesting beyond 128 levels, say).
    Unreadable,
    /// Beyond `sandbox.max_records`; the least dangerous zones are cut first.
    OverLimit,
}

impl SkipReason {
    pub const ALL: [SkipReason; 3] = [
        SkipReason::NotAnObject,
        SkipReason::Unreadable,
        SkipReason::OverLimit,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            SkipReason::NotAnObject => "not_an_object",
            SkipReason::Unreadable => "unreadable",
            SkipReason::OverLimit => "over_limit",
        }
    }

    pub const fn index(self) -> usize {
        self as usize
    }
}

impl DecodeReport {
    /// Records left out, for every reason.
    pub fn skipped_total(&self) -> u64 {
        self.skipped.iter().sum()
    }
}

/// Most distinct values kept in one record's `DetectionNames` or `TriggeredYaraRules` (the
/// largest `metrics.max_label_values`); further distinct values are kept as one
/// [`crate::labels::OTHER`], so a 300k-rule record costs a hash per rule and no more memory.
pub const MAX_LIST_VALUES: usize = 10_000;

impl Default for Download {
    fn default() -> Self {
        Download {
            zone: DangerZone::Unknown,
            md5: String::new(),
            sha1: String::new(),
            sha256: String::new(),
            detection_names: Vec::new(),
            name: String::new(),
            size: 0,
            file_type: String::new(),
            is_https: false,
            yara_rules: Vec::new(),
        }
    }
}

/// Decodes the body of `GET tasks/{id}/downloads`: its records in body order (at most
/// `max_records`, see [`Decoded`]) and what had to be skipped or repaired to read them.
pub fn decode_downloads(body: &[u8], max_records: usize) -> Result<Decoded, DecodeError> {
    let mut out = Collector::new(max_records);
    for_each_element(body, &DOWNLOAD_KEYS, |element| out.element(element))?;
    Ok(out.finish())
}

/// Calls `each` with the exact bytes of every record element of a records body (a leading
/// BOM skipped; an object with one of `keys` is a record, see [`scan`]). Errors name what was
/// expected and where, never the body's content.
fn for_each_element(
    body: &[u8],
    keys: &[&str],
    mut each: impl FnMut(&[u8]),
) -> Result<(), DecodeError> {
    let text = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let syntax_error = |e: scan::SyntaxError| {
        DecodeError::Json(format!(
            "expected {} at byte {}",
            e.expected,
            e.at + (body.len() - text.len())
        ))
    };
    match scan::locate(text, keys).map_err(syntax_error)? {
        scan::Located::Empty => {}
        scan::Located::Shape(message) => return Err(DecodeError::Shape(message.to_owned())),
        scan::Located::Record(record) => each(record),
        scan::Located::Array(array) => {
            for element in scan::elements(array) {
                each(element.map_err(syntax_error)?);
            }
        }
    }
    Ok(())
}
/// Decodes an error body. `None` unless the body is a JSON object with a usable `code` or
/// `message` (keys in any case; a number, string or boolean is usable, an empty string is not).
pub fn decode_api_error(body: &[u8]) -> Option<ApiError> {
    let text = json_text(body).ok()?;
    let mut de = serde_json::Deserializer::from_str(text);
    let error = Any(ApiBody).deserialize(&mut de).ok()??;
    de.end().ok()?;
    (error.code.is_some() || error.message.is_some()).then_some(error)
}

/// Decodes elements one at a time and keeps at most `max` records: past the cap, a record of
/// a more dangerous zone replaces the latest kept record of the least dangerous zone, so junk
/// records placed before a Red file cannot push it out.
struct Collector {
    max: usize,
    /// (body position, record) per zone, by [`DangerZone::index`].
    kept: [Vec<(usize, Download)>; 6],
    len: usize,
    seen: usize,
    report: DecodeReport,
}

impl Collector {
    fn new(max: usize) -> Self {
        Collector {
            max,
            kept: Default::default(),
            len: 0,
            seen: 0,
            report: DecodeReport::default(),
        }
    }

    /// One element's exact bytes.
    fn element(&mut self, bytes: &[u8]) {
        match decode_record(bytes, &mut self.report.repaired) {
            Ok(Some(record)) => self.keep(record),
            Ok(None) => {}
            Err(reason) => self.report.skipped[reason.index()] += 1,
        }
    }

    fn keep(&mut self, record: Download) {
        let position = self.seen;
        self.seen += 1;
        let zone = record.zone.index();
        if self.len < self.max {
            self.kept[zone].push((position, record));
            self.len += 1;
            return;
        }
        self.report.skipped[SkipReason::OverLimit.index()] += 1;
        let least = (zone + 1..self.kept.len())
            .rev()
            .find(|&z| !self.kept[z].is_empty());
        match least {
            Some(least) => {
                self.kept[least].pop();
                self.report.cut_zones[least] += 1;
                self.kept[zone].push((position, record));
            }
            None => self.report.cut_zones[zone] += 1,
        }
    }

    fn finish(self) -> Decoded {
        let mut files: Vec<(usize, Download)> = self.kept.into_iter().flatten().collect();
        files.sort_unstable_by_key(|(position, _)| *position);
        Decoded {
            files: files.into_iter().map(|(_, record)| record).collect(),
            report: self.report,
        }
    }
}

/// One element: a record, `None` for `null`, or why it was skipped. A record the strict
/// parse refuses is repaired (`repair`) and parsed once more.
fn decode_record(
    bytes: &[u8],
    repaired: &mut [u64; RepairKind::ALL.len()],
) -> Result<Option<Download>, SkipReason> {
    mend(bytes, repaired, parse_record)
}

/// One element parsed by `parse`: `None` for `null`, an error for a non-object. Text that is
/// not UTF-8 becomes U+FFFD; an object the strict parse refuses is repaired ([`repair`]) and
/// parsed once more, its repairs counted only if that succeeds.
fn mend<T>(
    bytes: &[u8],
    repaired: &mut [u64; RepairKind::ALL.len()],
    parse: impl Fn(&str) -> Result<T, ()>,
) -> Result<Option<T>, SkipReason> {
    match bytes.first() {
        Some(b'{') => {}
        _ if bytes == b"null" => return Ok(None),
        _ => return Err(SkipReason::NotAnObject),
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => {
            repaired[RepairKind::InvalidUtf8.index()] += 1;
            String::from_utf8_lossy(bytes)
        }
    };
    if let Ok(record) = parse(&text) {
        return Ok(Some(record));
    }
    let mut fixes = [0u64; RepairKind::ALL.len()];
    let mended = repair::repair(&text, |kind| fixes[kind.index()] += 1);
    let record = parse(&mended).map_err(|()| SkipReason::Unreadable)?;
    for (total, n) in repaired.iter_mut().zip(fixes) {
        *total += n;
    }
    Ok(Some(record))
}

fn parse_record(text: &str) -> Result<Download, ()> {
    let mut de = serde_json::Deserializer::from_str(text);
    let record = Any(Element).deserialize(&mut de).map_err(drop)?;
    de.end().map_err(drop)?;
    match record {
        Ok(Some(record)) => Ok(record),
        _ => Err(()),
    }
}

/// A JSON value as seen by a field that wants a scalar; compounds have already been skipped.
enum Scalar<'de> {
    Null,
    Bool(bool),
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    Text(Cow<'de, str>),
    SkippedArray,
    SkippedObject,
}

/// Record keys, matched ASCII case-insensitively.
#[derive(Clone, Copy)]
enum Field {
    Zone,
    Md5,
    Sha1,
    Sha256,
    DetectionNames,
    Name,
    Size,
    Type,
    IsHttpsTraffic,
    TriggeredYaraRules,
}

const RECORD_KEYS: &[(&str, Field)] = &[
    ("Zone", Field::Zone),
    ("Md5", Field::Md5),
    ("Sha1", Field::Sha1),
    ("Sha256", Field::Sha256),
    ("DetectionNames", Field::DetectionNames),
    ("Name", Field::Name),
    ("Size", Field::Size),
    ("Type", Field::Type),
    ("IsHttpsTraffic", Field::IsHttpsTraffic),
    ("TriggeredYaraRules", Field::TriggeredYaraRules),
];

/// The names of [`RECORD_KEYS`]: an object carrying one of them is a downloads record.
const DOWNLOAD_KEYS: [&str; 10] = {
    let mut names = [""; 10];
    let mut i = 0;
    while i < RECORD_KEYS.len() {
        names[i] = RECORD_KEYS[i].0;
        i += 1;
    }
    names
};

#[derive(Clone, Copy)]
enum ApiField {
    Code,
    Message,
    Meta,
}

const API_KEYS: &[(&str, ApiField)] = &[
    ("code", ApiField::Code),
    ("message", ApiField::Message),
    ("meta", ApiField::Meta),
];

/// Keys under which an object element of `TriggeredYaraRules` may carry the rule's name.
const YARA_NAME_KEYS: &[(&str, ())] = &[("Name", ()), ("RuleName", ()), ("Rule", ())];

/// A record's fields as read so far; `None` means no usable value yet.
#[derive(Default)]
struct RecordBuilder {
    zone: Option<DangerZone>,
    md5: Option<String>,
    sha1: Option<String>,
    sha256: Option<String>,
    detection_names: Option<Vec<String>>,
    name: Option<String>,
    size: Option<u64>,
    file_type: Option<String>,
    is_https: Option<bool>,
    yara_rules: Option<Vec<String>>,
}

impl RecordBuilder {
    /// Reads the value of `field` from `map`, unless an earlier duplicate already filled it.
    fn read<'de, A: MapAccess<'de>>(&mut self, field: Field, map: &mut A) -> Result<(), A::Error> {
        match field {
            Field::Zone => fill(&mut self.zone, map, Plain, |v| {
                v.text().map(|s| DangerZone::parse_lenient(&s))
            }),
            Field::Md5 => fill(&mut self.md5, map, Plain, hash),
            Field::Sha1 => fill(&mut self.sha1, map, Plain, hash),
            Field::Sha256 => fill(&mut self.sha256, map, Plain, hash),
            Field::DetectionNames => fill(&mut self.detection_names, map, StringList, |v| v),
            Field::Name => fill(&mut self.name, map, Plain, |v| {
                v.text().map(Cow::into_owned)
            }),
            Field::Size => fill(&mut self.size, map, Plain, size),
            Field::Type => fill(&mut self.file_type, map, Plain, |v| {
                v.text().map(Cow::into_owned)
            }),
            Field::IsHttpsTraffic => fill(&mut self.is_https, map, Plain, flag),
            Field::TriggeredYaraRules => fill(&mut self.yara_rules, map, YaraList, |v| v),
        }
    }

    fn finish(self) -> Download {
        Download {
            zone: self.zone.unwrap_or(DangerZone::Unknown),
            md5: self.md5.unwrap_or_default(),
            sha1: self.sha1.unwrap_or_default(),
            sha256: self.sha256.unwrap_or_default(),
            detection_names: self.detection_names.unwrap_or_default(),
            name: self.name.unwrap_or_default(),
            size: self.size.unwrap_or(0),
            file_type: self.file_type.unwrap_or_default(),
            is_https: self.is_https.unwrap_or(false),
            yara_rules: self.yara_rules.unwrap_or_default(),
        }
    }
}

impl<'de> Scalar<'de> {
    fn text(self) -> Option<Cow<'de, str>> {
        match self {
            Scalar::Text(s) => Some(s),
            _ => None,
        }
    }

    /// How a shape error names this value: a kind, never the content.
    fn kind(&self) -> &'static str {
        match self {
            Scalar::Null => "null",
            Scalar::Bool(_) => "a boolean",
            Scalar::Unsigned(_) | Scalar::Signed(_) | Scalar::Float(_) => "a number",
            Scalar::Text(_) => "a string",
            Scalar::SkippedArray => "an array",
            Scalar::SkippedObject => "an object",
        }
    }
}

/// Decides what one JSON value means in some position. [`Any`] routes every serde visit here,
/// so each position states what it accepts and nothing falls through to serde's type errors.
/// Compound values a handler does not want are skipped without recursion.
trait Handler<'de>: Sized {
    type Out;

    fn scalar(self, value: Scalar<'de>) -> Self::Out;

    fn seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Out, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(self.scalar(Scalar::SkippedArray))
    }

    fn map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Out, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(self.scalar(Scalar::SkippedObject))
    }
}

/// Adapts a [`Handler`] to serde: deserializes any JSON value and hands it over.
struct Any<H>(H);

impl<'de, H: Handler<'de>> DeserializeSeed<'de> for Any<H> {
    type Value = H::Out;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<H::Out, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, H: Handler<'de>> Visitor<'de> for Any<H> {
    type Value = H::Out;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<H::Out, E> {
        Ok(self.0.scalar(Scalar::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<H::Out, E> {
        Ok(self.0.scalar(Scalar::Signed(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<H::Out, E> {
        Ok(self.0.scalar(Scalar::Unsigned(v)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<H::Out, E> {
        Ok(self.0.scalar(Scalar::Float(v)))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<H::Out, E> {
        Ok(self.0.scalar(Scalar::Text(Cow::Borrowed(v))))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<H::Out, E> {
        Ok(self.0.scalar(Scalar::Text(Cow::Owned(v.to_owned()))))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<H::Out, E> {
        Ok(self.0.scalar(Scalar::Text(Cow::Owned(v))))
    }

    fn visit_unit<E: de::Error>(self) -> Result<H::Out, E> {
        Ok(self.0.scalar(Scalar::Null))
    }

    fn visit_none<E: de::Error>(self) -> Result<H::Out, E> {
        Ok(self.0.scalar(Scalar::Null))
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<H::Out, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<H::Out, A::Error> {
        self.0.seq(seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<H::Out, A::Error> {
        self.0.map(map)
    }
}

/// Matches an object key ASCII case-insensitively against a table; `None` for other keys.
struct KeySeed<T: 'static>(&'static [(&'static str, T)]);

impl<'de, T: Copy> DeserializeSeed<'de> for KeySeed<T> {
    type Value = Option<T>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<T>, D::Error> {
        deserializer.deserialize_identifier(self)
    }
}

impl<'de, T: Copy> Visitor<'de> for KeySeed<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Option<T>, E> {
        // The documented spelling first: one length check rules out most names, where the
        // case-insensitive comparison walks every byte.
        let exact = self.0.iter().find(|(name, _)| *name == key);
        Ok(exact
            .or_else(|| {
                self.0
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(key))
            })
            .map(|&(_, value)| value))
    }
}

/// Any value, as a [`Scalar`].
struct Plain;

impl<'de> Handler<'de> for Plain {
    type Out = Scalar<'de>;

    fn scalar(self, value: Scalar<'de>) -> Scalar<'de> {
        value
    }
}

/// One element of a records array: a record, `None` for null, or the kind of anything else.
struct Element;

impl<'de> Handler<'de> for Element {
    type Out = Result<Option<Download>, &'static str>;

    fn scalar(self, value: Scalar<'de>) -> Self::Out {
        match value {
            Scalar::Null => Ok(None),
            other => Err(other.kind()),
        }
    }

    fn map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Out, A::Error> {
        let mut record = RecordBuilder::default();
        while let Some(key) = map.next_key_seed(KeySeed(RECORD_KEYS))? {
            match key {
                Some(field) => record.read(field, &mut map)?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Ok(Some(record.finish())))
    }
}

/// `DetectionNames`: the string elements of an array, or a bare string.
struct StringList;

impl<'de> Handler<'de> for StringList {
    type Out = Option<Vec<String>>;

    fn scalar(self, value: Scalar<'de>) -> Self::Out {
        value.text().map(|s| vec![s.into_owned()])
    }

    fn seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Out, A::Error> {
        let mut names = Distinct::default();
        while let Some(value) = seq.next_element_seed(Any(Plain))? {
            if let Some(name) = value.text() {
                names.push(name);
            }
        }
        Ok(Some(names.finish()))
    }
}

/// A list's distinct values in first-seen order, at most [`MAX_LIST_VALUES`] of them plus one
/// [`OTHER`] for the rest. Duplicates are found by a keyed hash, so the cost is linear and a
/// crafted list cannot make two names collide.
#[derive(Default)]
struct Distinct {
    values: Vec<String>,
    seen: HashSet<u64>,
    overflow: bool,
}

impl Distinct {
    fn push(&mut self, value: Cow<'_, str>) {
        static KEY: OnceLock<RandomState> = OnceLock::new();
        let hash = KEY.get_or_init(RandomState::new).hash_one(value.as_ref());
        if self.seen.contains(&hash) {
            return;
        }
        if self.values.len() < MAX_LIST_VALUES {
            self.seen.insert(hash);
            self.values.push(value.into_owned());
        } else {
            self.overflow = true;
        }
    }

    fn finish(mut self) -> Vec<String> {
        if self.overflow {
            self.values.push(OTHER.to_owned());
        }
        self.values
    }
}

/// `TriggeredYaraRules`: rule names from string or object elements, or a bare string.
struct YaraList;

impl<'de> Handler<'de> for YaraList {
    type Out = Option<Vec<String>>;

    fn scalar(self, value: Scalar<'de>) -> Self::Out {
        value.text().map(|s| vec![s.into_owned()])
    }

    fn seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Out, A::Error> {
        let mut rules = Distinct::default();
        while let Some(rule) = seq.next_element_seed(Any(YaraRule))? {
            if let Some(rule) = rule {
                rules.push(Cow::Owned(rule));
            }
        }
        Ok(Some(rules.finish()))
    }
}

/// One element of `TriggeredYaraRules`.
struct YaraRule;

impl<'de> Handler<'de> for YaraRule {
    type Out = Option<String>;

    fn scalar(self, value: Scalar<'de>) -> Self::Out {
        value.text().map(Cow::into_owned)
    }

    fn map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Out, A::Error> {
        let mut name = None;
        while let Some(key) = map.next_key_seed(KeySeed(YARA_NAME_KEYS))? {
            if key.is_some() && name.is_none() {
                name = map.next_value_seed(Any(Plain))?.text().map(Cow::into_owned);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(name)
    }
}

/// An error body: `Some` for any object (usability is checked by the caller).
struct ApiBody;

impl<'de> Handler<'de> for ApiBody {
    type Out = Option<ApiError>;

    fn scalar(self, _: Scalar<'de>) -> Self::Out {
        None
    }

    fn map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Out, A::Error> {
        let mut error = ApiError {
            code: None,
            message: None,
            meta: None,
        };
        while let Some(key) = map.next_key_seed(KeySeed(API_KEYS))? {
            let slot = match key {
                Some(ApiField::Code) => &mut error.code,
                Some(ApiField::Message) => &mut error.message,
                Some(ApiField::Meta) => &mut error.meta,
                None => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            fill(slot, &mut map, Plain, api_text)?;
        }
        Ok(Some(error))
    }
}

/// Reads the next map value through `handler` into `slot` unless `slot` is already filled
/// (then the value is skipped): the first usable value of a duplicated key wins.
fn fill<'de, A, H, T>(
    slot: &mut Option<T>,
    map: &mut A,
    handler: H,
    convert: impl FnOnce(H::Out) -> Option<T>,
) -> Result<(), A::Error>
where
    A: MapAccess<'de>,
    H: Handler<'de>,
{
    if slot.is_some() {
        map.next_value::<IgnoredAny>()?;
    } else {
        *slot = convert(map.next_value_seed(Any(handler))?);
    }
    Ok(())
}

fn hash(value: Scalar<'_>) -> Option<String> {
    value.text().map(|s| s.trim().to_ascii_lowercase())
}

fn size(value: Scalar<'_>) -> Option<u64> {
    match value {
        Scalar::Unsigned(n) => Some(n),
        Scalar::Signed(n) => u64::try_from(n).ok(),
        Scalar::Float(f) => integral_size(f),
        Scalar::Text(s) => {
            let s = s.trim();
            s.parse::<u64>()
                .ok()
                .or_else(|| s.parse::<f64>().ok().and_then(integral_size))
        }
        _ => None,
    }
}

/// A float that is exactly a byte count; `None` for fractions, negatives, NaN and overflow.
fn integral_size(f: f64) -> Option<u64> {
    // 2^64 is exactly representable; every integral float below it converts without loss.
    const LIMIT: f64 = 18_446_744_073_709_551_616.0;
    ((0.0..LIMIT).contains(&f) && f.fract() == 0.0).then_some(f as u64)
}

fn flag(value: Scalar<'_>) -> Option<bool> {
    match value {
        Scalar::Bool(b) => Some(b),
        Scalar::Unsigned(1) | Scalar::Signed(1) => Some(true),
        Scalar::Unsigned(0) | Scalar::Signed(0) => Some(false),
        Scalar::Text(s) => {
            let s = s.trim();
            if s.eq_ignore_ascii_case("true") || s == "1" {
                Some(true)
            } else if s.eq_ignore_ascii_case("false") || s == "0" {
                Some(false)
            } else {
                None
            }
        }
        _ => None,
    }
}

/// An error-body field as bounded text; numbers and booleans in their JSON spelling.
fn api_text(value: Scalar<'_>) -> Option<String> {
    // `1e300` prints as 301 digits, so numbers are bounded too.
    let text = match value {
        Scalar::Text(s) => bounded(s.trim()),
        Scalar::Unsigned(n) => n.to_string(),
        Scalar::Signed(n) => n.to_string(),
        Scalar::Float(f) => bounded(&f.to_string()),
        Scalar::Bool(b) => b.to_string(),
        Scalar::Null | Scalar::SkippedArray | Scalar::SkippedObject => return None,
    };
    (!text.is_empty()).then_some(text)
}

/// At most [`MAX_API_TEXT_CHARS`] characters of `s`, cut at a char boundary.
fn bounded(s: &str) -> String {
    match s.char_indices().nth(MAX_API_TEXT_CHARS) {
        Some((end, _)) => s[..end].trim_end().to_owned(),
        None => s.to_owned(),
    }
}

/// The body as UTF-8 text without a leading BOM. Checking UTF-8 up front covers strings that
/// serde_json would skip without validating (in ignored fields).
fn json_text(body: &[u8]) -> Result<&str, DecodeError> {
    let (offset, rest) = match body.strip_prefix(b"\xEF\xBB\xBF") {
        Some(rest) => (3, rest),
        None => (0, body),
    };
    std::str::from_utf8(rest).map_err(|e| {
        DecodeError::Json(format!(
            "invalid UTF-8 at byte {}",
            offset + e.valid_up_to()
        ))
    })
}

#[cfg(test)]
mod tests;

//! Decoding of the sandbox's JSON bodies: a task's downloaded-file records and error bodies.
//!
//! The vendor documents neither body precisely (see `spec/sandbox-api.md`), so decoding is
//! liberal about shape and field types and strict about two things only: the body is UTF-8 JSON,
//! and it has one of the shapes below. Nothing here panics on any input, nothing recurses deeper
//! than serde_json's nesting limit (128), and no error message quotes the body: file names and
//! verdicts are chosen by malware.
//!
//! # Downloads bodies
//! A leading UTF-8 BOM is skipped first.
//!
//! | body | result |
//! |---|---|
//! | empty or JSON whitespace only, `null`, `{}` | no files |
//! | an array | its elements are the records; `null` elements are skipped, any other non-object element is a shape error |
//! | an object with at least one record key (`Zone`, `Md5`, …, any case, any value) | that one record; its other keys are ignored, arrays included |
//! | an object with no record key | a wrapper: the first property whose value is an array of objects (nulls allowed, `[]` counts and means no files) holds the records; properties holding anything else are skipped |
//! | anything else: a scalar, or an object with neither record keys nor such an array | [`DecodeError::Shape`] |
//!
//! # Record fields
//! - Keys match ASCII case-insensitively; unknown keys are ignored.
//! - A value that is `null`, missing or of an unusable type gives the field's default. For a key
//!   that appears more than once (in any casing) the first usable value wins.
//! - `Zone` goes through [`DangerZone::parse_lenient`]. Hashes are trimmed and ASCII-lowercased.
//!   `Name` and `Type` are kept byte for byte: escaping is the renderers' job.
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
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::error::Category;

use crate::zone::DangerZone;

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

/// Decodes the body of `GET tasks/{id}/downloads` into its records, in body order.
pub fn decode_downloads(body: &[u8]) -> Result<Vec<Download>, DecodeError> {
    let text = json_text(body)?;
    if text
        .bytes()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        return Ok(Vec::new());
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let body = Any(TopLevel).deserialize(&mut de).map_err(json_error)?;
    de.end().map_err(json_error)?;
    match body {
        Body::Empty => Ok(Vec::new()),
        Body::Records(records) => Ok(records),
        Body::Shape(message) => Err(DecodeError::Shape(message)),
    }
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

/// What a downloads body turned out to be.
enum Body {
    Empty,
    Records(Vec<Download>),
    Shape(String),
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
        Ok(self
            .0
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(key))
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

/// The whole downloads body.
struct TopLevel;

impl<'de> Handler<'de> for TopLevel {
    type Out = Body;

    fn scalar(self, value: Scalar<'de>) -> Body {
        match value {
            Scalar::Null => Body::Empty,
            other => Body::Shape(format!(
                "the body is {}, not an array or object of records",
                other.kind()
            )),
        }
    }

    fn seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Body, A::Error> {
        Ok(match read_records(seq)? {
            Ok(records) => Body::Records(records),
            Err(bad) => Body::Shape(format!(
                "element {} of the records array is {}, not an object",
                bad.index, bad.kind
            )),
        })
    }

    fn map<A: MapAccess<'de>>(self, mut map: A) -> Result<Body, A::Error> {
        let mut record = RecordBuilder::default();
        let mut is_record = false;
        let mut wrapped: Option<Vec<Download>> = None;
        let mut is_empty = true;
        while let Some(key) = map.next_key_seed(KeySeed(RECORD_KEYS))? {
            is_empty = false;
            match key {
                Some(field) => {
                    is_record = true;
                    record.read(field, &mut map)?;
                }
                // Record keys win over a wrapper array, so once one is seen, arrays are skipped.
                None if !is_record && wrapped.is_none() => {
                    wrapped = map.next_value_seed(Any(WrappedRecords))?;
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(if is_record {
            Body::Records(vec![record.finish()])
        } else if let Some(records) = wrapped {
            Body::Records(records)
        } else if is_empty {
            Body::Empty
        } else {
            Body::Shape("an object with no record keys and no array of records".to_owned())
        })
    }
}

/// A wrapper property's value: records if it is an array of objects, else `None`.
struct WrappedRecords;

impl<'de> Handler<'de> for WrappedRecords {
    type Out = Option<Vec<Download>>;

    fn scalar(self, _: Scalar<'de>) -> Self::Out {
        None
    }

    fn seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Out, A::Error> {
        Ok(read_records(seq)?.ok())
    }
}

/// An element that is not an object (or null) where records were expected.
struct BadElement {
    index: usize,
    kind: &'static str,
}

/// Reads an array of records; stops decoding at the first bad element but consumes the rest.
fn read_records<'de, A: SeqAccess<'de>>(
    mut seq: A,
) -> Result<Result<Vec<Download>, BadElement>, A::Error> {
    let mut records = Vec::new();
    let mut index = 0;
    while let Some(element) = seq.next_element_seed(Any(Element))? {
        match element {
            Ok(Some(record)) => records.push(record),
            Ok(None) => {}
            Err(kind) => {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                return Ok(Err(BadElement { index, kind }));
            }
        }
        index += 1;
    }
    Ok(Ok(records))
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
        let mut names = Vec::new();
        while let Some(value) = seq.next_element_seed(Any(Plain))? {
            names.extend(value.text().map(Cow::into_owned));
        }
        Ok(Some(names))
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
        let mut rules = Vec::new();
        while let Some(rule) = seq.next_element_seed(Any(YaraRule))? {
            rules.extend(rule);
        }
        Ok(Some(rules))
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

/// Syntax and EOF errors carry fixed texts plus a position; data errors can quote input, so
/// they are replaced by a position only (none is expected: every handler accepts every type).
fn json_error(err: serde_json::Error) -> DecodeError {
    match err.classify() {
        Category::Syntax | Category::Eof => DecodeError::Json(err.to_string()),
        Category::Data | Category::Io => DecodeError::Json(format!(
            "unreadable value at line {} column {}",
            err.line(),
            err.column()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Map, Value};

    fn decode(body: &str) -> Vec<Download> {
        decode_downloads(body.as_bytes()).expect("test body decodes")
    }

    fn one(body: &str) -> Download {
        let mut records = decode(body);
        assert_eq!(records.len(), 1, "expected one record from {body}");
        records.remove(0)
    }

    fn api(body: &str) -> Option<ApiError> {
        decode_api_error(body.as_bytes())
    }

    const FULL: &str = r#"{"Zone":"Red","Md5":"AB","Sha1":"CD","Sha256":"EF",
        "DetectionNames":["Trojan.X"],"Name":"a.exe","Size":10,"Type":"PE",
        "IsHttpsTraffic":true,"TriggeredYaraRules":["r1"]}"#;

    fn full() -> Download {
        Download {
            zone: DangerZone::Red,
            md5: "ab".into(),
            sha1: "cd".into(),
            sha256: "ef".into(),
            detection_names: vec!["Trojan.X".into()],
            name: "a.exe".into(),
            size: 10,
            file_type: "PE".into(),
            is_https: true,
            yara_rules: vec!["r1".into()],
        }
    }

    #[test]
    fn an_array_of_records_decodes_in_order() {
        let records = decode(&format!(r#"[{FULL}, {{"Zone":"Green"}}]"#));
        assert_eq!(records.len(), 2);
        assert_eq!(records[0], full());
        assert_eq!(records[1].zone, DangerZone::Green);
    }

    #[test]
    fn an_empty_array_means_no_files() {
        assert_eq!(decode("[]"), vec![]);
    }

    #[test]
    fn a_single_record_object_is_one_file() {
        assert_eq!(one(FULL), full());
    }

    #[test]
    fn the_vendor_example_decodes_as_one_grey_record() {
        let record = one(
            r#"{ "Zone": "Grey", "Md5": "string", "Sha1": "string", "Sha256": "string",
            "DetectionNames": [], "Name": "string", "Size": 0, "Type": "string",
            "IsHttpsTraffic": false, "TriggeredYaraRules": [] }"#,
        );
        assert_eq!(record.zone, DangerZone::Grey);
        assert_eq!(record.name, "string");
        assert!(record.detection_names.is_empty() && record.yara_rules.is_empty());
    }

    #[test]
    fn a_wrapper_object_with_key_downloads_holds_the_records() {
        let records = decode(&format!(r#"{{"Total":1,"Downloads":[{FULL}]}}"#));
        assert_eq!(records, vec![full()]);
    }

    #[test]
    fn a_wrapper_object_with_another_key_holds_the_records() {
        let records = decode(&format!(r#"{{"items":[{FULL}, null]}}"#));
        assert_eq!(records, vec![full()]);
    }

    #[test]
    fn a_wrapper_with_an_empty_array_means_no_files() {
        assert_eq!(decode(r#"{"data":[]}"#), vec![]);
        assert_eq!(decode(r#"{"data":[],"other":[{"Zone":"Red"}]}"#), vec![]);
    }

    #[test]
    fn a_wrapper_skips_arrays_that_do_not_hold_objects() {
        let records = decode(r#"{"tags":["x",1],"files":[{"Zone":"Yellow"}]}"#);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].zone, DangerZone::Yellow);
    }

    #[test]
    fn record_keys_win_over_a_wrapper_array() {
        let record = one(r#"{"Extra":[{"Zone":"Red"}],"Zone":"Green"}"#);
        assert_eq!(record.zone, DangerZone::Green);
    }

    #[test]
    fn a_record_with_only_null_values_is_still_a_record() {
        assert_eq!(one(r#"{"Zone":null}"#), Download::default());
    }

    #[test]
    fn null_empty_object_and_empty_bodies_mean_no_files() {
        for body in [
            "null",
            "{}",
            "",
            " \n\t\r ",
            " null ",
            "\u{feff}",
            "\u{feff}[]",
        ] {
            assert_eq!(decode(body), vec![], "body {body:?}");
        }
    }

    #[test]
    fn a_leading_byte_order_mark_is_tolerated() {
        assert_eq!(one(&format!("\u{feff}{FULL}")), full());
    }

    #[test]
    fn null_elements_of_a_records_array_are_skipped() {
        assert_eq!(decode(&format!("[null,{FULL},null]")), vec![full()]);
    }

    #[test]
    fn keys_match_in_any_case() {
        let record = one(
            r#"{"MD5":"AA","sha1":"BB","SHA256":"CC","zone":"red","ISHTTPSTRAFFIC":true,
            "detectionnames":["D"],"NAME":"n","size":5,"TYPE":"t","triggeredYARArules":["y"]}"#,
        );
        assert_eq!(record.md5, "aa");
        assert_eq!(record.sha1, "bb");
        assert_eq!(record.sha256, "cc");
        assert_eq!(record.zone, DangerZone::Red);
        assert!(record.is_https);
        assert_eq!(record.detection_names, ["D"]);
        assert_eq!((record.name.as_str(), record.size), ("n", 5));
        assert_eq!(record.file_type, "t");
        assert_eq!(record.yara_rules, ["y"]);
    }

    #[test]
    fn unknown_keys_are_ignored_whatever_they_hold() {
        let record = one(r#"{"Zone":"Red","Future":{"a":[1,{"b":null}]},"More":[[]]}"#);
        assert_eq!(record.zone, DangerZone::Red);
    }

    #[test]
    fn the_first_usable_value_of_a_duplicated_key_wins() {
        let record = one(r#"{"Md5":null,"MD5":"aa","md5":"bb","Size":"x","SIZE":7,"size":8}"#);
        assert_eq!(record.md5, "aa");
        assert_eq!(record.size, 7);
    }

    #[test]
    fn gray_is_grey_and_zones_ignore_case() {
        assert_eq!(one(r#"{"Zone":"Gray"}"#).zone, DangerZone::Grey);
        assert_eq!(one(r#"{"Zone":"oRaNgE"}"#).zone, DangerZone::Orange);
    }

    #[test]
    fn unknown_missing_and_non_string_zones_are_unknown() {
        for body in [
            r#"{"Zone":"Purple"}"#,
            r#"{"Zone":""}"#,
            r#"{"Zone":3}"#,
            r#"{"Md5":"a"}"#,
        ] {
            assert_eq!(one(body).zone, DangerZone::Unknown, "body {body}");
        }
    }

    #[test]
    fn hashes_are_trimmed_and_lowercased() {
        let record = one(r#"{"Md5":" D41D8CD98F00B204E9800998ECF8427E\n"}"#);
        assert_eq!(record.md5, "d41d8cd98f00b204e9800998ecf8427e");
    }

    #[test]
    fn names_are_kept_exactly_as_received() {
        let record = one(r#"{"Name":" <b>\"x\u0000\n.exe ","Type":" PE32 "}"#);
        assert_eq!(record.name, " <b>\"x\u{0}\n.exe ");
        assert_eq!(record.file_type, " PE32 ");
    }

    #[test]
    fn null_and_missing_arrays_are_empty() {
        let record = one(r#"{"DetectionNames":null,"TriggeredYaraRules":null,"Zone":"Red"}"#);
        assert!(record.detection_names.is_empty() && record.yara_rules.is_empty());
        assert!(one(r#"{"Zone":"Red"}"#).yara_rules.is_empty());
    }

    #[test]
    fn non_string_detection_names_are_skipped() {
        let record = one(r#"{"DetectionNames":["a",1,null,{"x":"y"},["b"],true,"c"]}"#);
        assert_eq!(record.detection_names, ["a", "c"]);
        assert_eq!(
            one(r#"{"DetectionNames":"solo"}"#).detection_names,
            ["solo"]
        );
        assert!(one(r#"{"DetectionNames":{"a":"b"}}"#)
            .detection_names
            .is_empty());
    }

    #[test]
    fn size_accepts_integers_numeric_strings_and_integral_floats() {
        let cases = [
            ("1024", 1024),
            (r#""1024""#, 1024),
            (r#"" 77 ""#, 77),
            ("1.0", 1),
            ("1e3", 1000),
            (r#""2.0""#, 2),
            ("18446744073709551615", u64::MAX),
        ];
        for (value, expected) in cases {
            assert_eq!(
                one(&format!(r#"{{"Size":{value}}}"#)).size,
                expected,
                "{value}"
            );
        }
    }

    #[test]
    fn size_is_zero_when_negative_fractional_huge_or_garbage() {
        for value in [
            "-1",
            "-0.5",
            "1.5",
            "1e300",
            "18446744073709551616",
            r#""-5""#,
            r#""12kb""#,
            r#""NaN""#,
            r#""inf""#,
            r#""""#,
            "true",
            "[1]",
            "null",
        ] {
            assert_eq!(one(&format!(r#"{{"Size":{value}}}"#)).size, 0, "{value}");
        }
    }

    #[test]
    fn is_https_accepts_booleans_strings_and_zero_one() {
        let cases = [
            ("true", true),
            ("false", false),
            (r#""true""#, true),
            (r#"" FALSE ""#, false),
            (r#""1""#, true),
            ("1", true),
            ("0", false),
            ("null", false),
            (r#""yes""#, false),
            ("2", false),
        ];
        for (value, expected) in cases {
            let record = one(&format!(r#"{{"IsHttpsTraffic":{value}}}"#));
            assert_eq!(record.is_https, expected, "{value}");
        }
        assert!(!one(r#"{"Zone":"Red"}"#).is_https);
    }

    #[test]
    fn yara_rules_may_be_strings() {
        let record = one(r#"{"TriggeredYaraRules":["APT_Rule","Other"]}"#);
        assert_eq!(record.yara_rules, ["APT_Rule", "Other"]);
    }

    #[test]
    fn yara_rules_may_be_objects_named_under_any_of_the_documented_keys() {
        for key in ["Name", "RuleName", "name", "rule", "RULE", "rulename"] {
            let body = format!(r#"{{"TriggeredYaraRules":[{{"Id":4,"{key}":"R_{key}"}}]}}"#);
            assert_eq!(one(&body).yara_rules, [format!("R_{key}")], "key {key}");
        }
    }

    #[test]
    fn yara_rule_objects_take_the_first_string_name_and_odd_elements_are_skipped() {
        let record = one(
            r#"{"TriggeredYaraRules":[{"Name":5,"Rule":"second","name":"third"},
            {"Id":1},3,null,[["x"]],"plain"]}"#,
        );
        assert_eq!(record.yara_rules, ["second", "plain"]);
    }

    fn shape_error(body: &str) -> String {
        match decode_downloads(body.as_bytes()) {
            Err(DecodeError::Shape(message)) => message,
            other => panic!("expected a shape error for {body}, got {other:?}"),
        }
    }

    fn json_error_message(body: &[u8]) -> String {
        match decode_downloads(body) {
            Err(DecodeError::Json(message)) => message,
            other => panic!("expected a JSON error, got {other:?}"),
        }
    }

    #[test]
    fn scalars_and_objects_without_records_are_shape_errors() {
        for body in [
            "1",
            "true",
            r#""MARKER""#,
            r#"{"MARKER":1}"#,
            r#"{"MARKER":null}"#,
            r#"{"MARKER":{"Zone":"Red"}}"#,
            r#"{"MARKER":["MARKER"]}"#,
            r#"["MARKER"]"#,
            r#"[{"Zone":"Red"},["MARKER"]]"#,
            "[[]]",
            "[1]",
        ] {
            let message = shape_error(body);
            assert!(!message.contains("MARKER"), "{message}");
        }
    }

    #[test]
    fn a_shape_error_names_the_offending_element() {
        let message = shape_error(r#"[{"Zone":"Red"},null,"x",{}]"#);
        assert_eq!(
            message,
            "element 2 of the records array is a string, not an object"
        );
    }

    #[test]
    fn invalid_json_is_an_error_that_does_not_quote_the_body() {
        let bodies: [&[u8]; 9] = [
            br#"{"Name":"MARKER""#,
            br#"[{"Name":"MARKER"} MARKER]"#,
            br#"{"Name":"MARKER"} MARKER"#,
            br#"MARKER"#,
            br#"{"Name":"MARK\qER"}"#,
            br#"{MARKER:1}"#,
            b"{\"Name\":\"MARKER\xff\"}",
            b"{\"Ignored\":\"MARKER\xc3\"}",
            b"\xef\xbb\xbf\xef\xbb\xbf[]",
        ];
        for body in bodies {
            let error = decode_downloads(body).expect_err("invalid body");
            assert!(matches!(error, DecodeError::Json(_)), "{error:?}");
            let text = format!("{error} {error:?}");
            assert!(!text.contains("MARKER") && !text.contains("MARK"), "{text}");
        }
    }

    #[test]
    fn invalid_utf8_reports_its_byte_position() {
        let message = json_error_message(b"[\"ok\",\"\xff\"]");
        assert_eq!(message, "invalid UTF-8 at byte 7");
        assert_eq!(
            json_error_message(b"\xef\xbb\xbf\xff"),
            "invalid UTF-8 at byte 3"
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = "[".repeat(100_000);
        assert!(decode_downloads(deep.as_bytes()).is_err());
        let closed = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(decode_downloads(closed.as_bytes()).is_err());
        assert!(decode_api_error(closed.as_bytes()).is_none());
    }

    #[test]
    fn deep_nesting_inside_an_ignored_field_is_skipped_without_recursion() {
        let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let record = one(&format!(r#"{{"Zone":"Red","Deep":{nested}}}"#));
        assert_eq!(record.zone, DangerZone::Red);
    }

    #[test]
    fn an_api_error_with_a_numeric_code_decodes() {
        let error = api(r#"{"code":29,"message":"bad task id"}"#).expect("error body");
        assert_eq!(error.code.as_deref(), Some("29"));
        assert_eq!(error.message.as_deref(), Some("bad task id"));
        assert_eq!(error.meta, None);
    }

    #[test]
    fn an_api_error_with_a_string_code_and_meta_decodes_in_any_key_case() {
        let error = api("\u{feff}{\"CODE\":\" 7 \",\"Message\":\"task deleted\",\
             \"META\":\"task has already been deleted\"}")
        .expect("error body");
        assert_eq!(error.code.as_deref(), Some("7"));
        assert_eq!(error.message.as_deref(), Some("task deleted"));
        assert_eq!(error.meta.as_deref(), Some("task has already been deleted"));
    }

    #[test]
    fn an_api_error_needs_a_code_or_a_message() {
        assert!(api(r#"{"message":"task not found"}"#).is_some());
        assert!(api(r#"{"code":6.0}"#).is_some_and(|e| e.code.as_deref() == Some("6")));
        for body in [
            "",
            "null",
            "{}",
            "[]",
            "6",
            r#""task not found""#,
            r#"{"meta":"x"}"#,
            r#"{"code":null,"message":"  "}"#,
            r#"{"code":{"n":6},"message":["x"]}"#,
            "<html>Bad Gateway</html>",
            r#"{"code":6} trailing"#,
        ] {
            assert_eq!(api(body), None, "body {body:?}");
        }
    }

    #[test]
    fn api_error_strings_are_bounded_at_a_char_boundary() {
        let long = "é".repeat(MAX_API_TEXT_CHARS + 10);
        let error = api(&format!(r#"{{"message":"{long}"}}"#)).expect("error body");
        let message = error.message.expect("message");
        assert_eq!(message.chars().count(), MAX_API_TEXT_CHARS);
        assert!(message.chars().all(|c| c == 'é'));
    }

    /// Mixes the case of `key` by the bits of `mask`.
    fn recase(key: &str, mask: u64) -> String {
        key.chars()
            .enumerate()
            .map(|(i, c)| {
                if (mask >> (i % 64)) & 1 == 1 {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect()
    }

    fn json_value(depth: u32) -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            proptest::sample::select(
                RECORD_KEYS
                    .iter()
                    .map(|&(k, _)| k)
                    .chain(["code", "message", "meta", "Name", "RuleName", "rule", "data"])
                    .collect::<Vec<_>>()
            )
            .prop_map(str::to_owned),
            ".{0,6}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".{0,8}".prop_map(Value::String),
            proptest::sample::select(vec!["Red", "gray", "1024", "true", "-1", "1.5", " "])
                .prop_map(Value::from),
        ];
        leaf.prop_recursive(depth, 64, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::vec((key.clone(), inner), 0..6)
                    .prop_map(|entries| Value::Object(entries.into_iter().collect())),
            ]
        })
    }

    /// One generated record: field values plus how each is spelled in JSON.
    #[derive(Debug, Clone)]
    struct GenRecord {
        masks: [u64; 10],
        zone: String,
        hashes: [String; 3],
        detection_names: Vec<String>,
        name: String,
        size: u64,
        size_as_string: bool,
        https: Option<bool>,
        https_as_string: bool,
        yara: Vec<(String, Option<(usize, u64)>)>,
    }

    fn gen_record() -> impl Strategy<Value = GenRecord> {
        let zones = vec![
            "Red", "Orange", "Yellow", "Grey", "Gray", "Green", "Purple", "",
        ];
        (
            any::<[u64; 10]>(),
            (proptest::sample::select(zones), any::<u64>()),
            [
                "[0-9a-fA-F]{0,32}",
                "[0-9a-fA-F]{40}",
                " ?[0-9a-fA-F]{64} ?",
            ],
            proptest::collection::vec(any::<String>(), 0..4),
            any::<String>(),
            (any::<u64>(), any::<bool>()),
            (any::<Option<bool>>(), any::<bool>()),
            proptest::collection::vec((any::<String>(), any::<Option<(usize, u64)>>()), 0..4),
        )
            .prop_map(
                |(masks, (zone, zone_mask), hashes, detection_names, name, size, https, yara)| {
                    GenRecord {
                        masks,
                        zone: recase(zone, zone_mask),
                        hashes,
                        detection_names,
                        name,
                        size: size.0,
                        size_as_string: size.1,
                        https: https.0,
                        https_as_string: https.1,
                        yara,
                    }
                },
            )
    }

    impl GenRecord {
        fn to_json(&self) -> Value {
            let names = ["Name", "RuleName", "name", "rule"];
            let values = [
                Value::from(self.zone.clone()),
                Value::from(self.hashes[0].clone()),
                Value::from(self.hashes[1].clone()),
                Value::from(self.hashes[2].clone()),
                Value::from(self.detection_names.clone()),
                Value::from(self.name.clone()),
                if self.size_as_string {
                    Value::from(self.size.to_string())
                } else {
                    Value::from(self.size)
                },
                Value::from("PE32"),
                match (self.https, self.https_as_string) {
                    (None, _) => Value::Null,
                    (Some(b), true) => Value::from(b.to_string()),
                    (Some(b), false) => Value::from(b),
                },
                Value::Array(
                    self.yara
                        .iter()
                        .map(|(rule, form)| match form {
                            None => Value::from(rule.clone()),
                            Some((which, mask)) => json!({
                                "Id": 1,
                                (recase(names[which % names.len()], *mask)): rule,
                            }),
                        })
                        .collect(),
                ),
            ];
            let map: Map<String, Value> = RECORD_KEYS
                .iter()
                .zip(self.masks)
                .zip(values)
                .map(|((&(key, _), mask), value)| (recase(key, mask), value))
                .collect();
            Value::Object(map)
        }

        fn expected(&self) -> Download {
            Download {
                zone: DangerZone::parse_lenient(&self.zone),
                md5: self.hashes[0].trim().to_ascii_lowercase(),
                sha1: self.hashes[1].trim().to_ascii_lowercase(),
                sha256: self.hashes[2].trim().to_ascii_lowercase(),
                detection_names: self.detection_names.clone(),
                name: self.name.clone(),
                size: self.size,
                file_type: "PE32".into(),
                is_https: self.https.unwrap_or(false),
                yara_rules: self.yara.iter().map(|(rule, _)| rule.clone()).collect(),
            }
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_downloads(&body);
            let _ = decode_api_error(&body);
        }

        #[test]
        fn arbitrary_json_token_soup_never_panics(
            tokens in proptest::collection::vec(
                proptest::sample::select(vec![
                    "[", "]", "{", "}", ",", ":", "null", "true", "-1", "1.5e3", "\"\"",
                    "\"Zone\"", "\"Sha256\"", "\"TriggeredYaraRules\"", "\"Name\"",
                    "\"code\"", "\"x\"", " ", "\u{feff}",
                ]),
                0..48,
            )
        ) {
            let body = tokens.concat();
            let _ = decode_downloads(body.as_bytes());
            let _ = decode_api_error(body.as_bytes());
        }

        #[test]
        fn arbitrary_json_values_never_panic(value in json_value(5)) {
            let body = serde_json::to_vec(&value).expect("a Value always serialises");
            let _ = decode_downloads(&body);
            let _ = decode_api_error(&body);
            let wrappings = [
                json!([value.clone()]),
                json!({ "Downloads": [value.clone()] }),
                json!({ "Zone": value }),
            ];
            for wrapped in wrappings {
                let body = serde_json::to_vec(&wrapped).expect("a Value always serialises");
                let _ = decode_downloads(&body);
            }
        }

        #[test]
        fn errors_never_quote_arbitrary_bodies(value in json_value(3), cut in 0usize..64) {
            let mut body = serde_json::to_vec(&json!([value, "MARKER"])).expect("serialises");
            body.truncate(body.len().saturating_sub(cut));
            if let Err(error) = decode_downloads(&body) {
                let text = format!("{error} {error:?}");
                prop_assert!(!text.contains("MARKER"), "{}", text);
            }
        }

        #[test]
        fn generated_records_round_trip_with_any_key_casing(
            records in proptest::collection::vec(gen_record(), 0..5),
            wrap in 0u8..3,
        ) {
            let array = Value::Array(records.iter().map(GenRecord::to_json).collect());
            let body = match (wrap, records.len()) {
                (1, _) => json!({ "Downloads": array }),
                (2, 1) => array[0].clone(),
                _ => array,
            };
            let bytes = serde_json::to_vec(&body).expect("a Value always serialises");
            let decoded = decode_downloads(&bytes).expect("generated body decodes");
            let expected: Vec<Download> = records.iter().map(GenRecord::expected).collect();
            prop_assert_eq!(decoded, expected);
        }
    }
}

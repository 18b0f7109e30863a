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
mod tests;

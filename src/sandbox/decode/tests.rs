//! Tests of the parent module.

use super::*;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

fn decode(body: &str) -> Vec<Download> {
    decoded(body).files
}

fn decoded(body: &str) -> Decoded {
    decode_downloads(body.as_bytes(), 10_000).expect("test body decodes")
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
}

#[test]
fn a_wrapper_is_searched_for_the_array_whose_elements_are_records() {
    let red = Download {
        zone: DangerZone::Red,
        ..Download::default()
    };
    assert_eq!(
        decode(r#"{"data":[],"other":[{"Zone":"Red"}]}"#),
        vec![red.clone()]
    );
    assert_eq!(
        decode(r#"{"Errors":[],"Meta":[{"Page":1,"Total":1}],"Downloads":[{"Zone":"Red"}]}"#),
        vec![red.clone()]
    );
    assert_eq!(
        decode(r#"{"Result":{"Downloads":[{"zone":"red"}]}}"#),
        vec![red]
    );
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
    match decode_downloads(body.as_bytes(), 10_000) {
        Err(DecodeError::Shape(message)) => message,
        other => panic!("expected a shape error for {body}, got {other:?}"),
    }
}

fn json_error_message(body: &[u8]) -> String {
    match decode_downloads(body, 10_000) {
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
        r#"{"MARKER":["MARKER"]}"#,
        r#"{"MARKER":[{"Page":1}]}"#,
    ] {
        let message = shape_error(body);
        assert!(!message.contains("MARKER"), "{message}");
    }
}

#[test]
fn elements_that_are_not_objects_are_skipped_and_counted_and_the_rest_exported() {
    let body = decoded(r#"[{"Zone":"Red"},null,"x",1,[{"Zone":"Red"}],{}]"#);
    assert_eq!(body.files.len(), 2);
    assert_eq!(body.files[0].zone, DangerZone::Red);
    assert_eq!(body.report.skipped[SkipReason::NotAnObject.index()], 3);
}

#[test]
fn invalid_json_is_an_error_that_does_not_quote_the_body() {
    let bodies: [&[u8]; 7] = [
        br#"{"Name":"MARKER""#,
        br#"[{"Name":"MARKER"} MARKER]"#,
        br#"{"Name":"MARKER"} MARKER"#,
        br#"MARKER"#,
        br#"{MARKER:1}"#,
        br#"[{"Name":"MARKER"},"#,
        b"\xef\xbb\xbf\xef\xbb\xbf[]",
    ];
    for body in bodies {
        let error = decode_downloads(body, 10_000).expect_err("invalid body");
        assert!(matches!(error, DecodeError::Json(_)), "{error:?}");
        let text = format!("{error} {error:?}");
        assert!(!text.contains("MARKER") && !text.contains("MARK"), "{text}");
    }
}

#[test]
fn a_syntax_error_reports_its_byte_position() {
    assert_eq!(
        json_error_message(b"[{\"Zone\":\"Red\"} x]"),
        "expected `,` or `]` after an array element at byte 16"
    );
    assert_eq!(
        json_error_message(b"\xef\xbb\xbf[] x"),
        "expected the end of the body at byte 6"
    );
}

#[test]
fn invalid_utf8_in_a_record_becomes_replacement_characters_and_is_counted() {
    let body = decoded_bytes(b"[{\"Zone\":\"Red\",\"Name\":\"a\xffb.exe\",\"Ignored\":\"\xc3\"}]");
    assert_eq!(body.files[0].name, "a\u{fffd}b.exe");
    assert_eq!(body.report.repaired[RepairKind::InvalidUtf8.index()], 1);
}

fn decoded_bytes(body: &[u8]) -> Decoded {
    decode_downloads(body, 10_000).expect("test body decodes")
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let deep = "[".repeat(100_000);
    assert!(decode_downloads(deep.as_bytes(), 10_000).is_err());
    let closed = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let body = decoded(&closed);
    assert!(body.files.is_empty());
    assert_eq!(body.report.skipped[SkipReason::NotAnObject.index()], 1);
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
            detection_names: distinct(&self.detection_names),
            name: self.name.clone(),
            size: self.size,
            file_type: "PE32".into(),
            is_https: self.https.unwrap_or(false),
            yara_rules: distinct(
                &self
                    .yara
                    .iter()
                    .map(|(rule, _)| rule.clone())
                    .collect::<Vec<_>>(),
            ),
        }
    }
}

proptest! {
    // The decoder faces malware's network traffic: arbitrary bytes get 10,000 cases in CI.
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_downloads(&body, 10_000);
        let _ = decode_api_error(&body);
    }
}

proptest! {
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
        let _ = decode_downloads(body.as_bytes(), 10_000);
        let _ = decode_api_error(body.as_bytes());
    }

    #[test]
    fn arbitrary_json_values_never_panic(value in json_value(5)) {
        let body = serde_json::to_vec(&value).expect("a Value always serialises");
        let _ = decode_downloads(&body, 10_000);
        let _ = decode_api_error(&body);
        let wrappings = [
            json!([value.clone()]),
            json!({ "Downloads": [value.clone()] }),
            json!({ "Zone": value }),
        ];
        for wrapped in wrappings {
            let body = serde_json::to_vec(&wrapped).expect("a Value always serialises");
            let _ = decode_downloads(&body, 10_000);
        }
    }

    #[test]
    fn errors_never_quote_arbitrary_bodies(value in json_value(3), cut in 0usize..64) {
        let mut body = serde_json::to_vec(&json!([value, "MARKER"])).expect("serialises");
        body.truncate(body.len().saturating_sub(cut));
        if let Err(error) = decode_downloads(&body, 10_000) {
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
        let decoded = decode_downloads(&bytes, 10_000).expect("generated body decodes");
        let expected: Vec<Download> = records.iter().map(GenRecord::expected).collect();
        prop_assert_eq!(decoded.files, expected);
    }
}

/// `values` without repeats, first occurrence kept: what the decoder keeps of a list.
fn distinct(values: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in values {
        if !out.contains(v) {
            out.push(v.clone());
        }
    }
    out
}

/// An object nested deeper than serde_json's limit of 128, in a field the decoder skips.
const DEEP_RECORD: &str = concat!(
    r#"{"Deep":"#,
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
    "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
    "}"
);

const RED: &str = r#"{"Zone":"Red","Sha256":"5eed","Name":"dropper.exe"}"#;

fn has_red_file(body: &Decoded) -> bool {
    body.files
        .iter()
        .any(|f| f.zone == DangerZone::Red && f.sha256 == "5eed")
}

#[test]
fn one_hostile_record_never_hides_a_red_file_in_the_same_body() {
    let hostile: [&[u8]; 11] = [
        br#"{"Name" "x"}"#,
        br#"{"Name":"x",}"#,
        br#"{"Name":"x\ud800y.txt"}"#,
        b"{\"Name\":\"x\xffy.txt\"}",
        br#"{"Size":1e400}"#,
        br#"{"Size":NaN}"#,
        br#"{"Size":-Infinity,"Zone":"Green"}"#,
        b"{\"Name\":\"raw\ncontrol\"}",
        br#"{"Name":"bad \q escape"}"#,
        br#"42"#,
        DEEP_RECORD.as_bytes(),
    ];
    for record in hostile {
        for body in [
            [b"[", RED.as_bytes(), b",", record, b"]"].concat(),
            [b"[", record, b",", RED.as_bytes(), b"]"].concat(),
            [
                b"{\"Errors\":[],\"Downloads\":[",
                record,
                b",",
                RED.as_bytes(),
                b"]}",
            ]
            .concat(),
        ] {
            let decoded =
                decode_downloads(&body, 10_000).expect("the body is JSON around its records");
            assert!(has_red_file(&decoded), "{}", String::from_utf8_lossy(&body));
        }
    }
}

#[test]
fn mended_values_are_counted_by_kind_and_skipped_records_by_reason() {
    let body = decoded(&format!(
        r#"[{{"Name":"x\ud800y"}},{{"Size":1e400}},"text",{{"Name" "x"}},{}]"#,
        DEEP_RECORD
    ));

    assert_eq!(body.files.len(), 3);
    assert_eq!(body.files[0].name, "x\u{fffd}y");
    assert_eq!(body.files[1].size, 0);
    assert_eq!(body.report.repaired[RepairKind::InvalidEscape.index()], 1);
    assert_eq!(body.report.repaired[RepairKind::InvalidNumber.index()], 1);
    assert_eq!(body.report.skipped[SkipReason::NotAnObject.index()], 1);
    assert_eq!(body.report.skipped[SkipReason::Unreadable.index()], 1);
}

#[test]
fn past_the_record_cap_the_least_dangerous_zones_are_cut_first_and_counted() {
    let body = r#"[{"Zone":"Green","Sha256":"g1"},{"Zone":"Green","Sha256":"g2"},
        {"Zone":"Green","Sha256":"g3"},{"Zone":"Green","Sha256":"g4"},
        {"Zone":"Red","Sha256":"r1"},{"Zone":"Green","Sha256":"g5"}]"#;
    let decoded = decode_downloads(body.as_bytes(), 3).expect("decodes");
    let kept: Vec<&str> = decoded.files.iter().map(|f| f.sha256.as_str()).collect();
    assert_eq!(kept, ["g1", "g2", "r1"]);
    assert_eq!(decoded.report.skipped[SkipReason::OverLimit.index()], 3);
    assert_eq!(decoded.report.cut_zones[DangerZone::Green.index()], 3);
}

#[test]
fn sixteen_mebibytes_of_empty_records_keep_only_the_capped_number() {
    let mut body = Vec::with_capacity(16 << 20);
    body.push(b'[');
    while body.len() < (16 << 20) - 8 {
        body.extend_from_slice(b"{},");
    }
    body.extend_from_slice(b"{}]");
    let decoded = decode_downloads(&body, 10_000).expect("decodes");
    assert_eq!(decoded.files.len(), 10_000);
    let cut = decoded.report.skipped[SkipReason::OverLimit.index()];
    assert_eq!(cut as usize + 10_000, (body.len() - 1) / 3);
    assert_eq!(decoded.report.cut_zones[DangerZone::Unknown.index()], cut);
}

#[test]
fn a_record_with_300k_distinct_rules_keeps_the_list_cap_and_marks_the_rest() {
    let rules: Vec<String> = (0..300_000).map(|i| format!("\"rule{i}\"")).collect();
    let body = format!(
        r#"[{{"Zone":"Red","TriggeredYaraRules":[{}]}}]"#,
        rules.join(",")
    );
    let record = one(&body);
    assert_eq!(record.yara_rules.len(), MAX_LIST_VALUES + 1);
    assert_eq!(record.yara_rules.last().map(String::as_str), Some(OTHER));
}

#[test]
fn repeated_values_in_a_list_are_kept_once_in_first_seen_order() {
    let record = one(r#"{"DetectionNames":["b","a","b","a","c"],"TriggeredYaraRules":["r","r"]}"#);
    assert_eq!(record.detection_names, ["b", "a", "c"]);
    assert_eq!(record.yara_rules, ["r"]);
}

/// A record crafted to break a strict parser: arbitrary string content (bytes, lone and paired
/// surrogate escapes, bad escapes, control characters), a broken number, deep nesting, or a
/// non-object element.
fn hostile_record() -> impl Strategy<Value = Vec<u8>> {
    let content = proptest::collection::vec(
        prop_oneof![
            any::<u8>().prop_map(|b| match b {
                b'"' => b"\\\"".to_vec(),
                b'\\' => b"\\\\".to_vec(),
                b => vec![b],
            }),
            (0xd800u32..0xe000).prop_map(|u| format!("\\u{u:04x}").into_bytes()),
            Just(b"\\q".to_vec()),
            Just(b"\\u12".to_vec()),
        ],
        0..24,
    )
    .prop_map(|parts| parts.concat());
    let number = proptest::sample::select(vec![
        "1e400",
        "-1e400",
        "NaN",
        "Infinity",
        "-Infinity",
        "+1",
        "0x10",
        "1.",
        ".5",
        "01",
        "-",
        "1e",
        "99999999999999999999999999",
        "1",
        "tru",
    ]);
    let field = proptest::sample::select(vec![
        "Name",
        "Type",
        "Zone",
        "Sha256",
        "Size",
        "DetectionNames",
        "TriggeredYaraRules",
        "X",
    ]);
    prop_oneof![
        (field.clone(), content.clone()).prop_map(|(f, c)| {
            [format!("{{\"{f}\":\"").into_bytes(), c, b"\"}".to_vec()].concat()
        }),
        (field.clone(), number.clone()).prop_map(|(f, n)| format!("{{\"{f}\":{n}}}").into_bytes()),
        (field, 0usize..400).prop_map(|(f, depth)| {
            format!("{{\"{f}\":{}{}}}", "[".repeat(depth), "]".repeat(depth)).into_bytes()
        }),
        (content, number)
            .prop_map(|(c, n)| { [b"[\"".to_vec(), c, format!("\",{n}]").into_bytes()].concat() }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn a_red_file_is_exported_whatever_hostile_record_shares_its_body(
        hostile in hostile_record(),
        position in 0usize..3,
        wrapped in any::<bool>(),
    ) {
        let mut elements = vec![br#"{"Zone":"Green"}"#.to_vec(), br#"{"Zone":"Green"}"#.to_vec()];
        elements.insert(position.min(elements.len()), hostile);
        elements.push(RED.as_bytes().to_vec());
        let array = [b"[".to_vec(), elements.join(&b","[..]), b"]".to_vec()].concat();
        let body = if wrapped {
            [br#"{"Meta":[{"Page":1}],"Downloads":"#.to_vec(), array, b"}".to_vec()].concat()
        } else {
            array
        };
        let decoded = decode_downloads(&body, 10_000);
        prop_assert!(
            decoded.as_ref().is_ok_and(has_red_file),
            "{:?} for {}",
            decoded,
            String::from_utf8_lossy(&body)
        );
    }
}

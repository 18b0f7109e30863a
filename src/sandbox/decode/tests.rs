//! Tests of the parent module.

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
    // The decoder faces malware's network traffic: arbitrary bytes get 10,000 cases in CI.
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_downloads(&body);
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

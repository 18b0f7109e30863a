//! Classification of failed sandbox API calls, why the appliance as a whole is left alone
//! ([`PauseReason`]), and `Retry-After` parsing.
//!
//! The spec says to classify by the error body's `code` first and by the HTTP status second.
//! Statuses that describe the appliance or the account rather than the task override any body
//! code: 401, 403, 429 and every 5xx. A 500 carrying `code: 6` is an appliance failing, not a
//! verdict on the task, so it stays retryable instead of dropping the task. For every other
//! status the recognised codes decide (6 not found, 7 deleted, 29 bad id); failing a code, the
//! documented message text (`task not found`, …) does; failing that, the status.
//!
//! | status | known code or message | no known code |
//! |---|---|---|
//! | 401 / 403 / 429 / 5xx | ignored | `Unauthorized` / `Forbidden` / `RateLimited` / `ServerError` |
//! | 400 | by code | `BadTaskId` |
//! | 404 | by code | `TaskNotFound` |
//! | anything else | by code | `UnexpectedStatus` |

use std::time::{Duration, SystemTime};

use super::decode::ApiError;

/// Why a sandbox call failed, as far as the exporter acts on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiFailure {
    /// Body code 29, or a 400 without a known code: the id is not a GUID.
    BadTaskId,
    /// Body code 6 (sent with 400 or 404), or a 404 without a known code.
    TaskNotFound,
    /// Body code 7.
    TaskDeleted,
    /// 401: wrong or missing credentials. Not retried: repeated bad logins can lock the account.
    Unauthorized,
    /// 403.
    Forbidden,
    /// 429.
    RateLimited,
    /// Any 5xx.
    ServerError,
    /// Any other status of 300 or more (3xx, 405, 418, …).
    UnexpectedStatus,
}

/// Why polling of the whole appliance is paused (the scheduler's pause gate decides when):
/// one appliance serves every task, so its trouble is fleet-wide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PauseReason {
    Unauthorized,
    Unavailable,
    RetryAfter,
}

impl ApiFailure {
    /// Every failure, for pre-registering metric label values.
    pub const ALL: [ApiFailure; 8] = [
        ApiFailure::BadTaskId,
        ApiFailure::TaskNotFound,
        ApiFailure::TaskDeleted,
        ApiFailure::Unauthorized,
        ApiFailure::Forbidden,
        ApiFailure::RateLimited,
        ApiFailure::ServerError,
        ApiFailure::UnexpectedStatus,
    ];

    /// Whether the same request may succeed later (the spec's "retry?" column).
    pub fn retryable(self) -> bool {
        matches!(self, ApiFailure::RateLimited | ApiFailure::ServerError)
    }

    /// Short snake_case name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiFailure::BadTaskId => "bad_task_id",
            ApiFailure::TaskNotFound => "task_not_found",
            ApiFailure::TaskDeleted => "task_deleted",
            ApiFailure::Unauthorized => "unauthorized",
            ApiFailure::Forbidden => "forbidden",
            ApiFailure::RateLimited => "rate_limited",
            ApiFailure::ServerError => "server_error",
            ApiFailure::UnexpectedStatus => "unexpected_status",
        }
    }

    /// A sentence for the status page.
    pub fn describe(self) -> &'static str {
        match self {
            ApiFailure::BadTaskId => "the sandbox rejected the task id as malformed",
            ApiFailure::TaskNotFound => "task not found in the sandbox",
            ApiFailure::TaskDeleted => "task has been deleted from the sandbox",
            ApiFailure::Unauthorized => "the sandbox rejected the credentials",
            ApiFailure::Forbidden => "the sandbox account may not read this task",
            ApiFailure::RateLimited => "the sandbox is limiting the request rate",
            ApiFailure::ServerError => "the sandbox reported a server error",
            ApiFailure::UnexpectedStatus => "the sandbox answered with an unexpected HTTP status",
        }
    }
}

impl PauseReason {
    /// Every reason, for pre-registering the `reason` label values.
    pub const ALL: [PauseReason; 3] = [
        PauseReason::Unauthorized,
        PauseReason::Unavailable,
        PauseReason::RetryAfter,
    ];

    /// The `reason` label of `krs_api_paused`.
    pub const fn as_str(self) -> &'static str {
        match self {
            PauseReason::Unauthorized => "unauthorized",
            PauseReason::Unavailable => "unavailable",
            PauseReason::RetryAfter => "retry_after",
        }
    }

    pub const fn describe(self) -> &'static str {
        match self {
            PauseReason::Unauthorized => "the sandbox rejected the credentials (HTTP 401)",
            PauseReason::Unavailable => "the sandbox is unreachable or failing",
            PauseReason::RetryAfter => "the sandbox asked to retry later (Retry-After)",
        }
    }
}

/// Classifies a failed response from its HTTP status and decoded error body (see the module
/// table). Meant for statuses of 300 and more; a 2xx without a known code is `UnexpectedStatus`.
pub fn classify(status: u16, api: Option<&ApiError>) -> ApiFailure {
    match status {
        401 => return ApiFailure::Unauthorized,
        403 => return ApiFailure::Forbidden,
        429 => return ApiFailure::RateLimited,
        500..=599 => return ApiFailure::ServerError,
        _ => {}
    }
    if let Some(failure) = api.and_then(from_body) {
        return failure;
    }
    match status {
        400 => ApiFailure::BadTaskId,
        404 => ApiFailure::TaskNotFound,
        _ => ApiFailure::UnexpectedStatus,
    }
}

/// Parses a `Retry-After` value: delta-seconds or an HTTP-date (relative to `now`).
///
/// A date in the past or a negative number gives zero; anything unparsable gives `None`; the
/// result never exceeds `cap`, and numbers too large for `u64` count as the cap.
pub fn parse_retry_after(value: &str, now: SystemTime, cap: Duration) -> Option<Duration> {
    let value = value.trim();
    let (negative, digits) = match value.as_bytes().first() {
        Some(b'-') => (true, &value[1..]),
        Some(b'+') => (false, &value[1..]),
        _ => (false, value),
    };
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if negative {
            return Some(Duration::ZERO);
        }
        // All digits, so the only possible parse error is overflow.
        let seconds = digits.parse::<u64>().map_or(cap, Duration::from_secs);
        return Some(seconds.min(cap));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    let wait = date.duration_since(now).unwrap_or(Duration::ZERO);
    Some(wait.min(cap))
}

/// The failure a body names by its `code`, or else by its documented `message`.
fn from_body(api: &ApiError) -> Option<ApiFailure> {
    let by_code = api
        .code
        .as_deref()
        .and_then(|code| code.trim().parse::<u64>().ok())
        .and_then(|code| match code {
            6 => Some(ApiFailure::TaskNotFound),
            7 => Some(ApiFailure::TaskDeleted),
            29 => Some(ApiFailure::BadTaskId),
            _ => None,
        });
    by_code.or_else(|| {
        let message = api.message.as_deref()?.trim();
        [
            ("task not found", ApiFailure::TaskNotFound),
            ("task deleted", ApiFailure::TaskDeleted),
            ("bad task id", ApiFailure::BadTaskId),
        ]
        .into_iter()
        .find(|(text, _)| message.eq_ignore_ascii_case(text))
        .map(|(_, failure)| failure)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::decode::decode_api_error;
    use proptest::prelude::*;

    fn body(code: Option<&str>, message: Option<&str>) -> ApiError {
        ApiError {
            code: code.map(str::to_owned),
            message: message.map(str::to_owned),
            meta: None,
        }
    }

    fn classify_body(status: u16, raw: &str) -> ApiFailure {
        classify(status, decode_api_error(raw.as_bytes()).as_ref())
    }

    #[test]
    fn the_spec_error_table_classifies_as_documented() {
        use ApiFailure::*;
        let cases = [
            (400, r#"{"code":29,"message":"bad task id"}"#, BadTaskId),
            (
                400,
                r#"{"code":6,"message":"task not found"}"#,
                TaskNotFound,
            ),
            (
                404,
                r#"{"code":6,"message":"task not found"}"#,
                TaskNotFound,
            ),
            (
                404,
                r#"{"code":7,"message":"task deleted","meta":"x"}"#,
                TaskDeleted,
            ),
            (404, "", TaskNotFound),
            (400, "", BadTaskId),
            (401, "", Unauthorized),
            (403, "", Forbidden),
            (429, "", RateLimited),
            (500, "", ServerError),
            (502, "<html>Bad Gateway</html>", ServerError),
            (503, "", ServerError),
            (504, "", ServerError),
            (418, "", UnexpectedStatus),
        ];
        for (status, raw, expected) in cases {
            assert_eq!(classify_body(status, raw), expected, "{status} {raw}");
        }
    }

    #[test]
    fn a_body_code_decides_whatever_the_client_error_status() {
        assert_eq!(classify_body(404, r#"{"code":29}"#), ApiFailure::BadTaskId);
        assert_eq!(
            classify_body(400, r#"{"code":"7"}"#),
            ApiFailure::TaskDeleted
        );
        assert_eq!(
            classify_body(410, r#"{"code":6}"#),
            ApiFailure::TaskNotFound
        );
    }

    #[test]
    fn auth_rate_limit_and_server_statuses_override_body_codes() {
        let not_found = body(Some("6"), Some("task not found"));
        assert_eq!(classify(401, Some(&not_found)), ApiFailure::Unauthorized);
        assert_eq!(classify(403, Some(&not_found)), ApiFailure::Forbidden);
        assert_eq!(classify(429, Some(&not_found)), ApiFailure::RateLimited);
        assert_eq!(classify(500, Some(&not_found)), ApiFailure::ServerError);
        assert_eq!(classify(599, None), ApiFailure::ServerError);
    }

    #[test]
    fn the_documented_message_decides_when_the_code_is_unknown() {
        let deleted = body(Some("99"), Some("Task Deleted"));
        assert_eq!(classify(404, Some(&deleted)), ApiFailure::TaskDeleted);
        let bad_id = body(None, Some("bad task id"));
        assert_eq!(classify(404, Some(&bad_id)), ApiFailure::BadTaskId);
    }

    #[test]
    fn unknown_codes_fall_back_to_the_status() {
        let odd = body(Some("12"), Some("something else"));
        assert_eq!(classify(400, Some(&odd)), ApiFailure::BadTaskId);
        assert_eq!(classify(404, Some(&odd)), ApiFailure::TaskNotFound);
        assert_eq!(classify(405, Some(&odd)), ApiFailure::UnexpectedStatus);
        assert_eq!(classify(302, None), ApiFailure::UnexpectedStatus);
        assert_eq!(classify(200, None), ApiFailure::UnexpectedStatus);
    }

    #[test]
    fn only_rate_limits_and_server_errors_are_retryable() {
        for failure in ApiFailure::ALL {
            let expected = matches!(failure, ApiFailure::RateLimited | ApiFailure::ServerError);
            assert_eq!(failure.retryable(), expected, "{failure:?}");
        }
    }

    #[test]
    fn names_are_distinct_snake_case_and_descriptions_are_present() {
        let names: std::collections::HashSet<_> =
            ApiFailure::ALL.iter().map(|f| f.as_str()).collect();
        assert_eq!(names.len(), ApiFailure::ALL.len());
        for failure in ApiFailure::ALL {
            let name = failure.as_str();
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{name}"
            );
            assert!(!failure.describe().is_empty());
        }
        assert_eq!(ApiFailure::TaskNotFound.as_str(), "task_not_found");
        assert_eq!(
            ApiFailure::TaskNotFound.describe(),
            "task not found in the sandbox"
        );
    }

    const CAP: Duration = Duration::from_secs(600);

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn retry_after_accepts_delta_seconds() {
        assert_eq!(
            parse_retry_after("120", now(), CAP),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now(), CAP), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("+5", now(), CAP),
            Some(Duration::from_secs(5))
        );
    }

    #[test]
    fn retry_after_accepts_an_http_date() {
        let later = httpdate::fmt_http_date(now() + Duration::from_secs(90));
        assert_eq!(
            parse_retry_after(&later, now(), CAP),
            Some(Duration::from_secs(90))
        );
    }

    #[test]
    fn retry_after_in_the_past_or_negative_is_zero() {
        let earlier = httpdate::fmt_http_date(now() - Duration::from_secs(90));
        assert_eq!(
            parse_retry_after(&earlier, now(), CAP),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("-30", now(), CAP), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_garbage_is_none() {
        for value in [
            "",
            " ",
            "soon",
            "1.5",
            "-",
            "+",
            "12s",
            "0x10",
            "Mon, 32 Foo 2024",
        ] {
            assert_eq!(parse_retry_after(value, now(), CAP), None, "{value:?}");
        }
    }

    #[test]
    fn retry_after_is_capped_even_when_huge() {
        assert_eq!(parse_retry_after("3600", now(), CAP), Some(CAP));
        assert_eq!(
            parse_retry_after(&u64::MAX.to_string(), now(), CAP),
            Some(CAP)
        );
        assert_eq!(parse_retry_after(&"9".repeat(400), now(), CAP), Some(CAP));
        let far = httpdate::fmt_http_date(now() + Duration::from_secs(86_400 * 365));
        assert_eq!(parse_retry_after(&far, now(), CAP), Some(CAP));
    }

    proptest! {
        #[test]
        fn retry_after_never_panics_and_never_exceeds_the_cap(
            value in ".{0,40}",
            cap_secs in 0u64..100_000,
        ) {
            let cap = Duration::from_secs(cap_secs);
            if let Some(wait) = parse_retry_after(&value, now(), cap) {
                prop_assert!(wait <= cap);
            }
        }

        #[test]
        fn classify_always_answers_and_auth_failures_never_retry(
            status in 0u16..1000,
            code in proptest::option::of("[0-9]{0,3}"),
        ) {
            let api = body(code.as_deref(), None);
            let failure = classify(status, Some(&api));
            if status == 401 {
                prop_assert_eq!(failure, ApiFailure::Unauthorized);
            }
            prop_assert_eq!(failure.retryable(), status == 429 || (500..600).contains(&status));
        }
    }
}

//! The `sandbox` section: the URL (stored as the server base), credentials, and the files it
//! names, which are read or checked now so that a bad path fails the load rather than a poll.
//! Nothing here ever puts the password, or a URL that may contain one, into a problem.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{duration, optional, required, unsigned, MIN_POSITIVE};
use crate::config::problem::Problems;
use crate::config::raw::{RawSandbox, Slot};
use crate::config::{SandboxConfig, UiTaskUrl};
use crate::secret::Secret;
use krs_web_config::file::read_capped;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_MAX_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;
const MAX_RESPONSE_BYTES: (u64, u64) = (1024, 1024 * 1024 * 1024);
const DEFAULT_MAX_RECORDS: u64 = 10_000;
const MAX_RECORDS: (u64, u64) = (1, 1_000_000);
/// A password file is one line; anything larger is the wrong file.
const MAX_PASSWORD_FILE_BYTES: u64 = 64 * 1024;
const MAX_CA_FILE_BYTES: u64 = 16 * 1024 * 1024;
const PEM_CERTIFICATE: &str = "-----BEGIN CERTIFICATE-----";

///
/// Also returns the timeout on its own when it is valid, so that `timeout < interval` is
/// checked even when another sandbox field has a problem.
pub(super) fn sandbox(
    raw: &RawSandbox,
    base: &Path,
    problems: &mut Problems,
) -> (Option<SandboxConfig>, Option<Duration>) {
    let mut timeout = None;
    let config = sandbox_config(raw, base, problems, &mut timeout);
    (config, timeout)
}

fn sandbox_config(
    raw: &RawSandbox,
    base: &Path,
    problems: &mut Problems,
    timeout_out: &mut Option<Duration>,
) -> Option<SandboxConfig> {
    let url = required(problems, &raw.url).and_then(|text| url(problems, &raw.url.path, text));
    let username = required(problems, &raw.username).and_then(|name| {
        let path = &raw.username.path;
        if name.trim().is_empty() {
            problems.report(path, "must not be empty");
            None
        } else if name.contains(':') {
            problems.report_value(
                path,
                name,
                "must not contain ':', which separates user and password in HTTP Basic authentication",
            );
            None
        } else {
            Some(name.clone())
        }
    });
    let password_file = raw
        .password_file
        .given()
        .and_then(|given| path(problems, &raw.password_file.path, base, given));
    let password = match (&raw.password.slot, &raw.password_file.slot) {
        (Slot::Given(_), Slot::Given(_)) => {
            problems.report(
                "sandbox",
                "both password and password_file are set; keep exactly one",
            );
            None
        }
        (Slot::Absent, Slot::Absent) => {
            problems.report("sandbox", "one of password or password_file is required");
            None
        }
        (Slot::Given(password), _) => check_password(password)
            .map_err(|why| problems.report(&raw.password.path, why))
            .ok(),
        (_, Slot::Given(_)) => password_file.as_deref().and_then(|path| {
            read_password_file(path)
                .map_err(|why| {
                    problems.report_value(&raw.password_file.path, &path.to_string_lossy(), why)
                })
                .ok()
        }),
        _ => None,
    };
    let ca_file = raw.ca_file.given().and_then(|given| {
        let path = path(problems, &raw.ca_file.path, base, given)?;
        check_ca_file(&path)
            .map_err(|why| problems.report_value(&raw.ca_file.path, &path.to_string_lossy(), why))
            .ok()
            .map(|()| path)
    });
    let insecure_skip_verify = optional(&raw.insecure_skip_verify, false);
    let timeout = duration(problems, &raw.timeout, DEFAULT_TIMEOUT, MIN_POSITIVE);
    *timeout_out = timeout;
    let max_response_bytes = unsigned(
        problems,
        &raw.max_response_bytes,
        DEFAULT_MAX_RESPONSE_BYTES,
        MAX_RESPONSE_BYTES,
    );
    let max_records = unsigned(problems, &raw.max_records, DEFAULT_MAX_RECORDS, MAX_RECORDS);
    let ui_task_url = match &raw.ui_task_url.slot {
        Slot::Given(text) => match UiTaskUrl::parse(text) {
            Ok(template) => Some(Some(template)),
            Err(why) => {
                problems.report_value(&raw.ui_task_url.path, text, why);
                None
            }
        },
        Slot::Absent => Some(None),
        Slot::Invalid => None,
    };
    if !raw.ca_file.is_absent() && ca_file.is_none() {
        return None;
    }
    Some(SandboxConfig {
        url: url?,
        username: username?,
        password: password?,
        password_file,
        ca_file,
        insecure_skip_verify: insecure_skip_verify?,
        timeout: timeout?,
        max_response_bytes: max_response_bytes?,
        // Bounded to a million above, so it fits any usize.
        max_records: usize::try_from(max_records?).ok()?,
        ui_task_url: ui_task_url?,
    })
}

/// Checks the sandbox URL and stores it as the server base (see the module docs of `config`).
fn url(problems: &mut Problems, path: &str, text: &str) -> Option<url::Url> {
    // A URL with credentials is never echoed: the part before `@` may be a password.
    let report = |problems: &mut Problems, why: String| {
        if text.contains('@') {
            problems.report(path, why);
        } else {
            problems.report_value(path, text, why);
        }
    };
    let mut url = match url::Url::parse(text) {
        Ok(url) => url,
        Err(url::ParseError::RelativeUrlWithoutBase) => {
            report(
                problems,
                "not an absolute URL; start it with https:// or http://".to_owned(),
            );
            return None;
        }
        Err(e) => {
            report(problems, format!("not a valid URL: {e}"));
            return None;
        }
    };
    let mut ok = true;
    if !matches!(url.scheme(), "http" | "https") {
        report(
            problems,
            format!("the scheme must be http or https, not {}", url.scheme()),
        );
        ok = false;
    }
    if !url.username().is_empty() || url.password().is_some() {
        problems.report(
            path,
            "must not contain credentials (user:password@); set sandbox.username and \
             sandbox.password or sandbox.password_file instead",
        );
        ok = false;
    }
    if url.host_str().is_none_or(str::is_empty) {
        report(problems, "has no host".to_owned());
        ok = false;
    }
    if url.query().is_some() {
        report(
            problems,
            "must not have a query (?…); API paths are appended to it".to_owned(),
        );
        ok = false;
    }
    if url.fragment().is_some() {
        report(problems, "must not have a fragment (#…)".to_owned());
        ok = false;
    }
    if !ok {
        return None;
    }
    let mut base = url.path().to_owned();
    if !base.ends_with('/') {
        base.push('/');
    }
    if let Some(stripped) = base.strip_suffix("api/v1/sandbox/") {
        if stripped.ends_with('/') {
            base.truncate(stripped.len());
        }
    }
    url.set_path(&base);
    Some(url)
}

fn check_password(password: &str) -> Result<Secret, String> {
    if password.is_empty() {
        Err("must not be empty".to_owned())
    } else if password.contains(['\n', '\r']) {
        Err("must not contain a line break".to_owned())
    } else {
        Ok(Secret::new(password))
    }
}

/// `given` resolved against the config file's directory `base`, unless absolute.
fn path(problems: &mut Problems, field: &str, base: &Path, given: &str) -> Option<PathBuf> {
    if given.is_empty() {
        problems.report(field, "must not be empty");
        return None;
    }
    let path = Path::new(given);
    Some(if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    })
}

/// The password file's content without trailing CR/LF. Errors never quote the content.
fn read_password_file(path: &Path) -> Result<Secret, String> {
    let bytes = read_capped(path, MAX_PASSWORD_FILE_BYTES)
        .map_err(|why| format!("cannot read the password file: {why}"))?;
    let text =
        String::from_utf8(bytes).map_err(|_| "the password file is not UTF-8 text".to_owned())?;
    let password = text.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        return Err("the password file is empty".to_owned());
    }
    check_password(password).map_err(|why| format!("the password in the file {why}"))
}

fn check_ca_file(path: &Path) -> Result<(), String> {
    let bytes = read_capped(path, MAX_CA_FILE_BYTES)
        .map_err(|why| format!("cannot read the CA file: {why}"))?;
    let pem = String::from_utf8_lossy(&bytes);
    if pem.contains(PEM_CERTIFICATE) {
        Ok(())
    } else {
        Err(format!(
            "the CA file holds no PEM certificate (no {PEM_CERTIFICATE} line)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::*;
    use crate::config::Config;

    #[test]
    fn the_password_file_is_read_relative_to_the_config_directory_and_trimmed() {
        let dir = TempDir::new();
        std::fs::create_dir(dir.0.join("secrets")).unwrap();
        dir.write("secrets/pw", "from-file\r\n\n");
        dir.write("ca.pem", PEM);
        let path = dir.write(
            "krs.yml",
            &with_sandbox("  password_file: secrets/pw\n  ca_file: ca.pem\n"),
        );
        let config = Config::load_with_env(&path, &env).unwrap();
        assert_eq!(config.sandbox.password.expose(), "from-file");
        assert_eq!(config.sandbox.password_file, Some(dir.0.join("secrets/pw")));
        assert_eq!(config.sandbox.ca_file, Some(dir.0.join("ca.pem")));
    }

    #[test]
    fn an_unreadable_or_empty_password_file_names_the_path_but_not_the_content() {
        let dir = TempDir::new();
        dir.write("empty", "\n");
        dir.write("two-lines", "first-line-secret\nsecond\n");
        for (file, why) in [
            ("missing", "cannot read the password file: No such file"),
            ("empty", "the password file is empty"),
            (
                "two-lines",
                "the password in the file must not contain a line break",
            ),
        ] {
            let yaml = with_sandbox(&format!("  password_file: {file}\n"));
            let err = Config::from_yaml_str(&yaml, &dir.0.join("krs.yml"), &env).unwrap_err();
            let text = err.to_string();
            assert_eq!(text.lines().count(), 1, "{text}");
            assert!(text.contains(why), "{text}");
            assert!(
                text.contains(&format!("(got \"{}\")", dir.0.join(file).display())),
                "{text}"
            );
            assert!(!text.contains("first-line-secret"), "{text}");
        }
    }

    #[test]
    fn a_fifo_or_device_as_password_file_or_ca_file_is_refused_naming_the_field_and_path() {
        let dir = TempDir::new();
        let fifo = crate::config::testing::mkfifo(&dir.0.join("fifo"));
        let fifo = fifo.display();
        for (yaml, line) in [
            (
                with_sandbox(&format!("  password_file: {fifo}\n")),
                format!(
                    "sandbox.password_file: cannot read the password file: it is a FIFO, \
                     not a regular file (got \"{fifo}\")"
                ),
            ),
            (
                format!("{MINIMAL}  ca_file: {fifo}\n"),
                format!(
                    "sandbox.ca_file: cannot read the CA file: it is a FIFO, not a regular \
                     file (got \"{fifo}\")"
                ),
            ),
            (
                with_sandbox("  password_file: /dev/zero\n"),
                "sandbox.password_file: cannot read the password file: it is a character \
                 device, not a regular file (got \"/dev/zero\")"
                    .to_owned(),
            ),
        ] {
            assert_eq!(one_problem(&yaml), line);
        }
    }

    #[test]
    fn a_symlink_to_a_regular_password_file_or_ca_file_is_followed() {
        let dir = TempDir::new();
        let password = dir.write("pw", "linked-secret\n");
        let ca = dir.write("ca.pem", PEM);
        std::os::unix::fs::symlink(&password, dir.0.join("pw-link")).unwrap();
        std::os::unix::fs::symlink(&ca, dir.0.join("ca-link")).unwrap();
        let path = dir.write(
            "krs.yml",
            &with_sandbox("  password_file: pw-link\n  ca_file: ca-link\n"),
        );
        let config = Config::load_with_env(&path, &env).unwrap();
        assert_eq!(config.sandbox.password.expose(), "linked-secret");
    }

    #[test]
    fn password_and_password_file_together_are_an_error_and_so_is_neither() {
        assert_eq!(
            one_problem(&with_sandbox("  password: a\n  password_file: /x\n")),
            "sandbox: both password and password_file are set; keep exactly one"
        );
        assert_eq!(
            one_problem(&with_sandbox("")),
            "sandbox: one of password or password_file is required"
        );
        assert_eq!(
            one_problem(&with_sandbox("  password: ''\n")),
            "sandbox.password: must not be empty"
        );
    }

    #[test]
    fn empty_file_paths_are_rejected_rather_than_resolved_to_the_directory() {
        assert_eq!(
            problems(&with_sandbox("  password_file: ''\n  ca_file: ''\n")),
            [
                "sandbox.password_file: must not be empty",
                "sandbox.ca_file: must not be empty"
            ]
        );
    }

    #[test]
    fn a_password_is_never_echoed_in_problems() {
        let line = one_problem(&with_sandbox("  password: 123456\n"));
        assert_eq!(line, "sandbox.password: expected a string, got an integer");
    }

    #[test]
    fn a_missing_or_certificate_less_ca_file_is_a_problem() {
        let dir = TempDir::new();
        dir.write("not-pem.txt", "hello\n");
        let yaml = format!("{MINIMAL}  ca_file: not-pem.txt\n");
        let err = Config::from_yaml_str(&yaml, &dir.0.join("krs.yml"), &env).unwrap_err();
        assert!(
            err.to_string().contains("holds no PEM certificate"),
            "{err}"
        );
        let line = one_problem(&format!("{MINIMAL}  ca_file: /nonexistent/ca.pem\n"));
        assert!(
            line.starts_with("sandbox.ca_file: cannot read the CA file: No such file"),
            "{line}"
        );
        assert!(line.ends_with("(got \"/nonexistent/ca.pem\")"), "{line}");
    }

    #[test]
    fn username_is_required_non_empty_and_colon_free() {
        let yaml = "sandbox:\n  url: https://h\n  password: p\n";
        assert_eq!(one_problem(yaml), "sandbox.username: required");
        assert_eq!(
            one_problem(&format!("{yaml}  username: ' '\n")),
            "sandbox.username: must not be empty"
        );
        assert!(one_problem(&format!("{yaml}  username: 'a:b'\n")).contains("must not contain ':'"));
    }

    #[test]
    fn a_url_with_userinfo_is_rejected_without_echoing_the_password() {
        let lines = problems(
        "sandbox:\n  url: https://admin:TopSecret99@sandbox.example.com/\n  username: exporter\n  password: p\n",
    );
        assert_eq!(
        lines,
        ["sandbox.url: must not contain credentials (user:password@); set sandbox.username and sandbox.password or sandbox.password_file instead"]
    );
        let unparsable = problems(
        "sandbox:\n  url: 'https://admin:TopSecret99@bad host/'\n  username: exporter\n  password: p\n",
    );
        assert!(
            !unparsable.concat().contains("TopSecret99"),
            "{unparsable:?}"
        );
    }

    #[test]
    fn urls_must_be_absolute_http_without_query_or_fragment() {
        let case = |url: &str| {
            one_problem(&format!(
                "sandbox:\n  url: '{url}'\n  username: u\n  password: p\n"
            ))
        };
        assert_eq!(
        case("sandbox.example.com"),
        "sandbox.url: not an absolute URL; start it with https:// or http:// (got \"sandbox.example.com\")"
    );
        assert_eq!(
        case("ftp://sandbox.example.com"),
        "sandbox.url: the scheme must be http or https, not ftp (got \"ftp://sandbox.example.com\")"
    );
        assert!(case("https://h/?x=1").contains("must not have a query"));
        assert!(case("https://h/#top").contains("must not have a fragment"));
        assert!(case("https://").contains("not a valid URL: empty host"));
    }

    #[test]
    fn the_url_is_stored_as_a_base_that_api_paths_append_to_once() {
        for (given, base) in [
            (
                "https://sandbox.example.com",
                "https://sandbox.example.com/",
            ),
            (
                "https://sandbox.example.com/",
                "https://sandbox.example.com/",
            ),
            ("http://h:8080/krs", "http://h:8080/krs/"),
            ("https://h/api/v1/sandbox", "https://h/"),
            ("https://h/krs/api/v1/sandbox/", "https://h/krs/"),
            ("https://h/myapi/v1/sandbox", "https://h/myapi/v1/sandbox/"),
        ] {
            let config = ok(&format!(
                "sandbox:\n  url: {given}\n  username: u\n  password: p\n"
            ));
            assert_eq!(config.sandbox.url.as_str(), base, "{given}");
            assert_eq!(
                config
                    .sandbox
                    .url
                    .join("api/v1/sandbox/x")
                    .unwrap()
                    .as_str(),
                format!("{base}api/v1/sandbox/x")
            );
        }
    }
}

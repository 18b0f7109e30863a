//! Helpers for the config module's tests: fixed environment, fixtures, loading from text, the
//! problem lines of an error, and throw-away directories for `password_file` and `ca_file`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Config, ConfigError};

pub(crate) const SOURCE: &str = "/etc/krs/krs-exporter.yml";
pub(crate) const PASSWORD: &str = "hunter2-secret";
pub(crate) const ID_A: &str = "0d5b4e44-4c0e-4f0b-9a57-3f2d1b9e6c71";
pub(crate) const ID_B: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";

/// A valid sandbox section, to which tests add what they exercise.
pub(crate) const MINIMAL: &str = "\
sandbox:
  url: https://sandbox.example.com
  username: exporter
  password: hunter2-secret
";

pub(crate) fn env(name: &str) -> Option<String> {
    let value = match name {
        "KRS_PASSWORD" => "env-s3cret",
        "KRS_HOST" => "sandbox.example.com",
        "KRS_PORT" => "8443",
        "KRS_CONCURRENCY" => "8",
        "KRS_INSECURE" => "true",
        "KRS_TEAM" => "soc",
        "EMPTY" => "",
        _ => return None,
    };
    Some(value.to_owned())
}

pub(crate) fn load(yaml: &str) -> Result<Config, ConfigError> {
    Config::from_yaml_str(yaml, Path::new(SOURCE), &env)
}

pub(crate) fn ok(yaml: &str) -> Config {
    load(yaml).unwrap_or_else(|e| panic!("expected a valid config, got:\n{e}"))
}

/// The error's lines, without the `<file>: ` prefix every line has.
pub(crate) fn problems(yaml: &str) -> Vec<String> {
    let err = load(yaml).expect_err("expected problems");
    let prefix = format!("{SOURCE}: ");
    err.to_string()
        .lines()
        .map(|line| {
            line.strip_prefix(&prefix)
                .unwrap_or_else(|| panic!("line without the file name: {line}"))
                .to_owned()
        })
        .collect()
}

pub(crate) fn one_problem(yaml: &str) -> String {
    let lines = problems(yaml);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    lines.into_iter().next().unwrap_or_default()
}

pub(crate) fn with_sandbox(lines: &str) -> String {
    format!("sandbox:\n  url: https://sandbox.example.com\n  username: exporter\n{lines}")
}

/// A fresh directory under the system temp dir, removed when dropped.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "krs-config-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir is writable");
        TempDir(dir)
    }

    pub(crate) fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, content).expect("temp dir is writable");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

/// Makes a FIFO at `path` (no writer will ever open it).
pub(crate) fn mkfifo(path: &Path) -> PathBuf {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("run mkfifo");
    assert!(status.success(), "mkfifo {}", path.display());
    path.to_path_buf()
}

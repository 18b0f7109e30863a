//! `--web.config.file`: TLS, client certificates, basic auth and security headers for the
//! exporter's own endpoints, in the Prometheus exporter-toolkit `web-config.yml` format
//! (<https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md>).
//!
//! The module is transport-agnostic: it validates the file into a [`WebConfig`], hands out a
//! rustls acceptor ([`TlsAcceptorCache`]), checks `Authorization` header values
//! ([`BasicAuth`]) and lists the headers to add; the HTTP server wires them in.
//!
//! | part | file |
//! |---|---|
//! | the file as written (serde, unknown keys rejected) | `raw.rs` |
//! | `tls_server_config` → rustls `ServerConfig` | `tls.rs`, `go_names.rs`, `verifier.rs`, `san.rs` |
//! | certificate rotation | `acceptor.rs` |
//! | `basic_auth_users` | `basic_auth.rs` |
//! | `http_server_config.headers` | `headers.rs` |
//!
//! Differences from exporter-toolkit, all refused with a message rather than ignored:
//! - `min_version`/`max_version` `TLS10`/`TLS11`, CBC `cipher_suites`, and the curves
//!   `CurveP521`/`X25519MLKEM768`: rustls does not implement them.
//! - `rate_limit`: not supported; `--web.max-requests` bounds load instead.
//! - A `tls_server_config` without a certificate is an error (exporter-toolkit silently
//!   serves plain HTTP), as is an empty `client_allowed_sans` list.
//! - `client_auth_type` `VerifyClientCertIfGiven`/`RequireAndVerifyClientCert` need a client CA
//!   (Go would fall back to the system roots).
//!
//! - Exporter-toolkit re-reads the whole file on every request; here [`WebConfig::load`] reads
//!   it once (reloading it is the caller's decision), and [`TlsAcceptorCache`] follows the
//!   certificate, key and client CA files it names.
//!
//! `http_server_config.http2` is accepted and reported by [`WebConfig::http2`]; whether HTTP/2
//! is served is up to the server (the acceptor advertises no ALPN protocol, so clients use
//! HTTP/1.1). `prefer_server_cipher_suites` is honoured. A client CA given with
//! `RequestClientCert`/`RequireAnyClientCert` only names the acceptable CAs to the client, as
//! in Go; those policies never verify the chain.
//!
//! How the server uses it: load before binding any port (a bad file is a startup error); per
//! connection, take [`TlsAcceptorCache::acceptor`] and run its handshake inside the
//! connection's task under a timeout; per request, [`BasicAuth::check_async`] the
//! `Authorization` header (401 with [`WWW_AUTHENTICATE`] unless allowed) and add
//! [`WebConfig::headers`] to every response, 401s included.

/// The README's example, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeExample;

mod acceptor;
mod basic_auth;
pub mod file;
mod go_names;
mod headers;
mod raw;
mod san;
mod tls;
mod verifier;

#[cfg(test)]
mod test_support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::file::{read_capped_to_string, ReadError};

pub use acceptor::{TlsAcceptorCache, CHECK_INTERVAL};
pub use basic_auth::{AuthResult, BasicAuth, CACHE_CAPACITY, WWW_AUTHENTICATE};
pub use go_names::{ClientAuth, TlsVersion};
pub use tls::TlsSettings;

/// Web-config files larger than this are refused unread.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// A validated web configuration. The default is plain HTTP without authentication, which is
/// also what an empty file means.
#[derive(Clone, Debug)]
pub struct WebConfig {
    /// The file it was loaded from (empty for the default).
    source: PathBuf,
    tls: Option<TlsSettings>,
    http2: bool,
    headers: Vec<(String, String)>,
    basic_auth: Option<Arc<BasicAuth>>,
}

/// Why a web-config file was refused. Messages name the file, the key path and what was
/// expected; they never contain passwords, hashes or private keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebConfigError {
    #[error("web config {}: cannot read it: {error}", file.display())]
    Read { file: PathBuf, error: ReadError },
    /// YAML syntax, a wrong type, or an unknown key (serde names the key path).
    #[error("web config {}: {message}", file.display())]
    Syntax { file: PathBuf, message: String },
    #[error("web config {}: {key}: {problem}", file.display())]
    Invalid {
        file: PathBuf,
        key: String,
        problem: String,
    },
    #[error("web config {}: {key}: cannot read {}: {error}", file.display(), path.display())]
    ReadReferenced {
        file: PathBuf,
        key: String,
        path: PathBuf,
        error: ReadError,
    },
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            source: PathBuf::new(),
            tls: None,
            http2: true,
            headers: Vec::new(),
            basic_auth: None,
        }
    }
}

impl WebConfig {
    /// Reads and validates `path`, loading the TLS material once to check it. Relative file
    /// names inside resolve against the directory of `path`.
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let text =
            read_capped_to_string(path, MAX_FILE_BYTES).map_err(|error| WebConfigError::Read {
                file: path.to_owned(),
                error,
            })?;
        let base_dir = path.parent().unwrap_or(Path::new("."));
        let config = WebConfig::parse(&text, path, base_dir)?;
        if let Some(tls) = &config.tls {
            tls.server_config()?;
        }
        Ok(config)
    }

    /// Validates the text of a web-config file without touching the files it names.
    /// `file` appears in error messages; relative file names resolve against `base_dir`.
    pub fn parse(text: &str, file: &Path, base_dir: &Path) -> Result<WebConfig, WebConfigError> {
        let raw = raw::parse(text).map_err(|e| WebConfigError::Syntax {
            file: file.to_owned(),
            message: e.to_string(),
        })?;
        if raw.rate_limit.is_some() {
            return Err(WebConfigError::Invalid {
                file: file.to_owned(),
                key: "rate_limit".into(),
                problem: "not supported by krs-exporter; remove it and bound load with \
                          --web.max-requests"
                    .into(),
            });
        }
        let tls = match raw.tls_server_config {
            Some(t) => TlsSettings::from_raw(t, base_dir, file)?,
            None => None,
        };
        let http = raw.http_server_config.unwrap_or_default();
        let headers = headers::validate(&http.headers.unwrap_or_default()).map_err(|p| {
            WebConfigError::Invalid {
                file: file.to_owned(),
                key: format!("http_server_config.headers.{}", p.key),
                problem: p.problem,
            }
        })?;
        let users = raw.basic_auth_users.map(|u| u.0).unwrap_or_default();
        let basic_auth = BasicAuth::from_users(users, file)?.map(Arc::new);
        Ok(WebConfig {
            source: file.to_owned(),
            tls,
            http2: http.http2.unwrap_or(true),
            headers,
            basic_auth,
        })
    }

    /// The file this configuration came from (empty for the default).
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The TLS settings; `None` means plain HTTP.
    pub fn tls(&self) -> Option<&TlsSettings> {
        self.tls.as_ref()
    }

    /// The basic-auth users; `None` means no authentication.
    pub fn basic_auth(&self) -> Option<&Arc<BasicAuth>> {
        self.basic_auth.as_ref()
    }

    /// Headers to add to every response: canonical names from the allow-list, valid values.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// `http_server_config.http2` (default `true`): whether the operator allows HTTP/2.
    pub fn http2(&self) -> bool {
        self.http2
    }

    /// A one-line description for the startup log, without secrets.
    pub fn summary(&self) -> String {
        let tls = match &self.tls {
            None => "off".to_owned(),
            Some(t) => format!(
                "on ({}..{}, client auth {})",
                t.min_version().as_str(),
                t.max_version().as_str(),
                t.client_auth().as_str()
            ),
        };
        let users = self.basic_auth.as_ref().map_or(0, |b| b.users().count());
        format!(
            "tls {tls}, basic auth users {users}, extra headers {}",
            self.headers.len()
        )
    }
}

#[cfg(test)]
mod tests;

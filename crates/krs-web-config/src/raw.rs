//! The `web-config.yml` file exactly as written: serde types with every key optional and
//! unknown keys rejected. Nothing here is validated; [`super::WebConfig`] does that.
//!
//! Key names and value spellings follow the Prometheus exporter-toolkit format so that an
//! operator can reuse the file they already give Prometheus or node_exporter.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The whole file. An empty document (or `{}`) deserialises to all `None`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebConfig {
    pub tls_server_config: Option<RawTlsServerConfig>,
    pub http_server_config: Option<RawHttpServerConfig>,
    /// User name → bcrypt hash. Values stay out of `Debug` output via [`RawUsers`].
    pub basic_auth_users: Option<RawUsers>,
    /// Part of the exporter-toolkit format, deliberately not supported: captured as an opaque
    /// value only so that validation can explain why it is refused.
    pub rate_limit: Option<serde::de::IgnoredAny>,
}

/// `tls_server_config`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTlsServerConfig {
    pub cert: Option<String>,
    pub key: Option<RawSecret>,
    pub client_ca: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub client_auth_type: Option<String>,
    pub client_ca_file: Option<String>,
    pub client_allowed_sans: Option<Vec<String>>,
    pub min_version: Option<String>,
    pub max_version: Option<String>,
    pub cipher_suites: Option<Vec<String>>,
    pub prefer_server_cipher_suites: Option<bool>,
    pub curve_preferences: Option<Vec<String>>,
}

impl RawTlsServerConfig {
    /// Whether any key is set: `tls_server_config: {}` (or `~`) means plain HTTP.
    pub fn is_empty(&self) -> bool {
        let RawTlsServerConfig {
            cert,
            key,
            client_ca,
            cert_file,
            key_file,
            client_auth_type,
            client_ca_file,
            client_allowed_sans,
            min_version,
            max_version,
            cipher_suites,
            prefer_server_cipher_suites,
            curve_preferences,
        } = self;
        cert.is_none()
            && key.is_none()
            && client_ca.is_none()
            && cert_file.is_none()
            && key_file.is_none()
            && client_auth_type.is_none()
            && client_ca_file.is_none()
            && client_allowed_sans.is_none()
            && min_version.is_none()
            && max_version.is_none()
            && cipher_suites.is_none()
            && prefer_server_cipher_suites.is_none()
            && curve_preferences.is_none()
    }
}

/// `http_server_config`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttpServerConfig {
    pub http2: Option<bool>,
    /// Header name → value; a null or blank value means "do not set" (exporter-toolkit).
    pub headers: Option<BTreeMap<String, Option<String>>>,
}

/// `basic_auth_users`: user name → bcrypt hash.
#[derive(Default, Deserialize)]
#[serde(transparent)]
pub(super) struct RawUsers(pub BTreeMap<String, String>);

impl std::fmt::Debug for RawUsers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// An inline private key; its `Debug` never shows the value.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub(super) struct RawSecret(pub String);

impl std::fmt::Debug for RawSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Parses the text of a web-config file. A document that is empty or only comments is the
/// empty configuration (the YAML library would otherwise reject it as "EOF while parsing").
pub(super) fn parse(text: &str) -> Result<RawWebConfig, krs_yaml::DeError> {
    let is_blank = text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#') || l.trim() == "---");
    if is_blank {
        return Ok(RawWebConfig::default());
    }
    // `~` / `null` as the whole document also means "nothing configured". Deserialising
    // straight from the text (not via `Value`) keeps line and column in error messages.
    Ok(krs_yaml::from_str::<Option<RawWebConfig>>(text)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_or_comment_only_document_is_the_empty_configuration() {
        for text in ["", "\n", "# nothing\n", "---\n", "~\n", "{}\n"] {
            let raw = parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert!(raw.tls_server_config.is_none(), "{text:?}");
            assert!(raw.basic_auth_users.is_none(), "{text:?}");
        }
    }

    #[test]
    fn debug_output_of_users_and_inline_keys_hides_the_secrets() {
        let raw = parse(
            "basic_auth_users:\n  alice: $2y$04$abcdefghijklmnopqrstuu\ntls_server_config:\n  key: SECRETKEY\n",
        )
        .expect("valid YAML");
        let debug = format!("{raw:?}");
        assert!(debug.contains("alice"), "{debug}");
        assert!(!debug.contains("$2y$"), "{debug}");
        assert!(!debug.contains("SECRETKEY"), "{debug}");
    }
}

//! `tls_server_config`: validated TLS settings and how they become a rustls `ServerConfig`.
//!
//! Validation happens once, when the web-config file is loaded ([`TlsSettings::from_raw`]);
//! building reads the PEM files again each time, which is what certificate rotation
//! ([`super::TlsAcceptorCache`]) relies on. rustls with the ring provider is used throughout,
//! passed explicitly so that no process-wide default provider is needed.
//!
//! Mapping from the exporter-toolkit (Go `crypto/tls`) vocabulary:
//!
//! | key | here |
//! |---|---|
//! | `min_version` / `max_version` | `TLS12`, `TLS13`; `TLS10`/`TLS11` are refused (rustls has no TLS < 1.2) |
//! | `cipher_suites` | Go names of the TLS 1.2 ECDHE AES-GCM and ChaCha20 suites; CBC suites are refused; TLS 1.3 suites are always all enabled (Go does not let them be configured either) |
//! | `curve_preferences` | `X25519`, `CurveP256`, `CurveP384`, in the given order; `CurveP521` and `X25519MLKEM768` are refused (not in rustls' ring provider) |
//! | `prefer_server_cipher_suites` | honoured: rustls' `ignore_client_order` (default `true`, as in the format) |
//! | `client_allowed_sans` | exact match of a DNS, e-mail, URI or IP SAN; needs `RequireAnyClientCert` or `RequireAndVerifyClientCert` |

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::{ring as provider, CryptoProvider, SupportedKxGroup};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{RootCertStore, ServerConfig, SupportedCipherSuite, SupportedProtocolVersion};

use super::go_names::{cipher_suites, curves, ClientAuth, TlsVersion};
use super::raw::RawTlsServerConfig;
use super::verifier;
use super::WebConfigError;

/// PEM files larger than this are refused: certificates and keys are a few KiB.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// Validated `tls_server_config`. Cheap to clone.
#[derive(Clone)]
pub struct TlsSettings {
    /// The web-config file, for error messages.
    file: PathBuf,
    cert: PemSource,
    key: PemSource,
    client_ca: Option<PemSource>,
    client_auth: ClientAuth,
    min_version: TlsVersion,
    max_version: TlsVersion,
    /// TLS 1.2 suites in preference order; empty = provider default.
    cipher_suites: Vec<SupportedCipherSuite>,
    /// Key-exchange groups in preference order; empty = provider default.
    kx_groups: Vec<&'static dyn SupportedKxGroup>,
    prefer_server_cipher_suites: bool,
    client_allowed_sans: Option<Arc<[String]>>,
}

/// Where a PEM blob comes from: a file (re-read on rotation) or inline text in the config.
#[derive(Clone)]
pub(super) enum PemSource {
    File { key: &'static str, path: PathBuf },
    Inline { key: &'static str, pem: Arc<str> },
}

/// The PEM bytes of one build, in the order cert, key, client CA.
pub(super) struct PemBytes {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    pub client_ca: Option<Vec<u8>>,
}

impl TlsSettings {
    /// Validates `raw`; relative paths resolve against `base_dir`. `Ok(None)` when the section
    /// sets nothing (plain HTTP).
    pub(super) fn from_raw(
        raw: RawTlsServerConfig,
        base_dir: &Path,
        file: &Path,
    ) -> Result<Option<TlsSettings>, WebConfigError> {
        if raw.is_empty() {
            return Ok(None);
        }
        let invalid = |key: &str, problem: String| WebConfigError::Invalid {
            file: file.to_owned(),
            key: format!("tls_server_config.{key}"),
            problem,
        };
        let source = |inline_key: &'static str,
                      inline: Option<Arc<str>>,
                      file_key: &'static str,
                      path: Option<String>|
         -> Result<Option<PemSource>, WebConfigError> {
            match (inline, path) {
                (Some(_), Some(_)) => Err(invalid(
                    file_key,
                    format!("set either {inline_key} (inline PEM) or {file_key}, not both"),
                )),
                (Some(pem), None) => Ok(Some(PemSource::Inline {
                    key: inline_key,
                    pem,
                })),
                (None, Some(p)) if p.trim().is_empty() => Err(invalid(
                    file_key,
                    "expected a file name, found an empty string".into(),
                )),
                (None, Some(p)) => Ok(Some(PemSource::File {
                    key: file_key,
                    path: base_dir.join(p),
                })),
                (None, None) => Ok(None),
            }
        };
        let cert = source("cert", raw.cert.map(Into::into), "cert_file", raw.cert_file)?
            .ok_or_else(|| {
                invalid(
                    "cert_file",
                    "missing: TLS needs cert_file (or inline cert) and key_file".into(),
                )
            })?;
        let key = source("key", raw.key.map(|k| k.0.into()), "key_file", raw.key_file)?
            .ok_or_else(|| {
                invalid(
                    "key_file",
                    "missing: TLS needs key_file (or inline key) with cert_file".into(),
                )
            })?;
        let client_ca = source(
            "client_ca",
            raw.client_ca.map(Into::into),
            "client_ca_file",
            raw.client_ca_file,
        )?;

        let client_auth = match raw.client_auth_type.as_deref() {
            None | Some("") => ClientAuth::NoClientCert,
            Some(s) => ClientAuth::parse(s).ok_or_else(|| {
                invalid(
                    "client_auth_type",
                    format!(
                        "expected one of NoClientCert, RequestClientCert, RequireAnyClientCert, \
                         VerifyClientCertIfGiven, RequireAndVerifyClientCert; found {s:?}"
                    ),
                )
            })?,
        };
        match (client_auth, &client_ca) {
            (ClientAuth::NoClientCert, Some(_)) => {
                return Err(invalid(
                    "client_ca_file",
                    "a client CA is set but client_auth_type is NoClientCert; set \
                     client_auth_type: RequireAndVerifyClientCert to check client certificates"
                        .into(),
                ))
            }
            (
                ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert,
                None,
            ) => {
                return Err(invalid(
                    "client_ca_file",
                    format!(
                        "missing: client_auth_type {} verifies client certificates against \
                         client_ca_file (or inline client_ca)",
                        client_auth.as_str()
                    ),
                ))
            }
            _ => {}
        }

        let version = |key: &str, value: Option<String>, default: TlsVersion| match value {
            None => Ok(default),
            Some(s) => TlsVersion::parse(&s).map_err(|problem| invalid(key, problem)),
        };
        let min_version = version("min_version", raw.min_version, TlsVersion::Tls12)?;
        let max_version = version("max_version", raw.max_version, TlsVersion::Tls13)?;
        if min_version > max_version {
            return Err(invalid(
                "min_version",
                format!(
                    "{} is above max_version {}",
                    min_version.as_str(),
                    max_version.as_str()
                ),
            ));
        }

        let cipher_suites = cipher_suites(raw.cipher_suites.unwrap_or_default())
            .map_err(|p| invalid("cipher_suites", p))?;
        let kx_groups = curves(raw.curve_preferences.unwrap_or_default())
            .map_err(|p| invalid("curve_preferences", p))?;

        let client_allowed_sans = match raw.client_allowed_sans {
            None => None,
            Some(sans) if sans.is_empty() => {
                return Err(invalid(
                    "client_allowed_sans",
                    "the list is empty, which would refuse every client; list at least one \
                     SAN or remove the key"
                        .into(),
                ))
            }
            Some(_)
                if !matches!(
                    client_auth,
                    ClientAuth::RequireAnyClientCert | ClientAuth::RequireAndVerifyClientCert
                ) =>
            {
                return Err(invalid(
                    "client_allowed_sans",
                    format!(
                        "needs client_auth_type RequireAnyClientCert or \
                         RequireAndVerifyClientCert, found {}",
                        client_auth.as_str()
                    ),
                ))
            }
            Some(sans) => Some(sans.into()),
        };

        Ok(Some(TlsSettings {
            file: file.to_owned(),
            cert,
            key,
            client_ca,
            client_auth,
            min_version,
            max_version,
            cipher_suites,
            kx_groups,
            prefer_server_cipher_suites: raw.prefer_server_cipher_suites.unwrap_or(true),
            client_allowed_sans,
        }))
    }

    /// The client-certificate policy.
    pub fn client_auth(&self) -> ClientAuth {
        self.client_auth
    }

    /// The lowest protocol version offered.
    pub fn min_version(&self) -> TlsVersion {
        self.min_version
    }

    /// The highest protocol version offered.
    pub fn max_version(&self) -> TlsVersion {
        self.max_version
    }

    /// The files that are re-read when they change (inline PEM never changes).
    pub fn watched_files(&self) -> Vec<&Path> {
        [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|s| match s {
                PemSource::File { path, .. } => Some(path.as_path()),
                PemSource::Inline { .. } => None,
            })
            .collect()
    }

    /// Reads the certificate, key and client CA now and builds a rustls server configuration.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, WebConfigError> {
        self.build(&self.read_pem()?)
    }

    /// Reads the PEM material (files now, inline text as configured).
    pub(super) fn read_pem(&self) -> Result<PemBytes, WebConfigError> {
        Ok(PemBytes {
            cert: self.read_source(&self.cert)?,
            key: self.read_source(&self.key)?,
            client_ca: self
                .client_ca
                .as_ref()
                .map(|s| self.read_source(s))
                .transpose()?,
        })
    }

    /// Builds a server configuration from already-read PEM material.
    pub(super) fn build(&self, pem: &PemBytes) -> Result<Arc<ServerConfig>, WebConfigError> {
        let cert_chain = CertificateDer::pem_slice_iter(&pem.cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.invalid_source(&self.cert, format!("not a PEM certificate: {e}")))?;
        if cert_chain.is_empty() {
            return Err(self.invalid_source(&self.cert, "no CERTIFICATE block found".into()));
        }
        // The parser's error text may quote input lines: never show it for the key.
        let key = PrivateKeyDer::from_pem_slice(&pem.key).map_err(|_| {
            self.invalid_source(
                &self.key,
                "no usable PRIVATE KEY block found (PKCS#8, PKCS#1 or SEC1 PEM expected)".into(),
            )
        })?;

        let roots = match (&self.client_ca, &pem.client_ca) {
            (Some(source), Some(bytes)) => Some(Arc::new(self.roots(source, bytes)?)),
            _ => None,
        };

        let provider = Arc::new(self.provider());
        let client_verifier = verifier::client_verifier(
            self.client_auth,
            roots,
            self.client_allowed_sans.clone(),
            &provider,
        )
        .map_err(|problem| self.invalid("client_auth_type", problem))?;
        let versions: Vec<&'static SupportedProtocolVersion> = [
            (TlsVersion::Tls12, &rustls::version::TLS12),
            (TlsVersion::Tls13, &rustls::version::TLS13),
        ]
        .into_iter()
        .filter(|(v, _)| (self.min_version..=self.max_version).contains(v))
        .map(|(_, p)| p)
        .collect();
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)
            .map_err(|e| self.invalid("cipher_suites", e.to_string()))?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(cert_chain, key)
            .map_err(|e| {
                self.invalid_source(
                    &self.key,
                    format!("the key does not fit the certificate or is unusable: {e}"),
                )
            })?;
        config.ignore_client_order = self.prefer_server_cipher_suites;
        Ok(Arc::new(config))
    }

    /// The ring provider restricted to the configured suites and groups.
    fn provider(&self) -> CryptoProvider {
        let mut p = provider::default_provider();
        if !self.cipher_suites.is_empty() {
            let tls13 = p
                .cipher_suites
                .iter()
                .copied()
                .filter(|s| matches!(s, SupportedCipherSuite::Tls13(_)));
            p.cipher_suites = tls13.chain(self.cipher_suites.iter().copied()).collect();
        }
        if !self.kx_groups.is_empty() {
            p.kx_groups.clone_from(&self.kx_groups);
        }
        p
    }

    fn roots(&self, source: &PemSource, pem: &[u8]) -> Result<RootCertStore, WebConfigError> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.invalid_source(source, format!("not a PEM certificate: {e}")))?;
        let mut roots = RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(self.invalid_source(source, "no usable CA certificate found".into()));
        }
        Ok(roots)
    }

    fn read_source(&self, source: &PemSource) -> Result<Vec<u8>, WebConfigError> {
        match source {
            PemSource::Inline { pem, .. } => Ok(pem.as_bytes().to_vec()),
            PemSource::File { key, path } => {
                let read_error = |error| WebConfigError::ReadReferenced {
                    file: self.file.clone(),
                    key: format!("tls_server_config.{key}"),
                    path: path.clone(),
                    error,
                };
                crate::file::read_capped(path, MAX_PEM_BYTES).map_err(read_error)
            }
        }
    }

    fn invalid(&self, key: &str, problem: String) -> WebConfigError {
        WebConfigError::Invalid {
            file: self.file.clone(),
            key: format!("tls_server_config.{key}"),
            problem,
        }
    }

    fn invalid_source(&self, source: &PemSource, problem: String) -> WebConfigError {
        match source {
            PemSource::File { key, path } => {
                self.invalid(key, format!("{}: {problem}", path.display()))
            }
            PemSource::Inline { key, .. } => self.invalid(key, problem),
        }
    }
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("client_ca", &self.client_ca)
            .field("client_auth", &self.client_auth)
            .field("min_version", &self.min_version)
            .field("max_version", &self.max_version)
            .field("cipher_suites", &self.cipher_suites)
            .field("kx_groups", &self.kx_groups)
            .field(
                "prefer_server_cipher_suites",
                &self.prefer_server_cipher_suites,
            )
            .field("client_allowed_sans", &self.client_allowed_sans)
            .finish()
    }
}

impl fmt::Debug for PemSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PemSource::File { path, .. } => write!(f, "{}", path.display()),
            // Inline PEM may be a private key: never print it.
            PemSource::Inline { key, .. } => write!(f, "<inline {key}>"),
        }
    }
}

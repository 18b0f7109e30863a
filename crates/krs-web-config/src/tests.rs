//! Loading and validating whole web-config files: every key, and each way a file is refused.

use std::path::Path;

use super::test_support::{hash, write, Ca};
use super::*;

/// A directory with a server certificate, key and client CA, ready for a web-config file.
struct Files {
    dir: tempfile::TempDir,
    server: super::test_support::Leaf,
    client_ca: Ca,
}

impl Files {
    fn new() -> Files {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = Ca::new("server CA").server("server");
        let client_ca = Ca::new("client CA");
        write(dir.path(), "server.crt", &server.cert_pem);
        write(dir.path(), "server.key", &server.key_pem);
        write(dir.path(), "clients.crt", &client_ca.cert_pem());
        Files {
            dir,
            server,
            client_ca,
        }
    }

    fn load(&self, yaml: &str) -> Result<WebConfig, WebConfigError> {
        WebConfig::load(&write(self.dir.path(), "web-config.yml", yaml))
    }

    fn error(&self, yaml: &str) -> String {
        let err = self.load(yaml).expect_err("the file should be refused");
        let msg = err.to_string();
        assert!(msg.contains("web-config.yml"), "names the file: {msg}");
        msg
    }
}

const TLS: &str = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";

#[test]
fn every_key_of_the_format_is_parsed() {
    let files = Files::new();
    let yaml = format!(
        "{TLS}  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: clients.crt
  client_allowed_sans: [prometheus.example, 10.0.0.1]
  min_version: TLS12
  max_version: TLS13
  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]
  prefer_server_cipher_suites: false
  curve_preferences: [X25519, CurveP256]
http_server_config:
  http2: false
  headers:
    Strict-Transport-Security: max-age=31536000
    X-Frame-Options: deny
    X-Content-Type-Options: nosniff
    X-XSS-Protection: '1; mode=block'
    Content-Security-Policy: default-src 'self'
basic_auth_users:
  alice: {}
  bob: {}
",
        hash("a"),
        hash("b")
    );
    let config = files.load(&yaml).expect("valid");
    let tls = config.tls().expect("TLS on");
    assert_eq!(tls.client_auth(), ClientAuth::RequireAndVerifyClientCert);
    assert_eq!(tls.min_version(), TlsVersion::Tls12);
    assert_eq!(tls.max_version(), TlsVersion::Tls13);
    let dir = files.dir.path();
    assert_eq!(
        tls.watched_files(),
        [
            dir.join("server.crt"),
            dir.join("server.key"),
            dir.join("clients.crt")
        ]
    );
    let server_config = tls.server_config().expect("builds");
    assert!(
        !server_config.ignore_client_order,
        "prefer_server_cipher_suites: false"
    );
    assert!(!config.http2());
    assert_eq!(config.headers().len(), 5);
    assert!(config
        .headers()
        .contains(&("X-Frame-Options".to_owned(), "deny".to_owned())));
    let users: Vec<&str> = config.basic_auth().expect("auth on").users().collect();
    assert_eq!(users, ["alice", "bob"]);
    assert_eq!(
        config.summary(),
        "tls on (TLS12..TLS13, client auth RequireAndVerifyClientCert), basic auth users 2, \
         extra headers 5"
    );
}

#[test]
fn inline_certificate_key_and_client_ca_are_accepted() {
    let files = Files::new();
    let indent = |pem: &str| {
        pem.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    let yaml = format!(
        "tls_server_config:\n  cert: |\n{}  key: |\n{}  client_ca: |\n{}  client_auth_type: RequireAndVerifyClientCert\n",
        indent(&files.server.cert_pem),
        indent(&files.server.key_pem),
        indent(&files.client_ca.cert_pem())
    );
    let config = files.load(&yaml).expect("valid inline PEM");
    let tls = config.tls().expect("TLS on");
    assert!(tls.watched_files().is_empty());
    let debug = format!("{tls:?}");
    assert!(debug.contains("<inline key>"), "{debug}");
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");
}

#[test]
fn an_empty_file_means_plain_http_without_authentication() {
    let files = Files::new();
    for yaml in ["", "{}\n", "# comments only\n", "tls_server_config: {}\n"] {
        let config = files.load(yaml).expect("valid");
        assert!(config.tls().is_none(), "{yaml:?}");
        assert!(config.basic_auth().is_none(), "{yaml:?}");
        assert!(config.headers().is_empty(), "{yaml:?}");
        assert!(config.http2(), "defaults to true like exporter-toolkit");
    }
    assert!(WebConfig::default().http2());
}

#[test]
fn unknown_keys_are_refused_with_their_path() {
    let files = Files::new();
    let msg = files.error("tls_server_confg: {}\n");
    assert!(msg.contains("unknown field `tls_server_confg`"), "{msg}");
    let msg = files.error(&format!("{TLS}  cert_flie: x\n"));
    assert!(
        msg.contains("tls_server_config") && msg.contains("`cert_flie`"),
        "{msg}"
    );
    let msg = files.error("http_server_config:\n  http3: true\n");
    assert!(
        msg.contains("http_server_config") && msg.contains("`http3`"),
        "{msg}"
    );
}

#[test]
fn a_tls_section_without_a_key_file_is_refused() {
    let files = Files::new();
    let msg = files.error("tls_server_config:\n  cert_file: server.crt\n");
    assert!(msg.contains("tls_server_config.key_file: missing"), "{msg}");
    let msg = files.error("tls_server_config:\n  min_version: TLS13\n");
    assert!(
        msg.contains("tls_server_config.cert_file: missing"),
        "{msg}"
    );
    let msg = files.error(&format!("{TLS}  cert: inline\n"));
    assert!(
        msg.contains("either cert (inline PEM) or cert_file"),
        "{msg}"
    );
    let msg = files.error("tls_server_config:\n  cert_file: ''\n  key_file: server.key\n");
    assert!(msg.contains("empty string"), "{msg}");
}

#[test]
fn an_unknown_client_auth_type_is_refused_listing_the_valid_ones() {
    let files = Files::new();
    let msg = files.error(&format!(
        "{TLS}  client_auth_type: RequireClientCertPlease\n"
    ));
    assert!(msg.contains("tls_server_config.client_auth_type"), "{msg}");
    assert!(msg.contains("RequireAndVerifyClientCert"), "{msg}");
    assert!(msg.contains("\"RequireClientCertPlease\""), "{msg}");
    // exporter-toolkit's legacy alias still works.
    let config = files
        .load(&format!("{TLS}  client_auth_type: RequireClientCert\n"))
        .expect("alias accepted");
    assert_eq!(
        config.tls().map(TlsSettings::client_auth),
        Some(ClientAuth::RequireAnyClientCert)
    );
}

#[test]
fn verifying_client_auth_types_need_a_client_ca_and_no_client_cert_refuses_one() {
    let files = Files::new();
    for auth in ["VerifyClientCertIfGiven", "RequireAndVerifyClientCert"] {
        let msg = files.error(&format!("{TLS}  client_auth_type: {auth}\n"));
        assert!(
            msg.contains("tls_server_config.client_ca_file: missing"),
            "{msg}"
        );
    }
    let msg = files.error(&format!("{TLS}  client_ca_file: clients.crt\n"));
    assert!(msg.contains("client_auth_type is NoClientCert"), "{msg}");
}

#[test]
fn tls_10_and_11_and_an_inverted_range_are_refused() {
    let files = Files::new();
    for (key, version) in [("min_version", "TLS10"), ("max_version", "TLS11")] {
        let msg = files.error(&format!("{TLS}  {key}: {version}\n"));
        assert!(msg.contains(&format!(
            "tls_server_config.{key}: {version} is not supported"
        )));
        assert!(msg.contains("TLS 1.2 and 1.3 only"), "{msg}");
    }
    let msg = files.error(&format!(
        "{TLS}  min_version: TLS13\n  max_version: TLS12\n"
    ));
    assert!(msg.contains("TLS13 is above max_version TLS12"), "{msg}");
}

#[test]
fn unsupported_suites_curves_and_san_settings_are_refused_by_key() {
    let files = Files::new();
    let msg = files.error(&format!(
        "{TLS}  cipher_suites: [TLS_RSA_WITH_AES_128_CBC_SHA]\n"
    ));
    assert!(msg.contains("tls_server_config.cipher_suites"), "{msg}");
    let msg = files.error(&format!("{TLS}  curve_preferences: [CurveP521]\n"));
    assert!(msg.contains("tls_server_config.curve_preferences"), "{msg}");
    let msg = files.error(&format!("{TLS}  client_allowed_sans: [a.example]\n"));
    assert!(
        msg.contains("needs client_auth_type RequireAnyClientCert"),
        "{msg}"
    );
    let msg = files.error(&format!(
        "{TLS}  client_auth_type: RequireAnyClientCert\n  client_allowed_sans: []\n"
    ));
    assert!(msg.contains("the list is empty"), "{msg}");
}

#[test]
fn headers_outside_the_allow_list_are_refused_with_the_key_path() {
    let files = Files::new();
    let msg = files.error("http_server_config:\n  headers:\n    Authorization: Basic x\n");
    assert!(
        msg.contains("http_server_config.headers.Authorization: this header cannot be configured"),
        "{msg}"
    );
    let msg = files.error("http_server_config:\n  headers:\n    Content-Type: text/html\n");
    assert!(msg.contains("headers.Content-Type"), "{msg}");
}

#[test]
fn rate_limit_is_refused_with_the_alternative() {
    let files = Files::new();
    let msg = files.error("rate_limit:\n  interval: 1s\n  burst: 10\n");
    assert!(msg.contains("rate_limit: not supported") && msg.contains("--web.max-requests"));
}

#[test]
fn relative_file_names_resolve_against_the_config_directory() {
    let files = Files::new();
    // The test's working directory is the crate root, not the temp dir: resolution must not
    // depend on it.
    let config = files.load(TLS).expect("loads via the config's directory");
    let cert = config.tls().expect("TLS on").watched_files()[0].to_owned();
    assert_eq!(cert, files.dir.path().join("server.crt"));
}

#[test]
fn a_missing_or_mismatched_certificate_file_is_reported_with_key_and_path() {
    let files = Files::new();
    let msg = files.error("tls_server_config:\n  cert_file: nope.crt\n  key_file: server.key\n");
    assert!(
        msg.contains("tls_server_config.cert_file: cannot read"),
        "{msg}"
    );
    assert!(msg.contains("nope.crt"), "{msg}");

    let other = Ca::new("x").server("other");
    write(files.dir.path(), "other.key", &other.key_pem);
    let msg = files.error("tls_server_config:\n  cert_file: server.crt\n  key_file: other.key\n");
    assert!(msg.contains("tls_server_config.key_file"), "{msg}");
    assert!(msg.contains("does not fit the certificate"), "{msg}");

    write(files.dir.path(), "garbage.crt", "not pem");
    let msg = files.error("tls_server_config:\n  cert_file: garbage.crt\n  key_file: server.key\n");
    assert!(msg.contains("no CERTIFICATE block"), "{msg}");
}

#[test]
fn error_messages_never_contain_key_material_or_hashes() {
    let files = Files::new();
    let secret_key = "-----BEGIN PRIVATE KEY-----\nTOPSECRETKEYMATERIAL\n-----END PRIVATE KEY-----";
    let yaml = format!(
        "tls_server_config:\n  cert_file: server.crt\n  key: |\n    {}\n",
        secret_key.replace('\n', "\n    ")
    );
    let msg = files.error(&yaml);
    assert!(msg.contains("tls_server_config.key"), "{msg}");
    assert!(!msg.contains("TOPSECRET"), "{msg}");

    write(files.dir.path(), "bad.key", secret_key);
    let msg = files.error("tls_server_config:\n  cert_file: server.crt\n  key_file: bad.key\n");
    assert!(!msg.contains("TOPSECRET"), "{msg}");

    let msg = files.error("basic_auth_users:\n  alice: $2y$10$tooshort\n");
    assert!(msg.contains("basic_auth_users.alice"), "{msg}");
    assert!(!msg.contains("tooshort"), "{msg}");
}

#[test]
fn a_fifo_as_web_config_or_certificate_file_is_refused_naming_the_key_and_path() {
    let files = Files::new();
    let fifo = crate::file::tests::mkfifo(&files.dir.path().join("fifo"));
    for key in ["cert_file", "key_file", "client_ca_file"] {
        let mut paths = [("cert_file", "server.crt"), ("key_file", "server.key")]
            .into_iter()
            .map(|(k, v)| (k, v.to_owned()))
            .collect::<Vec<_>>();
        paths.retain(|(k, _)| *k != key);
        paths.push((key, fifo.display().to_string()));
        let mut yaml = "tls_server_config:\n".to_owned();
        for (k, v) in &paths {
            yaml.push_str(&format!("  {k}: {v}\n"));
        }
        if key == "client_ca_file" {
            yaml.push_str("  client_auth_type: RequireAndVerifyClientCert\n");
        }
        let msg = files.error(&yaml);
        assert!(
            msg.ends_with(&format!(
                "tls_server_config.{key}: cannot read {}: it is a FIFO, not a regular file",
                fifo.display()
            )),
            "{msg}"
        );
    }
    let err = WebConfig::load(&fifo).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "web config {}: cannot read it: it is a FIFO, not a regular file",
            fifo.display()
        )
    );
}

#[test]
fn an_unreadable_config_file_names_itself() {
    let err = WebConfig::load(Path::new("/nonexistent/web-config.yml")).unwrap_err();
    assert!(matches!(err, WebConfigError::Read { .. }), "{err:?}");
    assert!(
        err.to_string().contains("/nonexistent/web-config.yml"),
        "{err}"
    );
}

#[test]
fn yaml_type_errors_name_the_key() {
    let files = Files::new();
    let msg = files.error("http_server_config:\n  http2: sometimes\n");
    assert!(msg.contains("http_server_config.http2"), "{msg}");
}

//! Real TLS handshakes against [`TlsAcceptorCache`]: each client-auth policy, SAN filtering,
//! protocol versions, and certificate rotation on disk.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::SanType;

use super::*;
use crate::test_support::{spawn_tls_server, within, write, Ca, Client, Leaf};
use crate::WebConfig;

/// Writes the server certificate, key and (optionally) client CA plus a web-config file that
/// names them, and returns an acceptor cache built from it.
fn cache_for(dir: &Path, server: &Leaf, extra: &str, client_ca: Option<&Ca>) -> TlsAcceptorCache {
    write(dir, "server.crt", &server.cert_pem);
    write(dir, "server.key", &server.key_pem);
    if let Some(ca) = client_ca {
        write(dir, "clients.crt", &ca.cert_pem());
    }
    let config = write(
        dir,
        "web-config.yml",
        &format!("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n{extra}"),
    );
    let web = WebConfig::load(&config).expect("valid web config");
    TlsAcceptorCache::new(web.tls().expect("TLS configured").clone()).expect("material loads")
}

const REQUIRE_AND_VERIFY: &str =
    "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: clients.crt\n";

#[tokio::test]
async fn a_client_trusting_the_ca_completes_a_handshake_and_sees_the_configured_certificate() {
    within(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = Ca::new("server CA");
        let server = ca.server("server A");
        let cache = Arc::new(cache_for(dir.path(), &server, "", None));
        let addr = spawn_tls_server(cache).await;

        let seen = Client::trusting(&ca)
            .connect(addr)
            .await
            .expect("handshake");
        assert_eq!(seen, server.cert_der);
    })
    .await;
}

#[tokio::test]
async fn require_and_verify_refuses_clients_without_a_certificate_or_from_another_ca() {
    within(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let (ca, clients, strangers) =
            (Ca::new("server CA"), Ca::new("client CA"), Ca::new("other"));
        let server = ca.server("server");
        let cache = cache_for(dir.path(), &server, REQUIRE_AND_VERIFY, Some(&clients));
        let addr = spawn_tls_server(Arc::new(cache)).await;

        let err = Client::trusting(&ca)
            .connect(addr)
            .await
            .expect_err("no client cert");
        assert!(!err.is_empty());
        let stranger = strangers.issue("stranger", vec![]);
        Client::trusting(&ca)
            .with_identity(&stranger)
            .connect(addr)
            .await
            .expect_err("a certificate from another CA is refused");

        let prometheus = clients.issue("prometheus", vec![]);
        Client::trusting(&ca)
            .with_identity(&prometheus)
            .connect(addr)
            .await
            .expect("a certificate from the client CA is accepted");
    })
    .await;
}

#[tokio::test]
async fn client_allowed_sans_admits_only_certificates_naming_a_listed_san() {
    within(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let (ca, clients) = (Ca::new("server CA"), Ca::new("client CA"));
        let extra = format!("{REQUIRE_AND_VERIFY}  client_allowed_sans: [prometheus.example]\n");
        let cache = cache_for(dir.path(), &ca.server("server"), &extra, Some(&clients));
        let addr = spawn_tls_server(Arc::new(cache)).await;

        let dns = |n: &str| SanType::DnsName(n.try_into().expect("valid DNS name"));
        let listed = clients.issue("p", vec![dns("prometheus.example")]);
        let unlisted = clients.issue("q", vec![dns("grafana.example")]);
        let client = Client::trusting(&ca);
        client
            .with_identity(&listed)
            .connect(addr)
            .await
            .expect("listed SAN is accepted");
        Client::trusting(&ca)
            .with_identity(&unlisted)
            .connect(addr)
            .await
            .expect_err("unlisted SAN is refused");
    })
    .await;
}

#[tokio::test]
async fn require_any_client_cert_accepts_a_self_signed_certificate_but_not_none() {
    within(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = Ca::new("server CA");
        let extra = "  client_auth_type: RequireAnyClientCert\n";
        let cache = cache_for(dir.path(), &ca.server("server"), extra, None);
        let addr = spawn_tls_server(Arc::new(cache)).await;

        let anyone = Ca::new("self").issue("anyone", vec![]);
        Client::trusting(&ca)
            .with_identity(&anyone)
            .connect(addr)
            .await
            .expect("any certificate is accepted");
        Client::trusting(&ca)
            .connect(addr)
            .await
            .expect_err("a certificate is required");
    })
    .await;
}

#[tokio::test]
async fn verify_if_given_admits_anonymous_clients_but_checks_a_sent_certificate() {
    within(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let (ca, clients) = (Ca::new("server CA"), Ca::new("client CA"));
        let extra = "  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: clients.crt\n";
        let cache = cache_for(dir.path(), &ca.server("server"), extra, Some(&clients));
        let addr = spawn_tls_server(Arc::new(cache)).await;

        Client::trusting(&ca)
            .connect(addr)
            .await
            .expect("anonymous is fine");
        let stranger = Ca::new("other").issue("stranger", vec![]);
        Client::trusting(&ca)
            .with_identity(&stranger)
            .connect(addr)
            .await
            .expect_err("an unverifiable certificate is refused");
    })
    .await;
}

#[tokio::test]
async fn min_version_tls13_refuses_a_tls12_only_client() {
    within(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = Ca::new("server CA");
        let cache = cache_for(dir.path(), &ca.server("s"), "  min_version: TLS13\n", None);
        let addr = spawn_tls_server(Arc::new(cache)).await;

        let mut tls12 = Client::trusting(&ca);
        static TLS12_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
        tls12.versions = TLS12_ONLY;
        tls12
            .connect(addr)
            .await
            .expect_err("TLS 1.2 is below min_version");
        Client::trusting(&ca)
            .connect(addr)
            .await
            .expect("TLS 1.3 works");
    })
    .await;
}

/// Connects until the server presents `expected`, or fails after `deadline`.
async fn wait_for_certificate(client: &Client<'_>, addr: std::net::SocketAddr, expected: &Leaf) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = client
            .connect(addr)
            .await
            .expect("handshake during rotation");
        if seen == expected.cert_der {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_certificate_rewritten_on_disk_is_served_after_the_next_check() {
    within(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = Ca::new("server CA");
        let (a, b) = (ca.server("server A"), ca.server("server B"));
        let cache = Arc::new(cache_for(dir.path(), &a, "", None));
        let addr = spawn_tls_server(Arc::clone(&cache)).await;
        let client = Client::trusting(&ca);
        assert_eq!(client.connect(addr).await.expect("handshake"), a.cert_der);

        write(dir.path(), "server.crt", &b.cert_pem);
        write(dir.path(), "server.key", &b.key_pem);
        wait_for_certificate(&client, addr, &b).await;
        assert_eq!(cache.reloads(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_broken_rotation_keeps_serving_the_previous_certificate_until_it_is_fixed() {
    within(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = Ca::new("server CA");
        let (a, b) = (ca.server("server A"), ca.server("server B"));
        let cache = cache_for(dir.path(), &a, "", None).with_check_interval(Duration::ZERO);
        let cache = Arc::new(cache);
        let addr = spawn_tls_server(Arc::clone(&cache)).await;
        let client = Client::trusting(&ca);

        // Half a rotation: B's certificate with A's key does not load.
        write(dir.path(), "server.crt", &b.cert_pem);
        for _ in 0..3 {
            assert_eq!(
                client.connect(addr).await.expect("still serving"),
                a.cert_der
            );
        }
        assert_eq!(cache.failed_reloads(), 1, "one broken state, reported once");
        std::fs::remove_file(dir.path().join("server.key")).expect("remove key");
        for _ in 0..3 {
            let seen = client.connect(addr).await.expect("still serving");
            assert_eq!(seen, a.cert_der);
        }
        assert_eq!(
            cache.failed_reloads(),
            2,
            "another broken state, reported once"
        );
        assert_eq!(cache.reloads(), 0);

        write(dir.path(), "server.key", &b.key_pem);
        wait_for_certificate(&client, addr, &b).await;
        assert_eq!(cache.reloads(), 1);
    })
    .await;
}

#[test]
fn an_unchanged_file_is_not_reloaded() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Ca::new("server CA");
    let a = ca.server("server A");
    let cache = cache_for(dir.path(), &a, "", None).with_check_interval(Duration::ZERO);
    // Rewriting identical bytes changes the mtime but not the material.
    write(dir.path(), "server.crt", &a.cert_pem);
    for _ in 0..3 {
        let _ = cache.acceptor();
    }
    assert_eq!(cache.reloads(), 0);
}

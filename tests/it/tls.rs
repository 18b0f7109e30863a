//! The exporter's own endpoints behind `--web.config.file`: TLS and basic auth, proven with
//! real clients — curl, and Prometheus scraping over TLS with credentials.

use std::process::{Command, Stdio};

use krs_sandbox_sim::SimTask;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};

use crate::support::{eventually, free_port, id, within, write_file, ConfigYaml, Process, Sandbox};

const USER: &str = "prometheus";
const WEB_PASSWORD: &str = "scrape-Pa55-3e1d";

/// A CA, a server certificate for 127.0.0.1 signed by it, and a web config using both.
fn web_config(dir: &std::path::Path) -> std::path::PathBuf {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "krs test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "krs-exporter");
    params.subject_alt_names = vec![
        SanType::DnsName("localhost".try_into().unwrap()),
        SanType::IpAddress([127, 0, 0, 1].into()),
    ];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    write_file(dir, "ca.pem", &ca.pem());
    write_file(dir, "server.pem", &cert.pem());
    write_file(dir, "server.key", &key.serialize_pem());
    let hash = bcrypt::hash(WEB_PASSWORD, 4).unwrap();
    write_file(
        dir,
        "web.yml",
        &format!(
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  min_version: TLS12\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\nbasic_auth_users:\n  {USER}: '{hash}'\n"
        ),
    )
}

fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-D", "-", "--max-time", "5"])
        .args(args)
        .output()
        .expect("curl runs");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn curl_and_prometheus_reach_the_metrics_over_tls_only_with_the_right_credentials() {
    within(async {
        let t = id(300);
        let sandbox = Sandbox::start(vec![SimTask::new(&t)]).await;
        let dir = tempfile::tempdir().unwrap();
        let web = web_config(dir.path());
        let p = Process::spawn(
            &ConfigYaml::new(&sandbox.url(), &[&t]).render(),
            &["--web.config.file", web.to_str().unwrap()],
        );
        let ca = dir.path().join("ca.pem");
        let ca = ca.to_str().unwrap();
        let url = format!("https://127.0.0.1:{}/metrics", p.port);
        let creds = format!("{USER}:{WEB_PASSWORD}");

        let (head, err) = eventually("the TLS endpoint answers", || async {
            let (head, err) = curl(&["--cacert", ca, "-u", &creds, &url]);
            head.starts_with("HTTP/1.1 200").then_some((head, err))
        })
        .await;
        assert!(err.is_empty(), "{err}");
        assert!(head.to_lowercase().contains("x-frame-options: deny"), "{head}");

        let (head, _) = curl(&["--cacert", ca, &url]);
        assert!(head.starts_with("HTTP/1.1 401"), "no credentials: {head}");
        assert!(head.to_lowercase().contains("www-authenticate: basic"), "{head}");
        let (head, _) = curl(&["--cacert", ca, "-u", &format!("{USER}:wrong"), &url]);
        assert!(head.starts_with("HTTP/1.1 401"), "wrong password: {head}");
        let (head, err) = curl(&["-u", &creds, &url]);
        assert!(head.is_empty() && !err.is_empty(), "an unknown CA must fail: {head}");
        let (head, _) = curl(&["-u", &creds, &format!("http://127.0.0.1:{}/metrics", p.port)]);
        assert!(!head.starts_with("HTTP/1.1 200"), "plain HTTP must not be served: {head}");

        // The real Prometheus scrapes it over TLS with basic auth.
        let prom_port = free_port();
        let prom_config = write_file(
            dir.path(),
            "prometheus.yml",
            &format!(
                "global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: krs\n    scheme: https\n    tls_config: {{ca_file: {ca}}}\n    basic_auth: {{username: {USER}, password: {WEB_PASSWORD}}}\n    static_configs: [{{targets: ['127.0.0.1:{}']}}]\n",
                p.port
            ),
        );
        let mut prometheus = Command::new("prometheus")
            .arg(format!("--config.file={}", prom_config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus runs (scripts/test.sh installs it)");
        let query = format!(
            "http://127.0.0.1:{prom_port}/api/v1/query?query=krs_exporter_build_info%7Bjob%3D%22krs%22%7D"
        );
        let found = eventually("Prometheus scraped the exporter over TLS", || async {
            let body = reqwest::get(&query).await.ok()?.text().await.ok()?;
            body.contains("\"__name__\":\"krs_exporter_build_info\"").then_some(body)
        })
        .await;
        let _ = prometheus.kill();
        let _ = prometheus.wait();
        assert!(found.contains("\"job\":\"krs\""), "{found}");
    })
    .await;
}

#[tokio::test]
async fn the_probes_answer_without_credentials_under_basic_auth_as_the_shipped_probes_ask() {
    within(async {
        let t = id(301);
        let sandbox = Sandbox::start(vec![SimTask::new(&t)]).await;
        let dir = tempfile::tempdir().unwrap();
        // Basic auth without TLS: the Docker HEALTHCHECK's plain `curl -f` must pass.
        let hash = bcrypt::hash(WEB_PASSWORD, 4).unwrap();
        let plain = write_file(
            dir.path(),
            "plain.yml",
            &format!("basic_auth_users:\n  {USER}: '{hash}'\n"),
        );
        let p = Process::spawn(
            &ConfigYaml::new(&sandbox.url(), &[&t]).render(),
            &["--web.config.file", plain.to_str().unwrap()],
        );
        let base = format!("http://127.0.0.1:{}", p.port);
        eventually("the exporter is ready", || async {
            let (head, _) = curl(&["-f", &format!("{base}/-/ready")]);
            head.starts_with("HTTP/1.1 200").then_some(())
        })
        .await;
        let (head, _) = curl(&["-f", &format!("{base}/-/healthy")]);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let (head, _) = curl(&[&format!("{base}/metrics")]);
        assert!(
            head.starts_with("HTTP/1.1 401"),
            "metrics stay guarded: {head}"
        );
        drop(p);

        // With TLS the probes need HTTPS (`scheme: HTTPS` in Kubernetes), still no credentials.
        let web = web_config(dir.path());
        let p = Process::spawn(
            &ConfigYaml::new(&sandbox.url(), &[&t]).render(),
            &["--web.config.file", web.to_str().unwrap()],
        );
        let ca = dir.path().join("ca.pem");
        let ca = ca.to_str().unwrap();
        let base = format!("https://127.0.0.1:{}", p.port);
        eventually("the TLS probe answers", || async {
            let (head, _) = curl(&["--cacert", ca, &format!("{base}/-/healthy")]);
            head.starts_with("HTTP/1.1 200").then_some(())
        })
        .await;
        let (head, _) = curl(&["--cacert", ca, &format!("{base}/")]);
        assert!(
            head.starts_with("HTTP/1.1 401"),
            "the page stays guarded: {head}"
        );
    })
    .await;
}

#[test]
fn a_web_config_with_an_unknown_key_stops_the_exporter_before_it_binds() {
    let dir = tempfile::tempdir().unwrap();
    let web = write_file(dir.path(), "web.yml", "basic_auth_user: {}\n");
    let config = write_file(
        dir.path(),
        "krs.yml",
        &ConfigYaml::new("http://127.0.0.1:9", &[]).render(),
    );
    let out = crate::support::binary()
        .arg("--config.file")
        .arg(&config)
        .arg("--web.config.file")
        .arg(&web)
        .args(["--web.listen-address", "127.0.0.1:0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("basic_auth_user"), "{stderr}");
}

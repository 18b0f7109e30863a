//! Listener parity with exporter-toolkit: `--web.listen-address` repeated, and
//! `--web.systemd-socket` serving on a socket handed over the systemd way.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{binary, eventually, free_port, run_within, within, ConfigYaml, Process};

/// `/-/healthy` and `/metrics` answer 200 on `port`.
async fn serves(port: u16) {
    for path in ["/-/healthy", "/metrics"] {
        let url = format!("http://127.0.0.1:{port}{path}");
        eventually(&format!("{url} answers"), || async {
            reqwest::get(&url)
                .await
                .ok()
                .filter(|r| r.status() == 200)
                .map(|_| ())
        })
        .await;
    }
}

fn config() -> String {
    ConfigYaml::new("http://127.0.0.1:9", &[]).render()
}

#[tokio::test]
async fn every_repeated_listen_address_is_served() {
    within(async {
        let second = free_port();
        let address = format!("127.0.0.1:{second}");
        let process = Process::spawn(&config(), &["--web.listen-address", &address]);
        serves(process.port).await;
        serves(second).await;
        let log = process.stderr();
        assert_eq!(log.matches("msg=listening").count(), 2, "{log}");
    })
    .await;
}

/// Starts the exporter as systemd does with a `.socket` unit: a listening socket bound by the
/// launcher at descriptor 3, `LISTEN_FDS=1`, and `LISTEN_PID` naming the exporter (the
/// launcher execs it, so its pid carries over). Returns the child and the socket's port.
fn socket_activated(config_path: &std::path::Path) -> (Child, u16) {
    const LAUNCHER: &str = r#"
import os, socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(64)
print(s.getsockname()[1], flush=True)
copy = os.dup(s.fileno())
os.dup2(copy, 3)  # inheritable, unlike the socket's own descriptor
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()), LISTEN_FDNAMES="krs-exporter")
os.execv(sys.argv[1], sys.argv[1:])
"#;
    let mut child = Command::new("python3")
        .args(["-c", LAUNCHER, env!("CARGO_BIN_EXE_krs-exporter")])
        .arg("--config.file")
        .arg(config_path)
        .arg("--web.systemd-socket")
        .arg("--storage.path=")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 runs the launcher");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout"))
        .read_line(&mut line)
        .expect("the launcher prints its port");
    let port = line.trim().parse().expect("a port number");
    (child, port)
}

#[tokio::test]
async fn a_socket_handed_over_by_systemd_is_served() {
    within(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("krs-exporter.yml");
        std::fs::write(&config_path, config()).expect("write config");
        let (mut child, port) = socket_activated(&config_path);
        serves(port).await;
        let _ = child.kill();
        let _ = child.wait();
    })
    .await;
}

#[test]
fn systemd_socket_without_a_handed_over_socket_fails_saying_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("krs-exporter.yml");
    std::fs::write(&config_path, config()).expect("write config");
    let run = run_within(
        binary()
            .arg("--config.file")
            .arg(&config_path)
            .arg("--web.systemd-socket")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID"),
        Duration::from_secs(20),
    );
    assert!(!run.status.success());
    assert!(
        run.stderr
            .contains("--web.systemd-socket: no listening TCP socket was passed"),
        "{}",
        run.stderr
    );
}

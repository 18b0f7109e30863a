//! Behaviour of the running simulator, seen from an HTTP client: raw HTTP/1.1 over a
//! `TcpStream`, so that closed connections, chunked bodies and exact bytes are all visible.

use std::future::Future;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::control::State;
use super::*;

mod lifecycle;

const TASK: &str = "0d5b4e44-4c0e-4f0b-9a57-3f2d1b9e6c71";
const OTHER: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
const THIRD: &str = "5b2f9c1d-3e4a-4f6b-8c7d-9e0a1b2c3d4e";
const LIMIT: Duration = Duration::from_secs(20);

/// A running simulator that stops when the test ends.
pub(super) struct Sim {
    pub(super) handle: SimHandle,
    shutdown: CancellationToken,
}

/// An HTTP answer as received.
#[derive(Debug)]
pub(super) struct Reply {
    pub(super) status: u16,
    headers: Vec<(String, String)>,
    pub(super) body: Vec<u8>,
    /// The body is as long as `Content-Length` says (always true without one).
    complete: bool,
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Sim {
    pub(super) async fn start(scenario: Scenario) -> Sim {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let shutdown = CancellationToken::new();
        let handle = start(scenario, listener, shutdown.clone())
            .await
            .expect("start simulator");
        Sim { handle, shutdown }
    }

    async fn with_tasks(tasks: impl IntoIterator<Item = SimTask>) -> Sim {
        Sim::start(
            Scenario::builder()
                .tasks(tasks)
                .build()
                .expect("valid scenario"),
        )
        .await
    }

    /// GET with the right credentials; panics if the connection closes without an answer.
    pub(super) async fn get(&self, path: &str) -> Reply {
        let reply = self.try_get(path).await.expect("an HTTP answer");
        assert!(reply.complete, "body as long as Content-Length says");
        reply
    }

    async fn try_get(&self, path: &str) -> Option<Reply> {
        send(
            self.handle.addr(),
            "GET",
            path,
            Some(("exporter", "secret")),
        )
        .await
    }

    pub(super) async fn downloads(&self, task: &str) -> Reply {
        self.get(&downloads_path(task)).await
    }
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(super) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

fn downloads_path(task: &str) -> String {
    format!("/api/v1/sandbox/tasks/{task}/downloads")
}

pub(super) async fn within<F: Future>(test: F) -> F::Output {
    tokio::time::timeout(LIMIT, test)
        .await
        .expect("test finished in time")
}

/// One request on a fresh connection (`Connection: close`). `None` when the server closed the
/// connection without sending a byte.
pub(super) async fn send(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    auth: Option<(&str, &str)>,
) -> Option<Reply> {
    let mut stream = TcpStream::connect(addr)
        .await
        .expect("connect to simulator");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some((user, password)) = auth {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        head.push_str(&format!("Authorization: Basic {token}\r\n"));
    }
    head.push_str("\r\n");
    if stream.write_all(head.as_bytes()).await.is_err() {
        return None;
    }
    let mut raw = Vec::new();
    match stream.read_to_end(&mut raw).await {
        Ok(_) if raw.is_empty() => return None,
        Ok(_) => {}
        Err(e) if raw.is_empty() && e.kind() == std::io::ErrorKind::ConnectionReset => return None,
        Err(e) => panic!("reading the answer failed after {} bytes: {e}", raw.len()),
    }
    Some(parse_reply(&raw))
}

fn parse_reply(raw: &[u8]) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = std::str::from_utf8(&raw[..split]).expect("an ASCII head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("a status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let rest = &raw[split + 4..];
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    let mut reply = Reply {
        status,
        headers,
        body,
        complete: true,
    };
    if let Some(length) = reply.header("content-length") {
        reply.complete = length.parse::<usize>().ok() == Some(reply.body.len());
    }
    reply
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a chunk size line");
        let size_text = std::str::from_utf8(&rest[..eol]).expect("an ASCII chunk size");
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .expect("a hex chunk size");
        rest = &rest[eol + 2..];
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn one_file_task() -> SimTask {
    SimTask::new(TASK).file(
        SimFile::new("payload.exe", "Red")
            .size(245_760)
            .file_type("PE32 executable")
            .https(true)
            .detection("HEUR:Trojan.Win32.Generic")
            .yara("APT_Loader_Stage2")
            .yara("Cobalt_Strike_Beacon"),
    )
}

// ---- auth, routing and errors -----------------------------------------------------------------

#[tokio::test]
async fn missing_or_wrong_credentials_get_401_with_an_empty_body() {
    within(async {
        let sim = Sim::with_tasks([one_file_task()]).await;
        let addr = sim.handle.addr();
        let path = downloads_path(TASK);
        for auth in [
            None,
            Some(("exporter", "wrong")),
            Some(("someone", "secret")),
        ] {
            let reply = send(addr, "GET", &path, auth).await.expect("an answer");
            assert_eq!(reply.status, 401, "auth {auth:?}");
            assert!(reply.body.is_empty(), "401 bodies are empty");
            assert!(reply
                .header("www-authenticate")
                .is_some_and(|v| v.starts_with("Basic")));
        }
        assert_eq!(sim.get(&path).await.status, 200);

        sim.handle.set_credentials("exporter", "rotated");
        assert_eq!(
            sim.get(&path).await.status,
            401,
            "old password refused after rotation"
        );
        let reply = send(addr, "GET", &path, Some(("exporter", "rotated")))
            .await
            .expect("an answer");
        assert_eq!(reply.status, 200);
    })
    .await;
}

#[tokio::test]
async fn a_task_id_that_is_not_a_guid_gets_400_code_29() {
    within(async {
        let sim = Sim::with_tasks([]).await;
        for bad in [
            "not-a-guid",
            "{0d5b4e44-4c0e-4f0b-9a57-3f2d1b9e6c71}",
            "0d5b4e44-4c0e-4f0b-9a57-3f2d1b9e6c7z",
        ] {
            let reply = sim.downloads(bad).await;
            assert_eq!(reply.status, 400, "{bad}");
            assert_eq!(reply.json(), json!({"code": 29, "message": "bad task id"}));
        }
    })
    .await;
}

#[tokio::test]
async fn an_unknown_task_gets_404_code_6_by_default_and_400_when_configured() {
    within(async {
        let sim = Sim::with_tasks([]).await;
        let reply = sim.downloads(TASK).await;
        assert_eq!(reply.status, 404);
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_eq!(
            reply.json(),
            json!({"code": 6, "message": "task not found"})
        );

        let sim = Sim::start(Scenario::builder().not_found_status(400).build().unwrap()).await;
        let reply = sim.downloads(TASK).await;
        assert_eq!(reply.status, 400);
        assert_eq!(
            reply.json(),
            json!({"code": 6, "message": "task not found"})
        );
    })
    .await;
}

#[tokio::test]
async fn a_deleted_task_gets_404_code_7_with_meta_on_both_endpoints() {
    within(async {
        let sim = Sim::with_tasks([one_file_task().deleted()]).await;
        let expected =
            json!({"code": 7, "message": "task deleted", "meta": "task has already been deleted"});
        let reply = sim.downloads(TASK).await;
        assert_eq!((reply.status, reply.json()), (404, expected.clone()));
        let reply = sim.get(&format!("/api/v1/sandbox/tasks/{TASK}")).await;
        assert_eq!((reply.status, reply.json()), (404, expected));
    })
    .await;
}

#[tokio::test]
async fn other_paths_get_404_and_other_methods_405_both_after_auth() {
    within(async {
        let sim = Sim::with_tasks([one_file_task()]).await;
        let addr = sim.handle.addr();
        for path in [
            "/",
            "/metrics",
            "/api/v1/sandbox/taskss/",
            "/api/v1/sandbox/healthz",
            &format!("/api/v1/sandbox/tasks/{TASK}/downloads/archive"),
        ] {
            let reply = sim.get(path).await;
            assert_eq!(reply.status, 404, "{path}");
            assert!(reply.body.is_empty());
        }
        let reply = send(
            addr,
            "POST",
            &downloads_path(TASK),
            Some(("exporter", "secret")),
        )
        .await
        .unwrap();
        assert_eq!(reply.status, 405);
        assert_eq!(reply.header("allow"), Some("GET"));
        let reply = send(addr, "DELETE", &downloads_path(TASK), None)
            .await
            .unwrap();
        assert_eq!(reply.status, 401, "auth is checked first");
    })
    .await;
}

#[tokio::test]
async fn task_ids_in_the_path_match_case_insensitively() {
    within(async {
        let sim = Sim::with_tasks([one_file_task()]).await;
        let reply = sim.downloads(&TASK.to_uppercase()).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json().as_array().map(Vec::len), Some(1));
        assert_eq!(sim.handle.requests(TASK), 1);
        assert_eq!(sim.handle.requests(&TASK.to_uppercase()), 1);
    })
    .await;
}

// ---- bodies ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_known_task_answers_an_array_of_pascal_case_records() {
    within(async {
        let sim =
            Sim::with_tasks([one_file_task().file(SimFile::new("empty.txt", "Green").sha256(""))])
                .await;
        let reply = sim.downloads(TASK).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-type"), Some("application/json"));
        let body = reply.json();
        let first = &body[0];
        let keys: Vec<&str> = first
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = vec![
            "Zone",
            "Md5",
            "Sha1",
            "Sha256",
            "DetectionNames",
            "Name",
            "Size",
            "Type",
            "IsHttpsTraffic",
            "TriggeredYaraRules",
        ];
        let mut keys_sorted = keys.clone();
        keys_sorted.sort_unstable();
        expected.sort_unstable();
        assert_eq!(keys_sorted, expected);
        assert_eq!(first["Zone"], "Red");
        assert_eq!(first["Name"], "payload.exe");
        assert_eq!(first["Size"], 245_760);
        assert_eq!(first["Type"], "PE32 executable");
        assert_eq!(first["IsHttpsTraffic"], true);
        assert_eq!(
            first["DetectionNames"],
            json!(["HEUR:Trojan.Win32.Generic"])
        );
        assert_eq!(
            first["TriggeredYaraRules"],
            json!(["APT_Loader_Stage2", "Cobalt_Strike_Beacon"])
        );
        assert_eq!(first["Md5"].as_str().map(str::len), Some(32), "derived md5");
        assert_eq!(
            first["Sha1"].as_str().map(str::len),
            Some(40),
            "derived sha1"
        );
        assert_eq!(
            first["Sha256"].as_str().map(str::len),
            Some(64),
            "derived sha256"
        );
        assert_eq!(
            body[1]["Sha256"], "",
            "an explicitly empty hash stays empty"
        );
        assert_eq!(sim.downloads(TASK).await.json(), body, "answers are stable");
    })
    .await;
}

#[tokio::test]
async fn each_shape_spells_files_and_emptiness_its_own_way() {
    within(async {
        let ids = [
            "00000000-0000-4000-8000-000000000001",
            "00000000-0000-4000-8000-000000000002",
            "00000000-0000-4000-8000-000000000003",
            "00000000-0000-4000-8000-000000000004",
            "00000000-0000-4000-8000-000000000005",
        ];
        let shapes = [
            Shape::Array,
            Shape::Object,
            Shape::Wrapped,
            Shape::NullWhenEmpty,
            Shape::EmptyWhenEmpty,
        ];
        let sim = Sim::with_tasks(
            ids.iter()
                .zip(shapes)
                .map(|(id, shape)| SimTask::new(id).shape(shape)),
        )
        .await;
        let empty: Vec<Vec<u8>> = {
            let mut v = Vec::new();
            for id in ids {
                let reply = sim.downloads(id).await;
                assert_eq!(reply.status, 200);
                v.push(reply.body);
            }
            v
        };
        assert_eq!(
            empty,
            [&b"[]"[..], b"{}", br#"{"Downloads":[]}"#, b"null", b""]
        );

        for id in ids {
            sim.handle.set_files(
                id,
                vec![SimFile::new("a.exe", "Red"), SimFile::new("b.js", "Grey")],
            );
        }
        let names = |v: &Value| -> Vec<Value> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|r| r["Name"].clone())
                .collect()
        };
        assert_eq!(
            names(&sim.downloads(ids[0]).await.json()),
            [json!("a.exe"), json!("b.js")]
        );
        let object = sim.downloads(ids[1]).await.json();
        assert_eq!(
            object["Name"], "a.exe",
            "object shape: the first record alone"
        );
        assert_eq!(
            names(&sim.downloads(ids[2]).await.json()["Downloads"]),
            [json!("a.exe"), json!("b.js")]
        );
        assert_eq!(names(&sim.downloads(ids[3]).await.json()).len(), 2);
        assert_eq!(names(&sim.downloads(ids[4]).await.json()).len(), 2);
    })
    .await;
}

#[tokio::test]
async fn format_options_change_key_case_size_type_yara_form_and_grey_spelling() {
    within(async {
        let file = SimFile::new("a.exe", "Grey").size(42).yara("R1");
        let sim = Sim::with_tasks([
            SimTask::new(TASK)
                .key_case(KeyCase::Lower)
                .size_as_string(true)
                .file(file.clone()),
            SimTask::new(OTHER)
                .key_case(KeyCase::Upper)
                .yara_as_objects(true)
                .gray_spelling(true)
                .file(file),
        ])
        .await;
        let lower = &sim.downloads(TASK).await.json()[0];
        assert_eq!(lower["zone"], "Grey");
        assert_eq!(lower["size"], "42");
        assert_eq!(lower["ishttpstraffic"], false);
        assert_eq!(lower["triggeredyararules"], json!(["R1"]));
        assert!(lower.get("Zone").is_none());

        let upper = &sim.downloads(OTHER).await.json()[0];
        assert_eq!(upper["ZONE"], "Gray");
        assert_eq!(upper["SIZE"], 42);
        assert_eq!(upper["MD5"].as_str().map(str::len), Some(32));
        assert_eq!(upper["TRIGGEREDYARARULES"], json!([{"NAME": "R1"}]));
    })
    .await;
}

#[tokio::test]
async fn served_at_stamps_every_record_with_the_time_of_the_response() {
    within(async {
        let file = SimFile::new("a.exe", "Red");
        let sim = Sim::with_tasks([
            SimTask::new(TASK).served_at(true).file(file.clone()),
            SimTask::new(OTHER).file(file),
        ])
        .await;
        let before = sim.handle.elapsed().as_millis();
        let stamped = sim.downloads(TASK).await.json();
        let after = sim.handle.elapsed().as_millis();
        let ms = stamped[0]["ServedAtMs"].as_u64().expect("a number") as u128;
        assert!(
            (before..=after).contains(&ms),
            "{before} <= {ms} <= {after}"
        );
        assert!(sim.downloads(OTHER).await.json()[0]
            .get("ServedAtMs")
            .is_none());
    })
    .await;
}

#[tokio::test]
async fn a_hostile_file_name_is_serialised_as_valid_json() {
    within(async {
        let hostile = "\"quoted\" <script>alert('x')</script>\nline two\\back\u{1}slash é 🦀";
        let sim = Sim::with_tasks([SimTask::new(TASK).file(
            SimFile::new(hostile, "Red")
                .file_type(hostile)
                .detection(hostile)
                .yara(hostile),
        )])
        .await;
        let record = &sim.downloads(TASK).await.json()[0];
        assert_eq!(record["Name"], hostile);
        assert_eq!(record["Type"], hostile);
        assert_eq!(record["DetectionNames"][0], hostile);
        assert_eq!(record["TriggeredYaraRules"][0], hostile);
    })
    .await;
}

#[tokio::test]
async fn files_appear_and_change_zone_at_their_time() {
    within(async {
        let sim = Sim::with_tasks([SimTask::new(TASK)
            .file(SimFile::new("early.doc", "Grey").zone_change(Duration::from_millis(300), "Red"))
            .file(SimFile::new("late.exe", "Red").after(Duration::from_millis(200)))])
        .await;
        let first = sim.downloads(TASK).await.json();
        let seen_at = sim.handle.elapsed();
        if seen_at < Duration::from_millis(200) {
            assert_eq!(
                first.as_array().map(Vec::len),
                Some(1),
                "late.exe not yet there"
            );
            assert_eq!(first[0]["Zone"], "Grey");
        }
        loop {
            let body = sim.downloads(TASK).await.json();
            if body.as_array().map(Vec::len) == Some(2) && body[0]["Zone"] == "Red" {
                assert!(sim.handle.elapsed() >= Duration::from_millis(300));
                assert_eq!(body[1]["Name"], "late.exe");
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
}

#[tokio::test]
async fn the_task_endpoint_reports_the_worst_zone_and_whether_analysis_is_done() {
    within(async {
        let sim = Sim::with_tasks([
            SimTask::new(TASK)
                .file(SimFile::new("a", "Green"))
                .file(SimFile::new("b", "Yellow")),
            SimTask::new(OTHER).file(SimFile::new("c", "Grey").after(Duration::from_secs(3600))),
        ])
        .await;
        let done = sim
            .get(&format!("/api/v1/sandbox/tasks/{TASK}"))
            .await
            .json();
        let seen = |v: &Value| {
            json!({"TaskId": v["TaskId"], "TaskState": v["TaskState"], "Status": v["Status"], "Zone": v["Zone"]})
        };
        assert_eq!(
            seen(&done),
            json!({"TaskId": TASK, "TaskState": "completed", "Status": "NotAVirus", "Zone": "Yellow"})
        );
        let pending = sim
            .get(&format!("/api/v1/sandbox/tasks/{OTHER}"))
            .await
            .json();
        assert_eq!(pending["TaskState"], "processing");
        assert_eq!(pending["Processed"], "", "not analysed yet");
        assert_eq!(pending["Status"], "Unknown");
    })
    .await;
}

// ---- faults -----------------------------------------------------------------------------------

#[tokio::test]
async fn faults_are_consumed_in_order_with_times_then_the_task_recovers() {
    within(async {
        let sim = Sim::with_tasks([one_file_task().faults([
            Fault::status(500).times(2),
            Fault::status(503)
                .retry_after("Wed, 21 Oct 2015 07:28:00 GMT")
                .error(ErrorBody::new("busy", "try later")),
            Fault::status(502).text("<html>Bad Gateway</html>"),
            Fault::malformed(),
            Fault::body_text("null"),
        ])])
        .await;
        let r = sim.downloads(TASK).await;
        assert_eq!(
            (r.status, r.body.is_empty(), r.header("retry-after")),
            (500, true, None)
        );
        assert_eq!(sim.downloads(TASK).await.status, 500);
        let r = sim.downloads(TASK).await;
        assert_eq!(r.status, 503);
        assert_eq!(
            r.header("retry-after"),
            Some("Wed, 21 Oct 2015 07:28:00 GMT")
        );
        assert_eq!(r.json(), json!({"code": "busy", "message": "try later"}));
        let r = sim.downloads(TASK).await;
        assert_eq!(
            (r.status, r.body.as_slice()),
            (502, &b"<html>Bad Gateway</html>"[..])
        );
        let r = sim.downloads(TASK).await;
        assert_eq!(r.status, 200);
        assert!(
            serde_json::from_slice::<Value>(&r.body).is_err(),
            "malformed body is not JSON"
        );
        let r = sim.downloads(TASK).await;
        assert_eq!((r.status, r.body.as_slice()), (200, &b"null"[..]));
        for _ in 0..3 {
            let r = sim.downloads(TASK).await;
            assert_eq!(r.status, 200);
            assert_eq!(
                r.json()[0]["Name"],
                "payload.exe",
                "normal answers once faults are used up"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn repeating_faults_loop_forever() {
    within(async {
        let sim = Sim::with_tasks([SimTask::new(TASK)
            .faults([Fault::status(500), Fault::pass().times(2)])
            .faults_repeat(true)])
        .await;
        let mut statuses = Vec::new();
        for _ in 0..7 {
            statuses.push(sim.downloads(TASK).await.status);
        }
        assert_eq!(statuses, [500, 200, 200, 500, 200, 200, 500]);
    })
    .await;
}

#[tokio::test]
async fn faults_pushed_at_run_time_apply_to_the_next_requests_only() {
    within(async {
        let sim = Sim::with_tasks([one_file_task()]).await;
        assert_eq!(sim.downloads(TASK).await.status, 200);
        sim.handle.push_faults(
            TASK,
            vec![Fault::status(429).retry_after("1"), Fault::status(504)],
        );
        assert_eq!(
            sim.downloads(OTHER).await.status,
            404,
            "other tasks unaffected"
        );
        assert_eq!(sim.downloads(TASK).await.status, 429);
        assert_eq!(sim.downloads(TASK).await.status, 504);
        assert_eq!(sim.downloads(TASK).await.status, 200);
        sim.handle.push_faults(TASK, vec![Fault::status(500)]);
        assert_eq!(sim.downloads(TASK).await.status, 500);
    })
    .await;
}

#[tokio::test]
async fn a_delay_fault_answers_normally_after_the_delay() {
    within(async {
        let sim =
            Sim::with_tasks([one_file_task().fault(Fault::delay(Duration::from_millis(300)))])
                .await;
        let started = std::time::Instant::now();
        let reply = sim.downloads(TASK).await;
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json()[0]["Name"], "payload.exe");
    })
    .await;
}

#[tokio::test]
async fn an_oversized_body_streams_exactly_the_requested_bytes_as_a_valid_json_array() {
    within(async {
        const BYTES: u64 = 3 * 1024 * 1024 + 17;
        let sim = Sim::with_tasks([SimTask::new(TASK).faults([
            Fault::oversized(BYTES),
            Fault::oversized(BYTES).with_content_length(),
            Fault::oversized(40),
        ])])
        .await;
        let chunked = sim.downloads(TASK).await;
        assert_eq!(chunked.status, 200);
        assert_eq!(chunked.header("transfer-encoding"), Some("chunked"));
        assert_eq!(chunked.body.len() as u64, BYTES);
        assert!(chunked.json().as_array().is_some_and(|a| a.len() > 1000));

        let announced = sim.downloads(TASK).await;
        assert_eq!(
            announced.header("content-length"),
            Some(BYTES.to_string().as_str())
        );
        assert_eq!(announced.body, chunked.body);

        let tiny = sim.downloads(TASK).await;
        assert_eq!(tiny.body.len(), 40);
        assert_eq!(
            tiny.json(),
            json!([]),
            "too small for a record: a padded empty array"
        );
    })
    .await;
}

#[tokio::test]
async fn a_reset_fault_closes_the_connection_without_an_answer() {
    within(async {
        let sim = Sim::with_tasks([one_file_task().fault(Fault::reset())]).await;
        assert!(sim.try_get(&downloads_path(TASK)).await.is_none());
        assert_eq!(sim.downloads(TASK).await.status, 200);
        let statuses: Vec<u16> = sim.handle.request_log().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [0, 200]);
    })
    .await;
}

#[tokio::test]
async fn a_trickle_fault_sends_the_normal_body_slowly() {
    within(async {
        let sim = Sim::with_tasks([SimTask::new(TASK).fault(Fault::trickle(10))]).await;
        let started = std::time::Instant::now();
        let reply = sim.downloads(TASK).await;
        assert_eq!((reply.status, reply.body.as_slice()), (200, &b"[]"[..]));
        assert!(
            started.elapsed() >= Duration::from_millis(200),
            "2 bytes at 10 B/s take 200 ms"
        );
    })
    .await;
}

#[tokio::test]
async fn faults_apply_to_a_deleted_task_before_its_404() {
    within(async {
        let sim = Sim::with_tasks([SimTask::new(TASK).deleted().fault(Fault::status(503))]).await;
        assert_eq!(sim.downloads(TASK).await.status, 503);
        assert_eq!(sim.downloads(TASK).await.json()["code"], 7);
    })
    .await;
}

// ---- control and counters -----------------------------------------------------------------------

#[tokio::test]
async fn tasks_can_be_added_changed_deleted_and_removed_at_run_time() {
    within(async {
        let sim = Sim::with_tasks([]).await;
        assert_eq!(sim.downloads(TASK).await.status, 404);
        sim.handle.add_task(one_file_task().shape(Shape::Wrapped));
        assert_eq!(
            sim.downloads(TASK).await.json()["Downloads"][0]["Name"],
            "payload.exe"
        );
        sim.handle
            .add_file(&TASK.to_uppercase(), SimFile::new("second.js", "Green"));
        assert_eq!(
            sim.downloads(TASK).await.json()["Downloads"][1]["Name"],
            "second.js"
        );
        sim.handle.set_files(TASK, vec![]);
        assert_eq!(sim.downloads(TASK).await.body, br#"{"Downloads":[]}"#);
        sim.handle.delete_task(TASK);
        assert_eq!(sim.downloads(TASK).await.json()["code"], 7);
        sim.handle.remove_task(TASK);
        assert_eq!(sim.downloads(TASK).await.json()["code"], 6);
        sim.handle
            .set_files(OTHER, vec![SimFile::new("x", "Green")]);
        assert_eq!(
            sim.downloads(OTHER).await.status,
            200,
            "set_files creates an unknown task"
        );
    })
    .await;
}

#[tokio::test]
async fn counters_and_the_log_see_every_request_including_auth_failures() {
    within(async {
        let sim = Sim::with_tasks([one_file_task()]).await;
        let addr = sim.handle.addr();
        sim.downloads(TASK).await;
        send(addr, "GET", &downloads_path(TASK), None)
            .await
            .unwrap();
        sim.downloads(OTHER).await;
        sim.downloads("nonsense").await;
        sim.get("/elsewhere").await;
        assert_eq!(sim.handle.requests(TASK), 2);
        assert_eq!(
            sim.handle.requests(OTHER),
            1,
            "unknown tasks are counted too"
        );
        assert_eq!(sim.handle.requests("nonsense"), 1);
        assert_eq!(sim.handle.requests(THIRD), 0);
        assert_eq!(sim.handle.total_requests(), 5);
        let log: Vec<(String, u16)> = sim
            .handle
            .request_log()
            .into_iter()
            .map(|r| (r.task, r.status))
            .collect();
        assert_eq!(
            log,
            [
                (TASK.to_owned(), 200),
                (TASK.to_owned(), 401),
                (OTHER.to_owned(), 404),
                ("nonsense".to_owned(), 400),
                (String::new(), 404),
            ]
        );
        assert!(sim
            .handle
            .request_log()
            .windows(2)
            .all(|w| w[0].at <= w[1].at));
        assert_eq!(sim.handle.in_flight(), 0);

        sim.handle.reset_stats();
        assert_eq!(
            (sim.handle.total_requests(), sim.handle.requests(TASK)),
            (0, 0)
        );
        assert!(sim.handle.request_log().is_empty());
    })
    .await;
}

#[tokio::test]
async fn in_flight_maxima_count_concurrent_requests_overall_and_per_task() {
    within(async {
        let hold = Fault::delay(Duration::from_millis(500));
        let sim = Sim::with_tasks([
            SimTask::new(TASK).fault(hold.clone().times(3)),
            SimTask::new(OTHER).fault(hold.clone()),
            SimTask::new(THIRD).fault(hold),
        ])
        .await;
        let addr = sim.handle.addr();
        let mut requests = Vec::new();
        for task in [TASK, TASK, TASK, OTHER, THIRD] {
            let path = downloads_path(task);
            requests.push(tokio::spawn(async move {
                send(addr, "GET", &path, Some(("exporter", "secret"))).await
            }));
        }
        for request in requests {
            assert_eq!(request.await.unwrap().unwrap().status, 200);
        }
        assert_eq!(sim.handle.in_flight_max(), 5);
        assert_eq!(sim.handle.in_flight_max_per_task(), 3);
        assert_eq!(sim.handle.in_flight(), 0);
    })
    .await;
}

#[tokio::test]
async fn sequential_requests_never_count_as_concurrent() {
    within(async {
        let sim = Sim::with_tasks([
            one_file_task(),
            SimTask::new(OTHER).fault(Fault::trickle(100)),
        ])
        .await;
        for _ in 0..50 {
            sim.downloads(TASK).await;
        }
        sim.downloads(OTHER).await;
        assert_eq!(sim.handle.in_flight_max(), 1);
        assert_eq!(sim.handle.in_flight_max_per_task(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_down_simulator_closes_connections_without_answering_then_recovers() {
    within(async {
        let sim = Sim::with_tasks([one_file_task()]).await;
        sim.handle.set_down(true);
        assert!(sim.try_get(&downloads_path(TASK)).await.is_none());
        assert_eq!(
            sim.handle.total_requests(),
            0,
            "nothing is counted while down"
        );
        sim.handle.set_down(false);
        assert_eq!(sim.downloads(TASK).await.status, 200);
    })
    .await;
}

#[tokio::test]
async fn cancelling_the_token_stops_the_listener_and_open_connections_promptly() {
    within(async {
        let sim = Sim::with_tasks([SimTask::new(TASK).fault(Fault::trickle(1))]).await;
        let addr = sim.handle.addr();
        let path = downloads_path(TASK);
        let slow =
            tokio::spawn(
                async move { send(addr, "GET", &path, Some(("exporter", "secret"))).await },
            );
        while sim.handle.in_flight() == 0 {
            tokio::task::yield_now().await;
        }
        sim.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(2), sim.handle.closed())
            .await
            .expect("stopped within 2 s");
        let cut = slow
            .await
            .unwrap()
            .expect("headers were sent before shutdown");
        assert!(!cut.complete, "the trickled body was cut short");
        assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
    })
    .await;
}

#[test]
fn the_request_log_keeps_only_the_most_recent_entries() {
    let parts = Scenario::builder().build().unwrap().into_parts();
    let mut state = State::new(parts, std::time::SystemTime::now());
    let task: std::sync::Arc<str> = "t".into();
    for i in 0..REQUEST_LOG_CAPACITY as u64 + 5 {
        state.record(
            Duration::from_nanos(i),
            Endpoint::Downloads,
            task.clone(),
            200,
        );
    }
    assert_eq!(state.log.len(), REQUEST_LOG_CAPACITY);
    assert_eq!(
        state.log.front().map(|e| e.at),
        Some(Duration::from_nanos(5))
    );
}

#[tokio::test]
async fn a_hundred_thousand_tasks_load_and_answer() {
    within(async {
        let tasks = (0..100_000u32).map(|i| {
            SimTask::new(&format!("{i:08x}-0000-4000-8000-000000000000")).file(SimFile::new(
                "f.exe",
                if i % 2 == 0 { "Red" } else { "Green" },
            ))
        });
        let sim = Sim::with_tasks(tasks).await;
        let reply = sim.downloads("0001869f-0000-4000-8000-000000000000").await;
        assert_eq!(reply.json()[0]["Zone"], "Green", "task 99999 is odd");
    })
    .await;
}

// ---- the bundled demo scenario --------------------------------------------------------------------

#[test]
fn the_bundled_demo_scenario_is_valid_and_shows_every_kind_of_activity() {
    let scenario = Scenario::from_yaml_str(include_str!("../../../../config/demo-scenario.yml"))
        .expect("valid demo scenario");
    let tasks = scenario.tasks();
    assert!(tasks.len() >= 8, "{} tasks", tasks.len());
    assert_eq!(
        scenario.credentials(),
        &Credentials::new("demo", "demo-password")
    );
    assert_eq!(
        tasks
            .iter()
            .filter(|t| t.state == TaskState::Deleted)
            .count(),
        1
    );
    let window = Duration::from_secs(45)..=Duration::from_secs(75);
    assert!(tasks.iter().flat_map(|t| &t.files).any(|f| f.zone == "Red"
        && !f.yara.is_empty()
        && !f.detections.is_empty()
        && window.contains(&f.after)));
    assert!(tasks
        .iter()
        .flat_map(|t| &t.files)
        .any(|f| f.zone == "Yellow" && f.detections.iter().any(|d| d.starts_with("not-a-virus:"))));
    assert!(tasks
        .iter()
        .flat_map(|t| &t.files)
        .any(|f| f.zone_changes.iter().any(|c| c.zone == "Red")));
    assert!(tasks.iter().any(|t| t.format.shape == Shape::Wrapped));
    assert!(tasks.iter().any(|t| t.format.shape == Shape::Object));
    assert!(
        tasks
            .iter()
            .any(|t| !t.faults.is_empty() && !t.faults_repeat),
        "a task that recovers"
    );
    assert!(tasks
        .iter()
        .flat_map(|t| &t.files)
        .any(|f| f.name.contains('"') && f.name.contains("<script>") && f.name.contains('\n')));
    assert!(tasks.iter().all(|t| t.id != DEMO_MISSING_TASK_ID));
    assert!(
        DEMO_SCENARIO_YAML.contains(DEMO_MISSING_TASK_ID),
        "the missing id is listed in the file's comment"
    );
    assert_eq!(demo_scenario().tasks().len(), tasks.len());
    let generator = scenario.generator().expect("the demo keeps moving");
    assert!(generator.every <= Duration::from_secs(30));
    assert!(generator.red_share > 0.0 && generator.yara_share > 0.0);
}

#[test]
fn the_scenario_example_in_the_docs_is_valid() {
    let docs = include_str!("../../../../docs/simulator.md");
    let section = docs
        .split("## Scenario file reference")
        .nth(1)
        .expect("the docs have a scenario reference");
    let yaml = section
        .split("```yaml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the reference holds a YAML example");
    let scenario = Scenario::from_yaml_str(yaml).unwrap_or_else(|e| panic!("docs example: {e}"));
    assert_eq!(scenario.tasks()[0].faults.len(), 12);
}

#[test]
fn every_yaml_example_in_the_docs_is_a_valid_scenario() {
    let docs = include_str!("../../../../docs/simulator.md");
    let examples: Vec<&str> = docs
        .split("```yaml\n")
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .collect();
    assert!(examples.len() >= 3, "{} examples", examples.len());
    for (i, yaml) in examples.iter().enumerate() {
        Scenario::from_yaml_str(yaml).unwrap_or_else(|e| panic!("docs example {i}: {e}"));
    }
    let lifecycle = Scenario::from_yaml_str(examples[1]).unwrap();
    assert_eq!(lifecycle.tasks()[0].timeline.len(), 5);
    assert_eq!(lifecycle.appliance().health.incidents.len(), 2);
    let living = Scenario::from_yaml_str(examples[2]).unwrap();
    assert_eq!(living.generator().map(|g| g.keep), Some(500));
}

#[tokio::test]
async fn the_demo_scenario_answers_as_its_comments_promise() {
    within(async {
        let sim = Sim::start(demo_scenario()).await;
        let addr = sim.handle.addr();
        let get = |id: &str| {
            let path = downloads_path(id);
            async move {
                send(addr, "GET", &path, Some(("demo", "demo-password")))
                    .await
                    .unwrap()
            }
        };
        assert_eq!(get(DEMO_MISSING_TASK_ID).await.json()["code"], 6);
        assert_eq!(
            get("8f0a2c4e-6a8c-4f0a-b2c4-e6a8c0e2a4c6").await.json()["code"],
            7
        );
        let busy = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d";
        let mut statuses = Vec::new();
        for _ in 0..5 {
            statuses.push(get(busy).await.status);
        }
        assert_eq!(statuses, [503, 503, 503, 500, 200]);
        let hostile = get("6e8a0c2e-4a6c-4e8a-9c2e-4a6c8e0a2c4e").await.json();
        assert!(hostile[0]["Name"]
            .as_str()
            .is_some_and(|n| n.contains("<script>")));
        let invoice = get("0d5b4e44-4c0e-4f0b-9a57-3f2d1b9e6c71").await.json();
        assert_eq!(
            invoice.as_array().map(Vec::len),
            Some(1),
            "only the document at start"
        );
    })
    .await;
}

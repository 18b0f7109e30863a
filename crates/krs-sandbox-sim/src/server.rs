//! The simulator's HTTP server: accept loop, routing, Basic auth and fault injection.
//!
//! Routes (every one behind HTTP Basic auth; checks run in this order):
//!
//! | request | answer |
//! |---|---|
//! | missing or wrong credentials | 401, empty body, `WWW-Authenticate: Basic` |
//! | a path other than the two below | 404, empty body |
//! | a method other than `GET` on them | 405, empty body, `Allow: GET` |
//! | `{task_id}` not a GUID | 400 `{"code":29,"message":"bad task id"}` |
//! | unknown task | 404 (or 400, `not_found_status`) `{"code":6,"message":"task not found"}` |
//! | `GET /api/v1/sandbox/tasks/{task_id}/downloads` | the task's next fault, else 404/7 if deleted, else 200 with its files |
//! | `GET /api/v1/sandbox/tasks/{task_id}` | 404/7 if deleted, else 200 `{"TaskId","State","Status","Zone"}` (no faults) |

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use hyper::body::Incoming;
use hyper::header::{
    HeaderName, HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::body::SimBody;
use super::control::{InFlight, Shared, SimHandle, State};
use super::render;
use super::scenario::{
    canonical_task_id, ErrorBody, FaultAction, ResponseFormat, Scenario, SimFile, StatusBody,
    TaskState,
};

const TASKS_PREFIX: &str = "/api/v1/sandbox/tasks/";
const JSON: &str = "application/json";
/// Body of the `malformed` fault: JSON cut off mid-string.
const MALFORMED: &[u8] = br#"[{"Zone":"Red","Name":"trunc"#;
/// Sent with 401, as RFC 9110 requires.
const CHALLENGE: &str = "Basic realm=\"Kaspersky Research Sandbox\"";
/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop doesn't spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Returned by the service to make hyper close the connection without answering.
#[derive(Debug, thiserror::Error)]
#[error("connection closed without a response (simulated)")]
struct CloseConnection;

/// Which endpoint a path names.
enum Route<'a> {
    Downloads(&'a str),
    Task(&'a str),
    Other,
}

/// What to answer, decided under the state lock; produced outside it.
enum Answer {
    Empty {
        status: StatusCode,
        header: Option<(HeaderName, &'static str)>,
    },
    Error {
        status: StatusCode,
        body: ErrorBody,
    },
    Downloads {
        normal: Normal,
        fault: Option<FaultAction>,
    },
    Task {
        id: String,
        files: Arc<Vec<SimFile>>,
    },
}

/// A downloads request's answer when no fault intervenes.
enum Normal {
    Files {
        files: Arc<Vec<SimFile>>,
        format: ResponseFormat,
    },
    Deleted,
}

/// Start serving `scenario` on `listener` until `shutdown` is cancelled. Returns at once; the
/// accept loop and a task per connection run in the background (see [`SimHandle::closed`]).
pub async fn start(
    scenario: Scenario,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<SimHandle> {
    let addr = listener.local_addr()?;
    let (credentials, not_found_status, tasks) = scenario.into_parts();
    let task_count = tasks.len();
    let shared = Arc::new(Shared {
        addr,
        started: Instant::now(),
        down: AtomicBool::new(false),
        state: Mutex::new(State::new(&credentials, not_found_status, tasks)),
        in_flight: AtomicU64::new(0),
        in_flight_max: AtomicU64::new(0),
        in_flight_max_per_task: AtomicU64::new(0),
        total: AtomicU64::new(0),
        tracker: TaskTracker::new(),
    });
    info!(%addr, tasks = task_count, "sandbox simulator listening");
    shared
        .tracker
        .spawn(accept_loop(shared.clone(), listener, shutdown));
    // Closed at once so `closed()` resolves when the accept loop and every connection it spawns
    // (spawning on a closed tracker still works) have ended.
    shared.tracker.close();
    Ok(SimHandle { shared })
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                warn!(%error, "simulator accept failed");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                }
            }
        };
        if shared.down.load(Ordering::SeqCst) {
            drop(stream);
            continue;
        }
        // Small responses: don't let Nagle delay them.
        let _ = stream.set_nodelay(true);
        shared
            .tracker
            .spawn(serve_connection(shared.clone(), stream, shutdown.clone()));
    }
    info!(addr = %shared.addr, "sandbox simulator stopped");
}

async fn serve_connection(shared: Arc<Shared>, stream: TcpStream, shutdown: CancellationToken) {
    let service = service_fn(move |req| answer(shared.clone(), req));
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        // Shutdown drops the connection mid-flight: prompt, and a simulator owes no drain.
        () = shutdown.cancelled() => {}
        result = conn => {
            if let Err(error) = result {
                debug!(%error, "simulator connection ended");
            }
        }
    }
}

async fn answer(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<SimBody>, CloseConnection> {
    if shared.down.load(Ordering::SeqCst) {
        return Err(CloseConnection);
    }
    let mut guard = InFlight::enter(&shared);
    shared.total.fetch_add(1, Ordering::SeqCst);
    let at = shared.started.elapsed();
    let route = route(req.uri().path());
    let presented = basic_credentials(&req);

    let answer = {
        let mut state = shared.lock();
        let (segment, counters) = match route {
            Route::Downloads(seg) | Route::Task(seg) => {
                let (key, counters) = state.path_counters(seg);
                counters.requests.fetch_add(1, Ordering::SeqCst);
                guard.enter_path(counters);
                (Some(seg), key)
            }
            Route::Other => (None, Arc::from("")),
        };
        let answer = decide(
            &mut state,
            &route,
            segment,
            req.method(),
            presented.as_deref(),
        );
        state.record(at, counters, answer.status());
        answer
    };
    debug!(
        path = req.uri().path(),
        status = answer.status(),
        "simulator request"
    );

    let response = match answer {
        Answer::Empty { status, header } => {
            let mut response = empty(status, SimBody::empty(guard));
            if let Some((name, value)) = header {
                response
                    .headers_mut()
                    .insert(name, HeaderValue::from_static(value));
            }
            response
        }
        Answer::Error { status, body } => json(status, SimBody::full(render::error(&body), guard)),
        Answer::Task { id, files } => {
            let body = render::task_params(&id, &files, shared.started.elapsed());
            json(StatusCode::OK, SimBody::full(body, guard))
        }
        Answer::Downloads { normal, fault } => downloads(&shared, normal, fault, guard).await?,
    };
    Ok(response)
}

/// The whole decision for one request; runs under the state lock, so it only looks things up.
fn decide(
    state: &mut State,
    route: &Route<'_>,
    segment: Option<&str>,
    method: &Method,
    presented: Option<&[u8]>,
) -> Answer {
    if presented != Some(state.expected_auth.as_slice()) {
        return Answer::Empty {
            status: StatusCode::UNAUTHORIZED,
            header: Some((WWW_AUTHENTICATE, CHALLENGE)),
        };
    }
    let Some(segment) = segment else {
        return Answer::Empty {
            status: StatusCode::NOT_FOUND,
            header: None,
        };
    };
    if method != Method::GET {
        return Answer::Empty {
            status: StatusCode::METHOD_NOT_ALLOWED,
            header: Some((ALLOW, "GET")),
        };
    }
    let Some(id) = canonical_task_id(segment) else {
        return Answer::Error {
            status: StatusCode::BAD_REQUEST,
            body: ErrorBody::new(29, "bad task id"),
        };
    };
    let not_found_status = state.not_found_status;
    let Some(task) = state.tasks.get_mut(&id) else {
        return Answer::Error {
            status: StatusCode::from_u16(not_found_status).unwrap_or(StatusCode::NOT_FOUND),
            body: ErrorBody::new(6, "task not found"),
        };
    };
    let deleted = task.state == TaskState::Deleted;
    match route {
        Route::Task(_) if deleted => deleted_error(),
        Route::Task(_) => Answer::Task {
            id,
            files: task.files.clone(),
        },
        _ => Answer::Downloads {
            fault: task.faults.next(),
            normal: if deleted {
                Normal::Deleted
            } else {
                Normal::Files {
                    files: task.files.clone(),
                    format: task.format,
                }
            },
        },
    }
}

/// A downloads answer: the fault if one is due, else the normal answer.
async fn downloads(
    shared: &Shared,
    normal: Normal,
    fault: Option<FaultAction>,
    guard: InFlight,
) -> Result<Response<SimBody>, CloseConnection> {
    let response = match fault {
        None | Some(FaultAction::Pass) => {
            let (status, body) = normal.render(shared.started.elapsed());
            json(status, SimBody::full(body, guard))
        }
        Some(FaultAction::Delay(delay)) => {
            tokio::time::sleep(delay).await;
            let (status, body) = normal.render(shared.started.elapsed());
            json(status, SimBody::full(body, guard))
        }
        Some(FaultAction::Trickle { bytes_per_second }) => {
            let (status, body) = normal.render(shared.started.elapsed());
            json(status, SimBody::trickle(body, bytes_per_second, guard))
        }
        Some(FaultAction::Status {
            status,
            body,
            retry_after,
        }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = match body {
                StatusBody::Empty => empty(status, SimBody::empty(guard)),
                StatusBody::Error(e) => json(status, SimBody::full(render::error(&e), guard)),
                StatusBody::Text(text) => json(status, SimBody::full(text, guard)),
            };
            if let Some(value) = retry_after {
                // Control characters cannot go into a header; anything else is sent verbatim.
                let value = HeaderValue::from_str(&value)
                    .unwrap_or_else(|_| HeaderValue::from_static("invalid"));
                response.headers_mut().insert(RETRY_AFTER, value);
            }
            response
        }
        Some(FaultAction::Malformed) => json(StatusCode::OK, SimBody::full(MALFORMED, guard)),
        Some(FaultAction::Oversized {
            bytes,
            content_length,
        }) => json(
            StatusCode::OK,
            SimBody::oversized(bytes, content_length, guard),
        ),
        Some(FaultAction::Reset) => return Err(CloseConnection),
        Some(FaultAction::BodyText(text)) => json(StatusCode::OK, SimBody::full(text, guard)),
    };
    Ok(response)
}

fn empty(status: StatusCode, body: SimBody) -> Response<SimBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
}

fn json(status: StatusCode, body: SimBody) -> Response<SimBody> {
    let mut response = empty(status, body);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
    response
}

fn deleted_error() -> Answer {
    Answer::Error {
        status: StatusCode::NOT_FOUND,
        body: deleted_body(),
    }
}

fn deleted_body() -> ErrorBody {
    ErrorBody::new(7, "task deleted").meta("task has already been deleted")
}

impl Answer {
    /// The status this answer will carry; 0 for a closed connection.
    fn status(&self) -> u16 {
        match self {
            Answer::Empty { status, .. } | Answer::Error { status, .. } => status.as_u16(),
            Answer::Task { .. } => 200,
            Answer::Downloads { normal, fault } => match fault {
                Some(FaultAction::Reset) => 0,
                Some(FaultAction::Status { status, .. }) => *status,
                Some(
                    FaultAction::Malformed
                    | FaultAction::Oversized { .. }
                    | FaultAction::BodyText(_),
                ) => 200,
                None
                | Some(FaultAction::Pass | FaultAction::Delay(_) | FaultAction::Trickle { .. }) => {
                    match normal {
                        Normal::Files { .. } => 200,
                        Normal::Deleted => 404,
                    }
                }
            },
        }
    }
}

impl Normal {
    /// Status and body, with files visible `elapsed` after start.
    fn render(&self, elapsed: Duration) -> (StatusCode, Vec<u8>) {
        match self {
            Normal::Files { files, format } => (
                StatusCode::OK,
                render::downloads(files, *format, elapsed).unwrap_or_default(),
            ),
            Normal::Deleted => (StatusCode::NOT_FOUND, render::error(&deleted_body())),
        }
    }
}

fn route(path: &str) -> Route<'_> {
    let Some(rest) = path.strip_prefix(TASKS_PREFIX) else {
        return Route::Other;
    };
    match rest.split_once('/') {
        None if !rest.is_empty() => Route::Task(rest),
        Some((id, "downloads")) if !id.is_empty() => Route::Downloads(id),
        _ => Route::Other,
    }
}

/// The decoded `user:password` of an `Authorization: Basic` header, if well-formed.
fn basic_credentials<B>(req: &Request<B>) -> Option<Vec<u8>> {
    let value = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()
}

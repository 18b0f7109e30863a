//! The simulator's HTTP server: accept loop, routing, Basic auth and fault injection.
//!
//! Routes (every one behind HTTP Basic auth; checks run in this order):
//!
//! | request | answer |
//! |---|---|
//! | missing or wrong credentials | 401, empty body, `WWW-Authenticate: Basic` |
//! | a path other than the five below | 404, empty body |
//! | a method other than `GET` on them | 405, empty body, `Allow: GET` |
//! | `GET /api/v1/sandbox/tasks/` | a bad query: 400 code 2; else the next list fault, else 200 with the page |
//! | `GET /api/v1/sandbox/health` | the next health fault, else 200 `{"healthy","detailed"}` |
//! | `GET /api/v1/sandbox/version` | the next version fault, else 200 `{"system_version","bases_version"}` |
//! | `{task_id}` not a GUID | 400 `{"code":29,"message":"bad task id"}` |
//! | unknown task, or not created yet | 404 (or 400, `not_found_status`) `{"code":6,"message":"task not found"}` |
//! | `GET /api/v1/sandbox/tasks/{task_id}/downloads` | the task's next fault, else 404/7 if deleted or disposed, else 200 with its files |
//! | `GET /api/v1/sandbox/tasks/{task_id}` | the task's next `params_faults` element, else 404/7 if gone (`state: deleted`), else 200 with its parameter record |

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
use super::control::{Endpoint, InFlight, Shared, SimHandle, State};
use super::lifecycle::Offset;
use super::records;
use super::render;
use super::scenario::{
    canonical_task_id, ErrorBody, FaultAction, ResponseFormat, Scenario, SimFile, StatusBody,
    TaskState,
};

const TASKS_PREFIX: &str = "/api/v1/sandbox/tasks/";
const HEALTH_PATH: &str = "/api/v1/sandbox/health";
const VERSION_PATH: &str = "/api/v1/sandbox/version";
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
    List,
    Health,
    Version,
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
    Respond {
        normal: Normal,
        fault: Option<FaultAction>,
    },
}

/// A request's answer when no fault intervenes (or after a `delay`, `trickle` or `pass`).
enum Normal {
    /// Downloads: rendered when sent, so a `delay` sees the files as of its end.
    Files {
        files: Arc<Vec<SimFile>>,
        format: ResponseFormat,
    },
    /// 404, code 7.
    Deleted,
    /// 200 with this body, rendered on arrival (the lifecycle endpoints).
    Body(Vec<u8>),
}

/// Start serving `scenario` on `listener` until `shutdown` is cancelled. Returns at once; the
/// accept loop and a task per connection run in the background (see [`SimHandle::closed`]).
pub async fn start(
    scenario: Scenario,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<SimHandle> {
    let addr = listener.local_addr()?;
    let parts = scenario.into_parts();
    let task_count = parts.tasks.len();
    let generating = parts.generator.is_some();
    let shared = Arc::new(Shared {
        addr,
        started: Instant::now(),
        down: AtomicBool::new(false),
        state: Mutex::new(State::new(parts, std::time::SystemTime::now())),
        in_flight: AtomicU64::new(0),
        in_flight_max: AtomicU64::new(0),
        in_flight_max_per_task: AtomicU64::new(0),
        total: AtomicU64::new(0),
        per_endpoint: Default::default(),
        tracker: TaskTracker::new(),
    });
    info!(%addr, tasks = task_count, generating, "sandbox simulator listening");
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
    let endpoint = route.endpoint();
    shared.per_endpoint[endpoint.index()].fetch_add(1, Ordering::SeqCst);
    let presented = basic_credentials(&req);

    let answer = {
        let mut state = shared.lock();
        state.catch_up(Offset::after(at));
        let counters = match route {
            Route::Downloads(seg) | Route::Task(seg) => {
                let (key, counters) = state.path_counters(seg);
                counters.requests.fetch_add(1, Ordering::SeqCst);
                guard.enter_path(counters);
                key
            }
            _ => Arc::from(""),
        };
        let request = Asked {
            route: &route,
            method: req.method(),
            query: req.uri().query(),
            presented: presented.as_deref(),
            at,
        };
        let answer = decide(&mut state, &request);
        state.record(at, endpoint, counters, answer.status());
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
        Answer::Respond { normal, fault } => respond(&shared, normal, fault, guard).await?,
    };
    Ok(response)
}

/// What `decide` needs to know about a request.
struct Asked<'a> {
    route: &'a Route<'a>,
    method: &'a Method,
    query: Option<&'a str>,
    presented: Option<&'a [u8]>,
    /// Arrival time since start.
    at: Duration,
}

/// The whole decision for one request; runs under the state lock, so it only looks things up
/// (and renders the lifecycle endpoints' bodies, bounded by the page size).
fn decide(state: &mut State, req: &Asked<'_>) -> Answer {
    if req.presented != Some(state.expected_auth.as_slice()) {
        return Answer::Empty {
            status: StatusCode::UNAUTHORIZED,
            header: Some((WWW_AUTHENTICATE, CHALLENGE)),
        };
    }
    if matches!(req.route, Route::Other) {
        return Answer::Empty {
            status: StatusCode::NOT_FOUND,
            header: None,
        };
    }
    if req.method != Method::GET {
        return Answer::Empty {
            status: StatusCode::METHOD_NOT_ALLOWED,
            header: Some((ALLOW, "GET")),
        };
    }
    let segment = match req.route {
        Route::List => {
            let query = match records::parse_query(req.query) {
                Ok(q) => q,
                Err(body) => {
                    return Answer::Error {
                        status: StatusCode::BAD_REQUEST,
                        body,
                    }
                }
            };
            return Answer::Respond {
                fault: state.list_faults.next(),
                normal: Normal::Body(records::task_list(state, &query, req.at)),
            };
        }
        Route::Health => {
            return Answer::Respond {
                fault: state.health_faults.next(),
                normal: Normal::Body(records::health(state, req.at)),
            }
        }
        Route::Version => {
            return Answer::Respond {
                fault: state.version_faults.next(),
                normal: Normal::Body(records::version(state)),
            }
        }
        Route::Downloads(seg) | Route::Task(seg) => seg,
        Route::Other => unreachable!("answered above"),
    };
    let Some(id) = canonical_task_id(segment) else {
        return Answer::Error {
            status: StatusCode::BAD_REQUEST,
            body: ErrorBody::new(29, "bad task id"),
        };
    };
    let not_found = Answer::Error {
        status: StatusCode::from_u16(state.not_found_status).unwrap_or(StatusCode::NOT_FOUND),
        body: ErrorBody::new(6, "task not found"),
    };
    let Some(task) = state.tasks.get(&id) else {
        return not_found;
    };
    let Some(view) = records::view(task, req.at) else {
        return not_found;
    };
    let gone = task.state == TaskState::Deleted;
    if let Route::Task(_) = req.route {
        let normal = if gone {
            Normal::Deleted
        } else {
            Normal::Body(
                records::task_params(state, &id, req.at)
                    .expect("the task exists: its view was just taken"),
            )
        };
        let fault = state
            .tasks
            .get_mut(&id)
            .and_then(|t| t.params_faults.next());
        return Answer::Respond { normal, fault };
    }
    let normal = if gone || view.state.kind.is_removed() {
        Normal::Deleted
    } else {
        Normal::Files {
            files: task.files.clone(),
            format: task.format,
        }
    };
    let fault = state.tasks.get_mut(&id).and_then(|t| t.faults.next());
    Answer::Respond { normal, fault }
}

/// The fault if one is due, else the normal answer.
async fn respond(
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

fn deleted_body() -> ErrorBody {
    ErrorBody::new(7, "task deleted").meta("task has already been deleted")
}

impl Answer {
    /// The status this answer will carry; 0 for a closed connection.
    fn status(&self) -> u16 {
        match self {
            Answer::Empty { status, .. } | Answer::Error { status, .. } => status.as_u16(),
            Answer::Respond { normal, fault } => match fault {
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
                        Normal::Files { .. } | Normal::Body(_) => 200,
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
            Normal::Body(body) => (StatusCode::OK, body.clone()),
        }
    }
}

fn route(path: &str) -> Route<'_> {
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    if trimmed == HEALTH_PATH {
        return Route::Health;
    }
    if trimmed == VERSION_PATH {
        return Route::Version;
    }
    if trimmed == TASKS_PREFIX.trim_end_matches('/') {
        return Route::List;
    }
    let Some(rest) = path.strip_prefix(TASKS_PREFIX) else {
        return Route::Other;
    };
    match rest.split_once('/') {
        None if !rest.is_empty() => Route::Task(rest),
        Some((id, "downloads")) if !id.is_empty() => Route::Downloads(id),
        _ => Route::Other,
    }
}

impl Route<'_> {
    fn endpoint(&self) -> Endpoint {
        match self {
            Route::Downloads(_) => Endpoint::Downloads,
            Route::Task(_) => Endpoint::Task,
            Route::List => Endpoint::List,
            Route::Health => Endpoint::Health,
            Route::Version => Endpoint::Version,
            Route::Other => Endpoint::Other,
        }
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

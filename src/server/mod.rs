//! The exporter's HTTP server (hyper 1): routes, connection handling and graceful drain.
//!
//! | route | answer |
//! |---|---|
//! | `GET /metrics` (the telemetry path) | the exposition, `text/plain; version=0.0.4`, or OpenMetrics 1.0 when `Accept` prefers it |
//! | `GET /`, `/tasks/{id}`, `/events` | the triage console ([`console`]): overview, one task, the activity feed |
//! | `GET /api/v1/tasks`, `/api/v1/tasks/{id}`, `/api/v1/events` | the console's data as JSON (`docs/console.md`) |
//! | `GET /static/console.css`, `/static/console.js` | the console's assets, compiled in, cached for an hour |
//! | `GET /-/healthy` | 200 while the process runs |
//! | `GET /-/ready` | 200 once every watched task was polled, 503 before |
//! | `POST /-/reload` | reload the configuration: 200, or 500 with the errors; 405 for other methods |
//! | anything else | 404 (405 for a known path with a wrong method) |
//!
//! The server only reads the state; it never talks to the sandbox. It serves every listener it
//! is given (`--web.listen-address` repeated, or the sockets of `--web.systemd-socket`) with one
//! accept loop each and one shared connection table. Each connection runs in its own task. Connections go through a table ([`connections`]): each peer address holds at most
//! `--web.max-connections-per-peer` (more are closed at accept, never queued), the whole table
//! at most `--web.max-connections` (when full, an idle connection is evicted to make room), and
//! a connection must send its first request's headers within [`FIRST_REQUEST_TIMEOUT`] and each
//! later one within [`IDLE_TIMEOUT`] of the previous answer. The accept loop never waits on any
//! of this, so one peer's flood of slow or idle sockets cannot keep another peer's scrape out.
//! Requests in progress are capped too (beyond `--web.max-requests`, 503). `/metrics` is
//! gzip-compressed when the client asks for it, as Prometheus does.
//!
//! With `--web.config.file` ([`krs_web_config`]) connections are TLS (certificates re-read
//! when they change on disk), every request but the probes must carry valid basic-auth
//! credentials, and the configured security headers are added to every answer. `/-/healthy`
//! and `/-/ready` are left out of basic auth ([`AUTH_EXEMPT`]), as exporter-toolkit users do
//! for Kubernetes probes and a Docker `HEALTHCHECK`, which carry no credentials; they say only
//! whether the process runs and how many tasks were polled. TLS still applies to them.
//!
//! [`handle`] is generic over the request body and [`Routes::new`] needs no socket, so the
//! routes are tested by calling them (`tests.rs`), as in axum's `examples/testing`.

mod connections;
pub mod console;
mod scrape;
#[cfg(test)]
mod tests;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::channel::Channel;
use http_body_util::{Either, Full};
use hyper::body::{Frame, SizeHint};
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::UiTaskUrl;
use crate::journal::Journal;
use crate::metrics::web::Rejection;
use crate::metrics::Metrics;
use crate::state::State;
use crate::store::Store;
use krs_web_config::{AuthResult, BasicAuth, TlsAcceptorCache, WebConfig, WWW_AUTHENTICATE};

pub use connections::Limits as ConnectionLimits;

/// From accept to the first request's complete headers, TLS handshake included. Prometheus
/// sends its request at once; only a stalled or hostile client needs longer.
pub const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// From an answer to the next request's complete headers on a kept-alive connection. Past it
/// the connection is closed; a scraper with a longer interval reconnects, at the cost of one
/// handshake.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// `--web.max-connections`'s default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// `--web.max-connections-per-peer`'s default: far above what Prometheus (one connection per
/// target) or a browser (six) opens, far below the table, so several flooding peers are needed
/// to fill it.
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: usize = 64;

/// Paths answered without basic auth: the liveness and readiness probes.
pub const AUTH_EXEMPT: [&str; 2] = ["/-/healthy", "/-/ready"];

/// A reload asked for over HTTP; the answer is `Ok(summary)` or `Err(problems)`.
pub type ReloadRequest = oneshot::Sender<Result<String, String>>;

/// What the routes read.
pub struct Routes {
    pub state: Arc<State>,
    pub metrics: Arc<Metrics>,
    pub telemetry_path: String,
    pub reload: mpsc::Sender<ReloadRequest>,
    /// Shown atop every console page (e.g. "demo mode").
    pub banner: Option<String>,
    /// Requests served at once, beyond which the answer is 503; `None` means no cap. Scrapes
    /// of the telemetry path and all other requests have a cap each, so a flood of page views
    /// cannot crowd out Prometheus.
    pub max_requests: Option<RequestCaps>,
    /// Credentials every request must carry (`basic_auth_users` of the web config).
    pub basic_auth: Option<Arc<BasicAuth>>,
    /// Added to every response (`http_server_config.headers`), already validated.
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
    /// One console page renders at a time: a flood of page views queues here (and meets the
    /// request cap) instead of taking the CPU from polls and scrapes.
    pub page_renders: Semaphore,
    /// The store: its status and the activity feed.
    pub store: Arc<Store>,
    /// `sandbox.ui_task_url` of the active configuration; a reload sends the new one.
    pub ui_task_url: watch::Receiver<Option<UiTaskUrl>>,
}

/// The `--web.max-requests` budgets.
pub struct RequestCaps {
    pub scrapes: Arc<Semaphore>,
    pub others: Arc<Semaphore>,
}

impl RequestCaps {
    pub fn new(max: usize) -> Self {
        RequestCaps {
            scrapes: Arc::new(Semaphore::new(max)),
            others: Arc::new(Semaphore::new(max)),
        }
    }
}

impl Routes {
    /// Routes over `state` and `metrics` with the defaults: `/metrics`, no banner, no request
    /// cap, no basic auth, no extra headers. Reloads asked for over HTTP go to `reload`.
    pub fn new(
        state: Arc<State>,
        metrics: Arc<Metrics>,
        reload: mpsc::Sender<ReloadRequest>,
    ) -> Self {
        Routes {
            state,
            metrics: Arc::clone(&metrics),
            telemetry_path: "/metrics".into(),
            reload,
            banner: None,
            max_requests: None,
            basic_auth: None,
            headers: Vec::new(),
            page_renders: Semaphore::new(1),
            store: Arc::new(Store::memory(metrics, Arc::new(Journal::default()))),
            ui_task_url: watch::channel(None).1,
        }
    }

    /// The parts of `web` that apply per request.
    pub fn web_parts(
        web: &WebConfig,
    ) -> (
        Option<Arc<BasicAuth>>,
        Vec<(header::HeaderName, HeaderValue)>,
    ) {
        let headers = web
            .headers()
            .iter()
            .filter_map(|(name, value)| {
                Some((
                    header::HeaderName::from_bytes(name.as_bytes()).ok()?,
                    HeaderValue::from_str(value).ok()?,
                ))
            })
            .collect();
        (web.basic_auth().cloned(), headers)
    }
}

/// A whole body, or `/metrics` streamed as it renders ([`scrape`]).
type Body = Either<Full<Bytes>, Channel<Bytes, io::Error>>;

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            total: DEFAULT_MAX_CONNECTIONS,
            per_peer: DEFAULT_MAX_CONNECTIONS_PER_PEER,
            first_request: FIRST_REQUEST_TIMEOUT,
            idle: IDLE_TIMEOUT,
        }
    }
}

/// The connection table shared by the accept loop and every connection task. The lock is
/// held for a table update only, never across an `.await`.
struct Connections {
    table: Mutex<connections::Table<Arc<Notify>>>,
    metrics: Arc<Metrics>,
}

impl Connections {
    fn table(&self) -> MutexGuard<'_, connections::Table<Arc<Notify>>> {
        // The table's updates cannot panic midway; a poisoned lock still holds a valid table.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits or refuses a connection just accepted; closes the idle one evicted for it.
    fn admit(&self, peer: SocketAddr) -> Option<Tracker> {
        let wake = Arc::new(Notify::new());
        let (admission, open) = {
            let mut table = self.table();
            let admission = table.admit(peer.ip(), Instant::now(), Arc::clone(&wake));
            (admission, table.len())
        };
        self.metrics.web.set_open(open);
        match admission {
            connections::Admission::Admitted { id, evicted } => {
                if let Some(victim) = evicted {
                    self.metrics.web.record_rejection(Rejection::EvictedIdle);
                    victim.notify_one();
                }
                Some(Tracker { id, wake })
            }
            connections::Admission::Refused(refusal) => {
                let reason = match refusal {
                    connections::Refusal::PerPeerLimit => Rejection::PerPeerLimit,
                    connections::Refusal::Full => Rejection::TableFull,
                };
                self.metrics.web.record_rejection(reason);
                debug!(peer = %peer, reason = reason.as_str(), "connection refused");
                None
            }
        }
    }

    fn remove(&self, id: connections::ConnId) {
        let open = {
            let mut table = self.table();
            table.remove(id);
            table.len()
        };
        self.metrics.web.set_open(open);
    }
}

/// One admitted connection's place in the table.
struct Tracker {
    id: connections::ConnId,
    /// Woken when the connection is evicted or its last answer is written, so its task
    /// re-reads its deadline.
    wake: Arc<Notify>,
}

/// Marks a connection as serving one request until dropped with the response body (written
/// to the end, or abandoned).
struct Serving {
    connections: Arc<Connections>,
    id: connections::ConnId,
    wake: Arc<Notify>,
}

impl Serving {
    fn begin(connections: &Arc<Connections>, tracker: &Tracker) -> Self {
        connections.table().serving(tracker.id);
        Serving {
            connections: Arc::clone(connections),
            id: tracker.id,
            wake: Arc::clone(&tracker.wake),
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.connections.table().answered(self.id, Instant::now());
        self.wake.notify_one();
    }
}

/// A response body that keeps its connection marked as serving while hyper writes it.
struct Tracked {
    body: Body,
    _serving: Serving,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = <Body as hyper::body::Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Accepts connections on every listener until `shutdown`, then gives open connections
/// `drain` to finish their requests (the shutdown grace period). All listeners share one
/// connection table, one set of routes and one drain, so a peer's limits hold across them.
pub async fn serve(
    listeners: Vec<TcpListener>,
    routes: Arc<Routes>,
    tls: Option<Arc<TlsAcceptorCache>>,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Connections {
        table: Mutex::new(connections::Table::new(limits)),
        metrics: Arc::clone(&routes.metrics),
    });
    // One accept loop per listener, each handing its connections to the loop below; a loop
    // ends (and closes its listener) at shutdown.
    let (accepted_tx, mut accepted_rx) = mpsc::channel::<(TcpStream, SocketAddr)>(1);
    let mut accepting = tokio::task::JoinSet::new();
    for listener in listeners {
        accepting.spawn(accept_loop(listener, accepted_tx.clone(), shutdown.clone()));
    }
    drop(accepted_tx);
    loop {
        let (stream, peer) = tokio::select! {
            a = accepted_rx.recv() => match a {
                Some(conn) => conn,
                None => break,
            },
            () = shutdown.cancelled() => break,
        };
        // Refused: dropped here, closed at once.
        let Some(tracker) = connections.admit(peer) else {
            continue;
        };
        tokio::spawn(run_connection(
            stream,
            peer,
            tracker,
            Arc::clone(&connections),
            Arc::clone(&routes),
            tls.clone(),
            graceful.watcher(),
        ));
    }
    // Every listener closed before the drain, so new connections are refused meanwhile.
    accepting.abort_all();
    while accepting.join_next().await.is_some() {}
    tokio::select! {
        () = graceful.shutdown() => info!("HTTP server drained"),
        () = tokio::time::sleep(drain) => warn!("HTTP connections still open after the grace period"),
    }
}

/// Accepts on `listener` until `shutdown` or until the serving loop is gone, handing each
/// connection over.
async fn accept_loop(
    listener: TcpListener,
    accepted: mpsc::Sender<(TcpStream, SocketAddr)>,
    shutdown: CancellationToken,
) {
    loop {
        let conn = tokio::select! {
            a = listener.accept() => a,
            () = shutdown.cancelled() => return,
        };
        match conn {
            Ok(conn) => {
                if accepted.send(conn).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                // Typically EMFILE: back off briefly instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Runs one admitted connection (TLS handshake, then HTTP) until it ends, expires or is
/// evicted, then takes it out of the table.
async fn run_connection(
    stream: TcpStream,
    peer: SocketAddr,
    tracker: Tracker,
    connections: Arc<Connections>,
    routes: Arc<Routes>,
    tls: Option<Arc<TlsAcceptorCache>>,
    watcher: Watcher,
) {
    let id = tracker.id;
    let wake = Arc::clone(&tracker.wake);
    let served = {
        let connections = Arc::clone(&connections);
        async move {
            match tls {
                None => serve_connection(stream, routes, connections, tracker, watcher).await,
                Some(tls) => match tls.acceptor().accept(stream).await {
                    Ok(stream) => {
                        serve_connection(stream, routes, connections, tracker, watcher).await
                    }
                    Err(e) => {
                        debug!(peer = %peer, error = %e, "TLS handshake failed");
                        Ok(())
                    }
                },
            }
        }
    };
    let mut served = pin!(served);
    loop {
        let deadline = connections.table().deadline(id);
        let until = match deadline {
            connections::Deadline::Gone => {
                debug!(peer = %peer, "idle connection evicted to make room");
                break;
            }
            connections::Deadline::Serving => None,
            connections::Deadline::At(at, expiry) if at <= Instant::now() => {
                let reason = match expiry {
                    connections::Expiry::FirstRequest => Rejection::HeaderTimeout,
                    connections::Expiry::Idle => Rejection::IdleTimeout,
                };
                connections.metrics.web.record_rejection(reason);
                debug!(peer = %peer, reason = reason.as_str(), "connection closed");
                break;
            }
            connections::Deadline::At(at, _) => Some(at),
        };
        let expired = async {
            match until {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = &mut served => {
                if let Err(e) = result {
                    debug!(peer = %peer, error = %e, "connection ended with an error");
                }
                break;
            }
            () = wake.notified() => {}
            () = expired => {}
        }
    }
    connections.remove(id);
}

/// Serves HTTP/1.1 on one connection, plain or TLS, until it closes or the server drains.
/// Deadlines are the connection table's ([`run_connection`]), not hyper's.
async fn serve_connection<I>(
    io: I,
    routes: Arc<Routes>,
    connections: Arc<Connections>,
    tracker: Tracker,
    watcher: Watcher,
) -> hyper::Result<()>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let serving = Serving::begin(&connections, &tracker);
        let routes = Arc::clone(&routes);
        async move {
            let response = handle(&routes, req).await;
            Ok::<_, Infallible>(response.map(|body| Tracked {
                body,
                _serving: serving,
            }))
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(io), service);
    watcher.watch(conn).await
}

/// Answers one request, with the configured extra headers. No route reads a request body, so
/// any body type will do: tests pass `()`.
pub async fn handle<B>(routes: &Routes, req: Request<B>) -> Response<Body> {
    let mut response = route(routes, req).await;
    for (name, value) in &routes.headers {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    response
}

/// Routes one request.
async fn route<B>(routes: &Routes, req: Request<B>) -> Response<Body> {
    let mut permit = match &routes.max_requests {
        Some(caps) => match Arc::clone(if req.uri().path() == routes.telemetry_path {
            &caps.scrapes
        } else {
            &caps.others
        })
        .try_acquire_owned()
        {
            Ok(permit) => Some(permit),
            Err(_) => {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Too many concurrent requests; try again\n".into(),
                )
            }
        },
        None => None,
    };
    let exempt = AUTH_EXEMPT.contains(&req.uri().path());
    if let (Some(auth), false) = (&routes.basic_auth, exempt) {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if !matches!(auth.check_async(given).await, AuthResult::Allowed { .. }) {
            let mut r = text(StatusCode::UNAUTHORIZED, "Unauthorized\n".into());
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(WWW_AUTHENTICATE),
            );
            return r;
        }
    }
    let path = req.uri().path();
    let method = req.method();
    let readable = method == Method::GET || method == Method::HEAD;
    let asset = console::ASSETS.iter().find(|(p, _, _)| *p == path);
    let page = console::Request::parse(path, req.uri().query().unwrap_or(""));
    let response = if path == routes.telemetry_path {
        if readable {
            let accept = req.headers().get_all(header::ACCEPT);
            let format = scrape::negotiate(accept.iter().filter_map(|v| v.to_str().ok()));
            scrape::metrics(routes, format, accepts_gzip(&req), permit.take()).await
        } else {
            not_allowed("GET, HEAD")
        }
    } else if let Some((_, content_type, body)) = asset {
        if readable {
            static_asset(content_type, body)
        } else {
            not_allowed("GET, HEAD")
        }
    } else if let Some(page) = page {
        if readable {
            console_page(routes, page).await
        } else {
            not_allowed("GET, HEAD")
        }
    } else {
        match path {
            "/-/healthy" if readable => text(StatusCode::OK, "Healthy\n".into()),
            "/-/ready" if readable => ready(routes),
            "/-/reload" if method == Method::POST || method == Method::PUT => reload(routes).await,
            "/-/reload" => not_allowed("POST, PUT"),
            "/-/healthy" | "/-/ready" => not_allowed("GET, HEAD"),
            _ => text(StatusCode::NOT_FOUND, "Not found\n".into()),
        }
    };
    if method == Method::HEAD {
        let (parts, _) = response.into_parts();
        return Response::from_parts(parts, Either::Left(Full::default()));
    }
    response
}

/// A console page or API answer, rendered off the async workers like `/metrics`, one at a
/// time: a flood of page views must not delay the polls.
async fn console_page(routes: &Routes, request: console::Request) -> Response<Body> {
    let Ok(_slot) = routes.page_renders.acquire().await else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into());
    };
    let page = console::Console {
        state: Arc::clone(&routes.state),
        journal: Arc::clone(routes.store.journal()),
        status: console::Status {
            pause: routes.metrics.appliance.pause(),
            sandbox: routes.metrics.sandbox.status(),
            discovery: routes.metrics.discovery.status(),
            reload: routes.metrics.last_reload(),
            storage: routes.store.status(),
        },
        banner: routes.banner.clone(),
        telemetry_path: routes.telemetry_path.clone(),
        ui_task_url: routes.ui_task_url.borrow().clone(),
        now: std::time::SystemTime::now(),
    };
    match tokio::task::spawn_blocking(move || page.render(&request)).await {
        Ok(answer) => {
            let mut r = with_type(answer.status, answer.content_type, answer.body.into());
            console_headers(&mut r, "no-store");
            r
        }
        Err(e) => {
            warn!(error = %e, "rendering a console page failed");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "rendering failed\n".into(),
            )
        }
    }
}

fn static_asset(content_type: &'static str, body: &'static str) -> Response<Body> {
    let mut r = with_type(
        StatusCode::OK,
        content_type,
        Bytes::from_static(body.as_bytes()),
    );
    console_headers(&mut r, "public, max-age=3600");
    r
}

/// The console's strict CSP, no referrer to the sandbox's UI, and how long to cache.
fn console_headers(r: &mut Response<Body>, cache: &'static str) {
    let headers = r.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(console::CSP),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
}

/// Whether the request accepts a gzip body (`Accept-Encoding: gzip`, not `gzip;q=0`).
fn accepts_gzip<B>(req: &Request<B>) -> bool {
    req.headers()
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let zero_q = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    == Some(0.0)
            });
            coding.eq_ignore_ascii_case("gzip") && !zero_q
        })
}

fn ready(routes: &Routes) -> Response<Body> {
    if routes.state.ready() {
        text(StatusCode::OK, "Ready\n".into())
    } else {
        let view = routes.state.read();
        let total = view.watch_list().tasks.len();
        let polled = view.tasks().filter(|(_, t)| t.last_poll.is_some()).count();
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("Not ready: {polled} of {total} watched tasks polled\n"),
        )
    }
}

async fn reload(routes: &Routes) -> Response<Body> {
    let (tx, rx) = oneshot::channel();
    if routes.reload.send(tx).await.is_err() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into());
    }
    match rx.await {
        Ok(Ok(summary)) => text(
            StatusCode::OK,
            format!("configuration reloaded: {summary}\n"),
        ),
        Ok(Err(problems)) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reload failed; the previous configuration stays active\n{problems}\n"),
        ),
        Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into()),
    }
}

fn not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = text(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method not allowed\n".into(),
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    with_type(status, "text/plain; charset=utf-8", body.into())
}

fn with_type(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    typed(status, content_type, Either::Left(Full::new(body)))
}

/// A response with its content type and `nosniff`, whole or streamed.
fn typed(status: StatusCode, content_type: &'static str, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let headers = r.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

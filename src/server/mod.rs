//! The exporter's HTTP server (hyper 1): routes, connection handling and graceful drain.
//!
//! | route | answer |
//! |---|---|
//! | `GET /metrics` (the telemetry path) | the exposition, `text/plain; version=0.0.4` |
//! | `GET /` | landing page with the per-task status table |
//! | `GET /-/healthy` | 200 while the process runs |
//! | `GET /-/ready` | 200 once every watched task was polled, 503 before |
//! | `POST /-/reload` | reload the configuration: 200, or 500 with the errors; 405 for other methods |
//! | anything else | 404 (405 for a known path with a wrong method) |
//!
//! The server only reads the state; it never talks to the sandbox. Each connection runs in its
//! own task with a header-read timeout, so a stalled client cannot pin it; open connections
//! and requests in progress are capped (beyond `--web.max-requests`, 503), so slow or numerous
//! clients cannot starve scrapes. `/metrics` is gzip-compressed when the client asks for it, as
//! Prometheus does.
//!
//! With `--web.config.file` ([`crate::web_config`]) connections are TLS (certificates re-read
//! when they change on disk), every request must carry valid basic-auth credentials, and the
//! configured security headers are added to every answer.

mod landing;
mod scrape;

use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::channel::Channel;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::metrics::Metrics;
use crate::state::State;
use crate::web_config::{AuthResult, BasicAuth, TlsAcceptorCache, WebConfig, WWW_AUTHENTICATE};

/// A client must send its request headers within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long shutdown waits for open connections to finish their requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Open connections at most; further ones wait in the kernel's backlog until one closes.
const MAX_CONNECTIONS: usize = 512;

/// A reload asked for over HTTP; the answer is `Ok(summary)` or `Err(problems)`.
pub type ReloadRequest = oneshot::Sender<Result<String, String>>;

/// What the routes read.
pub struct Routes {
    pub state: Arc<State>,
    pub metrics: Arc<Metrics>,
    pub telemetry_path: String,
    pub reload: mpsc::Sender<ReloadRequest>,
    /// Shown on the landing page (e.g. "demo mode").
    pub banner: Option<String>,
    /// Requests served at once, beyond which the answer is 503; `None` means no cap. Scrapes
    /// of the telemetry path and all other requests have a cap each, so a flood of page views
    /// cannot crowd out Prometheus.
    pub max_requests: Option<RequestCaps>,
    /// Credentials every request must carry (`basic_auth_users` of the web config).
    pub basic_auth: Option<Arc<BasicAuth>>,
    /// Added to every response (`http_server_config.headers`), already validated.
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
    /// One status page renders at a time: a flood of page views queues here (and meets the
    /// request cap) instead of taking the CPU from polls and scrapes.
    pub page_renders: Semaphore,
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

/// Accepts connections until `shutdown`, then drains them within [`DRAIN_TIMEOUT`].
pub async fn serve(
    listener: TcpListener,
    routes: Arc<Routes>,
    tls: Option<Arc<TlsAcceptorCache>>,
    shutdown: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let slot = tokio::select! {
            s = Arc::clone(&connections).acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
            () = shutdown.cancelled() => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Typically EMFILE: back off briefly instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let routes = Arc::clone(&routes);
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let result = match tls {
                None => serve_connection(stream, routes, watcher).await,
                Some(tls) => {
                    // The handshake shares the header deadline: a client that stalls in it
                    // holds a connection slot no longer than one that stalls in its headers.
                    match tokio::time::timeout(HEADER_READ_TIMEOUT, tls.acceptor().accept(stream))
                        .await
                    {
                        Ok(Ok(stream)) => serve_connection(stream, routes, watcher).await,
                        Ok(Err(e)) => {
                            debug!(peer = %peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            debug!(peer = %peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            if let Err(e) = result {
                debug!(peer = %peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => info!("HTTP server drained"),
        () = tokio::time::sleep(DRAIN_TIMEOUT) => warn!("HTTP connections still open after the drain timeout"),
    }
}

/// Serves HTTP/1.1 on one connection, plain or TLS, until it closes or the server drains.
async fn serve_connection<I>(io: I, routes: Arc<Routes>, watcher: Watcher) -> hyper::Result<()>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let routes = Arc::clone(&routes);
        async move {
            let mut response = handle(&routes, req).await;
            for (name, value) in &routes.headers {
                response.headers_mut().insert(name.clone(), value.clone());
            }
            Ok::<_, Infallible>(response)
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(io), service);
    watcher.watch(conn).await
}

/// Routes one request.
pub async fn handle(routes: &Routes, req: Request<Incoming>) -> Response<Body> {
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
    if let Some(auth) = &routes.basic_auth {
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
    let response = if path == routes.telemetry_path {
        if readable {
            scrape::metrics(routes, accepts_gzip(&req), permit.take()).await
        } else {
            not_allowed("GET, HEAD")
        }
    } else {
        match path {
            "/" if readable => landing_page(routes).await,
            "/-/healthy" if readable => text(StatusCode::OK, "Healthy\n".into()),
            "/-/ready" if readable => ready(routes),
            "/-/reload" if method == Method::POST || method == Method::PUT => reload(routes).await,
            "/-/reload" => not_allowed("POST, PUT"),
            "/" | "/-/healthy" | "/-/ready" => not_allowed("GET, HEAD"),
            _ => text(StatusCode::NOT_FOUND, "Not found\n".into()),
        }
    };
    if method == Method::HEAD {
        let (parts, _) = response.into_parts();
        return Response::from_parts(parts, Either::Left(Full::default()));
    }
    response
}

/// The status page, rendered off the async workers like `/metrics`: a flood of page views must
/// not delay the polls.
async fn landing_page(routes: &Routes) -> Response<Body> {
    let Ok(_slot) = routes.page_renders.acquire().await else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into());
    };
    let page = landing::Page::from(routes);
    match tokio::task::spawn_blocking(move || page.render()).await {
        Ok(body) => html(body),
        Err(e) => {
            warn!(error = %e, "rendering the status page failed");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "rendering failed\n".into(),
            )
        }
    }
}

/// Whether the request accepts a gzip body (`Accept-Encoding: gzip`, not `gzip;q=0`).
fn accepts_gzip(req: &Request<Incoming>) -> bool {
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

fn html(body: String) -> Response<Body> {
    let mut r = with_type(StatusCode::OK, "text/html; charset=utf-8", body.into());
    // The page shows sandbox data: forbid scripts outright, whatever slips through escaping.
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    r
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

//! The routes called directly, without a socket: routing, methods, HEAD, the request caps,
//! basic auth and the probes it leaves out.

use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};
use tokio::sync::mpsc;

use super::{handle, RequestCaps, Routes};
use crate::metrics::Metrics;
use crate::state::{State, WatchList};
use krs_web_config::WebConfig;

const PASSWORD: &str = "s3cret";

/// Routes over a watch list of one task that was never polled (so not ready).
fn routes() -> Routes {
    let state = State::new(WatchList {
        tasks: vec![crate::config::TaskSpec {
            id: crate::config::TaskId::parse("0d5b4e44-4c0e-4f0b-9a57-3f2d1b9e6c71")
                .expect("valid id"),
            name: String::new(),
            labels: Default::default(),
        }]
        .into(),
        label_keys: Vec::new(),
        limits: Default::default(),
        discovered: 0,
    });
    let (reload, _) = mpsc::channel(1);
    Routes::new(Arc::new(state), Arc::new(Metrics::default()), reload)
}

/// [`routes`] behind basic auth for user `admin`.
fn guarded() -> Routes {
    let dir = tempfile::tempdir().expect("tempdir");
    let hash = bcrypt::hash(PASSWORD, 4).expect("bcrypt");
    let yaml = format!("basic_auth_users:\n  admin: {hash}\n");
    let web = WebConfig::parse(&yaml, &dir.path().join("web.yml"), dir.path()).expect("valid");
    let (basic_auth, headers) = Routes::web_parts(&web);
    Routes {
        basic_auth,
        headers,
        ..routes()
    }
}

/// [`routes`] with one request at a time of each kind.
fn capped() -> Routes {
    Routes {
        max_requests: Some(RequestCaps::new(1)),
        ..routes()
    }
}

/// Takes the one slot of a request budget.
fn hold(budget: &Arc<tokio::sync::Semaphore>) -> tokio::sync::OwnedSemaphorePermit {
    Arc::clone(budget).try_acquire_owned().expect("a slot")
}

fn request(method: Method, path: &str) -> Request<()> {
    Request::builder()
        .method(method)
        .uri(path)
        .body(())
        .expect("valid request")
}

fn with_credentials(mut req: Request<()>, password: &str) -> Request<()> {
    use base64::Engine;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("admin:{password}"));
    req.headers_mut().insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Basic {token}")).expect("ascii"),
    );
    req
}

async fn answer(routes: &Routes, req: Request<()>) -> (StatusCode, hyper::HeaderMap, String) {
    let response = handle(routes, req).await;
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("a body").to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

#[tokio::test]
async fn the_probes_answer_healthy_and_not_yet_ready_before_the_first_poll() {
    let routes = routes();
    let (status, _, body) = answer(&routes, request(Method::GET, "/-/healthy")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "Healthy\n"));
    let (status, _, body) = answer(&routes, request(Method::GET, "/-/ready")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, "Not ready: 0 of 1 watched tasks polled\n");
}

#[tokio::test]
async fn metrics_are_served_on_the_telemetry_path_as_text_exposition() {
    let routes = routes();
    let (status, headers, body) = answer(&routes, request(Method::GET, "/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], crate::metrics::CONTENT_TYPE);
    assert!(body.contains("\nkrs_watched_tasks 1\n"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_scrape_that_prefers_openmetrics_gets_it_plain_or_gzipped_and_others_get_text() {
    let routes = routes();
    // Prometheus 3's default.
    let prometheus = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,\
        application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.2,*/*;q=0.1";
    let scrape = |accept: &str, gzip: bool| {
        let mut req = request(Method::GET, "/metrics");
        let headers = req.headers_mut();
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_str(accept).expect("ascii"),
        );
        if gzip {
            headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        }
        req
    };
    let (status, headers, body) = answer(&routes, scrape(prometheus, false)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers[header::CONTENT_TYPE],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert_eq!(headers[header::VARY], "Accept, Accept-Encoding");
    assert!(body.ends_with("\n# EOF\n"), "{body}");
    assert!(body.contains("# TYPE krs_polls counter\nkrs_polls_total 0\n"));

    let response = handle(&routes, scrape(prometheus, true)).await;
    assert_eq!(response.headers()[header::CONTENT_ENCODING], "gzip");
    let compressed = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    let mut unzipped = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(&compressed[..]),
        &mut unzipped,
    )
    .expect("valid gzip");
    assert!(unzipped.ends_with("\n# EOF\n"));

    for accept in [
        "text/plain;version=0.0.4",
        "*/*",
        "application/openmetrics-text;q=0",
    ] {
        let (_, headers, body) = answer(&routes, scrape(accept, false)).await;
        assert_eq!(headers[header::CONTENT_TYPE], crate::metrics::CONTENT_TYPE);
        assert!(!body.contains("# EOF"), "{accept}");
        assert!(
            body.contains("# TYPE krs_polls_total counter\n"),
            "{accept}"
        );
    }
}

#[tokio::test]
async fn an_unknown_path_is_404_and_a_known_one_with_the_wrong_method_is_405_with_allow() {
    let routes = routes();
    let (status, _, _) = answer(&routes, request(Method::GET, "/nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for (method, path, allow) in [
        (Method::POST, "/metrics", "GET, HEAD"),
        (Method::DELETE, "/", "GET, HEAD"),
        (Method::POST, "/api/v1/tasks", "GET, HEAD"),
        (Method::POST, "/static/console.css", "GET, HEAD"),
        (Method::POST, "/-/healthy", "GET, HEAD"),
        (Method::GET, "/-/reload", "POST, PUT"),
    ] {
        let (status, headers, _) = answer(&routes, request(method.clone(), path)).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_eq!(headers[header::ALLOW], allow, "{method} {path}");
    }
}

#[tokio::test]
async fn head_answers_like_get_without_a_body() {
    let routes = routes();
    for path in ["/-/healthy", "/-/ready", "/metrics"] {
        let (get, get_headers, _) = answer(&routes, request(Method::GET, path)).await;
        let (head, head_headers, body) = answer(&routes, request(Method::HEAD, path)).await;
        assert_eq!(head, get, "{path}");
        assert_eq!(
            head_headers.get(header::CONTENT_TYPE),
            get_headers.get(header::CONTENT_TYPE),
            "{path}"
        );
        assert!(body.is_empty(), "{path}: {body:?}");
    }
}

#[tokio::test]
async fn requests_beyond_the_cap_get_503_and_scrapes_have_a_cap_of_their_own() {
    let routes = capped();
    let caps = routes.max_requests.as_ref().expect("capped");
    let held = hold(&caps.others);
    let (status, _, body) = answer(&routes, request(Method::GET, "/-/healthy")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let (status, _, _) = answer(&routes, request(Method::GET, "/metrics")).await;
    assert_eq!(status, StatusCode::OK, "the scrape cap is separate");
    drop(held);
    let (status, _, _) = answer(&routes, request(Method::GET, "/-/healthy")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn basic_auth_guards_every_route_but_the_probes() {
    let routes = guarded();
    for path in [
        "/metrics",
        "/",
        "/nope",
        "/events",
        "/api/v1/tasks",
        "/static/console.js",
    ] {
        let (status, headers, _) = answer(&routes, request(Method::GET, path)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(headers.contains_key(header::WWW_AUTHENTICATE), "{path}");
        let (status, _, _) = answer(
            &routes,
            with_credentials(request(Method::GET, path), "wrong"),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{path} with a wrong password"
        );
    }
    let (status, _, _) = answer(&routes, request(Method::POST, "/-/reload")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "reload stays guarded");
    let (status, _, body) = answer(
        &routes,
        with_credentials(request(Method::GET, "/metrics"), PASSWORD),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("krs_watched_tasks 1"));
    // Probes carry no credentials: Kubernetes and a Docker HEALTHCHECK must still see them.
    let (status, _, _) = answer(&routes, request(Method::GET, "/-/healthy")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = answer(&routes, request(Method::GET, "/-/ready")).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "answered, not refused"
    );
}

#[tokio::test]
async fn every_console_answer_carries_the_strict_csp_and_assets_are_cached() {
    let routes = routes();
    for (path, status, content_type) in [
        ("/", StatusCode::OK, "text/html; charset=utf-8"),
        (
            "/?zone=Red&sort=name",
            StatusCode::OK,
            "text/html; charset=utf-8",
        ),
        ("/events", StatusCode::OK, "text/html; charset=utf-8"),
        (
            "/tasks/0d5b4e44-4c0e-4f0b-9a57-3f2d1b9e6c71",
            StatusCode::OK,
            "text/html; charset=utf-8",
        ),
        (
            "/tasks/7c9e6679-7425-40de-944b-e07fc1f90ae7",
            StatusCode::NOT_FOUND,
            "text/html; charset=utf-8",
        ),
        ("/api/v1/tasks", StatusCode::OK, "application/json"),
        ("/api/v1/events", StatusCode::OK, "application/json"),
        (
            "/api/v1/tasks/nope",
            StatusCode::NOT_FOUND,
            "application/json",
        ),
        (
            "/static/console.css",
            StatusCode::OK,
            "text/css; charset=utf-8",
        ),
        (
            "/static/console.js",
            StatusCode::OK,
            "text/javascript; charset=utf-8",
        ),
    ] {
        let (got, headers, body) = answer(&routes, request(Method::GET, path)).await;
        assert_eq!(got, status, "{path}: {body}");
        assert_eq!(headers[header::CONTENT_TYPE], content_type, "{path}");
        assert_eq!(
            headers[header::CONTENT_SECURITY_POLICY],
            super::console::CSP,
            "{path}"
        );
        let cache = &headers[header::CACHE_CONTROL];
        if path.starts_with("/static/") {
            assert_eq!(cache, "public, max-age=3600", "{path}");
        } else {
            assert_eq!(cache, "no-store", "{path}");
        }
    }
    let csp = super::console::CSP;
    assert!(!csp.contains("unsafe"), "{csp}");
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
}

#[tokio::test]
async fn a_page_view_cannot_take_a_scrape_slot() {
    let routes = capped();
    let caps = routes.max_requests.as_ref().expect("capped");
    // Every slot for pages is taken: page views are refused, scrapes still answer.
    let held = hold(&caps.others);
    for path in ["/", "/events", "/api/v1/tasks", "/static/console.css"] {
        let (status, _, _) = answer(&routes, request(Method::GET, path)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(
            caps.scrapes.available_permits(),
            1,
            "{path} took the scrape slot"
        );
    }
    let (status, _, _) = answer(&routes, request(Method::GET, "/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    drop(held);
    // The scrape slot taken (once the scrape above has let go of it): pages still answer
    // from their own budget.
    let scrape = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        Arc::clone(&caps.scrapes).acquire_owned(),
    )
    .await
    .expect("the scrape above ends")
    .expect("a slot");
    let (status, _, _) = answer(&routes, request(Method::GET, "/")).await;
    assert_eq!(status, StatusCode::OK);
    drop(scrape);
}

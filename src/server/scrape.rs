//! `/metrics`: the exposition streamed to the client as it is rendered.
//!
//! Rendering runs on a blocking thread, at most [`CHUNKS_AHEAD`] chunks ahead of the client,
//! so a scrape holds a few hundred KiB whatever the fleet size (the whole body is 113 MB at
//! 100k tasks). With `Accept-Encoding: gzip` each chunk goes through one gzip stream. A body
//! that cannot be completed (a panic, a client that stopped reading) is aborted, never ended
//! cleanly: the client sees a failed scrape, not a silently truncated one.
//!
//! The format is negotiated from `Accept` as Prometheus clients do ([`negotiate`]):
//! OpenMetrics 1.0 for a client that asks for `application/openmetrics-text` (version 1.0.0,
//! 0.0.1 or none) above everything else it accepts, text 0.0.4 for every other client.

use std::io::{self, Write as _};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::channel::{Channel, Sender};
use http_body_util::Either;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use tokio::runtime::Handle;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, warn};

use super::{typed, Body, Routes};
use crate::metrics::Format;

/// Plain text rendered before a chunk is handed on.
const CHUNK_BYTES: usize = 256 * 1024;

/// Chunks buffered between the renderer and the connection.
const CHUNKS_AHEAD: usize = 2;

/// How long the renderer waits for a client that stopped reading before abandoning the scrape.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Answers a scrape. `permit` (the scrape budget's slot) is held until the body is complete.
pub async fn metrics(
    routes: &Routes,
    format: Format,
    gzip: bool,
    permit: Option<OwnedSemaphorePermit>,
) -> Response<Body> {
    let (state, metrics) = (Arc::clone(&routes.state), Arc::clone(&routes.metrics));
    let (tx, body) = Channel::<Bytes, io::Error>::new(CHUNKS_AHEAD);
    let mut stream = BodyStream {
        tx: Some(tx),
        handle: Handle::current(),
        stall_timeout: STALL_TIMEOUT,
    };
    // Rendering is CPU work proportional to the watch list: keep it off the async workers.
    let render = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let complete = if gzip {
            let mut encoder = flate2::write::GzEncoder::new(
                Vec::with_capacity(CHUNK_BYTES / 4),
                // The fastest level: exposition text still shrinks about fivefold.
                flate2::Compression::fast(),
            );
            let rendered = metrics.render_chunked_as(format, &state, CHUNK_BYTES, &mut |chunk| {
                if encoder.write_all(chunk.as_bytes()).is_err() {
                    return false;
                }
                if encoder.get_ref().len() < CHUNK_BYTES / 4 {
                    return true;
                }
                let compressed = std::mem::take(encoder.get_mut());
                stream.send(compressed.into())
            });
            rendered && encoder.finish().is_ok_and(|rest| stream.send(rest.into()))
        } else {
            metrics.render_chunked_as(format, &state, CHUNK_BYTES, &mut |chunk| {
                stream.send(chunk.into())
            })
        };
        if complete {
            stream.finish();
        }
    });
    tokio::spawn(async move {
        if let Err(e) = render.await {
            warn!(error = %e, "rendering metrics failed; the scrape was aborted");
        }
    });
    let mut r = typed(StatusCode::OK, format.content_type(), Either::Right(body));
    let headers = r.headers_mut();
    headers.insert(
        header::VARY,
        HeaderValue::from_static("Accept, Accept-Encoding"),
    );
    if gzip {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    r
}

/// The format for a request's `Accept` header values. Every media range is weighed by its
/// quality (`q`, 1 when absent; 0 excludes it); the heaviest one served wins, the first of equal
/// weight. `application/openmetrics-text` of version 1.0.0, 0.0.1 or none is OpenMetrics (the
/// answer is 1.0.0, which every OpenMetrics parser of 0.0.1 reads); other versions are not
/// served. Everything else, wildcards and unknown types included, is text 0.0.4, which is also
/// the answer when no range is served.
pub fn negotiate<'a>(accept: impl IntoIterator<Item = &'a str>) -> Format {
    let mut best: Option<(f32, Format)> = None;
    for range in accept.into_iter().flat_map(|v| v.split(',')) {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim();
        if media.is_empty() {
            continue;
        }
        let mut q = 1.0f32;
        let mut version = None;
        for param in parts {
            let Some((key, value)) = param.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"');
            match key.trim().to_ascii_lowercase().as_str() {
                "q" => q = value.parse().unwrap_or(0.0),
                "version" => version = Some(value),
                _ => {}
            }
        }
        if q.is_nan() || q <= 0.0 {
            continue;
        }
        let format = if media.eq_ignore_ascii_case("application/openmetrics-text") {
            match version {
                None | Some("1.0.0") | Some("0.0.1") => Format::OpenMetrics,
                Some(_) => continue,
            }
        } else {
            Format::Text
        };
        if best.is_none_or(|(w, _)| q > w) {
            best = Some((q, format));
        }
    }
    best.map_or(Format::Text, |(_, format)| format)
}

/// The renderer's end of a streamed body. Dropped without [`BodyStream::finish`] (an early
/// return, a panic), it aborts the body so the client cannot take a partial exposition for a
/// whole one.
struct BodyStream {
    tx: Option<Sender<Bytes, io::Error>>,
    handle: Handle,
    /// [`STALL_TIMEOUT`] outside tests.
    stall_timeout: Duration,
}

impl BodyStream {
    /// Hands `bytes` to the connection, waiting while the client is behind; `false` once the
    /// client is gone or has not read for the stall timeout.
    fn send(&mut self, bytes: Bytes) -> bool {
        let Some(tx) = self.tx.as_mut() else {
            return false;
        };
        if bytes.is_empty() {
            return true;
        }
        match self.handle.block_on(tokio::time::timeout(
            self.stall_timeout,
            tx.send_data(bytes),
        )) {
            Ok(Ok(())) => true,
            Ok(Err(_)) => {
                debug!("scrape client went away; rendering stopped");
                false
            }
            Err(_) => {
                warn!(
                    timeout_s = self.stall_timeout.as_secs(),
                    "scrape client stopped reading; the scrape was aborted"
                );
                false
            }
        }
    }

    /// Ends the body cleanly.
    fn finish(mut self) {
        self.tx.take();
    }
}

impl Drop for BodyStream {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            tx.abort(io::Error::other("the exposition could not be completed"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn accept_headers_choose_the_format_by_quality() {
        let om = Format::OpenMetrics;
        let text = Format::Text;
        let table: &[(&str, Format)] = &[
            ("", text),
            ("*/*", text),
            ("text/plain", text),
            ("text/plain; version=0.0.4", text),
            ("application/openmetrics-text; version=1.0.0", om),
            ("application/openmetrics-text; version=0.0.1", om),
            ("application/openmetrics-text", om),
            ("Application/OpenMetrics-Text; Version=\"1.0.0\"", om),
            ("application/openmetrics-text; version=2.0.0", text),
            ("application/openmetrics-text; version=1.0.0; q=0", text),
            (
                "application/openmetrics-text; version=1.0.0; q=0, text/plain",
                text,
            ),
            (
                "text/plain;q=0.5, application/openmetrics-text;version=1.0.0;q=0.9",
                om,
            ),
            (
                "application/openmetrics-text;version=1.0.0;q=0.4, text/plain;q=0.5",
                text,
            ),
            (
                "application/openmetrics-text;version=1.0.0;q=0.5, */*;q=0.5",
                om,
            ),
            (
                "*/*;q=0.5, application/openmetrics-text;version=1.0.0;q=0.5",
                text,
            ),
            ("text/*, application/openmetrics-text;q=0.1", text),
            (
                "text/plain;q=0, application/openmetrics-text;version=1.0.0;q=0.1",
                om,
            ),
            (
                "application/openmetrics-text;version=9;q=1, text/plain;q=0.1",
                text,
            ),
            ("application/json", text),
            ("application/openmetrics-text;q=abc", text),
            // Prometheus 3's default.
            (
                "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,\
                 application/openmetrics-text;version=0.0.1;q=0.4,\
                 text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,\
                 text/plain;version=0.0.4;q=0.2,*/*;q=0.1",
                om,
            ),
            // Prometheus 2's default.
            (
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                 version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
                om,
            ),
            // A scrape config with `scrape_protocols: [PrometheusText0.0.4]`.
            ("text/plain;version=0.0.4;q=1,*/*;q=0.1", text),
        ];
        for (accept, expected) in table {
            assert_eq!(negotiate([*accept]), *expected, "{accept:?}");
        }
        assert_eq!(
            negotiate(["text/plain;q=0.1", "application/openmetrics-text"]),
            om
        );
        assert_eq!(negotiate(Vec::<&str>::new()), text);
    }

    fn stream() -> (BodyStream, Channel<Bytes, io::Error>) {
        let (tx, body) = Channel::new(CHUNKS_AHEAD);
        let stream = BodyStream {
            tx: Some(tx),
            handle: Handle::current(),
            stall_timeout: STALL_TIMEOUT,
        };
        (stream, body)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_client_that_stops_reading_is_abandoned_after_the_stall_timeout() {
        let (mut stream, body) = stream();
        stream.stall_timeout = Duration::from_millis(50);
        let sends = tokio::task::spawn_blocking(move || {
            // The channel holds CHUNKS_AHEAD chunks; nobody reads, so the next one stalls.
            (0..=CHUNKS_AHEAD)
                .map(|_| stream.send(Bytes::from_static(b"x 1\n")))
                .collect::<Vec<bool>>()
        })
        .await
        .expect("no panic");
        assert_eq!(sends.len(), CHUNKS_AHEAD + 1);
        assert!(sends[..CHUNKS_AHEAD].iter().all(|sent| *sent), "{sends:?}");
        assert!(!sends[CHUNKS_AHEAD], "the stalled send gives up");
        drop(body);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_finished_stream_ends_the_body_cleanly_with_every_chunk() {
        let (mut stream, body) = stream();
        tokio::task::spawn_blocking(move || {
            assert!(stream.send(Bytes::from_static(b"a 1\n")));
            assert!(stream.send(Bytes::from_static(b"b 2\n")));
            stream.finish();
        });
        let collected = body.collect().await.expect("a complete body");
        assert_eq!(collected.to_bytes(), Bytes::from_static(b"a 1\nb 2\n"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_stream_dropped_before_finishing_aborts_the_body() {
        let (mut stream, body) = stream();
        tokio::task::spawn_blocking(move || {
            assert!(stream.send(Bytes::from_static(b"a 1\n")));
            // Dropped here, as on a panic or an early return.
        });
        let error = body.collect().await.expect_err("an aborted body");
        assert!(
            error.to_string().contains("could not be completed"),
            "{error}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn sending_to_a_client_that_left_reports_it() {
        let (mut stream, body) = stream();
        drop(body);
        let sent = tokio::task::spawn_blocking(move || stream.send(Bytes::from_static(b"x")))
            .await
            .expect("no panic");
        assert!(!sent);
    }
}

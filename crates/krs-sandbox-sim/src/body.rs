//! Response bodies: whole, oversized (generated chunk by chunk, never held in memory) and
//! trickled (the normal body at a fixed byte rate).
//!
//! Each body carries the request's [`InFlight`] guard and drops it as it produces its last
//! bytes, before they reach the socket, so a client that starts its next request as soon as it
//! has read a response never sees its previous one still counted.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::control::InFlight;

/// Largest chunk an oversized body yields at once.
const CHUNK: usize = 64 * 1024;

/// Filler record of an oversized body; repeated, it keeps the body a valid JSON array.
const FILLER_RECORD: &str = r#"{"Zone":"Grey","Md5":"","Sha1":"","Sha256":"","DetectionNames":[],"Name":"oversized-filler.bin","Size":1,"Type":"filler","IsHttpsTraffic":false,"TriggeredYaraRules":[]}"#;

static SPACES: [u8; CHUNK] = [b' '; CHUNK];

pub(super) struct SimBody {
    kind: Kind,
    /// Released once the last bytes are produced (or when the body is dropped unfinished).
    guard: Option<InFlight>,
}

enum Kind {
    Full(Option<Bytes>),
    Oversized(Oversized),
    Trickle(Trickle),
}

/// `[` record (`,` record)* spaces* `]`, exactly `total` bytes.
struct Oversized {
    total: u64,
    sent: u64,
    /// Whether the first record went out (then `,record` units may follow).
    opened_with_record: bool,
    announce_length: bool,
}

struct Trickle {
    data: Bytes,
    sent: usize,
    chunk: usize,
    interval: Duration,
    sleep: Pin<Box<Sleep>>,
}

impl SimBody {
    pub(super) fn empty(guard: InFlight) -> Self {
        SimBody::full(Bytes::new(), guard)
    }

    pub(super) fn full(data: impl Into<Bytes>, guard: InFlight) -> Self {
        let data = data.into();
        SimBody {
            kind: Kind::Full((!data.is_empty()).then_some(data)),
            guard: Some(guard),
        }
    }

    /// A valid JSON array of exactly `bytes` bytes (for `bytes >= 2`), `Content-Length` only if
    /// `announce_length`.
    pub(super) fn oversized(bytes: u64, announce_length: bool, guard: InFlight) -> Self {
        SimBody {
            kind: Kind::Oversized(Oversized {
                total: bytes,
                sent: 0,
                opened_with_record: false,
                announce_length,
            }),
            guard: Some(guard),
        }
    }

    /// `data` at about `bytes_per_second` (at least 1): a tenth of the rate every 100 ms, or one
    /// byte every `1/rate` s for rates below 10. The first bytes come after one interval.
    pub(super) fn trickle(data: impl Into<Bytes>, bytes_per_second: u64, guard: InFlight) -> Self {
        let rate = bytes_per_second.max(1);
        let (chunk, interval) = if rate >= 10 {
            (
                usize::try_from(rate / 10).unwrap_or(usize::MAX),
                Duration::from_millis(100),
            )
        } else {
            (1, Duration::from_secs(1) / u32::try_from(rate).unwrap_or(1))
        };
        SimBody {
            kind: Kind::Trickle(Trickle {
                data: data.into(),
                sent: 0,
                chunk,
                interval,
                sleep: Box::pin(tokio::time::sleep(interval)),
            }),
            guard: Some(guard),
        }
    }
}

impl Body for SimBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let next = match &mut this.kind {
            Kind::Full(data) => data.take(),
            Kind::Oversized(o) => o.next_chunk(),
            Kind::Trickle(t) => ready!(t.poll_chunk(cx)),
        };
        if this.is_end_stream() {
            this.guard = None;
        }
        Poll::Ready(next.map(|data| Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(data) => data.is_none(),
            Kind::Oversized(o) => o.sent >= o.total,
            Kind::Trickle(t) => t.sent >= t.data.len(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Kind::Oversized(o) if o.announce_length => SizeHint::with_exact(o.total - o.sent),
            Kind::Oversized(_) => SizeHint::default(),
            Kind::Trickle(t) => SizeHint::with_exact((t.data.len() - t.sent) as u64),
        }
    }
}

impl Oversized {
    fn next_chunk(&mut self) -> Option<Bytes> {
        let left = self.total - self.sent;
        let chunk = if left == 0 {
            return None;
        } else if self.sent == 0 {
            if self.total >= 2 + FILLER_RECORD.len() as u64 {
                self.opened_with_record = true;
                Bytes::from(format!("[{FILLER_RECORD}"))
            } else {
                Bytes::from_static(b"[")
            }
        } else if left == 1 {
            Bytes::from_static(b"]")
        } else {
            let room = usize::try_from(left - 1).unwrap_or(usize::MAX);
            let block = filler_block();
            let unit = FILLER_RECORD.len() + 1;
            let units = room.min(block.len()) / unit;
            if self.opened_with_record && units > 0 {
                block.slice(..units * unit)
            } else {
                Bytes::from_static(&SPACES[..room.min(CHUNK)])
            }
        };
        self.sent += chunk.len() as u64;
        Some(chunk)
    }
}

impl Trickle {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if self.sent >= self.data.len() {
            return Poll::Ready(None);
        }
        ready!(self.sleep.as_mut().poll(cx));
        let end = (self.sent + self.chunk).min(self.data.len());
        let chunk = self.data.slice(self.sent..end);
        self.sent = end;
        let next = Instant::now() + self.interval;
        self.sleep.as_mut().reset(next);
        Poll::Ready(Some(chunk))
    }
}

/// `,record` repeated to just under [`CHUNK`] bytes; built once, shared by every oversized body.
fn filler_block() -> Bytes {
    static BLOCK: OnceLock<Bytes> = OnceLock::new();
    BLOCK
        .get_or_init(|| {
            let unit = format!(",{FILLER_RECORD}");
            Bytes::from(unit.repeat(CHUNK / unit.len()))
        })
        .clone()
}

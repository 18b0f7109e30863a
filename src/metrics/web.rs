//! The HTTP server's own connection metrics: what it refused, evicted or timed out, and how
//! many connections are open. Kept apart from the API and poll metrics, which change for
//! other reasons.

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

use super::family::register;

/// Why the server closed a connection that had not been served to its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// Refused at accept: its peer already held `--web.max-connections-per-peer`.
    PerPeerLimit,
    /// Refused at accept: `--web.max-connections` open and every one serving a request.
    TableFull,
    /// Closed while idle to make room for a new connection.
    EvictedIdle,
    /// Closed for not completing its first request's headers in time.
    HeaderTimeout,
    /// Closed after sitting idle between requests for too long.
    IdleTimeout,
}

impl Rejection {
    pub const ALL: [Rejection; 5] = [
        Rejection::PerPeerLimit,
        Rejection::TableFull,
        Rejection::EvictedIdle,
        Rejection::HeaderTimeout,
        Rejection::IdleTimeout,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Rejection::PerPeerLimit => "per_peer_limit",
            Rejection::TableFull => "table_full",
            Rejection::EvictedIdle => "evicted_idle",
            Rejection::HeaderTimeout => "header_timeout",
            Rejection::IdleTimeout => "idle_timeout",
        }
    }
}

/// Typed handles for the connection metrics.
pub struct WebMetrics {
    rejected: IntCounterVec,
    open: IntGauge,
}

impl WebMetrics {
    /// Creates the families in `registry`, every reason at 0.
    pub fn register(registry: &Registry) -> Self {
        let rejected = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "krs_web_connections_rejected_total",
                    "Connections to the exporter's HTTP server refused at accept or closed before \
                     their time, by reason.",
                ),
                &["reason"],
            ),
        );
        let open = register(
            registry,
            IntGauge::new(
                "krs_web_connections_open",
                "Connections to the exporter's HTTP server open now.",
            ),
        );
        for reason in Rejection::ALL {
            rejected.with_label_values(&[reason.as_str()]);
        }
        WebMetrics { rejected, open }
    }

    pub fn record_rejection(&self, reason: Rejection) {
        self.rejected.with_label_values(&[reason.as_str()]).inc();
    }

    /// Sets the number of open connections.
    pub fn set_open(&self, open: usize) {
        self.open.set(i64::try_from(open).unwrap_or(i64::MAX));
    }
}

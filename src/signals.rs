//! The process's signals: SIGTERM/SIGINT ask it to stop, SIGHUP to reload.
//!
//! [`Signals::install`] is called first thing after the runtime starts, before any file is read.
//! Until a handler is registered a signal has its default disposition, and SIGHUP's is to kill
//! the process: a SIGHUP sent by a config-management tool during a start-up that reads a
//! 100k-task file (about a second) used to kill the daemon. tokio registers the OS handler when
//! a stream is created and keeps it for the life of the process, and each stream remembers a
//! signal that arrived before anyone waited on it. So:
//! - a SIGHUP during start-up is held by [`Hangups`] and becomes one reload right after start
//!   (any number of them coalesce into one);
//! - a SIGTERM during start-up is held by [`Termination`], which start-up waits on alongside
//!   the loading, so the process exits 0 without finishing the load.

use std::fmt;

use tracing::{info, warn};

/// Both streams, registered together.
pub struct Signals {
    pub termination: Termination,
    pub hangups: Hangups,
}

/// SIGTERM or SIGINT: the process's one request to stop.
pub struct Termination {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

/// SIGHUP: a request to reload. [`Hangups::none`] never fires (in-process exporters in tests,
/// whose SIGHUP belongs to the test runner).
#[derive(Default)]
pub struct Hangups {
    #[cfg(unix)]
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Registers the handlers now. Must run inside a tokio runtime with I/O enabled.
    pub fn install() -> Signals {
        Signals {
            termination: Termination::install(),
            hangups: Hangups::install(),
        }
    }
}

impl Termination {
    /// Registers SIGTERM and SIGINT now.
    pub fn install() -> Termination {
        #[cfg(unix)]
        {
            use tokio::signal::unix::SignalKind;
            Termination {
                term: register(SignalKind::terminate(), "SIGTERM"),
                int: register(SignalKind::interrupt(), "SIGINT"),
            }
        }
        #[cfg(not(unix))]
        Termination {}
    }

    /// Resolves on the next SIGTERM or SIGINT (or at once for one that already arrived).
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        {
            tokio::select! {
                () = next(&mut self.term) => info!(signal = "SIGTERM", "stopping"),
                () = next(&mut self.int) => info!(signal = "SIGINT", "stopping"),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            info!(signal = "Ctrl-C", "stopping");
        }
    }
}

impl Hangups {
    /// Registers SIGHUP now.
    pub fn install() -> Hangups {
        #[cfg(unix)]
        {
            Hangups {
                hup: register(tokio::signal::unix::SignalKind::hangup(), "SIGHUP"),
            }
        }
        #[cfg(not(unix))]
        Hangups {}
    }

    /// A source of hangups that never fires.
    pub fn none() -> Hangups {
        Hangups::default()
    }

    /// Resolves on the next SIGHUP, or at once if one arrived since the last call.
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        next(&mut self.hup).await;
        #[cfg(not(unix))]
        std::future::pending::<()>().await;
    }
}

impl fmt::Debug for Hangups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        #[cfg(unix)]
        let listening = self.hup.is_some();
        #[cfg(not(unix))]
        let listening = false;
        f.debug_struct("Hangups")
            .field("listening", &listening)
            .finish()
    }
}

#[cfg(unix)]
fn register(
    kind: tokio::signal::unix::SignalKind,
    name: &str,
) -> Option<tokio::signal::unix::Signal> {
    match tokio::signal::unix::signal(kind) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(signal = name, error = %e, "cannot listen for the signal");
            None
        }
    }
}

/// The next delivery on `signal`; never, if it could not be registered or its stream closed.
#[cfg(unix)]
async fn next(signal: &mut Option<tokio::signal::unix::Signal>) {
    if let Some(s) = signal {
        if s.recv().await.is_some() {
            return;
        }
    }
    std::future::pending::<()>().await;
}

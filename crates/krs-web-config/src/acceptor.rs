//! [`TlsAcceptorCache`]: the TLS acceptor for new connections, rebuilt when the certificate,
//! key or client CA files change on disk, so certificates rotate without a restart.
//!
//! The check is lazy and cheap: at most once per [`CHECK_INTERVAL`], on the first
//! [`TlsAcceptorCache::acceptor`] call after it elapses, the PEM files are read (a few KiB) and
//! their SHA-256 compared with what the current acceptor was built from. Comparing contents,
//! not mtime and length, cannot miss a same-size rewrite within one timestamp tick. Only one
//! caller checks at a time; the others keep using the current acceptor meanwhile.
//!
//! A change that does not load (a half-written file, a key that does not fit the certificate)
//! keeps the previous acceptor serving and logs one warning per distinct broken state.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, RwLock, TryLockError};
use std::time::{Duration, Instant};

use ring::digest::{Context, Digest, SHA256};
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use super::tls::{PemBytes, TlsSettings};
use super::WebConfigError;

/// How often the files are compared with the loaded material, at most.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// A TLS acceptor that follows certificate rotation on disk. Share it behind an `Arc`.
pub struct TlsAcceptorCache {
    settings: TlsSettings,
    check_interval: Duration,
    /// What new connections use; replaced wholesale, never mutated, so a handshake sees one
    /// consistent certificate + key + CA.
    current: RwLock<Loaded>,
    /// Serialises checks; `try_lock` so that connections never wait behind a reload.
    check: Mutex<CheckState>,
    /// Successful rebuilds since construction (for logs and metrics).
    reloads: AtomicU64,
    /// Distinct broken states seen on disk (each logged once), for metrics.
    failed_reloads: AtomicU64,
}

struct Loaded {
    acceptor: TlsAcceptor,
    /// SHA-256 of the PEM material the acceptor was built from.
    digest: Vec<u8>,
}

struct CheckState {
    last_check: Instant,
    /// Fingerprint of the last state that failed to load, so it is reported only once.
    last_failure: Option<Vec<u8>>,
}

impl TlsAcceptorCache {
    /// Loads the TLS material now; fails if it does not load.
    pub fn new(settings: TlsSettings) -> Result<TlsAcceptorCache, WebConfigError> {
        let pem = settings.read_pem()?;
        let config = settings.build(&pem)?;
        Ok(TlsAcceptorCache {
            current: RwLock::new(Loaded {
                acceptor: TlsAcceptor::from(config),
                digest: digest(&pem).as_ref().to_vec(),
            }),
            settings,
            check_interval: CHECK_INTERVAL,
            check: Mutex::new(CheckState {
                last_check: Instant::now(),
                last_failure: None,
            }),
            reloads: AtomicU64::new(0),
            failed_reloads: AtomicU64::new(0),
        })
    }

    /// The acceptor for a new connection: the current one, after reloading the files if they
    /// changed since the last check. Never fails: a broken change keeps the previous acceptor.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.reload_if_changed();
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .acceptor
            .clone()
    }

    /// The settings the acceptor is built from.
    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }

    /// How many times the material was reloaded after a change on disk.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// How many distinct changes on disk failed to load (each was logged once).
    pub fn failed_reloads(&self) -> u64 {
        self.failed_reloads.load(Ordering::Relaxed)
    }

    fn reload_if_changed(&self) {
        let mut check = match self.check.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        if check.last_check.elapsed() < self.check_interval {
            return;
        }
        check.last_check = Instant::now();

        let pem = match self.settings.read_pem() {
            Ok(pem) => pem,
            Err(e) => {
                // e.g. the file is briefly missing while a deployment tool swaps it.
                self.report_failure(&mut check, e.to_string().into_bytes(), &e);
                return;
            }
        };
        let new_digest = digest(&pem);
        let unchanged = {
            let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
            current.digest == new_digest.as_ref()
        };
        if unchanged {
            check.last_failure = None;
            return;
        }
        if check.last_failure.as_deref() == Some(new_digest.as_ref()) {
            return; // Already tried and reported; wait for the next change.
        }
        match self.settings.build(&pem) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Loaded {
                    acceptor: TlsAcceptor::from(config),
                    digest: new_digest.as_ref().to_vec(),
                };
                check.last_failure = None;
                let reloads = self.reloads.fetch_add(1, Ordering::Relaxed) + 1;
                info!(
                    reloads,
                    "TLS certificate, key or client CA changed on disk; reloaded"
                );
            }
            Err(e) => self.report_failure(&mut check, new_digest.as_ref().to_vec(), &e),
        }
    }

    fn report_failure(&self, check: &mut CheckState, fingerprint: Vec<u8>, e: &WebConfigError) {
        if check.last_failure.as_ref() != Some(&fingerprint) {
            warn!(
                error = %e,
                "TLS material changed on disk but does not load; still serving the previous certificate"
            );
            check.last_failure = Some(fingerprint);
            self.failed_reloads.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Shortens the check interval so tests do not wait a second per step.
    #[cfg(test)]
    fn with_check_interval(mut self, interval: Duration) -> Self {
        self.check_interval = interval;
        self
    }
}

impl std::fmt::Debug for TlsAcceptorCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsAcceptorCache")
            .field("settings", &self.settings)
            .field("reloads", &self.reloads())
            .field("failed_reloads", &self.failed_reloads())
            .finish_non_exhaustive()
    }
}

/// SHA-256 over the material, each part length-prefixed so boundaries cannot shift.
fn digest(pem: &PemBytes) -> Digest {
    let mut ctx = Context::new(&SHA256);
    for part in [Some(&pem.cert), Some(&pem.key), pem.client_ca.as_ref()] {
        match part {
            Some(bytes) => {
                ctx.update(&(bytes.len() as u64 + 1).to_be_bytes());
                ctx.update(bytes);
            }
            None => ctx.update(&0u64.to_be_bytes()),
        }
    }
    ctx.finish()
}

#[cfg(test)]
mod tests;

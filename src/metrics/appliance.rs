//! The exporter's kindness to the appliance, as series and as the status page's pause line:
//! `krs_api_paused{reason}` (all three reasons always present, 0 or 1) and
//! `krs_api_retry_budget_exhausted_total`.
//!
//! Kept apart from the rest of [`super::Metrics`] so that it is one field and one line there.

use std::sync::Mutex;
use std::time::SystemTime;

use prometheus::{IntCounter, IntGaugeVec, Opts, Registry};

use super::family::register;
use crate::sandbox::PauseReason;

/// Handles for the pause and the retry budget, and the current pause for the status page.
pub struct ApplianceMetrics {
    paused: IntGaugeVec,
    budget_exhausted: IntCounter,
    /// The pause as last published by the gate: its reason and when its delay runs out.
    pause: Mutex<Option<(PauseReason, SystemTime)>>,
}

impl ApplianceMetrics {
    pub fn register(registry: &Registry) -> Self {
        let paused = register(
            registry,
            IntGaugeVec::new(
                Opts::new(
                    "krs_api_paused",
                    "1 while all polling is paused for this reason (one probe per period), else 0.",
                ),
                &["reason"],
            ),
        );
        let budget_exhausted = register(
            registry,
            IntCounter::new(
                "krs_api_retry_budget_exhausted_total",
                "Retries not sent because the fleet-wide retry budget was spent.",
            ),
        );
        for reason in PauseReason::ALL {
            paused.with_label_values(&[reason.as_str()]).set(0);
        }
        ApplianceMetrics {
            paused,
            budget_exhausted,
            pause: Mutex::new(None),
        }
    }

    /// Publishes the gate's state: paused for `reason` until the given time, or running.
    pub fn set_paused(&self, pause: Option<(PauseReason, SystemTime)>) {
        let mut shown = self.pause.lock().unwrap_or_else(|e| e.into_inner());
        for reason in PauseReason::ALL {
            let on = pause.is_some_and(|(r, _)| r == reason);
            self.paused
                .with_label_values(&[reason.as_str()])
                .set(i64::from(on));
        }
        *shown = pause;
    }

    /// The current pause, for the status page.
    pub fn pause(&self) -> Option<(PauseReason, SystemTime)> {
        *self.pause.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn record_retry_budget_exhausted(&self) {
        self.budget_exhausted.inc();
    }

    #[cfg(test)]
    pub fn paused_gauge(&self, reason: PauseReason) -> i64 {
        self.paused.with_label_values(&[reason.as_str()]).get()
    }
}

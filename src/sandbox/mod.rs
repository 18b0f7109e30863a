//! The sandbox API client: HTTP transport, response decoding and error classification.
//!
//! - [`client`] sends one attempt (Basic auth, timeout, size cap) and says what happened;
//! - [`decode`] turns a 200 body into [`Download`] records, liberal in what it accepts;
//! - [`digest`] recognises a body already seen, so it is not decoded again;
//! - [`classify`] maps an error response to an [`ApiFailure`] (retryable or not);
//! - [`urls`] is the API's URL layout below the configured base.
//!
//! Nothing here retries or records metrics: the scheduler decides what to do with an
//! [`Attempt`].

pub mod classify;
pub mod client;
pub mod decode;
pub mod digest;
pub mod urls;

pub use classify::{ApiFailure, PauseReason};
pub use client::{Attempt, AttemptError, Decoded, Endpoint, FailureReason, SandboxClient};
pub use decode::Download;
pub use digest::{BodyDigest, Downloads};

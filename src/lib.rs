//! krs-exporter: a Prometheus exporter for Kaspersky Research Sandbox.
//!
//! It polls `GET /api/v1/sandbox/tasks/{id}/downloads` for every watched task (the configured
//! `tasks:` and, with discovery, the tasks the sandbox lists), each at the pace its lifecycle
//! state deserves, and serves per-task danger-zone counts, YARA and detection matches, fleet
//! counters of new activity, each task's state, and the health of the sandbox and its API on
//! `/metrics`.
//!
//! # Component map
//! Data flows one way; an arrow is also the direction of the imports (the downstream module
//! names the upstream one's types, never the reverse):
//!
//! ```text
//! config ──► discovery ──(watch list, task states)──────────────────────────┐
//!   │          │ (task list, through the scheduler's gate)                  ▼
//!   ├──────► scheduler ──► sandbox (client, urls, decode, classify) ──► state ──► metrics ──┐
//!   │          │ (lifecycle paces, retry, gate, budget)                    │          ▲      ├─► server
//!   │          ├──── records attempts, polls, pauses, panics ──────────────┼──────────┤      │
//!   │          └─► health (same gate) ── records the sandbox's health ─────┼──────────┘      │
//!   │                                                                      └─► console ──────┘
//!   └── app (reload, shutdown) ◄── SIGHUP / POST /-/reload
//! ```
//!
//! The scheduler hands each finished poll to the state and records it in metrics; the state
//! imports neither. Discovery merges the configured and the listed tasks into the state's watch
//! list and tells the scheduler, which sets each task's pace from [`lifecycle`]. The health loop
//! shares the scheduler's pause gate and writes only metrics. The server reads the state and
//! renders metrics; it never calls the sandbox.
//!
//! Beside this crate, the workspace holds the crates it reads through:
//! - `krs_web_config`: `--web.config.file` (TLS, client certificates, basic auth, headers), and
//!   reading operator-named files (regular files only, capped, never blocking);
//! - `krs_yaml`: the one YAML boundary (used by [`config`], `krs_web_config` and the simulator);
//! - `krs_sandbox_sim`: the simulated sandbox, linked only for [`demo`] (feature `demo`) and by
//!   the tests, benchmarks and load harness.
//!
//! | module | owns |
//! |---|---|
//! | [`cli`] | flags, the top-level flow, exit codes |
//! | [`config`] | the YAML file: parsing, `${VAR}` expansion, validation into [`config::Config`] |
//! | [`app`] | wiring, reloads, the shutdown path |
//! | [`discovery`] | reading the task list; merging configured and discovered tasks into the watch list |
//! | [`lifecycle`] | what is known of a task's state, and the pace it deserves |
//! | [`scheduler`] | when each task is polled (one ring per pace), concurrency, retries, the pause gate |
//! | [`health`] | the appliance's own health and version, checked through the scheduler's pause gate |
//! | [`retry`] | backoff timing (the only user of the `backoff` crate) |
//! | [`sandbox`] | one HTTP attempt, the API's URL layout, response decoding, error classification |
//! | [`state`] | per-task records and the typed poll outcome, baselines for the fleet counters |
//! | [`metrics`] | the registry and its recording methods, the per-task families and their render cache, the exposition in text 0.0.4 or OpenMetrics 1.0 (with the fleet counters' exemplars) |
//! | [`server`] | HTTP routes, and the triage console (pages and JSON API) in `server::console` |
//! | [`signals`] | SIGTERM/SIGINT and SIGHUP, registered before anything else |
//! | [`shard`] | which tasks this replica polls when the fleet is sharded |
//! | [`labels`] | hygiene for strings that come from the sandbox |
//! | [`logging`] | logfmt / JSON log output |
//! | [`blocking`] | CPU-heavy work (decoding, digesting a poll) off the async workers, bounded |
//! | [`demo`] | `--demo`: the simulator (the `krs-sandbox-sim` crate, feature `demo`) in-process with a bundled scenario |

pub mod app;
pub mod blocking;
pub mod cli;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod discovery;
pub mod health;
pub mod journal;
pub mod labels;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod retry;
pub mod sandbox;
pub mod scheduler;
pub mod secret;
pub mod server;
pub mod shard;
pub mod signals;
pub mod state;
pub mod store;
pub mod zone;

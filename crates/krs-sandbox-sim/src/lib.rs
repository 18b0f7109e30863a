//! The simulated sandbox: a small HTTP server that answers like the Kaspersky Research Sandbox
//! API for `GET /api/v1/sandbox/tasks/{task_id}/downloads`, the task lifecycle endpoints (`GET
//! .../tasks/`, `.../tasks/{task_id}`, `.../health`, `.../version`), driven by a [`Scenario`]. It is the only faked component of the project, used by the
//! `krs-sandbox-sim` binary, by `krs-exporter --demo`, and in-process by tests and benchmarks.
//!
//! Parts:
//! - `scenario`: the scenario types, their builders and validation; `yaml`: the YAML form;
//! - `lifecycle`: a task's creation, states over time and repeats; `appliance`: health,
//!   version, the list's spelling, per-endpoint faults; `generator`: a living sandbox that
//!   creates a task every few seconds, forever, memory bounded;
//! - `server`: [`start`], the accept loop, routing, Basic auth and fault injection (the route
//!   table is there);
//! - `control`: live state and [`SimHandle`], the remote control tests use to change files,
//!   queue faults, take the simulator down and read request counters;
//! - `render`, `records` and `body`: JSON bodies in every spelling the API may use (downloads;
//!   task records, the task list, health, version), and streamed bodies.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use krs_sandbox_sim::{self as simulator, Fault, Scenario, SimFile, SimTask};
//! let scenario = Scenario::builder()
//!     .credentials("exporter", "secret")
//!     .task(
//!         SimTask::new("0d5b4e44-4c0e-4f0b-9a57-3f2d1b9e6c71")
//!             .file(SimFile::new("payload.exe", "Red").yara("Cobalt_Strike_Beacon"))
//!             .fault(Fault::status(503).retry_after("2").times(2)),
//!     )
//!     .build()
//!     .expect("a valid scenario");
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let sim = simulator::start(scenario, listener, shutdown.clone()).await?;
//! let url = sim.base_url(); // "http://127.0.0.1:PORT": point the exporter here
//! # drop(url);
//! shutdown.cancel();
//! sim.closed().await;
//! # Ok(()) }
//! ```
//!
//! Scenario format and behaviour in detail: the workspace's `docs/simulator.md`.

mod appliance;
mod body;
mod control;
mod generator;
mod lifecycle;
mod records;
mod render;
mod scenario;
mod server;
mod yaml;

pub use appliance::{
    Appliance, Bases, Check, EndpointFaults, Health, HealthShape, Incident, ListFormat, ListShape,
    Version,
};
pub use control::{Endpoint, RequestRecord, SimHandle, REQUEST_LOG_CAPACITY};
pub use generator::Generator;
pub use lifecycle::{Offset, Repeat, Sample, StateKind, StateName, Step, TaskError};
pub use scenario::{
    Credentials, ErrorBody, ErrorCode, Fault, FaultAction, KeyCase, ParamsShape, ResponseFormat,
    Scenario, ScenarioBuilder, ScenarioError, Shape, SimFile, SimTask, StatusBody, TaskState,
    ZoneChange, DEFAULT_PASSWORD, DEFAULT_USERNAME,
};
pub use server::start;

/// The bundled demo scenario (`config/demo-scenario.yml`), as used by `krs-exporter --demo`.
pub const DEMO_SCENARIO_YAML: &str = include_str!("../../../config/demo-scenario.yml");

/// A task id the demo exporter watches that the demo scenario does not contain ("never existed").
pub const DEMO_MISSING_TASK_ID: &str = "3f1c9a2e-8b4d-4e6f-a1c3-5d7e9f0b2a4c";

/// The bundled demo scenario, parsed.
pub fn demo_scenario() -> Scenario {
    Scenario::from_yaml_str(DEMO_SCENARIO_YAML)
        .expect("the bundled demo scenario is valid: a unit test parses it")
}

#[cfg(test)]
mod tests;

//! `krs-sandbox-sim`: the simulated Kaspersky Research Sandbox API as a standalone server, for
//! trying the exporter, the compose stack and the end-to-end tests. Scenario format:
//! `docs/simulator.md`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use krs_exporter::logging::{self, LogFormat, LogLevel};
use krs_exporter::signals::Termination;
use krs_exporter::simulator::{self, Scenario};
use tokio_util::sync::CancellationToken;
use tracing::info;

/// A simulated Kaspersky Research Sandbox API.
#[derive(Debug, Parser)]
#[command(name = "krs-sandbox-sim", version)]
struct Flags {
    /// Scenario YAML; the bundled demo scenario when omitted.
    #[arg(long, value_name = "FILE")]
    scenario: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:10131")]
    listen: String,
    #[arg(long = "log.level", value_enum, default_value = "info")]
    log_level: LogLevel,
    #[arg(long = "log.format", value_enum, default_value = "logfmt")]
    log_format: LogFormat,
}

fn main() -> ExitCode {
    let flags = Flags::parse();
    logging::init(flags.log_level, flags.log_format);
    let scenario = match &flags.scenario {
        Some(path) => match Scenario::from_file(path) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("krs-sandbox-sim: {e}");
                return ExitCode::from(2);
            }
        },
        None => simulator::demo_scenario(),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("krs-sandbox-sim: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let mut termination = Termination::install();
        let listener = match tokio::net::TcpListener::bind(&flags.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("krs-sandbox-sim: --listen {}: {e}", flags.listen);
                return ExitCode::FAILURE;
            }
        };
        let shutdown = CancellationToken::new();
        let sim = match simulator::start(scenario, listener, shutdown.clone()).await {
            Ok(sim) => sim,
            Err(e) => {
                eprintln!("krs-sandbox-sim: {e}");
                return ExitCode::FAILURE;
            }
        };
        info!(address = %sim.addr(), "simulated sandbox listening");
        termination.recv().await;
        shutdown.cancel();
        sim.closed().await;
        ExitCode::SUCCESS
    })
}

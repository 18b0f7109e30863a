//! `krs-sandbox-sim`: the simulated Kaspersky Research Sandbox API as a standalone server, for
//! trying the exporter, the compose stack and the end-to-end tests. Scenario format:
//! `docs/simulator.md`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use krs_sandbox_sim::{self as simulator, Scenario};
use tokio_util::sync::CancellationToken;
use tracing::info;
use tracing_subscriber::filter::LevelFilter;

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

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    /// `key=value` text lines.
    Logfmt,
    Json,
}

/// Logs to stderr at `level`, as text or one JSON object per line.
fn init_logging(level: LogLevel, format: LogFormat) {
    let level = match level {
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Error => LevelFilter::ERROR,
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    match format {
        LogFormat::Logfmt => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Registers SIGTERM and SIGINT now (inside the runtime); the future resolves on either.
fn termination() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let signals = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        );
        async move {
            match signals {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => std::future::pending().await,
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn main() -> ExitCode {
    let flags = Flags::parse();
    init_logging(flags.log_level, flags.log_format);
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
        // Registered before binding, so a signal from a supervisor that sees the port open
        // is never lost.
        let termination = termination();
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
        termination.await;
        shutdown.cancel();
        sim.closed().await;
        ExitCode::SUCCESS
    })
}

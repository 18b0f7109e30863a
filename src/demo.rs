//! `--demo`: the simulated sandbox in-process, with the bundled scenario, and a configuration
//! that watches it — so a newcomer sees every metric family move within two minutes, with no
//! sandbox and no configuration file.

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{
    Config, DiscoveryConfig, MetricsConfig, PollingConfig, RetryConfig, SandboxConfig, TaskId,
    TaskLabels, TaskSpec,
};
use crate::secret::Secret;
use krs_sandbox_sim::{self as simulator, Scenario, SimHandle};

/// The demo polls often so that the scenario's timeline (a Red file at about one minute, a zone
/// change at ninety seconds) shows within two minutes.
const DEMO_INTERVAL: Duration = Duration::from_secs(10);
/// Detonating samples are polled at a quicker pace, so a file shows within seconds.
const DEMO_ACTIVE_INTERVAL: Duration = Duration::from_secs(5);
/// Finished samples are looked at again now and then.
const DEMO_SETTLED_INTERVAL: Duration = Duration::from_secs(60);

/// A running simulator and the configuration that watches it.
pub struct Demo {
    pub config: Config,
    pub sim: SimHandle,
}

#[derive(Debug, Error)]
pub enum DemoError {
    #[error("starting the simulated sandbox: {0}")]
    Start(#[from] std::io::Error),
    #[error("the bundled scenario names an invalid task id {0:?}")]
    TaskId(String),
    #[error("building the demo configuration: {0}")]
    Url(#[from] url::ParseError),
}

impl Demo {
    pub fn base_url(&self) -> String {
        self.sim.base_url()
    }
}

/// Starts the simulator with the bundled scenario on a loopback port; it stops with `shutdown`.
pub async fn start(shutdown: CancellationToken) -> Result<Demo, DemoError> {
    let scenario = simulator::demo_scenario();
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let config = config_for(&scenario, &format!("http://{}/", listener.local_addr()?))?;
    let sim = simulator::start(scenario, listener, shutdown).await?;
    Ok(Demo { config, sim })
}

/// The configuration that watches every task of `scenario`, plus one the sandbox never had.
pub fn config_for(scenario: &Scenario, base_url: &str) -> Result<Config, DemoError> {
    let mut tasks = Vec::new();
    for task in scenario.tasks() {
        tasks.push(TaskSpec {
            id: TaskId::parse(&task.id).map_err(|_| DemoError::TaskId(task.id.clone()))?,
            name: task.name.clone().unwrap_or_default(),
            labels: TaskLabels::from([("env".to_string(), "demo".to_string())]),
        });
    }
    tasks.push(TaskSpec {
        id: TaskId::parse(simulator::DEMO_MISSING_TASK_ID)
            .map_err(|_| DemoError::TaskId(simulator::DEMO_MISSING_TASK_ID.into()))?,
        name: "never-existed".to_string(),
        labels: TaskLabels::from([("env".to_string(), "demo".to_string())]),
    });
    let credentials = scenario.credentials();
    Ok(Config {
        source: PathBuf::from("<demo>"),
        sandbox: SandboxConfig {
            url: url::Url::parse(base_url)?,
            username: credentials.username.clone(),
            password: Secret::new(credentials.password.clone()),
            password_file: None,
            ca_file: None,
            insecure_skip_verify: false,
            timeout: Duration::from_secs(3),
            max_response_bytes: 16 * 1024 * 1024,
            max_records: 10_000,
            ui_task_url: None,
        },
        polling: PollingConfig {
            interval: DEMO_INTERVAL,
            active_interval: DEMO_ACTIVE_INTERVAL,
            settled_interval: Some(DEMO_SETTLED_INTERVAL),
            lifecycle: true,
            health_interval: Some(DEMO_INTERVAL),
            concurrency: 4,
            retry: RetryConfig {
                initial_interval: Duration::from_millis(500),
                max_interval: Duration::from_secs(4),
                multiplier: 2.0,
                randomization_factor: 0.5,
                max_elapsed_time: Duration::from_secs(8),
            },
        },
        tasks: tasks.into(),
        // The simulated sandbox keeps receiving samples: discovery watches them arrive,
        // detonate and complete.
        discovery: Some(DiscoveryConfig {
            interval: DEMO_INTERVAL,
            lookback: Duration::from_secs(3600),
            zones: Vec::new(),
            max_tasks: 500,
            page_size: 100,
            labels: TaskLabels::from([("env".to_string(), "demo".to_string())]),
        }),
        metrics: MetricsConfig::default(),
    })
}

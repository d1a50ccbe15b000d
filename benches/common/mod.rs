//! What the benchmarks share: percentiles, units, settings from the
//! environment, the load average they print next to their figures, and emulated agents.

use std::time::Duration;

/// Nearest rank: the smallest sample with at least p% of the samples at or below it.
pub fn rank(sorted: &[Duration], p: f64) -> Duration {
    let k = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[k.clamp(1, sorted.len()) - 1]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A whole number from the environment variable `name`, else `default`; a value that is not
/// a number stops the benchmark naming the variable.
pub fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a whole number")),
        Err(_) => default,
    }
}

/// The 1, 5 and 15 minute load averages, as /proc/loadavg shows them.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Starts an agent in this process whose tasks run in `runtime` (the fake one: the
/// benchmarks emulate many machines), its API on a loopback port without tokens.
pub async fn start_emulated_agent(
    config: dcos_rs::agent::AgentConfig,
    runtime: std::sync::Arc<dcos_rs::agent::fake::FakeRuntime>,
    to_master: &tokio::sync::mpsc::Sender<dcos_rs::link::ToMaster>,
    shutdown: &tokio::sync::watch::Receiver<bool>,
) -> std::sync::Arc<dcos_rs::agent::Agent> {
    let api = dcos_rs::agent::AgentApi {
        listener: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        tls: None,
        auth: None,
        guard: dcos_rs::http_guard::RequestGuard::new(),
    };
    dcos_rs::agent::start(config, to_master.clone(), runtime, api, shutdown.clone())
        .await
        .expect("an emulated agent starts")
        .agent
}

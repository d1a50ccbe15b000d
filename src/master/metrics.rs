//! Prometheus metrics of the master: API requests by route and status, API latency, and
//! gauges read from the replicated state at scrape time (tasks by state, agents by state,
//! Raft term and indexes).

use dcos_core::ClusterState;
use dcos_raft::RaftStatus;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    latency: Family<Labels, Histogram>,
    tasks: Family<Labels, Gauge>,
    agents: Family<Labels, Gauge>,
    apps: Gauge,
    raft_term: Gauge,
    raft_commit_index: Gauge,
    raft_last_log_index: Gauge,
    raft_is_leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("dcos");
        let requests = Family::<Labels, Counter>::default();
        let latency = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
        });
        let tasks = Family::<Labels, Gauge>::default();
        let agents = Family::<Labels, Gauge>::default();
        let apps = Gauge::default();
        let raft_term = Gauge::default();
        let raft_commit_index = Gauge::default();
        let raft_last_log_index = Gauge::default();
        let raft_is_leader = Gauge::default();
        registry.register(
            "api_requests",
            "API requests by route, method and status",
            requests.clone(),
        );
        registry.register(
            "api_request_duration_seconds",
            "API request latency by route",
            latency.clone(),
        );
        registry.register("tasks", "Tasks by state", tasks.clone());
        registry.register("agents", "Agents by state", agents.clone());
        registry.register("apps", "Apps defined", apps.clone());
        registry.register("raft_term", "Current Raft term", raft_term.clone());
        registry.register(
            "raft_commit_index",
            "Last applied (committed) Raft log index",
            raft_commit_index.clone(),
        );
        registry.register(
            "raft_last_log_index",
            "Last Raft log index",
            raft_last_log_index.clone(),
        );
        registry.register(
            "raft_is_leader",
            "1 if this master is the Raft leader",
            raft_is_leader.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            tasks,
            agents,
            apps,
            raft_term,
            raft_commit_index,
            raft_last_log_index,
            raft_is_leader,
        }
    }

    /// Counts one answered request. Labels come from a fixed set only (the matched route or
    /// `unmatched`, a known method or `other`), so callers cannot grow the metrics.
    pub fn observe_request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&vec![
                ("route".into(), route.into()),
                ("method".into(), method_label(method).into()),
                ("status".into(), status.to_string()),
            ])
            .inc();
        self.latency
            .get_or_create(&vec![("route".into(), route.into())])
            .observe(seconds);
    }

    /// Refreshes the gauges from the state and encodes everything in Prometheus text format.
    pub fn render(&self, state: &ClusterState, raft: &RaftStatus) -> String {
        for (task_state, count) in dcos_api::tasks_by_state(state) {
            self.tasks
                .get_or_create(&vec![("state".into(), task_state.as_str().into())])
                .set(count as i64);
        }
        for label in ["active", "draining", "unreachable", "gone"] {
            let count = state
                .agents
                .keys()
                .filter(|id| state.agent_state_label(id) == label)
                .count();
            self.agents
                .get_or_create(&vec![("state".into(), label.into())])
                .set(count as i64);
        }
        self.apps.set(state.services.apps.len() as i64);
        self.raft_term.set(raft.term as i64);
        self.raft_commit_index.set(raft.commit_index as i64);
        self.raft_last_log_index.set(raft.last_log_index as i64);
        self.raft_is_leader.set(i64::from(raft.role == "leader"));
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry) {
            tracing::error!("encoding metrics: {e}");
        }
        out
    }
}

/// The metrics label of an HTTP method: the standard ones as they are, anything else
/// `other`.
fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];
    KNOWN
        .into_iter()
        .find(|known| *known == method)
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_metrics_never_take_a_label_from_the_request() {
        let metrics = Metrics::new();
        for method in ["GET", "BREW", "PROPFIND", "get"] {
            metrics.observe_request("unmatched", method, 404, 0.001);
        }
        assert_eq!(method_label("DELETE"), "DELETE");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &metrics.registry).unwrap();
        assert!(text.contains("method=\"other\""), "{text}");
        for invented in ["BREW", "PROPFIND", "\"get\""] {
            assert!(!text.contains(invented), "{invented} in {text}");
        }
    }
}

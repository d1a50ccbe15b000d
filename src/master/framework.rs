//! What the master runs: built-in frameworks (`crate::frameworks`) behind one trait, fed
//! the applied state and the time, each proposing what to do. The master performs the
//! proposals; frameworks never do I/O themselves.

use dcos_core::{Agent, ClusterState, Task};

/// What a framework sees of the world besides the state.
pub struct Round<'a> {
    pub now_ms: u64,
    /// Agents a launch can reach now (the leader holds a live link to them).
    pub connected: &'a dyn Fn(&Agent) -> bool,
    /// Most launches the master performs this round (the rest wait for the next round):
    /// a framework need not build more tasks than this.
    pub launches_max: usize,
}

/// What a framework asks the master to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Proposal {
    /// Record the task (`Command::LaunchTask`), then send it to its agent.
    Launch(Box<Task>),
    /// Record the kill (`Command::KillTask`), then tell the task's agent.
    Kill { task_id: String },
    /// Forget an ended task (`Command::ExpungeTask`).
    Expunge { task_id: String },
    /// Write a command of the framework's own state as it is (a job run's start, skip or
    /// stop); nothing goes to an agent.
    Record(Box<dcos_core::Command>),
    /// Roll an app's deployment back, saying why (`Command::RollBack` with a new deployment
    /// id): a deployment past its `progressDeadlineSeconds`.
    RollBack {
        app_id: String,
        failed_deployment_id: String,
        reason: String,
    },
}

/// A built-in framework: pure decisions over the applied state (the I/O is the master's).
pub trait Framework: Send + Sync {
    /// Short name for logs and metrics (`services`).
    fn name(&self) -> &'static str;

    /// One planning round.
    fn plan(&self, state: &ClusterState, round: &Round) -> Vec<Proposal>;

    /// An unreachable agent registered again: which of its tasks this framework replaced
    /// meanwhile, to be killed before anything else so an instance never runs twice.
    fn replaced_while_unreachable(&self, state: &ClusterState, agent_id: &str) -> Vec<String>;

    /// Work of the framework's own beside the planning rounds, started with the master
    /// (the Mesos framework's offers and event streams); none by default.
    fn spawn(
        self: std::sync::Arc<Self>,
        _master: std::sync::Arc<super::Master>,
        _shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
    }
}

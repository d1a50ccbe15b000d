//! Wire types shared by the master, the agent and the CLI, by API family: `error` (the one
//! error shape), `marathon` (`/v2`), `cluster` (`/cluster/v1`), `agent` (the agent's API),
//! and `routes`, every path as a constant.
//!
//! Deliberately absent: HTTP plumbing. Servers and clients live in the binary crate.

pub mod agent;
pub mod cluster;
pub mod error;
pub mod marathon;
pub mod mesos;
pub mod routes;

pub use agent::{ImageView, ImagesEnvelope};
pub use cluster::{
    agent_view, frameworks_view, tasks_by_state, AgentView, FrameworkTaskView, FrameworkView,
    MasterView, NodesView, ResourcesView, UsageHistory, UsageSample, UsedOf,
};
pub use dcos_core::time::iso8601;
pub use error::ApiError;
pub use marathon::{
    any_task_view, app_converged, app_view, deployment_view, readiness_check_results, task_view,
    AppEnvelope, AppVersionView, AppView, AppsEnvelope, DeploymentRef, DeploymentResult,
    DeploymentView, MarathonTask, MarathonTasksEnvelope, TaskOwnerView, TaskView, TasksEnvelope,
    VersionInfo, VersionsEnvelope,
};

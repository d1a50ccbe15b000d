//! Pure cluster logic for dcos-rs: the vocabulary (agents, tasks and their owners), the Raft
//! log entry (`Command`), the replicated state machine (`ClusterState::apply`), placement
//! shared by every framework, and the frameworks' pure halves (`services`, `jobs`).
//!
//! Deliberately absent: async runtimes, files, sockets and clocks. Every time, id or random
//! choice arrives as a field of a `Command` or as an argument, so everything here is
//! deterministic and tested without I/O.

pub mod command;
pub mod constraints;
pub mod jobs;
pub mod mesos;
pub mod placement;
pub mod services;
pub mod state;
pub mod time;
pub mod types;
pub mod usage;

pub use command::{Command, Outcome, Reject};
pub use placement::{allocate_ports, Ask, PassedOver, Placed, Pool, Unfit, WhyNot};
pub use services::app::{
    self, AppId, AppSpec, ContainerSpec, DockerSpec, FieldError, NetworkSpec, PortDefinition,
};
pub use services::planner::{returning_tasks, Action};
pub use services::{AppRecord, ServicesState};
pub use state::ClusterState;
pub use types::{
    framework_own_task_id, Agent, AgentState, LaunchSpec, PortMapping, PortRange,
    ReadinessResponse, Resources, Task, TaskFetch, TaskHealth, TaskHealthCheck, TaskNetworkMode,
    TaskOwner, TaskReadiness, TaskReadinessCheck, TaskState, TmpfsSpec, VolumeSpec,
    IMAGES_PER_AGENT_MAX,
};
pub use usage::Usage;

//! Pure cluster logic for dcos-rs: the vocabulary (apps, tasks, agents), the Raft log entry
//! (`Command`), the replicated state machine (`ClusterState::apply`) and the services planner.
//!
//! Deliberately absent: async runtimes, files, sockets and clocks. Every time, id or random
//! choice arrives as a field of a `Command` or as an argument, so everything here is
//! deterministic and tested without I/O.

pub mod app;
pub mod command;
pub mod planner;
pub mod state;
pub mod types;

pub use app::{
    AppId, AppSpec, ContainerSpec, DockerSpec, FieldError, NetworkSpec, PortDefinition,
    PortMapping, TmpfsSpec, VolumeSpec,
};
pub use command::{Command, Outcome, Reject};
pub use planner::{plan, plan_on, returning_tasks, Action, BACKOFF_MAX_MS};
pub use state::{AppRecord, ClusterState};
pub use types::{
    allocate_ports, Agent, AgentState, LaunchSpec, PortRange, Resources, Task, TaskNetworkMode,
    TaskState,
};

//! Shared vocabulary: resources, agents, tasks and their states.
//!
//! Plain data with serde; no behaviour beyond small predicates.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Resources in integer units so that sums never drift: milli-cpus and MiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub cpus_milli: u64,
    pub mem_mib: u64,
    pub disk_mib: u64,
}

impl Resources {
    pub fn fits_in(&self, free: &Resources) -> bool {
        self.cpus_milli <= free.cpus_milli
            && self.mem_mib <= free.mem_mib
            && self.disk_mib <= free.disk_mib
    }

    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        Resources {
            cpus_milli: self.cpus_milli.saturating_sub(other.cpus_milli),
            mem_mib: self.mem_mib.saturating_sub(other.mem_mib),
            disk_mib: self.disk_mib.saturating_sub(other.disk_mib),
        }
    }

    pub fn add(&self, other: &Resources) -> Resources {
        Resources {
            cpus_milli: self.cpus_milli + other.cpus_milli,
            mem_mib: self.mem_mib + other.mem_mib,
            disk_mib: self.disk_mib + other.disk_mib,
        }
    }

    pub fn cpus(&self) -> f64 {
        self.cpus_milli as f64 / 1000.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentState {
    Active,
    Unreachable,
    Gone,
}

impl AgentState {
    pub fn as_str(&self) -> &'static str {
        match self {
            AgentState::Active => "active",
            AgentState::Unreachable => "unreachable",
            AgentState::Gone => "gone",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    /// Stable across agent restarts: kept in the agent's work dir.
    pub id: String,
    pub hostname: String,
    /// Base URL of the agent's own HTTP API (logs, images).
    pub url: String,
    /// Total resources offered by the agent (already minus its own reservation).
    pub resources: Resources,
    pub state: AgentState,
    pub registered_at_ms: u64,
    /// Host ports tasks may use (Mesos's `ports` resource).
    #[serde(default)]
    pub ports: Vec<PortRange>,
    /// The name in the certificate the agent registered with (remote agents); another
    /// certificate may not take over this agent id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
}

/// An inclusive range of host ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRange {
    pub begin: u16,
    pub end: u16,
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        self.begin <= port && port <= self.end
    }
}

/// Chooses host ports for a task: each `wanted` entry is a fixed port (must be in `ranges`
/// and unused) or 0 (the lowest free port). `None` if they cannot all be had.
pub fn allocate_ports(
    ranges: &[PortRange],
    used: &std::collections::BTreeSet<u16>,
    wanted: &[u16],
) -> Option<Vec<u16>> {
    let mut taken = used.clone();
    let mut chosen = vec![0u16; wanted.len()];
    for (i, port) in wanted.iter().enumerate().filter(|(_, p)| **p != 0) {
        if !ranges.iter().any(|r| r.contains(*port)) || !taken.insert(*port) {
            return None;
        }
        chosen[i] = *port;
    }
    for (i, _) in wanted.iter().enumerate().filter(|(_, p)| **p == 0) {
        let port = ranges
            .iter()
            .flat_map(|r| r.begin..=r.end)
            .find(|p| !taken.contains(p))?;
        taken.insert(port);
        chosen[i] = port;
    }
    Some(chosen)
}

/// Mesos task states, serialized with Mesos's names (`TASK_RUNNING`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TaskState {
    #[serde(rename = "TASK_STAGING")]
    Staging,
    #[serde(rename = "TASK_STARTING")]
    Starting,
    #[serde(rename = "TASK_RUNNING")]
    Running,
    #[serde(rename = "TASK_KILLING")]
    Killing,
    #[serde(rename = "TASK_FINISHED")]
    Finished,
    #[serde(rename = "TASK_FAILED")]
    Failed,
    #[serde(rename = "TASK_KILLED")]
    Killed,
    #[serde(rename = "TASK_LOST")]
    Lost,
    #[serde(rename = "TASK_ERROR")]
    Error,
    /// Its agent stopped answering; not terminal: the task may still run and come back.
    /// Last in the order on purpose: only `MarkAgentUnreachable` sets it, and any report
    /// from the returning agent replaces it (see `ClusterState::apply`).
    #[serde(rename = "TASK_UNREACHABLE")]
    Unreachable,
}

impl TaskState {
    pub const ALL: [TaskState; 10] = [
        TaskState::Staging,
        TaskState::Starting,
        TaskState::Running,
        TaskState::Killing,
        TaskState::Finished,
        TaskState::Failed,
        TaskState::Killed,
        TaskState::Lost,
        TaskState::Error,
        TaskState::Unreachable,
    ];

    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            TaskState::Finished
                | TaskState::Failed
                | TaskState::Killed
                | TaskState::Lost
                | TaskState::Error
        )
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            TaskState::Staging => "TASK_STAGING",
            TaskState::Starting => "TASK_STARTING",
            TaskState::Running => "TASK_RUNNING",
            TaskState::Killing => "TASK_KILLING",
            TaskState::Finished => "TASK_FINISHED",
            TaskState::Failed => "TASK_FAILED",
            TaskState::Killed => "TASK_KILLED",
            TaskState::Lost => "TASK_LOST",
            TaskState::Error => "TASK_ERROR",
            TaskState::Unreachable => "TASK_UNREACHABLE",
        }
    }
}

/// Everything an agent needs to run a task, copied from the app at launch time so a later
/// app change never alters a running task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaunchSpec {
    /// Shell command (`sh -c`), as Marathon's `cmd`.
    pub cmd: Option<String>,
    /// Argument vector, as Marathon's `args`; replaces the image's Cmd.
    pub args: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
    /// Local image reference; `None` runs a plain process in cgroups on the host filesystem.
    pub image: Option<String>,
    pub user: Option<String>,
    pub kill_grace_period_ms: u64,
    /// Default (empty) when reading log entries written before volumes existed.
    #[serde(default)]
    pub volumes: Vec<crate::app::VolumeSpec>,
    /// The host's network (default, also for entries written before bridging existed) or
    /// the agent's bridge with these port mappings (host ports are the task's `ports`).
    #[serde(default)]
    pub network: TaskNetworkMode,
    /// Run in a user namespace of its own (image tasks only); false for entries written
    /// before user namespaces existed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub user_namespace: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum TaskNetworkMode {
    #[default]
    Host,
    Bridge {
        port_mappings: Vec<crate::app::PortMapping>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    pub app_id: String,
    pub agent_id: String,
    pub resources: Resources,
    pub launch: LaunchSpec,
    /// The app's config version this task was launched from.
    pub app_config_version_ms: u64,
    pub state: TaskState,
    /// Set when the framework asked for the task to be killed; the agent reports the end.
    pub kill_requested: bool,
    pub staged_at_ms: u64,
    pub started_at_ms: Option<u64>,
    pub updated_at_ms: u64,
    pub message: Option<String>,
    pub exit_code: Option<i32>,
    /// Host ports given to the task, in the order of the app's `portDefinitions`.
    #[serde(default)]
    pub ports: Vec<u16>,
}

impl Task {
    /// Counts against its agent's resources until the agent reports a terminal state.
    pub fn holds_resources(&self) -> bool {
        !self.state.is_terminal()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn ports_are_allocated_lowest_first_around_fixed_and_used_ones() {
        let ranges = [
            PortRange {
                begin: 100,
                end: 103,
            },
            PortRange {
                begin: 200,
                end: 200,
            },
        ];
        let used: BTreeSet<u16> = [100].into();
        assert_eq!(
            allocate_ports(&ranges, &used, &[0, 0]),
            Some(vec![101, 102])
        );
        assert_eq!(
            allocate_ports(&ranges, &used, &[0, 101]),
            Some(vec![102, 101])
        );
        assert_eq!(
            allocate_ports(&ranges, &used, &[200, 0, 0, 0]),
            Some(vec![200, 101, 102, 103])
        );
        assert_eq!(
            allocate_ports(&ranges, &used, &[0, 0, 0, 0, 0]),
            None,
            "only 4 free"
        );
        assert_eq!(
            allocate_ports(&ranges, &used, &[100]),
            None,
            "fixed port in use"
        );
        assert_eq!(
            allocate_ports(&ranges, &used, &[150]),
            None,
            "fixed port outside the ranges"
        );
        assert_eq!(
            allocate_ports(&ranges, &used, &[101, 101]),
            None,
            "the same port twice"
        );
        assert_eq!(allocate_ports(&ranges, &used, &[]), Some(vec![]));
    }
}

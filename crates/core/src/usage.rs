//! What the cluster offers and what its tasks hold, summed from the state at one moment:
//! the dashboard's overview chart is a series of these, sampled by each master from its
//! own copy of the state.
//!
//! Pure arithmetic on the state; the caller says when the sample was taken. Deliberately
//! absent: what tasks actually consume (cgroup counters are the agents' business, read
//! through their `/containers`).

use crate::state::ClusterState;
use crate::types::{AgentState, Resources, TaskState};
use std::collections::BTreeMap;

/// The cluster's resources and tasks at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// What the active agents offer (an unreachable or gone agent offers nothing).
    pub total: Resources,
    /// What the live (non-terminal) tasks on those active agents hold: the part of `total`
    /// that is taken.
    pub used: Resources,
    /// Every task the state keeps, ended ones included, by state; every state is present
    /// (zero or more), so a series of samples has the same keys throughout.
    pub tasks: BTreeMap<TaskState, usize>,
    /// The active agents `total` sums.
    pub agents: usize,
}

impl ClusterState {
    /// The cluster's usage as this state has it.
    pub fn usage(&self) -> Usage {
        let mut usage = Usage {
            tasks: TaskState::ALL.iter().map(|s| (*s, 0)).collect(),
            ..Usage::default()
        };
        let active = |agent_id: &str| {
            self.agents
                .get(agent_id)
                .is_some_and(|a| a.state == AgentState::Active)
        };
        for agent in self.agents.values().filter(|a| active(&a.id)) {
            usage.total = usage.total.add(&agent.resources);
            usage.agents += 1;
        }
        for task in self.tasks.values() {
            *usage.tasks.entry(task.state).or_default() += 1;
            if task.holds_resources() && active(&task.agent_id) {
                usage.used = usage.used.add(&task.resources);
            }
        }
        usage
    }
}

#[cfg(test)]
mod tests {
    use crate::state::tests::{cluster, status, task};
    use crate::types::{Resources, TaskState};
    use crate::{Command, Outcome};

    #[test]
    fn usage_sums_active_agents_and_their_live_tasks() {
        let mut s = cluster(&[("a1", 2000, 1024), ("a2", 4000, 2048)], &[("/web", 3)]);
        let empty = s.usage();
        assert_eq!(empty.agents, 2);
        assert_eq!(
            empty.total,
            Resources {
                cpus_milli: 6000,
                mem_mib: 3072,
                disk_mib: 2000
            }
        );
        assert_eq!(empty.used, Resources::default());
        assert_eq!(
            empty.tasks.len(),
            TaskState::ALL.len(),
            "every state is a key"
        );
        assert!(empty.tasks.values().all(|n| *n == 0));

        for (id, agent) in [("t1", "a1"), ("t2", "a1"), ("t3", "a2")] {
            let launch = Command::LaunchTask {
                task: task(id, "/web", agent, 1),
            };
            assert_eq!(s.apply(&launch), Outcome::Applied, "{id}");
        }
        s.apply(&status("t1", TaskState::Running, 20));
        s.apply(&status("t2", TaskState::Finished, 30));
        let usage = s.usage();
        // t1 (running) and t3 (staging) hold 500 milli-cpus and 64 MiB each; t2 has ended.
        assert_eq!(
            usage.used,
            Resources {
                cpus_milli: 1000,
                mem_mib: 128,
                disk_mib: 0
            }
        );
        assert_eq!(usage.tasks[&TaskState::Running], 1);
        assert_eq!(usage.tasks[&TaskState::Staging], 1);
        assert_eq!(usage.tasks[&TaskState::Finished], 1);
        assert_eq!(usage.tasks.values().sum::<usize>(), 3);
    }

    #[test]
    fn an_unreachable_agent_and_its_tasks_leave_the_sums() {
        let mut s = cluster(&[("a1", 2000, 1024), ("a2", 4000, 2048)], &[("/web", 2)]);
        for (id, agent) in [("t1", "a1"), ("t2", "a2")] {
            let launch = Command::LaunchTask {
                task: task(id, "/web", agent, 1),
            };
            assert_eq!(s.apply(&launch), Outcome::Applied, "{id}");
            s.apply(&status(id, TaskState::Running, 20));
        }
        s.apply(&Command::MarkAgentUnreachable {
            agent_id: "a2".into(),
            at_ms: 40,
        });
        let usage = s.usage();
        assert_eq!(usage.agents, 1);
        assert_eq!(usage.total.cpus_milli, 2000);
        assert_eq!(usage.used.cpus_milli, 500, "only t1, on the active agent");
        // The unreachable agent's task is still counted, by its state.
        assert_eq!(usage.tasks[&TaskState::Running], 1);
        assert_eq!(usage.tasks[&TaskState::Unreachable], 1);
    }
}

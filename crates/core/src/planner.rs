//! The services framework's planner: (cluster state, now) -> actions that move every app
//! towards its definition. Pure; the master's services loop performs the actions.
//!
//! Strategy: launch new-config tasks until `instances` of them exist, kill old-config tasks
//! once enough new ones run (start-then-stop, Marathon's default upgrade), kill extras newest
//! first, back off relaunches of crashing apps, and keep a short history of ended tasks.

use crate::state::{AppRecord, ClusterState};
use crate::types::{allocate_ports, AgentState, PortRange, Resources, Task, TaskState};
use std::collections::{BTreeMap, BTreeSet};

/// First relaunch delay after a failure; doubles per consecutive failure.
pub const BACKOFF_BASE_MS: u64 = 1_000;
pub const BACKOFF_MAX_MS: u64 = 60_000;
/// Ended tasks kept per app for `task list` and the dashboard; older ones are expunged.
pub const ENDED_TASKS_KEPT_PER_APP: usize = 5;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `ports` are the host ports chosen for the task (one per port definition).
    Launch {
        app_id: String,
        agent_id: String,
        ports: Vec<u16>,
    },
    Kill {
        task_id: String,
    },
    Expunge {
        task_id: String,
    },
}

pub fn backoff_ms(consecutive_failures: u32) -> u64 {
    if consecutive_failures == 0 {
        return 0;
    }
    let shift = (consecutive_failures - 1).min(16);
    (BACKOFF_BASE_MS << shift).min(BACKOFF_MAX_MS)
}

pub fn plan(state: &ClusterState, now_ms: u64) -> Vec<Action> {
    plan_on(state, now_ms, &|_| true)
}

/// `plan`, placing new tasks only on active agents for which `placeable` holds (the master
/// passes "has a live link to this leader").
pub fn plan_on(
    state: &ClusterState,
    now_ms: u64,
    placeable: &dyn Fn(&crate::types::Agent) -> bool,
) -> Vec<Action> {
    let mut actions = Vec::new();
    // Free resources per active agent, reduced as this plan places tasks.
    let mut free: BTreeMap<&str, Slot> = state
        .agents
        .values()
        .filter(|a| {
            a.state == AgentState::Active && !state.draining.contains(&a.id) && placeable(a)
        })
        .map(|a| {
            let slot = Slot {
                resources: state.free_resources(&a.id),
                ranges: &a.ports,
                used_ports: state.used_ports(&a.id),
            };
            (a.id.as_str(), slot)
        })
        .collect();

    let mut tasks_by_app: BTreeMap<&str, Vec<&Task>> = BTreeMap::new();
    for task in state.tasks.values() {
        tasks_by_app
            .entry(task.app_id.as_str())
            .or_default()
            .push(task);
    }

    for (app_id, app) in &state.apps {
        let tasks = tasks_by_app.remove(app_id.as_str()).unwrap_or_default();
        plan_app(
            app,
            &tasks,
            &state.draining,
            now_ms,
            &mut free,
            &mut actions,
        );
    }
    // Tasks whose app is gone.
    for tasks in tasks_by_app.values() {
        for task in tasks {
            if task.state.is_terminal() {
                actions.push(Action::Expunge {
                    task_id: task.id.clone(),
                });
            } else if !task.kill_requested {
                actions.push(Action::Kill {
                    task_id: task.id.clone(),
                });
            }
        }
    }
    actions
}

fn plan_app(
    app: &AppRecord,
    tasks: &[&Task],
    draining: &BTreeSet<String>,
    now_ms: u64,
    free: &mut BTreeMap<&str, Slot>,
    actions: &mut Vec<Action>,
) {
    let instances = app.spec.instances as usize;
    // Unreachable tasks neither count (they are replaced) nor get killed (no agent to tell);
    // `returning_tasks` decides their fate when their agent is back.
    let active: Vec<&Task> = tasks
        .iter()
        .copied()
        .filter(|t| {
            !t.state.is_terminal() && !t.kill_requested && t.state != TaskState::Unreachable
        })
        .collect();
    // Tasks of an older config and tasks on draining agents are replaced alike: new ones
    // start elsewhere first, the old ones are killed once enough of the new ones run.
    let (mut current, old): (Vec<&Task>, Vec<&Task>) = active.iter().partition(|t| {
        t.app_config_version_ms == app.config_version_ms && !draining.contains(&t.agent_id)
    });

    if current.len() < instances {
        let waiting = now_ms < app.last_failure_at_ms + backoff_ms(app.consecutive_failures);
        if !waiting {
            let needed = app.spec.resources();
            let wanted = app.spec.requested_ports();
            for _ in current.len()..instances {
                let Some((agent_id, ports)) = pick_agent(free, &needed, &wanted) else {
                    break;
                };
                actions.push(Action::Launch {
                    app_id: app.spec.id.clone(),
                    agent_id: agent_id.to_string(),
                    ports,
                });
            }
        }
    } else if current.len() > instances {
        // Kill tasks that are not running yet first, then the newest.
        current.sort_by_key(|t| {
            (
                t.state == TaskState::Running,
                std::cmp::Reverse(t.staged_at_ms),
                t.id.clone(),
            )
        });
        for task in &current[..current.len() - instances] {
            actions.push(Action::Kill {
                task_id: task.id.clone(),
            });
        }
    }

    let running_current = current
        .iter()
        .filter(|t| t.state == TaskState::Running)
        .count();
    if running_current >= instances {
        for task in old {
            actions.push(Action::Kill {
                task_id: task.id.clone(),
            });
        }
    }

    let mut ended: Vec<&Task> = tasks
        .iter()
        .copied()
        .filter(|t| t.state.is_terminal())
        .collect();
    ended.sort_by_key(|t| (std::cmp::Reverse(t.updated_at_ms), t.id.clone()));
    for task in ended.iter().skip(ENDED_TASKS_KEPT_PER_APP) {
        actions.push(Action::Expunge {
            task_id: task.id.clone(),
        });
    }
}

/// An unreachable agent is back: which of its TASK_UNREACHABLE tasks keep their place and
/// which were replaced meanwhile and must be killed, so an instance never runs twice.
/// Per app, the live tasks elsewhere count first; the returning tasks fill what is left,
/// oldest first. Tasks of removed apps and tasks asked to die are killed. Returns
/// `(keep, kill)`, each sorted by task id.
pub fn returning_tasks(state: &ClusterState, agent_id: &str) -> (Vec<String>, Vec<String>) {
    let mut returning: Vec<&Task> = state
        .tasks
        .values()
        .filter(|t| t.agent_id == agent_id && t.state == TaskState::Unreachable)
        .collect();
    returning.sort_by_key(|t| (t.staged_at_ms, t.id.clone()));
    let mut places: BTreeMap<&str, usize> = BTreeMap::new();
    for (app_id, app) in &state.apps {
        let elsewhere = state
            .tasks
            .values()
            .filter(|t| {
                t.app_id == *app_id
                    && !t.state.is_terminal()
                    && t.state != TaskState::Unreachable
                    && !t.kill_requested
            })
            .count();
        places.insert(
            app_id.as_str(),
            (app.spec.instances as usize).saturating_sub(elsewhere),
        );
    }
    let (mut keep, mut kill) = (Vec::new(), Vec::new());
    for task in returning {
        match places.get_mut(task.app_id.as_str()) {
            Some(left) if *left > 0 && !task.kill_requested => {
                *left -= 1;
                keep.push(task.id.clone());
            }
            _ => kill.push(task.id.clone()),
        }
    }
    keep.sort();
    kill.sort();
    (keep, kill)
}

/// What an agent still has to give during one plan.
struct Slot<'a> {
    resources: Resources,
    ranges: &'a [PortRange],
    used_ports: BTreeSet<u16>,
}

/// The agent with the most free memory that fits `needed` and can give the `wanted` ports
/// (ties by id, so plans are stable); what it gives is taken from its slot.
fn pick_agent<'a>(
    free: &mut BTreeMap<&'a str, Slot>,
    needed: &Resources,
    wanted: &[u16],
) -> Option<(&'a str, Vec<u16>)> {
    let (agent_id, ports) = free
        .iter()
        .filter(|(_, slot)| needed.fits_in(&slot.resources))
        .filter_map(|(id, slot)| {
            let ports = allocate_ports(slot.ranges, &slot.used_ports, wanted)?;
            Some((*id, slot.resources.mem_mib, ports))
        })
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
        .map(|(id, _, ports)| (id, ports))?;
    let slot = free.get_mut(agent_id).expect("picked from the map");
    slot.resources = slot.resources.saturating_sub(needed);
    slot.used_ports.extend(ports.iter().copied());
    Some((agent_id, ports))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Outcome, Reject};
    use crate::state::tests::{agent, app, task};

    fn cluster(agents: &[(&str, u64, u64)], apps: &[(&str, u32)]) -> ClusterState {
        let mut s = ClusterState::default();
        for (id, cpus, mem) in agents {
            s.apply(&Command::RegisterAgent {
                agent: agent(id, *cpus, *mem),
            });
        }
        for (id, n) in apps {
            s.apply(&Command::PutApp {
                app: app(id, *n),
                create: true,
                at_ms: 1,
                deployment_id: "d".into(),
            });
        }
        s
    }

    fn set_state(s: &mut ClusterState, id: &str, state: TaskState, at_ms: u64) {
        s.apply(&Command::TaskStatus {
            task_id: id.into(),
            state,
            at_ms,
            message: None,
            exit_code: None,
        });
    }

    #[test]
    fn launches_missing_instances_on_the_freest_agent() {
        let s = cluster(&[("a1", 4000, 256), ("a2", 4000, 512)], &[("/web", 3)]);
        assert_eq!(
            plan(&s, 100),
            vec![
                Action::Launch {
                    app_id: "/web".into(),
                    agent_id: "a2".into(),
                    ports: vec![],
                },
                Action::Launch {
                    app_id: "/web".into(),
                    agent_id: "a2".into(),
                    ports: vec![],
                },
                Action::Launch {
                    app_id: "/web".into(),
                    agent_id: "a2".into(),
                    ports: vec![],
                },
            ]
        );
    }

    #[test]
    fn stops_launching_when_nothing_fits() {
        let s = cluster(&[("a1", 1000, 128)], &[("/web", 5)]);
        assert_eq!(plan(&s, 100).len(), 2, "0.5 cpu x 2 fills the agent");
    }

    #[test]
    fn ports_are_chosen_per_agent_and_never_twice() {
        let mut s = cluster(&[("a1", 40000, 10240)], &[]);
        let mut spec = app("/web", 4);
        spec.port_definitions = vec![
            crate::app::PortDefinition {
                port: 0,
                name: None,
                protocol: "tcp".into(),
            },
            crate::app::PortDefinition {
                port: 31005,
                name: None,
                protocol: "tcp".into(),
            },
        ];
        s.apply(&Command::PutApp {
            app: spec,
            create: true,
            at_ms: 1,
            deployment_id: "d".into(),
        });
        let launches = plan(&s, 10);
        // The fixed port 31005 exists once on the agent: one instance only.
        assert_eq!(
            launches,
            vec![Action::Launch {
                app_id: "/web".into(),
                agent_id: "a1".into(),
                ports: vec![31000, 31005]
            }]
        );
    }

    #[test]
    fn converged_app_plans_nothing() {
        let mut s = cluster(&[("a1", 4000, 1024)], &[("/web", 1)]);
        s.apply(&Command::LaunchTask {
            task: task("t1", "/web", "a1", 1),
        });
        set_state(&mut s, "t1", TaskState::Running, 5);
        assert_eq!(plan(&s, 100), vec![]);
    }

    #[test]
    fn scale_down_kills_staging_then_newest() {
        let mut s = cluster(&[("a1", 4000, 1024)], &[("/web", 3)]);
        for (id, staged) in [("t1", 10), ("t2", 20), ("t3", 30)] {
            let mut t = task(id, "/web", "a1", 1);
            t.staged_at_ms = staged;
            s.apply(&Command::LaunchTask { task: t });
        }
        set_state(&mut s, "t1", TaskState::Running, 40);
        set_state(&mut s, "t3", TaskState::Running, 40);
        s.apply(&Command::ScaleApp {
            app_id: "/web".into(),
            instances: 1,
            at_ms: 50,
            deployment_id: "e".into(),
        });
        assert_eq!(
            plan(&s, 100),
            vec![
                Action::Kill {
                    task_id: "t2".into()
                },
                Action::Kill {
                    task_id: "t3".into()
                }
            ]
        );
    }

    #[test]
    fn failed_app_backs_off_before_relaunch() {
        let mut s = cluster(&[("a1", 4000, 1024)], &[("/web", 1)]);
        s.apply(&Command::LaunchTask {
            task: task("t1", "/web", "a1", 1),
        });
        set_state(&mut s, "t1", TaskState::Failed, 1000);
        assert_eq!(plan(&s, 1500), vec![]);
        assert_eq!(plan(&s, 2000).len(), 1);
        assert_eq!(backoff_ms(3), 4000);
        assert_eq!(backoff_ms(40), BACKOFF_MAX_MS);
    }

    #[test]
    fn config_change_replaces_old_tasks_after_new_ones_run() {
        let mut s = cluster(&[("a1", 4000, 1024)], &[("/web", 1)]);
        s.apply(&Command::LaunchTask {
            task: task("old", "/web", "a1", 1),
        });
        set_state(&mut s, "old", TaskState::Running, 5);
        let mut changed = app("/web", 1);
        changed.cmd = Some("sleep 7".into());
        s.apply(&Command::PutApp {
            app: changed,
            create: false,
            at_ms: 10,
            deployment_id: "e".into(),
        });
        assert_eq!(
            plan(&s, 20),
            vec![Action::Launch {
                app_id: "/web".into(),
                agent_id: "a1".into(),
                ports: vec![],
            }]
        );
        s.apply(&Command::LaunchTask {
            task: task("new", "/web", "a1", 10),
        });
        assert_eq!(
            plan(&s, 20),
            vec![],
            "old keeps running until the new one runs"
        );
        set_state(&mut s, "new", TaskState::Running, 25);
        assert_eq!(
            plan(&s, 30),
            vec![Action::Kill {
                task_id: "old".into()
            }]
        );
    }

    #[test]
    fn tasks_of_removed_apps_are_killed_then_expunged() {
        let mut s = cluster(&[("a1", 4000, 1024)], &[("/web", 1)]);
        s.apply(&Command::LaunchTask {
            task: task("t1", "/web", "a1", 1),
        });
        s.apply(&Command::RemoveApp {
            app_id: "/web".into(),
            at_ms: 5,
        });
        assert_eq!(plan(&s, 10), vec![], "kill already requested by RemoveApp");
        set_state(&mut s, "t1", TaskState::Killed, 11);
        assert_eq!(
            plan(&s, 12),
            vec![Action::Expunge {
                task_id: "t1".into()
            }]
        );
    }

    #[test]
    fn ended_history_is_bounded() {
        let mut s = cluster(&[("a1", 40000, 10240)], &[("/web", 0)]);
        for i in 0..8 {
            let id = format!("t{i}");
            s.apply(&Command::LaunchTask {
                task: task(&id, "/web", "a1", 1),
            });
            set_state(&mut s, &id, TaskState::Finished, 100 + i);
        }
        let expunged: Vec<_> = plan(&s, 200);
        assert_eq!(
            expunged,
            vec![
                Action::Expunge {
                    task_id: "t2".into()
                },
                Action::Expunge {
                    task_id: "t1".into()
                },
                Action::Expunge {
                    task_id: "t0".into()
                },
            ]
        );
    }

    #[test]
    fn unreachable_tasks_are_replaced_elsewhere_and_sorted_out_when_their_agent_returns() {
        let mut s = cluster(&[("a1", 4000, 1024), ("a2", 4000, 512)], &[("/web", 2)]);
        for id in ["t1", "t2"] {
            s.apply(&Command::LaunchTask {
                task: task(id, "/web", "a1", 1),
            });
            set_state(&mut s, id, TaskState::Running, 10);
        }
        assert_eq!(plan(&s, 20), vec![]);

        let outcome = s.apply(&Command::MarkAgentUnreachable {
            agent_id: "a1".into(),
            at_ms: 30,
        });
        assert_eq!(outcome, Outcome::Applied);
        assert_eq!(s.agents["a1"].state, AgentState::Unreachable);
        assert!(s.tasks.values().all(|t| t.state == TaskState::Unreachable));
        // A status update cannot make a task unreachable; only the agent's mark does.
        // Both instances are replaced on a2, and nothing is killed on the silent agent.
        let actions = plan(&s, 40);
        assert_eq!(actions.len(), 2, "{actions:?}");
        assert!(actions
            .iter()
            .all(|a| matches!(a, Action::Launch { agent_id, .. } if agent_id == "a2")));

        // One replacement made it before a1 returned: t1 (oldest) keeps its place, t2 goes.
        s.apply(&Command::LaunchTask {
            task: task("t3", "/web", "a2", 1),
        });
        set_state(&mut s, "t3", TaskState::Running, 50);
        assert_eq!(
            returning_tasks(&s, "a1"),
            (vec!["t1".to_string()], vec!["t2".to_string()])
        );
        // Its report brings t1 back to RUNNING.
        set_state(&mut s, "t1", TaskState::Running, 60);
        assert_eq!(s.tasks["t1"].state, TaskState::Running);

        // A removed app's returning tasks are all killed.
        let mut gone = s.clone();
        gone.apply(&Command::RemoveApp {
            app_id: "/web".into(),
            at_ms: 70,
        });
        assert_eq!(returning_tasks(&gone, "a1").0, Vec::<String>::new());
    }

    #[test]
    fn status_updates_never_set_unreachable_and_terminal_stays_final() {
        let mut s = cluster(&[("a1", 4000, 1024)], &[("/web", 1)]);
        s.apply(&Command::LaunchTask {
            task: task("t1", "/web", "a1", 1),
        });
        set_state(&mut s, "t1", TaskState::Running, 10);
        set_state(&mut s, "t1", TaskState::Unreachable, 11);
        assert_eq!(s.tasks["t1"].state, TaskState::Running);
        s.apply(&Command::MarkAgentUnreachable {
            agent_id: "a1".into(),
            at_ms: 12,
        });
        set_state(&mut s, "t1", TaskState::Failed, 13);
        assert_eq!(s.tasks["t1"].state, TaskState::Failed);
        s.apply(&Command::MarkAgentUnreachable {
            agent_id: "a1".into(),
            at_ms: 14,
        });
        assert_eq!(s.tasks["t1"].state, TaskState::Failed, "terminal is final");
        let unknown = s.apply(&Command::MarkAgentUnreachable {
            agent_id: "nobody".into(),
            at_ms: 15,
        });
        assert!(matches!(
            unknown,
            Outcome::Rejected(Reject::UnknownAgent { .. })
        ));
    }

    #[test]
    fn a_draining_agents_tasks_are_replaced_elsewhere_before_they_are_killed() {
        let mut s = cluster(&[("a1", 4000, 1024), ("a2", 4000, 1024)], &[("/web", 1)]);
        s.apply(&Command::LaunchTask {
            task: task("t1", "/web", "a1", 1),
        });
        set_state(&mut s, "t1", TaskState::Running, 2);
        assert_eq!(
            s.apply(&Command::DrainAgent {
                agent_id: "a1".into()
            }),
            Outcome::Applied
        );
        assert_eq!(s.agent_state_label("a1"), "draining");
        // Start first: a replacement on a2, t1 untouched while it is not running.
        assert_eq!(
            plan(&s, 10),
            vec![Action::Launch {
                app_id: "/web".into(),
                agent_id: "a2".into(),
                ports: vec![],
            }]
        );
        s.apply(&Command::LaunchTask {
            task: task("t2", "/web", "a2", 1),
        });
        assert!(plan(&s, 11).is_empty(), "t1 stays until t2 runs");
        // Then stop: once t2 runs, t1 is killed.
        set_state(&mut s, "t2", TaskState::Running, 12);
        assert_eq!(
            plan(&s, 13),
            vec![Action::Kill {
                task_id: "t1".into()
            }]
        );
        // A draining agent takes no new task, also after it registers again.
        s.apply(&Command::RegisterAgent {
            agent: agent("a1", 4000, 1024),
        });
        assert_eq!(s.agent_state_label("a1"), "draining");
        assert!(matches!(
            s.apply(&Command::LaunchTask {
                task: task("t3", "/web", "a1", 1)
            }),
            Outcome::Rejected(Reject::AgentNotActive { .. })
        ));
    }

    #[test]
    fn an_agent_is_removed_only_when_drained_or_unreachable_and_may_not_come_back() {
        let mut s = cluster(&[("a1", 4000, 1024), ("a2", 4000, 1024)], &[("/web", 2)]);
        for (id, agent) in [("t1", "a1"), ("t2", "a2")] {
            s.apply(&Command::LaunchTask {
                task: task(id, "/web", agent, 1),
            });
            set_state(&mut s, id, TaskState::Running, 2);
        }
        let remove = |agent_id: &str| Command::RemoveAgent {
            agent_id: agent_id.into(),
            at_ms: 20,
        };
        // Reachable with a live task: refused, also while draining.
        assert!(matches!(
            s.apply(&remove("a1")),
            Outcome::Rejected(Reject::AgentInUse { live_tasks: 1, .. })
        ));
        s.apply(&Command::DrainAgent {
            agent_id: "a1".into(),
        });
        assert!(matches!(
            s.apply(&remove("a1")),
            Outcome::Rejected(Reject::AgentInUse { .. })
        ));
        // Drained (its task ended): removed.
        set_state(&mut s, "t1", TaskState::Killed, 21);
        assert_eq!(s.apply(&remove("a1")), Outcome::Applied);
        assert!(!s.agents.contains_key("a1") && !s.draining.contains("a1"));
        assert!(matches!(
            s.apply(&Command::RegisterAgent {
                agent: agent("a1", 4000, 1024)
            }),
            Outcome::Rejected(Reject::AgentRemoved { .. })
        ));
        // Unreachable: removed with its task, which is lost.
        s.apply(&Command::MarkAgentUnreachable {
            agent_id: "a2".into(),
            at_ms: 30,
        });
        assert_eq!(s.apply(&remove("a2")), Outcome::Applied);
        assert_eq!(s.tasks["t2"].state, TaskState::Lost);
        assert!(matches!(
            s.apply(&remove("nope")),
            Outcome::Rejected(Reject::UnknownAgent { .. })
        ));
    }
}

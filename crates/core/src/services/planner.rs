//! The services framework's planner: (cluster state, now) -> actions that move every app
//! towards its definition. Pure; the services framework's loop performs the actions.
//!
//! Strategy: launch new-config tasks until `instances` of them exist, kill old-config tasks
//! once enough new ones run (start-then-stop, Marathon's default upgrade), kill extras newest
//! first, back off relaunches of crashing apps, and keep a short history of ended tasks.
//! Only tasks the services framework owns are looked at; where they go is `placement`'s call.

use super::app::AppSpec;
use super::fields::{UnreachableStrategy, UpgradeStrategy};
use super::AppRecord;
use crate::constraints::{Constraint, Spread};
use crate::placement::{Ask, PassedOver, Pool};
use crate::state::ClusterState;
use crate::types::{Agent, Task, TaskOwner, TaskState};
use std::collections::{BTreeMap, BTreeSet};

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

/// What one planning round decided, and why the instances it could not place wait.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// Tasks whose health checks failed for good: to be killed and replaced, as many as the
    /// shell's cap on health kills allows (a systemic failure must not kill everything).
    pub unhealthy: Vec<String>,
    /// Per app that is short of instances and could not place the next one: every agent
    /// passed over and why.
    pub unplaced: BTreeMap<String, Vec<PassedOver>>,
    /// How many of `actions` are launches.
    pub launches: usize,
    /// Deployments past their app's `progressDeadlineSeconds`: to be rolled back.
    pub overdue: Vec<Overdue>,
}

/// A deployment to roll back, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overdue {
    pub app_id: String,
    pub deployment_id: String,
    pub reason: String,
}

/// The app's deployment, if it is past its `progressDeadlineSeconds` and may be rolled
/// back: still under way (never converged) that long after the change that began it, not
/// a rollback the framework made itself (which would only swing back and forth), and with
/// an earlier, different version to go back to (an app's first deployment and a restart
/// are left to the operator). Apps held back by their dependencies are not asked
/// (`plan` leaves them out: the wait is not theirs).
pub fn overdue(record: &AppRecord, tasks: &[&Task], now_ms: u64) -> Option<Overdue> {
    let deadline_s = record.spec.progress_deadline_seconds?;
    let due_ms = record
        .version_ms
        .saturating_add(u64::from(deadline_s) * 1_000);
    if now_ms < due_ms
        || record.finished_deployment_id == record.deployment_id
        || record
            .rolled_back
            .as_ref()
            .is_some_and(|r| r.deployment_id == record.deployment_id)
    {
        return None;
    }
    // A restart (the same definition again) has nothing to go back to.
    let back_to = *record.version_list().get(1)?;
    if record.version(back_to) == Some(&record.spec) || super::groups::converged(record, tasks) {
        return None;
    }
    Some(Overdue {
        app_id: record.spec.id.clone(),
        deployment_id: record.deployment_id.clone(),
        reason: format!(
            "deployment {} of {} began at {} and had not finished {deadline_s} s later (progressDeadlineSeconds): rolled back to version {}",
            record.deployment_id,
            record.spec.id,
            crate::time::iso8601(record.version_ms),
            crate::time::iso8601(back_to),
        ),
    })
}

/// What the planner needs besides the state, from its shell.
pub struct PlanInput<'a> {
    pub now_ms: u64,
    /// Agents a launch can reach now (the leader has a live link to them).
    pub connected: &'a dyn Fn(&Agent) -> bool,
    /// An app's image reference as the presence key agents report (`Agent::images`):
    /// `busybox` becomes `docker.io/library/busybox:latest`.
    pub image_key: &'a dyn Fn(&str) -> String,
    /// Tasks that failed their health checks this round may kill and replace, cluster-wide
    /// (the shell's cap on health kills); the others keep their place until a later round.
    pub unhealthy_kills_max: usize,
    /// Most launches this round, over all apps (the shell performs no more per round):
    /// placing stops there, and the apps not reached wait for the next round without being
    /// reported unplaced.
    pub launches_max: usize,
}

impl PlanInput<'_> {
    /// Every agent connected, image references taken as they are (tests).
    pub fn at(now_ms: u64) -> PlanInput<'static> {
        PlanInput {
            now_ms,
            connected: &|_| true,
            image_key: &|image| image.to_string(),
            unhealthy_kills_max: usize::MAX,
            launches_max: usize::MAX,
        }
    }
}

/// Marathon's relaunch delay: `backoffSeconds` after the first failure in a row, times
/// `backoffFactor` for each further one, at most `maxLaunchDelaySeconds`.
pub fn backoff_ms(spec: &AppSpec, consecutive_failures: u32) -> u64 {
    if consecutive_failures == 0 {
        return 0;
    }
    let exponent = (consecutive_failures - 1).min(1_000) as i32;
    let seconds = spec.backoff_seconds * spec.backoff_factor.powi(exponent);
    (seconds.min(spec.max_launch_delay_seconds) * 1000.0) as u64
}

pub fn plan(state: &ClusterState, input: &PlanInput) -> Plan {
    let mut plan = Plan::default();
    let mut pool = Pool::new(state, input.connected);

    let mut tasks_by_app: BTreeMap<&str, Vec<&Task>> = BTreeMap::new();
    for task in state.tasks.values() {
        if let Some(app_id) = task.owner.service_app() {
            tasks_by_app.entry(app_id).or_default().push(task);
        }
    }

    // Apps that wait for others (dependencies) launch nothing until those converged.
    let services = &state.services;
    let any_dependencies = services
        .apps
        .values()
        .any(|a| !a.spec.dependencies.is_empty())
        || services.groups.values().any(|g| !g.dependencies.is_empty());
    let held_back = if any_dependencies {
        let ready_of = services
            .apps
            .iter()
            .map(|(id, record)| {
                let tasks = tasks_by_app
                    .get(id.as_str())
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let ready = tasks
                    .iter()
                    .filter(|t| {
                        ready(t)
                            && !t.kill_requested
                            && config_version(t) == record.config_version_ms
                    })
                    .count();
                (id.clone(), ready)
            })
            .collect();
        super::groups::held_back(&services.apps, &services.groups, &ready_of)
    } else {
        BTreeSet::new()
    };

    for (app_id, app) in &state.services.apps {
        let tasks = tasks_by_app.remove(app_id.as_str()).unwrap_or_default();
        let held = held_back.contains(app_id);
        if !held {
            if let Some(late) = overdue(app, &tasks, input.now_ms) {
                // Rolled back this round: nothing is launched for the definition going away.
                plan.overdue.push(late);
                continue;
            }
        }
        plan_app(
            app,
            &tasks,
            &state.draining,
            held,
            input,
            &mut pool,
            &mut plan,
        );
    }
    // This framework's tasks whose app is gone.
    for tasks in tasks_by_app.values() {
        for task in tasks {
            if task.state.is_terminal() {
                plan.actions.push(Action::Expunge {
                    task_id: task.id.clone(),
                });
            } else if !task.kill_requested {
                plan.actions.push(Action::Kill {
                    task_id: task.id.clone(),
                });
            }
        }
    }
    plan
}

fn config_version(task: &Task) -> u64 {
    match task.owner {
        TaskOwner::Service {
            config_version_ms, ..
        } => config_version_ms,
        _ => 0,
    }
}

/// A task that counts as serving: running, healthy when it has health checks (no result
/// yet is not healthy, as in Marathon), and ready once when it has a readiness check.
pub fn ready(task: &Task) -> bool {
    task.state == TaskState::Running
        && (task.launch.health_checks.is_empty() || task.health.as_ref().is_some_and(|h| h.alive))
        && (task.launch.readiness_checks.is_empty()
            || task.readiness.as_ref().is_some_and(|r| r.ready))
}

/// Orders tasks for killing: not yet running first, then by Marathon's `killSelection`
/// (`YOUNGEST_FIRST`, the default, or `OLDEST_FIRST`), ties by id.
fn sort_for_killing(tasks: &mut [&Task], kill_selection: &str) {
    let oldest_first = kill_selection == "OLDEST_FIRST";
    tasks.sort_by_key(|t| {
        let age = if oldest_first {
            t.staged_at_ms
        } else {
            u64::MAX - t.staged_at_ms
        };
        (ready(t), age, t.id.clone())
    });
}

/// An app's tasks as a rolling change sees them. "Old" tasks are of an earlier config or on
/// a draining agent; "new" ones of the current config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub old_ready: usize,
    /// Old tasks not running yet: killed at once, they serve no one.
    pub old_starting: usize,
    /// Old tasks asked to stop that have not ended: they still hold their place.
    pub old_dying: usize,
    pub new_alive: usize,
    pub new_ready: usize,
}

/// What one planning round of an app does: kill this many ready old tasks (besides every old
/// one not running yet) and launch this many new ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub kill_ready_old: usize,
    pub launch: usize,
}

/// Marathon's upgrade strategy, one round at a time. Ready tasks (old and new) never drop
/// below `ceil(instances × minimumHealthCapacity)` through kills; tasks alive or dying never
/// exceed `floor(instances × (1 + maximumOverCapacity))`, except that one extra task may
/// start when nothing else could move (Marathon's "get the ball rolling" for
/// minimumHealthCapacity 1 with maximumOverCapacity 0). Without old tasks it is a plain
/// scale: launch what is missing.
pub fn rolling_step(instances: usize, strategy: &UpgradeStrategy, counts: Counts) -> Step {
    let missing = instances.saturating_sub(counts.new_alive);
    let old_total = counts.old_ready + counts.old_starting + counts.old_dying;
    if old_total == 0 {
        return Step {
            kill_ready_old: 0,
            launch: missing,
        };
    }
    let n = instances as f64;
    let min_healthy = (n * strategy.minimum_health_capacity - 1e-9)
        .ceil()
        .max(0.0) as usize;
    let max_total = (n * (1.0 + strategy.maximum_over_capacity) + 1e-9).floor() as usize;
    let healthy = counts.old_ready + counts.new_ready;
    let kill_ready_old = counts.old_ready.min(healthy.saturating_sub(min_healthy));
    // Killed tasks hold their place until they end.
    let total = old_total + counts.new_alive;
    let mut launch = missing.min(max_total.saturating_sub(total));
    let in_flight = counts.old_dying + counts.old_starting + (counts.new_alive - counts.new_ready);
    if launch == 0 && kill_ready_old == 0 && missing > 0 && in_flight == 0 {
        launch = 1;
    }
    Step {
        kill_ready_old,
        launch,
    }
}

fn plan_app(
    app: &AppRecord,
    tasks: &[&Task],
    draining: &BTreeSet<String>,
    held: bool,
    input: &PlanInput,
    pool: &mut Pool,
    plan: &mut Plan,
) {
    let instances = app.spec.instances as usize;
    // Unreachable tasks neither count (they are replaced) nor get killed (no agent to tell);
    // `returning_tasks` decides their fate when their agent is back.
    let exhausted = |t: &Task| t.health.as_ref().is_some_and(|h| h.exhausted);
    // An unreachable task holds its place for the app's `inactiveAfterSeconds` (Marathon's
    // unreachableStrategy; "disabled" and the default 0 replace it at once).
    // Past `expungeAfterSeconds` (when given) it is forgotten; its agent, if it ever comes
    // back, is told to kill it. With 0 (the default) the record stays until the agent
    // returns or is removed, and `returning_tasks` sorts it out.
    let (inactive_after_ms, expunge_after_ms) = match app.spec.unreachable_strategy {
        UnreachableStrategy::Enabled {
            inactive_after_seconds,
            expunge_after_seconds,
        } => (
            inactive_after_seconds.saturating_mul(1000),
            (expunge_after_seconds > 0).then(|| expunge_after_seconds.saturating_mul(1000)),
        ),
        UnreachableStrategy::Disabled(_) => (0, None),
    };
    let unreachable_for = |t: &Task, ms: u64| {
        t.state == TaskState::Unreachable && input.now_ms >= t.updated_at_ms.saturating_add(ms)
    };
    let replaceable = |t: &Task| unreachable_for(t, inactive_after_ms);
    for task in tasks {
        if expunge_after_ms.is_some_and(|ms| unreachable_for(task, ms)) {
            plan.actions.push(Action::Expunge {
                task_id: task.id.clone(),
            });
        }
    }
    // A task that failed its health checks for good is killed and replaced, within the
    // round's budget of such kills; one over budget keeps its place (and is not replaced)
    // until a later round.
    let budget = input
        .unhealthy_kills_max
        .saturating_sub(plan.unhealthy.len());
    let unhealthy: Vec<&Task> = tasks
        .iter()
        .copied()
        .filter(|t| !t.state.is_terminal() && !t.kill_requested && exhausted(t))
        .take(budget)
        .collect();
    plan.unhealthy
        .extend(unhealthy.iter().map(|t| t.id.clone()));
    let active: Vec<&Task> = tasks
        .iter()
        .copied()
        .filter(|t| {
            !t.state.is_terminal()
                && !t.kill_requested
                && !replaceable(t)
                && !unhealthy.iter().any(|u| u.id == t.id)
        })
        .collect();
    // Tasks of an older config and tasks on draining agents are replaced alike, at the pace
    // of the app's upgradeStrategy (`rolling_step`).
    let (mut current, mut old): (Vec<&Task>, Vec<&Task>) = active.iter().partition(|t| {
        config_version(t) == app.config_version_ms && !draining.contains(&t.agent_id)
    });
    let old_dying = tasks
        .iter()
        .filter(|t| {
            t.kill_requested
                && !t.state.is_terminal()
                && (config_version(t) != app.config_version_ms || draining.contains(&t.agent_id))
        })
        .count();
    let step = rolling_step(
        instances,
        &app.spec.upgrade_strategy,
        Counts {
            old_ready: old.iter().filter(|t| ready(t)).count(),
            old_starting: old.iter().filter(|t| !ready(t)).count(),
            old_dying,
            new_alive: current.len(),
            new_ready: current.iter().filter(|t| ready(t)).count(),
        },
    );

    let launches_left = input.launches_max.saturating_sub(plan.launches);
    if step.launch > 0 && launches_left > 0 && !held {
        let waiting =
            input.now_ms < app.last_failure_at_ms + backoff_ms(&app.spec, app.consecutive_failures);
        if !waiting {
            let image = app.spec.image().map(|i| (input.image_key)(i));
            let wanted = app.spec.requested_ports();
            let constraints: Vec<Constraint> = app
                .spec
                .constraints
                .iter()
                .filter_map(|raw| Constraint::parse(raw))
                .collect();
            // Where the app's live tasks are, for the constraints that count them.
            let mut spread = match constraints.is_empty() {
                true => Spread::default(),
                false => Spread::of(
                    &constraints,
                    active.iter().filter_map(|t| pool.agent(&t.agent_id)),
                ),
            };
            for _ in 0..step.launch.min(launches_left) {
                let ask = Ask {
                    resources: app.spec.resources(),
                    ports: &wanted,
                    image: image.as_deref(),
                    constraints: &constraints,
                    spread: Some(&spread),
                };
                match pool.place(&ask) {
                    Ok(placed) => {
                        if let Some(agent) = pool.agent(&placed.agent_id) {
                            spread.add(&constraints, agent);
                        }
                        plan.launches += 1;
                        plan.actions.push(Action::Launch {
                            app_id: app.spec.id.clone(),
                            agent_id: placed.agent_id,
                            ports: placed.ports,
                        })
                    }
                    Err(passed_over) => {
                        plan.unplaced.insert(app.spec.id.clone(), passed_over);
                        break;
                    }
                }
            }
        }
    }
    if current.len() > instances {
        // Tasks that are not running yet go first, then as the app's killSelection says.
        sort_for_killing(&mut current, &app.spec.kill_selection);
        for task in &current[..current.len() - instances] {
            plan.actions.push(Action::Kill {
                task_id: task.id.clone(),
            });
        }
    }
    sort_for_killing(&mut old, &app.spec.kill_selection);
    let (starting, ready_old): (Vec<&Task>, Vec<&Task>) = old.iter().partition(|t| !ready(t));
    for task in starting
        .iter()
        .chain(ready_old.iter().take(step.kill_ready_old))
    {
        plan.actions.push(Action::Kill {
            task_id: task.id.clone(),
        });
    }

    let mut ended: Vec<&Task> = tasks
        .iter()
        .copied()
        .filter(|t| t.state.is_terminal())
        .collect();
    ended.sort_by_key(|t| (std::cmp::Reverse(t.updated_at_ms), t.id.clone()));
    for task in ended.iter().skip(ENDED_TASKS_KEPT_PER_APP) {
        plan.actions.push(Action::Expunge {
            task_id: task.id.clone(),
        });
    }
}

/// An unreachable agent is back: which of its TASK_UNREACHABLE service tasks keep their
/// place and which were replaced meanwhile and must be killed, so an instance never runs
/// twice. Per app, the live tasks elsewhere count first; the returning tasks fill what is
/// left, oldest first. Tasks of removed apps and tasks asked to die are killed. Tasks of
/// other owners are neither: their frameworks decide. Returns `(keep, kill)`, each sorted
/// by task id.
pub fn returning_tasks(state: &ClusterState, agent_id: &str) -> (Vec<String>, Vec<String>) {
    let mut returning: Vec<(&str, &Task)> = state
        .tasks
        .values()
        .filter(|t| t.agent_id == agent_id && t.state == TaskState::Unreachable)
        .filter_map(|t| Some((t.owner.service_app()?, t)))
        .collect();
    returning.sort_by_key(|(_, t)| (t.staged_at_ms, t.id.clone()));
    let mut places: BTreeMap<&str, usize> = BTreeMap::new();
    for (app_id, app) in &state.services.apps {
        let elsewhere = state
            .tasks_of_app(app_id)
            .filter(|t| {
                !t.state.is_terminal() && t.state != TaskState::Unreachable && !t.kill_requested
            })
            .count();
        places.insert(
            app_id.as_str(),
            (app.spec.instances as usize).saturating_sub(elsewhere),
        );
    }
    let (mut keep, mut kill) = (Vec::new(), Vec::new());
    for (app_id, task) in returning {
        match places.get_mut(app_id) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Outcome, Reject};
    use crate::placement::WhyNot;
    use crate::state::tests::{agent, app, cluster, task};
    use crate::types::AgentState;

    fn set_state(s: &mut ClusterState, id: &str, state: TaskState, at_ms: u64) {
        s.apply(&Command::TaskStatus {
            task_id: id.into(),
            state,
            at_ms,
            message: None,
            exit_code: None,
            output: None,
        });
    }

    #[test]
    fn a_round_places_at_most_its_launch_budget_and_the_rest_waits_unreported() {
        let s = cluster(&[("a1", 64_000, 64 * 1024)], &[("/a", 3), ("/b", 2)]);
        let launched = |plan: &Plan| -> Vec<String> {
            plan.actions
                .iter()
                .filter_map(|a| match a {
                    Action::Launch { app_id, .. } => Some(app_id.clone()),
                    _ => None,
                })
                .collect()
        };
        let capped = plan(
            &s,
            &PlanInput {
                launches_max: 4,
                ..PlanInput::at(10)
            },
        );
        assert_eq!(launched(&capped), ["/a", "/a", "/a", "/b"]);
        assert_eq!(capped.launches, 4);
        assert!(capped.unplaced.is_empty(), "a budget is no reason to wait");
        let none = plan(
            &s,
            &PlanInput {
                launches_max: 0,
                ..PlanInput::at(10)
            },
        );
        assert!(none.actions.is_empty() && none.unplaced.is_empty());
        assert_eq!(plan(&s, &PlanInput::at(10)).launches, 5);
    }

    #[test]
    fn a_task_whose_health_checks_are_exhausted_is_replaced_and_counts_as_a_failure() {
        let mut s = cluster(&[("a1", 4000, 1024)], &[("/web", 1)]);
        let mut launched = task("t1", "/web", "a1", 1);
        launched.launch.health_checks = vec![crate::types::TaskHealthCheck {
            protocol: "tcp".into(),
            port: 31000,
            path: None,
            grace_period_seconds: 0,
            interval_seconds: 1,
            timeout_seconds: 1,
            max_consecutive_failures: 3,
            delay_seconds: 0,
            ignore_http1xx: false,
            command: None,
        }];
        s.apply(&Command::LaunchTask { task: launched });
        set_state(&mut s, "t1", TaskState::Running, 5);
        let health = |alive: bool, exhausted: bool| crate::types::TaskHealth {
            alive,
            consecutive_failures: u32::from(!alive) * 3,
            exhausted,
            first_success_ms: None,
            last_success_ms: None,
            last_failure_ms: None,
            last_failure_cause: Some("GET / answered 503".into()),
        };
        s.apply(&Command::TaskHealth {
            task_id: "t1".into(),
            health: health(false, false),
            at_ms: 6,
        });
        let plan_now = plan(&s, &PlanInput::at(10));
        assert!(plan_now.unhealthy.is_empty() && plan_now.actions.is_empty());
        s.apply(&Command::TaskHealth {
            task_id: "t1".into(),
            health: health(false, true),
            at_ms: 7,
        });
        assert_eq!(
            s.services.apps["/web"].consecutive_failures, 1,
            "counts for the backoff"
        );
        let replan = plan(&s, &PlanInput::at(7 + 1_000));
        assert_eq!(replan.unhealthy, vec!["t1".to_string()]);
        assert!(
            matches!(replan.actions.as_slice(), [Action::Launch { .. }]),
            "{:?}",
            replan.actions
        );
        assert!(
            plan(&s, &PlanInput::at(500)).actions.is_empty(),
            "after the backoff only"
        );
        // Over the cap on health kills: it keeps its place and is not replaced yet.
        let capped = plan(
            &s,
            &PlanInput {
                unhealthy_kills_max: 0,
                ..PlanInput::at(7 + 1_000)
            },
        );
        assert!(
            capped.unhealthy.is_empty() && capped.actions.is_empty(),
            "{capped:?}"
        );
    }

    #[test]
    fn constraints_decide_where_instances_go_and_say_why_not() {
        let mut s = cluster(&[("a1", 4000, 1024), ("a2", 4000, 1024)], &[]);
        for (id, agent) in s.agents.iter_mut() {
            agent.hostname = format!("{id}.example");
        }
        let mut web = app("/web", 3);
        web.constraints = vec![vec!["hostname".into(), "UNIQUE".into()]];
        s.apply(&Command::PutApp {
            app: web,
            create: true,
            at_ms: 1,
            deployment_id: "d".into(),
        });
        let planned = plan(&s, &PlanInput::at(10));
        let agents: Vec<&str> = planned
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Launch { agent_id, .. } => Some(agent_id.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(agents.len(), 2, "{agents:?}");
        assert_ne!(agents[0], agents[1], "one per host");
        let why = &planned.unplaced["/web"];
        assert!(
            why.iter().all(|p| p.reasons
                == vec![WhyNot::Constraint {
                    constraint: "[hostname, UNIQUE]".into()
                }]),
            "{why:?}"
        );
    }

    #[test]
    fn an_app_waits_for_its_dependencies_to_converge_before_launching() {
        let mut s = cluster(&[("a1", 4000, 1024)], &[("/shop/db", 1)]);
        let mut web = app("/shop/web", 2);
        web.dependencies = vec!["/shop/db".into()];
        s.apply(&Command::PutApp {
            app: web,
            create: true,
            at_ms: 2,
            deployment_id: "d2".into(),
        });
        let launched = |s: &ClusterState| -> Vec<String> {
            plan(s, &PlanInput::at(10))
                .actions
                .into_iter()
                .filter_map(|a| match a {
                    Action::Launch { app_id, .. } => Some(app_id),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(launched(&s), vec!["/shop/db"]);
        s.apply(&Command::LaunchTask {
            task: task("db1", "/shop/db", "a1", 1),
        });
        assert_eq!(launched(&s), Vec::<String>::new(), "db is not running yet");
        set_state(&mut s, "db1", TaskState::Running, 5);
        assert_eq!(launched(&s), vec!["/shop/web", "/shop/web"]);
    }

    #[test]
    fn launches_missing_instances_on_the_freest_agent() {
        let s = cluster(&[("a1", 4000, 256), ("a2", 4000, 512)], &[("/web", 3)]);
        assert_eq!(
            plan(&s, &PlanInput::at(100)).actions,
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
        assert_eq!(
            plan(&s, &PlanInput::at(100)).actions.len(),
            2,
            "0.5 cpu x 2 fills the agent"
        );
    }

    #[test]
    fn ports_are_chosen_per_agent_and_never_twice() {
        let mut s = cluster(&[("a1", 40000, 10240)], &[]);
        let mut spec = app("/web", 4);
        spec.port_definitions = vec![
            crate::services::app::PortDefinition {
                port: 0,
                name: None,
                protocol: "tcp".into(),
                labels: Default::default(),
            },
            crate::services::app::PortDefinition {
                port: 31005,
                name: None,
                protocol: "tcp".into(),
                labels: Default::default(),
            },
        ];
        // The ports are host ports (without it they are service ports).
        spec.require_ports = true;
        s.apply(&Command::PutApp {
            app: spec,
            create: true,
            at_ms: 1,
            deployment_id: "d".into(),
        });
        let launches = plan(&s, &PlanInput::at(10)).actions;
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
        assert_eq!(plan(&s, &PlanInput::at(100)).actions, vec![]);
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
            plan(&s, &PlanInput::at(100)).actions,
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
        assert_eq!(plan(&s, &PlanInput::at(1500)).actions, vec![]);
        assert_eq!(plan(&s, &PlanInput::at(2000)).actions.len(), 1);
        let spec = &s.services.apps["/web"].spec;
        assert_eq!(backoff_ms(spec, 1), 1000);
        assert_eq!(backoff_ms(spec, 3), 1322); // 1 s × 1.15²
        assert_eq!(backoff_ms(spec, 400), 300_000);
        let mut doubling = spec.clone();
        doubling.backoff_factor = 2.0;
        doubling.max_launch_delay_seconds = 60.0;
        assert_eq!(backoff_ms(&doubling, 3), 4000);
        assert_eq!(backoff_ms(&doubling, 40), 60_000);
    }

    /// `/web` at 1 ms with one running task (config 1), then changed at 10 ms to a config
    /// with `deadline` seconds (deployment "e") whose task never comes.
    fn stuck_deployment(deadline: Option<u32>) -> ClusterState {
        let mut s = cluster(&[("a1", 4000, 1024)], &[("/web", 1)]);
        s.apply(&Command::LaunchTask {
            task: task("old", "/web", "a1", 1),
        });
        set_state(&mut s, "old", TaskState::Running, 5);
        let mut changed = app("/web", 1);
        changed.cmd = Some("sleep 7".into());
        changed.progress_deadline_seconds = deadline;
        s.apply(&Command::PutApp {
            app: changed,
            create: false,
            at_ms: 10,
            deployment_id: "e".into(),
        });
        s
    }

    #[test]
    fn a_deployment_past_its_deadline_is_rolled_back_once() {
        let s = stuck_deployment(Some(2));
        assert!(
            plan(&s, &PlanInput::at(2_009)).overdue.is_empty(),
            "not yet"
        );
        let overdue = plan(&s, &PlanInput::at(2_010)).overdue;
        assert_eq!(overdue.len(), 1);
        assert_eq!(
            (
                overdue[0].app_id.as_str(),
                overdue[0].deployment_id.as_str()
            ),
            ("/web", "e")
        );
        assert!(
            overdue[0].reason.contains("had not finished 2 s later"),
            "{}",
            overdue[0].reason
        );
        assert!(stuck_deployment(None).services.apps["/web"]
            .rolled_back
            .is_none());
        assert!(
            plan(&stuck_deployment(None), &PlanInput::at(1_000_000))
                .overdue
                .is_empty(),
            "no deadline, no rollback"
        );

        // The rollback: the old definition is back, under a new deployment, with the reason.
        let mut s = s;
        let rollback = |failed: &str, id: &str, at_ms| Command::RollBack {
            app_id: "/web".into(),
            failed_deployment_id: failed.into(),
            at_ms,
            deployment_id: id.into(),
            reason: Some(overdue[0].reason.clone()),
        };
        assert_eq!(s.apply(&rollback("e", "r", 2_020)), Outcome::Applied);
        let record = &s.services.apps["/web"];
        assert_eq!(record.spec.cmd.as_deref(), Some("sleep 100"));
        assert_eq!(
            (record.deployment_id.as_str(), record.version_ms),
            ("r", 2_020)
        );
        let rolled = record.rolled_back.as_ref().unwrap();
        assert_eq!(
            (
                rolled.failed_deployment_id.as_str(),
                rolled.deployment_id.as_str()
            ),
            ("e", "r")
        );
        // Said twice (a second round before the first was applied): refused, nothing changes.
        assert_eq!(
            s.apply(&rollback("e", "r2", 2_030)),
            Outcome::Rejected(Reject::DeploymentNotUnderWay {
                app_id: "/web".into(),
                deployment_id: "e".into()
            })
        );
        // The rollback is a new version (its task replaces the old one), itself never
        // rolled back by the framework.
        assert!(plan(&s, &PlanInput::at(1_000_000)).overdue.is_empty());
    }

    #[test]
    fn a_deployment_that_finished_is_not_rolled_back_when_a_task_is_lost_later() {
        let mut s = stuck_deployment(Some(2));
        s.apply(&Command::LaunchTask {
            task: task("new", "/web", "a1", 10),
        });
        set_state(&mut s, "new", TaskState::Running, 500);
        // Converged (the old task still runs beside it until killed, so kill it).
        s.apply(&Command::KillTask {
            task_id: "old".into(),
            at_ms: 600,
        });
        set_state(&mut s, "old", TaskState::Killed, 700);
        assert_eq!(s.services.apps["/web"].finished_deployment_id, "e");
        // Long after the deadline the new task fails: a crash, not a late deployment.
        set_state(&mut s, "new", TaskState::Failed, 60_000);
        let later = plan(&s, &PlanInput::at(61_000));
        assert!(later.overdue.is_empty(), "{:?}", later.overdue);
        assert_eq!(later.launches, 1, "replaced as usual");
        assert_eq!(
            s.apply(&Command::RollBack {
                app_id: "/web".into(),
                failed_deployment_id: "e".into(),
                at_ms: 60_002,
                deployment_id: "r".into(),
                reason: Some("late".into()),
            }),
            Outcome::Rejected(Reject::DeploymentNotUnderWay {
                app_id: "/web".into(),
                deployment_id: "e".into()
            }),
            "nor by a late proposal"
        );
    }

    #[test]
    fn a_restart_or_an_app_held_back_by_its_dependencies_is_not_rolled_back() {
        let mut s = stuck_deployment(Some(2));
        // The change converged, then a restart that cannot finish (its task never comes).
        s.apply(&Command::LaunchTask {
            task: task("new", "/web", "a1", 10),
        });
        set_state(&mut s, "new", TaskState::Running, 500);
        s.apply(&Command::KillTask {
            task_id: "old".into(),
            at_ms: 600,
        });
        s.apply(&Command::RestartApp {
            app_id: "/web".into(),
            at_ms: 1_000,
            deployment_id: "restart".into(),
        });
        assert!(
            plan(&s, &PlanInput::at(100_000)).overdue.is_empty(),
            "a restart"
        );

        // A changed app waiting for a dependency that never runs.
        let mut s = stuck_deployment(Some(2));
        s.apply(&Command::PutApp {
            app: app("/db", 1),
            create: true,
            at_ms: 11,
            deployment_id: "db".into(),
        });
        let mut web = s.services.apps["/web"].spec.clone();
        web.dependencies = vec!["/db".into()];
        web.cmd = Some("sleep 9".into());
        s.apply(&Command::PutApp {
            app: web,
            create: false,
            at_ms: 12,
            deployment_id: "e2".into(),
        });
        let round = plan(
            &s,
            &PlanInput {
                connected: &|_| false,
                ..PlanInput::at(100_000)
            },
        );
        assert!(round.overdue.is_empty(), "{:?}", round.overdue);
    }

    #[test]
    fn a_rollback_the_framework_made_is_not_rolled_back_in_turn() {
        let mut s = stuck_deployment(Some(2));
        // The task of the old config is gone too: the rollback cannot finish either.
        set_state(&mut s, "old", TaskState::Failed, 11);
        s.apply(&Command::RollBack {
            app_id: "/web".into(),
            failed_deployment_id: "e".into(),
            at_ms: 2_010,
            deployment_id: "r".into(),
            reason: Some("late".into()),
        });
        assert!(
            !plan(&s, &PlanInput::at(1_000_000)).actions.is_empty(),
            "it goes on trying"
        );
        assert!(plan(&s, &PlanInput::at(1_000_000)).overdue.is_empty());
        // A change the user makes afterwards has its deadline again.
        let mut again = s.services.apps["/web"].spec.clone();
        again.cmd = Some("sleep 8".into());
        again.progress_deadline_seconds = Some(2);
        s.apply(&Command::PutApp {
            app: again,
            create: false,
            at_ms: 3_000,
            deployment_id: "f".into(),
        });
        assert_eq!(plan(&s, &PlanInput::at(5_000)).overdue.len(), 1);
    }

    #[test]
    fn an_apps_first_deployment_has_nothing_to_roll_back_to() {
        let mut s = cluster(&[("a1", 4000, 1024)], &[]);
        let mut first = app("/new", 1);
        first.progress_deadline_seconds = Some(1);
        s.apply(&Command::PutApp {
            app: first,
            create: true,
            at_ms: 1,
            deployment_id: "d".into(),
        });
        assert!(plan(&s, &PlanInput::at(60_000)).overdue.is_empty());
        let rollback = |reason: Option<String>| Command::RollBack {
            app_id: "/new".into(),
            failed_deployment_id: "d".into(),
            at_ms: 5,
            deployment_id: "r".into(),
            reason,
        };
        assert_eq!(
            s.apply(&rollback(Some("late".into()))),
            Outcome::Rejected(Reject::NothingToRollBackTo {
                app_id: "/new".into()
            }),
            "the framework never removes an app"
        );
        // A user's rollback of it (DELETE /v2/deployments/d) removes it, as Marathon does.
        assert_eq!(s.apply(&rollback(None)), Outcome::Applied);
        assert!(s.services.apps.is_empty());
    }

    #[test]
    fn a_rollback_of_a_scale_scales_back_and_keeps_the_tasks() {
        let mut s = stuck_deployment(None);
        s.apply(&Command::ScaleApp {
            app_id: "/web".into(),
            instances: 3,
            at_ms: 20,
            deployment_id: "s".into(),
        });
        let config = s.services.apps["/web"].config_version_ms;
        assert_eq!(
            s.apply(&Command::RollBack {
                app_id: "/web".into(),
                failed_deployment_id: "s".into(),
                at_ms: 30,
                deployment_id: "r".into(),
                reason: None,
            }),
            Outcome::Applied
        );
        let record = &s.services.apps["/web"];
        assert_eq!(
            (record.spec.instances, record.config_version_ms),
            (1, config)
        );
        assert!(
            record.rolled_back.is_none(),
            "a user's rollback is not recorded as ours"
        );
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
            plan(&s, &PlanInput::at(20)).actions,
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
            plan(&s, &PlanInput::at(20)).actions,
            vec![],
            "old keeps running until the new one runs"
        );
        set_state(&mut s, "new", TaskState::Running, 25);
        assert_eq!(
            plan(&s, &PlanInput::at(30)).actions,
            vec![Action::Kill {
                task_id: "old".into()
            }]
        );
    }

    #[test]
    fn a_new_task_with_a_readiness_check_replaces_an_old_one_only_once_ready() {
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
        let mut new = task("new", "/web", "a1", 10);
        new.launch.readiness_checks = vec![crate::types::TaskReadinessCheck {
            name: "readinessCheck".into(),
            protocol: "http".into(),
            port: 8080,
            path: "/".into(),
            interval_seconds: 30,
            timeout_seconds: 10,
            ready_statuses: vec![200],
            preserve_last_response: false,
        }];
        s.apply(&Command::LaunchTask { task: new });
        set_state(&mut s, "new", TaskState::Running, 25);
        assert_eq!(
            plan(&s, &PlanInput::at(30)).actions,
            vec![],
            "running is not ready"
        );
        let result = |ready: bool| crate::types::TaskReadiness {
            name: "readinessCheck".into(),
            ready,
            last_response: None,
        };
        s.apply(&Command::TaskReadiness {
            task_id: "new".into(),
            readiness: result(false),
        });
        assert_eq!(plan(&s, &PlanInput::at(31)).actions, vec![]);
        s.apply(&Command::TaskReadiness {
            task_id: "new".into(),
            readiness: result(true),
        });
        assert_eq!(
            plan(&s, &PlanInput::at(32)).actions,
            vec![Action::Kill {
                task_id: "old".into()
            }]
        );
        // Ready once is ready: a later "not ready" (an agent restarted its checks) is kept out.
        s.apply(&Command::TaskReadiness {
            task_id: "new".into(),
            readiness: result(false),
        });
        assert!(s.tasks["new"].readiness.as_ref().is_some_and(|r| r.ready));
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
        assert_eq!(
            plan(&s, &PlanInput::at(10)).actions,
            vec![],
            "kill already requested by RemoveApp"
        );
        set_state(&mut s, "t1", TaskState::Killed, 11);
        assert_eq!(
            plan(&s, &PlanInput::at(12)).actions,
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
        let expunged: Vec<_> = plan(&s, &PlanInput::at(200)).actions;
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
        assert_eq!(plan(&s, &PlanInput::at(20)).actions, vec![]);

        let outcome = s.apply(&Command::MarkAgentUnreachable {
            agent_id: "a1".into(),
            at_ms: 30,
        });
        assert_eq!(outcome, Outcome::Applied);
        assert_eq!(s.agents["a1"].state, AgentState::Unreachable);
        assert!(s.tasks.values().all(|t| t.state == TaskState::Unreachable));
        // A status update cannot make a task unreachable; only the agent's mark does.
        // Both instances are replaced on a2, and nothing is killed on the silent agent.
        let actions = plan(&s, &PlanInput::at(40)).actions;
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
        // A report recorded while a1 is still silent (sent before it went) changes nothing.
        set_state(&mut s, "t1", TaskState::Running, 55);
        assert_eq!(s.tasks["t1"].state, TaskState::Unreachable);
        // a1 registers again; its report brings t1 back to RUNNING.
        let mut back = s.agents["a1"].clone();
        back.state = AgentState::Active;
        s.apply(&Command::RegisterAgent { agent: back });
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
    fn an_unreachable_task_holds_its_place_for_inactive_after_seconds() {
        let mut s = cluster(&[("a1", 4000, 1024), ("a2", 4000, 512)], &[]);
        let mut web = app("/web", 1);
        web.unreachable_strategy = UnreachableStrategy::Enabled {
            inactive_after_seconds: 5,
            expunge_after_seconds: 10,
        };
        s.apply(&Command::PutApp {
            app: web,
            create: true,
            at_ms: 1,
            deployment_id: "d".into(),
        });
        s.apply(&Command::LaunchTask {
            task: task("t1", "/web", "a1", 1),
        });
        set_state(&mut s, "t1", TaskState::Running, 10);
        s.apply(&Command::MarkAgentUnreachable {
            agent_id: "a1".into(),
            at_ms: 1_000,
        });
        assert_eq!(plan(&s, &PlanInput::at(5_999)).actions, vec![], "not yet");
        let actions = plan(&s, &PlanInput::at(6_000)).actions;
        assert!(
            matches!(actions.as_slice(), [Action::Launch { agent_id, .. }] if agent_id == "a2"),
            "{actions:?}"
        );
        // After expungeAfterSeconds the record goes, and with it what it held on a1.
        let actions = plan(&s, &PlanInput::at(11_000)).actions;
        assert_eq!(
            actions[0],
            Action::Expunge {
                task_id: "t1".into()
            }
        );
        assert_eq!(s.held_on("a1").0, task("t1", "/web", "a1", 1).resources);
        assert_eq!(
            s.apply(&Command::ExpungeTask {
                task_id: "t1".into()
            }),
            Outcome::Applied
        );
        assert!(!s.tasks.contains_key("t1"));
        assert_eq!(s.held_on("a1").0, Default::default());
        assert!(s.invariant_violations().is_empty());
        // When a1 returns, the forgotten task is not kept (the master kills what it does
        // not know).
        assert_eq!(returning_tasks(&s, "a1"), (vec![], vec![]));
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
            plan(&s, &PlanInput::at(10)).actions,
            vec![Action::Launch {
                app_id: "/web".into(),
                agent_id: "a2".into(),
                ports: vec![],
            }]
        );
        s.apply(&Command::LaunchTask {
            task: task("t2", "/web", "a2", 1),
        });
        assert!(
            plan(&s, &PlanInput::at(11)).actions.is_empty(),
            "t1 stays until t2 runs"
        );
        // Then stop: once t2 runs, t1 is killed.
        set_state(&mut s, "t2", TaskState::Running, 12);
        assert_eq!(
            plan(&s, &PlanInput::at(13)).actions,
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

    #[test]
    fn tasks_of_other_owners_are_neither_refused_nor_killed_nor_counted() {
        let mut s = cluster(&[("a1", 4000, 1024)], &[("/web", 1)]);
        // The job run the first task belongs to.
        let backup = serde_json::from_value(serde_json::json!({
            "id": "backup", "run": {"cmd": "true", "cpus": 0.1, "mem": 16}
        }))
        .unwrap();
        for command in [
            Command::PutJob {
                job: backup,
                create: true,
                at_ms: 1,
                if_version_ms: None,
            },
            Command::StartRun {
                job_id: "backup".into(),
                run_id: "r1".into(),
                workflow_id: "r1".into(),
                trigger: crate::jobs::state::Trigger::Manual,
                arguments: vec![],
                at_ms: 1,
            },
            // The external framework the second task belongs to.
            Command::SubscribeFramework {
                framework: crate::mesos::state::FrameworkRecord {
                    id: "spark".into(),
                    name: "spark".into(),
                    user: "nobody".into(),
                    role: "*".into(),
                    principal: None,
                    hostname: None,
                    capabilities: vec![],
                    failover_timeout_ms: 0,
                    registered_ms: 0,
                    disconnected_ms: None,
                },
                resubscribe: false,
                at_ms: 1,
            },
        ] {
            assert_eq!(s.apply(&command), Outcome::Applied);
        }
        let owners = [
            TaskOwner::JobRun {
                job_id: "backup".into(),
                run_id: "r1".into(),
            },
            TaskOwner::Framework {
                framework_id: "spark".into(),
            },
        ];
        for (i, owner) in owners.into_iter().enumerate() {
            let mut t = task(&format!("other{i}"), "/web", "a1", 1);
            t.owner = owner;
            assert_eq!(s.apply(&Command::LaunchTask { task: t }), Outcome::Applied);
        }
        set_state(&mut s, "other0", TaskState::Running, 2);
        // /web still needs its own instance; the others are not killed as orphans.
        assert_eq!(
            plan(&s, &PlanInput::at(10)).actions,
            vec![Action::Launch {
                app_id: "/web".into(),
                agent_id: "a1".into(),
                ports: vec![],
            }]
        );
        // Ended, they are not expunged by this framework either.
        set_state(&mut s, "other0", TaskState::Finished, 11);
        assert!(plan(&s, &PlanInput::at(12))
            .actions
            .iter()
            .all(|a| !matches!(a, Action::Expunge { .. } | Action::Kill { .. })));
        // Back from unreachable: not this framework's to keep or kill.
        s.apply(&Command::MarkAgentUnreachable {
            agent_id: "a1".into(),
            at_ms: 13,
        });
        assert_eq!(returning_tasks(&s, "a1"), (vec![], vec![]));
        // Removing /web leaves them alone.
        s.apply(&Command::RemoveApp {
            app_id: "/web".into(),
            at_ms: 14,
        });
        assert!(!s.tasks["other1"].kill_requested);
    }

    #[test]
    fn an_image_app_goes_only_where_the_image_is_and_says_why_it_waits() {
        let mut s = cluster(&[("a1", 4000, 1024), ("a2", 4000, 2048)], &[]);
        let mut with_image = agent("a1", 4000, 1024);
        with_image
            .images
            .insert("docker.io/library/busybox:latest".into());
        s.apply(&Command::RegisterAgent { agent: with_image });
        let mut spec: crate::services::app::AppSpec = serde_json::from_value(serde_json::json!({
            "id": "/web", "cpus": 1, "mem": 512, "instances": 3,
            "container": {"docker": {"image": "busybox"}}
        }))
        .unwrap();
        spec.normalize_and_validate().unwrap();
        s.apply(&Command::PutApp {
            app: spec,
            create: true,
            at_ms: 1,
            deployment_id: "d".into(),
        });
        let normalize = |image: &str| format!("docker.io/library/{image}:latest");
        let input = PlanInput {
            now_ms: 10,
            connected: &|_| true,
            image_key: &normalize,
            unhealthy_kills_max: usize::MAX,
            launches_max: usize::MAX,
        };
        let plan = plan(&s, &input);
        // a2 is freer but has no busybox; a1 has room for two.
        assert_eq!(plan.actions.len(), 2);
        assert!(plan
            .actions
            .iter()
            .all(|a| matches!(a, Action::Launch { agent_id, .. } if agent_id == "a1")));
        let waiting = &plan.unplaced["/web"];
        assert_eq!(waiting.len(), 2);
        assert_eq!(
            waiting[1].reasons,
            vec![crate::placement::WhyNot::ImageMissing {
                image: "docker.io/library/busybox:latest".into()
            }]
        );
        assert!(matches!(
            waiting[0].reasons[0],
            crate::placement::WhyNot::Insufficient { .. }
        ));
    }

    fn strategy(minimum_health_capacity: f64, maximum_over_capacity: f64) -> UpgradeStrategy {
        UpgradeStrategy {
            minimum_health_capacity,
            maximum_over_capacity,
        }
    }

    fn counts(old_ready: usize, new_alive: usize, new_ready: usize) -> Counts {
        Counts {
            old_ready,
            old_starting: 0,
            old_dying: 0,
            new_alive,
            new_ready,
        }
    }

    #[test]
    fn the_first_round_of_a_rolling_change_follows_each_strategy_corner() {
        // (minimumHealthCapacity, maximumOverCapacity) -> first step for 4 ready old tasks.
        let cases = [
            (
                (1.0, 1.0),
                Step {
                    kill_ready_old: 0,
                    launch: 4,
                },
            ),
            (
                (1.0, 0.0),
                Step {
                    kill_ready_old: 0,
                    launch: 1,
                },
            ), // the ball gets rolling
            (
                (0.5, 1.0),
                Step {
                    kill_ready_old: 2,
                    launch: 4,
                },
            ),
            (
                (0.5, 0.0),
                Step {
                    kill_ready_old: 2,
                    launch: 0,
                },
            ), // the killed still hold places
            (
                (0.0, 1.0),
                Step {
                    kill_ready_old: 4,
                    launch: 4,
                },
            ),
            (
                (0.0, 0.0),
                Step {
                    kill_ready_old: 4,
                    launch: 0,
                },
            ),
        ];
        for ((mhc, moc), expected) in cases {
            assert_eq!(
                rolling_step(4, &strategy(mhc, moc), counts(4, 0, 0)),
                expected,
                "minimumHealthCapacity {mhc}, maximumOverCapacity {moc}"
            );
        }
        // A plain scale (no old tasks) ignores the strategy.
        assert_eq!(
            rolling_step(4, &strategy(1.0, 0.0), counts(0, 1, 1)),
            Step {
                kill_ready_old: 0,
                launch: 3
            }
        );
        // 5 × 0.5 rounds up: 3 must stay ready.
        assert_eq!(
            rolling_step(5, &strategy(0.5, 0.0), counts(5, 0, 0)).kill_ready_old,
            2
        );
    }

    /// Runs a rolling change of `n` ready old tasks to the end, one round at a time: what a
    /// round launches is starting the next round and ready the one after; what it kills is
    /// dying the next round and gone after. Returns the rounds taken, checking in each one
    /// that kills never leave fewer ready tasks than the strategy keeps, and that no more
    /// tasks exist than it allows.
    fn roll(n: usize, mhc: f64, moc: f64) -> usize {
        #[derive(Clone, Copy, PartialEq)]
        enum S {
            Starting,
            Ready,
            Dying,
        }
        let strategy = strategy(mhc, moc);
        let min_healthy = (n as f64 * mhc - 1e-9).ceil() as usize;
        let max_total = ((n as f64 * (1.0 + moc)) + 1e-9).floor() as usize;
        let mut old = vec![S::Ready; n];
        let mut new: Vec<S> = Vec::new();
        for round in 1..=10 * n + 10 {
            let count = |v: &[S], s: S| v.iter().filter(|x| **x == s).count();
            let counts = Counts {
                old_ready: count(&old, S::Ready),
                old_starting: count(&old, S::Starting),
                old_dying: count(&old, S::Dying),
                new_alive: new.len(),
                new_ready: count(&new, S::Ready),
            };
            if counts.old_ready + counts.old_dying + counts.old_starting == 0
                && counts.new_ready == n
            {
                return round;
            }
            let step = rolling_step(n, &strategy, counts);
            let mut to_kill = step.kill_ready_old;
            for task in old.iter_mut() {
                if *task == S::Ready && to_kill > 0 {
                    *task = S::Dying;
                    to_kill -= 1;
                }
            }
            new.extend(std::iter::repeat_n(S::Starting, step.launch));
            let ready = count(&old, S::Ready) + count(&new, S::Ready);
            assert!(
                ready >= min_healthy.min(n),
                "{n} instances, ({mhc}, {moc}), round {round}: {ready} ready"
            );
            let total = old.len() + new.len();
            assert!(
                total <= max_total.max(n + 1),
                "{n} instances, ({mhc}, {moc}), round {round}: {total} tasks"
            );
            // The world moves on.
            old.retain(|t| *t != S::Dying);
            for task in old.iter_mut().chain(new.iter_mut()) {
                if *task == S::Starting {
                    *task = S::Ready;
                }
            }
        }
        panic!(
            "{n} instances, ({mhc}, {moc}): no end after {} rounds",
            10 * n + 10
        );
    }

    #[test]
    fn every_strategy_corner_keeps_its_bounds_and_finishes() {
        for n in 1..=7 {
            for mhc in [0.0, 0.5, 1.0] {
                for moc in [0.0, 1.0] {
                    roll(n, mhc, moc);
                }
            }
        }
        // Minimum health 1 without room above: one new task at a time, five kill-start pairs.
        assert!(roll(5, 1.0, 0.0) > 5);
        // Room for all: start five, then stop the five old ones.
        assert_eq!(roll(5, 1.0, 1.0), 3);
    }
}

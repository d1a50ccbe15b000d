//! The jobs framework's planner: (cluster state, now) -> what to decide and launch. Pure;
//! the framework's shell turns the actions into commands (with run ids it makes) and
//! tasks (placed by the shared placement).
//!
//! Every scheduled instant after a job's cursor and not after `now` is decided in order:
//! started (late, within the job's window) or skipped with the reason, under the job's
//! concurrency policy, counting the runs this round starts. A dependent job starts when its
//! parents have all succeeded since it last started. A run waiting for an attempt's task
//! (`Starting`) gets one once its retry delay is over; an attempt running past the job's
//! longest duration is stopped.

use super::policy::{on_due, Due, SkipReason};
use super::schedule::{Cron, Iso8601Schedule};
use super::state::{JobRecord, RunStatus, ScheduleKind, Trigger};
use crate::state::ClusterState;
use std::collections::BTreeMap;

/// Most scheduled instants one round decides per job: a job missed for long (a cluster
/// down for a day with a job every second) is caught up over several rounds.
pub const INSTANTS_PER_ROUND_MAX: usize = 1_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobAction {
    /// Start a run (`workflow_id`: the chain it continues, for a dependent run).
    Start {
        job_id: String,
        trigger: Trigger,
        workflow_id: Option<String>,
    },
    /// These scheduled instants do not run.
    Skip {
        job_id: String,
        first_ms: u64,
        last_ms: u64,
        count: u64,
        reason: SkipReason,
    },
    /// Stop a run (REPLACE, or its attempt ran too long).
    Stop { run_id: String },
    /// Give a run's waiting attempt its task, on `agent_id`.
    Launch { run_id: String, agent_id: String },
    /// Forget an ended task of a finished run (the newest `TASKS_KEPT_PER_JOB` stay).
    Expunge { task_id: String },
}

/// Ended tasks of finished runs kept per job (for `job logs` and the dashboard).
pub const TASKS_KEPT_PER_JOB: usize = 5;

/// What the planner needs besides the state, from its shell.
pub struct JobsInput<'a> {
    pub now_ms: u64,
    /// Agents a launch can reach now.
    pub connected: &'a dyn Fn(&crate::types::Agent) -> bool,
    /// An image reference as the presence key agents report.
    pub image_key: &'a dyn Fn(&str) -> String,
}

/// The scheduled instants of `record` after its cursor, up to `now_ms`, at most
/// `INSTANTS_PER_ROUND_MAX`; `Err` when its schedule does not parse (refused at submission,
/// so only a definition from an older version could).
pub fn due_instants(record: &JobRecord, now_ms: u64) -> Result<Vec<u64>, String> {
    let Some(schedule) = &record.spec.schedule else {
        return Ok(Vec::new());
    };
    let mut due = Vec::new();
    let after = record.decided_through_ms;
    match &schedule.kind {
        ScheduleKind::Iso8601(text) => {
            let iso = Iso8601Schedule::parse(text, &schedule.time_zone)?;
            let Some((mut k, mut at)) = iso.first_at_or_after(after.saturating_add(1)) else {
                return Ok(due);
            };
            while at <= now_ms && due.len() < INSTANTS_PER_ROUND_MAX {
                due.push(at);
                k += 1;
                match iso.instant(k) {
                    Some(next) => at = next,
                    None => break,
                }
            }
        }
        ScheduleKind::Cron(text) => {
            let cron = Cron::parse(text)?;
            let tz = super::schedule::time_zone(&schedule.time_zone)?;
            let mut t = after;
            while due.len() < INSTANTS_PER_ROUND_MAX {
                match cron.next_after(&tz, t) {
                    Some(at) if at <= now_ms => {
                        due.push(at);
                        t = at;
                    }
                    _ => break,
                }
            }
        }
    }
    Ok(due)
}

/// One planning round of the jobs framework.
pub fn plan(state: &ClusterState, input: &JobsInput) -> Vec<JobAction> {
    let now_ms = input.now_ms;
    let jobs = &state.jobs;
    let mut actions = Vec::new();
    let mut active: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for run in jobs.runs.values() {
        active
            .entry(run.job_id.as_str())
            .or_default()
            .push(run.id.clone());
    }
    for (job_id, record) in &jobs.jobs {
        let Some(schedule) = &record.spec.schedule else {
            continue;
        };
        let Ok(due) = due_instants(record, now_ms) else {
            continue;
        };
        let window_ms = schedule.starting_deadline_seconds.saturating_mul(1_000);
        let mut running: Vec<String> = active.get(job_id.as_str()).cloned().unwrap_or_default();
        let mut skipped: Option<(u64, u64, u64, SkipReason)> = None;
        let flush = |skipped: &mut Option<(u64, u64, u64, SkipReason)>,
                     actions: &mut Vec<JobAction>| {
            if let Some((first_ms, last_ms, count, reason)) = skipped.take() {
                actions.push(JobAction::Skip {
                    job_id: job_id.clone(),
                    first_ms,
                    last_ms,
                    count,
                    reason,
                });
            }
        };
        for at in due {
            let decision = if record.spec.disabled || !schedule.enabled {
                Due::Skip(SkipReason::Disabled)
            } else {
                on_due(at, now_ms, window_ms, schedule.concurrency, &running)
            };
            match decision {
                Due::Skip(reason) => {
                    // Runs of instants skipped for one reason make one record.
                    match &mut skipped {
                        Some((_, last, count, same))
                            if std::mem::discriminant(same) == std::mem::discriminant(&reason) =>
                        {
                            *last = at;
                            *count += 1;
                        }
                        _ => {
                            flush(&mut skipped, &mut actions);
                            skipped = Some((at, at, 1, reason));
                        }
                    }
                }
                Due::Start | Due::StartReplacing(_) => {
                    flush(&mut skipped, &mut actions);
                    if let Due::StartReplacing(replaced) = &decision {
                        for run_id in replaced {
                            actions.push(JobAction::Stop {
                                run_id: run_id.clone(),
                            });
                        }
                        running.clear();
                    }
                    actions.push(JobAction::Start {
                        job_id: job_id.clone(),
                        trigger: Trigger::Schedule { at_ms: at },
                        workflow_id: None,
                    });
                    // A run started this round counts for the next instant's policy.
                    running.push(format!("{job_id}@{at}"));
                }
            }
        }
        flush(&mut skipped, &mut actions);
    }
    // Dependent jobs whose parents have all succeeded since they last started.
    for (job_id, record) in &jobs.jobs {
        if record.spec.parents.is_empty()
            || record.spec.disabled
            || active.contains_key(job_id.as_str())
        {
            continue;
        }
        let last_success =
            |parent: &str| jobs.jobs.get(parent).and_then(|p| p.stats.last_success_ms);
        if super::dag::ready(&record.spec.parents, record.last_started_ms, &last_success) {
            // The chain continues the workflow of the parent that succeeded last.
            let workflow_id = record
                .spec
                .parents
                .iter()
                .filter_map(|p| jobs.jobs.get(p))
                .filter_map(|p| {
                    p.history
                        .iter()
                        .rev()
                        .find(|r| r.status == RunStatus::Success)
                })
                .max_by_key(|r| r.completed_ms)
                .map(|r| r.workflow_id.clone());
            actions.push(JobAction::Start {
                job_id: job_id.clone(),
                trigger: Trigger::Parents,
                workflow_id,
            });
        }
    }
    // Runs: attempts waiting for a task, attempts running too long.
    let mut pool = crate::placement::Pool::new(state, input.connected);
    for run in jobs.runs.values() {
        let Some(record) = jobs.jobs.get(&run.job_id) else {
            continue;
        };
        match run.status {
            RunStatus::Starting if !run.stop_requested && run.ready_at_ms <= now_ms => {
                let image = record.spec.run.image.as_deref().map(input.image_key);
                let constraints = record.spec.run.placement_constraints();
                let ask = crate::placement::Ask {
                    resources: record.spec.run.resources(),
                    ports: &[],
                    image: image.as_deref(),
                    constraints: &constraints,
                    spread: None,
                };
                // Unplaced, it waits for the next round.
                if let Ok(placed) = pool.place(&ask) {
                    actions.push(JobAction::Launch {
                        run_id: run.id.clone(),
                        agent_id: placed.agent_id,
                    });
                }
            }
            RunStatus::Active if !run.stop_requested => {
                let started = run
                    .task_ids
                    .last()
                    .and_then(|t| state.tasks.get(t))
                    .and_then(|t| t.started_at_ms);
                let limit = record.spec.run.max_duration_seconds;
                if let (Some(started), Some(limit)) = (started, limit) {
                    if now_ms.saturating_sub(started) > limit.saturating_mul(1_000) {
                        actions.push(JobAction::Stop {
                            run_id: run.id.clone(),
                        });
                    }
                }
            }
            _ => {}
        }
    }
    // Ended tasks of finished runs, beyond the newest few per job.
    let mut ended: BTreeMap<&str, Vec<&crate::types::Task>> = BTreeMap::new();
    for task in state.tasks.values() {
        if let crate::types::TaskOwner::JobRun { job_id, run_id } = &task.owner {
            if task.state.is_terminal() && !jobs.runs.contains_key(run_id) {
                ended.entry(job_id.as_str()).or_default().push(task);
            }
        }
    }
    for tasks in ended.values_mut() {
        tasks.sort_by_key(|t| std::cmp::Reverse((t.updated_at_ms, t.id.as_str())));
        for task in tasks.iter().skip(TASKS_KEPT_PER_JOB) {
            actions.push(JobAction::Expunge {
                task_id: task.id.clone(),
            });
        }
    }
    actions
}

/// The task of `run`'s current attempt on `agent_id`: the job's command (with a manual
/// run's `arguments` appended, shell-quoted), resources, image and user, and the variables
/// Chronos gives its tasks (`CHRONOS_JOB_NAME`, `CHRONOS_JOB_RUN_ATTEMPT`, ...) plus this
/// system's (`DCOS_JOB_ID`, `DCOS_JOB_RUN_ID`, and `DCOS_JOB_SCHEDULED_AT` for a scheduled
/// run).
pub fn build_task(
    record: &JobRecord,
    run: &super::state::JobRun,
    agent_id: &str,
    task_id: String,
    now_ms: u64,
) -> crate::types::Task {
    let spec = &record.spec.run;
    let quote = |a: &String| format!("'{}'", a.replace('\'', r"'\''"));
    let cmd = spec.cmd.as_ref().map(|cmd| match run.arguments.is_empty() {
        true => cmd.clone(),
        false => {
            let args: Vec<String> = run.arguments.iter().map(quote).collect();
            format!("{cmd} {}", args.join(" "))
        }
    });
    let mut env = spec.env.clone();
    env.insert("CHRONOS_JOB_NAME".into(), record.spec.id.clone());
    env.insert("CHRONOS_JOB_RUN_ATTEMPT".into(), run.attempt.to_string());
    env.insert("CHRONOS_JOB_RUN_TIME".into(), crate::time::iso8601(now_ms));
    env.insert("DCOS_JOB_ID".into(), record.spec.id.clone());
    env.insert("DCOS_JOB_RUN_ID".into(), run.id.clone());
    if let Trigger::Schedule { at_ms } = run.trigger {
        // The instant the run is for (it may start late).
        env.insert("DCOS_JOB_SCHEDULED_AT".into(), crate::time::iso8601(at_ms));
    }
    crate::types::Task {
        id: task_id,
        owner: crate::types::TaskOwner::JobRun {
            job_id: record.spec.id.clone(),
            run_id: run.id.clone(),
        },
        agent_id: agent_id.to_string(),
        resources: spec.resources(),
        launch: crate::types::LaunchSpec {
            cmd,
            args: spec.args.clone(),
            env,
            image: spec.image.clone(),
            user: spec.user.clone(),
            kill_grace_period_ms: 3_000,
            volumes: Vec::new(),
            network: Default::default(),
            user_namespace: false,
            health_checks: Vec::new(),
            fetch: spec.fetch.clone(),
            readiness_checks: Vec::new(),
            output_tail_bytes: crate::types::OUTPUT_TAIL_MAX_BYTES as u64,
        },
        state: crate::types::TaskState::Staging,
        kill_requested: false,
        staged_at_ms: now_ms,
        started_at_ms: None,
        updated_at_ms: now_ms,
        message: None,
        exit_code: None,
        ports: Vec::new(),
        health: None,
        readiness: None,
    }
}

/// A task id for attempt `attempt` (from 1) of run `run_id` of `job_id`: Chronos's parts
/// (`ct:<epoch ms>:<attempt from 0>:<job>`) joined by dots, as task ids name sandbox
/// directories (letters, digits, `.`, `-`, `_`), then the run's id, which makes it unique.
pub fn task_id(job_id: &str, run_id: &str, attempt: u32, now_ms: u64) -> String {
    let safe = |s: &str| -> String {
        s.chars()
            .map(
                |c| match c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                    true => c,
                    false => '_',
                },
            )
            .collect()
    };
    format!(
        "ct.{now_ms}.{}.{}.{}",
        attempt.saturating_sub(1),
        safe(job_id),
        safe(run_id)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Outcome};
    use crate::jobs::policy::Concurrency;
    use crate::jobs::state::{JobSpec, RunSpec, ScheduleSpec};

    const T0: u64 = 1_798_761_600_000; // 2027-01-01T00:00:00Z

    fn at(now_ms: u64) -> JobsInput<'static> {
        JobsInput {
            now_ms,
            connected: &|_| true,
            image_key: &|image| image.to_string(),
        }
    }

    fn spec(id: &str, schedule: Option<(&str, Concurrency)>, parents: &[&str]) -> JobSpec {
        let mut job: JobSpec = serde_json::from_value(serde_json::json!({
            "id": id, "run": {"cmd": "true", "cpus": 0.1, "mem": 16}
        }))
        .unwrap();
        job.schedule = schedule.map(|(text, concurrency)| ScheduleSpec {
            id: "default".into(),
            kind: if text.starts_with('R') {
                ScheduleKind::Iso8601(text.into())
            } else {
                ScheduleKind::Cron(text.into())
            },
            time_zone: "UTC".into(),
            starting_deadline_seconds: 10,
            concurrency,
            enabled: true,
        });
        job.parents = parents.iter().map(|p| p.to_string()).collect();
        job
    }

    fn state_with(jobs: &[JobSpec], at_ms: u64) -> ClusterState {
        let mut s = ClusterState::default();
        s.apply(&Command::RegisterAgent {
            agent: crate::state::tests::agent("a1", 4_000, 4_096),
        });
        for job in jobs {
            let put = Command::PutJob {
                job: job.clone(),
                create: true,
                at_ms,
                if_version_ms: None,
            };
            assert_eq!(s.apply(&put), Outcome::Applied);
        }
        s
    }

    /// The shell's part in tests: each action as its command (run ids from a counter).
    fn perform(s: &mut ClusterState, actions: &[JobAction], now_ms: u64, next_id: &mut u32) {
        for action in actions {
            let command = match action {
                JobAction::Start {
                    job_id,
                    trigger,
                    workflow_id,
                } => {
                    *next_id += 1;
                    let run_id = format!("run{next_id}");
                    Command::StartRun {
                        job_id: job_id.clone(),
                        workflow_id: workflow_id.clone().unwrap_or_else(|| run_id.clone()),
                        run_id,
                        trigger: trigger.clone(),
                        arguments: vec![],
                        at_ms: now_ms,
                    }
                }
                JobAction::Skip {
                    job_id,
                    first_ms,
                    last_ms,
                    count,
                    reason,
                } => Command::SkipRuns {
                    job_id: job_id.clone(),
                    first_ms: *first_ms,
                    last_ms: *last_ms,
                    count: *count,
                    reason: reason.clone(),
                },
                JobAction::Stop { run_id } => Command::StopRun {
                    run_id: run_id.clone(),
                    at_ms: now_ms,
                },
                JobAction::Launch { .. } | JobAction::Expunge { .. } => continue,
            };
            assert_eq!(s.apply(&command), Outcome::Applied, "{command:?}");
        }
    }

    fn starts(actions: &[JobAction]) -> Vec<u64> {
        actions
            .iter()
            .filter_map(|a| match a {
                JobAction::Start {
                    trigger: Trigger::Schedule { at_ms },
                    ..
                } => Some(*at_ms),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn every_instant_runs_once_whatever_the_rounds_and_a_repeated_round_changes_nothing() {
        let job = spec(
            "tick",
            Some(("R/2027-01-01T00:00:00Z/PT2S", Concurrency::Allow)),
            &[],
        );
        let mut s = state_with(&[job], T0 - 1);
        let mut ids = 0;
        let mut started = Vec::new();
        // Rounds at uneven times, some twice at the same time (a new leader's first round).
        for now in [
            T0,
            T0 + 1_500,
            T0 + 1_500,
            T0 + 4_100,
            T0 + 9_999,
            T0 + 10_000,
            T0 + 10_000,
        ] {
            let actions = plan(&s, &at(now));
            started.extend(starts(&actions));
            perform(&mut s, &actions, now, &mut ids);
        }
        let expected: Vec<u64> = (0..=5).map(|k| T0 + k * 2_000).collect();
        assert_eq!(started, expected);
        assert_eq!(s.jobs.jobs["tick"].decided_through_ms, T0 + 10_000);
    }

    #[test]
    fn instants_missed_beyond_the_window_are_skipped_in_one_record_and_the_rest_start_late() {
        let job = spec(
            "tick",
            Some(("R/2027-01-01T00:00:00Z/PT2S", Concurrency::Allow)),
            &[],
        );
        let mut s = state_with(&[job], T0 - 1);
        let mut ids = 0;
        // Nobody planned for 60 s: the window is 10 s.
        let now = T0 + 60_000;
        let actions = plan(&s, &at(now));
        assert_eq!(
            actions[0],
            JobAction::Skip {
                job_id: "tick".into(),
                first_ms: T0,
                last_ms: T0 + 48_000,
                count: 25,
                reason: SkipReason::Missed {
                    late_ms: 60_000,
                    window_ms: 10_000
                },
            }
        );
        assert_eq!(
            starts(&actions),
            (25..=30).map(|k| T0 + k * 2_000).collect::<Vec<_>>()
        );
        perform(&mut s, &actions, now, &mut ids);
        let after = plan(&s, &at(now));
        assert!(
            after.iter().all(|a| matches!(a, JobAction::Launch { .. })),
            "all decided, only the started runs' tasks to come: {after:?}"
        );
        assert_eq!(after.len(), 6);
        assert_eq!(s.jobs.jobs["tick"].skipped[0].count, 25);
    }

    #[test]
    fn forbid_skips_while_a_run_is_active_and_replace_stops_it() {
        let forbid = spec("f", Some(("* * * * *", Concurrency::Forbid)), &[]);
        let replace = spec("r", Some(("* * * * *", Concurrency::Replace)), &[]);
        let mut s = state_with(&[forbid, replace], T0 - 1);
        let mut ids = 0;
        let first = plan(&s, &at(T0));
        perform(&mut s, &first, T0, &mut ids);
        assert_eq!(s.jobs.runs.len(), 2);
        let next = plan(&s, &at(T0 + 60_000));
        assert!(next.iter().any(|a| matches!(a, JobAction::Skip { job_id, reason: SkipReason::StillRunning { .. }, .. } if job_id == "f")), "{next:?}");
        let replaced = s.jobs.active_runs("r")[0].id.clone();
        assert!(next.contains(&JobAction::Stop { run_id: replaced }));
        assert!(starts(&next).contains(&(T0 + 60_000)));
        perform(&mut s, &next, T0 + 60_000, &mut ids);
        assert_eq!(s.jobs.active_runs("f").len(), 1);
        assert_eq!(
            s.jobs.active_runs("r").len(),
            1,
            "the old one stopped, the new one waits"
        );
    }

    #[test]
    fn a_child_starts_once_both_parents_succeeded_and_continues_their_workflow() {
        let a = spec("a", None, &[]);
        let b = spec("b", None, &[]);
        let child = spec("child", None, &["a", "b"]);
        let mut s = state_with(&[a, b, child], T0);
        // Each a workflow of its own (a run's id): the child continues the workflow of the
        // parent that succeeded last.
        let manual = |job: &str, run: &str| Command::StartRun {
            job_id: job.into(),
            run_id: run.into(),
            workflow_id: run.into(),
            trigger: Trigger::Manual,
            arguments: vec![],
            at_ms: T0,
        };
        assert_eq!(s.apply(&manual("a", "ra")), Outcome::Applied);
        s.jobs.attempt_ended("ra", true, T0 + 10);
        assert!(plan(&s, &at(T0 + 20)).is_empty(), "b has not succeeded");
        assert_eq!(s.apply(&manual("b", "wf1")), Outcome::Applied);
        s.jobs.attempt_ended("wf1", true, T0 + 30);
        let actions = plan(&s, &at(T0 + 40));
        assert_eq!(
            actions,
            vec![JobAction::Start {
                job_id: "child".into(),
                trigger: Trigger::Parents,
                workflow_id: Some("wf1".into()),
            }]
        );
        let mut ids = 0;
        perform(&mut s, &actions, T0 + 40, &mut ids);
        // Started: it waits for both parents again.
        let again = plan(&s, &at(T0 + 50));
        assert!(
            again.iter().all(|a| !matches!(a, JobAction::Start { .. })),
            "{again:?}"
        );
    }

    #[test]
    fn a_waiting_attempt_gets_its_task_after_the_retry_delay_and_a_long_one_is_stopped() {
        let mut job = spec("slow", None, &[]);
        job.retries = 1;
        job.run.max_duration_seconds = Some(5);
        let mut s = state_with(&[job], T0);
        s.apply(&Command::StartRun {
            job_id: "slow".into(),
            run_id: "r".into(),
            workflow_id: "r".into(),
            trigger: Trigger::Manual,
            arguments: vec![],
            at_ms: T0,
        });
        assert_eq!(
            plan(&s, &at(T0)),
            vec![JobAction::Launch {
                run_id: "r".into(),
                agent_id: "a1".into()
            }]
        );
        // A first attempt that failed waits out the retry delay.
        s.jobs.runs.get_mut("r").unwrap().status = RunStatus::Active;
        s.jobs.attempt_ended("r", false, T0 + 100);
        let ready = s.jobs.runs["r"].ready_at_ms;
        assert!(ready > T0 + 100, "a delay before the retry");
        assert!(plan(&s, &at(ready - 1)).is_empty());
        assert_eq!(
            plan(&s, &at(ready)),
            vec![JobAction::Launch {
                run_id: "r".into(),
                agent_id: "a1".into()
            }]
        );
    }

    #[test]
    fn a_run_goes_only_where_its_constraints_allow_and_takes_its_artifacts() {
        let mut job = spec("placed", None, &[]);
        job.run.constraints = vec![RunSpec::constraint("rack", "EQUALS", "r2").unwrap()];
        job.run.fetch = vec![crate::types::TaskFetch {
            uri: "https://example.com/tool.tgz".into(),
            extract: true,
            executable: false,
            cache: true,
            output_file: None,
        }];
        let mut s = state_with(&[job], T0);
        for (id, rack) in [("a2", "r2"), ("a3", "r3")] {
            let mut agent = crate::state::tests::agent(id, 4_000, 8_192);
            agent.attributes.insert("rack".into(), rack.into());
            s.apply(&Command::RegisterAgent { agent });
        }
        let manual = |run_id: &str| Command::StartRun {
            job_id: "placed".into(),
            run_id: run_id.into(),
            workflow_id: run_id.into(),
            trigger: Trigger::Manual,
            arguments: vec![],
            at_ms: T0,
        };
        s.apply(&manual("r"));
        // a3 has the most free memory with a2, a1 has no rack: a2 it is.
        assert_eq!(
            plan(&s, &at(T0)),
            vec![JobAction::Launch {
                run_id: "r".into(),
                agent_id: "a2".into()
            }]
        );
        let task = build_task(
            &s.jobs.jobs["placed"],
            &s.jobs.runs["r"],
            "a2",
            "t".into(),
            T0,
        );
        assert_eq!(task.launch.fetch, s.jobs.jobs["placed"].spec.run.fetch);
        // A pattern no agent matches: it waits.
        s.jobs.jobs.get_mut("placed").unwrap().spec.run.constraints =
            vec![RunSpec::constraint("rack", "LIKE", "r[45]").unwrap()];
        assert!(plan(&s, &at(T0)).is_empty());
        assert!(RunSpec::constraint("rack", "UNIQUE", "").is_err());
        assert!(RunSpec::constraint("rack", "LIKE", "(").is_err());
    }

    #[test]
    fn a_disabled_job_skips_its_instants_and_does_not_run_them_all_when_enabled_again() {
        let mut job = spec(
            "off",
            Some(("R/2027-01-01T00:00:00Z/PT2S", Concurrency::Allow)),
            &[],
        );
        job.disabled = true;
        let mut s = state_with(&[job.clone()], T0 - 1);
        let mut ids = 0;
        let actions = plan(&s, &at(T0 + 4_000));
        assert!(
            matches!(
                actions[..],
                [JobAction::Skip {
                    count: 3,
                    reason: SkipReason::Disabled,
                    ..
                }]
            ),
            "{actions:?}"
        );
        perform(&mut s, &actions, T0 + 4_000, &mut ids);
        job.disabled = false;
        s.apply(&Command::PutJob {
            job,
            create: false,
            at_ms: T0 + 5_000,
            if_version_ms: None,
        });
        assert_eq!(starts(&plan(&s, &at(T0 + 6_000))), vec![T0 + 6_000]);
    }
}

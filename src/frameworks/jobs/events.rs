//! The jobs framework's events, on our own stream (`GET /cluster/v1/events`; never on
//! Marathon's, whose clients know only its event types), from the commands applied:
//!
//! - `job_created`, `job_updated` (`jobId`, `version`), `job_deleted` (`jobId`),
//!   `job_marked_successful` (Chronos's "mark successful": `jobId`, `at`);
//! - `job_run_started` (`jobId`, `runId`, `workflowId`, `trigger`: `schedule`, `manual` or
//!   `parents`, and `scheduledAt` for a scheduled one), `job_run_skipped` (`jobId`,
//!   `first`, `last`, `count`, `reason`);
//! - `job_run_task_launched` (`taskId`, `agentId`, `attempt`), `job_run_retrying` (an
//!   attempt failed and another follows at `readyAt`), `job_run_stop_requested`;
//! - `job_run_finished` or `job_run_failed` when a run ends (`attempt`, `exitCode`,
//!   `message` of its last attempt, `finishedAt`).
//!
//! Each event is read off the state after its batch of commands was applied, as Marathon's
//! are (`services::events`).

use crate::frameworks::events::{own_event, Event};
use dcos_core::jobs::state::{JobRun, RunStatus, Trigger};
use dcos_core::time::iso8601;
use dcos_core::{ClusterState, Command, Outcome, TaskOwner};
use dcos_raft::AppliedCommand;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Arc;

/// Attempt ends already told (a status sent again after its commit is applied again, and
/// would look the same): the latest `SEEN_MAX` (run, ends so far).
#[derive(Default)]
pub struct Seen {
    keys: BTreeSet<(String, usize)>,
    order: std::collections::VecDeque<(String, usize)>,
}

const SEEN_MAX: usize = 16_384;

impl Seen {
    /// Whether this attempt end of `run` is new (and remembers it).
    fn first(&mut self, run: &JobRun) -> bool {
        let key = (run.id.clone(), run.ends.len());
        if !self.keys.insert(key.clone()) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > SEEN_MAX {
            if let Some(old) = self.order.pop_front() {
                self.keys.remove(&old);
            }
        }
        true
    }
}

/// The events of a batch of applied commands, in order.
pub fn events_of(
    state: &ClusterState,
    batch: &[Arc<AppliedCommand>],
    seen: &mut Seen,
) -> Vec<Event> {
    let mut events = Vec::new();
    let ended = seen;
    for applied in batch {
        if applied.outcome != Outcome::Applied {
            continue;
        }
        match &applied.command {
            Command::PutJob {
                job, create, at_ms, ..
            } => events.push(own_event(
                if *create {
                    "job_created"
                } else {
                    "job_updated"
                },
                json!({ "jobId": job.id, "version": iso8601(*at_ms) }),
            )),
            Command::MarkJobSuccess { job_id, at_ms } => events.push(own_event(
                "job_marked_successful",
                json!({ "jobId": job_id, "at": iso8601(*at_ms) }),
            )),
            Command::RemoveJob { job_id, .. } => {
                events.push(own_event("job_deleted", json!({ "jobId": job_id })))
            }
            Command::StartRun {
                job_id,
                run_id,
                workflow_id,
                trigger,
                ..
            } => {
                let mut body = json!({
                    "jobId": job_id, "runId": run_id, "workflowId": workflow_id,
                    "trigger": trigger_name(trigger),
                });
                if let Trigger::Schedule { at_ms } = trigger {
                    body["scheduledAt"] = iso8601(*at_ms).into();
                }
                events.push(own_event("job_run_started", body));
            }
            Command::SkipRuns {
                job_id,
                first_ms,
                last_ms,
                count,
                reason,
            } => events.push(own_event(
                "job_run_skipped",
                json!({
                    "jobId": job_id, "first": iso8601(*first_ms), "last": iso8601(*last_ms),
                    "count": count, "reason": reason.to_string(),
                }),
            )),
            Command::StopRun { run_id, .. } => match state.jobs.runs.get(run_id) {
                Some(run) => events.push(own_event(
                    "job_run_stop_requested",
                    json!({ "jobId": run.job_id, "runId": run_id }),
                )),
                None => {
                    // Ended at once (it had no task): find it in its job's history.
                    let finished = state
                        .jobs
                        .jobs
                        .values()
                        .find_map(|job| job.history.iter().rev().find(|r| r.id == *run_id));
                    if let Some(run) = finished {
                        run_ended(run, ended, &mut events);
                    }
                }
            },
            Command::LaunchTask { task } => {
                if let TaskOwner::JobRun { job_id, run_id } = &task.owner {
                    let attempt = state.jobs.runs.get(run_id).map_or(0, |r| r.attempt);
                    events.push(own_event(
                        "job_run_task_launched",
                        json!({
                            "jobId": job_id, "runId": run_id, "taskId": task.id,
                            "agentId": task.agent_id, "attempt": attempt,
                        }),
                    ));
                }
            }
            Command::TaskStatus {
                task_id,
                state: task_state,
                at_ms,
                ..
            } if task_state.is_terminal() => {
                let Some(TaskOwner::JobRun { job_id, run_id }) =
                    state.tasks.get(task_id).map(|t| &t.owner)
                else {
                    continue;
                };
                // Only the status that ended an attempt (recorded with its time), not a
                // late copy or the end of an attempt replaced already.
                let ended_by = |run: &JobRun| {
                    run.ends
                        .iter()
                        .any(|e| e.task_id == *task_id && e.ended_ms == *at_ms)
                };
                if let Some(run) = state.jobs.runs.get(run_id) {
                    if run.status == RunStatus::Starting && ended_by(run) && ended.first(run) {
                        let end = run.ends.last();
                        events.push(own_event(
                            "job_run_retrying",
                            json!({
                                "jobId": job_id, "runId": run_id, "attempt": run.attempt,
                                "exitCode": end.and_then(|e| e.exit_code),
                                "message": end.and_then(|e| e.message.clone()),
                                "readyAt": iso8601(run.ready_at_ms),
                            }),
                        ));
                    }
                    continue;
                }
                let finished = state
                    .jobs
                    .jobs
                    .get(job_id)
                    .and_then(|job| job.history.iter().rev().find(|r| r.id == *run_id));
                if let Some(run) = finished.filter(|run| ended_by(run)) {
                    run_ended(run, ended, &mut events);
                }
            }
            _ => {}
        }
    }
    events
}

fn trigger_name(trigger: &Trigger) -> &'static str {
    match trigger {
        Trigger::Schedule { .. } => "schedule",
        Trigger::Manual => "manual",
        Trigger::Parents => "parents",
    }
}

fn run_ended(run: &JobRun, ended: &mut Seen, events: &mut Vec<Event>) {
    if !ended.first(run) {
        return;
    }
    let end = run.ends.last();
    let event_type = match run.status {
        RunStatus::Success => "job_run_finished",
        _ => "job_run_failed",
    };
    let body: Value = json!({
        "jobId": run.job_id, "runId": run.id, "workflowId": run.workflow_id,
        "trigger": trigger_name(&run.trigger), "attempt": run.attempt,
        "exitCode": end.and_then(|e| e.exit_code),
        "message": end.and_then(|e| e.message.clone()),
        "finishedAt": run.completed_ms.map(iso8601),
    });
    events.push(own_event(event_type, body));
}

//! The jobs framework (Chronos's and Metronome's scheduled jobs): its decisions are
//! `dcos_core::jobs::planner` (which instants run, which are skipped and why, dependent
//! jobs, retries, where a run's task goes); this shell makes the run and task ids, builds
//! the tasks and turns the planner's actions into proposals. Its HTTP APIs: Chronos's
//! (`chronos`) and Metronome's (`metronome`), over the same jobs.

pub mod chronos;
pub mod events;
pub mod metronome;

use crate::link::random_id;
use crate::master::{Framework, Proposal, Round};
use axum::response::IntoResponse;
use dcos_core::jobs::planner::{self, JobAction, JobsInput};
use dcos_core::{ClusterState, Command};

/// The jobs framework. It keeps nothing of its own: everything is in the replicated state.
#[derive(Default)]
pub struct Jobs;

/// A run id as Metronome makes them: the UTC time `yyyyMMddHHmmss` and 5 random letters or
/// digits (`20261203073700abc12`).
pub fn run_id(now_ms: u64) -> String {
    let time: String = dcos_core::time::iso8601(now_ms)
        .chars()
        .take(19)
        .filter(char::is_ascii_digit)
        .collect();
    let random: String = random_id()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(5)
        .collect();
    format!("{time}{random}")
}

/// Times a read-modify-write of a job is tried before it gives up (`NotModified::KeptChanging`).
pub const MODIFY_TRIES: usize = 5;

/// Why `modify_job` wrote nothing.
pub enum NotModified<E> {
    /// No such job.
    Missing,
    /// `change` refused the job as it was.
    Refused(E),
    Rejected(dcos_core::Reject),
    Raft(dcos_raft::RaftError),
    /// Other changes came between every read and its write.
    KeptChanging,
}

/// Writes what `change` makes of the job as it is now, only if nothing changed it since it
/// was read (`PutJob::if_version_ms`); a change that came between makes it read the job
/// again, up to `MODIFY_TRIES` times. So no API's read-modify-write of a job (a Metronome
/// schedule, a replace, a retention) undoes another written meanwhile.
pub async fn modify_job<E>(
    master: &crate::master::Master,
    id: &str,
    change: impl Fn(dcos_core::jobs::state::JobSpec) -> Result<dcos_core::jobs::state::JobSpec, E>,
) -> Result<(), NotModified<E>> {
    for _ in 0..MODIFY_TRIES {
        let read = master.read(|s| s.jobs.jobs.get(id).map(|r| (r.spec.clone(), r.version_ms)));
        let Some((current, version)) = read else {
            return Err(NotModified::Missing);
        };
        let command = Command::PutJob {
            job: change(current).map_err(NotModified::Refused)?,
            create: false,
            at_ms: crate::link::now_ms(),
            if_version_ms: Some(version),
        };
        match master.write(command).await {
            Ok(dcos_core::Outcome::Applied) => return Ok(()),
            Ok(dcos_core::Outcome::Rejected(dcos_core::Reject::JobChanged { .. })) => continue,
            Ok(dcos_core::Outcome::Rejected(reject)) => return Err(NotModified::Rejected(reject)),
            Err(e) => return Err(NotModified::Raft(e)),
        }
    }
    Err(NotModified::KeptChanging)
}

/// What a job holds that this framework keeps (and shows again) but does not act on, each
/// as a warning for the `Warning` header of the answer that wrote it. Values equal to the
/// APIs' defaults say nothing.
pub fn unhonoured(spec: &dcos_core::jobs::state::JobSpec) -> Vec<String> {
    use serde_json::{json, Value};
    let mut warnings = Vec::new();
    let mut check = |name: String, value: &Value, default: &[Value]| {
        let empty = matches!(value, Value::Null)
            || value.as_array().is_some_and(Vec::is_empty)
            || value.as_object().is_some_and(serde_json::Map::is_empty);
        if !empty && !default.contains(value) {
            warnings.push(format!("{name} is kept but not acted on by dcos-rs"));
        }
    };
    let chronos: [(&str, &[Value]); 8] = [
        ("shell", &[json!(true)]),
        ("executor", &[json!("")]),
        ("executorFlags", &[json!("")]),
        ("taskInfoData", &[json!("")]),
        ("highPriority", &[json!(false)]),
        ("dataProcessingJobType", &[json!(false)]),
        ("async", &[json!(false)]),
        ("dataJob", &[json!(false)]),
    ];
    for (key, default) in chronos {
        if let Some(value) = spec.kept.get(key) {
            check(key.to_string(), value, default);
        }
    }
    if let Some(Value::Object(run)) = spec.kept.get("metronome.run") {
        let metronome: [(&str, &[Value]); 7] = [
            ("gpus", &[json!(0), json!(0.0)]),
            ("maxLaunchDelay", &[json!(3600)]),
            ("ucr", &[]),
            ("volumes", &[]),
            ("taskKillGracePeriodSeconds", &[]),
            ("secrets", &[]),
            ("networks", &[]),
        ];
        for (key, default) in metronome {
            if let Some(value) = run.get(key) {
                check(format!("run.{key}"), value, default);
            }
        }
    }
    if let Some(Value::Object(docker)) = spec.kept.get("metronome.docker") {
        let defaults: [(&str, &[Value]); 3] = [
            ("forcePullImage", &[json!(false)]),
            ("privileged", &[json!(false)]),
            ("parameters", &[]),
        ];
        for (key, default) in defaults {
            if let Some(value) = docker.get(key) {
                check(format!("run.docker.{key}"), value, default);
            }
        }
    }
    warnings
}

/// The `Warning` headers of `warnings` (RFC 7234's miscellaneous persistent warning, as the
/// services framework sends them).
pub fn warning_headers(warnings: &[String]) -> axum::http::HeaderMap {
    let mut headers = axum::http::HeaderMap::new();
    for warning in warnings {
        let text = format!("299 dcos-rs \"{warning}\"").replace(['\r', '\n'], " ");
        if let Ok(value) = axum::http::HeaderValue::from_str(&text) {
            headers.append(axum::http::header::WARNING, value);
        }
    }
    headers
}

impl Framework for Jobs {
    fn name(&self) -> &'static str {
        "jobs"
    }

    fn plan(&self, state: &ClusterState, round: &Round) -> Vec<Proposal> {
        let now = round.now_ms;
        let input = JobsInput {
            now_ms: now,
            connected: round.connected,
            image_key: &super::services::image_key,
        };
        let mut proposals = Vec::new();
        for action in planner::plan(state, &input) {
            match action {
                JobAction::Start {
                    job_id,
                    trigger,
                    workflow_id,
                } => {
                    let run_id = run_id(now);
                    proposals.push(Proposal::Record(Box::new(Command::StartRun {
                        job_id,
                        workflow_id: workflow_id.unwrap_or_else(|| run_id.clone()),
                        run_id,
                        trigger,
                        arguments: Vec::new(),
                        at_ms: now,
                    })));
                }
                JobAction::Skip {
                    job_id,
                    first_ms,
                    last_ms,
                    count,
                    reason,
                } => {
                    tracing::info!(job = %job_id, count, "scheduled runs skipped: {reason}");
                    proposals.push(Proposal::Record(Box::new(Command::SkipRuns {
                        job_id,
                        first_ms,
                        last_ms,
                        count,
                        reason,
                    })));
                }
                JobAction::Stop { run_id } => {
                    let live = state
                        .jobs
                        .runs
                        .get(&run_id)
                        .and_then(|run| run.task_ids.last())
                        .filter(|id| state.tasks.get(*id).is_some_and(|t| !t.state.is_terminal()))
                        .cloned();
                    proposals.push(Proposal::Record(Box::new(Command::StopRun {
                        run_id,
                        at_ms: now,
                    })));
                    if let Some(task_id) = live {
                        proposals.push(Proposal::Kill { task_id });
                    }
                }
                JobAction::Launch { run_id, agent_id } => {
                    let Some(run) = state.jobs.runs.get(&run_id) else {
                        continue;
                    };
                    let Some(record) = state.jobs.jobs.get(&run.job_id) else {
                        continue;
                    };
                    let id = planner::task_id(&run.job_id, &run.id, run.attempt, now);
                    let task = planner::build_task(record, run, &agent_id, id, now);
                    proposals.push(Proposal::Launch(Box::new(task)));
                }
                JobAction::Expunge { task_id } => proposals.push(Proposal::Expunge { task_id }),
            }
        }
        proposals
    }

    /// A run's task is never replaced while its agent is away (the run waits for it).
    fn replaced_while_unreachable(&self, _state: &ClusterState, _agent_id: &str) -> Vec<String> {
        Vec::new()
    }
}

/// What `GET /cluster/v1/jobs` lists of a job (and `/cluster/v1/jobs/{id}` shows): its
/// schedule in words and its next run, parents, counts, and its latest run.
fn job_summary(
    record: &dcos_core::jobs::state::JobRecord,
    active: &[&dcos_core::jobs::state::JobRun],
    now_ms: u64,
) -> serde_json::Value {
    use dcos_core::jobs::describe;
    use dcos_core::time::iso8601;
    let spec = &record.spec;
    let schedule = spec.schedule.as_ref().map(|schedule| {
        let live = schedule.enabled && !spec.disabled;
        serde_json::json!({
            "id": schedule.id,
            "kind": match &schedule.kind {
                dcos_core::jobs::state::ScheduleKind::Cron(_) => "cron",
                dcos_core::jobs::state::ScheduleKind::Iso8601(_) => "iso8601",
            },
            "expression": match &schedule.kind {
                dcos_core::jobs::state::ScheduleKind::Cron(text)
                | dcos_core::jobs::state::ScheduleKind::Iso8601(text) => text,
            },
            "timeZone": schedule.time_zone,
            "concurrency": schedule.concurrency,
            "enabled": schedule.enabled,
            "text": describe::describe(schedule),
            "nextRunAt": live
                .then(|| describe::next_run(schedule, now_ms))
                .flatten()
                .map(iso8601),
        })
    });
    let active: Vec<&str> = active.iter().map(|r| r.id.as_str()).collect();
    let last = record.history.back().map(|run| {
        serde_json::json!({
            "id": run.id, "status": run.status,
            "finishedAt": run.completed_ms.map(iso8601),
        })
    });
    serde_json::json!({
        "id": spec.id,
        "description": spec.description,
        "disabled": spec.disabled,
        "schedule": schedule,
        "parents": spec.parents,
        "activeRuns": active,
        "lastRun": last,
        "successCount": record.stats.success_count,
        "errorCount": record.stats.error_count,
        "historyKept": spec.history_kept,
        "historyMaxAgeSeconds": spec.history_max_age_seconds,
    })
}

/// `POST /cluster/v1/jobs/{id}/runs`: a run now; with `{"workflowId": ...}` a step of that
/// workflow run again (the job must have run in it), so the jobs after it continue that
/// workflow and its succeeded parents do not run again. Answers 201 with the run's ids.
pub async fn start_run(
    axum::extract::State(master): axum::extract::State<std::sync::Arc<crate::master::Master>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    body: axum::body::Body,
) -> axum::response::Response {
    use crate::http_util::api_error;
    use dcos_api::ApiError;
    let body = match crate::http_util::read_body(body, BODY_MAX_BYTES).await {
        Ok(body) => body,
        Err(e) => return api_error(e),
    };
    let workflow = match serde_json::from_slice::<serde_json::Value>(&body) {
        _ if body.is_empty() => None,
        Ok(serde_json::Value::Object(object)) => match object.get("workflowId") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(w)) if !w.is_empty() => Some(w.clone()),
            Some(_) => {
                return api_error(ApiError::bad_request(
                    "workflowId must be a run's workflow id",
                ))
            }
        },
        Ok(_) | Err(_) => {
            return api_error(ApiError::bad_request(
                "the body is a JSON object: {} or {\"workflowId\": \"...\"}",
            ))
        }
    };
    let now = crate::link::now_ms();
    let run_id = run_id(now);
    let command = Command::StartRun {
        job_id: id.clone(),
        workflow_id: workflow.clone().unwrap_or_else(|| run_id.clone()),
        run_id: run_id.clone(),
        trigger: dcos_core::jobs::state::Trigger::Manual,
        arguments: Vec::new(),
        at_ms: now,
    };
    match master.write(command).await {
        Ok(dcos_core::Outcome::Applied) => {
            let body = serde_json::json!({
                "id": run_id,
                "jobId": id,
                "workflowId": workflow.unwrap_or_else(|| run_id.clone()),
            });
            (axum::http::StatusCode::CREATED, axum::Json(body)).into_response()
        }
        Ok(dcos_core::Outcome::Rejected(reject)) => {
            api_error(crate::master::http::reject_error(reject))
        }
        Err(e) => api_error(crate::master::http::raft_error(e)),
    }
}

/// Largest body of our jobs endpoints (a workflow id, a retention).
const BODY_MAX_BYTES: usize = 64 * 1024;

/// Longest `maxAgeSeconds` of a job's history: a year.
const HISTORY_AGE_MAX_SECONDS: u64 = 366 * 86_400;

/// `PUT /cluster/v1/jobs/{id}/history`: how much of the job's history is kept,
/// `{"runs": 1..=100, "maxAgeSeconds": 60..=31622400 | null}` (null: by count alone).
/// Neither Chronos's nor Metronome's job carries it; their writes keep it. Answers the job's
/// summary.
pub async fn set_retention(
    axum::extract::State(master): axum::extract::State<std::sync::Arc<crate::master::Master>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    body: axum::body::Body,
) -> axum::response::Response {
    use crate::http_util::api_error;
    use dcos_api::ApiError;
    use dcos_core::jobs::state::HISTORY_KEPT;
    let body = match crate::http_util::read_body(body, BODY_MAX_BYTES).await {
        Ok(body) => body,
        Err(e) => return api_error(e),
    };
    let bad = |message: String| api_error(ApiError::bad_request(message));
    let Ok(serde_json::Value::Object(object)) = serde_json::from_slice(&body) else {
        return bad(
            "the body is a JSON object: {\"runs\": n, \"maxAgeSeconds\": n or null}".into(),
        );
    };
    for key in object.keys() {
        if key != "runs" && key != "maxAgeSeconds" {
            return bad(format!(
                "unknown field {key:?}: give runs and maxAgeSeconds"
            ));
        }
    }
    let runs = match object.get("runs").map(serde_json::Value::as_u64) {
        Some(Some(n)) if (1..=HISTORY_KEPT as u64).contains(&n) => n as usize,
        _ => {
            return bad(format!(
                "runs must be a whole number from 1 to {HISTORY_KEPT}"
            ))
        }
    };
    let max_age = match object.get("maxAgeSeconds") {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => match v
            .as_u64()
            .filter(|s| (60..=HISTORY_AGE_MAX_SECONDS).contains(s))
        {
            Some(seconds) => Some(seconds),
            None => {
                return bad(format!(
                "maxAgeSeconds must be null or a whole number from 60 to {HISTORY_AGE_MAX_SECONDS}"
            ))
            }
        },
    };
    let written = modify_job(&master, &id, |mut spec| {
        spec.history_kept = runs;
        spec.history_max_age_seconds = max_age;
        Ok::<_, std::convert::Infallible>(spec)
    })
    .await;
    match written {
        Ok(()) => {
            let now = crate::link::now_ms();
            let view = master.read(|s| {
                s.jobs
                    .jobs
                    .get(&id)
                    .map(|r| job_summary(r, &s.jobs.active_runs(&id), now))
            });
            crate::http_util::json_ok(&view)
        }
        Err(NotModified::Missing) => {
            api_error(ApiError::not_found(format!("job {id} does not exist")))
        }
        Err(NotModified::Refused(never)) => match never {},
        Err(NotModified::Rejected(reject)) => api_error(crate::master::http::reject_error(reject)),
        Err(NotModified::Raft(e)) => api_error(crate::master::http::raft_error(e)),
        Err(NotModified::KeptChanging) => api_error(ApiError::conflict(format!(
            "job {id} kept changing while its retention was being set; retry"
        ))),
    }
}

/// `GET /cluster/v1/jobs`: every job, summed up (`job_summary`), by id.
pub async fn list_jobs(
    axum::extract::State(master): axum::extract::State<std::sync::Arc<crate::master::Master>>,
) -> axum::response::Response {
    let now = crate::link::now_ms();
    let jobs: Vec<serde_json::Value> = master.read(|s| {
        let active = s.jobs.active_by_job();
        s.jobs
            .jobs
            .values()
            .map(|record| {
                let runs = active
                    .get(record.spec.id.as_str())
                    .map_or(&[][..], Vec::as_slice);
                job_summary(record, runs, now)
            })
            .collect()
    });
    crate::http_util::json_ok(&serde_json::json!({ "jobs": jobs }))
}

/// `GET /cluster/v1/jobs/{id}`: what this system keeps of a job that Chronos's and
/// Metronome's objects cannot carry (their clients' shapes stay theirs): each finished
/// run's trigger and the scheduled instant it was for, how each attempt ended (agent, exit
/// code) and the end of the last one's output, and the instants skipped, with why.
pub async fn job_record(
    axum::extract::State(master): axum::extract::State<std::sync::Arc<crate::master::Master>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> axum::response::Response {
    use dcos_core::jobs::state::Trigger;
    use dcos_core::time::iso8601;
    let found = master.read(|s| {
        s.jobs.jobs.get(&id).map(|record| {
            let runs: Vec<serde_json::Value> = record
                .history
                .iter()
                .chain(s.jobs.active_runs(&id))
                .map(|run| {
                    serde_json::json!({
                        "id": run.id,
                        "workflowId": run.workflow_id,
                        "status": run.status,
                        "attempt": run.attempt,
                        "createdAt": iso8601(run.created_ms),
                        "scheduledAt": match run.trigger {
                            Trigger::Schedule { at_ms } => Some(iso8601(at_ms)),
                            _ => None,
                        },
                        "trigger": match run.trigger {
                            Trigger::Schedule { .. } => "schedule",
                            Trigger::Manual => "manual",
                            Trigger::Parents => "parents",
                        },
                        "finishedAt": run.completed_ms.map(iso8601),
                        "tasks": run.task_ids,
                        "attempts": run.ends.iter().map(|end| serde_json::json!({
                            "taskId": end.task_id,
                            "agentId": end.agent_id,
                            "state": end.state,
                            "exitCode": end.exit_code,
                            "message": end.message,
                            "startedAt": end.started_ms.map(iso8601),
                            "finishedAt": iso8601(end.ended_ms),
                        })).collect::<Vec<_>>(),
                        // Where its latest task's logs are read while it is known.
                        "agentUrl": run
                            .task_ids
                            .last()
                            .and_then(|id| s.tasks.get(id))
                            .and_then(|task| s.agents.get(&task.agent_id))
                            .map(|agent| agent.url.as_str()),
                        "stdout": run.output.as_ref().map(|o| o.stdout.as_str()),
                        "stderr": run.output.as_ref().map(|o| o.stderr.as_str()),
                    })
                })
                .collect();
            let skipped: Vec<serde_json::Value> = record
                .skipped
                .iter()
                .map(|skip| {
                    serde_json::json!({
                        "first": iso8601(skip.first_ms),
                        "last": iso8601(skip.last_ms),
                        "count": skip.count,
                        "reason": skip.reason.to_string(),
                    })
                })
                .collect();
            let mut view = job_summary(record, &s.jobs.active_runs(&id), crate::link::now_ms());
            view["runs"] = runs.into();
            view["skipped"] = skipped.into();
            view
        })
    });
    match found {
        Some(view) => crate::http_util::json_ok(&view),
        None => crate::http_util::api_error(dcos_api::ApiError::not_found(format!(
            "job {id} does not exist"
        ))),
    }
}

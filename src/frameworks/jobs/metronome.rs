//! Metronome's `/v1/jobs` API over the jobs framework (`../shared/COMPAT.md` §5), also
//! under `/service/metronome`: jobs with at most one cron schedule, runs, and the embeds
//! the DC/OS CLI asks for. Metronome's shapes and codes: 201 with the job or run, 409 for a
//! duplicate or a job with runs under way, 422 `{message: "Object is not valid", details}`
//! for an invalid job (unknown keys refused), 404 `{id, message}` for an unknown one, dates
//! `yyyy-MM-ddTHH:mm:ss.SSS+0000`. A job is the same job Chronos's API shows: one store.

// Helpers return Metronome's error answer as their error: it goes out as it is.
#![allow(clippy::result_large_err)]

use crate::http_util::json_ok;
use crate::link::now_ms;
use crate::master::http::raft_error;
use crate::master::Master;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use dcos_core::jobs::policy::Concurrency;
use dcos_core::jobs::state::{
    JobRecord, JobRun, JobSpec, RunSpec, RunStatus, ScheduleKind, ScheduleSpec, Trigger,
};
use dcos_core::types::TaskFetch;
use dcos_core::{Command, Outcome, Reject};
use serde_json::{json, Map, Value};
use std::sync::Arc;

const JOB_KEYS: &[&str] = &["id", "description", "labels", "run", "schedules"];
const RUN_KEYS: &[&str] = &[
    "cpus",
    "mem",
    "disk",
    "gpus",
    "cmd",
    "args",
    "user",
    "env",
    "placement",
    "artifacts",
    "maxLaunchDelay",
    "docker",
    "ucr",
    "volumes",
    "restart",
    "taskKillGracePeriodSeconds",
    "secrets",
    "networks",
];
/// What of `run` is kept as given and shown again (of it, only `restart` is acted on).
const RUN_KEPT: &[&str] = &[
    "gpus",
    "maxLaunchDelay",
    "ucr",
    "volumes",
    "restart",
    "taskKillGracePeriodSeconds",
    "secrets",
    "networks",
];
const SCHEDULE_KEYS: &[&str] = &[
    "id",
    "cron",
    "timezone",
    "startingDeadlineSeconds",
    "concurrencyPolicy",
    "enabled",
];
const EMBEDS: &[&str] = &["activeRuns", "schedules", "history", "historySummary"];

pub fn routes() -> Router<Arc<Master>> {
    let v1 = Router::new()
        .route("/v1/jobs", get(list).post(create))
        .route("/v1/jobs/{id}", get(show).put(replace).delete(remove))
        .route("/v1/jobs/{id}/schedules", get(schedules).post(add_schedule))
        .route(
            // The DC/OS CLI's client writes `schedules//<sid>`: the rest of the path, trimmed.
            "/v1/jobs/{id}/schedules/{*sid}",
            get(show_schedule)
                .put(replace_schedule)
                .delete(remove_schedule),
        )
        .route("/v1/jobs/{id}/runs", get(runs).post(start))
        .route("/v1/jobs/{id}/runs/{rid}", get(show_run))
        .route("/v1/jobs/{id}/runs/{rid}/actions/stop", post(stop))
        .route("/v1/queue", get(queue))
        .route("/info", get(info));
    // `/ping` is the master's own and open (src/master/http.rs), also under this prefix.
    v1.clone().nest("/service/metronome", v1)
}

/// `GET /v1/queue`: the runs waiting for their task (a first attempt not yet placed, or a
/// retry waiting for its delay or for room), by job.
async fn queue(State(master): State<Arc<Master>>) -> Response {
    let queued = master.read(|s| {
        let mut by_job: std::collections::BTreeMap<&str, Vec<Value>> = Default::default();
        for run in s.jobs.runs.values() {
            if run.status == dcos_core::jobs::state::RunStatus::Starting && !run.stop_requested {
                by_job
                    .entry(run.job_id.as_str())
                    .or_default()
                    .push(json!({ "runId": run.id }));
            }
        }
        by_job
            .into_iter()
            .map(|(job_id, runs)| json!({ "jobId": job_id, "runs": runs }))
            .collect::<Vec<Value>>()
    });
    json_ok(&queued)
}

/// `GET /info`: what serves Metronome's API (this build of dcos-rs).
async fn info() -> Response {
    json_ok(&json!({
        "version": env!("CARGO_PKG_VERSION"),
        "libVersion": concat!("dcos-rs ", env!("CARGO_PKG_VERSION")),
    }))
}

/// Metronome's dates: `2026-12-03T07:36:54.123+0000`.
fn date(ms: u64) -> String {
    let iso = dcos_core::time::iso8601(ms);
    format!("{}+0000", iso.trim_end_matches('Z'))
}

fn error(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

fn invalid(details: Vec<(String, String)>) -> Response {
    let details: Vec<Value> = details
        .into_iter()
        .map(|(path, reason)| json!({ "path": path, "errors": [reason] }))
        .collect();
    error(
        StatusCode::UNPROCESSABLE_ENTITY,
        json!({ "message": "Object is not valid", "details": details }),
    )
}

fn not_found(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        json!({ "id": id, "message": "Job not found" }),
    )
}

fn reject_response(reject: Reject) -> Response {
    let message = reject.to_string();
    let status = match reject {
        Reject::UnknownJob { ref job_id } => return not_found(job_id),
        Reject::JobExists { .. } => {
            return error(
                StatusCode::CONFLICT,
                json!({ "message": "Job with this id already exists" }),
            )
        }
        Reject::UnknownRun { .. } => StatusCode::NOT_FOUND,
        Reject::JobRunsActive { .. } | Reject::JobIsParent { .. } => StatusCode::CONFLICT,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    error(status, json!({ "message": message }))
}

async fn write(master: &Master, command: Command) -> Result<(), Response> {
    match master.write(command).await {
        Ok(Outcome::Applied) => Ok(()),
        Ok(Outcome::Rejected(reject)) => Err(reject_response(reject)),
        Err(e) => Err(crate::http_util::api_error(raft_error(e))),
    }
}

fn body_object(body: Result<Bytes, BytesRejection>) -> Result<Map<String, Value>, Response> {
    let body = body.map_err(|r| invalid(vec![("/".into(), r.body_text())]))?;
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(invalid(vec![("/".into(), "a JSON object".into())])),
        Err(e) => Err(invalid(vec![("/".into(), format!("not JSON: {e}"))])),
    }
}

/// `object[key]` when it is a string; absent or null is `None`, another type an error.
fn optional_str<'a>(
    object: &'a Map<String, Value>,
    key: &str,
    path: &str,
    errors: &mut Vec<(String, String)>,
) -> Option<&'a str> {
    match object.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            errors.push((format!("{path}/{key}"), "must be a string".into()));
            None
        }
    }
}

/// A Metronome schedule into the jobs framework's.
fn schedule_from(value: &Value, path: &str) -> Result<ScheduleSpec, Vec<(String, String)>> {
    let mut errors = Vec::new();
    let Some(object) = value.as_object() else {
        return Err(vec![(path.into(), "a schedule is a JSON object".into())]);
    };
    for key in object.keys() {
        if !SCHEDULE_KEYS.contains(&key.as_str()) {
            errors.push((format!("{path}/{key}"), "unknown property".into()));
        }
    }
    let id = object.get("id").and_then(Value::as_str).unwrap_or("");
    if id.is_empty() {
        errors.push((format!("{path}/id"), "is required".into()));
    }
    let cron = object.get("cron").and_then(Value::as_str).unwrap_or("");
    if let Err(e) = dcos_core::jobs::schedule::Cron::parse(cron) {
        errors.push((format!("{path}/cron"), e));
    }
    let timezone = optional_str(object, "timezone", path, &mut errors).unwrap_or("UTC");
    if let Err(e) = dcos_core::jobs::schedule::time_zone(timezone) {
        errors.push((format!("{path}/timezone"), e));
    }
    let deadline = object
        .get("startingDeadlineSeconds")
        .map_or(Some(900), Value::as_u64);
    if deadline.is_none_or(|d| d < 60) {
        errors.push((
            format!("{path}/startingDeadlineSeconds"),
            "must be a whole number of at least 60".into(),
        ));
    }
    let concurrency = match optional_str(object, "concurrencyPolicy", path, &mut errors) {
        None | Some("ALLOW") => Concurrency::Allow,
        Some("FORBID") => Concurrency::Forbid,
        Some("REPLACE") => Concurrency::Replace,
        Some(other) => {
            errors.push((
                format!("{path}/concurrencyPolicy"),
                format!("{other:?} is not ALLOW, FORBID or REPLACE"),
            ));
            Concurrency::Allow
        }
    };
    let enabled = object.get("enabled").map_or(Some(true), Value::as_bool);
    if enabled.is_none() {
        errors.push((format!("{path}/enabled"), "must be true or false".into()));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(ScheduleSpec {
        id: id.to_string(),
        kind: ScheduleKind::Cron(cron.to_string()),
        time_zone: timezone.to_string(),
        starting_deadline_seconds: deadline.unwrap_or(900),
        concurrency,
        enabled: enabled.unwrap_or(true),
    })
}

/// `run.placement`: `{constraints: [{attribute, operator, value}]}` (`EQ` kept as `IS`).
fn placement_from(value: Option<&Value>, errors: &mut Vec<(String, String)>) -> Vec<Vec<String>> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Vec::new();
    };
    let Some(placement) = value.as_object() else {
        errors.push(("/run/placement".into(), "must be an object".into()));
        return Vec::new();
    };
    for key in placement.keys().filter(|k| *k != "constraints") {
        errors.push((format!("/run/placement/{key}"), "unknown property".into()));
    }
    let mut constraints = Vec::new();
    let list = match placement.get("constraints") {
        None | Some(Value::Null) => return constraints,
        Some(Value::Array(list)) => list,
        Some(_) => {
            errors.push(("/run/placement/constraints".into(), "must be a list".into()));
            return constraints;
        }
    };
    for (i, item) in list.iter().enumerate() {
        let path = format!("/run/placement/constraints/{i}");
        let field = |key: &str| item.get(key).and_then(Value::as_str);
        for key in item.as_object().into_iter().flat_map(|o| o.keys()) {
            if !["attribute", "operator", "value"].contains(&key.as_str()) {
                errors.push((format!("{path}/{key}"), "unknown property".into()));
            }
        }
        match (field("attribute"), field("operator")) {
            (Some(attribute), Some(operator)) => {
                let value = match item.get("value") {
                    None | Some(Value::Null) => "",
                    Some(Value::String(v)) => v.as_str(),
                    Some(_) => {
                        errors.push((format!("{path}/value"), "must be a string".into()));
                        continue;
                    }
                };
                match RunSpec::constraint(attribute, operator, value) {
                    Ok(constraint) => constraints.push(constraint),
                    Err(reason) => errors.push((path, reason)),
                }
            }
            _ => errors.push((
                path,
                "needs attribute and operator (IS, LIKE, UNLIKE) and value".into(),
            )),
        }
    }
    constraints
}

/// `run.artifacts`: `[{uri, extract (true), executable, cache}]`, checked as Marathon's
/// `fetch`.
fn artifacts_from(value: Option<&Value>, errors: &mut Vec<(String, String)>) -> Vec<TaskFetch> {
    let list = match value {
        None | Some(Value::Null) => return Vec::new(),
        Some(Value::Array(list)) => list,
        Some(_) => {
            errors.push(("/run/artifacts".into(), "must be a list".into()));
            return Vec::new();
        }
    };
    let mut fetch = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let mut flag = |key: &str, default: bool| match item.get(key) {
            None | Some(Value::Null) => default,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                errors.push((
                    format!("/run/artifacts/{i}/{key}"),
                    "must be true or false".into(),
                ));
                default
            }
        };
        let (extract, executable, cache) = (
            flag("extract", true),
            flag("executable", false),
            flag("cache", false),
        );
        for key in item.as_object().into_iter().flat_map(|o| o.keys()) {
            if !["uri", "extract", "executable", "cache"].contains(&key.as_str()) {
                errors.push((
                    format!("/run/artifacts/{i}/{key}"),
                    "unknown property".into(),
                ));
            }
        }
        match item.get("uri").and_then(Value::as_str) {
            Some(uri) => fetch.push(TaskFetch {
                uri: uri.to_string(),
                extract,
                executable,
                cache,
                output_file: None,
            }),
            None => errors.push((format!("/run/artifacts/{i}/uri"), "is required".into())),
        }
    }
    for (index, reason) in RunSpec::check_fetch(&fetch) {
        let path = match index {
            Some(i) => format!("/run/artifacts/{i}"),
            None => "/run/artifacts".into(),
        };
        errors.push((path, reason));
    }
    fetch
}

/// A Metronome job (without its schedules) into the jobs framework's.
fn job_from(
    object: &Map<String, Value>,
    existing_id: Option<&str>,
) -> Result<JobSpec, Vec<(String, String)>> {
    let mut errors = Vec::new();
    for key in object.keys() {
        if !JOB_KEYS.contains(&key.as_str()) {
            errors.push((format!("/{key}"), "unknown property".into()));
        }
    }
    let id = object.get("id").and_then(Value::as_str).unwrap_or("");
    let valid_id = Some(id) == existing_id
        || !id.is_empty()
            && id.len() <= 200
            && id.split('.').all(|segment| {
                !segment.is_empty()
                    && segment
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            });
    if !valid_id {
        errors.push((
            "/id".into(),
            "must be dot-separated segments of lowercase letters, digits and -".into(),
        ));
    }
    let run = object.get("run").and_then(Value::as_object);
    let Some(run) = run else {
        errors.push(("/run".into(), "is required".into()));
        return Err(errors);
    };
    for key in run.keys() {
        if !RUN_KEYS.contains(&key.as_str()) {
            errors.push((format!("/run/{key}"), "unknown property".into()));
        }
    }
    let mut resource = |key: &str| -> f64 {
        match run.get(key).and_then(Value::as_f64) {
            Some(n) if n.is_finite() && n >= 0.0 => n,
            Some(_) => {
                errors.push((format!("/run/{key}"), "must be 0 or more".into()));
                0.0
            }
            None => {
                errors.push((format!("/run/{key}"), "is required".into()));
                0.0
            }
        }
    };
    let (cpus, mem, disk) = (resource("cpus"), resource("mem"), resource("disk"));
    let text = |value: Option<&Value>, path: &str, errors: &mut Vec<(String, String)>| match value {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        Some(_) => {
            errors.push((path.to_string(), "must be a non-empty string".into()));
            None
        }
    };
    let cmd = text(run.get("cmd"), "/run/cmd", &mut errors);
    let args: Option<Vec<String>> = match run.get("args") {
        None | Some(Value::Null) => None,
        Some(Value::Array(list)) if list.iter().all(Value::is_string) => Some(
            list.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
        ),
        Some(_) => {
            errors.push(("/run/args".into(), "must be a list of strings".into()));
            None
        }
    };
    let image = text(
        run.get("docker").and_then(|d| d.get("image")),
        "/run/docker/image",
        &mut errors,
    );
    let user = text(run.get("user"), "/run/user", &mut errors);
    if cmd.is_none() && args.is_none() && image.is_none() {
        errors.push(("/run/cmd".into(), "give cmd, args or docker.image".into()));
    }
    let mut env = std::collections::BTreeMap::new();
    if let Some(vars) = run.get("env").and_then(Value::as_object) {
        for (name, value) in vars {
            match value.as_str() {
                Some(v) => {
                    env.insert(name.clone(), v.to_string());
                }
                None => errors.push((
                    format!("/run/env/{name}"),
                    "only string values are supported (secrets are not yet)".into(),
                )),
            }
        }
    }
    let restart = run.get("restart");
    let retries = match restart
        .and_then(|r| r.get("policy"))
        .and_then(Value::as_str)
    {
        Some("ON_FAILURE") => dcos_core::jobs::state::RETRIES_MAX,
        None | Some("NEVER") => 0,
        Some(other) => {
            errors.push((
                "/run/restart/policy".into(),
                format!("{other:?} is not NEVER or ON_FAILURE"),
            ));
            0
        }
    };
    let deadline = match restart.and_then(|r| r.get("activeDeadlineSeconds")) {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64().filter(|s| (1..=30 * 86_400).contains(s)) {
            Some(seconds) => Some(seconds),
            None => {
                errors.push((
                    "/run/restart/activeDeadlineSeconds".into(),
                    "must be a whole number of seconds, 1 to 2592000 (30 days)".into(),
                ));
                None
            }
        },
    };
    let description = optional_str(object, "description", "", &mut errors)
        .unwrap_or_default()
        .to_string();
    let mut labels = std::collections::BTreeMap::new();
    match object.get("labels") {
        None | Some(Value::Null) => {}
        Some(Value::Object(given)) => {
            for (key, value) in given {
                match value.as_str() {
                    Some(v) => {
                        labels.insert(key.clone(), v.to_string());
                    }
                    None => errors.push((format!("/labels/{key}"), "must be a string".into())),
                }
            }
        }
        Some(_) => errors.push(("/labels".into(), "must be an object of strings".into())),
    }
    let constraints = placement_from(run.get("placement"), &mut errors);
    let fetch = artifacts_from(run.get("artifacts"), &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut kept = std::collections::BTreeMap::new();
    let run_kept: Map<String, Value> = run
        .iter()
        .filter(|(k, _)| RUN_KEPT.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !run_kept.is_empty() {
        kept.insert("metronome.run".to_string(), Value::Object(run_kept));
    }
    if let Some(docker) = run.get("docker") {
        kept.insert("metronome.docker".to_string(), docker.clone());
    }
    Ok(JobSpec {
        id: id.to_string(),
        description,
        labels,
        run: RunSpec {
            cmd,
            args,
            cpus,
            mem,
            disk,
            env,
            image,
            user,
            max_duration_seconds: deadline,
            constraints,
            fetch,
        },
        schedule: None,
        parents: Vec::new(),
        retries,
        soft_error: false,
        disabled: false,
        history_kept: dcos_core::jobs::state::HISTORY_KEPT,
        history_max_age_seconds: None,
        kept,
    })
}

fn schedule_view(schedule: &ScheduleSpec, now: u64) -> Option<Value> {
    let ScheduleKind::Cron(cron) = &schedule.kind else {
        return None;
    };
    let next = dcos_core::jobs::schedule::Cron::parse(cron)
        .ok()
        .and_then(|c| {
            let tz = dcos_core::jobs::schedule::time_zone(&schedule.time_zone).ok()?;
            c.next_after(&tz, now)
        });
    let mut view = json!({
        "id": schedule.id,
        "cron": cron,
        "timezone": schedule.time_zone,
        "startingDeadlineSeconds": schedule.starting_deadline_seconds,
        "concurrencyPolicy": match schedule.concurrency {
            Concurrency::Allow => "ALLOW",
            Concurrency::Forbid => "FORBID",
            Concurrency::Replace => "REPLACE",
        },
        "enabled": schedule.enabled,
    });
    if let Some(next) = next {
        view["nextRunAt"] = date(next).into();
    }
    Some(view)
}

fn run_view(run: &JobRun, state: &dcos_core::ClusterState) -> Value {
    let status = match run.status {
        RunStatus::Starting if run.task_ids.is_empty() => "INITIAL",
        RunStatus::Starting => "STARTING",
        RunStatus::Active => "ACTIVE",
        RunStatus::Success => "SUCCESS",
        RunStatus::Failed => "FAILED",
    };
    let tasks: Vec<Value> = run
        .task_ids
        .iter()
        .map(|id| {
            let task = state.tasks.get(id);
            let mut view = json!({
                "id": id,
                "status": task.map(|t| t.state.as_str()).unwrap_or("TASK_FINISHED"),
            });
            if let Some(started) = task.and_then(|t| t.started_at_ms) {
                view["startedAt"] = date(started).into();
            }
            if let Some(t) = task.filter(|t| t.state.is_terminal()) {
                view["completedAt"] = date(t.updated_at_ms).into();
            }
            view
        })
        .collect();
    let mut view = json!({
        "id": run.id,
        "jobId": run.job_id,
        "status": status,
        "createdAt": date(run.created_ms),
        "tasks": tasks,
    });
    if let Some(done) = run.completed_ms {
        view["completedAt"] = date(done).into();
    }
    view
}

/// The job as Metronome shows it, with `embeds`; `active` are its runs under way
/// (`JobsState::active_by_job` when showing every job).
fn job_view(
    record: &JobRecord,
    state: &dcos_core::ClusterState,
    active: &[&JobRun],
    embeds: &[String],
    now: u64,
) -> Value {
    let spec = &record.spec;
    let mut run = json!({
        "cpus": spec.run.cpus,
        "mem": spec.run.mem,
        "disk": spec.run.disk,
        "env": spec.run.env,
        "maxLaunchDelay": 3600,
        "restart": { "policy": if spec.retries > 0 { "ON_FAILURE" } else { "NEVER" } },
    });
    if let Some(cmd) = &spec.run.cmd {
        run["cmd"] = cmd.clone().into();
    }
    if let Some(args) = &spec.run.args {
        run["args"] = json!(args);
    }
    if let Some(user) = &spec.run.user {
        run["user"] = user.clone().into();
    }
    if !spec.run.constraints.is_empty() {
        let constraints: Vec<Value> = spec
            .run
            .constraints
            .iter()
            .map(|c| json!({ "attribute": c[0], "operator": c[1], "value": c[2] }))
            .collect();
        run["placement"] = json!({ "constraints": constraints });
    }
    if !spec.run.fetch.is_empty() {
        let artifacts: Vec<Value> = spec
            .run
            .fetch
            .iter()
            .map(|f| json!({ "uri": f.uri, "extract": f.extract, "executable": f.executable, "cache": f.cache }))
            .collect();
        run["artifacts"] = json!(artifacts);
    }
    if let Some(Value::Object(kept)) = spec.kept.get("metronome.run") {
        for (k, v) in kept {
            run[k] = v.clone();
        }
    }
    match spec.kept.get("metronome.docker") {
        Some(docker) => run["docker"] = docker.clone(),
        None => {
            if let Some(image) = &spec.run.image {
                run["docker"] = json!({ "image": image });
            }
        }
    }
    let mut job = json!({
        "id": spec.id,
        "description": spec.description,
        "labels": spec.labels,
        "run": run,
    });
    let finished = |status: RunStatus| -> Vec<Value> {
        record
            .history
            .iter()
            .filter(|r| r.status == status)
            .map(|r| {
                json!({
                    "id": r.id,
                    "createdAt": date(r.created_ms),
                    "finishedAt": date(r.completed_ms.unwrap_or(r.created_ms)),
                    "tasks": r.task_ids,
                })
            })
            .collect()
    };
    let summary = json!({
        "successCount": record.stats.success_count,
        "failureCount": record.stats.error_count,
        "lastSuccessAt": record.stats.last_success_ms.map(date),
        "lastFailureAt": record.stats.last_error_ms.map(date),
    });
    for embed in embeds {
        match embed.as_str() {
            "activeRuns" => {
                let runs: Vec<Value> = active.iter().map(|r| run_view(r, state)).collect();
                job["activeRuns"] = json!(runs);
            }
            "schedules" => {
                let schedules: Vec<Value> = spec
                    .schedule
                    .iter()
                    .filter_map(|s| schedule_view(s, now))
                    .collect();
                job["schedules"] = json!(schedules);
            }
            "history" => {
                let mut history = summary.clone();
                history["successfulFinishedRuns"] = json!(finished(RunStatus::Success));
                history["failedFinishedRuns"] = json!(finished(RunStatus::Failed));
                job["history"] = history;
            }
            _ => job["historySummary"] = summary.clone(),
        }
    }
    job
}

/// The `embed` parameters (repeated), each one Metronome knows, or its 400.
fn embeds(query: Option<&str>, uri: &str) -> Result<Vec<String>, Response> {
    let mut out = Vec::new();
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if key != "embed" {
            continue;
        }
        if !EMBEDS.contains(&value.as_ref()) {
            return Err(error(
                StatusCode::BAD_REQUEST,
                json!({
                    "message": format!("Unknown embed options: {value} (known: {})", EMBEDS.join(", ")),
                    "requestPath": uri,
                }),
            ));
        }
        if !out.contains(&value.as_ref().to_string()) {
            out.push(value.into_owned());
        }
    }
    Ok(out)
}

async fn list(
    State(master): State<Arc<Master>>,
    RawQuery(query): RawQuery,
    uri: axum::http::Uri,
) -> Response {
    let embeds = match embeds(query.as_deref(), uri.path()) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let now = now_ms();
    let jobs: Vec<Value> = master.read(|s| {
        let active = s.jobs.active_by_job();
        s.jobs
            .jobs
            .values()
            .map(|r| {
                let runs = active
                    .get(r.spec.id.as_str())
                    .map_or(&[][..], Vec::as_slice);
                job_view(r, s, runs, &embeds, now)
            })
            .collect()
    });
    json_ok(&jobs)
}

async fn show(
    State(master): State<Arc<Master>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    uri: axum::http::Uri,
) -> Response {
    let embeds = match embeds(query.as_deref(), uri.path()) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let now = now_ms();
    match master.read(|s| {
        s.jobs
            .jobs
            .get(&id)
            .map(|r| job_view(r, s, &s.jobs.active_runs(&id), &embeds, now))
    }) {
        Some(job) => json_ok(&job),
        None => not_found(&id),
    }
}

/// `POST /v1/jobs`: 201 with the job; its `schedules` (at most one) come with it.
async fn create(
    State(master): State<Arc<Master>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let object = match body_object(body) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let mut spec = match job_from(&object, None) {
        Ok(spec) => spec,
        Err(errors) => return invalid(errors),
    };
    match object.get("schedules").and_then(Value::as_array) {
        Some(list) if list.len() > 1 => {
            return invalid(vec![("/schedules".into(), "at most one schedule".into())])
        }
        Some(list) if list.len() == 1 => match schedule_from(&list[0], "/schedules(0)") {
            Ok(schedule) => spec.schedule = Some(schedule),
            Err(errors) => return invalid(errors),
        },
        _ => {}
    }
    put_and_show(&master, spec, true, StatusCode::CREATED).await
}

/// Writes `spec` (`create`: a new job) and answers the job as it now is, with `status`.
async fn put_and_show(
    master: &Master,
    spec: JobSpec,
    create: bool,
    status: StatusCode,
) -> Response {
    let id = spec.id.clone();
    let warnings = super::warning_headers(&super::unhonoured(&spec));
    let command = Command::PutJob {
        job: spec,
        create,
        at_ms: now_ms(),
        if_version_ms: None,
    };
    if let Err(r) = write(master, command).await {
        return r;
    }
    let now = now_ms();
    let view = master.read(|s| s.jobs.jobs.get(&id).map(|r| job_view(r, s, &[], &[], now)));
    (status, warnings, Json(view.unwrap_or(Value::Null))).into_response()
}

/// `PUT /v1/jobs/{id}`: the job's definition replaced; its schedules stay.
async fn replace(
    State(master): State<Arc<Master>>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let object = match body_object(body) {
        Ok(o) => o,
        Err(r) => return r,
    };
    // A job named through Chronos's API may not be Metronome-shaped: its own id is fine.
    let exists = master.read(|s| s.jobs.jobs.contains_key(&id));
    let spec = match job_from(&object, exists.then_some(id.as_str())) {
        Ok(spec) => spec,
        Err(errors) => return invalid(errors),
    };
    if spec.id != id {
        return invalid(vec![("/id".into(), format!("must be {id}, the job's id"))]);
    }
    let warnings = super::warning_headers(&super::unhonoured(&spec));
    let written = modify_job(&master, &id, |current| {
        // What Metronome's job does not carry stays as it was (a job made through
        // Chronos's API keeps its parents, disabled, softError, its other fields, and its
        // retries when the restart policy says the same).
        let mut spec = spec.clone();
        spec.schedule = current.schedule;
        spec.parents = current.parents;
        spec.disabled = current.disabled;
        spec.soft_error = current.soft_error;
        spec.history_kept = current.history_kept;
        spec.history_max_age_seconds = current.history_max_age_seconds;
        if (spec.retries > 0) == (current.retries > 0) {
            spec.retries = current.retries;
        }
        if spec.run.max_duration_seconds.is_none() {
            spec.run.max_duration_seconds = current.run.max_duration_seconds;
        }
        for (key, value) in current.kept {
            if !key.starts_with("metronome.") {
                spec.kept.entry(key).or_insert(value);
            }
        }
        Ok(spec)
    })
    .await;
    if let Err(r) = written {
        return r;
    }
    let now = now_ms();
    let view = master.read(|s| s.jobs.jobs.get(&id).map(|r| job_view(r, s, &[], &[], now)));
    (warnings, Json(view.unwrap_or(Value::Null))).into_response()
}

/// `super::modify_job` with Metronome's answers for what stops it.
async fn modify_job(
    master: &Master,
    id: &str,
    change: impl Fn(JobSpec) -> Result<JobSpec, Response>,
) -> Result<(), Response> {
    use super::NotModified;
    super::modify_job(master, id, change)
        .await
        .map_err(|why| match why {
            NotModified::Missing => not_found(id),
            NotModified::Refused(response) => response,
            NotModified::Rejected(reject) => reject_response(reject),
            NotModified::Raft(e) => crate::http_util::api_error(raft_error(e)),
            NotModified::KeptChanging => error(
                StatusCode::CONFLICT,
                json!({ "message": format!("job {id} kept changing while this change was being made; retry") }),
            ),
        })
}

/// `DELETE /v1/jobs/{id}[?stopCurrentJobRuns=true]`.
async fn remove(
    State(master): State<Arc<Master>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let stop_runs = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .any(|(k, v)| k == "stopCurrentJobRuns" && v.eq_ignore_ascii_case("true"));
    let now = now_ms();
    let view = master.read(|s| s.jobs.jobs.get(&id).map(|r| job_view(r, s, &[], &[], now)));
    let Some(view) = view else {
        return not_found(&id);
    };
    let command = Command::RemoveJob {
        job_id: id,
        stop_runs,
        at_ms: now,
    };
    match write(&master, command).await {
        Ok(()) => json_ok(&view),
        Err(r) => r,
    }
}

async fn schedules(State(master): State<Arc<Master>>, Path(id): Path<String>) -> Response {
    let now = now_ms();
    let found = master.read(|s| {
        s.jobs.jobs.get(&id).map(|r| {
            r.spec
                .schedule
                .iter()
                .filter_map(|sch| schedule_view(sch, now))
                .collect::<Vec<_>>()
        })
    });
    match found {
        Some(list) => json_ok(&list),
        None => not_found(&id),
    }
}

/// What a schedule write expects of the job when it is written.
enum Expect<'a> {
    /// None yet (and no parents): `POST .../schedules`.
    NoSchedule,
    /// This one: `PUT` and `DELETE .../schedules/{sid}`.
    Schedule(&'a str),
}

/// The job's schedule replaced (or removed), the rest of it as it is when written; what
/// `expect` says is checked on the job as written, so two concurrent writes cannot both
/// pass it.
async fn set_schedule(
    master: &Master,
    id: &str,
    expect: Expect<'_>,
    schedule: Option<ScheduleSpec>,
) -> Result<(), Response> {
    modify_job(master, id, |mut spec| {
        match expect {
            Expect::NoSchedule if spec.schedule.is_some() || !spec.parents.is_empty() => {
                return Err(error(
                    StatusCode::CONFLICT,
                    json!({ "message": "Only one schedule supported at the moment (a job that runs after its parents has none)" }),
                ))
            }
            Expect::Schedule(sid) if spec.schedule.as_ref().map(|s| s.id.as_str()) != Some(sid) => {
                return Err(error(
                    StatusCode::NOT_FOUND,
                    json!({ "message": format!("Schedule {sid} of job {id} not found") }),
                ))
            }
            _ => {}
        }
        spec.schedule = schedule.clone();
        Ok(spec)
    })
    .await
}

/// `POST /v1/jobs/{id}/schedules`: 201 with the schedule; a job has at most one.
async fn add_schedule(
    State(master): State<Arc<Master>>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let value = match body_object(body) {
        Ok(o) => Value::Object(o),
        Err(r) => return r,
    };
    let schedule = match schedule_from(&value, "") {
        Ok(s) => s,
        Err(errors) => return invalid(errors),
    };
    let now = now_ms();
    if let Err(r) = set_schedule(&master, &id, Expect::NoSchedule, Some(schedule.clone())).await {
        return r;
    }
    (StatusCode::CREATED, Json(schedule_view(&schedule, now))).into_response()
}

fn find_schedule(master: &Master, id: &str, sid: &str) -> Result<ScheduleSpec, Response> {
    match master.read(|s| s.jobs.jobs.get(id).map(|r| r.spec.schedule.clone())) {
        None => Err(not_found(id)),
        Some(Some(schedule)) if schedule.id == sid => Ok(schedule),
        Some(_) => Err(error(
            StatusCode::NOT_FOUND,
            json!({ "message": format!("Schedule {sid} of job {id} not found") }),
        )),
    }
}

async fn show_schedule(
    State(master): State<Arc<Master>>,
    Path((id, sid)): Path<(String, String)>,
) -> Response {
    let sid = sid.trim_start_matches('/').to_string();
    match find_schedule(&master, &id, &sid) {
        Ok(schedule) => match schedule_view(&schedule, now_ms()) {
            Some(view) => json_ok(&view),
            None => error(
                StatusCode::NOT_FOUND,
                json!({ "message": format!("job {id} has a Chronos schedule, not a cron one: see /v1/scheduler/job/{id}") }),
            ),
        },
        Err(r) => r,
    }
}

async fn replace_schedule(
    State(master): State<Arc<Master>>,
    Path((id, sid)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let sid = sid.trim_start_matches('/').to_string();
    if let Err(r) = find_schedule(&master, &id, &sid) {
        return r;
    }
    let value = match body_object(body) {
        Ok(o) => Value::Object(o),
        Err(r) => return r,
    };
    let schedule = match schedule_from(&value, "") {
        Ok(s) if s.id == sid => s,
        Ok(_) => return invalid(vec![("/id".into(), format!("must be {sid}"))]),
        Err(errors) => return invalid(errors),
    };
    let now = now_ms();
    match set_schedule(&master, &id, Expect::Schedule(&sid), Some(schedule.clone())).await {
        Ok(()) => json_ok(&schedule_view(&schedule, now)),
        Err(r) => r,
    }
}

async fn remove_schedule(
    State(master): State<Arc<Master>>,
    Path((id, sid)): Path<(String, String)>,
) -> Response {
    let sid = sid.trim_start_matches('/').to_string();
    if let Err(r) = find_schedule(&master, &id, &sid) {
        return r;
    }
    match set_schedule(&master, &id, Expect::Schedule(&sid), None).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(r) => r,
    }
}

/// `GET /v1/jobs/{id}/runs`: the runs under way.
async fn runs(State(master): State<Arc<Master>>, Path(id): Path<String>) -> Response {
    let found = master.read(|s| {
        s.jobs.jobs.contains_key(&id).then(|| {
            s.jobs
                .active_runs(&id)
                .iter()
                .map(|r| run_view(r, s))
                .collect::<Vec<_>>()
        })
    });
    match found {
        Some(list) => json_ok(&list),
        None => not_found(&id),
    }
}

/// `POST /v1/jobs/{id}/runs`: 201 with the new run.
async fn start(State(master): State<Arc<Master>>, Path(id): Path<String>) -> Response {
    let now = now_ms();
    let run_id = super::run_id(now);
    let command = Command::StartRun {
        job_id: id.clone(),
        workflow_id: run_id.clone(),
        run_id: run_id.clone(),
        trigger: Trigger::Manual,
        arguments: Vec::new(),
        at_ms: now,
    };
    if let Err(r) = write(&master, command).await {
        return r;
    }
    let view = master.read(|s| s.jobs.runs.get(&run_id).map(|r| run_view(r, s)));
    (StatusCode::CREATED, Json(view.unwrap_or(Value::Null))).into_response()
}

/// `GET /v1/jobs/{id}/runs/{rid}`: a run under way or in the job's history.
async fn show_run(
    State(master): State<Arc<Master>>,
    Path((id, rid)): Path<(String, String)>,
) -> Response {
    let found = master.read(|s| {
        let active = s.jobs.runs.get(&rid).filter(|r| r.job_id == id);
        let finished = s
            .jobs
            .jobs
            .get(&id)
            .and_then(|j| j.history.iter().find(|r| r.id == rid));
        active.or(finished).map(|r| run_view(r, s))
    });
    match found {
        Some(run) => json_ok(&run),
        None => error(
            StatusCode::NOT_FOUND,
            json!({ "message": format!("Run {rid} of job {id} not found") }),
        ),
    }
}

/// `POST /v1/jobs/{id}/runs/{rid}/actions/stop`.
async fn stop(
    State(master): State<Arc<Master>>,
    Path((id, rid)): Path<(String, String)>,
) -> Response {
    if !master.read(|s| s.jobs.runs.get(&rid).is_some_and(|r| r.job_id == id)) {
        return error(
            StatusCode::NOT_FOUND,
            json!({ "message": format!("Run {rid} of job {id} not found or finished") }),
        );
    }
    let command = Command::StopRun {
        run_id: rid,
        at_ms: now_ms(),
    };
    match write(&master, command).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(r) => r,
    }
}

//! Chronos's API over the jobs framework, as chronos-python and Chronos's users drive it
//! (`../shared/COMPAT.md` §4): under `/v1/scheduler/...`, `/scheduler/...` and the same
//! behind `/chronos`. Mutations answer 204 with an empty body; errors are 400
//! `{"status": "Bad Request", "message": ...}` (an unknown job to run or delete included),
//! as Chronos answers them. A job is the same job Metronome's API will show: one store.
//!
//! What Chronos's job JSON holds that the jobs framework does not act on (owner, shell,
//! executor, fetch, constraints, ...) is kept as given and shown again; a container's image
//! is acted on, its other settings are not kept.

use crate::http_util::json_ok;
use crate::link::now_ms;
use crate::master::http::raft_error;
use crate::master::Master;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::Router;
use dcos_core::jobs::policy::Concurrency;
use dcos_core::jobs::state::{
    JobRecord, JobRun, JobSpec, RunSpec, RunStatus, ScheduleKind, ScheduleSpec, Trigger,
};
use dcos_core::types::TaskFetch;
use dcos_core::{Command, Outcome, Reject};
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// Keys of Chronos's job JSON: what the jobs framework reads, what Chronos computes (ignored
/// on input), and what is only kept.
const READ: &[&str] = &[
    "name",
    "command",
    "schedule",
    "scheduleTimeZone",
    "parents",
    "retries",
    "cpus",
    "mem",
    "disk",
    "disabled",
    "softError",
    "environmentVariables",
    "container",
    "runAsUser",
    "maxCompletionTime",
    "description",
    "concurrent",
    "epsilon",
    "arguments",
    "fetch",
    "uris",
    "constraints",
];
const COMPUTED: &[&str] = &[
    "successCount",
    "errorCount",
    "lastSuccess",
    "lastError",
    "errorsSinceLastSuccess",
];
const KEPT: &[&str] = &[
    "owner",
    "ownerName",
    "shell",
    "executor",
    "executorFlags",
    "taskInfoData",
    "dataProcessingJobType",
    "highPriority",
    "async",
    "dataJob",
];

/// Chronos's default resources when a job gives 0 or none.
const DEFAULT_CPUS: f64 = 0.1;
const DEFAULT_MEM: f64 = 128.0;
/// Longest `maxCompletionTime` taken: 30 days.
const MAX_COMPLETION_MS: f64 = 30.0 * 86_400_000.0;
/// Chronos's default `epsilon`: a missed run still starts within a minute.
const DEFAULT_EPSILON_SECONDS: u64 = 60;

/// The routes, under every prefix Chronos's clients use.
pub fn routes() -> Router<Arc<Master>> {
    let scheduler = Router::new()
        .route("/iso8601", post(put_job).put(put_job))
        .route("/dependency", post(put_job).put(put_job))
        .route("/jobs", get(list))
        .route("/jobs/summary", get(summary))
        .route("/jobs/search", get(search))
        .route("/job/stat/{name}", get(stat))
        .route("/job/success/{name}", put(mark_success))
        .route("/job/{name}", get(show).put(run_now).delete(remove))
        .route("/task/kill/{name}", delete(kill_tasks))
        .route("/graph/csv", get(graph_csv))
        .route("/graph/dot", get(graph_dot))
        .route("/stats/{percentile}", get(stats));
    let chronos = Router::new()
        .nest("/v1/scheduler", scheduler.clone())
        .nest("/scheduler", scheduler)
        .route("/leader", get(leader));
    chronos.clone().nest("/chronos", chronos)
}

/// Chronos's 400.
fn bad_request(message: impl Into<String>) -> Response {
    let body = json!({ "status": "Bad Request", "message": message.into() });
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

async fn write(master: &Master, command: Command) -> Result<(), Response> {
    match master.write(command).await {
        Ok(Outcome::Applied) => Ok(()),
        Ok(Outcome::Rejected(reject)) => Err(bad_request(reject.to_string())),
        Err(e) => Err(crate::http_util::api_error(raft_error(e))),
    }
}

/// `R/...` or `parents`, and the rest, into the jobs framework's job.
fn job_from_chronos(body: &Map<String, Value>) -> Result<JobSpec, String> {
    for key in body.keys() {
        if !READ.contains(&key.as_str())
            && !COMPUTED.contains(&key.as_str())
            && !KEPT.contains(&key.as_str())
        {
            return Err(format!("unknown field {key:?} in the job"));
        }
    }
    let string = |key: &str| -> Result<Option<&str>, String> {
        match body.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(format!("{key} must be a string")),
        }
    };
    let number = |key: &str| -> Result<Option<f64>, String> {
        match body.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|n| n.is_finite() && *n >= 0.0)
                .map(Some)
                .ok_or_else(|| format!("{key} must be a number of 0 or more")),
        }
    };
    let flag = |key: &str| -> Result<bool, String> {
        match body.get(key) {
            None | Some(Value::Null) => Ok(false),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| format!("{key} must be true or false")),
        }
    };
    let name = string("name")?.ok_or("name is required (letters, digits, _, . and -)")?;
    if name.is_empty()
        || name.len() > 200
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(format!(
            "name {name:?} may hold only letters, digits, _, . and -"
        ));
    }
    let command = string("command")?
        .filter(|c| !c.trim().is_empty())
        .ok_or("command is required (a shell command)")?;
    let image = match body.get("container") {
        None | Some(Value::Null) => None,
        Some(container) => match container.get("image").and_then(Value::as_str) {
            Some(image) if !image.trim().is_empty() => Some(image.to_string()),
            _ => return Err("container.image must name an image".into()),
        },
    };
    let parents: Vec<String> = match body.get("parents") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .map(|p| p.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or("parents must be job names")?,
        Some(_) => return Err("parents must be a list of job names".into()),
    };
    let schedule = match string("schedule")?.filter(|s| !s.is_empty()) {
        Some(text) => {
            let zone = string("scheduleTimeZone")?.unwrap_or("UTC");
            dcos_core::jobs::schedule::Iso8601Schedule::parse(text, zone)
                .map_err(|e| format!("schedule: {e}"))?;
            let epsilon = match string("epsilon")? {
                Some(e) => {
                    let period = dcos_core::jobs::schedule::Period::parse(e)
                        .map_err(|e| format!("epsilon: {e}"))?;
                    if period.months != 0 || period.days != 0 {
                        return Err("epsilon: give it in hours, minutes or seconds (PT1M)".into());
                    }
                    period.millis / 1000
                }
                None => DEFAULT_EPSILON_SECONDS,
            };
            Some(ScheduleSpec {
                id: "default".into(),
                kind: ScheduleKind::Iso8601(text.to_string()),
                time_zone: zone.to_string(),
                starting_deadline_seconds: epsilon,
                concurrency: match flag("concurrent")? {
                    true => Concurrency::Allow,
                    false => Concurrency::Forbid,
                },
                enabled: true,
            })
        }
        None => None,
    };
    if schedule.is_some() != parents.is_empty() {
        return Err("give exactly one of schedule and parents".into());
    }
    let mut env = std::collections::BTreeMap::new();
    if let Some(vars) = body.get("environmentVariables").and_then(Value::as_array) {
        for var in vars {
            match (var["name"].as_str(), var["value"].as_str()) {
                (Some(n), Some(v)) => {
                    env.insert(n.to_string(), v.to_string());
                }
                _ => return Err("environmentVariables are {\"name\": ..., \"value\": ...}".into()),
            }
        }
    }
    let retries = match number("retries")? {
        Some(n) if n.fract() == 0.0 && n <= f64::from(dcos_core::jobs::state::RETRIES_MAX) => {
            n as u32
        }
        Some(_) => {
            return Err(format!(
                "retries must be a whole number, at most {}",
                dcos_core::jobs::state::RETRIES_MAX
            ))
        }
        None => 2,
    };
    let constraints = chronos_constraints(body.get("constraints"))?;
    let fetch = chronos_fetch(body)?;
    let positive = |n: Option<f64>, default: f64| n.filter(|n| *n > 0.0).unwrap_or(default);
    let mut kept = std::collections::BTreeMap::new();
    for key in KEPT {
        if let Some(value) = body.get(*key) {
            kept.insert(key.to_string(), value.clone());
        }
    }
    Ok(JobSpec {
        id: name.to_string(),
        description: string("description")?.unwrap_or_default().to_string(),
        labels: Default::default(),
        run: RunSpec {
            cmd: Some(command.to_string()),
            args: None,
            cpus: positive(number("cpus")?, DEFAULT_CPUS),
            mem: positive(number("mem")?, DEFAULT_MEM),
            disk: number("disk")?.unwrap_or(0.0),
            env,
            image,
            user: string("runAsUser")?.map(str::to_string),
            max_duration_seconds: match number("maxCompletionTime")? {
                Some(ms) if ms > MAX_COMPLETION_MS => {
                    return Err(format!(
                        "maxCompletionTime is at most {MAX_COMPLETION_MS} ms (30 days)"
                    ))
                }
                Some(ms) if ms > 0.0 => Some((ms / 1000.0).ceil() as u64),
                _ => None,
            },
            constraints,
            fetch,
        },
        schedule,
        parents,
        retries,
        soft_error: flag("softError")?,
        disabled: flag("disabled")?,
        history_kept: dcos_core::jobs::state::HISTORY_KEPT,
        history_max_age_seconds: None,
        kept,
    })
}

/// Chronos's `constraints`, `[[attribute, EQUALS|LIKE|UNLIKE, value]]`.
fn chronos_constraints(value: Option<&Value>) -> Result<Vec<Vec<String>>, String> {
    let list = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => return Err("constraints must be a list of [attribute, operator, value]".into()),
    };
    list.iter()
        .enumerate()
        .map(|(i, item)| {
            let parts: Option<Vec<&str>> = item
                .as_array()
                .filter(|parts| parts.len() == 3)
                .and_then(|parts| parts.iter().map(Value::as_str).collect());
            let Some(parts) = parts else {
                return Err(format!(
                    "constraints[{i}] must be [attribute, EQUALS|LIKE|UNLIKE, value]"
                ));
            };
            RunSpec::constraint(parts[0], parts[1], parts[2])
                .map_err(|e| format!("constraints[{i}]: {e}"))
        })
        .collect()
}

/// Chronos's `fetch` (`[{uri, executable, cache, extract, output_file}]`) or older `uris`
/// (each extracted, as Mesos's fetcher did).
fn chronos_fetch(body: &Map<String, Value>) -> Result<Vec<TaskFetch>, String> {
    let mut fetch = Vec::new();
    match body.get("fetch") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            for (i, item) in list.iter().enumerate() {
                let flag = |key: &str, default: bool| match item.get(key) {
                    None | Some(Value::Null) => Ok(default),
                    Some(Value::Bool(b)) => Ok(*b),
                    Some(_) => Err(format!("fetch[{i}].{key} must be true or false")),
                };
                let Some(uri) = item.get("uri").and_then(Value::as_str) else {
                    return Err(format!("fetch[{i}].uri is required"));
                };
                let output_file = match item.get("output_file").or_else(|| item.get("outputFile")) {
                    None | Some(Value::Null) => None,
                    Some(Value::String(name)) => Some(name.clone()),
                    Some(_) => return Err(format!("fetch[{i}].output_file must be a file name")),
                };
                fetch.push(TaskFetch {
                    uri: uri.to_string(),
                    extract: flag("extract", true)?,
                    executable: flag("executable", false)?,
                    cache: flag("cache", false)?,
                    output_file,
                });
            }
        }
        Some(_) => return Err("fetch must be a list of {uri, ...}".into()),
    }
    match body.get("uris") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) if list.iter().all(Value::is_string) => {
            if !fetch.is_empty() && !list.is_empty() {
                return Err("give either uris or fetch, not both".into());
            }
            fetch.extend(list.iter().filter_map(Value::as_str).map(|uri| TaskFetch {
                uri: uri.to_string(),
                extract: true,
                executable: false,
                cache: false,
                output_file: None,
            }));
        }
        Some(_) => return Err("uris must be a list of URIs".into()),
    }
    if let Some((index, reason)) = RunSpec::check_fetch(&fetch).into_iter().next() {
        return Err(match index {
            Some(i) => format!("fetch[{i}].{reason}"),
            None => format!("fetch: {reason}"),
        });
    }
    Ok(fetch)
}

/// A job as Chronos shows it: its definition, and its counts (`""` when never).
fn job_to_chronos(record: &JobRecord) -> Value {
    let spec = &record.spec;
    let when = |ms: Option<u64>| ms.map(dcos_core::time::iso8601).unwrap_or_default();
    let mut job = json!({
        "name": spec.id,
        "command": spec.run.cmd.clone().unwrap_or_default(),
        "description": spec.description,
        "retries": spec.retries,
        "cpus": spec.run.cpus,
        "mem": spec.run.mem,
        "disk": spec.run.disk,
        "disabled": spec.disabled,
        "softError": spec.soft_error,
        "successCount": record.stats.success_count,
        "errorCount": record.stats.error_count,
        "lastSuccess": when(record.stats.last_success_ms),
        "lastError": when(record.stats.last_error_ms),
        "errorsSinceLastSuccess": record.stats.errors_since_last_success,
        "environmentVariables": spec.run.env.iter()
            .map(|(name, value)| json!({ "name": name, "value": value }))
            .collect::<Vec<_>>(),
        "arguments": [],
        "owner": "",
        "ownerName": "",
        "shell": true,
        "executor": "",
        "executorFlags": "",
        "highPriority": false,
        "dataProcessingJobType": false,
        "uris": [],
        "fetch": spec.run.fetch.iter().map(|f| {
            let mut item = json!({
                "uri": f.uri, "executable": f.executable, "cache": f.cache, "extract": f.extract,
            });
            if let Some(name) = &f.output_file {
                item["output_file"] = name.clone().into();
            }
            item
        }).collect::<Vec<_>>(),
        "constraints": spec.run.constraints.iter().map(|c| {
            let operator = if c[1] == "IS" { "EQUALS" } else { c[1].as_str() };
            json!([c[0], operator, c[2]])
        }).collect::<Vec<_>>(),
    });
    let object = job.as_object_mut().expect("an object");
    if let Some(schedule) = &spec.schedule {
        if let ScheduleKind::Iso8601(text) = &schedule.kind {
            object.insert("schedule".into(), text.clone().into());
        }
        object.insert("scheduleTimeZone".into(), schedule.time_zone.clone().into());
        object.insert(
            "epsilon".into(),
            format!("PT{}S", schedule.starting_deadline_seconds).into(),
        );
        object.insert(
            "concurrent".into(),
            (schedule.concurrency == Concurrency::Allow).into(),
        );
    } else {
        object.insert("parents".into(), json!(spec.parents));
    }
    if let Some(user) = &spec.run.user {
        object.insert("runAsUser".into(), user.clone().into());
    }
    if let Some(image) = &spec.run.image {
        object.insert(
            "container".into(),
            json!({ "type": "DOCKER", "image": image }),
        );
    }
    if let Some(seconds) = spec.run.max_duration_seconds {
        object.insert(
            "maxCompletionTime".into(),
            seconds.saturating_mul(1000).into(),
        );
    }
    // Chronos's own kept fields (not Metronome's, which its API shows).
    for (key, value) in spec
        .kept
        .iter()
        .filter(|(k, _)| !k.starts_with("metronome."))
    {
        object.insert(key.clone(), value.clone());
    }
    job
}

/// `POST /scheduler/iso8601` and `/scheduler/dependency`: create or replace a job (its runs,
/// counts and history stay).
async fn put_job(
    State(master): State<Arc<Master>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return bad_request(format!("request body: {}", rejection.body_text())),
    };
    let value: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(e) => return bad_request(format!("the job is not JSON: {e}")),
    };
    let Some(object) = value.as_object() else {
        return bad_request("a job is a JSON object");
    };
    let mut spec = match job_from_chronos(object) {
        Ok(spec) => spec,
        Err(message) => return bad_request(message),
    };
    let warnings = super::warning_headers(&super::unhonoured(&spec));
    // Chronos's job carries no retention: a replaced job keeps its own, as it is when
    // written (a change between the read and the write makes it read again).
    for _ in 0..3 {
        let current = master.read(|s| {
            s.jobs.jobs.get(&spec.id).map(|r| {
                (
                    r.spec.history_kept,
                    r.spec.history_max_age_seconds,
                    r.version_ms,
                )
            })
        });
        if let Some((kept, max_age, _)) = current {
            spec.history_kept = kept;
            spec.history_max_age_seconds = max_age;
        }
        let command = Command::PutJob {
            job: spec.clone(),
            create: current.is_none(),
            at_ms: now_ms(),
            if_version_ms: current.map(|(_, _, version)| version),
        };
        match master.write(command).await {
            Ok(Outcome::Applied) => return (warnings, no_content()).into_response(),
            Ok(Outcome::Rejected(Reject::JobChanged { .. } | Reject::JobExists { .. })) => continue,
            Ok(Outcome::Rejected(reject)) => return bad_request(reject.to_string()),
            Err(e) => return crate::http_util::api_error(raft_error(e)),
        }
    }
    bad_request(format!(
        "job {} kept changing while it was being written; retry",
        spec.id
    ))
}

/// `PUT /scheduler/job/success/{name}`: the job counts a success now, without a run; the
/// jobs after it may run.
async fn mark_success(State(master): State<Arc<Master>>, Path(name): Path<String>) -> Response {
    let command = Command::MarkJobSuccess {
        job_id: name,
        at_ms: now_ms(),
    };
    match write(&master, command).await {
        Ok(()) => no_content(),
        Err(response) => response,
    }
}

async fn list(State(master): State<Arc<Master>>) -> Response {
    let jobs: Vec<Value> = master.read(|s| s.jobs.jobs.values().map(job_to_chronos).collect());
    json_ok(&jobs)
}

fn last_status(record: &JobRecord) -> &'static str {
    match (record.stats.last_success_ms, record.stats.last_error_ms) {
        (None, None) => "fresh",
        (Some(ok), Some(err)) if err > ok => "failure",
        (None, Some(_)) => "failure",
        _ => "success",
    }
}

/// Chronos's `state` of a job from its runs under way (`JobsState::active_by_job`).
fn current_state(runs: &[&JobRun]) -> String {
    match runs
        .iter()
        .filter(|r| r.status == RunStatus::Active)
        .count()
    {
        0 if runs.is_empty() => "idle".into(),
        0 => "queued".into(),
        n => format!("{n} running"),
    }
}

async fn summary(State(master): State<Arc<Master>>) -> Response {
    let jobs: Vec<Value> = master.read(|s| {
        let active = s.jobs.active_by_job();
        s.jobs
            .jobs
            .values()
            .map(|record| {
                let schedule = match &record.spec.schedule {
                    Some(ScheduleSpec {
                        kind: ScheduleKind::Iso8601(text),
                        ..
                    }) => text.clone(),
                    _ => String::new(),
                };
                json!({
                    "name": record.spec.id,
                    "status": last_status(record),
                    "state": current_state(active.get(record.spec.id.as_str()).map_or(&[], Vec::as_slice)),
                    "schedule": schedule,
                    "parents": record.spec.parents,
                    "disabled": record.spec.disabled,
                })
            })
            .collect()
    });
    json_ok(&json!({ "jobs": jobs }))
}

/// `GET /scheduler/jobs/search?name=&command=&limit=&offset=`: lowercase substrings.
async fn search(State(master): State<Arc<Master>>, RawQuery(query): RawQuery) -> Response {
    let params: Vec<(String, String)> = query
        .as_deref()
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default();
    let get = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.to_lowercase())
    };
    let count = |key: &str, default: usize| -> Result<usize, String> {
        match get(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("{key} must be a whole number")),
        }
    };
    let (limit, offset) = match (count("limit", 10), count("offset", 0)) {
        (Ok(l), Ok(o)) => (l, o),
        (Err(message), _) | (_, Err(message)) => return bad_request(message),
    };
    let (name, command) = (get("name"), get("command"));
    let jobs: Vec<Value> = master.read(|s| {
        s.jobs
            .jobs
            .values()
            .filter(|r| {
                name.as_ref()
                    .is_none_or(|n| r.spec.id.to_lowercase().contains(n))
            })
            .filter(|r| {
                command.as_ref().is_none_or(|c| {
                    r.spec
                        .run
                        .cmd
                        .as_deref()
                        .unwrap_or("")
                        .to_lowercase()
                        .contains(c)
                })
            })
            .skip(offset)
            .take(limit)
            .map(job_to_chronos)
            .collect()
    });
    json_ok(&jobs)
}

async fn show(State(master): State<Arc<Master>>, Path(name): Path<String>) -> Response {
    match master.read(|s| s.jobs.jobs.get(&name).map(job_to_chronos)) {
        Some(job) => json_ok(&job),
        None => bad_request(format!("job {name} does not exist")),
    }
}

/// `PUT /scheduler/job/{name}[?arguments=...]`: run it now (the arguments appended to its
/// command).
async fn run_now(
    State(master): State<Arc<Master>>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    if !master.read(|s| s.jobs.jobs.contains_key(&name)) {
        return bad_request(format!("job {name} does not exist"));
    }
    let arguments: Vec<String> = query
        .as_deref()
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .filter(|(k, _)| k == "arguments")
                .flat_map(|(_, v)| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
                .collect()
        })
        .unwrap_or_default();
    let now = now_ms();
    let run_id = super::run_id(now);
    let command = Command::StartRun {
        job_id: name,
        workflow_id: run_id.clone(),
        run_id,
        trigger: Trigger::Manual,
        arguments,
        at_ms: now,
    };
    match write(&master, command).await {
        Ok(()) => no_content(),
        Err(response) => response,
    }
}

/// `DELETE /scheduler/job/{name}`: the job goes, its runs are stopped.
async fn remove(State(master): State<Arc<Master>>, Path(name): Path<String>) -> Response {
    let command = Command::RemoveJob {
        job_id: name,
        stop_runs: true,
        at_ms: now_ms(),
    };
    match write(&master, command).await {
        Ok(()) => no_content(),
        Err(response) => response,
    }
}

/// `DELETE /scheduler/task/kill/{name}`: every run of the job under way is stopped.
async fn kill_tasks(State(master): State<Arc<Master>>, Path(name): Path<String>) -> Response {
    let runs: Option<Vec<String>> = master.read(|s| {
        s.jobs.jobs.contains_key(&name).then(|| {
            s.jobs
                .active_runs(&name)
                .iter()
                .map(|r| r.id.clone())
                .collect()
        })
    });
    let Some(runs) = runs else {
        return bad_request(format!("job {name} does not exist"));
    };
    for run_id in runs {
        let command = Command::StopRun {
            run_id,
            at_ms: now_ms(),
        };
        // A run that ended meanwhile is no error.
        if let Err(e) = master.write(command).await {
            return crate::http_util::api_error(raft_error(e));
        }
    }
    no_content()
}

/// Durations (ms) of a job's finished runs, oldest first.
fn durations(record: &JobRecord) -> Vec<u64> {
    record
        .history
        .iter()
        .filter_map(|r| r.completed_ms.map(|end| end.saturating_sub(r.created_ms)))
        .collect()
}

fn percentile(sorted: &[u64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * fraction).round() as usize;
    sorted[index] as f64 / 1000.0
}

/// `GET /scheduler/job/stat/{name}`: run times (seconds) and the finished runs.
async fn stat(State(master): State<Arc<Master>>, Path(name): Path<String>) -> Response {
    let Some(record) = master.read(|s| s.jobs.jobs.get(&name).cloned()) else {
        return bad_request(format!("job {name} does not exist"));
    };
    let mut sorted = durations(&record);
    sorted.sort_unstable();
    let mean = match sorted.is_empty() {
        true => 0.0,
        false => sorted.iter().sum::<u64>() as f64 / sorted.len() as f64 / 1000.0,
    };
    let history: Vec<Value> = record
        .history
        .iter()
        .map(|run| {
            json!({
                "jobName": record.spec.id,
                "taskId": run.task_ids.last().cloned().unwrap_or_default(),
                "taskState": match run.status { RunStatus::Success => "TASK_FINISHED", _ => "TASK_FAILED" },
                "taskStart": dcos_core::time::iso8601(run.created_ms),
                "taskEnd": run.completed_ms.map(dcos_core::time::iso8601).unwrap_or_default(),
                "numAttempts": run.attempt,
            })
        })
        .collect();
    json_ok(&json!({
        "histogram": {
            "75thPercentile": percentile(&sorted, 0.75),
            "95thPercentile": percentile(&sorted, 0.95),
            "98thPercentile": percentile(&sorted, 0.98),
            "99thPercentile": percentile(&sorted, 0.99),
            "median": percentile(&sorted, 0.5),
            "mean": mean,
            "count": sorted.len(),
        },
        "taskStatHistory": history,
    }))
}

/// `GET /scheduler/stats/{99thPercentile|98thPercentile|95thPercentile|75thPercentile|median|mean}`:
/// per job, that statistic of its run times (seconds), slowest first.
async fn stats(State(master): State<Arc<Master>>, Path(which): Path<String>) -> Response {
    let fraction = match which.as_str() {
        "99thPercentile" => Some(0.99),
        "98thPercentile" => Some(0.98),
        "95thPercentile" => Some(0.95),
        "75thPercentile" => Some(0.75),
        "median" => Some(0.5),
        "mean" => None,
        _ => {
            return bad_request(format!(
                "{which:?} is not one of 99thPercentile, 98thPercentile, 95thPercentile, 75thPercentile, median, mean"
            ))
        }
    };
    let mut rows: Vec<(String, f64)> = master.read(|s| {
        s.jobs
            .jobs
            .values()
            .filter_map(|record| {
                let mut sorted = durations(record);
                if sorted.is_empty() {
                    return None;
                }
                sorted.sort_unstable();
                let value = match fraction {
                    Some(f) => percentile(&sorted, f),
                    None => sorted.iter().sum::<u64>() as f64 / sorted.len() as f64 / 1000.0,
                };
                Some((record.spec.id.clone(), value))
            })
            .collect()
    });
    rows.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let rows: Vec<Value> = rows
        .into_iter()
        .map(|(name, time)| json!({ "jobNameLabel": name, "time": time }))
        .collect();
    json_ok(&rows)
}

/// `GET /scheduler/graph/csv`: `node,<job>,<last status>,<state>` per job, then
/// `link,<parent>,<child>` per dependency.
async fn graph_csv(State(master): State<Arc<Master>>) -> Response {
    let text = master.read(|s| {
        let mut lines = Vec::new();
        let active = s.jobs.active_by_job();
        for record in s.jobs.jobs.values() {
            let runs = active
                .get(record.spec.id.as_str())
                .map_or(&[][..], Vec::as_slice);
            lines.push(format!(
                "node,{},{},{}",
                record.spec.id,
                last_status(record),
                current_state(runs)
            ));
        }
        for record in s.jobs.jobs.values() {
            for parent in &record.spec.parents {
                lines.push(format!("link,{parent},{}", record.spec.id));
            }
        }
        lines.join("\n") + "\n"
    });
    ([(header::CONTENT_TYPE, "text/plain")], text).into_response()
}

/// `GET /scheduler/graph/dot`: the dependencies as Graphviz DOT.
async fn graph_dot(State(master): State<Arc<Master>>) -> Response {
    let text = master.read(|s| {
        let mut out = String::from("digraph G {\n");
        for record in s.jobs.jobs.values() {
            out.push_str(&format!("  \"{}\";\n", record.spec.id));
            for parent in &record.spec.parents {
                out.push_str(&format!("  \"{parent}\" -> \"{}\";\n", record.spec.id));
            }
        }
        out.push_str("}\n");
        out
    });
    ([(header::CONTENT_TYPE, "text/plain")], text).into_response()
}

/// Chronos's `/leader`: `{"leader": "host:port"}`.
async fn leader(State(master): State<Arc<Master>>) -> Response {
    match master.raft.leader() {
        Some((_, url)) => {
            json_ok(&json!({ "leader": super::super::services::http::host_port(&url) }))
        }
        None => bad_request("no master leads right now"),
    }
}

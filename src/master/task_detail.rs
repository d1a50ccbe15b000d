//! One task as the dashboard shows it, through any master: its log
//! (`GET /cluster/v1/tasks/{id}/logs/{stream}`), its usage (`.../usage`) and its sandbox's
//! files (`.../files`, `.../files/read`). A browser reaches only the master's origin (no
//! CORS, and an agent may serve https with the cluster CA), so the master looks the task
//! up in its replicated state and asks the task's agent: with its own certificate over
//! mutual TLS in a cluster (agents accept masters', and this master accepts only an
//! agent's certificate back; no viewer's token goes to an agent), over plain HTTP with the
//! caller's `Authorization` on `up`'s loopback. The agent's own refusals pass
//! through (a task still staging has no sandbox yet: 404); an agent that cannot be asked
//! is a 502 naming it and the URL.
//!
//! A caller names only the task and paths inside its sandbox: the master builds the agent's
//! path from the task (Mesos's virtual sandbox path, `link::sandbox_virtual_path`) and
//! refuses absolute paths and `..`; the agent confines what it serves once more
//! (`agent::mesos`). Deliberately absent: writing to a sandbox, and anything of the agent
//! but that task's.

use super::Master;
use crate::http_util::{api_error, json_ok};
use crate::link::{now_ms, ENTRIES_TRUNCATED_HEADER};
use crate::tls::{NodeClient, NodeClientError};
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use dcos_api::routes::agent as agent_routes;
use dcos_api::ApiError;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Followed logs one master passes on at once (each holds a connection to an agent and
/// one from a browser); past it, 503.
pub const LOG_FOLLOWS_MAX: usize = 64;
/// Longest one followed log is passed on; the caller asks again from where it was.
pub const LOG_FOLLOW_MAX_MS: u64 = 10 * 60 * 1000;
/// Most bytes of a log one request without `follow` answers; the rest is for the next
/// request, from `X-Dcos-Log-Next-Offset`.
pub const LOG_READ_MAX_BYTES: usize = 1 << 20;
/// Longest wait for an agent: for its answer's head, and for the whole of a bounded answer.
const AGENT_REQUEST_TIMEOUT_MS: u64 = 10_000;
/// Longest wait for the head of a followed log: an agent holds it back until the task's
/// log file exists (a task fetching artifacts or unpacking an image has none yet), up to a
/// minute.
const FOLLOW_HEAD_TIMEOUT_MS: u64 = 75_000;
/// Largest `/containers` answer read from an agent (an entry per task it runs).
const CONTAINERS_ANSWER_MAX_BYTES: usize = 4 << 20;
/// Largest `/files/browse.json` answer read from an agent (it lists at most 1,000 entries).
const BROWSE_ANSWER_MAX_BYTES: usize = 2 << 20;
/// Largest `/files/read.json` answer read from an agent (1 MiB of data, JSON-escaped).
const READ_ANSWER_MAX_BYTES: usize = 8 << 20;
/// Largest refusal of an agent read (and passed on).
const AGENT_ERROR_MAX_BYTES: usize = 64 << 10;
/// Bytes of an agent's answer quoted when it is not the API's JSON error.
const AGENT_ERROR_QUOTED_MAX_BYTES: usize = 300;
/// Longest `path` a caller may name in a sandbox.
const SANDBOX_PATH_MAX_BYTES: usize = 4096;
/// On a log answer without `follow`: the offset to ask from next.
const LOG_NEXT_OFFSET_HEADER: &str = "x-dcos-log-next-offset";
/// On a log answer without `follow`: `true` when it stopped at `LOG_READ_MAX_BYTES` before
/// the end of the log.
const LOG_TRUNCATED_HEADER: &str = "x-dcos-log-truncated";

/// `GET /cluster/v1/tasks/{id}/logs/{stream}?offset=N&follow=true|false`: the task's
/// `stdout` or `stderr` from byte `offset` (default 0), from its agent
/// (`GET /files/tasks/{id}/{stream}`). Without `follow`, at most `LOG_READ_MAX_BYTES`
/// (`X-Dcos-Log-Next-Offset`, `X-Dcos-Log-Truncated`); with it, the agent's stream passed
/// on as it arrives until the task has ended and all was sent, or the caller goes. Text,
/// never cached.
pub(super) async fn task_log(
    State(master): State<Arc<Master>>,
    Path((task_id, stream)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    match log_answer(&master, &task_id, &stream, query.as_deref(), &headers).await {
        Ok(response) => response,
        Err(error) => api_error(error),
    }
}

async fn log_answer(
    master: &Master,
    task_id: &str,
    stream: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    if !matches!(stream, "stdout" | "stderr") {
        return Err(invalid_param(
            "stream",
            format!("{stream:?} is not a log of a task: stdout or stderr"),
        ));
    }
    let params = query_params(query);
    let offset: u64 = match params.get("offset") {
        None => 0,
        Some(text) => text.parse().map_err(|_| {
            invalid_param(
                "offset",
                format!("{text:?} is not a byte offset (a whole number, 0 or more)"),
            )
        })?,
    };
    let follow = match params.get("follow").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(invalid_param(
                "follow",
                format!("{other:?} is not true or false"),
            ))
        }
    };
    let task = TaskOnAgent::find(master, task_id)?;
    let client = agent_client(master)?;
    // Taken before the agent is asked, held for as long as the stream is passed on.
    let permit = match follow {
        true => Some(master.log_follows.clone().try_acquire_owned().map_err(|_| {
            ApiError::unavailable(format!(
                "this master already passes on {LOG_FOLLOWS_MAX} followed logs, its limit: retry later, or read without follow"
            ))
        })?),
        false => None,
    };
    let url = task.url(&format!(
        "{}?offset={offset}&follow={follow}",
        agent_routes::task_log(&task.task_id, stream)
    ));
    let timeout = Duration::from_millis(AGENT_REQUEST_TIMEOUT_MS);
    let head_timeout = match follow {
        true => Duration::from_millis(FOLLOW_HEAD_TIMEOUT_MS),
        false => timeout,
    };
    let (status, _, body) = client
        .open_stream(
            Method::GET,
            &url,
            Vec::new(),
            passed_on(&url, headers),
            head_timeout,
        )
        .await
        .map_err(|e| task.unreachable(&url, &e))?;
    if !status.is_success() {
        let (bytes, _) = read_up_to(body, AGENT_ERROR_MAX_BYTES, timeout)
            .await
            .map_err(|e| task.unreachable(&url, &e))?;
        return Err(task.refusal(&url, status, &bytes));
    }
    let mut response = match permit {
        Some(permit) => {
            // The permit goes when the stream does: at its end, or when the caller goes
            // (axum drops the body, which closes the connection to the agent).
            // A follow ends after LOG_FOLLOW_MAX_MS even on a quiet log, so a caller that
            // vanished without closing (a laptop asleep) holds no permit for long; the
            // dashboard follows again from where it was.
            let ends = tokio::time::sleep(Duration::from_millis(LOG_FOLLOW_MAX_MS));
            let chunks = body.into_data_stream().take_until(ends).map(move |chunk| {
                let _held = &permit;
                chunk
            });
            Response::new(Body::from_stream(chunks))
        }
        None => {
            let (bytes, truncated) = read_up_to(body, LOG_READ_MAX_BYTES, timeout)
                .await
                .map_err(|e| task.unreachable(&url, &e))?;
            let next_offset = offset.saturating_add(bytes.len() as u64);
            let mut response = Response::new(Body::from(bytes));
            let answer_headers = response.headers_mut();
            answer_headers.insert(
                HeaderName::from_static(LOG_NEXT_OFFSET_HEADER),
                HeaderValue::from(next_offset),
            );
            answer_headers.insert(
                HeaderName::from_static(LOG_TRUNCATED_HEADER),
                HeaderValue::from_static(if truncated { "true" } else { "false" }),
            );
            response
        }
    };
    let answer_headers = response.headers_mut();
    answer_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    answer_headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The task wrote this text: a browser must never take it for a page of this origin.
    answer_headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    answer_headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox"),
    );
    Ok(response)
}

/// `GET /cluster/v1/tasks/{id}/usage`: the task's container as its agent measures it now
/// (its `/containers` entry's stats: `cpuSeconds`, `memoryBytes`, `memoryLimitBytes`,
/// `oomKills`), with `taskId`, `agentId`, `sampledAt` and the cpus the task was given
/// (`cpusAllotted`). 404 when the task has ended or its agent has no container for it.
pub(super) async fn task_usage(
    State(master): State<Arc<Master>>,
    Path(task_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    match usage_answer(&master, &task_id, &headers).await {
        Ok(usage) => no_store(json_ok(&usage)),
        Err(error) => api_error(error),
    }
}

async fn usage_answer(
    master: &Master,
    task_id: &str,
    headers: &HeaderMap,
) -> Result<Value, ApiError> {
    let task = TaskOnAgent::find(master, task_id)?;
    if task.state.is_terminal() {
        return Err(ApiError::not_found(format!(
            "task {task_id} has ended ({}): it has no container to measure",
            task.state.as_str()
        )));
    }
    let client = agent_client(master)?;
    let url = task.url(agent_routes::CONTAINERS);
    let (_, answer) = get_json(client, &task, &url, headers, CONTAINERS_ANSWER_MAX_BYTES).await?;
    let sampled_at = dcos_api::iso8601(now_ms());
    let container = answer["containers"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["taskId"] == task_id))
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "agent {} has no container for task {task_id}: it has not started yet, or it has ended",
                task.agent_id
            ))
        })?;
    let mut usage = serde_json::Map::new();
    usage.insert("taskId".into(), json!(task.task_id));
    usage.insert("agentId".into(), json!(task.agent_id));
    usage.insert("sampledAt".into(), json!(sampled_at));
    usage.insert("cpusAllotted".into(), json!(task.cpus));
    // Whatever else the agent measures, as it names it (never over the fields above).
    if let Some(stats) = container["stats"].as_object() {
        for (key, value) in stats {
            usage.entry(key.clone()).or_insert_with(|| value.clone());
        }
    }
    Ok(Value::Object(usage))
}

/// `GET /cluster/v1/tasks/{id}/files?path=`: the entries of a directory of the task's
/// sandbox (`path` relative to it; by default the sandbox itself: the task's logs and its
/// working directory `sandbox`), as Mesos's `/files/browse.json` lists them but with paths
/// relative to the sandbox: `[{path, size, mode, mtime, nlink, uid, gid}]`, by path; at
/// most 1,000 (`X-Dcos-Entries-Truncated: true` when more were left out).
pub(super) async fn task_files(
    State(master): State<Arc<Master>>,
    Path(task_id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    match files_answer(&master, &task_id, query.as_deref(), &headers).await {
        Ok(response) => no_store(response),
        Err(error) => api_error(error),
    }
}

async fn files_answer(
    master: &Master,
    task_id: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let params = query_params(query);
    let parts = sandbox_parts(params.get("path").map_or("", String::as_str))?;
    let task = TaskOnAgent::find(master, task_id)?;
    let client = agent_client(master)?;
    let url = task.url(&format!(
        "{}?{}",
        agent_routes::FILES_BROWSE,
        query_string(&[("path", task.agent_path(&parts))])
    ));
    let (answer_headers, answer) =
        get_json(client, &task, &url, headers, BROWSE_ANSWER_MAX_BYTES).await?;
    let Value::Array(entries) = answer else {
        return Err(task.bad_answer(&url, "a directory listing that is not a JSON array"));
    };
    let directory = parts.join("/");
    let entries: Vec<Value> = entries
        .into_iter()
        .map(|mut entry| {
            if let Value::Object(fields) = &mut entry {
                // The agent names entries by the path asked for: keep the name only.
                let name = fields
                    .get("path")
                    .and_then(Value::as_str)
                    .and_then(|path| path.rsplit('/').next())
                    .unwrap_or_default()
                    .to_string();
                let relative = match directory.is_empty() {
                    true => name,
                    false => format!("{directory}/{name}"),
                };
                fields.insert("path".into(), Value::String(relative));
            }
            entry
        })
        .collect();
    let mut response = json_ok(&entries);
    if let Some(truncated) = answer_headers.get(ENTRIES_TRUNCATED_HEADER) {
        response.headers_mut().insert(
            HeaderName::from_static(ENTRIES_TRUNCATED_HEADER),
            truncated.clone(),
        );
    }
    Ok(response)
}

/// `GET /cluster/v1/tasks/{id}/files/read?path=&offset=&length=`: a page of a file of the
/// task's sandbox (`path` relative to it: `stdout`, `sandbox/out.txt`) as Mesos's
/// `/files/read.json` serves it: `{path, offset, data}`, at most `length` bytes (and
/// 1 MiB) from `offset`; `offset` -1 (or none) answers the file's size as `offset`, with
/// no data.
pub(super) async fn task_file_read(
    State(master): State<Arc<Master>>,
    Path(task_id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    match read_answer(&master, &task_id, query.as_deref(), &headers).await {
        Ok(page) => no_store(json_ok(&page)),
        Err(error) => api_error(error),
    }
}

async fn read_answer(
    master: &Master,
    task_id: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Value, ApiError> {
    let params = query_params(query);
    let parts = sandbox_parts(params.get("path").map_or("", String::as_str))?;
    if parts.is_empty() {
        return Err(invalid_param(
            "path",
            "name a file of the task's sandbox, relative to it (`stdout`, `sandbox/out.txt`)",
        ));
    }
    let offset = match params.get("offset") {
        None => None,
        Some(text) => match text.parse::<i64>() {
            Ok(offset) if offset >= -1 => Some(offset),
            _ => {
                return Err(invalid_param(
                    "offset",
                    format!(
                        "{text:?} is not a byte offset (0 or more; -1 asks for the file's size)"
                    ),
                ))
            }
        },
    };
    let length = match params.get("length") {
        None => None,
        Some(text) => Some(text.parse::<u64>().map_err(|_| {
            invalid_param(
                "length",
                format!("{text:?} is not a number of bytes (0 or more)"),
            )
        })?),
    };
    let task = TaskOnAgent::find(master, task_id)?;
    let client = agent_client(master)?;
    let mut pairs = vec![("path", task.agent_path(&parts))];
    if let Some(offset) = offset {
        pairs.push(("offset", offset.to_string()));
    }
    if let Some(length) = length {
        pairs.push(("length", length.to_string()));
    }
    let url = task.url(&format!(
        "{}?{}",
        agent_routes::FILES_READ,
        query_string(&pairs)
    ));
    let (_, answer) = get_json(client, &task, &url, headers, READ_ANSWER_MAX_BYTES).await?;
    if !answer["offset"].is_u64() || !answer["data"].is_string() {
        return Err(task.bad_answer(&url, "a page of a file without a numeric offset and data"));
    }
    Ok(json!({
        "path": parts.join("/"),
        "offset": answer["offset"],
        "data": answer["data"],
    }))
}

/// A task and the agent that runs it, as this master's replicated state has them.
struct TaskOnAgent {
    task_id: String,
    agent_id: String,
    /// The agent's API (`https://...` in a cluster, `http://127.0.0.1:...` in `up`).
    agent_url: String,
    /// Mesos's virtual path of the task's sandbox on that agent.
    sandbox: String,
    state: dcos_core::TaskState,
    /// The cpus the task was given.
    cpus: f64,
}

impl TaskOnAgent {
    /// The task `task_id` and its agent: 404 naming the task when the state has no such
    /// task, or no longer knows its agent.
    fn find(master: &Master, task_id: &str) -> Result<TaskOnAgent, ApiError> {
        master.read(|s| -> Result<TaskOnAgent, ApiError> {
            let task = s
                .tasks
                .get(task_id)
                .ok_or_else(|| ApiError::not_found(format!("task {task_id} does not exist")))?;
            let agent = s
                .agents
                .get(&task.agent_id)
                .filter(|agent| !agent.url.is_empty())
                .ok_or_else(|| {
                    ApiError::not_found(format!(
                        "task {task_id} is on agent {}, which the cluster no longer knows",
                        task.agent_id
                    ))
                })?;
            let framework_id = dcos_core::mesos::state::framework_of(&task.owner);
            Ok(TaskOnAgent {
                task_id: task.id.clone(),
                agent_id: agent.id.clone(),
                agent_url: agent.url.trim_end_matches('/').to_string(),
                sandbox: crate::link::sandbox_virtual_path(framework_id, &task.id),
                state: task.state,
                cpus: task.resources.cpus(),
            })
        })
    }

    /// The agent's URL of `path_and_query`.
    fn url(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.agent_url)
    }

    /// The agent's path of `parts` inside the task's sandbox.
    fn agent_path(&self, parts: &[&str]) -> String {
        let mut path = self.sandbox.clone();
        for part in parts {
            path.push('/');
            path.push_str(part);
        }
        path
    }

    /// 502 naming the agent and the URL: the agent could not be asked, or its answer did
    /// not come whole.
    fn unreachable(&self, url: &str, error: &NodeClientError) -> ApiError {
        let code = match error {
            NodeClientError::Unreachable(_) | NodeClientError::NoAnswer(_) => "agent_unreachable",
            _ => "agent_bad_answer",
        };
        ApiError::new(
            502,
            code,
            format!(
                "agent {} (task {}) at {url}: {error}",
                self.agent_id, self.task_id
            ),
        )
        .with_details(json!({ "agentId": self.agent_id, "url": url }))
    }

    /// 502 naming the agent and the URL: it answered, but not what was asked.
    fn bad_answer(&self, url: &str, what: &str) -> ApiError {
        ApiError::new(
            502,
            "agent_bad_answer",
            format!(
                "agent {} (task {}) at {url} answered {what}",
                self.agent_id, self.task_id
            ),
        )
        .with_details(json!({ "agentId": self.agent_id, "url": url }))
    }

    /// What to answer for an agent's refusal (`status` not 2xx, `body` its answer): its own
    /// 4xx JSON error as it is, the sandbox's agent path taken out of its message (a task
    /// still staging has no sandbox yet: 404); a 401 (the agent took neither the caller's
    /// token nor this master's certificate) and anything else 502, naming the agent.
    fn refusal(&self, url: &str, status: StatusCode, body: &[u8]) -> ApiError {
        let passed_on = status.is_client_error() && status != StatusCode::UNAUTHORIZED;
        match serde_json::from_slice::<ApiError>(body) {
            Ok(mut error) if passed_on => {
                error.status = status.as_u16();
                error.message = error.message.replace(&format!("{}/", self.sandbox), "");
                error
            }
            _ if status == StatusCode::UNAUTHORIZED => ApiError::new(
                502,
                "agent_refused",
                format!(
                    "agent {} (task {}) at {url} refused this master's request (401): an agent takes the caller's token if it is in the agent's tokens, or a master's certificate over https",
                    self.agent_id, self.task_id
                ),
            )
            .with_details(json!({ "agentId": self.agent_id, "url": url })),
            _ => {
                let quoted = &body[..body.len().min(AGENT_ERROR_QUOTED_MAX_BYTES)];
                ApiError::new(
                    502,
                    "agent_error",
                    format!(
                        "agent {} (task {}) at {url} answered {status}: {}",
                        self.agent_id,
                        self.task_id,
                        String::from_utf8_lossy(quoted)
                    ),
                )
                .with_details(json!({ "agentId": self.agent_id, "url": url }))
            }
        }
    }
}

/// GETs `url` of the task's agent and reads its JSON answer (at most `max_bytes`) with its
/// headers; the agent's refusals and failures become errors as `TaskOnAgent` words them.
async fn get_json(
    client: &NodeClient,
    task: &TaskOnAgent,
    url: &str,
    headers: &HeaderMap,
    max_bytes: usize,
) -> Result<(HeaderMap, Value), ApiError> {
    let (status, answer_headers, body) = client
        .request(
            Method::GET,
            url,
            Vec::new(),
            passed_on(url, headers),
            Duration::from_millis(AGENT_REQUEST_TIMEOUT_MS),
            max_bytes,
        )
        .await
        .map_err(|e| task.unreachable(url, &e))?;
    if !status.is_success() {
        return Err(task.refusal(url, status, &body));
    }
    let value = serde_json::from_slice(&body)
        .map_err(|e| task.bad_answer(url, &format!("something else than JSON ({e})")))?;
    Ok((answer_headers, value))
}

/// Reads at most `max` bytes of an answer's body within `timeout`: the bytes, and whether
/// the body went on past them (the rest is not read: dropping the body closes the
/// connection).
async fn read_up_to(
    mut body: Incoming,
    max: usize,
    timeout: Duration,
) -> Result<(Vec<u8>, bool), NodeClientError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut bytes = Vec::new();
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                return Err(NodeClientError::NoAnswer(format!(
                    "the answer did not complete within {} ms",
                    timeout.as_millis()
                )))
            }
            Ok(None) => return Ok((bytes, false)),
            Ok(Some(Err(e))) => {
                return Err(NodeClientError::NoAnswer(format!(
                    "the answer broke off: {e}"
                )))
            }
            Ok(Some(Ok(frame))) => frame,
        };
        // Trailers carry nothing wanted here.
        if let Ok(data) = frame.into_data() {
            let room = max - bytes.len();
            if data.len() > room {
                bytes.extend_from_slice(&data[..room]);
                return Ok((bytes, true));
            }
            bytes.extend_from_slice(&data);
        }
    }
}

/// The master's client for agents, or 503 when it was started without one.
fn agent_client(master: &Master) -> Result<&NodeClient, ApiError> {
    master.agent_client().ok_or_else(|| {
        ApiError::unavailable(
            "this master has no client for agents' APIs (it was started without one): ask another master",
        )
    })
}

/// What of the caller's request goes to the agent at `url`: over https nothing (the agent
/// takes this master's certificate, so no viewer's token is handed to an agent node);
/// over plain http (`dcos-rs up`'s own agent on loopback, which shares its tokens) the
/// caller's `Authorization`.
fn passed_on(url: &str, headers: &HeaderMap) -> HeaderMap {
    let mut passed = HeaderMap::new();
    if url.starts_with("http://") {
        for value in headers.get_all(header::AUTHORIZATION) {
            passed.append(header::AUTHORIZATION, value.clone());
        }
    }
    passed
}

/// The query's parameters by name (the last of a repeated one counts); those a handler
/// does not read are ignored (a browser may add its own).
fn query_params(query: Option<&str>) -> BTreeMap<String, String> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

/// `pairs` as a query string, every value encoded.
fn query_string(pairs: &[(&str, String)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        query.append_pair(name, value);
    }
    query.finish()
}

/// 400 naming the parameter and why.
fn invalid_param(name: &str, reason: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("{name}: {reason}"))
}

/// A `path` query parameter as the parts of a path inside the task's sandbox: relative,
/// never `..` (empty and `.` parts are dropped, so `sandbox/` and `./stdout` are fine).
fn sandbox_parts(path: &str) -> Result<Vec<&str>, ApiError> {
    if path.len() > SANDBOX_PATH_MAX_BYTES {
        return Err(invalid_param(
            "path",
            format!("longer than {SANDBOX_PATH_MAX_BYTES} bytes"),
        ));
    }
    if path.starts_with('/') {
        return Err(invalid_param(
            "path",
            format!("{path:?} is absolute: name a path inside the task's sandbox, relative to it (`stdout`, `sandbox/out.txt`)"),
        ));
    }
    if path.contains('\0') {
        return Err(invalid_param("path", "a path holds no NUL character"));
    }
    let parts: Vec<&str> = path
        .split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .collect();
    if parts.contains(&"..") {
        return Err(invalid_param(
            "path",
            format!("{path:?} leads out of the task's sandbox (`..`)"),
        ));
    }
    Ok(parts)
}

/// `response`, never cached (it says how a task is now).
fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_names_only_paths_inside_the_sandbox() {
        assert_eq!(sandbox_parts("").unwrap(), Vec::<&str>::new());
        assert_eq!(sandbox_parts("stdout").unwrap(), ["stdout"]);
        assert_eq!(
            sandbox_parts("./sandbox//out/").unwrap(),
            ["sandbox", "out"]
        );
        for refused in ["../x", "sandbox/../../x", "/etc/passwd", "a\0b"] {
            let error = sandbox_parts(refused).unwrap_err();
            assert_eq!(error.status, 400, "{refused}");
            assert!(error.message.starts_with("path: "), "{}", error.message);
        }
        let long = "a/".repeat(SANDBOX_PATH_MAX_BYTES);
        assert_eq!(sandbox_parts(&long).unwrap_err().status, 400);
    }

    #[test]
    fn query_values_are_decoded_and_encoded_again() {
        let params = query_params(Some("path=sandbox%2Fa+b.txt&offset=3&offset=4"));
        assert_eq!(params["path"], "sandbox/a b.txt");
        assert_eq!(params["offset"], "4", "the last of a repeated one counts");
        assert!(query_params(None).is_empty());
        let query = query_string(&[("path", "/frameworks/f/x y&z".to_string())]);
        let back = query_params(Some(query.as_str()));
        assert_eq!(back["path"], "/frameworks/f/x y&z");
    }
}

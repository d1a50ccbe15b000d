//! The master's HTTP API: Marathon's `/v2` services API, this system's `/cluster/v1`,
//! Prometheus `/metrics`, health endpoints and the embedded dashboard at `/`.
//!
//! Handlers validate input and turn it into `Command`s; every refusal is a JSON `ApiError`
//! naming the field and the reason. Nothing here changes state except through Raft. Bearer
//! tokens are checked by `crate::auth` before any handler or redirect.

use super::Master;
use crate::auth::{require_token, ApiAuth};
use crate::http_util::{api_error, json_ok};
use crate::link::{now_ms, random_id};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use dcos_api::{
    agent_view, app_converged, app_view, iso8601, task_view, ApiError, AppEnvelope, AppsEnvelope,
    DeploymentResult, MasterView, NodesView, TasksEnvelope,
};
use dcos_core::{AgentState, AppSpec, Command, FieldError, Outcome, Reject};
use dcos_raft::RaftError;
use std::sync::Arc;
use std::time::Instant;

/// Largest request body the API accepts (app definitions are small).
pub const API_BODY_MAX_BYTES: usize = 1 << 20;

const DASHBOARD_HTML: &str = include_str!("../dashboard/index.html");

/// The master's router. With `auth`, every route but `/`, `/health` and `/ready` needs a
/// bearer token, checked before the follower redirect (a follower names its leader only to
/// callers it has authenticated). `/internal/raft/*` never takes tokens: it is for master
/// certificates only.
pub fn router(master: Arc<Master>, auth: Option<ApiAuth>) -> Router {
    // Raft between masters: bigger bodies, never redirected, masters' certificates only.
    let internal = Router::new()
        .route("/internal/raft/{rpc}", post(raft_rpc))
        .layer(DefaultBodyLimit::max(
            dcos_raft::network::RPC_BODY_MAX_BYTES,
        ))
        .with_state(master.clone());
    // Open to anyone: load balancers probe these, and the page holds no data (it asks for a
    // token when the API answers 401).
    let open = Router::new()
        .route("/", get(dashboard))
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .with_state(master.clone());
    let mut api = Router::new()
        .route("/metrics", get(metrics))
        .route("/v2/apps", get(list_apps).post(create_app))
        .route(
            "/v2/apps/{*id}",
            get(get_app_or_tasks).put(put_app).delete(delete_app),
        )
        .route("/v2/tasks", get(list_tasks))
        .route("/v2/deployments", get(list_deployments))
        .route("/v2/info", get(info))
        .route("/v2/leader", get(leader))
        .route("/cluster/v1/nodes", get(nodes))
        .route("/cluster/v1/masters", get(masters).post(add_master))
        .route("/cluster/v1/masters/{id}", delete(remove_master))
        .route("/cluster/v1/agents/{id}/drain", post(drain_agent))
        .route("/cluster/v1/agents/{id}", delete(remove_agent))
        .fallback(|| async { api_error(ApiError::not_found("no such endpoint")) })
        .layer(middleware::from_fn_with_state(
            master.clone(),
            writes_to_leader,
        ));
    // Added after `writes_to_leader`, so it runs before it.
    if let Some(auth) = auth {
        api = api.layer(middleware::from_fn_with_state(auth, require_token));
    }
    let api = api.layer(DefaultBodyLimit::max(API_BODY_MAX_BYTES));
    internal
        .merge(open)
        .merge(api)
        .layer(middleware::from_fn_with_state(master.clone(), observe))
        .with_state(master)
}

/// Writes go to the leader: a follower answers them with 307 to the same path on the leader
/// (`Location` and `X-Dcos-Leader`), or 503 while no leader is known. Reads are served here.
async fn writes_to_leader(
    State(master): State<Arc<Master>>,
    request: Request,
    next: Next,
) -> Response {
    let read_only = matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    if read_only || master.raft.is_leader() {
        return next.run(request).await;
    }
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    not_leader_response(&master, path)
}

/// 307 to the leader (if known) for `path`, else 503.
pub(crate) fn not_leader_response(master: &Master, path: &str) -> Response {
    match master.raft.leader() {
        Some((leader_id, leader_url)) if leader_id != master.raft.status().node_id => {
            let location = format!("{leader_url}{path}");
            let error = ApiError::new(
                307,
                "not_leader",
                format!("this master is not the leader; send writes to master {leader_id} at {leader_url}"),
            )
            .with_details(serde_json::json!({ "leader": leader_url, "leaderId": leader_id }));
            (
                StatusCode::TEMPORARY_REDIRECT,
                [
                    (header::LOCATION, location),
                    (header::HeaderName::from_static(LEADER_HEADER), leader_url),
                ],
                Json(error),
            )
                .into_response()
        }
        _ => api_error(
            ApiError::new(503, "no_leader", "no master leads right now (an election is under way or a majority of masters is unreachable); retry shortly"),
        ),
    }
}

/// The header naming the leader's URL on redirects (DESIGN.md §3).
pub const LEADER_HEADER: &str = "x-dcos-leader";

async fn raft_rpc(
    State(master): State<Arc<Master>>,
    Path(rpc): Path<String>,
    crate::tls::Peer(peer): crate::tls::Peer,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match peer {
        Some(peer) if peer.role == crate::tls::Role::Master => {}
        _ => {
            return api_error(ApiError::new(
                403,
                "forbidden",
                "raft RPCs are accepted only from masters presenting a cluster certificate with the master role",
            ))
        }
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            return api_error(ApiError::new(
                rejection.status().as_u16(),
                "bad_request",
                format!("raft rpc body: {}", rejection.body_text()),
            ))
        }
    };
    match master.raft.serve_rpc(&rpc, &body).await {
        Ok(answer) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            answer,
        )
            .into_response(),
        Err(e) => api_error(ApiError::bad_request(e.to_string())),
    }
}

async fn masters(State(master): State<Arc<Master>>) -> Json<dcos_raft::RaftStatus> {
    Json(master.raft.status())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AddMaster {
    id: u64,
    url: String,
}

/// Adds a master: as a learner first, promoted to voter once it has caught up.
async fn add_master(
    State(master): State<Arc<Master>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let value = match parse_json(body) {
        Ok(value) => value,
        Err(error) => return api_error(error),
    };
    let add: AddMaster = match serde_path_to_error::deserialize(value) {
        Ok(add) => add,
        Err(e) => {
            return api_error(ApiError::invalid(&[FieldError::new(
                e.path().to_string(),
                e.inner().to_string(),
            )]))
        }
    };
    if add.id == 0 {
        return api_error(ApiError::invalid(&[FieldError::new(
            "id",
            "must be at least 1",
        )]));
    }
    if let Err(message) = super::config::check_url("url", &add.url) {
        let reason = message.trim_start_matches("url: ").to_string();
        return api_error(ApiError::invalid(&[FieldError::new("url", reason)]));
    }
    let url = add.url.trim_end_matches('/');
    if let Err(e) = master.raft.add_learner(add.id, url).await {
        return api_error(membership_error(e));
    }
    if let Err(e) = master.raft.promote(add.id).await {
        return api_error(membership_error(e));
    }
    tracing::info!(node_id = add.id, url, "master added and promoted to voter");
    json_ok(&master.raft.status())
}

async fn remove_master(State(master): State<Arc<Master>>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return api_error(ApiError::invalid(&[FieldError::new(
            "id",
            format!("{id:?} is not a master id (a number)"),
        )]));
    };
    match master.raft.remove_member(id).await {
        Ok(()) => {
            tracing::info!(node_id = id, "master removed from the membership");
            json_ok(&master.raft.status())
        }
        Err(e) => api_error(membership_error(e)),
    }
}

fn membership_error(error: RaftError) -> ApiError {
    match error {
        RaftError::Membership(message) => ApiError::conflict(message),
        other => raft_error(other),
    }
}

async fn observe(State(master): State<Arc<Master>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    master.metrics.observe_request(
        &route,
        &method,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

async fn dashboard() -> Html<&'static str> {
    Html(DASHBOARD_HTML)
}

async fn ready(State(master): State<Arc<Master>>) -> Response {
    if master.raft.is_leader() || master.raft.status().leader_id.is_some() {
        (StatusCode::OK, "ready").into_response()
    } else {
        api_error(ApiError::unavailable("no Raft leader yet"))
    }
}

async fn metrics(State(master): State<Arc<Master>>) -> Response {
    let status = master.raft.status();
    let body = master.read(|s| master.metrics.render(s, &status));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn list_apps(State(master): State<Arc<Master>>) -> Json<AppsEnvelope> {
    Json(master.read(|s| AppsEnvelope {
        apps: s.apps.values().map(|a| app_view(s, a)).collect(),
    }))
}

fn raft_error(error: RaftError) -> ApiError {
    match error {
        RaftError::NotLeader {
            ref leader_addr, ..
        } => {
            let details = serde_json::json!({ "leader": leader_addr });
            ApiError::new(503, "not_leader", format!("this master lost its leadership during the request ({error}); retry against the leader"))
                .with_details(details)
        }
        other => ApiError::unavailable(format!("the cluster state could not be written: {other}")),
    }
}

fn reject_error(reject: Reject) -> ApiError {
    match &reject {
        Reject::AppExists { .. }
        | Reject::TaskExists { .. }
        | Reject::TaskNotTerminal { .. }
        | Reject::AgentInUse { .. }
        | Reject::AgentRemoved { .. } => ApiError::conflict(reject.to_string()),
        Reject::UnknownApp { .. } | Reject::UnknownTask { .. } | Reject::UnknownAgent { .. } => {
            ApiError::not_found(reject.to_string())
        }
        _ => ApiError::new(422, "rejected", reject.to_string()),
    }
}

/// Parses an app definition, naming the field of any type error and every invalid field.
pub fn parse_app(value: serde_json::Value) -> Result<AppSpec, ApiError> {
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "an app definition must be a JSON object",
        ));
    }
    let mut spec: AppSpec = serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." {
            "(root)".to_string()
        } else {
            field
        };
        ApiError::invalid(&[FieldError::new(field, e.inner().to_string())])
    })?;
    spec.normalize_and_validate()
        .map_err(|errors| ApiError::invalid(&errors))?;
    Ok(spec)
}

fn parse_json(body: Result<Bytes, BytesRejection>) -> Result<serde_json::Value, ApiError> {
    let body = body.map_err(|rejection| {
        let status = rejection.status().as_u16();
        let code = if status == 413 {
            "too_large"
        } else {
            "bad_request"
        };
        ApiError::new(
            status,
            code,
            format!("request body: {}", rejection.body_text()),
        )
    })?;
    serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))
}

/// Checks that need the cluster: some agent is big enough, and the image exists.
async fn check_against_cluster(master: &Master, spec: &AppSpec) -> Result<(), ApiError> {
    let needed = spec.resources();
    let largest = master.read(|s| {
        s.agents
            .values()
            .filter(|a| a.state == AgentState::Active)
            .map(|a| a.resources)
            .fold(None, |best: Option<dcos_core::Resources>, r| match best {
                Some(b) => Some(dcos_core::Resources {
                    cpus_milli: b.cpus_milli.max(r.cpus_milli),
                    mem_mib: b.mem_mib.max(r.mem_mib),
                    disk_mib: b.disk_mib.max(r.disk_mib),
                }),
                None => Some(r),
            })
    });
    if let Some(largest) = largest {
        let checks = [
            (
                "cpus",
                needed.cpus_milli > largest.cpus_milli,
                spec.cpus,
                largest.cpus(),
                "cpus",
            ),
            (
                "mem",
                needed.mem_mib > largest.mem_mib,
                spec.mem,
                largest.mem_mib as f64,
                "MiB",
            ),
            (
                "disk",
                needed.disk_mib > largest.disk_mib,
                spec.disk,
                largest.disk_mib as f64,
                "MiB",
            ),
        ];
        let errors: Vec<FieldError> = checks
            .iter()
            .filter(|(_, too_big, ..)| *too_big)
            .map(|(field, _, asked, offered, unit)| {
                FieldError::new(
                    *field,
                    format!(
                        "{asked} {unit} is more than any agent offers (largest: {offered} {unit})"
                    ),
                )
            })
            .collect();
        if !errors.is_empty() {
            return Err(ApiError::invalid(&errors));
        }
    }
    let ranges: Vec<dcos_core::PortRange> = master.read(|s| {
        s.agents
            .values()
            .filter(|a| a.state == AgentState::Active)
            .flat_map(|a| a.ports.iter().copied())
            .collect()
    });
    if !ranges.is_empty() {
        let errors: Vec<FieldError> = spec
            .port_definitions
            .iter()
            .enumerate()
            .filter(|(_, d)| d.port != 0 && !ranges.iter().any(|r| r.contains(d.port)))
            .map(|(i, d)| {
                FieldError::new(
                    format!("portDefinitions[{i}].port"),
                    format!(
                        "port {} is outside every agent's port range ({ranges:?}); use 0 for any",
                        d.port
                    ),
                )
            })
            .collect();
        if !errors.is_empty() {
            return Err(ApiError::invalid(&errors));
        }
    }
    if let Some(image) = spec.image() {
        if !master.image_available(image).await {
            return Err(ApiError::invalid(&[FieldError::new(
                "container.docker.image",
                format!("image {image} is not on any agent (import it with `dcos-rs image import <tarball>`)"),
            )]));
        }
    }
    Ok(())
}

async fn create_app(
    State(master): State<Arc<Master>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let spec = parse_app(parse_json(body)?)?;
        check_against_cluster(&master, &spec).await?;
        let at_ms = now_ms();
        let command = Command::PutApp {
            app: spec.clone(),
            create: true,
            at_ms,
            deployment_id: random_id(),
        };
        match master.write(command).await.map_err(raft_error)? {
            Outcome::Applied => Ok(master.read(|s| s.apps.get(&spec.id).map(|a| app_view(s, a)))),
            Outcome::Rejected(reject) => Err(reject_error(reject)),
        }
    }
    .await;
    match result {
        Ok(Some(view)) => (StatusCode::CREATED, Json(view)).into_response(),
        Ok(None) => api_error(ApiError::conflict(
            "the app was removed right after it was created",
        )),
        Err(e) => api_error(e),
    }
}

async fn get_app_or_tasks(State(master): State<Arc<Master>>, Path(rest): Path<String>) -> Response {
    let (id, tasks) = match rest.strip_suffix("/tasks") {
        Some(id) => (dcos_core::app::normalize_app_id(id), true),
        None => (dcos_core::app::normalize_app_id(&rest), false),
    };
    master.read(|s| match s.apps.get(&id) {
        None => api_error(ApiError::not_found(format!("app {id} does not exist"))),
        Some(app) if tasks => json_ok(&TasksEnvelope {
            tasks: s
                .tasks_of_app(&app.spec.id)
                .map(|t| task_view(s, t))
                .collect(),
        }),
        Some(app) => json_ok(&AppEnvelope {
            app: app_view(s, app),
        }),
    })
}

/// Marathon's PUT: fields given replace the current ones (a partial update); an app that
/// does not exist is created. A change of `instances` alone is a scale.
async fn put_app(
    State(master): State<Arc<Master>>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let id = dcos_core::app::normalize_app_id(&id);
    let result = async {
        let patch = parse_json(body)?;
        let Some(patch_fields) = patch.as_object() else {
            return Err(ApiError::bad_request(
                "an app definition must be a JSON object",
            ));
        };
        if let Some(body_id) = patch_fields.get("id").and_then(|v| v.as_str()) {
            if dcos_core::app::normalize_app_id(body_id) != id {
                return Err(ApiError::invalid(&[FieldError::new(
                    "id",
                    format!("does not match the app in the URL ({id})"),
                )]));
            }
        }
        let current = master.read(|s| s.apps.get(&id).map(|a| a.spec.clone()));
        let mut merged = match &current {
            Some(spec) => {
                serde_json::to_value(spec).map_err(|e| ApiError::internal(e.to_string()))?
            }
            None => serde_json::json!({}),
        };
        let merged_fields = merged
            .as_object_mut()
            .expect("an app serializes to an object");
        for (k, v) in patch_fields {
            merged_fields.insert(k.clone(), v.clone());
        }
        merged_fields.insert("id".into(), serde_json::Value::String(id.clone()));
        let spec = parse_app(merged)?;
        let at_ms = now_ms();
        let deployment_id = random_id();
        let command = match &current {
            Some(old) if !old.config_differs(&spec) => Command::ScaleApp {
                app_id: id.clone(),
                instances: spec.instances,
                at_ms,
                deployment_id: deployment_id.clone(),
            },
            _ => {
                check_against_cluster(&master, &spec).await?;
                Command::PutApp {
                    app: spec,
                    create: false,
                    at_ms,
                    deployment_id: deployment_id.clone(),
                }
            }
        };
        match master.write(command).await.map_err(raft_error)? {
            Outcome::Applied => Ok(DeploymentResult {
                version: iso8601(at_ms),
                deployment_id,
            }),
            Outcome::Rejected(reject) => Err(reject_error(reject)),
        }
    }
    .await;
    match result {
        Ok(result) => json_ok(&result),
        Err(e) => api_error(e),
    }
}

async fn delete_app(State(master): State<Arc<Master>>, Path(id): Path<String>) -> Response {
    let id = dcos_core::app::normalize_app_id(&id);
    let at_ms = now_ms();
    match master.write(Command::RemoveApp { app_id: id, at_ms }).await {
        Ok(Outcome::Applied) => json_ok(&DeploymentResult {
            version: iso8601(at_ms),
            deployment_id: random_id(),
        }),
        Ok(Outcome::Rejected(reject)) => api_error(reject_error(reject)),
        Err(e) => api_error(raft_error(e)),
    }
}

/// `POST /cluster/v1/agents/{id}/drain`: no new tasks on the agent, and the services
/// framework moves its tasks elsewhere (start-then-stop, each with its kill grace). Answers
/// the agent as `/cluster/v1/nodes` shows it ("draining", with its remaining tasks).
async fn drain_agent(State(master): State<Arc<Master>>, Path(id): Path<String>) -> Response {
    match master
        .write(Command::DrainAgent {
            agent_id: id.clone(),
        })
        .await
    {
        Ok(Outcome::Applied) => {
            tracing::info!(agent = %id, "agent draining");
            match master.read(|s| s.agents.get(&id).map(|a| dcos_api::agent_view(s, a))) {
                Some(view) => json_ok(&view),
                None => api_error(ApiError::not_found(format!("agent {id} is gone"))),
            }
        }
        Ok(Outcome::Rejected(reject)) => api_error(reject_error(reject)),
        Err(e) => api_error(raft_error(e)),
    }
}

/// `DELETE /cluster/v1/agents/{id}`: forgets a drained agent (no tasks left) or an
/// unreachable one (its tasks become TASK_LOST); the id may not register again.
async fn remove_agent(State(master): State<Arc<Master>>, Path(id): Path<String>) -> Response {
    let at_ms = now_ms();
    match master
        .write(Command::RemoveAgent {
            agent_id: id.clone(),
            at_ms,
        })
        .await
    {
        Ok(Outcome::Applied) => {
            tracing::info!(agent = %id, "agent removed");
            master.disconnect(&id);
            json_ok(&serde_json::json!({ "removed": id }))
        }
        Ok(Outcome::Rejected(reject)) => api_error(reject_error(reject)),
        Err(e) => api_error(raft_error(e)),
    }
}

async fn list_tasks(State(master): State<Arc<Master>>) -> Json<TasksEnvelope> {
    Json(master.read(|s| TasksEnvelope {
        tasks: s.tasks.values().map(|t| task_view(s, t)).collect(),
    }))
}

/// Deployments in progress: one per app that has not converged on its definition.
async fn list_deployments(State(master): State<Arc<Master>>) -> Json<serde_json::Value> {
    Json(master.read(|s| {
        let deployments: Vec<serde_json::Value> = s
            .apps
            .values()
            .filter(|app| {
                let tasks: Vec<_> = s.tasks_of_app(&app.spec.id).collect();
                !app_converged(app, &tasks)
            })
            .map(|app| {
                serde_json::json!({
                    "id": app.deployment_id,
                    "version": iso8601(app.version_ms),
                    "affectedApps": [app.spec.id],
                })
            })
            .collect();
        serde_json::Value::Array(deployments)
    }))
}

async fn info(State(master): State<Arc<Master>>) -> Json<serde_json::Value> {
    let status = master.raft.status();
    Json(serde_json::json!({
        "name": "dcos-rs",
        "version": env!("CARGO_PKG_VERSION"),
        "leader": status.leader_addr,
        "elected": status.role == "leader",
        "frameworkId": "dcos-rs-services",
        "raft": status,
    }))
}

/// Marathon's `/v2/leader`: the leader as any master knows it.
async fn leader(State(master): State<Arc<Master>>) -> Response {
    match master.raft.leader() {
        Some((leader_id, url)) => {
            json_ok(&serde_json::json!({ "leader": url, "leaderId": leader_id }))
        }
        None => api_error(ApiError::not_found("no master leads right now")),
    }
}

async fn nodes(State(master): State<Arc<Master>>) -> Json<NodesView> {
    let status = master.raft.status();
    let mut masters: Vec<MasterView> = status
        .members
        .iter()
        .map(|m| {
            let me = m.node_id == status.node_id;
            MasterView {
                id: m.node_id,
                url: m.addr.clone(),
                role: if me {
                    status.role.clone()
                } else {
                    m.role.clone()
                },
                term: status.term,
                last_log_index: if me {
                    Some(status.last_log_index)
                } else {
                    m.matched_index
                },
                commit_index: me.then_some(status.commit_index),
                lag: m.lag,
            }
        })
        .collect();
    if !masters.iter().any(|m| m.id == status.node_id) {
        // A master that is not (yet) in the membership it knows of still shows itself.
        masters.push(MasterView {
            id: status.node_id,
            url: master.url.clone(),
            role: status.role.clone(),
            term: status.term,
            last_log_index: Some(status.last_log_index),
            commit_index: Some(status.commit_index),
            lag: None,
        });
    }
    Json(master.read(|s| NodesView {
        masters,
        agents: s.agents.values().map(|a| agent_view(s, a)).collect(),
    }))
}

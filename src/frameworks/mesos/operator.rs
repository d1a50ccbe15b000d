//! What operators and tools read and set of frameworks: Mesos's operator API (`POST
//! /api/v1`: GET_HEALTH, GET_VERSION, GET_STATE, GET_FRAMEWORKS, GET_AGENTS, GET_TASKS,
//! GET_ROLES, GET_WEIGHTS, UPDATE_WEIGHTS, GET_QUOTA, UPDATE_QUOTA, SET_QUOTA, REMOVE_QUOTA,
//! TEARDOWN, and SUBSCRIBE: `stream.rs`), Mesos's JSON endpoints (`/master/state`, `/master/state-summary`,
//! `/master/frameworks`, `/master/roles`, `/weights`, `/quota`, `POST /master/teardown`),
//! and this system's own `/cluster/v1/frameworks` and `/cluster/v1/roles` (what `dcos-rs
//! framework` and `dcos-rs role` show).
//!
//! The built-in services and jobs frameworks appear in all of them as frameworks (named
//! `marathon` and `metronome`, as Marathon and Metronome registered with Mesos), under the
//! ids `dcos-rs-services` and `dcos-rs-jobs`; they cannot be torn down.

mod stream;

use super::{wire, wire_state, Mesos, MESOS_API_VERSION};
use crate::http_util::{api_error, json_ok};
use crate::master::http::{raft_error, reject_error};
use crate::master::Master;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Extension;
use dcos_api::{frameworks_view, ApiError, FrameworkView};
use dcos_core::mesos::allocator::RoleConfig;
use dcos_core::mesos::state::{check_role, framework_of, DEFAULT_ROLE};
use dcos_core::{ClusterState, Command, Outcome, Resources, Task, TaskOwner};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The operator API's path.
pub const OPERATOR: &str = "/api/v1";
/// This system's list of frameworks, and one of them.
pub const FRAMEWORKS: &str = "/cluster/v1/frameworks";
pub const FRAMEWORK: &str = "/cluster/v1/frameworks/{id}";
/// Roles with their weights, quotas and frameworks.
pub const ROLES: &str = "/cluster/v1/roles";

pub fn routes() -> axum::Router<Arc<Master>> {
    axum::Router::new()
        .route(OPERATOR, post(operator))
        .route(FRAMEWORKS, get(frameworks))
        .route(FRAMEWORK, get(framework).delete(remove_framework))
        .route(ROLES, get(roles))
        .route("/master/state", get(master_state))
        .route("/master/state-summary", get(state_summary))
        .route("/master/frameworks", get(master_frameworks))
        .route("/master/roles", get(master_roles))
        .route("/master/teardown", post(master_teardown))
        .route("/weights", get(get_weights).put(put_weights))
        .route("/master/weights", get(get_weights).put(put_weights))
        .route("/quota", get(get_quota).post(post_quota))
        .route("/master/quota", get(get_quota).post(post_quota))
        .route("/quota/{*role}", axum::routing::delete(delete_quota))
        .route("/master/quota/{*role}", axum::routing::delete(delete_quota))
}

fn bad_request(message: impl Into<String>) -> Response {
    api_error(ApiError::bad_request(message))
}

/// What the leader's outstanding offers hold, by framework (nothing on a follower).
async fn offered(mesos: &Mesos) -> BTreeMap<String, Resources> {
    let inner = mesos.inner.lock().await;
    let mut held: BTreeMap<String, Resources> = BTreeMap::new();
    for offer in inner.allocator.iter().flat_map(|a| a.offers()) {
        let sum = held.entry(offer.framework_id.clone()).or_default();
        *sum = sum.add(&offer.resources);
    }
    held
}

async fn views(master: &Master, mesos: &Mesos, with_tasks: bool) -> Vec<FrameworkView> {
    let offered = offered(mesos).await;
    master.read(|s| frameworks_view(s, &offered, &|state| wire_state(state, true), with_tasks))
}

/// `GET /cluster/v1/frameworks`: every framework with its state, share and task counts.
async fn frameworks(
    State(master): State<Arc<Master>>,
    Extension(mesos): Extension<Arc<Mesos>>,
) -> Response {
    json_ok(&views(&master, &mesos, false).await)
}

/// `GET /cluster/v1/frameworks/{id}`: one framework with its tasks.
async fn framework(
    State(master): State<Arc<Master>>,
    Extension(mesos): Extension<Arc<Mesos>>,
    Path(id): Path<String>,
) -> Response {
    match views(&master, &mesos, true)
        .await
        .into_iter()
        .find(|v| v.id == id)
    {
        Some(view) => json_ok(&view),
        None => api_error(ApiError::not_found(format!(
            "framework {id} is not registered (dcos-rs framework list shows those that are)"
        ))),
    }
}

/// `DELETE /cluster/v1/frameworks/{id}`: tears the framework down (its tasks are killed).
async fn remove_framework(
    State(master): State<Arc<Master>>,
    Extension(mesos): Extension<Arc<Mesos>>,
    Path(id): Path<String>,
) -> Response {
    match tear_down(&master, &mesos, &id).await {
        Ok(()) => json_ok(&json!({ "id": id, "removed": true })),
        Err(response) => response,
    }
}

/// Removes framework `id` as an operator asked: refused for the built-in ones and for an
/// id that is not registered.
async fn tear_down(master: &Arc<Master>, mesos: &Arc<Mesos>, id: &str) -> Result<(), Response> {
    if id == super::SERVICES_FRAMEWORK_ID || id == super::JOBS_FRAMEWORK_ID {
        return Err(bad_request(format!(
            "{id} is a built-in framework and cannot be torn down: remove its apps or jobs instead"
        )));
    }
    let removed = Command::RemoveFramework {
        framework_id: id.to_string(),
        at_ms: crate::link::now_ms(),
    };
    match master.write(removed).await {
        Ok(Outcome::Applied) => {}
        Ok(Outcome::Rejected(reject)) => return Err(api_error(reject_error(reject))),
        Err(e) => return Err(api_error(raft_error(e))),
    }
    tracing::info!(framework = %id, "framework torn down by an operator: its tasks are killed");
    super::http::forget(mesos, id).await;
    Ok(())
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct RoleView {
    role: String,
    weight: f64,
    guarantee: dcos_api::ResourcesView,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<dcos_api::ResourcesView>,
    frameworks: Vec<String>,
    used: dcos_api::ResourcesView,
    share: f64,
}

/// Every role that has settings or frameworks: weight, quota, frameworks, use.
fn role_views(state: &ClusterState) -> Vec<RoleView> {
    let frameworks = frameworks_view(state, &BTreeMap::new(), &|s| wire_state(s, true), false);
    let mut roles: BTreeSet<String> = state.frameworks.roles.keys().cloned().collect();
    roles.extend(frameworks.iter().map(|f| f.role.clone()));
    let total = cluster_total(state);
    roles
        .into_iter()
        .map(|role| {
            let config = state.frameworks.role(&role);
            let members: Vec<&FrameworkView> =
                frameworks.iter().filter(|f| f.role == role).collect();
            let used = state
                .tasks
                .values()
                .filter(|t| !t.state.is_terminal() && t.holds_resources())
                .filter(|t| members.iter().any(|f| f.id == framework_of(&t.owner)))
                .fold(Resources::default(), |sum, t| sum.add(&t.resources));
            RoleView {
                weight: config.weight,
                guarantee: config.guarantee.into(),
                limit: config.limit.map(Into::into),
                frameworks: members.iter().map(|f| f.id.clone()).collect(),
                used: used.into(),
                share: dcos_api::cluster::dominant_share(&used, &total),
                role,
            }
        })
        .collect()
}

/// `GET /cluster/v1/roles`.
async fn roles(State(master): State<Arc<Master>>) -> Response {
    json_ok(&master.read(role_views))
}

fn cluster_total(state: &ClusterState) -> Resources {
    state
        .agents
        .values()
        .filter(|a| a.state == dcos_core::AgentState::Active)
        .fold(Resources::default(), |sum, a| sum.add(&a.resources))
}

// ---------------------------------------------------------------------------------------
// Mesos's JSON model (`/master/*`): resources as `{cpus, mem, disk, gpus, ports}`, times in
// seconds.

fn resources_model(r: &Resources, ports: Option<String>) -> Value {
    let mut model = json!({
        "cpus": r.cpus(),
        "mem": r.mem_mib as f64,
        "disk": r.disk_mib as f64,
        "gpus": 0.0,
    });
    if let Some(ports) = ports {
        model["ports"] = json!(ports);
    }
    model
}

fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// A task's id as its framework knows it.
fn own_task_id(task: &Task) -> &str {
    match &task.owner {
        TaskOwner::Framework { .. } => super::framework_task_id(task),
        _ => task.id.as_str(),
    }
}

/// A task in Mesos's JSON model.
pub(super) fn task_model(task: &Task) -> Value {
    let id = own_task_id(task);
    json!({
        "id": id,
        "name": id,
        "framework_id": framework_of(&task.owner),
        "executor_id": "",
        "slave_id": task.agent_id,
        "state": wire_state(task.state, true),
        "resources": resources_model(&task.resources, None),
        "role": DEFAULT_ROLE,
        "statuses": [{
            "state": wire_state(task.state, true),
            "timestamp": seconds(task.updated_at_ms),
        }],
    })
}

/// `[31000-31099, 32000-32000]`, as Mesos's model writes a ports resource.
fn ports_text(agent: &dcos_core::Agent) -> Option<String> {
    (!agent.ports.is_empty()).then(|| {
        let ranges: Vec<String> = agent
            .ports
            .iter()
            .map(|r| format!("{}-{}", r.begin, r.end))
            .collect();
        format!("[{}]", ranges.join(", "))
    })
}

fn agent_model(state: &ClusterState, agent: &dcos_core::Agent, offered: &Resources) -> Value {
    let used = state.used_resources(&agent.id);
    let active = agent.state == dcos_core::AgentState::Active;
    json!({
        "id": agent.id,
        "hostname": agent.hostname,
        "pid": format!("slave(1)@{}", agent.url.trim_start_matches("https://").trim_start_matches("http://")),
        "registered_time": seconds(agent.registered_at_ms),
        "resources": resources_model(&agent.resources, ports_text(agent)),
        "used_resources": resources_model(&used, None),
        "offered_resources": resources_model(offered, None),
        "reserved_resources": {},
        "unreserved_resources": resources_model(&agent.resources, ports_text(agent)),
        "attributes": agent.attributes,
        "active": active,
        "deactivated": !active || state.draining.contains(&agent.id),
        "version": MESOS_API_VERSION,
    })
}

fn framework_model(view: &FrameworkView, state: &ClusterState, full: bool) -> Value {
    let used = Resources::of(view.used.cpus, view.used.mem as f64, view.used.disk as f64);
    let offered = Resources::of(
        view.offered.cpus,
        view.offered.mem as f64,
        view.offered.disk as f64,
    );
    let connected = view.state != "disconnected";
    let mut model = json!({
        "id": view.id,
        "name": view.name,
        "user": view.user,
        "role": view.role,
        "hostname": view.hostname.clone().unwrap_or_default(),
        "principal": view.principal,
        "capabilities": view.capabilities.iter().map(|c| json!({"type": c})).collect::<Vec<_>>(),
        "failover_timeout": view.failover_timeout_seconds.unwrap_or(0.0),
        "checkpoint": true,
        "active": connected,
        "connected": connected,
        "recovered": false,
        "registered_time": view.registered_at.as_deref().and_then(dcos_core::time::parse_iso8601).map_or(0.0, seconds),
        "unregistered_time": 0,
        "resources": resources_model(&used.add(&offered), None),
        "used_resources": resources_model(&used, None),
        "offered_resources": resources_model(&offered, None),
        "webui_url": "",
    });
    for (label, count) in &view.tasks_by_state {
        model[label] = json!(count);
    }
    if full {
        let (live, ended): (Vec<&Task>, Vec<&Task>) = state
            .tasks
            .values()
            .filter(|t| framework_of(&t.owner) == view.id)
            .partition(|t| !t.state.is_terminal());
        model["tasks"] = json!(live.into_iter().map(task_model).collect::<Vec<_>>());
        model["completed_tasks"] = json!(ended.into_iter().map(task_model).collect::<Vec<_>>());
        model["unreachable_tasks"] = json!([]);
        model["offers"] = json!([]);
        model["executors"] = json!([]);
    } else {
        let agents: BTreeSet<&str> = state
            .tasks
            .values()
            .filter(|t| framework_of(&t.owner) == view.id && !t.state.is_terminal())
            .map(|t| t.agent_id.as_str())
            .collect();
        model["slave_ids"] = json!(agents);
    }
    model
}

/// What the leader's outstanding offers hold, by agent.
async fn offered_on(mesos: &Mesos) -> BTreeMap<String, Resources> {
    let inner = mesos.inner.lock().await;
    let mut held: BTreeMap<String, Resources> = BTreeMap::new();
    for offer in inner.allocator.iter().flat_map(|a| a.offers()) {
        let sum = held.entry(offer.agent_id.clone()).or_default();
        *sum = sum.add(&offer.resources);
    }
    held
}

fn leader_info(master: &Master) -> Value {
    let status = master.raft.status();
    let hostname = |url: &str| {
        url.trim_start_matches("https://")
            .trim_start_matches("http://")
            .split(':')
            .next()
            .unwrap_or_default()
            .to_string()
    };
    json!({
        "id": status.node_id.to_string(),
        "hostname": hostname(&master.url),
        "leader": status.leader_addr.clone().unwrap_or_default(),
        "leader_hostname": status.leader_addr.as_deref().map(hostname).unwrap_or_default(),
    })
}

/// `GET /master/state`.
async fn master_state(
    State(master): State<Arc<Master>>,
    Extension(mesos): Extension<Arc<Mesos>>,
) -> Response {
    let views = views(&master, &mesos, false).await;
    let offered = offered_on(&mesos).await;
    let info = leader_info(&master);
    let body = master.read(|s| {
        let active = s
            .agents
            .values()
            .filter(|a| a.state == dcos_core::AgentState::Active)
            .count();
        json!({
            "version": MESOS_API_VERSION,
            "git_tag": env!("CARGO_PKG_VERSION"),
            "id": info["id"],
            "hostname": info["hostname"],
            "leader": info["leader"],
            "activated_slaves": active,
            "deactivated_slaves": s.agents.len() - active,
            "unreachable_slaves": s.agents.values().filter(|a| a.state == dcos_core::AgentState::Unreachable).count(),
            "slaves": s.agents.values().map(|a| agent_model(s, a, &offered.get(&a.id).copied().unwrap_or_default())).collect::<Vec<_>>(),
            "frameworks": views.iter().map(|v| framework_model(v, s, true)).collect::<Vec<_>>(),
            "completed_frameworks": s.frameworks.removed.iter().map(|id| json!({"id": id, "active": false, "connected": false})).collect::<Vec<_>>(),
            "orphan_tasks": [],
            "unregistered_frameworks": [],
        })
    });
    json_ok(&body)
}

/// `GET /master/state-summary`: agents and frameworks with task counts, without tasks.
async fn state_summary(
    State(master): State<Arc<Master>>,
    Extension(mesos): Extension<Arc<Mesos>>,
) -> Response {
    let views = views(&master, &mesos, false).await;
    let offered = offered_on(&mesos).await;
    let info = leader_info(&master);
    let body = master.read(|s| {
        let slaves: Vec<Value> = s
            .agents
            .values()
            .map(|a| {
                let mut model = agent_model(s, a, &offered.get(&a.id).copied().unwrap_or_default());
                let mut frameworks = BTreeSet::new();
                for task in s.tasks.values().filter(|t| t.agent_id == a.id) {
                    let label = wire_state(task.state, true);
                    let count = model[label].as_u64().unwrap_or(0);
                    model[label] = json!(count + 1);
                    if !task.state.is_terminal() {
                        frameworks.insert(framework_of(&task.owner).to_string());
                    }
                }
                model["framework_ids"] = json!(frameworks);
                model
            })
            .collect();
        json!({
            "hostname": info["hostname"],
            "cluster": "dcos-rs",
            "slaves": slaves,
            "frameworks": views.iter().map(|v| framework_model(v, s, false)).collect::<Vec<_>>(),
        })
    });
    json_ok(&body)
}

/// `GET /master/frameworks`.
async fn master_frameworks(
    State(master): State<Arc<Master>>,
    Extension(mesos): Extension<Arc<Mesos>>,
) -> Response {
    let views = views(&master, &mesos, false).await;
    let body = master.read(|s| {
        json!({
            "frameworks": views.iter().map(|v| framework_model(v, s, true)).collect::<Vec<_>>(),
            "completed_frameworks": [],
            "unregistered_frameworks": [],
        })
    });
    json_ok(&body)
}

/// `GET /master/roles`: Mesos's `{"roles": [{name, weight, frameworks, resources}]}`.
async fn master_roles(State(master): State<Arc<Master>>) -> Response {
    let roles: Vec<Value> = master.read(|s| {
        role_views(s)
            .into_iter()
            .map(|r| {
                let used = Resources::of(r.used.cpus, r.used.mem as f64, r.used.disk as f64);
                json!({
                    "name": r.role,
                    "weight": r.weight,
                    "frameworks": r.frameworks,
                    "resources": resources_model(&used, None),
                })
            })
            .collect()
    });
    json_ok(&json!({ "roles": roles }))
}

/// `POST /master/teardown` with the form `frameworkId=<id>`: 200 with an empty body.
async fn master_teardown(
    State(master): State<Arc<Master>>,
    Extension(mesos): Extension<Arc<Mesos>>,
    body: Bytes,
) -> Response {
    let text = String::from_utf8_lossy(&body);
    let id = text.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == "frameworkId").then(|| percent_decode(value))
    });
    let Some(id) = id.filter(|id| !id.is_empty()) else {
        return bad_request("the form field frameworkId names the framework to tear down");
    };
    match tear_down(&master, &mesos, &id).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(response) => response,
    }
}

/// `+` and `%XX` of a form value decoded (invalid escapes kept as written).
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'+', _, _) => out.push(b' '),
            (b'%', Some(high), Some(low)) => {
                out.push(high << 4 | low);
                i += 2;
            }
            (b, _, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------
// Weights and quota.

fn weight_infos(state: &ClusterState) -> Vec<Value> {
    state
        .frameworks
        .roles
        .iter()
        .filter(|(_, c)| c.weight != 1.0)
        .map(|(role, c)| json!({ "role": role, "weight": c.weight }))
        .collect()
}

/// Mesos's `QuotaStatus`: `infos` (the guarantees, as resource lists) and `configs`
/// (guarantees and limits as maps of scalars).
fn quota_status(state: &ClusterState) -> Value {
    let scalars = |r: &Resources| {
        let mut map = serde_json::Map::new();
        map.insert("cpus".into(), json!({ "value": r.cpus() }));
        map.insert("mem".into(), json!({ "value": r.mem_mib as f64 }));
        if r.disk_mib > 0 {
            map.insert("disk".into(), json!({ "value": r.disk_mib as f64 }));
        }
        Value::Object(map)
    };
    let with_quota: Vec<(&String, &RoleConfig)> = state
        .frameworks
        .roles
        .iter()
        .filter(|(_, c)| c.guarantee != Resources::default() || c.limit.is_some())
        .collect();
    json!({
        "infos": with_quota.iter().map(|(role, c)| json!({
            "role": role,
            "guarantee": wire::resources_of(&c.guarantee),
        })).collect::<Vec<_>>(),
        "configs": with_quota.iter().map(|(role, c)| {
            let mut config = json!({ "role": role, "guarantees": scalars(&c.guarantee) });
            if let Some(limit) = &c.limit {
                config["limits"] = scalars(limit);
            }
            config
        }).collect::<Vec<_>>(),
    })
}

/// Writes a weights or quota change: 400 naming the role for a refusal.
async fn write_roles(master: &Master, command: Command) -> Result<(), Response> {
    match master.write(command).await {
        Ok(Outcome::Applied) => Ok(()),
        Ok(Outcome::Rejected(reject)) => Err(bad_request(reject.to_string())),
        Err(e) => Err(api_error(raft_error(e))),
    }
}

/// Weight infos `[{"role": "r", "weight": 2.0}]` as (role, weight) pairs.
fn parse_weights(infos: &Value, field: &str) -> Result<Vec<(String, f64)>, String> {
    let list = infos
        .as_array()
        .ok_or_else(|| format!("{field}: an array of {{\"role\", \"weight\"}}"))?;
    list.iter()
        .enumerate()
        .map(|(i, info)| {
            let role = info["role"]
                .as_str()
                .ok_or_else(|| format!("{field}[{i}].role: a role name (a string)"))?;
            check_role(role).map_err(|e| format!("{field}[{i}].role: {e}"))?;
            let weight = info["weight"]
                .as_f64()
                .ok_or_else(|| format!("{field}[{i}].weight: a number above 0"))?;
            Ok((role.to_string(), weight))
        })
        .collect()
}

async fn get_weights(State(master): State<Arc<Master>>) -> Response {
    json_ok(&master.read(weight_infos))
}

/// `PUT /weights` with `[{"role": "r", "weight": 2.0}, ...]`: 200 with an empty body.
async fn put_weights(State(master): State<Arc<Master>>, body: Bytes) -> Response {
    let infos: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad_request(format!("malformed JSON: {e}")),
    };
    let weights = match parse_weights(&infos, "weights") {
        Ok(w) => w,
        Err(e) => return bad_request(e),
    };
    match write_roles(&master, Command::UpdateWeights { weights }).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(response) => response,
    }
}

async fn get_quota(State(master): State<Arc<Master>>) -> Response {
    json_ok(&master.read(quota_status))
}

/// Scalars `{"cpus": {"value": 1}, "mem": {"value": 512}}` as resources.
fn parse_scalars(map: &Value, field: &str) -> Result<Resources, String> {
    let Some(map) = map.as_object() else {
        return Err(format!(
            "{field}: an object of name -> {{\"value\": number}}"
        ));
    };
    let (mut cpus, mut mem, mut disk) = (0.0, 0.0, 0.0);
    for (name, scalar) in map {
        let value = scalar["value"]
            .as_f64()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| format!("{field}.{name}.value: a number, 0 or more"))?;
        match name.as_str() {
            "cpus" => cpus = value,
            "mem" => mem = value,
            "disk" => disk = value,
            other => {
                return Err(format!(
                    "{field}.{other}: only cpus, mem and disk have quotas here"
                ))
            }
        }
    }
    Ok(Resources::of(cpus, mem, disk))
}

/// A resource list of cpus, mem and disk (ports have no quota).
fn parse_resource_list(list: &Value, field: &str) -> Result<Resources, String> {
    let list: Vec<wire::Resource> = serde_json::from_value(list.clone())
        .map_err(|e| format!("{field}: a list of resources ({e})"))?;
    let (resources, ports) = wire::resources_from(&list).map_err(|e| format!("{field}: {e}"))?;
    if !ports.is_empty() {
        return Err(format!("{field}: ports have no quota"));
    }
    Ok(resources)
}

/// A quota change, checked against the cluster: guarantees together beyond what the
/// active agents have are refused unless `force` (Mesos's rule).
async fn set_quota(
    master: &Master,
    role: &str,
    guarantee: Resources,
    limit: Option<Resources>,
    force: bool,
) -> Result<(), Response> {
    check_role(role).map_err(|e| bad_request(format!("role: {e}")))?;
    if !force {
        let (total, guaranteed) = master.read(|s| {
            let others = s
                .frameworks
                .roles
                .iter()
                .filter(|(r, _)| r.as_str() != role)
                .fold(Resources::default(), |sum, (_, c)| sum.add(&c.guarantee));
            (cluster_total(s), others.add(&guarantee))
        });
        if !guaranteed.fits_in(&total) {
            return Err(api_error(ApiError::conflict(format!(
                "the roles' guarantees together ({} cpus, {} MiB mem, {} MiB disk) would be more than the active agents have ({} cpus, {} MiB mem, {} MiB disk): lower them, or set force to true",
                guaranteed.cpus(), guaranteed.mem_mib, guaranteed.disk_mib, total.cpus(), total.mem_mib, total.disk_mib
            ))));
        }
    }
    write_roles(
        master,
        Command::UpdateQuota {
            role: role.to_string(),
            guarantee,
            limit,
        },
    )
    .await
}

/// `POST /quota` with `{"role", "guarantee": [resources], "force"}` (Mesos's SET_QUOTA:
/// guarantee and limit both the given resources).
async fn post_quota(State(master): State<Arc<Master>>, body: Bytes) -> Response {
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad_request(format!("malformed JSON: {e}")),
    };
    match legacy_set_quota(&master, &request).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(response) => response,
    }
}

async fn legacy_set_quota(master: &Master, request: &Value) -> Result<(), Response> {
    let role = request["role"]
        .as_str()
        .ok_or_else(|| bad_request("role: the role the quota is for (a string)"))?;
    let guarantee = parse_resource_list(&request["guarantee"], "guarantee").map_err(bad_request)?;
    let force = request["force"].as_bool().unwrap_or(false);
    set_quota(master, role, guarantee, Some(guarantee), force).await
}

/// `DELETE /quota/{role}`.
async fn delete_quota(State(master): State<Arc<Master>>, Path(role): Path<String>) -> Response {
    let removed = set_quota(&master, &role, Resources::default(), None, true).await;
    match removed {
        Ok(()) => StatusCode::OK.into_response(),
        Err(response) => response,
    }
}

// ---------------------------------------------------------------------------------------
// `POST /api/v1`: `{"type": "GET_STATE", ...}` answered `{"type": "GET_STATE",
// "get_state": {...}}`; calls that change something answer 200 with an empty body.

fn id(value: &str) -> Value {
    json!({ "value": value })
}

fn nanos(ms: u64) -> Value {
    json!({ "nanoseconds": ms.saturating_mul(1_000_000) })
}

fn v1_task(task: &Task) -> Value {
    let mut resources = wire::resources_of(&task.resources);
    let ports: Vec<wire::Range> = task
        .ports
        .iter()
        .map(|p| wire::Range {
            begin: u64::from(*p),
            end: u64::from(*p),
        })
        .collect();
    if !ports.is_empty() {
        resources.push(wire::Resource::ranges("ports", ports));
    }
    json!({
        "name": own_task_id(task),
        "task_id": id(own_task_id(task)),
        "framework_id": id(framework_of(&task.owner)),
        "agent_id": id(&task.agent_id),
        "state": wire_state(task.state, true),
        "resources": resources,
        "statuses": [{
            "task_id": id(own_task_id(task)),
            "state": wire_state(task.state, true),
            "source": "SOURCE_EXECUTOR",
            "agent_id": id(&task.agent_id),
            "timestamp": seconds(task.updated_at_ms),
        }],
    })
}

fn v1_tasks(state: &ClusterState) -> Value {
    let (live, ended): (Vec<&Task>, Vec<&Task>) =
        state.tasks.values().partition(|t| !t.state.is_terminal());
    json!({
        "tasks": live.into_iter().map(v1_task).collect::<Vec<_>>(),
        "completed_tasks": ended.into_iter().map(v1_task).collect::<Vec<_>>(),
    })
}

fn v1_agents(state: &ClusterState, offered: &BTreeMap<String, Resources>) -> Value {
    let agents: Vec<Value> = state
        .agents
        .values()
        .map(|a| v1_agent(state, a, &offered.get(&a.id).copied().unwrap_or_default()))
        .collect();
    json!({ "agents": agents, "recovered_agents": [] })
}

/// One agent as the operator API writes it.
fn v1_agent(state: &ClusterState, a: &dcos_core::Agent, offered: &Resources) -> Value {
    let mut total = wire::resources_of(&a.resources);
    let ports: Vec<wire::Range> = a
        .ports
        .iter()
        .map(|r| wire::Range {
            begin: u64::from(r.begin),
            end: u64::from(r.end),
        })
        .collect();
    if !ports.is_empty() {
        total.push(wire::Resource::ranges("ports", ports));
    }
    let attributes: Vec<Value> = a
        .attributes
        .iter()
        .map(|(name, value)| json!({ "name": name, "type": "TEXT", "text": { "value": value } }))
        .collect();
    json!({
        "agent_info": {
            "id": id(&a.id),
            "hostname": a.hostname,
            "resources": total,
            "attributes": attributes,
        },
        "active": a.state == dcos_core::AgentState::Active,
        "deactivated": state.draining.contains(&a.id),
        "version": MESOS_API_VERSION,
        "registered_time": nanos(a.registered_at_ms),
        "total_resources": total,
        "allocated_resources": wire::resources_of(&state.used_resources(&a.id)),
        "offered_resources": wire::resources_of(offered),
    })
}

/// One framework as the operator API writes it.
fn v1_framework(v: &FrameworkView) -> Value {
    let connected = v.state != "disconnected";
    let mut info = json!({
        "id": id(&v.id),
        "name": v.name,
        "user": v.user,
        "roles": [v.role],
        "capabilities": v.capabilities.iter().map(|c| json!({"type": c})).collect::<Vec<_>>(),
    });
    if let Some(timeout) = v.failover_timeout_seconds {
        info["failover_timeout"] = json!(timeout);
    }
    if let Some(principal) = &v.principal {
        info["principal"] = json!(principal);
    }
    if let Some(hostname) = &v.hostname {
        info["hostname"] = json!(hostname);
    }
    let mut framework = json!({
        "framework_info": info,
        "active": connected,
        "connected": connected,
        "recovered": false,
    });
    if let Some(at) = v
        .registered_at
        .as_deref()
        .and_then(dcos_core::time::parse_iso8601)
    {
        framework["registered_time"] = nanos(at);
    }
    framework
}

fn v1_frameworks(views: &[FrameworkView], state: &ClusterState) -> Value {
    let frameworks: Vec<Value> = views.iter().map(v1_framework).collect();
    let completed: Vec<Value> = state
        .frameworks
        .removed
        .iter()
        .map(|removed| json!({ "framework_info": { "id": id(removed), "name": "", "user": "" }, "active": false, "connected": false, "recovered": false }))
        .collect();
    json!({ "frameworks": frameworks, "completed_frameworks": completed })
}

/// GET_STATE's answer (and SUBSCRIBED's).
fn v1_state(
    state: &ClusterState,
    views: &[FrameworkView],
    offered: &BTreeMap<String, Resources>,
) -> Value {
    json!({
        "get_tasks": v1_tasks(state),
        "get_executors": {},
        "get_frameworks": v1_frameworks(views, state),
        "get_agents": v1_agents(state, offered),
    })
}

async fn operator(
    State(master): State<Arc<Master>>,
    Extension(mesos): Extension<Arc<Mesos>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let call: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad_request(format!("malformed JSON: {e}")),
    };
    let Some(kind) = call["type"].as_str() else {
        return bad_request("type: the call's type (GET_STATE, GET_FRAMEWORKS, ...)");
    };
    let answer = |field: &str, value: Value| json_ok(&json!({ "type": kind, field: value }));
    match kind {
        "GET_HEALTH" => answer("get_health", json!({ "healthy": true })),
        "GET_VERSION" => answer(
            "get_version",
            json!({ "version_info": {
                "version": MESOS_API_VERSION,
                "build_user": "dcos-rs",
                "git_tag": env!("CARGO_PKG_VERSION"),
            }}),
        ),
        "GET_STATE" => {
            let views = views(&master, &mesos, false).await;
            let offered = offered_on(&mesos).await;
            answer(
                "get_state",
                master.read(|s| v1_state(s, &views, &offered)),
            )
        }
        "GET_FRAMEWORKS" => {
            let views = views(&master, &mesos, false).await;
            answer("get_frameworks", master.read(|s| v1_frameworks(&views, s)))
        }
        "GET_AGENTS" => {
            let offered = offered_on(&mesos).await;
            answer("get_agents", master.read(|s| v1_agents(s, &offered)))
        }
        "GET_TASKS" => answer("get_tasks", master.read(v1_tasks)),
        "GET_ROLES" => answer(
            "get_roles",
            json!({ "roles": master.read(role_views).into_iter().map(|r| {
                let used = Resources::of(r.used.cpus, r.used.mem as f64, r.used.disk as f64);
                json!({
                    "name": r.role,
                    "weight": r.weight,
                    "frameworks": r.frameworks.iter().map(|f| id(f)).collect::<Vec<_>>(),
                    "resources": wire::resources_of(&used),
                })
            }).collect::<Vec<_>>() }),
        ),
        "GET_WEIGHTS" => answer(
            "get_weights",
            json!({ "weight_infos": master.read(weight_infos) }),
        ),
        "GET_QUOTA" => answer("get_quota", json!({ "status": master.read(quota_status) })),
        "UPDATE_WEIGHTS" => {
            let weights =
                match parse_weights(&call["update_weights"]["weight_infos"], "update_weights.weight_infos") {
                    Ok(w) => w,
                    Err(e) => return bad_request(e),
                };
            done(write_roles(&master, Command::UpdateWeights { weights }).await)
        }
        "UPDATE_QUOTA" => {
            let update = &call["update_quota"];
            let Some(configs) = update["quota_configs"].as_array() else {
                return bad_request("update_quota.quota_configs: a list of {role, guarantees, limits}");
            };
            let force = update["force"].as_bool().unwrap_or(false);
            for (i, config) in configs.iter().enumerate() {
                let field = format!("update_quota.quota_configs[{i}]");
                let Some(role) = config["role"].as_str() else {
                    return bad_request(format!("{field}.role: the role (a string)"));
                };
                let guarantee = match &config["guarantees"] {
                    Value::Null => Resources::default(),
                    map => match parse_scalars(map, &format!("{field}.guarantees")) {
                        Ok(r) => r,
                        Err(e) => return bad_request(e),
                    },
                };
                let limit = match &config["limits"] {
                    Value::Null => None,
                    map => match parse_scalars(map, &format!("{field}.limits")) {
                        Ok(r) => Some(r),
                        Err(e) => return bad_request(e),
                    },
                };
                if let Err(response) = set_quota(&master, role, guarantee, limit, force).await {
                    return response;
                }
            }
            StatusCode::OK.into_response()
        }
        "SET_QUOTA" => done(legacy_set_quota(&master, &call["set_quota"]["quota_request"]).await),
        "REMOVE_QUOTA" => {
            let Some(role) = call["remove_quota"]["role"].as_str() else {
                return bad_request("remove_quota.role: the role whose quota goes");
            };
            done(set_quota(&master, role, Resources::default(), None, true).await)
        }
        "TEARDOWN" => {
            let Some(framework_id) = call["teardown"]["framework_id"]["value"].as_str() else {
                return bad_request("teardown.framework_id.value: the framework to tear down");
            };
            done(tear_down(&master, &mesos, framework_id).await)
        }
        "SUBSCRIBE" => stream::subscribe(master, mesos, &headers).await,
        other => bad_request(format!(
            "type: {other} is not an operator call this master serves (GET_HEALTH, GET_VERSION, GET_STATE, GET_FRAMEWORKS, GET_AGENTS, GET_TASKS, GET_ROLES, GET_WEIGHTS, UPDATE_WEIGHTS, GET_QUOTA, UPDATE_QUOTA, SET_QUOTA, REMOVE_QUOTA, TEARDOWN, SUBSCRIBE)"
        )),
    }
}

fn done(result: Result<(), Response>) -> Response {
    match result {
        Ok(()) => StatusCode::OK.into_response(),
        Err(response) => response,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_are_decoded() {
        assert_eq!(percent_decode("a%2Eb+c"), "a.b c");
        assert_eq!(percent_decode("bad%zz%4"), "bad%zz%4");
        assert_eq!(percent_decode("plain-id"), "plain-id");
        assert_eq!(percent_decode("é%"), "é%");
    }
}

//! The services framework's HTTP API: Marathon's `/v2` (apps, their tasks, versions and
//! restarts, tasks, deployments, info, leader), also under DC/OS's `/marathon/v2`. Shapes
//! and status codes are what Marathon's clients parse (`../shared/COMPAT.md`): only keys
//! their strict models know, Marathon's 201/409/422 answers, `Marathon-Deployment-Id` and
//! `Location` headers. Fields kept but not acted on yet come back as `Warning` headers.
//!
//! Handlers validate input and turn it into `Command`s; nothing here changes state except
//! through Raft. Served on the master's port, behind its token check and follower redirect.

use super::query::{marathon_path, AppPath, LabelSelector, Params};
use super::Waiting;
use crate::http_util::{api_error, json_ok};
use crate::link::{now_ms, random_id};
use crate::master::http::{parse_json, raft_error, reject_error};
use crate::master::Master;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use dcos_api::routes::marathon;
use dcos_api::{
    app_converged, app_view, deployment_view, iso8601, readiness_check_results, task_view,
    ApiError, AppEnvelope, AppVersionView, AppView, AppsEnvelope, DeploymentRef, DeploymentResult,
    DeploymentView, MarathonTask, MarathonTasksEnvelope, VersionsEnvelope,
};
use dcos_core::placement::{self, Ask, Resource, Unfit};
use dcos_core::services::groups::GroupEntry;
use dcos_core::{AppSpec, ClusterState, Command, FieldError, Outcome, Task};
use std::sync::Arc;

/// What a refused app definition is called in errors ("invalid app definition: ...").
const APP: &str = "app definition";

/// The `/v2` routes, merged into the master's router, and the same under `/marathon` and
/// `/service/marathon` (DC/OS's paths);
/// `waiting` is the framework's record of what it could not place (`/v2/queue`).
pub fn routes(waiting: Arc<Waiting>) -> Router<Arc<Master>> {
    let v2 = Router::new()
        .route(
            marathon::EVENTS,
            get(crate::frameworks::events::marathon_stream),
        )
        .route(
            marathon::GROUPS,
            get(super::groups::root).post(super::groups::create),
        )
        .route(
            marathon::GROUP,
            get(super::groups::get)
                .put(super::groups::update)
                .delete(super::groups::remove),
        )
        .route(marathon::QUEUE, get(list_queue))
        .route(marathon::QUEUE_ITEM, delete(reset_delay))
        .route(marathon::APPS, get(list_apps).post(create_app))
        .route(
            marathon::APP,
            get(get_app_path)
                .put(put_app_path)
                .patch(patch_app_path)
                .post(post_app_path)
                .delete(delete_app_path),
        )
        .route(marathon::TASKS, get(list_tasks))
        .route(marathon::TASKS_DELETE, post(delete_given_tasks))
        .route(marathon::DEPLOYMENTS, get(list_deployments))
        .route(marathon::DEPLOYMENT, delete(delete_deployment))
        .route(marathon::INFO, get(info))
        .route(marathon::LEADER, get(leader));
    v2.clone()
        .nest(marathon::DCOS_PREFIX, v2.clone())
        .nest(marathon::DCOS_SERVICE_PREFIX, v2)
        .route(dcos_api::routes::cluster::PLACEMENT, get(why_waiting))
        .route(dcos_api::routes::cluster::APP, get(app_extras))
        .layer(Extension(waiting))
}

/// Marathon's 422 for an app definition (`invalid_as`).
pub(super) fn invalid(errors: &[FieldError]) -> ApiError {
    invalid_as(APP, errors)
}

/// Marathon's 422: our message (every field and reason, `what` naming the request) with
/// Marathon's `details: [{path, errors}]`, which its clients print.
pub(super) fn invalid_as(what: &str, errors: &[FieldError]) -> ApiError {
    let mut details: Vec<(String, Vec<String>)> = Vec::new();
    for error in errors {
        let path = marathon_path(&error.field);
        match details.iter_mut().find(|(p, _)| *p == path) {
            Some((_, reasons)) => reasons.push(error.reason.clone()),
            None => details.push((path, vec![error.reason.clone()])),
        }
    }
    let details: Vec<serde_json::Value> = details
        .into_iter()
        .map(|(path, errors)| serde_json::json!({ "path": path, "errors": errors }))
        .collect();
    let mut error = ApiError::invalid(what, errors);
    error.details = serde_json::Value::Array(details);
    error
}

/// Parses an app definition as Marathon's clients send it (read-only keys of an answer
/// ignored, unknown keys refused by name), naming the field of any type error and every
/// invalid field.
pub fn parse_app(mut value: serde_json::Value) -> Result<AppSpec, ApiError> {
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "an app definition must be a JSON object",
        ));
    }
    dcos_core::app::prepare_app_json(&mut value).map_err(|errors| invalid(&errors))?;
    let mut spec: AppSpec = serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." {
            "(root)".to_string()
        } else {
            field
        };
        invalid(&[FieldError::new(field, e.inner().to_string())])
    })?;
    spec.normalize_and_validate()
        .map_err(|errors| invalid(&errors))?;
    Ok(spec)
}

/// Checks that need the cluster, against what placement knows: some active agent is big
/// enough for one instance, its fixed ports are in some agent's ranges, and some agent holds
/// its image. (Whether there is room *now* is the planner's business: the app waits.)
/// `force=true` skips them, as Marathon's users expect of an app they know cannot run yet.
pub(super) fn check_against_cluster(master: &Master, spec: &AppSpec) -> Result<(), ApiError> {
    // The reference follows docker's rules (`name[:tag][@sha256:...]`), or the app is refused.
    let image = spec
        .image()
        .map(dcos_runtime::image::presence_key)
        .transpose()
        .map_err(|e| invalid(&[FieldError::new("container.docker.image", e.to_string())]))?;
    let ports = spec.requested_ports();
    let ask = Ask {
        resources: spec.resources(),
        ports: &ports,
        image: image.as_deref(),
        // Whether constraints can be met depends on where tasks are: not a submit check.
        constraints: &[],
        spread: None,
    };
    let unfit = master.read(|s| placement::unfit(s, &ask));
    // One kind of problem at a time: sizes first, then ports, then the image.
    let sizes: Vec<FieldError> = unfit
        .iter()
        .filter_map(|u| match u {
            Unfit::TooLarge { resource, largest } => {
                let (asked, offered, unit) = match resource {
                    Resource::Cpus => (spec.cpus, *largest as f64 / 1000.0, "cpus"),
                    Resource::Mem => (spec.mem, *largest as f64, "MiB"),
                    Resource::Disk => (spec.disk, *largest as f64, "MiB"),
                };
                Some(FieldError::new(
                    resource.name(),
                    format!(
                        "{asked} {unit} is more than any agent offers (largest: {offered} {unit}); force=true submits it anyway"
                    ),
                ))
            }
            _ => None,
        })
        .collect();
    if !sizes.is_empty() {
        return Err(invalid(&sizes));
    }
    let ports: Vec<FieldError> = unfit
        .iter()
        .filter_map(|u| match u {
            Unfit::PortOutsideRanges {
                index,
                port,
                ranges,
            } => {
                let field = match spec.bridged() {
                    true => format!("container.portMappings[{index}].hostPort"),
                    false => format!("portDefinitions[{index}].port"),
                };
                Some(FieldError::new(
                    field,
                    format!("port {port} is outside every agent's port range ({ranges:?}); use 0 for any"),
                ))
            }
            _ => None,
        })
        .collect();
    if !ports.is_empty() {
        return Err(invalid(&ports));
    }
    if let (Some(image), true) = (
        spec.image(),
        unfit
            .iter()
            .any(|u| matches!(u, Unfit::ImageNowhere { .. })),
    ) {
        return Err(invalid(&[FieldError::new(
            "container.docker.image",
            format!("image {image} is not on any agent (import it with `dcos-rs image import <tarball>`)"),
        )]));
    }
    Ok(())
}

/// Refuses `apps` (replacing every app inside `replaced_group`, if given) and `groups` when
/// their dependencies, with those of every other app and group, make a cycle: its apps would
/// wait for each other for ever.
pub(super) fn check_no_cycle(
    master: &Master,
    apps: &[AppSpec],
    replaced_group: Option<&str>,
    groups: &[GroupEntry],
) -> Result<(), ApiError> {
    use dcos_core::services::groups::{dependency_cycle, is_under, GroupRecord};
    if apps.iter().all(|a| a.dependencies.is_empty())
        && groups.iter().all(|g| g.dependencies.is_empty())
    {
        return Ok(());
    }
    let cycle = master.read(|s| {
        let mut all: std::collections::BTreeMap<String, AppSpec> = s
            .services
            .apps
            .iter()
            .filter(|(id, _)| replaced_group.is_none_or(|group| !is_under(id, group)))
            .map(|(id, record)| (id.clone(), record.spec.clone()))
            .collect();
        all.extend(apps.iter().map(|a| (a.id.clone(), a.clone())));
        let mut records = s.services.groups.clone();
        records.extend(groups.iter().map(|g| {
            let record = GroupRecord {
                dependencies: g.dependencies.clone(),
                version_ms: 0,
            };
            (g.id.clone(), record)
        }));
        dependency_cycle(&all, &records)
    });
    match cycle {
        Some(cycle) => Err(invalid(&[FieldError::new(
            "dependencies",
            format!(
                "a cycle: {} (apps would wait for each other for ever)",
                cycle.join(" -> ")
            ),
        )])),
        None => Ok(()),
    }
}

/// Most tasks one kill request may name.
pub const TASK_KILLS_MAX: usize = 1_000;

/// A change's answer: `{version, deploymentId}` (or `body`) with the `Marathon-Deployment-Id`
/// header, `Location` for a creation, and a `Warning` per field kept but not acted on.
pub(super) struct Changed {
    pub(super) status: StatusCode,
    pub(super) result: DeploymentResult,
    pub(super) location: Option<String>,
    pub(super) warnings: Vec<FieldError>,
    pub(super) body: Option<serde_json::Value>,
}

impl Changed {
    pub(super) fn new(at_ms: u64, deployment_id: String) -> Changed {
        Changed {
            status: StatusCode::OK,
            result: DeploymentResult {
                version: iso8601(at_ms),
                deployment_id,
            },
            location: None,
            warnings: Vec::new(),
            body: None,
        }
    }
}

impl IntoResponse for Changed {
    fn into_response(self) -> Response {
        let mut headers = HeaderMap::new();
        if let Ok(id) = HeaderValue::from_str(&self.result.deployment_id) {
            headers.insert("marathon-deployment-id", id);
        }
        if let Some(location) = self.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            headers.insert(header::LOCATION, location);
        }
        for warning in &self.warnings {
            // RFC 7234's miscellaneous persistent warning, as Kubernetes sends its own.
            let text = format!("299 dcos-rs \"{warning}\"").replace(['\r', '\n'], " ");
            if let Ok(value) = HeaderValue::from_str(&text) {
                headers.append(header::WARNING, value);
            }
        }
        let body = match self.body {
            Some(body) => body,
            None => serde_json::to_value(&self.result).unwrap_or_default(),
        };
        (self.status, headers, Json(body)).into_response()
    }
}

pub(super) fn respond(result: Result<Changed, ApiError>) -> Response {
    match result {
        Ok(changed) => changed.into_response(),
        Err(e) => api_error(e),
    }
}

pub(super) async fn write(master: &Master, command: Command) -> Result<(), ApiError> {
    match master.write(command).await.map_err(raft_error)? {
        Outcome::Applied => Ok(()),
        Outcome::Rejected(reject) => Err(reject_error(reject)),
    }
}

/// Marathon's lock: an app whose deployment is still under way takes no other change unless
/// `force=true` (then the new one replaces it). The deployment that holds the lock, if any.
pub(super) fn lock_of(master: &Master, app_id: &str, force: bool) -> Option<String> {
    if force {
        return None;
    }
    master.read(|s| {
        let record = s.services.apps.get(app_id)?;
        let tasks: Vec<_> = s.tasks_of_app(app_id).collect();
        (!app_converged(record, &tasks)).then(|| record.deployment_id.clone())
    })
}

/// Marathon's 409 for a locked app, naming its deployment.
pub(super) fn locked(deployment_id: &str) -> Response {
    (
        StatusCode::CONFLICT,
        Json(serde_json::json!({
            "code": "locked",
            "message": format!("App is locked by one or more deployments. Override with the option '?force=true'. View details at '/v2/deployments/{deployment_id}'."),
            "deployments": [{ "id": deployment_id }],
        })),
    )
        .into_response()
}

async fn list_apps(State(master): State<Arc<Master>>, RawQuery(query): RawQuery) -> Response {
    let params = Params::parse(query.as_deref());
    let selector = match params.get("label").map(LabelSelector::parse).transpose() {
        Ok(selector) => selector,
        Err(e) => return api_error(e),
    };
    let id = params.get("id").map(str::to_ascii_lowercase);
    let cmd = params.get("cmd");
    let embed_tasks = params.embeds_tasks();
    let embed_readiness = params.embeds("readiness");
    json_ok(&master.read(|s| {
        AppsEnvelope {
            apps: s
                .services
                .apps
                .values()
                .filter(|a| id.as_deref().is_none_or(|id| a.spec.id.contains(id)))
                .filter(|a| {
                    cmd.is_none_or(|cmd| a.spec.cmd.as_deref().is_some_and(|c| c.contains(cmd)))
                })
                .filter(|a| {
                    selector
                        .as_ref()
                        .is_none_or(|sel| sel.matches(&a.spec.labels))
                })
                .map(|a| with_readiness(s, app_view(s, a, embed_tasks), embed_readiness))
                .collect(),
        }
    }))
}

async fn create_app(
    State(master): State<Arc<Master>>,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let params = Params::parse(query.as_deref());
    let result = async {
        let force = params.flag("force", false)?;
        let spec = parse_app(parse_json(body)?)?;
        if !force {
            check_against_cluster(&master, &spec)?;
        }
        check_no_cycle(&master, std::slice::from_ref(&spec), None, &[])?;
        let at_ms = now_ms();
        let deployment_id = random_id();
        write(
            &master,
            Command::PutApp {
                app: spec.clone(),
                create: true,
                at_ms,
                deployment_id: deployment_id.clone(),
            },
        )
        .await?;
        let mut view = master
            .read(|s| s.services.apps.get(&spec.id).map(|a| app_view(s, a, false)))
            .ok_or_else(|| ApiError::conflict("the app was removed right after it was created"))?;
        // The answer names its deployment, also when there is nothing to start (Marathon's).
        view.deployments = vec![DeploymentRef {
            id: deployment_id.clone(),
        }];
        let mut changed = Changed::new(at_ms, deployment_id);
        changed.status = StatusCode::CREATED;
        changed.location = Some(marathon::app(&spec.id));
        changed.warnings = spec.unhonoured();
        changed.body =
            Some(serde_json::to_value(view).map_err(|e| ApiError::internal(e.to_string()))?);
        Ok(changed)
    }
    .await;
    respond(result)
}

/// 405 for a method an app sub-path does not take (the handler's own, without `Allow`).
fn method_not_allowed(message: &str) -> Response {
    api_error(ApiError::new(405, "method_not_allowed", message))
}

pub(super) fn app_not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("App '{id}' does not exist"))
}

/// The app's readiness results added when `embed` asks for them.
fn with_readiness(state: &ClusterState, mut view: AppView, embed: bool) -> AppView {
    if embed {
        let tasks: Vec<&Task> = state.tasks_of_app(&view.spec.id).collect();
        view.readiness_check_results = Some(readiness_check_results(&tasks));
    }
    view
}

async fn get_app_path(
    State(master): State<Arc<Master>>,
    Path(rest): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let embed_readiness = Params::parse(query.as_deref()).embeds("readiness");
    master.read(|s| match AppPath::parse(&rest) {
        AppPath::App(id) => match s.services.apps.get(&id) {
            Some(app) => json_ok(&AppEnvelope {
                app: with_readiness(s, app_view(s, app, true), embed_readiness),
            }),
            None => api_error(app_not_found(&id)),
        },
        AppPath::Tasks(id) => match s.services.apps.get(&id) {
            Some(app) => json_ok(&MarathonTasksEnvelope {
                tasks: marathon_tasks(s, &app.spec.id),
            }),
            None => api_error(app_not_found(&id)),
        },
        AppPath::Versions(id) => match s.services.apps.get(&id) {
            Some(app) => json_ok(&VersionsEnvelope {
                versions: app.version_list().into_iter().map(iso8601).collect(),
            }),
            None => api_error(app_not_found(&id)),
        },
        AppPath::Version(id, version) => {
            let Some(app) = s.services.apps.get(&id) else {
                return api_error(app_not_found(&id));
            };
            match dcos_core::time::parse_iso8601(&version).and_then(|ms| app.version(ms)) {
                Some(spec) => json_ok(&AppVersionView {
                    spec: spec.for_marathon(),
                    version: dcos_core::time::parse_iso8601(&version)
                        .map(iso8601)
                        .unwrap_or(version),
                }),
                None => api_error(ApiError::not_found(format!(
                    "App '{id}' has no version {version} (GET /v2/apps{id}/versions lists them)"
                ))),
            }
        }
        AppPath::Task(..) | AppPath::Restart(_) => {
            method_not_allowed("this path takes DELETE (a task) or POST (restart)")
        }
    })
}

/// Marathon lists live tasks only (an ended one is gone from its answers); ours stay in
/// `/cluster/v1/tasks` for a while.
fn marathon_tasks(state: &ClusterState, app_id: &str) -> Vec<MarathonTask> {
    state
        .tasks_of_app(app_id)
        .filter(|t| !t.state.is_terminal())
        .filter_map(|t| task_view(state, t).map(Into::into))
        .collect()
}

async fn put_app_path(
    State(master): State<Arc<Master>>,
    Path(rest): Path<String>,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let params = Params::parse(query.as_deref());
    match AppPath::parse(&rest) {
        AppPath::App(id) => match params.flag("partialUpdate", true) {
            Ok(partial) => update_app(&master, id, &params, body, partial).await,
            Err(e) => api_error(e),
        },
        _ => method_not_allowed("PUT takes an app: /v2/apps/<id>"),
    }
}

async fn patch_app_path(
    State(master): State<Arc<Master>>,
    Path(rest): Path<String>,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let params = Params::parse(query.as_deref());
    match AppPath::parse(&rest) {
        AppPath::App(id) => update_app(&master, id, &params, body, true).await,
        _ => method_not_allowed("PATCH takes an app: /v2/apps/<id>"),
    }
}

/// Marathon's PUT: with `partialUpdate` (the default) the fields given replace the current
/// ones, else the body is the whole definition; an app that does not exist is created
/// (201). `{"version": v}` alone rolls back to a kept version. A change of `instances` alone
/// is a scale.
async fn update_app(
    master: &Master,
    id: String,
    params: &Params,
    body: Result<Bytes, BytesRejection>,
    partial: bool,
) -> Response {
    let result = async {
        let force = params.flag("force", false)?;
        let patch = parse_json(body)?;
        let Some(patch_fields) = patch.as_object() else {
            return Err(ApiError::bad_request("an app definition must be a JSON object"));
        };
        if let Some(body_id) = patch_fields.get("id") {
            let Some(body_id) = body_id.as_str() else {
                return Err(invalid(&[FieldError::new("id", "must be a string")]));
            };
            if dcos_core::app::normalize_app_id(body_id) != id {
                return Err(invalid(&[FieldError::new(
                    "id",
                    format!("does not match the app in the URL ({id})"),
                )]));
            }
        }
        let current = master.read(|s| s.services.apps.get(&id).cloned());
        let rollback = patch_fields.contains_key("version")
            && patch_fields.keys().all(|k| k == "version" || k == "id");
        let spec = if rollback {
            let record = current.as_ref().ok_or_else(|| app_not_found(&id))?;
            let version = patch_fields["version"].as_str().unwrap_or_default();
            dcos_core::time::parse_iso8601(version)
                .and_then(|ms| record.version(ms))
                .cloned()
                .ok_or_else(|| {
                    invalid(&[FieldError::new(
                        "version",
                        format!("app {id} has no version '{version}' (GET /v2/apps{id}/versions lists them)"),
                    )])
                })?
        } else {
            let mut merged = match (&current, partial) {
                (Some(record), true) => serde_json::to_value(&record.spec)
                    .map_err(|e| ApiError::internal(e.to_string()))?,
                _ => serde_json::json!({}),
            };
            let merged_fields = merged.as_object_mut().expect("an app serializes to an object");
            for (k, v) in patch_fields {
                merged_fields.insert(k.clone(), v.clone());
            }
            merged_fields.insert("id".into(), serde_json::Value::String(id.clone()));
            parse_app(merged)?
        };
        if let Some(deployment_id) = lock_of(master, &id, force) {
            return Ok(Err(deployment_id));
        }
        let at_ms = now_ms();
        let deployment_id = random_id();
        let command = match &current {
            Some(old) if !old.spec.differs_beyond_instances(&spec) => Command::ScaleApp {
                app_id: id.clone(),
                instances: spec.instances,
                at_ms,
                deployment_id: deployment_id.clone(),
            },
            _ => {
                if !force {
                    check_against_cluster(master, &spec)?;
                }
                check_no_cycle(master, std::slice::from_ref(&spec), None, &[])?;
                Command::PutApp {
                    app: spec.clone(),
                    create: false,
                    at_ms,
                    deployment_id: deployment_id.clone(),
                }
            }
        };
        write(master, command).await?;
        let mut changed = Changed::new(at_ms, deployment_id);
        changed.warnings = spec.unhonoured();
        if current.is_none() {
            changed.status = StatusCode::CREATED;
            changed.location = Some(marathon::app(&id));
        }
        Ok(Ok(changed))
    }
    .await;
    match result {
        Ok(Ok(changed)) => changed.into_response(),
        Ok(Err(deployment_id)) => locked(&deployment_id),
        Err(e) => api_error(e),
    }
}

async fn post_app_path(
    State(master): State<Arc<Master>>,
    Path(rest): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let params = Params::parse(query.as_deref());
    let AppPath::Restart(id) = AppPath::parse(&rest) else {
        return method_not_allowed(
            "POST takes /v2/apps/<id>/restart (create apps with POST /v2/apps)",
        );
    };
    let force = match params.flag("force", false) {
        Ok(force) => force,
        Err(e) => return api_error(e),
    };
    if master.read(|s| !s.services.apps.contains_key(&id)) {
        return api_error(app_not_found(&id));
    }
    if let Some(deployment_id) = lock_of(&master, &id, force) {
        return locked(&deployment_id);
    }
    let at_ms = now_ms();
    let deployment_id = random_id();
    let command = Command::RestartApp {
        app_id: id,
        at_ms,
        deployment_id: deployment_id.clone(),
    };
    respond(
        write(&master, command)
            .await
            .map(|()| Changed::new(at_ms, deployment_id)),
    )
}

async fn delete_app_path(
    State(master): State<Arc<Master>>,
    Path(rest): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let params = Params::parse(query.as_deref());
    match AppPath::parse(&rest) {
        AppPath::App(id) => {
            let at_ms = now_ms();
            let command = Command::RemoveApp { app_id: id, at_ms };
            respond(
                write(&master, command)
                    .await
                    .map(|()| Changed::new(at_ms, random_id())),
            )
        }
        AppPath::Tasks(id) => {
            let host = params.get("host").map(str::to_string);
            let chosen = master.read(|s| {
                s.services.apps.contains_key(&id).then(|| {
                    s.tasks_of_app(&id)
                        .filter(|t| !t.state.is_terminal())
                        .filter(|t| {
                            host.as_deref().is_none_or(|h| {
                                s.agents.get(&t.agent_id).is_some_and(|a| a.hostname == h)
                            })
                        })
                        .map(|t| t.id.clone())
                        .collect::<Vec<_>>()
                })
            });
            match chosen {
                Some(ids) => kill_tasks(&master, ids, &params, false).await,
                None => api_error(app_not_found(&id)),
            }
        }
        AppPath::Task(id, task_id) => {
            let known = master.read(|s| {
                s.tasks
                    .get(&task_id)
                    .is_some_and(|t| t.owner.service_app() == Some(id.as_str()))
            });
            if !known {
                return api_error(ApiError::not_found(format!(
                    "Task '{task_id}' of app '{id}' does not exist"
                )));
            }
            kill_tasks(&master, vec![task_id], &params, true).await
        }
        _ => method_not_allowed("DELETE takes an app, its tasks or one of its tasks"),
    }
}

/// `POST /v2/tasks/delete {"ids": [...]}` (marathon-python's `kill_given_tasks`).
async fn delete_given_tasks(
    State(master): State<Arc<Master>>,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let params = Params::parse(query.as_deref());
    let ids = match parse_json(body).and_then(|body| {
        serde_json::from_value::<TaskIds>(body)
            .map_err(|e| invalid_as("task list", &[FieldError::new("ids", e.to_string())]))
    }) {
        Ok(body) => body.ids,
        Err(e) => return api_error(e),
    };
    let unknown: Vec<String> = master.read(|s| {
        ids.iter()
            .filter(|id| {
                s.tasks
                    .get(*id)
                    .is_none_or(|t| t.owner.service_app().is_none())
            })
            .cloned()
            .collect()
    });
    if !unknown.is_empty() {
        return api_error(ApiError::not_found(format!(
            "no task of an app has the id(s) {}",
            unknown.join(", ")
        )));
    }
    kill_tasks(&master, ids, &params, false).await
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskIds {
    ids: Vec<String>,
}

/// Kills tasks of apps. With `scale=true` each app's `instances` goes down by the number of
/// its tasks killed (a deployment answer); without, they are replaced and the answer lists
/// them (`{"task"}` for one asked by path). `wipe` is accepted: no task here holds a
/// reservation to wipe.
async fn kill_tasks(master: &Master, ids: Vec<String>, params: &Params, one: bool) -> Response {
    let mut ids = ids;
    ids.sort();
    ids.dedup();
    if ids.len() > TASK_KILLS_MAX {
        return api_error(invalid_as(
            "task list",
            &[FieldError::new(
                "ids",
                format!("{} tasks; at most {TASK_KILLS_MAX} per request", ids.len()),
            )],
        ));
    }
    let (scale, _wipe) = match (params.flag("scale", false), params.flag("wipe", false)) {
        (Ok(scale), Ok(wipe)) => (scale, wipe),
        (Err(e), _) | (_, Err(e)) => return api_error(e),
    };
    let at_ms = now_ms();
    let killed: Vec<MarathonTask> = master.read(|s| {
        ids.iter()
            .filter_map(|id| s.tasks.get(id))
            .filter_map(|t| task_view(s, t).map(Into::into))
            .collect()
    });
    // The kills and the apps' smaller sizes are one command: no planning round sees the
    // tasks going without the smaller size (it would start replacements) or the other way
    // round (it would pick other tasks to stop), and an unknown id refuses it all.
    let deployment_id = random_id();
    let command = Command::KillTasks {
        task_ids: ids.clone(),
        scale,
        at_ms,
        deployment_id: deployment_id.clone(),
    };
    match master.write(command).await {
        Ok(Outcome::Applied) => {}
        Ok(Outcome::Rejected(reject)) => return api_error(reject_error(reject)),
        Err(e) => return api_error(raft_error(e)),
    }
    if scale {
        return Changed::new(at_ms, deployment_id).into_response();
    }
    match (one, killed.into_iter().next()) {
        (true, Some(task)) => json_ok(&serde_json::json!({ "task": task })),
        (_, first) => {
            let tasks: Vec<MarathonTask> = first
                .into_iter()
                .chain(master.read(|s| {
                    ids.iter()
                        .skip(1)
                        .filter_map(|id| s.tasks.get(id))
                        .filter_map(|t| task_view(s, t).map(Into::into))
                        .collect::<Vec<MarathonTask>>()
                }))
                .collect();
            json_ok(&MarathonTasksEnvelope { tasks })
        }
    }
}

async fn list_tasks(State(master): State<Arc<Master>>) -> Json<MarathonTasksEnvelope> {
    Json(master.read(|s| {
        MarathonTasksEnvelope {
            tasks: s
                .tasks
                .values()
                .filter(|t| !t.state.is_terminal())
                .filter_map(|t| task_view(s, t).map(Into::into))
                .collect(),
        }
    }))
}

/// Deployments in progress, in Marathon's plan shape: one per app that has not converged
/// on its definition.
async fn list_deployments(State(master): State<Arc<Master>>) -> Json<Vec<DeploymentView>> {
    Json(master.read(|s| {
        s.services
            .apps
            .values()
            .filter_map(|app| deployment_view(s, app))
            .collect()
    }))
}

/// `DELETE /v2/deployments/{id}`: rolls the app of a deployment under way back to the
/// version before it (a new deployment, answered as any change). `force=true` (Marathon's
/// abort, which leaves the app half changed and unmanaged) has no equivalent here, where an
/// app always converges on its definition: it is refused, naming the alternatives.
async fn delete_deployment(
    State(master): State<Arc<Master>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let params = Params::parse(query.as_deref());
    let result = async {
        if params.flag("force", false)? {
            return Err(ApiError::new(
                422,
                "not_supported",
                "aborting a deployment without rolling back is not supported: a dcos-rs app always converges on its definition; DELETE without force rolls it back, or PUT the definition you want with force=true",
            ));
        }
        let app_id = master.read(|s| {
            s.services.apps.values().find_map(|record| {
                let tasks: Vec<_> = s.tasks_of_app(&record.spec.id).collect();
                (record.deployment_id == id && !app_converged(record, &tasks))
                    .then(|| record.spec.id.clone())
            })
        });
        let Some(app_id) = app_id else {
            return Err(ApiError::not_found(format!(
                "no deployment {id} is under way (GET /v2/deployments lists them)"
            )));
        };
        let at_ms = now_ms();
        let deployment_id = random_id();
        // The state machine checks again that it is under way, and picks the version.
        let command = Command::RollBack {
            app_id,
            failed_deployment_id: id.clone(),
            at_ms,
            deployment_id: deployment_id.clone(),
            reason: None,
        };
        write(&master, command).await?;
        Ok(Changed::new(at_ms, deployment_id))
    }
    .await;
    respond(result)
}

/// `https://10.0.0.1:5050` -> `10.0.0.1:5050`: Marathon's clients read the leader as
/// `host:port`.
pub(crate) fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.trim_end_matches('/').to_string()
}

/// Marathon's `/v2/info`, with only keys Marathon's clients know (their models refuse any
/// other): the Raft details are `/cluster/v1/masters`. marathon-python needs the three
/// config objects present; only what is true here is filled in (no ZooKeeper, no
/// Marathon-specific HTTP settings).
async fn info(State(master): State<Arc<Master>>) -> Json<serde_json::Value> {
    let status = master.raft.status();
    Json(serde_json::json!({
        "name": "dcos-rs",
        "version": env!("CARGO_PKG_VERSION"),
        "leader": status.leader_addr.as_deref().map(host_port),
        "elected": status.role == "leader",
        "marathon_config": { "ha": status.members.len() > 1 },
        "zookeeper_config": {},
        "http_config": {},
    }))
}

/// Marathon's `/v2/leader`: `{"leader": "host:port"}` as any master knows it.
async fn leader(State(master): State<Arc<Master>>) -> Response {
    match master.raft.leader() {
        Some((_, url)) => json_ok(&serde_json::json!({ "leader": host_port(&url) })),
        None => api_error(ApiError::not_found("no master leads right now")),
    }
}

/// Seconds until the app's next launch may happen after failures in a row (its backoff).
fn delay_left_ms(record: &dcos_core::AppRecord, now_ms: u64) -> u64 {
    let until = record.last_failure_at_ms
        + dcos_core::services::planner::backoff_ms(&record.spec, record.consecutive_failures);
    until.saturating_sub(now_ms)
}

/// Instances the app still lacks (of its current config).
fn missing(state: &ClusterState, record: &dcos_core::AppRecord) -> usize {
    let alive = state
        .tasks_of_app(&record.spec.id)
        .filter(|t| {
            !t.state.is_terminal()
                && !t.kill_requested
                && t.state != dcos_core::TaskState::Unreachable
                && matches!(t.owner, dcos_core::TaskOwner::Service { config_version_ms, .. }
                    if config_version_ms == record.config_version_ms)
        })
        .count();
    (record.spec.instances as usize).saturating_sub(alive)
}

/// Marathon's `/v2/queue`: every app short of instances, with its launch delay and, when
/// the planner could not place it, Marathon's `processedOffersSummary` from the placement
/// reasons (`embed=lastUnusedOffers` adds them per agent). The reasons are the leader's
/// (a follower's queue shows none).
async fn list_queue(
    State(master): State<Arc<Master>>,
    Extension(waiting): Extension<Arc<Waiting>>,
    RawQuery(query): RawQuery,
) -> Response {
    let params = Params::parse(query.as_deref());
    let embed_offers = params.all("embed").any(|e| e == "lastUnusedOffers");
    let now = now_ms();
    let queue: Vec<serde_json::Value> = master.read(|s| {
        s.services
            .apps
            .values()
            .filter_map(|record| {
                let count = missing(s, record);
                if count == 0 {
                    return None;
                }
                let left_ms = delay_left_ms(record, now);
                let waited = waiting.get(&record.spec.id);
                let since = waited.as_ref().map_or(record.version_ms, |w| w.since_ms);
                let mut item = serde_json::json!({
                    "app": app_view(s, record, false),
                    "count": count,
                    "delay": { "timeLeftSeconds": left_ms.div_ceil(1000), "overdue": left_ms == 0 },
                    "since": iso8601(since),
                    "processedOffersSummary": offers_summary(waited.as_ref()),
                });
                if embed_offers {
                    item["lastUnusedOffers"] = last_unused_offers(s, waited.as_ref());
                }
                Some(item)
            })
            .collect()
    });
    json_ok(&serde_json::json!({ "queue": queue }))
}

fn offers_summary(waited: Option<&super::WaitingApp>) -> serde_json::Value {
    let passed_over = waited.map(|w| w.passed_over.as_slice()).unwrap_or_default();
    let rows: Vec<serde_json::Value> = dcos_core::services::queue::reject_summary(passed_over)
        .into_iter()
        .map(|(reason, declined, processed)| {
            serde_json::json!({ "reason": reason, "declined": declined, "processed": processed })
        })
        .collect();
    let considered = waited.map_or(0, |w| w.agents_considered);
    let mut summary = serde_json::json!({
        "processedOffersCount": considered,
        "unusedOffersCount": considered,
        "rejectSummaryLastOffers": rows,
        "rejectSummaryLaunchAttempt": rows,
    });
    if let Some(w) = waited {
        summary["lastUnusedOfferAt"] = serde_json::Value::String(iso8601(w.last_round_ms));
    }
    summary
}

/// One entry per agent passed over in the last round: Marathon's offer shape, with the
/// reasons' Marathon names.
fn last_unused_offers(
    state: &ClusterState,
    waited: Option<&super::WaitingApp>,
) -> serde_json::Value {
    let Some(w) = waited else {
        return serde_json::json!([]);
    };
    let offers: Vec<serde_json::Value> = w
        .passed_over
        .iter()
        .map(|p| {
            let hostname = state.agents.get(&p.agent_id).map(|a| a.hostname.clone());
            let mut reasons: Vec<&str> = p
                .reasons
                .iter()
                .map(dcos_core::services::queue::marathon_reason)
                .collect();
            reasons.dedup();
            serde_json::json!({
                "offer": { "id": format!("{}-{}", p.agent_id, w.last_round_ms), "agentId": p.agent_id, "hostname": hostname },
                "timestamp": iso8601(w.last_round_ms),
                "reason": reasons,
            })
        })
        .collect();
    serde_json::Value::Array(offers)
}

/// `DELETE /v2/queue/{id}/delay`: the app's next launch is not delayed by earlier failures.
async fn reset_delay(State(master): State<Arc<Master>>, Path(rest): Path<String>) -> Response {
    let Some(id) = rest.trim_end_matches('/').strip_suffix("/delay") else {
        return api_error(ApiError::not_found("use DELETE /v2/queue/<app id>/delay"));
    };
    let app_id = dcos_core::app::normalize_app_id(id);
    match write(&master, Command::ResetDelay { app_id }).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => api_error(e),
    }
}

/// `GET /cluster/v1/apps/{id}`: what this system keeps of an app beyond Marathon's object
/// (whose clients refuse unknown keys): its `progressDeadlineSeconds` and the last
/// deployment the framework rolled back for missing it.
async fn app_extras(State(master): State<Arc<Master>>, Path(id): Path<String>) -> Response {
    let app_id = dcos_core::app::normalize_app_id(&id);
    master.read(|s| {
        let Some(record) = s.services.apps.get(&app_id) else {
            return api_error(app_not_found(&app_id));
        };
        json_ok(&serde_json::json!({
            "appId": app_id,
            "progressDeadlineSeconds": record.spec.progress_deadline_seconds,
            "lastAutomaticRollback": record.rolled_back.as_ref().map(|r| serde_json::json!({
                "failedDeploymentId": r.failed_deployment_id,
                "deploymentId": r.deployment_id,
                "at": iso8601(r.at_ms),
                "reason": r.reason,
            })),
        }))
    })
}

/// `GET /cluster/v1/placement/{id}`: why the app waits, per agent, in plain words (for
/// `dcos-rs app why`).
async fn why_waiting(
    State(master): State<Arc<Master>>,
    Extension(waiting): Extension<Arc<Waiting>>,
    Path(id): Path<String>,
) -> Response {
    let app_id = dcos_core::app::normalize_app_id(&id);
    let now = now_ms();
    let waited = waiting.get(&app_id);
    master.read(|s| {
        let Some(record) = s.services.apps.get(&app_id) else {
            return api_error(app_not_found(&app_id));
        };
        let agents: Vec<serde_json::Value> = waited
            .iter()
            .flat_map(|w| &w.passed_over)
            .map(|p| {
                serde_json::json!({
                    "agentId": p.agent_id,
                    "hostname": s.agents.get(&p.agent_id).map(|a| a.hostname.clone()),
                    "reasons": p.reasons.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                })
            })
            .collect();
        json_ok(&serde_json::json!({
            "appId": app_id,
            "missing": missing(s, record),
            "delaySeconds": delay_left_ms(record, now).div_ceil(1000),
            "waitingSince": waited.as_ref().map(|w| iso8601(w.since_ms)),
            "agents": agents,
        }))
    })
}

//! The services framework's HTTP API: Marathon's `/v2` (apps, tasks, deployments, info,
//! leader). Handlers validate input and turn it into `Command`s; every refusal is a JSON
//! `ApiError` naming the field and the reason. Nothing here changes state except through
//! Raft. Served on the master's port, behind its token check and follower redirect.

use crate::http_util::{api_error, json_ok};
use crate::link::{now_ms, random_id};
use crate::master::http::{parse_json, raft_error, reject_error};
use crate::master::Master;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use dcos_api::routes::marathon;
use dcos_api::{
    app_converged, app_view, iso8601, task_view, ApiError, AppEnvelope, AppsEnvelope,
    DeploymentResult, MarathonTasksEnvelope,
};
use dcos_core::placement::{self, Ask, Resource, Unfit};
use dcos_core::{AppSpec, Command, FieldError, Outcome};
use std::sync::Arc;

/// What a refused app definition is called in errors ("invalid app definition: ...").
const APP: &str = "app definition";

/// The `/v2` routes, merged into the master's router.
pub fn routes() -> Router<Arc<Master>> {
    Router::new()
        .route(marathon::APPS, get(list_apps).post(create_app))
        .route(
            marathon::APP,
            get(get_app_or_tasks).put(put_app).delete(delete_app),
        )
        .route(marathon::TASKS, get(list_tasks))
        .route(marathon::DEPLOYMENTS, get(list_deployments))
        .route(marathon::INFO, get(info))
        .route(marathon::LEADER, get(leader))
}

async fn list_apps(State(master): State<Arc<Master>>) -> Json<AppsEnvelope> {
    Json(master.read(|s| AppsEnvelope {
        apps: s.services.apps.values().map(|a| app_view(s, a)).collect(),
    }))
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
        ApiError::invalid(APP, &[FieldError::new(field, e.inner().to_string())])
    })?;
    spec.normalize_and_validate()
        .map_err(|errors| ApiError::invalid(APP, &errors))?;
    Ok(spec)
}

/// Checks that need the cluster, against what placement knows: some active agent is big
/// enough for one instance, its fixed ports are in some agent's ranges, and some agent holds
/// its image. (Whether there is room *now* is the planner's business: the app waits.)
fn check_against_cluster(master: &Master, spec: &AppSpec) -> Result<(), ApiError> {
    // The reference follows docker's rules (`name[:tag][@sha256:...]`), or the app is refused.
    let image = spec
        .image()
        .map(dcos_runtime::image::presence_key)
        .transpose()
        .map_err(|e| {
            ApiError::invalid(
                APP,
                &[FieldError::new("container.docker.image", e.to_string())],
            )
        })?;
    let ports = spec.requested_ports();
    let ask = Ask {
        resources: spec.resources(),
        ports: &ports,
        image: image.as_deref(),
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
                        "{asked} {unit} is more than any agent offers (largest: {offered} {unit})"
                    ),
                ))
            }
            _ => None,
        })
        .collect();
    if !sizes.is_empty() {
        return Err(ApiError::invalid(APP, &sizes));
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
        return Err(ApiError::invalid(APP, &ports));
    }
    if let (Some(image), true) = (
        spec.image(),
        unfit
            .iter()
            .any(|u| matches!(u, Unfit::ImageNowhere { .. })),
    ) {
        return Err(ApiError::invalid(
            APP,
            &[FieldError::new(
                "container.docker.image",
                format!("image {image} is not on any agent (import it with `dcos-rs image import <tarball>`)"),
            )],
        ));
    }
    Ok(())
}

async fn create_app(
    State(master): State<Arc<Master>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let spec = parse_app(parse_json(body)?)?;
        check_against_cluster(&master, &spec)?;
        let at_ms = now_ms();
        let command = Command::PutApp {
            app: spec.clone(),
            create: true,
            at_ms,
            deployment_id: random_id(),
        };
        match master.write(command).await.map_err(raft_error)? {
            Outcome::Applied => {
                Ok(master.read(|s| s.services.apps.get(&spec.id).map(|a| app_view(s, a))))
            }
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
    master.read(|s| match s.services.apps.get(&id) {
        None => api_error(ApiError::not_found(format!("app {id} does not exist"))),
        Some(app) if tasks => json_ok(&MarathonTasksEnvelope {
            tasks: s
                .tasks_of_app(&app.spec.id)
                .filter_map(|t| task_view(s, t).map(Into::into))
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
                return Err(ApiError::invalid(
                    APP,
                    &[FieldError::new(
                        "id",
                        format!("does not match the app in the URL ({id})"),
                    )],
                ));
            }
        }
        let current = master.read(|s| s.services.apps.get(&id).map(|a| a.spec.clone()));
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
                check_against_cluster(&master, &spec)?;
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

async fn list_tasks(State(master): State<Arc<Master>>) -> Json<MarathonTasksEnvelope> {
    Json(master.read(|s| {
        MarathonTasksEnvelope {
            tasks: s
                .tasks
                .values()
                .filter_map(|t| task_view(s, t).map(Into::into))
                .collect(),
        }
    }))
}

/// Deployments in progress: one per app that has not converged on its definition.
async fn list_deployments(State(master): State<Arc<Master>>) -> Json<serde_json::Value> {
    Json(master.read(|s| {
        let deployments: Vec<serde_json::Value> = s
            .services
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

/// Marathon's `/v2/info`, with only keys Marathon's clients know (their models refuse any
/// other): the Raft details are `/cluster/v1/masters`. marathon-python needs the three
/// config objects present; only what is true here is filled in (no ZooKeeper, no
/// Marathon-specific HTTP settings).
async fn info(State(master): State<Arc<Master>>) -> Json<serde_json::Value> {
    let status = master.raft.status();
    Json(serde_json::json!({
        "name": "dcos-rs",
        "version": env!("CARGO_PKG_VERSION"),
        "leader": status.leader_addr,
        "elected": status.role == "leader",
        "marathon_config": { "ha": status.members.len() > 1 },
        "zookeeper_config": {},
        "http_config": {},
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

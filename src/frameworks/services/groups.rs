//! Marathon's `/v2/groups`: the tree of apps by their ids, posted and changed as a whole
//! (one command, one deployment id), scaled by a factor, removed with everything in it.
//! Group dependencies hold back the launches of the apps inside until what they name has
//! converged (`dcos_core::services::groups`).

use super::http::{
    check_against_cluster, check_no_cycle, invalid_as, lock_of, locked, parse_app, respond, write,
    Changed,
};
use super::query::Params;
use crate::http_util::{api_error, json_ok};
use crate::link::{now_ms, random_id};
use crate::master::http::parse_json;
use crate::master::Master;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dcos_api::{app_view, iso8601, ApiError};
use dcos_core::app::{normalize_app_id, parent_group};
use dcos_core::services::groups::{self as core_groups, GroupEntry, GroupSpec};
use dcos_core::{AppSpec, ClusterState, Command, FieldError};
use std::sync::Arc;

const GROUP: &str = "group definition";

/// A group as Marathon shows it: its apps, its subgroups, recursively.
fn group_view(state: &ClusterState, id: &str) -> serde_json::Value {
    let services = &state.services;
    let mut all = core_groups::implied_groups(services.apps.keys());
    all.extend(services.groups.keys().cloned());
    let apps: Vec<serde_json::Value> = services
        .apps
        .values()
        .filter(|a| parent_group(&a.spec.id) == id)
        .map(|a| serde_json::to_value(app_view(state, a, false)).unwrap_or_default())
        .collect();
    let groups: Vec<serde_json::Value> = all
        .iter()
        .filter(|g| g.as_str() != "/" && g.as_str() != id && parent_group(g) == id)
        .map(|g| group_view(state, g))
        .collect();
    let record = services.groups.get(id);
    let version = services
        .apps
        .values()
        .filter(|a| core_groups::is_under(&a.spec.id, id))
        .map(|a| a.version_ms)
        .chain(record.map(|r| r.version_ms))
        .max()
        .unwrap_or(0);
    serde_json::json!({
        "id": id,
        "apps": apps,
        "groups": groups,
        "pods": [],
        "dependencies": record.map(|r| r.dependencies.clone()).unwrap_or_default(),
        "version": iso8601(version),
    })
}

fn group_exists(state: &ClusterState, id: &str) -> bool {
    id == "/"
        || state.services.groups.contains_key(id)
        || state
            .services
            .apps
            .keys()
            .any(|a| core_groups::is_under(a, id) && a != id)
}

fn group_not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("Group '{id}' does not exist"))
}

/// `GET /v2/groups`: the root group.
pub async fn root(State(master): State<Arc<Master>>) -> Response {
    json_ok(&master.read(|s| group_view(s, "/")))
}

/// `GET /v2/groups/{id}`, `GET /v2/groups/{id}/versions` (newest first) and `GET
/// /v2/groups/{id}/versions/{version}` (the group as it was then). A group of its own
/// named `versions` is still reached by its path, as in Marathon.
pub async fn get(State(master): State<Arc<Master>>, Path(path): Path<String>) -> Response {
    master.read(|s| {
        let whole = normalize_app_id(&path);
        let segments: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let group = |n: usize| normalize_app_id(&segments[..n].join("/"));
        let versions_of = match segments.as_slice() {
            [.., "versions"] if !group_exists(s, &whole) => Some((group(segments.len() - 1), None)),
            [.., "versions", version] if !group_exists(s, &whole) && is_version(version) => {
                Some((group(segments.len() - 2), Some(*version)))
            }
            _ => None,
        };
        let Some((id, version)) = versions_of else {
            return match group_exists(s, &whole) {
                true => json_ok(&group_view(s, &whole)),
                false => api_error(group_not_found(&whole)),
            };
        };
        if !group_exists(s, &id) {
            return api_error(group_not_found(&id));
        }
        let versions = core_groups::group_versions(&s.services, &id);
        let Some(version) = version else {
            let list: Vec<String> = versions.into_iter().map(iso8601).collect();
            return json_ok(&list);
        };
        match version_of(&versions, version).map(|at| (at, core_groups::group_at(&s.services, &id, at))) {
            Some((at, Ok(apps))) => json_ok(&group_view_at(&id, at, &apps, s)),
            Some((_, Err(lost))) => api_error(ApiError::not_found(format!(
                "group {id} at {version} is not known any more: the definitions of then of {} are no longer kept",
                lost.join(", ")
            ))),
            None => api_error(ApiError::not_found(format!(
                "group {id} has no version {version} (GET /v2/groups{id}/versions lists them)"
            ))),
        }
    })
}

/// The version among `versions` that `text` (ISO 8601, as they are listed) names.
/// Whether a path segment is a version (a time as the API writes it), not a group's name.
fn is_version(segment: &str) -> bool {
    dcos_core::time::parse_iso8601(segment).is_some()
}

fn version_of(versions: &[u64], text: &str) -> Option<u64> {
    let at = dcos_core::time::parse_iso8601(text)?;
    versions.contains(&at).then_some(at)
}

/// Group `id` as it was at `at`: its apps then (each with the version of its definition),
/// nested in their groups as `GET /v2/groups/{id}` shows them.
fn group_view_at(
    id: &str,
    at: u64,
    apps: &[(AppSpec, u64)],
    state: &ClusterState,
) -> serde_json::Value {
    let groups = core_groups::implied_groups(apps.iter().map(|(spec, _)| &spec.id));
    let dependencies = |g: &str| {
        state
            .services
            .groups
            .get(g)
            .map(|r| r.dependencies.clone())
            .unwrap_or_default()
    };
    fn view(
        g: &str,
        at: u64,
        apps: &[(AppSpec, u64)],
        groups: &std::collections::BTreeSet<String>,
        dependencies: &dyn Fn(&str) -> Vec<String>,
    ) -> serde_json::Value {
        let own: Vec<serde_json::Value> = apps
            .iter()
            .filter(|(spec, _)| parent_group(&spec.id) == g)
            .map(|(spec, version)| {
                let mut app = serde_json::to_value(spec.for_marathon()).unwrap_or_default();
                app["version"] = iso8601(*version).into();
                app
            })
            .collect();
        let subgroups: Vec<serde_json::Value> = groups
            .iter()
            .filter(|sub| sub.as_str() != "/" && sub.as_str() != g && parent_group(sub) == g)
            .map(|sub| view(sub, at, apps, groups, dependencies))
            .collect();
        serde_json::json!({
            "id": g,
            "apps": own,
            "groups": subgroups,
            "pods": [],
            "dependencies": dependencies(g),
            "version": iso8601(at),
        })
    }
    view(id, at, apps, &groups, &dependencies)
}

/// The tree a rollback of group `id` to `at` (`apps`: its apps then) writes: `id`, every
/// group of those apps inside it, and the group records inside it unchanged since `at`
/// (empty groups kept then), each listing its apps and subgroups, so what came after goes.
/// A group keeps its dependencies: those of a group changed since are not kept apart.
fn rollback_tree(
    state: &ClusterState,
    id: &str,
    at: u64,
    apps: &[(AppSpec, u64)],
) -> Vec<GroupEntry> {
    let mut groups = core_groups::implied_groups(apps.iter().map(|(spec, _)| &spec.id));
    groups.insert(id.to_string());
    groups.extend(
        state
            .services
            .groups
            .iter()
            .filter(|(g, record)| core_groups::is_under(g, id) && record.version_ms <= at)
            .map(|(g, _)| g.clone()),
    );
    groups
        .into_iter()
        .filter(|g| core_groups::is_under(g, id))
        .map(|g| GroupEntry {
            dependencies: state
                .services
                .groups
                .get(&g)
                .map(|r| r.dependencies.clone())
                .unwrap_or_default(),
            id: g,
            apps_given: true,
            groups_given: true,
        })
        .collect()
}

/// A posted tree, checked: its groups, its apps parsed and validated (each also against the
/// cluster unless `force`), no dependency cycle with what exists.
fn parse_tree(
    master: &Master,
    body: serde_json::Value,
    id: Option<&str>,
    force: bool,
) -> Result<(String, Vec<GroupEntry>, Vec<AppSpec>), ApiError> {
    let mut body = body;
    if let (Some(id), Some(object)) = (id, body.as_object_mut()) {
        match object.get("id").and_then(|v| v.as_str()) {
            Some(given) if normalize_app_id(given) != id => {
                return Err(invalid_as(
                    GROUP,
                    &[FieldError::new(
                        "id",
                        format!("does not match the group in the URL ({id})"),
                    )],
                ))
            }
            _ => {
                object.insert("id".into(), serde_json::Value::String(id.to_string()));
            }
        }
    }
    let spec: GroupSpec = serde_path_to_error::deserialize(body).map_err(|e| {
        invalid_as(
            GROUP,
            &[FieldError::new(e.path().to_string(), e.inner().to_string())],
        )
    })?;
    let (groups, app_values) =
        core_groups::flatten(&spec, "/").map_err(|errors| invalid_as(GROUP, &errors))?;
    let group_id = groups.first().map(|g| g.id.clone()).unwrap_or_default();
    let mut apps = Vec::new();
    for (i, value) in app_values.into_iter().enumerate() {
        let app = parse_app(value).map_err(|mut e| {
            e.message = format!("apps[{i}]: {}", e.message);
            e
        })?;
        if !force {
            check_against_cluster(master, &app)?;
        }
        apps.push(app);
    }
    check_no_cycle(master, &apps, Some(&group_id), &groups)?;
    Ok((group_id, groups, apps))
}

/// `POST /v2/groups`: a new group with its apps and subgroups (201), or 409 if it exists.
pub async fn create(
    State(master): State<Arc<Master>>,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let params = Params::parse(query.as_deref());
    let result = async {
        let force = params.flag("force", false)?;
        let body = parse_json(body)?;
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "a group definition must be a JSON object",
            ));
        }
        let (group_id, groups, apps) = parse_tree(&master, body, None, force)?;
        if group_id == "/" {
            return Err(invalid_as(
                GROUP,
                &[FieldError::new(
                    "id",
                    "the root group exists; POST a group inside it",
                )],
            ));
        }
        let at_ms = now_ms();
        let deployment_id = random_id();
        let warnings = apps.iter().flat_map(|a| a.unhonoured()).collect();
        write(
            &master,
            Command::PutGroup {
                group_id: group_id.clone(),
                groups,
                apps,
                create: true,
                replace: false,
                at_ms,
                deployment_id: deployment_id.clone(),
            },
        )
        .await?;
        let mut changed = Changed::new(at_ms, deployment_id);
        changed.status = StatusCode::CREATED;
        changed.location = Some(format!("/v2/groups{group_id}"));
        changed.warnings = warnings;
        Ok(changed)
    }
    .await;
    respond(result)
}

/// `PUT /v2/groups/{id}`: `{"scaleBy": f}` scales every app inside (instances × f, rounded
/// up); otherwise the body is the whole group, which replaces it (apps and subgroups it does
/// not name go). `dryRun=true` answers the steps without changing anything.
pub async fn update(
    State(master): State<Arc<Master>>,
    Path(path): Path<String>,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // `PUT /v2/groups/{id}/versions/{version}` (marathon-python's `rollback_group`) is the
    // rollback `PUT /v2/groups/{id} {"version": ...}` is.
    let whole = normalize_app_id(&path);
    let segments: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let rollback_to = match segments.as_slice() {
        // A time, so that a new group may be called `.../versions/<name>`.
        [.., "versions", version]
            if is_version(version) && !master.read(|s| group_exists(s, &whole)) =>
        {
            Some(version.to_string())
        }
        _ => None,
    };
    let id = match &rollback_to {
        Some(_) => normalize_app_id(&segments[..segments.len() - 2].join("/")),
        None => whole,
    };
    let params = Params::parse(query.as_deref());
    let result = async {
        let force = params.flag("force", false)?;
        let dry_run = params.flag("dryRun", false)?;
        let body = match rollback_to {
            Some(version) => serde_json::json!({ "version": version }),
            None => parse_json(body)?,
        };
        let Some(object) = body.as_object() else {
            return Err(ApiError::bad_request(
                "a group definition must be a JSON object",
            ));
        };
        let (groups, apps, replace) = if let Some(factor) = object.get("scaleBy") {
            if id == "/" {
                return Err(invalid_as(GROUP, &[FieldError::new(
                    "scaleBy",
                    "scaling the root group (every app of the cluster) is not supported: scale a group inside it",
                )]));
            }
            let factor = factor
                .as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0 && *f <= 1_000.0)
                .ok_or_else(|| {
                    invalid_as(
                        GROUP,
                        &[FieldError::new(
                            "scaleBy",
                            "must be a number from 0 to 1000",
                        )],
                    )
                })?;
            let apps: Vec<AppSpec> = master.read(|s| {
                s.services
                    .apps
                    .values()
                    .filter(|a| core_groups::is_under(&a.spec.id, &id))
                    .map(|a| {
                        let mut spec = a.spec.clone();
                        let scaled = (spec.instances as f64 * factor).ceil();
                        spec.instances = scaled.min(dcos_core::app::INSTANCES_MAX as f64) as u32;
                        spec
                    })
                    .collect()
            });
            if apps.is_empty() {
                return Err(group_not_found(&id));
            }
            (Vec::new(), apps, false)
        } else {
            if object.contains_key("version") && object.keys().all(|k| k == "version" || k == "id") {
                // A rollback: the group's apps as they were at that version, what came
                // after removed.
                if id == "/" {
                    return Err(invalid_as(GROUP, &[FieldError::new(
                        "id",
                        "rolling back the root group (every app of the cluster) is not supported: roll back the groups inside it",
                    )]));
                }
                let text = object["version"].as_str().unwrap_or_default();
                let rolled = master.read(|s| {
                    if !group_exists(s, &id) {
                        return Err(group_not_found(&id));
                    }
                    let versions = core_groups::group_versions(&s.services, &id);
                    let at = version_of(&versions, text).ok_or_else(|| {
                        invalid_as(GROUP, &[FieldError::new(
                            "version",
                            format!("group {id} has no version {text:?} (GET /v2/groups{id}/versions lists them)"),
                        )])
                    })?;
                    let apps = core_groups::group_at(&s.services, &id, at).map_err(|lost| {
                        invalid_as(GROUP, &[FieldError::new(
                            "version",
                            format!("the definitions of then of {} are no longer kept", lost.join(", ")),
                        )])
                    })?;
                    Ok((rollback_tree(s, &id, at, &apps), apps))
                })?;
                let (tree, apps) = rolled;
                (tree, apps.into_iter().map(|(spec, _)| spec).collect(), true)
            } else {
            if id == "/" {
                return Err(invalid_as(GROUP, &[FieldError::new(
                    "id",
                    "replacing the root group (every app of the cluster) is not supported: PUT the groups inside it",
                )]));
            }
            let (_, groups, apps) = parse_tree(&master, body.clone(), Some(&id), force)?;
            (groups, apps, true)
            }
        };
        if dry_run {
            return Ok(Err(json_ok(
                &master.read(|s| dry_run_steps(s, &id, &apps, replace)),
            )));
        }
        // The apps changed, and with a replacing PUT or a rollback those that go.
        let gone: Vec<String> = match replace {
            true => master.read(|s| {
                s.services
                    .apps
                    .keys()
                    .filter(|a| core_groups::is_under(a, &id) && !apps.iter().any(|n| &n.id == *a))
                    .cloned()
                    .collect()
            }),
            false => Vec::new(),
        };
        for app_id in apps.iter().map(|a| &a.id).chain(&gone) {
            if let Some(deployment_id) = lock_of(&master, app_id, force) {
                return Ok(Err(locked(&deployment_id)));
            }
        }
        let at_ms = now_ms();
        let deployment_id = random_id();
        let warnings = apps.iter().flat_map(|a| a.unhonoured()).collect();
        let created = master.read(|s| !group_exists(s, &id));
        write(
            &master,
            Command::PutGroup {
                group_id: id.clone(),
                groups,
                apps,
                create: false,
                replace,
                at_ms,
                deployment_id: deployment_id.clone(),
            },
        )
        .await?;
        let mut changed = Changed::new(at_ms, deployment_id);
        changed.warnings = warnings;
        if created {
            changed.status = StatusCode::CREATED;
            changed.location = Some(format!("/v2/groups{id}"));
        }
        Ok(Ok(changed))
    }
    .await;
    match result {
        Ok(Ok(changed)) => changed.into_response(),
        Ok(Err(response)) => response,
        Err(e) => api_error(e),
    }
}

/// What a group change would do, in Marathon's plan shape: a step per app (stops first,
/// then starts, restarts and scales).
fn dry_run_steps(
    state: &ClusterState,
    id: &str,
    apps: &[AppSpec],
    replace: bool,
) -> serde_json::Value {
    let services = &state.services;
    let mut steps = Vec::new();
    let step = |action: &str, app: &str| serde_json::json!({ "actions": [{ "action": action, "app": app }] });
    if replace {
        for gone in services
            .apps
            .keys()
            .filter(|a| core_groups::is_under(a, id) && !apps.iter().any(|n| &n.id == *a))
        {
            steps.push(step("StopApplication", gone));
        }
    }
    for app in apps {
        let action = match services.apps.get(&app.id) {
            None => "StartApplication",
            Some(old) if old.spec.config_differs(app) => "RestartApplication",
            Some(old) if old.spec.instances != app.instances => "ScaleApplication",
            Some(_) => continue,
        };
        steps.push(step(action, &app.id));
    }
    serde_json::json!({ "steps": steps })
}

/// `DELETE /v2/groups/{id}`: every app inside goes (their tasks are killed), and the group.
pub async fn remove(
    State(master): State<Arc<Master>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let id = normalize_app_id(&id);
    let params = Params::parse(query.as_deref());
    let result = async {
        let force = params.flag("force", false)?;
        if id == "/" {
            return Err(invalid_as(
                GROUP,
                &[FieldError::new(
                    "id",
                    "the root group cannot be removed; remove the groups and apps in it",
                )],
            ));
        }
        let apps: Vec<String> = master.read(|s| {
            s.services
                .apps
                .keys()
                .filter(|a| core_groups::is_under(a, &id))
                .cloned()
                .collect()
        });
        if !force {
            if apps.is_empty() && master.read(|s| !s.services.groups.contains_key(&id)) {
                return Err(group_not_found(&id));
            }
            // As Marathon: an app of the group mid-deployment holds it, unless forced.
            if let Some(deployment_id) = apps.iter().find_map(|a| lock_of(&master, a, false)) {
                return Ok(Err(locked(&deployment_id)));
            }
        }
        let at_ms = now_ms();
        write(
            &master,
            Command::RemoveGroup {
                group_id: id.clone(),
                at_ms,
            },
        )
        .await
        .map_err(|e| {
            if e.status == 404 {
                group_not_found(&id)
            } else {
                e
            }
        })?;
        Ok(Ok(Changed::new(at_ms, random_id())))
    }
    .await;
    match result {
        Ok(Ok(changed)) => changed.into_response(),
        Ok(Err(response)) => response,
        Err(e) => api_error(e),
    }
}

//! Marathon's groups: apps are grouped by their ids (`/shop/web` is in `/shop`); a group may
//! also carry `dependencies`, which hold back the launches of every app in it until what it
//! depends on has converged. Pure: definitions, the tree of a posted group, and the
//! dependency rules the planner and the API share.

use super::app::{normalize_app_id, resolve_id, validate_app_id, AppSpec, FieldError};
use super::AppRecord;
use crate::types::{Task, TaskOwner};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// What a group keeps of its own (its apps are in `ServicesState::apps`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// Absolute ids of apps or groups this group's apps wait for.
    pub dependencies: Vec<String>,
    pub version_ms: u64,
}

/// One group of a posted tree, flattened: its absolute id and dependencies, and whether
/// the request listed its apps and its subgroups (a replacing PUT removes only what a list
/// it gave leaves out; a group without an `apps` key keeps its apps, as in Marathon).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupEntry {
    pub id: String,
    pub dependencies: Vec<String>,
    #[serde(default)]
    pub apps_given: bool,
    #[serde(default)]
    pub groups_given: bool,
}

/// A group definition as Marathon's clients send it (`POST /v2/groups`). A group read back
/// and sent again carries `version`, `pods` and `enforceRole`: ignored; other keys refused.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupSpec {
    pub id: String,
    #[serde(default)]
    pub apps: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    pub groups: Option<Vec<GroupSpec>>,
    #[serde(default)]
    pub dependencies: Vec<String>,
    #[serde(default)]
    pub version: Option<serde_json::Value>,
    #[serde(default)]
    pub pods: Option<serde_json::Value>,
    #[serde(default)]
    pub enforce_role: Option<serde_json::Value>,
}

/// Whether a replacing `PutGroup` of these `groups` removes the existing app `app_id` (not
/// in the request): its own group listed its apps, or the nearest listed ancestor listed
/// its subgroups and the one leading to the app is not among them.
pub fn replaced_away(app_id: &str, groups: &[GroupEntry]) -> bool {
    let parent = super::app::parent_group(app_id);
    if let Some(own) = groups.iter().find(|g| g.id == parent) {
        return own.apps_given;
    }
    let Some(nearest) = groups
        .iter()
        .filter(|g| is_under(app_id, &g.id))
        .max_by_key(|g| g.id.len())
    else {
        return false;
    };
    nearest.groups_given
}

/// Most apps and groups one posted tree may hold.
pub const TREE_MAX: usize = 1_000;

/// True when `id` is `group` or inside it.
pub fn is_under(id: &str, group: &str) -> bool {
    group == "/"
        || id == group
        || id
            .strip_prefix(group)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Flattens a posted tree: every group (ids made absolute against their parent) and every
/// app definition (JSON, its id made absolute), in tree order. The caller parses the apps.
pub fn flatten(
    spec: &GroupSpec,
    parent: &str,
) -> Result<(Vec<GroupEntry>, Vec<serde_json::Value>), Vec<FieldError>> {
    let mut groups = Vec::new();
    let mut apps = Vec::new();
    let mut errors = Vec::new();
    walk(spec, parent, "", &mut groups, &mut apps, &mut errors);
    if groups.len() + apps.len() > TREE_MAX {
        errors.push(FieldError::new(
            "(root)",
            format!("at most {TREE_MAX} apps and groups in one request"),
        ));
    }
    if errors.is_empty() {
        Ok((groups, apps))
    } else {
        Err(errors)
    }
}

fn walk(
    spec: &GroupSpec,
    parent: &str,
    path: &str,
    groups: &mut Vec<GroupEntry>,
    apps: &mut Vec<serde_json::Value>,
    errors: &mut Vec<FieldError>,
) {
    let id = resolve_id(parent, &spec.id);
    let nested = !path.is_empty();
    if nested && (id == parent || !is_under(&id, parent)) {
        errors.push(FieldError::new(
            format!("{path}.id"),
            format!("{id} is not inside its parent group {parent}"),
        ));
        return;
    }
    let field = |name: &str| {
        if path.is_empty() {
            name.to_string()
        } else {
            format!("{path}.{name}")
        }
    };
    if id != "/" {
        if let Err(reason) = validate_app_id(&id) {
            errors.push(FieldError::new(field("id"), reason));
            return;
        }
    }
    let dependencies = spec
        .dependencies
        .iter()
        .map(|d| resolve_id(&id, d))
        .collect();
    groups.push(GroupEntry {
        id: id.clone(),
        dependencies,
        apps_given: spec.apps.is_some(),
        groups_given: spec.groups.is_some(),
    });
    for (i, app) in spec.apps.iter().flatten().enumerate() {
        let mut app = app.clone();
        match app.get("id").and_then(|v| v.as_str()) {
            Some(app_id) => {
                let absolute = resolve_id(&id, app_id);
                if !is_under(&absolute, &id) || absolute == id {
                    errors.push(FieldError::new(
                        field(&format!("apps[{i}].id")),
                        format!("{absolute} is not inside the group {id}"),
                    ));
                }
                app["id"] = serde_json::Value::String(absolute);
                apps.push(app);
            }
            None => errors.push(FieldError::new(
                field(&format!("apps[{i}].id")),
                "every app needs an id",
            )),
        }
    }
    for (i, group) in spec.groups.iter().flatten().enumerate() {
        walk(
            group,
            &id,
            &field(&format!("groups[{i}]")),
            groups,
            apps,
            errors,
        );
    }
}

/// An app is converged when exactly `instances` tasks of its current config run and nothing
/// else of it is alive.
pub fn converged(record: &AppRecord, tasks: &[&Task]) -> bool {
    let alive: Vec<&&Task> = tasks.iter().filter(|t| !t.state.is_terminal()).collect();
    alive.len() == record.spec.instances as usize
        && alive.iter().all(|t| {
            super::planner::ready(t)
                && !t.kill_requested
                && matches!(t.owner, TaskOwner::Service { config_version_ms, .. }
                    if config_version_ms == record.config_version_ms)
        })
}

/// What an app waits for: its own dependencies and those of every group it is in.
pub fn effective_dependencies(
    app: &AppSpec,
    groups: &BTreeMap<String, GroupRecord>,
) -> BTreeSet<String> {
    let mut dependencies: BTreeSet<String> = app.dependencies.iter().cloned().collect();
    for (group_id, group) in groups {
        if group_id != &app.id && is_under(&app.id, group_id) {
            dependencies.extend(
                group
                    .dependencies
                    .iter()
                    // A group's own members do not wait for each other through it.
                    .filter(|d| !is_under(&app.id, d))
                    .cloned(),
            );
        }
    }
    dependencies
}

/// Ready tasks an app needs before the apps depending on it may start: as many as its
/// upgrade strategy keeps serving (at least one), none for an app of 0 instances.
fn needed_ready(record: &AppRecord) -> usize {
    let n = record.spec.instances as f64;
    let needed = (n * record.spec.upgrade_strategy.minimum_health_capacity - 1e-9).ceil();
    match record.spec.instances {
        0 => 0,
        _ => (needed as usize).max(1),
    }
}

/// Apps that may not start yet: they have no ready task of their current config, and some
/// app they depend on (directly or through a group) has fewer ready tasks of its current
/// config than it keeps serving (`needed_ready`). Only the start of a config waits: an app
/// already serving replaces its lost tasks whatever its dependencies do.
/// `ready_of`: ready tasks of each app's current config.
pub fn held_back(
    apps: &BTreeMap<String, AppRecord>,
    groups: &BTreeMap<String, GroupRecord>,
    ready_of: &BTreeMap<String, usize>,
) -> BTreeSet<String> {
    let ready = |id: &str| ready_of.get(id).copied().unwrap_or(0);
    apps.values()
        .filter(|record| ready(&record.spec.id) == 0)
        .filter(|record| {
            effective_dependencies(&record.spec, groups)
                .iter()
                .any(|dependency| {
                    apps.iter()
                        .filter(|(id, _)| is_under(id, dependency) && **id != record.spec.id)
                        .any(|(id, dep)| ready(id) < needed_ready(dep))
                })
        })
        .map(|record| record.spec.id.clone())
        .collect()
}

/// A dependency cycle among `apps` (with `groups`' dependencies), as the ids around it, if
/// there is one: such apps would wait for each other for ever.
pub fn dependency_cycle(
    apps: &BTreeMap<String, AppSpec>,
    groups: &BTreeMap<String, GroupRecord>,
) -> Option<Vec<String>> {
    let edges: BTreeMap<&str, Vec<&str>> = apps
        .values()
        .map(|app| {
            let targets = effective_dependencies(app, groups)
                .into_iter()
                .flat_map(|d| {
                    apps.keys()
                        .filter(move |id| is_under(id, &d))
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                })
                .filter(|id| *id != app.id)
                .collect();
            (app.id.as_str(), targets)
        })
        .collect();
    // Depth-first with colours: 1 on the path, 2 done.
    let mut colour: BTreeMap<&str, u8> = BTreeMap::new();
    fn visit<'a>(
        node: &'a str,
        edges: &BTreeMap<&'a str, Vec<&'a str>>,
        colour: &mut BTreeMap<&'a str, u8>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        colour.insert(node, 1);
        path.push(node);
        for next in edges.get(node).into_iter().flatten() {
            match colour.get(next) {
                Some(1) => {
                    let start = path.iter().position(|n| n == next).unwrap_or(0);
                    let mut cycle: Vec<String> =
                        path[start..].iter().map(|s| s.to_string()).collect();
                    cycle.push(next.to_string());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(cycle) = visit(next, edges, colour, path) {
                        return Some(cycle);
                    }
                }
            }
        }
        path.pop();
        colour.insert(node, 2);
        None
    }
    for node in edges.keys() {
        if !colour.contains_key(node) {
            if let Some(cycle) = visit(node, &edges, &mut colour, &mut Vec::new()) {
                return Some(cycle);
            }
        }
    }
    None
}

/// The groups a set of app ids implies, with `/` (every ancestor of every app).
pub fn implied_groups<'a>(app_ids: impl Iterator<Item = &'a String>) -> BTreeSet<String> {
    let mut groups = BTreeSet::from(["/".to_string()]);
    for id in app_ids {
        let mut current = normalize_app_id(id);
        while let Some(i) = current.rfind('/') {
            current.truncate(i);
            if current.is_empty() {
                break;
            }
            groups.insert(current.clone());
        }
    }
    groups
}

/// The versions of group `id`, newest first (at most `VERSIONS_KEPT`): when the group or
/// something in it changed, as the kept definitions of its apps and its groups' records
/// tell. A group's past is read off its apps' kept versions (see `group_at`), so an app
/// removed since is not part of it any more.
pub fn group_versions(services: &super::ServicesState, id: &str) -> Vec<u64> {
    let mut versions: BTreeSet<u64> = services
        .apps
        .values()
        .filter(|a| is_under(&a.spec.id, id))
        .flat_map(|a| a.version_list())
        .collect();
    versions.extend(
        services
            .groups
            .iter()
            .filter(|(group, _)| is_under(group, id))
            .map(|(_, record)| record.version_ms),
    );
    versions
        .into_iter()
        .rev()
        .take(super::VERSIONS_KEPT)
        .collect()
}

/// Group `id` as it was at `version_ms`: each app in it now that existed then, with its
/// definition of then and that definition's version. `Err` names the apps whose definition
/// of then is no longer kept (older than their `VERSIONS_KEPT` newest).
pub fn group_at(
    services: &super::ServicesState,
    id: &str,
    version_ms: u64,
) -> Result<Vec<(AppSpec, u64)>, Vec<String>> {
    let mut apps = Vec::new();
    let mut lost = Vec::new();
    for record in services.apps.values().filter(|a| is_under(&a.spec.id, id)) {
        let current = (record.version_ms, &record.spec);
        let then = record
            .versions
            .range(..=version_ms)
            .next_back()
            .map(|(at, spec)| (*at, spec))
            .into_iter()
            .chain((record.version_ms <= version_ms).then_some(current))
            .max_by_key(|(at, _)| *at);
        match then {
            Some((at, spec)) => apps.push((spec.clone(), at)),
            // Created after `version_ms`: not in the group then.
            None if record.created_ms > version_ms => {}
            // It existed then (or, in a record that does not say when it was created, may
            // have), but its definition of then is no longer kept.
            None => lost.push(record.spec.id.clone()),
        }
    }
    match lost.is_empty() {
        true => Ok(apps),
        false => Err(lost),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::app;

    fn record(spec: AppSpec) -> AppRecord {
        AppRecord {
            spec,
            version_ms: 1,
            config_version_ms: 1,
            deployment_id: "d".into(),
            consecutive_failures: 0,
            last_failure_at_ms: 0,
            last_scaling_ms: 0,
            versions: BTreeMap::new(),
            created_ms: 1,
            rolled_back: None,
            finished_deployment_id: String::new(),
        }
    }

    #[test]
    fn a_groups_versions_and_its_state_at_one_come_from_its_apps_kept_definitions() {
        use crate::command::Command;
        let mut s = crate::state::ClusterState::default();
        let put = |s: &mut crate::state::ClusterState, spec: AppSpec, at_ms: u64| {
            s.apply(&Command::PutApp {
                app: spec,
                create: false,
                at_ms,
                deployment_id: "d".into(),
            });
        };
        put(&mut s, app("/shop/web", 1), 10);
        put(&mut s, app("/shop/db/pg", 1), 20);
        let mut web = app("/shop/web", 1);
        web.cmd = Some("sleep 2".into());
        put(&mut s, web, 30);
        put(&mut s, app("/other", 1), 40);
        assert_eq!(group_versions(&s.services, "/shop"), vec![30, 20, 10]);
        assert_eq!(group_versions(&s.services, "/"), vec![40, 30, 20, 10]);

        let at = |ms: u64| -> Vec<(String, u64)> {
            let mut apps: Vec<(String, u64)> = group_at(&s.services, "/shop", ms)
                .unwrap()
                .into_iter()
                .map(|(spec, at)| (spec.id, at))
                .collect();
            apps.sort();
            apps
        };
        assert_eq!(
            at(25),
            vec![("/shop/db/pg".into(), 20), ("/shop/web".into(), 10)]
        );
        assert_eq!(at(15), vec![("/shop/web".into(), 10)], "pg came later");
        let then = group_at(&s.services, "/shop", 25).unwrap();
        let web_then = then
            .iter()
            .find(|(spec, _)| spec.id == "/shop/web")
            .unwrap();
        assert_eq!(
            web_then.0.cmd,
            app("/shop/web", 1).cmd,
            "the definition of then"
        );
        assert_eq!(at(35).len(), 2);
    }

    #[test]
    fn an_app_whose_definition_of_then_was_dropped_is_named_not_skipped() {
        use crate::command::Command;
        let mut s = crate::state::ClusterState::default();
        let put = |s: &mut crate::state::ClusterState, instances: u32, at_ms: u64| {
            s.apply(&Command::PutApp {
                app: app("/shop/web", instances),
                create: false,
                at_ms,
                deployment_id: "d".into(),
            });
        };
        // Created at 10, then changed often enough that the oldest definitions go.
        for i in 0..=super::super::VERSIONS_KEPT as u64 {
            put(&mut s, 1 + (i % 2) as u32, 10 + i);
        }
        put(&mut s, 1, 1_000);
        assert_eq!(s.services.apps["/shop/web"].created_ms, 10);
        assert_eq!(
            group_at(&s.services, "/shop", 5).unwrap(),
            vec![],
            "not yet created"
        );
        assert_eq!(
            group_at(&s.services, "/shop", 11),
            Err(vec!["/shop/web".to_string()]),
            "it existed, its definition of then is gone"
        );
        assert_eq!(group_at(&s.services, "/shop", 1_000).unwrap().len(), 1);
        // A record from before creation times were kept: an older version cannot be judged.
        s.services.apps.get_mut("/shop/web").unwrap().created_ms = 0;
        assert!(group_at(&s.services, "/shop", 5).is_err());
    }

    #[test]
    fn a_posted_tree_is_flattened_with_absolute_ids() {
        let spec: GroupSpec = serde_json::from_value(serde_json::json!({
            "id": "shop",
            "dependencies": ["/infra"],
            "apps": [{"id": "web", "cmd": "x"}],
            "groups": [{"id": "db", "apps": [{"id": "/shop/db/pg", "cmd": "y"}], "dependencies": ["../cache"]}]
        }))
        .unwrap();
        let (groups, apps) = flatten(&spec, "/").unwrap();
        assert_eq!(
            groups,
            vec![
                GroupEntry {
                    id: "/shop".into(),
                    dependencies: vec!["/infra".into()],
                    apps_given: true,
                    groups_given: true,
                },
                GroupEntry {
                    id: "/shop/db".into(),
                    dependencies: vec!["/shop/cache".into()],
                    apps_given: true,
                    groups_given: false,
                },
            ]
        );
        let ids: Vec<&str> = apps.iter().map(|a| a["id"].as_str().unwrap()).collect();
        assert_eq!(ids, vec!["/shop/web", "/shop/db/pg"]);

        let outside: GroupSpec = serde_json::from_value(serde_json::json!({
            "id": "shop", "apps": [{"id": "/elsewhere/web", "cmd": "x"}, {"cmd": "y"}]
        }))
        .unwrap();
        let errors = flatten(&outside, "/").unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["apps[0].id", "apps[1].id"]);
        let escaping: GroupSpec = serde_json::from_value(serde_json::json!({
            "id": "/new", "groups": [{"id": "/prod", "apps": []}]
        }))
        .unwrap();
        let errors = flatten(&escaping, "/").unwrap_err();
        assert_eq!(errors[0].field, "groups[0].id", "{errors:?}");
    }

    #[test]
    fn a_replacing_put_removes_only_what_a_given_list_leaves_out() {
        let entry = |id: &str, apps: bool, groups: bool| GroupEntry {
            id: id.into(),
            dependencies: vec![],
            apps_given: apps,
            groups_given: groups,
        };
        // Only dependencies given: nothing goes.
        let deps_only = [entry("/shop", false, false)];
        assert!(!replaced_away("/shop/web", &deps_only));
        assert!(!replaced_away("/shop/db/pg", &deps_only));
        // Apps listed: the group's own apps not listed go, its subgroups stay.
        let apps_listed = [entry("/shop", true, false)];
        assert!(replaced_away("/shop/web", &apps_listed));
        assert!(!replaced_away("/shop/db/pg", &apps_listed));
        // Subgroups listed: an unlisted subgroup's apps go, a listed one's keep theirs
        // unless it lists its apps.
        let groups_listed = [entry("/shop", false, true), entry("/shop/db", false, false)];
        assert!(!replaced_away("/shop/db/pg", &groups_listed));
        assert!(replaced_away("/shop/cache/redis", &groups_listed));
        assert!(!replaced_away("/shop/web", &groups_listed));
    }

    #[test]
    fn dependencies_hold_back_until_what_they_wait_for_converged() {
        let mut apps = BTreeMap::new();
        let mut web = app("/shop/web", 1);
        web.dependencies = vec!["/shop/db".into()];
        apps.insert("/shop/web".to_string(), record(web));
        apps.insert("/shop/db/pg".to_string(), record(app("/shop/db/pg", 1)));
        apps.insert("/infra/dns".to_string(), record(app("/infra/dns", 1)));
        let groups = BTreeMap::from([(
            "/shop".to_string(),
            GroupRecord {
                dependencies: vec!["/infra".into()],
                version_ms: 1,
            },
        )]);
        let ready = |pairs: &[(&str, usize)]| -> BTreeMap<String, usize> {
            pairs.iter().map(|(id, n)| (id.to_string(), *n)).collect()
        };
        assert_eq!(
            held_back(&apps, &groups, &ready(&[])),
            BTreeSet::from(["/shop/web".to_string(), "/shop/db/pg".to_string()])
        );
        let dns = ready(&[("/infra/dns", 1)]);
        assert_eq!(
            held_back(&apps, &groups, &dns),
            BTreeSet::from(["/shop/web".to_string()])
        );
        let all = ready(&[("/infra/dns", 1), ("/shop/db/pg", 1)]);
        assert!(held_back(&apps, &groups, &all).is_empty());
        // An app already serving replaces its tasks even while a dependency is down.
        let serving = ready(&[("/shop/web", 1)]);
        assert!(!held_back(&apps, &groups, &serving).contains("/shop/web"));
    }

    #[test]
    fn cycles_are_found_and_named() {
        let mut a = app("/a", 1);
        a.dependencies = vec!["/b".into()];
        let mut b = app("/b", 1);
        b.dependencies = vec!["/g".into()];
        let c = app("/g/c", 1);
        let mut apps: BTreeMap<String, AppSpec> =
            [a, b, c].into_iter().map(|s| (s.id.clone(), s)).collect();
        assert_eq!(dependency_cycle(&apps, &BTreeMap::new()), None);
        apps.get_mut("/g/c").unwrap().dependencies = vec!["/a".into()];
        let cycle = dependency_cycle(&apps, &BTreeMap::new()).unwrap();
        assert_eq!(cycle.first(), cycle.last());
        assert_eq!(cycle.len(), 4, "{cycle:?}");
        assert_eq!(
            implied_groups(["/a/b/c".to_string(), "/d".to_string()].iter()),
            BTreeSet::from(["/".to_string(), "/a".to_string(), "/a/b".to_string()])
        );
    }
}

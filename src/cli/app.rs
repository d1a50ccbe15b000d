//! `dcos-rs app`: deploy, update, list, show, scale, restart, versions, rollback, remove
//! services (Marathon's `/v2/apps`). Fields the server keeps but does not act on yet come
//! back as warnings on stderr (`client::print_warnings`).

use super::{print_json, print_table, row};
use crate::cli::client::Client;
use anyhow::Context;
use clap::Subcommand;
use dcos_api::routes::{cluster as cluster_routes, marathon};
use dcos_api::{
    AppEnvelope, AppView, AppsEnvelope, DeploymentResult, TasksEnvelope, VersionsEnvelope,
};
use hyper::Method;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum AppCommand {
    /// Create an app from a JSON definition file (`-` reads stdin).
    ///
    /// Marathon's app JSON: id, cmd or args, cpus, mem, disk, instances, env, labels, user,
    /// container (docker.image, portMappings, volumes), networks, portDefinitions,
    /// taskKillGracePeriodSeconds, backoffSeconds/backoffFactor/maxLaunchDelaySeconds, and
    /// Marathon's other fields (kept; those not acted on yet are printed as warnings).
    /// Unknown keys are refused by name. Example: examples/web.json.
    Deploy {
        file: PathBuf,
        /// Return at once instead of showing the deployment's progress until it ends.
        #[arg(long)]
        detach: bool,
    },
    /// List apps with their instance counts.
    List,
    /// Show one app's definition and status.
    Show { id: String },
    /// Change an app: the JSON file's fields replace the current ones (`-` reads stdin).
    ///
    /// A change of anything but `instances` replaces every task, start-then-stop.
    Update {
        id: String,
        file: PathBuf,
        /// Apply even while the app's deployment is still under way (it is replaced).
        #[arg(long)]
        force: bool,
        /// Return at once instead of showing the deployment's progress until it ends.
        #[arg(long)]
        detach: bool,
    },
    /// Change the number of instances.
    Scale {
        id: String,
        instances: u32,
        /// Apply even while the app's deployment is still under way.
        #[arg(long)]
        force: bool,
        /// Return at once instead of showing the deployment's progress until it ends.
        #[arg(long)]
        detach: bool,
    },
    /// Replace every task of the app with a new one (same definition).
    Restart {
        id: String,
        #[arg(long)]
        force: bool,
        /// Return at once instead of showing the deployment's progress until it ends.
        #[arg(long)]
        detach: bool,
    },
    /// List the app's kept versions, newest first (the first is the current one).
    Versions { id: String },
    /// Put back an earlier version of the definition (default: the one before the current).
    Rollback {
        id: String,
        /// A version as `app versions` prints it.
        version: Option<String>,
        #[arg(long)]
        force: bool,
        /// Return at once instead of showing the deployment's progress until it ends.
        #[arg(long)]
        detach: bool,
    },
    /// Remove an app and kill its tasks.
    Remove { id: String },
    /// List an app's tasks.
    Tasks { id: String },
    /// Why an app is short of instances: its launch delay, and per agent why the last
    /// placement round passed it over.
    Why { id: String },
}

fn app_path(id: &str) -> String {
    marathon::app(&dcos_core::app::normalize_app_id(id))
}

fn with_force(path: String, force: bool) -> String {
    match force {
        true => format!("{path}?force=true"),
        false => path,
    }
}

fn read_body(file: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    if file.as_os_str() == "-" {
        let mut s = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut s).context("reading stdin")?;
        Ok(s)
    } else {
        std::fs::read(file).with_context(|| format!("reading {}", file.display()))
    }
}

/// Prints a change's answer, then (unless `detach`) its progress until it ends.
async fn print_change(
    client: &Client,
    json: bool,
    detach: bool,
    app_id: &str,
    what: &str,
    result: &DeploymentResult,
) -> anyhow::Result<()> {
    if json {
        return print_json(result);
    }
    println!(
        "{what} (deployment {}, version {})",
        result.deployment_id, result.version
    );
    if detach {
        println!(
            "follow it with `dcos-rs deployment watch {}`",
            result.deployment_id
        );
        return Ok(());
    }
    super::deployment::follow(client, &result.deployment_id, app_id).await
}

pub(super) async fn app(client: &Client, json: bool, command: AppCommand) -> anyhow::Result<()> {
    match command {
        AppCommand::Deploy { file, detach } => {
            let body = read_body(&file)?;
            let app: AppView = client
                .send_json(Method::POST, marathon::APPS, &body)
                .await?;
            if json {
                return print_json(&app);
            }
            let deployment = app
                .deployments
                .first()
                .map(|d| d.id.clone())
                .unwrap_or_default();
            println!(
                "deployed {} ({} instance(s), deployment {deployment})",
                app.spec.id, app.spec.instances
            );
            if detach {
                println!("follow it with `dcos-rs deployment watch {deployment}`");
                return Ok(());
            }
            super::deployment::follow(client, &deployment, &app.spec.id).await
        }
        AppCommand::List => {
            let apps: AppsEnvelope = client.get(marathon::APPS).await?;
            if json {
                return print_json(&apps);
            }
            let mut rows = vec![row(&[
                "ID",
                "INSTANCES",
                "RUNNING",
                "STAGED",
                "CPUS",
                "MEM",
                "STATUS",
                "COMMAND/IMAGE",
            ])];
            for a in &apps.apps {
                rows.push(vec![
                    a.spec.id.clone(),
                    a.spec.instances.to_string(),
                    a.tasks_running.to_string(),
                    a.tasks_staged.to_string(),
                    a.spec.cpus.to_string(),
                    a.spec.mem.to_string(),
                    if a.deployments.is_empty() {
                        "running".into()
                    } else {
                        "deploying".into()
                    },
                    what_runs(a),
                ]);
            }
            print_table(&rows);
            Ok(())
        }
        AppCommand::Show { id } => {
            let app: AppEnvelope = client.get(&app_path(&id)).await?;
            // This system's own fields, which Marathon's object does not carry.
            let mut shown = serde_json::to_value(&app)?;
            let extras: Option<serde_json::Value> =
                client.get(&cluster_routes::app(&id)).await.ok();
            for key in ["progressDeadlineSeconds", "lastAutomaticRollback"] {
                let Some(extras) = &extras else { break };
                if !extras[key].is_null() {
                    shown["app"][key] = extras[key].clone();
                }
            }
            print_json(&shown)
        }
        AppCommand::Update {
            id,
            file,
            force,
            detach,
        } => {
            let body = read_body(&file)?;
            let path = with_force(app_path(&id), force);
            let result: DeploymentResult = client.send_json(Method::PUT, &path, &body).await?;
            let id = dcos_core::app::normalize_app_id(&id);
            let what = format!("updating {id}");
            print_change(client, json, detach, &id, &what, &result).await
        }
        AppCommand::Scale {
            id,
            instances,
            force,
            detach,
        } => {
            let body = serde_json::to_vec(&serde_json::json!({ "instances": instances }))?;
            let path = with_force(app_path(&id), force);
            let result: DeploymentResult = client.send_json(Method::PUT, &path, &body).await?;
            let id = dcos_core::app::normalize_app_id(&id);
            let what = format!("scaling {id} to {instances} instance(s)");
            print_change(client, json, detach, &id, &what, &result).await
        }
        AppCommand::Restart { id, force, detach } => {
            let path = with_force(format!("{}/restart", app_path(&id)), force);
            let result: DeploymentResult = client.send_json(Method::POST, &path, b"{}").await?;
            let id = dcos_core::app::normalize_app_id(&id);
            let what = format!("restarting {id}");
            print_change(client, json, detach, &id, &what, &result).await
        }
        AppCommand::Versions { id } => {
            let versions: VersionsEnvelope =
                client.get(&format!("{}/versions", app_path(&id))).await?;
            if json {
                return print_json(&versions);
            }
            for (i, version) in versions.versions.iter().enumerate() {
                println!("{version}{}", if i == 0 { "  (current)" } else { "" });
            }
            Ok(())
        }
        AppCommand::Rollback {
            id,
            version,
            force,
            detach,
        } => {
            let version = match version {
                Some(version) => version,
                None => {
                    let versions: VersionsEnvelope =
                        client.get(&format!("{}/versions", app_path(&id))).await?;
                    versions.versions.get(1).cloned().with_context(|| {
                        format!("{id} has only its current version: nothing to roll back to")
                    })?
                }
            };
            let body = serde_json::to_vec(&serde_json::json!({ "version": version }))?;
            let path = with_force(app_path(&id), force);
            let result: DeploymentResult = client.send_json(Method::PUT, &path, &body).await?;
            let id = dcos_core::app::normalize_app_id(&id);
            let what = format!("rolling {id} back to {version}");
            print_change(client, json, detach, &id, &what, &result).await
        }
        AppCommand::Remove { id } => {
            let result: DeploymentResult = client
                .send_json(Method::DELETE, &app_path(&id), b"")
                .await?;
            if json {
                return print_json(&result);
            }
            println!(
                "removed {}; its tasks are being killed",
                dcos_core::app::normalize_app_id(&id)
            );
            Ok(())
        }
        AppCommand::Why { id } => {
            let why: serde_json::Value = client
                .get(&cluster_routes::placement(
                    &dcos_core::app::normalize_app_id(&id),
                ))
                .await?;
            if json {
                return print_json(&why);
            }
            print!("{}", describe_why(&why));
            Ok(())
        }
        AppCommand::Tasks { id } => {
            let app_id = dcos_core::app::normalize_app_id(&id);
            let mut tasks: TasksEnvelope = client.get(cluster_routes::TASKS).await?;
            tasks.tasks.retain(|t| t.app_id == app_id);
            super::task::print_tasks(json, &tasks)
        }
    }
}

fn what_runs(app: &AppView) -> String {
    match (app.spec.image(), &app.spec.cmd, &app.spec.args) {
        (Some(image), Some(cmd), _) => format!("{image}: {cmd}"),
        (Some(image), None, _) => image.to_string(),
        (None, Some(cmd), _) => cmd.clone(),
        (None, None, Some(args)) => args.join(" "),
        _ => String::new(),
    }
}

/// `app why` for people: one line for the app, one per agent passed over.
pub(super) fn describe_why(why: &serde_json::Value) -> String {
    let app = why["appId"].as_str().unwrap_or("?");
    let missing = why["missing"].as_u64().unwrap_or(0);
    let agents = why["agents"].as_array().cloned().unwrap_or_default();
    let mut out = String::new();
    if missing == 0 {
        out.push_str(&format!("{app} has every instance it asks for\n"));
        return out;
    }
    out.push_str(&format!("{app} lacks {missing} instance(s)"));
    match why["delaySeconds"].as_u64() {
        Some(delay) if delay > 0 => out.push_str(&format!(
            "; its next launch waits {delay} s after failures in a row (reset: DELETE /v2/queue{app}/delay)"
        )),
        _ => {}
    }
    if let Some(since) = why["waitingSince"].as_str() {
        out.push_str(&format!("; no agent could take it since {since}"));
    }
    out.push('\n');
    for agent in &agents {
        let reasons: Vec<&str> = agent["reasons"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r.as_str())
            .collect();
        out.push_str(&format!(
            "  {} ({}): {}\n",
            agent["agentId"].as_str().unwrap_or("?"),
            agent["hostname"].as_str().unwrap_or("?"),
            reasons.join("; ")
        ));
    }
    if agents.is_empty() && why["waitingSince"].is_null() {
        out.push_str("  (no placement round has failed for it: it is starting, or waiting for its delay or its rolling upgrade)\n");
    }
    out
}

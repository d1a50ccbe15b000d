//! `dcos-rs app`: deploy, list, show, scale, remove services (Marathon's `/v2/apps`).

use super::{print_json, print_table, row};
use crate::cli::client::Client;
use anyhow::Context;
use clap::Subcommand;
use dcos_api::routes::{cluster as cluster_routes, marathon};
use dcos_api::{AppEnvelope, AppView, AppsEnvelope, DeploymentResult, TasksEnvelope};
use hyper::Method;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum AppCommand {
    /// Create an app from a JSON definition file (`-` reads stdin).
    ///
    /// Fields: id, cmd or args, cpus, mem, disk, instances, env, user,
    /// container.docker.image, taskKillGracePeriodSeconds. Example: examples/web.json.
    Deploy { file: PathBuf },
    /// List apps with their instance counts.
    List,
    /// Show one app's definition and status.
    Show { id: String },
    /// Change the number of instances.
    Scale { id: String, instances: u32 },
    /// Remove an app and kill its tasks.
    Remove { id: String },
    /// List an app's tasks.
    Tasks { id: String },
}

fn app_path(id: &str) -> String {
    marathon::app(&dcos_core::app::normalize_app_id(id))
}

pub(super) async fn app(client: &Client, json: bool, command: AppCommand) -> anyhow::Result<()> {
    match command {
        AppCommand::Deploy { file } => {
            let body = if file.as_os_str() == "-" {
                let mut s = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut s)
                    .context("reading stdin")?;
                s
            } else {
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?
            };
            let app: AppView = client
                .send_json(Method::POST, marathon::APPS, &body)
                .await?;
            if json {
                return print_json(&app);
            }
            println!(
                "deployed {} ({} instance(s)); follow it with `dcos-rs app show {}` or `dcos-rs task list`",
                app.spec.id, app.spec.instances, app.spec.id
            );
            Ok(())
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
            print_json(&app)
        }
        AppCommand::Scale { id, instances } => {
            let body = serde_json::to_vec(&serde_json::json!({ "instances": instances }))?;
            let result: DeploymentResult =
                client.send_json(Method::PUT, &app_path(&id), &body).await?;
            if json {
                return print_json(&result);
            }
            println!(
                "scaling {} to {instances} instance(s) (deployment {})",
                dcos_core::app::normalize_app_id(&id),
                result.deployment_id
            );
            Ok(())
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

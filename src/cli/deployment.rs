//! `dcos-rs deployment`: list, watch, roll back or stop deployments (Marathon's
//! `/v2/deployments`), and `follow`, which `app deploy|update|scale|restart|rollback` and
//! `group deploy|scale` use to show a change's progress until it ends.

use super::{print_json, print_table, row};
use crate::cli::client::Client;
use clap::Subcommand;
use dcos_api::routes::{cluster as cluster_routes, marathon};
use dcos_api::{AppEnvelope, DeploymentResult, DeploymentView};
use hyper::Method;
use std::time::{Duration, Instant};

#[derive(Subcommand, Debug)]
pub enum DeploymentCommand {
    /// Deployments under way: one per app that has not reached its definition.
    List,
    /// Show a deployment's progress until it ends.
    Watch { id: String },
    /// Roll a deployment back: its app goes back to the version before (a new deployment).
    Rollback {
        id: String,
        /// Return at once instead of following the rollback.
        #[arg(long)]
        detach: bool,
    },
    /// Stop a deployment without rolling back (Marathon's force=true). dcos-rs refuses this,
    /// since an app always converges on its definition; the error names the alternatives.
    Stop { id: String },
}

/// How often `follow` looks at the deployment.
const POLL_MS: u64 = 500;
/// How long `follow` waits without any progress before it says why the app waits.
const STALL_MS: u64 = 10_000;
/// How long `follow` follows at most; the deployment goes on after it returns.
const FOLLOW_MAX_MS: u64 = 30 * 60_000;

pub(super) async fn deployment(
    client: &Client,
    json: bool,
    command: DeploymentCommand,
) -> anyhow::Result<()> {
    match command {
        DeploymentCommand::List => {
            let deployments: Vec<DeploymentView> = client.get(marathon::DEPLOYMENTS).await?;
            if json {
                return print_json(&deployments);
            }
            let mut rows = vec![row(&["ID", "APPS", "ACTION", "STEP", "VERSION"])];
            for d in &deployments {
                rows.push(vec![
                    d.id.clone(),
                    d.affected_apps.join(","),
                    d.current_actions
                        .iter()
                        .map(|a| a.action.clone())
                        .collect::<Vec<_>>()
                        .join(","),
                    format!("{}/{}", d.current_step, d.total_steps),
                    d.version.clone(),
                ]);
            }
            print_table(&rows);
            Ok(())
        }
        DeploymentCommand::Watch { id } => {
            let deployments: Vec<DeploymentView> = client.get(marathon::DEPLOYMENTS).await?;
            let Some(found) = deployments.iter().find(|d| d.id == id) else {
                anyhow::bail!("no deployment {id} is under way (`dcos-rs deployment list`)");
            };
            let app = found.affected_apps.first().cloned().unwrap_or_default();
            follow(client, &id, &app).await
        }
        DeploymentCommand::Rollback { id, detach } => {
            let deployments: Vec<DeploymentView> = client.get(marathon::DEPLOYMENTS).await?;
            let app = deployments
                .iter()
                .find(|d| d.id == id)
                .and_then(|d| d.affected_apps.first().cloned());
            let result: DeploymentResult = client
                .send_json(
                    Method::DELETE,
                    &format!("{}/{id}", marathon::DEPLOYMENTS),
                    b"",
                )
                .await?;
            if json {
                return print_json(&result);
            }
            println!("rolling back {id} (deployment {})", result.deployment_id);
            match (detach, app) {
                (false, Some(app)) => follow(client, &result.deployment_id, &app).await,
                _ => Ok(()),
            }
        }
        DeploymentCommand::Stop { id } => {
            let path = format!("{}/{id}?force=true", marathon::DEPLOYMENTS);
            let _: serde_json::Value = client.send_json(Method::DELETE, &path, b"").await?;
            Ok(())
        }
    }
}

/// Shows `deployment_id` of `app_id` until it ends: a line whenever the app's counts change,
/// why it waits when it makes no progress for a while, and the outcome. Returns when the
/// deployment is over (or replaced by another), or after `FOLLOW_MAX_MS` (it goes on).
pub(super) async fn follow(
    client: &Client,
    deployment_id: &str,
    app_id: &str,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut last_line = String::new();
    let mut last_progress = Instant::now();
    let mut explained = false;
    loop {
        let deployments: Vec<DeploymentView> = client.get(marathon::DEPLOYMENTS).await?;
        let current = deployments.iter().find(|d| d.id == deployment_id);
        let app: Option<AppEnvelope> = client.get(&marathon::app(app_id)).await.ok();
        let Some(deployment) = current else {
            match app {
                Some(app) => {
                    let replaced = app.app.deployments.iter().any(|d| d.id != deployment_id);
                    let extras: Option<serde_json::Value> =
                        client.get(&cluster_routes::app(app_id)).await.ok();
                    let rollback = extras
                        .as_ref()
                        .map(|e| &e["lastAutomaticRollback"])
                        .filter(|r| r["failedDeploymentId"] == deployment_id);
                    if let Some(rollback) = rollback {
                        println!(
                            "deployment {deployment_id} failed: {}; the rollback is deployment {} (`dcos-rs deployment watch {}`)",
                            rollback["reason"].as_str().unwrap_or("?"),
                            rollback["deploymentId"].as_str().unwrap_or("?"),
                            rollback["deploymentId"].as_str().unwrap_or("?"),
                        );
                        anyhow::bail!("deployment {deployment_id} was rolled back");
                    } else if replaced {
                        println!(
                            "deployment {deployment_id} was replaced by {} (`dcos-rs deployment watch {}`)",
                            app.app.deployments[0].id, app.app.deployments[0].id
                        );
                    } else {
                        println!(
                            "deployment {deployment_id} finished: {app_id} runs {}/{} instance(s)",
                            app.app.tasks_running, app.app.spec.instances
                        );
                    }
                }
                None => println!("deployment {deployment_id} finished: {app_id} is gone"),
            }
            return Ok(());
        };
        let action = deployment
            .current_actions
            .first()
            .map(|a| a.action.as_str())
            .unwrap_or("?");
        let line = match &app {
            Some(app) => format!(
                "{action} {app_id}: {}/{} running, {} starting, {} healthy",
                app.app.tasks_running,
                app.app.spec.instances,
                app.app.tasks_staged,
                app.app.tasks_healthy
            ),
            None => format!("{action} {app_id}"),
        };
        if line != last_line {
            println!("{line}");
            last_line = line;
            last_progress = Instant::now();
        } else if !explained && last_progress.elapsed() > Duration::from_millis(STALL_MS) {
            explained = true;
            let why: Option<serde_json::Value> =
                client.get(&cluster_routes::placement(app_id)).await.ok();
            if let Some(why) = why.filter(|w| w["agents"].as_array().is_some_and(|a| !a.is_empty()))
            {
                print!("no progress for {} s; ", STALL_MS / 1000);
                print!("{}", super::app::describe_why(&why));
            }
        }
        if started.elapsed() > Duration::from_millis(FOLLOW_MAX_MS) {
            println!(
                "still under way after {} min; it goes on: `dcos-rs deployment watch {deployment_id}`",
                FOLLOW_MAX_MS / 60_000
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
    }
}

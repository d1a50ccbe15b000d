//! `dcos-rs group`: deploy, show, scale and remove groups of apps (Marathon's `/v2/groups`).

use super::print_json;
use crate::cli::client::Client;
use anyhow::Context;
use clap::Subcommand;
use dcos_api::routes::marathon;
use dcos_api::DeploymentResult;
use hyper::Method;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// Create a group from a JSON file (`-` reads stdin): `{"id": "/shop", "apps": [...],
    /// "groups": [...], "dependencies": [...]}`; app ids are relative to their group, and an
    /// app starts only once what it depends on runs.
    Deploy {
        file: PathBuf,
        /// Return at once instead of following the deployment.
        #[arg(long)]
        detach: bool,
    },
    /// Show a group (default: the root) with its apps and subgroups, as JSON.
    Show { id: Option<String> },
    /// Scale every app of the group by a factor (instances × factor, rounded up).
    Scale {
        id: String,
        factor: f64,
        /// Apply even while an app of the group is being deployed.
        #[arg(long)]
        force: bool,
    },
    /// Remove the group and every app in it (their tasks are killed).
    Remove { id: String },
}

fn group_path(id: &str) -> String {
    let id = dcos_core::app::normalize_app_id(id);
    format!(
        "{}{}",
        marathon::GROUPS,
        if id == "/" { "" } else { id.as_str() }
    )
}

pub(super) async fn group(
    client: &Client,
    json: bool,
    command: GroupCommand,
) -> anyhow::Result<()> {
    match command {
        GroupCommand::Deploy { file, detach } => {
            let body = if file.as_os_str() == "-" {
                let mut s = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut s)
                    .context("reading stdin")?;
                s
            } else {
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?
            };
            let definition: serde_json::Value =
                serde_json::from_slice(&body).context("the group file is not JSON")?;
            let result: DeploymentResult = client
                .send_json(Method::POST, marathon::GROUPS, &body)
                .await?;
            if json {
                return print_json(&result);
            }
            let id = definition["id"].as_str().unwrap_or("?");
            println!("deploying group {id} (deployment {})", result.deployment_id);
            if !detach {
                follow_group(client, &dcos_core::app::normalize_app_id(id)).await?;
            }
            Ok(())
        }
        GroupCommand::Show { id } => {
            let group: serde_json::Value = client
                .get(&group_path(id.as_deref().unwrap_or("/")))
                .await?;
            print_json(&group)
        }
        GroupCommand::Scale { id, factor, force } => {
            let body = serde_json::to_vec(&serde_json::json!({ "scaleBy": factor }))?;
            let mut path = group_path(&id);
            if force {
                path.push_str("?force=true");
            }
            let result: DeploymentResult = client.send_json(Method::PUT, &path, &body).await?;
            if json {
                return print_json(&result);
            }
            println!(
                "scaling group {id} by {factor} (deployment {})",
                result.deployment_id
            );
            Ok(())
        }
        GroupCommand::Remove { id } => {
            let result: DeploymentResult = client
                .send_json(Method::DELETE, &group_path(&id), b"")
                .await?;
            if json {
                return print_json(&result);
            }
            println!("removed group {id}; the tasks of its apps are being killed");
            Ok(())
        }
    }
}

/// Follows every app of the group whose deployment is under way, one after the other
/// (dependencies make later ones wait for earlier ones anyway).
async fn follow_group(client: &Client, group_id: &str) -> anyhow::Result<()> {
    let deployments: Vec<dcos_api::DeploymentView> = client.get(marathon::DEPLOYMENTS).await?;
    for deployment in deployments {
        for app in &deployment.affected_apps {
            if dcos_core::services::groups::is_under(app, group_id) {
                super::deployment::follow(client, &deployment.id, app).await?;
            }
        }
    }
    Ok(())
}

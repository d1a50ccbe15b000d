//! `dcos-rs task`: list, show, logs (streamed from the agent), kill.

use super::{print_json, print_table, row};
use crate::cli::client::{Client, ClientError};
use clap::Subcommand;
use dcos_api::routes::{agent as agent_routes, cluster as cluster_routes};
use dcos_api::{TaskView, TasksEnvelope};

#[derive(Subcommand, Debug)]
pub enum TaskCommand {
    /// List tasks (running and recently ended).
    List {
        /// Only tasks of this app.
        #[arg(long)]
        app: Option<String>,
    },
    /// Show one task.
    Show { id: String },
    /// Print a task's stdout (or stderr); --follow streams until the task ends.
    Logs {
        id: String,
        #[arg(long, short)]
        follow: bool,
        /// Show stderr instead of stdout.
        #[arg(long)]
        stderr: bool,
    },
}

pub(super) fn print_tasks(json: bool, tasks: &TasksEnvelope) -> anyhow::Result<()> {
    if json {
        return print_json(tasks);
    }
    let mut rows = vec![row(&[
        "ID", "OWNER", "HOST", "STATE", "CPUS", "MEM", "STARTED", "MESSAGE",
    ])];
    for t in &tasks.tasks {
        // A service's app id as before; `job:<id>` or `framework:<id>` for the others.
        let owner = match t.owner.kind.as_str() {
            "service" | "" => t.app_id.clone(),
            kind => format!("{kind}:{}", t.owner.id),
        };
        rows.push(vec![
            t.id.clone(),
            owner,
            t.host.clone(),
            t.state.as_str().to_string(),
            t.cpus.to_string(),
            t.mem.to_string(),
            t.started_at.clone().unwrap_or_else(|| "-".into()),
            t.message.clone().unwrap_or_default(),
        ]);
    }
    print_table(&rows);
    Ok(())
}

async fn find_task(client: &Client, id: &str) -> anyhow::Result<TaskView> {
    let tasks: TasksEnvelope = client.get(cluster_routes::TASKS).await?;
    let matches: Vec<TaskView> = tasks
        .tasks
        .into_iter()
        .filter(|t| t.id == id || t.id.starts_with(id))
        .collect();
    match matches.len() {
        0 => anyhow::bail!("no task {id} (see `dcos-rs task list`)"),
        1 => Ok(matches.into_iter().next().expect("one")),
        n => {
            if let Some(exact) = matches.iter().find(|t| t.id == id) {
                return Ok(exact.clone());
            }
            // `hello` names the app's one live task even when ended ones are listed too.
            let alive: Vec<&TaskView> = matches.iter().filter(|t| !t.state.is_terminal()).collect();
            match alive.as_slice() {
                [one] => Ok((*one).clone()),
                _ => anyhow::bail!("{n} tasks start with {id}; give more of the id"),
            }
        }
    }
}

pub(super) async fn task(client: &Client, json: bool, command: TaskCommand) -> anyhow::Result<()> {
    match command {
        TaskCommand::List { app } => {
            let mut tasks: TasksEnvelope = client.get(cluster_routes::TASKS).await?;
            if let Some(app) = app {
                let app = dcos_core::app::normalize_app_id(&app);
                tasks.tasks.retain(|t| t.app_id == app);
            }
            print_tasks(json, &tasks)
        }
        TaskCommand::Show { id } => print_json(&find_task(client, &id).await?),
        TaskCommand::Logs { id, follow, stderr } => {
            let task = find_task(client, &id).await?;
            anyhow::ensure!(
                !task.agent_url.is_empty(),
                "task {} has no agent address",
                task.id
            );
            let stream = if stderr { "stderr" } else { "stdout" };
            stream_task_log(client, &task, stream, follow, &mut tokio::io::stdout()).await
        }
    }
}

/// Writes a task's `stream` (stdout or stderr) to `out`; with `follow`, until the task ends.
///
/// The master lists a task as soon as it is placed, before its agent has received the launch
/// and made the sandbox; until then the agent answers 404. While the master still reports the
/// task staging, the request is repeated every 200 ms (once more after it leaves staging, for
/// the race between the two answers). Without `follow` a staging task has logged nothing.
pub async fn stream_task_log(
    client: &Client,
    task: &TaskView,
    stream: &str,
    follow: bool,
    out: &mut (impl tokio::io::AsyncWrite + Unpin),
) -> anyhow::Result<()> {
    let url = format!(
        "{}{}?follow={follow}",
        task.agent_url,
        agent_routes::task_log(&task.id, stream)
    );
    let mut told = false;
    let mut last_try = false;
    loop {
        match client.stream_to(&url, out).await {
            Ok(_) => return Ok(()),
            Err(ClientError::Api(e)) if e.status == 404 && !last_try => {
                let now = find_task(client, &task.id).await?;
                if now.state != dcos_core::TaskState::Staging {
                    last_try = true;
                } else if !follow {
                    return Ok(());
                } else if !told {
                    eprintln!(
                        "task {} is staging; waiting for it to reach its agent",
                        task.id
                    );
                    told = true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

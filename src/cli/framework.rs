//! `dcos-rs framework` (list, show, teardown) and `dcos-rs role` (list, set): the
//! frameworks sharing the cluster, built-in and external, and the weights and quotas of
//! their roles.

use super::{print_json, print_table, row};
use crate::cli::client::Client;
use crate::frameworks::mesos::operator::{FRAMEWORKS, OPERATOR, ROLES};
use clap::Subcommand;
use dcos_api::{FrameworkView, ResourcesView};
use hyper::Method;
use serde_json::{json, Value};

#[derive(Subcommand, Debug)]
pub enum FrameworkCommand {
    /// List the frameworks (the built-in services and jobs ones, and external Mesos
    /// frameworks) with their role, state, use and share of the cluster.
    List,
    /// Show one framework with its tasks.
    Show {
        /// The framework's id (`dcos-rs framework list` shows them).
        id: String,
    },
    /// Tear a framework down: its tasks are killed and its id may not subscribe again.
    Teardown {
        /// The framework's id.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum RoleCommand {
    /// List the roles with frameworks or settings: weight, quota, use and share.
    List,
    /// Set a role's weight in the fair share (DRF), and its quota: what it is guaranteed
    /// and what it may use at most.
    #[command(long_about = "Set a role's weight and quota.\n\n\
        Frameworks are offered resources in turn by their role's dominant share divided by\n\
        its weight: a role of weight 3 gets about three times what a role of weight 1 gets\n\
        while both want more. A guarantee is held for the role even when it does not use it\n\
        (others are not offered what it still needs); a limit caps what it holds.\n\n\
        Examples:\n  \
        dcos-rs role set analytics --weight 3\n  \
        dcos-rs role set web --guarantee cpus=4,mem=8192 --limit cpus=8,mem=16384\n  \
        dcos-rs role set web --no-quota")]
    Set {
        /// The role (`*` is the built-in frameworks' and that of frameworks naming none).
        role: String,
        /// Its weight (a number above 0; 1 is everyone's default).
        #[arg(long)]
        weight: Option<f64>,
        /// What the role is guaranteed: `cpus=N,mem=MiB[,disk=MiB]`.
        #[arg(long, value_parser = parse_resources)]
        guarantee: Option<ResourcesView>,
        /// The most the role may hold: `cpus=N,mem=MiB[,disk=MiB]`.
        #[arg(long, value_parser = parse_resources)]
        limit: Option<ResourcesView>,
        /// Remove the role's quota (guarantee and limit).
        #[arg(long, conflicts_with_all = ["guarantee", "limit"])]
        no_quota: bool,
        /// Take guarantees beyond what the agents have now.
        #[arg(long)]
        force: bool,
    },
}

fn parse_resources(text: &str) -> Result<ResourcesView, String> {
    let mut view = ResourcesView::default();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let (name, value) = part
            .split_once('=')
            .ok_or_else(|| format!("'{part}' is not NAME=VALUE (cpus=2,mem=1024)"))?;
        let number: f64 = value
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| format!("{name}: '{value}' is not a number, 0 or more"))?;
        match name {
            "cpus" => view.cpus = number,
            "mem" => view.mem = number.ceil() as u64,
            "disk" => view.disk = number.ceil() as u64,
            other => return Err(format!("{other}: only cpus, mem (MiB) and disk (MiB)")),
        }
    }
    Ok(view)
}

fn scalars(r: &ResourcesView) -> Value {
    json!({
        "cpus": { "value": r.cpus },
        "mem": { "value": r.mem as f64 },
        "disk": { "value": r.disk as f64 },
    })
}

fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

fn used(r: &ResourcesView) -> String {
    format!("{} cpus, {} MiB", r.cpus, r.mem)
}

fn live_tasks(view: &FrameworkView) -> usize {
    const ENDED: [&str; 7] = [
        "TASK_FINISHED",
        "TASK_FAILED",
        "TASK_KILLED",
        "TASK_ERROR",
        "TASK_LOST",
        "TASK_GONE",
        "TASK_DROPPED",
    ];
    view.tasks_by_state
        .iter()
        .filter(|(state, _)| !ENDED.contains(&state.as_str()))
        .map(|(_, n)| n)
        .sum()
}

pub(super) async fn framework(
    client: &Client,
    json: bool,
    command: FrameworkCommand,
) -> anyhow::Result<()> {
    match command {
        FrameworkCommand::List => {
            let views: Vec<FrameworkView> = client.get(FRAMEWORKS).await?;
            if json {
                return print_json(&views);
            }
            let mut rows = vec![row(&[
                "ID", "NAME", "ROLE", "WEIGHT", "STATE", "TASKS", "USED", "SHARE",
            ])];
            for v in &views {
                rows.push(vec![
                    v.id.clone(),
                    v.name.clone(),
                    v.role.clone(),
                    v.weight.to_string(),
                    v.state.clone(),
                    live_tasks(v).to_string(),
                    used(&v.used),
                    percent(v.share),
                ]);
            }
            print_table(&rows);
            Ok(())
        }
        FrameworkCommand::Show { id } => {
            let view: FrameworkView = client.get(&format!("{FRAMEWORKS}/{id}")).await?;
            if json {
                return print_json(&view);
            }
            println!("id:        {}", view.id);
            println!("name:      {}", view.name);
            println!("role:      {} (weight {})", view.role, view.weight);
            println!("state:     {}", view.state);
            if let Some(principal) = &view.principal {
                println!("principal: {principal}");
            }
            if let Some(at) = &view.registered_at {
                println!("registered: {at}");
            }
            if let Some(at) = &view.disconnected_at {
                println!(
                    "disconnected: {at}, removed with its tasks at {} unless it subscribes again",
                    view.removed_at.as_deref().unwrap_or("?")
                );
            }
            if !view.capabilities.is_empty() {
                println!("capabilities: {}", view.capabilities.join(", "));
            }
            println!(
                "used:      {} ({} of the cluster); offered: {}",
                used(&view.used),
                percent(view.share),
                used(&view.offered)
            );
            let tasks = view.tasks.unwrap_or_default();
            if tasks.is_empty() {
                println!("tasks:     none");
                return Ok(());
            }
            println!();
            let mut rows = vec![row(&["TASK", "AGENT", "STATE", "CPUS", "MEM"])];
            for t in &tasks {
                rows.push(vec![
                    t.id.clone(),
                    t.agent_id.clone(),
                    t.state.clone(),
                    t.resources.cpus.to_string(),
                    t.resources.mem.to_string(),
                ]);
            }
            print_table(&rows);
            Ok(())
        }
        FrameworkCommand::Teardown { id } => {
            let answer: Value = client
                .send_json(Method::DELETE, &format!("{FRAMEWORKS}/{id}"), b"")
                .await?;
            if json {
                return print_json(&answer);
            }
            println!("framework {id} torn down: its tasks are being killed");
            Ok(())
        }
    }
}

#[derive(serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct RoleRow {
    role: String,
    weight: f64,
    guarantee: ResourcesView,
    #[serde(default)]
    limit: Option<ResourcesView>,
    frameworks: Vec<String>,
    used: ResourcesView,
    share: f64,
}

pub(super) async fn role(client: &Client, json: bool, command: RoleCommand) -> anyhow::Result<()> {
    match command {
        RoleCommand::List => {
            let roles: Vec<RoleRow> = client.get(ROLES).await?;
            if json {
                return print_json(&roles);
            }
            let mut rows = vec![row(&[
                "ROLE",
                "WEIGHT",
                "GUARANTEE",
                "LIMIT",
                "FRAMEWORKS",
                "USED",
                "SHARE",
            ])];
            for r in &roles {
                rows.push(vec![
                    r.role.clone(),
                    r.weight.to_string(),
                    used(&r.guarantee),
                    r.limit.as_ref().map_or("-".into(), used),
                    r.frameworks.len().to_string(),
                    used(&r.used),
                    percent(r.share),
                ]);
            }
            print_table(&rows);
            Ok(())
        }
        RoleCommand::Set {
            role,
            weight,
            guarantee,
            limit,
            no_quota,
            force,
        } => {
            anyhow::ensure!(
                weight.is_some() || guarantee.is_some() || limit.is_some() || no_quota,
                "nothing to set: give --weight, --guarantee, --limit or --no-quota"
            );
            if let Some(weight) = weight {
                let call = json!({
                    "type": "UPDATE_WEIGHTS",
                    "update_weights": { "weight_infos": [{ "role": role, "weight": weight }] },
                });
                client
                    .send_text(Method::POST, OPERATOR, Some(call.to_string().as_bytes()))
                    .await?;
            }
            if guarantee.is_some() || limit.is_some() || no_quota {
                let mut config = json!({ "role": role });
                if let Some(guarantee) = &guarantee {
                    config["guarantees"] = scalars(guarantee);
                }
                if let Some(limit) = &limit {
                    config["limits"] = scalars(limit);
                }
                let call = json!({
                    "type": "UPDATE_QUOTA",
                    "update_quota": { "force": force, "quota_configs": [config] },
                });
                client
                    .send_text(Method::POST, OPERATOR, Some(call.to_string().as_bytes()))
                    .await?;
            }
            let roles: Vec<RoleRow> = client.get(ROLES).await?;
            let now = roles.into_iter().find(|r| r.role == role);
            if json {
                return print_json(&now);
            }
            match now {
                Some(r) => println!(
                    "role {}: weight {}, guarantee {}, limit {}",
                    r.role,
                    r.weight,
                    used(&r.guarantee),
                    r.limit.as_ref().map_or("none".into(), used)
                ),
                None => println!("role {role}: back to the defaults (weight 1, no quota)"),
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_are_read_as_name_value_pairs() {
        let r = parse_resources("cpus=1.5,mem=512").unwrap();
        assert_eq!((r.cpus, r.mem, r.disk), (1.5, 512, 0));
        assert!(parse_resources("gpus=1").unwrap_err().contains("only cpus"));
        assert!(parse_resources("cpus=-1").unwrap_err().contains("cpus"));
        assert!(parse_resources("cpus").unwrap_err().contains("NAME=VALUE"));
    }
}

//! `dcos-rs node`: list, drain, remove agents; add and remove masters (`/cluster/v1`).

use super::print_json;
use crate::cli::client::Client;
use anyhow::Context;
use clap::Subcommand;
use dcos_api::routes::cluster as cluster_routes;
use dcos_api::NodesView;
use hyper::Method;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// List masters and agents with their state and resources.
    List,
    /// Add a node over SSH (preflight, provision, join), or register a master started by hand.
    #[command(long_about = "Add a node to a running cluster.\n\n\
        With USER@HOST (the cluster made by `dcos-rs install`): the same preflight and\n\
        provisioning as the install, for this one host, with the CA, tokens and settings of\n\
        cluster.yaml's state dir; no token or certificate is copied by hand. An agent is\n\
        done once it is registered and active; a master joins as a learner and is promoted\n\
        to a voter once it has caught up (up to 60 s). The node is recorded in the state\n\
        dir's added-nodes.yaml, so later installs, upgrades and uninstalls include it.\n\n\
        Without USER@HOST, only `--role master --id N --advertise-url URL`: asks the cluster\n\
        to take a master you started yourself (no initial_masters in its master.toml).\n\n\
        Examples:\n  \
        dcos-rs node add root@10.77.0.16 --role agent --attr rack=r3 --config cluster.yaml\n  \
        dcos-rs node add admin@10.77.0.17:2222 --role master --ssh-key ~/.ssh/id_ed25519\n  \
        dcos-rs node add --role master --id 4 --advertise-url https://10.77.0.14:5050")]
    Add {
        /// The new node over SSH: [USER@]HOST[:PORT] (defaults from cluster.yaml's `ssh`).
        target: Option<String>,
        /// What the new node runs.
        #[arg(long, value_parser = ["master", "agent"])]
        role: String,
        /// An agent attribute for placement constraints, NAME=VALUE (repeat for several).
        #[arg(long = "attr", value_name = "NAME=VALUE")]
        attributes: Vec<String>,
        /// The private key to log in with [default: cluster.yaml's ssh.key].
        #[arg(long, value_name = "PATH")]
        ssh_key: Option<PathBuf>,
        /// The node's name [default: the first free m<N> or a<N>].
        #[arg(long)]
        name: Option<String>,
        /// The cluster's inventory (its state dir holds the CA and tokens).
        #[arg(long, default_value = "cluster.yaml")]
        config: PathBuf,
        /// Take over a host that holds another cluster's install.
        #[arg(long)]
        force: bool,
        /// Without USER@HOST: the master's node_id (its master.toml).
        #[arg(long)]
        id: Option<u64>,
        /// Without USER@HOST: the master's advertise_url (https://host:port).
        #[arg(long)]
        advertise_url: Option<String>,
    },
    /// Drain an agent: no new tasks, and its tasks move to other agents.
    #[command(
        long_about = "Drain an agent: it takes no new tasks, and the services framework\n\
        starts a replacement of each of its tasks on another agent and kills the old one once\n\
        the replacement runs (with the app's kill grace). Tasks that fit nowhere else stay.\n\
        The agent stays drained across restarts; `dcos-rs node remove` forgets it after.\n\n\
        AGENT is an agent id or an agent's hostname/address as `node list` shows it.\n\n\
        Example:\n  \
        dcos-rs node drain 10.77.0.21 --wait && dcos-rs node remove 10.77.0.21"
    )]
    Drain {
        agent: String,
        /// Wait until no task is left on the agent, printing progress.
        #[arg(long)]
        wait: bool,
        /// Longest wait with --wait, in seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// Wait until the agent is empty, at most this long (`90s`, `5m`, `1h`; a number is
        /// seconds): --wait with --timeout in one.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration_s)]
        deadline: Option<u64>,
    },
    /// Forget a drained or unreachable agent, or (with --master) remove a master.
    #[command(
        long_about = "Forget an agent: allowed once it is drained (no tasks left) or\n\
        while it is unreachable (its remaining tasks become TASK_LOST; they were replaced).\n\
        A removed agent may not register again with the same id: delete the agent_id file in\n\
        its work_dir to bring the machine back as a new agent.\n\n\
        With --master, NODE is a master id: it leaves the Raft membership (stop its process\n\
        afterwards). The last voter cannot be removed.\n\n\
        Examples:\n  \
        dcos-rs node remove 6f1c0d3e-...\n  \
        dcos-rs node remove --master 3"
    )]
    Remove {
        node: String,
        /// NODE is a master id.
        #[arg(long)]
        master: bool,
        /// Also uninstall the node over SSH (the cluster made by `dcos-rs install` from this
        /// inventory) and forget it there. NODE is then its address or name, as in the
        /// inventory; for an agent, also as `node list` shows it.
        #[arg(long, value_name = "CLUSTER_YAML")]
        config: Option<PathBuf>,
    },
}

/// "term 3, log 120, lag 0" with whatever the answering master knows of that master.
pub(super) fn master_progress(m: &dcos_api::MasterView) -> String {
    let mut parts = vec![format!("term {}", m.term)];
    if let Some(index) = m.last_log_index {
        parts.push(format!("log {index}"));
    }
    if let Some(lag) = m.lag {
        parts.push(format!("lag {lag}"));
    }
    parts.join(", ")
}

pub(super) async fn node(client: &Client, json: bool, command: NodeCommand) -> anyhow::Result<()> {
    match command {
        NodeCommand::List => unreachable!("handled by the caller"),
        NodeCommand::Add {
            target: Some(_), ..
        } => unreachable!("handled by the caller (over SSH)"),
        NodeCommand::Add {
            role,
            id,
            advertise_url: url,
            ..
        } => {
            anyhow::ensure!(
                role == "master",
                "--role agent needs the host: dcos-rs node add root@<host> --role agent (over SSH), or start `dcos-rs agent --config agent.toml` on it yourself"
            );
            let (Some(id), Some(url)) = (id, url) else {
                anyhow::bail!("--role master needs --id (the new master's node_id) and --advertise-url (its advertise_url)");
            };
            if !json {
                eprintln!("adding master {id} at {url}: learner first, promoted once caught up (up to 60 s)…");
            }
            let body = serde_json::to_vec(&serde_json::json!({ "id": id, "url": url }))?;
            let status: serde_json::Value = client
                .send_json(Method::POST, cluster_routes::MASTERS, &body)
                .await?;
            if json {
                return print_json(&status);
            }
            println!("master {id} is a voting member; see `dcos-rs node list`");
            Ok(())
        }
        NodeCommand::Drain {
            agent,
            wait,
            timeout,
            deadline,
        } => {
            let (wait, timeout) = match deadline {
                Some(seconds) => (true, seconds),
                None => (wait, timeout),
            };
            let id = resolve_agent(client, &agent).await?;
            let view: dcos_api::AgentView = client
                .send_json(Method::POST, &cluster_routes::agent_drain(&id), b"")
                .await?;
            if !wait {
                if json {
                    return print_json(&view);
                }
                println!(
                    "agent {id} is draining: {} task(s) to move; `dcos-rs node list` shows progress",
                    view.tasks
                );
                return Ok(());
            }
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout);
            let mut last = usize::MAX;
            loop {
                let nodes: NodesView = client.get(cluster_routes::NODES).await?;
                let view = nodes
                    .agents
                    .into_iter()
                    .find(|a| a.id == id)
                    .with_context(|| format!("agent {id} disappeared while draining"))?;
                if view.tasks != last && !json {
                    eprintln!("agent {id}: {} task(s) left", view.tasks);
                    last = view.tasks;
                }
                if view.tasks == 0 {
                    if json {
                        return print_json(&view);
                    }
                    println!("agent {id} is drained; `dcos-rs node remove {id}` forgets it");
                    return Ok(());
                }
                anyhow::ensure!(
                    std::time::Instant::now() < deadline,
                    "agent {id} still has {} task(s) after {timeout} s (do the other agents have room? see `dcos-rs task list`)",
                    view.tasks
                );
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
        NodeCommand::Remove {
            node,
            master,
            config,
        } => {
            // With --config, NODE may be an inventory name or address: find the id.
            let inventory_node = match &config {
                Some(config) => crate::install::load_inventory(config)?
                    .nodes
                    .into_iter()
                    .find(|n| n.name == node || n.address == node),
                None => None,
            };
            let node = match (&inventory_node, master) {
                (Some(n), true) => n.master_id.map(|id| id.to_string()).unwrap_or(node),
                (Some(n), false) => n.address.clone(),
                (None, _) => node,
            };
            let (path, what) = if master {
                let id: u64 = node
                    .parse()
                    .with_context(|| format!("--master: {node:?} is not a master id (a number)"))?;
                (cluster_routes::master(id), format!("master {id}"))
            } else {
                let id = resolve_agent(client, &node).await?;
                (cluster_routes::agent(&id), format!("agent {id}"))
            };
            let answer: serde_json::Value = client.send_json(Method::DELETE, &path, b"").await?;
            if let (Some(config), Some(n)) = (&config, &inventory_node) {
                if master {
                    // Its certificate, from the installer's state dir: every master refuses
                    // it from now on.
                    let serial = crate::install::certificate_serial(config, n)?;
                    let body = serde_json::to_vec(&serde_json::json!({ "serial": serial }))?;
                    let _: serde_json::Value = client
                        .send_json(Method::POST, cluster_routes::REVOKED, &body)
                        .await?;
                    if !json {
                        eprintln!("revoked {}'s certificate (serial {serial})", n.name);
                    }
                }
                crate::install::remove_node(config, &n.address, json).await?;
            }
            if json {
                return print_json(&answer);
            }
            println!("{what} removed");
            Ok(())
        }
    }
}

/// An agent id from an id, a hostname or an address of `node list` (one match only).
async fn resolve_agent(client: &Client, name: &str) -> anyhow::Result<String> {
    let nodes: NodesView = client.get(cluster_routes::NODES).await?;
    if nodes.agents.iter().any(|a| a.id == name) {
        return Ok(name.to_string());
    }
    let matches: Vec<&dcos_api::AgentView> = nodes
        .agents
        .iter()
        .filter(|a| {
            a.hostname == name
                || a.url == name
                || a.url
                    .split("://")
                    .nth(1)
                    .and_then(|rest| rest.split(':').next())
                    == Some(name)
        })
        .collect();
    match matches.as_slice() {
        [one] => Ok(one.id.clone()),
        [] => anyhow::bail!(
            "no agent {name:?}: give an agent id, hostname or address from `dcos-rs node list`"
        ),
        _ => anyhow::bail!("{name:?} names {} agents: give the agent id", matches.len()),
    }
}

/// `90`, `90s`, `5m` or `1h` in seconds (at most a week).
fn parse_duration_s(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => {
            return Err(format!(
                "{text:?}: give seconds, or a number with s, m or h (5m)"
            ))
        }
    };
    let seconds = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .filter(|s| (1..=7 * 24 * 3600).contains(s))
        .ok_or_else(|| format!("{text:?}: from 1 s to 7 days (5m, 90s, 1h)"))?;
    Ok(seconds)
}

#[cfg(test)]
mod duration_tests {
    use super::parse_duration_s;

    #[test]
    fn deadlines_read_as_seconds() {
        assert_eq!(parse_duration_s("90"), Ok(90));
        assert_eq!(parse_duration_s("90s"), Ok(90));
        assert_eq!(parse_duration_s("5m"), Ok(300));
        assert_eq!(parse_duration_s("1h"), Ok(3600));
        assert!(parse_duration_s("0").is_err());
        assert!(parse_duration_s("5d").is_err());
        assert!(parse_duration_s("m").is_err());
    }
}

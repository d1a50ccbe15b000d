//! `dcos-rs cluster upgrade --binary <path>`: a rolling replacement of the binary. Masters one
//! at a time, followers first; before the leader's turn an upgraded master takes the
//! leadership over (`POST /cluster/v1/leadership`), so the cluster changes leader once. Then
//! agents one at a time; their tasks keep running (the agent's unit stops only the agent).
//! Each node must come back healthy on the new build before the next is touched: a failed
//! gate stops the upgrade with the node, the step and its log; `--resume` continues it.

use super::{journal, load_inventory, probe_nodes, Probed, Progress, Reached, State};
use anyhow::{bail, Context};
use dcos_api::cluster::NodesView;
use dcos_installer::facts::BINARY_PATH;
use dcos_installer::inventory::{Inventory, Node, Role};
use dcos_installer::preflight::unit_name;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone)]
pub struct UpgradeArgs {
    /// The new dcos-rs binary (a static build: `make static`).
    #[arg(long)]
    pub binary: PathBuf,
    /// The cluster's inventory (its state dir holds the CA and the admin token).
    #[arg(long, default_value = "cluster.yaml")]
    pub config: PathBuf,
    /// Continue an upgrade that stopped (some nodes run the new binary already).
    #[arg(long)]
    pub resume: bool,
}

/// The version a binary reports (`<binary> --version`: `dcos-rs 0.1.0+<build>`).
fn version_of(binary: &std::path::Path) -> anyhow::Result<String> {
    let output = std::process::Command::new(binary)
        .arg("--version")
        .output()
        .with_context(|| {
            format!(
                "running {} --version (it must run on this machine too)",
                binary.display()
            )
        })?;
    let text = String::from_utf8_lossy(&output.stdout);
    match text.trim().strip_prefix("dcos-rs ") {
        Some(version) if output.status.success() => Ok(version.to_string()),
        _ => bail!(
            "{} --version printed {:?}: not a dcos-rs binary",
            binary.display(),
            text.trim()
        ),
    }
}

pub async fn upgrade(args: UpgradeArgs, json: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let progress = Progress { json };
    let inventory = load_inventory(&args.config)?;
    let state = State::prepare(&inventory)?;
    let bytes = std::fs::read(&args.binary)
        .with_context(|| format!("reading {}", args.binary.display()))?;
    let sha = dcos_installer::sha256_hex(&bytes);
    let version = version_of(&args.binary)?;
    progress.line(&format!(
        "upgrading cluster {} to {version}",
        inventory.name
    ));

    // Where every node stands: connected and probed (the binary's hash).
    let reached = probe_nodes(&inventory, &inventory.nodes, &state, true).await;
    let mut nodes = Vec::new();
    let mut unreachable = Vec::new();
    for r in reached {
        match r {
            Reached::Probed(p) => nodes.push(*p),
            Reached::Failed { node, step, reason } => unreachable.push(format!(
                "{} ({}) {step}: {reason}",
                node.name,
                node.ssh_label()
            )),
        }
    }
    if !unreachable.is_empty() {
        bail!(
            "every node must be reachable to upgrade; nothing was changed:\n  {}",
            unreachable.join("\n  ")
        );
    }
    let upgraded = |p: &Probed| p.facts.files.get(BINARY_PATH) == Some(&sha);
    let done = nodes.iter().filter(|p| upgraded(p)).count();
    if done == nodes.len() {
        println!(
            "every node of cluster {} runs {version} already",
            inventory.name
        );
        return Ok(());
    }
    if done > 0 && !args.resume {
        bail!(
            "an upgrade is under way: {done} of {} nodes run {version} already. Give --resume to continue it",
            nodes.len()
        );
    }

    let client = state.reachable_client(&inventory).await?;

    // --resume: the nodes on the new binary already must be healthy on it (the node whose
    // gate failed is one of them) before anything else is touched.
    let mut resumed: Vec<&Probed> = nodes.iter().filter(|p| upgraded(p)).collect();
    resumed.sort_by_key(|p| (p.node.role, p.node.master_id));
    for probed in resumed {
        let node = &probed.node;
        let unit = unit_name(node.role);
        let started = probed
            .session
            .run(
                &format!("systemctl is-active --quiet {unit} || systemctl restart {unit}"),
                b"",
            )
            .await;
        check(
            node,
            &format!("start {unit}"),
            started.map_err(|e| e.to_string()).and_then(super::exit_ok),
        )?;
        let gate = match node.role {
            Role::Master => master_gate(&inventory, &state, node, Some(&version)).await,
            Role::Agent => agent_gate(&client, &inventory, node, &version, None).await,
        };
        if let Err(reason) = gate {
            bail!(
                "{} ({}) step \"health gate\" failed again: {reason}\nits log: {}\nnothing else was touched; fix the cause (or upgrade to another build) and run the command again",
                node.name,
                node.address,
                journal(probed).await
            );
        }
        progress.step(
            node,
            &format!("healthy on {version} (upgraded before)"),
            "done",
        );
    }

    // Masters that do not answer go first (restarting them cannot cost the quorum: they are
    // out of it), as after an upgrade to a build that could not start; then the others, each
    // with all the rest back before it.
    let mut down = std::collections::BTreeSet::new();
    for probed in nodes
        .iter()
        .filter(|p| p.node.role == Role::Master && !upgraded(p))
    {
        let node = &probed.node;
        let asked = master_client(&inventory, &state, node)?;
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            asked.get::<NodesView>(dcos_api::routes::cluster::NODES),
        )
        .await;
        if !matches!(answer, Ok(Ok(_))) {
            progress.step(node, "does not answer: upgraded first", "noted");
            down.insert(node.name.clone());
        }
    }

    let leader_now = async || -> Option<u64> {
        let view: NodesView = client.get(dcos_api::routes::cluster::NODES).await.ok()?;
        view.masters
            .iter()
            .find(|m| m.role == "leader")
            .map(|m| m.id)
    };
    let leader = leader_now().await;
    // Followers first, the leader last; then agents in the file's order.
    let mut order: Vec<&Probed> = nodes.iter().filter(|p| !upgraded(p)).collect();
    order.sort_by_key(|p| {
        let up = !down.contains(&p.node.name);
        (
            p.node.role,
            up,
            p.node.master_id == leader,
            p.node.master_id,
        )
    });

    let mut count = 0;
    for probed in order {
        let node = &probed.node;
        // The leadership may have moved since: ask again before each master.
        if node.role == Role::Master
            && node.master_id.is_some()
            && node.master_id == leader_now().await
        {
            hand_over_leadership(&inventory, &state, &nodes, &sha, node, &progress).await?;
        }
        let tasks_before = match node.role {
            Role::Agent => agent_view(&client, &inventory, node).await.map(|a| a.tasks),
            Role::Master => None,
        };
        let step_started = Instant::now();
        let written = probed.session.write_file(BINARY_PATH, &bytes, 0o755).await;
        check(
            node,
            "upload the binary",
            written.map_err(|e| e.to_string()).and_then(super::exit_ok),
        )?;
        progress.step(
            node,
            "upload the binary",
            &format!("done {:.1} s", step_started.elapsed().as_secs_f64()),
        );
        let unit = unit_name(node.role);
        let restarted = probed
            .session
            .run(&format!("systemctl restart {unit}"), b"")
            .await;
        check(
            node,
            &format!("restart {unit}"),
            restarted
                .map_err(|e| e.to_string())
                .and_then(super::exit_ok),
        )?;
        let gate_started = Instant::now();
        let gate = match node.role {
            Role::Master => master_gate(&inventory, &state, node, Some(&version)).await,
            Role::Agent => agent_gate(&client, &inventory, node, &version, tasks_before).await,
        };
        if let Err(reason) = gate {
            progress.step(node, "health gate", "FAILED");
            bail!(
                "{} ({}) step \"health gate\" failed after {} s: {reason}\nits log: {}\nthe upgrade stopped here; fix the cause and run `dcos-rs cluster upgrade --binary {} --resume`",
                node.name,
                node.address,
                gate_started.elapsed().as_secs(),
                journal(probed).await,
                args.binary.display()
            );
        }
        progress.step(
            node,
            &format!("healthy on {version}"),
            &format!("done {:.1} s", gate_started.elapsed().as_secs_f64()),
        );
        count += 1;
    }
    for probed in nodes {
        probed.session.close().await;
    }
    let seconds = started.elapsed().as_secs_f64();
    if json {
        println!(
            "{}",
            serde_json::json!({"cluster": inventory.name, "version": version, "upgraded": count, "seconds": seconds})
        );
    } else {
        println!(
            "cluster {} runs {version}: {count} node(s) upgraded in {seconds:.1} s",
            inventory.name
        );
    }
    Ok(())
}

fn check(node: &Node, step: &str, result: Result<(), String>) -> anyhow::Result<()> {
    result.map_err(|reason| {
        anyhow::anyhow!(
            "{} ({}) step \"{step}\" failed: {reason}",
            node.name,
            node.address
        )
    })
}

/// A client of one master.
fn master_client(
    inventory: &Inventory,
    state: &State,
    node: &Node,
) -> anyhow::Result<crate::cli::client::Client> {
    Ok(crate::cli::client::Client::with_auth(
        &node.url(inventory),
        Some(&state.token),
        Some(&state.ca_cert()),
    )?)
}

/// Before the leader restarts: an upgraded master (or, if none is yet, any other) takes the
/// leadership over.
async fn hand_over_leadership(
    inventory: &Inventory,
    state: &State,
    nodes: &[Probed],
    sha: &str,
    leader: &Node,
    progress: &Progress,
) -> anyhow::Result<()> {
    let mut candidates: Vec<&Probed> = nodes
        .iter()
        .filter(|p| p.node.role == Role::Master && p.node.name != leader.name)
        .collect();
    candidates.sort_by_key(|p| p.facts.files.get(BINARY_PATH).map(String::as_str) != Some(sha));
    for candidate in candidates {
        let client = master_client(inventory, state, &candidate.node)?;
        let answer: Result<serde_json::Value, _> = client
            .send_json(
                hyper::Method::POST,
                dcos_api::routes::cluster::LEADERSHIP,
                b"",
            )
            .await;
        if answer.is_ok() {
            progress.step(
                leader,
                &format!("leadership handed to {}", candidate.node.name),
                "done",
            );
            return Ok(());
        }
    }
    // Not fatal: restarting the leader makes the others elect one (one election either way).
    progress.step(
        leader,
        "leadership hand-over",
        "no other master took it; restarting the leader anyway",
    );
    Ok(())
}

/// The master answers, itself a follower or the leader, with a leader known, and (given a
/// version) runs that build.
pub(super) async fn master_gate(
    inventory: &Inventory,
    state: &State,
    node: &Node,
    version: Option<&str>,
) -> Result<(), String> {
    let client = master_client(inventory, state, node).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(inventory.timeouts.quorum_s);
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        match client
            .get::<NodesView>(dcos_api::routes::cluster::NODES)
            .await
        {
            Ok(view) => {
                let me = view.masters.iter().find(|m| Some(m.id) == node.master_id);
                let leader = view.masters.iter().any(|m| m.role == "leader");
                match me {
                    Some(me)
                        if (version.is_none() || me.version.as_deref() == version)
                            && leader
                            && matches!(me.role.as_str(), "leader" | "follower") =>
                    {
                        return Ok(())
                    }
                    Some(me) => {
                        last = format!(
                            "it runs {:?} as {}, leader known: {leader}",
                            me.version, me.role
                        )
                    }
                    None => last = "it does not list itself".to_string(),
                }
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let on = version.map(|v| format!(" on {v}")).unwrap_or_default();
    Err(format!(
        "not healthy{on} within {} s (timeouts.quorum_s): {last}",
        inventory.timeouts.quorum_s
    ))
}

async fn agent_view(
    client: &crate::cli::client::Client,
    inventory: &Inventory,
    node: &Node,
) -> Option<dcos_api::cluster::AgentView> {
    let view: NodesView = client.get(dcos_api::routes::cluster::NODES).await.ok()?;
    view.agents
        .into_iter()
        .find(|a| a.url == node.url(inventory))
}

/// The upgraded agent registered again with the new build, active, with the tasks it had.
async fn agent_gate(
    client: &crate::cli::client::Client,
    inventory: &Inventory,
    node: &Node,
    version: &str,
    tasks_before: Option<usize>,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(inventory.timeouts.agents_s);
    let mut last = String::from("not registered yet");
    while Instant::now() < deadline {
        if let Some(agent) = agent_view(client, inventory, node).await {
            let tasks_kept = tasks_before.is_none_or(|before| agent.tasks >= before);
            if agent.version == version && agent.state == "active" && tasks_kept {
                return Ok(());
            }
            last = format!(
                "{} on {:?} with {} task(s) (had {tasks_before:?})",
                agent.state, agent.version, agent.tasks
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Err(format!(
        "not back on {version} within {} s (timeouts.agents_s): {last}",
        inventory.timeouts.agents_s
    ))
}

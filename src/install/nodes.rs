//! `dcos-rs node add <user@host>` and the SSH half of `node remove`: one node provisioned
//! (or removed) against a running cluster with the installer's machinery. The nodes added
//! this way are kept in the state dir's added-nodes.yaml (JSON, which is YAML), so later
//! `install` reruns, upgrades and uninstalls know them; cluster.yaml stays as the admin
//! wrote it.

use super::{
    load_inventory, own_binary, probe_nodes, report_preflight, run_plans, uninstall_node,
    wait_for_agents, wait_for_leader, Probed, Progress, State,
};
use anyhow::{bail, Context};
use dcos_installer::inventory::{self, Inventory, Role};
use dcos_installer::plan::{self, Payload};
use hyper::Method;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What `node add` was given.
pub struct AddNode {
    /// `[user@]host[:port]`.
    pub target: String,
    pub role: Role,
    pub name: Option<String>,
    pub attributes: Vec<(String, String)>,
    pub ssh_key: Option<PathBuf>,
    pub config: PathBuf,
    pub force: bool,
}

/// `user@host:port` split; the user and port may be left out.
fn parse_target(target: &str) -> anyhow::Result<(Option<String>, String, Option<u16>)> {
    let (user, rest) = match target.split_once('@') {
        Some((user, rest)) => (Some(user.to_string()), rest),
        None => (None, target),
    };
    // An IPv6 address comes in brackets when a port follows.
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        let (host, after) = inner
            .split_once(']')
            .with_context(|| format!("{target:?}: a '[' without its ']'"))?;
        (host.to_string(), after.strip_prefix(':'))
    } else if rest.matches(':').count() == 1 {
        let (host, port) = rest.split_once(':').unwrap();
        (host.to_string(), Some(port))
    } else {
        (rest.to_string(), None)
    };
    let port = match port {
        Some(port) => Some(
            port.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .with_context(|| format!("{target:?}: {port:?} is not a port"))?,
        ),
        None => None,
    };
    if host.is_empty() {
        bail!("{target:?}: no host: give user@host, e.g. root@10.0.0.7");
    }
    Ok((user, host, port))
}

fn added_path(inventory: &Inventory) -> PathBuf {
    inventory.state_dir.join(inventory::ADDED_FILE)
}

/// The added-nodes document: `{"masters": [...], "agents": [...]}`.
fn read_added(path: &Path) -> anyhow::Result<Value> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not the JSON `node add` writes: fix or remove it",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(json!({"masters": [], "agents": []}))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write_added(path: &Path, doc: &Value) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(doc)? + "\n";
    crate::tls::write_atomically(path, text.as_bytes(), 0o600)
}

/// The first `<prefix><n>` no node has or had (names.json keeps every name given).
fn free_name(inventory: &Inventory, prefix: &str) -> String {
    let pins = super::read_pins(inventory).unwrap_or_default();
    (1..)
        .map(|n| format!("{prefix}{n}"))
        .find(|name| inventory.node(name).is_none() && !pins.values().any(|p| p.name == *name))
        .expect("some name is free")
}

pub async fn add_node(args: AddNode, json: bool) -> anyhow::Result<()> {
    let progress = Progress { json };
    let inventory = load_inventory(&args.config)?;
    let (user, host, port) = parse_target(&args.target)?;
    let role_key = if args.role == Role::Master {
        "masters"
    } else {
        "agents"
    };
    let name = args.name.clone().unwrap_or_else(|| {
        free_name(
            &inventory,
            if args.role == Role::Master { "m" } else { "a" },
        )
    });
    let mut entry = json!({ "address": host, "name": name });
    if args.role == Role::Master {
        let pinned_ids = super::read_pins(&inventory)
            .unwrap_or_default()
            .into_values()
            .filter_map(|p| p.id);
        let next = inventory
            .masters()
            .filter_map(|m| m.master_id)
            .chain(pinned_ids)
            .max()
            .unwrap_or(0)
            + 1;
        entry["id"] = json!(next);
    }
    let mut ssh = serde_json::Map::new();
    if let Some(user) = user {
        ssh.insert("user".into(), json!(user));
    }
    if let Some(port) = port {
        ssh.insert("port".into(), json!(port));
    }
    if let Some(key) = &args.ssh_key {
        let key = std::path::absolute(key).unwrap_or_else(|_| key.clone());
        ssh.insert("key".into(), json!(key));
    }
    if !ssh.is_empty() {
        entry["ssh"] = Value::Object(ssh);
    }
    if !args.attributes.is_empty() {
        entry["attributes"] = json!(args.attributes.iter().cloned().collect::<BTreeMap<_, _>>());
    }

    // The inventory with the new node: the same checks as cluster.yaml's nodes.
    let path = added_path(&inventory);
    let mut doc = read_added(&path)?;
    doc[role_key]
        .as_array_mut()
        .with_context(|| format!("{}: `{role_key}` is not a list", path.display()))?
        .push(entry);
    let doc_text = serde_json::to_string(&doc)?;
    let cluster_text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    let base = std::fs::canonicalize(
        args.config
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    )?;
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let env = inventory::Env {
        home: home.as_deref(),
    };
    let grown = inventory::parse_with_added(
        &cluster_text,
        &args.config.display().to_string(),
        &base,
        &env,
        Some((&doc_text, "node add")),
    )?;
    let mut grown = grown;
    super::pin_names(&mut grown)?;
    let node = grown.node(&name).expect("the node just added").clone();

    let state = State::prepare(&grown)?;
    progress.line(&format!(
        "adding {} {} ({}) to cluster {}",
        node.role,
        node.name,
        node.ssh_label(),
        grown.name
    ));
    let binary = own_binary()?;
    let reached = probe_nodes(&grown, std::slice::from_ref(&node), &state, args.force).await;
    let probed = report_preflight(&grown, reached, &progress)?;
    let mut plans = Vec::new();
    for p in &probed {
        let payload = Payload {
            binary: &binary,
            secrets: state.node_secrets(&grown, &p.node)?,
        };
        plans.push(plan::node_plan(&grown, &p.node, &payload, &p.facts));
    }
    let sessions: BTreeMap<String, Probed> = probed
        .into_iter()
        .map(|p| (p.node.name.clone(), p))
        .collect();
    run_plans(&sessions, plans.iter(), &progress).await?;

    let client = state.reachable_client(&inventory).await?;
    let summary = match node.role {
        Role::Master => {
            let id = node.master_id.expect("masters have ids");
            progress.line(&format!(
                "{}: joining as a learner, promoted to voter once caught up (up to 60 s)",
                node.name
            ));
            let body = serde_json::to_vec(&json!({ "id": id, "url": node.url(&grown) }))?;
            let _: Value = client
                .send_json(Method::POST, dcos_api::routes::cluster::MASTERS, &body)
                .await
                .with_context(|| {
                    format!("{} ({}) step \"join\" failed", node.name, node.address)
                })?;
            wait_for_leader(&client, &grown, &sessions, &progress).await?;
            format!(
                "{} ({}) joined as master {id}, a voter",
                node.name, node.address
            )
        }
        Role::Agent => {
            wait_for_agents(
                &client,
                &grown,
                std::slice::from_ref(&node),
                &sessions,
                &progress,
            )
            .await?;
            format!(
                "{} ({}) joined as an agent, active",
                node.name, node.address
            )
        }
    };
    for probed in sessions.into_values() {
        probed.session.close().await;
    }
    write_added(&path, &doc)?;
    if json {
        println!(
            "{}",
            json!({ "node": node.name, "role": node.role, "address": node.address })
        );
    } else {
        println!("{summary}");
    }
    Ok(())
}

/// After the API forgot a node: uninstall it over SSH if the inventory knows it (keeping
/// nothing), and drop it from added-nodes.yaml. `address` is the node's address or name.
pub async fn remove_node(config: &Path, address: &str, json: bool) -> anyhow::Result<()> {
    let progress = Progress { json };
    let inventory = load_inventory(config)?;
    let Some(node) = inventory
        .nodes
        .iter()
        .find(|n| n.address == address || n.name == address)
        .cloned()
    else {
        bail!(
            "{address} is not a node of {} (nor added with `node add`): nothing to uninstall",
            config.display()
        );
    };
    let state = State::prepare(&inventory)?;
    let uninstalled = match uninstall_node(&inventory, &node, &state, false).await {
        Ok(()) => {
            progress.step(&node, "uninstall", "done");
            true
        }
        Err(e) => {
            eprintln!(
                "warning: {e:#}\nthe node is out of the cluster; uninstall it later with `dcos-rs node remove {} --config ...` again (it stays in the inventory until then), or by hand",
                node.address
            );
            false
        }
    };
    if !uninstalled {
        return Ok(());
    }
    if node.added {
        let path = added_path(&inventory);
        let mut doc = read_added(&path)?;
        for key in ["masters", "agents"] {
            if let Some(list) = doc[key].as_array_mut() {
                list.retain(|entry| entry["name"] != node.name.as_str());
            }
        }
        write_added(&path, &doc)?;
    } else {
        eprintln!(
            "note: {} is listed in {}: delete its entry there, or the next `dcos-rs install` installs it again",
            node.name,
            config.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_split_into_user_host_and_port() {
        let cases = [
            ("root@10.0.0.7", (Some("root"), "10.0.0.7", None)),
            ("10.0.0.7:2222", (None, "10.0.0.7", Some(2222))),
            (
                "ops@h7.example.com:22",
                (Some("ops"), "h7.example.com", Some(22)),
            ),
            (
                "admin@[fd00::7]:2200",
                (Some("admin"), "fd00::7", Some(2200)),
            ),
            ("fd00::7", (None, "fd00::7", None)),
        ];
        for (target, (user, host, port)) in cases {
            let (u, h, p) = parse_target(target).unwrap();
            assert_eq!(
                (u.as_deref(), h.as_str(), p),
                (user, host, port),
                "{target}"
            );
        }
        assert!(parse_target("root@").is_err());
        assert!(parse_target("h:0").is_err());
        assert!(parse_target("h:ssh").is_err());
    }
}

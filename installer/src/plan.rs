//! The install plan: for each node, the steps that bring it from what its facts say to what
//! the inventory wants. A pure function of (inventory, files each node should have, facts):
//! a step whose result is already there is planned as skipped with the reason, so a rerun
//! after a failure does only what is left, and a changed cluster.yaml touches only what
//! changed. `--dry-run` prints this plan.

use crate::facts::{Facts, BINARY_PATH, MARKER_FILE};
use crate::inventory::{Inventory, Node, Role};
use crate::preflight::unit_name;
use crate::render::{self, NodeFile};

/// One step on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create the config and data directories and write the marker naming the cluster and
    /// role (first, so a rerun after a failure knows the node is this cluster's).
    Claim { marker: NodeFile, data_dir: String },
    /// Put a file (the binary, a certificate, a config, the unit) in place atomically.
    Upload { file: NodeFile },
    /// `systemctl daemon-reload` and `enable --now` (or `restart` when something it runs
    /// changed while it was active).
    Start { unit: String, restart: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub action: Action,
    /// Why the step is not needed, if it is not.
    pub skip: Option<String>,
}

impl Step {
    /// A few words for the progress lines: "upload /etc/dcos-rs/agent.toml".
    pub fn label(&self) -> String {
        match &self.action {
            Action::Claim { .. } => "prepare directories".to_string(),
            Action::Upload { file } if file.path == BINARY_PATH => format!(
                "upload the binary ({} MB)",
                file.content.len().div_ceil(1 << 20)
            ),
            Action::Upload { file } => format!("write {}", file.path),
            Action::Start {
                unit,
                restart: true,
            } => format!("restart {unit}"),
            Action::Start {
                unit,
                restart: false,
            } => format!("start {unit}"),
        }
    }
}

/// The plan of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlan {
    pub node: String,
    pub role: Role,
    pub steps: Vec<Step>,
}

impl NodePlan {
    pub fn pending(&self) -> impl Iterator<Item = &Step> {
        self.steps.iter().filter(|s| s.skip.is_none())
    }

    /// The node's service runs and will be restarted.
    pub fn restarts(&self) -> bool {
        self.pending()
            .any(|s| matches!(s.action, Action::Start { restart: true, .. }))
    }
}

/// What the installer has for a node besides its config and unit: the binary and the
/// certificates, as bytes.
pub struct Payload<'a> {
    pub binary: &'a NodeFile,
    /// ca.crt, tokens, node.crt, node.key.
    pub secrets: Vec<NodeFile>,
}

/// The marker of a finished claim.
pub fn marker(inventory: &Inventory, node: &Node) -> NodeFile {
    NodeFile::new(
        MARKER_FILE,
        format!(
            "cluster={}\nrole={}\nname={}\n",
            inventory.name, node.role, node.name
        ),
        0o644,
    )
}

/// The steps for `node`.
pub fn node_plan(inventory: &Inventory, node: &Node, payload: &Payload, facts: &Facts) -> NodePlan {
    let mut steps = Vec::new();
    let marker = marker(inventory, node);
    let data_dir = match node.role {
        Role::Master => &inventory.data_dirs.master,
        Role::Agent => &inventory.data_dirs.agent,
    };
    let claimed = same(facts, &marker);
    steps.push(Step {
        action: Action::Claim {
            marker,
            data_dir: data_dir.to_string_lossy().into_owned(),
        },
        skip: claimed.then(|| "already this cluster's".to_string()),
    });

    let mut files = vec![payload.binary.clone()];
    files.extend(payload.secrets.iter().cloned());
    files.push(render::config(inventory, node));
    files.push(render::unit(node.role));
    let mut changed = false;
    for file in files {
        let unchanged = same(facts, &file);
        changed |= !unchanged;
        steps.push(Step {
            action: Action::Upload { file },
            skip: unchanged.then(|| "unchanged".to_string()),
        });
    }

    let unit = unit_name(node.role).to_string();
    let active = facts.unit_active(&unit);
    steps.push(Step {
        skip: (active && !changed).then(|| "running, nothing changed".to_string()),
        action: Action::Start {
            unit,
            restart: active && changed,
        },
    });
    NodePlan {
        node: node.name.clone(),
        role: node.role,
        steps,
    }
}

fn same(facts: &Facts, file: &NodeFile) -> bool {
    facts
        .files
        .get(&file.path)
        .is_some_and(|hash| *hash == file.sha256())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{parse, Env};
    use std::path::Path;

    fn inventory() -> Inventory {
        let text = "name: prod\nmasters:\n  - address: 10.0.0.1\nagents:\n  - address: 10.0.0.2\n";
        parse(text, "cluster.yaml", Path::new("/"), &Env { home: None }).unwrap()
    }

    fn payload_files() -> (NodeFile, Vec<NodeFile>) {
        let binary = NodeFile::new(BINARY_PATH, vec![1u8; 10], 0o755);
        let secrets = vec![
            NodeFile::new("/etc/dcos-rs/ca.crt", "ca", 0o644),
            NodeFile::new("/etc/dcos-rs/node.key", "key", 0o600),
        ];
        (binary, secrets)
    }

    fn plan_with(facts: &Facts) -> NodePlan {
        let inventory = inventory();
        let (binary, secrets) = payload_files();
        node_plan(
            &inventory,
            &inventory.nodes[1],
            &Payload {
                binary: &binary,
                secrets,
            },
            facts,
        )
    }

    /// The facts of a node where `plan` was carried out.
    fn after(plan: &NodePlan) -> Facts {
        let mut facts = Facts::default();
        for step in &plan.steps {
            match &step.action {
                Action::Claim { marker, .. } => {
                    facts.files.insert(marker.path.clone(), marker.sha256());
                }
                Action::Upload { file } => {
                    facts.files.insert(file.path.clone(), file.sha256());
                }
                Action::Start { unit, .. } => {
                    facts.units.insert(unit.clone(), "active".into());
                }
            }
        }
        facts
    }

    #[test]
    fn a_fresh_node_gets_every_step_in_order() {
        let plan = plan_with(&Facts::default());
        let labels: Vec<_> = plan.steps.iter().map(Step::label).collect();
        assert_eq!(
            labels,
            [
                "prepare directories",
                "upload the binary (1 MB)",
                "write /etc/dcos-rs/ca.crt",
                "write /etc/dcos-rs/node.key",
                "write /etc/dcos-rs/agent.toml",
                "write /etc/systemd/system/dcos-rs-agent.service",
                "start dcos-rs-agent",
            ]
        );
        assert!(plan.steps.iter().all(|s| s.skip.is_none()));
    }

    #[test]
    fn a_rerun_on_a_finished_node_does_nothing() {
        let facts = after(&plan_with(&Facts::default()));
        let again = plan_with(&facts);
        assert_eq!(again.pending().count(), 0, "{again:?}");
        assert_eq!(
            again.steps.last().unwrap().skip.as_deref(),
            Some("running, nothing changed")
        );
    }

    #[test]
    fn a_rerun_after_a_failure_does_what_is_left_and_starts() {
        let mut facts = after(&plan_with(&Facts::default()));
        facts.units.clear();
        facts.files.remove("/etc/dcos-rs/agent.toml");
        let plan = plan_with(&facts);
        let pending: Vec<_> = plan.pending().map(Step::label).collect();
        assert_eq!(
            pending,
            ["write /etc/dcos-rs/agent.toml", "start dcos-rs-agent"]
        );
    }

    #[test]
    fn drift_on_a_running_node_is_fixed_and_restarted() {
        let mut facts = after(&plan_with(&Facts::default()));
        facts.files.insert(BINARY_PATH.into(), "edited".into());
        let plan = plan_with(&facts);
        let pending: Vec<_> = plan.pending().map(Step::label).collect();
        assert_eq!(
            pending,
            ["upload the binary (1 MB)", "restart dcos-rs-agent"]
        );
    }
}

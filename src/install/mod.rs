//! `dcos-rs install --config cluster.yaml`: the shell around the installer crate. It reads
//! the inventory, keeps the cluster's CA, tokens and certificates in the state dir, probes
//! every node over SSH in parallel and prints the preflight table, plans (pure, in
//! dcos-installer), then carries the plan out: masters first, a leader elected by a majority,
//! then agents, each registered. Every step prints a progress line naming node and step; a
//! failure names both and what the node said. A rerun skips what is in place.

mod nodes;
mod state;
mod upgrade;

use anyhow::{bail, Context};
use dcos_installer::facts::{self, Facts, BINARY_PATH, CONFIG_DIR};
use dcos_installer::inventory::{self, Inventory, Node, Role};
use dcos_installer::plan::{self, Action, NodePlan, Payload};
use dcos_installer::preflight::{self, Check, Verdict};
use dcos_installer::render::NodeFile;
use dcos_installer::ssh::{shell_quote, Session, SshError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use nodes::{add_node, remove_node, AddNode};
pub use state::State;
pub use upgrade::{upgrade, UpgradeArgs};

/// A command's exit 0, or its status and the tail of what it printed.
fn exit_ok(output: dcos_installer::ssh::Output) -> Result<(), String> {
    if output.success() {
        Ok(())
    } else {
        Err(format!(
            "exit {}: {}",
            output
                .status
                .map(|s| s.to_string())
                .unwrap_or("by signal".into()),
            output.tail()
        ))
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct InstallArgs {
    /// The cluster inventory (YAML; every key documented in config/cluster.yaml).
    #[arg(long, default_value = "cluster.yaml")]
    pub config: PathBuf,
    /// Probe, check and print the plan; change nothing on any node.
    #[arg(long)]
    pub dry_run: bool,
    /// Take over nodes that hold another cluster's install or a hand-made one.
    #[arg(long)]
    pub force: bool,
}

/// A connected, probed node.
struct Probed {
    node: Node,
    session: Session,
    facts: Facts,
    checks: Vec<Check>,
}

/// What became of one node's connection and probe.
// One per node and run: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
enum Reached {
    Probed(Box<Probed>),
    Failed {
        node: Node,
        step: &'static str,
        reason: String,
    },
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Reads and checks cluster.yaml, with the nodes `node add` added since (the state dir's
/// added-nodes.yaml).
pub fn load_inventory(path: &Path) -> anyhow::Result<Inventory> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the inventory {}", path.display()))?;
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let base =
        std::fs::canonicalize(base).with_context(|| format!("finding {}", base.display()))?;
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let env = inventory::Env {
        home: home.as_deref(),
    };
    let file = path.display().to_string();
    let alone = inventory::parse(&text, &file, &base, &env)?;
    let added_path = alone.state_dir.join(inventory::ADDED_FILE);
    let mut inventory = match std::fs::read_to_string(&added_path) {
        Ok(added) => {
            let added_name = added_path.display().to_string();
            inventory::parse_with_added(&text, &file, &base, &env, Some((&added, &added_name)))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => alone,
        Err(e) => return Err(e).with_context(|| format!("reading {}", added_path.display())),
    };
    pin_names(&mut inventory)?;
    Ok(inventory)
}

/// The serial (hex) of the certificate the state dir issued to `node`.
pub fn certificate_serial(config: &Path, node: &Node) -> anyhow::Result<String> {
    let inventory = load_inventory(config)?;
    let path = inventory
        .state_dir
        .join("nodes")
        .join(format!("{}.crt", node.name));
    let certs = dcos_pki::load_certs(&path, "node certificate")?;
    let cert = certs
        .first()
        .with_context(|| format!("{} holds no certificate", path.display()))?;
    Ok(dcos_pki::certificate_serial(cert)?)
}

/// The state dir's record of each node's name and master id (see `inventory::pin`).
const PINS_FILE: &str = "names.json";

/// Nodes keep the names (and so the certificates) and master ids they were installed with,
/// when nodes before them leave cluster.yaml.
fn pin_names(inventory: &mut Inventory) -> anyhow::Result<()> {
    let pins = read_pins(inventory)?;
    inventory::pin(inventory, &pins)
        .map_err(|e| anyhow::anyhow!("{}: {e}", inventory.state_dir.join(PINS_FILE).display()))?;
    Ok(())
}

/// The names and master ids every node of the cluster was given (names.json).
fn read_pins(inventory: &Inventory) -> anyhow::Result<inventory::Pins> {
    let path = inventory.state_dir.join(PINS_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is damaged: fix or delete it", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Default::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Records the names of `inventory`'s nodes in the state dir (merged with earlier ones).
fn save_pins(inventory: &Inventory) -> anyhow::Result<()> {
    let path = inventory.state_dir.join(PINS_FILE);
    let mut pins: inventory::Pins = std::fs::read(&path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    let mut now = inventory.clone();
    pins.extend(inventory::pin(&mut now, &pins).map_err(anyhow::Error::msg)?);
    crate::tls::write_atomically(&path, &serde_json::to_vec_pretty(&pins)?, 0o600)
}

pub async fn install(args: InstallArgs, json: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let inventory = load_inventory(&args.config)?;
    let progress = Progress { json };
    let state = State::prepare(&inventory)?;
    progress.line(&format!(
        "cluster {}: {} masters, {} agents; state in {}",
        inventory.name,
        inventory.masters().count(),
        inventory.agents().count(),
        inventory.state_dir.display()
    ));

    let binary = own_binary()?;
    let reached = probe_all(&inventory, &state, args.force).await;
    let probed = report_preflight(&inventory, reached, &progress)?;

    let mut plans = Vec::new();
    for p in &probed {
        let payload = Payload {
            binary: &binary,
            secrets: state.node_secrets(&inventory, &p.node)?,
        };
        plans.push(plan::node_plan(&inventory, &p.node, &payload, &p.facts));
    }
    if args.dry_run {
        print_plan(&plans, json)?;
        return Ok(());
    }

    let sessions: BTreeMap<String, Probed> = probed
        .into_iter()
        .map(|p| (p.node.name.clone(), p))
        .collect();
    let by_role = |role: Role| plans.iter().filter(move |p| p.role == role);
    let client = state.client(&inventory)?;
    // New masters start together (a majority must be up to elect anyone); running masters
    // that must restart go one at a time, each back in a cluster with a leader before the
    // next, so the quorum holds.
    let (restarts, starts): (Vec<&NodePlan>, Vec<&NodePlan>) =
        by_role(Role::Master).partition(|p| p.restarts());
    run_plans(&sessions, starts.into_iter(), &progress).await?;
    for plan in restarts {
        run_plans(&sessions, std::iter::once(plan), &progress).await?;
        // Asked of the restarted master itself: the membership lists it while it is down.
        let node = &sessions[&plan.node].node;
        if let Err(reason) = upgrade::master_gate(&inventory, &state, node, None).await {
            bail!(
                "{} ({}) step \"health gate\" failed after its restart: {reason}\nits log: {}",
                node.name,
                node.address,
                journal(&sessions[&plan.node]).await
            );
        }
    }
    wait_for_leader(&client, &inventory, &sessions, &progress).await?;
    run_plans(&sessions, by_role(Role::Agent), &progress).await?;
    let agents: Vec<Node> = inventory.agents().cloned().collect();
    wait_for_agents(&client, &inventory, &agents, &sessions, &progress).await?;
    for probed in sessions.into_values() {
        probed.session.close().await;
    }

    let elapsed = started.elapsed().as_secs_f64();
    let first = inventory
        .masters()
        .next()
        .expect("an inventory has masters")
        .url(&inventory);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "cluster": inventory.name,
                "dashboard": format!("{first}/"),
                "cliConfig": state.cli_config,
                "token": state.token,
                "seconds": elapsed,
            }))?
        );
        return Ok(());
    }
    println!("\ncluster {} is up ({elapsed:.1} s)", inventory.name);
    println!(
        "  dashboard   {first}/  (trust {} in the browser)",
        state.ca_cert().display()
    );
    println!("  admin token {}", state.token);
    println!("  cli.toml    {}", state.cli_config.display());
    println!(
        "next:\n  export DCOS_CONFIG={}\n  dcos-rs node list",
        state.cli_config.display()
    );
    Ok(())
}

/// The running executable, to be installed on the nodes.
fn own_binary() -> anyhow::Result<NodeFile> {
    let path = std::env::current_exe().context("finding this binary")?;
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    if has_interpreter(&bytes) {
        eprintln!(
            "warning: {} is dynamically linked: nodes need the same C library. Install from a static build (make static) to be safe",
            path.display()
        );
    }
    Ok(NodeFile::new(BINARY_PATH, bytes, 0o755))
}

/// An ELF executable with a PT_INTERP header (a dynamic loader).
fn has_interpreter(elf: &[u8]) -> bool {
    let read = |at: usize, len: usize| elf.get(at..at + len);
    let (Some(phoff), Some(size), Some(count)) = (read(0x20, 8), read(0x36, 2), read(0x38, 2))
    else {
        return false;
    };
    if elf.get(..5) != Some(b"\x7fELF\x02") {
        return false;
    }
    let phoff = u64::from_le_bytes(phoff.try_into().unwrap()) as usize;
    let size = u16::from_le_bytes(size.try_into().unwrap()) as usize;
    let count = u16::from_le_bytes(count.try_into().unwrap()) as usize;
    (0..count).any(|i| read(phoff + i * size, 4).is_some_and(|t| t == 3u32.to_le_bytes()))
}

async fn probe_all(inventory: &Inventory, state: &State, force: bool) -> Vec<Reached> {
    probe_nodes(inventory, &inventory.nodes, state, force).await
}

/// Connects to `nodes` in parallel and probes them; in `nodes`' order.
async fn probe_nodes(
    inventory: &Inventory,
    nodes: &[Node],
    state: &State,
    force: bool,
) -> Vec<Reached> {
    let mut tasks = tokio::task::JoinSet::new();
    for (index, node) in nodes.iter().enumerate() {
        let node = node.clone();
        let inventory = inventory.clone();
        let known_hosts = state.known_hosts();
        tasks.spawn(async move { (index, probe_one(inventory, node, known_hosts, force).await) });
    }
    let mut reached: Vec<(usize, Reached)> = tasks.join_all().await;
    reached.sort_by_key(|(i, _)| *i);
    reached.into_iter().map(|(_, r)| r).collect()
}

async fn probe_one(inventory: Inventory, node: Node, known_hosts: PathBuf, force: bool) -> Reached {
    let timeouts = inventory.timeouts;
    let session = match Session::connect(
        &node.address,
        &node.ssh,
        &known_hosts,
        Duration::from_secs(timeouts.connect_s),
        Duration::from_secs(timeouts.command_s),
    )
    .await
    {
        Ok(session) => session,
        Err(e) => {
            return Reached::Failed {
                node,
                step: "ssh",
                reason: e.to_string(),
            }
        }
    };
    let data_dir = match node.role {
        Role::Master => &inventory.data_dirs.master,
        Role::Agent => &inventory.data_dirs.agent,
    };
    // The probe runs as the login user first: it tells whether sudo works. A user other
    // than root with sudo then probes again as root, to read root-only files' hashes.
    let mut session = session;
    session.sudo = false;
    let script = facts::probe_script();
    let command = format!("sh -s -- {}", shell_quote(&data_dir.to_string_lossy()));
    let mut probed = None;
    for attempt in 0..2 {
        let sent = now();
        let output = session.run(&command, script.as_bytes()).await;
        let received = now();
        let output = match output {
            Ok(output) if output.success() => output,
            Ok(output) => {
                let reason = format!("exit {:?}: {}", output.status, output.tail());
                return Reached::Failed {
                    node,
                    step: "probe",
                    reason,
                };
            }
            Err(e) => {
                return Reached::Failed {
                    node,
                    step: "probe",
                    reason: e.to_string(),
                }
            }
        };
        let facts = match facts::parse(&output.stdout_text()) {
            Ok(facts) => facts,
            Err(e) => {
                return Reached::Failed {
                    node,
                    step: "probe",
                    reason: e.to_string(),
                }
            }
        };
        let again = attempt == 0 && facts.uid != 0 && facts.sudo;
        probed = Some((facts, sent, received));
        if !again {
            break;
        }
        session.sudo = true;
    }
    let (mut facts, sent, received) = probed.expect("probed at least once");
    if session.sudo {
        // As root the probe sees uid 0; the login is still the user's, through sudo.
        facts.sudo = true;
    }
    let context = preflight::Context {
        inventory: &inventory,
        arch: std::env::consts::ARCH,
        local_time: (sent + received) / 2.0,
        half_round_trip: (received - sent) / 2.0,
        force,
    };
    let checks = preflight::checks(&context, &node, &facts);
    Reached::Probed(Box::new(Probed {
        node,
        session,
        facts,
        checks,
    }))
}

/// Prints the preflight table; fails if any node failed a check or could not be reached.
fn report_preflight(
    inventory: &Inventory,
    reached: Vec<Reached>,
    progress: &Progress,
) -> anyhow::Result<Vec<Probed>> {
    let names: Vec<&str> = reached
        .iter()
        .find_map(|r| match r {
            Reached::Probed(p) => Some(p.checks.iter().map(|c| c.name).collect()),
            Reached::Failed { .. } => None,
        })
        .unwrap_or_default();
    let agent_names: Vec<&str> = reached
        .iter()
        .find_map(|r| match r {
            Reached::Probed(p) if p.node.role == Role::Agent => {
                Some(p.checks.iter().map(|c| c.name).collect())
            }
            _ => None,
        })
        .unwrap_or(names);
    let mut rows = vec![["NODE", "ROLE", "ADDRESS"]
        .iter()
        .map(|s| s.to_string())
        .chain(agent_names.iter().map(|s| s.to_uppercase()))
        .collect::<Vec<_>>()];
    if agent_names.is_empty() {
        // No node was probed: one column for what stopped each.
        rows[0].push("RESULT".into());
    }
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let mut probed = Vec::new();
    for r in reached {
        match r {
            Reached::Failed { node, step, reason } => {
                let mut row = vec![
                    node.name.clone(),
                    node.role.to_string(),
                    node.address.clone(),
                    format!("{step} failed"),
                ];
                row.resize(rows[0].len(), String::new());
                rows.push(row);
                problems.push(format!(
                    "{} ({}) {step}: {reason}",
                    node.name,
                    node.ssh_label()
                ));
            }
            Reached::Probed(p) => {
                let mut row = vec![
                    p.node.name.clone(),
                    p.node.role.to_string(),
                    p.node.address.clone(),
                ];
                for name in &agent_names {
                    row.push(match p.checks.iter().find(|c| c.name == *name) {
                        None => "-".into(),
                        Some(c) if c.verdict == Verdict::Pass => "ok".into(),
                        Some(c) if c.verdict == Verdict::Warn => "warn".into(),
                        Some(_) => "FAIL".into(),
                    });
                }
                rows.push(row);
                for check in &p.checks {
                    let line = format!(
                        "{} ({}) {}: {}",
                        p.node.name, p.node.address, check.name, check.detail
                    );
                    match check.verdict {
                        Verdict::Fail => problems.push(line),
                        Verdict::Warn => warnings.push(line),
                        Verdict::Pass => {}
                    }
                }
                probed.push(*p);
            }
        }
    }
    if progress.json {
        let table: Vec<_> = probed.iter().map(|p| serde_json::json!({"node": p.node.name, "address": p.node.address, "checks": p.checks})).collect();
        eprintln!(
            "{}",
            serde_json::json!({"preflight": table, "problems": problems})
        );
    } else {
        println!("preflight:");
        crate::cli::print_table(&rows);
        for warning in &warnings {
            println!("warning: {warning}");
        }
    }
    if !problems.is_empty() {
        let failed = problems.len();
        bail!(
            "preflight failed ({failed} problem{}); nothing was changed on any node. Fix these and run `dcos-rs install --config ...` again:\n  {}",
            if failed == 1 { "" } else { "s" },
            problems.join("\n  ")
        );
    }
    let _ = inventory;
    Ok(probed)
}

fn print_plan(plans: &[NodePlan], json: bool) -> anyhow::Result<()> {
    if json {
        let value: Vec<_> = plans
            .iter()
            .map(|p| {
                let steps: Vec<_> = p
                    .steps
                    .iter()
                    .map(|s| serde_json::json!({"step": s.label(), "skip": s.skip}))
                    .collect();
                serde_json::json!({"node": p.node, "role": p.role, "steps": steps})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!("plan (--dry-run: nothing was changed):");
    for p in plans {
        println!("  {} ({}):", p.node, p.role);
        for step in &p.steps {
            match &step.skip {
                None => println!("    do    {}", step.label()),
                Some(why) => println!("    skip  {} ({why})", step.label()),
            }
        }
    }
    Ok(())
}

/// Runs the plans of several nodes in parallel; the first failure is the error (the other
/// nodes finish their current plan).
async fn run_plans<'a>(
    sessions: &BTreeMap<String, Probed>,
    plans: impl Iterator<Item = &'a NodePlan>,
    progress: &Progress,
) -> anyhow::Result<()> {
    let runs = plans.map(|plan| run_plan(&sessions[&plan.node], plan, progress));
    let results = futures_util::future::join_all(runs).await;
    let failures: Vec<String> = results
        .into_iter()
        .filter_map(Result::err)
        .map(|e| format!("{e:#}"))
        .collect();
    if !failures.is_empty() {
        bail!(
            "{}\nfix the cause and run `dcos-rs install` again: finished steps are skipped",
            failures.join("\n")
        );
    }
    Ok(())
}

async fn run_plan(probed: &Probed, plan: &NodePlan, progress: &Progress) -> anyhow::Result<()> {
    let node = &probed.node;
    for step in plan.pending() {
        let label = step.label();
        let started = Instant::now();
        let result = run_action(&probed.session, &step.action).await;
        match result {
            Ok(()) => progress.step(
                node,
                &label,
                &format!("done {:.1} s", started.elapsed().as_secs_f64()),
            ),
            Err(reason) => {
                progress.step(node, &label, "FAILED");
                bail!(
                    "{} ({}) step \"{label}\" failed: {reason}",
                    node.name,
                    node.address
                );
            }
        }
    }
    if plan.pending().next().is_none() {
        progress.step(node, "everything in place", "skipped");
    }
    Ok(())
}

async fn run_action(session: &Session, action: &Action) -> Result<(), String> {
    let checked = |output: Result<dcos_installer::ssh::Output, SshError>| {
        output.map_err(|e| e.to_string()).and_then(exit_ok)
    };
    match action {
        Action::Claim { marker, data_dir } => {
            checked(
                session
                    .run(
                        &format!(
                            "set -e; mkdir -p {CONFIG_DIR} {dir}; chmod 700 {dir}",
                            dir = shell_quote(data_dir)
                        ),
                        b"",
                    )
                    .await,
            )?;
            checked(
                session
                    .write_file(&marker.path, &marker.content, marker.mode)
                    .await,
            )?;
        }
        Action::Upload { file } => {
            checked(
                session
                    .write_file(&file.path, &file.content, file.mode)
                    .await,
            )?;
        }
        Action::Start { unit, restart } => {
            let verb = if *restart { "restart" } else { "start" };
            let command = format!("set -e; systemctl daemon-reload; systemctl enable --quiet {unit}; systemctl {verb} {unit}; sleep 0.5; systemctl is-active {unit} >/dev/null || {{ journalctl -u {unit} -n 20 --no-pager >&2; exit 1; }}");
            checked(session.run(&command, b"").await)?;
        }
    }
    Ok(())
}

#[derive(clap::Args, Debug, Clone)]
pub struct UninstallArgs {
    /// The cluster inventory the cluster was installed from.
    #[arg(long, default_value = "cluster.yaml")]
    pub config: PathBuf,
    /// Keep each node's data dir (the masters' Raft log and state, the agents' sandboxes).
    #[arg(long)]
    pub keep_data: bool,
    /// Really remove: without it, the command only says what it would remove.
    #[arg(long)]
    pub yes: bool,
}

/// What uninstalling a node runs: its service stopped (an agent's tasks killed with it),
/// then every file the installer put there, the data too unless kept.
fn uninstall_script(inventory: &Inventory, node: &Node, keep_data: bool) -> String {
    let unit = preflight::unit_name(node.role);
    let data_dir = match node.role {
        Role::Master => &inventory.data_dirs.master,
        Role::Agent => &inventory.data_dirs.agent,
    };
    let mut script = format!(
        "set -e\n\
         if [ -f /etc/systemd/system/{unit}.service ]; then\n\
         \x20 systemctl kill --signal=SIGKILL {unit} 2>/dev/null || true\n\
         \x20 systemctl disable --now --quiet {unit} 2>/dev/null || true\n\
         \x20 rm -f /etc/systemd/system/{unit}.service\n\
         \x20 systemctl daemon-reload\n\
         fi\n\
         rm -rf {CONFIG_DIR} {BINARY_PATH}\n"
    );
    if node.role == Role::Agent {
        // On a cgroup v2 host the tasks' cgroups are outside the agent's unit: end them
        // there. (On v1 they stay in the unit's name=systemd group, which the kill reached.)
        script.push_str(
            "if [ \"$(stat -fc %T /sys/fs/cgroup)\" = cgroup2fs ]; then\n\
             \x20 for d in /sys/fs/cgroup/dcos-rs/*/; do\n\
             \x20   [ -f \"$d/cgroup.kill\" ] && echo 1 > \"$d/cgroup.kill\" 2>/dev/null\n\
             \x20   [ -f \"$d/cgroup.procs\" ] && xargs -r kill -9 < \"$d/cgroup.procs\" 2>/dev/null\n\
             \x20 done; sleep 0.2\n\
             fi\n",
        );
        // Tasks' cgroups (agent.toml's default cgroup_parent); only empty ones can go.
        script.push_str("for d in /sys/fs/cgroup/*/dcos-rs/*/ /sys/fs/cgroup/dcos-rs/*/; do [ -d \"$d\" ] && { rmdir \"$d\" 2>/dev/null || true; }; done\n");
    }
    if !keep_data {
        script.push_str(&format!(
            "rm -rf {}\n",
            shell_quote(&data_dir.to_string_lossy())
        ));
    }
    script
}

/// Connects to a node (no probe).
async fn connect(inventory: &Inventory, node: &Node, state: &State) -> Result<Session, SshError> {
    Session::connect(
        &node.address,
        &node.ssh,
        &state.known_hosts(),
        Duration::from_secs(inventory.timeouts.connect_s),
        Duration::from_secs(inventory.timeouts.command_s),
    )
    .await
}

/// Uninstalls `node` over SSH.
async fn uninstall_node(
    inventory: &Inventory,
    node: &Node,
    state: &State,
    keep_data: bool,
) -> anyhow::Result<()> {
    let session = connect(inventory, node, state)
        .await
        .map_err(|e| anyhow::anyhow!("{} ({}) ssh: {e}", node.name, node.ssh_label()))?;
    let output = session
        .run(&uninstall_script(inventory, node, keep_data), b"")
        .await;
    session.close().await;
    match output {
        Ok(output) if output.success() => Ok(()),
        Ok(output) => bail!(
            "{} ({}) step \"uninstall\" failed: exit {:?}: {}",
            node.name,
            node.address,
            output.status,
            output.tail()
        ),
        Err(e) => bail!(
            "{} ({}) step \"uninstall\" failed: {e}",
            node.name,
            node.address
        ),
    }
}

/// `dcos-rs uninstall`: every node of the inventory back to what it was before the install
/// (agents first, then masters), in parallel within each role.
pub async fn uninstall(args: UninstallArgs, json: bool) -> anyhow::Result<()> {
    let inventory = load_inventory(&args.config)?;
    let progress = Progress { json };
    let kept = if args.keep_data { "kept" } else { "deleted" };
    if !args.yes {
        println!(
            "`dcos-rs uninstall --yes` would, on every node of cluster {}:",
            inventory.name
        );
        println!("  stop and disable dcos-rs-agent (killing its tasks) and dcos-rs-master");
        println!("  remove {BINARY_PATH}, {CONFIG_DIR} and the units in /etc/systemd/system");
        println!(
            "  data dirs ({}, {}): {kept}",
            inventory.data_dirs.master.display(),
            inventory.data_dirs.agent.display()
        );
        println!(
            "nodes: {}",
            inventory
                .nodes
                .iter()
                .map(|n| format!("{} ({})", n.name, n.address))
                .collect::<Vec<_>>()
                .join(", ")
        );
        bail!("nothing was removed: give --yes to uninstall");
    }
    let state = State::prepare(&inventory)?;
    let mut failures = Vec::new();
    for role in [Role::Agent, Role::Master] {
        let nodes: Vec<&Node> = inventory.nodes.iter().filter(|n| n.role == role).collect();
        let runs = nodes.iter().map(|node| async {
            let started = Instant::now();
            let result = uninstall_node(&inventory, node, &state, args.keep_data).await;
            let outcome = match &result {
                Ok(()) => format!("done {:.1} s", started.elapsed().as_secs_f64()),
                Err(_) => "FAILED".to_string(),
            };
            progress.step(node, &format!("uninstall (data {kept})"), &outcome);
            result
        });
        for result in futures_util::future::join_all(runs).await {
            if let Err(e) = result {
                failures.push(format!("{e:#}"));
            }
        }
    }
    if !failures.is_empty() {
        bail!(
            "{}\nrun `dcos-rs uninstall` again once the nodes are reachable: it is safe to repeat",
            failures.join("\n")
        );
    }
    let added = inventory.state_dir.join(inventory::ADDED_FILE);
    let _ = std::fs::remove_file(&added);
    if json {
        println!(
            "{}",
            serde_json::json!({"cluster": inventory.name, "uninstalled": inventory.nodes.len(), "dataKept": args.keep_data})
        );
    } else {
        println!(
            "cluster {} uninstalled from {} nodes (data {kept}). {} still holds the CA and tokens: delete it to forget the cluster",
            inventory.name,
            inventory.nodes.len(),
            inventory.state_dir.display()
        );
    }
    Ok(())
}

/// The last lines of a unit's journal on a node, for a failed wait.
async fn journal(probed: &Probed) -> String {
    let unit = preflight::unit_name(probed.node.role);
    match probed
        .session
        .run(&format!("journalctl -u {unit} -n 8 --no-pager -o cat"), b"")
        .await
    {
        Ok(output) => output.tail(),
        Err(e) => format!("(journal unreadable: {e})"),
    }
}

async fn wait_for_leader(
    client: &crate::cli::client::Client,
    inventory: &Inventory,
    sessions: &BTreeMap<String, Probed>,
    progress: &Progress,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(inventory.timeouts.quorum_s);
    let masters = inventory.masters().count();
    let mut last;
    loop {
        match client
            .get::<dcos_api::cluster::NodesView>(dcos_api::routes::cluster::NODES)
            .await
        {
            Ok(nodes) => {
                let leaders = nodes.masters.iter().filter(|m| m.role == "leader").count();
                // Every master's build recorded too: commands of the newest log protocol
                // (restore, revocations) are refused until then.
                let recorded = nodes.masters.iter().all(|m| m.version.is_some());
                if leaders == 1 && nodes.masters.len() == masters && recorded {
                    progress.line(&format!(
                        "masters: a leader elected by {masters} masters ({:.1} s)",
                        started.elapsed().as_secs_f64()
                    ));
                    return Ok(());
                }
                last = format!(
                    "{} of {masters} masters known, {leaders} leader, builds recorded: {recorded}",
                    nodes.masters.len()
                );
            }
            Err(e) => last = e.to_string(),
        }
        if Instant::now() >= deadline {
            let mut journals = Vec::new();
            for probed in sessions.values().filter(|p| p.node.role == Role::Master) {
                journals.push(format!(
                    "{} ({}): {}",
                    probed.node.name,
                    probed.node.address,
                    journal(probed).await
                ));
            }
            bail!(
                "step \"wait for a leader\" failed: no leader within {} s (timeouts.quorum_s): {last}\nthe masters' last log lines:\n  {}",
                inventory.timeouts.quorum_s,
                journals.join("\n  ")
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn wait_for_agents(
    client: &crate::cli::client::Client,
    inventory: &Inventory,
    wanted: &[Node],
    sessions: &BTreeMap<String, Probed>,
    progress: &Progress,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(inventory.timeouts.agents_s);
    let mut last_error: Option<String> = None;
    loop {
        let registered: Vec<String> = match client
            .get::<dcos_api::cluster::NodesView>(dcos_api::routes::cluster::NODES)
            .await
        {
            Ok(nodes) => nodes
                .agents
                .iter()
                .filter(|a| a.state == "active")
                .map(|a| a.url.clone())
                .collect(),
            Err(e) => {
                last_error = Some(e.to_string());
                Vec::new()
            }
        };
        let missing: Vec<&Node> = wanted
            .iter()
            .filter(|n| !registered.contains(&n.url(inventory)))
            .collect();
        if missing.is_empty() {
            progress.line(&format!(
                "agents: {} registered and active ({:.1} s)",
                wanted.len(),
                started.elapsed().as_secs_f64()
            ));
            return Ok(());
        }
        if Instant::now() >= deadline {
            let mut lines = Vec::new();
            for node in missing {
                let journal = match sessions.get(&node.name) {
                    Some(probed) => journal(probed).await,
                    None => String::new(),
                };
                lines.push(format!(
                    "{} ({}): not registered; its log: {journal}",
                    node.name, node.address
                ));
            }
            if let Some(e) = &last_error {
                lines.push(format!("the masters' last answer: {e}"));
            }
            bail!(
                "step \"wait for agents\" failed after {} s (timeouts.agents_s):\n  {}",
                inventory.timeouts.agents_s,
                lines.join("\n  ")
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Progress lines on stderr (stdout keeps the result, for scripts).
struct Progress {
    json: bool,
}

impl Progress {
    fn line(&self, text: &str) {
        if self.json {
            eprintln!("{}", serde_json::json!({ "progress": text }));
        } else {
            eprintln!("{text}");
        }
    }

    fn step(&self, node: &Node, step: &str, outcome: &str) {
        if self.json {
            eprintln!(
                "{}",
                serde_json::json!({ "node": node.name, "step": step, "outcome": outcome })
            );
        } else {
            eprintln!("[{:<8}] {step} ... {outcome}", node.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_executable_is_told_from_a_static_one() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        // The test binary is built for the host's glibc: dynamic.
        assert!(has_interpreter(&me));
        assert!(!has_interpreter(b"\x7fELF\x02 not really"));
        assert!(!has_interpreter(b"#!/bin/sh\n"));
    }

    #[test]
    fn the_rendered_configs_are_what_the_master_and_agent_read() {
        let text = include_str!("../../config/cluster.yaml");
        let mut inventory = inventory::parse(
            text,
            "cluster.yaml",
            Path::new("/x"),
            &inventory::Env {
                home: Some(Path::new("/root")),
            },
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("tokens"),
            crate::auth::token_line("dcos_0123456789012345678901234567890123456789012", "admin")
                + "\n",
        )
        .unwrap();
        let master = dcos_installer::render::config(&inventory, inventory.node("m2").unwrap());
        std::fs::write(dir.path().join("master.toml"), &master.content).unwrap();
        let parsed =
            crate::master::config::MasterConfig::load(&dir.path().join("master.toml")).unwrap();
        assert_eq!(parsed.node_id, 2);
        assert_eq!(parsed.initial_masters.len(), 3);
        // The agent checks its host paths exist: one that does here.
        let big = inventory
            .nodes
            .iter()
            .position(|n| n.name == "big-1")
            .unwrap();
        inventory.nodes[big].host_paths = vec![dir.path().to_path_buf()];
        let agent = dcos_installer::render::config(&inventory, inventory.node("big-1").unwrap());
        std::fs::write(dir.path().join("agent.toml"), &agent.content).unwrap();
        let parsed =
            crate::agent::config::AgentFileConfig::load(&dir.path().join("agent.toml")).unwrap();
        assert_eq!(parsed.mem_mib, Some(16384));
        assert_eq!(parsed.attributes["rack"], "r2");
    }
}

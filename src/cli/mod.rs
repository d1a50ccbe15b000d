//! Command line: `dcos-rs up`, `master`, `agent`, the client commands by family (`app`,
//! `task`, `image`, `node`, each in its file here) and the local `cluster` commands
//! (certificates, `cluster.rs`). `client.rs` is the typed HTTP(S) client they share.
//!
//! Client commands talk to the master's API (and to agents for logs and images) and print
//! tables for people or, with `--json`, the API's JSON for scripts.

mod app;
pub mod client;
pub mod cluster;
mod deployment;
mod framework;
mod group;
mod image;
mod job;
mod node;
mod task;

pub use app::AppCommand;
pub use deployment::DeploymentCommand;
pub use group::GroupCommand;
pub use image::ImageCommand;
pub use job::JobCommand;
pub use node::NodeCommand;
pub use task::{stream_task_log, TaskCommand};

use crate::cli::client::{CliConfig, Client, ClientError, ClientSettings, LocalUp};
use clap::{Args, Parser, Subcommand};
use dcos_api::routes::cluster as cluster_routes;
use dcos_api::NodesView;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "dcos-rs",
    version,
    about = "A datacenter operating system in one binary: masters, agents, services and jobs",
    long_about = "A datacenter operating system in one binary.\n\n\
        Start a single-node cluster with `dcos-rs up`, then deploy apps with\n\
        `dcos-rs app deploy app.json` and watch them with `dcos-rs task list`.\n\n\
        Client commands reach the master at --url (or DCOS_URL), else at `url` in cli.toml,\n\
        else at http://127.0.0.1:5050. Outside `dcos-rs up` on loopback every API call needs\n\
        a bearer token: `dcos-rs cluster setup` makes one and writes cli.toml (url, ca,\n\
        token) at $DCOS_CONFIG, else $XDG_CONFIG_HOME/dcos-rs/cli.toml, else\n\
        ~/.config/dcos-rs/cli.toml. DCOS_TOKEN and DCOS_CA (the cluster's ca.crt, trusted\n\
        for HTTPS) override the file's token and ca."
)]
pub struct Cli {
    /// Master API URL for client commands, and the URL `cluster setup` writes to cli.toml
    /// [default: `url` in cli.toml, else http://127.0.0.1:5050].
    #[arg(long, global = true, env = "DCOS_URL")]
    pub url: Option<String>,
    /// Print JSON (the API's shapes) instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Commands,
}

#[derive(Subcommand, Debug)]
pub enum Commands {
    /// Run a master and an agent in this process: a single-node cluster.
    Up(Box<UpArgs>),
    /// Run one master of a multi-master cluster (HTTPS, mutual TLS between masters).
    #[command(long_about = "Run one master of a multi-master cluster.\n\n\
        Masters agree on the cluster state through Raft over HTTPS with mutual TLS; every\n\
        master serves reads, and writes sent to a follower are redirected (307) to the leader.\n\
        The config file names this master's id, its URL, its certificates, the tokens file\n\
        of API callers ([auth] tokens_file) and, for a new cluster, the initial masters (the\n\
        same list on each). See config/master.toml.\n\n\
        Example (3 masters, run on each with its own file):\n  \
        dcos-rs cluster setup --ca-dir ca --url https://10.77.0.11:5050\n  \
        dcos-rs cluster issue-cert --role master --name m1 --san 10.77.0.11 --ca-dir ca --out m1\n  \
        dcos-rs master --config m1/master.toml")]
    Master(MasterArgs),
    /// Run an agent that registers with remote masters (HTTPS, mutual TLS).
    #[command(
        long_about = "Run an agent on this host for a multi-master cluster.\n\n\
        The agent finds the leading master among `masters` (following redirects), registers\n\
        with what it runs, takes launch and kill commands on a stream, sends heartbeats, and\n\
        delivers task statuses until the leader has committed each one. Tasks keep running\n\
        when the agent stops or loses the masters; the next start adopts them. Its own API\n\
        (task logs, images) asks callers for a bearer token from [auth] tokens_file, or a\n\
        master certificate. See config/agent.toml for every key.\n\n\
        Example:\n  \
        dcos-rs cluster issue-cert --role agent --name a1 --san 10.77.0.21 --ca-dir ca --out a1\n  \
        dcos-rs agent --config a1/agent.toml"
    )]
    Agent(AgentArgs),
    /// Deploy and manage long-running apps (Marathon-style definitions).
    #[command(subcommand)]
    App(AppCommand),
    /// Follow, roll back or stop the deployments apps go through when they change.
    #[command(subcommand)]
    Deployment(DeploymentCommand),
    /// Deploy, scale and remove groups of apps, with dependencies between them.
    #[command(subcommand)]
    Group(GroupCommand),
    /// List tasks and read their logs.
    #[command(subcommand)]
    Task(TaskCommand),
    /// Scheduled and on-demand jobs (Chronos and Metronome formats): add, run, history,
    /// logs, the dependency graph.
    #[command(subcommand)]
    Job(JobCommand),
    /// Manage container images on the agents: pull from a registry or import tarballs.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Show the cluster's masters and agents.
    #[command(subcommand)]
    Node(NodeCommand),
    /// The frameworks sharing the cluster (built-in and Mesos ones): list, show, teardown.
    #[command(subcommand)]
    Framework(framework::FrameworkCommand),
    /// The roles frameworks belong to: their weights and quotas in the fair share.
    #[command(subcommand)]
    Role(framework::RoleCommand),
    /// Prepare the cluster: CA, node certificates, API tokens and this CLI's cli.toml (local files).
    #[command(subcommand)]
    Cluster(crate::cli::cluster::ClusterCommand),
    /// Install a whole cluster over SSH from cluster.yaml (rerun to resume or fix drift).
    #[command(
        long_about = "Install a whole cluster over SSH, as cluster.yaml describes it.\n\n\
        1. Preflight on every node in parallel (OS, kernel, namespaces, cgroups, overlayfs,\n   \
           systemd, free ports and disk, clock skew, an existing install), shown as a table;\n   \
           any failure stops here with its reason, before anything is changed.\n\
        2. On this machine, in state_dir: the cluster CA (its key stays here), a certificate\n   \
           per node, the admin token and cli.toml.\n\
        3. Masters: this binary, config, certificates and the systemd unit, started; then a\n   \
           wait for a leader elected by all of them. Then agents likewise, and a wait until\n   \
           every one is registered.\n\n\
        Each step prints a line naming node and step. Rerunning after a failure (a node\n\
        unreachable, a port taken) skips what is already in place and fixes what drifted.\n\
        Nodes need sshd, systemd and root (or passwordless sudo) for the SSH user.\n\n\
        Examples:\n  \
          dcos-rs install --config cluster.yaml --dry-run\n  \
          dcos-rs install --config cluster.yaml\n  \
          export DCOS_CONFIG=./dcos-rs-demo/cli.toml; dcos-rs node list"
    )]
    Install(crate::install::InstallArgs),
    /// Remove what `dcos-rs install` put on every node (optionally keeping the data).
    #[command(
        long_about = "Remove a cluster that `dcos-rs install` made, over SSH.\n\n\
        On every node of cluster.yaml (and those `node add` added), agents first: the service\n\
        is stopped and disabled (an agent's tasks are killed with it), the unit, the binary\n\
        and /etc/dcos-rs are removed, and the data dir too unless --keep-data. The state dir\n\
        on this machine (CA, tokens, cli.toml) is kept. Without --yes it only says what it\n\
        would do. Safe to repeat.\n\n\
        Example:\n  \
          dcos-rs uninstall --config cluster.yaml --keep-data --yes"
    )]
    Uninstall(crate::install::UninstallArgs),
}

#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    /// The agent's config file (TOML; keys documented in config/agent.toml).
    #[arg(long, default_value = "/etc/dcos-rs/agent.toml")]
    pub config: PathBuf,
    /// The masters' URLs, comma-separated (https://m1:5050,https://m2:5050); replaces the
    /// config's `masters`.
    #[arg(long)]
    pub masters: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct MasterArgs {
    /// The master's config file (TOML; keys documented in config/master.toml).
    #[arg(long, default_value = "/etc/dcos-rs/master.toml")]
    pub config: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct UpArgs {
    /// Where all state lives (Raft log, agent work dir, images, task sandboxes).
    #[arg(long, default_value = "./.dcos-rs")]
    pub data_dir: PathBuf,
    /// Address of the API and dashboard. Any address but loopback needs --tokens-file.
    #[arg(long, default_value = "127.0.0.1:5050")]
    pub listen: String,
    /// Address of the agent's API (task logs, images). Any address but loopback needs --tokens-file.
    #[arg(long, default_value = "127.0.0.1:5051")]
    pub agent_listen: String,
    /// Also accept the tokens of this file of `sha256:<hex> <name>` lines (`dcos-rs cluster
    /// setup` makes one: <ca-dir>/tokens), besides the admin token `up` keeps in
    /// <data-dir>/admin.token. Required with a non-loopback --listen or --agent-listen.
    #[arg(long, value_name = "FILE")]
    pub tokens_file: Option<PathBuf>,
    /// DANGEROUS: serve both APIs without any token (loopback listeners only). Every local
    /// user and process, each task included, could then start a task as root on this host.
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// On stop, leave tasks running; the next `up` adopts them.
    #[arg(long)]
    pub keep_tasks: bool,
    /// CPUs the agent offers (default: all but half a core).
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Memory the agent offers in MiB (default: total minus 10 % or 512 MiB).
    #[arg(long)]
    pub mem: Option<u64>,
    /// Cgroup under which tasks get their own cgroups.
    #[arg(long, default_value = "dcos-rs")]
    pub cgroup_parent: String,
    /// Rotate a task's stdout/stderr file when it reaches this size (MiB).
    #[arg(long, default_value_t = 10)]
    pub task_log_max_mib: u64,
    /// Rotated log files kept per task stream (stdout.1 .. stdout.N).
    #[arg(long, default_value_t = 5)]
    pub task_log_files: u32,
    /// Host ports the agent may give tasks, e.g. `31000-32000` or `8000-8099,9000-9000`.
    #[arg(long, default_value = "31000-32000", value_parser = parse_port_ranges)]
    pub ports: PortRanges,
    /// Bridge of `container/bridge` tasks (created on the first such task).
    #[arg(long, default_value = dcos_runtime::network::DEFAULT_BRIDGE)]
    pub bridge: String,
    /// Subnet of `container/bridge` tasks: the bridge takes the first address, each task
    /// one of the others; egress is masqueraded.
    #[arg(long, default_value = "172.30.0.0/16")]
    pub bridge_subnet: String,
    /// PEM file of CA certificates the agent trusts for `image pull`, besides the system's
    /// (/etc/ssl/certs/ca-certificates.crt): for registries with a private CA.
    #[arg(long, value_name = "FILE")]
    pub registry_ca: Option<PathBuf>,
    /// Let tasks mount this host directory (and what is under it) as a `hostPath` volume;
    /// repeat for more. None by default; /, /proc, /sys and /dev never.
    #[arg(long = "allow-host-path", value_name = "DIR")]
    pub allow_host_paths: Vec<PathBuf>,
    /// The user of tasks without an image that name none.
    #[arg(long, default_value = crate::agent::policy::DEFAULT_TASK_USER)]
    pub task_user: String,
    /// Let tasks without an image run as root (uid 0) on this host: such a task then holds
    /// every capability of the host's root.
    #[arg(long)]
    pub allow_root_tasks: bool,
    /// Let tasks' artifacts (`fetch`) come from this host's loopback or link-local
    /// addresses: the agent then fetches for a task from services the task itself could
    /// not reach (anything listening on 127.0.0.1, a cloud's metadata service).
    #[arg(long)]
    pub allow_local_fetch: bool,
    /// A label of the agent for placement constraints (`rack=r1`, then an app's
    /// `"constraints": [["rack", "CLUSTER", "r1"]]`); repeat for more.
    #[arg(long = "attribute", value_name = "NAME=VALUE", value_parser = parse_attribute)]
    pub attributes: Vec<(String, String)>,
}

fn parse_attribute(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("'{text}' is not NAME=VALUE"))?;
    let pair = std::collections::BTreeMap::from([(name.to_string(), value.to_string())]);
    crate::agent::check_attributes(&pair)?;
    Ok((name.to_string(), value.to_string()))
}

/// A list of inclusive port ranges, parsed from `a-b,c-d`.
#[derive(Debug, Clone)]
pub struct PortRanges(pub Vec<dcos_core::PortRange>);

fn parse_port_ranges(text: &str) -> Result<PortRanges, String> {
    crate::agent::config::parse_port_ranges(text).map(PortRanges)
}

/// The client for the master at `url_flag` (or cli.toml's), with the token and CA from the
/// environment or cli.toml.
fn client_from_settings(url_flag: Option<String>) -> anyhow::Result<Client> {
    let env = |name: &str| std::env::var(name).ok();
    let path = CliConfig::default_path(env);
    let config = match &path {
        Some(path) => CliConfig::load(path)?,
        None => None,
    };
    let local_up = |url: &str| {
        let path = path.as_deref().map(LocalUp::path)?;
        match LocalUp::token_for(&path, url) {
            Ok(found) => found,
            Err(reason) => {
                eprintln!("warning: {reason}");
                None
            }
        }
    };
    let settings = ClientSettings::resolve(
        url_flag,
        path.as_deref().zip(config.as_ref()),
        env,
        local_up,
    );
    tracing::debug!(url = %settings.url, token = ?settings.token_source, ca = ?settings.ca, "client settings");
    Ok(settings.client()?)
}

pub async fn run_client(cli: Cli) -> anyhow::Result<()> {
    let json = cli.json;
    let command = match cli.command {
        Commands::Up(_) | Commands::Master(_) | Commands::Agent(_) => {
            unreachable!("handled by main")
        }
        // Local files only: the master at --url is not contacted.
        Commands::Cluster(crate::cli::cluster::ClusterCommand::Upgrade(args)) => {
            return crate::install::upgrade(args, json).await
        }
        Commands::Cluster(
            command @ (crate::cli::cluster::ClusterCommand::Backup { .. }
            | crate::cli::cluster::ClusterCommand::Restore { .. }),
        ) => {
            let client = client_from_settings(cli.url)?;
            return crate::cli::cluster::backup_or_restore(&client, command, json).await;
        }
        Commands::Cluster(command) => return crate::cli::cluster::run(command, cli.url, json),
        // Nodes over SSH; the masters it makes are contacted with its own state's client.
        Commands::Install(args) => return crate::install::install(args, json).await,
        Commands::Uninstall(args) => return crate::install::uninstall(args, json).await,
        Commands::Node(NodeCommand::Add {
            target: Some(target),
            role,
            attributes,
            ssh_key,
            name,
            config,
            force,
            ..
        }) => {
            let attributes = attributes
                .iter()
                .map(|a| {
                    a.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .ok_or_else(|| anyhow::anyhow!("--attr {a:?}: give NAME=VALUE"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let role = if role == "master" {
                dcos_installer::inventory::Role::Master
            } else {
                dcos_installer::inventory::Role::Agent
            };
            let add = crate::install::AddNode {
                target,
                role,
                name,
                attributes,
                ssh_key,
                config,
                force,
            };
            return crate::install::add_node(add, json).await;
        }
        command => command,
    };
    let client = client_from_settings(cli.url)?;
    match command {
        Commands::Up(_)
        | Commands::Master(_)
        | Commands::Agent(_)
        | Commands::Cluster(_)
        | Commands::Install(_)
        | Commands::Uninstall(_) => {
            unreachable!("handled above")
        }
        Commands::App(command) => app::app(&client, json, command).await,
        Commands::Deployment(command) => deployment::deployment(&client, json, command).await,
        Commands::Group(command) => group::group(&client, json, command).await,
        Commands::Task(command) => task::task(&client, json, command).await,
        Commands::Job(command) => job::job(&client, json, command).await,
        Commands::Image(command) => image::image(&client, json, command).await,
        Commands::Framework(command) => framework::framework(&client, json, command).await,
        Commands::Role(command) => framework::role(&client, json, command).await,
        Commands::Node(NodeCommand::List) => {
            let nodes: NodesView = client.get(cluster_routes::NODES).await?;
            if json {
                return print_json(&nodes);
            }
            let mut rows = vec![row(&[
                "ROLE",
                "ID",
                "ADDRESS",
                "STATE",
                "CPUS (USED/TOTAL)",
                "MEM MiB (USED/TOTAL)",
                "TASKS",
                "VERSION",
                "HEARD",
            ])];
            for m in &nodes.masters {
                rows.push(vec![
                    "master".into(),
                    m.id.to_string(),
                    m.url.clone(),
                    m.role.clone(),
                    String::new(),
                    String::new(),
                    node::master_progress(m),
                    m.version.clone().unwrap_or_default(),
                    String::new(),
                ]);
            }
            for a in &nodes.agents {
                rows.push(vec![
                    "agent".into(),
                    a.id.clone(),
                    format!("{} {}", a.hostname, a.url),
                    a.state.clone(),
                    format!("{:.2}/{:.2}", a.used_cpus, a.cpus),
                    format!("{}/{}", a.used_mem, a.mem),
                    a.tasks.to_string(),
                    a.version.clone(),
                    a.last_heartbeat_ms_ago
                        .map(|ms| format!("{:.1} s ago", ms as f64 / 1000.0))
                        .unwrap_or_default(),
                ]);
            }
            print_table(&rows);
            Ok(())
        }
        Commands::Node(command) => node::node(&client, json, command).await,
    }
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|s| s.to_string()).collect()
}

pub(crate) fn print_table(rows: &[Vec<String>]) {
    let columns = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map(|s| s.chars().count()).unwrap_or(0))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, cell)| format!("{cell:<width$}", width = widths[i]))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// How to get past a 401: where the token was looked for and how to make one.
fn unauthorized_hint() -> String {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if env("DCOS_TOKEN").is_some() {
        return "the token in DCOS_TOKEN was refused: set DCOS_TOKEN to a token whose sha256 is in the cluster's tokens file, or unset it to use cli.toml's (`dcos-rs cluster setup` makes one)".to_string();
    }
    match CliConfig::default_path(env) {
        Some(path) if path.exists() => format!(
            "the token in {} was refused or is missing: run `dcos-rs cluster setup --url <master URL> --force` for a new one (then copy the tokens file to every master and agent), or set DCOS_TOKEN",
            path.display()
        ),
        Some(path) => format!(
            "no token: run `dcos-rs cluster setup --url <master URL>` (it writes {}), or set DCOS_TOKEN",
            path.display()
        ),
        None => "no token: run `dcos-rs cluster setup --url <master URL>`, or set DCOS_TOKEN".to_string(),
    }
}

/// Prints an error for people (message, field details, cause chain) or as JSON.
pub fn report_error(error: &anyhow::Error, json: bool) {
    if let Some(ClientError::Api(api)) = error.downcast_ref::<ClientError>() {
        if json {
            println!("{}", serde_json::to_string_pretty(api).unwrap_or_default());
            return;
        }
        eprintln!("error: {} (HTTP {}, {})", api.message, api.status, api.code);
        if api.status == 401 {
            eprintln!("hint: {}", unauthorized_hint());
        }
        // One line per invalid field, unless the message already is that single line:
        // `/cluster/v1` names fields as `details.errors[{field, reason}]`, Marathon's `/v2`
        // as `details[{path, errors: [...]}]`.
        let lines: Vec<String> = match &api.details {
            serde_json::Value::Array(paths) => paths
                .iter()
                .flat_map(|p| {
                    let path = p.get("path").and_then(|f| f.as_str()).unwrap_or("?");
                    let reasons = p.get("errors").and_then(|e| e.as_array());
                    reasons
                        .into_iter()
                        .flatten()
                        .map(move |r| format!("{path}: {}", r.as_str().unwrap_or("?")))
                })
                .collect(),
            details => details
                .get("errors")
                .and_then(|e| e.as_array())
                .into_iter()
                .flatten()
                .map(|e| {
                    format!(
                        "{}: {}",
                        e.get("field").and_then(|f| f.as_str()).unwrap_or("?"),
                        e.get("reason").and_then(|f| f.as_str()).unwrap_or("?")
                    )
                })
                .collect(),
        };
        if lines.len() > 1 {
            for line in lines {
                eprintln!("  {line}");
            }
        }
        return;
    }
    if json {
        println!(
            "{}",
            serde_json::json!({ "code": "client_error", "message": format!("{error:#}") })
        );
    } else {
        eprintln!("error: {error:#}");
    }
}

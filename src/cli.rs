//! Command line: `dcos-rs up`, the client commands (`app`, `task`, `image`, `node`) and the
//! local `cluster` commands (certificates, in `crate::cluster`).
//!
//! Client commands talk to the master's API (and to agents for logs and images) and print
//! tables for people or, with `--json`, the API's JSON for scripts.

use crate::client::{CliConfig, Client, ClientError, ClientSettings};
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use dcos_api::routes::{agent as agent_routes, cluster, marathon};
use dcos_api::{
    AppEnvelope, AppView, AppsEnvelope, DeploymentResult, ImagesEnvelope, NodesView, TaskView,
    TasksEnvelope,
};
use hyper::Method;
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
    Up(UpArgs),
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
    /// List tasks and read their logs.
    #[command(subcommand)]
    Task(TaskCommand),
    /// Manage container images on the agents: pull from a registry or import tarballs.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Show the cluster's masters and agents.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Prepare the cluster: CA, node certificates, API tokens and this CLI's cli.toml (local files).
    #[command(subcommand)]
    Cluster(crate::cluster::ClusterCommand),
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
    /// Require a bearer token on both APIs, from this file of `sha256:<hex> <name>` lines
    /// (`dcos-rs cluster setup` makes one: <ca-dir>/tokens). Required with a non-loopback
    /// --listen or --agent-listen; on loopback without it, the APIs are open.
    #[arg(long, value_name = "FILE")]
    pub tokens_file: Option<PathBuf>,
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
}

/// A list of inclusive port ranges, parsed from `a-b,c-d`.
#[derive(Debug, Clone)]
pub struct PortRanges(pub Vec<dcos_core::PortRange>);

fn parse_port_ranges(text: &str) -> Result<PortRanges, String> {
    let mut ranges = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (begin, end) = part.split_once('-').unwrap_or((part, part));
        let parse = |p: &str| {
            p.trim()
                .parse::<u16>()
                .map_err(|_| format!("'{p}' is not a port (1-65535)"))
        };
        let (begin, end) = (parse(begin)?, parse(end)?);
        if begin == 0 || begin > end {
            return Err(format!(
                "'{part}': a range is low-high with 1 <= low <= high"
            ));
        }
        ranges.push(dcos_core::PortRange { begin, end });
    }
    if ranges.is_empty() {
        return Err("give at least one range, e.g. 31000-32000".into());
    }
    Ok(PortRanges(ranges))
}

#[derive(Subcommand, Debug)]
pub enum AppCommand {
    /// Create an app from a JSON definition file (`-` reads stdin).
    ///
    /// Fields: id, cmd or args, cpus, mem, disk, instances, env, user,
    /// container.docker.image, taskKillGracePeriodSeconds. Example: examples/web.json.
    Deploy { file: PathBuf },
    /// List apps with their instance counts.
    List,
    /// Show one app's definition and status.
    Show { id: String },
    /// Change the number of instances.
    Scale { id: String, instances: u32 },
    /// Remove an app and kill its tasks.
    Remove { id: String },
    /// List an app's tasks.
    Tasks { id: String },
}

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

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Pull an image from a registry (HTTPS, OCI distribution API) into every agent.
    #[command(
        long_about = "Pull an image from a registry into every active agent.\n\n\
            Each agent downloads the image itself over HTTPS (OCI distribution API) and checks\n\
            every blob against its digest before importing it; a mismatch is refused and\n\
            nothing is kept. For a multi-platform image the agent takes the linux entry for\n\
            its own architecture.\n\n\
            References are read as docker reads them:\n  \
              busybox                              docker.io/library/busybox:latest\n  \
              registry.example.com:5000/team/app:v1\n  \
              quay.io/org/app@sha256:<digest>      pinned: the manifest must hash to it\n\n\
            Private registries: give --username and pipe the password or token in:\n  \
              echo \"$TOKEN\" | dcos-rs image pull --username ci --password-stdin registry.example.com/app:v1\n\n\
            Agents trust the system's CAs; start them with `dcos-rs up --registry-ca FILE`\n\
            for a registry with a private CA. Use the pulled image in an app as\n\
            container.docker.image with the same reference."
    )]
    Pull {
        /// Image reference, e.g. `busybox:1.36` or `registry.example.com/team/app:v1`.
        reference: String,
        /// User name for the registry (the password is read with --password-stdin).
        #[arg(long, short = 'u')]
        username: Option<String>,
        /// Read the password (or token) from standard input; needs --username.
        #[arg(long, requires = "username")]
        password_stdin: bool,
    },
    /// Import a `docker save` tarball or an OCI image layout tarball into every agent.
    Import { file: PathBuf },
    /// List images on the agents.
    List,
    /// Remove an image from every agent.
    Remove { reference: String },
}

#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// List masters and agents with their state and resources.
    List,
    /// Add a master to a running cluster (as a learner, promoted once it has caught up).
    #[command(long_about = "Add a master to a running cluster.\n\n\
        Start the new master first (`dcos-rs master --config` with no initial_masters), then\n\
        add it: it joins as a learner, receives the log (or a snapshot), and is promoted to a\n\
        voter once it has caught up (this waits up to 60 s). Keep 3 or 5 voting masters.\n\n\
        Example:\n  \
        dcos-rs node add --role master --id 4 --advertise-url https://10.77.0.14:5050")]
    Add {
        /// Only `master`: agents join by starting `dcos-rs agent` with the masters' URLs.
        #[arg(long, value_parser = ["master", "agent"])]
        role: String,
        /// The new master's node_id (its master.toml).
        #[arg(long)]
        id: Option<u64>,
        /// The new master's advertise_url (https://host:port). (`--url` is the master the
        /// CLI talks to.)
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
    },
}

/// "term 3, log 120, lag 0" with whatever the answering master knows of that master.
fn master_progress(m: &dcos_api::MasterView) -> String {
    let mut parts = vec![format!("term {}", m.term)];
    if let Some(index) = m.last_log_index {
        parts.push(format!("log {index}"));
    }
    if let Some(lag) = m.lag {
        parts.push(format!("lag {lag}"));
    }
    parts.join(", ")
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
    let settings = ClientSettings::resolve(url_flag, path.as_deref().zip(config.as_ref()), env);
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
        Commands::Cluster(command) => return crate::cluster::run(command, cli.url, json),
        command => command,
    };
    let client = client_from_settings(cli.url)?;
    match command {
        Commands::Up(_) | Commands::Master(_) | Commands::Agent(_) | Commands::Cluster(_) => {
            unreachable!("handled above")
        }
        Commands::App(command) => app(&client, json, command).await,
        Commands::Task(command) => task(&client, json, command).await,
        Commands::Image(command) => image(&client, json, command).await,
        Commands::Node(NodeCommand::List) => {
            let nodes: NodesView = client.get(cluster::NODES).await?;
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
            ])];
            for m in &nodes.masters {
                rows.push(vec![
                    "master".into(),
                    m.id.to_string(),
                    m.url.clone(),
                    m.role.clone(),
                    String::new(),
                    String::new(),
                    master_progress(m),
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
                ]);
            }
            print_table(&rows);
            Ok(())
        }
        Commands::Node(command) => node(&client, json, command).await,
    }
}

async fn node(client: &Client, json: bool, command: NodeCommand) -> anyhow::Result<()> {
    match command {
        NodeCommand::List => unreachable!("handled by the caller"),
        NodeCommand::Add {
            role,
            id,
            advertise_url: url,
        } => {
            anyhow::ensure!(
                role == "master",
                "--role agent: agents join by themselves: start `dcos-rs agent --config agent.toml` on the host, with the masters' URLs in `masters`"
            );
            let (Some(id), Some(url)) = (id, url) else {
                anyhow::bail!("--role master needs --id (the new master's node_id) and --advertise-url (its advertise_url)");
            };
            if !json {
                eprintln!("adding master {id} at {url}: learner first, promoted once caught up (up to 60 s)…");
            }
            let body = serde_json::to_vec(&serde_json::json!({ "id": id, "url": url }))?;
            let status: serde_json::Value = client
                .send_json(Method::POST, cluster::MASTERS, &body)
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
        } => {
            let id = resolve_agent(client, &agent).await?;
            let view: dcos_api::AgentView = client
                .send_json(Method::POST, &cluster::agent_drain(&id), b"")
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
                let nodes: NodesView = client.get(cluster::NODES).await?;
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
        NodeCommand::Remove { node, master } => {
            let (path, what) = if master {
                let id: u64 = node
                    .parse()
                    .with_context(|| format!("--master: {node:?} is not a master id (a number)"))?;
                (cluster::master(id), format!("master {id}"))
            } else {
                let id = resolve_agent(client, &node).await?;
                (cluster::agent(&id), format!("agent {id}"))
            };
            let answer: serde_json::Value = client.send_json(Method::DELETE, &path, b"").await?;
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
    let nodes: NodesView = client.get(cluster::NODES).await?;
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

fn app_path(id: &str) -> String {
    marathon::app(&dcos_core::app::normalize_app_id(id))
}

async fn app(client: &Client, json: bool, command: AppCommand) -> anyhow::Result<()> {
    match command {
        AppCommand::Deploy { file } => {
            let body = if file.as_os_str() == "-" {
                let mut s = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut s)
                    .context("reading stdin")?;
                s
            } else {
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?
            };
            let app: AppView = client
                .send_json(Method::POST, marathon::APPS, &body)
                .await?;
            if json {
                return print_json(&app);
            }
            println!(
                "deployed {} ({} instance(s)); follow it with `dcos-rs app show {}` or `dcos-rs task list`",
                app.spec.id, app.spec.instances, app.spec.id
            );
            Ok(())
        }
        AppCommand::List => {
            let apps: AppsEnvelope = client.get(marathon::APPS).await?;
            if json {
                return print_json(&apps);
            }
            let mut rows = vec![row(&[
                "ID",
                "INSTANCES",
                "RUNNING",
                "STAGED",
                "CPUS",
                "MEM",
                "STATUS",
                "COMMAND/IMAGE",
            ])];
            for a in &apps.apps {
                rows.push(vec![
                    a.spec.id.clone(),
                    a.spec.instances.to_string(),
                    a.tasks_running.to_string(),
                    a.tasks_staged.to_string(),
                    a.spec.cpus.to_string(),
                    a.spec.mem.to_string(),
                    if a.deployments.is_empty() {
                        "running".into()
                    } else {
                        "deploying".into()
                    },
                    what_runs(a),
                ]);
            }
            print_table(&rows);
            Ok(())
        }
        AppCommand::Show { id } => {
            let app: AppEnvelope = client.get(&app_path(&id)).await?;
            print_json(&app)
        }
        AppCommand::Scale { id, instances } => {
            let body = serde_json::to_vec(&serde_json::json!({ "instances": instances }))?;
            let result: DeploymentResult =
                client.send_json(Method::PUT, &app_path(&id), &body).await?;
            if json {
                return print_json(&result);
            }
            println!(
                "scaling {} to {instances} instance(s) (deployment {})",
                dcos_core::app::normalize_app_id(&id),
                result.deployment_id
            );
            Ok(())
        }
        AppCommand::Remove { id } => {
            let result: DeploymentResult = client
                .send_json(Method::DELETE, &app_path(&id), b"")
                .await?;
            if json {
                return print_json(&result);
            }
            println!(
                "removed {}; its tasks are being killed",
                dcos_core::app::normalize_app_id(&id)
            );
            Ok(())
        }
        AppCommand::Tasks { id } => {
            let tasks: TasksEnvelope = client.get(&format!("{}/tasks", app_path(&id))).await?;
            print_tasks(json, &tasks)
        }
    }
}

fn what_runs(app: &AppView) -> String {
    match (app.spec.image(), &app.spec.cmd, &app.spec.args) {
        (Some(image), Some(cmd), _) => format!("{image}: {cmd}"),
        (Some(image), None, _) => image.to_string(),
        (None, Some(cmd), _) => cmd.clone(),
        (None, None, Some(args)) => args.join(" "),
        _ => String::new(),
    }
}

fn print_tasks(json: bool, tasks: &TasksEnvelope) -> anyhow::Result<()> {
    if json {
        return print_json(tasks);
    }
    let mut rows = vec![row(&[
        "ID", "APP", "HOST", "STATE", "CPUS", "MEM", "STARTED", "MESSAGE",
    ])];
    for t in &tasks.tasks {
        rows.push(vec![
            t.id.clone(),
            t.app_id.clone(),
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
    let tasks: TasksEnvelope = client.get(marathon::TASKS).await?;
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

async fn task(client: &Client, json: bool, command: TaskCommand) -> anyhow::Result<()> {
    match command {
        TaskCommand::List { app } => {
            let mut tasks: TasksEnvelope = client.get(marathon::TASKS).await?;
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

async fn agent_urls(client: &Client) -> anyhow::Result<Vec<String>> {
    let nodes: NodesView = client.get(cluster::NODES).await?;
    let urls: Vec<String> = nodes
        .agents
        .into_iter()
        .filter(|a| a.state == "active")
        .map(|a| a.url)
        .collect();
    anyhow::ensure!(!urls.is_empty(), "no active agent is registered");
    Ok(urls)
}

/// The password given on standard input: its first line, without the line break.
fn read_password_stdin() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    anyhow::ensure!(
        !password.is_empty(),
        "--password-stdin read an empty password"
    );
    Ok(password)
}

async fn pull(
    client: &Client,
    json: bool,
    reference: String,
    username: Option<String>,
    password_stdin: bool,
) -> anyhow::Result<()> {
    let auth = match (username, password_stdin) {
        (Some(username), true) => Some(serde_json::json!({
            "username": username,
            "password": read_password_stdin()?,
        })),
        (Some(_), false) => anyhow::bail!(
            "--username needs --password-stdin: the password is read from standard input, never from the command line"
        ),
        (None, _) => None,
    };
    let mut request = serde_json::json!({ "reference": reference });
    if let Some(auth) = auth {
        request["auth"] = auth;
    }
    let body = serde_json::to_vec(&request)?;
    let mut all = Vec::new();
    for url in agent_urls(client).await? {
        if !json {
            eprintln!("pulling {reference} on agent {url}…");
        }
        let started = std::time::Instant::now();
        let pulled: ImagesEnvelope = client
            .send_json(
                Method::POST,
                &format!("{url}{}", agent_routes::IMAGES_PULL),
                &body,
            )
            .await?;
        if !json {
            for image in &pulled.images {
                println!(
                    "pulled {} ({}, {} layer(s), {} bytes) on {url} in {:.1} s",
                    image.reference,
                    image.digest,
                    image.layers,
                    image.size_bytes,
                    started.elapsed().as_secs_f64()
                );
            }
        }
        all.extend(pulled.images);
    }
    if json {
        return print_json(&ImagesEnvelope { images: all });
    }
    Ok(())
}

async fn image(client: &Client, json: bool, command: ImageCommand) -> anyhow::Result<()> {
    match command {
        ImageCommand::Pull {
            reference,
            username,
            password_stdin,
        } => pull(client, json, reference, username, password_stdin).await,
        ImageCommand::Import { file } => {
            anyhow::ensure!(file.is_file(), "{} is not a file", file.display());
            let mut all = Vec::new();
            for url in agent_urls(client).await? {
                if !json {
                    eprintln!("importing {} into agent {url}…", file.display());
                }
                let imported: ImagesEnvelope = client
                    .upload(&format!("{url}{}", agent_routes::IMAGES), &file)
                    .await?;
                all.extend(imported.images);
            }
            if json {
                return print_json(&ImagesEnvelope { images: all });
            }
            for image in &all {
                println!(
                    "imported {} ({}, {} layer(s), {} bytes)",
                    image.reference, image.digest, image.layers, image.size_bytes
                );
            }
            Ok(())
        }
        ImageCommand::List => {
            let mut rows = vec![row(&["AGENT", "REFERENCE", "DIGEST", "LAYERS", "SIZE"])];
            let mut all = Vec::new();
            for url in agent_urls(client).await? {
                let images: ImagesEnvelope = client
                    .get(&format!("{url}{}", agent_routes::IMAGES))
                    .await?;
                for i in &images.images {
                    rows.push(vec![
                        url.clone(),
                        i.reference.clone(),
                        i.digest.clone(),
                        i.layers.to_string(),
                        i.size_bytes.to_string(),
                    ]);
                }
                all.extend(images.images);
            }
            if json {
                return print_json(&ImagesEnvelope { images: all });
            }
            print_table(&rows);
            Ok(())
        }
        ImageCommand::Remove { reference } => {
            for url in agent_urls(client).await? {
                match client
                    .status_of(
                        Method::DELETE,
                        &format!("{url}{}", agent_routes::image(&reference)),
                    )
                    .await?
                {
                    s if s.is_success() => println!("removed {reference} from {url}"),
                    s if s.as_u16() == 404 => println!("{reference} is not on {url}"),
                    s => anyhow::bail!("removing {reference} from {url}: HTTP {s}"),
                }
            }
            Ok(())
        }
    }
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|s| s.to_string()).collect()
}

fn print_table(rows: &[Vec<String>]) {
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
        // One line per invalid field, unless the message already is that single line.
        if let Some(errors) = api.details.get("errors").and_then(|e| e.as_array()) {
            if errors.len() > 1 {
                for e in errors {
                    eprintln!(
                        "  {}: {}",
                        e.get("field").and_then(|f| f.as_str()).unwrap_or("?"),
                        e.get("reason").and_then(|f| f.as_str()).unwrap_or("?")
                    );
                }
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

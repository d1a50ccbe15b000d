//! The `dcos-rs` binary: dispatches the hidden `__shim`, `__exec` and `__check-exec` modes
//! before any thread exists (libcontainer clones the calling process; setns into a mount or
//! user namespace needs a single thread), then runs the CLI on a tokio runtime.

use dcos_rs::cli::{AgentArgs, Cli, Commands, MasterArgs, UpArgs};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "__shim") {
        let Some(dir) = args.get(2) else {
            eprintln!("usage: dcos-rs __shim <task-dir>");
            return ExitCode::from(2);
        };
        // The shim's stderr is the task's shim.log: libcontainer's diagnostics land there.
        // Its container init logs to the task's own stderr, though, and warns on every start
        // that it cannot install seccomp filters (it is built without libseccomp: the shim's
        // executor installs them), so only its errors are let through.
        tracing_subscriber::fmt()
            .with_env_filter(log_filter(
                "warn,libcgroups=error,libcontainer::process::init=error",
            ))
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .init();
        return ExitCode::from(dcos_runtime::shim::run(std::path::Path::new(dir)) as u8);
    }
    if args.get(1).is_some_and(|a| a == "__exec") {
        return ExitCode::from(dcos_runtime::shim::exec_after_gate(&args[2..]) as u8);
    }
    // A container task's COMMAND health check: joining its mount and user namespaces needs
    // a process with one thread.
    if args
        .get(1)
        .is_some_and(|a| a == dcos_runtime::check_exec::ENTRY)
    {
        return ExitCode::from(dcos_runtime::check_exec::run(&args[2..]) as u8);
    }
    // The build (a hash of this executable) only when asked: it reads the whole binary.
    let wants_version = std::env::args()
        .skip(1)
        .any(|a| a == "--version" || a == "-V");
    let mut command = <Cli as clap::CommandFactory>::command();
    if wants_version {
        command = command.version(dcos_rs::build_version());
    }
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if matches!(
        cli.command,
        Commands::Master(_) | Commands::Agent(_) | Commands::Up(_)
    ) {
        dcos_rs::prefetch_build_version();
    }
    if matches!(
        cli.command,
        Commands::Up(_) | Commands::Master(_) | Commands::Agent(_)
    ) {
        // Before any listener: servers size their connection caps from it.
        dcos_rs::tls::raise_open_file_limit();
    }
    tracing_subscriber::fmt()
        .with_env_filter(log_filter("warn"))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = cli.json;
    let result = runtime.block_on(async move {
        match cli.command {
            Commands::Up(args) => up(*args).await,
            Commands::Master(args) => master(args).await,
            Commands::Agent(args) => agent(args).await,
            _ => dcos_rs::cli::run_client(cli).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            dcos_rs::cli::report_error(&error, json);
            ExitCode::FAILURE
        }
    }
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| {
            format!(
                "listening on {} (is another dcos-rs running? use --listen)",
                args.listen
            )
        })?;
    let agent_listener = tokio::net::TcpListener::bind(&args.agent_listen)
        .await
        .with_context(|| format!("listening on {} (use --agent-listen)", args.agent_listen))?;
    let bridge = dcos_runtime::network::BridgeConfig::new(&args.bridge, &args.bridge_subnet)
        .map_err(|e| anyhow::anyhow!("--bridge/--bridge-subnet: {e}"))?;
    let shim_exe = std::env::current_exe().context("finding the dcos-rs binary for task shims")?;
    let mut agent = dcos_rs::agent::AgentConfig::new(args.data_dir.join("agent"), String::new());
    agent.shim_exe = shim_exe;
    agent.cpus = args.cpus;
    agent.mem_mib = args.mem;
    agent.cgroup_parent = args.cgroup_parent;
    agent.task_log_max_bytes = args.task_log_max_mib.max(1) << 20;
    agent.task_log_files_max = args.task_log_files;
    agent.ports = args.ports.0;
    agent.bridge = bridge;
    agent.registry_ca = args.registry_ca;
    agent.attributes = args.attributes.into_iter().collect();
    agent.policy = dcos_rs::agent::policy::TaskPolicy {
        task_user: args.task_user,
        allow_root_tasks: args.allow_root_tasks,
        allow_local_fetch: args.allow_local_fetch,
        ..Default::default()
    }
    .with_host_paths(&args.allow_host_paths, "--allow-host-path")
    .map_err(anyhow::Error::msg)?;
    let opts = dcos_rs::up::UpOptions {
        data_dir: args.data_dir,
        keep_tasks: args.keep_tasks,
        announce: true,
        // Required by `up::start` when either address is not loopback.
        tokens_file: args.tokens_file,
        insecure_no_auth: args.insecure_no_auth,
        agent,
    };
    // Installed before anything starts: a Ctrl-C or SIGTERM during start-up must still stop
    // cleanly (it is acted on once start-up is done) instead of killing the process.
    let stop = StopSignals::install()?;
    let handle = dcos_rs::up::start(opts, listener, agent_listener).await?;
    let remembered = handle
        .admin_token
        .as_ref()
        .and_then(|admin| remember_local_up(&handle.master_url, &admin.file));
    stop.wait().await;
    // Once stopped, whatever listens on its address next must not get the token.
    if let Some(path) = remembered {
        let _ = std::fs::remove_file(path);
    }
    println!();
    handle.stop(true).await
}

/// Leaves up.toml beside cli.toml, so the CLI on this machine finds the token (see
/// `LocalUp`); a failure only costs the user a `DCOS_TOKEN`.
fn remember_local_up(url: &str, token_file: &std::path::Path) -> Option<std::path::PathBuf> {
    use dcos_rs::cli::client::{CliConfig, LocalUp};
    let Some(cli_toml) = CliConfig::default_path(|name| std::env::var(name).ok()) else {
        println!(
            "(no HOME: give the CLI the token with DCOS_TOKEN=$(cat {}))",
            token_file.display()
        );
        return None;
    };
    let path = LocalUp::path(&cli_toml);
    let local = LocalUp {
        url: url.to_string(),
        token_file: token_file.to_path_buf(),
    };
    match local.write(&path) {
        Ok(()) => Some(path),
        Err(e) => {
            println!(
                "(could not write {} ({e}): give the CLI the token with DCOS_TOKEN=$(cat {}))",
                path.display(),
                token_file.display()
            );
            None
        }
    }
}

async fn master(args: MasterArgs) -> anyhow::Result<()> {
    let config = dcos_rs::master::config::MasterConfig::load(&args.config)?;
    let listener = bind_listen(config.listen, &args.config).await?;
    let stop = StopSignals::install()?;
    let process = dcos_rs::master::serve::start(config, listener, true).await?;
    stop.wait().await;
    println!("stopping master…");
    process.stop().await?;
    println!("stopped");
    Ok(())
}

async fn agent(args: AgentArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let config = dcos_rs::agent::config::AgentFileConfig::load_with_masters(
        &args.config,
        args.masters.as_deref(),
    )?;
    let listener = bind_listen(config.listen, &args.config).await?;
    let shim_exe = std::env::current_exe().context("finding the dcos-rs binary for task shims")?;
    let stop = StopSignals::install()?;
    let masters = config.masters.join(", ");
    let process = dcos_rs::agent::config::start(config, listener, shim_exe).await?;
    println!(
        "agent {}: started ({} task(s) recovered); registering with {masters}",
        process.agent.id,
        process.agent.last_recovery().0
    );
    stop.wait().await;
    println!("stopping the agent; its tasks keep running");
    process.stop().await;
    Ok(())
}

/// Binds the `listen` address of a config file, naming the key and the file on failure.
async fn bind_listen(
    address: std::net::SocketAddr,
    config: &std::path::Path,
) -> anyhow::Result<tokio::net::TcpListener> {
    use anyhow::Context;
    tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| {
            format!(
                "listening on {address} (the `listen` key of {})",
                config.display()
            )
        })
}

/// Ctrl-C and SIGTERM, installed before start-up so a signal during start-up still stops
/// cleanly (it is acted on once start-up is done) instead of killing the process.
struct StopSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> std::io::Result<StopSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// Log filter from `DCOS_LOG` (e.g. `info`, `dcos_rs=debug`), else `default`.
fn log_filter(default: &str) -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_env("DCOS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default))
}

//! `dcos-rs cluster`: local commands that prepare a cluster. `init-ca` makes the cluster CA,
//! `issue-cert` signs a certificate for a master, an agent or an admin, and `setup` makes
//! the CA if needed, an admin API token (its sha256 goes to `<ca-dir>/tokens`) and this
//! CLI's `cli.toml`.
//!
//! They only read and write files (through `crate::tls` and `crate::auth`); no master is
//! contacted. Deliberately absent: distributing the files to nodes, revocation of
//! certificates or tokens, and keeping a register of what was issued.

use crate::auth;
use crate::cli::client::CliConfig;
use crate::tls::{self, Role};
use anyhow::{bail, Context};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::Subcommand;
use dcos_installer::render::toml_string;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Default directory of the cluster CA.
pub const CA_DIR_DEFAULT: &str = "./dcos-ca";
/// The tokens file in the CA directory: copy it to every master and agent.
pub const TOKENS_FILE: &str = "tokens";
/// Name of the token `setup` makes unless told otherwise.
pub const TOKEN_NAME_DEFAULT: &str = "admin";

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Replace the binary on every node, one at a time, each health-gated (rolling).
    #[command(
        long_about = "Upgrade a cluster made by `dcos-rs install` to another binary, over SSH.\n\n\
        Masters go one at a time, followers first; before the leader's turn an upgraded\n\
        master takes the leadership over, so the cluster changes leader once. Then agents\n\
        one at a time; their tasks keep running through the agent's restart. After each\n\
        restart the node must be back on the new build (`dcos-rs --version`): a master\n\
        answering with a leader known, an agent registered and active with its tasks. A\n\
        node that does not come back stops the upgrade with its log; fix the cause and\n\
        run the same command with --resume. Nodes on the new binary already are skipped.\n\n\
        Example:\n  \
          dcos-rs cluster upgrade --binary ./dcos-rs-new --config cluster.yaml"
    )]
    Upgrade(crate::install::UpgradeArgs),
    /// Save the whole replicated state to a file (any master answers, even without quorum).
    #[command(
        long_about = "Save the cluster's whole replicated state to FILE (JSON, mode 0600).\n\n\
        The master the CLI talks to (--url or cli.toml) answers with its copy at one applied\n\
        index: agents, tasks, apps with their versions and groups, jobs with their history,\n\
        external frameworks, roles' weights and quotas, drained and removed agents and\n\
        revoked certificates. Any master answers, a follower too, even one that lost its\n\
        quorum: after losing most masters for good, back up a survivor and restore into a\n\
        new cluster (docs/OPERATIONS.md). The CA's key and the tokens are not in it: they\n\
        stay in the installer's state dir.\n\n\
        Example:\n  \
          dcos-rs cluster backup backup-$(date +%F).json"
    )]
    Backup {
        /// The file to write (replaced if it exists).
        file: PathBuf,
        /// The inventory of a cluster made by `dcos-rs install`: the backup then also holds
        /// its state dir's CA certificate and tokens file (hashes only; never the CA key).
        #[arg(long, value_name = "CLUSTER_YAML")]
        config: Option<PathBuf>,
    },
    /// Load a backup's apps, jobs and frameworks into this (fresh) cluster.
    #[command(
        long_about = "Restore a backup (from `dcos-rs cluster backup`) into the cluster.\n\n\
        The backup's apps and groups (with their versions), jobs (with their history),\n\
        external frameworks and roles become this cluster's, in one replicated change. Its\n\
        agents and tasks do not: they were the old cluster's machines. The services\n\
        framework starts every app's instances on this cluster's agents; job runs that were\n\
        under way are gone (their history stays). A cluster that already holds apps, jobs or\n\
        frameworks refuses unless --replace.\n\n\
        Example:\n  \
          dcos-rs cluster restore backup-2026-12-04.json"
    )]
    Restore {
        /// The backup file.
        file: PathBuf,
        /// Replace the apps, jobs and frameworks this cluster holds.
        #[arg(long)]
        replace: bool,
    },
    /// Create the cluster's certificate authority (ca.crt and ca.key).
    #[command(
        long_about = "Create the cluster's certificate authority: ca.crt and ca.key in --dir.\n\n\
            Masters serve HTTPS and masters, agents and admins prove who they are with\n\
            certificates this CA signs (`dcos-rs cluster issue-cert`). Nodes trust no other CA.\n\n\
            ca.crt  the CA certificate (public): copy it to every node and every user.\n\
            ca.key  its private key (mode 0600): whoever holds it can impersonate any node.\n        \
                    Keep it on the machine that issues certificates, not on the nodes.\n\n\
            The CA is valid for 10 years. An existing CA is never replaced unless --force is\n\
            given; replacing it invalidates every certificate it issued.\n\n\
            Example:\n  \
              dcos-rs cluster init-ca --dir ./dcos-ca\n  \
              dcos-rs cluster issue-cert --role master --name m1 --san 10.0.0.1 --ca-dir ./dcos-ca"
    )]
    InitCa {
        /// Directory for ca.crt and ca.key (created with mode 0700 if missing).
        #[arg(long, default_value = CA_DIR_DEFAULT)]
        dir: PathBuf,
        /// Replace an existing CA (certificates it issued stop working).
        #[arg(long)]
        force: bool,
    },
    /// Issue a certificate for a master, an agent or an admin, signed by the cluster CA.
    #[command(
        long_about = "Issue a certificate and key for a master, an agent or an admin, signed by\n\
            the cluster CA in --ca-dir: <out>/<name>.crt and <out>/<name>.key (mode 0600).\n\n\
            The certificate names its holder as <role>:<name> (e.g. master:m1); nodes read it\n\
            to know who is calling. It is valid both for serving HTTPS and for dialling other\n\
            nodes. Give every address others use to reach a node with --san (IP addresses or\n\
            DNS names): a client refuses a server whose certificate does not list the address\n\
            it dialled. Issuing again for the same name replaces the files.\n\n\
            Copy <name>.crt, <name>.key and ca.crt to the node; the key must stay secret.\n\n\
            Examples:\n  \
              dcos-rs cluster issue-cert --role master --name m1 --san 10.0.0.1 --san m1.example.com\n  \
              dcos-rs cluster issue-cert --role agent --name a1 --san 10.0.0.21 --out ./certs\n  \
              dcos-rs cluster issue-cert --role admin --name alice --days 30"
    )]
    IssueCert {
        /// What the holder is in the cluster.
        #[arg(long, value_parser = role_parser())]
        role: Role,
        /// The holder's name: letters, digits, '-', '_', '.' (at most 64); also the file name.
        #[arg(long)]
        name: String,
        /// An IP address or DNS name the holder is reached at (repeat for several).
        #[arg(long = "san", value_name = "IP_OR_DNS")]
        sans: Vec<String>,
        /// Directory of the cluster CA (from `dcos-rs cluster init-ca`).
        #[arg(long, default_value = CA_DIR_DEFAULT)]
        ca_dir: PathBuf,
        /// Directory for <name>.crt and <name>.key.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Days the certificate is valid (1 to 3650).
        #[arg(long, default_value_t = tls::CERT_VALID_DAYS_DEFAULT)]
        days: u32,
    },
    /// Make an admin API token and this CLI's cli.toml (and the cluster CA if missing).
    #[command(
        long_about = "Prepare this machine to administer a cluster: an API token and cli.toml.\n\n\
            1. The cluster CA in --ca-dir is made if it is not there yet (as `init-ca` does).\n\
            2. A new random token is made (dcos_ and 43 characters); only its sha256 is\n   \
               appended, as `sha256:<hex> <name>`, to <ca-dir>/tokens (mode 0600).\n\
            3. cli.toml (mode 0600) gets `url` (--url), `ca` (<ca-dir>/ca.crt) and `token`.\n   \
               It goes to --cli-config, else $DCOS_CONFIG, else $XDG_CONFIG_HOME/dcos-rs/cli.toml,\n   \
               else ~/.config/dcos-rs/cli.toml; an existing one is kept unless --force.\n\n\
            Every master and agent needs ca.crt and the tokens file, named by `[auth]\n\
            tokens_file` in master.toml and agent.toml; they read it at start, so restart them\n\
            after adding a token. Every API call but /health, /ready and the dashboard page\n\
            then needs `Authorization: Bearer <token>`; client commands send cli.toml's token\n\
            (DCOS_TOKEN overrides it). Run setup again with --name and --cli-config to make a\n\
            token for another person or a CI job.\n\n\
            Example:\n  \
              dcos-rs cluster setup --ca-dir ./dcos-ca --url https://10.77.0.11:5050\n  \
              scp dcos-ca/ca.crt dcos-ca/tokens m1:/etc/dcos-rs/\n  \
              dcos-rs node list"
    )]
    Setup {
        /// Directory of the cluster CA; the CA is made there if missing.
        #[arg(long, default_value = CA_DIR_DEFAULT)]
        ca_dir: PathBuf,
        /// Name of the token in the tokens file (letters, digits, '-', '_', '.', '@').
        #[arg(long, default_value = TOKEN_NAME_DEFAULT)]
        name: String,
        /// Where to write cli.toml [default: $DCOS_CONFIG, $XDG_CONFIG_HOME/dcos-rs/cli.toml or ~/.config/dcos-rs/cli.toml].
        #[arg(long, value_name = "PATH")]
        cli_config: Option<PathBuf>,
        /// Replace an existing cli.toml.
        #[arg(long)]
        force: bool,
    },
}

fn role_parser() -> impl TypedValueParser<Value = Role> {
    PossibleValuesParser::new(Role::ALL.map(Role::as_str)).try_map(|text| text.parse::<Role>())
}

/// Runs a `cluster` command; with `json` it prints the written paths as JSON. `url` is the
/// global `--url` (or DCOS_URL): `setup` writes it to cli.toml.
pub fn run(command: ClusterCommand, url: Option<String>, json: bool) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Upgrade(_) => unreachable!("over SSH: crate::install::upgrade"),
        ClusterCommand::Backup { .. } | ClusterCommand::Restore { .. } => {
            unreachable!("API calls: backup_or_restore")
        }
        ClusterCommand::Setup {
            ca_dir,
            name,
            cli_config,
            force,
        } => {
            let cli_config = match cli_config {
                Some(path) => path,
                None => CliConfig::default_path(|name| std::env::var(name).ok()).context(
                    "no place for cli.toml: HOME is not set; give --cli-config PATH or set DCOS_CONFIG",
                )?,
            };
            let made = setup(&ca_dir, url.as_deref(), &name, &cli_config, force)?;
            print_setup(&made, &ca_dir, json)
        }
        ClusterCommand::InitCa { dir, force } => {
            let paths = tls::init_ca(&dir, force)?;
            if json {
                return print_json(&serde_json::json!({
                    "cert": paths.cert,
                    "key": paths.key,
                }));
            }
            println!("wrote the cluster CA:");
            println!(
                "  {}  CA certificate: copy it to every node and user",
                paths.cert.display()
            );
            println!(
                "  {}  CA private key: keep it secret, off the nodes",
                paths.key.display()
            );
            println!(
                "next: issue a certificate per node, e.g.\n  dcos-rs cluster issue-cert --ca-dir {} --role master --name m1 --san <address of m1>",
                dir.display()
            );
            Ok(())
        }
        ClusterCommand::IssueCert {
            role,
            name,
            sans,
            ca_dir,
            out,
            days,
        } => {
            let (cert, key) = tls::issue_cert(&ca_dir, role, &name, &sans, &out, days)?;
            if json {
                return print_json(&serde_json::json!({
                    "identity": format!("{role}:{name}"),
                    "cert": cert,
                    "key": key,
                    "ca": ca_dir.join(tls::CA_CERT_FILE),
                    "days": days,
                }));
            }
            println!("issued {role}:{name}, valid for {days} days:");
            println!("  {}  certificate", cert.display());
            println!("  {}  private key (keep it secret)", key.display());
            if sans.is_empty() && role != Role::Admin {
                eprintln!(
                    "note: no --san given: this certificate can dial other nodes but cannot serve HTTPS"
                );
            }
            println!(
                "next: copy them with {} to the {role}'s host",
                ca_dir.join(tls::CA_CERT_FILE).display()
            );
            Ok(())
        }
    }
}

/// What `setup` made.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SetupReport {
    /// The URL written to cli.toml.
    pub url: String,
    /// The CA certificate (absolute), as written to cli.toml.
    pub ca: PathBuf,
    /// True if the CA was made now.
    pub ca_created: bool,
    /// The tokens file the token's hash was appended to.
    pub tokens_file: PathBuf,
    /// The token's name in the tokens file.
    pub token_name: String,
    /// The cli.toml written.
    pub cli_config: PathBuf,
}

/// `dcos-rs cluster setup`: the CA in `ca_dir` if missing, a new token appended (as its
/// hash) to `<ca_dir>/tokens`, and cli.toml at `cli_config` with `url`, `ca` and `token`.
/// Everything is checked before anything is written; an existing cli.toml is replaced only
/// with `force`.
pub fn setup(
    ca_dir: &Path,
    url: Option<&str>,
    name: &str,
    cli_config: &Path,
    force: bool,
) -> anyhow::Result<SetupReport> {
    let Some(url) = url.map(|u| u.trim_end_matches('/')) else {
        bail!("--url is required: the master URL this CLI will use, e.g. --url https://10.77.0.11:5050");
    };
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        bail!("--url {url:?} must start with https:// (or http:// for `dcos-rs up`)");
    }
    auth::check_token_name(name).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
    if cli_config.symlink_metadata().is_ok() && !force {
        bail!(
            "{} already exists (it may hold another cluster's token): give --force to replace it, or --cli-config PATH to write another file",
            cli_config.display()
        );
    }
    let tokens_file = ca_dir.join(TOKENS_FILE);
    if tokens_file.exists() {
        // Appending to a file the nodes would refuse helps nobody: say so now.
        match auth::TokenSet::load(&tokens_file) {
            Ok(_) | Err(auth::TokenFileError::Empty { .. }) => {}
            Err(e) => return Err(e).context("the existing tokens file cannot take more tokens"),
        }
    }

    let ca_cert = ca_dir.join(tls::CA_CERT_FILE);
    let ca_created = !ca_cert.exists();
    if ca_created {
        tls::init_ca(ca_dir, false)?;
    }
    let ca = std::fs::canonicalize(&ca_cert)
        .with_context(|| format!("finding the absolute path of {}", ca_cert.display()))?;

    let token = auth::generate_token()?;
    append_token_line(&tokens_file, &auth::token_line(&token, name))?;

    if let Some(dir) = cli_config.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
    }
    let text = format!(
        "# dcos-rs CLI settings, written by `dcos-rs cluster setup`. It holds an API token:\n\
         # keep it private (mode 0600). DCOS_URL, DCOS_CA and DCOS_TOKEN override these keys.\n\
         url = {}\nca = {}\ntoken = {}\n",
        toml_string(url),
        toml_string(&ca.to_string_lossy()),
        toml_string(&token),
    );
    tls::write_atomically(cli_config, text.as_bytes(), 0o600)?;
    Ok(SetupReport {
        url: url.to_string(),
        ca,
        ca_created,
        tokens_file,
        token_name: name.to_string(),
        cli_config: cli_config.to_path_buf(),
    })
}

/// Appends `line` to the tokens file, creating it (mode 0600, with a comment saying what it
/// is) if missing, and syncs it.
fn append_token_line(path: &Path, line: &str) -> anyhow::Result<()> {
    let appended = (|| -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)?;
        let mut text = String::new();
        let length = file.metadata()?.len();
        if length == 0 {
            text.push_str(
                "# dcos-rs API tokens: `sha256:<hex of the token> <name>` per line; the tokens\n\
                 # themselves are not stored. Every master and agent reads this file\n\
                 # (`[auth] tokens_file`); delete a line to revoke its token, then restart them.\n",
            );
        } else if !ends_with_newline(path, length)? {
            text.push('\n');
        }
        text.push_str(line);
        text.push('\n');
        file.write_all(text.as_bytes())?;
        file.sync_all()
    })();
    appended.with_context(|| format!("adding the token to {}", path.display()))
}

fn ends_with_newline(path: &Path, length: u64) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(length - 1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

fn print_setup(made: &SetupReport, ca_dir: &Path, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&serde_json::to_value(made)?);
    }
    if made.ca_created {
        println!(
            "made the cluster CA: {} (its key {} stays here, off the nodes)",
            made.ca.display(),
            ca_dir.join(tls::CA_KEY_FILE).display()
        );
    } else {
        println!("using the cluster CA {}", made.ca.display());
    }
    println!(
        "added token {:?} to {} (only its sha256 is kept there)",
        made.token_name,
        made.tokens_file.display()
    );
    println!(
        "wrote {} (mode 0600): url {}, ca, token",
        made.cli_config.display(),
        made.url
    );
    println!("next:");
    println!(
        "  1. copy {} and {} to every master and agent; in master.toml and agent.toml set\n     [auth]\n     tokens_file = \"/etc/dcos-rs/tokens\"\n     and restart them (the file is read at start)",
        made.ca.display(),
        made.tokens_file.display()
    );
    if made.ca_created {
        println!(
            "  2. issue node certificates, e.g. dcos-rs cluster issue-cert --ca-dir {} --role master --name m1 --san <address of m1>",
            ca_dir.display()
        );
    }
    println!(
        "  {}. check it: dcos-rs node list",
        if made.ca_created { 3 } else { 2 }
    );
    Ok(())
}

fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// `cluster backup` and `cluster restore`, through the cluster's API.
pub async fn backup_or_restore(
    client: &crate::cli::client::Client,
    command: ClusterCommand,
    json: bool,
) -> anyhow::Result<()> {
    use dcos_api::routes::cluster as routes;
    match command {
        ClusterCommand::Backup { file, config } => {
            let mut backup: serde_json::Value = client.get(routes::BACKUP).await?;
            if let Some(config) = config {
                let inventory = crate::install::load_inventory(&config)?;
                let ca = inventory.state_dir.join("ca");
                for (key, name) in [
                    ("caCertificate", tls::CA_CERT_FILE),
                    ("tokens", TOKENS_FILE),
                ] {
                    let path = ca.join(name);
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {} for the backup", path.display()))?;
                    backup[key] = serde_json::Value::String(text);
                }
            }
            let text = serde_json::to_vec(&backup)?;
            tls::write_atomically(&file, &text, 0o600)
                .with_context(|| format!("writing the backup to {}", file.display()))?;
            let state = &backup["state"];
            let count = |v: &serde_json::Value| v.as_object().map(|o| o.len()).unwrap_or(0);
            let summary = serde_json::json!({
                "withCaAndTokens": backup.get("tokens").is_some(),
                "file": file,
                "bytes": text.len(),
                "master": backup["master"],
                "appliedIndex": backup["appliedIndex"],
                "apps": count(&state["services"]["apps"]),
                "jobs": count(&state["jobs"]["jobs"]),
                "frameworks": count(&state["frameworks"]["frameworks"]),
                "agents": count(&state["agents"]),
                "tasks": count(&state["tasks"]),
            });
            if json {
                return print_json(&summary);
            }
            if backup.get("tokens").is_some() {
                println!("with the CA certificate and the tokens file (hashes) of the state dir");
            }
            println!(
                "wrote {} ({} bytes): master {} ({}) at index {}: {} apps, {} jobs, {} frameworks, {} agents, {} tasks",
                file.display(),
                text.len(),
                backup["master"],
                backup["role"].as_str().unwrap_or("?"),
                backup["appliedIndex"],
                summary["apps"],
                summary["jobs"],
                summary["frameworks"],
                summary["agents"],
                summary["tasks"]
            );
            Ok(())
        }
        ClusterCommand::Restore { file, replace } => {
            let text =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let mut backup: serde_json::Value =
                serde_json::from_slice(&text).with_context(|| {
                    format!(
                        "{} is not a backup (JSON) of `dcos-rs cluster backup`",
                        file.display()
                    )
                })?;
            backup["replace"] = serde_json::Value::Bool(replace);
            let body = serde_json::to_vec(&backup)?;
            let answer: serde_json::Value = client
                .send_json(hyper::Method::POST, routes::RESTORE, &body)
                .await?;
            if json {
                return print_json(&answer);
            }
            let restored = &answer["restored"];
            if backup.get("tokens").is_some() {
                eprintln!(
                    "note: the backup holds the old cluster's CA certificate and tokens file; this cluster keeps its own. To accept the old tokens, put the backup's `tokens` in <state_dir>/ca/tokens and run `dcos-rs install` again"
                );
            }
            println!(
                "restored from {}: {} apps, {} groups, {} jobs, {} frameworks; the apps' instances start on this cluster's agents",
                file.display(),
                restored["apps"],
                restored["groups"],
                restored["jobs"],
                restored["frameworks"]
            );
            Ok(())
        }
        _ => unreachable!("only backup and restore"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn toml_strings_round_trip() {
        for text in ["https://m1:5050", "/tmp/a \"b\"\\c", "tab\there", "ü"] {
            let parsed: toml::Table =
                toml::from_str(&format!("k = {}", toml_string(text))).unwrap();
            assert_eq!(parsed["k"].as_str(), Some(text));
        }
    }

    #[test]
    fn setup_makes_the_ca_a_token_and_cli_toml_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        let cli = dir.path().join("conf/cli.toml");
        let made = setup(&ca_dir, Some("https://m1:5050/"), "admin", &cli, false).unwrap();
        assert!(made.ca_created && made.ca.is_absolute());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&cli), 0o600);
        assert_eq!(mode(&made.tokens_file), 0o600);
        let config = CliConfig::load(&cli).unwrap().unwrap();
        assert_eq!(config.url.as_deref(), Some("https://m1:5050"));
        assert_eq!(config.ca.as_deref(), Some(made.ca.as_path()));
        let token = config.token.unwrap();
        let tokens = auth::TokenSet::load(&made.tokens_file).unwrap();
        assert_eq!(tokens.verify(&token), Some("admin"));

        let error = setup(&ca_dir, Some("https://m1:5050"), "ci", &cli, false).unwrap_err();
        assert!(format!("{error:#}").contains("--force"), "{error:#}");
        // A second token for another user: same CA, both tokens valid.
        let other = dir.path().join("ci.toml");
        let again = setup(&ca_dir, Some("https://m1:5050"), "ci", &other, false).unwrap();
        assert!(!again.ca_created);
        let second = CliConfig::load(&other).unwrap().unwrap().token.unwrap();
        let tokens = auth::TokenSet::load(&made.tokens_file).unwrap();
        assert_eq!(
            (tokens.verify(&token), tokens.verify(&second)),
            (Some("admin"), Some("ci"))
        );

        for (url, name, expected) in [
            (None, "admin", "--url is required"),
            (Some("m1:5050"), "admin", "must start with https://"),
            (Some("https://m1"), "a b", "--name"),
        ] {
            let error = setup(&ca_dir, url, name, &dir.path().join("x.toml"), false).unwrap_err();
            assert!(format!("{error:#}").contains(expected), "{error:#}");
        }
        std::fs::write(&made.tokens_file, "garbage\n").unwrap();
        let error = setup(
            &ca_dir,
            Some("https://m1"),
            "x",
            &dir.path().join("y.toml"),
            false,
        )
        .unwrap_err();
        assert!(format!("{error:#}").contains("tokens:1:"), "{error:#}");
    }
}

//! `dcos-rs cluster`: local commands that prepare a cluster's certificates. `init-ca` makes
//! the cluster CA, `issue-cert` signs a certificate for a master, an agent or an admin.
//!
//! They only read and write files (through `crate::tls`); no master is contacted. Deliberately
//! absent: distributing the files to nodes, revocation, and keeping a register of what was
//! issued.

use crate::tls::{self, Role};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::Subcommand;
use std::path::PathBuf;

/// Default directory of the cluster CA.
pub const CA_DIR_DEFAULT: &str = "./dcos-ca";

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
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
}

fn role_parser() -> impl TypedValueParser<Value = Role> {
    PossibleValuesParser::new(Role::ALL.map(Role::as_str)).try_map(|text| text.parse::<Role>())
}

/// Runs a `cluster` command; with `json` it prints the written paths as JSON.
pub fn run(command: ClusterCommand, json: bool) -> anyhow::Result<()> {
    match command {
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

fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

//! The installer's state on the admin's machine (`state_dir` of cluster.yaml, mode 0700):
//!
//! ```text
//! ca/ca.crt ca/ca.key   the cluster CA (its key never leaves this directory)
//! ca/tokens             sha256 of the API tokens (copied to every node)
//! nodes/<name>.crt .key each node's certificate, issued once, reissued if its address changed
//! cli.toml              the admin's CLI settings: first master's URL, CA, admin token
//! known_hosts           the nodes' SSH host keys, trusted on first use
//! ```
//!
//! A rerun finds everything here and reuses it, so the nodes' files stay byte-identical.

use crate::cli::client::{CliConfig, Client};
use crate::tls::{self, Role as TlsRole};
use anyhow::Context;
use dcos_installer::facts::CONFIG_DIR;
use dcos_installer::inventory::{Inventory, Node, Role};
use dcos_installer::render::NodeFile;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub struct State {
    pub dir: PathBuf,
    pub cli_config: PathBuf,
    /// The admin token (from cli.toml).
    pub token: String,
}

/// Days a node certificate is valid.
const NODE_CERT_DAYS: u32 = 825;

impl State {
    /// Makes the state dir, the CA, the admin token and cli.toml if missing.
    pub fn prepare(inventory: &Inventory) -> anyhow::Result<State> {
        let dir = inventory.state_dir.clone();
        for sub in [dir.clone(), dir.join("ca"), dir.join("nodes")] {
            if !sub.is_dir() {
                std::fs::create_dir_all(&sub)
                    .with_context(|| format!("creating {}", sub.display()))?;
                std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o700))
                    .with_context(|| format!("making {} private", sub.display()))?;
            }
        }
        super::save_pins(inventory)?;
        let cli_config = dir.join("cli.toml");
        let first_master = inventory
            .masters()
            .next()
            .expect("an inventory has masters")
            .url(inventory);
        if !cli_config.exists() {
            crate::cli::cluster::setup(
                &dir.join("ca"),
                Some(&first_master),
                "admin",
                &cli_config,
                false,
            )?;
        }
        let settings = CliConfig::load(&cli_config)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .with_context(|| format!("{} vanished", cli_config.display()))?;
        let token = settings.token.with_context(|| {
            format!(
                "{} holds no token: delete it to make a new one",
                cli_config.display()
            )
        })?;
        Ok(State {
            dir,
            cli_config,
            token,
        })
    }

    pub fn ca_dir(&self) -> PathBuf {
        self.dir.join("ca")
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.ca_dir().join(tls::CA_CERT_FILE)
    }

    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    /// ca.crt, tokens, node.crt and node.key for `node`, its certificate issued now if it
    /// has none or one that does not name its address.
    pub fn node_secrets(
        &self,
        inventory: &Inventory,
        node: &Node,
    ) -> anyhow::Result<Vec<NodeFile>> {
        let _ = inventory;
        let nodes = self.dir.join("nodes");
        let cert = nodes.join(format!("{}.crt", node.name));
        let key = nodes.join(format!("{}.key", node.name));
        let role = match node.role {
            Role::Master => TlsRole::Master,
            Role::Agent => TlsRole::Agent,
        };
        if !self.certificate_fits(&cert, role, node) || !key.exists() {
            tls::issue_cert(
                &self.ca_dir(),
                role,
                &node.name,
                std::slice::from_ref(&node.address),
                &nodes,
                NODE_CERT_DAYS,
            )
            .with_context(|| format!("issuing the certificate of {}", node.name))?;
        }
        let read = |path: &Path| {
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))
        };
        Ok(vec![
            NodeFile::new(
                format!("{CONFIG_DIR}/ca.crt"),
                read(&self.ca_cert())?,
                0o644,
            ),
            NodeFile::new(
                format!("{CONFIG_DIR}/tokens"),
                read(&self.ca_dir().join(crate::cli::cluster::TOKENS_FILE))?,
                0o600,
            ),
            NodeFile::new(format!("{CONFIG_DIR}/node.crt"), read(&cert)?, 0o644),
            NodeFile::new(format!("{CONFIG_DIR}/node.key"), read(&key)?, 0o600),
        ])
    }

    /// The certificate at `path` is this node's: its identity and its address.
    fn certificate_fits(&self, path: &Path, role: TlsRole, node: &Node) -> bool {
        let Ok(certs) = dcos_pki::load_certs(path, "node certificate") else {
            return false;
        };
        let Some(cert) = certs.first() else {
            return false;
        };
        let identity = dcos_pki::PeerIdentity::from_certificate(cert);
        identity.is_ok_and(|id| id.role == role && id.name == node.name)
            && dcos_pki::certificate_names_host(cert, &node.address)
    }

    /// A client of the first master that answers (in the inventory's order), for work that
    /// must go on while a master is down (an upgrade that stopped at a broken build).
    pub async fn reachable_client(&self, inventory: &Inventory) -> anyhow::Result<Client> {
        let mut errors = Vec::new();
        for master in inventory.masters() {
            let client = Client::with_auth(
                &master.url(inventory),
                Some(&self.token),
                Some(&self.ca_cert()),
            )?;
            let asked =
                client.get::<dcos_api::cluster::NodesView>(dcos_api::routes::cluster::NODES);
            match tokio::time::timeout(std::time::Duration::from_secs(5), asked).await {
                Ok(Ok(_)) => return Ok(client),
                Ok(Err(e)) => errors.push(format!("{} ({}): {e}", master.name, master.address)),
                Err(_) => errors.push(format!(
                    "{} ({}): no answer within 5 s",
                    master.name, master.address
                )),
            }
        }
        anyhow::bail!("no master answers:\n  {}", errors.join("\n  "))
    }

    /// An API client for the first master with the admin token, trusting only the cluster CA.
    pub fn client(&self, inventory: &Inventory) -> anyhow::Result<Client> {
        let first = inventory
            .masters()
            .next()
            .expect("an inventory has masters")
            .url(inventory);
        Ok(Client::with_auth(
            &first,
            Some(&self.token),
            Some(&self.ca_cert()),
        )?)
    }
}

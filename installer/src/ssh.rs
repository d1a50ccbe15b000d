//! The SSH client (russh): log in with a key file or the ssh-agent, run a command with bytes
//! on its stdin, read its output and exit status. Host keys are trusted on first use and
//! kept in a known_hosts file of the installer's state; a changed key is refused.

use crate::inventory::SshTarget;
use russh::client;
use russh::keys::{self, PrivateKeyWithHashAlg};
use russh::ChannelMsg;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("cannot connect to {address}:{port}: {reason}")]
    Connect {
        address: String,
        port: u16,
        reason: String,
    },
    #[error("{what} took longer than {seconds} s")]
    Timeout { what: String, seconds: u64 },
    #[error("the host key of {address}:{port} is not the one recorded in {known_hosts} (line {line}): the node was reinstalled, or someone is in the middle. If the node was reinstalled, delete that line and run again")]
    HostKeyChanged {
        address: String,
        port: u16,
        known_hosts: PathBuf,
        line: usize,
    },
    #[error("cannot read the SSH key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("{user}@{address} refused {method}: check that its public key is in ~{user}/.ssh/authorized_keys on the node")]
    Refused {
        user: String,
        address: String,
        method: String,
    },
    #[error("the ssh-agent: {0} (give ssh.key in cluster.yaml, or start an agent with the key: ssh-add)")]
    Agent(String),
    #[error("SSH: {0}")]
    Protocol(String),
}

/// A command's result.
#[derive(Debug, Clone, Default)]
pub struct Output {
    pub status: Option<u32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// The last lines of stderr (or stdout if stderr is empty), for messages.
    pub fn tail(&self) -> String {
        let text = if self.stderr.iter().any(|b| !b.is_ascii_whitespace()) {
            &self.stderr
        } else {
            &self.stdout
        };
        let text = String::from_utf8_lossy(text);
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }
}

struct Handler {
    address: String,
    port: u16,
    known_hosts: PathBuf,
    /// Why the server's key was refused, for the error.
    refused: Arc<Mutex<Option<SshError>>>,
}

impl client::Handler for Handler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let keys::PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            *self.refused.lock().unwrap() = Some(SshError::Protocol(
                "the server presented a host certificate; only host keys are supported".into(),
            ));
            return Ok(false);
        };
        // The admin's own ~/.ssh/known_hosts first: a key pinned there must match.
        if let Some(home) = std::env::var_os("HOME") {
            let own = Path::new(&home).join(".ssh/known_hosts");
            match keys::check_known_hosts_path(&self.address, self.port, key, &own) {
                Ok(true) => return Ok(true),
                Err(keys::Error::KeyChanged { line }) => {
                    *self.refused.lock().unwrap() = Some(SshError::HostKeyChanged {
                        address: self.address.clone(),
                        port: self.port,
                        known_hosts: own,
                        line,
                    });
                    return Ok(false);
                }
                _ => {}
            }
        }
        match keys::check_known_hosts_path(&self.address, self.port, key, &self.known_hosts) {
            Ok(true) => Ok(true),
            Ok(false) => {
                // First contact: trust and remember (as OpenSSH's StrictHostKeyChecking=accept-new).
                eprintln!(
                    "trusting the host key of {}:{} on first contact: {} (recorded in {})",
                    self.address,
                    self.port,
                    key.fingerprint(Default::default()),
                    self.known_hosts.display()
                );
                if let Err(e) = keys::known_hosts::learn_known_hosts_path(
                    &self.address,
                    self.port,
                    key,
                    &self.known_hosts,
                ) {
                    *self.refused.lock().unwrap() = Some(SshError::Protocol(format!(
                        "cannot record the host key in {}: {e}",
                        self.known_hosts.display()
                    )));
                    return Ok(false);
                }
                Ok(true)
            }
            Err(keys::Error::KeyChanged { line }) => {
                *self.refused.lock().unwrap() = Some(SshError::HostKeyChanged {
                    address: self.address.clone(),
                    port: self.port,
                    known_hosts: self.known_hosts.clone(),
                    line,
                });
                Ok(false)
            }
            Err(e) => {
                *self.refused.lock().unwrap() = Some(SshError::Protocol(format!(
                    "reading {}: {e}",
                    self.known_hosts.display()
                )));
                Ok(false)
            }
        }
    }
}

/// One logged-in SSH connection to a node.
pub struct Session {
    handle: client::Handle<Handler>,
    label: String,
    command_timeout: Duration,
    /// Wrap commands in `sudo -n` (a user other than root).
    pub sudo: bool,
}

impl Session {
    /// Connects to `address` and logs in as `target` says, within `connect_timeout`.
    pub async fn connect(
        address: &str,
        target: &SshTarget,
        known_hosts: &Path,
        connect_timeout: Duration,
        command_timeout: Duration,
    ) -> Result<Session, SshError> {
        let seconds = connect_timeout.as_secs();
        let label = format!("{}@{address}:{}", target.user, target.port);
        tokio::time::timeout(
            connect_timeout,
            Self::login(address, target, known_hosts, command_timeout),
        )
        .await
        .map_err(|_| SshError::Timeout {
            what: format!("connecting to {label} and logging in"),
            seconds,
        })?
    }

    async fn login(
        address: &str,
        target: &SshTarget,
        known_hosts: &Path,
        command_timeout: Duration,
    ) -> Result<Session, SshError> {
        let config = Arc::new(client::Config {
            inactivity_timeout: Some(Duration::from_secs(600)),
            keepalive_interval: Some(Duration::from_secs(15)),
            ..Default::default()
        });
        let refused = Arc::new(Mutex::new(None));
        let handler = Handler {
            address: address.to_string(),
            port: target.port,
            known_hosts: known_hosts.to_path_buf(),
            refused: refused.clone(),
        };
        let connect_error = |reason: String| SshError::Connect {
            address: address.to_string(),
            port: target.port,
            reason,
        };
        let mut handle = match client::connect(config, (address, target.port), handler).await {
            Ok(handle) => handle,
            Err(e) => {
                if let Some(refusal) = refused.lock().unwrap().take() {
                    return Err(refusal);
                }
                return Err(connect_error(io_reason(&e)));
            }
        };
        let refused_by = |method: &str| SshError::Refused {
            user: target.user.clone(),
            address: address.to_string(),
            method: method.to_string(),
        };
        match &target.key {
            Some(path) => {
                let key = keys::load_secret_key(path, None).map_err(|e| SshError::Key {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                let hash = handle
                    .best_supported_rsa_hash()
                    .await
                    .map_err(|e| SshError::Protocol(e.to_string()))?
                    .flatten();
                let result = handle
                    .authenticate_publickey(
                        &target.user,
                        PrivateKeyWithHashAlg::new(Arc::new(key), hash),
                    )
                    .await
                    .map_err(|e| SshError::Protocol(e.to_string()))?;
                if !result.success() {
                    return Err(refused_by(&format!("the key {}", path.display())));
                }
            }
            None => {
                let mut agent = keys::agent::client::AgentClient::connect_env()
                    .await
                    .map_err(|e| SshError::Agent(e.to_string()))?;
                let identities = agent
                    .request_identities()
                    .await
                    .map_err(|e| SshError::Agent(e.to_string()))?;
                if identities.is_empty() {
                    return Err(SshError::Agent("it holds no keys".into()));
                }
                let hash = handle
                    .best_supported_rsa_hash()
                    .await
                    .map_err(|e| SshError::Protocol(e.to_string()))?
                    .flatten();
                let mut accepted = false;
                for identity in identities {
                    let key = identity.public_key().into_owned();
                    let result = handle
                        .authenticate_publickey_with(&target.user, key, hash, &mut agent)
                        .await
                        .map_err(|e| SshError::Agent(e.to_string()))?;
                    if result.success() {
                        accepted = true;
                        break;
                    }
                }
                if !accepted {
                    return Err(refused_by("every key of the ssh-agent"));
                }
            }
        }
        Ok(Session {
            handle,
            label: format!("{}@{address}:{}", target.user, target.port),
            command_timeout,
            sudo: target.user != "root",
        })
    }

    /// Runs `command` (a shell command line) with `stdin`, within the command timeout.
    pub async fn run(&self, command: &str, stdin: &[u8]) -> Result<Output, SshError> {
        let seconds = self.command_timeout.as_secs();
        let line = if self.sudo {
            format!("sudo -n sh -c {}", shell_quote(command))
        } else {
            command.to_string()
        };
        let what = format!("`{}` on {}", first_words(command), self.label);
        tokio::time::timeout(self.command_timeout, self.exec(&line, stdin))
            .await
            .map_err(|_| SshError::Timeout { what, seconds })?
    }

    async fn exec(&self, line: &str, stdin: &[u8]) -> Result<Output, SshError> {
        let protocol = |e: russh::Error| SshError::Protocol(e.to_string());
        let mut channel = self.handle.channel_open_session().await.map_err(protocol)?;
        channel.exec(true, line).await.map_err(protocol)?;
        if !stdin.is_empty() {
            channel.data(stdin).await.map_err(protocol)?;
        }
        channel.eof().await.map_err(protocol)?;
        let mut output = Output::default();
        while let Some(message) = channel.wait().await {
            match message {
                ChannelMsg::Data { data } => output.stdout.extend_from_slice(&data),
                ChannelMsg::ExtendedData { data, ext: 1 } => output.stderr.extend_from_slice(&data),
                ChannelMsg::ExitStatus { exit_status } => output.status = Some(exit_status),
                _ => {}
            }
        }
        Ok(output)
    }

    /// Writes `content` to `path` with `mode` atomically (a temporary file beside it, synced,
    /// then renamed), creating the parent directory.
    pub async fn write_file(
        &self,
        path: &str,
        content: &[u8],
        mode: u32,
    ) -> Result<Output, SshError> {
        let dir = Path::new(path)
            .parent()
            .map(|d| d.to_string_lossy().into_owned())
            .unwrap_or_else(|| "/".into());
        let temporary = format!("{path}.dcos-rs-new");
        let command = format!(
            "set -e; umask 077; mkdir -p {dir}; cat > {tmp}; chmod {mode:o} {tmp}; sync {tmp} 2>/dev/null || true; mv -f {tmp} {path}",
            dir = shell_quote(&dir),
            tmp = shell_quote(&temporary),
            path = shell_quote(path),
        );
        self.run(&command, content).await
    }

    pub async fn close(self) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }
}

fn io_reason(error: &russh::Error) -> String {
    match error {
        russh::Error::IO(e) => e.to_string(),
        other => other.to_string(),
    }
}

fn first_words(command: &str) -> String {
    let words: Vec<&str> = command.split_whitespace().take(3).collect();
    words.join(" ")
}

/// `text` in single quotes for a POSIX shell.
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting_survives_quotes() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }

    #[test]
    fn an_output_tail_prefers_stderr() {
        let output = Output {
            status: Some(1),
            stdout: b"out\n".to_vec(),
            stderr: b"\nerr 1\nerr 2\n".to_vec(),
        };
        assert_eq!(output.tail(), "err 1 | err 2");
        let quiet = Output {
            status: Some(1),
            stdout: b"only out\n".to_vec(),
            stderr: vec![],
        };
        assert_eq!(quiet.tail(), "only out");
    }
}

//! `RaftError`: what the public API of this crate reports to the master.
//!
//! It is deliberately small and stringly at the edges: openraft's generic error types stay
//! inside this crate, so callers match on a few variants (`NotLeader` for redirects, `Timeout`,
//! `Storage`/`Fatal` for "this master cannot serve") instead of on openraft internals.
//! Business refusals are not here: they are `dcos_core::Outcome::Rejected`, replicated data.

use openraft::error::{ClientWriteError, Fatal, InitializeError};
use openraft::BasicNode;

#[derive(Debug, Clone, thiserror::Error)]
pub enum RaftError {
    /// This node cannot accept writes; `leader_id`/`leader_addr` name the leader it knows of.
    #[error("this master is not the leader (leader: {})", leader_label(*.leader_id))]
    NotLeader {
        leader_id: Option<u64>,
        leader_addr: Option<String>,
    },
    /// A membership change was refused (another change in progress, unknown node, it would
    /// leave no voter); the message says which.
    #[error("membership change refused: {0}")]
    Membership(String),
    /// The log store or state machine failed (disk, encoding, a broken database file).
    #[error("raft storage: {0}")]
    Storage(String),
    /// Raft stopped (shut down, panicked, or stopped after a storage error).
    #[error("raft stopped: {0}")]
    Fatal(String),
    /// A bounded wait ran out; the message says what was awaited.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The command alone is larger than a log entry may be (`batch::ENTRY_MAX_BYTES`): the
    /// followers could not accept it.
    #[error("the write is {bytes} bytes encoded, more than a log entry may hold ({max})")]
    TooLarge { bytes: usize, max: usize },
    /// The disk holding the data dir has less free space than writes need; the message names
    /// the directory and the figures. Writes resume by themselves once space is freed.
    #[error("{0}")]
    DiskFull(String),
    /// The options or the data dir do not describe a cluster this call can run.
    #[error("invalid raft setup: {0}")]
    Config(String),
}

fn leader_label(leader_id: Option<u64>) -> String {
    match leader_id {
        Some(id) => format!("node {id}"),
        None => "unknown".to_string(),
    }
}

impl From<Fatal<u64>> for RaftError {
    fn from(fatal: Fatal<u64>) -> Self {
        match fatal {
            Fatal::StorageError(e) => RaftError::Storage(e.to_string()),
            Fatal::Panicked => RaftError::Fatal("the raft core panicked".to_string()),
            Fatal::Stopped => RaftError::Fatal("raft is shut down".to_string()),
        }
    }
}

impl From<openraft::error::RaftError<u64, ClientWriteError<u64, BasicNode>>> for RaftError {
    fn from(e: openraft::error::RaftError<u64, ClientWriteError<u64, BasicNode>>) -> Self {
        match e {
            openraft::error::RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => {
                RaftError::NotLeader {
                    leader_id: forward.leader_id,
                    leader_addr: forward.leader_node.map(|node| node.addr),
                }
            }
            openraft::error::RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                RaftError::Membership(e.to_string())
            }
            openraft::error::RaftError::Fatal(fatal) => fatal.into(),
        }
    }
}

impl From<openraft::error::RaftError<u64, InitializeError<u64, BasicNode>>> for RaftError {
    fn from(e: openraft::error::RaftError<u64, InitializeError<u64, BasicNode>>) -> Self {
        match e {
            openraft::error::RaftError::APIError(e) => {
                RaftError::Config(format!("cannot initialize the membership: {e}"))
            }
            openraft::error::RaftError::Fatal(fatal) => fatal.into(),
        }
    }
}

//! openraft glue for dcos-rs: the Raft type config, a log store (entries in a write-ahead log,
//! the vote in redb), a redb state machine with durable snapshots, the peer network seam, and
//! `ReplicatedState`, the master's handle on the replicated `dcos_core::ClusterState`.
//!
//! Architecture invariants:
//! - This is the only crate that links openraft; its types do not leak through the public API
//!   (`ReplicatedState`, `RaftOptions`, `RaftStatus`, `RaftError`).
//! - Nothing is acknowledged before it is durable: log entries are synced WAL records and the
//!   vote an fsync'd redb commit before openraft hears they are flushed, and snapshots are
//!   fsync'd before logs they cover are purged.
//! - The business rules are not here: applying a command is `ClusterState::apply` (crates/core).
//! - The peer network is a seam (`network::Transport`): this crate serializes RPCs, the master
//!   binary carries them over HTTPS with mutual TLS, tests carry them in process.

mod batch;
mod db;
mod error;
/// Entry points for `make fuzz` (fuzz/).
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod log_store;
pub mod network;
mod replicated;
mod space;
mod state_machine;
mod wal;

#[cfg(test)]
mod cluster_tests;
#[cfg(test)]
mod tests;

pub use error::RaftError;
pub use network::{ServeError, Transport, TransportError, TransportFuture};
pub use replicated::{
    MemberStatus, Proposed, RaftOptions, RaftStatus, ReplicatedState,
    DEFAULT_ELECTION_TIMEOUT_MAX_MS, DEFAULT_ELECTION_TIMEOUT_MIN_MS, DEFAULT_HEARTBEAT_MS,
    DEFAULT_MAX_IN_SNAPSHOT_LOG_TO_KEEP, DEFAULT_SNAPSHOT_LOGS_SINCE_LAST, WRITE_TIMEOUT_MS,
};
pub use space::DEFAULT_MIN_FREE_BYTES;
pub use state_machine::{AppliedCommand, APPLIED_COMMANDS_BUFFER};

openraft::declare_raft_types!(
    /// Raft types of dcos-rs: log entries carry `dcos_core::Command` (maybe a batch), applying
    /// one answers an `Outcome` per command, nodes are numbered `u64` with an address.
    pub TypeConfig:
        D = dcos_core::Command,
        R = Vec<dcos_core::Outcome>,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

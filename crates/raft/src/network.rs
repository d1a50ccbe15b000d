//! Raft's peer network, for now a placeholder: every peer is unreachable.
//!
//! Only single-master clusters exist today, and a cluster with one voter never sends a Raft
//! RPC, so openraft never calls these clients. Multi-master networking (Raft RPCs over HTTPS
//! between masters) will replace this module; nothing else in the crate depends on its insides.

use crate::TypeConfig;
use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory};

/// Why every RPC fails, carried inside openraft's `Unreachable` so its logs say it plainly.
#[derive(Debug, thiserror::Error)]
#[error("multi-master networking is not built yet: cannot reach master node {target} at {addr}")]
pub struct NotBuilt {
    target: u64,
    addr: String,
}

/// The `RaftNetworkFactory` handed to openraft.
#[derive(Debug, Clone, Default)]
pub struct Network;

/// A client for one peer; every call fails with `Unreachable`, which makes openraft back off.
#[derive(Debug, Clone)]
pub struct PeerClient {
    target: u64,
    addr: String,
}

impl PeerClient {
    fn unreachable<E: std::error::Error>(&self) -> RPCError<u64, BasicNode, E> {
        tracing::warn!(target_node = self.target, addr = %self.addr, "raft tried to reach a peer, but multi-master networking is not built yet");
        RPCError::Unreachable(Unreachable::new(&NotBuilt {
            target: self.target,
            addr: self.addr.clone(),
        }))
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Self::Network {
        PeerClient {
            target,
            addr: node.addr.clone(),
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(self.unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        Err(self.unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(self.unreachable())
    }
}

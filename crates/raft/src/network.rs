//! Raft's peer network: openraft's RPCs as JSON bodies POSTed to the other masters.
//!
//! The byte transport is a seam (`Transport`): the master binary provides HTTPS with mutual
//! TLS; tests provide an in-process transport. This module only turns RPCs into bodies and
//! answers back into openraft's error taxonomy (unreachable peer, network failure, or an error
//! the peer's Raft returned), and `serve_rpc` is the receiving half every master runs.

use crate::TypeConfig;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft, RaftNetwork, RaftNetworkFactory};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Path prefix of the three RPCs on a master's API port; `serve_rpc` takes the last segment.
pub const RPC_PATH_PREFIX: &str = "/internal/raft/";
pub const APPEND_ENTRIES: &str = "append";
pub const VOTE: &str = "vote";
pub const INSTALL_SNAPSHOT: &str = "snapshot";

/// Largest RPC body a master accepts or reads back. Bounds memory per RPC: appends carry at
/// most `MAX_PAYLOAD_ENTRIES` entries and snapshot chunks are `SNAPSHOT_CHUNK_BYTES` of data
/// (about 4x that as JSON numbers).
pub const RPC_BODY_MAX_BYTES: usize = 64 << 20;
/// Entries per AppendEntries RPC (openraft's `max_payload_entries`).
pub const MAX_PAYLOAD_ENTRIES: u64 = 16;
/// Snapshot bytes per InstallSnapshot chunk (openraft's `snapshot_max_chunk_size`).
pub const SNAPSHOT_CHUNK_BYTES: u64 = 1 << 20;

/// Why bytes did not come back from a peer.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// No answer at all (refused, no route, handshake failed, timed out): openraft backs off.
    #[error("peer unreachable: {0}")]
    Unreachable(String),
    /// The peer answered, but not with an RPC result (HTTP error, oversized or broken body).
    #[error("peer answered badly: {0}")]
    Failed(String),
}

pub type TransportFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<u8>, TransportError>> + Send + 'a>>;

/// Carries one RPC body to a peer and brings its answer back.
pub trait Transport: Send + Sync + 'static {
    /// POSTs `body` to the peer whose membership address is `addr` (the master's base URL)
    /// at path `RPC_PATH_PREFIX + rpc`, waiting at most `timeout`.
    fn post<'a>(
        &'a self,
        addr: &'a str,
        rpc: &'static str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> TransportFuture<'a>;
}

/// The transport of a cluster that has only one master: there is nobody to call.
#[derive(Debug, Default)]
pub struct NoPeers;

impl Transport for NoPeers {
    fn post<'a>(
        &'a self,
        addr: &'a str,
        _rpc: &'static str,
        _body: Vec<u8>,
        _timeout: Duration,
    ) -> TransportFuture<'a> {
        Box::pin(async move {
            Err(TransportError::Unreachable(format!(
                "this master runs without peer networking and cannot reach {addr}"
            )))
        })
    }
}

/// The `RaftNetworkFactory` handed to openraft.
#[derive(Clone)]
pub struct Network {
    transport: Arc<dyn Transport>,
}

impl Network {
    pub fn new(transport: Arc<dyn Transport>) -> Self {
        Self { transport }
    }
}

/// A client for one peer.
#[derive(Clone)]
pub struct PeerClient {
    target: u64,
    addr: String,
    transport: Arc<dyn Transport>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Self::Network {
        PeerClient {
            target,
            addr: node.addr.clone(),
            transport: Arc::clone(&self.transport),
        }
    }
}

impl PeerClient {
    async fn call<Req, Resp, E>(
        &self,
        rpc: &'static str,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<u64, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body =
            serde_json::to_vec(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let answer = self
            .transport
            .post(&self.addr, rpc, body, option.hard_ttl())
            .await
            .map_err(|e| match e {
                TransportError::Unreachable(_) => RPCError::Unreachable(Unreachable::new(&e)),
                TransportError::Failed(_) => RPCError::Network(NetworkError::new(&e)),
            })?;
        let result: Result<Resp, E> = serde_json::from_slice(&answer).map_err(|e| {
            RPCError::Network(NetworkError::new(&TransportError::Failed(format!(
                "master {} at {} sent an unreadable {rpc} answer: {e}",
                self.target, self.addr
            ))))
        })?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call(APPEND_ENTRIES, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        self.call(INSTALL_SNAPSHOT, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call(VOTE, &rpc, &option).await
    }
}

/// Why an incoming RPC was not handed to Raft (the HTTP layer answers 4xx).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("unknown raft rpc {0:?} (expected append, vote or snapshot)")]
    UnknownRpc(String),
    #[error("unreadable {rpc} request: {reason}")]
    BadRequest { rpc: &'static str, reason: String },
}

/// Hands one incoming RPC body to the local Raft node and returns the JSON answer body
/// (openraft's `Result`, so the caller's `RemoteError` carries the local error).
pub(crate) async fn serve_rpc(
    raft: &Raft<TypeConfig>,
    rpc: &str,
    body: &[u8],
) -> Result<Vec<u8>, ServeError> {
    fn parse<T: DeserializeOwned>(rpc: &'static str, body: &[u8]) -> Result<T, ServeError> {
        serde_json::from_slice(body).map_err(|e| ServeError::BadRequest {
            rpc,
            reason: e.to_string(),
        })
    }
    let encoded = match rpc {
        APPEND_ENTRIES => {
            let request = parse(APPEND_ENTRIES, body)?;
            serde_json::to_vec(&raft.append_entries(request).await)
        }
        VOTE => {
            let request = parse(VOTE, body)?;
            serde_json::to_vec(&raft.vote(request).await)
        }
        INSTALL_SNAPSHOT => {
            let request = parse(INSTALL_SNAPSHOT, body)?;
            serde_json::to_vec(&raft.install_snapshot(request).await)
        }
        other => return Err(ServeError::UnknownRpc(other.to_string())),
    };
    // Serializing openraft's own serde types into a Vec cannot fail.
    Ok(encoded.expect("raft rpc answers serialize to JSON"))
}

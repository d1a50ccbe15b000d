//! `dcos-rs master`: one master of a multi-master cluster, serving its API and Raft over
//! HTTPS with the cluster's certificates.
//!
//! `start` takes its listener from the caller (tests bind port 0) and returns a handle; the
//! same `Master` and router as `dcos-rs up` run behind TLS with bearer tokens required
//! (`[auth] tokens_file`), and Raft RPCs to the other masters
//! leave through `HttpsTransport` with this master's certificate (mutual TLS).

use super::config::MasterConfig;
use super::Master;
use crate::auth::ApiAuth;
use crate::link::LINK_QUEUE_MAX;
use crate::tls::{self, NodeClient, NodeClientError, TlsFiles};
use anyhow::Context;
use dcos_raft::network::RPC_PATH_PREFIX;
use dcos_raft::{ReplicatedState, Transport, TransportError, TransportFuture};
use hyper::{Method, StatusCode};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Raft RPCs to the other masters, as HTTPS POSTs with this master's client certificate.
pub struct HttpsTransport {
    client: NodeClient,
}

impl Transport for HttpsTransport {
    fn post<'a>(
        &'a self,
        addr: &'a str,
        rpc: &'static str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> TransportFuture<'a> {
        Box::pin(async move {
            let url = format!("{addr}{RPC_PATH_PREFIX}{rpc}");
            let body_len = body.len();
            let answer = self
                .client
                .request(
                    Method::POST,
                    &url,
                    body,
                    crate::http_util::json_headers(),
                    timeout,
                    dcos_raft::network::RPC_BODY_MAX_BYTES,
                )
                .await;
            match answer {
                Ok((StatusCode::OK, _, body)) => Ok(body.to_vec()),
                Ok((StatusCode::PAYLOAD_TOO_LARGE, _, _)) => Err(TransportError::Failed(format!(
                    "{url}: payload too large: the {} bytes of this RPC are more than the peer accepts (a master of another version?)",
                    body_len
                ))),
                Ok((status, _, body)) => Err(TransportError::Failed(format!(
                    "{url} answered {status}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(300)])
                ))),
                Err(e @ (NodeClientError::Unreachable(_) | NodeClientError::NoAnswer(_))) => {
                    Err(TransportError::Unreachable(e.to_string()))
                }
                Err(e) => Err(TransportError::Failed(e.to_string())),
            }
        })
    }
}

pub struct MasterProcess {
    pub url: String,
    pub master: Arc<Master>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Keeps the agents' inbox open while the master runs.
    _inbox: mpsc::Sender<crate::link::ToMaster>,
}

pub async fn start(
    config: MasterConfig,
    listener: TcpListener,
    announce: bool,
) -> anyhow::Result<MasterProcess> {
    let files = TlsFiles {
        ca: config.tls.ca.clone(),
        cert: config.tls.cert.clone(),
        key: config.tls.key.clone(),
    };
    let server_config = tls::server_config(&files).context("loading the master's TLS files")?;
    let client_config = tls::client_config(&files).context("loading the master's TLS files")?;
    let tokens = config.auth.load_tokens().map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let transport = Arc::new(HttpsTransport {
        client: NodeClient::new(client_config.clone()),
    });
    let raft = ReplicatedState::open(config.raft_options(), transport)
        .await
        .context("starting the replicated state (Raft)")?;
    let url = config.advertise_url().to_string();
    let status = raft.status();
    if announce {
        let membership = if status.members.is_empty() {
            "not a member yet: add it with `dcos-rs node add --role master` on the cluster"
                .to_string()
        } else {
            format!("{} master(s) in the membership", status.members.len())
        };
        println!(
            "master {}: ready at {url} (term {}, log index {}; {membership})",
            config.node_id, status.term, status.last_log_index
        );
    }
    let builtin = crate::frameworks::builtin();
    let master = Master::new(
        raft,
        url.clone(),
        builtin.frameworks,
        Some(Duration::from_millis(config.agents.unreachable_timeout_ms)),
    );
    // Agents take a master's certificate on their APIs: the dashboard's task logs, usage
    // and files go through it.
    master.reach_agents_with(NodeClient::new(
        tls::master_to_agent_client_config(&files).context("loading the master's TLS files")?,
    ));
    master.proxy_writes_with(NodeClient::new(client_config));
    let (inbox, from_agents) = mpsc::channel(LINK_QUEUE_MAX);
    let auth = ApiAuth::tokens(Arc::new(tokens));
    let router = super::http::router(
        master.clone(),
        Some(auth.clone()),
        crate::http_guard::RequestGuard::new(),
        builtin.routes,
    )
    .merge(super::agents::router(master.clone(), inbox.clone()));
    // Bound before anything starts, so a taken port stops the start with its key named.
    let plain_listener = match config.mesos.scheduler_http_listen {
        Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| {
            format!(
                "binding {addr} for Mesos frameworks over plain HTTP (mesos.scheduler_http_listen)"
            )
        })?),
        None => None,
    };
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = super::start(
        master.clone(),
        from_agents,
        listener,
        Some(server_config),
        router,
        shutdown_rx.clone(),
    );
    if let Some(plain_listener) = plain_listener {
        let addr = plain_listener.local_addr()?;
        let router = super::http::scheduler_router(
            master.clone(),
            auth,
            crate::http_guard::RequestGuard::new(),
            builtin.scheduler_routes,
            addr.port(),
        );
        if announce {
            println!(
                "master {}: Mesos scheduler API also on http://{addr}/api/v1/scheduler (plain HTTP: frameworks' tokens travel unencrypted)",
                config.node_id
            );
        }
        tasks.push(tokio::spawn(tls::serve(
            plain_listener,
            None,
            router,
            shutdown_rx,
        )));
    }
    Ok(MasterProcess {
        url,
        master,
        shutdown,
        tasks,
        _inbox: inbox,
    })
}

impl MasterProcess {
    /// Stops serving and stops Raft (the data dir can be opened again at once).
    pub async fn stop(self) -> anyhow::Result<()> {
        self.master.stop_scheduling();
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        self.master.raft.shutdown().await.context("stopping Raft")
    }
}

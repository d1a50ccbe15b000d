//! The leader's side of remote agents: HTTPS endpoints (mutual TLS, agent certificates) that
//! turn the agent protocol into the same `ToMaster`/`ToAgent` messages the in-process agent of
//! `dcos-rs up` uses.
//!
//! - `connect`: the agent registers with what it runs and gets a long-lived response that
//!   streams commands as JSON lines (plus a ping every `PING_INTERVAL_MS`).
//! - `status`: one task status, answered only after it is committed (the agent retries
//!   until then, in order).
//! - `heartbeat`: liveness, leader memory only (no Raft write).
//! - `images`: what the agent's image store holds now, answered after it is committed.
//!
//! A follower answers every call with 307 to the leader; a master that loses leadership
//! drops its links, which ends the streams, and the agents reconnect to the new leader.

use super::http::not_leader_response;
use super::Master;
use crate::http_util::{api_error, read_body};
use crate::link::{
    ConnectRequest, HeartbeatRequest, ImagesRequest, StatusRequest, StreamMessage, ToAgent,
    ToMaster, AGENT_CONNECT_PATH, AGENT_HEARTBEAT_PATH, AGENT_IMAGES_PATH, AGENT_PROTOCOL_VERSION,
    AGENT_STATUS_PATH, LINK_QUEUE_MAX, PING_INTERVAL_MS, PROTOCOL_HEADER,
};
use crate::tls::{Peer, Role};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use dcos_api::ApiError;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How long a status or image call waits for its commit before the agent is told to retry.
const STATUS_COMMIT_WAIT_MS: u64 = 15_000;
/// Largest body of an agent call (a connect lists every task the agent runs).
const AGENT_BODY_MAX_BYTES: usize = 16 << 20;

pub struct Gateway {
    master: Arc<Master>,
    inbox: mpsc::Sender<ToMaster>,
}

pub fn router(master: Arc<Master>, inbox: mpsc::Sender<ToMaster>) -> Router {
    let gateway = Arc::new(Gateway { master, inbox });
    Router::new()
        .route(AGENT_CONNECT_PATH, post(connect))
        .route(AGENT_STATUS_PATH, post(status))
        .route(AGENT_HEARTBEAT_PATH, post(heartbeat))
        .route(AGENT_IMAGES_PATH, post(images))
        .with_state(gateway)
}

/// Agents only, and only the leader: the common gate of every agent call.
async fn gate<T: serde::de::DeserializeOwned>(
    gateway: &Gateway,
    request: Request,
) -> Result<(T, Peer), Box<Response>> {
    let peer = Peer(crate::tls::peer_of(request.extensions()).cloned());
    match &peer.0 {
        Some(identity) if identity.role == Role::Agent => {}
        _ => {
            return Err(Box::new(api_error(ApiError::new(
                403,
                "forbidden",
                "agent calls are accepted only from agents presenting a cluster certificate with the agent role",
            ))))
        }
    }
    let Some(serial) = crate::tls::peer_certificate(request.extensions()).map(|c| c.serial.clone())
    else {
        // Fail closed: without its serial the revocation list cannot be consulted.
        return Err(Box::new(api_error(ApiError::new(
            403,
            "forbidden",
            "the agent's certificate could not be read (no serial number)",
        ))));
    };
    {
        let serial = &serial;
        if gateway
            .master
            .read(|s| s.revoked_certificates.contains(serial))
        {
            return Err(Box::new(api_error(ApiError::new(
                403,
                "certificate_revoked",
                format!("this certificate (serial {serial}) was revoked when its agent was removed from the cluster (dcos-rs node remove): to join again as a new agent, issue it a new certificate (dcos-rs cluster issue-cert) and delete the agent_id file in its work_dir"),
            ))));
        }
    }
    let path = request.uri().path().to_string();
    if !gateway.master.raft.is_leader() {
        return Err(Box::new(not_leader_response(&gateway.master, &path)));
    }
    // Read only now: who may not call this never gets its body read.
    let body = read_body(request.into_body(), AGENT_BODY_MAX_BYTES)
        .await
        .map_err(|e| Box::new(api_error(e)))?;
    let value = serde_json::from_slice(&body).map_err(|e| {
        Box::new(api_error(ApiError::bad_request(format!(
            "malformed {path}: {e}"
        ))))
    })?;
    Ok((value, peer))
}

async fn connect(State(gateway): State<Arc<Gateway>>, request: Request) -> Response {
    let certificate = crate::tls::peer_certificate(request.extensions()).cloned();
    let (request, peer): (ConnectRequest, Peer) = match gate(&gateway, request).await {
        Ok(gated) => gated,
        Err(response) => return *response,
    };
    if request.protocol != AGENT_PROTOCOL_VERSION {
        return api_error(ApiError::new(
            409,
            "protocol_mismatch",
            format!(
                "this master speaks agent protocol {AGENT_PROTOCOL_VERSION}, the agent {}: run the same dcos-rs version on masters and agents (upgrade the masters first, then the agents); the agent's tasks keep running meanwhile",
                request.protocol
            ),
        ));
    }
    let mut agent = request.agent;
    // The certificate names the agent (`gate` checked its role): an id stays with it.
    agent.certificate = peer.0.as_ref().map(|identity| identity.name.clone());
    agent.certificate_serial = certificate.as_ref().map(|c| c.serial.clone());
    let agent_id = agent.id.clone();
    // Its URL is where the masters and the CLI (with tokens) will go: only its own.
    if let Err(reason) = check_agent_url(&agent.url, certificate.as_ref()) {
        return api_error(ApiError::new(403, "forbidden", reason));
    }
    let other = gateway.master.read(|s| {
        s.agents
            .values()
            .find(|a| {
                a.id != agent_id && a.certificate.is_some() && a.certificate == agent.certificate
            })
            .map(|a| a.id.clone())
    });
    if let Some(other) = other {
        return api_error(ApiError::new(
            403,
            "forbidden",
            format!(
                "certificate {:?} already belongs to agent {other}: one certificate registers one agent; remove that agent first (dcos-rs node remove {other}) or give this one a certificate of its own",
                agent.certificate.as_deref().unwrap_or_default()
            ),
        ));
    }
    if gateway
        .master
        .read(|s| s.removed_agents.contains(&agent_id))
    {
        return api_error(ApiError::new(
            403,
            "agent_removed",
            format!("agent {agent_id} was removed from the cluster (dcos-rs node remove); delete the agent_id file in its work_dir to join as a new agent"),
        ));
    }
    if let Err(response) = check_owner(&gateway, &peer, &agent_id) {
        return *response;
    }
    let (link, commands) = mpsc::channel(LINK_QUEUE_MAX);
    let registered = gateway
        .inbox
        .send(ToMaster::Register {
            agent,
            tasks: request.tasks,
            link,
        })
        .await;
    if registered.is_err() {
        return api_error(ApiError::unavailable("this master is stopping"));
    }
    tracing::info!(agent = %agent_id, "agent connected; streaming commands");
    let stream = futures_util::stream::unfold(
        (
            commands,
            tokio::time::interval(Duration::from_millis(PING_INTERVAL_MS)),
        ),
        |(mut commands, mut ping)| async move {
            let message = tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => encode(command),
                    // The master dropped the link (lost leadership, agent marked unreachable).
                    None => return None,
                },
                _ = ping.tick() => StreamMessage::Ping,
            };
            let mut line = serde_json::to_vec(&message).expect("stream messages serialize");
            line.push(b'\n');
            Some((
                Ok::<_, std::convert::Infallible>(Bytes::from(line)),
                (commands, ping),
            ))
        },
    );
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/x-ndjson".to_string()),
            (
                header::HeaderName::from_static(PROTOCOL_HEADER),
                AGENT_PROTOCOL_VERSION.to_string(),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// A command as a stream line.
fn encode(command: ToAgent) -> StreamMessage {
    match command {
        ToAgent::Launch(task) => StreamMessage::Launch { task },
        ToAgent::Kill { task_id, grace_ms } => StreamMessage::Kill { task_id, grace_ms },
    }
}

/// The URL an agent registers: https, with its host among the names of the agent's
/// certificate (so no agent can point the cluster, and the CLI's token, elsewhere).
fn check_agent_url(
    url: &str,
    certificate: Option<&crate::tls::PeerCertificate>,
) -> Result<(), String> {
    if !url.starts_with("https://") {
        return Err(format!(
            "agent URL {url:?} is not https: agents serve their API over TLS (advertise_url)"
        ));
    }
    let Some(host) = crate::node_config::url_host(url) else {
        return Err(format!(
            "agent URL {url:?} names no host, or holds user information (`user@`): give the agent's own address"
        ));
    };
    let Some(certificate) = certificate else {
        return Err("the agent presented no certificate".to_string());
    };
    if !certificate.names_host(host) {
        return Err(format!(
            "agent URL {url:?}: host {host:?} is not among the names of the agent's certificate (its --san values): an agent may only register its own address"
        ));
    }
    Ok(())
}

/// An agent id registered with a certificate is spoken for by that certificate only.
fn check_owner(gateway: &Gateway, peer: &Peer, agent_id: &str) -> Result<(), Box<Response>> {
    let presented = peer.0.as_ref().map(|identity| identity.name.as_str());
    let registered = gateway
        .master
        .read(|s| s.agents.get(agent_id).and_then(|a| a.certificate.clone()));
    match registered {
        Some(registered) if Some(registered.as_str()) != presented => {
            Err(Box::new(api_error(ApiError::new(
                403,
                "forbidden",
                format!("agent {agent_id} belongs to the certificate of {registered:?}; {presented:?} may not speak for it"),
            ))))
        }
        _ => Ok(()),
    }
}

async fn status(State(gateway): State<Arc<Gateway>>, request: Request) -> Response {
    let (request, peer): (StatusRequest, Peer) = match gate(&gateway, request).await {
        Ok(gated) => gated,
        Err(response) => return *response,
    };
    if let Err(response) = check_owner(&gateway, &peer, &request.agent_id) {
        return *response;
    }
    let task_agent = gateway.master.read(|s| {
        s.tasks
            .get(&request.report.task_id)
            .map(|t| t.agent_id.clone())
    });
    if task_agent.is_some_and(|owner| owner != request.agent_id) {
        // 409, not 403: sending it again cannot help, and the agent's outbox drops it.
        return api_error(ApiError::new(
            409,
            "not_this_agents_task",
            format!(
                "task {} does not run on agent {}",
                request.report.task_id, request.agent_id
            ),
        ));
    }
    gateway.master.heartbeat(&request.agent_id);
    let report = request.report;
    until_committed(&gateway, "the status", |ack| ToMaster::StatusAcked {
        report,
        ack,
    })
    .await
}

/// Hands `message` (made with its ack) to the master and answers 200 once it is committed,
/// or 503 asking the agent to send it again.
async fn until_committed(
    gateway: &Gateway,
    what: &str,
    message: impl FnOnce(oneshot::Sender<bool>) -> ToMaster,
) -> Response {
    let (ack, committed) = oneshot::channel();
    if gateway.inbox.send(message(ack)).await.is_err() {
        return api_error(ApiError::unavailable("this master is stopping"));
    }
    match tokio::time::timeout(Duration::from_millis(STATUS_COMMIT_WAIT_MS), committed).await {
        Ok(Ok(true)) => (StatusCode::OK, "{}").into_response(),
        _ => api_error(ApiError::unavailable(format!(
            "{what} was not committed (yet); send it again"
        ))),
    }
}

async fn heartbeat(State(gateway): State<Arc<Gateway>>, request: Request) -> Response {
    let (request, peer): (HeartbeatRequest, Peer) = match gate(&gateway, request).await {
        Ok(gated) => gated,
        Err(response) => return *response,
    };
    if let Err(response) = check_owner(&gateway, &peer, &request.agent_id) {
        return *response;
    }
    if gateway.master.heartbeat(&request.agent_id) {
        (StatusCode::OK, "{}").into_response()
    } else {
        api_error(ApiError::new(
            409,
            "not_connected",
            "this leader has no stream to the agent; connect again",
        ))
    }
}

/// What the agent's image store holds now; answered once it is committed (or refused).
async fn images(State(gateway): State<Arc<Gateway>>, request: Request) -> Response {
    let (request, peer): (ImagesRequest, Peer) = match gate(&gateway, request).await {
        Ok(gated) => gated,
        Err(response) => return *response,
    };
    if let Err(response) = check_owner(&gateway, &peer, &request.agent_id) {
        return *response;
    }
    let (agent_id, images) = (request.agent_id, request.images);
    until_committed(&gateway, "the image list", |ack| ToMaster::Images {
        agent_id,
        images,
        ack,
    })
    .await
}

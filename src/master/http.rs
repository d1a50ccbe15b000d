//! The master's HTTP API: this system's `/cluster/v1` (nodes, masters, drain and removal of
//! agents; a task's logs, usage and files from its agent, `task_detail`; the cluster's
//! usage over the last hour, `usage`), Prometheus `/metrics`, health endpoints, the
//! embedded dashboard at `/`, the Raft RPCs between masters, and the routes of the built-in
//! frameworks (`crate::frameworks`, merged in by the caller).
//!
//! Handlers validate input and turn it into `Command`s; every refusal is a JSON `ApiError`
//! naming the field and the reason. Nothing here changes state except through Raft. Bearer
//! tokens are checked by `crate::auth` before any handler or redirect.

use super::Master;
use crate::auth::{require_token, ApiAuth};
use crate::http_guard::{guard_requests, RequestGuard};
use crate::http_util::{api_error, json_ok, read_body};
use crate::link::{now_ms, LEADER_HEADER};
use crate::tls::NodeClientError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use dcos_api::routes::{cluster, internal, marathon};
use dcos_api::{agent_view, ApiError, MasterView, NodesView, TasksEnvelope};
use dcos_core::{Command, FieldError, Outcome, Reject};
use dcos_raft::RaftError;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest request body the API accepts (app definitions are small).
pub const API_BODY_MAX_BYTES: usize = 1 << 20;

/// The API's description, as kept in the repository (tested against the server by
/// schemathesis in `tests/it/clients.rs`).
const OPENAPI_JSON: &str = include_str!("../../docs/openapi.json");

/// The master's router, with the built-in frameworks' `framework_routes`, every request
/// first through `guard` (Host, Origin, Content-Type). With `auth`, every route but `/`,
/// `/health` and `/ready` needs a
/// bearer token, checked before the follower redirect (a follower names its leader only to
/// callers it has authenticated). `/internal/raft/*` never takes tokens: it is for master
/// certificates only.
pub fn router(
    master: Arc<Master>,
    auth: Option<ApiAuth>,
    guard: RequestGuard,
    framework_routes: Router<Arc<Master>>,
) -> Router {
    // Raft between masters: bigger bodies, never redirected, masters' certificates only.
    let internal = Router::new()
        .route(internal::RAFT, post(raft_rpc))
        .route(internal::MASTER_BUILD, post(master_build))
        .layer(DefaultBodyLimit::max(
            dcos_raft::network::RPC_BODY_MAX_BYTES,
        ))
        .with_state(master.clone());
    // Open to anyone: load balancers probe these, and the page holds no data (it asks for a
    // token when the API answers 401).
    let open = Router::new()
        .route(cluster::DASHBOARD, get(crate::dashboard::index))
        .route(
            &format!("{}/{{*path}}", crate::dashboard::ASSETS_PREFIX),
            get(crate::dashboard::asset),
        )
        .route(
            cluster::OPENAPI,
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON) }),
        )
        .route(cluster::HEALTH, get(|| async { "ok" }))
        // Marathon's liveness probe, open like Marathon's (load balancers and its clients).
        .route(marathon::PING, get(pong))
        .route(
            &format!("{}{}", marathon::DCOS_PREFIX, marathon::PING),
            get(pong),
        )
        .route(
            &format!("{}{}", marathon::DCOS_SERVICE_PREFIX, marathon::PING),
            get(pong),
        )
        // Metronome's, under DC/OS's prefix of it.
        .route("/service/metronome/ping", get(pong))
        .route(cluster::READY, get(ready))
        // Mesos's, open as Mesos's (pymesos reads it without credentials).
        .route(
            crate::frameworks::mesos::http::VERSION,
            get(crate::frameworks::mesos::http::version),
        )
        .with_state(master.clone());
    let mut api = Router::new()
        .route(cluster::METRICS, get(metrics))
        .merge(framework_routes)
        .route(cluster::NODES, get(nodes))
        .route(cluster::TASKS, get(tasks))
        .route(cluster::TASK_LOG, get(super::task_detail::task_log))
        .route(cluster::TASK_USAGE, get(super::task_detail::task_usage))
        .route(cluster::TASK_FILES, get(super::task_detail::task_files))
        .route(
            cluster::TASK_FILE_READ,
            get(super::task_detail::task_file_read),
        )
        .route(cluster::USAGE, get(super::usage::usage))
        .route(cluster::MASTERS, get(masters).post(add_master))
        .route(cluster::LEADERSHIP, post(take_leadership))
        .route(cluster::BACKUP, get(backup))
        .route(cluster::REVOKED, post(revoke_certificate))
        .route(cluster::RESTORE, post(restore))
        .route(cluster::MASTER, delete(remove_master))
        .route(cluster::AGENT_DRAIN, post(drain_agent))
        .route(cluster::AGENT, delete(remove_agent))
        .route(cluster::MESOS_DNS_HOSTS, get(mesos_dns_hosts))
        .fallback(|| async { api_error(ApiError::not_found("no such endpoint")) })
        .layer(middleware::from_fn_with_state(
            master.clone(),
            writes_to_leader,
        ));
    // Added after `writes_to_leader`, so it runs before it.
    if let Some(auth) = auth {
        api = api.layer(middleware::from_fn_with_state(auth, require_token));
    }
    let api = api.layer(DefaultBodyLimit::max(API_BODY_MAX_BYTES));
    internal
        .merge(open)
        .merge(api)
        .layer(middleware::from_fn_with_state(guard, guard_requests))
        .layer(middleware::from_fn(crate::http_util::json_errors))
        .layer(middleware::from_fn_with_state(master.clone(), observe))
        .with_state(master)
}

/// The router of a master's plain-HTTP listener for Mesos frameworks without TLS
/// (`[mesos] scheduler_http_listen`): `scheduler_routes` (`POST /api/v1/scheduler`, with a
/// token as on the TLS API) and the open `GET /version`, nothing else. A follower redirects
/// schedulers to the leader's host at this listener's `port` (the same on every master).
pub fn scheduler_router(
    master: Arc<Master>,
    auth: ApiAuth,
    guard: RequestGuard,
    scheduler_routes: Router<Arc<Master>>,
    port: u16,
) -> Router {
    let open = Router::new().route(
        crate::frameworks::mesos::http::VERSION,
        get(crate::frameworks::mesos::http::version),
    );
    let api = scheduler_routes
        .layer(middleware::from_fn_with_state(
            (master.clone(), port),
            schedulers_to_leader,
        ))
        .layer(middleware::from_fn_with_state(auth, require_token))
        .layer(DefaultBodyLimit::max(API_BODY_MAX_BYTES));
    open.merge(api)
        .fallback(|| async {
            api_error(ApiError::not_found(
                "this plain-HTTP listener serves only Mesos's scheduler API (POST /api/v1/scheduler) and GET /version; everything else is on the master's TLS API",
            ))
        })
        .layer(middleware::from_fn_with_state(guard, guard_requests))
        .layer(middleware::from_fn(crate::http_util::json_errors))
        .layer(middleware::from_fn_with_state(master.clone(), observe))
        .with_state(master)
}

/// On the plain-HTTP scheduler listener of a follower: 307 to the same listener on the
/// leader's host (Mesos's followers redirect schedulers; pymesos follows the `Location`'s
/// host and port), or 503 while no leader is known (pymesos retries).
async fn schedulers_to_leader(
    State((master, port)): State<(Arc<Master>, u16)>,
    request: Request,
    next: Next,
) -> Response {
    if master.raft.is_leader() {
        return next.run(request).await;
    }
    let own_id = master.raft.status().node_id;
    let leader_host = master
        .raft
        .leader()
        .filter(|(id, _)| *id != own_id)
        .and_then(|(_, url)| url.parse::<axum::http::Uri>().ok())
        .and_then(|uri| uri.host().map(str::to_string));
    let path = crate::frameworks::mesos::http::SCHEDULER;
    match leader_host {
        Some(host) => {
            let location = format!("http://{host}:{port}{path}");
            let error = ApiError::new(
                307,
                "not_leader",
                format!("this master is not the leader; subscribe at {location}"),
            );
            (
                StatusCode::TEMPORARY_REDIRECT,
                [(header::LOCATION, location)],
                Json(error),
            )
                .into_response()
        }
        None => not_leader_response(&master, path),
    }
}

/// Marks a write a follower passed on to the leader (its value: the follower's URL): one
/// that reaches a master that is not the leader any more is answered with the redirect,
/// never passed on again.
pub const PROXIED_HEADER: &str = "x-dcos-proxied-by";
/// Longest a follower waits for the leader's answer to a write it passed on (a write may
/// wait for its commit up to `dcos_raft::WRITE_TIMEOUT_MS`).
pub const LEADER_PROXY_TIMEOUT_MS: u64 = 30_000;
/// Largest answer of the leader a follower passes back.
pub const LEADER_PROXY_ANSWER_MAX_BYTES: usize = 16 << 20;

/// Writes go to the leader. A follower of a cluster over mutual TLS passes them on to the
/// leader and answers with what it answered, as Marathon's followers proxy: HTTP clients
/// drop the `Authorization` header on a redirect to another host, so a redirect would lose
/// the caller's token. Otherwise (or for a write passed on already) a follower answers 307
/// to the same path on the leader (`Location` and `X-Dcos-Leader`), or 503 while no leader
/// is known. Reads are served here.
async fn writes_to_leader(
    State(master): State<Arc<Master>>,
    request: Request,
    next: Next,
) -> Response {
    let read_only = matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    if read_only || master.raft.is_leader() {
        return next.run(request).await;
    }
    // Asks this very master to stand for election: nothing to pass on.
    if request.uri().path() == cluster::LEADERSHIP {
        return next.run(request).await;
    }
    // A framework's subscription is a stream that cannot be passed on: Mesos's followers
    // redirect schedulers to the leader.
    if request.uri().path() == crate::frameworks::mesos::http::SCHEDULER {
        return not_leader_response(&master, crate::frameworks::mesos::http::SCHEDULER);
    }
    // The operator API's SUBSCRIBE is a stream this master serves from its own copy of the
    // state (a stream cannot be passed on); the operator API's other calls are passed on.
    let request = if request.uri().path() == crate::frameworks::mesos::operator::OPERATOR {
        let (parts, body) = request.into_parts();
        let body = match buffered(body).await {
            Ok(body) => body,
            Err(refused) => return refused,
        };
        let subscribe = serde_json::from_slice::<serde_json::Value>(&body)
            .is_ok_and(|call| call["type"] == "SUBSCRIBE");
        let request = Request::from_parts(parts, axum::body::Body::from(body));
        if subscribe {
            return next.run(request).await;
        }
        request
    } else {
        request
    };
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    match master.leader_client() {
        Some(client) if !request.headers().contains_key(PROXIED_HEADER) => {
            pass_to_leader(&master, client, request, &path).await
        }
        _ => not_leader_response(&master, &path),
    }
}

/// A request's whole body (at most `API_BODY_MAX_BYTES`; 413 beyond).
async fn buffered(body: axum::body::Body) -> Result<Bytes, Response> {
    axum::body::to_bytes(body, API_BODY_MAX_BYTES)
        .await
        .map_err(|e| {
            api_error(ApiError::new(
                413,
                "too_large",
                format!("reading the request body: {e} (at most {API_BODY_MAX_BYTES} bytes)"),
            ))
        })
}

/// Sends `request` (a write, its caller authenticated here) to the leader with the
/// caller's own credentials and content headers, and answers with the leader's answer.
async fn pass_to_leader(
    master: &Master,
    client: &crate::tls::NodeClient,
    request: Request,
    path: &str,
) -> Response {
    let own_id = master.raft.status().node_id;
    let Some((_, leader_url)) = master.raft.leader().filter(|(id, _)| *id != own_id) else {
        return not_leader_response(master, path);
    };
    let (parts, body) = request.into_parts();
    let body = match buffered(body).await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    let mut headers = axum::http::HeaderMap::new();
    for name in [header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT] {
        for value in parts.headers.get_all(&name) {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Ok(from) = axum::http::HeaderValue::from_str(&master.url) {
        headers.insert(header::HeaderName::from_static(PROXIED_HEADER), from);
    }
    let answer = client
        .request(
            parts.method,
            &format!("{leader_url}{path}"),
            body.to_vec(),
            headers,
            Duration::from_millis(LEADER_PROXY_TIMEOUT_MS),
            LEADER_PROXY_ANSWER_MAX_BYTES,
        )
        .await;
    match answer {
        Ok((status, answer_headers, bytes)) => {
            let mut response = Response::new(axum::body::Body::from(bytes));
            *response.status_mut() = status;
            let kept = [
                header::CONTENT_TYPE,
                header::LOCATION,
                header::WWW_AUTHENTICATE,
                header::WARNING,
                header::HeaderName::from_static("marathon-deployment-id"),
                header::HeaderName::from_static(LEADER_HEADER),
            ];
            for name in kept {
                for value in answer_headers.get_all(&name) {
                    response.headers_mut().append(name.clone(), value.clone());
                }
            }
            response
        }
        // Sent, but no answer: the leader may have applied it, so a blind retry could do
        // it twice (Marathon's proxy answers a gateway timeout too).
        Err(e @ NodeClientError::NoAnswer(_)) => api_error(ApiError::new(
            504,
            "leader_no_answer",
            format!("this master passed the write on to the leader at {leader_url} but got no answer ({e}): it may have been applied; read the state before retrying"),
        )),
        Err(e @ (NodeClientError::Protocol(_) | NodeClientError::TooLarge(_))) => {
            api_error(ApiError::new(
                502,
                "leader_bad_answer",
                format!("the leader at {leader_url} answered the write, but its answer cannot be passed on ({e}): it may have been applied; read the state before retrying"),
            ))
        }
        Err(e @ (NodeClientError::Unreachable(_) | NodeClientError::InvalidRequest(_))) => {
            api_error(ApiError::new(
                503,
                "leader_unreachable",
                format!("this master is not the leader and could not pass the write on to the leader at {leader_url} ({e}); nothing was applied, retry shortly"),
            ))
        }
    }
}

/// 307 to the leader (if known) for `path`, else 503.
pub(crate) fn not_leader_response(master: &Master, path: &str) -> Response {
    match master.raft.leader() {
        Some((leader_id, leader_url)) if leader_id != master.raft.status().node_id => {
            let location = format!("{leader_url}{path}");
            let error = ApiError::new(
                307,
                "not_leader",
                format!("this master is not the leader; send writes to master {leader_id} at {leader_url}"),
            )
            .with_details(serde_json::json!({ "leader": leader_url, "leaderId": leader_id }));
            (
                StatusCode::TEMPORARY_REDIRECT,
                [
                    (header::LOCATION, location),
                    (header::HeaderName::from_static(LEADER_HEADER), leader_url),
                ],
                Json(error),
            )
                .into_response()
        }
        _ => api_error(
            ApiError::new(503, "no_leader", "no master leads right now (an election is under way or a majority of masters is unreachable); retry shortly"),
        ),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Revoke {
    serial: String,
}

/// `POST /cluster/v1/certificates/revoked`: every master refuses the certificate from now on
/// (Raft between masters, agents' calls). `dcos-rs node remove --master --config` sends a
/// removed master's.
async fn revoke_certificate(State(master): State<Arc<Master>>, body: Bytes) -> Response {
    let revoke: Revoke = match serde_json::from_slice(&body) {
        Ok(revoke) => revoke,
        Err(e) => {
            return api_error(ApiError::invalid(
                "revocation",
                &[FieldError::new(
                    "serial",
                    format!("give {{\"serial\": \"<hex>\"}}: {e}"),
                )],
            ))
        }
    };
    let serial = revoke.serial.trim().to_ascii_lowercase();
    if serial.is_empty() || serial.len() > 64 || !serial.chars().all(|c| c.is_ascii_hexdigit()) {
        return api_error(ApiError::invalid(
            "revocation",
            &[FieldError::new(
                "serial",
                "1 to 64 hex digits, as `openssl x509 -serial` prints them",
            )],
        ));
    }
    match master
        .write(Command::RevokeCertificate {
            serial: serial.clone(),
        })
        .await
    {
        Ok(Outcome::Applied) => {
            tracing::info!(%serial, "certificate revoked");
            json_ok(&serde_json::json!({ "revoked": serial }))
        }
        Ok(Outcome::Rejected(reject)) => api_error(reject_error(reject)),
        Err(e) => api_error(raft_error(e)),
    }
}

/// A peer master's certificate is not revoked (a removed master's is).
fn revoked_master(master: &Master, extensions: &axum::http::Extensions) -> Option<Response> {
    let serial = crate::tls::peer_certificate(extensions).map(|c| c.serial.clone());
    match serial {
        Some(serial) if !master.read(|s| s.revoked_certificates.contains(&serial)) => None,
        Some(serial) => Some(api_error(ApiError::new(
            403,
            "certificate_revoked",
            format!("this master certificate (serial {serial}) was revoked when its master was removed (dcos-rs node remove --master): a master that joins again needs a new certificate"),
        ))),
        None => Some(api_error(ApiError::new(403, "forbidden", "the master's certificate could not be read (no serial number)"))),
    }
}

/// A master reports its build to the leader (masters' certificates only).
async fn master_build(
    State(master): State<Arc<Master>>,
    crate::tls::Peer(peer): crate::tls::Peer,
    request: Request,
) -> Response {
    if let Some(refused) = revoked_master(&master, request.extensions()) {
        return refused;
    }
    let body = match read_body(request.into_body(), 64 << 10).await {
        Ok(body) => body,
        Err(error) => return api_error(error),
    };
    if peer.is_none_or(|p| p.role != crate::tls::Role::Master) {
        return api_error(ApiError::new(
            403,
            "forbidden",
            "only masters report their build, with a cluster certificate of the master role",
        ));
    }
    let report: crate::master::BuildReport = match serde_json::from_slice(&body) {
        Ok(report) => report,
        Err(e) => return api_error(ApiError::bad_request(format!("not a build report: {e}"))),
    };
    if !master.raft.is_leader() {
        return api_error(ApiError::new(
            503,
            "not_leader",
            "this master does not lead: report to the leader",
        ));
    }
    let id = report.master_id;
    master.take_build_report(report);
    json_ok(&serde_json::json!({ "reported": id }))
}

async fn raft_rpc(
    State(master): State<Arc<Master>>,
    Path(rpc): Path<String>,
    crate::tls::Peer(peer): crate::tls::Peer,
    request: Request,
) -> Response {
    // The extractors above read no body: it is read only for a master's certificate.
    match peer {
        Some(peer) if peer.role == crate::tls::Role::Master => {
            if let Some(refused) = revoked_master(&master, request.extensions()) {
                return refused;
            }
        }
        _ => {
            return api_error(ApiError::new(
                403,
                "forbidden",
                "raft RPCs are accepted only from masters presenting a cluster certificate with the master role",
            ))
        }
    }
    let body = match read_body(request.into_body(), dcos_raft::network::RPC_BODY_MAX_BYTES).await {
        Ok(body) => body,
        Err(error) => return api_error(error),
    };
    match master.raft.serve_rpc(&rpc, &body).await {
        Ok(answer) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            answer,
        )
            .into_response(),
        Err(e) => api_error(ApiError::bad_request(e.to_string())),
    }
}

async fn masters(State(master): State<Arc<Master>>) -> Json<dcos_raft::RaftStatus> {
    Json(master.raft.status())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AddMaster {
    id: u64,
    url: String,
}

/// Adds a master: as a learner first, promoted to voter once it has caught up.
async fn add_master(
    State(master): State<Arc<Master>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let value = match parse_json(body) {
        Ok(value) => value,
        Err(error) => return api_error(error),
    };
    let add: AddMaster = match serde_path_to_error::deserialize(value) {
        Ok(add) => add,
        Err(e) => {
            return api_error(ApiError::invalid(
                "master",
                &[FieldError::new(e.path().to_string(), e.inner().to_string())],
            ))
        }
    };
    if add.id == 0 {
        return api_error(ApiError::invalid(
            "master",
            &[FieldError::new("id", "must be at least 1")],
        ));
    }
    if let Err(message) = crate::node_config::check_url("url", &add.url) {
        let reason = message.trim_start_matches("url: ").to_string();
        return api_error(ApiError::invalid(
            "master",
            &[FieldError::new("url", reason)],
        ));
    }
    let url = add.url.trim_end_matches('/');
    if let Err(e) = master.raft.add_learner(add.id, url).await {
        return api_error(membership_error(e));
    }
    if let Err(e) = master.raft.promote(add.id).await {
        return api_error(membership_error(e));
    }
    tracing::info!(node_id = add.id, url, "master added and promoted to voter");
    json_ok(&master.raft.status())
}

/// The format of `GET /cluster/v1/backup`'s answer (and of `dcos-rs cluster backup`'s file).
pub const BACKUP_FORMAT: &str = "dcos-rs-backup/1";
/// The largest restore body: the definitions must also fit one Raft entry (2 MiB), which
/// the write checks with its own 413.
const RESTORE_BODY_MAX_BYTES: usize = 64 << 20;

/// `GET /cluster/v1/backup`: this master's copy of the whole replicated state at one applied
/// index (any master answers: after losing the quorum, a survivor still can).
async fn backup(State(master): State<Arc<Master>>) -> Response {
    let status = master.raft.status();
    let answer = master.read(|s| {
        serde_json::json!({
            "format": BACKUP_FORMAT,
            "takenAt": dcos_core::time::iso8601(now_ms()),
            "master": status.node_id,
            "role": status.role,
            "appliedIndex": status.commit_index,
            "term": status.term,
            "version": crate::build_version_if_known(),
            "state": s,
        })
    });
    json_ok(&answer)
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RestoreRequest {
    format: String,
    state: dcos_core::ClusterState,
    #[serde(default)]
    replace: bool,
}

/// `POST /cluster/v1/restore`: a backup (as `GET /cluster/v1/backup` answered, plus
/// `replace`) becomes this cluster's apps, jobs and frameworks (`Command::Restore`).
async fn restore(State(master): State<Arc<Master>>, body: axum::body::Body) -> Response {
    let body = match axum::body::to_bytes(body, RESTORE_BODY_MAX_BYTES).await {
        Ok(body) => body,
        Err(e) => {
            return api_error(ApiError::new(
                413,
                "too_large",
                format!("reading the backup: {e} (at most {RESTORE_BODY_MAX_BYTES} bytes)"),
            ))
        }
    };
    let request: RestoreRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return api_error(ApiError::invalid(
                "backup",
                &[FieldError::new(
                    "state",
                    format!("not a dcos-rs backup: {e}"),
                )],
            ))
        }
    };
    if request.format != BACKUP_FORMAT {
        return api_error(ApiError::invalid(
            "backup",
            &[FieldError::new(
                "format",
                format!(
                    "{:?} is not {BACKUP_FORMAT:?}, the format this master restores",
                    request.format
                ),
            )],
        ));
    }
    let state = request.state;
    let counts = serde_json::json!({
        "apps": state.services.apps.len(),
        "groups": state.services.groups.len(),
        "jobs": state.jobs.jobs.len(),
        "frameworks": state.frameworks.frameworks.len(),
    });
    match master
        .write(Command::Restore {
            services: state.services,
            jobs: state.jobs,
            frameworks: state.frameworks,
            replace: request.replace,
        })
        .await
    {
        Ok(Outcome::Applied) => {
            tracing::info!(%counts, "restored a backup");
            json_ok(&serde_json::json!({ "restored": counts }))
        }
        Ok(Outcome::Rejected(reject)) => api_error(ApiError::conflict(reject.to_string())),
        Err(e) => api_error(raft_error(e)),
    }
}

/// `POST /cluster/v1/leadership`: this master stands for election now and answers once it
/// leads (200 with the Raft status), or 503 if it did not win within 5 s (its log behind a
/// majority's, or it is a learner).
async fn take_leadership(State(master): State<Arc<Master>>) -> Response {
    match master.raft.campaign(std::time::Duration::from_secs(5)).await {
        Ok(true) => {
            tracing::info!("took the leadership when asked (POST {})", cluster::LEADERSHIP);
            json_ok(&master.raft.status())
        }
        Ok(false) => api_error(ApiError::new(
            503,
            "not_elected",
            "this master stood for election but another leads: its log may be behind a majority's, or it is a learner".to_string(),
        )),
        Err(e) => api_error(ApiError::new(503, "raft", e.to_string())),
    }
}

async fn remove_master(State(master): State<Arc<Master>>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return api_error(ApiError::invalid(
            "master",
            &[FieldError::new(
                "id",
                format!("{id:?} is not a master id (a number)"),
            )],
        ));
    };
    match master.raft.remove_member(id).await {
        Ok(()) => {
            tracing::info!(node_id = id, "master removed from the membership");
            json_ok(&master.raft.status())
        }
        Err(e) => api_error(membership_error(e)),
    }
}

fn membership_error(error: RaftError) -> ApiError {
    match error {
        RaftError::Membership(message) => ApiError::conflict(message),
        other => raft_error(other),
    }
}

async fn observe(State(master): State<Arc<Master>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    master.metrics.observe_request(
        &route,
        &method,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// Marathon's liveness answer, also under DC/OS's prefixes.
async fn pong() -> &'static str {
    "pong"
}

/// Mesos-DNS's `GET /v1/hosts/{name}`, as DC/OS serves it under `/mesos_dns` (the DC/OS
/// CLI's `marathon leader show` and `marathon ping` read it): `leader.mesos` and
/// `marathon.mesos` are the leading master, `master.mesos` every master, each
/// `{"host": "<name>.", "ip": "<address>"}` (the host of the master's configured URL, a
/// name if it was configured by name); a name without records (or no leader known) is
/// Mesos-DNS's `[{"host": "", "ip": ""}]`. Names of tasks are not served.
async fn mesos_dns_hosts(
    State(master): State<Arc<Master>>,
    Path(name): Path<String>,
) -> Json<serde_json::Value> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let status = master.raft.status();
    let addresses: Vec<String> = match name.as_str() {
        "leader.mesos" | "marathon.mesos" => status.leader_addr.into_iter().collect(),
        "master.mesos" => status.members.into_iter().map(|m| m.addr).collect(),
        _ => Vec::new(),
    };
    let mut ips: Vec<String> = addresses.iter().map(|url| url_host(url)).collect();
    ips.sort();
    ips.dedup();
    let records: Vec<serde_json::Value> = if ips.is_empty() {
        vec![serde_json::json!({ "host": "", "ip": "" })]
    } else {
        ips.into_iter()
            .map(|ip| serde_json::json!({ "host": format!("{name}."), "ip": ip }))
            .collect()
    };
    Json(serde_json::Value::Array(records))
}

/// `https://10.0.0.1:5050/` -> `10.0.0.1`; `http://[::1]:5050` -> `::1`.
fn url_host(url: &str) -> String {
    let authority = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = authority.split('/').next().unwrap_or(authority);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6).to_string();
    }
    authority.split(':').next().unwrap_or(authority).to_string()
}

async fn ready(State(master): State<Arc<Master>>) -> Response {
    if master.raft.is_leader() || master.raft.status().leader_id.is_some() {
        (StatusCode::OK, "ready").into_response()
    } else {
        api_error(ApiError::unavailable("no Raft leader yet"))
    }
}

async fn metrics(State(master): State<Arc<Master>>) -> Response {
    let status = master.raft.status();
    let body = master.read(|s| master.metrics.render(s, &status));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

pub(crate) fn raft_error(error: RaftError) -> ApiError {
    match error {
        RaftError::NotLeader {
            ref leader_addr, ..
        } => {
            let details = serde_json::json!({ "leader": leader_addr });
            ApiError::new(503, "not_leader", format!("this master lost its leadership during the request ({error}); retry against the leader"))
                .with_details(details)
        }
        RaftError::TooLarge { .. } => ApiError::new(
            413,
            "too_large",
            format!("the change cannot be recorded: {error}"),
        ),
        RaftError::DiskFull(reason) => ApiError::new(507, "disk_full", reason),
        other => ApiError::unavailable(format!("the cluster state could not be written: {other}")),
    }
}

pub(crate) fn reject_error(reject: Reject) -> ApiError {
    match &reject {
        Reject::AppExists { .. }
        | Reject::GroupExists { .. }
        | Reject::TaskExists { .. }
        | Reject::TaskNotTerminal { .. }
        | Reject::AgentInUse { .. }
        | Reject::AgentRemoved { .. }
        | Reject::NothingToRollBackTo { .. }
        | Reject::JobExists { .. }
        | Reject::JobIsParent { .. }
        | Reject::JobRunsActive { .. }
        | Reject::JobChanged { .. }
        | Reject::FrameworkRemoved { .. }
        | Reject::RunExists { .. }
        | Reject::InstantDecided { .. } => ApiError::conflict(reject.to_string()),
        Reject::UnknownApp { .. }
        | Reject::UnknownJob { .. }
        | Reject::UnknownRun { .. }
        | Reject::DeploymentNotUnderWay { .. }
        | Reject::UnknownGroup { .. }
        | Reject::UnknownTask { .. }
        | Reject::UnknownFramework { .. }
        | Reject::UnknownAgent { .. } => ApiError::not_found(reject.to_string()),
        Reject::InvalidRole { .. } => ApiError::bad_request(reject.to_string()),
        _ => ApiError::new(422, "rejected", reject.to_string()),
    }
}

pub(crate) fn parse_json(
    body: Result<Bytes, BytesRejection>,
) -> Result<serde_json::Value, ApiError> {
    let body = body.map_err(|rejection| {
        let status = rejection.status().as_u16();
        let code = if status == 413 {
            "too_large"
        } else {
            "bad_request"
        };
        ApiError::new(
            status,
            code,
            format!("request body: {}", rejection.body_text()),
        )
    })?;
    serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))
}

/// `POST /cluster/v1/agents/{id}/drain`: no new tasks on the agent, and the services
/// framework moves its tasks elsewhere (start-then-stop, each with its kill grace). Answers
/// the agent as `/cluster/v1/nodes` shows it ("draining", with its remaining tasks).
async fn drain_agent(State(master): State<Arc<Master>>, Path(id): Path<String>) -> Response {
    match master
        .write(Command::DrainAgent {
            agent_id: id.clone(),
        })
        .await
    {
        Ok(Outcome::Applied) => {
            tracing::info!(agent = %id, "agent draining");
            match master.read(|s| s.agents.get(&id).map(|a| dcos_api::agent_view(s, a))) {
                Some(view) => json_ok(&view),
                None => api_error(ApiError::not_found(format!("agent {id} is gone"))),
            }
        }
        Ok(Outcome::Rejected(reject)) => api_error(reject_error(reject)),
        Err(e) => api_error(raft_error(e)),
    }
}

/// `DELETE /cluster/v1/agents/{id}`: forgets a drained agent (no tasks left) or an
/// unreachable one (its tasks become TASK_LOST); the id may not register again.
async fn remove_agent(State(master): State<Arc<Master>>, Path(id): Path<String>) -> Response {
    let at_ms = now_ms();
    match master
        .write(Command::RemoveAgent {
            agent_id: id.clone(),
            at_ms,
        })
        .await
    {
        Ok(Outcome::Applied) => {
            tracing::info!(agent = %id, "agent removed");
            master.disconnect(&id);
            json_ok(&serde_json::json!({ "removed": id }))
        }
        Ok(Outcome::Rejected(reject)) => api_error(reject_error(reject)),
        Err(e) => api_error(raft_error(e)),
    }
}

/// `GET /cluster/v1/tasks`: every task a framework shows (today the services framework's),
/// with this system's fields (agent API, resources, message, exit code).
async fn tasks(State(master): State<Arc<Master>>) -> Json<TasksEnvelope> {
    Json(master.read(|s| {
        TasksEnvelope {
            tasks: s
                .tasks
                .values()
                .map(|t| dcos_api::any_task_view(s, t))
                .collect(),
        }
    }))
}

async fn nodes(State(master): State<Arc<Master>>) -> Json<NodesView> {
    let status = master.raft.status();
    let builds = master.read(|s| s.masters.clone());
    let mut masters: Vec<MasterView> = status
        .members
        .iter()
        .map(|m| {
            let me = m.node_id == status.node_id;
            MasterView {
                id: m.node_id,
                url: m.addr.clone(),
                role: if me {
                    status.role.clone()
                } else {
                    m.role.clone()
                },
                term: status.term,
                last_log_index: if me {
                    Some(status.last_log_index)
                } else {
                    m.matched_index
                },
                commit_index: me.then_some(status.commit_index),
                lag: m.lag,
                // Its own build; the others' as they recorded it.
                version: if me {
                    crate::build_version_if_known().map(str::to_string)
                } else {
                    builds.get(&m.node_id).map(|b| b.version.clone())
                },
            }
        })
        .collect();
    if !masters.iter().any(|m| m.id == status.node_id) {
        // A master that is not (yet) in the membership it knows of still shows itself.
        masters.push(MasterView {
            id: status.node_id,
            url: master.url.clone(),
            role: status.role.clone(),
            term: status.term,
            last_log_index: Some(status.last_log_index),
            commit_index: Some(status.commit_index),
            lag: None,
            version: crate::build_version_if_known().map(str::to_string),
        });
    }
    let mut view = master.read(|s| NodesView {
        masters,
        agents: s.agents.values().map(|a| agent_view(s, a)).collect(),
    });
    if master.raft.is_leader() {
        for agent in &mut view.agents {
            agent.last_heartbeat_ms_ago = master.heard_ms_ago(&agent.id);
        }
    }
    Json(view)
}

#[cfg(test)]
mod tests {
    use super::url_host;

    #[test]
    fn a_masters_url_gives_its_host_for_mesos_dns() {
        assert_eq!(url_host("https://10.0.0.1:5050/"), "10.0.0.1");
        assert_eq!(url_host("http://127.0.0.1:5050"), "127.0.0.1");
        assert_eq!(url_host("http://[::1]:5050"), "::1");
        assert_eq!(url_host("master-1.example"), "master-1.example");
    }
}

//! The agent's HTTP API (default port 5051): task logs and sandboxes (`/files/...`), the
//! image store (`/images`, including pulls from registries) and local containers. Read by
//! the CLI and the master; it changes no cluster state. Bearer tokens (and master
//! certificates) are checked by `crate::auth` before any handler.

use super::Agent;
use crate::agent::registry::{Credentials, PullError, RegistryClient};
use crate::auth::ApiAuth;
use crate::http_util::{api_error, json_ok};
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use dcos_api::routes::agent as routes;
use dcos_api::{ApiError, ImageView, ImagesEnvelope};
use futures_util::StreamExt;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// Largest image tarball accepted by `POST /images`.
pub const IMAGE_UPLOAD_MAX_BYTES: usize = 8 << 30;
/// Largest chunk of log sent in one piece.
const LOG_CHUNK_MAX_BYTES: usize = 64 * 1024;
const LOG_POLL_MS: u64 = 200;
/// Rotated log files looked at when a follower moves on (`--task-log-files` larger than this
/// only loses the ability to catch up across more rotations than this at once).
const ROTATED_FILES_SCAN_MAX: u32 = 64;
/// Image imports that may run at once (each streams to disk, then unpacks).
const IMPORTS_CONCURRENT_MAX: usize = 2;
/// Imports and pulls share these slots: both end in an unpack.
static IMPORT_SLOTS: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new(IMPORTS_CONCURRENT_MAX);
/// Largest `POST /images/pull` body (a reference and credentials).
const PULL_REQUEST_MAX_BYTES: usize = 64 * 1024;

/// The agent's API. `registry` makes the pulls (its trust roots come from `--registry-ca`).
/// With `auth`, everything but `/health` needs a bearer token (or what else `auth` accepts).
/// The agent's router; every request first through `guard` (Host, Origin, Content-Type).
pub fn router(
    agent: Arc<Agent>,
    registry: Arc<RegistryClient>,
    auth: Option<ApiAuth>,
    guard: crate::http_guard::RequestGuard,
) -> Router {
    let mut api = Router::new()
        .route(routes::TASK_LOG, get(task_log))
        .route(routes::IMAGES, get(list_images).post(import_image))
        .route(routes::IMAGES_PULL, post(pull_image))
        .route(routes::IMAGE, delete(remove_image))
        .route(routes::CONTAINERS, get(containers))
        .route(routes::METRICS, get(metrics))
        .route(super::mesos::STATE, get(mesos_state))
        .route(super::mesos::STATE_OF_SLAVE, get(mesos_state))
        .route(super::mesos::FILES_READ, get(files_read))
        .route(super::mesos::FILES_READ_PLAIN, get(files_read))
        .route(super::mesos::FILES_BROWSE, get(files_browse))
        .route(super::mesos::FILES_BROWSE_PLAIN, get(files_browse))
        .fallback(|| async { api_error(ApiError::not_found("no such endpoint")) });
    if let Some(auth) = auth {
        api = api.layer(axum::middleware::from_fn_with_state(
            auth,
            crate::auth::require_token,
        ));
    }
    Router::new()
        .route(routes::HEALTH, get(|| async { "ok" }))
        .merge(api)
        .layer(DefaultBodyLimit::max(IMAGE_UPLOAD_MAX_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            guard,
            crate::http_guard::guard_requests,
        ))
        .layer(axum::middleware::from_fn(crate::http_util::json_errors))
        .layer(Extension(registry))
        .with_state(agent)
}

/// Mesos's agent `/state` (`super::mesos`).
async fn mesos_state(State(agent): State<Arc<Agent>>) -> Response {
    match tokio::task::spawn_blocking(move || agent.mesos_state()).await {
        Ok(state) => Json(state).into_response(),
        Err(e) => api_error(ApiError::internal(format!("reading the sandboxes: {e}"))),
    }
}

/// Mesos's `/files/read.json` (`super::mesos`).
async fn files_read(
    State(agent): State<Arc<Agent>>,
    Query(query): Query<super::mesos::FilesQuery>,
) -> Response {
    match tokio::task::spawn_blocking(move || agent.read_file(&query)).await {
        Ok(Ok(answer)) => Json(answer).into_response(),
        Ok(Err(error)) => api_error(error),
        Err(e) => api_error(ApiError::internal(format!("reading the file: {e}"))),
    }
}

/// Mesos's `/files/browse.json` (`super::mesos`): the entries, and
/// `ENTRIES_TRUNCATED_HEADER` when some were left out.
async fn files_browse(
    State(agent): State<Arc<Agent>>,
    Query(query): Query<super::mesos::BrowseQuery>,
) -> Response {
    match tokio::task::spawn_blocking(move || agent.browse(&query)).await {
        Ok(Ok(browse)) => {
            let mut response = Json(browse.entries).into_response();
            if browse.truncated {
                response.headers_mut().insert(
                    axum::http::HeaderName::from_static(super::mesos::ENTRIES_TRUNCATED_HEADER),
                    axum::http::HeaderValue::from_static("true"),
                );
            }
            response
        }
        Ok(Err(error)) => api_error(error),
        Err(e) => api_error(ApiError::internal(format!("listing the directory: {e}"))),
    }
}

#[derive(Deserialize)]
struct LogQuery {
    #[serde(default)]
    offset: u64,
    #[serde(default)]
    follow: bool,
}

/// `GET /files/tasks/{id}/{stdout|stderr}?offset=N&follow=true`: the log from `offset`; with
/// `follow`, a chunked stream that ends once the task has ended and everything was sent.
async fn task_log(
    State(agent): State<Arc<Agent>>,
    Path((task_id, stream)): Path<(String, String)>,
    Query(query): Query<LogQuery>,
) -> Response {
    let Some(dir) = agent.sandbox(&task_id) else {
        return api_error(ApiError::bad_request(format!(
            "task id {task_id:?} is not valid"
        )));
    };
    let path = match stream.as_str() {
        "stdout" => dir.stdout(),
        "stderr" => dir.stderr(),
        _ => {
            return api_error(ApiError::bad_request(format!(
                "stream must be stdout or stderr, not {stream:?}"
            )))
        }
    };
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(_) if dir.spec().exists() => {
            // Launched but not started yet: nothing logged so far.
            if !query.follow {
                return (StatusCode::OK, "").into_response();
            }
            match wait_for_file(&path, &dir.exit()).await {
                Some(f) => f,
                None => return (StatusCode::OK, "").into_response(),
            }
        }
        Err(_) => {
            return api_error(ApiError::not_found(format!(
                "no sandbox for task {task_id} on this agent"
            )))
        }
    };
    if file
        .seek(std::io::SeekFrom::Start(query.offset))
        .await
        .is_err()
    {
        return api_error(ApiError::bad_request("offset is beyond the end of the log"));
    }
    if !query.follow {
        let mut bytes = Vec::new();
        if let Err(e) = file.read_to_end(&mut bytes).await {
            return api_error(ApiError::internal(format!(
                "reading {}: {e}",
                path.display()
            )));
        }
        return (StatusCode::OK, bytes).into_response();
    }
    let follower = LogFollower {
        file,
        path,
        exit_file: dir.exit(),
        agent,
        task_id,
        done: false,
    };
    let stream = futures_util::stream::unfold(follower, |mut follower| async move {
        let chunk = follower.next_chunk().await?;
        Some((chunk, follower))
    });
    Response::builder()
        .header("content-type", "text/plain; charset=utf-8")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Follows one log stream of a task across rotations until the task has ended.
struct LogFollower {
    file: tokio::fs::File,
    path: std::path::PathBuf,
    exit_file: std::path::PathBuf,
    agent: Arc<Agent>,
    task_id: String,
    done: bool,
}

impl LogFollower {
    async fn next_chunk(&mut self) -> Option<Result<bytes::Bytes, std::io::Error>> {
        if self.done {
            return None;
        }
        match self.read_next().await {
            Ok(chunk) => chunk.map(Ok),
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }

    /// The next bytes of the log, waiting for more while the task runs; `None` at the end.
    async fn read_next(&mut self) -> std::io::Result<Option<bytes::Bytes>> {
        let mut buf = vec![0u8; LOG_CHUNK_MAX_BYTES];
        loop {
            // Check for the end before reading so the last bytes are never missed. A task
            // the agent no longer tracks without an exit record (lost) ends the stream too.
            let ended = self.exit_file.exists() || !self.agent.is_tracking(&self.task_id);
            let mut n = self.file.read(&mut buf).await?;
            if n == 0 && self.rotated().await {
                // The shim writes nothing more to the old file once it has rotated it:
                // one more read finds its last bytes, then the next file takes over.
                n = self.file.read(&mut buf).await?;
                if n == 0 {
                    self.file = tokio::fs::File::open(self.successor().await).await?;
                    continue;
                }
            }
            if n > 0 {
                buf.truncate(n);
                return Ok(Some(bytes::Bytes::from(buf)));
            }
            if ended {
                return Ok(None);
            }
            // Rotation without history (`--task-log-files 0`) truncates in place.
            let position = self.file.stream_position().await?;
            if self.file.metadata().await?.len() < position {
                self.file.seek(std::io::SeekFrom::Start(0)).await?;
                continue;
            }
            tokio::time::sleep(Duration::from_millis(LOG_POLL_MS)).await;
        }
    }

    /// The file written after the one being read: the shim shifts `stdout` to `stdout.1`,
    /// `stdout.1` to `stdout.2`, ...; if ours is now `stdout.N`, `stdout.N-1` (or `stdout`)
    /// came next. If ours was dropped already, the oldest rotated file left is next.
    async fn successor(&self) -> std::path::PathBuf {
        use std::os::unix::fs::MetadataExt;
        let rotated = |n: u32| dcos_runtime::logs::rotated_path(&self.path, n);
        let ours = self.file.metadata().await.map(|m| m.ino()).ok();
        let mut oldest = None;
        for n in 1..=ROTATED_FILES_SCAN_MAX {
            match tokio::fs::metadata(rotated(n)).await {
                Ok(meta) if Some(meta.ino()) == ours => {
                    return if n == 1 {
                        self.path.clone()
                    } else {
                        rotated(n - 1)
                    };
                }
                Ok(_) => oldest = Some(n),
                Err(_) => break,
            }
        }
        oldest.map(rotated).unwrap_or_else(|| self.path.clone())
    }

    /// True when the path now names another file than the one being read.
    async fn rotated(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let (Ok(current), Ok(ours)) = (
            tokio::fs::metadata(&self.path).await,
            self.file.metadata().await,
        ) else {
            return false;
        };
        current.ino() != ours.ino() || current.dev() != ours.dev()
    }
}

/// The log file at `path` once the shim has created it (after the task started); `None` if
/// the task ended without one (`exit_file` is there: its start failed) or after 300 polls.
async fn wait_for_file(
    path: &std::path::Path,
    exit_file: &std::path::Path,
) -> Option<tokio::fs::File> {
    for _ in 0..300 {
        let ended = tokio::fs::try_exists(exit_file).await.unwrap_or(false);
        if let Ok(f) = tokio::fs::File::open(path).await {
            return Some(f);
        }
        if ended {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(LOG_POLL_MS)).await;
    }
    None
}

async fn list_images(State(agent): State<Arc<Agent>>) -> Response {
    let store = agent.clone();
    match tokio::task::spawn_blocking(move || store.images.list()).await {
        Ok(Ok(images)) => json_ok(&ImagesEnvelope {
            images: images.into_iter().map(image_view).collect(),
        }),
        Ok(Err(e)) => api_error(ApiError::internal(format!("listing images: {e}"))),
        Err(e) => api_error(ApiError::internal(e.to_string())),
    }
}

fn image_view(s: dcos_runtime::image::ImageSummary) -> ImageView {
    ImageView {
        reference: s.reference,
        digest: s.digest,
        size_bytes: s.size_bytes,
        layers: s.layers,
    }
}

/// `POST /images` with a `docker save` or OCI layout tarball as the body.
async fn import_image(State(agent): State<Arc<Agent>>, request: Request) -> Response {
    let Ok(_slot) = IMPORT_SLOTS.try_acquire() else {
        return api_error(ApiError::new(
            429,
            "busy",
            format!("{IMPORTS_CONCURRENT_MAX} image imports are already running; try again when one ends"),
        ));
    };
    let upload_dir = agent.config.work_dir.join("uploads");
    if let Err(e) = tokio::fs::create_dir_all(&upload_dir).await {
        return api_error(ApiError::internal(format!(
            "creating {}: {e}",
            upload_dir.display()
        )));
    }
    let path = upload_dir.join(format!("{}.tar", crate::link::random_id()));
    let result = receive_and_import(&agent, request, &path).await;
    let _ = tokio::fs::remove_file(&path).await;
    match result {
        Ok(images) => {
            agent.images_changed().await;
            (StatusCode::CREATED, Json(ImagesEnvelope { images })).into_response()
        }
        Err(e) => api_error(e),
    }
}

async fn receive_and_import(
    agent: &Arc<Agent>,
    request: Request,
    path: &std::path::Path,
) -> Result<Vec<ImageView>, ApiError> {
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| ApiError::internal(format!("creating {}: {e}", path.display())))?;
    let mut body = request.into_body().into_data_stream();
    let mut received = 0usize;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading upload: {e}")))?;
        received += chunk.len();
        if received > IMAGE_UPLOAD_MAX_BYTES {
            return Err(ApiError::new(
                413,
                "too_large",
                format!("image tarball is larger than {IMAGE_UPLOAD_MAX_BYTES} bytes"),
            ));
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| ApiError::internal(format!("writing upload: {e}")))?;
    }
    file.flush()
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    if received == 0 {
        return Err(ApiError::bad_request(
            "empty upload: send the image tarball as the body",
        ));
    }
    let store = agent.clone();
    let path = path.to_path_buf();
    let imported = tokio::task::spawn_blocking(move || store.images.import(&path))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::new(422, "invalid_image", format!("importing image: {e}")))?;
    Ok(imported.into_iter().map(image_view).collect())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PullRequest {
    /// `busybox`, `registry.example.com:5000/team/app:v1`, `name@sha256:...`.
    reference: String,
    #[serde(default)]
    auth: Option<PullAuth>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PullAuth {
    username: String,
    password: String,
}

/// An invalid field of a pull request: 400 naming it.
fn invalid_pull_field(field: &str, reason: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("invalid pull request: {field}: {reason}")).with_details(
        serde_json::json!({ "errors": [{ "field": field, "reason": reason.to_string() }] }),
    )
}

fn parse_pull_request(
    bytes: &[u8],
) -> Result<
    (
        dcos_runtime::image::registry::PullTarget,
        Option<Credentials>,
    ),
    ApiError,
> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let request: PullRequest =
        serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
            let field = match e.path().to_string() {
                path if path == "." => "(root)".to_string(),
                path => path,
            };
            invalid_pull_field(&field, e.inner())
        })?;
    let target = dcos_runtime::image::registry::PullTarget::parse(&request.reference)
        .map_err(|e| invalid_pull_field("reference", e))?;
    let credentials = match request.auth {
        Some(auth) if auth.username.is_empty() => {
            return Err(invalid_pull_field("auth.username", "must not be empty"))
        }
        Some(auth) => Some(Credentials {
            username: auth.username,
            password: auth.password,
        }),
        None => None,
    };
    Ok((target, credentials))
}

/// Registry failures are the upstream's (502), except what says the image cannot be used
/// here at all (422) and the agent's own disk (500).
fn pull_error(error: PullError) -> ApiError {
    let (status, code) = match &error {
        PullError::CredentialsRequired { .. } | PullError::Unauthorized { .. } => {
            (502, "registry_unauthorized")
        }
        PullError::NotFound { .. } => (502, "image_not_found"),
        PullError::Unreachable { .. } => (502, "registry_unreachable"),
        PullError::Tls { .. } => (502, "registry_tls"),
        PullError::Timeout { .. } => (502, "registry_timeout"),
        PullError::Status { .. } | PullError::Protocol { .. } => (502, "registry_error"),
        PullError::DigestMismatch { .. } => (502, "digest_mismatch"),
        PullError::TooLarge { .. } => (502, "too_large"),
        PullError::NoPlatform { .. } => (422, "no_platform"),
        PullError::Trust(_) | PullError::Io { .. } => (500, "internal"),
    };
    ApiError::new(status, code, format!("pulling image: {error}"))
}

/// `POST /images/pull` with `{"reference": "...", "auth": {"username": "...", "password":
/// "..."}}` (auth optional): downloads the image into a staging directory of the store, then
/// imports it. 201 with the imported images, as `POST /images`.
async fn pull_image(
    State(agent): State<Arc<Agent>>,
    Extension(registry): Extension<Arc<RegistryClient>>,
    request: Request,
) -> Response {
    let bytes = match axum::body::to_bytes(request.into_body(), PULL_REQUEST_MAX_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return api_error(ApiError::new(
                413,
                "too_large",
                format!("a pull request is at most {PULL_REQUEST_MAX_BYTES} bytes of JSON"),
            ))
        }
    };
    let (target, credentials) = match parse_pull_request(&bytes) {
        Ok(parsed) => parsed,
        Err(e) => return api_error(e),
    };
    let Ok(_slot) = IMPORT_SLOTS.try_acquire() else {
        return api_error(ApiError::new(
            429,
            "busy",
            format!("{IMPORTS_CONCURRENT_MAX} image imports or pulls are already running; try again when one ends"),
        ));
    };
    // Dropped on every way out (error, or the client going away mid-pull): no partial
    // download stays behind.
    let staging = match agent.images.staging_dir("pull") {
        Ok(staging) => staging,
        Err(e) => return api_error(ApiError::internal(format!("preparing a pull: {e}"))),
    };
    let report = match registry
        .pull(&target, credentials.as_ref(), staging.path())
        .await
    {
        Ok(report) => report,
        Err(e) => {
            tracing::warn!(image = %target, error = %e, "pull failed");
            return api_error(pull_error(e));
        }
    };
    let store = agent.clone();
    let imported = tokio::task::spawn_blocking(move || store.images.import_staged_layout(staging))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))
        .and_then(|result| {
            result.map_err(|e| {
                ApiError::new(
                    422,
                    "invalid_image",
                    format!("importing pulled image {target}: {e}"),
                )
            })
        });
    match imported {
        Ok(images) => {
            tracing::info!(
                image = %target,
                manifest = %report.manifest_digest,
                layers = report.layers,
                blob_bytes = report.blob_bytes,
                elapsed_ms = report.elapsed_ms,
                "pulled image"
            );
            agent.images_changed().await;
            let images = images.into_iter().map(image_view).collect();
            (StatusCode::CREATED, Json(ImagesEnvelope { images })).into_response()
        }
        Err(e) => api_error(e),
    }
}

async fn remove_image(State(agent): State<Arc<Agent>>, Path(reference): Path<String>) -> Response {
    if let Ok(image) = agent.images.resolve(&reference) {
        if agent.images_in_use().contains(&image.digest) {
            return api_error(ApiError::conflict(format!(
                "image {reference} is used by running tasks; remove their apps first"
            )));
        }
    }
    let store = agent.clone();
    let r = reference.clone();
    match tokio::task::spawn_blocking(move || store.images.remove(&r)).await {
        Ok(Ok(())) => {
            agent.images_changed().await;
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(Err(dcos_runtime::image::ImageError::NotFound { .. })) => api_error(
            ApiError::not_found(format!("image {reference} is not on this agent")),
        ),
        Ok(Err(e)) => api_error(ApiError::internal(format!(
            "removing image {reference}: {e}"
        ))),
        Err(e) => api_error(ApiError::internal(e.to_string())),
    }
}

/// `GET /containers`: every task that has not ended, with its cgroup usage.
async fn containers(State(agent): State<Arc<Agent>>) -> Response {
    let stats = {
        let agent = agent.clone();
        tokio::task::spawn_blocking(move || agent.container_stats())
            .await
            .unwrap_or_default()
    };
    json_ok(&serde_json::json!({ "agentId": agent.id, "containers": stats }))
}

/// `GET /metrics`: per-task cpu time, memory, memory limit and OOM kills, Prometheus text.
async fn metrics(State(agent): State<Arc<Agent>>) -> Response {
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    type Labels = Vec<(String, String)>;
    let stats = {
        let agent = agent.clone();
        tokio::task::spawn_blocking(move || agent.container_stats())
            .await
            .unwrap_or_default()
    };
    // A fresh registry per scrape: ended tasks disappear from the output.
    let mut registry = prometheus_client::registry::Registry::with_prefix("dcos");
    let cpu = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let memory = Family::<Labels, Gauge>::default();
    let limit = Family::<Labels, Gauge>::default();
    let ooms = Family::<Labels, Gauge>::default();
    let running = Gauge::<i64>::default();
    registry.register("task_cpu_seconds", "CPU time used by the task", cpu.clone());
    registry.register(
        "task_memory_bytes",
        "Memory used by the task",
        memory.clone(),
    );
    registry.register(
        "task_memory_limit_bytes",
        "Memory limit of the task",
        limit.clone(),
    );
    registry.register(
        "task_oom_kills",
        "OOM kills in the task's cgroup",
        ooms.clone(),
    );
    registry.register(
        "agent_tasks_running",
        "Tasks this agent runs",
        running.clone(),
    );
    let launched = prometheus_client::metrics::counter::Counter::<u64>::default();
    launched.inc_by(agent.launched_total());
    registry.register(
        "agent_tasks_launched",
        "Tasks launched since the agent started",
        launched,
    );
    running.set(agent.running_task_count() as i64);
    for c in &stats {
        let labels = vec![("task".to_string(), c.task_id.clone())];
        cpu.get_or_create(&labels).set(c.stats.cpu_seconds);
        memory
            .get_or_create(&labels)
            .set(c.stats.memory_bytes as i64);
        limit
            .get_or_create(&labels)
            .set(c.stats.memory_limit_bytes as i64);
        ooms.get_or_create(&labels).set(c.stats.oom_kills as i64);
    }
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        return api_error(ApiError::internal(format!("encoding metrics: {e}")));
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task whose start failed has no log files, only its exit.json: a follower stops
    /// waiting for them at once.
    #[tokio::test]
    async fn waiting_for_a_log_ends_with_the_task() {
        let dir = tempfile::tempdir().unwrap();
        let (log, exit) = (dir.path().join("stdout"), dir.path().join("exit.json"));
        std::fs::write(&exit, b"{}").unwrap();
        let started = std::time::Instant::now();
        assert!(wait_for_file(&log, &exit).await.is_none());
        assert!(started.elapsed() < Duration::from_millis(LOG_POLL_MS));

        // A log that exists is returned even if the task has ended since.
        std::fs::write(&log, b"out").unwrap();
        assert!(wait_for_file(&log, &exit).await.is_some());
    }
}

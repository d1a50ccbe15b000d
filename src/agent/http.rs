//! The agent's HTTP API (default port 5051): task logs (`/files/...`), the image store
//! (`/images`) and local containers. Read by the CLI and the master; it changes no
//! cluster state.

use super::Agent;
use crate::http_util::{api_error, json_ok};
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
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
static IMPORT_SLOTS: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new(IMPORTS_CONCURRENT_MAX);

pub fn router(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/files/tasks/{task_id}/{stream}", get(task_log))
        .route("/images", get(list_images).post(import_image))
        .route("/images/{*reference}", delete(remove_image))
        .route("/containers", get(containers))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(IMAGE_UPLOAD_MAX_BYTES))
        .with_state(agent)
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
            match wait_for_file(&path).await {
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

async fn wait_for_file(path: &std::path::Path) -> Option<tokio::fs::File> {
    for _ in 0..300 {
        if let Ok(f) = tokio::fs::File::open(path).await {
            return Some(f);
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
        Ok(images) => (StatusCode::CREATED, Json(ImagesEnvelope { images })).into_response(),
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

async fn remove_image(State(agent): State<Arc<Agent>>, Path(reference): Path<String>) -> Response {
    if let Ok(image) = agent.images.resolve(&reference) {
        if agent.images_in_use().contains(&image.rootfs) {
            return api_error(ApiError::conflict(format!(
                "image {reference} is used by running tasks; remove their apps first"
            )));
        }
    }
    let store = agent.clone();
    let r = reference.clone();
    match tokio::task::spawn_blocking(move || store.images.remove(&r)).await {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
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
